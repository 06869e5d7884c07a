//! ACL writes and the lookup every request makes: the one-time bootstrap (a management
//! token), policies (TOML documents, checked with `orch_common::acl::parse` before they
//! are stored), tokens (the secret is answered once, only its SHA-256 is stored), and
//! `resolve`, what a request's secret grants (the `anonymous` policy without one),
//! answered from `GrantsCache` until the next ACL change.

use std::time::Duration;

use orch_common::acl::{self, Capability, Grants, PolicyError};
use orch_common::ids::now_ms;
use orch_common::model::{AclPolicy, AclToken, TokenKind};

use super::context::{Endpoints, ReadError};
use super::grants_cache::CachedGrants;
use super::secrets;
use crate::state::command::Rejection;
use crate::state::{Command, LogError, StateError, StateStore};

/// The policy whose rules requests without a token get (none stored: nothing).
pub const ANONYMOUS_POLICY: &str = "anonymous";
/// Longest token lifetime accepted (ten years).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Most policies one token may carry.
pub const MAX_TOKEN_POLICIES: usize = 64;

/// A token as created: the stored token (without its hash) and its secret, which is
/// never available again.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: AclToken,
    pub secret: String,
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub name: String,
    pub policies: Vec<String>,
    /// Lifetime; `None`: until deleted.
    pub ttl: Option<Duration>,
}

