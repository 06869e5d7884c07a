//! The routes other servers call this server's Raft by (`network`'s wire): AppendEntries,
//! RequestVote and InstallSnapshot, each handed to `openraft::Raft` and its result
//! answered as JSON (`Result<Response, RaftError>`, a refusal by Raft being an
//! answer, not an HTTP error). Bodies are bounded (413 beyond); on a TLS listener only
//! a certificate with the server role may call (403 otherwise); on a plain listener
//! (dev and test clusters) anyone may. Other errors are JSON `ApiError`s too.
//!
//! The router has its own fallback, so it cannot be `merge`d into another router that
//! has one (axum panics); serve it on its own listener, or nest it.

use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Raft;
use orch_common::tls::Role;

use super::network::{decode_snapshot_chunk, APPEND_PATH, SNAPSHOT_PATH, TARGET_HEADER, VOTE_PATH};
use super::view::Contacts;
use super::OrchRaft;
use crate::http::extract::{BodyLimit, RawBody};
use crate::http::tls::Peer;
use crate::http::ApiError;

struct RpcState {
    raft: Raft<OrchRaft>,
    max_body_bytes: usize,
    /// The leader's AppendEntries are recorded here (this server's last contact).
    contacts: Contacts,
}

impl FromRef<Arc<RpcState>> for BodyLimit {
    fn from_ref(st: &Arc<RpcState>) -> Self {
        BodyLimit(st.max_body_bytes)
    }
}

/// The Raft routes of `raft`, reading bodies of at most `max_body_bytes` (it must
/// exceed openraft's `snapshot_max_chunk_size` by a little, and hold the largest
/// AppendEntries; one that does not fit is answered 413 and sent again with half the
/// entries). `more` (the cluster routes) is served beside them, behind the same
/// caller check.
pub fn router(
    raft: Raft<OrchRaft>,
    max_body_bytes: usize,
    contacts: Contacts,
    more: Router,
) -> Router {
    let state = Arc::new(RpcState {
        raft,
        max_body_bytes,
        contacts,
    });
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            for_this_server,
        ))
        .with_state(state)
        .merge(more)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(servers_only))
}

fn json<T: serde::de::DeserializeOwned>(body: &RawBody) -> Result<T, ApiError> {
    serde_json::from_slice(&body.bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid Raft request: {e}")))
}

/// 421 when the caller meant another server (the one that had this address before:
/// a server whose data dir was wiped rejoins with a new id), so that its leader treats
/// the old server as gone instead of replicating to this one twice.
async fn for_this_server(State(st): State<Arc<RpcState>>, req: Request, next: Next) -> Response {
    let me = st.raft.metrics().borrow().id;
    let target = req
        .headers()
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match target {
        Some(target) if target != me => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(orch_common::api::ErrorBody {
                error: format!("this is server {me}, not server {target}"),
                details: vec![],
            }),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

async fn append(State(st): State<Arc<RpcState>>, body: RawBody) -> Result<Response, ApiError> {
    let req: AppendEntriesRequest<OrchRaft> = json(&body)?;
    if let Some(leader) = req.vote.leader_id().voted_for() {
        st.contacts.touch(leader);
    }
    Ok(Json(st.raft.append_entries(req).await).into_response())
}

async fn vote(State(st): State<Arc<RpcState>>, body: RawBody) -> Result<Response, ApiError> {
    let req: VoteRequest<u64> = json(&body)?;
    Ok(Json(st.raft.vote(req).await).into_response())
}

async fn snapshot(State(st): State<Arc<RpcState>>, body: RawBody) -> Result<Response, ApiError> {
    let req = decode_snapshot_chunk(&body.bytes).map_err(ApiError::bad_request)?;
    Ok(Json(st.raft.install_snapshot(req).await).into_response())
}

/// On a TLS connection, only a server's certificate may call Raft: a client or CLI
/// certificate must not be able to vote or append entries.
async fn servers_only(req: Request, next: Next) -> Response {
    let roles = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|ConnectInfo(peer)| peer.roles.clone());
    match roles {
        None => next.run(req).await,
        Some(roles) if roles.contains(&Role::Server) => next.run(req).await,
        Some(roles) => {
            let presented = if roles.is_empty() {
                "no certificate of an orch role".to_string()
            } else {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                format!("a certificate for: {}", names.join(", "))
            };
            ApiError::Forbidden(format!(
                "the Raft routes need a server certificate; this connection presented {presented}"
            ))
            .into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such Raft route".to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
