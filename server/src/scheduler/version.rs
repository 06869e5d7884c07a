//! Version constraints: `version` (loose: `6.1`, `v1.2.3`, `6.1.0-13-amd64`, compared on
//! the numeric parts only) and `semver` (strict `MAJOR.MINOR.PATCH[-PRE][+BUILD]` with
//! SemVer 2.0 pre-release ordering). Both take comma-separated clauses that must all
//! hold: `>= 1.2, < 2`, `~> 1.4`, `!= 1.3.0`, or a bare version meaning `=`.

use std::cmp::Ordering;

/// One pre-release identifier: numeric ones sort before alphanumeric ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PreId {
    Num(u64),
    Alpha(String),
}

/// A parsed version: numeric core and (semver only) pre-release identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    core: Vec<u64>,
    pre: Vec<PreId>,
}

impl Version {
    /// Loose: an optional `v`, one or more dotted numbers; anything after `-` or `+`
    /// is ignored (kernel and distribution versions carry such suffixes).
    fn loose(v: &str) -> Option<Version> {
        let v = v.trim();
        let v = v.strip_prefix('v').unwrap_or(v);
        let core = v.split(['-', '+']).next()?;
        let core = core
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(Version {
            core,
            pre: Vec::new(),
        })
    }

    /// Strict SemVer 2.0: exactly three parts without leading zeros, optional
    /// pre-release and build metadata (the latter ignored for ordering).
    fn strict(v: &str) -> Option<Version> {
        let v = v.trim();
        let (rest, _build) = v.split_once('+').unwrap_or((v, ""));
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let core = core
            .split('.')
            .map(strict_number)
            .collect::<Option<Vec<u64>>>()?;
        if core.len() != 3 {
            return None;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => p
                .split('.')
                .map(|id| {
                    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        None
                    } else if id.chars().all(|c| c.is_ascii_digit()) {
                        strict_number(id).map(PreId::Num)
                    } else {
                        Some(PreId::Alpha(id.to_string()))
                    }
                })
                .collect::<Option<Vec<PreId>>>()?,
        };
        Some(Version { core, pre })
    }

    fn cmp_core(&self, other: &Version) -> Ordering {
        let n = self.core.len().max(other.core.len());
        (0..n)
            .map(|i| {
                let x = self.core.get(i).copied().unwrap_or(0);
                let y = other.core.get(i).copied().unwrap_or(0);
                x.cmp(&y)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }

    /// SemVer precedence: core first; a pre-release sorts before its release;
    /// pre-releases compare identifier by identifier, a shorter prefix first.
    fn precedence(&self, other: &Version) -> Ordering {
        self.cmp_core(other)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

/// A decimal number without a leading zero (SemVer forbids `01`).
fn strict_number(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// Which parser a constraint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Loose,
    Strict,
}

fn parse(v: &str, flavor: Flavor) -> Option<Version> {
    match flavor {
        Flavor::Loose => Version::loose(v),
        Flavor::Strict => Version::strict(v),
    }
}

/// True when `have` satisfies every clause of `spec`. An unparsable version or clause
/// never matches (a typo must not place work on every node).
pub fn satisfies(have: &str, spec: &str, flavor: Flavor) -> bool {
    let Some(have) = parse(have, flavor) else {
        return false;
    };
    if spec.trim().is_empty() {
        return false;
    }
    spec.split(',').all(|clause| {
        let clause = clause.trim();
        let (op, ver) = ["~>", ">=", "<=", "!=", "==", "=", ">", "<"]
            .iter()
            .find_map(|op| clause.strip_prefix(op).map(|rest| (*op, rest)))
            .unwrap_or(("=", clause));
        let Some(want) = parse(ver, flavor) else {
            return false;
        };
        let ord = have.precedence(&want);
        match op {
            "=" | "==" => ord.is_eq(),
            "!=" => ord.is_ne(),
            ">" => ord.is_gt(),
            ">=" => ord.is_ge(),
            "<" => ord.is_lt(),
            "<=" => ord.is_le(),
            "~>" => {
                // Pessimistic: at least `want`, below `want` with its second-to-last
                // part bumped (`~> 1.4` is `>= 1.4, < 2`; `~> 1.4.2` is `< 1.5`).
                if ord.is_lt() {
                    return false;
                }
                let mut upper = want.core.clone();
                if upper.len() > 1 {
                    upper.pop();
                }
                if let Some(last) = upper.last_mut() {
                    *last += 1;
                }
                let upper = Version {
                    core: upper,
                    pre: Vec::new(),
                };
                have.cmp_core(&upper).is_lt()
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_versions_take_ranges_and_short_forms() {
        assert!(satisfies("6.1", ">= 1.2, < 7", Flavor::Loose));
        assert!(satisfies("6.1.0-13-amd64", ">= 6.1", Flavor::Loose));
        assert!(satisfies("v1.2.3", "= 1.2.3", Flavor::Loose));
        assert!(satisfies("1.2", "1.2.0", Flavor::Loose));
        assert!(!satisfies("2.0", ">= 1.2, < 2", Flavor::Loose));
        assert!(satisfies("1.4.7", "~> 1.4", Flavor::Loose));
        assert!(!satisfies("1.5.0", "~> 1.4.2", Flavor::Loose));
        assert!(!satisfies("abc", ">= 1", Flavor::Loose));
        assert!(!satisfies("1.0", ">= x", Flavor::Loose));
    }

    #[test]
    fn semver_orders_pre_releases_before_their_release() {
        assert!(satisfies("1.0.0-alpha", "< 1.0.0", Flavor::Strict));
        assert!(satisfies("1.0.0-alpha", "< 1.0.0-alpha.1", Flavor::Strict));
        assert!(satisfies(
            "1.0.0-alpha.1",
            "< 1.0.0-alpha.beta",
            Flavor::Strict
        ));
        assert!(satisfies("1.0.0-beta.2", "< 1.0.0-beta.11", Flavor::Strict));
        assert!(satisfies("1.0.0-rc.1", "> 1.0.0-beta.11", Flavor::Strict));
        assert!(satisfies("1.0.0+build.5", "= 1.0.0", Flavor::Strict));
        assert!(satisfies("2.1.0", ">= 2.0.0, < 3.0.0", Flavor::Strict));
    }

    #[test]
    fn semver_rejects_loose_forms() {
        assert!(!satisfies("6.1", ">= 1.0.0", Flavor::Strict));
        assert!(!satisfies("v1.2.3", ">= 1.0.0", Flavor::Strict));
        assert!(!satisfies("01.2.3", ">= 1.0.0", Flavor::Strict));
        assert!(!satisfies("1.2.3", ">= 1.0", Flavor::Strict));
    }
}
