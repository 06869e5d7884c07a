//! The scheduler benchmark (`make bench`): c1m, packing and full_cluster through the
//! real server path — a temp-dir `StateStore` + `CommandLog`, the `EvalBroker`, the
//! scheduler workers, the `PlanApplier` and SQLite commits — with simulated nodes
//! registered as `Command::UpsertNode` (no processes run). Prints `name value unit`.
//!
//! `ha.c1m_*`: the same C1M run on the leader of three servers replicating through
//! Raft in this process (each write committed on two of them before it applies).
//! Environment: `BENCH=c1m|ha.c1m|packing|full_cluster` runs one part (default: all);
//! `SCALE=0.1` shrinks node and job counts (instances per c1m job stay 1,000).

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};

use orch_common::ids::{EvalId, NodeId};
use orch_common::mock::{JobBuilder, NodeBuilder};
use orch_common::model::{triggers, EvalStatus, Evaluation, Job, Node};
use orch_server::config::ServerConfig;
use orch_server::server::Server;
use orch_server::state::{Command, Table};

// The allocator the `orch` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// SplitMix64: a seeded generator so every run benchmarks the same cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.3} {unit}");
}

/// A simulated ready node of the mock driver: `i` makes its id and name unique.
fn node(i: usize, dc: &str, cpu: u64, memory: u64, attrs: &[(&str, &str)]) -> Node {
    let name = format!("sim-{i}");
    NodeBuilder::new()
        .id(format!("{i:08x}-0000-4000-8000-{i:012x}"))
        .name(&name)
        .datacenter(dc)
        .cpu(cpu)
        .memory(memory)
        .attrs(attrs)
        .attr("unique.hostname", &name)
        .attr("driver.mock", "1")
        .without_driver("raw_exec")
        .http_addr("127.0.0.1:1")
        .build()
}

/// A service job in dc1 and dc2: group `g` of `count` instances of one mock-driver
/// task `t` that runs for an hour.
fn job(id: &str, count: usize, cpu: u64, memory: u64) -> JobBuilder {
    JobBuilder::new(id)
        .datacenters(&["dc1", "dc2"])
        .group_name("g")
        .count(count as u32)
        .task_name("t")
        .driver("mock")
        .task_config("run_for", "1h".into())
        .cpu(cpu)
        .memory(memory)
}

