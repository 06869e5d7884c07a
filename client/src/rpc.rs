//! The client's calls to the servers' client-facing API: register, heartbeat, the
//! blocking allocation watch and batched status updates. Tries the configured servers in
//! turn, sticking to the last one that answered. With TLS, over HTTPS to servers whose
//! certificate proves the server role.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orch_common::acl::Grants;
use orch_common::api::{
    AllocUpdateRequest, AllocUpdateResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse,
    KnownAllocsRequest, KnownAllocsResponse, NodeAllocationsResponse, NodeRegisterRequest,
    NodeRegisterResponse, TokenResolveRequest, NODE_SECRET_HEADER,
};
use orch_common::ids::AllocId;
use orch_common::model::Node;
use orch_common::tls::{Role, Tls};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the servers failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no servers configured")]
    NoServers,
    #[error("{0}")]
    Config(String),
    #[error("{method} {url}: {}", causes(source))]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: HTTP {status}: {message}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{method} {url}: decoding the answer: {source}")]
    Decode {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// An error with its causes, `a: b: c`: reqwest's own text hides why a connection
/// failed (a refused certificate, a reset).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

impl RpcError {
    /// The server does not know this node (it lost its state, or never had it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RpcError::Status { status: 404, .. })
    }
}

/// A small HTTP client for the servers' client-facing routes.
pub struct ServerApi {
    http: reqwest::Client,
    /// Base URLs, `http://host:port`: the configured ones, then those the cluster
    /// named (`learn_servers`).
    servers: std::sync::RwLock<Vec<String>>,
    /// How many of `servers` were configured (kept whatever the cluster says).
    configured: usize,
    scheme: &'static str,
    current: AtomicUsize,
    /// Presented on every call (`X-Orch-Node-Secret`).
    node_secret: String,
}

/// `127.0.0.1:4747` -> `<scheme>://127.0.0.1:4747`; trailing slashes dropped.
pub fn base_url(server: &str, scheme: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    if s.starts_with("http://") || s.starts_with("https://") {
        s.to_string()
    } else {
        format!("{scheme}://{s}")
    }
}

impl ServerApi {
    /// With `tls`, servers are called over HTTPS (an `http://` address is refused) and
    /// must present a certificate of the server role.
    pub fn new(
        servers: &[String],
        node_secret: String,
        tls: Option<&Arc<Tls>>,
    ) -> Result<Self, RpcError> {
        let (http, scheme) = match tls {
            None => (reqwest::Client::builder(), "http"),
            Some(tls) => (
                reqwest::Client::builder()
                    .use_preconfigured_tls(tls.client_config_for_roles(&[Role::Server])),
                "https",
            ),
        };
        let http = http
            .build()
            .map_err(|e| RpcError::Config(format!("building the HTTP client: {e}")))?;
        let servers: Vec<String> = servers.iter().map(|s| base_url(s, scheme)).collect();
        if let Some(plain) = servers
            .iter()
            .find(|s| tls.is_some() && !s.starts_with("https://"))
        {
            return Err(RpcError::Config(format!(
                "server {plain} is plain HTTP but [tls] http is on: use https:// or host:port"
            )));
        }
        Ok(ServerApi {
            http,
            configured: servers.len(),
            servers: std::sync::RwLock::new(servers),
            scheme,
            current: AtomicUsize::new(0),
            node_secret,
        })
    }

