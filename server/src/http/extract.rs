//! The request pieces every handler decodes with, whose rejections are JSON
//! `ApiError`s: query parameters (blocking-query `?index=N&wait=D`, flags, prefixes),
//! the `{id}` path segment, the raw body (JSON or TOML, 413 over the limit), and
//! `Indexed`, a JSON answer with the `X-Orch-Index` header.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use orch_common::api::INDEX_HEADER;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;

/// Longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long a blocking query waits when it gives `index` but no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// How much of an oversized body is read and discarded before answering 413.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// How long reading a body (or draining an oversized one) may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// `?key=N`, `None` when absent or empty.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
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

/// The `{id}` path segment; a bad path is a JSON 400. As text (`IdPath`) when it may
/// be a prefix to resolve, or as the id it names (`IdPath<NodeId>`: a client's own).
#[derive(Debug, Clone)]
pub struct IdPath<I = String>(pub I);

impl<S: Send + Sync, I: From<String>> FromRequestParts<S> for IdPath<I> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        if id.is_empty() {
            return Err(ApiError::bad_request("empty id in path"));
        }
        Ok(IdPath(I::from(id)))
    }
}

/// The node secret a client presents (`X-Orch-Node-Secret`), if any.
#[derive(Debug, Clone, Default)]
pub struct NodeSecret(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for NodeSecret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(orch_common::api::NODE_SECRET_HEADER) {
            None => Ok(NodeSecret(None)),
            Some(v) => v
                .to_str()
                .map(|s| NodeSecret(Some(s.to_string())))
                .map_err(|_| ApiError::bad_request("X-Orch-Node-Secret is not ASCII")),
        }
    }
}

/// The raw request body with its content type; over the limit is a JSON 413.
#[derive(Debug, Clone)]
pub struct RawBody {
    pub content_type: String,
    pub bytes: Bytes,
}

/// The largest request body a route reads (`RawBody` answers 413 above it), taken from
/// the router's state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &S) -> Result<Self, Self::Rejection> {
        let BodyLimit(limit) = BodyLimit::from_ref(st);
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
    /// True for `Content-Type: application/toml`.
    pub fn is_toml(&self) -> bool {
        let essence = self.content_type.split(';').next().unwrap_or("").trim();
        essence == "application/toml"
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
