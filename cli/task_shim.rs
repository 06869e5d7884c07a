//! `orch-task-shim`: the launcher of the per-task supervisors as a binary of its own
//! (see `orch_common::shim`). Installed next to `orch`; the client falls back to
//! `orch task-shim` when it is missing.

fn main() {
    std::process::exit(orch_common::shim::launch_loop());
}
