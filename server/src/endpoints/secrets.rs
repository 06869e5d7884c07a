//! Secrets the servers hand out or are handed (ACL tokens, node secrets): how a new one
//! is made and how one is stored, as its SHA-256. They are random, not passwords, so a
//! plain hash is as good as a slow one.

use sha2::{Digest, Sha256};

/// A new secret: two random UUIDs, 244 random bits, as 64 hex characters.
pub fn generate() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// How a secret is stored: its SHA-256, in hex.
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_hash_to_sha256_hex() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
