//! Building a container's root inside its new mount namespace: a writable layer over
//! the read-only source (overlayfs, else a copy), `/proc` (with the kernel's sensitive
//! files masked and its tunables read-only), a read-only `/sys`, a minimal `/dev`, `/tmp`,
//! the bind mounts, then `pivot_root` and the old root unmounted. Runs in the
//! helper's namespace init (PID 1), which is single-threaded.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::NixPath;

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

/// The mount point for `inner` (absolute, inside the container) below `root`,
/// created as a directory (or, for `dir = false`, an empty file) where missing. A
/// symlink on the way is refused: mounts happen before `pivot_root`, so the root
/// filesystem's symlinks would resolve against the host's root.
pub fn mount_point(root: &Path, inner: &Path, dir: bool) -> Result<PathBuf, SetupError> {
    let refuse = |path: &Path, why: &str| SetupError {
        op: format!("preparing the mount point {} ({why}) at", inner.display()),
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    };
    let parts: Vec<_> = inner.components().collect();
    let mut cur = root.to_path_buf();
    for (i, c) in parts.iter().enumerate() {
        let name = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n,
            _ => return Err(refuse(&cur, "\"..\" is not allowed")),
        };
        cur.push(name);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(&cur, "a symlink in the root filesystem"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if last && !dir {
                    // O_EXCL: a symlink made since the check is not followed.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&cur)
                        .map_err(err("creating", &cur))?;
                } else {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&cur)
                        .map_err(err("creating", &cur))?;
                }
            }
            Err(e) => return Err(err("reading", &cur)(e)),
        }
    }
    Ok(cur)
}

/// The mount syscalls the root is built with, behind a trait so that tests can record
/// the sequence without root.
pub trait MountOps {
    fn mount<S, T, F, D>(
        &mut self,
        source: Option<&S>,
        target: &T,
        fstype: Option<&F>,
        flags: MsFlags,
        data: Option<&D>,
    ) -> nix::Result<()>
    where
        S: ?Sized + NixPath,
        T: ?Sized + NixPath,
        F: ?Sized + NixPath,
        D: ?Sized + NixPath;

    /// Makes `root` the root directory and detaches the old one.
    fn pivot_into(&mut self, root: &Path) -> Result<(), SetupError>;
}

/// The real system calls.
pub struct Syscalls;

impl MountOps for Syscalls {
    fn mount<S, T, F, D>(
        &mut self,
        source: Option<&S>,
        target: &T,
        fstype: Option<&F>,
        flags: MsFlags,
        data: Option<&D>,
    ) -> nix::Result<()>
    where
        S: ?Sized + NixPath,
        T: ?Sized + NixPath,
        F: ?Sized + NixPath,
        D: ?Sized + NixPath,
    {
        mount(source, target, fstype, flags, data)
    }

    fn pivot_into(&mut self, root: &Path) -> Result<(), SetupError> {
        // pivot_root(".", "."): the old root ends up stacked under the new one and is
        // detached right away, so no directory for it is needed in the image.
        nix::unistd::chdir(root).map_err(nix_err("entering", root))?;
        nix::unistd::pivot_root(".", ".").map_err(nix_err("pivot_root into", root))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(nix_err("unmounting the old root", root))?;
        nix::unistd::chdir("/").map_err(nix_err("entering", Path::new("/")))
    }
}

/// Makes the mounts, pivots into the new root and drops the old one. Afterwards `/`
/// is the container's root.
pub fn build(spec: &InitSpec) -> Result<(), SetupError> {
    build_with(spec, &mut Syscalls)
}

/// `build` through `k`.
pub fn build_with<K: MountOps>(spec: &InitSpec, k: &mut K) -> Result<(), SetupError> {
    // Nothing mounted here may leak back to the host's mount namespace.
    k.mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("making mounts private at", Path::new("/")))?;

    let root = writable_root(spec, k)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = mount_point(&root, Path::new("/proc"), true)?;
    k.mount(Some("proc"), &proc_dir, Some("proc"), flags, None::<&str>)
        .map_err(nix_err("mounting proc on", &proc_dir))?;
    let sys_dir = mount_point(&root, Path::new("/sys"), true)?;
    k.mount(
        Some("sysfs"),
        &sys_dir,
        Some("sysfs"),
        flags | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(nix_err("mounting sysfs (read-only) on", &sys_dir))?;
    mask_kernel_files(&root, k)?;

    dev(&root, k)?;

    let tmp = mount_point(&root, Path::new("/tmp"), true)?;
    k.mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(nix_err("mounting a tmpfs on", &tmp))?;

    for m in &spec.mounts {
        let target = mount_point(&root, &m.target, m.source.is_dir())?;
        k.mount(
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
            remount_ro(&target, k)?;
        }
    }

    if spec.readonly_rootfs {
        remount_ro(&root, k)?;
    }

    k.pivot_into(&root)
}

