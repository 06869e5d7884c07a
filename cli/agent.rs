//! `orch agent`: runs a server, a client, or both in this process, serving their HTTP
//! routes on one listener, until SIGTERM/SIGINT.
//!
//! ```text
//!  load config ─> bind listener (port 0 ok) ─> start server ─> start client ─> serve
//!                                                                              │
//!  exit 0 <─ server.shutdown <─ stop HTTP <─ client.shutdown <─ SIGTERM/SIGINT ┘
//! ```
//!
//! The client stops first while the HTTP API still answers, so that in a combined agent
//! its last status reports reach the server; a second signal exits at once. With
//! `[tls] http = true` the listener is HTTPS and SIGHUP reloads the certificate files.
//! A required background loop that fails (`orch_common::supervise`) stops the agent the
//! same orderly way, and it then exits 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use futures::future::BoxFuture;
use orch_client::rpc::RpcError;
use orch_common::acl::Grants;
use orch_common::model::Resources;
use orch_common::supervise::Health;
use orch_common::tls::Tls;
use orch_server::http::authorize::TokenResolver;
use orch_server::http::browser_guard::{self, OriginPolicy};
use orch_server::http::serve::{serve, ServeLimits};
use orch_server::http::tls::{node_routes_need_agent_certificate, Peer, TlsListener};
use orch_server::http::ApiError;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::agent_config::AgentConfig;

#[derive(Args, Debug)]
#[command(after_help = AGENT_EXAMPLES)]
pub struct AgentArgs {
    /// Server and client in one process, data in a fresh temporary directory.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Agent configuration file (TOML): a server, a client, or both.
    #[arg(long, value_name = "FILE", required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Data directory (overrides the file's `data_dir`; with --dev, kept on exit).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP port (overrides `[ports] http`; 0 picks a free port).
    #[arg(long, value_name = "N")]
    http_port: Option<u16>,
    /// DNS port, UDP and TCP (overrides `[ports] dns`; 0 picks a free port). With
    /// --dev, `--http-port 0` alone also picks a free DNS port.
    #[arg(long, value_name = "N")]
    dns_port: Option<u16>,
    /// Raft RPC port of a server (overrides `[ports] rpc`; 0 picks a free port). With
    /// --dev, `--http-port 0` alone also picks a free RPC port.
    #[arg(long, value_name = "N")]
    rpc_port: Option<u16>,
}

const AGENT_EXAMPLES: &str = "EXAMPLES:
  orch agent --dev
  orch agent --dev --http-port 0 --data-dir /tmp/orch-dev
  orch agent --dev --dns-port 5353
  orch agent --config /etc/orch/server.toml

When ready it prints `orch agent: listening on http://ADDR:PORT` (https:// with
[tls] http = true) to stderr, after `orch agent: DNS on ADDR:PORT (udp, tcp)` when it
is a server with DNS on. SIGTERM or SIGINT stops it cleanly (a second signal exits at
once); SIGHUP reloads the [tls] certificate files.";

/// How long open HTTP requests (blocking queries, log streams) may run on at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// Reads the configuration (file or `--dev`) with the command-line overrides applied.
/// With `--dev` and no `--data-dir`, also returns the temp dir that must outlive the agent.
fn load(args: &AgentArgs) -> Result<(AgentConfig, Option<tempfile::TempDir>)> {
    let mut temp = None;
    let mut cfg = if args.dev {
        let dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("orch-dev-")
                    .tempdir()
                    .context("creating the --dev data directory")?;
                let p = t.path().to_path_buf();
                temp = Some(t);
                p
            }
        };
        AgentConfig::dev(dir, 4747)
    } else {
        let path = args
            .config
            .as_deref()
            .context("either --dev or --config FILE is required")?;
        AgentConfig::load(path)?
    };
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(p) = args.http_port {
        cfg.ports.http = p;
        if args.dev && p == 0 {
            cfg.ports.dns = 0;
            cfg.ports.rpc = 0;
        }
    }
    if let Some(p) = args.dns_port {
        cfg.ports.dns = p;
    }
    if let Some(p) = args.rpc_port {
        cfg.ports.rpc = p;
    }
    Ok((cfg, temp))
}

