//! `orch tls ca create` and `orch tls cert create --server|--client|--cli`: a CA and the
//! certificates it signs, as PEM files in the current (or given) directory, named as
//! Nomad names them (`orch-agent-ca.pem`, `global-server-orch.pem`, ...). Keys are
//! written 0600 and nothing is overwritten.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use orch_common::tls::issue::{self, CertRequest, Issued};
use orch_common::tls::Role;

pub const TLS_EXAMPLES: &str = "EXAMPLES:
  orch tls ca create
  orch tls cert create --server --additional-ipaddress 10.0.0.5
  orch tls cert create --client
  orch tls cert create --cli

Then, in each agent's configuration:
  [tls]
  http = true
  ca_file = \"orch-agent-ca.pem\"
  cert_file = \"global-server-orch.pem\"        # global-client-orch.pem on clients
  key_file = \"global-server-orch-key.pem\"

and for the CLI:
  export ORCH_ADDR=https://127.0.0.1:4747 ORCH_CACERT=orch-agent-ca.pem
  export ORCH_CLIENT_CERT=global-cli-orch.pem ORCH_CLIENT_KEY=global-cli-orch-key.pem";

const CA_CERT: &str = "orch-agent-ca.pem";
const CA_KEY: &str = "orch-agent-ca-key.pem";

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Create or inspect the certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Create certificates signed by the CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a CA: orch-agent-ca.pem and orch-agent-ca-key.pem.
    #[command(
        after_help = "EXAMPLES:\n  orch tls ca create\n  orch tls ca create --days 3650 --dir /etc/orch/tls"
    )]
    Create(CaCreateArgs),
}

#[derive(Args, Debug)]
pub struct CaCreateArgs {
    /// Days the CA is valid (1-3650).
    #[arg(long, default_value_t = 1825)]
    days: u32,
    /// The region the CA's name mentions.
    #[arg(long, default_value = "global")]
    region: String,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create a certificate for a server, a client or the CLI.
    #[command(
        after_help = "EXAMPLES:\n  orch tls cert create --server\n  orch tls cert create --server --additional-dnsname orch-1.example.com --additional-ipaddress 10.0.0.5\n  orch tls cert create --client --region eu\n  orch tls cert create --cli"
    )]
    Create(CertCreateArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["server", "client", "cli"])))]
pub struct CertCreateArgs {
    /// A server's certificate (server.<region>.orch).
    #[arg(long)]
    server: bool,
    /// A client's certificate (client.<region>.orch).
    #[arg(long)]
    client: bool,
    /// The CLI's certificate (cli.<region>.orch; it can call agents, not be one).
    #[arg(long)]
    cli: bool,
    /// The region the agents are in.
    #[arg(long, default_value = "global")]
    region: String,
    /// Days the certificate is valid (1-3650).
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// The CA certificate [default: orch-agent-ca.pem in --dir].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The CA's private key [default: orch-agent-ca-key.pem in --dir].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Another DNS name the agent is reached by (repeatable).
    #[arg(long = "additional-dnsname", value_name = "NAME")]
    dns_names: Vec<String>,
    /// Another IP address the agent is reached at (repeatable).
    #[arg(long = "additional-ipaddress", value_name = "IP")]
    ip_addresses: Vec<IpAddr>,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

pub fn run(command: TlsCommand) -> Result<ExitCode> {
    match command {
        TlsCommand::Ca(CaCommand::Create(args)) => create_ca(args),
        TlsCommand::Cert(CertCommand::Create(args)) => create_cert(args),
    }
}

fn check_region(region: &str) -> Result<()> {
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--region {region:?}: use lowercase letters, digits and '-'");
    }
    Ok(())
}

fn create_ca(args: CaCreateArgs) -> Result<ExitCode> {
    check_region(&args.region)?;
    let cert = args.dir.join(CA_CERT);
    let key = args.dir.join(CA_KEY);
    for path in [&cert, &key] {
        if path.exists() {
            bail!(
                "{} exists; a new CA would orphan every certificate it signed (remove it first)",
                path.display()
            );
        }
    }
    let ca = issue::ca(&args.region, args.days)?;
    write_pair(&ca, &cert, &key)?;
    Ok(ExitCode::SUCCESS)
}

fn create_cert(args: CertCreateArgs) -> Result<ExitCode> {
    check_region(&args.region)?;
    let role = if args.server {
        Role::Server
    } else if args.client {
        Role::Client
    } else {
        Role::Cli
    };
    for name in &args.dns_names {
        if rustls_pki_types::DnsName::try_from(name.as_str()).is_err() {
            bail!("--additional-dnsname {name:?} is not a DNS name");
        }
    }
    let ca_cert = args.ca.unwrap_or_else(|| args.dir.join(CA_CERT));
    let ca_key = args.key.unwrap_or_else(|| args.dir.join(CA_KEY));
    let ca = Issued {
        cert_pem: std::fs::read_to_string(&ca_cert).with_context(|| {
            format!(
                "reading the CA certificate {} (create one with `orch tls ca create`)",
                ca_cert.display()
            )
        })?,
        key_pem: std::fs::read_to_string(&ca_key)
            .with_context(|| format!("reading the CA key {}", ca_key.display()))?,
    };
    let issued = issue::cert(
        &ca,
        &CertRequest {
            role,
            region: args.region.clone(),
            days: args.days,
            dns_names: args.dns_names,
            ip_addresses: args.ip_addresses,
        },
    )?;
    let (cert, key) = free_names(&args.dir, &format!("{}-{role}-orch", args.region));
    write_pair(&issued, &cert, &key)?;
    Ok(ExitCode::SUCCESS)
}

/// `<stem>.pem` and `<stem>-key.pem`, or with `-1`, `-2`, ... when those exist (one
/// directory can hold the certificates of several servers).
fn free_names(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let pair = |stem: &str| {
        (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}-key.pem")),
        )
    };
    let (cert, key) = pair(stem);
    if !cert.exists() && !key.exists() {
        return (cert, key);
    }
    (1..)
        .map(|n| pair(&format!("{stem}-{n}")))
        .find(|(c, k)| !c.exists() && !k.exists())
        .expect("some index is free")
}

fn write_pair(issued: &Issued, cert: &Path, key: &Path) -> Result<()> {
    write_new(cert, &issued.cert_pem, 0o644)?;
    if let Err(e) = write_new(key, &issued.key_pem, 0o600) {
        let _ = std::fs::remove_file(cert);
        return Err(e);
    }
    println!("==> Certificate saved to {}", cert.display());
    println!("==> Private key saved to {} (mode 0600)", key.display());
    Ok(())
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
