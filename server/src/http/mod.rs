//! The server's HTTP API (axum): it decodes requests, hands writes to `endpoints`,
//! answers reads from the store itself, and encodes the answers (JSON, errors as
//! `ApiError`s, blocking queries with `X-Orch-Index`). It holds no rule and no lock.
//!
//! - `context`: `HttpState` (the store, the endpoints, facts about this agent) and the
//!   lookups every handler makes (blocking-query waits, reads off the runtime, id
//!   prefixes); `extract`: query/path/body extractors and `Indexed`; `error`:
//!   `ApiError`.
//! - `acl`: the ACL bootstrap, policies and tokens, and `AclSecret`, the token a
//!   request presents.
//! - `authorize`: what each route needs (`required`) and the middleware that checks a
//!   request's token against it when ACLs are on.
//! - `browser_guard`: the middleware the agent puts in front of every route (server's
//!   and client's) that refuses other web origins and undeclared body types.
//! - One module per resource: `jobs` (with `revert`), `plan` (the dry run),
//!   `deployments`, `allocs`, `evals`, `nodes`, `operator` (scheduler configuration),
//!   `snapshot` (saving and restoring the state as a file),
//!   `services` (the service catalog), `system` (garbage collection), `agent`,
//!   `client_api` for what clients call (register, heartbeat, alloc watch, updates),
//!   and `client_forward`, which relays client routes to the client that runs the
//!   allocation.
//! - `serve`: the agent's accept loop and its connection limits (`waiting`: the
//!   cap on connections that have not sent a request); `relay`: how the
//!   server calls clients (HTTP or HTTPS); `tls`: the agent's HTTPS listener and the roles its peers' certificates prove.
//!
//! See docs/api.md for the routes.

pub mod acl;
pub mod agent;
pub mod allocs;
pub mod authorize;
pub mod browser_guard;
pub mod client_api;
pub mod client_forward;
pub mod context;
pub mod deployments;
pub mod error;
pub mod evals;
pub mod extract;
pub mod forward;
pub mod jobs;
pub mod nodes;
pub mod operator;
pub mod plan;
pub mod relay;
pub mod serve;
pub mod services;
pub mod snapshot;
pub mod system;
pub mod tls;
pub mod waiting;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use context::{AgentInfo, HttpState};
pub use error::ApiError;
pub use extract::{DEFAULT_WAIT, MAX_WAIT};

const REQUEST_ID: &str = "x-request-id";

/// The server's routes, with the body limit, request ids and per-request spans.
pub fn router(state: Arc<HttpState>) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let request_id = HeaderName::from_static(REQUEST_ID);
    Router::new()
        .route("/v1/jobs", get(jobs::list).post(jobs::register))
        .route("/v1/job/{id}", get(jobs::get).delete(jobs::deregister))
        .route("/v1/job/{id}/allocations", get(jobs::allocations))
        .route("/v1/job/{id}/evaluations", get(jobs::evaluations))
        .route("/v1/job/{id}/versions", get(jobs::versions))
        .route("/v1/job/{id}/plan", post(plan::plan))
        .route("/v1/job/{id}/scale", post(jobs::scale))
        .route("/v1/job/{id}/revert", post(jobs::revert))
        .route("/v1/job/{id}/deployment", get(deployments::job_latest))
        .route("/v1/job/{id}/deployments", get(deployments::job_deployments))
        .route("/v1/deployments", get(deployments::list))
        .route("/v1/deployment/{id}", get(deployments::get))
        .route(
            "/v1/deployment/{id}/allocations",
            get(deployments::allocations),
        )
        .route("/v1/deployment/{id}/promote", post(deployments::promote))
        .route("/v1/deployment/{id}/fail", post(deployments::fail))
        .route("/v1/deployment/{id}/pause", post(deployments::pause))
        .route("/v1/deployment/{id}/resume", post(deployments::resume))
        .route(
            "/v1/deployment/{id}/alloc-health",
            post(deployments::alloc_health),
        )
        .route(
            "/v1/operator/scheduler/configuration",
            get(operator::get_config).put(operator::put_config),
        )
        .route(
            "/v1/operator/snapshot",
            get(snapshot::save).put(snapshot::restore),
        )
        .route("/v1/allocations", get(allocs::list))
        .route("/v1/allocation/{id}", get(allocs::get))
        .route("/v1/allocation/{id}/stop", post(allocs::stop))
        .route("/v1/evaluations", get(evals::list))
        .route("/v1/evaluation/{id}", get(evals::get))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/node/register", post(client_api::register))
        .route("/v1/node/{id}", get(nodes::get))
        .route("/v1/node/{id}/heartbeat", post(client_api::heartbeat))
        .route("/v1/node/{id}/acl/resolve", post(client_api::resolve_token))
        .route("/v1/node/{id}/eligibility", post(nodes::set_eligibility))
        .route("/v1/node/{id}/drain", post(nodes::drain))
        .route(
            "/v1/node/{id}/allocations",
            get(client_api::allocations).post(client_api::update_allocs),
        )
        .route(
            "/v1/node/{id}/allocations/known",
            post(client_api::known_allocs),
        )
        .route("/v1/services", get(services::list))
        .route("/v1/service/{id}", get(services::get))
        .route("/v1/system/gc", put(system::gc).post(system::gc))
        .route("/v1/acl/bootstrap", post(acl::bootstrap))
        .route("/v1/acl/policies", get(acl::policies))
        .route(
            "/v1/acl/policy/{name}",
            get(acl::policy)
                .put(acl::put_policy)
                .post(acl::put_policy)
                .delete(acl::delete_policy),
        )
        .route("/v1/acl/tokens", get(acl::tokens))
        .route("/v1/acl/token", post(acl::create_token))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl::token).delete(acl::delete_token),
        )
        .route("/v1/status/leader", get(agent::leader))
        .route("/v1/status/peers", get(agent::peers))
        .route("/v1/agent/members", get(agent::members))
        .route(
            "/v1/operator/raft/configuration",
            get(operator::raft_configuration),
        )
        .route(
            "/v1/operator/raft/peer",
            axum::routing::delete(operator::remove_raft_peer),
        )
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/health", get(agent::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::forward,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such API route".to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests;
