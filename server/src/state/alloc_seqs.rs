//! Allocation id -> row sequence number, kept in memory. Allocation ids are random
//! UUIDs (their first 8 characters are what people type), and a SQLite index on them
//! cost one random page write per new allocation: a third of the c1m benchmark's time.
//! Rows are keyed by an increasing `seq` instead (appends), and this map, loaded on
//! open and extended by `apply` when a commit lands, finds them by id or id prefix.
//!
//! A reader may see an id whose row its read transaction does not (committed after the
//! transaction began): the row lookup by `seq` then finds nothing, which is what that
//! transaction should see. Allocations are never deleted, so a `seq` never changes
//! hands (and `AUTOINCREMENT` would not reuse one if they were).

use std::collections::BTreeMap;
use std::sync::RwLock;

use rusqlite::Connection;

use super::{SqlContext, StateError};

#[derive(Default)]
pub(crate) struct AllocSeqs {
    by_id: RwLock<BTreeMap<String, i64>>,
}

impl AllocSeqs {
    /// Reads every allocation's id and seq.
    pub(crate) fn load(c: &Connection) -> Result<AllocSeqs, StateError> {
        let mut stmt = c
            .prepare("SELECT id, seq FROM allocs")
            .ctx(|| "preparing the allocation id load".to_string())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .ctx(|| "loading allocation ids".to_string())?;
        let mut by_id = BTreeMap::new();
        for row in rows {
            let (id, seq) = row.ctx(|| "reading an allocation id".to_string())?;
            by_id.insert(id, seq);
        }
        Ok(AllocSeqs {
            by_id: RwLock::new(by_id),
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<i64> {
        self.read().get(id).copied()
    }

    /// Adds the rows a commit inserted (call after the commit).
    pub(crate) fn extend(&self, added: impl IntoIterator<Item = (String, i64)>) {
        self.by_id
            .write()
            .expect("allocation id map poisoned")
            .extend(added);
    }

    /// The id equal to `prefix` alone, else up to `limit` ids starting with it, in order.
    pub(crate) fn with_prefix(&self, prefix: &str, limit: usize) -> Vec<String> {
        let by_id = self.read();
        if by_id.contains_key(prefix) {
            return vec![prefix.to_string()];
        }
        by_id
            .range(prefix.to_string()..)
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, i64>> {
        self.by_id.read().expect("allocation id map poisoned")
    }
}
