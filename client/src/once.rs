//! Set-once watch values: the first value sent wins (kill and stop reasons, exit
//! results); later sends are ignored.

use tokio::sync::watch;

/// Sets `tx` to `Some(v)` unless it already holds a value. True when this call set it.
pub fn set_once<T>(tx: &watch::Sender<Option<T>>, v: T) -> bool {
    tx.send_if_modified(|cur| {
        if cur.is_none() {
            *cur = Some(v);
            true
        } else {
            false
        }
    })
}

/// Waits until `rx` holds a value and returns it; `None` when the sender went away
/// without ever setting one.
pub async fn wait_set<T: Clone>(mut rx: watch::Receiver<Option<T>>) -> Option<T> {
    match rx.wait_for(|v| v.is_some()).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_value_wins() {
        let (tx, rx) = watch::channel(None);
        assert!(set_once(&tx, 1));
        assert!(!set_once(&tx, 2));
        assert_eq!(wait_set(rx).await, Some(1));
    }

    #[tokio::test]
    async fn a_dropped_sender_without_a_value_gives_none() {
        let (tx, rx) = watch::channel::<Option<u8>>(None);
        drop(tx);
        assert_eq!(wait_set(rx).await, None);
    }
}
