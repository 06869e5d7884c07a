//! The cgroup v2 backend against a real kernel: boots the host's Debian kernel under qemu
//! with nothing but cgroup2 at /sys/fs/cgroup, runs `orch agent --dev` and the jobs of
//! `tests/vm/` there, and checks what the guest reports (`tests/vm/scenario.sh`): memory
//! limits and an OOM kill, a fork bomb held at `pids.max`, cpu weight and `cpu.max`,
//! dedicated cores, usage read from the v2 files, and no task cgroup left at the end.
//! This machine's own kernel has cgroup v1 controllers only, hence the VM.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::vm::{self, Boot, Finished, Host, Initramfs, Vm};

/// The whole run (boot, agent, every job) must end within this; a hung guest is killed.
const DEADLINE: Duration = Duration::from_secs(600);
const MIB: u64 = 1 << 20;

/// The guest's `ORCH-V2 KEY=VALUE` lines, and the run they came from (for messages).
struct Report {
    values: BTreeMap<String, String>,
    run: Finished,
}

impl Report {
    fn parse(run: Finished) -> Report {
        let values = run
            .results
            .lines()
            .filter_map(|l| l.strip_prefix("ORCH-V2 "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
            .collect();
        Report { values, run }
    }

    /// What the guest said last, and the console, to go with a failure.
    fn context(&self) -> String {
        format!(
            "guest failure: {}\nresult keys: {:?}\nqemu: {}\n---- VM console (last 80 lines)\n{}",
            self.values.get("failed").map_or("none", String::as_str),
            self.values.keys().collect::<Vec<_>>(),
            self.run.qemu_log.trim(),
            self.run.console_tail(80)
        )
    }

    fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "the VM reported no `{key}` (the scenario stopped before it)\n{}",
                self.context()
            )
        })
    }

    fn json(&self, key: &str) -> serde_json::Value {
        serde_json::from_str(self.get(key)).unwrap_or_else(|e| {
            panic!(
                "`{key}` is not JSON ({e}): {}\n{}",
                self.get(key),
                self.context()
            )
        })
    }

    /// `key` as a number.
    fn u64(&self, key: &str) -> u64 {
        self.get(key).trim().parse().unwrap_or_else(|_| {
            panic!(
                "`{key}` is not a number: {:?}\n{}",
                self.get(key),
                self.context()
            )
        })
    }

    /// The `name value` pairs of a keyed cgroup file the guest reported on one line
    /// (`cpu.stat`, `pids.events`).
    fn keyed(&self, key: &str) -> BTreeMap<String, u64> {
        let words: Vec<&str> = self.get(key).split_whitespace().collect();
        words
            .chunks(2)
            .filter_map(|p| Some((p.first()?.to_string(), p.get(1)?.parse().ok()?)))
            .collect()
    }

    /// The `name=value` fields of a line like `rc=0 seconds_from=1.5 seconds_to=2.0`.
    fn fields(&self, key: &str) -> BTreeMap<String, String> {
        self.get(key)
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Every failed expectation of the run, reported together.
struct Checks<'a> {
    report: &'a Report,
    problems: Vec<String>,
}

impl<'a> Checks<'a> {
    fn new(report: &'a Report) -> Self {
        Checks {
            report,
            problems: Vec::new(),
        }
    }

    fn that(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(what());
        }
    }

    /// The guest reported `key` as exactly `want`.
    fn eq(&mut self, key: &str, want: &str, why: &str) {
        let got = self.report.get(key).trim();
        self.that(got == want, || {
            format!("{key}: {why}: expected {want:?}, the VM read {got:?}")
        });
    }

    fn finish(self) {
        assert!(
            self.problems.is_empty(),
            "the cgroup v2 backend did not do what it should on a real kernel:\n- {}\n{}",
            self.problems.join("\n- "),
            self.report.context()
        );
    }
}