async fn start_server(dir: &std::path::Path) -> BenchResult<Server> {
    let cfg = ServerConfig {
        data_dir: dir.to_path_buf(),
        // Nodes are registered through the log, never heartbeat: keep them alive.
        heartbeat_min_ttl: Duration::from_secs(3600),
        heartbeat_grace: Duration::from_secs(3600),
        num_schedulers: std::env::var("BENCH_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ServerConfig::default().num_schedulers),
        ..ServerConfig::default()
    };
    Ok(Server::start(cfg).await?)
}

/// Registers the nodes, many commands in flight at once.
async fn register_nodes(server: &Server, nodes: Vec<Node>) -> BenchResult<()> {
    let mut pending = futures::stream::FuturesUnordered::new();
    for node in nodes {
        let log = server.log().clone();
        pending.push(async move { log.submit(Command::UpsertNode { node }).await });
        if pending.len() >= 256 {
            use futures::StreamExt;
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    use futures::StreamExt;
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// Submits jobs (with their register evaluations) as fast as the log takes them.
async fn submit_jobs(server: &Server, jobs: Vec<Job>) -> BenchResult<Vec<EvalId>> {
    use futures::StreamExt;
    let mut ids = Vec::with_capacity(jobs.len());
    let mut pending = futures::stream::FuturesUnordered::new();
    for job in jobs {
        let eval = Evaluation::for_job(&job, triggers::JOB_REGISTER);
        ids.push(eval.id.clone());
        let log = server.log().clone();
        pending.push(async move {
            log.submit(Command::UpsertJob {
                job,
                eval: Some(eval),
                enforce_index: None,
            })
            .await
        });
        if pending.len() >= 64 {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(ids)
}

/// Waits until every evaluation in `ids` is terminal (complete, failed, canceled, or
/// blocked with its placements given up); returns them.
async fn wait_evals(server: &Server, ids: &[EvalId]) -> BenchResult<Vec<Evaluation>> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let stats = server.broker().stats();
        // Reading a thousand evaluations is not free: for many, wait for the broker
        // to drain first; a few are read on every evaluation write.
        let drained = stats.ready == 0 && stats.unacked == 0 && stats.waiting == 0;
        if drained || ids.len() <= 16 {
            let store = server.store().clone();
            let want = ids.to_vec();
            let evals = tokio::task::spawn_blocking(move || -> BenchResult<Vec<Evaluation>> {
                let mut out = Vec::with_capacity(want.len());
                for id in &want {
                    if let Some(e) = store.eval(id)? {
                        out.push(e);
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| e.to_string())??;
            let done =
                evals.len() == ids.len() && evals.iter().all(|e| e.status != EvalStatus::Pending);
            if done {
                return Ok(evals);
            }
        }
        if Instant::now() > deadline {
            return Err("evaluations did not finish within an hour".into());
        }
        // Wake on the next evaluation write rather than polling on a timer, so the
        // latency figures are not rounded up to a poll interval.
        let seen = server.store().table_index(Table::Evals);
        server
            .store()
            .wait_for_index(Table::Evals, seen, Duration::from_millis(50))
            .await;
    }
}

/// Allocations in the store.
fn placed_allocs(server: &Server) -> BenchResult<usize> {
    let mut total = 0;
    for count in server.store().alloc_status_counts()? {
        total += count.count as usize;
    }
    Ok(total)
}

/// Allocations in the store, and the nodes holding at least one.
fn allocs_per_node(server: &Server) -> BenchResult<(usize, BTreeMap<NodeId, usize>)> {
    let mut per_node = BTreeMap::new();
    let total = placed_allocs(server)?;
    if total > 0 {
        for node in server.store().nodes()? {
            let n = server.store().node_allocs_server_index(&node.id)?;
            if n > 0 {
                per_node.insert(node.id.clone(), 1);
            }
        }
    }
    Ok((total, per_node))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn dir_mib(dir: &std::path::Path) -> f64 {
    let mut bytes = 0u64;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                bytes += if m.is_dir() { 0 } else { m.len() };
            }
        }
    }
    bytes as f64 / (1024.0 * 1024.0)
}

// ------------------------------------------------------------------------------- c1m

/// Three servers replicating through Raft in this process, each with its own data
/// dir under `dir` and its RPC routes on 127.0.0.1; the leader comes first.
async fn start_replicated(dir: &std::path::Path) -> BenchResult<Vec<Server>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let mut servers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut cfg = ServerConfig {
            data_dir: dir.join(format!("s{i}")),
            name: format!("s{i}"),
            bootstrap_expect: 3,
            heartbeat_min_ttl: Duration::from_secs(3600),
            heartbeat_grace: Duration::from_secs(3600),
            ..ServerConfig::default()
        };
        cfg.raft.advertise_rpc = addrs[i].clone();
        cfg.raft.retry_join = addrs.clone();
        let server = Server::start(cfg).await?;
        let router = server.rpc_router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        servers.push(server);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = servers.iter().position(|s| {
            let leader = s.raft().metrics().borrow().current_leader;
            leader == Some(s.server_id()) && s.broker().is_enabled()
        }) {
            servers.swap(0, i);
            return Ok(servers);
        }
        if Instant::now() > deadline {
            return Err("no leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn c1m(scale: f64) -> BenchResult<()> {
    c1m_on(scale, "c1m", false).await
}

/// The C1M benchmark on one server, or (`replicated`) on the leader of three.
async fn c1m_on(scale: f64, prefix: &str, replicated: bool) -> BenchResult<()> {
    // c1m.wall_s, and ha.c1m_wall_s for the replicated run.
    let sep = if replicated { "_" } else { "." };
    let report = |name: &str, value: f64, unit: &str| {
        report(
            &format!("{prefix}{sep}{}", name.trim_start_matches("c1m.")),
            value,
            unit,
        )
    };
    let n_nodes = ((10_000.0 * scale).round() as usize).max(10);
    let n_jobs = ((1_000.0 * scale).round() as usize).max(1);
    let per_job = 1_000;
    // BENCH_KEEP_DIR=path keeps c1m's database there for inspection.
    let dir = match std::env::var_os("BENCH_KEEP_DIR") {
        Some(path) => tempfile::Builder::new()
            .disable_cleanup(true)
            .tempdir_in(path)?,
        None => tempfile::tempdir()?,
    };
    let mut servers = if replicated {
        start_replicated(dir.path()).await?
    } else {
        vec![start_server(dir.path()).await?]
    };
    let server = servers.remove(0);

    // 4 sizes x 2 datacenters x 4 attribute variants (one of them not linux).
    let sizes = [
        (4_000, 8_192),
        (8_000, 16_384),
        (16_000, 32_768),
        (32_000, 65_536),
    ];
    let variants: [&[(&str, &str)]; 4] = [
        &[("kernel.name", "linux"), ("os.name", "debian")],
        &[("kernel.name", "linux"), ("os.name", "ubuntu")],
        &[("kernel.name", "linux"), ("os.name", "rhel")],
        &[("kernel.name", "freebsd"), ("os.name", "freebsd")],
    ];
    let mut nodes = Vec::with_capacity(n_nodes);
    for i in 0..n_nodes {
        let (cpu, mem) = sizes[i % 4];
        let dc = if (i / 4) % 2 == 0 { "dc1" } else { "dc2" };
        nodes.push(node(i, dc, cpu, mem, variants[(i / 8) % 4]));
    }
    let t = Instant::now();
    register_nodes(&server, nodes).await?;
    report("c1m.nodes_register_s", t.elapsed().as_secs_f64(), "s");

    let mut jobs = Vec::with_capacity(n_jobs);
    for j in 0..n_jobs {
        let cpu = [50, 100][j % 2];
        let mem = [64, 128, 96][j % 3];
        jobs.push(
            job(&format!("c1m-{j:04}"), per_job, cpu, mem)
                .constraint("${attr.kernel.name}", "=", "linux")
                .spread("${node.datacenter}", 50, &[])
                .build(),
        );
    }

    // The write-ahead log's size through the run: it must stay bounded under load.
    let wal_path = {
        let mut p = server.store().path().as_os_str().to_owned();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    let (wal_stop, mut wal_stopped) = tokio::sync::watch::channel(false);
    let wal_watch = tokio::spawn(async move {
        let mut max = 0u64;
        loop {
            max = max.max(std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0));
            tokio::select! {
                _ = wal_stopped.changed() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        max
    });

    let t = Instant::now();
    let ids = submit_jobs(&server, jobs).await?;
    let submitted = t.elapsed().as_secs_f64();
    let evals = wait_evals(&server, &ids).await?;
    let wall = t.elapsed().as_secs_f64();
    let _ = wal_stop.send(true);
    let wal_max = wal_watch.await.unwrap_or(0);
    let placed = placed_allocs(&server)?;
    let mut lat: Vec<f64> = evals
        .iter()
        .map(|e| e.modify_time.saturating_sub(e.create_time) as f64)
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let failed = evals
        .iter()
        .filter(|e| e.status != EvalStatus::Complete || !e.failed_tg_allocs.is_empty())
        .count();
    report("c1m.nodes", n_nodes as f64, "nodes");
    report("c1m.jobs", n_jobs as f64, "jobs");
    report("c1m.submit_s", submitted, "s");
    report("c1m.wall_s", wall, "s");
    report("c1m.placements", placed as f64, "allocs");
    report("c1m.placements_per_s", placed as f64 / wall, "allocs/s");
    report("c1m.evals_not_complete", failed as f64, "evals");
    report("c1m.eval_p50_ms", percentile(&lat, 0.5), "ms");
    report("c1m.eval_p99_ms", percentile(&lat, 0.99), "ms");
    report("c1m.peak_rss_mib", peak_rss_mib(), "MiB");
    report("c1m.wal_max_mib", wal_max as f64 / (1024.0 * 1024.0), "MiB");
    let data = server.config().data_dir.join("server");
    server.shutdown().await;
    for other in servers {
        other.shutdown().await;
    }
    report("c1m.sqlite_mib", dir_mib(&data), "MiB");
    Ok(())
}

// --------------------------------------------------------------------------- packing

/// Node size of the packing and full-cluster parts.
const PACK_CPU: u64 = 16_000;
const PACK_MEM: u64 = 32_768;

/// A long-tailed (Pareto, alpha 1.5) size between `min` and `max`, rounded to `step`.
fn long_tail(rng: &mut Rng, min: f64, max: f64, step: u64) -> u64 {
    let v = (min / rng.unit().powf(1.0 / 1.5)).min(max);
    ((v as u64).div_ceil(step) * step).max(step)
}

/// Lower bound on nodes and the first-fit-decreasing count for `sizes`.
fn ffd(sizes: &[(u64, u64)]) -> (usize, usize) {
    let sum_cpu: u64 = sizes.iter().map(|s| s.0).sum();
    let sum_mem: u64 = sizes.iter().map(|s| s.1).sum();
    let lb = (sum_cpu.div_ceil(PACK_CPU)).max(sum_mem.div_ceil(PACK_MEM)) as usize;
    let mut sorted = sizes.to_vec();
    let key = |s: &(u64, u64)| (s.0 as f64 / PACK_CPU as f64).max(s.1 as f64 / PACK_MEM as f64);
    sorted.sort_by(|a, b| key(b).total_cmp(&key(a)));
    let mut bins: Vec<(u64, u64)> = Vec::new();
    for (c, m) in sorted {
        match bins
            .iter_mut()
            .find(|b| b.0 + c <= PACK_CPU && b.1 + m <= PACK_MEM)
        {
            Some(b) => {
                b.0 += c;
                b.1 += m;
            }
            None => bins.push((c, m)),
        }
    }
    (lb, bins.len())
}

async fn packing(scale: f64) -> BenchResult<()> {
    let total = ((20_000.0 * scale).round() as usize).max(100);
    let per_job = 40.min(total);
    let n_jobs = total.div_ceil(per_job);
    let mut rng = Rng(0x5eed_0002);
    let mut sizes = Vec::new();
    let mut jobs = Vec::new();
    for j in 0..n_jobs {
        let count = per_job.min(total - j * per_job);
        let cpu = long_tail(&mut rng, 100.0, 8_000.0, 50);
        let mem = long_tail(&mut rng, 128.0, 16_384.0, 64);
        sizes.extend(std::iter::repeat_n((cpu, mem), count));
        jobs.push((format!("pack-{j:04}"), count, cpu, mem));
    }
    let (lb, ffd_nodes) = ffd(&sizes);
    let n_nodes = lb + lb / 4 + 10;
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let mut nodes = Vec::with_capacity(n_nodes);
    for i in 0..n_nodes {
        let dc = if i % 2 == 0 { "dc1" } else { "dc2" };
        nodes.push(node(i, dc, PACK_CPU, PACK_MEM, &[("kernel.name", "linux")]));
    }
    register_nodes(&server, nodes).await?;
    let jobs = jobs
        .into_iter()
        .map(|(id, count, cpu, mem)| job(&id, count, cpu, mem).build())
        .collect();
    let t = Instant::now();
    let ids = submit_jobs(&server, jobs).await?;
    wait_evals(&server, &ids).await?;
    let wall = t.elapsed().as_secs_f64();
    let (placed, used) = allocs_per_node(&server)?;
    report("packing.allocs", placed as f64, "allocs");
    report("packing.lower_bound", lb as f64, "nodes");
    report("packing.nodes_used", used.len() as f64, "nodes");
    report("packing.ratio", used.len() as f64 / lb as f64, "x");
    report("packing.ffd_ratio", ffd_nodes as f64 / lb as f64, "x");
    report("packing.wall_s", wall, "s");
    server.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------- full_cluster

async fn full_cluster(scale: f64) -> BenchResult<()> {
    let n_nodes = ((1_000.0 * scale).round() as usize).max(20);
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let nodes = (0..n_nodes)
        .map(|i| {
            let dc = if i % 2 == 0 { "dc1" } else { "dc2" };
            node(i, dc, 4_000, 8_192, &[("kernel.name", "linux")])
        })
        .collect();
    register_nodes(&server, nodes).await?;
    // 19 of 200 MHz / 400 MiB per node: 95% of the cpu, 93% of the memory.
    let fill = n_nodes * 19;
    let per_job = 1_000.min(fill);
    let jobs = (0..fill.div_ceil(per_job))
        .map(|j| {
            let count = per_job.min(fill - j * per_job);
            job(&format!("fill-{j:03}"), count, 200, 400).build()
        })
        .collect();
    let ids = submit_jobs(&server, jobs).await?;
    wait_evals(&server, &ids).await?;
    let placed = placed_allocs(&server)?;
    report("full_cluster.fill_allocs", placed as f64, "allocs");

    let mut samples = Vec::new();
    for i in 0..30 {
        let one = job(&format!("one-{i:03}"), 1, 100, 100).build();
        let t = Instant::now();
        let ids = submit_jobs(&server, vec![one]).await?;
        let evals = wait_evals(&server, &ids).await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        if evals.iter().any(|e| !e.failed_tg_allocs.is_empty()) {
            return Err("full_cluster: the extra allocation was not placed".into());
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    report("full_cluster.placement_ms", percentile(&samples, 0.5), "ms");
    report(
        "full_cluster.placement_p99_ms",
        percentile(&samples, 0.99),
        "ms",
    );
    server.shutdown().await;
    Ok(())
}

fn main() -> BenchResult<()> {
    let which = std::env::var("BENCH").unwrap_or_default();
    let scale: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = |name: &str| which.is_empty() || which == name;
    rt.block_on(async {
        if run("c1m") {
            c1m(scale).await?;
        }
        if run("ha.c1m") || run("ha") {
            c1m_on(scale, "ha.c1m", true).await?;
        }
        if run("packing") {
            packing(scale).await?;
        }
        if run("full_cluster") {
            full_cluster(scale).await?;
        }
        Ok(())
    })
}
