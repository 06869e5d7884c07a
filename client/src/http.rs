//! The client's HTTP routes, merged into the agent's router:
//! `GET /v1/client/fs/logs/{alloc}?task=T&type=stdout|stderr&follow=true&origin=start|end&offset=N`
//! (raw bytes; streamed while following), `GET /v1/client/allocation/{alloc}/stats`
//! (each task's resource usage, running tasks sampled afresh),
//! `GET /v1/client/allocation/{alloc}/checks` (every health check's latest run, keyed
//! `SERVICE/CHECK`; the servers only hear of status and output changes) and
//! `GET /v1/client/allocation/{alloc}/exec?task=T&command=["sh","-c","..."]&tty=true`
//! (a WebSocket carrying `orch_common::exec_frames` frames). Reads take a unique id
//! prefix; exec and restart act on what they name and take the full id only. Errors are
//! `ErrorBody` JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use orch_common::api::ErrorBody;
use serde::Deserialize;

use crate::agent::lookup::{AllocLookup, AllocRef, LookupError};
use crate::driver::{DriverError, ExecRequest};
use crate::logs::{self, Origin};

pub(crate) fn router(lookup: AllocLookup) -> Router {
    Router::new()
        .route("/v1/client/fs/logs/{alloc}", get(logs_handler))
        .route("/v1/client/allocation/{alloc}/exec", get(exec_handler))
        .route(
            "/v1/client/allocation/{alloc}/restart",
            axum::routing::post(restart_handler),
        )
        .route("/v1/client/allocation/{alloc}/stats", get(stats_handler))
        .route("/v1/client/allocation/{alloc}/checks", get(checks_handler))
        .with_state(Arc::new(lookup))
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
fn lookup(allocs: &AllocLookup, prefix: &str) -> Result<AllocRef, Box<Response>> {
    match allocs.find_alloc(prefix) {
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
            ids.into_iter().map(String::from).collect(),
        ))),
    }
}

async fn stats_handler(
    State(allocs): State<Arc<AllocLookup>>,
    Path(alloc): Path<String>,
) -> Response {
    let found = match lookup(&allocs, &alloc) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let board = allocs.usage().clone();
    let id = found.id.clone();
    match tokio::task::spawn_blocking(move || board.snapshot(&id, true)).await {
        Ok(usage) => Json(usage).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
    }
}

/// The latest result of each health check; `{}` for an allocation no longer running.
async fn checks_handler(
    State(allocs): State<Arc<AllocLookup>>,
    Path(alloc): Path<String>,
) -> Response {
    let found = match lookup(&allocs, &alloc) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let checks = allocs
        .runners()
        .get(&found.id)
        .map(|r| r.checks())
        .unwrap_or_default();
    Json(checks).into_response()
}

async fn logs_handler(
    State(allocs): State<Arc<AllocLookup>>,
    Path(alloc): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let (found, task) = match find_task(&allocs, &alloc, false, q.task) {
        Ok(v) => v,
        Err(answer) => return *answer,
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
    // Streamed in 64 KiB chunks either way, never read whole into memory: without
    // `follow` the stream ends at the log's current end.
    let follow = q.follow.unwrap_or(false);
    let dead = move || !follow || found.task_dead(&task);
    match logs::follow(path, origin, offset, dead) {
        Ok(s) => (
            headers,
            Body::from_stream(s.map(|c| c.map(axum::body::Bytes::from))),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
    }
}

/// The allocation with exactly this id, or the 404 to answer: exec and restart act on
/// what they name, so they take no prefix.
fn lookup_exact(allocs: &AllocLookup, id: &str) -> Result<AllocRef, Box<Response>> {
    match allocs.find_alloc(id) {
        Ok(a) if a.id == id => Ok(a),
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "no allocation with id {id:?} on this client (this route takes the full \
                 allocation id, not a prefix)"
            ),
            vec![],
        ))),
    }
}

