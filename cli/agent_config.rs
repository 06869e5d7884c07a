//! The agent configuration file (TOML, INTERFACE.md): raw serde structs with a default
//! for every field, unknown fields refused, and the `--dev` preset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use orch_common::duration::human;
use serde::Deserialize;

/// One agent: a server, a client, or both.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Root of the agent's files (`server/`, `client/`, `alloc/` below it).
    /// Default: `/var/lib/orch`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on. Default: `127.0.0.1`.
    #[serde(default = "default_bind_addr")]
    pub bind_addr: String,
    /// Address other agents and the CLI reach this one at (host only). Default: the
    /// bind address, or `127.0.0.1` when binding to `0.0.0.0`.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Default: `dc1`.
    #[serde(default = "default_datacenter")]
    pub datacenter: String,
    /// The region, as the TLS role names carry it (`server.<region>.orch`).
    /// Default: `global`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Agent (and node) name. Default: the host name.
    #[serde(default)]
    pub name: Option<String>,
    /// `trace`, `debug`, `info`, `warn` or `error`; `RUST_LOG` wins when set.
    /// Default: `info`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub ports: PortsConfig,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub acl: AclSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub client: ClientSection,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsConfig {
    /// The HTTP API port (0 picks a free one). Default: 4747.
    #[serde(default = "default_http_port")]
    pub http: u16,
    /// The DNS port of servers, UDP and TCP (0 picks a free one); `[server] dns = false`
    /// turns DNS off. Default: 4753.
    #[serde(default = "default_dns_port")]
    pub dns: u16,
    /// The port servers reach each other's Raft on (0 picks a free one; only the
    /// address advertised to the cluster matters). Default: 4748.
    #[serde(default = "default_rpc_port")]
    pub rpc: u16,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            http: default_http_port(),
            dns: default_dns_port(),
            rpc: default_rpc_port(),
        }
    }
}

fn default_rpc_port() -> u16 {
    orch_server::config::DEFAULT_RPC_PORT
}

