//! Scheduler scenario tests (one scenario per test) and the no-over-commit property.
