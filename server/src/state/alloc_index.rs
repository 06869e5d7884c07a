//! Where each allocation's row is, kept in memory: by id (or id prefix) and by node.
//! Allocation ids are random UUIDs (their first 8 characters are what people type),
//! and SQLite indexes on the id or on the node id cost one random page write per new
//! allocation: together about half of the c1m benchmark's time. Rows are keyed by an
//! increasing `seq` instead (appends), and this index, loaded on open and changed by
//! `apply` under the mirror's write lock as each commit lands, finds them.
//!
//! A reader may see a row here that its read transaction does not (committed after
//! the transaction began): the lookup by `seq` then finds nothing, which is what that
//! transaction should see. A reader that needs this index and its transaction at the
//! same index starts the transaction under the mirror's read lock
//! (`StateStore::with_node_rows`). Garbage collection deletes rows (`remove`);
//! `AUTOINCREMENT` never hands a deleted row's `seq` out again, so a reader holding
//! an old `seq` finds nothing rather than another allocation.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard};

use orch_common::ids::{AllocId, NodeId};
use rusqlite::Connection;

use super::{SqlContext, StateError};

/// Where one allocation's row is, as its node's list keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRow {
    pub seq: i64,
    pub modify_index: u64,
    /// The index of the row's last change its client did not report itself (a
    /// placement, a stop, `lost`): what wakes the client's watch. After a restart it
    /// starts as `modify_index`, which at worst wakes a watch once more.
    pub server_index: u64,
    /// Its client status is pending or running.
    pub live: bool,
}

/// One row deleted by a command (garbage collection), applied after the commit.
#[derive(Debug, Clone)]
pub(crate) struct RowRemoval {
    pub id: AllocId,
    pub node_id: NodeId,
    pub seq: i64,
}

/// One row written by a command, recorded by the writer and applied after the commit.
#[derive(Debug, Clone)]
pub(crate) struct RowChange {
    /// Set for a new row: its id.
    pub new_id: Option<AllocId>,
    pub node_id: NodeId,
    /// The node the row was on before, when the write moved it (never, in practice).
    pub moved_from: Option<NodeId>,
    pub row: NodeRow,
}

#[derive(Default)]
struct Rows {
    /// Canonical (lowercase, hyphenated) UUID ids as numbers: they sort like their
    /// text, compare in one instruction and take 16 bytes instead of a heap string.
    uuids: BTreeMap<u128, i64>,
    /// Every other id (tests and hand-made ids).
    others: BTreeMap<AllocId, i64>,
    /// Node id -> its rows, by increasing `seq`.
    by_node: HashMap<NodeId, Vec<NodeRow>>,
    /// The index a snapshot was installed at (0: none since open): every node's
    /// allocations count as changed by the server then, even a node left with none.
    installed_at: u64,
}

#[derive(Default)]
pub(crate) struct AllocIndex {
    rows: RwLock<Rows>,
}

/// The number a canonical UUID id is kept under; `None` for any other id.
fn uuid_key(id: &str) -> Option<u128> {
    let canonical = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !canonical {
        return None;
    }
    uuid::Uuid::parse_str(id).ok().map(|u| u.as_u128())
}

fn uuid_text(key: u128) -> AllocId {
    AllocId::from(uuid::Uuid::from_u128(key).hyphenated().to_string())
}

/// The smallest and largest canonical UUIDs that start with `prefix`, or `None` when
/// no canonical UUID does.
fn uuid_range(prefix: &str) -> Option<(u128, u128)> {
    const TEMPLATE: &[u8; 36] = b"00000000-0000-0000-0000-000000000000";
    if prefix.len() > 36 {
        return None;
    }
    let fill = |digit: u8| -> Option<u128> {
        let mut text = *TEMPLATE;
        for (i, slot) in text.iter_mut().enumerate() {
            if *slot != b'-' {
                *slot = digit;
            }
            if let Some(&b) = prefix.as_bytes().get(i) {
                *slot = b;
            }
        }
        uuid_key(std::str::from_utf8(&text).ok()?)
    };
    Some((fill(b'0')?, fill(b'f')?))
}

impl Rows {
    fn get(&self, id: &str) -> Option<i64> {
        match uuid_key(id) {
            Some(key) => self.uuids.get(&key).copied(),
            None => self.others.get(id).copied(),
        }
    }