    /// One call, tried on each server (starting with the last good one) until one
    /// answers; an HTTP error status from a server is final.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, RpcError> {
        let servers = self.servers();
        if servers.is_empty() {
            return Err(RpcError::NoServers);
        }
        let start = self.current.load(Ordering::Relaxed);
        let mut last_err = None;
        for i in 0..servers.len() {
            let idx = (start + i) % servers.len();
            let url = format!("{}{}", servers[idx], path);
            let mut req = match method {
                "GET" => self.http.get(&url),
                _ => self.http.post(&url),
            }
            .timeout(timeout)
            .header(NODE_SECRET_HEADER, &self.node_secret);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(source) => {
                    last_err = Some(RpcError::Transport {
                        method,
                        url,
                        source,
                    });
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<ErrorBody>(&text)
                    .map(|e| e.error)
                    .unwrap_or(text);
                let error = RpcError::Status {
                    method,
                    url,
                    status: status.as_u16(),
                    message,
                };
                // A server without a leader (an election, or cut off from the
                // others) or one shutting down: another may answer.
                if matches!(status.as_u16(), 502..=504) {
                    last_err = Some(error);
                    continue;
                }
                self.current.store(idx, Ordering::Relaxed);
                return Err(error);
            }
            self.current.store(idx, Ordering::Relaxed);
            return resp.json::<T>().await.map_err(|source| RpcError::Decode {
                method,
                url,
                source,
            });
        }
        Err(last_err.unwrap_or(RpcError::NoServers))
    }

    /// The servers tried, in order (base URLs).
    pub fn servers(&self) -> Vec<String> {
        self.servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds the servers the cluster named (`host:port` HTTP addresses from a
    /// heartbeat answer) after the configured ones, so that the client fails over
    /// to servers it was not told about; servers the cluster no longer names are
    /// dropped (configured ones stay).
    pub fn learn_servers(&self, named: &[String]) {
        if named.is_empty() {
            return;
        }
        let mut servers = self.servers.write().unwrap_or_else(|p| p.into_inner());
        let current = servers.get(self.current.load(Ordering::Relaxed)).cloned();
        let mut next: Vec<String> = servers[..self.configured].to_vec();
        for s in named {
            let url = base_url(s, self.scheme);
            // With TLS, only HTTPS (a learned http:// address would skip it).
            if self.scheme == "https" && !url.starts_with("https://") {
                continue;
            }
            if !next.contains(&url) {
                next.push(url);
            }
        }
        if *servers != next {
            tracing::info!(servers = ?next, "servers learned from the cluster");
            let idx = current
                .and_then(|c| next.iter().position(|s| *s == c))
                .unwrap_or(0);
            *servers = next;
            self.current.store(idx, Ordering::Relaxed);
        }
    }

    pub async fn register(&self, node: &Node) -> Result<NodeRegisterResponse, RpcError> {
        let body = NodeRegisterRequest { node: node.clone() };
        self.call("POST", "/v1/node/register", Some(&body), CALL_TIMEOUT)
            .await
    }

    /// What an ACL token grants (`POST /v1/node/{id}/acl/resolve`).
    pub async fn resolve_token(
        &self,
        node_id: &str,
        req: &TokenResolveRequest,
    ) -> Result<Grants, RpcError> {
        self.call(
            "POST",
            &format!("/v1/node/{node_id}/acl/resolve"),
            Some(req),
            CALL_TIMEOUT,
        )
        .await
    }

    pub async fn heartbeat(
        &self,
        node_id: &str,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, RpcError> {
        self.call(
            "POST",
            &format!("/v1/node/{node_id}/heartbeat"),
            Some(req),
            CALL_TIMEOUT,
        )
        .await
    }

    /// Blocks on the server until the node's allocations changed after `index` (or
    /// `wait` passed).
    pub async fn node_allocations(
        &self,
        node_id: &str,
        index: u64,
        wait: Duration,
    ) -> Result<NodeAllocationsResponse, RpcError> {
        let path = format!(
            "/v1/node/{node_id}/allocations?index={index}&wait={}",
            orch_common::duration::format(wait)
        );
        // The server may hold the request for `wait` (plus jitter): allow for that.
        self.call::<(), _>("GET", &path, None, wait + CALL_TIMEOUT)
            .await
    }

    /// Which of `ids` the servers still store (the others were garbage collected).
    pub async fn known_allocs(
        &self,
        node_id: &str,
        ids: Vec<AllocId>,
    ) -> Result<KnownAllocsResponse, RpcError> {
        self.call(
            "POST",
            &format!("/v1/node/{node_id}/allocations/known"),
            Some(&KnownAllocsRequest { ids }),
            CALL_TIMEOUT,
        )
        .await
    }

    pub async fn update_allocs(
        &self,
        node_id: &str,
        req: &AllocUpdateRequest,
    ) -> Result<AllocUpdateResponse, RpcError> {
        self.call(
            "POST",
            &format!("/v1/node/{node_id}/allocations"),
            Some(req),
            CALL_TIMEOUT,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:4747", "http"), "http://127.0.0.1:4747");
        assert_eq!(
            base_url("127.0.0.1:4747", "https"),
            "https://127.0.0.1:4747"
        );
        assert_eq!(
            base_url("http://10.0.0.1:4747/", "https"),
            "http://10.0.0.1:4747"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_skipped_for_the_next() {
        use axum::routing::post;
        let app = axum::Router::new().route(
            "/v1/node/{id}/heartbeat",
            post(|| async {
                axum::Json(HeartbeatResponse {
                    heartbeat_ttl_ms: 1000,
                    index: 7,
                    servers: Vec::new(),
                })
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        // Port 1 on localhost refuses connections.
        let api = ServerApi::new(&["127.0.0.1:1".to_string(), good], "s".repeat(64), None).unwrap();
        let r = api
            .heartbeat("n1", &HeartbeatRequest::default())
            .await
            .unwrap();
        assert_eq!(r.index, 7);
        assert_eq!(api.current.load(Ordering::Relaxed), 1);
        server.abort();
    }

    #[tokio::test]
    async fn an_error_status_carries_the_servers_message() {
        use axum::http::StatusCode;
        use axum::routing::post;
        let app = axum::Router::new().route(
            "/v1/node/{id}/heartbeat",
            post(|| async {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(ErrorBody {
                        error: "node n1 not found".into(),
                        details: vec![],
                    }),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let api = ServerApi::new(&[addr], "s".repeat(64), None).unwrap();
        let err = api
            .heartbeat("n1", &HeartbeatRequest::default())
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains("node n1 not found"), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn a_server_without_a_leader_is_skipped_for_the_next() {
        use axum::http::StatusCode;
        use axum::routing::post;
        let serve = |app: axum::Router| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            (
                addr,
                tokio::spawn(async move { axum::serve(listener, app).await }),
            )
        };
        let (leaderless, a) = serve(axum::Router::new().route(
            "/v1/node/{id}/heartbeat",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(ErrorBody {
                        error: "no cluster leader is known".into(),
                        details: vec![],
                    }),
                )
            }),
        ))
        .await;
        let (good, b) = serve(axum::Router::new().route(
            "/v1/node/{id}/heartbeat",
            post(|| async {
                axum::Json(HeartbeatResponse {
                    heartbeat_ttl_ms: 1000,
                    index: 9,
                    servers: vec!["10.0.0.9:4747".into()],
                })
            }),
        ))
        .await;
        let api = ServerApi::new(&[leaderless, good.clone()], "s".repeat(64), None).unwrap();
        let r = api
            .heartbeat("n1", &HeartbeatRequest::default())
            .await
            .unwrap();
        assert_eq!(r.index, 9);
        // The cluster's servers come after the configured ones, and the client stays
        // with the one that answered.
        api.learn_servers(&r.servers);
        let servers = api.servers();
        assert_eq!(servers.len(), 3, "{servers:?}");
        assert_eq!(servers[2], "http://10.0.0.9:4747");
        assert_eq!(
            servers[api.current.load(Ordering::Relaxed)],
            format!("http://{good}")
        );
        // A server the cluster no longer names is dropped; configured ones stay.
        api.learn_servers(&["10.0.0.8:4747".to_string()]);
        assert_eq!(api.servers()[2], "http://10.0.0.8:4747");
        assert_eq!(api.servers().len(), 3);
        a.abort();
        b.abort();
    }
}
