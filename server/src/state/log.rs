//! The local command log: the seam a Raft log replaces later. `submit` hands a command
//! to ONE writer thread that gives it the next index, applies it to the store (durable
//! on return), then tells the observers (the eval broker) and answers the submitter
//! with the `ApplyOutcome`.
//!
//! ```text
//!  submit(cmd) ──► channel ──► writer thread ──► store.apply(last+1, cmd)
//!      ▲                            │ ok: observers(cmd, index) in index order
//!      │                            │     (not for a rejection that wrote nothing)
//!      └── Result<ApplyOutcome> ◄───┘ err: nothing applied, index not used
//! ```
//!
//! A command its check rejects is not an error: it is committed at its index like any
//! other, and the outcome's `rejected` says why its change was refused.
//!
//! `restore` installs a state snapshot on the same thread, between two commands: the
//! file is checked first (off the writer), then the writer installs it at the next
//! index (`StateStore::install_snapshot`) and tells the restore observers (the
//! server rebuilds its eval broker and heartbeat timers from the new state there).
//!
//! Replicated, the same writer applies what Raft commits instead: once a `Proposer`
//! is set (`replicate_through`), `submit` hands the command to it (the leader's Raft,
//! which answers once a majority stored it and this server applied it), and Raft's
//! state machine (`crate::raft::state_machine`) feeds every committed entry back
//! here with `apply_replicated`, `record_mark` and `install_replicated`, so local and
//! replicated writes, restores and observers keep one order on one thread. Indexes
//! stay the store's own (one per applied command): every server applies the same
//! commands from the same snapshot, so they agree.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::backup::InstalledMark;
use super::{
    check_snapshot, ApplyOutcome, CheckedSnapshot, Command, ReplicationMark, StateError, StateStore,
};

/// Called after every applied command, in index order, on the writer thread (not after
/// a rejected one that wrote nothing). Must not block for long (it delays every write)
/// and must not submit commands itself.
pub type Observer = Arc<dyn Fn(&Command, u64) + Send + Sync>;

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the command log is shut down")]
    Closed,
    #[error("applying the command failed: {0}")]
    Apply(#[from] StateError),
    #[error("the state writer thread stopped before answering")]
    WriterGone,
    #[error("starting the state writer thread: {0}")]
    Spawn(std::io::Error),
    /// This server is not the Raft leader: writes go to the leader (its HTTP address
    /// when known).
    #[error("this server is not the leader{}", leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_else(|| "; no leader is known".to_string()))]
    NotLeader { leader: Option<String> },
    /// Raft could not commit the command (no quorum in time, shutting down).
    #[error("replicating the command failed: {0}")]
    Replication(String),
    /// The command was committed, but applying it failed the same way on every
    /// server (its change is not made).
    #[error("applying the committed command failed: {0}")]
    Failed(String),
}

/// Told the outcome of a replicated command once it is applied (on the writer thread:
/// it must only hand the outcome on).
pub type Applied = Box<dyn FnOnce(Result<ApplyOutcome, StateError>) + Send>;

/// Where `submit` sends commands once the state is replicated (the leader's Raft).
pub trait Proposer: Send + Sync {
    /// Queues `cmd` in call order; `reply` gets its outcome once it is committed and
    /// applied here (or why it was not).
    fn propose(&self, cmd: Command, reply: oneshot::Sender<Result<ApplyOutcome, LogError>>);
}

/// Called on the writer thread after a snapshot was installed, with the store and
/// the index it was installed at, before any later command is applied: whatever
/// keeps state derived from the store (the eval broker, heartbeat timers) rebuilds
/// it there. Must not submit commands itself.
pub type RestoreObserver = Arc<dyn Fn(&StateStore, u64) + Send + Sync>;

/// What a snapshot restore replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RestoreOutcome {
    /// The last applied index before the restore.
    pub previous_index: u64,
    /// The index the snapshot holds (its state as saved).
    pub snapshot_index: u64,
    /// The index the restored state was installed at (`previous_index` + 1 or the
    /// snapshot's index + 1, whichever is higher): indexes never go back.
    pub index: u64,
    /// The snapshot file's schema version (migrated to this binary's on restore).
    pub schema_version: u32,
}

