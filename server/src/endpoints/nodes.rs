//! Node writes: a client's registration and heartbeats (a node that becomes ready gets
//! `node-update` evaluations for its system jobs and for the jobs it holds allocations
//! of), and the users' eligibility and drain changes.

use std::time::Duration;

use orch_common::api::{
    HeartbeatResponse, NodeDrainResponse, NodeEligibilityResponse, NodeRegisterResponse,
};
use orch_common::ids::{now_ms, NodeId};
use orch_common::model::{DrainOutcome, DrainStrategy, Eligibility, LastDrain, Node, NodeStatus};

use super::context::{Endpoints, ReadError};
use super::secrets;
use crate::heartbeat::{self, HeartbeatError};
use crate::state::command::Rejection;
use crate::state::{Command, LogError, Table};

/// A heartbeat from a client (`POST /v1/node/{id}/heartbeat`).
#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub node_id: NodeId,
    /// The node secret the client presented.
    pub secret: Option<String>,
    /// The status the client asks for (`None`: ready).
    pub status: Option<NodeStatus>,
}

/// A change to a node's drain (`POST /v1/node/{id}/drain`).
#[derive(Debug, Clone)]
pub struct DrainRequest {
    pub node_id: NodeId,
    pub change: DrainChange,
}

/// What a drain request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainChange {
    /// Start a drain, or give the running one a new deadline: `force` is a deadline of
    /// now; no deadline, or a zero one, is none.
    Start {
        deadline: Option<Duration>,
        force: bool,
        ignore_system_jobs: bool,
    },
    /// End the drain; `mark_eligible` makes the node eligible again.
    Cancel { mark_eligible: bool },
}

/// Why a node write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The registration's problems, one line each.
    #[error("invalid node registration")]
    InvalidRegistration(Vec<String>),
    /// A client route for a node that never registered.
    #[error("node {node_id:?} is not registered")]
    NotRegistered { node_id: NodeId },
    /// A registration, or a call for a node that has a secret, presented none.
    #[error("node {node_id:?}: this call needs the node's secret (X-Orch-Node-Secret)")]
    MissingSecret { node_id: NodeId },
    /// The secret presented is not the node's.
    #[error("node {node_id:?} is registered with another secret")]
    WrongSecret { node_id: NodeId },
    /// A secret that is no secret: too short, too long, or not printable ASCII.
    #[error(
        "a node secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} printable ASCII characters"
    )]
    InvalidSecret,
    #[error("node {node_id:?} not found")]
    NotFound { node_id: NodeId },
    #[error(transparent)]
    Heartbeat(#[from] HeartbeatError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Shortest node secret accepted (clients make 64 hex characters).
const MIN_SECRET_LEN: usize = 16;
/// Longest node secret accepted.
const MAX_SECRET_LEN: usize = 256;

/// The presented secret, if it has the shape of one.
fn presented<'a>(node_id: &NodeId, secret: Option<&'a str>) -> Result<&'a str, Box<NodeError>> {
    match secret {
        None | Some("") => Err(Box::new(NodeError::MissingSecret {
            node_id: node_id.clone(),
        })),
        Some(s)
            if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(s)
        }
        Some(_) => Err(Box::new(NodeError::InvalidSecret)),
    }
}

/// True for the `host:port` a node may advertise: servers relay client routes to it
/// and to nothing else, so no scheme, path, credentials or query ride along.
pub fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis() as u64
}

