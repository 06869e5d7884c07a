//! ACL tokens on an agent that runs no server: what a token grants is asked of the
//! servers (`POST /v1/node/{id}/acl/resolve`, with the node secret) and kept for `TTL`,
//! so a burst of log, stats or exec requests costs one lookup. A token deleted on the
//! servers keeps working here for at most `TTL`, as in Nomad's clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orch_common::acl::Grants;
use orch_common::api::TokenResolveRequest;
use sha2::{Digest as _, Sha256};

use super::shared::Shared;
use crate::rpc::RpcError;

/// How long an answer is used.
pub const TTL: Duration = Duration::from_secs(30);
/// Most tokens remembered; past it, expired answers are dropped, then all.
const MAX_ENTRIES: usize = 4096;

/// The servers' answers by SHA-256 of the secret (the anonymous policy under "").
pub struct TokenCache {
    shared: Arc<Shared>,
    answers: Mutex<HashMap<[u8; 32], (Instant, Grants)>>,
}

impl TokenCache {
    pub(super) fn new(shared: Arc<Shared>) -> TokenCache {
        TokenCache {
            shared,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// What `secret` grants (`None`: the anonymous policy). An unknown or expired
    /// token is the servers' 403 (`RpcError::Status`); unreachable servers are an error
    /// too (never "anonymous").
    pub async fn grants(&self, secret: Option<&str>) -> Result<Grants, RpcError> {
        let secret = secret.filter(|s| !s.is_empty());
        let key: [u8; 32] = Sha256::digest(secret.unwrap_or_default().as_bytes()).into();
        let now = Instant::now();
        if let Some((at, grants)) = self.lock().get(&key) {
            if now.duration_since(*at) < TTL {
                return Ok(grants.clone());
            }
        }
        let request = TokenResolveRequest {
            secret: secret.map(str::to_string),
        };
        let grants = self
            .shared
            .api
            .resolve_token(self.shared.node.id.as_str(), &request)
            .await?;
        let mut answers = self.lock();
        if answers.len() >= MAX_ENTRIES {
            answers.retain(|_, (at, _)| now.duration_since(*at) < TTL);
            if answers.len() >= MAX_ENTRIES {
                answers.clear();
            }
        }
        answers.insert(key, (now, grants.clone()));
        Ok(grants)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, Grants)>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