/// The allocation (by its full id with `exact`, else by id prefix) and its task
/// (`task`, or its first one).
fn find_task(
    allocs: &AllocLookup,
    alloc: &str,
    exact: bool,
    task: Option<String>,
) -> Result<(AllocRef, String), Box<Response>> {
    let found = if exact {
        lookup_exact(allocs, alloc)?
    } else {
        lookup(allocs, alloc)?
    };
    let task = match task {
        Some(t) => {
            if !found.tasks.contains(&t) {
                return Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    format!("allocation {} has no task {t:?}", found.id),
                    found.tasks.clone(),
                )));
            }
            t
        }
        None => match found.tasks.first() {
            Some(t) => t.clone(),
            None => {
                return Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    format!("allocation {} has no tasks", found.id),
                    vec![],
                )))
            }
        },
    };
    Ok((found, task))
}

/// Exec sessions open at once on this client, at most: each holds a process in the
/// task, a terminal perhaps, and a WebSocket. Past it a new one gets a 503.
const MAX_EXEC_SESSIONS: usize = 64;
static EXEC_SESSIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_EXEC_SESSIONS);

#[derive(Debug, Deserialize)]
struct ExecQuery {
    task: Option<String>,
    /// A JSON array: the program and its arguments.
    command: String,
    tty: Option<bool>,
}

async fn exec_handler(
    State(allocs): State<Arc<AllocLookup>>,
    Path(alloc): Path<String>,
    Query(q): Query<ExecQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (found, task) = match find_task(&allocs, &alloc, true, q.task) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    let command: Vec<String> = match serde_json::from_str(&q.command) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("command must be a JSON array of strings: {e}"),
                vec![],
            )
        }
    };
    if command.is_empty() {
        return error(StatusCode::BAD_REQUEST, "command is empty".into(), vec![]);
    }
    let (driver, handle) = match allocs.running_task(&found.id, &task) {
        Ok(v) => v,
        Err(why) => return error(StatusCode::CONFLICT, why, vec![]),
    };
    let Ok(permit) = EXEC_SESSIONS.try_acquire() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many exec sessions on this client (at most {MAX_EXEC_SESSIONS}); try again when one ends"),
            vec![],
        );
    };
    let req = ExecRequest {
        command,
        tty: q.tty.unwrap_or(false),
    };
    let session = match driver.exec(&handle, req).await {
        Ok(s) => s,
        Err(e @ DriverError::Unsupported { .. }) => {
            return error(StatusCode::BAD_REQUEST, e.to_string(), vec![])
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), vec![]),
    };
    upgrade.on_upgrade(move |socket| async move {
        crate::exec_socket::serve(socket, session).await;
        drop(permit);
    })
}

#[derive(Debug, Deserialize)]
struct RestartQuery {
    task: Option<String>,
}

/// `POST /v1/client/allocation/{alloc}/restart[?task=T]`: restarts the task (every
/// task without `task`) in place; not counted against the restart policy.
async fn restart_handler(
    State(allocs): State<Arc<AllocLookup>>,
    Path(alloc): Path<String>,
    Query(q): Query<RestartQuery>,
) -> Response {
    let found = match lookup_exact(&allocs, &alloc) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let runners = allocs.runners();
    let Some(runner) = runners.get(&found.id) else {
        return error(
            StatusCode::CONFLICT,
            format!("allocation {} is not running on this client", found.id),
            vec![],
        );
    };
    if runner.stop_requested() {
        return error(
            StatusCode::CONFLICT,
            format!("allocation {} is stopping", found.id),
            vec![],
        );
    }
    if !runner.restart(q.task.as_deref()) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "allocation {} has no task {:?}",
                found.id,
                q.task.unwrap_or_default()
            ),
            runner.tasks.clone(),
        );
    }
    let tasks = match q.task {
        Some(t) => vec![t],
        None => runner.tasks.clone(),
    };
    Json(serde_json::json!({ "alloc_id": found.id, "restarted": tasks })).into_response()
}
