//! `ServerConfig`: everything `Server::start` needs, with a documented default for
//! every field. The agent (cli/agent.rs) builds it from the agent configuration file.

use std::path::PathBuf;
use std::sync::Arc;

use orch_common::supervise::Health;
use orch_common::tls::Tls;
use std::time::Duration;

/// Default API port (INTERFACE.md).
pub const DEFAULT_HTTP_PORT: u16 = 4747;

/// Default largest snapshot a restore accepts: 8 GiB.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The agent's data directory; the state database is `<data_dir>/server/state.db`.
    /// Default: `/var/lib/orch`.
    pub data_dir: PathBuf,
    /// This server's name (shown by `/v1/agent/self`). Default: `"server"`.
    pub name: String,
    /// How many servers form the cluster: the first start of a server waits until it
    /// has found this many (itself and `raft.retry_join`) before they elect a leader.
    /// 1 is a single server. Default: 1.
    pub bootstrap_expect: u32,
    /// Replication between servers. Default: `RaftConfig::default()`.
    pub raft: RaftConfig,
    /// Scheduler workers (evaluations processed in parallel). Default: 2.
    pub num_schedulers: usize,
    /// The shortest heartbeat TTL given to clients (longer with many nodes).
    /// Default: 10s.
    pub heartbeat_min_ttl: Duration,
    /// Extra time past the TTL before a silent node is marked down. Default: 10s.
    pub heartbeat_grace: Duration,
    /// Largest request body accepted; bigger ones get 413. Default: 4 MiB.
    pub max_request_body_bytes: usize,
    /// Largest state snapshot `PUT /v1/operator/snapshot` accepts (streamed to a file
    /// beside the state, not held in memory); bigger ones get 413. Default: 8 GiB.
    pub max_snapshot_bytes: u64,
    /// Most instances one group may ask for; 1 to the spec's `MAX_COUNT`.
    /// Default: 10000 (`orch_common::jobspec::MAX_COUNT`).
    pub max_count: u32,
    /// `host:port` where this server's HTTP API is reached (answered by
    /// `/v1/status/leader`). Default: `"127.0.0.1:4747"`.
    pub advertise_http: String,
    /// The datacenter this server is in (shown by `/v1/agent/self`). Default: `"dc1"`.
    pub datacenter: String,
    /// Garbage collection of terminal objects. Default: `GcConfig::default()`.
    pub gc: GcConfig,
    /// The agent's TLS identity: with it, relays to clients are HTTPS and need the
    /// client's certificate. Default: none (plain HTTP).
    pub tls: Option<Arc<Tls>>,
    /// Where the server's supervised loops report (shared with the agent's client and
    /// watched by the agent process). Default: a registry of its own.
    pub health: Health,
}

/// Default Raft RPC port (`[ports] rpc`).
pub const DEFAULT_RPC_PORT: u16 = 4748;

/// How servers replicate (see docs/operations.md, "Servers that replicate").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// `host:port` where the other servers reach this one's Raft RPC.
    /// Default: `"127.0.0.1:4748"`.
    pub advertise_rpc: String,
    /// Other servers' RPC addresses to find at start (`host:port`): to form a new
    /// cluster with `bootstrap_expect`, or to join a running one. Default: none.
    pub retry_join: Vec<String>,
    /// How often the leader sends heartbeats. Default: 100ms.
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for a random time between this and twice this
    /// starts an election. Default: 500ms (a failover takes about 0.5-1 s).
    pub election_timeout: Duration,
    /// How long a write may wait to be committed by a majority before it fails with
    /// 503 (it may still commit later). Default: 10s.
    pub commit_timeout: Duration,
    /// Entries applied since the last snapshot that make a new one. Default: 10000.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so a follower slightly behind
    /// catches up from the log rather than by a snapshot. Default: 2000.
    pub trailing_logs: u64,
    /// A voter the leader has not heard from for this long is removed from the
    /// cluster (autopilot's dead-server cleanup), as long as the servers that
    /// remain still number at least `bootstrap_expect`; zero: never.
    /// Default: 10m.
    pub dead_server_cleanup: Duration,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            advertise_rpc: format!("127.0.0.1:{DEFAULT_RPC_PORT}"),
            retry_join: Vec::new(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            commit_timeout: Duration::from_secs(10),
            snapshot_threshold: 10_000,
            trailing_logs: 2_000,
            dead_server_cleanup: Duration::from_secs(600),
        }
    }
}

/// When garbage collection runs and what it keeps (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcConfig {
    /// How often the collector runs. Default: 5m.
    pub interval: Duration,
    /// How long a dead job (and everything it has) stays. Default: 4h.
    pub job_threshold: Duration,
    /// How long a terminal evaluation of a service or system job (and the terminal
    /// allocations it placed) stays. Default: 1h.
    pub eval_threshold: Duration,
    /// The same for batch and sysbatch jobs. Default: 24h.
    pub batch_eval_threshold: Duration,
    /// How long a down node with nothing pending or running stays. Default: 24h.
    pub node_threshold: Duration,
    /// Command log entries kept (the newest). Default: 10000.
    pub command_log_retain: u64,
    /// Terminal allocations each job keeps whatever their age (the newest; the ones
    /// the scheduler still reads are kept besides). Default: 50.
    pub max_terminal_allocs_per_job: usize,
    /// Terminal evaluations each job keeps whatever their age (the newest).
    /// Default: 50.
    pub max_terminal_evals_per_job: usize,
}

/// The bounds of `max_terminal_allocs_per_job` and `max_terminal_evals_per_job`: at
/// least one (what happened last), at most what a big group leaves at once.
pub const JOB_HISTORY_CAP_BOUNDS: std::ops::RangeInclusive<usize> = 1..=10_000;

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_secs(5 * 60),
            job_threshold: Duration::from_secs(4 * 3600),
            eval_threshold: Duration::from_secs(3600),
            batch_eval_threshold: Duration::from_secs(24 * 3600),
            node_threshold: Duration::from_secs(24 * 3600),
            command_log_retain: 10_000,
            max_terminal_allocs_per_job: 50,
            max_terminal_evals_per_job: 50,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("/var/lib/orch"),
            name: "server".to_string(),
            bootstrap_expect: 1,
            raft: RaftConfig::default(),
            num_schedulers: 2,
            heartbeat_min_ttl: Duration::from_secs(10),
            heartbeat_grace: Duration::from_secs(10),
            max_request_body_bytes: 4 * 1024 * 1024,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            max_count: orch_common::jobspec::MAX_COUNT,
            advertise_http: format!("127.0.0.1:{DEFAULT_HTTP_PORT}"),
            datacenter: "dc1".to_string(),
            gc: GcConfig::default(),
            tls: None,
            health: Health::default(),
        }
    }
}

impl ServerConfig {
    /// Where the state database lives.
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("server").join("state.db")
    }

    /// Where the Raft log lives.
    pub fn raft_log_path(&self) -> PathBuf {
        self.data_dir.join("server").join("raft.db")
    }

    /// Where the Raft snapshots live.
    pub fn raft_snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("server").join("raft-snapshots")
    }
}
