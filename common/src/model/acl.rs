//! ACL policies and tokens as the servers store them. A policy keeps its TOML document
//! (`acl::parse` reads what it grants); a token keeps the SHA-256 of its secret, never
//! the secret, and the names of its policies.

use serde::{Deserialize, Serialize};

/// A named policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicy {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The TOML document, as applied.
    pub rules: String,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Everything, ACL management included (the bootstrap token).
    Management,
    /// What its policies grant.
    #[default]
    Client,
}

/// An ACL token: its public accessor id, the hash of its secret, and its policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclToken {
    /// Public id (a UUID): how tokens are listed, read and deleted.
    pub accessor_id: String,
    /// SHA-256 (hex) of the secret; the secret itself is shown once, at creation.
    /// Never answered by the API (`AclToken::without_secret`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_hash: String,
    pub name: String,
    #[serde(default)]
    pub kind: TokenKind,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub create_time: u64,
    /// When it stops working (ms since the epoch); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<u64>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

impl AclToken {
    /// The token as the API answers it: without its secret's hash.
    pub fn without_secret(mut self) -> AclToken {
        self.secret_hash = String::new();
        self
    }

    /// True once `now` (ms) is past its expiration.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expiration_time.is_some_and(|t| now >= t)
    }
}
