//! `orch-task-shim`: the per-task supervisor as a binary of its own (see
//! `orch_common::shim`). Installed next to `orch`; the client falls back to
//! `orch task-shim` when it is missing.

fn main() {
    std::process::exit(orch_common::shim::run());
}