/// Why an ACL write or lookup was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("ACLs were bootstrapped already (at index {index}); use the management token")]
    AlreadyBootstrapped { index: u64 },
    #[error("{what} {name:?}: a name is 1 to 128 of A-Z a-z 0-9 _ . -")]
    InvalidName { what: &'static str, name: String },
    #[error("policy {name:?}: {error}")]
    InvalidPolicy { name: String, error: PolicyError },
    #[error("policy {0:?} not found")]
    PolicyNotFound(String),
    #[error("token {0:?} not found")]
    TokenNotFound(String),
    #[error("a token carries 1 to {MAX_TOKEN_POLICIES} policies")]
    PolicyCount,
    #[error("ttl must be above 0 and at most 10 years")]
    InvalidTtl,
    /// The secret presented matches no token, or an expired one.
    #[error("the ACL token presented is not valid (unknown or expired)")]
    InvalidToken,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Log(#[from] LogError),
}

fn check_name(what: &'static str, name: &str) -> Result<(), AclError> {
    if acl::valid_name(name) {
        Ok(())
    } else {
        Err(AclError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

fn new_token(
    name: &str,
    kind: TokenKind,
    policies: Vec<String>,
    ttl: Option<Duration>,
) -> CreatedToken {
    let secret = secrets::generate();
    let now = now_ms();
    let token = AclToken {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_hash: secrets::hash(&secret),
        name: name.to_string(),
        kind,
        policies,
        create_time: now,
        expiration_time: ttl
            .map(|t| now.saturating_add(orch_common::duration::millis_saturating(t))),
        create_index: 0,
        modify_index: 0,
    };
    CreatedToken { token, secret }
}

/// The one-time bootstrap: a management token. Refused once done (the store checks it
/// inside the command, so two servers racing cannot both bootstrap).
pub async fn bootstrap(ctx: &Endpoints) -> Result<CreatedToken, AclError> {
    let created = new_token("bootstrap", TokenKind::Management, Vec::new(), None);
    let outcome = ctx
        .log
        .submit(Command::BootstrapAcl {
            token: created.token.clone(),
        })
        .await?;
    if let Some(Rejection::AclBootstrapped { index }) = outcome.rejected {
        return Err(AclError::AlreadyBootstrapped { index });
    }
    tracing::info!(accessor_id = %created.token.accessor_id, "ACLs bootstrapped");
    Ok(CreatedToken {
        token: AclToken {
            create_index: outcome.index,
            modify_index: outcome.index,
            ..created.token.without_secret()
        },
        secret: created.secret,
    })
}

/// Creates or replaces policy `name` with the TOML document `rules`, described by
/// `description` or else by the document's own `description` key.
pub async fn apply_policy(
    ctx: &Endpoints,
    name: &str,
    description: Option<String>,
    rules: String,
) -> Result<u64, AclError> {
    check_name("policy", name)?;
    let parsed = acl::parse(&rules).map_err(|error| AclError::InvalidPolicy {
        name: name.to_string(),
        error,
    })?;
    let policy = AclPolicy {
        name: name.to_string(),
        description: description.unwrap_or(parsed.description),
        rules,
        create_index: 0,
        modify_index: 0,
    };
    Ok(ctx
        .log
        .submit(Command::UpsertAclPolicy { policy })
        .await?
        .index)
}

/// Deletes policy `name` (tokens that name it then get nothing from it).
pub async fn delete_policy(ctx: &Endpoints, name: &str) -> Result<u64, AclError> {
    let lookup = name.to_string();
    if ctx.read(move |s| s.acl_policy(&lookup)).await?.is_none() {
        return Err(AclError::PolicyNotFound(name.to_string()));
    }
    Ok(ctx
        .log
        .submit(Command::DeleteAclPolicies {
            names: vec![name.to_string()],
        })
        .await?
        .index)
}

/// Creates a client token carrying existing policies.
pub async fn create_token(ctx: &Endpoints, req: TokenRequest) -> Result<CreatedToken, AclError> {
    check_name("token", &req.name)?;
    if req.policies.is_empty() || req.policies.len() > MAX_TOKEN_POLICIES {
        return Err(AclError::PolicyCount);
    }
    if req.ttl.is_some_and(|t| t.is_zero() || t > MAX_TOKEN_TTL) {
        return Err(AclError::InvalidTtl);
    }
    let names = req.policies.clone();
    let missing = ctx
        .read(move |s| {
            for name in names {
                if s.acl_policy(&name)?.is_none() {
                    return Ok(Some(name));
                }
            }
            Ok(None)
        })
        .await?;
    if let Some(name) = missing {
        return Err(AclError::PolicyNotFound(name));
    }
    let created = new_token(&req.name, TokenKind::Client, req.policies, req.ttl);
    let index = ctx
        .log
        .submit(Command::UpsertAclToken {
            token: created.token.clone(),
        })
        .await?
        .index;
    Ok(CreatedToken {
        token: AclToken {
            create_index: index,
            modify_index: index,
            ..created.token.without_secret()
        },
        secret: created.secret,
    })
}

/// Deletes the token with this accessor id.
pub async fn delete_token(ctx: &Endpoints, accessor_id: &str) -> Result<u64, AclError> {
    let lookup = accessor_id.to_string();
    if ctx.read(move |s| s.acl_token(&lookup)).await?.is_none() {
        return Err(AclError::TokenNotFound(accessor_id.to_string()));
    }
    Ok(ctx
        .log
        .submit(Command::DeleteAclTokens {
            accessor_ids: vec![accessor_id.to_string()],
        })
        .await?
        .index)
}

/// What a request presenting `secret` may do: everything for a management token, the
/// union of its policies for a client token, the `anonymous` policy without a secret.
/// An unknown or expired secret is an error (not anonymous: a typo must not silently
/// lose rights).
pub async fn resolve(ctx: &Endpoints, secret: Option<&str>) -> Result<Grants, AclError> {
    let secret = secret.filter(|s| !s.is_empty());
    let key = secret.map(secrets::hash).unwrap_or_default();
    // Read before the lookup: a change committed meanwhile makes this entry stale.
    let acl_index = ctx.store.acl_index();
    if let Some(grants) = ctx.grants.get(&key, acl_index, now_ms()) {
        return Ok(grants);
    }
    let (grants, expires_ms) = match secret {
        Some(secret) => {
            let (token, grants) = whoami(ctx, secret).await?;
            (grants, token.expiration_time)
        }
        None => (
            ctx.read(|s| policy_grants(s, &[ANONYMOUS_POLICY.to_string()]))
                .await?,
            None,
        ),
    };
    ctx.grants.put(
        key,
        CachedGrants {
            acl_index,
            expires_ms,
            grants: grants.clone(),
        },
    );
    Ok(grants)
}

/// The token `secret` belongs to and what it grants, in one read: 403 for an unknown
/// or expired secret (`GET /v1/acl/token/self`).
pub async fn whoami(ctx: &Endpoints, secret: &str) -> Result<(AclToken, Grants), AclError> {
    let hash = secrets::hash(secret);
    let found = ctx
        .read(move |s| {
            let Some(token) = s.acl_token_by_secret_hash(&hash)? else {
                return Ok(None);
            };
            if token.is_expired(now_ms()) {
                return Ok(None);
            }
            let grants = grants_of(s, &token)?;
            Ok(Some((token, grants)))
        })
        .await?;
    found.ok_or(AclError::InvalidToken)
}

/// What a stored token grants.
fn grants_of(s: &StateStore, token: &AclToken) -> Result<Grants, StateError> {
    if token.kind == TokenKind::Management {
        return Ok(Grants::Management);
    }
    policy_grants(s, &token.policies)
}

/// The union of the named policies that exist (stored policies were parsed when
/// applied, so they parse again).
fn policy_grants(s: &StateStore, names: &[String]) -> Result<Grants, StateError> {
    let mut rules = Vec::new();
    for name in names {
        if let Some(policy) = s.acl_policy(name)? {
            rules.push(acl::parse(&policy.rules).unwrap_or_default());
        }
    }
    Ok(Grants::of(rules.iter()))
}

/// Checks `grants` for `cap`: the 403's message names what is missing.
pub fn require(grants: &Grants, cap: Capability) -> Result<(), String> {
    grants
        .require(cap)
        .map_err(|missing| format!("permission denied: this token lacks {missing}"))
}
