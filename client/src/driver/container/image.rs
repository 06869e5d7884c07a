//! Image tarballs (`image = "/path/image.tar"`, OCI image layout or `docker save`):
//! unpacked once into the client's image cache, keyed by the tarball's sha256, with
//! layers applied in order, whiteouts honoured and every entry kept inside the target.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Seek};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image}: {op} {path}: {source}")]
    Io {
        image: PathBuf,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: entry {entry:?} of {archive} escapes the target directory; refused")]
    Escape {
        image: PathBuf,
        archive: String,
        entry: String,
    },
    #[error(
        "image {image}: entry {entry:?} of {archive} goes through the symlink {symlink:?}; refused"
    )]
    SymlinkParent {
        image: PathBuf,
        archive: String,
        entry: String,
        symlink: String,
    },
    #[error("image {image}: {reason}")]
    Format { image: PathBuf, reason: String },
    /// A blob whose content does not match the digest it is named by (`detail` says
    /// which, and what it hashed to).
    #[error("image {image}: {detail}; refused")]
    Digest { image: PathBuf, detail: String },
}

/// How the image says to run it (the `config` object of its image config), used where
/// the task's config is silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// Where an unpacked image keeps its `ImageConfig`, beside `rootfs`.
const CONFIG_FILE: &str = "image-config.json";

/// An unpacked image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The root filesystem (read-only by convention: containers get a layer over it).
    pub rootfs: PathBuf,
    /// `sha256:<hex>` of the tarball.
    pub digest: String,
    /// True when an earlier task had unpacked it already.
    pub cached: bool,
    pub config: ImageConfig,
}