/// The HTTP listener, with a backlog (4096, the kernel caps it at `somaxconn`) that a
/// burst of connections does not overflow: tokio's default of 1024 made clients wait
/// for SYN retransmits (1 s and up) while thousands of connections arrived at once.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Creates the data dir 0711 whatever the umask, and takes group and other read and
/// write off one that exists: it holds the state (every job's environment, ACL tokens)
/// and the client's secret. Others keep only "pass through" (x), because tasks that
/// run as another user (`nobody`) must reach their own directory under `alloc/`; the
/// state (`server/`) and the client's files (`client/`) are 0700 themselves.
fn private_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o066 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o066))?;
    }
    Ok(())
}

/// Serves `router` on `listener` (HTTPS with `tls`) until the sender is used or
/// dropped.
#[allow(clippy::type_complexity)]
fn spawn_serving(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&Arc<Tls>>,
) -> Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let limits = ServeLimits::default();
    let task = match tls {
        None => tokio::spawn(serve(
            listener,
            router,
            limits,
            |addr| Peer { addr, roles: None },
            stopped,
        )),
        Some(tls) => {
            let listener = TlsListener::new(listener, tls.clone())
                .map_err(|e| anyhow::anyhow!("[tls]: {e}"))?;
            tokio::spawn(serve(listener, router, limits, |peer| peer, stopped))
        }
    };
    Ok((stop_tx, task))
}

/// `host:port` for a bind address that may be IPv4 or IPv6.
fn socket_addr(host: &str, port: u16) -> Result<SocketAddr> {
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .with_context(|| format!("bind_addr {host:?} is not an IP address"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "orch".to_string())
}

/// Token lookups of a client-only agent: the servers' answer, their 403 passed on.
struct ServersResolve(Arc<orch_client::TokenCache>);

impl TokenResolver for ServersResolve {
    fn grants(&self, secret: Option<String>) -> BoxFuture<'_, Result<Grants, ApiError>> {
        Box::pin(async move {
            self.0.grants(secret.as_deref()).await.map_err(|e| match e {
                RpcError::Status {
                    status: 403,
                    message,
                    ..
                } => ApiError::Forbidden(message),
                other => ApiError::Unavailable(format!(
                    "cannot check the ACL token with the servers: {other}"
                )),
            })
        })
    }
}

/// SIGHUP: new connections use the certificate files as they are now; a file that
/// does not load leaves the ones in use (and says why).
fn reload_tls(tls: Option<&Tls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP received; nothing to reload without [tls]");
        return;
    };
    match tls.reload() {
        Ok(()) => {
            tracing::info!("SIGHUP received: reloaded the TLS certificates");
            eprintln!("orch agent: reloaded the TLS certificates");
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP received: keeping the TLS certificates in use");
            eprintln!("orch agent: TLS reload failed, keeping the certificates in use: {e}");
        }
    }
}