fn default_dns_port() -> u16 {
    orch_server::dns::DEFAULT_PORT
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Run the server (state store, scheduler, API). Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Servers expected before electing a leader (1 for a single server). Default: 1.
    #[serde(default = "default_bootstrap_expect")]
    pub bootstrap_expect: u32,
    /// Other servers' RPC addresses (`host:port`) to form a cluster with or to join.
    /// Default: none.
    #[serde(default)]
    pub retry_join: Vec<String>,
    /// How often the Raft leader sends heartbeats. Default: 100ms.
    #[serde(with = "human", default = "default_raft_heartbeat_interval")]
    pub raft_heartbeat_interval: Duration,
    /// A follower that hears no leader for between this and twice this starts an
    /// election (a leader failover takes about that long). Default: 500ms.
    #[serde(with = "human", default = "default_raft_election_timeout")]
    pub raft_election_timeout: Duration,
    /// How long a write may wait for a majority of servers before it fails with 503.
    /// Default: 10s.
    #[serde(with = "human", default = "default_raft_commit_timeout")]
    pub raft_commit_timeout: Duration,
    /// Entries applied since the last Raft snapshot that make a new one. Default: 10000.
    #[serde(default = "default_raft_snapshot_threshold")]
    pub raft_snapshot_threshold: u64,
    /// Entries kept behind a snapshot for followers slightly behind. Default: 2000.
    #[serde(default = "default_raft_trailing_logs")]
    pub raft_trailing_logs: u64,
    /// A server the leader has not heard from for this long is removed from the
    /// cluster, if at least `bootstrap_expect` servers remain ("0s": never).
    /// Default: 10m.
    #[serde(with = "human", default = "default_dead_server_cleanup")]
    pub dead_server_cleanup: Duration,
    /// Scheduler workers. Default: 0, meaning one per CPU core.
    #[serde(default)]
    pub num_schedulers: usize,
    /// Shortest heartbeat interval handed to clients. Default: 10s.
    #[serde(with = "human", default = "default_heartbeat_min_ttl")]
    pub heartbeat_min_ttl: Duration,
    /// Extra time past a missed heartbeat before a node is marked down. Default: 10s.
    #[serde(with = "human", default = "default_heartbeat_grace")]
    pub heartbeat_grace: Duration,
    /// Largest request body accepted, in bytes. Default: 4194304 (4 MiB).
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: usize,
    /// Largest state snapshot a restore (`PUT /v1/operator/snapshot`) accepts, in
    /// bytes; it is streamed to disk, not held in memory. Default: 8589934592 (8 GiB).
    #[serde(default = "default_max_snapshot_bytes")]
    pub max_snapshot_bytes: u64,
    /// Most instances one group of a job may ask for (1 to 10000); a bigger `count`
    /// is refused with a 400. Default: 10000.
    #[serde(default = "default_max_count")]
    pub max_count: u32,
    /// How often garbage collection runs. Default: 5m.
    #[serde(with = "human", default = "default_gc_interval")]
    pub gc_interval: Duration,
    /// How long a dead job (and its evaluations, allocations, versions) stays.
    /// Default: 4h.
    #[serde(with = "human", default = "default_job_gc_threshold")]
    pub job_gc_threshold: Duration,
    /// How long a terminal evaluation of a service or system job, with the terminal
    /// allocations it placed, stays. Default: 1h.
    #[serde(with = "human", default = "default_eval_gc_threshold")]
    pub eval_gc_threshold: Duration,
    /// The same for batch and sysbatch jobs. Default: 24h.
    #[serde(with = "human", default = "default_batch_eval_gc_threshold")]
    pub batch_eval_gc_threshold: Duration,
    /// How long a down node with nothing pending or running stays. Default: 24h.
    #[serde(with = "human", default = "default_node_gc_threshold")]
    pub node_gc_threshold: Duration,
    /// Command log entries kept (the newest). Default: 10000.
    #[serde(default = "default_command_log_retain")]
    pub command_log_retain: u64,
    /// Terminal allocations each job keeps whatever their age, 1 to 10000 (the
    /// newest; those the scheduler still reads are kept besides). Default: 50.
    #[serde(default = "default_gc_max_terminal_allocs_per_job")]
    pub gc_max_terminal_allocs_per_job: usize,
    /// Terminal evaluations each job keeps whatever their age, 1 to 10000 (the
    /// newest). Default: 50.
    #[serde(default = "default_gc_max_terminal_evals_per_job")]
    pub gc_max_terminal_evals_per_job: usize,
    /// Answer DNS queries for `NAME.service.orch` on `bind_addr:<ports.dns>`.
    /// Default: true.
    #[serde(default = "default_true")]
    pub dns: bool,
    /// Time-to-live of the DNS records, in seconds (also the negative-caching time).
    /// Default: 0, so that a resolver never serves an instance that went critical.
    #[serde(default)]
    pub dns_ttl: u32,
}

impl ServerSection {
    /// The garbage collection settings for the server.
    pub fn gc(&self) -> orch_server::config::GcConfig {
        orch_server::config::GcConfig {
            interval: self.gc_interval,
            job_threshold: self.job_gc_threshold,
            eval_threshold: self.eval_gc_threshold,
            batch_eval_threshold: self.batch_eval_gc_threshold,
            node_threshold: self.node_gc_threshold,
            command_log_retain: self.command_log_retain,
            max_terminal_allocs_per_job: self.gc_max_terminal_allocs_per_job,
            max_terminal_evals_per_job: self.gc_max_terminal_evals_per_job,
        }
    }
}

impl ServerSection {
    /// The replication settings for the server; `advertise_rpc` is the address
    /// the agent bound.
    pub fn raft(&self, advertise_rpc: String) -> orch_server::config::RaftConfig {
        orch_server::config::RaftConfig {
            advertise_rpc,
            retry_join: self.retry_join.clone(),
            heartbeat_interval: self.raft_heartbeat_interval,
            election_timeout: self.raft_election_timeout,
            commit_timeout: self.raft_commit_timeout,
            snapshot_threshold: self.raft_snapshot_threshold,
            trailing_logs: self.raft_trailing_logs,
            dead_server_cleanup: self.dead_server_cleanup,
        }
    }
}