/// The guest's init, scenario and jobs, busybox, `orch` and `orch-task-shim` (next to
/// each other, as installed) with their libraries, and the few files under /etc a
/// machine needs.
fn build_initramfs(dir: &Path, busybox: &Path) -> std::path::PathBuf {
    let vm_dir = common::repo_root().join("tests/vm");
    let mut cpio = Initramfs::new();
    cpio.dir("dev")
        .char_device("dev/console", 5, 1)
        .dir("proc")
        .dir("sys")
        .dir("tmp")
        .file("bin/busybox", busybox)
        .program("bin/orch", Path::new(common::BIN), dir)
        .program(
            "bin/orch-task-shim",
            Path::new(env!("CARGO_BIN_EXE_orch-task-shim")),
            dir,
        )
        .file("init", &vm_dir.join("init.sh"))
        .file("vm/scenario.sh", &vm_dir.join("scenario.sh"))
        .tree("vm/jobs", &vm_dir.join("jobs"))
        .bytes(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )
        .bytes("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
        .bytes("etc/hosts", "127.0.0.1 localhost orch-v2-vm\n", 0o644);
    let out = dir.join("initramfs.cpio");
    cpio.write(&out);
    out
}

#[test]
fn the_cgroup_v2_backend_enforces_and_cleans_up_on_a_real_kernel() {
    let host = match Host::find() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: {why}; .ci/run installs it");
            return;
        }
    };
    let Some(busybox) = common::busybox() else {
        eprintln!("skipped: busybox-static is not installed");
        return;
    };
    let tmp = tempfile::tempdir().expect("a temp dir for the VM");
    let t0 = Instant::now();
    let initramfs = build_initramfs(tmp.path(), &busybox);
    let prepared = t0.elapsed();
    let machine = Vm::start(&Boot {
        host: &host,
        kernel: &host.vmlinuz,
        initramfs: &initramfs,
        // Kernel messages below errors stay off the console (the OOM report is an error).
        append: "quiet loglevel=4",
        memory_mib: 1024,
        // Two cpus: one for a task with `cores = 1`, one for the others.
        cpus: 2,
        dir: tmp.path(),
    });
    let run = machine.wait(DEADLINE);
    let timed_out = run.timed_out;
    let report = Report::parse(run);
    eprintln!(
        "cgroup v2 VM: kernel {}, initramfs written in {:.1?}, qemu ran {:.1?}; \
         in the guest: booted at {} s, agent ready at {} s, done at {} s",
        host.vmlinuz.display(),
        prepared,
        report.run.wall,
        report
            .values
            .get("boot_seconds")
            .map_or("?", String::as_str),
        report
            .values
            .get("agent_ready_seconds")
            .map_or("?", String::as_str),
        report.values.get("done").map_or("?", String::as_str),
    );
    assert!(
        !timed_out,
        "the VM did not power off within {DEADLINE:?} (killed)\n{}",
        report.context()
    );
    assert!(
        !report.values.contains_key("failed"),
        "the scenario in the VM stopped early\n{}",
        report.context()
    );
    report.get("done");

    let mut c = Checks::new(&report);
    check_machine(&mut c, &report);
    check_memory_and_oom(&mut c, &report);
    check_cpu(&mut c, &report);
    check_cores(&mut c);
    check_usage(&mut c, &report);
    check_fork_bomb(&mut c, &report);
    check_cleanup(&mut c);
    c.finish();
}

/// The premise: a pure v2 hierarchy, detected as such, with the controllers enabled
/// for the task cgroups by the agent itself.
fn check_machine(c: &mut Checks, r: &Report) {
    let mounts = r.get("cgroup_mounts");
    c.that(
        mounts.split(';').filter(|m| !m.is_empty()).count() == 1
            && mounts.starts_with("cgroup2 /sys/fs/cgroup cgroup2 "),
        || format!("cgroup_mounts: the guest must have cgroup2 at /sys/fs/cgroup and nothing else: {mounts:?}"),
    );
    let node = r.json("node");
    c.that(node["attributes"]["cgroup.version"] == "v2", || {
        format!(
            "node attribute cgroup.version: expected \"v2\", the client fingerprinted {}",
            node["attributes"]["cgroup.version"]
        )
    });
    c.eq(
        "agent_cgroup",
        "0::/orch-agent.service",
        "the agent runs in a cgroup of its own, as under systemd",
    );
    c.eq(
        "root_subtree_control_before",
        "",
        "nothing enables controllers before the agent",
    );
    for key in ["root_subtree_control", "slice_subtree_control"] {
        let on: Vec<&str> = r.get(key).split_whitespace().collect();
        for want in ["cpu", "memory", "pids", "cpuset"] {
            c.that(on.contains(&want), || {
                format!(
                    "{key}: the client must enable {want} for the task cgroups, it reads {on:?}"
                )
            });
        }
    }
}

