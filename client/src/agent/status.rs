//! Sending allocation status to the servers: the update loop batches what the alloc
//! runners report (`UpdateBatcher`) and POSTs it, at most once per `BATCH_WINDOW`
//! during a burst, retrying failures with backoff.

use std::sync::Arc;
use std::time::Duration;

use orch_common::api::AllocUpdateRequest;
use tokio::sync::watch;

use super::shared::{backoff, sleep_or_stop, Shared};

/// Status updates are sent at most once per window (Nomad's client uses 200 ms).
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// How long shutdown tries to deliver the final states.
pub(super) const FINAL_FLUSH: Duration = Duration::from_secs(3);

/// Sends pending status updates, retrying failures. A change after a quiet spell goes
/// out at once; changes that follow within `BATCH_WINDOW` of a send wait for the window
/// to end and go together, so a burst costs the server one write per window. The
/// burst's last change (no allocation is left starting or running to its end) ends
/// the window early.
pub(super) async fn update_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_millis(500);
    let mut last_sent: Option<tokio::time::Instant> = None;
    loop {
        if shared.batcher.is_empty() {
            tokio::select! {
                _ = shared.batcher.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if let Some(sent) = last_sent {
            // Wait for the window to end, unless nothing more is coming: once no
            // allocation here is starting or running to its end, what is pending is
            // the last word for now, and waiting would only delay it.
            let window_end = sent + BATCH_WINDOW;
            while !shared.batcher.settled() {
                tokio::select! {
                    _ = tokio::time::sleep_until(window_end) => break,
                    _ = shared.batcher.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        last_sent = Some(tokio::time::Instant::now());
        if send_batch(&shared).await {
            wait = Duration::from_millis(500);
        } else {
            if sleep_or_stop(wait, &mut stop).await {
                return;
            }
            wait = backoff(wait);
        }
    }
}

/// POSTs everything pending; on failure puts it back. True when sent (or nothing to send).
pub(super) async fn send_batch(shared: &Shared) -> bool {
    let batch = shared.batcher.take();
    if batch.is_empty() {
        return true;
    }
    let req = AllocUpdateRequest { allocs: batch };
    match shared.api.update_allocs(&shared.node.id, &req).await {
        Ok(_) => {
            tracing::debug!(count = req.allocs.len(), "sent allocation updates");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, count = req.allocs.len(), "sending allocation updates; will retry");
            shared.batcher.requeue(req.allocs);
            false
        }
    }
}
