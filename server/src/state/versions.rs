//! Which of a job's stored versions a registration keeps, so that a job registered
//! over and over does not grow its history without bound. A pure decision over what
//! `apply` reads in the registration's own transaction: every replay of the log, and
//! every server of a replicated one, prunes the same versions at the same index.
//!
//! ```text
//!  a registration stores version N; more than JOB_TRACKED_VERSIONS are stored:
//!    kept: the newest JOB_TRACKED_VERSIONS (N among them)
//!          the newest stable version                  (Nomad keeps it too)
//!          the newest stable version older than N     (what an auto-revert registers
//!            whose spec differs from N's                should N's rollout fail)
//!          every version a non-terminal allocation    (stored allocations carry no
//!            runs                                       job: they read it here)
//!          every version an active deployment rolls out
//!    deleted: the rest
//! ```
//!
//! Nomad keeps its last 6 versions and the newest stable one. Keeping every stable
//! version would keep the history growing with every successful deployment; an
//! auto-revert only ever goes back to the newest stable version that differs from
//! the failing one, which is kept.

use std::collections::BTreeSet;

/// How many of a job's newest versions are always kept (Nomad's `JobTrackedVersions`).
/// A constant, not a setting: pruning is part of applying a registration, and two
/// servers of one cluster configured differently would then hold different states.
pub const JOB_TRACKED_VERSIONS: usize = 6;

/// A stored version, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredVersion {
    pub version: u64,
    pub stable: bool,
}

/// The versions to delete, newest first, of `newest_first` (every stored version of
/// one job, the one just registered first). `in_use`: versions that non-terminal
/// allocations run or active deployments roll out; `revert_target`: the newest
/// stable version older than the registered one whose spec differs from it.
pub fn versions_to_prune(
    newest_first: &[StoredVersion],
    in_use: &BTreeSet<u64>,
    revert_target: Option<u64>,
) -> Vec<u64> {
    let newest_stable = newest_first.iter().find(|v| v.stable).map(|v| v.version);
    newest_first
        .iter()
        .skip(JOB_TRACKED_VERSIONS)
        .map(|v| v.version)
        .filter(|v| Some(*v) != newest_stable && Some(*v) != revert_target && !in_use.contains(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions `newest..=0`, newest first, the listed ones stable.
    fn stored(newest: u64, stable: &[u64]) -> Vec<StoredVersion> {
        (0..=newest)
            .rev()
            .map(|version| StoredVersion {
                version,
                stable: stable.contains(&version),
            })
            .collect()
    }

    #[test]
    fn up_to_the_tracked_count_nothing_is_pruned() {
        let six = stored(5, &[]);
        assert!(versions_to_prune(&six, &BTreeSet::new(), None).is_empty());
    }

    #[test]
    fn beyond_the_tracked_count_the_oldest_go() {
        let ten = stored(9, &[]);
        assert_eq!(
            versions_to_prune(&ten, &BTreeSet::new(), None),
            [3, 2, 1, 0]
        );
    }

    #[test]
    fn the_newest_stable_version_and_the_revert_target_stay() {
        let ten = stored(9, &[0, 1, 2]);
        assert_eq!(
            versions_to_prune(&ten, &BTreeSet::new(), Some(1)),
            [3, 0],
            "2 is the newest stable, 1 the revert target (2's spec is 9's)"
        );
    }

    #[test]
    fn versions_in_use_stay_however_old() {
        let ten = stored(9, &[]);
        let in_use = BTreeSet::from([0, 2, 8]);
        assert_eq!(versions_to_prune(&ten, &in_use, None), [3, 1]);
    }
}
