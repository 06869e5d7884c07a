//! What the client persists in `<data_dir>/client/`: its node id (`node-id`, so a
//! restarted client keeps its identity) and one JSON file per running task handle
//! (`handles/<alloc>-<task>.json`: pid and start time, cgroup paths, and the driver's
//! state: the task shim, the output FIFOs, the exit file).
//!
//! A starting client loads every handle (`load_all`) and hands them to the task
//! runners of the allocations the servers still assign to it, which re-attach to the
//! tasks (`Driver::recover`) instead of starting them again; handles that no
//! allocation claims are killed (`kill_recorded`), so no task is left unsupervised.

use std::path::{Path, PathBuf};

use crate::cgroups::CgroupManager;
use crate::driver::{proc_start_ticks, process_alive, TaskHandle};
use orch_common::ids::NodeId;

/// Why client state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding task handle {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} holds {content:?}, not a node id")]
    BadNodeId { path: PathBuf, content: String },
    #[error("{path} does not hold a node secret (16 to 256 printable characters)")]
    BadNodeSecret { path: PathBuf },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file atomically: a crash leaves the old content or the new, never half.
/// The file is 0600 whatever the umask: a handle names the task's processes and
/// driver state, which are the client's business only.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    write_private(path, data, false)
}

/// `write_atomic`, through a fresh temporary file (never a symlink followed), synced
/// to disk first when `sync`.
fn write_private(path: &Path, data: &[u8], sync: bool) -> Result<(), StateError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(data)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .map_err(io("writing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))
}

/// Creates `dir` (and its parents) 0700 whatever the umask, and narrows it to 0700 if
/// it was there: the client's own files (its secret, the task handles) are in it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The trimmed content of `<client_dir>/<name>`, or, on first start, `make()`'s value
/// written there (mode 0600, through a fresh temporary file: a crash leaves no half).
fn load_or_create(
    client_dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(PathBuf, String), StateError> {
    private_dir(client_dir).map_err(io("creating", client_dir))?;
    let path = client_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value = text.trim().to_string();
            Ok((path, value))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            write_private(&path, format!("{value}\n").as_bytes(), true)?;
            Ok((path, value))
        }
        Err(source) => Err(StateError::Io {
            action: "reading",
            path,
            source,
        }),
    }
}

/// The node id stored in `<client_dir>/node-id`, created (a new UUID) on first start.
pub fn load_or_create_node_id(client_dir: &Path) -> Result<NodeId, StateError> {
    let (path, id) = load_or_create(client_dir, "node-id", || NodeId::generate().into_string())?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(StateError::BadNodeId { path, content: id });
    }
    Ok(NodeId::from(id))
}

/// The node's secret, stored in `<client_dir>/node-secret` (0600), created on first
/// start (two random UUIDs: 244 random bits as 64 hex characters). The server keeps its
/// hash from the first registration and asks for it on every later call, so that no
/// other process can register as this node or speak for it.
pub fn load_or_create_node_secret(client_dir: &Path) -> Result<String, StateError> {
    let (path, secret) = load_or_create(client_dir, "node-secret", || {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    })?;
    let shaped = (16..=256).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic());
    if !shaped {
        return Err(StateError::BadNodeSecret { path });
    }
    Ok(secret)
}

/// Task handles on disk, one JSON file each.
#[derive(Debug, Clone)]
pub struct HandleStore {
    dir: PathBuf,
}

impl HandleStore {
    /// Uses (and creates) `<client_dir>/handles`.
    pub fn open(client_dir: &Path) -> Result<Self, StateError> {
        let dir = client_dir.join("handles");
        private_dir(&dir).map_err(io("creating", &dir))?;
        Ok(HandleStore { dir })
    }

    fn path(&self, alloc_id: &str, task: &str) -> PathBuf {
        self.dir.join(format!("{alloc_id}-{task}.json"))
    }

