//! `orch server members`: the servers of the cluster (`GET /v1/agent/members`) with
//! their status, leadership, Raft index and last contact, as the leader sees them
//! (`--stale`: as the server asked sees them); `Member` is the API's server entry,
//! shared with `orch operator raft`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde::Deserialize;

use crate::output::{self, Table};
use crate::Ctx;

const PATH: &str = "/v1/agent/members";

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// List the servers: name, RPC and HTTP addresses, status, which leads, which
    /// vote, each one's Raft index and when the leader last heard from it.
    #[command(after_help = MEMBERS_EXAMPLES)]
    Members {
        /// Answer from the server asked instead of the leader (works without a
        /// leader; a follower shows its peers' status as `unknown`).
        #[arg(long)]
        stale: bool,
    },
}

pub const SERVER_EXAMPLES: &str = "EXAMPLES:
  orch server members
  orch server members --json
  orch server members --stale";

const MEMBERS_EXAMPLES: &str = "EXAMPLES:
  orch server members
  orch server members --json | jq -r '.[] | select(.leader) | .name'
  ORCH_ADDR=http://10.0.0.6:4747 orch server members --stale

STATUS is alive (heard from within a few election timeouts), failed, or unknown (only
the leader tracks its peers: seen with --stale on a follower). LAST CONTACT is how long
ago the leader last heard from the server (0ms for the leader itself).";

/// One server as `GET /v1/agent/members` and `GET /v1/operator/raft/configuration`
/// show it.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub rpc_addr: String,
    pub http_addr: String,
    /// Votes (false: a learner, catching up before it is made a voter).
    pub voter: bool,
    pub leader: bool,
    /// `alive`, `failed` or `unknown`.
    pub status: String,
    pub raft_index: Option<u64>,
    pub last_contact_ms: Option<u64>,
}

/// `path` with `?stale=true` when `stale`.
pub fn maybe_stale(path: &str, stale: bool) -> String {
    if stale {
        format!("{path}?stale=true")
    } else {
        path.to_string()
    }
}

pub async fn run(ctx: &Ctx, cmd: ServerCommand) -> Result<ExitCode> {
    match cmd {
        ServerCommand::Members { stale } => members(ctx, stale).await,
    }
}

async fn members(ctx: &Ctx, stale: bool) -> Result<ExitCode> {
    let api = ctx.api()?;
    let path = maybe_stale(PATH, stale);
    if ctx.json {
        output::print_json(&api.get_json(&path).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let members: Vec<Member> = api.get(&path).await?;
    print!("{}", render(&members));
    Ok(ExitCode::SUCCESS)
}

/// "-" when unknown, else `12ms`, `3.4s`, `2m5s`.
pub fn contact(ms: Option<u64>) -> String {
    match ms {
        None => "-".to_string(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => {
            let secs = ms / 1000;
            format!("{}m{}s", secs / 60, secs % 60)
        }
    }
}

/// A Raft index, or "-" when unknown.
pub fn index(i: Option<u64>) -> String {
    i.map(|i| i.to_string()).unwrap_or_else(|| "-".to_string())
}

/// The table of `server members`.
fn render(members: &[Member]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ADDRESS",
        "HTTP",
        "STATUS",
        "LEADER",
        "VOTER",
        "RAFT INDEX",
        "LAST CONTACT",
    ]);
    for m in members {
        t.row(vec![
            m.name.clone(),
            m.rpc_addr.clone(),
            m.http_addr.clone(),
            m.status.clone(),
            m.leader.to_string(),
            m.voter.to_string(),
            index(m.raft_index),
            contact(m.last_contact_ms),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, leader: bool, contact: Option<u64>) -> Member {
        Member {
            id: 1,
            name: name.to_string(),
            rpc_addr: "10.0.0.5:4748".to_string(),
            http_addr: "10.0.0.5:4747".to_string(),
            voter: true,
            leader,
            status: "alive".to_string(),
            raft_index: contact.map(|_| 42),
            last_contact_ms: contact,
        }
    }

    #[test]
    fn last_contact_is_for_people_and_a_dash_when_unknown() {
        assert_eq!(contact(None), "-");
        assert_eq!(contact(Some(0)), "0ms");
        assert_eq!(contact(Some(12)), "12ms");
        assert_eq!(contact(Some(3_400)), "3.4s");
        assert_eq!(contact(Some(125_000)), "2m5s");
    }

    #[test]
    fn members_print_one_row_each_under_the_header() {
        let text = render(&[member("a", true, Some(0)), member("b", false, None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(lines[0].ends_with("LAST CONTACT"), "{text}");
        let a: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            a,
            [
                "a",
                "10.0.0.5:4748",
                "10.0.0.5:4747",
                "alive",
                "true",
                "true",
                "42",
                "0ms"
            ]
        );
        let b: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&b[4..], ["false", "true", "-", "-"]);
    }

    #[test]
    fn stale_reads_ask_for_it_in_the_query() {
        assert_eq!(maybe_stale(PATH, false), "/v1/agent/members");
        assert_eq!(maybe_stale(PATH, true), "/v1/agent/members?stale=true");
    }
}
