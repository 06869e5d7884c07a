//! The task shim: the small supervisor that outlives the client, in one place.
//!
//! A task's exit status goes to its parent. If the client were the parent, a task that
//! ends while no client runs would be reaped by init and its status lost. So every
//! task gets a small shim of its own that waits for it and writes its exit to
//! `<alloc>/.ctl/<task>/exit.json` (a directory of the client's, which the task
//! cannot write). The shims are forked by one launcher process per client
//! (`orch-task-shim` next to the client's binary, else the client itself as
//! `orch task-shim`), started with `posix_spawn` in a new session; each shim starts
//! its own session too, so a signal to the client's process group or a SIGKILL of the
//! client leaves it alone. The client talks to a shim over a report socket it passes
//! along: the command's pid, and a pidfd of the shim to watch it by.
//!
//! Output does not pass through the shim: stdout and stderr are FIFOs in the task dir
//! that the task holds open read-write (`logrotate::capture_fifo`), handed to the shim
//! with the request, so neither the shim nor the client's absence touch them.
//!
//! Layout: `protocol` (what both sides agree on: the request, the exit file, fd
//! passing), `launcher` (the shim's side: the launcher loop and the forked shims; no
//! threads, no runtime), `supervisor` (the client's side: starting shims, reading
//! reports and exit files, re-attaching after a restart).

pub mod launcher;
pub mod protocol;
pub mod supervisor;

pub use protocol::{reserve_exit_file, ExitRecord, ShimSpec, EXIT_FILE};
pub use supervisor::{ShimCommand, ShimLauncher, SupervisorState, SHIM_BINARY};

/// `orch-task-shim` and `orch task-shim`: runs the launcher until the client's end
/// closes; returns the process's exit code. Call it before any runtime or thread
/// starts: the launcher forks.
pub fn main() -> i32 {
    launcher::launch_loop()
}
