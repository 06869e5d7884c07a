//! The `orch` binary (being built).
fn main() {}