// Commands are the large variant and the hot path: boxing them would cost every
// write an allocation to save a few hundred bytes of a rare restore's message.
#[allow(clippy::large_enum_variant)]
enum Request {
    Apply {
        cmd: Command,
        reply: oneshot::Sender<Result<ApplyOutcome, LogError>>,
    },
    Restore {
        snapshot: CheckedSnapshot,
        reply: oneshot::Sender<Result<RestoreOutcome, LogError>>,
    },
    /// A committed Raft entry's command, with its leader's time and its mark.
    Replicated {
        time_ms: u64,
        cmd: Command,
        mark: ReplicationMark,
        done: Applied,
    },
    /// A committed Raft entry without a command (blank, membership).
    Mark { mark: ReplicationMark },
    /// Work that must see the state between two commands (see `between_commands`).
    Run(Box<dyn FnOnce(&StateStore) + Send>),
    /// A Raft snapshot from the leader: installed with its own mark and index.
    Install {
        snapshot: CheckedSnapshot,
        reply: oneshot::Sender<Result<RestoreOutcome, LogError>>,
    },
}

/// Handle to the log; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct CommandLog {
    inner: Arc<LogInner>,
}

struct LogInner {
    store: StateStore,
    /// `None` once shut down.
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    observers: Arc<RwLock<Vec<Observer>>>,
    restore_observers: Arc<RwLock<Vec<RestoreObserver>>>,
    /// Why the last write failed in SQLite (disk full, I/O error, read-only file),
    /// until a later one succeeds: `/v1/agent/health` reports it.
    write_error: Arc<Mutex<Option<String>>>,
    /// Set once the state is replicated: `submit` proposes through it.
    proposer: RwLock<Option<Arc<dyn Proposer>>>,
    replication_failure: Arc<Mutex<Option<String>>>,
}