fn raft_defaults() -> orch_server::config::RaftConfig {
    orch_server::config::RaftConfig::default()
}
fn default_raft_heartbeat_interval() -> Duration {
    raft_defaults().heartbeat_interval
}
fn default_raft_election_timeout() -> Duration {
    raft_defaults().election_timeout
}
fn default_raft_commit_timeout() -> Duration {
    raft_defaults().commit_timeout
}
fn default_raft_snapshot_threshold() -> u64 {
    raft_defaults().snapshot_threshold
}
fn default_raft_trailing_logs() -> u64 {
    raft_defaults().trailing_logs
}
fn default_dead_server_cleanup() -> Duration {
    raft_defaults().dead_server_cleanup
}

fn gc_defaults() -> orch_server::config::GcConfig {
    orch_server::config::GcConfig::default()
}
fn default_gc_interval() -> Duration {
    gc_defaults().interval
}
fn default_job_gc_threshold() -> Duration {
    gc_defaults().job_threshold
}
fn default_eval_gc_threshold() -> Duration {
    gc_defaults().eval_threshold
}
fn default_batch_eval_gc_threshold() -> Duration {
    gc_defaults().batch_eval_threshold
}
fn default_node_gc_threshold() -> Duration {
    gc_defaults().node_threshold
}
fn default_command_log_retain() -> u64 {
    gc_defaults().command_log_retain
}
fn default_gc_max_terminal_allocs_per_job() -> usize {
    gc_defaults().max_terminal_allocs_per_job
}
fn default_gc_max_terminal_evals_per_job() -> usize {
    gc_defaults().max_terminal_evals_per_job
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            enabled: false,
            bootstrap_expect: default_bootstrap_expect(),
            retry_join: Vec::new(),
            raft_heartbeat_interval: default_raft_heartbeat_interval(),
            raft_election_timeout: default_raft_election_timeout(),
            raft_commit_timeout: default_raft_commit_timeout(),
            raft_snapshot_threshold: default_raft_snapshot_threshold(),
            raft_trailing_logs: default_raft_trailing_logs(),
            dead_server_cleanup: default_dead_server_cleanup(),
            num_schedulers: 0,
            heartbeat_min_ttl: default_heartbeat_min_ttl(),
            heartbeat_grace: default_heartbeat_grace(),
            max_request_body_bytes: default_max_request_body_bytes(),
            max_snapshot_bytes: default_max_snapshot_bytes(),
            max_count: default_max_count(),
            gc_interval: default_gc_interval(),
            job_gc_threshold: default_job_gc_threshold(),
            eval_gc_threshold: default_eval_gc_threshold(),
            batch_eval_gc_threshold: default_batch_eval_gc_threshold(),
            node_gc_threshold: default_node_gc_threshold(),
            command_log_retain: default_command_log_retain(),
            gc_max_terminal_allocs_per_job: default_gc_max_terminal_allocs_per_job(),
            gc_max_terminal_evals_per_job: default_gc_max_terminal_evals_per_job(),
            dns: true,
            dns_ttl: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Run the client (fingerprint, run allocations). Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Servers to register with (`host:port` or `http://host:port`). Default: empty,
    /// meaning this agent itself when it is also a server.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Default: empty.
    #[serde(default)]
    pub node_class: String,
    /// Default: empty.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Capacity held back from scheduling. Default: none.
    #[serde(default)]
    pub reserved: ReservedConfig,
    /// Default: 20000.
    #[serde(default = "orch_common::model::default_min_dynamic_port")]
    pub min_dynamic_port: u16,
    /// Default: 32000.
    #[serde(default = "orch_common::model::default_max_dynamic_port")]
    pub max_dynamic_port: u16,
    /// Kill the tasks when the agent stops. Default: true.
    #[serde(default = "yes")]
    pub stop_tasks_on_shutdown: bool,
    /// Host paths that `container` tasks may bind with `volumes`. Default: none.
    #[serde(default)]
    pub container_volumes: Vec<std::path::PathBuf>,
    /// Directories under which `container` tasks' `rootfs` directories and `image`
    /// tarballs may be (host system directories and the agent's own state never).
    /// Default: `<data_dir>/images` (`["/"]` with `--dev`: any non-system directory).
    #[serde(default)]
    pub container_rootfs: Option<Vec<std::path::PathBuf>>,
    /// Capabilities `container` tasks may keep or `cap_add` ("NET_ADMIN", "ALL").
    /// Default: Docker's default set (`["ALL"]` with `--dev`).
    #[serde(default = "default_container_caps")]
    pub container_allow_caps: Vec<String>,
    /// Let containers use the host's network (`network_mode = "host"`, or a group
    /// with ports). Default: true.
    #[serde(default = "yes")]
    pub container_host_network: bool,
    /// Let `container` tasks turn off the seccomp filter (`seccomp = "unconfined"`).
    /// Default: false (true with `--dev`).
    #[serde(default)]
    pub container_allow_unconfined_seccomp: bool,
    /// Most processes (and threads) per task: the default for tasks without
    /// `resources.pids` and the most a task may ask for. Default: 1024.
    #[serde(default = "default_pids_limit")]
    pub pids_limit: u64,
    /// Offer the `raw_exec` driver (host processes, no isolation but a cgroup). A
    /// privilege: default false (true with `--dev`).
    #[serde(default)]
    pub raw_exec: bool,
    /// Let tasks run as root (a task's `user = "root"`, or no user and `default_user`
    /// root or empty). Default false (true with `--dev`).
    #[serde(default)]
    pub allow_root_tasks: bool,
    /// The user a `raw_exec` task without `user` runs as; empty: the agent's own user.
    /// Default `nobody` (empty with `--dev`).
    #[serde(default = "default_task_user")]
    pub default_user: String,
}

