//! Worker tests: the whole loop on a real temp-dir store.
