//! Supervised background loops and the agent's health registry (`Health`).
//!
//! `spawn_required` runs a loop whose panic is fatal to the agent; `spawn_restarting`
//! runs one that is started again after a panic, with backoff, a bounded number of times
//! in a row. Both catch the panic (the task does not just vanish), log it with the
//! loop's name and record it in `Health`: `/v1/agent/health` reports every loop from
//! there, and the agent process (cli/agent.rs) waits on `Health::fatal_failure` to shut
//! down in order and exit non-zero.
//!
//! Which loop gets which policy is the caller's choice, made where the loop is spawned
//! (`Server::start`, `Client::start`) and listed in docs/operations.md. The rule: restart
//! only a loop that holds nothing of its own between passes (it rebuilds what it needs
//! from the state store or from state shared with the rest of the agent), so a fresh
//! copy is as good as the old one; any loop that owns a queue, in-flight work or
//! progress that a restart would silently drop is required.
//!
//! Only in debug builds, `ORCH_TEST_PANIC_LOOP=<name>[,<name>...]` makes the named
//! loops panic as they first start: the fault the integration tests inject into the
//! real binary. Release builds do not read it.
//!
//! Built only with the `supervise` feature: it needs tokio, which the rest of this
//! crate does without.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::{LoopHealth, LoopState};

/// The debug-build fault injection variable (see the module comment).
pub const PANIC_LOOP_ENV: &str = "ORCH_TEST_PANIC_LOOP";

/// How a restartable loop is restarted after a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Restarts in a row (without a calm run in between) before the loop is failed for
    /// good, which is fatal: a loop that panics at once every time is broken, and an
    /// agent that only pretends to run it must not stay up.
    pub max_in_a_row: u32,
    /// Wait before the first restart; doubled for each one after, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// A run at least this long before its panic starts the count in a row again: a
    /// loop that panics once a week is restarted every week.
    pub calm_after: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            max_in_a_row: 5,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            calm_after: Duration::from_secs(600),
        }
    }
}

