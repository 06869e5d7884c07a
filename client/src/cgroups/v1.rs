//! cgroup v1 backend: one directory per controller, `<root>/<controller>/orch/<name>`.
//!
//! memory, cpu and pids are required (a missing one is an error, never a skipped
//! limit); cpuacct (cpu usage) and freezer (race-free kill) are used when mounted;
//! cpuset is required only by tasks with dedicated `cores`. Tasks without `cores` all
//! join one cpuset, `cpuset/orch/shared`, kept on the cpus nobody reserved (as
//! Nomad's `shared` cpuset): one write when a reservation changes, and no cpuset
//! cgroup to make and remove per task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cpuset::{format_cpu_list, CorePool};
use super::fs;
use super::manager::check_name;
use super::{
    CgroupError, CgroupLimits, CgroupManager, CgroupPaths, CgroupStats, CgroupVersion, CpuStats,
    MemoryStats, MemoryUsage,
};

/// Controllers a task cgroup must have.
const REQUIRED: [&str; 3] = ["memory", "cpu", "pids"];
/// Controllers used when the host mounts them.
const OPTIONAL: [&str; 2] = ["cpuacct", "freezer"];
/// The parent of every task cgroup inside each controller.
const PARENT: &str = "orch";
/// The cpuset of the tasks without `cores`, under `PARENT`.
pub const SHARED_CPUSET: &str = "shared";

/// cgroup v1 manager rooted at a directory holding one mount per controller.
#[derive(Debug, Clone)]
pub struct V1Manager {
    root: PathBuf,
    cores: Arc<CorePool>,
    /// Controller -> its resolved hierarchy root, once found (looked up for every
    /// task otherwise: a stat and a canonicalize per controller).
    hierarchies: Arc<std::sync::Mutex<BTreeMap<String, PathBuf>>>,
    /// The shared cpuset's name under `orch/`.
    shared_name: String,
    /// Whether this client run has set the shared cpuset up (held while its cpus are
    /// computed and written, so the last write has the pool's latest state).
    shared_ready: Arc<std::sync::Mutex<bool>>,
}

