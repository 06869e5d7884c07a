//! Services and their health checks: the spec (`ServiceSpec`, `CheckSpec`) and the
//! status a client reports (`CheckStatus`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::human;

/// `[[group.G.service]]`: a name in the service catalog for each running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub canary_tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub address_mode: Option<String>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

/// A health check of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub check_type: CheckType,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(with = "human")]
    pub interval: Duration,
    #[serde(with = "human")]
    pub timeout: Duration,
    #[serde(default = "one")]
    pub success_before_passing: u32,
    #[serde(default = "one")]
    pub failures_before_critical: u32,
    #[serde(default)]
    pub check_restart: Option<CheckRestart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Http,
    Tcp,
    Script,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRestart {
    pub limit: u32,
    #[serde(with = "human")]
    pub grace: Duration,
}

impl CheckType {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckType::Http => "http",
            CheckType::Tcp => "tcp",
            CheckType::Script => "script",
        }
    }
}

/// A check's health: `pending` until `success_before_passing` consecutive successes
/// (or `failures_before_critical` consecutive failures) have been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckHealth {
    #[default]
    Pending,
    Passing,
    Critical,
}

impl CheckHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckHealth::Pending => "pending",
            CheckHealth::Passing => "passing",
            CheckHealth::Critical => "critical",
        }
    }
}

/// The latest result of one health check of an allocation, as its client reports it
/// (keyed `SERVICE/CHECK` in `Allocation::checks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub service: String,
    /// The check's `name`, or `TYPE-INDEX` (its position in the service) without one.
    pub name: String,
    #[serde(rename = "type")]
    pub check_type: CheckType,
    /// The task it belongs to: the one a script runs in and `check_restart` restarts.
    pub task: String,
    pub status: CheckHealth,
    /// What the last run said: the HTTP status line, the connect result, the script's
    /// stdout and stderr, or the error (at most 4 KiB).
    #[serde(default)]
    pub output: String,
    /// When the check last ran (ms since the epoch; 0: not yet).
    #[serde(default)]
    pub last_run_ms: u64,
    /// When `status` last changed (ms since the epoch).
    #[serde(default)]
    pub status_since_ms: u64,
}

fn one() -> u32 {
    1
}
