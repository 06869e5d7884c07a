//! The allocation status batcher: alloc runners push their latest client state here;
//! the agent's update loop takes everything pending at most every ~200ms and POSTs it
//! in one request. A failed POST puts the batch back without overwriting anything newer,
//! so the latest state of every allocation is never lost.

use std::collections::BTreeMap;
use std::sync::Mutex;

use orch_common::api::AllocClientUpdate;
use tokio::sync::Notify;

/// Latest unsent state per allocation.
#[derive(Default)]
pub struct UpdateBatcher {
    /// A std mutex: held only for map operations, never across an await.
    pending: Mutex<BTreeMap<String, AllocClientUpdate>>,
    notify: Notify,
}

impl UpdateBatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `u` as the allocation's latest state (replacing an unsent older one).
    pub fn push(&self, u: AllocClientUpdate) {
        self.pending
            .lock()
            .expect("batcher poisoned")
            .insert(u.id.clone(), u);
        self.notify.notify_one();
    }

    /// Takes every pending update.
    pub fn take(&self) -> Vec<AllocClientUpdate> {
        std::mem::take(&mut *self.pending.lock().expect("batcher poisoned"))
            .into_values()
            .collect()
    }

    /// Puts back a batch that could not be sent; newer pushes win.
    pub fn requeue(&self, batch: Vec<AllocClientUpdate>) {
        let mut p = self.pending.lock().expect("batcher poisoned");
        for u in batch {
            p.entry(u.id.clone()).or_insert(u);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.lock().expect("batcher poisoned").is_empty()
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::structs::ClientStatus;

    fn u(id: &str, s: ClientStatus) -> AllocClientUpdate {
        AllocClientUpdate {
            id: id.into(),
            client_status: s,
            client_description: String::new(),
            task_states: BTreeMap::new(),
        }
    }

    #[test]
    fn only_the_latest_state_per_alloc_is_sent() {
        let b = UpdateBatcher::new();
        b.push(u("a", ClientStatus::Pending));
        b.push(u("a", ClientStatus::Running));
        b.push(u("b", ClientStatus::Running));
        let batch = b.take();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].client_status, ClientStatus::Running);
        assert!(b.is_empty());
    }

    #[test]
    fn a_requeued_batch_does_not_overwrite_newer_states() {
        let b = UpdateBatcher::new();
        b.push(u("a", ClientStatus::Running));
        b.push(u("b", ClientStatus::Running));
        let failed_send = b.take();
        b.push(u("a", ClientStatus::Complete));
        b.requeue(failed_send);
        let mut batch = b.take();
        batch.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(batch[0].client_status, ClientStatus::Complete);
        assert_eq!(batch[1].client_status, ClientStatus::Running);
    }

    #[tokio::test]
    async fn a_push_wakes_the_sender() {
        let b = std::sync::Arc::new(UpdateBatcher::new());
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.changed().await });
        b.push(u("a", ClientStatus::Running));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