impl V1Manager {
    /// `root` is usually `/sys/fs/cgroup`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_shared_cpuset(root, SHARED_CPUSET)
    }

    /// A manager whose tasks without `cores` share the cpuset `orch/<shared_name>`
    /// (tests that run side by side use their own).
    pub fn with_shared_cpuset(root: impl Into<PathBuf>, shared_name: &str) -> Self {
        let root = root.into();
        let cores = Arc::new(CorePool::new(root.join("cpuset").join("cpuset.cpus")));
        V1Manager {
            root,
            cores,
            hierarchies: Default::default(),
            shared_name: shared_name.to_string(),
            shared_ready: Default::default(),
        }
    }

    /// The controller's hierarchy root, resolving co-mounts (`cpu` -> `cpu,cpuacct`).
    fn hierarchy(&self, controller: &str) -> Option<PathBuf> {
        let mut known = self.hierarchies.lock().expect("hierarchy cache poisoned");
        if let Some(h) = known.get(controller) {
            return Some(h.clone());
        }
        let p = self.root.join(controller);
        if !p.join("cgroup.procs").exists() {
            return None;
        }
        let h = std::fs::canonicalize(&p).unwrap_or(p);
        known.insert(controller.to_string(), h.clone());
        Some(h)
    }

    fn paths_for(&self, name: &str, cpuset: bool) -> Result<CgroupPaths, CgroupError> {
        let mut dirs = BTreeMap::new();
        let mut joined = BTreeMap::new();
        // Tasks with `cores` need a cpuset of their own; the others join the shared one
        // when there is a cpuset hierarchy, so they can be kept off the reserved cpus.
        match self.hierarchy("cpuset") {
            Some(h) if cpuset => {
                dirs.insert("cpuset".to_string(), h.join(PARENT).join(name));
            }
            Some(h) => {
                joined.insert("cpuset".to_string(), h.join(PARENT).join(&self.shared_name));
            }
            None if cpuset => {
                return Err(CgroupError::ControllerMissing {
                    controller: "cpuset (needed by resources.cores)".to_string(),
                    path: self.root.join("cpuset"),
                })
            }
            None => {}
        }
        for c in REQUIRED {
            let h = self
                .hierarchy(c)
                .ok_or_else(|| CgroupError::ControllerMissing {
                    controller: c.to_string(),
                    path: self.root.join(c),
                })?;
            dirs.insert(c.to_string(), h.join(PARENT).join(name));
        }
        for c in OPTIONAL {
            match self.hierarchy(c) {
                Some(h) => {
                    dirs.insert(c.to_string(), h.join(PARENT).join(name));
                }
                None => {
                    tracing::debug!(controller = c, root = %self.root.display(), "optional cgroup controller not mounted")
                }
            }
        }
        Ok(CgroupPaths {
            version: CgroupVersion::V1,
            name: name.to_string(),
            dirs,
            joined,
        })
    }

    fn dir<'a>(&self, cg: &'a CgroupPaths, controller: &str) -> Result<&'a Path, CgroupError> {
        if cg.version != CgroupVersion::V1 {
            return Err(CgroupError::WrongVersion {
                name: cg.name.clone(),
                found: cg.version,
                expected: CgroupVersion::V1,
            });
        }
        cg.dir(controller)
            .ok_or_else(|| CgroupError::ControllerMissing {
                controller: controller.to_string(),
                path: self.root.join(controller),
            })
    }

    fn apply_memory(&self, dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let hard = limits.memory_hard_bytes().to_string();
        let limit = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            // memory+swap must stay >= memory: raise memsw first when growing, lower it
            // after when shrinking. Capping it at the hard limit keeps swap from
            // hiding an out-of-memory task.
            let current = fs::read_u64(&limit)?;
            if limits.memory_hard_bytes() > current {
                fs::write_verified(&memsw, &hard, &hard)?;
                fs::write_verified(&limit, &hard, &hard)?;
            } else {
                fs::write_verified(&limit, &hard, &hard)?;
                fs::write_verified(&memsw, &hard, &hard)?;
            }
        } else {
            fs::write_verified(&limit, &hard, &hard)?;
        }
        if let Some(soft) = limits.memory_soft_bytes() {
            let soft = soft.to_string();
            fs::write_verified(&dir.join("memory.soft_limit_in_bytes"), &soft, &soft)?;
        }
        Ok(())
    }

    fn apply_cpu(&self, dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let shares = limits.cpu_shares().to_string();
        fs::write_verified(&dir.join("cpu.shares"), &shares, &shares)?;
        if let Some(q) = limits.cpu_quota {
            // The period first: a quota is checked against the period in place.
            let period = q.period_us.to_string();
            fs::write_verified(&dir.join("cpu.cfs_period_us"), &period, &period)?;
            let quota = q.quota_us.to_string();
            fs::write_verified(&dir.join("cpu.cfs_quota_us"), &quota, &quota)?;
        }
        Ok(())
    }

    /// The cpus of a task with a cpuset of its own: with `cores`, its own cpus (and
    /// the shared tasks lose them); without (a task re-attached from a version before
    /// the shared cpuset), the cpus nobody reserved.
    fn apply_cpuset(&self, cg: &CgroupPaths, cores: Option<u32>) -> Result<(), CgroupError> {
        let leaf = self.dir(cg, "cpuset")?;
        init_cpuset(leaf)?;
        let cpus = match cores {
            Some(n) => format_cpu_list(&self.cores.reserve(&cg.name, n)?),
            None => self.cores.join_shared(&cg.name)?,
        };
        fs::write_verified(&leaf.join("cpuset.cpus"), &cpus, &cpus)?;
        if cores.is_some() {
            self.refresh_shared();
        }
        Ok(())
    }

    /// Makes the shared cpuset (once per client run) with the cpus nobody reserved.
    fn prepare_shared(&self, dir: &Path) -> Result<(), CgroupError> {
        let mut ready = self
            .shared_ready
            .lock()
            .expect("shared cpuset lock poisoned");
        if *ready {
            return Ok(());
        }
        fs::mkdir(dir)?;
        init_cpuset(dir)?;
        let (_, cpus) = self.cores.shared()?;
        fs::write_verified(&dir.join("cpuset.cpus"), &cpus, &cpus)?;
        *ready = true;
        Ok(())
    }

    /// Gives the shared tasks the cpus nobody reserved now: the shared cpuset, and the
    /// cpusets of their own that tasks re-attached from a version before it have. Best
    /// effort: a task that keeps a reserved cpu a little longer only shares it, it is
    /// never unlimited.
    fn refresh_shared(&self) {
        let Some(h) = self.hierarchy("cpuset") else {
            return;
        };
        // Held while the cpus are computed and written, so the last write has the
        // pool's latest state (see `prepare_shared`).
        let ready = self
            .shared_ready
            .lock()
            .expect("shared cpuset lock poisoned");
        let (names, cpus) = match self.cores.shared() {
            Ok(shared) => shared,
            Err(e) => return tracing::warn!(error = %e, "reading the host's cpus"),
        };
        let mut dirs: Vec<String> = names;
        if *ready {
            dirs.push(self.shared_name.clone());
        }
        for n in dirs {
            let file = h.join(PARENT).join(&n).join("cpuset.cpus");
            if let Err(e) = fs::write(&file, &cpus) {
                tracing::warn!(cgroup = %n, error = %e, "updating shared cpus");
            }
        }
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<CgroupPaths, CgroupError> {
        check_name(name)?;
        let cg = self.paths_for(name, limits.cores.is_some())?;
        for dir in cg.unique_dirs() {
            fs::mkdir(&dir)?;
        }
        if let Err(e) = self.apply(&cg, limits) {
            // Leave nothing half-made behind.
            let _ = fs::remove_dirs(&cg.unique_dirs());
            if self.cores.release(name) {
                self.refresh_shared();
            }
            return Err(e);
        }
        Ok(cg)
    }

    fn apply(&self, cg: &CgroupPaths, limits: &CgroupLimits) -> Result<(), CgroupError> {
        self.apply_memory(self.dir(cg, "memory")?, limits)?;
        self.apply_cpu(self.dir(cg, "cpu")?, limits)?;
        let pids = limits.pids_max.to_string();
        fs::write_verified(&self.dir(cg, "pids")?.join("pids.max"), &pids, &pids)?;
        if cg.dir("cpuset").is_some() {
            self.apply_cpuset(cg, limits.cores)?;
        } else if let Some(shared) = cg.joined.get("cpuset") {
            self.prepare_shared(shared)?;
        }
        Ok(())
    }

    fn pids(&self, cg: &CgroupPaths) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for dir in cg.unique_dirs() {
            all.extend(fs::procs(&dir)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    fn oom_kills(&self, cg: &CgroupPaths) -> Result<u64, CgroupError> {
        fs::read_keyed(
            &self.dir(cg, "memory")?.join("memory.oom_control"),
            "oom_kill",
        )
    }

    fn memory_usage(&self, cg: &CgroupPaths) -> Result<MemoryUsage, CgroupError> {
        let dir = self.dir(cg, "memory")?;
        Ok(MemoryUsage {
            current_bytes: fs::read_u64(&dir.join("memory.usage_in_bytes"))?,
            peak_bytes: Some(fs::read_u64(&dir.join("memory.max_usage_in_bytes"))?),
        })
    }

    fn cpu_usage_ns(&self, cg: &CgroupPaths) -> Result<u64, CgroupError> {
        fs::read_u64(&self.dir(cg, "cpuacct")?.join("cpuacct.usage"))
    }

    fn stats(&self, cg: &CgroupPaths) -> Result<CgroupStats, CgroupError> {
        let mem = self.memory_usage(cg)?;
        let cpu_dir = self.dir(cg, "cpu")?;
        let throttle = fs::read_all_keyed(&cpu_dir.join("cpu.stat"))?;
        let mut cpu = CpuStats {
            periods: throttle.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: throttle.get("nr_throttled").copied().unwrap_or(0),
            throttled_ns: throttle.get("throttled_time").copied().unwrap_or(0),
            ..CpuStats::default()
        };
        if let Some(acct) = cg.dir("cpuacct") {
            cpu.usage_ns = fs::read_u64(&acct.join("cpuacct.usage"))?;
            // cpuacct.stat counts USER_HZ ticks.
            let ticks = fs::read_all_keyed(&acct.join("cpuacct.stat"))?;
            let ns_per_tick = 1_000_000_000 / clock_ticks_per_second();
            cpu.user_ns = ticks.get("user").map(|t| t * ns_per_tick);
            cpu.system_ns = ticks.get("system").map(|t| t * ns_per_tick);
        }
        Ok(CgroupStats {
            memory: MemoryStats {
                current_bytes: mem.current_bytes,
                peak_bytes: mem.peak_bytes,
            },
            cpu,
            pids: fs::read_u64(&self.dir(cg, "pids")?.join("pids.current"))?,
        })
    }

    fn cpuset(&self, cg: &CgroupPaths) -> Option<String> {
        self.cores.held(&cg.name).map(|c| format_cpu_list(&c))
    }

    fn kill_all(&self, cg: &CgroupPaths) -> Result<(), CgroupError> {
        let label = self.dir(cg, "memory")?.to_path_buf();
        let freezer = cg.dir("freezer").map(|d| d.join("freezer.state"));
        fs::kill_until_empty(
            &label,
            || self.pids(cg),
            |freeze| match &freezer {
                Some(state) if state.exists() => {
                    fs::write(state, if freeze { "FROZEN" } else { "THAWED" })
                }
                _ => Err(CgroupError::ControllerMissing {
                    controller: "freezer".to_string(),
                    path: label.clone(),
                }),
            },
        )
    }

    fn adopt(&self, cg: &CgroupPaths, cores: Option<u32>) {
        // A task in the shared cpuset has nothing to adopt.
        let Some(dir) = cg.dir("cpuset") else {
            return;
        };
        super::cpuset::adopt_from(&self.cores, &cg.name, dir, cores);
        if cores.is_some() {
            // The shared cpuset, made afresh by this run, gives these cpus up again.
            self.refresh_shared();
        }
    }

    fn remove(&self, cg: &CgroupPaths) -> Result<(), CgroupError> {
        fs::remove_dirs(&cg.unique_dirs())?;
        if self.cores.release(&cg.name) {
            self.refresh_shared();
        }
        Ok(())
    }
}

/// A new v1 cpuset has no cpus and no memory nodes, and a process cannot join it like
/// that: gives `orch/` (the parent of `dir`) everything its own parent has, if it has
/// nothing yet, and `dir` the memory nodes of `orch/`. The caller sets `dir`'s cpus.
fn init_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    let top = parent.parent().unwrap_or(parent);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let have = fs::read(&parent.join(file))?;
        if have.trim().is_empty() {
            let want = fs::read(&top.join(file))?;
            fs::write_verified(&parent.join(file), want.trim(), want.trim())?;
        }
    }
    let mems = fs::read(&parent.join("cpuset.mems"))?;
    fs::write_verified(&dir.join("cpuset.mems"), mems.trim(), mems.trim())
}