/// Stores the node as `ready` (a new id when none is given; a known id keeps its
/// identity and eligibility) and starts its heartbeat timer. The client presents the
/// node's secret: a known node's must match (the store checks it as part of the
/// command), a new node's is kept (as its hash) for its later calls.
pub async fn register(
    ctx: &Endpoints,
    mut node: Node,
    secret: Option<&str>,
) -> Result<NodeRegisterResponse, NodeError> {
    let mut problems = Vec::new();
    if node.name.trim().is_empty() {
        problems.push("node.name: must not be empty".to_string());
    }
    if node.datacenter.trim().is_empty() {
        problems.push("node.datacenter: must not be empty".to_string());
    }
    if node.min_dynamic_port > node.max_dynamic_port {
        problems.push(format!(
            "node.min_dynamic_port: {} is above max_dynamic_port {}",
            node.min_dynamic_port, node.max_dynamic_port
        ));
    }
    if !node.http_addr.is_empty() && !is_host_port(&node.http_addr) {
        problems.push(format!(
            "node.http_addr: {:?} must be host:port (no scheme or path)",
            node.http_addr
        ));
    }
    if !problems.is_empty() {
        return Err(NodeError::InvalidRegistration(problems));
    }
    if node.id.is_empty() {
        node.id = NodeId::generate();
    }
    node.secret_hash = secrets::hash(presented(&node.id, secret).map_err(|e| *e)?);
    node.status = NodeStatus::Ready;
    node.status_updated_at = now_ms();
    node.compute_class();
    let node_id = node.id.clone();
    let lookup = node_id.clone();
    let was_ready = ctx
        .read(move |s| s.node(&lookup))
        .await?
        .is_some_and(|n| n.status == NodeStatus::Ready);
    let outcome = ctx.log.submit(Command::UpsertNode { node }).await?;
    if let Some(Rejection::NodeSecret { node_id }) = outcome.rejected {
        return Err(NodeError::WrongSecret { node_id });
    }
    let mut index = outcome.index;
    if !was_ready {
        // A node that joins (or comes back) gets its system jobs and a look at the jobs
        // it still holds allocations for.
        let lookup = node_id.clone();
        let evals = ctx
            .read(move |s| heartbeat::node_ready_evals(s, &lookup))
            .await?;
        if !evals.is_empty() {
            index = ctx.log.submit(Command::UpsertEvals { evals }).await?.index;
        }
    }
    let ttl = ctx.heartbeats.reset(&node_id);
    tracing::info!(node_id = %node_id, "node registered");
    Ok(NodeRegisterResponse {
        node_id,
        heartbeat_ttl_ms: ttl_ms(ttl),
        index,
    })
}

/// The status of a registered node whose client presented its secret; the client
/// routes' 404 for a node that is not registered (its client registers again), 403
/// for a missing or wrong secret. A node stored without a secret (registered before
/// node secrets) is taken at its word until it registers again.
pub async fn authenticate(
    ctx: &Endpoints,
    node_id: &NodeId,
    secret: Option<&str>,
) -> Result<NodeStatus, NodeError> {
    let id = node_id.clone();
    let node = ctx
        .read(move |s| s.node(&id))
        .await?
        .ok_or_else(|| NodeError::NotRegistered {
            node_id: node_id.clone(),
        })?;
    if node.secret_hash.is_empty() {
        return Ok(node.status);
    }
    let secret = presented(node_id, secret).map_err(|e| *e)?;
    if secrets::hash(secret) != node.secret_hash {
        return Err(NodeError::WrongSecret {
            node_id: node_id.clone(),
        });
    }
    Ok(node.status)
}

