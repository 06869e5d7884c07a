//! `GrantsCache`: what ACL secrets granted, kept until the next ACL change, so that
//! the lookup every request makes (`acl::resolve`) is a hash-map hit, not a store read
//! and a parse of every policy.

use std::collections::HashMap;
use std::sync::Mutex;

use orch_common::acl::Grants;

/// Most lookups remembered; past it the cache starts over.
const MAX_CACHED_GRANTS: usize = 4096;

/// What secrets granted, by the secret's hash ("" for anonymous), each with the ACL
/// index it was read at and its token's expiry: a lookup costs a store read and a
/// parse of every policy, and each request makes one. Any ACL change (a new index)
/// makes every entry stale, so nothing revoked is ever served from here.
#[derive(Default)]
pub struct GrantsCache {
    entries: Mutex<HashMap<String, CachedGrants>>,
}

pub(super) struct CachedGrants {
    pub(super) acl_index: u64,
    pub(super) expires_ms: Option<u64>,
    pub(super) grants: Grants,
}

impl GrantsCache {
    pub(super) fn get(&self, key: &str, acl_index: u64, now: u64) -> Option<Grants> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(key)?;
        (e.acl_index == acl_index && e.expires_ms.is_none_or(|t| now < t)).then(|| e.grants.clone())
    }

    pub(super) fn put(&self, key: String, entry: CachedGrants) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_GRANTS {
            entries.clear();
        }
        entries.insert(key, entry);
    }
}
