//! `ClusterView`: what the HTTP API reads about the cluster (who leads, the peers,
//! when this server last heard from the leader or from each peer), and `Contacts`,
//! where the Raft network and RPC routes record every exchange that succeeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Raft, ServerId, ServerNode};

/// When each server was last heard from (an RPC answered, or one received).
#[derive(Clone, Default)]
pub struct Contacts {
    seen: Arc<Mutex<HashMap<ServerId, Instant>>>,
}

impl Contacts {
    pub fn touch(&self, id: ServerId) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
    }

    /// How long since `id` was last heard from (`None`: never, since this start).
    pub fn since(&self, id: ServerId) -> Option<Duration> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|t| t.elapsed())
    }
}

/// One server of the cluster as `GET /v1/operator/raft/configuration` and
/// `GET /v1/agent/members` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: ServerId,
    pub name: String,
    pub rpc_addr: String,
    pub http_addr: String,
    /// Votes (false: a learner, catching up before it is made a voter).
    pub voter: bool,
    pub leader: bool,
    /// `alive` (heard from within a few election timeouts), `failed`, or `unknown`
    /// (answered by a server that is not the leader, which does not track peers).
    pub status: String,
    /// The last log index the leader knows it holds.
    pub raft_index: Option<u64>,
    /// Milliseconds since the leader last heard from it (0 for the leader).
    pub last_contact_ms: Option<u64>,
}

/// The cluster as this server sees it.
#[derive(Clone)]
pub struct ClusterView {
    pub raft: Raft,
    pub me: ServerId,
    pub contacts: Contacts,
    /// A peer not heard from for this long counts as failed.
    pub failed_after: Duration,
}

impl ClusterView {
    /// The leader and its node, when one is known.
    pub fn leader(&self) -> Option<(ServerId, ServerNode)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.me)
    }

    /// Milliseconds since this server last heard from the leader (0 on the leader;
    /// `None` when no leader is known).
    pub fn last_contact_ms(&self) -> Option<u64> {
        let leader = self.raft.metrics().borrow().current_leader?;
        if leader == self.me {
            return Some(0);
        }
        self.contacts
            .since(leader)
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    /// Every member of the current configuration, voters first.
    pub fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<ServerId> = membership.voter_ids().collect();
        let leading = m.current_leader == Some(self.me);
        let mut members: Vec<Member> = membership
            .nodes()
            .map(|(id, node)| {
                let is_me = *id == self.me;
                let contact = if is_me {
                    Some(Duration::ZERO)
                } else {
                    self.contacts.since(*id)
                };
                let raft_index = if is_me {
                    m.last_log_index
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index)
                };
                let status = if !leading && !is_me {
                    "unknown"
                } else if contact.is_some_and(|c| c <= self.failed_after) {
                    "alive"
                } else {
                    "failed"
                };
                Member {
                    id: *id,
                    name: node.name.clone(),
                    rpc_addr: node.rpc_addr.clone(),
                    http_addr: node.http_addr.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    status: status.to_string(),
                    raft_index,
                    last_contact_ms: contact
                        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
                }
            })
            .collect();
        members.sort_by(|a, b| b.voter.cmp(&a.voter).then(a.name.cmp(&b.name)));
        members
    }
}