/// Restarts the node's TTL timer; a node that was down (or asks for another status)
/// has its status changed.
pub async fn heartbeat(
    ctx: &Endpoints,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, NodeError> {
    let node_id = req.node_id;
    let current = authenticate(ctx, &node_id, req.secret.as_deref()).await?;
    let want = req.status.unwrap_or(NodeStatus::Ready);
    if want == NodeStatus::Down {
        ctx.heartbeats.remove(&node_id);
        heartbeat::mark_down(&ctx.log, &node_id).await?;
        return Ok(HeartbeatResponse {
            heartbeat_ttl_ms: 0,
            index: ctx.store.table_index(Table::Nodes),
            servers: Vec::new(),
        });
    }
    let ttl = ctx.heartbeats.reset(&node_id);
    let mut index = ctx.store.table_index(Table::Nodes);
    if current != want {
        let evals = if want == NodeStatus::Ready {
            let lookup = node_id.clone();
            ctx.read(move |s| heartbeat::node_ready_evals(s, &lookup))
                .await?
        } else {
            Vec::new()
        };
        index = ctx
            .log
            .submit(Command::UpdateNodeStatus {
                node_id: node_id.clone(),
                status: want,
                evals,
            })
            .await?
            .index;
        tracing::info!(node_id = %node_id, from = current.as_str(), to = want.as_str(), "node status changed by heartbeat");
    }
    Ok(HeartbeatResponse {
        heartbeat_ttl_ms: ttl_ms(ttl),
        index,
        servers: Vec::new(),
    })
}

/// Sets a node's scheduling eligibility. An ineligible node keeps what it runs but gets
/// nothing new; one that turns eligible again gets evaluations for its system jobs
/// (and blocked evaluations are retried).
pub async fn set_eligibility(
    ctx: &Endpoints,
    node_id: &NodeId,
    eligibility: Eligibility,
) -> Result<NodeEligibilityResponse, NodeError> {
    let changed = heartbeat::set_eligibility(&ctx.log, node_id, eligibility).await?;
    Ok(NodeEligibilityResponse {
        node_id: node_id.clone(),
        eligibility,
        changed,
    })
}

/// The absolute deadline (ms) a drain asks for: `force` = now; no deadline or a zero
/// one = none.
fn drain_deadline(deadline: Option<Duration>, force: bool, now: u64) -> Option<u64> {
    if force {
        return Some(now);
    }
    deadline
        .filter(|d| !d.is_zero())
        .map(|d| now.saturating_add(orch_common::duration::millis_saturating(d)))
}

/// Starts, changes or ends a node's drain. A started drain makes the node ineligible
/// and the drainer moves its allocations off (a drain already running keeps its start
/// time and takes the new deadline); a canceled one is recorded in `last_drain` and the
/// node stays ineligible unless `mark_eligible`. Allocations already marked to migrate
/// still move.
pub async fn drain(ctx: &Endpoints, req: DrainRequest) -> Result<NodeDrainResponse, NodeError> {
    let now = now_ms();
    let id = req.node_id;
    let lookup = id.clone();
    let want_eligible = matches!(
        req.change,
        DrainChange::Cancel {
            mark_eligible: true
        }
    );
    let (node, ready_evals) = ctx
        .read(move |s| {
            let Some(node) = s.node(&lookup)? else {
                return Ok(None);
            };
            // Made eligible again: its system jobs get evaluations, as with
            // `orch node eligibility --enable`.
            let evals = if want_eligible
                && node.eligibility != Eligibility::Eligible
                && node.status == NodeStatus::Ready
            {
                heartbeat::node_ready_evals(s, &lookup)?
            } else {
                Vec::new()
            };
            Ok(Some((node, evals)))
        })
        .await?
        .ok_or_else(|| NodeError::NotFound {
            node_id: id.clone(),
        })?;
    let cmd = match req.change {
        DrainChange::Start {
            deadline,
            force,
            ignore_system_jobs,
        } => Command::UpdateNodeDrain {
            node_id: id.clone(),
            drain: Some(DrainStrategy {
                deadline: drain_deadline(deadline, force, now),
                ignore_system_jobs,
                started_at: node.drain.as_ref().map_or(now, |d| d.started_at),
            }),
            eligibility: Some(Eligibility::Ineligible),
            last_drain: None,
            evals: Vec::new(),
        },
        DrainChange::Cancel { mark_eligible } => Command::UpdateNodeDrain {
            node_id: id.clone(),
            drain: None,
            eligibility: mark_eligible.then_some(Eligibility::Eligible),
            last_drain: node.drain.as_ref().map(|d| LastDrain {
                outcome: DrainOutcome::Canceled,
                started_at: d.started_at,
                finished_at: now,
            }),
            evals: ready_evals,
        },
    };
    let index = ctx.log.submit(cmd).await?.index;
    let lookup = id.clone();
    let node = ctx
        .read(move |s| s.node(&lookup))
        .await?
        .ok_or_else(|| NodeError::NotFound {
            node_id: id.clone(),
        })?;
    tracing::info!(node_id = %id, draining = node.drain.is_some(), index, "node drain updated");
    Ok(NodeDrainResponse {
        node_id: id,
        index: node.modify_index,
        drain: node.drain,
        eligibility: node.eligibility,
    })
}
