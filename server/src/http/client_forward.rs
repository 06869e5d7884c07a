//! The client routes (`/v1/client/fs/logs/{alloc}`, `/v1/client/allocation/{alloc}/...`)
//! on an agent that runs no client: the request goes to the client that runs the
//! allocation (its node's `http_addr`) and the answer, streamed, comes back as it is.
//! An agent that is also a client serves these routes itself, for its own allocations.
//! With TLS on, the relay is HTTPS: it presents the server's certificate and requires
//! the client's (role `client` or `server`), and it passes the caller's ACL token on.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::TryStreamExt;
use orch_common::api::TOKEN_HEADER;
use orch_common::ids::AllocId;

use super::context::HttpState;
use super::error::ApiError;
use super::relay::Relay;
use crate::endpoints::nodes;

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/client/fs/logs/{alloc}", get(logs))
        .route("/v1/client/allocation/{alloc}/{*rest}", get(allocation))
        .with_state(state)
}

async fn logs(
    State(st): State<Arc<HttpState>>,
    Path(alloc): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    forward(
        &st,
        &alloc,
        false,
        |id| format!("/v1/client/fs/logs/{id}"),
        query,
        &headers,
    )
    .await
}

async fn allocation(
    State(st): State<Arc<HttpState>>,
    Path((alloc, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    // Exec acts on what it names: the full id only.
    let exact = rest == "exec";
    forward(
        &st,
        &alloc,
        exact,
        |id| format!("/v1/client/allocation/{id}/{rest}"),
        query,
        &headers,
    )
    .await
}

/// Finds the allocation's client (by its full id with `exact`, else by a unique
/// prefix) and relays `GET <its http_addr><path(id)>?<query>` with the caller's token.
async fn forward(
    st: &HttpState,
    alloc_prefix: &str,
    exact: bool,
    path: impl FnOnce(&str) -> String,
    query: Option<String>,
    headers: &HeaderMap,
) -> Response {
    match client_url(st, alloc_prefix, exact, path, query).await {
        Ok((url, node)) => relay(&st.relay, &url, &node, headers).await,
        Err(answer) => answer,
    }
}

async fn client_url(
    st: &HttpState,
    alloc_prefix: &str,
    exact: bool,
    path: impl FnOnce(&str) -> String,
    query: Option<String>,
) -> Result<(String, String), Response> {
    let id = if exact {
        st.exact::<AllocId>(alloc_prefix).await
    } else {
        st.resolve::<AllocId>(alloc_prefix).await
    }
    .map_err(IntoResponse::into_response)?;
    let lookup = id.clone();
    let node = st
        .read(move |s| match s.alloc(&lookup)? {
            Some(a) => s.node(&a.node_id),
            None => Ok(None),
        })
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "allocation {:?} or its node not found",
                id.as_str()
            ))
            .into_response()
        })?;
    // Only ever to the node's registered host:port, never to a URL it supplied.
    if !nodes::is_host_port(&node.http_addr) {
        return Err(bad_gateway(format!(
            "node {} runs allocation {id} but advertises no HTTP host:port",
            node.name
        )));
    }
    let mut url = format!("{}://{}{}", st.relay.scheme(), node.http_addr, path(&id));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(&q);
    }
    Ok((url, node.name))
}

/// `node` names the client in errors. The caller's token goes along: a client with
/// ACLs on checks it too.
async fn relay(relay: &Relay, url: &str, node: &str, headers: &HeaderMap) -> Response {
    let mut request = relay.client().get(url);
    for name in [TOKEN_HEADER, header::AUTHORIZATION.as_str()] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => return unreachable_client(node, url, &e),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        body,
    )
        .into_response()
}

fn unreachable_client(node: &str, url: &str, why: &reqwest::Error) -> Response {
    bad_gateway(format!(
        "node {node}, which runs the allocation, did not answer at {url}: {why}"
    ))
}

/// 502 with the usual JSON error body.
fn bad_gateway(error: String) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(orch_common::api::ErrorBody {
            error,
            details: vec![],
        }),
    )
        .into_response()
}