fn default_container_caps() -> Vec<String> {
    orch_client::driver::container::caps::DEFAULT
        .iter()
        .map(|c| c.to_string())
        .collect()
}

fn default_task_user() -> String {
    "nobody".to_string()
}

fn default_pids_limit() -> u64 {
    orch_client::cgroups::DEFAULT_PIDS_MAX
}

impl Default for ClientSection {
    fn default() -> Self {
        ClientSection {
            enabled: false,
            servers: Vec::new(),
            node_class: String::new(),
            meta: BTreeMap::new(),
            reserved: ReservedConfig::default(),
            min_dynamic_port: orch_common::model::default_min_dynamic_port(),
            max_dynamic_port: orch_common::model::default_max_dynamic_port(),
            stop_tasks_on_shutdown: true,
            container_volumes: Vec::new(),
            container_rootfs: None,
            container_allow_caps: default_container_caps(),
            container_host_network: true,
            container_allow_unconfined_seccomp: false,
            pids_limit: default_pids_limit(),
            raw_exec: false,
            allow_root_tasks: false,
            default_user: default_task_user(),
        }
    }
}

/// `[acl]`: access control.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSection {
    /// Every route checks the caller's token (`X-Orch-Token` or `Authorization:
    /// Bearer`) against its policies. Default: false (`--dev` never enables it).
    #[serde(default)]
    pub enabled: bool,
}

/// `[tls]`: mutual TLS on the HTTP API (every hop: CLI, clients, servers' relays).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Serve and call over HTTPS. Default: false.
    #[serde(default)]
    pub http: bool,
    /// The CA certificate (PEM) that signed every agent's and CLI's certificate.
    /// Relative paths are from the configuration file's directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This agent's certificate (PEM), from `orch tls cert create --server|--client`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Callers must present a certificate from the CA. Default: true.
    #[serde(default = "yes")]
    pub verify_https_client: bool,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            http: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_https_client: true,
        }
    }
}

impl TlsSection {
    /// The files to load, when TLS is on (`check` made sure all three are set).
    pub fn files(&self) -> Option<orch_common::tls::TlsFiles> {
        if !self.http {
            return None;
        }
        Some(orch_common::tls::TlsFiles {
            ca_file: self.ca_file.clone()?,
            identity: Some((self.cert_file.clone()?, self.key_file.clone()?)),
        })
    }

