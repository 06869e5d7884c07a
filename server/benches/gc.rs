//! The garbage collection benchmark (`make bench`, `BENCH=gc`): one forced collection
//! (`Collector::collect(true)`, what `orch system gc` runs) over a store holding a
//! stopped job with many terminal allocations. Prints `name value unit`: the pass's
//! wall time, the process's peak resident memory growth during it, and the store's
//! size before and after.
//!
//! Environment: `SCALE=0.1` shrinks the allocation count (default 100,000).

use std::error::Error;
use std::time::Instant;

use orch_common::mock::{AllocBuilder, JobBuilder};
use orch_common::model::{Allocation, ClientStatus, DesiredStatus, EvalStatus, Evaluation, Job};
use orch_server::config::GcConfig;
use orch_server::gc::Collector;
use orch_server::state::{Command, CommandLog, StateStore};

// The allocator the `orch` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PER_PLAN: usize = 5_000;

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.3} {unit}");
}

/// A `/proc/self/status` field in KiB (0 when missing).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Job "old": one instance of a mock-driver task `t` of 10 MHz / 10 MiB.
fn job() -> Job {
    JobBuilder::new("old")
        .task_name("t")
        .driver("mock")
        .cpu(10)
        .memory(10)
        .build()
}

/// Instance `i` of `job`, stopped and complete, on one of a thousand nodes; stored
/// without its job, as the store keeps allocations.
fn alloc(job: &Job, i: usize, eval_id: &str) -> Allocation {
    AllocBuilder::new(job)
        .id(format!("{i:08x}-0000-4000-8000-{i:012x}"))
        .index(i as u32)
        .eval_id(eval_id)
        .node_id(format!("node-{}", i % 1000))
        .desired_status(DesiredStatus::Stop)
        .client_status(ClientStatus::Complete)
        .without_job()
        .build()
}

fn db_mib(store: &StateStore) -> f64 {
    let path = store.path();
    let wal = path.with_extension("db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(path) + size(&wal)) as f64 / (1024.0 * 1024.0)
}

async fn gc_pass(count: usize) -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    let store = StateStore::open(dir.path().join("state.db"))?;
    let log = CommandLog::start(store.clone(), Vec::new())?;
    let job = job();
    log.submit(Command::UpsertJob {
        job: job.clone(),
        eval: None,
        enforce_index: None,
    })
    .await?;
    let mut next = 0;
    while next < count {
        let mut eval = Evaluation::for_job(&job, "job-register");
        eval.status = EvalStatus::Complete;
        let end = (next + PER_PLAN).min(count);
        let allocs = (next..end).map(|i| alloc(&job, i, &eval.id)).collect();
        log.submit(Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs,
            stopped: vec![],
            evals: vec![eval],
        })
        .await?;
        next = end;
    }
    log.submit(Command::DeregisterJob {
        job_id: "old".into(),
        purge: false,
        eval: None,
        enforce_index: None,
    })
    .await?;
    let before_mib = db_mib(&store);

    let collector = Collector::new(store.clone(), log.clone(), GcConfig::default());
    // Resets the peak resident size, so VmHWM below is this pass's peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kib("VmRSS:");
    let start = Instant::now();
    let counts = collector.collect(true).await?;
    let secs = start.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    assert_eq!(counts.allocs, count as u64, "every allocation collected");
    assert_eq!(counts.jobs, 1);
    assert!(store.allocs()?.is_empty());

    report("gc.allocs", count as f64, "allocs");
    report("gc.pass_ms", secs * 1000.0, "ms");
    report("gc.allocs_per_s", count as f64 / secs, "allocs/s");
    report(
        "gc.peak_rss_growth_mib",
        peak.saturating_sub(rss_before) as f64 / 1024.0,
        "MiB",
    );
    report("gc.peak_rss_mib", peak as f64 / 1024.0, "MiB");
    report("gc.store_before_mib", before_mib, "MiB");
    report("gc.store_after_mib", db_mib(&store), "MiB");
    log.shutdown().await;
    Ok(())
}

fn main() -> BenchResult<()> {
    let scale: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0);
    let count = ((100_000.0 * scale) as usize).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(gc_pass(count))
}
