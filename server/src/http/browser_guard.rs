//! The browser guard: refuses what a web page the operator visits could make the
//! browser send to an agent, with or without ACLs. A request from another web origin
//! (its `Origin` header names neither this agent nor an allowed origin) is a 403, the
//! exec WebSocket included; a state-changing request whose body is not declared JSON
//! or TOML (a form or `text/plain`, which a page may post without a CORS preflight) is
//! a 415 (except `application/octet-stream` on the snapshot restore route, a type no
//! page can send across origins without a preflight). Tools (the CLI, curl, clients)
//! send no `Origin`, so only browsers are judged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Who may call from a web page: this agent's own origins and the configured ones.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Normalised `scheme://host:port` origins, lower case.
    allowed: Vec<String>,
}

/// Host names that mean this machine: a page on one of them at the agent's port is
/// the agent's own (a UI it serves), whichever of them the browser was pointed at.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

impl OriginPolicy {
    /// The origins of an agent reached at `advertise` (`host:port`) and listening on
    /// `port`, plus `extra` origins (`allowed_origins` in the configuration, as
    /// `scheme://host[:port]`).
    pub fn new(advertise: &str, port: u16, extra: &[String]) -> Result<OriginPolicy, String> {
        let mut allowed = Vec::new();
        let mut own_hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        if let Some((host, _)) = advertise.rsplit_once(':') {
            own_hosts.push(host.to_ascii_lowercase());
        }
        for host in own_hosts {
            for scheme in ["http", "https"] {
                allowed.push(format!("{scheme}://{host}:{port}"));
            }
        }
        for origin in extra {
            allowed.push(normalise(origin).ok_or_else(|| {
                format!("allowed_origins: {origin:?} is not an origin (scheme://host[:port])")
            })?);
        }
        allowed.sort();
        allowed.dedup();
        Ok(OriginPolicy { allowed })
    }

    /// True when a request with this `Origin` header value may be served.
    pub fn allows(&self, origin: &str) -> bool {
        normalise(origin).is_some_and(|o| self.allowed.contains(&o))
    }
}

/// `scheme://host:port` in lower case with the scheme's default port made explicit;
/// `None` for anything else (`null`, a path, another scheme).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let has_port = match rest.rfind(':') {
        Some(i) => !rest[i..].contains(']'),
        None => false,
    };
    if has_port {
        let (host, port) = rest.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        (!host.is_empty()).then(|| format!("{scheme}://{host}:{port}"))
    } else {
        Some(format!("{scheme}://{rest}:{default_port}"))
    }
}

/// The body types a state-changing request may declare.
const BODY_TYPES: [&str; 2] = ["application/json", "application/toml"];

/// The one route that takes a binary body, and its type: a state snapshot to
/// restore. `application/octet-stream` is not a type a page may send across origins
/// without a CORS preflight (which the agent never answers), so allowing it here
/// opens nothing to other web origins; every other route still refuses it.
const SNAPSHOT_ROUTE: (&str, &str) = ("/v1/operator/snapshot", "application/octet-stream");

/// Why a state-changing request's declared body type is refused, if it is.
fn refused_body_type(method: &Method, path: &str, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => {
            let value = value.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = value.split(';').next().unwrap_or("").trim();
            if (path, essence) == SNAPSHOT_ROUTE {
                return None;
            }
            (!BODY_TYPES.contains(&essence)).then(|| {
                format!(
                    "Content-Type {essence:?} is not accepted; send application/json or \
                     application/toml"
                )
            })
        }
        None => has_body(headers).then(|| {
            "a request body needs Content-Type application/json or application/toml".to_string()
        }),
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

/// The middleware: checks `Origin`, then the body type, before any route runs.
pub async fn guard(State(policy): State<Arc<OriginPolicy>>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !policy.allows(origin) {
            return ApiError::Forbidden(format!(
                "requests from the web origin {origin:?} are refused; add it to \
                 [http] allowed_origins to allow it"
            ))
            .into_response();
        }
    }
    if let Some(why) = refused_body_type(req.method(), req.uri().path(), req.headers()) {
        return ApiError::UnsupportedMediaType(why).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OriginPolicy {
        OriginPolicy::new(
            "10.0.0.5:4747",
            4747,
            &["https://ui.example.com".to_string()],
        )
        .unwrap()
    }

    #[test]
    fn the_agents_own_origins_and_the_configured_ones_are_allowed() {
        let p = policy();
        for origin in [
            "http://127.0.0.1:4747",
            "http://localhost:4747",
            "HTTP://LOCALHOST:4747",
            "http://[::1]:4747",
            "https://10.0.0.5:4747",
            "https://ui.example.com",
            "https://ui.example.com:443",
        ] {
            assert!(p.allows(origin), "{origin}");
        }
    }

    #[test]
    fn other_origins_are_refused() {
        let p = policy();
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8080",
            "http://localhost",
            "null",
            "",
            "file://",
            "http://ui.example.com",
            "https://ui.example.com:8443",
            "http://127.0.0.1:4747/path",
            "http://user@127.0.0.1:4747",
        ] {
            assert!(!p.allows(origin), "{origin}");
        }
    }

    #[test]
    fn a_configured_origin_that_is_not_one_is_an_error() {
        let e = OriginPolicy::new("127.0.0.1:4747", 4747, &["ui.example.com".into()]);
        assert!(e.unwrap_err().contains("ui.example.com"));
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    fn refused_body_type_at(method: &Method, headers: &HeaderMap) -> Option<String> {
        refused_body_type(method, "/v1/jobs", headers)
    }

    #[test]
    fn only_the_snapshot_route_takes_a_binary_body() {
        let binary = headers(&[(header::CONTENT_TYPE, "application/octet-stream")]);
        assert_eq!(
            refused_body_type(&Method::PUT, "/v1/operator/snapshot", &binary),
            None
        );
        assert!(refused_body_type(&Method::POST, "/v1/jobs", &binary).is_some());
        let plain = headers(&[(header::CONTENT_TYPE, "text/plain")]);
        assert!(refused_body_type(&Method::PUT, "/v1/operator/snapshot", &plain).is_some());
    }

    #[test]
    fn writes_take_only_json_or_toml_bodies() {
        let json = headers(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")]);
        let toml = headers(&[(header::CONTENT_TYPE, "application/toml")]);
        let plain = headers(&[(header::CONTENT_TYPE, "text/plain")]);
        let form = headers(&[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")]);
        let untyped = headers(&[(header::CONTENT_LENGTH, "12")]);
        let empty = headers(&[(header::CONTENT_LENGTH, "0")]);
        assert_eq!(refused_body_type_at(&Method::POST, &json), None);
        assert_eq!(refused_body_type_at(&Method::PUT, &toml), None);
        assert_eq!(refused_body_type_at(&Method::POST, &empty), None);
        assert_eq!(
            refused_body_type_at(&Method::DELETE, &HeaderMap::new()),
            None
        );
        assert!(refused_body_type_at(&Method::POST, &plain)
            .unwrap()
            .contains("text/plain"));
        assert!(refused_body_type_at(&Method::PUT, &form).is_some());
        assert!(refused_body_type_at(&Method::POST, &untyped).is_some());
        assert_eq!(refused_body_type_at(&Method::GET, &plain), None);
    }
}
