//! Plan applier tests on a real temp-dir store.