pub async fn run(args: AgentArgs) -> Result<ExitCode> {
    let (cfg, temp_dir) = load(&args)?;
    crate::init_logging(&cfg.log_level.to_ascii_lowercase());
    private_data_dir(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let data_dir = cfg
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving data_dir {}", cfg.data_dir.display()))?;

    let tls = match cfg.tls.files() {
        Some(files) => Some(
            Tls::load(files, &cfg.region, cfg.tls.verify_https_client)
                .context("[tls]: loading the certificates")?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    let bind = socket_addr(&cfg.bind_addr, cfg.ports.http)?;
    let listener = listen(bind).with_context(|| format!("binding the HTTP API to {bind}"))?;
    let port = listener.local_addr()?.port();
    let advertise = format!("{}:{port}", cfg.advertise_host());
    let origins = OriginPolicy::new(&advertise, port, &cfg.http.allowed_origins)
        .map_err(|e| anyhow::anyhow!("[http] {e}"))?;
    let name = cfg.name.clone().unwrap_or_else(host_name);
    // One registry for the server's and the client's supervised loops: health reports
    // them all, and a required one's failure stops this process (below).
    let health = Health::new();

    // Raft traffic between servers: its own port, the same TLS as HTTP.
    let rpc_listener = if cfg.server.enabled {
        let bind = socket_addr(&cfg.bind_addr, cfg.ports.rpc)?;
        Some(listen(bind).with_context(|| format!("binding the Raft RPC port to {bind}"))?)
    } else {
        None
    };
    let advertise_rpc = match &rpc_listener {
        Some(l) => format!("{}:{}", cfg.advertise_host(), l.local_addr()?.port()),
        None => String::new(),
    };

    let server = if cfg.server.enabled {
        let defaults = orch_server::config::ServerConfig::default();
        // `..defaults` keeps working when the server grows new settings.
        #[allow(clippy::needless_update)]
        let scfg = orch_server::config::ServerConfig {
            data_dir: data_dir.clone(),
            name: name.clone(),
            datacenter: cfg.datacenter.clone(),
            bootstrap_expect: cfg.server.bootstrap_expect,
            raft: cfg.server.raft(advertise_rpc.clone()),
            num_schedulers: if cfg.server.num_schedulers == 0 {
                defaults.num_schedulers
            } else {
                cfg.server.num_schedulers
            },
            heartbeat_min_ttl: cfg.server.heartbeat_min_ttl,
            heartbeat_grace: cfg.server.heartbeat_grace,
            max_request_body_bytes: cfg.server.max_request_body_bytes,
            max_snapshot_bytes: cfg.server.max_snapshot_bytes,
            max_count: cfg.server.max_count,
            advertise_http: advertise.clone(),
            gc: cfg.server.gc(),
            tls: tls.clone(),
            health: health.clone(),
            ..defaults
        };
        let s = orch_server::server::Server::start(scfg)
            .await
            .context("starting the server")?;
        Some(s)
    } else {
        None
    };

    let client = if cfg.client.enabled {
        let servers = if cfg.client.servers.is_empty() {
            vec![advertise.clone()]
        } else {
            cfg.client.servers.clone()
        };
        let ccfg = orch_client::ClientConfig {
            data_dir: data_dir.clone(),
            servers,
            name: name.clone(),
            datacenter: cfg.datacenter.clone(),
            node_class: cfg.client.node_class.clone(),
            meta: cfg.client.meta.clone(),
            reserved: Resources {
                cpu: cfg.client.reserved.cpu,
                memory: cfg.client.reserved.memory,
                memory_max: None,
                ..Default::default()
            },
            http_advertise: advertise.clone(),
            min_dynamic_port: cfg.client.min_dynamic_port,
            max_dynamic_port: cfg.client.max_dynamic_port,
            stop_tasks_on_shutdown: cfg.client.stop_tasks_on_shutdown,
            reserved_ports: cfg.client.reserved.ports()?,
            container_volumes: cfg.client.container_volumes.clone(),
            container: orch_client::driver::container::ContainerPolicy {
                rootfs_roots: cfg
                    .client
                    .container_rootfs
                    .clone()
                    .unwrap_or_else(|| vec![data_dir.join("images")]),
                allow_caps: orch_client::driver::container::caps::parse_set(
                    &cfg.client.container_allow_caps,
                )
                .context("client.container_allow_caps")?,
                allow_host_network: cfg.client.container_host_network,
                allow_unconfined_seccomp: cfg.client.container_allow_unconfined_seccomp,
                protected_dirs: Vec::new(),
            },
            pids_limit: cfg.client.pids_limit,
            raw_exec: cfg.client.raw_exec,
            allow_root_tasks: cfg.client.allow_root_tasks,
            default_user: Some(cfg.client.default_user.clone()).filter(|u| !u.is_empty()),
            tls: tls.clone(),
            health: health.clone(),
            ..orch_client::ClientConfig::default()
        };
        match orch_client::Client::start(ccfg).await {
            Ok(c) => Some(c),
            Err(e) => {
                if let Some(s) = server {
                    s.shutdown().await;
                }
                return Err(anyhow::Error::new(e).context("starting the client"));
            }
        }
    } else {
        None
    };

    let dns = match &server {
        Some(s) if cfg.server.enabled && cfg.server.dns => {
            let addr = socket_addr(&cfg.bind_addr, cfg.ports.dns)?;
            let started =
                orch_server::dns::DnsServer::start(addr, s.store().clone(), cfg.server.dns_ttl)
                    .await;
            match started {
                Ok(d) => Some(d),
                Err(e) => {
                    if let Some(c) = client {
                        c.shutdown().await;
                    }
                    if let Some(s) = server {
                        s.shutdown().await;
                    }
                    return Err(anyhow::Error::new(e).context("starting the DNS interface"));
                }
            }
        }
        _ => None,
    };

    if let (Some(s), Some(c)) = (&server, &client) {
        s.set_client_node_id(Some(c.node_id()));
    }
    let mut router = axum::Router::new();
    if let Some(s) = &server {
        router = router.merge(s.router());
    }
    match (&server, &client) {
        (Some(_), Some(c)) => router = router.merge(c.router()),
        (None, Some(c)) => router = router.merge(c.router()).merge(c.health_router()),
        (Some(s), None) => router = router.merge(s.client_forward_router()),
        (None, None) => {}
    }

    // With ACLs on, every route checks the caller's token: against the store on an
    // agent that runs a server, else through the servers (cached briefly).
    let tokens: Option<Arc<dyn TokenResolver>> = match (&server, &client) {
        _ if !cfg.acl.enabled => None,
        (Some(s), _) => Some(s.tokens()),
        (None, Some(c)) => Some(Arc::new(ServersResolve(c.tokens()))),
        (None, None) => None,
    };
    let router = match tokens {
        Some(tokens) => router.layer(axum::middleware::from_fn_with_state(
            tokens,
            orch_server::http::authorize::authorize,
        )),
        None => router,
    };
    let router = match &tls {
        Some(_) => router.layer(axum::middleware::from_fn(
            node_routes_need_agent_certificate,
        )),
        None => router,
    };
    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(origins),
        browser_guard::guard,
    ));
    let (stop_http_tx, mut http) = spawn_serving(listener, router, tls.as_ref())?;

    // The Raft RPC listener: only servers may call it (a server certificate with TLS).
    let rpc = match (&server, rpc_listener) {
        (Some(s), Some(listener)) => {
            let (stop_tx, task) = spawn_serving(listener, s.rpc_router(), tls.as_ref())?;
            eprintln!("orch agent: Raft RPC on {advertise_rpc}");
            Some((stop_tx, task))
        }
        _ => None,
    };
    // Before the ready line: whoever reads it may signal at once (a signal before
    // the handlers exist would kill the process without a shutdown).
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    if let Some(d) = &dns {
        eprintln!("orch agent: DNS on {} (udp, tcp)", d.local_addr());
    }
    eprintln!("orch agent: listening on {scheme}://{advertise}");
    tracing::info!(
        server = cfg.server.enabled,
        client = cfg.client.enabled,
        data_dir = %data_dir.display(),
        node_id = %client.as_ref().map(|c| c.node_id()).unwrap_or_default(),
        "agent started"
    );

    let loop_failed = health.fatal_failure();
    tokio::pin!(loop_failed);
    // A required loop that panicked (or a restartable one that kept panicking) leaves
    // the agent half-alive: stop everything in order, then exit non-zero, so that a
    // service manager restarts the process.
    let mut fatal = None;
    let served_until_error = loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM received, shutting down"); break None }
            _ = sigint.recv() => { tracing::info!("SIGINT received, shutting down"); break None }
            _ = sighup.recv() => reload_tls(tls.as_deref()),
            r = &mut http => break Some(r),
            why = &mut loop_failed => {
                tracing::error!(reason = %why, "a required background loop failed; shutting down");
                eprintln!("orch agent: {why}; shutting down");
                fatal = Some(why);
                break None;
            }
        }
    };
    // A second signal means "now": skip the orderly shutdown.
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        eprintln!("orch agent: second signal, exiting immediately");
        std::process::exit(1);
    });

    if let Some(c) = client {
        c.shutdown().await;
    }
    // Long polls would otherwise hold the graceful HTTP shutdown open for their wait.
    if let Some(s) = &server {
        s.stop_blocking_queries();
    }
    let _ = stop_http_tx.send(());
    if served_until_error.is_none() && tokio::time::timeout(HTTP_DRAIN, &mut http).await.is_err() {
        // Followed log streams never end by themselves.
        http.abort();
    }
    if let Some(d) = dns {
        d.shutdown().await;
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    // After the server: its Raft answers its peers until it has stopped.
    if let Some((stop, mut task)) = rpc {
        let _ = stop.send(());
        if tokio::time::timeout(HTTP_DRAIN, &mut task).await.is_err() {
            task.abort();
        }
    }
    drop(temp_dir);
    tracing::info!("agent stopped");
    if let Some(why) = fatal {
        return Err(anyhow::anyhow!("a required background loop failed: {why}"));
    }
    match served_until_error {
        Some(Ok(Ok(()))) | None => Ok(ExitCode::SUCCESS),
        Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("serving the HTTP API")),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server task failed")),
    }
}
