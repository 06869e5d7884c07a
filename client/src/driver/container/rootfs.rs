//! Building a container's root inside its new mount namespace: a writable layer over
//! the read-only source (overlayfs, else a copy), `/proc`, a minimal `/dev`, `/tmp`,
//! the bind mounts, then `pivot_root` and the old root unmounted. Runs in the
//! helper's namespace init (PID 1), which is single-threaded.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::spec::{InitSpec, LayerMode};

/// A setup step that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct SetupError {
    pub op: String,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(op: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let (op, path) = (op.into(), path.to_path_buf());
    move |source| SetupError { op, path, source }
}

fn nix_err(op: impl Into<String>, path: &Path) -> impl FnOnce(nix::Error) -> SetupError {
    let f = err(op, path);
    move |e| f(std::io::Error::from(e))
}

/// `inner` (absolute, inside the container) below `root`.
pub fn under(root: &Path, inner: &Path) -> PathBuf {
    root.join(inner.strip_prefix("/").unwrap_or(inner))
}

/// Makes the mounts, pivots into the new root and drops the old one. Afterwards `/`
/// is the container's root.
pub fn build(spec: &InitSpec) -> Result<(), SetupError> {
    // Nothing mounted here may leak back to the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("making mounts private at", Path::new("/")))?;

    let root = writable_root(spec)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = mkdirs(&root.join("proc"))?;
    mount(Some("proc"), &proc_dir, Some("proc"), flags, None::<&str>)
        .map_err(nix_err("mounting proc on", &proc_dir))?;

    dev(&root)?;

    let tmp = mkdirs(&root.join("tmp"))?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(nix_err("mounting a tmpfs on", &tmp))?;

    for m in &spec.mounts {
        let target = under(&root, &m.target);
        if m.source.is_dir() {
            mkdirs(&target)?;
        } else {
            if let Some(p) = target.parent() {
                mkdirs(p)?;
            }
            if !target.exists() {
                std::fs::File::create(&target).map_err(err("creating", &target))?;
            }
        }
        mount(
            Some(&m.source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err(
            format!("bind-mounting {} on", m.source.display()),
            &target,
        ))?;
        if m.readonly {
            remount_ro(&target)?;
        }
    }

    if spec.readonly_rootfs {
        remount_ro(&root)?;
    }

    // pivot_root(".", "."): the old root ends up stacked under the new one and is
    // detached right away, so no directory for it is needed in the image.
    nix::unistd::chdir(&root).map_err(nix_err("entering", &root))?;
    nix::unistd::pivot_root(".", ".").map_err(nix_err("pivot_root into", &root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_err("unmounting the old root", &root))?;
    nix::unistd::chdir("/").map_err(nix_err("entering", Path::new("/")))?;
    Ok(())
}

/// The directory that becomes `/`: an overlay mount or a bind-mounted copy, either
/// way a mount point (which `pivot_root` needs).
fn writable_root(spec: &InitSpec) -> Result<PathBuf, SetupError> {
    let layer = &spec.layer_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(layer)
        .map_err(err("creating", layer))?;
    if spec.layer == LayerMode::Auto {
        let (upper, work, merged) = (
            layer.join("upper"),
            layer.join("work"),
            layer.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            mkdirs(d)?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            spec.rootfs.display(),
            upper.display(),
            work.display()
        );
        match mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        ) {
            Ok(()) => return Ok(merged),
            // Overlay is missing, or the task dir's file system cannot be an upper
            // layer (e.g. it is an overlay itself): fall back to a copy.
            Err(e) => eprintln!(
                "orch container-init: overlayfs unavailable ({e}); copying {} instead",
                spec.rootfs.display()
            ),
        }
    }
    let copy = layer.join("copy");
    if !copy.exists() {
        let tmp = layer.join("copy.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        copy_tree(&spec.rootfs, &tmp)?;
        std::fs::rename(&tmp, &copy).map_err(err("renaming into", &copy))?;
    }
    mount(
        Some(&copy),
        &copy,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_err("bind-mounting", &copy))?;
    Ok(copy)
}

/// A tmpfs `/dev` with the usual device nodes bound from the host, a private devpts
/// instance and the standard symlinks.
fn dev(root: &Path) -> Result<(), SetupError> {
    let dev = mkdirs(&root.join("dev"))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(nix_err("mounting a tmpfs on", &dev))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        std::fs::File::create(&target).map_err(err("creating", &target))?;
        mount(
            Some(&host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err(
            format!("bind-mounting {} on", host.display()),
            &target,
        ))?;
    }
    let pts = mkdirs(&dev.join("pts"))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(nix_err("mounting devpts on", &pts))?;
    let shm = mkdirs(&dev.join("shm"))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(nix_err("mounting a tmpfs on", &shm))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(to, &p).map_err(err("creating the symlink", &p))?;
    }
    Ok(())
}

fn remount_ro(path: &Path) -> Result<(), SetupError> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_err("remounting read-only", path))
}

fn mkdirs(path: &Path) -> Result<PathBuf, SetupError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(err("creating", path))?;
    Ok(path.to_path_buf())
}

/// Copies a directory tree: files, directories, symlinks, modes and owners (no
/// device nodes: the container's `/dev` is its own).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), SetupError> {
    let meta = std::fs::symlink_metadata(from).map_err(err("reading", from))?;
    std::fs::create_dir(to).map_err(err("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(err("listing", from))? {
        let entry = entry.map_err(err("listing", from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ft = entry.file_type().map_err(err("reading", &src))?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let link = std::fs::read_link(&src).map_err(err("reading the link", &src))?;
            std::os::unix::fs::symlink(link, &dst).map_err(err("creating the symlink", &dst))?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(err("copying to", &dst))?;
        } else {
            continue;
        }
        own_like(&src, &dst)?;
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode_bits()))
        .map_err(err("setting the mode of", to))?;
    own_like(from, to)
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Metadata {
    fn mode_bits(&self) -> u32 {
        self.permissions().mode() & 0o7777
    }
}

fn own_like(src: &Path, dst: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(src).map_err(err("reading", src))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))
            .map_err(err("changing the owner of", dst))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_files_links_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/tool"), b"x").unwrap();
        std::fs::set_permissions(src.join("bin/tool"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::os::unix::fs::symlink("tool", src.join("bin/alias")).unwrap();
        copy_tree(&src, &d.path().join("dst")).unwrap();
        let dst = d.path().join("dst");
        assert_eq!(std::fs::read(dst.join("bin/tool")).unwrap(), b"x");
        assert_eq!(
            std::fs::metadata(dst.join("bin/tool")).unwrap().mode_bits(),
            0o751
        );
        assert_eq!(
            std::fs::read_link(dst.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
    }

    #[test]
    fn inner_paths_land_under_the_root() {
        assert_eq!(
            under(Path::new("/r"), Path::new("/a/b")),
            PathBuf::from("/r/a/b")
        );
    }
}
