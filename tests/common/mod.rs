//! Test harness for the real `orch` binary: start agents (`--dev` or `--config`) on
//! 127.0.0.1:0 in temp dirs, read their address from the `listening on` line, run CLI
//! commands against them with deadlines, poll with deadlines, and clean up on drop:
//! SIGTERM then SIGKILL the agent, kill leftover task processes (found by their
//! `ORCH_ALLOC_DIR` under the agent's data dir) and remove leftover cgroups.

#![allow(dead_code)]

pub mod netns;
pub mod vm;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_orch");

/// Repository root (where `jobspecs/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn jobspec(name: &str) -> PathBuf {
    repo_root().join("jobspecs").join(name)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True (and prints why) when a root-only test must be skipped.
pub fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: needs root (cgroups, task processes)");
        return true;
    }
    if !Path::new("/sys/fs/cgroup/memory").is_dir()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        eprintln!("skipping {test}: no cgroup file system at /sys/fs/cgroup");
        return true;
    }
    false
}

/// Polls `f` every 200ms until it returns `Some`, panicking with `what` at the deadline.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a finished CLI command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with both streams unless the command exited 0.
    pub fn ok(self) -> Output {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `orch ARGS` and waits at most `timeout`, killing it past that.
pub fn orch_cmd(args: &[&str], timeout: Duration) -> Output {
    orch_cmd_env(args, &[], timeout)
}

/// `orch_cmd` with these environment variables set (`ORCH_CACERT`, ...).
pub fn orch_cmd_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("ORCH_ADDR")
        .env_remove("ORCH_TOKEN")
        .env_remove("ORCH_CACERT")
        .env_remove("ORCH_CLIENT_CERT")
        .env_remove("ORCH_CLIENT_KEY")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning orch");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for orch") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`orch {}` did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A running `orch agent` process.
pub struct Agent {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The agent's data dir (the temp dir's `data`).
    pub data_dir: PathBuf,
    /// Everything the agent wrote to stderr.
    pub log_path: PathBuf,
    /// The `orch` arguments it was started with (for `restart`).
    args: Vec<String>,
    /// The network namespace it runs in (None: the test's own).
    netns: Option<PathBuf>,
}

/// How an agent process is started beyond its arguments.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    /// Extra environment variables (`ORCH_TEST_PANIC_LOOP`, ...).
    pub env: Vec<(String, String)>,
    /// The umask it starts with (None: the test's own).
    pub umask: Option<u32>,
}

/// A temp dir holding one or more agents' files; removed on drop.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("orch-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file in the workspace and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("writing a test file");
        p
    }
}

impl Agent {
    /// `orch agent --dev --http-port 0 --data-dir <ws>/<name>`.
    pub fn dev(ws: &Workspace, name: &str) -> Agent {
        let (args, data_dir, log_path) = dev_args(ws, name);
        Agent::spawn(args, data_dir, log_path)
    }

    /// `orch agent --config <file>`, the file being `tables` (TOML tables such as
    /// `[server]`/`[client]`) after the root keys the harness sets: `name`, `data_dir`
    /// (`<ws>/<name>`), `bind_addr` 127.0.0.1 and `[ports] http = 0`.
    pub fn with_config(ws: &Workspace, name: &str, tables: &str) -> Agent {
        Agent::with_config_on(ws, name, 0, tables)
    }

    /// Like `with_config`, listening on 127.0.0.1:`port` (0: any), so a restarted agent
    /// keeps its address.
    pub fn with_config_on(ws: &Workspace, name: &str, port: u16, tables: &str) -> Agent {
        let (args, data_dir, log_path) = config_args(ws, name, "127.0.0.1", port, tables);
        Agent::spawn(args, data_dir, log_path)
    }

    /// Like `with_config`, but the agent runs in the network namespace `netns` (a file
    /// under /var/run/netns), listening on `bind_addr:port`.
    pub fn in_netns(
        ws: &Workspace,
        name: &str,
        netns: &Path,
        bind_addr: &str,
        port: u16,
        tables: &str,
    ) -> Agent {
        // Each namespace has its own ports: servers use the default RPC port there.
        let (args, data_dir, log_path) = config_args_rpc(ws, name, bind_addr, port, 4748, tables);
        let (child, addr) = start_process(&args, &log_path, Some(netns), &Launch::default());
        Agent {
            child: Some(child),
            addr,
            data_dir,
            log_path,
            args,
            netns: Some(netns.to_path_buf()),
        }
    }

