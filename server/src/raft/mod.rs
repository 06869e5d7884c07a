//! Replication of the state through Raft (openraft): the type configuration every
//! part shares (`OrchRaft`: entries carry a `Proposal`, a state `Command` with its
//! leader's time; nodes are servers, `ServerNode`, reached at their RPC address) and,
//! below it, the parts:
//! - `log_store`: the Raft log, vote and commit point in `<data_dir>/server/raft.db`
//!   (SQLite, synchronous=FULL), openraft's `RaftLogStorage`.
//! - `state_machine`: the state store as openraft's `RaftStateMachine`, applying
//!   committed entries through the command log's writer; snapshots are state files.
//! - `cluster`: forming a cluster, joining one, upgrading a single server's data.
//! - `view`: the cluster as the HTTP API shows it (leader, members, contacts).
//! - `proposer`: how the leader's `CommandLog::submit` proposes commands, in order.
//! - `network`: how this server calls the others' Raft (openraft's `RaftNetworkFactory`
//!   over HTTP, or HTTPS to server certificates only), and the wire both sides share.
//! - `rpc`: the routes the others call this server's Raft by (`router`).

pub mod cluster;
pub mod log_store;
pub mod network;
pub mod proposer;
pub mod rpc;
pub mod state_machine;
pub mod view;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::Command;

/// One replicated change: the command and the time the leader proposed it at, which
/// every server applies it with (`StateStore::apply_replicated`), so their rows agree;
/// `id` lets the proposing server hand the outcome to whoever submitted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub time_ms: u64,
    pub command: Command,
    #[serde(default)]
    pub id: u64,
}

/// What openraft hands back for an applied entry: its log index. A command's outcome
/// reaches its submitter directly from the state writer (`proposer::Waiting`), so that
/// the state machine never waits for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
}

/// A server as its peers know it: where its Raft traffic goes (`rpc_addr`, the
/// node's address in openraft's sense) and where its HTTP API answers (writes are
/// forwarded there to the leader).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNode {
    pub name: String,
    pub rpc_addr: String,
    pub http_addr: String,
}

impl std::fmt::Display for ServerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.rpc_addr)
    }
}

/// A server's Raft id: random, chosen on its first start and kept in `raft.db`.
pub type ServerId = u64;

openraft::declare_raft_types!(
    /// The Raft type configuration of orch's servers.
    pub OrchRaft:
        D = Proposal,
        R = Applied,
        NodeId = ServerId,
        Node = ServerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The openraft instance of a server.
pub type Raft = openraft::Raft<OrchRaft>;