/// 1. `memory` is `memory.max` (swap capped), and a task over it is OOM-killed and
///    reported as such (the count comes from `memory.events`).
fn check_memory_and_oom(c: &mut Checks, r: &Report) {
    c.eq(
        "oom_memory_max",
        &(32 * MIB).to_string(),
        "memory = 32 is the hard limit",
    );
    c.eq("oom_memory_swap_max", "0", "swap must not hide the limit");
    c.eq("oom_pids_max", "1024", "the client's default pids_limit");
    let alloc = r.json("oom_alloc");
    c.that(alloc["client_status"] == "failed", || {
        format!(
            "oom_alloc: the OOM-killed allocation should be failed, it is {}",
            alloc["client_status"]
        )
    });
    let events = alloc["task_states"]["eat"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let oom = events.iter().find(|e| e["kind"] == "OOM Killed");
    match oom {
        None => c.problems.push(format!(
            "oom_alloc: no \"OOM Killed\" event on task eat (memory.events oom_kill not seen?): {events:#?}"
        )),
        Some(e) => {
            c.that(e["oom_killed"] == true, || {
                format!("oom_alloc: the OOM event has oom_killed = {}", e["oom_killed"])
            });
            let msg = e["message"].as_str().unwrap_or_default();
            c.that(msg.starts_with("OOM killed (limit 32 MiB)"), || {
                format!("oom_alloc: the OOM event says {msg:?}")
            });
        }
    }
    let usage = &alloc["resource_usage"]["tasks"]["eat"];
    let peak = usage["memory"]["peak_bytes"].as_u64().unwrap_or(0);
    c.that(peak > 16 * MIB && peak <= 32 * MIB, || {
        format!("oom_alloc: the task's last memory.peak should be near its 32 MiB limit, the client reports {peak} bytes: {usage}")
    });
}

/// 3. `cpu` is `cpu.weight`, `cpu_hard_limit` is `cpu.max`, `memory_max` over `memory`
///    is `memory.max` over `memory.low`.
fn check_cpu(c: &mut Checks, r: &Report) {
    // cpu = 500 MHz: v1 shares 500 * 1024 / 1000 = 512, mapped to v2 the way runc does:
    // 1 + (512 - 2) * 9999 / 262142 = 20.
    c.eq("busy_cpu_weight", "20", "cpu = 500 as a weight");
    let node = r.json("node");
    let mhz: u64 = node["attributes"]["cpu.frequency"]
        .as_str()
        .and_then(|f| f.parse().ok())
        .unwrap_or(1000);
    // The reservation over the MHz of one core, per 100 ms period (at least 1 ms).
    let quota = (500 * 100_000 / mhz).max(1000);
    c.eq(
        "busy_cpu_max",
        &format!("{quota} 100000"),
        &format!("cpu = 500 with cpu_hard_limit on {mhz} MHz cores"),
    );
    c.eq(
        "busy_memory_max",
        &(48 * MIB).to_string(),
        "memory_max = 48 is the hard limit",
    );
    c.eq(
        "busy_memory_low",
        &(32 * MIB).to_string(),
        "memory = 32 under memory_max is the protected amount",
    );
}

/// 4. `cores = 1` gets a cpu of its own (the lowest free one) and the other tasks move
///    off it while it runs and back after.
fn check_cores(c: &mut Checks) {
    c.eq(
        "busy_cpuset_alone",
        "0-1",
        "alone, a task without cores may use every cpu",
    );
    c.eq("pinned_cpuset", "0", "cores = 1 gets the lowest free cpu");
    c.eq("pinned_cpuset_effective", "0", "the kernel applies it");
    c.eq(
        "pinned_cpus_allowed",
        "0",
        "the pinned task's processes run on cpu 0 only",
    );
    c.eq(
        "busy_cpuset_beside_pinned",
        "1",
        "a shared task leaves the reserved cpu",
    );
    c.eq(
        "busy_cpus_allowed_beside_pinned",
        "1",
        "the shared task's processes run on cpu 1 only",
    );
    c.eq(
        "busy_cpuset_after_pinned",
        "0-1",
        "the reserved cpu comes back when its task stops",
    );
    c.eq(
        "busy_cpus_allowed_after_pinned",
        "0-1",
        "the shared task's processes may run anywhere again",
    );
}

/// 5. The usage the client reports for a busy task is read from the v2 files: its cpu
///    time lies between two reads of `cpu.stat` around the request, and it is throttled.
fn check_usage(c: &mut Checks, r: &Report) {
    let before = r.keyed("busy_cpu_stat_before");
    let after = r.keyed("busy_cpu_stat_after");
    let alloc = r.json("busy_alloc");
    let spin = &alloc["resource_usage"]["tasks"]["spin"];
    let cpu = &spin["cpu"];
    let usage_ns = cpu["usage_ns"].as_u64().unwrap_or(0);
    let (lo, hi) = (
        before.get("usage_usec").copied().unwrap_or(0) * 1000,
        after.get("usage_usec").copied().unwrap_or(0) * 1000,
    );
    c.that(usage_ns > 0 && (lo..=hi).contains(&usage_ns), || {
        format!("busy_alloc: cpu usage_ns {usage_ns} should be non-zero and between cpu.stat usage_usec before ({lo} ns) and after ({hi} ns): {spin}")
    });
    c.that(cpu["user_ns"].as_u64().unwrap_or(0) > 0, || {
        format!("busy_alloc: no user cpu time from cpu.stat user_usec: {spin}")
    });
    let throttled = cpu["throttled_periods"].as_u64().unwrap_or(0);
    let (tlo, thi) = (
        before.get("nr_throttled").copied().unwrap_or(0),
        after.get("nr_throttled").copied().unwrap_or(0),
    );
    c.that(throttled > 0 && (tlo..=thi).contains(&throttled), || {
        format!("busy_alloc: throttled_periods {throttled} should be non-zero (a spinner over its cpu.max) and between cpu.stat nr_throttled before ({tlo}) and after ({thi})")
    });
    c.that(
        spin["memory"]["current_bytes"].as_u64().unwrap_or(0) > 0,
        || format!("busy_alloc: memory.current of a running task reads 0: {spin}"),
    );
    c.that(spin["pids"].as_u64().unwrap_or(0) >= 1, || {
        format!("busy_alloc: pids.current of a running task reads 0: {spin}")
    });
    c.that(spin["memory_limit_bytes"] == 48 * MIB, || {
        format!("busy_alloc: memory_limit_bytes should be 48 MiB: {spin}")
    });
    c.that(spin["running"] == true, || {
        format!("busy_alloc: the spinning task should be running: {spin}")
    });
}

/// 2. A fork bomb stops at `pids.max`, the agent still answers, and the task stops.
fn check_fork_bomb(c: &mut Checks, r: &Report) {
    c.eq("bomb_pids_max", "64", "resources.pids = 64");
    let current = r.u64("bomb_pids_current");
    c.that(current <= 64, || {
        format!("bomb_pids_current: {current} processes, over pids.max 64")
    });
    let refused = r.keyed("bomb_pids_events").get("max").copied().unwrap_or(0);
    c.that(refused > 0, || {
        "bomb_pids_events: the kernel refused no fork (pids.events max is 0)".to_string()
    });
    for (key, what, limit) in [
        ("bomb_cli", "`orch node status` during the bomb", 15.0),
        ("bomb_stop", "`orch job stop --purge bomb`", 60.0),
    ] {
        let f = r.fields(key);
        let secs = |k: &str| {
            f.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let took = secs("seconds_to") - secs("seconds_from");
        c.that(f.get("rc").map(String::as_str) == Some("0"), || {
            format!("{key}: {what} failed: {f:?}")
        });
        c.that(took < limit, || {
            format!("{key}: {what} took {took:.1} s (at most {limit} s)")
        });
    }
}

/// 6. Every task cgroup is gone once the jobs are stopped and purged, and the agent
///    lived through it all.
fn check_cleanup(c: &mut Checks) {
    c.eq(
        "leftover_cgroups",
        "",
        "no task cgroup under orch.slice after every job stopped",
    );
    c.eq(
        "agent_alive",
        "yes",
        "the agent is still running at the end",
    );
}

#[test]
fn the_newest_kernel_is_picked_by_version_number() {
    let boot = tempfile::tempdir().expect("a temp dir");
    for name in [
        "vmlinuz-6.1.0-9-amd64",
        "vmlinuz-6.1.0-10-amd64",
        "config-6.1.0-11-amd64",
        "vmlinuz-5.10.0-30-amd64",
    ] {
        std::fs::write(boot.path().join(name), "").expect("a fake kernel");
    }
    assert_eq!(
        vm::newest_kernel(boot.path()),
        Some(boot.path().join("vmlinuz-6.1.0-10-amd64"))
    );
}