    /// Like `with_config_on`, with the Raft RPC port `rpc` too (servers that must
    /// know each other's addresses before they start).
    pub fn with_ports(ws: &Workspace, name: &str, port: u16, rpc: u16, tables: &str) -> Agent {
        let (args, data_dir, log_path) = config_args_rpc(ws, name, "127.0.0.1", port, rpc, tables);
        Agent::spawn(args, data_dir, log_path)
    }

    /// `orch ARGS` (an agent whose configuration the test wrote), its data dir
    /// `<ws>/<name>` and its log `<ws>/<name>.log`.
    pub fn with_args(ws: &Workspace, name: &str, args: &[&str]) -> Agent {
        let args = args.iter().map(|a| a.to_string()).collect();
        Agent::spawn(args, ws.path(name), ws.path(&format!("{name}.log")))
    }

    /// Like `with_config`, started with `launch`'s environment and umask.
    pub fn with_config_launch(ws: &Workspace, name: &str, tables: &str, launch: &Launch) -> Agent {
        let (args, data_dir, log_path) = config_args(ws, name, "127.0.0.1", 0, tables);
        Agent::spawn_with(args, data_dir, log_path, launch)
    }

    /// Like `dev`, started with `launch`'s environment and umask.
    pub fn dev_launch(ws: &Workspace, name: &str, launch: &Launch) -> Agent {
        let (args, data_dir, log_path) = dev_args(ws, name);
        Agent::spawn_with(args, data_dir, log_path, launch)
    }

    fn spawn(args: Vec<String>, data_dir: PathBuf, log_path: PathBuf) -> Agent {
        Agent::spawn_with(args, data_dir, log_path, &Launch::default())
    }