    fn insert_id(&mut self, id: &str, seq: i64) {
        match uuid_key(id) {
            Some(key) => self.uuids.insert(key, seq),
            None => self.others.insert(AllocId::from(id), seq),
        };
    }

    fn remove_id(&mut self, id: &str) {
        match uuid_key(id) {
            Some(key) => self.uuids.remove(&key),
            None => self.others.remove(id),
        };
    }

    fn node_rows_mut(&mut self, node_id: &str) -> &mut Vec<NodeRow> {
        // `get_mut` first: `entry` would copy the node id for every row.
        if !self.by_node.contains_key(node_id) {
            self.by_node.insert(NodeId::from(node_id), Vec::new());
        }
        self.by_node.get_mut(node_id).expect("inserted above")
    }

    fn put_node_row(&mut self, node_id: &str, row: NodeRow) {
        let rows = self.node_rows_mut(node_id);
        match rows.binary_search_by_key(&row.seq, |r| r.seq) {
            Ok(i) => rows[i] = row,
            Err(i) => rows.insert(i, row),
        }
    }

    fn remove_node_row(&mut self, node_id: &str, seq: i64) {
        if let Some(rows) = self.by_node.get_mut(node_id) {
            if let Ok(i) = rows.binary_search_by_key(&seq, |r| r.seq) {
                rows.remove(i);
            }
            if rows.is_empty() {
                self.by_node.remove(node_id);
            }
        }
    }
}

impl AllocIndex {
    /// Reads every allocation's id, node and status. `holding` gets the id, node and
    /// JSON of each allocation that holds resources (desired `run`, client pending or
    /// running: `holds_resources` on the columns), so the store builds its per-node
    /// sums in the same pass over the table.
    pub(crate) fn load(
        c: &Connection,
        mut holding: impl FnMut(&str, &str, &str) -> Result<(), StateError>,
    ) -> Result<AllocIndex, StateError> {
        let mut stmt = c
            .prepare(
                "SELECT id, seq, node_id, modify_index, \
                 client_status IN ('pending', 'running'), desired_status = 'run', json \
                 FROM allocs ORDER BY seq",
            )
            .ctx(|| "preparing the allocation index load".to_string())?;
        let mut rows = stmt
            .query([])
            .ctx(|| "loading the allocation index".to_string())?;
        let mut index = Rows::default();
        while let Some(r) = rows
            .next()
            .ctx(|| "reading an allocation index row".to_string())?
        {
            let mut read = || -> rusqlite::Result<(&str, &str, bool)> {
                let id = r.get_ref(0)?.as_str()?;
                let node_id = r.get_ref(2)?.as_str()?;
                let seq: i64 = r.get(1)?;
                index.insert_id(id, seq);
                let modify_index = r.get::<_, i64>(3)? as u64;
                let row = NodeRow {
                    seq,
                    modify_index,
                    server_index: modify_index,
                    live: r.get(4)?,
                };
                // Rows come in `seq` order: appending keeps each list sorted.
                index.node_rows_mut(node_id).push(row);
                Ok((id, node_id, row.live && r.get::<_, bool>(5)?))
            };
            let (id, node_id, holds) =
                read().ctx(|| "reading an allocation index row".to_string())?;
            if holds {
                let json = r
                    .get_ref(6)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .ctx(|| format!("reading allocation {id:?}"))?;
                holding(id, node_id, json)?;
            }
        }
        Ok(AllocIndex {
            rows: RwLock::new(index),
        })
    }

    /// Takes `other`'s rows (a snapshot was installed; call under the mirror's write
    /// lock, as `apply` changes rows).
    pub(crate) fn replace(&self, other: AllocIndex) {
        let rows = other
            .rows
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *self.rows.write().expect("allocation index poisoned") = rows;
    }

    /// Makes every row count as changed by the server at `index` at least, so every
    /// client's watch sees its allocations again (a snapshot was installed at `index`).
    pub(crate) fn raise_server_indexes(&self, index: u64) {
        let mut rows = self.rows.write().expect("allocation index poisoned");
        for row in rows.by_node.values_mut().flatten() {
            row.server_index = row.server_index.max(index);
        }
        rows.installed_at = rows.installed_at.max(index);
    }

