//! Replication of the state through Raft (openraft): the type configuration every
//! part shares (`OrchRaft`: entries carry a `Proposal`, a state `Command` with its
//! leader's time; nodes are servers named by their RPC address) and, below it, the
//! parts:
//! - `log_store`: the Raft log, vote and commit point in `<data_dir>/server/raft.db`
//!   (SQLite, synchronous=FULL), openraft's `RaftLogStorage`.
//! - `network`: how this server calls the others' Raft (openraft's `RaftNetworkFactory`
//!   over HTTP, or HTTPS to server certificates only), and the wire both sides share.
//! - `rpc`: the routes the others call this server's Raft by (`router`).

pub mod log_store;
pub mod network;
pub mod rpc;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::Command;

/// One replicated change: the command and the time the leader proposed it at, which
/// every server applies it with (`StateStore::apply_replicated`), so their rows agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub time_ms: u64,
    pub command: Command,
}

/// What applying one replicated entry answered: the store's outcome, in the shape the
/// proposer gets back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The index the entry was applied at (the Raft log index).
    pub index: u64,
    /// Why the command's check refused its change, when it did.
    pub rejected: Option<String>,
}

openraft::declare_raft_types!(
    /// The Raft type configuration of orch's servers.
    pub OrchRaft:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);
