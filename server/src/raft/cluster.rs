//! Forming and joining the cluster: the first start of a single server initialises
//! a cluster of itself; servers started with `bootstrap_expect = N` and `retry_join`
//! look for each other (`GET /v1/raft/info` on each address) until N that belong to
//! no cluster yet have been found, and the one with the lowest id initialises Raft
//! with all of them (the others hear from it); a server that finds a running
//! cluster asks it to add it (`POST /v1/raft/join`, forwarded to the leader, which
//! adds it as a learner, waits for it to catch up, then makes it a voter in place of
//! any member at the same RPC address: a server whose disk was wiped rejoins as
//! itself).
//!
//! A data dir from before replication (state, no Raft mark) is upgraded in place:
//! once this server leads, it takes a snapshot and drops the log before it, so a
//! server that joins later is sent the whole state rather than only the entries
//! Raft holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use orch_common::tls::{Role, Tls};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Raft, ServerId, ServerNode};

/// What a server says about itself to one that looks for its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: ServerId,
    pub node: ServerNode,
    /// Whether it belongs to a cluster (it has a vote or a log).
    pub initialized: bool,
    /// The leader it knows, if any.
    pub leader: Option<ServerNode>,
}

/// A server asking to be added to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: ServerId,
    pub node: ServerNode,
}

/// How servers call each other's cluster routes (HTTPS with the server's
/// certificate, only to servers, when TLS is on).
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    scheme: &'static str,
}

impl PeerClient {
    pub fn new(tls: Option<&Arc<Tls>>) -> Result<PeerClient, reqwest::Error> {
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(2));
        Ok(match tls {
            None => PeerClient {
                http: builder.build()?,
                scheme: "http",
            },
            Some(tls) => PeerClient {
                http: builder
                    .use_preconfigured_tls(tls.client_config_for_roles(&[Role::Server]))
                    .build()?,
                scheme: "https",
            },
        })
    }

    async fn info(&self, addr: &str) -> Result<ServerInfo, String> {
        let url = format!("{}://{addr}/v1/raft/info", self.scheme);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{url}: {e}"))
    }

    async fn join(&self, addr: &str, req: &JoinRequest) -> Result<(), String> {
        let url = format!("{}://{addr}/v1/raft/join", self.scheme);
        let resp = self
            .http
            .post(&url)
            .json(req)
            // Adding a learner waits for it to catch up (a snapshot of the state).
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(format!("{url}: {status}: {body}"))
    }
}

#[derive(Clone)]
struct Routes {
    raft: Raft,
    peers: PeerClient,
    me: ServerInfo,
}

/// `GET /v1/raft/info` and `POST /v1/raft/join`, served on the RPC port.
pub fn routes(raft: Raft, peers: PeerClient, id: ServerId, node: ServerNode) -> Router {
    let me = ServerInfo {
        id,
        node,
        initialized: false,
        leader: None,
    };
    Router::new()
        .route("/v1/raft/info", get(info))
        .route("/v1/raft/join", post(join))
        .with_state(Routes { raft, peers, me })
}

async fn info(State(r): State<Routes>) -> Json<ServerInfo> {
    Json(server_info(&r.raft, &r.me).await)
}

async fn server_info(raft: &Raft, me: &ServerInfo) -> ServerInfo {
    let initialized = raft.is_initialized().await.unwrap_or(false);
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics
        .current_leader
        .and_then(|l| metrics.membership_config.membership().get_node(&l).cloned());
    ServerInfo {
        initialized,
        leader,
        ..me.clone()
    }
}

/// Adds the asking server on the leader, or hands the request to the leader.
async fn join(
    State(r): State<Routes>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<serde_json::Value>, (axum::http::StatusCode, Json<serde_json::Value>)> {
    let fail = |status, e: String| (status, Json(serde_json::json!({ "error": e })));
    let metrics = r.raft.metrics().borrow().clone();
    match metrics.current_leader {
        Some(leader) if leader == metrics.id => add_server(&r.raft, req)
            .await
            .map(|()| Json(serde_json::json!({ "joined": true })))
            .map_err(|e| fail(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e)),
        Some(leader) => {
            let addr = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.rpc_addr.clone())
                .ok_or_else(|| {
                    fail(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "the leader is not in the membership".to_string(),
                    )
                })?;
            r.peers
                .join(&addr, &req)
                .await
                .map(|()| Json(serde_json::json!({ "joined": true })))
                .map_err(|e| fail(axum::http::StatusCode::BAD_GATEWAY, e))
        }
        None => Err(fail(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no leader is known yet; try again".to_string(),
        )),
    }
}

/// On the leader: makes `req` a voter, in place of a member at the same RPC address.
pub async fn add_server(raft: &Raft, req: JoinRequest) -> Result<(), String> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<ServerId> = membership.voter_ids().collect();
    if voters.contains(&req.id) && membership.get_node(&req.id) == Some(&req.node) {
        return Ok(());
    }
    tracing::info!(id = req.id, node = %req.node, "adding a server to the cluster");
    raft.add_learner(req.id, req.node.clone(), true)
        .await
        .map_err(|e| format!("adding {} as a learner: {e}", req.node))?;
    let replaced: Vec<ServerId> = membership
        .nodes()
        .filter(|(id, n)| **id != req.id && n.rpc_addr == req.node.rpc_addr)
        .map(|(id, _)| *id)
        .collect();
    let mut next: BTreeSet<ServerId> = voters;
    for id in &replaced {
        next.remove(id);
    }
    next.insert(req.id);
    raft.change_membership(next, false)
        .await
        .map_err(|e| format!("making {} a voter: {e}", req.node))?;
    if !replaced.is_empty() {
        tracing::info!(?replaced, node = %req.node, "replaced the server's old identity");
    }
    Ok(())
}

