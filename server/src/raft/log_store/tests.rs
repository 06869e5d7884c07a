//! The log store against a real SQLite file: append, read ranges, truncate, purge, and
//! what survives reopening.

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{blank_ent, log_id};
use openraft::{Entry, EntryPayload, Vote};

use super::*;
use crate::raft::Proposal;
use crate::state::Command;

fn normal(term: u64, index: u64) -> Entry<OrchRaft> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Proposal {
            time_ms: 1_700_000_000_000 + index,
            command: Command::UpsertEvals { evals: Vec::new() },
            id: index,
        }),
    }
}

fn indexes(entries: &[Entry<OrchRaft>]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn appended_entries_read_back_by_range_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server/raft.db");
    let mut store = LogStore::open(&path).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));

    store
        .blocking_append([blank_ent::<OrchRaft>(1, 1, 1), normal(1, 2), normal(2, 3)])
        .await
        .unwrap();
    assert_eq!(
        indexes(&store.try_get_log_entries(2..=3).await.unwrap()),
        [2, 3]
    );
    assert_eq!(
        indexes(&store.try_get_log_entries(..).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(
        indexes(&store.try_get_log_entries(4..).await.unwrap()),
        Vec::<u64>::new()
    );
    let read = store.try_get_log_entries(2..3).await.unwrap();
    assert_eq!(read, vec![normal(1, 2)], "the command round-trips");

    store.save_vote(&Vote::new(2, 1)).await.unwrap();
    store.save_committed(Some(log_id(2, 1, 3))).await.unwrap();
    drop(store);
    let mut store = LogStore::open(&path).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 1, 3)));
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 1, 3))
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log holds every job's environment");
}

#[tokio::test]
async fn truncate_drops_the_tail_and_purge_the_head_remembering_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(&dir.path().join("raft.db")).unwrap();
    store
        .blocking_append((1..=5).map(|i| normal(1, i)))
        .await
        .unwrap();
    store.truncate(log_id(1, 1, 4)).await.unwrap();
    assert_eq!(
        indexes(&store.try_get_log_entries(..).await.unwrap()),
        [1, 2, 3]
    );
    // A leader's later entry replaces a truncated follower's.
    store.blocking_append([normal(2, 4)]).await.unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 1, 4))
    );

    store.purge(log_id(1, 1, 2)).await.unwrap();
    assert_eq!(
        indexes(&store.try_get_log_entries(..).await.unwrap()),
        [3, 4]
    );
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 4)));

    // Everything purged: the last log id is the purged one.
    store.purge(log_id(2, 1, 4)).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 4)));
    assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
}

/// The entries kept decoded in memory answer exactly what the file does, through
/// appends, a truncate, a rewrite and purges.
#[tokio::test]
async fn the_decoded_entries_in_memory_agree_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.db");
    let mut store = LogStore::open(&path).unwrap();
    let check = |store: LogStore| {
        let path = path.clone();
        async move {
            let mut store = store;
            let mut file = LogStore::open(&path).unwrap();
            for (a, b) in [(1, 3), (2, 6), (4, 9), (5, 5), (7, 12), (9, 10)] {
                assert_eq!(
                    store.try_get_log_entries(a..b).await.unwrap(),
                    file.try_get_log_entries(a..b).await.unwrap(),
                    "{a}..{b}"
                );
            }
        }
    };
    store
        .blocking_append((1..=8).map(|i| normal(1, i)))
        .await
        .unwrap();
    check(store.clone()).await;
    store.truncate(log_id(1, 1, 6)).await.unwrap();
    check(store.clone()).await;
    store
        .blocking_append((6..=9).map(|i| normal(2, i)))
        .await
        .unwrap();
    check(store.clone()).await;
    store.purge(log_id(1, 1, 4)).await.unwrap();
    check(store.clone()).await;
    store.purge(log_id(2, 1, 9)).await.unwrap();
    check(store.clone()).await;
}
