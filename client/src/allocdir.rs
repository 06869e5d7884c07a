//! The allocation directory on disk:
//!
//! ```text
//! <data_dir>/alloc/<alloc_id>/
//!     alloc/logs/<task>.stdout.0, <task>.stderr.0   logs of every task
//!     alloc/data/                                    shared data
//!     alloc/tmp/
//!     <task>/local/                                  the task's own files (ORCH_TASK_DIR)
//!     <task>/tmp/
//!     .ctl/<task>/                                   the client's: exit record, log
//!                                                    FIFOs (root, 0700)
//! ```
//!
//! The task owns `<task>/` and everything below it; the client never writes there by a
//! path that a symlink could redirect (see `control_dir`, `give_task_dirs`).

use std::path::{Path, PathBuf};

/// Where the client keeps a task's control files (exit record, log FIFOs): beside the
/// task dir `<alloc>/<task>`, in `<alloc>/.ctl/<task>`, which the task cannot write.
pub fn control_dir(task_dir: &Path) -> PathBuf {
    let alloc = task_dir.parent().unwrap_or(Path::new("/"));
    let task = task_dir.file_name().unwrap_or_default();
    alloc.join(".ctl").join(task)
}

/// Makes `dir` and its parent as the client's own (0700), or checks that they are
/// directories already (a symlink in their place is an error, never followed).
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    for d in [dir.parent(), Some(dir)].into_iter().flatten() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(d)?.is_dir() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!("{} is not a directory", d.display()),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why an allocation directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("preparing allocation directory {path}: {source}")]
pub struct AllocDirError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Paths of one allocation's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocDir {
    root: PathBuf,
}

impl AllocDir {
    /// `alloc_root` is `<data_dir>/alloc`.
    pub fn new(alloc_root: &Path, alloc_id: &str) -> Self {
        AllocDir {
            root: alloc_root.join(alloc_id),
        }
    }

    /// `<alloc_root>/<alloc_id>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared `alloc/` directory (ORCH_ALLOC_DIR).
    pub fn shared(&self) -> PathBuf {
        self.root.join("alloc")
    }

    pub fn logs(&self) -> PathBuf {
        self.shared().join("logs")
    }

    /// The task's working directory `<alloc>/<task>`.
    pub fn task(&self, task: &str) -> PathBuf {
        self.root.join(task)
    }

    /// `<alloc>/<task>/local` (ORCH_TASK_DIR).
    pub fn task_local(&self, task: &str) -> PathBuf {
        self.task(task).join("local")
    }

    /// `stdout` or `stderr` log file of a task (rotation index 0).
    pub fn log_file(&self, task: &str, stream: &str) -> PathBuf {
        self.logs().join(format!("{task}.{stream}.0"))
    }

    /// Creates every directory (existing ones are fine).
    pub fn prepare(&self, tasks: &[String]) -> Result<(), AllocDirError> {
        // Parents before children: one mkdir each, where `create_dir_all` would try
        // every child first, fail and climb up.
        let mut dirs = vec![
            self.root.clone(),
            self.shared(),
            self.logs(),
            self.shared().join("data"),
            self.shared().join("tmp"),
        ];
        for t in tasks {
            dirs.push(self.task(t));
            dirs.push(self.task_local(t));
            dirs.push(self.task(t).join("tmp"));
        }
        // 0755 whatever the umask (a umask of 0 must not make them world-writable):
        // tasks running as another user read their way down to their own directory.
        use std::os::unix::fs::DirBuilderExt as _;
        for d in dirs {
            let mut made = std::fs::DirBuilder::new().mode(0o755).create(&d);
            if matches!(&made, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                // Only the alloc root's parent can be missing (a data dir emptied by hand).
                made = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&d);
            }
            match made {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists || !d.is_dir() => {
                    return Err(AllocDirError { path: d, source: e })
                }
                _ => {}
            }
        }
        // The shared dirs are for every task of the allocation, whatever user each runs
        // as (a container's default is `nobody`): writable by all, sticky like /tmp, as
        // Nomad's shared alloc dir. The logs stay the client's.
        for d in [self.shared().join("data"), self.shared().join("tmp")] {
            std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
                .map_err(|source| AllocDirError { path: d, source })?;
        }
        Ok(())
    }

    /// Task names that have a directory here (everything but `alloc` and the client's
    /// dot-directories).
    pub fn task_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n != "alloc" && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_the_whole_layout() {
        let dir = tempfile::tempdir().unwrap();
        let a = AllocDir::new(dir.path(), "a1");
        a.prepare(&["web".to_string(), "side".to_string()]).unwrap();
        let mode = |p: PathBuf| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o7777
        };
        assert_eq!(mode(a.shared().join("data")), 0o1777);
        assert_eq!(mode(a.shared().join("tmp")), 0o1777);
        assert_ne!(
            mode(a.logs()) & 0o002,
            0o002,
            "logs are not writable by tasks"
        );
        for rel in [
            "alloc/logs",
            "alloc/data",
            "alloc/tmp",
            "web/local",
            "web/tmp",
            "side/local",
        ] {
            assert!(dir.path().join("a1").join(rel).is_dir(), "{rel}");
        }
        assert_eq!(
            a.log_file("web", "stdout"),
            dir.path().join("a1/alloc/logs/web.stdout.0")
        );
        assert_eq!(a.task_names(), vec!["side".to_string(), "web".to_string()]);
    }

    #[test]
    fn control_dirs_are_private_beside_the_task_dirs_and_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let a = AllocDir::new(dir.path(), "a1");
        a.prepare(&["web".to_string()]).unwrap();
        let ctl = control_dir(&a.task("web"));
        assert_eq!(ctl, dir.path().join("a1/.ctl/web"));
        make_private_dir(&ctl).unwrap();
        make_private_dir(&ctl).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&ctl).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(a.task_names(), vec!["web".to_string()], "not a task");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let side = control_dir(&a.task("side"));
        std::os::unix::fs::symlink(&elsewhere, &side).unwrap();
        assert!(make_private_dir(&side).is_err());
    }
}