/// What a container must not read from the kernel (host memory, keys, timers,
/// firmware), as Docker and runc mask them: files get `/dev/null` bound over them,
/// directories an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
];

/// What a container may read but not change (kernel tunables, the magic SysRq key,
/// IRQ affinity, buses).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// Masks `MASKED_PATHS` and makes `READONLY_PATHS` read-only under `root` (freshly
/// mounted proc and sysfs: the kernel's files, no symlink a task made). A path the
/// kernel does not have is skipped.
fn mask_kernel_files<K: MountOps>(root: &Path, k: &mut K) -> Result<(), SetupError> {
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    for p in MASKED_PATHS {
        let target = under(p);
        let Ok(meta) = std::fs::symlink_metadata(&target) else {
            continue;
        };
        if meta.is_dir() {
            k.mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
            .map_err(nix_err("masking", &target))?;
        } else {
            k.mount(
                Some("/dev/null"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(nix_err("masking", &target))?;
        }
    }
    for p in READONLY_PATHS {
        let target = under(p);
        if std::fs::symlink_metadata(&target).is_err() {
            continue;
        }
        k.mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err("binding read-only", &target))?;
        remount_ro(&target, k)?;
    }
    Ok(())
}

/// The directory that becomes `/`: an overlay mount or a bind-mounted copy, either
/// way a mount point (which `pivot_root` needs).
fn writable_root<K: MountOps>(spec: &InitSpec, k: &mut K) -> Result<PathBuf, SetupError> {
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
        match k.mount(
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
    k.mount(
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
fn dev<K: MountOps>(root: &Path, k: &mut K) -> Result<(), SetupError> {
    let dev = mount_point(root, Path::new("/dev"), true)?;
    k.mount(
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
        k.mount(
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
    k.mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(nix_err("mounting devpts on", &pts))?;
    let shm = mkdirs(&dev.join("shm"))?;
    k.mount(
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

fn remount_ro<K: MountOps>(path: &Path, k: &mut K) -> Result<(), SetupError> {
    k.mount(
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
        // chown clears setuid/setgid bits: set the mode again after it.
        if !m.file_type().is_symlink() {
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode_bits()))
                .map_err(err("setting the mode of", dst))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::container::spec::{BindMount, NetworkMode};

    /// Records every mount instead of making it; refuses overlayfs when asked.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        no_overlay: bool,
        pivoted: Option<PathBuf>,
    }

    fn text<P: ?Sized + NixPath>(p: Option<&P>) -> String {
        p.and_then(|p| p.with_nix_path(|c| c.to_string_lossy().into_owned()).ok())
            .unwrap_or_else(|| "-".to_string())
    }

    impl MountOps for Recorder {
        fn mount<S, T, F, D>(
            &mut self,
            source: Option<&S>,
            target: &T,
            fstype: Option<&F>,
            flags: MsFlags,
            data: Option<&D>,
        ) -> nix::Result<()>
        where
            S: ?Sized + NixPath,
            T: ?Sized + NixPath,
            F: ?Sized + NixPath,
            D: ?Sized + NixPath,
        {
            let fstype = text(fstype);
            if self.no_overlay && fstype == "overlay" {
                return Err(nix::Error::ENODEV);
            }
            self.calls.push(format!(
                "{} -> {} [{fstype}] {flags:?} {}",
                text(source),
                text(Some(target)),
                text(data)
            ));
            Ok(())
        }

        fn pivot_into(&mut self, root: &Path) -> Result<(), SetupError> {
            self.pivoted = Some(root.to_path_buf());
            Ok(())
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        spec: InitSpec,
        volume: PathBuf,
    }

    fn fixture(layer: LayerMode) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/tool"), b"x").unwrap();
        let task = dir.path().join("alloc/web");
        std::fs::create_dir_all(&task).unwrap();
        let volume = dir.path().join("data");
        std::fs::create_dir_all(&volume).unwrap();
        let spec = InitSpec {
            rootfs: src,
            layer_dir: task.join(".container"),
            layer,
            command: "/bin/tool".into(),
            args: vec![],
            env: Default::default(),
            cwd: task.clone(),
            hostname: "h".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            mounts: vec![
                BindMount {
                    source: task.clone(),
                    target: task.clone(),
                    readonly: false,
                },
                BindMount {
                    source: volume.clone(),
                    target: "/data".into(),
                    readonly: true,
                },
            ],
            keep_caps: vec![],
            network: NetworkMode::Host,
            seccomp: Default::default(),
            readonly_rootfs: true,
            stdout: Some(dir.path().join("out")),
            stderr: Some(dir.path().join("err")),
            exit_file: None,
        };
        Fixture {
            _dir: dir,
            spec,
            volume,
        }
    }

    fn position(calls: &[String], needle: &str) -> usize {
        calls
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no call with {needle:?} in {calls:#?}"))
    }

    #[test]
    fn the_root_is_built_private_first_and_pivoted_last() {
        let f = fixture(LayerMode::Auto);
        let mut k = Recorder::default();
        build_with(&f.spec, &mut k).unwrap();
        let merged = f.spec.layer_dir.join("merged");
        let m = merged.display().to_string();
        let calls = &k.calls;
        assert!(
            calls[0].starts_with("- -> / [-]") && calls[0].contains("MS_PRIVATE"),
            "{calls:#?}"
        );
        assert!(
            calls[1].contains("[overlay]")
                && calls[1].contains(&format!("lowerdir={}", f.spec.rootfs.display())),
            "{calls:#?}"
        );
        assert!(
            calls[2].starts_with(&format!("proc -> {m}/proc [proc]")),
            "{calls:#?}"
        );
        position(calls, &format!("devpts -> {m}/dev/pts [devpts]"));
        position(calls, &format!("tmpfs -> {m}/tmp [tmpfs]"));
        // The volume is bound, then made read-only; the root last of all.
        let bind = position(calls, &format!("{} -> {m}/data [-]", f.volume.display()));
        assert!(
            calls[bind + 1].starts_with(&format!("- -> {m}/data"))
                && calls[bind + 1].contains("MS_RDONLY")
        );
        assert!(
            calls.last().unwrap().starts_with(&format!("- -> {m} [-]"))
                && calls.last().unwrap().contains("MS_RDONLY")
        );
        assert_eq!(k.pivoted, Some(merged.clone()));
        // Mount points were made in the new root, none in the source.
        assert!(merged.join("data").is_dir() && merged.join("dev/null").exists());
        assert!(!f.spec.rootfs.join("data").exists());
    }

    #[test]
    fn without_overlayfs_the_root_is_a_bind_mounted_copy() {
        let f = fixture(LayerMode::Auto);
        let mut k = Recorder {
            no_overlay: true,
            ..Default::default()
        };
        build_with(&f.spec, &mut k).unwrap();
        let copy = f.spec.layer_dir.join("copy");
        assert_eq!(std::fs::read(copy.join("bin/tool")).unwrap(), b"x");
        let c = copy.display().to_string();
        assert!(
            k.calls[1].starts_with(&format!("{c} -> {c} [-]")),
            "{:#?}",
            k.calls
        );
        assert_eq!(k.pivoted, Some(copy));
    }

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
    fn mount_points_are_created_under_the_root_and_never_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let p = mount_point(&root, Path::new("/a/b"), true).unwrap();
        assert_eq!(p, root.join("a/b"));
        assert!(p.is_dir());
        let f = mount_point(&root, Path::new("/a/file"), false).unwrap();
        assert!(f.is_file());
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("var")).unwrap();
        let e = mount_point(&root, Path::new("/var/lib/x"), true).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!outside.join("lib").exists());
        assert!(mount_point(&root, Path::new("/a/../../x"), true).is_err());
    }
}
