//! The `orch` binary: the agent (`orch agent`) and the command-line interface to the
//! HTTP API (`orch job|deployment|alloc|node|service ...`). One module per subcommand
//! group; `monitor.rs` follows a registration for `job run|scale|revert`.
//!
//! Exit status: 0 ok, 1 error (`Error: ...` on stderr), 2 bad usage (clap) or, for
//! `orch job run`, failed placements. `orch job plan` differs (as Nomad's): 0 no
//! allocation changes, 1 allocations created or destroyed, 255 error.

mod acl;
mod agent;
mod agent_config;
mod alloc;
mod alloc_exec;
mod api_client;
mod deployment;
mod history;
mod job;
mod monitor;
mod node;
mod operator;
mod operator_raft;
mod operator_snapshot;
mod output;
mod plan;
mod server;
mod service;
mod system;
mod tls;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc, not the system allocator: the scheduler and the state writer allocate and
/// free many small strings and maps per placement, often on different threads. On the
/// c1m benchmark it cut CPU time by a quarter for about 12% more peak memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A lightweight cluster workload scheduler.
#[derive(Parser, Debug)]
#[command(name = "orch", version, about, after_help = MAIN_EXAMPLES)]
struct Cli {
    /// Address of the orch agent's HTTP API [default: http://127.0.0.1:4747, or
    /// https:// with --ca-cert].
    #[arg(long, global = true, env = "ORCH_ADDR")]
    address: Option<String>,
    /// Access token, sent as the X-Orch-Token header.
    #[arg(long, global = true, env = "ORCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) that agents' HTTPS certificates are checked against.
    #[arg(long, global = true, env = "ORCH_CACERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Certificate (PEM) to present to agents that verify their callers
    /// (`orch tls cert create --cli`).
    #[arg(
        long,
        global = true,
        env = "ORCH_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(
        long,
        global = true,
        env = "ORCH_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const MAIN_EXAMPLES: &str = "EXAMPLES:
  orch agent --dev
  orch job plan jobspecs/hello.toml
  orch job run jobspecs/hello.toml
  orch job status hello
  orch deployment status 1f2e3d4c
  orch alloc logs -f 8f3c2a1b
  orch node status
  orch server members

Environment: ORCH_ADDR (default http://127.0.0.1:4747), ORCH_TOKEN, ORCH_CACERT,
ORCH_CLIENT_CERT, ORCH_CLIENT_KEY, RUST_LOG.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an agent: a server, a client, or both.
    Agent(agent::AgentArgs),
    /// Submit, inspect and stop jobs.
    #[command(
        subcommand,
        after_help = "EXAMPLES:\n  orch job plan jobspecs/hello.toml\n  orch job run jobspecs/hello.toml\n  orch job status hello\n  orch job scale hello web 3\n  orch job history -p hello\n  orch job revert hello 2\n  orch job stop hello"
    )]
    Job(job::JobCommand),
    /// Follow and steer rolling updates: list, status, promote, fail, pause, resume.
    #[command(subcommand, after_help = deployment::DEPLOYMENT_EXAMPLES)]
    Deployment(deployment::DeploymentCommand),
    /// Inspect allocations and read their logs.
    #[command(
        subcommand,
        after_help = "EXAMPLES:\n  orch alloc status 8f3c2a1b\n  orch alloc logs -f 8f3c2a1b"
    )]
    Alloc(alloc::AllocCommand),
    /// Inspect client nodes.
    #[command(
        subcommand,
        after_help = "EXAMPLES:\n  orch node status\n  orch node status 3f1d9c2e"
    )]
    Node(node::NodeCommand),
    /// Find services: the catalog of running instances with their addresses and health.
    #[command(
        subcommand,
        after_help = "EXAMPLES:\n  orch service list\n  orch service info web\n  orch service info web --healthy --json"
    )]
    Service(service::ServiceCommand),
    /// Cluster-wide settings for operators (the scheduler configuration, state
    /// snapshots, the Raft peers).
    #[command(
        subcommand,
        after_help = "EXAMPLES:\n  orch operator scheduler get-config\n  orch operator scheduler set-config --scheduler-algorithm spread\n  orch operator snapshot save backup.snap\n  orch operator snapshot restore backup.snap\n  orch operator raft list-peers\n  orch operator raft remove-peer --peer-id 3"
    )]
    Operator(operator::OperatorCommand),
    /// The servers of the cluster: who they are, which leads, whether they are alive.
    #[command(subcommand, after_help = server::SERVER_EXAMPLES)]
    Server(server::ServerCommand),
    /// Access control: the bootstrap, policies and tokens.
    #[command(subcommand, after_help = acl::ACL_EXAMPLES)]
    Acl(acl::AclCommand),
    /// Mutual TLS: create a CA and the certificates of servers, clients and the CLI.
    #[command(subcommand, after_help = tls::TLS_EXAMPLES)]
    Tls(tls::TlsCommand),
    /// Cluster-wide maintenance: garbage collection on demand.
    #[command(
        subcommand,
        after_help = "EXAMPLES:\n  orch system gc\n  orch system gc --json"
    )]
    System(system::SystemCommand),
    /// The container driver's helper: builds one container from the JSON spec on
    /// stdin and runs its command (started by the agent, never by hand).
    #[command(hide = true)]
    ContainerInit,
    /// The launcher of raw_exec task shims: forks one supervisor per task the client
    /// asks for, which runs the command, waits for it and records its exit, so the
    /// task outlives a client restart (started by the agent, never by hand).
    #[command(hide = true)]
    TaskShim,
}

