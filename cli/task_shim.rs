//! `orch-task-shim`: the launcher of the per-task supervisors as a binary of its own
//! (see `orch_client::shim`). Installed next to `orch`; the client falls back to
//! `orch task-shim` when it is missing.

fn main() {
    std::process::exit(orch_client::shim::main());
}