/// USER_HZ, the unit of `cpuacct.stat` (100 on every common kernel).
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn v1_host() -> bool {
        super::super::detect_version(Path::new("/proc/mounts")) == Some(CgroupVersion::V1)
    }

    /// Removes the cgroup even when the test panics, and the test's own shared cpuset
    /// with the guard that made it.
    struct Guard {
        m: V1Manager,
        cg: CgroupPaths,
        owns_shared: bool,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.m.kill_all(&self.cg);
            let _ = self.m.remove(&self.cg);
            if self.owns_shared {
                let shared = Path::new("/sys/fs/cgroup/cpuset")
                    .join(PARENT)
                    .join(&self.m.shared_name);
                let _ = std::fs::remove_dir(shared);
            }
        }
    }

    fn real(name: &str, limits: CgroupLimits) -> Option<Guard> {
        if !is_root() || !v1_host() {
            eprintln!("skipped: needs root on a cgroup v1 host");
            return None;
        }
        // Tests run side by side: each has its own shared cpuset.
        let unique = format!("test-{}-{name}", uuid::Uuid::new_v4());
        let m = V1Manager::with_shared_cpuset("/sys/fs/cgroup", &format!("{unique}-shared"));
        let cg = m.create(&unique, &limits).unwrap();
        Some(Guard {
            m,
            cg,
            owns_shared: true,
        })
    }

    /// Another task of the same client (manager) as `g`.
    fn sibling(g: &Guard, name: &str, limits: CgroupLimits) -> Guard {
        let name = format!("test-{}-{name}", uuid::Uuid::new_v4());
        Guard {
            cg: g.m.create(&name, &limits).unwrap(),
            m: g.m.clone(),
            owns_shared: false,
        }
    }

    fn limits(mib: u64) -> CgroupLimits {
        CgroupLimits::basic(mib, 250, 64)
    }

    fn spawn_in(cg: &CgroupPaths, script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let procs = cg.procs_files();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(script).process_group(0);
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    std::fs::write(p, "0")?;
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    use crate::driver::process_alive as alive;

    #[test]
    fn limits_are_applied_and_read_back_as_root() {
        let Some(g) = real("limits", limits(48)) else {
            return;
        };
        let mem = g.cg.dir("memory").unwrap();
        assert_eq!(
            std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            (48u64 << 20).to_string()
        );
        let cpu = g.cg.dir("cpu").unwrap();
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.shares"))
                .unwrap()
                .trim(),
            "256"
        );
        let pids = g.cg.dir("pids").unwrap();
        assert_eq!(
            std::fs::read_to_string(pids.join("pids.max"))
                .unwrap()
                .trim(),
            "64"
        );
        assert!(g
            .cg
            .dir("memory")
            .unwrap()
            .ends_with(format!("orch/{}", g.cg.name)));
    }

    #[test]
    fn a_cpu_quota_and_a_dedicated_core_are_applied_and_read_back_as_root() {
        let mut l = limits(32);
        l.cpu_quota = Some(super::super::CpuQuota {
            quota_us: 50_000,
            period_us: 100_000,
        });
        l.cores = Some(1);
        let Some(g) = real("quota", l) else {
            return;
        };
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(g.cg.dir(c).unwrap().join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        let cpus = read("cpuset", "cpuset.cpus");
        assert_eq!(
            super::super::cpuset::parse_cpu_list(&cpus).unwrap().len(),
            1,
            "{cpus}"
        );
        assert_eq!(g.m.cpuset(&g.cg), Some(cpus));
        // A process can join the cpuset (cpus and mems are set) and is counted.
        let mut child = spawn_in(&g.cg, "exec sleep 30");
        let s = g.m.stats(&g.cg).unwrap();
        assert_eq!(s.pids, 1);
        assert!(s.memory.peak_bytes.is_some());
        g.m.kill_all(&g.cg).unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn tasks_without_cores_are_kept_off_reserved_cpus_as_root() {
        let Some(shared) = real("shared", limits(32)) else {
            return;
        };
        let all = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.cpus").unwrap();
        let all = super::super::cpuset::parse_cpu_list(&all).unwrap();
        if all.len() < 2 {
            eprintln!("skipped: needs at least 2 cpus");
            return;
        }
        let cpus = |g: &Guard| {
            let dir = g.cg.member_dir("cpuset").unwrap();
            let text = std::fs::read_to_string(dir.join("cpuset.cpus")).unwrap();
            super::super::cpuset::parse_cpu_list(&text).unwrap()
        };
        assert_eq!(cpus(&shared), all);
        // The pinned task must come from the same manager (one core pool per client).
        let mut l = limits(32);
        l.cores = Some(1);
        let pinned = sibling(&shared, "pinned", l);
        let mine = cpus(&pinned);
        assert_eq!(mine.len(), 1);
        assert!(
            cpus(&shared).is_disjoint(&mine),
            "{:?} {:?}",
            cpus(&shared),
            mine
        );
        // A process of the shared task can still run (its cpuset is not empty).
        let mut child = spawn_in(&shared.cg, "exit 0");
        assert!(child.wait().unwrap().success());
        drop(pinned);
        assert_eq!(cpus(&shared), all, "reserved cpus come back");
    }

    #[test]
    fn tasks_without_cores_share_one_cpuset_that_outlives_them_as_root() {
        let Some(a) = real("shared-a", limits(32)) else {
            return;
        };
        let b = sibling(&a, "shared-b", limits(32));
        assert!(a.cg.dir("cpuset").is_none(), "no cpuset of its own");
        let shared = a.cg.member_dir("cpuset").unwrap().to_path_buf();
        assert_eq!(b.cg.member_dir("cpuset"), Some(shared.as_path()));
        assert!(shared.ends_with(format!("orch/{}", a.m.shared_name)));
        let mut in_a = spawn_in(&a.cg, "exec sleep 30");
        let mut in_b = spawn_in(&b.cg, "exec sleep 30");
        let listed = fs::procs(&shared).unwrap();
        for child in [&in_a, &in_b] {
            assert!(listed.contains(&(child.id() as i32)), "{listed:?}");
        }
        // Each task sees, kills and removes only its own processes and cgroups.
        assert_eq!(a.m.pids(&a.cg).unwrap(), vec![in_a.id() as i32]);
        a.m.kill_all(&a.cg).unwrap();
        in_a.wait().unwrap();
        a.m.remove(&a.cg).unwrap();
        assert!(
            alive(in_b.id() as i32),
            "the other task's process was killed"
        );
        assert!(shared.is_dir(), "the shared cpuset was removed with a task");
        b.m.kill_all(&b.cg).unwrap();
        in_b.wait().unwrap();
    }

    #[test]
    fn a_process_started_in_the_cgroup_is_listed_as_root() {
        let Some(g) = real("procs", limits(32)) else {
            return;
        };
        let mut child = spawn_in(&g.cg, "sleep 30");
        let pid = child.id() as i32;
        let pids = g.m.pids(&g.cg).unwrap();
        assert!(pids.contains(&pid), "{pids:?} lacks {pid}");
        g.m.kill_all(&g.cg).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
    }

    #[test]
    fn kill_all_kills_a_tree_including_a_setsid_child_as_root() {
        let Some(g) = real("tree", limits(32)) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("escaped.pid");
        // The grandchild leaves the process group (setsid) so only the cgroup finds it.
        let script = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 300' & sleep 300",
            pidfile.display()
        );
        let mut child = spawn_in(&g.cg, &script);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let escaped: i32 = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild never wrote its pid"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(alive(escaped));
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(escaped))).unwrap();
        assert_ne!(
            pgid.as_raw(),
            child.id() as i32,
            "setsid did not leave the group"
        );

        g.m.kill_all(&g.cg).unwrap();
        child.wait().unwrap();
        assert!(g.m.pids(&g.cg).unwrap().is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(escaped) {
            assert!(
                std::time::Instant::now() < deadline,
                "setsid child survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn remove_leaves_no_directory_behind_as_root() {
        let Some(g) = real("remove", limits(32)) else {
            return;
        };
        let mut child = spawn_in(&g.cg, "sleep 30");
        g.m.kill_all(&g.cg).unwrap();
        child.wait().unwrap();
        g.m.remove(&g.cg).unwrap();
        for d in g.cg.unique_dirs() {
            assert!(!d.exists(), "{} still exists", d.display());
        }
        // Removing twice is fine.
        g.m.remove(&g.cg).unwrap();
    }

    #[test]
    fn memory_over_the_limit_counts_an_oom_kill_as_root() {
        let Some(g) = real("oom", limits(16)) else {
            return;
        };
        assert_eq!(g.m.oom_kills(&g.cg).unwrap(), 0);
        let mut child = spawn_in(&g.cg, "exec tail /dev/zero");
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(g.m.oom_kills(&g.cg).unwrap() >= 1);
        let usage = g.m.memory_usage(&g.cg).unwrap();
        assert!(usage.peak_bytes.unwrap() > 8 << 20);
    }

    #[test]
    fn a_missing_required_controller_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu"] {
            std::fs::create_dir_all(dir.path().join(c)).unwrap();
            std::fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let err = V1Manager::new(dir.path())
            .create("a-b", &limits(16))
            .unwrap_err();
        match err {
            CgroupError::ControllerMissing { controller, .. } => assert_eq!(controller, "pids"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_missing_interface_file_is_an_error_and_not_created() {
        // Without the controller's files the kernel would not enforce anything; writing
        // must not create a plain file that pretends to be a limit.
        let dir = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir_all(dir.path().join(c).join("orch/a-b")).unwrap();
            std::fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let err = V1Manager::new(dir.path())
            .create("a-b", &limits(16))
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::Read { .. } | CgroupError::Write { .. }),
            "{err}"
        );
        assert!(!dir
            .path()
            .join("memory/orch/a-b/memory.limit_in_bytes")
            .exists());
    }
}