    fn spawn_with(
        args: Vec<String>,
        data_dir: PathBuf,
        log_path: PathBuf,
        launch: &Launch,
    ) -> Agent {
        let (child, addr) = start_process(&args, &log_path, None, launch);
        Agent {
            child: Some(child),
            addr,
            data_dir,
            log_path,
            args,
            netns: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// `orch --address <agent> ARGS` with a deadline.
    pub fn orch(&self, args: &[&str], timeout: Duration) -> Output {
        let mut full = vec!["--address", self.addr.as_str()];
        full.extend_from_slice(args);
        orch_cmd(&full, timeout)
    }

    /// `orch job run jobspecs/NAME` until it ends, which must be with exit 0 (the
    /// assertion shows its output and the agent's log).
    pub fn job_run(&self, name: &str, timeout: Duration) -> Output {
        self.job_run_file(&jobspec(name), timeout)
    }

    /// `orch job run SPEC` until it ends, which must be with exit 0.
    pub fn job_run_file(&self, spec: &Path, timeout: Duration) -> Output {
        let run = self.orch(&["job", "run", spec.to_str().unwrap()], timeout);
        assert_eq!(
            run.code(),
            0,
            "job run {} failed:\n{}\n{}\nagent log:\n{}",
            spec.display(),
            run.stdout,
            run.stderr,
            self.log()
        );
        run
    }

    /// `orch alloc status --json ID`, decoded (the command must succeed).
    pub fn alloc_status_json(&self, id: &str) -> serde_json::Value {
        let out = self
            .orch(&["alloc", "status", "--json", id], Duration::from_secs(20))
            .ok();
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// `GET path` on the agent's API, decoded as JSON (`None` on any error).
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let resp = http().get(format!("{}{}", self.addr, path)).send().ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().ok()
    }

    /// The agent's allocations (`GET /v1/allocations`), empty when unavailable.
    pub fn allocs(&self) -> Vec<serde_json::Value> {
        self.get("/v1/allocations")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Allocations of one job.
    pub fn job_allocs(&self, job: &str) -> Vec<serde_json::Value> {
        self.allocs()
            .into_iter()
            .filter(|a| a["job_id"] == job)
            .collect()
    }

    /// Submits the job file `file` (job `job`, one allocation) without waiting, then
    /// waits for its allocation to end: its client status ("complete" or "failed") and
    /// the full allocation.
    pub fn run_to_end(&self, file: &Path, job: &str) -> (String, serde_json::Value) {
        self.orch(
            &["job", "run", "-d", file.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
        wait_for(Duration::from_secs(60), "the allocation to end", || {
            let allocs = self.job_allocs(job);
            let a = allocs.first()?;
            let status = a["client_status"].as_str()?.to_string();
            matches!(status.as_str(), "complete" | "failed").then(|| {
                let id = a["id"].as_str().unwrap().to_string();
                (status, self.get(&format!("/v1/allocation/{id}")).unwrap())
            })
        })
    }

    /// SIGKILL, no cleanup by the agent.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status (SIGKILL after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                eprintln!("agent did not stop within {timeout:?} of SIGTERM; killing it");
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new agent process with the same arguments and data dir (e.g. after
    /// `kill9`); its address may differ.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr) = start_process(
            &self.args,
            &self.log_path,
            self.netns.as_deref(),
            &Launch::default(),
        );
        self.child = Some(child);
        self.addr = addr;
    }
}

/// The `orch agent --dev` arguments of `Agent::dev`, its data dir and its log path.
fn dev_args(ws: &Workspace, name: &str) -> (Vec<String>, PathBuf, PathBuf) {
    let data_dir = ws.path(name);
    let log_path = ws.path(&format!("{name}.log"));
    let args = vec![
        "agent".to_string(),
        "--dev".into(),
        "--http-port".into(),
        "0".into(),
        "--dns-port".into(),
        "0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    (args, data_dir, log_path)
}

/// Writes `<ws>/<name>.toml` (`name`, `data_dir` `<ws>/<name>`, `bind_addr`, `[ports]
/// http`, then `tables`); returns the `orch agent --config` arguments, the data dir and
/// the log path.
fn config_args(
    ws: &Workspace,
    name: &str,
    bind_addr: &str,
    port: u16,
    tables: &str,
) -> (Vec<String>, PathBuf, PathBuf) {
    config_args_rpc(ws, name, bind_addr, port, 0, tables)
}

/// `config_args` with the Raft RPC port `rpc` (0: any free one).
fn config_args_rpc(
    ws: &Workspace,
    name: &str,
    bind_addr: &str,
    port: u16,
    rpc: u16,
    tables: &str,
) -> (Vec<String>, PathBuf, PathBuf) {
    let data_dir = ws.path(name);
    let text = format!(
        "name = {name:?}\ndata_dir = {:?}\nbind_addr = {bind_addr:?}\n\n[ports]\nhttp = {port}\ndns = 0\nrpc = {rpc}\n\n{tables}\n",
        data_dir.display().to_string()
    );
    let cfg = ws.write(&format!("{name}.toml"), &text);
    let log_path = ws.path(&format!("{name}.log"));
    let args = vec![
        "agent".to_string(),
        "--config".into(),
        cfg.display().to_string(),
    ];
    (args, data_dir, log_path)
}

/// Spawns `orch ARGS` (in network namespace `netns` when given), copies its stderr to
/// `log_path` and waits for the `orch agent: listening on ADDR` line.
fn start_process(
    args: &[String],
    log_path: &Path,
    netns: Option<&Path>,
    launch: &Launch,
) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(mask) = launch.umask {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is one system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
                Ok(())
            });
        }
    }
    if let Some(path) = netns {
        let ns = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", path.display()));
        use std::os::unix::process::CommandExt;
        // SAFETY: setns is one system call on a descriptor opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let mut child = cmd
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("ORCH_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning orch agent");
    let stderr = child.stderr.take().expect("agent stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let log = log_path.to_path_buf();
    // Copy stderr to the log file (so the pipe never fills) and report the address.
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .ok();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if !sent {
                if let Some(addr) = line.strip_prefix("orch agent: listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let status = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "agent `orch {}` did not report its address (exit: {status:?}); log:\n{}",
                args.join(" "),
                std::fs::read_to_string(log_path).unwrap_or_default()
            );
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(20));
        cleanup_tasks(&self.data_dir);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago (all held until all
/// are chosen, so none is handed out twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}

/// A blocking HTTP client with a short timeout, for direct API calls in tests.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Pids of processes whose environment says they belong to an allocation: either with
/// `ORCH_ALLOC_ID=<id>` for an id in `ids`, or `ORCH_ALLOC_DIR` under `data_dir`.
pub fn task_pids(data_dir: Option<&Path>, ids: &BTreeSet<String>) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let dir_prefix = data_dir.map(|d| {
        let d = d.canonicalize().unwrap_or_else(|_| d.to_path_buf());
        format!("ORCH_ALLOC_DIR={}", d.display())
    });
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let mine = env.split(|b| *b == 0).any(|var| {
            let var = String::from_utf8_lossy(var);
            if let Some(p) = &dir_prefix {
                if var.starts_with(p.as_str()) {
                    return true;
                }
            }
            var.strip_prefix("ORCH_ALLOC_ID=")
                .map(|id| ids.contains(id))
                .unwrap_or(false)
        });
        if mine && !is_zombie(pid) {
            out.push(pid);
        }
    }
    out
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Cgroup directories (v1 `<ctrl>/orch/<alloc>-<task>`, v2 `orch.slice/<alloc>-<task>`)
/// of the given allocations.
pub fn alloc_cgroups(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut parents = Vec::new();
    if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in ctrls.flatten() {
            parents.push(c.path().join("orch"));
            parents.push(c.path().join("orch.slice"));
        }
    }
    parents.push(PathBuf::from("/sys/fs/cgroup/orch.slice"));
    let mut out = Vec::new();
    for p in parents {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && ids.iter().any(|id| name.starts_with(id.as_str())) {
                out.push(e.path());
            }
        }
    }
    out
}

/// Allocation ids a client made directories for under `<data_dir>/alloc`.
pub fn alloc_ids_in(data_dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data_dir.join("alloc"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills leftover task processes of an agent's data dir and removes their cgroups.
pub fn cleanup_tasks(data_dir: &Path) {
    let ids = alloc_ids_in(data_dir);
    for pid in task_pids(Some(data_dir), &ids) {
        eprintln!("cleanup: killing leftover task process {pid}");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if ids.is_empty() {
        return;
    }
    // Killed processes leave their cgroups only once reaped; retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<PathBuf> = alloc_cgroups(&ids)
            .into_iter()
            .filter(|d| remove_cgroup_tree(d).is_err())
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            for d in left {
                eprintln!("cleanup: could not remove cgroup {}", d.display());
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes a cgroup directory and its children, deepest first (cgroupfs refuses
/// recursive removal and non-empty groups).
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    std::fs::remove_dir(dir)
}

/// The machine's memory in MiB, as the client fingerprints it (`MemTotal`).
pub fn host_memory_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal");
    kb / 1024
}

/// What a client of these tests may run: `raw_exec`, as root (the tests' user) unless
/// a task names another user, and containers from any non-system directory (the
/// tests' workspaces), as `--dev` allows.
pub const TRUSTED_CLIENT: &str =
    "raw_exec = true\nallow_root_tasks = true\ndefault_user = \"\"\ncontainer_rootfs = [\"/\"]\n";

/// `[client]` section of a client that can fit `memory_mib` of allocations.
pub fn client_section(servers: &[&str], memory_mib: u64, node_class: &str) -> String {
    let reserved = host_memory_mib().saturating_sub(memory_mib);
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[client]\nenabled = true\nservers = [{}]\nnode_class = {node_class:?}\nreserved = {{ cpu = 0, memory = {reserved} }}\n{TRUSTED_CLIENT}",
        servers.join(", ")
    )
}

/// Strips `http://` or `https://` from an agent address, for `servers = [...]`.
pub fn host_port(addr: &str) -> String {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string()
}

/// Waits until the server lists `n` ready nodes.
pub fn wait_for_ready_nodes(server: &Agent, n: usize) {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} ready node(s)"),
        || {
            let nodes = server.get("/v1/nodes")?;
            let ready = nodes
                .as_array()?
                .iter()
                .filter(|n| n["status"] == "ready")
                .count();
            (ready >= n).then_some(())
        },
    );
}

/// The instance index of an allocation stub, from its name `job.group[INDEX]`.
pub fn alloc_index(a: &serde_json::Value) -> u32 {
    let name = a["name"].as_str().expect("alloc name");
    name.rsplit_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("alloc name {name:?} has no [index]"))
}

/// The host's static busybox, when installed (busybox-static).
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A root filesystem with busybox, `httpd`, `sh`, `sleep` and a few more applets, and a
/// document root `/www`.
pub fn busybox_rootfs(root: &Path, busybox: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["httpd", "sh", "hostname", "id", "ps", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/health"), "ok\n").unwrap();
}

/// A busybox root filesystem at `<ws>/busybox` (`busybox_rootfs`), or None with a
/// message saying the test is skipped when busybox-static is not installed.
pub fn busybox_rootfs_in(ws: &Workspace) -> Option<PathBuf> {
    let Some(busybox) = busybox() else {
        eprintln!("skipped: busybox-static is not installed");
        return None;
    };
    let rootfs = ws.path("busybox");
    busybox_rootfs(&rootfs, &busybox);
    Some(rootfs)
}

/// True when `dig` (Debian's dnsutils) is installed.
pub fn have_dig() -> bool {
    Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The DNS port from the agent's `DNS on ADDR:PORT` ready line.
pub fn dns_port(agent: &Agent) -> u16 {
    let log = agent.log();
    // The last ready line: a restarted agent appends its own to the same log.
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("orch agent: DNS on "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no DNS ready line in the agent log:\n{log}"))
}

/// `dig @127.0.0.1 -p PORT NAME TYPE +short [extra]`: the answer lines, sorted.
pub fn dig(port: u16, name: &str, rtype: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), name, rtype, "+short"])
        .args(["+time=2", "+tries=1"])
        .args(extra)
        .output()
        .expect("running dig");
    assert!(
        out.status.success(),
        "dig {name} {rtype} {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}
