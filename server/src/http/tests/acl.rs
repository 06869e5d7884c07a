//! The ACL routes: a bootstrap answered once with its secret, a policy applied as TOML
//! (refused at its line and column when wrong), a token created for it whose secret
//! `token/self` recognises (by `X-Orch-Token` or `Authorization: Bearer`), and lists
//! that never show a secret or its hash.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::harness;

async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    content_type: &str,
    body: &str,
    header: Option<(&str, String)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bootstrap_policy_token_and_self() {
    let h = harness();
    let r = &h.router;
    let (status, root) = send(r, Method::POST, "/v1/acl/bootstrap", "", "", None).await;
    assert_eq!(status, StatusCode::OK, "{root}");
    assert_eq!(root["kind"], "management");
    assert_eq!(root["secret"].as_str().unwrap().len(), 64);
    assert!(root.get("secret_hash").is_none(), "{root}");
    let (again, body) = send(r, Method::POST, "/v1/acl/bootstrap", "", "", None).await;
    assert_eq!(again, StatusCode::CONFLICT, "{body}");

    let bad = "description = \"ro\"\njob = [\"read\", \"nuke\"]\n";
    let (status, body) = send(
        r,
        Method::PUT,
        "/v1/acl/policy/ro",
        "application/toml",
        bad,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("line 2, column 16"),
        "{body}"
    );

    let good = "description = \"read-only\"\njob = [\"read\"]\n";
    let (status, body) = send(
        r,
        Method::PUT,
        "/v1/acl/policy/ro",
        "application/toml",
        good,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, policy) = send(r, Method::GET, "/v1/acl/policy/ro", "", "", None).await;
    assert_eq!(policy["description"], "read-only");

    let req = json!({"name": "reader", "policies": ["ro"], "ttl": "24h"}).to_string();
    let (status, token) = send(
        r,
        Method::POST,
        "/v1/acl/token",
        "application/json",
        &req,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let secret = token["secret"].as_str().unwrap().to_string();

    for header in [
        ("X-Orch-Token", secret.clone()),
        ("Authorization", format!("Bearer {secret}")),
    ] {
        let (status, me) = send(r, Method::GET, "/v1/acl/token/self", "", "", Some(header)).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["name"], "reader");
        assert_eq!(me["capabilities"], json!(["job:read"]));
    }
    let (status, _) = send(
        r,
        Method::GET,
        "/v1/acl/token/self",
        "",
        "",
        Some(("X-Orch-Token", "wrong".into())),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, tokens) = send(r, Method::GET, "/v1/acl/tokens", "", "", None).await;
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    assert!(!tokens.to_string().contains("secret"), "{tokens}");

    let accessor = token["accessor_id"].as_str().unwrap();
    let (status, _) = send(
        r,
        Method::DELETE,
        &format!("/v1/acl/token/{accessor}"),
        "",
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(r, Method::DELETE, "/v1/acl/policy/ro", "", "", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(r, Method::GET, "/v1/acl/policy/ro", "", "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