/// Installs the tracing subscriber on stderr: `RUST_LOG` when set, else `default_level`.
pub fn init_logging(default_level: &str) {
    // openraft narrates every vote and append at info: its warnings are what an
    // operator needs (orch logs the leadership changes itself).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},openraft=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// What every API command needs: where the server is, how to reach it and how to print.
pub struct Ctx {
    pub address: String,
    pub token: Option<String>,
    pub json: bool,
    /// The CA and the CLI's certificate, for HTTPS.
    pub tls: Option<orch_common::tls::TlsFiles>,
}

impl Ctx {
    pub fn api(&self) -> Result<api_client::ApiClient> {
        api_client::ApiClient::new(&self.address, self.token.clone(), self.tls.clone())
    }
}

/// Threads for blocking work (cgroup and file system calls, SQLite reads). Tokio's
/// default, 512, lets a burst of task starts run hundreds of cgroup mkdirs at once,
/// which all queue on the kernel's one cgroup lock: in interleaved runs 200 batch
/// tasks took a median 400-475 ms and 0.9-1.1 s of cpu with it, 360-370 ms and
/// 0.7-0.8 s with 16-64 threads. 64 leaves room for slow calls (an image unpack, a
/// stubborn kill) without starving the rest.
const MAX_BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    // The task shim launcher takes no arguments: skip building the whole command
    // line parser for it.
    if std::env::args_os().nth(1).is_some_and(|a| a == "task-shim")
        && std::env::args_os().len() == 2
    {
        let code = orch_client::shim::main();
        return ExitCode::from(u8::try_from(code).unwrap_or(127));
    }
    let cli = Cli::parse();
    if let Command::ContainerInit = cli.command {
        // Before any runtime thread exists: the helper unshares and forks.
        let code = orch_client::driver::container::init::main();
        return ExitCode::from(u8::try_from(code).unwrap_or(127));
    }
    if let Command::TaskShim = cli.command {
        // No runtime: the launcher and its shims are single-threaded.
        let code = orch_client::shim::main();
        return ExitCode::from(u8::try_from(code).unwrap_or(127));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match (cli.ca_cert, cli.client_cert.zip(cli.client_key)) {
        (Some(ca_file), identity) => Some(orch_common::tls::TlsFiles { ca_file, identity }),
        (None, Some(_)) => {
            eprintln!(
                "Error: --client-cert (ORCH_CLIENT_CERT) needs --ca-cert (ORCH_CACERT) to check the agent's certificate"
            );
            return ExitCode::from(2);
        }
        (None, None) => None,
    };
    let ctx = Ctx {
        address: cli.address.unwrap_or_else(|| "127.0.0.1:4747".to_string()),
        token: cli.token,
        json: cli.json,
        tls,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => agent::run(args).await,
            Command::Job(c) => {
                init_logging("warn");
                job::run(&ctx, c).await
            }
            Command::Deployment(c) => {
                init_logging("warn");
                deployment::run(&ctx, c).await
            }
            Command::Alloc(c) => {
                init_logging("warn");
                alloc::run(&ctx, c).await
            }
            Command::Node(c) => {
                init_logging("warn");
                node::run(&ctx, c).await
            }
            Command::Service(c) => {
                init_logging("warn");
                service::run(&ctx, c).await
            }
            Command::Operator(c) => {
                init_logging("warn");
                operator::run(&ctx, c).await
            }
            Command::Server(c) => {
                init_logging("warn");
                server::run(&ctx, c).await
            }
            Command::System(c) => {
                init_logging("warn");
                system::run(&ctx, c).await
            }
            Command::Acl(c) => {
                init_logging("warn");
                acl::run(&ctx, c).await
            }
            Command::Tls(c) => tls::run(c),
            // Handled above, before the runtime started.
            Command::ContainerInit => anyhow::bail!("container-init cannot run here"),
            Command::TaskShim => anyhow::bail!("task-shim cannot run here"),
        }
    });
    // Don't wait for leftover background tasks (e.g. an aborted watch) on exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
