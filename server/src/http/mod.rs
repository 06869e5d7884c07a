//! The server's HTTP API (axum): routes, shared handler state, and the small pieces every
//! handler uses — query/path/body extractors whose rejections are JSON `ApiError`s,
//! blocking-query support (`?index=N&wait=D`, header `X-Orch-Index`), id-prefix
//! resolution, and store reads moved off the async runtime.
//!
//! One module per resource: `jobs` (with `revert`), `plan` (the dry run), `deployments`,
//! `allocs`, `evals`, `nodes`, `operator` (scheduler configuration), `services` (the
//! service catalog), `system` (garbage collection), `agent`, and `client_api` for what
//! clients call (register, heartbeat, alloc watch, updates).
//! See docs/api.md for the routes.

pub mod agent;
pub mod allocs;
pub mod client_api;
pub mod client_forward;
pub mod deployments;
pub mod error;
pub mod evals;
pub mod jobs;
pub mod nodes;
pub mod operator;
pub mod plan;
pub mod services;
pub mod system;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::heartbeat::Heartbeats;
use crate::state::{CommandLog, StateError, StateStore, Table};
pub use error::ApiError;
use orch_common::api::INDEX_HEADER;

/// Longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long a blocking query waits when it gives `index` but no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Most ids listed when an id prefix is ambiguous.
const PREFIX_MATCH_LIMIT: usize = 10;
const REQUEST_ID: &str = "x-request-id";
/// How much of an oversized body is read and discarded before answering 413.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// How long reading a body (or draining an oversized one) may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Facts about this agent for `/v1/agent/self` and `/v1/status/leader`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub name: String,
    pub datacenter: String,
    pub http_addr: String,
    pub data_dir: String,
    pub version: String,
}

/// What every handler shares.
pub struct HttpState {
    pub store: StateStore,
    pub log: CommandLog,
    pub heartbeats: Heartbeats,
    pub agent: AgentInfo,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Set by the agent when it also runs a client (for `/v1/agent/self`).
    pub client_node_id: RwLock<Option<String>>,
    /// Serializes job registrations and deregistrations so `enforce_index` checks and
    /// the write they guard are atomic.
    pub job_write: tokio::sync::Mutex<()>,
    /// Runs `PUT /v1/system/gc` (the server sets its configured collector).
    pub gc: Arc<crate::gc::Collector>,
}

impl HttpState {
    pub fn new(
        store: StateStore,
        log: CommandLog,
        heartbeats: Heartbeats,
        agent: AgentInfo,
        max_body_bytes: usize,
    ) -> Self {
        HttpState {
            heartbeats,
            agent,
            max_body_bytes,
            client_node_id: RwLock::new(None),
            job_write: tokio::sync::Mutex::new(()),
            gc: Arc::new(crate::gc::Collector::new(
                store.clone(),
                log.clone(),
                crate::config::GcConfig::default(),
            )),
            store,
            log,
        }
    }

    /// Runs a store read on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&StateStore) -> Result<T, StateError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::Internal(format!("state read task: {e}")))?
            .map_err(ApiError::from)
    }

    /// For a blocking query: waits (per `params`) for `table` to pass the given index,
    /// then returns the table's index to answer with (at least 1, so a client that
    /// echoes it back always blocks next time).
    pub async fn wait(&self, table: Table, params: &Params) -> Result<u64, ApiError> {
        let index = params.index()?;
        if index > 0 {
            let wait = params.wait()?;
            self.store.wait_for_index(table, index, wait).await;
        }
        Ok(self.store.table_index(table).max(1))
    }

    /// `wait` over several tables: waits until any of them passes the given index and
    /// answers with the highest of their indexes (at least 1).
    pub async fn wait_any(&self, tables: &[Table], params: &Params) -> Result<u64, ApiError> {
        let index = params.index()?;
        if index > 0 {
            let wait = params.wait()?;
            self.store.wait_for_any_index(tables, index, wait).await;
        }
        Ok(self.store.max_table_index(tables).max(1))
    }

    /// Resolves a full id or a unique prefix of one in `table`.
    pub async fn resolve(
        &self,
        table: Table,
        kind: &str,
        prefix: &str,
    ) -> Result<String, ApiError> {
        let p = prefix.to_string();
        let mut ids = self
            .read(move |s| s.ids_with_prefix(table, &p, PREFIX_MATCH_LIMIT + 1))
            .await?;
        match ids.len() {
            0 => Err(ApiError::NotFound(format!("{kind} {prefix:?} not found"))),
            1 => Ok(ids.remove(0)),
            _ => {
                let more = ids.len() > PREFIX_MATCH_LIMIT;
                ids.truncate(PREFIX_MATCH_LIMIT);
                let mut details = ids;
                if more {
                    details.push("...".to_string());
                }
                Err(ApiError::BadRequest {
                    message: format!("{kind} id prefix {prefix:?} matches more than one {kind}"),
                    details,
                })
            }
        }
    }
}

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
        .route("/v1/allocations", get(allocs::list))
        .route("/v1/allocation/{id}", get(allocs::get))
        .route("/v1/allocation/{id}/stop", post(allocs::stop))
        .route("/v1/evaluations", get(evals::list))
        .route("/v1/evaluation/{id}", get(evals::get))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/node/register", post(client_api::register))
        .route("/v1/node/{id}", get(nodes::get))
        .route("/v1/node/{id}/heartbeat", post(client_api::heartbeat))
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
        .route("/v1/status/leader", get(agent::leader))
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/health", get(agent::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
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

