//! `orch operator raft list-peers | remove-peer`: the servers of the Raft configuration
//! (`GET /v1/operator/raft/configuration`) and removing one of them
//! (`DELETE /v1/operator/raft/peer`), e.g. a server that is gone for good.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::api_client::encode;
use crate::output::{self, Table};
use crate::server::{index, maybe_stale, Member};
use crate::Ctx;

const CONFIGURATION: &str = "/v1/operator/raft/configuration";
const PEER: &str = "/v1/operator/raft/peer";

#[derive(Subcommand, Debug)]
pub enum RaftCommand {
    /// List the servers of the Raft configuration: which leads, which vote.
    #[command(after_help = LIST_PEERS_EXAMPLES)]
    ListPeers {
        /// Answer from the server asked instead of the leader (works without a
        /// leader).
        #[arg(long)]
        stale: bool,
    },
    /// Remove a server from the Raft configuration (one that is gone for good and
    /// will not come back; a server that only restarts keeps its place).
    #[command(after_help = REMOVE_PEER_EXAMPLES)]
    RemovePeer(RemovePeerArgs),
}

pub const RAFT_EXAMPLES: &str = "EXAMPLES:
  orch operator raft list-peers
  orch operator raft remove-peer --peer-id 3
  orch operator raft remove-peer --peer-address 10.0.0.7:4748";

const LIST_PEERS_EXAMPLES: &str = "EXAMPLES:
  orch operator raft list-peers
  orch operator raft list-peers --json
  ORCH_ADDR=http://10.0.0.6:4747 orch operator raft list-peers --stale";

const REMOVE_PEER_EXAMPLES: &str = "EXAMPLES:
  orch operator raft remove-peer --peer-id 3
  orch operator raft remove-peer --peer-address 10.0.0.7:4748

The peer's ID and ADDRESS (its RPC address) are those of `orch operator raft
list-peers`. The leader cannot remove itself: stop it, and remove it from another
server once a new leader is elected.";

/// Which server `remove-peer` removes: exactly one of the two.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct RemovePeerArgs {
    /// The server's Raft id (ID in `list-peers`).
    #[arg(long, value_name = "N")]
    peer_id: Option<u64>,
    /// The server's RPC address (ADDRESS in `list-peers`).
    #[arg(long, value_name = "HOST:PORT")]
    peer_address: Option<String>,
}

/// `GET /v1/operator/raft/configuration`.
#[derive(Debug, Deserialize)]
struct Configuration {
    servers: Vec<Member>,
}

/// `DELETE /v1/operator/raft/peer`.
#[derive(Debug, Deserialize)]
struct Removed {
    removed: Member,
}

pub async fn run(ctx: &Ctx, cmd: RaftCommand) -> Result<ExitCode> {
    match cmd {
        RaftCommand::ListPeers { stale } => list_peers(ctx, stale).await,
        RaftCommand::RemovePeer(args) => remove_peer(ctx, &args).await,
    }
}

async fn list_peers(ctx: &Ctx, stale: bool) -> Result<ExitCode> {
    let api = ctx.api()?;
    let path = maybe_stale(CONFIGURATION, stale);
    if ctx.json {
        output::print_json(&api.get_json(&path).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config: Configuration = api.get(&path).await?;
    print!("{}", render(&config.servers));
    Ok(ExitCode::SUCCESS)
}

/// The query of `DELETE /v1/operator/raft/peer` for the server given.
fn peer_path(args: &RemovePeerArgs) -> String {
    match (&args.peer_id, &args.peer_address) {
        (Some(id), _) => format!("{PEER}?id={id}"),
        (None, Some(addr)) => format!("{PEER}?address={}", encode(addr)),
        // clap requires one of the two.
        (None, None) => PEER.to_string(),
    }
}

async fn remove_peer(ctx: &Ctx, args: &RemovePeerArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    let path = peer_path(args);
    if ctx.json {
        let answer: serde_json::Value = api.delete(&path).await?;
        output::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let answer: Removed = api.delete(&path).await?;
    let m = &answer.removed;
    println!(
        "Removed peer {} ({}, {}) from the Raft configuration",
        m.id, m.name, m.rpc_addr
    );
    Ok(ExitCode::SUCCESS)
}

/// The table of `list-peers`.
fn render(servers: &[Member]) -> String {
    let mut t = Table::new(&["NODE", "ID", "ADDRESS", "STATE", "VOTER", "RAFT INDEX"]);
    for m in servers {
        t.row(vec![
            m.name.clone(),
            m.id.to_string(),
            m.rpc_addr.clone(),
            if m.leader { "leader" } else { "follower" }.to_string(),
            m.voter.to_string(),
            index(m.raft_index),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_show_the_leader_and_the_followers() {
        let servers: Vec<Member> = serde_json::from_value(serde_json::json!([
            {"id": 1, "name": "a", "rpc_addr": "10.0.0.5:4748", "http_addr": "10.0.0.5:4747",
             "voter": true, "leader": true, "status": "alive", "raft_index": 12,
             "last_contact_ms": 0},
            {"id": 2, "name": "b", "rpc_addr": "10.0.0.6:4748", "http_addr": "10.0.0.6:4747",
             "voter": false, "leader": false, "status": "unknown", "raft_index": null,
             "last_contact_ms": null}
        ]))
        .unwrap();
        let text = render(&servers);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            ["NODE", "ID", "ADDRESS", "STATE", "VOTER", "RAFT", "INDEX"]
        );
        assert_eq!(
            lines[1],
            ["a", "1", "10.0.0.5:4748", "leader", "true", "12"]
        );
        assert_eq!(
            lines[2],
            ["b", "2", "10.0.0.6:4748", "follower", "false", "-"]
        );
    }

    #[test]
    fn a_peer_is_named_by_id_or_by_its_encoded_address() {
        let by_id = RemovePeerArgs {
            peer_id: Some(3),
            peer_address: None,
        };
        assert_eq!(peer_path(&by_id), "/v1/operator/raft/peer?id=3");
        let by_addr = RemovePeerArgs {
            peer_id: None,
            peer_address: Some("[::1]:4748".to_string()),
        };
        assert_eq!(
            peer_path(&by_addr),
            "/v1/operator/raft/peer?address=%5B%3A%3A1%5D%3A4748"
        );
    }
}
