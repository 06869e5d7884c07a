//! Agent routes: who this agent is, whether it is healthy, and who leads.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use orch_common::api::{AgentHealth, AgentSelf};

use super::context::HttpState;
use super::error::ApiError;

/// `GET /v1/status/leader`: the leader's RPC address as a JSON string, empty while
/// no leader is known (as Nomad's).
pub async fn leader(State(st): State<Arc<HttpState>>) -> Json<String> {
    Json(
        st.cluster
            .as_ref()
            .and_then(|c| c.leader())
            .map(|(_, node)| node.rpc_addr)
            .unwrap_or_default(),
    )
}

/// `GET /v1/status/peers`: the RPC addresses of the voting servers.
pub async fn peers(State(st): State<Arc<HttpState>>) -> Json<Vec<String>> {
    Json(
        st.cluster
            .as_ref()
            .map(|c| {
                c.members()
                    .into_iter()
                    .filter(|m| m.voter)
                    .map(|m| m.rpc_addr)
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// `GET /v1/agent/members`: every server with its status, Raft index and last
/// contact as the leader sees them (a follower forwards this read to the leader
/// unless `?stale=true`).
pub async fn members(State(st): State<Arc<HttpState>>) -> Json<Vec<crate::raft::view::Member>> {
    Json(st.cluster.as_ref().map(|c| c.members()).unwrap_or_default())
}

/// `GET /v1/agent/self`.
pub async fn agent_self(State(st): State<Arc<HttpState>>) -> Json<AgentSelf> {
    let node_id = st.client_node_id.get().cloned();
    Json(AgentSelf {
        name: st.agent.name.clone(),
        version: st.agent.version.clone(),
        datacenter: st.agent.datacenter.clone(),
        server: true,
        client: node_id.is_some(),
        node_id,
        http_addr: st.agent.http_addr.clone(),
        data_dir: st.agent.data_dir.clone(),
    })
}

/// `GET /v1/agent/health`: 200 when the state store answers, its last write did not
/// fail and no required loop failed; 503 else, saying why (`server`, `client`) and
/// where every supervised loop is (`loops`).
pub async fn health(State(st): State<Arc<HttpState>>) -> (StatusCode, Json<AgentHealth>) {
    let read: Result<_, ApiError> = st.read(|s| s.stored_indexes()).await;
    let server = match read {
        Err(e) => Err(e.to_string()),
        Ok(_) => {
            if let Some(why) = st.endpoints.log.write_failure() {
                Err(format!("failed: the last state write failed: {why}"))
            } else if let Some(why) = st.health.failure("server.") {
                Err(why)
            } else if st.store.is_closing() {
                Err("shutting down".to_string())
            } else {
                Ok("ok".to_string())
            }
        }
    };
    // The agent's client shares the registry; a server-only agent has no client loops.
    let client_failure = st.health.failure("client.");
    let client = st
        .health
        .has_loops("client.")
        .then(|| client_failure.clone().unwrap_or_else(|| "ok".to_string()));
    let ok = server.is_ok() && client_failure.is_none();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(AgentHealth {
            ok,
            server: Some(server.unwrap_or_else(|e| e)),
            client,
            loops: st.health.loops(),
        }),
    )
}