/// The image config kept beside an unpacked root filesystem (none: the defaults).
fn cached_config(dir: &Path) -> ImageConfig {
    std::fs::read(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Unpacks `image` under `cache_root/<hex>/rootfs` unless it is there already.
/// Blocking: call it off the async runtime.
pub fn unpack_cached(cache_root: &Path, image: &Path) -> Result<Unpacked, ImageError> {
    let io = |op, path: &Path| {
        let (image, path) = (image.to_path_buf(), path.to_path_buf());
        move |source| ImageError::Io {
            image,
            op,
            path,
            source,
        }
    };
    let hex = sha256_file(image).map_err(io("reading", image))?;
    let digest = format!("sha256:{hex}");
    let dir = cache_root.join(&hex);
    let rootfs = dir.join("rootfs");
    if rootfs.is_dir() {
        return Ok(Unpacked {
            rootfs,
            digest,
            cached: true,
            config: cached_config(&dir),
        });
    }
    std::fs::create_dir_all(cache_root).map_err(io("creating", cache_root))?;
    // Unpack beside the final place and rename: a half-unpacked image is never used.
    let tmp = cache_root.join(format!(".tmp-{hex}-{}", uuid::Uuid::new_v4()));
    let result = unpack_into(image, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(tmp.join("archive"));
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(Unpacked {
            rootfs,
            digest,
            cached: false,
            config: cached_config(&dir),
        }),
        // Another task unpacked the same image meanwhile: use theirs.
        Err(_) if rootfs.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(Unpacked {
                rootfs,
                digest,
                cached: true,
                config: cached_config(&dir),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(io("renaming into", &dir)(e))
        }
    }
}

/// `sha256_file` with the image named in the error.
fn sha256_in(image: &Path, path: &Path) -> Result<String, ImageError> {
    sha256_file(path).map_err(|source| ImageError::Io {
        image: image.to_path_buf(),
        op: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts the outer archive into `tmp/archive`, then applies its layers to
/// `tmp/rootfs`.
fn unpack_into(image: &Path, tmp: &Path) -> Result<(), ImageError> {
    let format = |reason: String| ImageError::Format {
        image: image.to_path_buf(),
        reason,
    };
    let archive_dir = tmp.join("archive");
    let rootfs = tmp.join("rootfs");
    for d in [&archive_dir, &rootfs] {
        std::fs::create_dir_all(d).map_err(|source| ImageError::Io {
            image: image.to_path_buf(),
            op: "creating",
            path: d.clone(),
            source,
        })?;
    }
    let file = open(image, image)?;
    let outer = Applier::new(image, "the image tarball".to_string(), &archive_dir);
    let links = outer.apply(file)?;

    let read_json = |rel: &str| -> Result<serde_json::Value, ImageError> {
        let p = inside(image, &archive_dir, rel)?;
        let text = std::fs::read(&p).map_err(|source| ImageError::Io {
            image: image.to_path_buf(),
            op: "reading",
            path: p.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| format(format!("{rel} is not valid JSON: {e}")))
    };
    // An OCI blob is named by its digest: the content must match it (sha256 is what
    // images use; other algorithms are refused rather than trusted unchecked).
    let blob = |digest: &str| -> Result<String, ImageError> {
        let (alg, hex) = digest
            .split_once(':')
            .filter(|(a, h)| !a.is_empty() && !h.is_empty() && !h.contains('/') && !a.contains('/'))
            .ok_or_else(|| format(format!("bad digest {digest:?}")))?;
        if alg != "sha256" {
            return Err(format(format!("digest {digest:?} is not sha256")));
        }
        let rel = format!("blobs/{alg}/{hex}");
        let path = inside(image, &archive_dir, &rel)?;
        let actual = sha256_in(image, &path)?;
        if actual != hex {
            return Err(ImageError::Digest {
                image: image.to_path_buf(),
                detail: format!(
                    "blob {rel} has sha256 {actual}, not the {digest} its manifest names"
                ),
            });
        }
        Ok(rel)
    };

    // The image config's `config` object, when the image has one.
    let mut image_config = serde_json::Value::Null;
    // `docker save` layers are named by path, not digest: the config's `rootfs.diff_ids`
    // (sha256 of each uncompressed layer) are what they are checked against.
    let mut diff_ids: Vec<String> = Vec::new();
    let layers: Vec<String> = if archive_dir.join("index.json").is_file() {
        // OCI image layout: index -> manifest (possibly through a nested index) -> layers.
        let mut doc = read_json("index.json")?;
        let mut hops = 0;
        let manifest = loop {
            let first = doc
                .get("manifests")
                .and_then(|m| m.get(0))
                .ok_or_else(|| format("index.json lists no manifests".to_string()))?;
            let digest = first
                .get("digest")
                .and_then(|d| d.as_str())
                .ok_or_else(|| format("a manifest entry has no digest".to_string()))?;
            let next = read_json(&blob(digest)?)?;
            if next.get("manifests").is_some() && hops < 4 {
                hops += 1;
                doc = next;
            } else {
                break next;
            }
        };
        if let Some(digest) = manifest
            .get("config")
            .and_then(|c| c.get("digest"))
            .and_then(|d| d.as_str())
        {
            image_config = read_json(&blob(digest)?)?["config"].take();
        }
        manifest
            .get("layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| format("the manifest has no layers".to_string()))?
            .iter()
            .map(|l| {
                l.get("digest")
                    .and_then(|d| d.as_str())
                    .ok_or_else(|| format("a layer has no digest".to_string()))
                    .and_then(blob)
            })
            .collect::<Result<_, _>>()?
    } else if archive_dir.join("manifest.json").is_file() {
        // `docker save`: [{ "Config": ..., "Layers": ["<id>/layer.tar", ...] }].
        let doc = read_json("manifest.json")?;
        if let Some(config) = doc
            .get(0)
            .and_then(|m| m.get("Config"))
            .and_then(|c| c.as_str())
        {
            let rel = safe_relative(config).ok_or_else(|| ImageError::Escape {
                image: image.to_path_buf(),
                archive: "manifest.json".to_string(),
                entry: config.to_string(),
            })?;
            let mut config_doc = read_json(&rel.to_string_lossy())?;
            diff_ids = config_doc["rootfs"]["diff_ids"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            image_config = config_doc["config"].take();
        }
        doc.get(0)
            .and_then(|m| m.get("Layers"))
            .and_then(|l| l.as_array())
            .ok_or_else(|| format("manifest.json has no Layers".to_string()))?
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format("a layer path is not a string".to_string()))
            })
            .collect::<Result<_, _>>()?
    } else {
        return Err(format(
            "neither an OCI image layout (index.json) nor a docker save tarball (manifest.json)"
                .to_string(),
        ));
    };

    let config: ImageConfig = match image_config {
        serde_json::Value::Null => ImageConfig::default(),
        v => serde_json::from_value(v)
            .map_err(|e| format(format!("the image config is not valid: {e}")))?,
    };
    let config_path = tmp.join(CONFIG_FILE);
    let bytes = serde_json::to_vec(&config).map_err(|e| format(e.to_string()))?;
    std::fs::write(&config_path, bytes).map_err(|source| ImageError::Io {
        image: image.to_path_buf(),
        op: "writing",
        path: config_path.clone(),
        source,
    })?;

    let check_diff_ids = !diff_ids.is_empty() && diff_ids.len() == layers.len();
    for (i, layer) in layers.into_iter().enumerate() {
        let rel = safe_relative(&layer).ok_or_else(|| ImageError::Escape {
            image: image.to_path_buf(),
            archive: "the image manifest".to_string(),
            entry: layer.clone(),
        })?;
        // docker save may store a repeated layer as a symlink to the first copy.
        let rel = links.get(&rel).cloned().unwrap_or(rel);
        let path = inside(image, &archive_dir, &rel.to_string_lossy())?;
        let mut f = open(image, &path)?;
        let mut magic = [0u8; 2];
        let gzip = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        f.rewind().map_err(|source| ImageError::Io {
            image: image.to_path_buf(),
            op: "reading",
            path: path.clone(),
            source,
        })?;
        if check_diff_ids && !gzip {
            let actual = sha256_in(image, &path)?;
            if diff_ids[i] != format!("sha256:{actual}") {
                return Err(ImageError::Digest {
                    image: image.to_path_buf(),
                    detail: format!(
                        "layer {layer} has sha256:{actual}, not the {} its config names",
                        diff_ids[i]
                    ),
                });
            }
        }
        let applier = Applier::new(image, format!("layer {layer}"), &rootfs);
        if gzip {
            applier.apply(flate2::read::GzDecoder::new(f))?;
        } else {
            applier.apply(f)?;
        }
    }
    Ok(())
}

/// `rel` under the unpacked outer archive, refused when it resolves (through a
/// symlink the archive brought) to anything outside it.
fn inside(image: &Path, archive_dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let escape = || ImageError::Escape {
        image: image.to_path_buf(),
        archive: "the image tarball".to_string(),
        entry: rel.to_string(),
    };
    let rel = safe_relative(rel).ok_or_else(escape)?;
    let path = archive_dir.join(rel);
    let (Ok(real), Ok(base)) = (path.canonicalize(), archive_dir.canonicalize()) else {
        // Missing: reported by whoever opens it, with the path.
        return Ok(path);
    };
    if real.starts_with(base) {
        Ok(real)
    } else {
        Err(escape())
    }
}

fn open(image: &Path, path: &Path) -> Result<BufReader<std::fs::File>, ImageError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| ImageError::Io {
            image: image.to_path_buf(),
            op: "opening",
            path: path.to_path_buf(),
            source,
        })
}

/// `a/./b/` -> `a/b`; `None` for anything that leaves the directory it is relative to
/// (`..`, absolute paths) or names nothing.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Applies one tar stream to a directory.
struct Applier<'a> {
    image: &'a Path,
    archive: String,
    root: &'a Path,
}

impl<'a> Applier<'a> {
    fn new(image: &'a Path, archive: String, root: &'a Path) -> Self {
        Applier {
            image,
            archive,
            root,
        }
    }

    fn io(&self, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
        let (image, path) = (self.image.to_path_buf(), path.to_path_buf());
        move |source| ImageError::Io {
            image,
            op,
            path,
            source,
        }
    }

    /// Writes every entry of `reader` under the root; returns the symlinks it made
    /// (relative path -> relative target, when the target stays inside), which the
    /// outer archive of `docker save` uses for repeated layers.
    fn apply(&self, reader: impl Read) -> Result<HashMap<PathBuf, PathBuf>, ImageError> {
        let mut archive = tar::Archive::new(reader);
        let mut links = HashMap::new();
        // Paths this layer wrote: an opaque whiteout hides only the lower layers.
        let mut written: HashSet<PathBuf> = HashSet::new();
        let entries = archive
            .entries()
            .map_err(self.io("reading", Path::new(&self.archive)))?;
        for entry in entries {
            let mut entry = entry.map_err(self.io("reading", Path::new(&self.archive)))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let escape = || ImageError::Escape {
                image: self.image.to_path_buf(),
                archive: self.archive.clone(),
                entry: raw.clone(),
            };
            let rel = safe_relative(&raw).ok_or_else(escape)?;
            let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue; // "./": the root itself
            };
            let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let parent = self.parent_dir(&parent_rel, &raw)?;
            if name == ".wh..wh..opq" {
                let rd = std::fs::read_dir(&parent).map_err(self.io("listing", &parent))?;
                for child in rd.flatten() {
                    if !written.contains(&parent_rel.join(child.file_name())) {
                        remove_any(&child.path()).map_err(self.io("removing", &child.path()))?;
                    }
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                if hidden.is_empty() || hidden == "." || hidden == ".." {
                    return Err(escape());
                }
                let victim = parent.join(hidden);
                remove_any(&victim).map_err(self.io("removing", &victim))?;
                continue;
            }
            let target = parent.join(&name);
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let existing = std::fs::symlink_metadata(&target).ok();
            use tar::EntryType as T;
            match kind {
                T::Directory => {
                    if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                        if existing.is_some() {
                            remove_any(&target).map_err(self.io("removing", &target))?;
                        }
                        std::fs::create_dir(&target).map_err(self.io("creating", &target))?;
                    }
                    set_mode(&target, mode).map_err(self.io("setting the mode of", &target))?;
                }
                T::Regular | T::Continuous => {
                    if existing.is_some() {
                        remove_any(&target).map_err(self.io("removing", &target))?;
                    }
                    let mut f =
                        std::fs::File::create(&target).map_err(self.io("creating", &target))?;
                    std::io::copy(&mut entry, &mut f).map_err(self.io("writing", &target))?;
                    set_mode(&target, mode).map_err(self.io("setting the mode of", &target))?;
                }
                T::Symlink => {
                    let to = entry
                        .link_name()
                        .map_err(self.io("reading the link of", &target))?
                        .ok_or_else(|| ImageError::Format {
                            image: self.image.to_path_buf(),
                            reason: format!("symlink {raw:?} has no target"),
                        })?
                        .into_owned();
                    if existing.is_some() {
                        remove_any(&target).map_err(self.io("removing", &target))?;
                    }
                    std::os::unix::fs::symlink(&to, &target)
                        .map_err(self.io("creating the symlink", &target))?;
                    if let Some(to_rel) = to.to_str().and_then(|t| {
                        safe_relative(&parent_rel.join(t).to_string_lossy())
                            .filter(|_| !t.starts_with('/') && !t.contains(".."))
                    }) {
                        links.insert(rel.clone(), to_rel);
                    }
                }
                T::Link => {
                    let to = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let to_rel = safe_relative(&to).ok_or_else(|| ImageError::Escape {
                        image: self.image.to_path_buf(),
                        archive: self.archive.clone(),
                        entry: format!("{raw} (hard link to {to})"),
                    })?;
                    let to_parent = to_rel.parent().map(Path::to_path_buf).unwrap_or_default();
                    let source = self
                        .parent_dir(&to_parent, &to)?
                        .join(to_rel.file_name().unwrap_or_default());
                    if existing.is_some() {
                        remove_any(&target).map_err(self.io("removing", &target))?;
                    }
                    std::fs::hard_link(&source, &target)
                        .map_err(self.io("hard-linking", &target))?;
                }
                // Devices, fifos and extension headers are not needed in a root
                // filesystem the container gets its own /dev for.
                _ => continue,
            }
            if nix::unistd::geteuid().is_root() && kind != T::Link {
                let (uid, gid) = (entry.header().uid(), entry.header().gid());
                if let (Ok(uid), Ok(gid)) = (uid, gid) {
                    let _ = std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32));
                    // chown clears setuid/setgid bits: set the mode again after it.
                    if kind != T::Symlink {
                        set_mode(&target, mode).map_err(self.io("setting the mode of", &target))?;
                    }
                }
            }
            written.insert(rel);
        }
        Ok(links)
    }

    /// The directory `parent_rel` under the root, created as needed; refused when a
    /// component is a symlink (it could point anywhere on the host).
    fn parent_dir(&self, parent_rel: &Path, raw: &str) -> Result<PathBuf, ImageError> {
        let mut cur = self.root.to_path_buf();
        for c in parent_rel.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ImageError::SymlinkParent {
                        image: self.image.to_path_buf(),
                        archive: self.archive.clone(),
                        entry: raw.to_string(),
                        symlink: cur
                            .strip_prefix(self.root)
                            .unwrap_or(&cur)
                            .display()
                            .to_string(),
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&cur).map_err(self.io("removing", &cur))?;
                    std::fs::create_dir(&cur).map_err(self.io("creating", &cur))?;
                }
                Err(_) => std::fs::create_dir(&cur).map_err(self.io("creating", &cur))?,
            }
        }
        Ok(cur)
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Removes a file, symlink (not its target) or directory tree; absent is fine.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds image tarballs for tests.
    pub(crate) struct TarBuilder {
        b: tar::Builder<Vec<u8>>,
    }

    impl TarBuilder {
        pub fn new() -> Self {
            TarBuilder {
                b: tar::Builder::new(Vec::new()),
            }
        }

        fn header(kind: tar::EntryType, path: &str, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            // Written raw: `set_path` refuses `..`, which the tests need.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(size);
            h.set_mode(mode);
            h.set_cksum();
            h
        }

        pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
            let h = Self::header(tar::EntryType::Regular, path, data.len() as u64, mode);
            self.b.append(&h, data).unwrap();
            self
        }

        pub fn dir(mut self, path: &str) -> Self {
            let h = Self::header(tar::EntryType::Directory, path, 0, 0o755);
            self.b.append(&h, std::io::empty()).unwrap();
            self
        }

        pub fn symlink(mut self, path: &str, to: &str) -> Self {
            let mut h = Self::header(tar::EntryType::Symlink, path, 0, 0o777);
            h.set_link_name(to).unwrap();
            h.set_cksum();
            self.b.append(&h, std::io::empty()).unwrap();
            self
        }

        pub fn finish(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    impl TarBuilder {
        /// `archive` with the file at `path` holding `data` instead.
        pub fn retarget(archive: &[u8], path: &str, data: &[u8]) -> Vec<u8> {
            let mut out = tar::Builder::new(Vec::new());
            let mut input = tar::Archive::new(archive);
            for entry in input.entries().unwrap() {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut header = entry.header().clone();
                if name == path {
                    header.set_size(data.len() as u64);
                    header.set_cksum();
                    out.append(&header, data).unwrap();
                } else {
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
                    out.append(&header, body.as_slice()).unwrap();
                }
            }
            out.into_inner().unwrap()
        }
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    /// An OCI image layout tarball with these layers (each already a tar, maybe gzipped).
    pub(crate) fn oci_image(layers: &[Vec<u8>]) -> Vec<u8> {
        oci_image_with(layers, serde_json::json!({}))
    }

    /// `oci_image` whose image config has `run` as its `config` object (Entrypoint,
    /// Cmd, Env, WorkingDir, User).
    pub(crate) fn oci_image_with(layers: &[Vec<u8>], run: serde_json::Value) -> Vec<u8> {
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha(l)),
                    "size": l.len(),
                })
            })
            .collect();
        let config = serde_json::to_vec(
            &serde_json::json!({"architecture": "amd64", "os": "linux", "config": run}),
        )
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", sha(&config)),
                "size": config.len(),
            },
            "layers": layer_descs,
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", sha(&manifest)),
                "size": manifest.len(),
            }],
        }))
        .unwrap();
        let mut t = TarBuilder::new()
            .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)
            .file("index.json", &index, 0o644)
            .dir("blobs/")
            .dir("blobs/sha256/");
        for blob in layers.iter().chain([&config, &manifest]) {
            t = t.file(&format!("blobs/sha256/{}", sha(blob)), blob, 0o644);
        }
        t.finish()
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let lower = TarBuilder::new()
            .file("etc/gone.txt", b"old", 0o644)
            .file("etc/kept.txt", b"kept", 0o644)
            .file("var/lib/x/old", b"1", 0o644)
            .symlink("bin/sh", "busybox")
            .finish();
        let upper = TarBuilder::new()
            .file("etc/.wh.gone.txt", b"", 0o644)
            .file("var/lib/x/new", b"2", 0o644)
            .file("var/lib/x/.wh..wh..opq", b"", 0o644)
            .file("etc/kept.txt", b"changed", 0o600)
            .finish();
        let img = write(dir.path(), "img.tar", &oci_image(&[lower, gzip(&upper)]));
        let u = unpack_cached(&dir.path().join("cache"), &img).unwrap();
        assert!(!u.cached);
        let r = &u.rootfs;
        assert!(!r.join("etc/gone.txt").exists());
        assert_eq!(
            std::fs::read_to_string(r.join("etc/kept.txt")).unwrap(),
            "changed"
        );
        assert!(!r.join("var/lib/x/old").exists());
        assert!(r.join("var/lib/x/new").exists());
        assert_eq!(
            std::fs::read_link(r.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let again = unpack_cached(&dir.path().join("cache"), &img).unwrap();
        assert!(again.cached);
        assert_eq!(again.rootfs, u.rootfs);
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layer = TarBuilder::new().file("etc/a", b"a", 0o644).finish();
        let tampered = TarBuilder::new().file("etc/a", b"evil", 0o644).finish();
        // The manifest names `layer`'s digest; the blob under that name is `tampered`.
        let mut image = oci_image(std::slice::from_ref(&layer));
        let name = format!("blobs/sha256/{}", sha(&layer));
        let good = unpack_cached(&dir.path().join("ok"), &write(dir.path(), "ok.tar", &image));
        assert!(good.is_ok(), "{good:?}");
        image = TarBuilder::retarget(&image, &name, &tampered);
        let err = unpack_cached(
            &dir.path().join("cache"),
            &write(dir.path(), "bad.tar", &image),
        )
        .expect_err("tampered layer");
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");
        assert!(err.to_string().contains(&sha(&layer)), "{err}");
    }

    #[test]
    fn a_dot_dot_entry_is_refused_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let evil = TarBuilder::new().file("../escaped", b"x", 0o644).finish();
        let img = write(dir.path(), "evil.tar", &oci_image(&[evil]));
        let cache = dir.path().join("cache");
        let err = unpack_cached(&cache, &img).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"../escaped\"") && text.contains("escapes"),
            "{text}"
        );
        assert!(!dir.path().join("cache/escaped").exists());
        // Nothing half-unpacked stays in the cache.
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    }

    #[test]
    fn an_absolute_entry_and_a_symlinked_parent_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let abs = TarBuilder::new().file("/etc/passwd", b"x", 0o644).finish();
        let img = write(dir.path(), "abs.tar", &oci_image(&[abs]));
        let err = unpack_cached(&dir.path().join("cache"), &img).unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");

        let outside = tempfile::tempdir().unwrap();
        let via_link = TarBuilder::new()
            .symlink("out", outside.path().to_str().unwrap())
            .file("out/planted", b"x", 0o644)
            .finish();
        let img = write(dir.path(), "link.tar", &oci_image(&[via_link]));
        let err = unpack_cached(&dir.path().join("cache"), &img).unwrap_err();
        assert!(matches!(err, ImageError::SymlinkParent { .. }), "{err}");
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn a_whiteout_of_dot_dot_and_a_manifest_symlinked_outside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        let evil = TarBuilder::new().file("etc/.wh...", b"", 0o644).finish();
        let img = write(dir.path(), "wh.tar", &oci_image(&[evil]));
        let err = unpack_cached(&dir.path().join("cache"), &img).unwrap_err();
        assert!(err.to_string().contains(".wh.."), "{err}");

        let secret = write(dir.path(), "secret.json", b"[]");
        let tarball = TarBuilder::new()
            .symlink("manifest.json", secret.to_str().unwrap())
            .finish();
        let img = write(dir.path(), "link.tar", &tarball);
        let err = unpack_cached(&dir.path().join("cache"), &img).unwrap_err();
        assert!(matches!(err, ImageError::Escape { .. }), "{err}");
        assert!(keep.exists());
    }

    #[test]
    fn setuid_bits_survive_the_owner_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let layer = TarBuilder::new().file("bin/su", b"x", 0o4755).finish();
        let img = write(dir.path(), "suid.tar", &oci_image(&[layer]));
        let u = unpack_cached(&dir.path().join("cache"), &img).unwrap();
        let mode = std::fs::metadata(u.rootfs.join("bin/su"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }

    #[test]
    fn docker_save_tarballs_unpack_too() {
        let dir = tempfile::tempdir().unwrap();
        let layer = TarBuilder::new().file("hello", b"hi", 0o644).finish();
        let manifest = br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["abc/layer.tar"]}]"#;
        let tarball = TarBuilder::new()
            .file("manifest.json", manifest, 0o644)
            .file("c.json", b"{}", 0o644)
            .file("abc/layer.tar", &layer, 0o644)
            .finish();
        let img = write(dir.path(), "docker.tar", &tarball);
        let u = unpack_cached(&dir.path().join("cache"), &img).unwrap();
        assert_eq!(
            std::fs::read_to_string(u.rootfs.join("hello")).unwrap(),
            "hi"
        );

        // With diff_ids in the config, each layer must match its own.
        let config = |id: &str| {
            serde_json::to_vec(&serde_json::json!({
                "config": {"Cmd": ["/hello"]},
                "rootfs": {"type": "layers", "diff_ids": [id]},
            }))
            .unwrap()
        };
        let with_ids = |config: Vec<u8>| {
            TarBuilder::new()
                .file("manifest.json", manifest, 0o644)
                .file("c.json", &config, 0o644)
                .file("abc/layer.tar", &layer, 0o644)
                .finish()
        };
        let good = write(
            dir.path(),
            "good.tar",
            &with_ids(config(&format!("sha256:{}", sha(&layer)))),
        );
        let u = unpack_cached(&dir.path().join("cache"), &good).unwrap();
        assert_eq!(u.config.cmd, Some(vec!["/hello".to_string()]));
        let bad = write(
            dir.path(),
            "bad.tar",
            &with_ids(config(&format!("sha256:{}", sha(b"x")))),
        );
        let err = unpack_cached(&dir.path().join("cache"), &bad).expect_err("wrong diff_id");
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");
    }
}
