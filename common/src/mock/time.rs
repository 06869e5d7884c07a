//! The fake clock of the fixtures: one fixed "now" every test can reason about.

/// 2024-01-01T00:00:00Z in milliseconds since the epoch: the time the fixtures are
/// created at, and the `now` tests pass to the code under test.
pub const NOW: u64 = 1_704_067_200_000;