/// Autopilot's dead-server cleanup, run by the leader: a voter not heard from for
/// `after` (counted from when this leader started, for one it never heard from) is
/// removed, as long as at least `min_voters` remain, so a cluster never shrinks
/// below its configured size on its own: a 3-server cluster drops a dead server
/// once its replacement has joined. Zero `after` turns it off.
pub async fn autopilot(
    raft: Raft,
    contacts: super::view::Contacts,
    after: Duration,
    min_voters: usize,
    mut stop: watch::Receiver<bool>,
) {
    if after.is_zero() {
        return;
    }
    let since = tokio::time::Instant::now();
    let every = (after / 10).clamp(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            continue;
        }
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<ServerId> = membership.voter_ids().collect();
        let dead: Vec<ServerId> = voters
            .iter()
            .filter(|id| **id != metrics.id)
            .filter(|id| contacts.since(**id).unwrap_or_else(|| since.elapsed()) > after)
            .copied()
            .collect();
        for id in dead {
            let remaining = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .count();
            if remaining <= min_voters {
                break;
            }
            let name = membership
                .get_node(&id)
                .map(|n| n.to_string())
                .unwrap_or_else(|| id.to_string());
            tracing::warn!(server = %name, ?after, "autopilot: removing a dead server");
            if let Err(e) = remove_server(&raft, id).await {
                tracing::warn!(error = %e, "autopilot: removing a dead server failed");
            }
        }
    }
}

/// On the leader: removes server `id` from the configuration (voter or learner).
pub async fn remove_server(raft: &Raft, id: ServerId) -> Result<(), String> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let mut voters: BTreeSet<ServerId> = membership.voter_ids().collect();
    let removed = if voters.remove(&id) {
        raft.change_membership(voters, false).await
    } else {
        raft.change_membership(
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            false,
        )
        .await
    };
    removed
        .map(|_| ())
        .map_err(|e| format!("removing server {id}: {e}"))
}

/// Forms or joins the cluster as configured.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    raft: Raft,
    peers: PeerClient,
    id: ServerId,
    me: ServerNode,
    bootstrap_expect: u32,
    retry_join: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let work = async {
            if !raft.is_initialized().await.unwrap_or(true)
                && (bootstrap_expect > 1 || !retry_join.is_empty())
            {
                form_or_join(&raft, &peers, id, &me, bootstrap_expect, &retry_join).await;
            }
        };
        tokio::select! {
            _ = work => {}
            _ = shutdown.changed() => {}
        }
    })
}

/// Looks for the other servers every second until this one belongs to a cluster.
async fn form_or_join(
    raft: &Raft,
    peers: &PeerClient,
    id: ServerId,
    me: &ServerNode,
    bootstrap_expect: u32,
    retry_join: &[String],
) {
    let mut last_report = String::new();
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            tracing::info!("this server belongs to a cluster");
            return;
        }
        let mut found = BTreeMap::from([(id, me.clone())]);
        let mut running: Option<String> = None;
        let mut unreachable = Vec::new();
        for addr in retry_join {
            if *addr == me.rpc_addr {
                continue;
            }
            match peers.info(addr).await {
                Ok(info) if info.id == id => {}
                Ok(info) if info.initialized => running = Some(addr.clone()),
                Ok(info) => {
                    found.insert(info.id, info.node);
                }
                Err(e) => unreachable.push(e),
            }
        }
        if let Some(addr) = running {
            let req = JoinRequest {
                id,
                node: me.clone(),
            };
            match peers.join(&addr, &req).await {
                Ok(()) => {
                    tracing::info!(via = %addr, "joined the cluster");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "joining the cluster failed; retrying"),
            }
        } else if found.len() >= bootstrap_expect as usize {
            if found.keys().next() == Some(&id) {
                tracing::info!(servers = found.len(), "bootstrapping the cluster");
                match raft.initialize(found).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "bootstrapping failed; retrying"),
                }
            }
        } else {
            let report = format!(
                "waiting for servers: found {} of {bootstrap_expect}{}",
                found.len(),
                if unreachable.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", unreachable.join("; "))
                }
            );
            if report != last_report {
                tracing::info!("{report}");
                last_report = report;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Once this server leads and has applied its first entry, snapshots the upgraded
/// state and drops the log before it. The server calls it before it serves its RPC
/// port: a server that joined before would be sent the log alone, without the state
/// from before replication.
pub async fn compact_upgraded(raft: &Raft) {
    let mut metrics = raft.metrics();
    loop {
        let ready = {
            let m = metrics.borrow_and_update();
            (m.current_leader == Some(m.id)).then_some(m.last_applied.map(|l| l.index))
        };
        if let Some(Some(applied)) = ready {
            tracing::info!(applied, "upgraded data dir: taking the first Raft snapshot");
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::error!(error = %e, "snapshotting the upgraded state");
                return;
            }
            let mut m = raft.metrics();
            let snapshotted = loop {
                if m.borrow_and_update().snapshot.map(|s| s.index) >= Some(applied) {
                    break true;
                }
                if m.changed().await.is_err() {
                    break false;
                }
            };
            if snapshotted {
                if let Err(e) = raft.trigger().purge_log(applied).await {
                    tracing::error!(error = %e, "dropping the log before the snapshot");
                }
            }
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
