//! `ReplicationMark`: what the Raft log last applied to this state (its log id and
//! the cluster membership then in force), kept in the state database and written in
//! the same transaction as the entry it describes, so the two never disagree after a
//! crash. Opaque JSON here: the `raft` module owns its shape.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::{SqlContext, StateError};

/// The last applied Raft entry's log id and the membership in force, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationMark {
    pub log_id: String,
    pub membership: String,
}

/// Writes `mark` (replacing the previous one) in the caller's transaction.
pub(crate) fn write(c: &Connection, mark: &ReplicationMark) -> Result<(), StateError> {
    c.prepare_cached(
        "INSERT INTO raft_applied (id, log_id, membership) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET log_id = excluded.log_id, \
         membership = excluded.membership",
    )
    .and_then(|mut stmt| stmt.execute(params![mark.log_id, mark.membership]))
    .ctx(|| "recording the applied Raft entry".to_string())
    .map(|_| ())
}

/// The stored mark, `None` before Raft applied anything.
pub(crate) fn read(c: &Connection) -> Result<Option<ReplicationMark>, StateError> {
    c.query_row(
        "SELECT log_id, membership FROM raft_applied WHERE id = 1",
        [],
        |r| {
            Ok(ReplicationMark {
                log_id: r.get(0)?,
                membership: r.get(1)?,
            })
        },
    )
    .optional()
    .ctx(|| "reading the applied Raft entry".to_string())
}