impl CommandLog {
    /// Starts the writer thread over `store`, continuing after its last index.
    pub fn start(store: StateStore, observers: Vec<Observer>) -> Result<CommandLog, LogError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let observers = Arc::new(RwLock::new(observers));
        let restore_observers = Arc::new(RwLock::new(Vec::new()));
        let write_error = Arc::new(Mutex::new(None));
        let replication_failure = Arc::new(Mutex::new(None));
        let thread = {
            let writer = Writer {
                store: store.clone(),
                observers: observers.clone(),
                restore_observers: restore_observers.clone(),
                write_error: write_error.clone(),
                replication_failure: replication_failure.clone(),
            };
            std::thread::Builder::new()
                .name("orch-state-writer".to_string())
                .spawn(move || writer.run(rx))
                .map_err(LogError::Spawn)?
        };
        Ok(CommandLog {
            inner: Arc::new(LogInner {
                store,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                observers,
                restore_observers,
                write_error,
                proposer: RwLock::new(None),
                replication_failure,
            }),
        })
    }

    /// From now on `submit` proposes commands through `proposer` (Raft) instead of
    /// applying them here; what is committed comes back through `apply_replicated`.
    pub fn replicate_through(&self, proposer: Arc<dyn Proposer>) {
        *self
            .inner
            .proposer
            .write()
            .expect("log proposer lock poisoned") = Some(proposer);
    }

    /// Whether commands go through Raft.
    pub fn is_replicated(&self) -> bool {
        self.inner
            .proposer
            .read()
            .expect("log proposer lock poisoned")
            .is_some()
    }

    /// Queues a committed Raft entry's command: it applies at the next index, with its
    /// leader's time, writing `mark` in the same transaction (observers run as for
    /// `submit`), and `done` is told the outcome. Raft's state machine does not wait
    /// for it: entries queue up on the writer back to back, in log order. A failure
    /// that follows from the command (`StateError::is_storage_failure` false) still
    /// records `mark`; one of this server's disk is kept (`replication_failure`).
    pub fn apply_replicated(
        &self,
        time_ms: u64,
        cmd: Command,
        mark: ReplicationMark,
        done: Applied,
    ) -> Result<(), LogError> {
        self.sender()?
            .send(Request::Replicated {
                time_ms,
                cmd,
                mark,
                done,
            })
            .map_err(|_| LogError::WriterGone)
    }

    /// Queues the record of a committed Raft entry that carries no command.
    pub fn record_mark(&self, mark: ReplicationMark) -> Result<(), LogError> {
        self.sender()?
            .send(Request::Mark { mark })
            .map_err(|_| LogError::WriterGone)
    }

    /// Why this server could not apply a committed entry (its disk failed), once it
    /// did not: from then on its state lacks an entry the others have, so Raft must
    /// stop here.
    pub fn replication_failure(&self) -> Option<String> {
        self.inner
            .replication_failure
            .lock()
            .expect("replication failure mutex poisoned")
            .clone()
    }

    /// Runs `work` on the writer thread between two commands and returns what it
    /// returned: what it reads from the store and what observers see after it
    /// are one sequence (the leader loads its eval broker this way, so no
    /// evaluation is both loaded and observed, or neither). Must not block for long.
    pub async fn between_commands<T: Send + 'static>(
        &self,
        work: impl FnOnce(&StateStore) -> T + Send + 'static,
    ) -> Result<T, LogError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Request::Run(Box::new(move |store| {
                let _ = reply.send(work(store));
            })))
            .map_err(|_| LogError::WriterGone)?;
        rx.await.map_err(|_| LogError::WriterGone)
    }

    /// Installs a Raft snapshot (a state file from the leader, with its mark) at the
    /// index it holds; restore observers run as for `restore`.
    pub async fn install_replicated(
        &self,
        path: std::path::PathBuf,
    ) -> Result<RestoreOutcome, LogError> {
        let snapshot = tokio::task::spawn_blocking(move || check_snapshot(&path))
            .await
            .map_err(|_| LogError::WriterGone)??;
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Request::Install { snapshot, reply })
            .map_err(|_| LogError::WriterGone)?;
        rx.await.map_err(|_| LogError::WriterGone)?
    }

    /// Adds an observer of snapshot restores (see `RestoreObserver`).
    pub fn add_restore_observer(&self, observer: RestoreObserver) {
        self.inner
            .restore_observers
            .write()
            .expect("log restore observers lock poisoned")
            .push(observer);
    }

    /// Replaces the whole state with the snapshot file at `path` (see
    /// `crate::state::backup`): checks it (a bad file is an `InvalidSnapshot` or
    /// `SchemaTooNew` error and changes nothing), migrates it in place, then the
    /// writer installs it between two commands. Commands submitted after this
    /// returns apply to the restored state.
    pub async fn restore(&self, path: std::path::PathBuf) -> Result<RestoreOutcome, LogError> {
        let snapshot = tokio::task::spawn_blocking(move || check_snapshot(&path))
            .await
            .map_err(|_| LogError::WriterGone)??;
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Request::Restore { snapshot, reply })
            .map_err(|_| LogError::WriterGone)?;
        rx.await.map_err(|_| LogError::WriterGone)?
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>, LogError> {
        self.inner
            .tx
            .lock()
            .expect("log sender mutex poisoned")
            .clone()
            .ok_or(LogError::Closed)
    }

    /// The store this log applies to.
    pub fn store(&self) -> &StateStore {
        &self.inner.store
    }

    /// Adds an observer for commands applied from now on.
    pub fn add_observer(&self, observer: Observer) {
        self.inner
            .observers
            .write()
            .expect("log observers lock poisoned")
            .push(observer);
    }

    fn send(
        &self,
        cmd: Command,
    ) -> Result<oneshot::Receiver<Result<ApplyOutcome, LogError>>, LogError> {
        let (reply, rx) = oneshot::channel();
        let proposer = self
            .inner
            .proposer
            .read()
            .expect("log proposer lock poisoned")
            .clone();
        match proposer {
            Some(proposer) => proposer.propose(cmd, reply),
            None => self
                .sender()?
                .send(Request::Apply { cmd, reply })
                .map_err(|_| LogError::WriterGone)?,
        }
        Ok(rx)
    }

    /// Appends and applies `cmd`; returns its outcome (its index, and whether its check
    /// rejected it) once it is committed to disk.
    pub async fn submit(&self, cmd: Command) -> Result<ApplyOutcome, LogError> {
        let rx = self.send(cmd)?;
        rx.await.map_err(|_| LogError::WriterGone)?
    }

    /// Queues `cmd` now (it takes its index in call order) and returns a future of its
    /// outcome, ready once it is committed: lets a caller queue several commands in
    /// order without waiting for each commit in between.
    pub fn submit_later(
        &self,
        cmd: Command,
    ) -> Result<impl std::future::Future<Output = Result<ApplyOutcome, LogError>>, LogError> {
        let rx = self.send(cmd)?;
        Ok(async move { rx.await.map_err(|_| LogError::WriterGone)? })
    }

    /// `submit` for threads outside the async runtime (`spawn_blocking`, std threads).
    /// Must not be called from an async task.
    pub fn submit_blocking(&self, cmd: Command) -> Result<ApplyOutcome, LogError> {
        let rx = self.send(cmd)?;
        rx.blocking_recv().map_err(|_| LogError::WriterGone)?
    }

    /// Why writes fail now, for `/v1/agent/health`: the last one failed in SQLite (and
    /// none succeeded since), or the writer thread died (a panic: every later write
    /// fails). None when writes work, and once the log is shut down.
    pub fn write_failure(&self) -> Option<String> {
        let finished = self
            .inner
            .thread
            .lock()
            .expect("log thread mutex poisoned")
            .as_ref()
            .is_some_and(|t| t.is_finished());
        if finished {
            return Some("the state writer thread stopped".to_string());
        }
        self.inner
            .write_error
            .lock()
            .expect("write error mutex poisoned")
            .clone()
    }

    /// Stops taking commands, lets the writer finish what it has, and joins it.
    pub async fn shutdown(&self) {
        self.inner
            .tx
            .lock()
            .expect("log sender mutex poisoned")
            .take();
        let thread = self
            .inner
            .thread
            .lock()
            .expect("log thread mutex poisoned")
            .take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the state writer thread panicked");
            }
        }
    }
}

