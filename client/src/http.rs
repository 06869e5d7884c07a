//! The client's HTTP routes, merged into the agent's router:
//! `GET /v1/client/fs/logs/{alloc}?task=T&type=stdout|stderr&follow=true&origin=start|end&offset=N`
//! (raw bytes; streamed while following) and `GET /v1/client/allocation/{alloc}/stats`
//! (each task's resource usage, running tasks sampled afresh). Errors are `ErrorBody`
//! JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use orch_common::api::ErrorBody;
use serde::Deserialize;

use crate::agent::{AllocRef, LookupError, Shared};
use crate::logs::{self, Origin};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/client/fs/logs/{alloc}", get(logs_handler))
        .route("/v1/client/allocation/{alloc}/stats", get(stats_handler))
        .with_state(shared)
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    task: Option<String>,
    #[serde(rename = "type")]
    stream: Option<String>,
    follow: Option<bool>,
    origin: Option<String>,
    offset: Option<u64>,
}

fn error(status: StatusCode, error: String, details: Vec<String>) -> Response {
    (status, Json(ErrorBody { error, details })).into_response()
}

/// The allocation `prefix` names on this client, or the 404/400 to answer.
fn lookup(shared: &Shared, prefix: &str) -> Result<AllocRef, Box<Response>> {
    match shared.find_alloc(prefix) {
        Ok(a) => Ok(a),
        Err(e @ LookupError::NotFound(_)) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            e.to_string(),
            vec![],
        ))),
        Err(LookupError::Ambiguous(p, ids)) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "id prefix {p:?} matches {} allocations; give more characters",
                ids.len()
            ),
            ids,
        ))),
    }
}

async fn stats_handler(State(shared): State<Arc<Shared>>, Path(alloc): Path<String>) -> Response {
    let found = match lookup(&shared, &alloc) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let board = shared.deps.usage.clone();
    let id = found.id.clone();
    match tokio::task::spawn_blocking(move || board.snapshot(&id, true)).await {
        Ok(usage) => Json(usage).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
    }
}

async fn logs_handler(
    State(shared): State<Arc<Shared>>,
    Path(alloc): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let found = match lookup(&shared, &alloc) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let task = match q.task {
        Some(t) => {
            if !found.tasks.contains(&t) {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("allocation {} has no task {t:?}", found.id),
                    found.tasks.clone(),
                );
            }
            t
        }
        None => match found.tasks.first() {
            Some(t) => t.clone(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("allocation {} has no tasks with logs", found.id),
                    vec![],
                )
            }
        },
    };
    let (stream, origin) = match (
        logs::parse_stream(q.stream.as_deref()),
        Origin::parse(q.origin.as_deref()),
    ) {
        (Ok(s), Ok(o)) => (s, o),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string(), vec![]),
    };
    let path = found.dir.log_file(&task, stream);
    let offset = q.offset.unwrap_or(0);
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    if q.follow.unwrap_or(false) {
        let dead_task = task.clone();
        let dead = move || found.task_dead(&dead_task);
        match logs::follow(path, origin, offset, dead) {
            Ok(s) => (
                headers,
                Body::from_stream(s.map(|c| c.map(axum::body::Bytes::from))),
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
        }
    } else {
        let read =
            tokio::task::spawn_blocking(move || logs::read_once(&path, origin, offset)).await;
        match read {
            Ok(Ok(bytes)) => (headers, bytes).into_response(),
            Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
        }
    }
}
