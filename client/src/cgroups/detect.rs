//! Which cgroup hierarchy the host runs (from its mounts table), and the manager for it.

use std::path::Path;
use std::sync::Arc;

use super::error::CgroupError;
use super::manager::CgroupManager;
use super::types::CgroupVersion;
use super::v1::V1Manager;
use super::v2::V2Manager;

/// Reads the cgroup version of the host from a mounts table (`/proc/mounts`): cgroup2 at
/// `/sys/fs/cgroup` is v2; a tmpfs there with cgroup (v1) mounts below is v1 (a hybrid
/// host counts as v1).
pub fn detect_version(mounts: &Path) -> Option<CgroupVersion> {
    detect_version_at(mounts, Path::new("/sys/fs/cgroup"))
}

/// Like `detect_version`, for cgroups mounted at `root`.
pub fn detect_version_at(mounts: &Path, root: &Path) -> Option<CgroupVersion> {
    let text = std::fs::read_to_string(mounts).ok()?;
    let mut at_root = None;
    let mut v1_below = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_dev), Some(point), Some(fstype)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = Path::new(point);
        if point == root {
            at_root = Some(fstype.to_string());
        } else if fstype == "cgroup" && point.starts_with(root) {
            v1_below = true;
        }
    }
    match at_root.as_deref() {
        Some("cgroup2") => Some(CgroupVersion::V2),
        _ if v1_below => Some(CgroupVersion::V1),
        _ => None,
    }
}

/// The manager for the host's hierarchy at `root` (usually `/sys/fs/cgroup`), as told
/// by the mounts table `mounts` (usually `/proc/mounts`).
pub fn detect_manager(mounts: &Path, root: &Path) -> Result<Arc<dyn CgroupManager>, CgroupError> {
    match detect_version_at(mounts, root) {
        Some(CgroupVersion::V1) => Ok(Arc::new(V1Manager::new(root))),
        Some(CgroupVersion::V2) => Ok(Arc::new(V2Manager::new(root))),
        None => Err(CgroupError::NotMounted {
            root: root.to_path_buf(),
            mounts: mounts.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn cgroup2_at_the_root_is_v2() {
        let m = mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n");
        assert_eq!(detect_version(m.path()), Some(CgroupVersion::V2));
    }

    #[test]
    fn tmpfs_with_controller_mounts_is_v1_even_when_hybrid() {
        let m = mounts(
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
             cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
        );
        assert_eq!(detect_version(m.path()), Some(CgroupVersion::V1));
    }

    #[test]
    fn no_cgroup_mounts_is_none() {
        let m = mounts("proc /proc proc rw 0 0\ntmpfs /sys/fs/cgroup tmpfs rw 0 0\n");
        assert_eq!(detect_version(m.path()), None);
        let err = detect_manager(m.path(), Path::new("/sys/fs/cgroup")).unwrap_err();
        assert!(matches!(err, CgroupError::NotMounted { .. }));
    }
}
