//! `ClientConfig`: everything a client agent needs to start, with a documented default
//! for every field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use orch_common::model::{default_max_dynamic_port, default_min_dynamic_port, Resources};
use orch_common::supervise::Health;
use orch_common::tls::Tls;

use crate::driver::container::ContainerPolicy;

/// Settings of one client agent. The agent (cli) fills it from the agent configuration
/// file or `--dev`; tests build it with `..Default::default()`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Root of the client's files: `client/` (node id, task handles) and `alloc/` (one
    /// directory per allocation). Default: `/var/lib/orch`.
    pub data_dir: PathBuf,
    /// Servers to register with, tried in order: `"127.0.0.1:4747"` or
    /// `"http://127.0.0.1:4747"`. Default: `["127.0.0.1:4747"]`.
    pub servers: Vec<String>,
    /// Node name. Default: empty, meaning the host name.
    pub name: String,
    /// Default: `"dc1"`.
    pub datacenter: String,
    /// Free-form class for constraints. Default: empty.
    pub node_class: String,
    /// Node metadata (`${meta.key}`). Default: empty.
    pub meta: BTreeMap<String, String>,
    /// Capacity held back for the OS and the agent. Default: nothing (0 MHz, 0 MiB).
    pub reserved: Resources,
    /// `host:port` where this client's HTTP API (logs) is reachable; recorded as the
    /// node's `http_addr`. Default: `"127.0.0.1:4747"`.
    pub http_advertise: String,
    /// Dynamic port range for allocations. Defaults: 20000..=32000.
    pub min_dynamic_port: u16,
    pub max_dynamic_port: u16,
    /// Host ports no allocation is ever given (static or dynamic), e.g. sshd's 22.
    /// Default: none.
    pub reserved_ports: Vec<u16>,
    /// Kill every task and remove its cgroup when the client shuts down. Default: true
    /// (re-attaching after a restart is not built yet, so tasks are never left
    /// unsupervised).
    pub stop_tasks_on_shutdown: bool,
    /// Root of the cgroup file systems. Default: `None`, meaning `/sys/fs/cgroup` with
    /// the version detected from `/proc/mounts`.
    pub cgroup_root: Option<PathBuf>,
    /// Most processes (and threads) one task may have: the default for tasks that do
    /// not set `resources.pids`, and the most they may set. Default: 1024.
    pub pids_limit: u64,
    /// Offer the `mock` driver (runs no process; for tests). Default: false.
    pub enable_mock_driver: bool,
    /// Host paths (with everything below them) that `container` tasks may bind with
    /// `volumes`. Default: none, so no volumes.
    pub container_volumes: Vec<PathBuf>,
    /// What `container` tasks may ask for: root filesystems (`container_rootfs`),
    /// capabilities, the host's network, no seccomp filter. The client's own state dirs
    /// are always refused as root filesystems. Default: `ContainerPolicy::default()`.
    pub container: ContainerPolicy,
    /// Offer `raw_exec` (a privilege: its tasks are host processes). Default: false,
    /// so the driver reports itself disabled and nothing is placed for it here.
    pub raw_exec: bool,
    /// Let `raw_exec` tasks run as root. Default: false.
    pub allow_root_tasks: bool,
    /// The user of a `raw_exec` task that names none (`None`: the client's own user).
    /// Default: `nobody`.
    pub default_user: Option<String>,
    /// The agent's TLS identity: with it, calls to servers are HTTPS, present this
    /// certificate and accept only a server's. Default: none (plain HTTP).
    pub tls: Option<Arc<Tls>>,
    /// Where the client's supervised loops report (shared with the agent's server and
    /// watched by the agent process). Default: a registry of its own.
    pub health: Health,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            data_dir: PathBuf::from("/var/lib/orch"),
            servers: vec!["127.0.0.1:4747".to_string()],
            name: String::new(),
            datacenter: "dc1".to_string(),
            node_class: String::new(),
            meta: BTreeMap::new(),
            reserved: Resources::ZERO,
            http_advertise: "127.0.0.1:4747".to_string(),
            min_dynamic_port: default_min_dynamic_port(),
            max_dynamic_port: default_max_dynamic_port(),
            reserved_ports: Vec::new(),
            stop_tasks_on_shutdown: true,
            cgroup_root: None,
            pids_limit: crate::cgroups::DEFAULT_PIDS_MAX,
            enable_mock_driver: false,
            container_volumes: Vec::new(),
            container: ContainerPolicy::default(),
            raw_exec: false,
            allow_root_tasks: false,
            default_user: Some("nobody".to_string()),
            tls: None,
            health: Health::default(),
        }
    }
}

impl ClientConfig {
    /// `<data_dir>/client`: node id and persisted task handles.
    pub fn client_dir(&self) -> PathBuf {
        self.data_dir.join("client")
    }

    /// `<data_dir>/alloc`: one directory per allocation.
    pub fn alloc_root(&self) -> PathBuf {
        self.data_dir.join("alloc")
    }
}
