//! Agent routes: who this agent is, whether it is healthy, and who leads.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use orch_common::api::{AgentHealth, AgentSelf};

use super::context::HttpState;
use super::error::ApiError;

/// `GET /v1/status/leader`: the leader's HTTP address as a JSON string. A single
/// server is always its own leader.
pub async fn leader(State(st): State<Arc<HttpState>>) -> Json<String> {
    Json(st.agent.http_addr.clone())
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

/// `GET /v1/agent/health`: 200 when the state store answers and takes writes, 503 else.
pub async fn health(State(st): State<Arc<HttpState>>) -> (StatusCode, Json<AgentHealth>) {
    let read: Result<_, ApiError> = st.read(|s| s.stored_indexes()).await;
    let (status, ok, server) = match read {
        Ok(_) if st.store.is_closing() => (
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "shutting down".to_string(),
        ),
        Ok(_) => (StatusCode::OK, true, "ok".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, false, e.to_string()),
    };
    (
        status,
        Json(AgentHealth {
            ok,
            server: Some(server),
            client: None,
            loops: Default::default(),
        }),
    )
}
