//! `orch acl ...`: the one-time bootstrap, policies (`policy apply|list|info|delete`)
//! and tokens (`token create|list|info|delete|self`), through `/v1/acl/...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use orch_common::api::{AclPolicyRequest, AclTokenCreateRequest, AclTokenCreated, AclTokenSelf};
use orch_common::model::{AclPolicy, AclToken};

use crate::api_client::encode;
use crate::output::{self, key_values, relative_time, Table};
use crate::Ctx;

pub const ACL_EXAMPLES: &str = "EXAMPLES:
  orch acl bootstrap
  orch acl policy apply readonly readonly.toml
  orch acl token create --name ci --policy deploy --ttl 24h
  orch acl token self";

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Make the management token (once per cluster); its secret is shown this once.
    Bootstrap,
    /// Policies: what tokens may do.
    #[command(subcommand, after_help = POLICY_EXAMPLES)]
    Policy(PolicyCommand),
    /// Tokens: who may do it.
    #[command(subcommand, after_help = TOKEN_EXAMPLES)]
    Token(TokenCommand),
}

const POLICY_EXAMPLES: &str = "EXAMPLES:
  orch acl policy apply readonly readonly.toml
  orch acl policy list
  orch acl policy info readonly
  orch acl policy delete readonly

A policy file lists verbs per area:
  job = [\"read\"]          # submit read stop scale dispatch
  alloc = [\"logs\"]        # logs exec lifecycle
  node = [\"read\"]         # read write";

const TOKEN_EXAMPLES: &str = "EXAMPLES:
  orch acl token create --name ci --policy deploy --ttl 24h
  orch acl token list
  orch acl token info 6f1c...
  orch acl token delete 6f1c...
  orch acl token self";

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create or replace policy NAME with the rules in FILE (TOML).
    Apply {
        name: String,
        file: PathBuf,
        /// Overrides the file's `description`.
        #[arg(long)]
        description: Option<String>,
    },
    /// Every policy.
    List,
    /// One policy and its rules.
    Info { name: String },
    /// Delete a policy.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token; its secret is shown this once.
    Create(CreateArgs),
    /// Every token (never their secrets).
    List,
    /// One token, by accessor id.
    Info { accessor_id: String },
    /// Delete a token, by accessor id.
    Delete { accessor_id: String },
    /// The token this command runs with (`--token`, `ORCH_TOKEN`) and what it grants.
    #[command(name = "self")]
    Whoami,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name for people: 1 to 128 of A-Z a-z 0-9 _ . -
    #[arg(long)]
    name: String,
    /// A policy it carries (repeat for several).
    #[arg(long = "policy", required = true)]
    policies: Vec<String>,
    /// How long it works (`24h`, `30d`); default: until deleted.
    #[arg(long)]
    ttl: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: AclCommand) -> Result<ExitCode> {
    let api = ctx.api()?;
    match cmd {
        AclCommand::Bootstrap => {
            let created: AclTokenCreated = api
                .post("/v1/acl/bootstrap", &serde_json::json!({}))
                .await?;
            print_created(ctx, &created)
        }
        AclCommand::Policy(PolicyCommand::Apply {
            name,
            file,
            description,
        }) => {
            let rules = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let parsed = orch_common::acl::parse(&rules)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let req = AclPolicyRequest {
                description: description.unwrap_or(parsed.description),
                rules,
            };
            let answer: serde_json::Value = api
                .put(&format!("/v1/acl/policy/{}", encode(&name)), &req)
                .await?;
            if ctx.json {
                output::print_json(&answer)?;
            } else {
                println!("Policy {name:?} applied");
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Policy(PolicyCommand::List) => {
            let policies: Vec<AclPolicy> = api.get("/v1/acl/policies").await?;
            if ctx.json {
                output::print_json(&policies)?;
            } else {
                let mut t = Table::new(&["NAME", "DESCRIPTION"]);
                for p in policies {
                    t.row(vec![p.name, p.description]);
                }
                print!("{}", t.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Policy(PolicyCommand::Info { name }) => {
            let p: AclPolicy = api
                .get(&format!("/v1/acl/policy/{}", encode(&name)))
                .await?;
            if ctx.json {
                output::print_json(&p)?;
            } else {
                print!(
                    "{}",
                    key_values(&[("Name", p.name), ("Description", p.description)])
                );
                println!("\nRules\n{}", p.rules.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Policy(PolicyCommand::Delete { name }) => {
            let answer: serde_json::Value = api
                .delete(&format!("/v1/acl/policy/{}", encode(&name)))
                .await?;
            if ctx.json {
                output::print_json(&answer)?;
            } else {
                println!("Policy {name:?} deleted");
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Token(TokenCommand::Create(args)) => {
            let req = AclTokenCreateRequest {
                name: args.name,
                policies: args.policies,
                ttl: args.ttl,
            };
            let created: AclTokenCreated = api.post("/v1/acl/token", &req).await?;
            print_created(ctx, &created)
        }
        AclCommand::Token(TokenCommand::List) => {
            let tokens: Vec<AclToken> = api.get("/v1/acl/tokens").await?;
            if ctx.json {
                output::print_json(&tokens)?;
            } else {
                let now = orch_common::ids::now_ms();
                let mut t = Table::new(&["ACCESSOR ID", "NAME", "KIND", "POLICIES", "EXPIRES"]);
                for tok in tokens {
                    t.row(vec![
                        tok.accessor_id.clone(),
                        tok.name.clone(),
                        kind(&tok).to_string(),
                        tok.policies.join(","),
                        expires(&tok, now),
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Token(TokenCommand::Info { accessor_id }) => {
            let tok: AclToken = api
                .get(&format!("/v1/acl/token/{}", encode(&accessor_id)))
                .await?;
            print_token(ctx, &tok, None)
        }
        AclCommand::Token(TokenCommand::Delete { accessor_id }) => {
            let answer: serde_json::Value = api
                .delete(&format!("/v1/acl/token/{}", encode(&accessor_id)))
                .await?;
            if ctx.json {
                output::print_json(&answer)?;
            } else {
                println!("Token {accessor_id} deleted");
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Token(TokenCommand::Whoami) => {
            let me: AclTokenSelf = api.get("/v1/acl/token/self").await?;
            if ctx.json {
                output::print_json(&me)?;
                return Ok(ExitCode::SUCCESS);
            }
            print_token(ctx, &me.token, Some(&me.capabilities))
        }
    }
}

fn kind(t: &AclToken) -> &'static str {
    match t.kind {
        orch_common::model::TokenKind::Management => "management",
        orch_common::model::TokenKind::Client => "client",
    }
}

fn expires(t: &AclToken, now: u64) -> String {
    match t.expiration_time {
        None => "never".to_string(),
        Some(at) if at <= now => "expired".to_string(),
        Some(at) => relative_time(at, now),
    }
}

fn print_token(ctx: &Ctx, t: &AclToken, capabilities: Option<&[String]>) -> Result<ExitCode> {
    if ctx.json {
        output::print_json(t)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = orch_common::ids::now_ms();
    let mut pairs = vec![
        ("Accessor ID", t.accessor_id.clone()),
        ("Name", t.name.clone()),
        ("Kind", kind(t).to_string()),
        ("Policies", t.policies.join(", ")),
        ("Expires", expires(t, now)),
    ];
    if let Some(caps) = capabilities {
        pairs.push(("Capabilities", caps.join(", ")));
    }
    print!("{}", key_values(&pairs));
    Ok(ExitCode::SUCCESS)
}

fn print_created(ctx: &Ctx, c: &AclTokenCreated) -> Result<ExitCode> {
    if ctx.json {
        output::print_json(c)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        key_values(&[
            ("Accessor ID", c.token.accessor_id.clone()),
            ("Secret", c.secret.clone()),
            ("Name", c.token.name.clone()),
            ("Kind", kind(&c.token).to_string()),
            ("Policies", c.token.policies.join(", ")),
        ])
    );
    println!("\nThe secret is shown this once: keep it (ORCH_TOKEN=<secret>).");
    Ok(ExitCode::SUCCESS)
}
