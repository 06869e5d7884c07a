//! Dedicated cores (`resources.cores`): the kernel's cpu list format ("0-3,6") and the
//! `CorePool` that hands each task its own cpus, never one cpu to two tasks, and keeps
//! the other tasks ("shared" ones) on the cpus nobody reserved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{fs, CgroupError};

/// Parses a cpu list as the kernel writes it: "0-3,6", "" (none), with a newline.
pub fn parse_cpu_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// Formats cpus the way the kernel reads them back: ranges joined by commas.
pub fn format_cpu_list(cpus: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// Which cpus are taken by which task cgroup. The host's cpus are read from `source`
/// (the root cpuset) when a task first asks, so fixture trees work the same way.
/// In memory only: a restarted client rebuilds it from the cgroups of the tasks it
/// re-attaches to (`CgroupManager::adopt`).
#[derive(Debug)]
pub struct CorePool {
    source: PathBuf,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Cgroup name -> its dedicated cpus.
    taken: BTreeMap<String, BTreeSet<u32>>,
    /// Cgroups without `cores`, kept on the cpus nobody reserved.
    shared: BTreeSet<String>,
}

impl PoolState {
    /// The cpus of shared tasks: all but the reserved ones, or all of them when
    /// reservations took every cpu (a cpuset cannot be empty).
    fn shared_cpus(&self, all: &BTreeSet<u32>) -> BTreeSet<u32> {
        let used: BTreeSet<u32> = self.taken.values().flatten().copied().collect();
        let rest: BTreeSet<u32> = all.difference(&used).copied().collect();
        if rest.is_empty() {
            all.clone()
        } else {
            rest
        }
    }
}

impl CorePool {
    /// `source` is the file listing the host's usable cpus (v1
    /// `<root>/cpuset/cpuset.cpus`, v2 `<root>/cpuset.cpus.effective`).
    pub fn new(source: impl Into<PathBuf>) -> Self {
        CorePool {
            source: source.into(),
            state: Mutex::new(PoolState::default()),
        }
    }

    fn host_cpus(&self) -> Result<BTreeSet<u32>, CgroupError> {
        let text = fs::read(&self.source)?;
        parse_cpu_list(&text).ok_or_else(|| CgroupError::Parse {
            path: self.source.clone(),
            content: text.clone(),
        })
    }

    /// Records cgroup `name` of an earlier client run again: holding `cpus` to
    /// itself, or (`None`) as a shared task.
    pub fn adopt(&self, name: &str, cpus: Option<BTreeSet<u32>>) {
        let mut st = self.state.lock().expect("core pool lock poisoned");
        match cpus {
            Some(c) => {
                st.taken.insert(name.to_string(), c);
            }
            None => {
                st.shared.insert(name.to_string());
            }
        }
    }

    /// Registers a task without `cores`; returns the cpus it may use now.
    pub fn join_shared(&self, name: &str) -> Result<String, CgroupError> {
        let all = self.host_cpus()?;
        let mut st = self.state.lock().expect("core pool lock poisoned");
        st.shared.insert(name.to_string());
        Ok(format_cpu_list(&st.shared_cpus(&all)))
    }

    /// The tasks without `cores` and the cpus they should have now.
    pub fn shared(&self) -> Result<(Vec<String>, String), CgroupError> {
        let all = self.host_cpus()?;
        let st = self.state.lock().expect("core pool lock poisoned");
        Ok((
            st.shared.iter().cloned().collect(),
            format_cpu_list(&st.shared_cpus(&all)),
        ))
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Gives cgroup `name` `n` cpus nobody else has (the same ones again when it already
    /// holds `n`). Lowest-numbered free cpus first, so placements are predictable.
    pub fn reserve(&self, name: &str, n: u32) -> Result<BTreeSet<u32>, CgroupError> {
        let all = self.host_cpus()?;
        // The lock is never held across I/O or an await.
        let mut st = self.state.lock().expect("core pool lock poisoned");
        let taken = &mut st.taken;
        if let Some(have) = taken.get(name) {
            if have.len() == n as usize {
                return Ok(have.clone());
            }
            taken.remove(name);
        }
        let used: BTreeSet<u32> = taken.values().flatten().copied().collect();
        let free: Vec<u32> = all.difference(&used).copied().collect();
        if free.len() < n as usize {
            return Err(CgroupError::NoFreeCores {
                wanted: n,
                free: free.len(),
                host: format_cpu_list(&all),
                path: self.source.clone(),
            });
        }
        let mine: BTreeSet<u32> = free.into_iter().take(n as usize).collect();
        taken.insert(name.to_string(), mine.clone());
        Ok(mine)
    }

    /// Forgets `name` (its cores, or its place among the shared tasks). True when it
    /// held cores, i.e. when the shared tasks may now have more cpus.
    pub fn release(&self, name: &str) -> bool {
        let mut st = self.state.lock().expect("core pool lock poisoned");
        st.shared.remove(name);
        st.taken.remove(name).is_some()
    }

    /// The cpus `name` holds, if any.
    pub fn held(&self, name: &str) -> Option<BTreeSet<u32>> {
        self.state
            .lock()
            .expect("core pool lock poisoned")
            .taken
            .get(name)
            .cloned()
    }
}

/// Adopts a re-attached task's cgroup into `pool`: with `cores`, the cpus its
/// `cpuset.cpus` in `dir` holds (nothing when they cannot be read), else as a shared
/// task.
pub fn adopt_from(pool: &CorePool, name: &str, dir: &Path, cores: Option<u32>) {
    let cpus = match cores {
        Some(_) => match fs::read(&dir.join("cpuset.cpus"))
            .ok()
            .and_then(|t| parse_cpu_list(&t))
        {
            Some(c) => Some(c),
            None => return,
        },
        None => None,
    };
    pool.adopt(name, cpus);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_format_like_the_kernel() {
        let s = parse_cpu_list("0-3,6,8-9\n").unwrap();
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(format_cpu_list(&s), "0-3,6,8-9");
        assert!(parse_cpu_list("\n").unwrap().is_empty());
        assert_eq!(format_cpu_list(&BTreeSet::from([5])), "5");
        assert!(parse_cpu_list("3-1").is_none());
        assert!(parse_cpu_list("a").is_none());
    }

    #[test]
    fn two_tasks_never_share_a_core_and_released_cores_come_back() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "0-3\n").unwrap();
        let pool = CorePool::new(f.path());
        let a = pool.reserve("a", 2).unwrap();
        let b = pool.reserve("b", 2).unwrap();
        assert!(a.is_disjoint(&b), "{a:?} {b:?}");
        assert_eq!(
            pool.reserve("a", 2).unwrap(),
            a,
            "reserving again is idempotent"
        );
        let err = pool.reserve("c", 1).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::NoFreeCores {
                    wanted: 1,
                    free: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("0-3"), "{err}");
        assert!(pool.release("a"));
        assert_eq!(pool.reserve("c", 1).unwrap(), BTreeSet::from([0]));
        assert_eq!(pool.held("b"), Some(b));
    }

    #[test]
    fn shared_tasks_get_the_cpus_nobody_reserved_but_never_none() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "0-3\n").unwrap();
        let pool = CorePool::new(f.path());
        assert_eq!(pool.join_shared("web").unwrap(), "0-3");
        pool.reserve("db", 1).unwrap();
        assert_eq!(
            pool.shared().unwrap(),
            (vec!["web".to_string()], "1-3".to_string())
        );
        pool.reserve("cache", 3).unwrap();
        // Every cpu is reserved: shared tasks keep all rather than an empty cpuset.
        assert_eq!(pool.shared().unwrap().1, "0-3");
        assert!(!pool.release("web"));
        assert!(pool.shared().unwrap().0.is_empty());
    }
}