    pub fn save(&self, h: &TaskHandle) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(h).map_err(|source| StateError::Encode {
            id: h.id.clone(),
            source,
        })?;
        write_atomic(&self.path(&h.alloc_id, &h.task_name), &data)
    }

    pub fn remove(&self, alloc_id: &str, task: &str) -> Result<(), StateError> {
        let path = self.path(alloc_id, task);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "removing",
                path,
                source,
            }),
        }
    }

    /// The handle of a running task, if one is recorded.
    pub fn load(&self, alloc_id: &str, task: &str) -> Result<Option<TaskHandle>, StateError> {
        let path = self.path(alloc_id, task);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "reading",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Io {
                action: "decoding",
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    /// Every readable handle with its file; unreadable files are logged and skipped.
    pub fn load_all(&self) -> Result<Vec<(PathBuf, TaskHandle)>, StateError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io("listing", &self.dir))?;
        for entry in entries {
            let path = entry.map_err(io("listing", &self.dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TaskHandle>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(h) => out.push((path, h)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable task handle")
                }
            }
        }
        Ok(out)
    }

    /// Kills a task a previous client run recorded (no allocation wants it any more),
    /// removes its cgroup and forgets it.
    pub fn kill_recorded(
        &self,
        h: &TaskHandle,
        cgroups: Option<&dyn CgroupManager>,
    ) -> Result<(), StateError> {
        kill_recorded_task(h, cgroups);
        self.remove(&h.alloc_id, &h.task_name)
    }

    /// Kills every task a previous client run recorded, removes its cgroup and forgets
    /// it. Returns the ids of the tasks cleaned up.
    pub fn kill_leftovers(
        &self,
        cgroups: Option<&dyn CgroupManager>,
    ) -> Result<Vec<String>, StateError> {
        let mut cleaned = Vec::new();
        for (path, h) in self.load_all()? {
            kill_recorded_task(&h, cgroups);
            std::fs::remove_file(&path).map_err(io("removing", &path))?;
            cleaned.push(h.id);
        }
        Ok(cleaned)
    }
}

/// SIGKILLs a task recorded by an earlier run: its whole cgroup when it had one, else its
/// process group when the pid still belongs to the same process (start time matches).
fn kill_recorded_task(h: &TaskHandle, cgroups: Option<&dyn CgroupManager>) {
    if let Some(pid) = h.pid {
        let same_process =
            h.pid_start_ticks.is_some() && proc_start_ticks(pid) == h.pid_start_ticks;
        if same_process {
            tracing::warn!(task = %h.id, pid, "killing a task left running by an earlier client run");
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // SIGKILL is delivered asynchronously: wait until the process is gone (or a
            // zombie) so it is really dead when the client goes on.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while running(pid, h.pid_start_ticks) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    if let (Some(cg), Some(m)) = (&h.cgroup, cgroups) {
        if cg.version != m.version() {
            tracing::warn!(task = %h.id, "recorded cgroup is of another cgroup version; leaving it");
            return;
        }
        if let Err(e) = m.kill_all(cg).and_then(|()| m.remove(cg)) {
            tracing::warn!(task = %h.id, error = %e, "cleaning up a leftover cgroup");
        }
    }
}

/// True while `pid` is the recorded process and not yet a zombie.
fn running(pid: i32, start_ticks: Option<u64>) -> bool {
    process_alive(pid) && proc_start_ticks(pid) == start_ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(alloc: &str, task: &str, pid: Option<i32>) -> TaskHandle {
        TaskHandle {
            id: format!("{alloc}/{task}"),
            alloc_id: alloc.into(),
            task_name: task.to_string(),
            driver: "raw_exec".to_string(),
            pid,
            pid_start_ticks: pid.and_then(proc_start_ticks),
            started_at: 1,
            cgroup: None,
            driver_state: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_node_id_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_node_id(dir.path()).unwrap();
        let b = load_or_create_node_id(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn a_corrupt_node_id_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node-id"), "garbage").unwrap();
        assert!(matches!(
            load_or_create_node_id(dir.path()),
            Err(StateError::BadNodeId { .. })
        ));
    }

    #[test]
    fn the_node_secret_is_created_once_private_and_random() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_node_secret(dir.path()).unwrap();
        let b = load_or_create_node_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(dir.path().join("node-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_node_secret(other.path()).unwrap(), a);
        std::fs::write(dir.path().join("node-secret"), "short").unwrap();
        assert!(matches!(
            load_or_create_node_secret(dir.path()),
            Err(StateError::BadNodeSecret { .. })
        ));
    }

    #[test]
    fn handles_are_saved_loaded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = HandleStore::open(dir.path()).unwrap();
        let h = handle("a1", "web", None);
        store.save(&h).unwrap();
        std::fs::write(dir.path().join("handles/broken.json"), "{").unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1, h);
        store.remove("a1", "web").unwrap();
        store.remove("a1", "web").unwrap();
        assert!(store.load_all().unwrap().is_empty());
    }

    #[test]
    fn leftover_processes_of_an_earlier_run_are_killed() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let store = HandleStore::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let h = handle("a2", "old", Some(child.id() as i32));
        assert!(h.pid_start_ticks.is_some());
        store.save(&h).unwrap();
        let cleaned = store.kill_leftovers(None).unwrap();
        assert_eq!(cleaned, vec!["a2/old".to_string()]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert!(store.load_all().unwrap().is_empty());
    }

    #[test]
    fn a_reused_pid_is_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let store = HandleStore::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let mut h = handle("a3", "old", Some(child.id() as i32));
        // Recorded start time of some other, earlier process.
        h.pid_start_ticks = h.pid_start_ticks.map(|t| t + 12_345);
        store.save(&h).unwrap();
        store.kill_leftovers(None).unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "an unrelated process was killed"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
