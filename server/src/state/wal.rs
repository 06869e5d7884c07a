//! Keeping the write-ahead log bounded, off the writer's critical path.
//!
//! SQLite's automatic checkpoint runs on the committing thread: at a million
//! allocations it was a quarter of the state writer's time. Here the writer only notes
//! the log's length after each commit (a WAL hook) and nudges a checkpointer thread,
//! which copies committed frames into the database file (PASSIVE: never blocks the
//! writer) on its own connection. The log starts over from its beginning only when a
//! checkpoint finished with no reader left on it, which concurrent checkpoints and
//! steady readers can keep from happening; so once the log passes `RESTART_FRAMES` the
//! writer itself runs a RESTART checkpoint, which waits briefly for readers to move off
//! the log (what is left to copy by then is small).

use std::cell::Cell;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::Duration;

use rusqlite::hooks::Wal;
use rusqlite::Connection;

/// Frames in the log after which the checkpointer is nudged (SQLite's default).
const CHECKPOINT_FRAMES: c_int = 1_000;
/// Frames in the log (64 MiB of 4 KiB pages) after which the writer restarts it.
const RESTART_FRAMES: c_int = 16_384;
/// The log file is cut back to this size when it starts over.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// How long a restart waits for readers (a snapshot lasts one scheduling pass).
const RESTART_WAIT: Duration = Duration::from_millis(500);

thread_local! {
    /// Frames in the log after this thread's last commit (the hook runs on the
    /// committing thread, right after its commit).
    static FRAMES: Cell<c_int> = const { Cell::new(0) };
}

/// The writer's side: nudges the checkpointer, restarts a long log.
pub(crate) struct Checkpointer {
    nudge: SyncSender<()>,
}

impl Checkpointer {
    /// Installs the hook on the writer connection (replacing SQLite's automatic
    /// checkpoint) and starts the checkpointer thread on a connection of its own to
    /// `path`. The thread stops when the `Checkpointer` is dropped.
    pub(crate) fn start(writer: &Connection, path: PathBuf) -> Result<Checkpointer, String> {
        let conn = super::pool::open_connection(&path).map_err(|e| e.to_string())?;
        writer
            .pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(|e| e.to_string())?;
        let (nudge, rx) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("orch-state-ckpt".to_string())
            .spawn(move || loop {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout) => continue,
                    // The store is gone; its last connection checkpoints on close.
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, path = %path.display(), "WAL checkpoint");
                }
            })
            .map_err(|e| format!("starting the checkpoint thread: {e}"))?;
        writer.wal_hook(Some(note_frames));
        Ok(Checkpointer { nudge })
    }

    /// After each commit on `writer`: nudges the checkpointer once the log holds
    /// enough, and restarts the log when it has grown past the limit. `busy_timeout`
    /// is the connection's usual wait, restored afterwards.
    pub(crate) fn after_commit(&self, writer: &Connection, busy_timeout: Duration) {
        let frames = FRAMES.with(|f| f.get());
        if frames >= CHECKPOINT_FRAMES {
            // Full: a nudge is pending already.
            let _ = self.nudge.try_send(());
        }
        if frames < RESTART_FRAMES {
            return;
        }
        FRAMES.with(|f| f.set(0));
        let restart = || -> rusqlite::Result<(i64, i64)> {
            writer.busy_timeout(RESTART_WAIT)?;
            let counts = writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            });
            writer.busy_timeout(busy_timeout)?;
            counts
        };
        match restart() {
            Ok((0, _)) => tracing::debug!("WAL restarted"),
            Ok((_, frames)) => {
                tracing::debug!(
                    frames,
                    "readers kept the WAL from restarting; retrying later"
                )
            }
            Err(e) => tracing::warn!(error = %e, "restarting the WAL"),
        }
    }
}

fn note_frames(_wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    FRAMES.with(|f| f.set(frames));
    Ok(())
}