    fn check(&self) -> Result<()> {
        if !self.http {
            return Ok(());
        }
        for (key, value) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if value.as_deref().is_none_or(|p| p.as_os_str().is_empty()) {
                bail!("tls.{key} is required when tls.http = true (see `orch tls --help`)");
            }
        }
        Ok(())
    }

    /// Relative paths are taken from `dir` (the configuration file's directory).
    fn resolve_from(&mut self, dir: &Path) {
        for path in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// `[http]`: who may call the API from a web page.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Web origins (`scheme://host[:port]`) besides the agent's own whose pages may
    /// call the API, such as a UI served elsewhere. Default: none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `reserved = { cpu = 200, memory = 256, reserved_ports = "22,80,8000-8099" }`: MHz and
/// MiB, each 0 when left out, and host ports no allocation is ever given (default none).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedConfig {
    #[serde(default)]
    pub cpu: u64,
    #[serde(default)]
    pub memory: u64,
    /// Comma-separated ports and inclusive ranges, as Nomad writes them.
    #[serde(default)]
    pub reserved_ports: String,
}

impl ReservedConfig {
    /// The reserved ports, each once, ascending.
    pub fn ports(&self) -> Result<Vec<u16>> {
        parse_port_list(&self.reserved_ports)
    }
}

/// `"22,80,8000-8099"` -> every port listed; an empty string is none.
pub fn parse_port_list(text: &str) -> Result<Vec<u16>> {
    let mut ports = std::collections::BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let port = |p: &str| -> Result<u16> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{p:?} in {text:?} is not a port (1-65535)"),
            }
        };
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    bail!("port range {item:?} in {text:?} runs backwards");
                }
                ports.extend(lo..=hi);
            }
            None => {
                ports.insert(port(item)?);
            }
        }
    }
    Ok(ports.into_iter().collect())
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/orch")
}
fn default_bind_addr() -> String {
    "127.0.0.1".to_string()
}
fn default_datacenter() -> String {
    "dc1".to_string()
}
fn default_region() -> String {
    "global".to_string()
}
fn default_log_level() -> String {
    "info".to_string()
}
fn default_http_port() -> u16 {
    4747
}
fn default_bootstrap_expect() -> u32 {
    1
}
fn default_heartbeat_min_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_max_count() -> u32 {
    orch_common::jobspec::MAX_COUNT
}

fn default_max_request_body_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_max_snapshot_bytes() -> u64 {
    orch_server::config::DEFAULT_MAX_SNAPSHOT_BYTES
}
fn yes() -> bool {
    true
}

