//! `ContainerPolicy`: what a client lets its container tasks ask for, and the checks
//! the driver makes before it builds anything. A root filesystem or image only from
//! under the client's `container_rootfs` directories and never a host system
//! directory; `cap_add` within `allow_caps`; the host's network and an unconfined
//! seccomp filter only where the client allows them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orch_common::model::AllocatedPort;

use super::caps;
use super::error::ContainerError;
use super::seccomp::Seccomp;
use super::spec::NetworkMode;

/// Host directories whose whole tree is the host's own: never a root filesystem, nor
/// anything below them.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/sys", "/usr", "/snap",
];
/// Host directories that hold other programs' data: not a root filesystem themselves
/// (a directory below them may be).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/srv",
    "/tmp",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/cache",
    "/var/tmp",
    "/var/spool",
    "/var/mail",
    "/var/backups",
];

/// What a client's container tasks may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// Directories under which `rootfs` directories and `image` tarballs may be.
    /// Default: `/var/lib/orch/images` (the agent uses `<data_dir>/images`).
    pub rootfs_roots: Vec<PathBuf>,
    /// Directories no root filesystem may be in or contain: the client's own state
    /// (task dirs with other tasks' secrets, node identity). Default: none.
    pub protected_dirs: Vec<PathBuf>,
    /// Capabilities a task may keep (numbers). Default: Docker's default set.
    pub allow_caps: BTreeSet<u8>,
    /// Let containers share the host's network (`network_mode = "host"`, or a group
    /// with ports). Default: true.
    pub allow_host_network: bool,
    /// Let tasks run without the seccomp filter (`seccomp = "unconfined"`). Default:
    /// false.
    pub allow_unconfined_seccomp: bool,
}

impl Default for ContainerPolicy {
    fn default() -> Self {
        ContainerPolicy {
            rootfs_roots: vec![PathBuf::from("/var/lib/orch/images")],
            protected_dirs: Vec::new(),
            allow_caps: caps::default_set(),
            allow_host_network: true,
            allow_unconfined_seccomp: false,
        }
    }
}

impl ContainerPolicy {
    /// `path` (a `rootfs` directory or `image` tarball, named by `key`) with its
    /// symlinks resolved, when the client allows it.
    pub fn check_root(&self, path: &Path, key: &'static str) -> Result<PathBuf, ContainerError> {
        let refused = |path: &Path, reason: String| ContainerError::RootNotAllowed {
            key,
            path: path.to_path_buf(),
            reason,
        };
        let real = std::fs::canonicalize(path).map_err(|e| refused(path, e.to_string()))?;
        if let Some(why) = self.forbidden(&real) {
            return Err(refused(&real, why));
        }
        let under_a_root = self.rootfs_roots.iter().any(|root| {
            std::fs::canonicalize(root)
                .map(|root| real.starts_with(root))
                .unwrap_or(false)
        });
        if !under_a_root {
            let roots = if self.rootfs_roots.is_empty() {
                "none".to_string()
            } else {
                self.rootfs_roots
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(refused(
                &real,
                format!("not under a directory the client allows in container_rootfs ({roots})"),
            ));
        }
        Ok(real)
    }

    /// Why `real` (no symlinks) can never be a root filesystem, whatever the roots.
    fn forbidden(&self, real: &Path) -> Option<String> {
        if let Some(tree) = SYSTEM_TREES.iter().find(|t| real.starts_with(t)) {
            return Some(format!("{tree} is the host's own"));
        }
        if SYSTEM_DIRS.iter().any(|d| real == Path::new(d)) {
            return Some("a host system directory".to_string());
        }
        for dir in &self.protected_dirs {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            if real.starts_with(&dir) || dir.starts_with(real) {
                return Some(format!(
                    "holds or is inside the client's own state ({})",
                    dir.display()
                ));
            }
        }
        None
    }

    /// Refuses the host's network where the client does not allow it. `asked`: the
    /// task named its `network_mode` (otherwise its group's `ports` implied it).
    pub(super) fn check_network(
        &self,
        network: NetworkMode,
        asked: bool,
        ports: &[AllocatedPort],
    ) -> Result<(), ContainerError> {
        if network != NetworkMode::Host || self.allow_host_network {
            return Ok(());
        }
        let asked = if asked {
            "network_mode \"host\"".to_string()
        } else {
            let labels: Vec<&str> = ports.iter().map(|p| p.label.as_str()).collect();
            format!(
                "the host's network (the group's ports {} are reached there; set network_mode = \"none\" to run without them)",
                labels.join(", ")
            )
        };
        Err(ContainerError::NotAllowed {
            asked,
            setting: "container_host_network = false",
        })
    }

    /// Refuses `seccomp = "unconfined"` where the client does not allow it.
    pub(super) fn check_seccomp(&self, mode: Seccomp) -> Result<(), ContainerError> {
        if mode == Seccomp::Unconfined && !self.allow_unconfined_seccomp {
            return Err(ContainerError::NotAllowed {
                asked: "seccomp \"unconfined\"".to_string(),
                setting: "container_allow_unconfined_seccomp = false",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(roots: &[&Path]) -> ContainerPolicy {
        ContainerPolicy {
            rootfs_roots: roots.iter().map(|p| p.to_path_buf()).collect(),
            ..ContainerPolicy::default()
        }
    }

    #[test]
    fn system_directories_are_refused_whatever_the_roots() {
        let p = policy(&[Path::new("/")]);
        for dir in [
            "/",
            "/etc",
            "/usr/lib",
            "/var",
            "/tmp",
            "/root",
            "/proc/1/root",
        ] {
            let err = p.check_root(Path::new(dir), "rootfs").unwrap_err();
            assert!(
                matches!(err, ContainerError::RootNotAllowed { .. }),
                "{dir}: {err}"
            );
        }
    }

    #[test]
    fn only_paths_under_the_roots_are_allowed_and_symlinks_do_not_escape() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("images");
        std::fs::create_dir_all(root.join("busybox")).unwrap();
        std::fs::create_dir_all(base.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(base.path().join("elsewhere"), root.join("link")).unwrap();
        let p = policy(&[&root]);
        let real = std::fs::canonicalize(root.join("busybox")).unwrap();
        assert_eq!(p.check_root(&root.join("busybox"), "rootfs").unwrap(), real);
        let err = p.check_root(&root.join("link"), "rootfs").unwrap_err();
        assert!(err.to_string().contains("container_rootfs"), "{err}");
        let err = policy(&[])
            .check_root(&root.join("busybox"), "image")
            .unwrap_err();
        assert!(err.to_string().contains("(none)"), "{err}");
    }

    #[test]
    fn the_clients_own_state_is_never_a_root() {
        let base = tempfile::tempdir().unwrap();
        let alloc = base.path().join("data/alloc");
        std::fs::create_dir_all(alloc.join("a1/web")).unwrap();
        let p = ContainerPolicy {
            protected_dirs: vec![alloc.clone()],
            ..policy(&[base.path()])
        };
        let inside = p.check_root(&alloc.join("a1/web"), "rootfs").unwrap_err();
        assert!(
            inside.to_string().contains("client's own state"),
            "{inside}"
        );
        assert!(p.check_root(&base.path().join("data"), "rootfs").is_err());
    }
}