// ----------------------------------------------------------------------------- extractors

/// Query parameters as a map; a malformed query string is a JSON 400.
#[derive(Debug, Clone, Default)]
pub struct Params(pub BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(m)| Params(m))
            .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("query parameter {key}={v:?} is not a number"))
            }),
        }
    }

    /// `?index=N` (0 when absent).
    pub fn index(&self) -> Result<u64, ApiError> {
        Ok(self.u64("index")?.unwrap_or(0))
    }

    /// `?wait=30s` (a human duration, or plain milliseconds), capped at `MAX_WAIT`.
    pub fn wait(&self) -> Result<Duration, ApiError> {
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => orch_common::duration::parse(v).map_err(|e| {
                    ApiError::bad_request(format!("query parameter wait={v:?}: {e}"))
                })?,
            },
        };
        Ok(wait.min(MAX_WAIT))
    }

    /// A boolean flag: `?purge=true` / `?purge` / `?purge=1`.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "query parameter {key}={v:?} must be true or false"
            ))),
        }
    }

    /// `?prefix=` filter for lists.
    pub fn prefix(&self) -> &str {
        self.get("prefix").unwrap_or("")
    }
}

/// The `{id}` path segment; a bad path is a JSON 400.
#[derive(Debug, Clone)]
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        if id.is_empty() {
            return Err(ApiError::bad_request("empty id in path"));
        }
        Ok(IdPath(id))
    }
}

/// The raw request body with its content type; over the limit is a JSON 413.
#[derive(Debug, Clone)]
pub struct RawBody {
    pub content_type: String,
    pub bytes: Bytes,
}

impl FromRequest<Arc<HttpState>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Arc<HttpState>) -> Result<Self, Self::Rejection> {
        let limit = st.max_body_bytes;
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut stream = req.into_body().into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut seen: usize = 0;
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        loop {
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                // Only reached while draining an oversized body: answer now.
                Err(_) if seen > limit => break,
                Err(_) => return Err(ApiError::bad_request("timed out reading the request body")),
            };
            let Some(chunk) = next else { break };
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            seen = seen.saturating_add(chunk.len());
            if seen > limit {
                // Keep reading (and discarding) so the client can finish sending and
                // read our 413 instead of failing on a closed connection.
                buf = Vec::new();
                if seen > limit.saturating_add(MAX_DRAIN_BYTES) {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&chunk);
        }
        if seen > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "request body is larger than the server accepts ({limit} bytes)"
            )));
        }
        Ok(RawBody {
            content_type,
            bytes: Bytes::from(buf),
        })
    }
}

impl RawBody {
    /// True for `Content-Type: application/toml` (or `text/toml`).
    pub fn is_toml(&self) -> bool {
        let essence = self.content_type.split(';').next().unwrap_or("").trim();
        matches!(
            essence,
            "application/toml" | "text/toml" | "application/x-toml"
        )
    }

    /// Decodes a JSON body; a bad one is a 400 naming the line and column.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty; expected JSON",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(&self.bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut message = format!("invalid JSON body: {inner}");
            if path != "." && !path.is_empty() {
                message = format!("invalid JSON body at {path}: {inner}");
            }
            ApiError::bad_request(message)
        })
    }
}

/// A JSON answer with the `X-Orch-Index` header.
pub struct Indexed<T>(pub u64, pub T);

impl<T: Serialize> IntoResponse for Indexed<T> {
    fn into_response(self) -> Response {
        let mut resp = Json(self.1).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.0.to_string()) {
            resp.headers_mut().insert(INDEX_HEADER, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests;
