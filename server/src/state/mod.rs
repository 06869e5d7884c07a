//! The SQLite state store: the cluster's jobs, job versions (the newest few, see
//! `versions`), evaluations, allocations and nodes, written only by
//! `StateStore::apply(index, &Command)` and read on pooled connections, with per-table
//! watch channels for blocking queries.
//!
//! ```text
//!   HTTP handler / worker / plan applier / heartbeats
//!        │ Command
//!        ▼
//!   CommandLog::submit ──► writer thread: index = last + 1
//!                               │ StateStore::apply(index, cmd)   (one transaction:
//!                               │   rows + command_log + indexes, synchronous=FULL;
//!                               │   the in-memory mirror changes with the commit)
//!                               ├─► watch channels (jobs/evals/allocs/nodes/last)
//!                               └─► observers (EvalBroker::observe)
//!   reads: pooled WAL connections (`job`, `allocs_by_node`, ...) and `snapshot()`,
//!          a read transaction pinned at one index plus the mirror at that index
//!          (implements `scheduler::State`, in `crate::scheduler_state`).
//! ```
//!
//! The mirror (`Mirror`) holds what the scheduler reads for every candidate node:
//! per-node sums of the allocations that hold resources, and the decoded node list.
//! SQLite stays the durable store and the source of truth (the sums are rebuilt from
//! it on open); the mirror only saves decoding rows on the hot path.
//!
//! Every row carries `create_index` / `modify_index`; the `indexes` table keeps the last
//! index that touched each table, which is what blocking queries wait on.
//!
//! The files, from the bottom up (each imports only files above it in this list):
//! - `error`: `StateError` and `SqlContext`; `table`: `Table`, what blocking queries
//!   wait on; `command`: `Command`, every change as a serializable value;
//!   `log_entry`: the command log's compressed entries; `versions`: which of a job's
//!   versions a registration keeps; `mark`: what the Raft log last applied.
//! - `schema`: the migrations; `pool`: opening connections, the pool of readers;
//!   `wal`: the checkpointer; `alloc_index`: where each allocation's row is;
//!   `mirror`: the in-memory sums and node list, and placements in flight.
//! - `read`: the queries over one connection; `views`: the read shapes of garbage
//!   collection and the service catalog, each filled in one transaction.
//! - `snapshot`: `Snapshot`, the scheduler's point-in-time view.
//! - `store`: `StateStore`: opening, watches, in-flight placements and every read.
//! - `apply`: `StateStore::apply`; `backup`: snapshot files (saving a copy of the
//!   database online, checking one, installing it); `log`: `CommandLog`, the one
//!   writer thread (it applies commands and installs snapshots).
//!
//! This file only declares the modules and re-exports what the rest of the server
//! uses, so every path stays `crate::state::X`.

mod alloc_index;
mod apply;
pub mod backup;
pub mod command;
mod error;
pub mod log;
mod log_entry;
mod mark;
mod mirror;
mod pool;
mod read;
pub mod schema;
pub mod snapshot;
mod store;
mod table;
pub mod versions;
pub mod views;
mod wal;

pub use apply::ApplyOutcome;
pub use backup::{check_snapshot, CheckedSnapshot, SnapshotMeta};
pub use command::Command;
pub(crate) use error::SqlContext;
pub use error::StateError;
pub use log::{
    Applied as AppliedHook, CommandLog, LogError, Observer, Proposer, RestoreObserver,
    RestoreOutcome,
};
pub use mark::ReplicationMark;
pub use pool::open_private;
pub use read::GroupStatusCount;
pub use snapshot::{Snapshot, SnapshotRelease};
pub use store::StateStore;
pub use table::Table;
pub(crate) use table::{ACL_BOOTSTRAP_INDEX, ALLOC_GC_INDEX};
pub use views::{CatalogView, GcView};

// How long a statement waits for a lock (`apply` restores it after a WAL restart).
use pool::BUSY_TIMEOUT;

#[cfg(test)]
mod tests;
