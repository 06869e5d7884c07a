//! ACL routes: `POST /v1/acl/bootstrap`, policies (`GET /v1/acl/policies`,
//! `GET|PUT|DELETE /v1/acl/policy/{name}`) and tokens (`GET /v1/acl/tokens`,
//! `POST /v1/acl/token`, `GET /v1/acl/token/self`, `GET|DELETE /v1/acl/token/{id}`).
//! The writes' rules are `endpoints::acl`; the secret a request presents is read by
//! `AclSecret` (`X-Orch-Token` or `Authorization: Bearer`).

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use orch_common::acl::{Capability, Grants};
use orch_common::api::{AclPolicyRequest, AclTokenCreateRequest, AclTokenCreated, AclTokenSelf};
use orch_common::model::AclPolicy;
use orch_common::model::AclToken;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::RawBody;
use crate::endpoints::acl::{self, AclError, CreatedToken, TokenRequest};

pub use orch_common::api::TOKEN_HEADER;

impl From<AclError> for ApiError {
    fn from(e: AclError) -> Self {
        match e {
            AclError::AlreadyBootstrapped { .. } => ApiError::Conflict(e.to_string()),
            AclError::InvalidName { .. }
            | AclError::InvalidPolicy { .. }
            | AclError::PolicyCount
            | AclError::InvalidTtl => ApiError::bad_request(e.to_string()),
            AclError::PolicyNotFound(_) | AclError::TokenNotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            AclError::InvalidToken => ApiError::Forbidden(e.to_string()),
            AclError::Read(e) => e.into(),
            AclError::Log(e) => e.into(),
        }
    }
}

/// The ACL secret a request presents, if any.
#[derive(Debug, Clone, Default)]
pub struct AclSecret(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for AclSecret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AclSecret(secret_of(&parts.headers)?))
    }
}

/// `X-Orch-Token`, else `Authorization: Bearer <secret>`.
pub fn secret_of(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    if let Some(token) = text(TOKEN_HEADER)?.filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    Ok(text("authorization")?
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty()))
}

fn created(c: CreatedToken) -> AclTokenCreated {
    AclTokenCreated {
        token: c.token,
        secret: c.secret,
    }
}

/// `POST /v1/acl/bootstrap`: the management token, once.
pub async fn bootstrap(
    State(st): State<Arc<HttpState>>,
) -> Result<Json<AclTokenCreated>, ApiError> {
    Ok(Json(created(acl::bootstrap(&st.endpoints).await?)))
}

/// `GET /v1/acl/policies`: every policy, by name.
pub async fn policies(State(st): State<Arc<HttpState>>) -> Result<Json<Vec<AclPolicy>>, ApiError> {
    Ok(Json(st.read(|s| s.acl_policies()).await?))
}

/// `GET /v1/acl/policy/{name}`.
pub async fn policy(
    State(st): State<Arc<HttpState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<AclPolicy>, ApiError> {
    let lookup = name.clone();
    st.read(move |s| s.acl_policy(&lookup))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("policy {name:?} not found")))
}

/// `PUT|POST /v1/acl/policy/{name}`: the rules document as `application/toml` (its
/// `description` key describes it), or `AclPolicyRequest` as JSON.
pub async fn put_policy(
    State(st): State<Arc<HttpState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: RawBody,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (description, rules) = if body.is_toml() {
        let rules = String::from_utf8(body.bytes.to_vec())
            .map_err(|_| ApiError::bad_request("the policy is not UTF-8"))?;
        (None, rules)
    } else {
        let req: AclPolicyRequest = body.json()?;
        (Some(req.description), req.rules)
    };
    let index = acl::apply_policy(&st.endpoints, &name, description, rules).await?;
    Ok(Json(serde_json::json!({ "name": name, "index": index })))
}

/// `DELETE /v1/acl/policy/{name}`.
pub async fn delete_policy(
    State(st): State<Arc<HttpState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let index = acl::delete_policy(&st.endpoints, &name).await?;
    Ok(Json(serde_json::json!({ "name": name, "index": index })))
}

/// `GET /v1/acl/tokens`: every token (without secrets or their hashes).
pub async fn tokens(State(st): State<Arc<HttpState>>) -> Result<Json<Vec<AclToken>>, ApiError> {
    let tokens = st.read(|s| s.acl_tokens()).await?;
    Ok(Json(
        tokens.into_iter().map(AclToken::without_secret).collect(),
    ))
}

/// `POST /v1/acl/token`: a client token; its secret is in this answer only.
pub async fn create_token(
    State(st): State<Arc<HttpState>>,
    body: RawBody,
) -> Result<Json<AclTokenCreated>, ApiError> {
    let req: AclTokenCreateRequest = body.json()?;
    let ttl = match req.ttl.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            orch_common::duration::parse(t)
                .map_err(|e| ApiError::bad_request(format!("ttl {t:?}: {e}")))?,
        ),
    };
    let req = TokenRequest {
        name: req.name,
        policies: req.policies,
        ttl,
    };
    Ok(Json(created(acl::create_token(&st.endpoints, req).await?)))
}

/// `GET /v1/acl/token/{accessor_id}`.
pub async fn token(
    State(st): State<Arc<HttpState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<AclToken>, ApiError> {
    let lookup = id.clone();
    st.read(move |s| s.acl_token(&lookup))
        .await?
        .map(|t| Json(t.without_secret()))
        .ok_or_else(|| ApiError::NotFound(format!("token {id:?} not found")))
}

/// `DELETE /v1/acl/token/{accessor_id}`.
pub async fn delete_token(
    State(st): State<Arc<HttpState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let index = acl::delete_token(&st.endpoints, &id).await?;
    Ok(Json(
        serde_json::json!({ "accessor_id": id, "index": index }),
    ))
}

/// `GET /v1/acl/token/self`: the caller's token and what it grants.
pub async fn token_self(
    State(st): State<Arc<HttpState>>,
    AclSecret(secret): AclSecret,
) -> Result<Json<AclTokenSelf>, ApiError> {
    let secret = secret.ok_or_else(|| ApiError::Forbidden("no ACL token presented".into()))?;
    let (token, grants) = acl::whoami(&st.endpoints, &secret).await?;
    let capabilities = match grants {
        Grants::Management => vec!["management".to_string()],
        Grants::Rules(caps) => caps
            .iter()
            .map(|c| Capability::as_str(*c).to_string())
            .collect(),
    };
    Ok(Json(AclTokenSelf {
        token: token.without_secret(),
        capabilities,
    }))
}