/// Every supervised loop of this agent and, once one failed for good, why the agent
/// must stop. Cheap to clone (an `Arc` inside); the server and the client of one agent
/// share one.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    loops: Mutex<BTreeMap<String, LoopHealth>>,
    /// The first fatal failure; set once.
    fatal: watch::Sender<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            inner: Arc::new(Inner {
                loops: Mutex::new(BTreeMap::new()),
                fatal: watch::Sender::new(None),
            }),
        }
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("loops", &self.loops())
            .finish()
    }
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Every loop's state, by name.
    pub fn loops(&self) -> BTreeMap<String, LoopHealth> {
        self.lock().clone()
    }

    /// Whether a loop whose name starts with `prefix` (`"server."`, `"client."`) is
    /// registered.
    pub fn has_loops(&self, prefix: &str) -> bool {
        self.lock().keys().any(|k| k.starts_with(prefix))
    }

    /// Why the loops whose names start with `prefix` are not healthy (`"failed: ..."`,
    /// the first failed loop's panic), or None when none has failed.
    pub fn failure(&self, prefix: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(name, l)| name.starts_with(prefix) && l.state == LoopState::Failed)
            .map(|(name, l)| {
                format!(
                    "failed: the {name} loop panicked: {}",
                    l.last_panic.as_deref().unwrap_or("(no message)")
                )
            })
    }

    /// The first fatal failure, if any.
    pub fn fatal(&self) -> Option<String> {
        self.inner.fatal.borrow().clone()
    }

    /// Resolves with the first fatal failure (at once when there already is one).
    pub fn fatal_failure(&self) -> impl Future<Output = String> + Send + 'static {
        let mut rx = self.inner.fatal.subscribe();
        // The sender lives in `inner`, which this keeps alive: `wait_for` cannot fail.
        let keep = self.inner.clone();
        async move {
            let why = match rx.wait_for(|f| f.is_some()).await {
                Ok(why) => why.clone().unwrap_or_default(),
                Err(_) => String::new(),
            };
            drop(keep);
            why
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LoopHealth>> {
        // The map is only ever replaced entry by entry: a panic while it was held
        // cannot leave it half-written, so a poisoned lock is still good to read.
        self.inner.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut LoopHealth)) {
        let mut loops = self.lock();
        let entry = loops.entry(name.to_string()).or_insert(LoopHealth {
            state: LoopState::Running,
            restarts: 0,
            last_panic: None,
        });
        f(entry);
    }

    fn set_fatal(&self, why: String) {
        self.inner.fatal.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

#[cfg(debug_assertions)]
fn injected_panic(name: &str) -> bool {
    std::env::var(PANIC_LOOP_ENV)
        .map(|v| v.split(',').any(|n| n.trim() == name))
        .unwrap_or(false)
}

#[cfg(not(debug_assertions))]
fn injected_panic(_: &str) -> bool {
    false
}

/// Runs `fut` to its end, turning a panic into its message.
async fn run_caught<F>(name: &str, first: bool, fut: F) -> Result<(), String>
where
    F: Future<Output = ()> + Send,
{
    let inject = first && injected_panic(name);
    let run = async move {
        if inject {
            panic!("{PANIC_LOOP_ENV} made this loop panic");
        }
        fut.await
    };
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .map_err(|p| panic_message(&*p))
}

/// Spawns loop `name` whose panic is fatal: it is marked failed in `health` and
/// `Health::fatal_failure` resolves, which the agent answers by shutting down and
/// exiting non-zero.
pub fn spawn_required<F>(health: &Health, name: &str, fut: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let health = health.clone();
    let name = name.to_string();
    health.update(&name, |l| l.state = LoopState::Running);
    tokio::spawn(async move {
        match run_caught(&name, true, fut).await {
            Ok(()) => health.update(&name, |l| l.state = LoopState::Stopped),
            Err(msg) => {
                tracing::error!(r#loop = %name, panic = %msg, "background loop panicked; it is required, so the agent stops");
                health.update(&name, |l| {
                    l.state = LoopState::Failed;
                    l.last_panic = Some(msg.clone());
                });
                health.set_fatal(format!("the {name} loop panicked: {msg}"));
            }
        }
    })
}

/// Spawns loop `name`, made afresh by `make` for each run, and restarts it after a
/// panic as `policy` says; too many panics in a row fail it as `spawn_required` does.
/// Not restarted once `shutdown` is true (nor while it waits to be).
pub fn spawn_restarting<M, F>(
    health: &Health,
    name: &str,
    policy: Restart,
    mut shutdown: watch::Receiver<bool>,
    mut make: M,
) -> JoinHandle<()>
where
    M: FnMut() -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let health = health.clone();
    let name = name.to_string();
    health.update(&name, |l| l.state = LoopState::Running);
    tokio::spawn(async move {
        let mut in_a_row = 0u32;
        let mut first = true;
        loop {
            let started = Instant::now();
            let result = run_caught(&name, first, make()).await;
            first = false;
            let msg = match result {
                Ok(()) => {
                    health.update(&name, |l| l.state = LoopState::Stopped);
                    return;
                }
                Err(msg) => msg,
            };
            health.update(&name, |l| l.last_panic = Some(msg.clone()));
            if *shutdown.borrow() {
                tracing::error!(r#loop = %name, panic = %msg, "background loop panicked while the agent stops");
                health.update(&name, |l| l.state = LoopState::Stopped);
                return;
            }
            if started.elapsed() >= policy.calm_after {
                in_a_row = 0;
            }
            if in_a_row >= policy.max_in_a_row {
                tracing::error!(r#loop = %name, panic = %msg, restarts = in_a_row,
                    "background loop keeps panicking; giving up, the agent stops");
                health.update(&name, |l| l.state = LoopState::Failed);
                health.set_fatal(format!(
                    "the {name} loop panicked {} times in a row: {msg}",
                    in_a_row + 1
                ));
                return;
            }
            let backoff = policy
                .first_backoff
                .saturating_mul(1u32 << in_a_row.min(16))
                .min(policy.max_backoff);
            in_a_row += 1;
            tracing::error!(r#loop = %name, panic = %msg, backoff_ms = backoff.as_millis() as u64,
                "background loop panicked; restarting it");
            health.update(&name, |l| {
                l.state = LoopState::Restarting;
                l.restarts += 1;
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|s| *s) => {
                    health.update(&name, |l| l.state = LoopState::Stopped);
                    return;
                }
            }
            health.update(&name, |l| l.state = LoopState::Running);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> Restart {
        Restart {
            max_in_a_row: 2,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            calm_after: Duration::from_secs(600),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_required_loop_that_panics_is_failed_and_fatal() {
        let health = Health::new();
        let handle = spawn_required(&health, "server.plan-applier", async {
            panic!("boom");
        });
        handle.await.expect("the supervisor itself does not panic");
        let l = &health.loops()["server.plan-applier"];
        assert_eq!(l.state, LoopState::Failed);
        assert_eq!(l.last_panic.as_deref(), Some("boom"));
        assert!(health.failure("server.").unwrap().contains("boom"));
        assert_eq!(health.failure("client."), None);
        let why = health.fatal_failure().await;
        assert!(why.contains("server.plan-applier"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restartable_loop_is_restarted_after_a_panic() {
        let health = Health::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let stop = stop_rx.clone();
        let handle = spawn_restarting(&health, "server.gc", quick(), stop_rx, move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let mut stop = stop.clone();
            async move {
                if n == 0 {
                    panic!("first run fails");
                }
                let _ = stop.wait_for(|s| *s).await;
            }
        });
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let l = health.loops()["server.gc"].clone();
        assert_eq!(l.state, LoopState::Running);
        assert_eq!(l.restarts, 1);
        assert_eq!(l.last_panic.as_deref(), Some("first run fails"));
        assert_eq!(health.failure("server."), None);
        assert_eq!(health.fatal(), None);
        stop_tx.send_replace(true);
        handle.await.unwrap();
        assert_eq!(health.loops()["server.gc"].state, LoopState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_keeps_panicking_is_given_up_on() {
        let health = Health::new();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let handle = spawn_restarting(&health, "client.heartbeat", quick(), stop_rx, || async {
            panic!("always")
        });
        handle.await.unwrap();
        let l = &health.loops()["client.heartbeat"];
        assert_eq!(l.state, LoopState::Failed);
        assert_eq!(l.restarts, 2);
        assert!(health.fatal().unwrap().contains("3 times in a row"));
        assert!(health.failure("client.").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn no_restart_once_the_agent_stops() {
        let health = Health::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        stop_tx.send_replace(true);
        let handle = spawn_restarting(&health, "server.drainer", quick(), stop_rx, || async {
            panic!("late")
        });
        handle.await.unwrap();
        let l = &health.loops()["server.drainer"];
        assert_eq!(l.state, LoopState::Stopped);
        assert_eq!(l.restarts, 0);
        assert_eq!(health.fatal(), None);
    }
}
