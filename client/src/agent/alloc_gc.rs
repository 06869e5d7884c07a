//! Removing the directories of allocations the servers garbage collected: the alloc
//! dirs with no runner are checked against the servers
//! (`POST /v1/node/{id}/allocations/known`) and those of unknown allocations are
//! deleted. Runs once after the client's first allocation watch answer (dirs left by
//! an earlier run) and whenever the servers' garbage collection index moves.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::Shared;
use crate::rpc::RpcError;
use orch_common::ids::AllocId;

impl Shared {
    /// Names of the alloc dirs that have no runner.
    fn idle_alloc_dirs(&self) -> Vec<AllocId> {
        let runners = self.runners.lock().expect("runner table poisoned");
        let Ok(entries) = std::fs::read_dir(self.cfg.alloc_root()) else {
            return Vec::new();
        };
        let mut ids: Vec<AllocId> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(AllocId::from)
            .filter(|id| !runners.contains_key(id))
            .collect();
        ids.sort();
        ids
    }
}

/// Deletes the alloc dirs of allocations the servers no longer know; returns how many.
pub(super) async fn remove_collected_dirs(shared: &Arc<Shared>) -> Result<usize, RpcError> {
    let idle = shared.idle_alloc_dirs();
    if idle.is_empty() {
        return Ok(0);
    }
    let known: HashSet<AllocId> = shared
        .api
        .known_allocs(&shared.node.id, idle.clone())
        .await?
        .known
        .into_iter()
        .collect();
    let gone: Vec<AllocId> = idle.into_iter().filter(|id| !known.contains(id)).collect();
    if gone.is_empty() {
        return Ok(0);
    }
    let shared = shared.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let root = shared.cfg.alloc_root();
        let mounts = mount_points();
        let mut removed = 0;
        for id in gone {
            // A runner may have started for it since the check (a new placement
            // reusing nothing but the id is impossible; this is only prudence).
            if shared
                .runners
                .lock()
                .expect("runner table poisoned")
                .contains_key(&id)
            {
                continue;
            }
            let dir = root.join(id.as_str());
            if let Some(m) = mounts.iter().find(|m| m.starts_with(&dir)) {
                // Never recurse into a mount (a bind mount would lose host files).
                tracing::warn!(alloc = %id, mount = %m.display(), "not removing a collected allocation's dir: something is mounted in it");
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    removed += 1;
                    shared.deps.usage.forget(&id);
                    tracing::info!(alloc = %id, "removed the dir of a garbage collected allocation");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(alloc = %id, path = %dir.display(), error = %e, "removing a collected allocation's dir")
                }
            }
        }
        removed
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "removing collected alloc dirs panicked");
        0
    });
    Ok(removed)
}

/// Every mount point of this process's mount namespace (empty when unreadable).
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(Ok(v)) = field.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8)) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }
}