impl AgentConfig {
    /// Parses the TOML text of an agent configuration; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AgentConfig> {
        let cfg: AgentConfig =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        cfg.check()
            .with_context(|| format!("{origin}: invalid agent configuration"))?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent configuration {}", path.display()))?;
        let mut cfg = AgentConfig::parse(&text, &path.display().to_string())?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        cfg.tls.resolve_from(dir.unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// `orch agent --dev`: server and client in one process on 127.0.0.1.
    pub fn dev(data_dir: PathBuf, http_port: u16) -> AgentConfig {
        AgentConfig {
            data_dir,
            bind_addr: default_bind_addr(),
            advertise_addr: None,
            datacenter: default_datacenter(),
            region: default_region(),
            name: None,
            log_level: default_log_level(),
            ports: PortsConfig {
                http: http_port,
                // Port 0 for HTTP means "anywhere free": the same for DNS, so that
                // several dev agents fit on one machine.
                dns: if http_port == 0 {
                    0
                } else {
                    default_dns_port()
                },
                rpc: if http_port == 0 {
                    0
                } else {
                    default_rpc_port()
                },
            },
            http: HttpSection::default(),
            acl: AclSection::default(),
            tls: TlsSection::default(),
            server: ServerSection {
                enabled: true,
                ..ServerSection::default()
            },
            // One trusted machine: its user runs everything, as `raw_exec` tasks or
            // containers from any of its (non-system) directories.
            client: ClientSection {
                enabled: true,
                raw_exec: true,
                allow_root_tasks: true,
                default_user: String::new(),
                container_rootfs: Some(vec![PathBuf::from("/")]),
                container_allow_caps: vec!["ALL".to_string()],
                container_allow_unconfined_seccomp: true,
                ..ClientSection::default()
            },
        }
    }

    /// Rules serde cannot express.
    fn check(&self) -> Result<()> {
        self.tls.check()?;
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!(
                "region {:?}: use lowercase letters, digits and '-' (it is part of the TLS names)",
                self.region
            );
        }
        if !self.server.enabled && !self.client.enabled {
            bail!("neither [server] nor [client] is enabled: set `enabled = true` in at least one");
        }
        if self.client.enabled && !self.server.enabled && self.client.servers.is_empty() {
            bail!("client.servers: a client-only agent needs at least one server address");
        }
        if self.client.min_dynamic_port > self.client.max_dynamic_port {
            bail!(
                "client.min_dynamic_port ({}) is above client.max_dynamic_port ({})",
                self.client.min_dynamic_port,
                self.client.max_dynamic_port
            );
        }
        self.client
            .reserved
            .ports()
            .context("client.reserved.reserved_ports")?;
        if self.client.pids_limit == 0 {
            bail!("client.pids_limit must be at least 1");
        }
        orch_client::driver::container::caps::parse_set(&self.client.container_allow_caps)
            .context("client.container_allow_caps")?;
        if let Some(roots) = &self.client.container_rootfs {
            if let Some(r) = roots.iter().find(|r| !r.is_absolute()) {
                bail!(
                    "client.container_rootfs: {} is not an absolute path",
                    r.display()
                );
            }
        }
        if self.server.gc_interval.is_zero() {
            bail!("server.gc_interval must be above 0");
        }
        let caps = orch_server::config::JOB_HISTORY_CAP_BOUNDS;
        for (name, value) in [
            (
                "gc_max_terminal_allocs_per_job",
                self.server.gc_max_terminal_allocs_per_job,
            ),
            (
                "gc_max_terminal_evals_per_job",
                self.server.gc_max_terminal_evals_per_job,
            ),
        ] {
            if !caps.contains(&value) {
                bail!(
                    "server.{name} = {value}: must be between {} and {}",
                    caps.start(),
                    caps.end()
                );
            }
        }
        let most = orch_common::jobspec::MAX_COUNT;
        if !(1..=most).contains(&self.server.max_count) {
            bail!(
                "server.max_count = {}: must be between 1 and {most} (the job spec's own bound)",
                self.server.max_count
            );
        }
        if self.server.enabled && self.server.bootstrap_expect == 0 {
            bail!("server.bootstrap_expect must be at least 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        if tracing_level_ok(&self.log_level).is_none() {
            bail!(
                "log_level {:?}: expected trace, debug, info, warn or error",
                self.log_level
            );
        }
        Ok(())
    }

    /// The host other agents reach this one at.
    pub fn advertise_host(&self) -> String {
        match &self.advertise_addr {
            Some(a) => a.clone(),
            None if self.bind_addr == "0.0.0.0" || self.bind_addr == "::" => {
                "127.0.0.1".to_string()
            }
            None => self.bind_addr.clone(),
        }
    }
}

fn tracing_level_ok(level: &str) -> Option<()> {
    matches!(
        level.to_ascii_lowercase().as_str(),
        "trace" | "debug" | "info" | "warn" | "error"
    )
    .then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERFACE_EXAMPLE: &str = r#"
# one file per agent; a server, a client, or both
data_dir = "/var/lib/orch"
bind_addr = "127.0.0.1"
datacenter = "dc1"
name = "node-1"                     # default: the hostname

[ports]
http = 4747                         # API (servers and clients)
dns = 4753                          # DNS, UDP and TCP (servers)

[server]
enabled = true
bootstrap_expect = 1                # 3 or 5 for a replicated cluster

[client]
enabled = true
servers = ["127.0.0.1:4747"]
node_class = "fast"
meta = { rack = "r1" }
reserved = { cpu = 200, memory = 256 }
"#;

    #[test]
    fn the_interface_example_parses() {
        let c = AgentConfig::parse(INTERFACE_EXAMPLE, "agent.toml").unwrap();
        assert_eq!(c.name.as_deref(), Some("node-1"));
        assert_eq!(c.ports.http, 4747);
        assert!(c.server.enabled && c.client.enabled);
        assert_eq!(c.client.node_class, "fast");
        assert_eq!(c.client.meta.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(
            c.client.reserved,
            ReservedConfig {
                cpu: 200,
                memory: 256,
                reserved_ports: String::new(),
            }
        );
        assert_eq!(c.client.min_dynamic_port, 20000);
        assert_eq!(c.ports.dns, 4753);
        assert!(c.server.dns);
        assert_eq!(c.server.dns_ttl, 0);
    }

    #[test]
    fn dns_port_switch_and_ttl_parse() {
        let c = AgentConfig::parse(
            "[ports]\ndns = 0\n[server]\nenabled = true\ndns = false\ndns_ttl = 5\n",
            "agent.toml",
        )
        .unwrap();
        assert_eq!(c.ports.dns, 0);
        assert!(!c.server.dns);
        assert_eq!(c.server.dns_ttl, 5);
        let err =
            AgentConfig::parse("[ports]\ndns = -1\n[server]\nenabled = true\n", "a").unwrap_err();
        assert!(format!("{err:#}").contains("dns"), "{err:#}");
        assert_eq!(AgentConfig::dev("/tmp/x".into(), 0).ports.dns, 0);
        assert_eq!(AgentConfig::dev("/tmp/x".into(), 4747).ports.dns, 4753);
    }

    #[test]
    fn pids_limit_defaults_to_1024_and_must_be_positive() {
        let base = "[client]\nenabled = true\nservers = [\"x:1\"]\n";
        let ok = AgentConfig::parse(base, "a.toml").unwrap();
        assert_eq!(ok.client.pids_limit, 1024);
        let set = AgentConfig::parse(&format!("{base}pids_limit = 64\n"), "a.toml").unwrap();
        assert_eq!(set.client.pids_limit, 64);
        let err = format!(
            "{:#}",
            AgentConfig::parse(&format!("{base}pids_limit = 0\n"), "a.toml").unwrap_err()
        );
        assert!(err.contains("pids_limit"), "{err}");
    }

    #[test]
    fn reserved_ports_take_single_ports_and_ranges() {
        assert_eq!(
            parse_port_list("22, 80,8000-8002,80").unwrap(),
            vec![22, 80, 8000, 8001, 8002]
        );
        assert_eq!(parse_port_list("").unwrap(), Vec::<u16>::new());
        assert!(parse_port_list("90-80").is_err());
        assert!(parse_port_list("http").is_err());
        assert!(parse_port_list("0").is_err());
        let err = format!(
            "{:#}",
            AgentConfig::parse(
                "[client]\nenabled = true\nservers = [\"x:1\"]\nreserved = { reserved_ports = \"22,70000\" }\n",
                "a.toml"
            )
            .unwrap_err()
        );
        assert!(
            err.contains("reserved_ports") && err.contains("70000"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_line_and_column() {
        let err = AgentConfig::parse("data_dir = \"/x\"\n[client]\nenabeld = true\n", "a.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("enabeld"), "{err}");
    }

    #[test]
    fn an_agent_with_nothing_enabled_is_refused() {
        let err = format!("{:#}", AgentConfig::parse("", "a.toml").unwrap_err());
        assert!(err.contains("neither [server] nor [client]"), "{err}");
    }

    #[test]
    fn a_client_only_agent_needs_servers() {
        let err = format!(
            "{:#}",
            AgentConfig::parse("[client]\nenabled = true\n", "a.toml").unwrap_err()
        );
        assert!(err.contains("client.servers"), "{err}");
    }

    #[test]
    fn durations_in_the_server_section_are_human() {
        let c = AgentConfig::parse(
            "[server]\nenabled = true\nheartbeat_grace = \"1m30s\"\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(c.server.heartbeat_grace, Duration::from_secs(90));
    }

    #[test]
    fn max_count_defaults_to_the_spec_bound_and_may_only_lower_it() {
        let c = AgentConfig::parse("[server]\nenabled = true\n", "a.toml").unwrap();
        assert_eq!(c.server.max_count, 10_000);
        let c = AgentConfig::parse("[server]\nenabled = true\nmax_count = 50\n", "a.toml").unwrap();
        assert_eq!(c.server.max_count, 50);
        for bad in ["0", "10001"] {
            let err = format!(
                "{:#}",
                AgentConfig::parse(
                    &format!("[server]\nenabled = true\nmax_count = {bad}\n"),
                    "a.toml"
                )
                .unwrap_err()
            );
            assert!(err.contains("max_count"), "{err}");
        }
    }

    #[test]
    fn garbage_collection_settings_parse_with_defaults() {
        let c = AgentConfig::parse(
            "[server]\nenabled = true\ngc_interval = \"30s\"\njob_gc_threshold = \"1h\"\ncommand_log_retain = 500\n",
            "a.toml",
        )
        .unwrap();
        let gc = c.server.gc();
        assert_eq!(gc.interval, Duration::from_secs(30));
        assert_eq!(gc.job_threshold, Duration::from_secs(3600));
        assert_eq!(gc.eval_threshold, Duration::from_secs(3600));
        assert_eq!(gc.batch_eval_threshold, Duration::from_secs(24 * 3600));
        assert_eq!(gc.node_threshold, Duration::from_secs(24 * 3600));
        assert_eq!(gc.command_log_retain, 500);
        let err = format!(
            "{:#}",
            AgentConfig::parse("[server]\nenabled = true\ngc_interval = \"0s\"\n", "a.toml")
                .unwrap_err()
        );
        assert!(err.contains("gc_interval"), "{err}");
        let err = format!(
            "{:#}",
            AgentConfig::parse("[server]\nenabled = true\ngc_treshold = \"1h\"\n", "a.toml")
                .unwrap_err()
        );
        assert!(err.contains("gc_treshold"), "{err}");
    }

    #[test]
    fn the_per_job_history_caps_default_to_fifty_and_are_bounded() {
        let caps = |lines: &str| {
            let gc = AgentConfig::parse(&format!("[server]\nenabled = true\n{lines}"), "a.toml")
                .unwrap()
                .server
                .gc();
            (
                gc.max_terminal_allocs_per_job,
                gc.max_terminal_evals_per_job,
            )
        };
        assert_eq!(caps(""), (50, 50));
        assert_eq!(
            caps("gc_max_terminal_allocs_per_job = 5\ngc_max_terminal_evals_per_job = 10000\n"),
            (5, 10_000)
        );
        for bad in [
            "gc_max_terminal_allocs_per_job = 0",
            "gc_max_terminal_evals_per_job = 10001",
        ] {
            let err = format!(
                "{:#}",
                AgentConfig::parse(&format!("[server]\nenabled = true\n{bad}\n"), "a.toml")
                    .unwrap_err()
            );
            assert!(err.contains("must be between 1 and 10000"), "{err}");
            assert!(err.contains(bad.split(' ').next().unwrap()), "{err}");
        }
    }

    #[test]
    fn the_deploy_example_configs_parse() {
        let s = AgentConfig::parse(include_str!("../deploy/server.toml"), "server.toml").unwrap();
        assert!(s.server.enabled && !s.client.enabled);
        let c = AgentConfig::parse(include_str!("../deploy/client.toml"), "client.toml").unwrap();
        assert!(c.client.enabled && !c.server.enabled);
        assert_ne!(s.ports.http, c.ports.http, "both fit on one machine");
        for cfg in [&s, &c] {
            assert!(cfg.acl.enabled && cfg.tls.http, "secure by default");
            assert!(cfg.tls.verify_https_client);
            assert!(!cfg.client.raw_exec && !cfg.client.allow_root_tasks);
        }
    }

    #[test]
    fn dev_enables_both_on_loopback() {
        let c = AgentConfig::dev(PathBuf::from("/tmp/x"), 0);
        assert!(c.server.enabled && c.client.enabled);
        assert_eq!(c.bind_addr, "127.0.0.1");
        assert_eq!(c.datacenter, "dc1");
        assert!(c.check().is_ok());
    }
}
