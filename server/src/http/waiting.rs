//! `Waiting`: connections that have not yet done what makes them worth keeping (sent
//! a request, finished a TLS handshake), oldest first, with a cap: past it the oldest
//! is told to close, so idle or half-open connections never crowd out real ones.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Connections that have not sent a request (or finished their TLS handshake) yet,
/// oldest first.
#[derive(Default)]
pub struct Waiting {
    next_id: AtomicU64,
    queue: Mutex<VecDeque<WaitingConn>>,
}

/// A waiting connection: its id, whether it has started, and how to close it.
type WaitingConn = (u64, Arc<AtomicBool>, oneshot::Sender<()>);

impl Waiting {
    /// Adds a connection; closes the oldest waiting ones beyond `max`.
    pub fn push(&self, started: Arc<AtomicBool>, max: usize) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.retain(|(_, started, tx)| !started.load(Ordering::Relaxed) && !tx.is_closed());
        queue.push_back((id, started, tx));
        while queue.len() > max {
            if let Some((_, _, close)) = queue.pop_front() {
                let _ = close.send(());
            }
        }
        (id, rx)
    }

    pub fn remove(&self, id: u64) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.retain(|(other, _, _)| *other != id);
    }
}