/// The writer thread's side: what it applies to and whom it tells.
struct Writer {
    store: StateStore,
    observers: Arc<RwLock<Vec<Observer>>>,
    restore_observers: Arc<RwLock<Vec<RestoreObserver>>>,
    write_error: Arc<Mutex<Option<String>>>,
    replication_failure: Arc<Mutex<Option<String>>>,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Request>) {
        while let Ok(request) = rx.recv() {
            match request {
                Request::Apply { cmd, reply } => {
                    let result = self.apply(&cmd);
                    // The submitter may have gone away (request cancelled); the write
                    // stands.
                    let _ = reply.send(result);
                }
                Request::Restore { snapshot, reply } => {
                    let _ = reply.send(self.restore(snapshot, false));
                }
                Request::Replicated {
                    time_ms,
                    cmd,
                    mark,
                    done,
                } => {
                    let index = self.store.last_index() + 1;
                    let result = self.applied(
                        index,
                        &cmd,
                        self.store.apply_replicated(index, time_ms, &cmd, &mark),
                    );
                    // A failure every server meets alike still consumes the entry:
                    // its mark moves on without the change (the transaction that
                    // held both was rolled back).
                    let result = match result {
                        Err(e) if !e.is_storage_failure() => {
                            self.store.record_mark(&mark).and(Err(e))
                        }
                        other => other,
                    };
                    if let Err(e) = &result {
                        if e.is_storage_failure() {
                            self.fail_replication(e);
                        }
                    }
                    done(result);
                }
                Request::Run(work) => {
                    if catch_unwind(AssertUnwindSafe(|| work(&self.store))).is_err() {
                        tracing::error!("work run on the state writer panicked");
                    }
                }
                Request::Mark { mark } => {
                    if let Err(e) = self.store.record_mark(&mark) {
                        self.fail_replication(&e);
                    }
                }
                Request::Install { snapshot, reply } => {
                    let _ = reply.send(self.restore(snapshot, true));
                }
            }
        }
        tracing::debug!("state writer stopped");
    }

    fn fail_replication(&self, e: &StateError) {
        tracing::error!(error = %e, "applying a committed Raft entry failed on this server");
        self.replication_failure
            .lock()
            .expect("replication failure mutex poisoned")
            .get_or_insert_with(|| e.to_string());
    }

    fn set_error(&self, e: Option<String>) {
        *self.write_error.lock().expect("write error mutex poisoned") = e;
    }

    fn apply(&self, cmd: &Command) -> Result<ApplyOutcome, LogError> {
        let index = self.store.last_index() + 1;
        self.applied(index, cmd, self.store.apply(index, cmd))
            .map_err(LogError::Apply)
    }

    /// Tells the observers about an applied command and records or clears the write
    /// error.
    fn applied(
        &self,
        index: u64,
        cmd: &Command,
        result: Result<ApplyOutcome, StateError>,
    ) -> Result<ApplyOutcome, StateError> {
        match result {
            Ok(outcome) => {
                self.set_error(None);
                // A rejected command that wrote nothing has nothing to tell (its
                // evaluations, say, were not stored); one that wrote its evaluations
                // (an `UpdateDeployment`, a plan of a pruned job version) has.
                if outcome.rejected.is_none() || !outcome.tables.is_empty() {
                    let observers = self
                        .observers
                        .read()
                        .expect("log observers lock poisoned")
                        .clone();
                    for observer in observers {
                        // An observer's bug must not stop every later write.
                        if catch_unwind(AssertUnwindSafe(|| observer(cmd, index))).is_err() {
                            tracing::error!(index, "a state observer panicked");
                        }
                    }
                }
                Ok(outcome)
            }
            Err(e) => {
                tracing::error!(index, error = %e, "applying a command failed");
                // SQLite's own failures (a full disk, an I/O error, a read-only file)
                // say the store cannot take writes; a refused command's would not.
                if matches!(e, StateError::Sql { .. }) {
                    self.set_error(Some(e.to_string()));
                }
                Err(e)
            }
        }
    }

    /// Installs `snapshot`: an operator's restore (`raft` false) above both indexes,
    /// keeping this server's Raft mark; a Raft snapshot at the index it holds, with
    /// its own mark.
    fn restore(&self, snapshot: CheckedSnapshot, raft: bool) -> Result<RestoreOutcome, LogError> {
        let previous_index = self.store.last_index();
        let meta = snapshot.meta;
        let ours = if raft {
            None
        } else {
            Some(self.store.replication_mark()?)
        };
        let index = match &ours {
            // Above both: blocking queries and clients' watches wait for an index
            // above what they saw, and a follower's snapshot is ahead of it.
            Some(_) => previous_index.max(meta.index) + 1,
            // The leader's index, so that every server's indexes agree; a snapshot
            // is only sent to a server that has applied less of the log.
            None if meta.index > previous_index => meta.index,
            None => {
                tracing::warn!(
                    previous_index,
                    snapshot_index = meta.index,
                    "a Raft snapshot at or below the applied index; installing it above"
                );
                previous_index + 1
            }
        };
        let mark = match &ours {
            Some(ours) => InstalledMark::Ours(ours.as_ref()),
            None => InstalledMark::Theirs,
        };
        if let Err(e) = self.store.install_snapshot(snapshot, index, mark) {
            tracing::error!(index, error = %e, "installing a state snapshot failed");
            return Err(LogError::Apply(e));
        }
        self.set_error(None);
        tracing::info!(
            previous_index,
            snapshot_index = meta.index,
            index,
            "state snapshot restored"
        );
        let observers = self
            .restore_observers
            .read()
            .expect("log restore observers lock poisoned")
            .clone();
        for observer in observers {
            if catch_unwind(AssertUnwindSafe(|| observer(&self.store, index))).is_err() {
                tracing::error!(index, "a state restore observer panicked");
            }
        }
        Ok(RestoreOutcome {
            previous_index,
            snapshot_index: meta.index,
            index,
            schema_version: meta.schema_version,
        })
    }
}
