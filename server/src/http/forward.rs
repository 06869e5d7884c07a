//! Forwarding to the leader: a server that is not the Raft leader hands every write,
//! and every read not marked `?stale=true`, to the leader's HTTP API and streams its
//! answer back, so any server answers any request as the leader would. Routes about
//! this agent itself (`/v1/agent/*` but `members`, `/v1/status/*`) are answered here. Every answer
//! carries `X-Orch-KnownLeader` (whether this server knows a leader) and
//! `X-Orch-LastContact` (milliseconds since it last heard from it; 0 on the leader).
//!
//! A forwarded request carries `X-Orch-Forwarded`; a server that gets one and is not
//! the leader either (leadership just moved) answers 503 rather than forwarding
//! again, so a request never loops.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::context::HttpState;
use super::error::ApiError;

pub const KNOWN_LEADER: &str = "x-orch-knownleader";
pub const LAST_CONTACT: &str = "x-orch-lastcontact";
const FORWARDED: &str = "x-orch-forwarded";

/// Request headers that belong to one hop and are not passed on.
const HOP_HEADERS: [HeaderName; 5] = [
    header::HOST,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

/// Whether the request is answered here whoever leads: this agent's own routes, and
/// reads the caller allows to be stale.
fn served_here(req: &Request) -> bool {
    let path = req.uri().path();
    let read = req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    let stale = read
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "stale" || kv == "stale=true"));
    // The members as the leader sees them (it alone tracks its peers), unless stale.
    if path == "/v1/agent/members" {
        return stale;
    }
    if path.starts_with("/v1/agent/") || path.starts_with("/v1/status/") {
        return true;
    }
    stale
}

/// The middleware (see the module doc).
pub async fn forward(State(st): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let Some(cluster) = st.cluster.clone() else {
        return next.run(req).await;
    };
    let leader = cluster.leader();
    let known = leader.is_some();
    let leading = leader.as_ref().is_some_and(|(id, _)| *id == cluster.me);
    let mut answer = if leading || served_here(&req) {
        next.run(req).await
    } else if req.headers().contains_key(FORWARDED) {
        ApiError::Unavailable(
            "this server is not the leader either (the leadership is moving); try again"
                .to_string(),
        )
        .into_response()
    } else {
        match leader {
            Some((_, node)) => proxy(&st, &node.http_addr, req).await,
            None => ApiError::Unavailable(
                "no cluster leader is known (an election is under way, or a majority of \
                 servers is unreachable); try again"
                    .to_string(),
            )
            .into_response(),
        }
    };
    let headers = answer.headers_mut();
    if !headers.contains_key(KNOWN_LEADER) {
        headers.insert(
            KNOWN_LEADER,
            HeaderValue::from_static(if known { "true" } else { "false" }),
        );
        let contact = cluster.last_contact_ms().unwrap_or(0);
        headers.insert(LAST_CONTACT, HeaderValue::from(contact));
    }
    answer
}

/// Sends `req` to the leader at `addr` and streams its answer back.
async fn proxy(st: &HttpState, addr: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}://{addr}{path}", st.relay.scheme());
    let method = match reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return ApiError::MethodNotAllowed.into_response(),
    };
    let mut out = st.relay.client().request(method, &url);
    out = out.headers(pass_on(&parts.headers));
    out = out.header(FORWARDED, "1");
    out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            return ApiError::Unavailable(format!(
                "forwarding to the leader at {url} failed: {e}; try again"
            ))
            .into_response()
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if HOP_HEADERS.contains(name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    let mut response = (status, body).into_response();
    *response.headers_mut() = headers;
    response
}

/// The caller's headers minus the hop-by-hop ones.
fn pass_on(headers: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if HOP_HEADERS.contains(name) || name.as_str() == FORWARDED {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(name, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request")
    }

    #[test]
    fn members_go_to_the_leader_unless_a_stale_answer_will_do() {
        assert!(!served_here(&req("GET", "/v1/agent/members")));
        assert!(served_here(&req("GET", "/v1/agent/members?stale=true")));
        assert!(served_here(&req("GET", "/v1/agent/self")));
        assert!(served_here(&req("GET", "/v1/status/leader")));
    }

    #[test]
    fn only_reads_may_be_stale() {
        assert!(served_here(&req("GET", "/v1/jobs?stale")));
        assert!(!served_here(&req("GET", "/v1/jobs")));
        assert!(!served_here(&req("POST", "/v1/jobs?stale=true")));
        assert!(!served_here(&req(
            "DELETE",
            "/v1/operator/raft/peer?id=2&stale=true"
        )));
    }
}
