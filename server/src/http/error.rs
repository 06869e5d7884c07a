//! `ApiError`: every failure an HTTP handler can answer with, turned into a status code
//! and a JSON `ErrorBody` (`{"error": "...", "details": [...]}`), never plain text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orch_common::api::ErrorBody;
use orch_common::jobspec::{SpecError, SpecErrors};

use crate::endpoints::ReadError;
use crate::state::{LogError, StateError};

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong (bad JSON, invalid spec, ambiguous id prefix).
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<String>,
    },
    /// 403: the caller may not do this (a request from another web origin).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a check-and-set (`enforce_index`) did not match, or the request conflicts
    /// with the state (an allocation already stopped).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the server's limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body type the route does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: our fault; the cause is logged.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 listing every problem of a job spec, one line each.
    pub fn invalid_spec(errors: &SpecErrors) -> ApiError {
        let n = errors.0.len();
        ApiError::BadRequest {
            message: format!(
                "invalid job spec: {n} problem{}",
                if n == 1 { "" } else { "s" }
            ),
            details: errors.0.iter().map(spec_error_line).collect(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        ErrorBody {
            error: self.to_string(),
            details,
        }
    }
}

/// `LINE:COL: path: message`, or without the parts that are unknown.
pub fn spec_error_line(e: &SpecError) -> String {
    let mut out = String::new();
    if let Some(line) = e.line {
        out.push_str(&format!("line {line}"));
        if let Some(col) = e.column {
            out.push_str(&format!(", column {col}"));
        }
        out.push_str(": ");
    }
    if !e.path.is_empty() {
        out.push_str(&e.path);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        ApiError::Internal(format!("state store: {e}"))
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Closed | LogError::WriterGone => {
                ApiError::Unavailable("the server is shutting down".to_string())
            }
            e @ (LogError::NotLeader { .. } | LogError::Replication(_)) => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::Internal(format!("state log: {other}")),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::State(e) => e.into(),
            ReadError::Task(message) => ApiError::Internal(format!("state read task: {message}")),
        }
    }
}