    /// The row of allocation `id`.
    pub(crate) fn get(&self, id: &str) -> Option<i64> {
        self.read().get(id)
    }

    /// Applies the rows a commit wrote, in order (call after the commit).
    pub(crate) fn apply(&self, changes: Vec<RowChange>) {
        if changes.is_empty() {
            return;
        }
        let mut rows = self.rows.write().expect("allocation index poisoned");
        for change in changes {
            if let Some(id) = &change.new_id {
                rows.insert_id(id, change.row.seq);
            }
            if let Some(old) = &change.moved_from {
                rows.remove_node_row(old, change.row.seq);
            }
            rows.put_node_row(&change.node_id, change.row);
        }
    }

    /// Forgets the rows a commit deleted (call after the commit).
    pub(crate) fn remove(&self, removals: Vec<RowRemoval>) {
        if removals.is_empty() {
            return;
        }
        let mut rows = self.rows.write().expect("allocation index poisoned");
        for r in removals {
            // Only when the id still names this row: a row is removed once.
            if rows.get(&r.id) == Some(r.seq) {
                rows.remove_id(&r.id);
            }
            rows.remove_node_row(&r.node_id, r.seq);
        }
    }

    /// A node's rows, by increasing `seq`.
    pub(crate) fn node_rows(&self, node_id: &str) -> Vec<NodeRow> {
        self.read()
            .by_node
            .get(node_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The largest `server_index` among a node's allocations, or the index a snapshot
    /// was installed at if later (0 when it has none).
    pub(crate) fn node_max_server_index(&self, node_id: &str) -> u64 {
        let rows = self.read();
        rows.by_node
            .get(node_id)
            .and_then(|rows| rows.iter().map(|r| r.server_index).max())
            .unwrap_or(0)
            .max(rows.installed_at)
    }

    /// The `server_index` of row `seq` on `node_id`, as last committed.
    pub(crate) fn server_index(&self, node_id: &str, seq: i64) -> Option<u64> {
        let rows = self.read();
        let list = rows.by_node.get(node_id)?;
        let i = list.binary_search_by_key(&seq, |r| r.seq).ok()?;
        Some(list[i].server_index)
    }

    /// The id equal to `prefix` alone, else up to `limit` ids starting with it, in order.
    pub(crate) fn with_prefix(&self, prefix: &str, limit: usize) -> Vec<AllocId> {
        let rows = self.read();
        if rows.get(prefix).is_some() {
            return vec![AllocId::from(prefix)];
        }
        let uuids: Vec<AllocId> = match uuid_range(prefix) {
            Some((lo, hi)) => rows
                .uuids
                .range(lo..=hi)
                .take(limit)
                .map(|(k, _)| uuid_text(*k))
                .collect(),
            None => Vec::new(),
        };
        let others = rows
            .others
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(prefix))
            .take(limit)
            .cloned();
        let mut ids: Vec<AllocId> = uuids.into_iter().chain(others).collect();
        ids.sort();
        ids.truncate(limit);
        ids
    }

    fn read(&self) -> RwLockReadGuard<'_, Rows> {
        self.rows.read().expect("allocation index poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, modify_index: u64, live: bool) -> NodeRow {
        NodeRow {
            seq,
            modify_index,
            server_index: modify_index,
            live,
        }
    }

    fn new(id: &str, node: &str, seq: i64, modify_index: u64) -> RowChange {
        RowChange {
            new_id: Some(id.into()),
            node_id: node.into(),
            moved_from: None,
            row: row(seq, modify_index, true),
        }
    }

    const A: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const B: &str = "0a1b2c3d-0000-4000-8000-000000000002";
    const C: &str = "0a1b9999-0000-4000-8000-000000000003";

    #[test]
    fn only_canonical_lowercase_uuids_are_kept_as_numbers() {
        assert!(uuid_key(A).is_some());
        assert_eq!(uuid_text(uuid_key(A).expect("key")), A);
        assert_eq!(uuid_key(&A.to_uppercase()), None);
        assert_eq!(uuid_key(&A.replace('-', "")), None);
        assert_eq!(uuid_key("a1"), None);
        assert_eq!(uuid_key("0a1b2c3d-0000-4000-8000-00000000000g"), None);
    }

    #[test]
    fn ids_are_found_by_exact_id_and_by_prefix_in_order() {
        let index = AllocIndex::default();
        index.apply(vec![
            new(C, "n1", 1, 5),
            new(B, "n1", 2, 5),
            new(A, "n2", 3, 6),
            new("0a1b-handmade", "n2", 4, 6),
        ]);
        assert_eq!(index.get(A), Some(3));
        assert_eq!(index.get("0a1b-handmade"), Some(4));
        assert_eq!(index.get("0a1b"), None);
        assert_eq!(
            index.with_prefix("0a1b", 10),
            vec!["0a1b-handmade", A, B, C]
        );
        assert_eq!(index.with_prefix("0a1b2c3d-", 10), vec![A, B]);
        assert_eq!(index.with_prefix("0a1b2", 1), vec![A]);
        assert_eq!(index.with_prefix(A, 10), vec![A]);
        assert_eq!(index.with_prefix("0a1c", 10), Vec::<AllocId>::new());
        assert_eq!(index.with_prefix("0A1B", 10), Vec::<AllocId>::new());
        assert_eq!(index.with_prefix("", 2).len(), 2);
    }

    #[test]
    fn removed_rows_leave_the_id_prefix_and_node_lookups() {
        let index = AllocIndex::default();
        index.apply(vec![
            new(A, "n1", 1, 5),
            new(B, "n1", 2, 5),
            new("0a1b-handmade", "n2", 3, 6),
        ]);
        index.remove(vec![
            RowRemoval {
                id: A.into(),
                node_id: "n1".into(),
                seq: 1,
            },
            RowRemoval {
                id: "0a1b-handmade".into(),
                node_id: "n2".into(),
                seq: 3,
            },
        ]);
        assert_eq!(index.get(A), None);
        assert_eq!(index.get(B), Some(2));
        assert_eq!(index.get("0a1b-handmade"), None);
        assert_eq!(index.with_prefix("0a1b", 10), vec![B]);
        assert_eq!(index.node_rows("n1"), vec![row(2, 5, true)]);
        assert!(index.node_rows("n2").is_empty());
        assert_eq!(index.node_max_server_index("n2"), 0);
        // Removing again (a replayed command) changes nothing.
        index.remove(vec![RowRemoval {
            id: A.into(),
            node_id: "n1".into(),
            seq: 1,
        }]);
        assert_eq!(index.node_rows("n1"), vec![row(2, 5, true)]);
    }

    #[test]
    fn node_rows_follow_updates_and_moves() {
        let index = AllocIndex::default();
        index.apply(vec![new(A, "n1", 1, 5), new(B, "n1", 2, 5)]);
        assert_eq!(
            index.node_rows("n1"),
            vec![row(1, 5, true), row(2, 5, true)]
        );
        assert_eq!(index.node_max_server_index("n1"), 5);
        index.apply(vec![RowChange {
            new_id: None,
            node_id: "n1".into(),
            moved_from: None,
            row: row(1, 9, false),
        }]);
        assert_eq!(
            index.node_rows("n1"),
            vec![row(1, 9, false), row(2, 5, true)]
        );
        assert_eq!(index.node_max_server_index("n1"), 9);
        assert_eq!(index.server_index("n1", 1), Some(9));
        assert_eq!(index.server_index("n1", 3), None);
        // A change the client reported keeps the row's server index.
        index.apply(vec![RowChange {
            new_id: None,
            node_id: "n1".into(),
            moved_from: None,
            row: NodeRow {
                modify_index: 12,
                ..row(2, 5, false)
            },
        }]);
        assert_eq!(index.node_max_server_index("n1"), 9);
        index.apply(vec![RowChange {
            new_id: None,
            node_id: "n2".into(),
            moved_from: Some("n1".into()),
            row: row(2, 10, true),
        }]);
        assert_eq!(index.node_rows("n1"), vec![row(1, 9, false)]);
        assert_eq!(index.node_rows("n2"), vec![row(2, 10, true)]);
        assert_eq!(index.node_max_server_index("n2"), 10);
        assert_eq!(index.node_max_server_index("n3"), 0);
        assert!(index.node_rows("n3").is_empty());
    }
}
