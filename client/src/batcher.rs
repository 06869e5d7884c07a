//! The allocation status batcher: alloc runners push their latest client state here;
//! the agent's update loop takes everything pending at most every batch window and
//! POSTs it in one request. A failed POST puts the batch back without overwriting
//! anything newer, so the latest state of every allocation is never lost.
//!
//! It also knows which allocations are still moving (starting, or a batch task that
//! will end on its own): once none is, no further change is expected soon and the
//! update loop sends what it holds without waiting for the window to end.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use orch_common::api::AllocClientUpdate;
use orch_common::ids::AllocId;
use tokio::sync::Notify;

/// Latest unsent state per allocation.
#[derive(Default)]
pub struct UpdateBatcher {
    /// A std mutex: held only for map operations, never across an await.
    inner: Mutex<Inner>,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    pending: BTreeMap<AllocId, AllocClientUpdate>,
    /// Allocations whose state will change without anyone asking.
    moving: HashSet<AllocId>,
}

/// Whether an allocation's pushed state is where it will stay for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// Starting, restarting, or a batch task on its way to its end.
    Moving,
    /// Running a service, or finished: nothing changes until something happens to it.
    Settled,
}

impl UpdateBatcher {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("batcher poisoned")
    }

    /// Notes an allocation that is about to start, before it has pushed anything.
    pub fn expect(&self, alloc_id: &str) {
        self.lock().moving.insert(AllocId::from(alloc_id));
    }

    /// Records `u` as the allocation's latest state (replacing an unsent older one).
    pub fn push(&self, u: AllocClientUpdate, motion: Motion) {
        {
            let mut inner = self.lock();
            match motion {
                Motion::Moving => inner.moving.insert(u.id.clone()),
                Motion::Settled => inner.moving.remove(&u.id),
            };
            inner.pending.insert(u.id.clone(), u);
        }
        self.notify.notify_one();
    }

    /// Forgets an allocation that will push nothing more (its runner is gone).
    pub fn forget(&self, alloc_id: &str) {
        self.lock().moving.remove(alloc_id);
    }

    /// True when no allocation on this client is expected to change on its own.
    pub fn settled(&self) -> bool {
        self.lock().moving.is_empty()
    }

    /// Takes every pending update.
    pub fn take(&self) -> Vec<AllocClientUpdate> {
        std::mem::take(&mut self.lock().pending)
            .into_values()
            .collect()
    }

    /// Puts back a batch that could not be sent; newer pushes win.
    pub fn requeue(&self, batch: Vec<AllocClientUpdate>) {
        let mut inner = self.lock();
        for u in batch {
            inner.pending.entry(u.id.clone()).or_insert(u);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::model::ClientStatus;

    fn u(id: &str, s: ClientStatus) -> AllocClientUpdate {
        AllocClientUpdate {
            deployment_health: None,
            id: id.into(),
            client_status: s,
            client_description: String::new(),
            task_states: BTreeMap::new(),
            checks: Default::default(),
        }
    }

    #[test]
    fn only_the_latest_state_per_alloc_is_sent() {
        let b = UpdateBatcher::new();
        b.push(u("a", ClientStatus::Pending), Motion::Moving);
        b.push(u("a", ClientStatus::Running), Motion::Settled);
        b.push(u("b", ClientStatus::Running), Motion::Settled);
        let batch = b.take();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].client_status, ClientStatus::Running);
        assert!(b.is_empty());
    }

    #[test]
    fn a_requeued_batch_does_not_overwrite_newer_states() {
        let b = UpdateBatcher::new();
        b.push(u("a", ClientStatus::Running), Motion::Settled);
        b.push(u("b", ClientStatus::Running), Motion::Settled);
        let failed_send = b.take();
        b.push(u("a", ClientStatus::Complete), Motion::Settled);
        b.requeue(failed_send);
        let mut batch = b.take();
        batch.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(batch[0].client_status, ClientStatus::Complete);
        assert_eq!(batch[1].client_status, ClientStatus::Running);
    }

    #[test]
    fn the_client_is_settled_once_nothing_is_starting_or_running_to_its_end() {
        let b = UpdateBatcher::new();
        assert!(b.settled());
        b.expect("a");
        b.expect("b");
        assert!(!b.settled(), "allocations about to start");
        b.push(u("a", ClientStatus::Running), Motion::Settled);
        b.push(u("b", ClientStatus::Running), Motion::Moving);
        assert!(!b.settled(), "b is a batch task still running");
        b.take();
        assert!(!b.settled(), "sending does not settle anything");
        b.push(u("b", ClientStatus::Complete), Motion::Settled);
        assert!(b.settled());
        b.expect("c");
        b.forget("c");
        assert!(b.settled(), "a runner that went away is not waited for");
    }

    #[tokio::test]
    async fn a_push_wakes_the_sender() {
        let b = std::sync::Arc::new(UpdateBatcher::new());
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.changed().await });
        b.push(u("a", ClientStatus::Running), Motion::Settled);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
