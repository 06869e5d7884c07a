//! cgroup v2 backend: one unified tree, task cgroups at `<root>/orch.slice/<name>`.
//!
//! cpu, memory and pids must be listed in each level's `cgroup.controllers` and get
//! enabled in the parents' `cgroup.subtree_control` (read back); a controller that is not
//! there is a loud error, never a skipped limit. OOM kills come from `memory.events`.
//! cpuset joins them for tasks with dedicated `cores`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::cpuset::{format_cpu_list, CorePool};
use super::fs;
use super::manager::check_name;
use super::{
    CgroupError, CgroupLimits, CgroupManager, CgroupPaths, CgroupStats, CgroupVersion, CpuStats,
    MemoryStats, MemoryUsage,
};

const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// What a task with `cores` needs on top.
const WITH_CPUSET: [&str; 4] = ["cpu", "memory", "pids", "cpuset"];
/// The parent of every task cgroup.
const SLICE: &str = "orch.slice";
/// The key of the single directory in `CgroupPaths::dirs`.
const UNIFIED: &str = "unified";

/// cgroup v2 manager rooted at the unified mount (usually `/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    cores: Arc<CorePool>,
    /// Held while the shared tasks' cpus are computed and written (and read back), so
    /// the last write has the pool's latest state: a task started beside a reservation
    /// could otherwise keep the reserved cpu, or fail its start reading back the list a
    /// reservation had just written over its own. Taken before the pool's lock.
    shared_writes: Arc<Mutex<()>>,
}

impl V2Manager {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let cores = Arc::new(CorePool::new(root.join("cpuset.cpus.effective")));
        V2Manager {
            root,
            cores,
            shared_writes: Arc::default(),
        }
    }

    fn leaf<'a>(&self, cg: &'a CgroupPaths) -> Result<&'a Path, CgroupError> {
        if cg.version != CgroupVersion::V2 {
            return Err(CgroupError::WrongVersion {
                name: cg.name.clone(),
                found: cg.version,
                expected: CgroupVersion::V2,
            });
        }
        cg.dir(UNIFIED)
            .ok_or_else(|| CgroupError::ControllerMissing {
                controller: UNIFIED.to_string(),
                path: self.root.clone(),
            })
    }
}

