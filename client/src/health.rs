//! `GET /v1/agent/health` of an agent that runs a client and no server (a server
//! answers it itself, client loops included): 200 while no required client loop has
//! failed, 503 else, with every supervised loop's state.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use orch_common::api::AgentHealth;
use orch_common::supervise::Health;

/// The health route over the agent's loop registry.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/v1/agent/health", get(answer))
        .with_state(health)
}

async fn answer(State(health): State<Health>) -> (StatusCode, Json<AgentHealth>) {
    let failure = health.failure("client.");
    let status = if failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(AgentHealth {
            ok: failure.is_none(),
            server: None,
            client: Some(failure.unwrap_or_else(|| "ok".to_string())),
            loops: health.loops(),
        }),
    )
}