impl V2Manager {
    /// Gives every shared task the cpus nobody reserved now. Best effort: a task that
    /// keeps a reserved cpu a little longer only shares it, it is never unlimited.
    fn refresh_shared(&self) {
        let _writing = self
            .shared_writes
            .lock()
            .expect("shared cpus lock poisoned");
        match self.cores.shared() {
            Ok((names, cpus)) => {
                for n in names {
                    let file = self.root.join(SLICE).join(&n).join("cpuset.cpus");
                    if let Err(e) = fs::write(&file, &cpus) {
                        tracing::warn!(cgroup = %n, error = %e, "updating a task's shared cpus");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the host's cpus"),
        }
    }
}

/// Controllers named in a space-separated list file (`+` prefixes tolerated).
fn listed(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(fs::read(path)?
        .split_whitespace()
        .map(|c| c.trim_start_matches('+').to_string())
        .collect())
}

/// Errors unless every controller is available in `dir`.
fn require_available(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.controllers");
    let have = listed(&path).map_err(|_| CgroupError::ControllerMissing {
        controller: controllers.join(","),
        path: path.clone(),
    })?;
    for &c in controllers {
        if !have.iter().any(|h| h == c) {
            return Err(CgroupError::ControllerMissing {
                controller: c.to_string(),
                path,
            });
        }
    }
    Ok(())
}

/// Makes `dir`'s children get the controllers, then checks they are on.
fn enable_for_children(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    require_available(dir, controllers)?;
    let path = dir.join("cgroup.subtree_control");
    let on = listed(&path)?;
    let missing: Vec<&str> = controllers
        .iter()
        .copied()
        .filter(|c| !on.iter().any(|o| o == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let data = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(&path, &data)?;
    let now = listed(&path)?;
    for c in missing {
        if !now.iter().any(|o| o == c) {
            return Err(CgroupError::LimitNotApplied {
                path,
                wanted: data,
                got: now.join(" "),
            });
        }
    }
    Ok(())
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<CgroupPaths, CgroupError> {
        check_name(name)?;
        // Tasks with `cores` need cpuset; the others use it when the host offers it, so
        // they can be kept off the reserved cpus.
        let host_has_cpuset = listed(&self.root.join("cgroup.controllers"))
            .map(|l| l.iter().any(|c| c == "cpuset"))
            .unwrap_or(false);
        let controllers: &[&str] = if limits.cores.is_some() || host_has_cpuset {
            &WITH_CPUSET
        } else {
            &CONTROLLERS
        };
        enable_for_children(&self.root, controllers)?;
        let slice = self.root.join(SLICE);
        fs::mkdir(&slice)?;
        enable_for_children(&slice, controllers)?;
        let leaf = slice.join(name);
        fs::mkdir(&leaf)?;
        let cg = CgroupPaths {
            version: CgroupVersion::V2,
            name: name.to_string(),
            dirs: BTreeMap::from([(UNIFIED.to_string(), leaf.clone())]),
            joined: BTreeMap::new(),
        };
        let applied = require_available(&leaf, controllers).and_then(|()| self.apply(&cg, limits));
        if let Err(e) = applied {
            let _ = fs::remove_dirs(&[leaf]);
            if self.cores.release(name) {
                self.refresh_shared();
            }
            return Err(e);
        }
        Ok(cg)
    }

    fn apply(&self, cg: &CgroupPaths, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let leaf = self.leaf(cg)?;
        let hard = limits.memory_hard_bytes().to_string();
        fs::write_verified(&leaf.join("memory.max"), &hard, &hard)?;
        if let Some(soft) = limits.memory_soft_bytes() {
            let soft = soft.to_string();
            fs::write_verified(&leaf.join("memory.low"), &soft, &soft)?;
        }
        // Without swap accounting capped, a task could page out instead of hitting its
        // limit; hosts without swap have no such file.
        let swap = leaf.join("memory.swap.max");
        if swap.exists() {
            fs::write_verified(&swap, "0", "0")?;
        }
        let weight = limits.cpu_weight().to_string();
        fs::write_verified(&leaf.join("cpu.weight"), &weight, &weight)?;
        if let Some(q) = limits.cpu_quota {
            let max = format!("{} {}", q.quota_us, q.period_us);
            fs::write_verified(&leaf.join("cpu.max"), &max, &max)?;
        }
        let pids = limits.pids_max.to_string();
        fs::write_verified(&leaf.join("pids.max"), &pids, &pids)?;
        // An empty cpuset.mems inherits the parent's memory nodes on v2.
        let cpuset = leaf.join("cpuset.cpus");
        if let Some(n) = limits.cores {
            let cpus = format_cpu_list(&self.cores.reserve(&cg.name, n)?);
            fs::write_verified(&cpuset, &cpus, &cpus)?;
            self.refresh_shared();
        } else if cpuset.exists() {
            let _writing = self
                .shared_writes
                .lock()
                .expect("shared cpus lock poisoned");
            let cpus = self.cores.join_shared(&cg.name)?;
            fs::write_verified(&cpuset, &cpus, &cpus)?;
        }
        Ok(())
    }

    fn pids(&self, cg: &CgroupPaths) -> Result<Vec<i32>, CgroupError> {
        fs::procs(self.leaf(cg)?)
    }

    fn oom_kills(&self, cg: &CgroupPaths) -> Result<u64, CgroupError> {
        fs::read_keyed(&self.leaf(cg)?.join("memory.events"), "oom_kill")
    }

    fn memory_usage(&self, cg: &CgroupPaths) -> Result<MemoryUsage, CgroupError> {
        let leaf = self.leaf(cg)?;
        let peak = leaf.join("memory.peak");
        Ok(MemoryUsage {
            current_bytes: fs::read_u64(&leaf.join("memory.current"))?,
            peak_bytes: if peak.exists() {
                Some(fs::read_u64(&peak)?)
            } else {
                None
            },
        })
    }

    fn cpu_usage_ns(&self, cg: &CgroupPaths) -> Result<u64, CgroupError> {
        Ok(fs::read_keyed(&self.leaf(cg)?.join("cpu.stat"), "usage_usec")? * 1000)
    }

    fn stats(&self, cg: &CgroupPaths) -> Result<CgroupStats, CgroupError> {
        let leaf = self.leaf(cg)?;
        let mem = self.memory_usage(cg)?;
        let stat = fs::read_all_keyed(&leaf.join("cpu.stat"))?;
        let us = |k: &str| stat.get(k).map(|v| v * 1000);
        Ok(CgroupStats {
            memory: MemoryStats {
                current_bytes: mem.current_bytes,
                peak_bytes: mem.peak_bytes,
            },
            cpu: CpuStats {
                usage_ns: us("usage_usec").unwrap_or(0),
                user_ns: us("user_usec"),
                system_ns: us("system_usec"),
                periods: stat.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
                throttled_ns: us("throttled_usec").unwrap_or(0),
            },
            pids: fs::read_u64(&leaf.join("pids.current"))?,
        })
    }

    fn cpuset(&self, cg: &CgroupPaths) -> Option<String> {
        self.cores.held(&cg.name).map(|c| format_cpu_list(&c))
    }

    fn kill_all(&self, cg: &CgroupPaths) -> Result<(), CgroupError> {
        let leaf = self.leaf(cg)?.to_path_buf();
        let kill = leaf.join("cgroup.kill");
        if kill.exists() && !fs::procs(&leaf)?.is_empty() {
            // Linux >= 5.14 kills the whole cgroup atomically.
            fs::write(&kill, "1")?;
        }
        let freeze = leaf.join("cgroup.freeze");
        fs::kill_until_empty(
            &leaf,
            || fs::procs(&leaf),
            |on| fs::write(&freeze, if on { "1" } else { "0" }),
        )
    }

    fn adopt(&self, cg: &CgroupPaths, cores: Option<u32>) {
        let Some(dir) = cg.unique_dirs().into_iter().next() else {
            return;
        };
        if !dir.join("cpuset.cpus").exists() {
            return;
        }
        super::cpuset::adopt_from(&self.cores, &cg.name, &dir, cores);
    }

    fn remove(&self, cg: &CgroupPaths) -> Result<(), CgroupError> {
        fs::remove_dirs(&[self.leaf(cg)?.to_path_buf()])?;
        if self.cores.release(&cg.name) {
            self.refresh_shared();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir laid out the way the kernel would: root, orch.slice and the task
    /// cgroup with their interface files.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    const LEAF: &str = "alloc1-web";

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let f = Fixture { dir };
            f.file(
                "cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc\n",
            );
            f.file("cgroup.subtree_control", "");
            f.file("cpuset.cpus.effective", "0-3\n");
            f.file("orch.slice/cgroup.controllers", "cpuset cpu memory pids\n");
            f.file("orch.slice/cgroup.subtree_control", "");
            f.task(LEAF);
            f
        }

        /// The interface files of a task cgroup `name`, as the kernel makes them.
        fn task(&self, name: &str) {
            for (file, text) in [
                ("cgroup.controllers", "cpuset cpu memory pids\n"),
                ("cgroup.procs", ""),
                ("cpu.max", "max 100000\n"),
                ("cpuset.cpus", "\n"),
                ("pids.current", "3\n"),
                ("memory.max", "max\n"),
                ("memory.low", "0\n"),
                ("memory.swap.max", "max\n"),
                ("memory.current", "4096\n"),
                ("memory.peak", "8192\n"),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
                ),
                ("cpu.weight", "100\n"),
                (
                    "cpu.stat",
                    "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n\
                     nr_periods 40\nnr_throttled 7\nthrottled_usec 2500\n",
                ),
                ("pids.max", "max\n"),
            ] {
                self.file(&format!("orch.slice/{name}/{file}"), text);
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn file(&self, rel: &str, text: &str) {
            let p = self.path(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            std::fs::read_to_string(self.path(rel)).unwrap()
        }

        fn manager(&self) -> V2Manager {
            V2Manager::new(self.dir.path())
        }
    }

    fn limits() -> CgroupLimits {
        CgroupLimits::for_task(
            &orch_common::model::Resources {
                cpu: 500,
                memory: 64,
                memory_max: Some(96),
                ..Default::default()
            },
            &super::super::NodeLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn create_enables_controllers_and_writes_every_limit() {
        let f = Fixture::new();
        let cg = f.manager().create(LEAF, &limits()).unwrap();
        assert_eq!(
            cg.dir("unified").unwrap(),
            f.path(&format!("orch.slice/{LEAF}"))
        );
        assert_eq!(
            f.read("cgroup.subtree_control"),
            "+cpu +memory +pids +cpuset"
        );
        assert_eq!(
            f.read("orch.slice/cgroup.subtree_control"),
            "+cpu +memory +pids +cpuset"
        );
        let leaf = |n: &str| f.read(&format!("orch.slice/{LEAF}/{n}"));
        assert_eq!(leaf("memory.max"), (96u64 << 20).to_string());
        assert_eq!(leaf("memory.low"), (64u64 << 20).to_string());
        assert_eq!(leaf("memory.swap.max"), "0");
        assert_eq!(leaf("cpu.weight"), limits().cpu_weight().to_string());
        assert_eq!(leaf("pids.max"), "1024");
        // No reservations yet: a task without cores may use every cpu.
        assert_eq!(leaf("cpuset.cpus"), "0-3");
    }

    #[test]
    fn a_host_without_cpuset_runs_tasks_without_it() {
        let f = Fixture::new();
        f.file("cgroup.controllers", "cpu io memory pids\n");
        // Without the controller the kernel shows no cpuset files in the task cgroup.
        std::fs::remove_file(f.path(&format!("orch.slice/{LEAF}/cpuset.cpus"))).unwrap();
        f.manager().create(LEAF, &limits()).unwrap();
        assert_eq!(f.read("cgroup.subtree_control"), "+cpu +memory +pids");
        assert!(!f.path(&format!("orch.slice/{LEAF}/cpuset.cpus")).exists());
    }

    #[test]
    fn tasks_without_cores_move_off_reserved_cpus_and_back() {
        let f = Fixture::new();
        let pinned = "alloc2-db";
        for name in ["cgroup.controllers", "cpuset.cpus", "memory.max"] {
            let text = f.read(&format!("orch.slice/{LEAF}/{name}"));
            f.file(&format!("orch.slice/{pinned}/{name}"), &text);
        }
        for name in ["memory.low", "memory.swap.max", "cpu.weight", "pids.max"] {
            f.file(&format!("orch.slice/{pinned}/{name}"), "0\n");
        }
        let m = f.manager();
        m.create(LEAF, &limits()).unwrap();
        let mut l = limits();
        l.cores = Some(1);
        let db = m.create(pinned, &l).unwrap();
        assert_eq!(f.read(&format!("orch.slice/{pinned}/cpuset.cpus")), "0");
        assert_eq!(f.read(&format!("orch.slice/{LEAF}/cpuset.cpus")), "1-3");
        std::fs::remove_dir_all(f.path(&format!("orch.slice/{pinned}"))).unwrap();
        m.remove(&db).unwrap();
        assert_eq!(f.read(&format!("orch.slice/{LEAF}/cpuset.cpus")), "0-3");
    }

    #[test]
    fn shared_tasks_starting_beside_a_reservation_end_off_its_cpu() {
        // Each shared task's cpus are computed and then written; a reservation that
        // lands between the two must not leave the older, wider list in the file.
        for round in 0..40 {
            let f = Fixture::new();
            // Enabled already (a fixture file, unlike the kernel's, can be read half
            // written by another thread).
            for dir in ["", "orch.slice/"] {
                f.file(
                    &format!("{dir}cgroup.subtree_control"),
                    "cpuset cpu memory pids\n",
                );
            }
            let shared: Vec<String> = (0..6).map(|i| format!("alloc{i}-web")).collect();
            for n in &shared {
                f.task(n);
            }
            f.task("pinned-db");
            let m = f.manager();
            std::thread::scope(|s| {
                for n in &shared {
                    let m = &m;
                    s.spawn(move || m.create(n, &limits()).unwrap());
                }
                s.spawn(|| {
                    let mut l = limits();
                    l.cores = Some(1);
                    m.create("pinned-db", &l).unwrap();
                });
            });
            assert_eq!(f.read("orch.slice/pinned-db/cpuset.cpus"), "0");
            for n in &shared {
                assert_eq!(
                    f.read(&format!("orch.slice/{n}/cpuset.cpus")),
                    "1-3",
                    "round {round}: {n} kept the reserved cpu"
                );
            }
        }
    }

    #[test]
    fn controllers_already_enabled_are_not_written_again() {
        let f = Fixture::new();
        f.file("cgroup.subtree_control", "cpu memory pids cpuset io\n");
        f.manager().create(LEAF, &limits()).unwrap();
        assert_eq!(
            f.read("cgroup.subtree_control"),
            "cpu memory pids cpuset io\n"
        );
    }

    #[test]
    fn a_controller_missing_at_the_root_is_a_loud_error() {
        let f = Fixture::new();
        f.file("cgroup.controllers", "cpuset cpu io pids\n");
        let err = f.manager().create(LEAF, &limits()).unwrap_err();
        match &err {
            CgroupError::ControllerMissing { controller, path } => {
                assert_eq!(controller, "memory");
                assert_eq!(path, &f.path("cgroup.controllers"));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn a_controller_not_delegated_to_the_task_cgroup_is_an_error() {
        let f = Fixture::new();
        f.file(
            &format!("orch.slice/{LEAF}/cgroup.controllers"),
            "cpu pids\n",
        );
        let err = f.manager().create(LEAF, &limits()).unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { controller, .. } if controller == "memory"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_limit_file_is_an_error_and_not_created() {
        let f = Fixture::new();
        std::fs::remove_file(f.path(&format!("orch.slice/{LEAF}/memory.max"))).unwrap();
        let err = f.manager().create(LEAF, &limits()).unwrap_err();
        assert!(matches!(err, CgroupError::Write { .. }), "{err}");
        assert!(!f.path(&format!("orch.slice/{LEAF}/memory.max")).exists());
    }

    #[test]
    fn subtree_control_that_does_not_take_is_an_error() {
        let f = Fixture::new();
        // A directory cannot be opened for writing: the kernel refused the controllers.
        std::fs::remove_file(f.path("orch.slice/cgroup.subtree_control")).unwrap();
        std::fs::create_dir(f.path("orch.slice/cgroup.subtree_control")).unwrap();
        let err = f.manager().create(LEAF, &limits()).unwrap_err();
        assert!(
            matches!(err, CgroupError::Read { .. } | CgroupError::Write { .. }),
            "{err}"
        );
    }

    #[test]
    fn counters_come_from_memory_events_memory_peak_and_cpu_stat() {
        let f = Fixture::new();
        let m = f.manager();
        let cg = m.create(LEAF, &limits()).unwrap();
        assert_eq!(m.oom_kills(&cg).unwrap(), 1);
        assert_eq!(
            m.memory_usage(&cg).unwrap(),
            MemoryUsage {
                current_bytes: 4096,
                peak_bytes: Some(8192)
            }
        );
        assert_eq!(m.cpu_usage_ns(&cg).unwrap(), 1_500_000);
        f.file(&format!("orch.slice/{LEAF}/cgroup.procs"), "");
        assert!(m.pids(&cg).unwrap().is_empty());
    }

    #[test]
    fn the_real_empty_unified_tree_of_a_hybrid_host_is_a_loud_error() {
        // On a hybrid host the controllers are bound to v1, so the real cgroup2 mount
        // lists none: creating a task cgroup there must fail, not run unlimited.
        let unified = Path::new("/sys/fs/cgroup/unified");
        let controllers = std::fs::read_to_string(unified.join("cgroup.controllers"));
        match controllers {
            Ok(c) if c.split_whitespace().all(|x| x != "memory") => {}
            _ => {
                eprintln!(
                    "skipped: needs a hybrid host with an empty cgroup2 tree at {}",
                    unified.display()
                );
                return;
            }
        }
        let err = V2Manager::new(unified)
            .create("never-made", &limits())
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::ControllerMissing { .. }),
            "{err}"
        );
        assert!(!unified.join(SLICE).exists());
    }

    #[test]
    fn a_hard_cpu_limit_writes_cpu_max_and_reads_it_back() {
        let f = Fixture::new();
        let mut l = limits();
        l.cpu_quota = Some(super::super::CpuQuota {
            quota_us: 25_000,
            period_us: 100_000,
        });
        f.manager().create(LEAF, &l).unwrap();
        assert_eq!(
            f.read(&format!("orch.slice/{LEAF}/cpu.max")),
            "25000 100000"
        );
        // Without cpu_hard_limit the file is left at "max".
        let g = Fixture::new();
        g.manager().create(LEAF, &limits()).unwrap();
        assert_eq!(
            g.read(&format!("orch.slice/{LEAF}/cpu.max")),
            "max 100000\n"
        );
    }

    #[test]
    fn cores_enable_cpuset_and_two_tasks_get_different_cpus() {
        let f = Fixture::new();
        let other = "alloc2-web";
        for name in ["cgroup.controllers", "cpuset.cpus", "cpu.max", "memory.max"] {
            let text = f.read(&format!("orch.slice/{LEAF}/{name}"));
            f.file(&format!("orch.slice/{other}/{name}"), &text);
        }
        for name in ["memory.low", "memory.swap.max", "cpu.weight", "pids.max"] {
            f.file(&format!("orch.slice/{other}/{name}"), "0\n");
        }
        let m = f.manager();
        let mut l = limits();
        l.cores = Some(2);
        let a = m.create(LEAF, &l).unwrap();
        let b = m.create(other, &l).unwrap();
        assert_eq!(
            f.read("cgroup.subtree_control"),
            "+cpu +memory +pids +cpuset"
        );
        assert_eq!(f.read(&format!("orch.slice/{LEAF}/cpuset.cpus")), "0-1");
        assert_eq!(f.read(&format!("orch.slice/{other}/cpuset.cpus")), "2-3");
        assert_eq!(m.cpuset(&a).as_deref(), Some("0-1"));
        // Nothing left for a third task: a loud error naming the host's cpus.
        let third = "alloc3-web";
        for name in [
            "cgroup.controllers",
            "cpuset.cpus",
            "memory.max",
            "memory.low",
            "memory.swap.max",
            "cpu.weight",
            "pids.max",
        ] {
            f.file(
                &format!("orch.slice/{third}/{name}"),
                "cpuset cpu memory pids\n",
            );
        }
        let err = m.create(third, &l).unwrap_err();
        assert!(matches!(err, CgroupError::NoFreeCores { .. }), "{err}");
        // Removing a task frees its cores.
        std::fs::remove_dir_all(f.path(&format!("orch.slice/{other}"))).unwrap();
        m.remove(&b).unwrap();
        assert_eq!(m.cpuset(&b), None);
    }

    #[test]
    fn cores_without_the_cpuset_controller_is_a_loud_error() {
        let f = Fixture::new();
        f.file("orch.slice/cgroup.controllers", "cpu memory pids\n");
        let mut l = limits();
        l.cores = Some(1);
        let err = f.manager().create(LEAF, &l).unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { controller, .. } if controller == "cpuset"),
            "{err}"
        );
    }

    #[test]
    fn stats_read_memory_cpu_throttling_and_pids() {
        let f = Fixture::new();
        let m = f.manager();
        let cg = m.create(LEAF, &limits()).unwrap();
        let s = m.stats(&cg).unwrap();
        assert_eq!(s.memory.current_bytes, 4096);
        assert_eq!(s.memory.peak_bytes, Some(8192));
        assert_eq!(s.cpu.usage_ns, 1_500_000);
        assert_eq!(s.cpu.user_ns, Some(1_000_000));
        assert_eq!(s.cpu.system_ns, Some(500_000));
        assert_eq!(
            (s.cpu.periods, s.cpu.throttled_periods, s.cpu.throttled_ns),
            (40, 7, 2_500_000)
        );
        assert_eq!(s.pids, 3);
        // Kernels before 5.19 have no memory.peak.
        std::fs::remove_file(f.path(&format!("orch.slice/{LEAF}/memory.peak"))).unwrap();
        assert_eq!(m.stats(&cg).unwrap().memory.peak_bytes, None);
    }

    #[test]
    fn a_v1_handle_is_refused_by_the_v2_manager() {
        let f = Fixture::new();
        let cg = CgroupPaths {
            version: CgroupVersion::V1,
            name: LEAF.into(),
            dirs: BTreeMap::new(),
            joined: BTreeMap::new(),
        };
        assert!(matches!(
            f.manager().oom_kills(&cg),
            Err(CgroupError::WrongVersion { .. })
        ));
    }
}
