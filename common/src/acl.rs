//! ACL policies: the capabilities a policy grants, read from its TOML document, and the
//! union a token's policies grant. One list of verbs per area:
//!
//! ```toml
//! description = "deploys from CI"
//! job = ["submit", "read", "scale"]   # submit read stop scale dispatch
//! alloc = ["logs"]                    # logs exec lifecycle
//! node = ["read"]                     # read write (write includes read)
//! operator = ["read"]                 # read write (write includes read)
//! deployment = ["actions"]            # actions: promote, fail, pause, resume, health
//! acl = ["write"]                     # write: policies and tokens (management)
//! ```
//!
//! An area left out grants nothing; an unknown area or verb is an error at its line and
//! column.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::jobspec::source::line_column;

/// One thing a request may need. Names are `area:verb`, as errors and answers say them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Capability {
    #[serde(rename = "job:submit")]
    JobSubmit,
    #[serde(rename = "job:read")]
    JobRead,
    #[serde(rename = "job:stop")]
    JobStop,
    #[serde(rename = "job:scale")]
    JobScale,
    #[serde(rename = "job:dispatch")]
    JobDispatch,
    #[serde(rename = "alloc:logs")]
    AllocLogs,
    #[serde(rename = "alloc:exec")]
    AllocExec,
    #[serde(rename = "alloc:lifecycle")]
    AllocLifecycle,
    #[serde(rename = "node:read")]
    NodeRead,
    #[serde(rename = "node:write")]
    NodeWrite,
    #[serde(rename = "operator:read")]
    OperatorRead,
    #[serde(rename = "operator:write")]
    OperatorWrite,
    #[serde(rename = "deployment:actions")]
    DeploymentActions,
    #[serde(rename = "acl:write")]
    AclWrite,
}

impl Capability {
    /// Every capability, in order.
    pub const ALL: [Capability; 14] = [
        Capability::JobSubmit,
        Capability::JobRead,
        Capability::JobStop,
        Capability::JobScale,
        Capability::JobDispatch,
        Capability::AllocLogs,
        Capability::AllocExec,
        Capability::AllocLifecycle,
        Capability::NodeRead,
        Capability::NodeWrite,
        Capability::OperatorRead,
        Capability::OperatorWrite,
        Capability::DeploymentActions,
        Capability::AclWrite,
    ];

    /// `area:verb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::JobSubmit => "job:submit",
            Capability::JobRead => "job:read",
            Capability::JobStop => "job:stop",
            Capability::JobScale => "job:scale",
            Capability::JobDispatch => "job:dispatch",
            Capability::AllocLogs => "alloc:logs",
            Capability::AllocExec => "alloc:exec",
            Capability::AllocLifecycle => "alloc:lifecycle",
            Capability::NodeRead => "node:read",
            Capability::NodeWrite => "node:write",
            Capability::OperatorRead => "operator:read",
            Capability::OperatorWrite => "operator:write",
            Capability::DeploymentActions => "deployment:actions",
            Capability::AclWrite => "acl:write",
        }
    }

    /// The capability `verb` names in `area`, with those it includes (`write`
    /// includes `read`).
    fn of(area: &str, verb: &str) -> Option<&'static [Capability]> {
        use Capability::*;
        Some(match (area, verb) {
            ("job", "submit") => &[JobSubmit],
            ("job", "read") => &[JobRead],
            ("job", "stop") => &[JobStop],
            ("job", "scale") => &[JobScale],
            ("job", "dispatch") => &[JobDispatch],
            ("alloc", "logs") => &[AllocLogs],
            ("alloc", "exec") => &[AllocExec],
            ("alloc", "lifecycle") => &[AllocLifecycle],
            ("node", "read") => &[NodeRead],
            ("node", "write") => &[NodeWrite, NodeRead],
            ("operator", "read") => &[OperatorRead],
            ("operator", "write") => &[OperatorWrite, OperatorRead],
            ("deployment", "actions") => &[DeploymentActions],
            ("acl", "write") => &[AclWrite],
            _ => return None,
        })
    }

    /// The verbs an area takes, for error messages.
    fn verbs(area: &str) -> &'static str {
        match area {
            "job" => "submit, read, stop, scale, dispatch",
            "alloc" => "logs, exec, lifecycle",
            "node" | "operator" => "read, write",
            "deployment" => "actions",
            _ => "write",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest policy document accepted.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// A policy's rules: what it grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    pub description: String,
    pub capabilities: BTreeSet<Capability>,
}

impl Rules {
    /// True when the rules grant `cap`.
    pub fn allows(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }
}

/// A problem in a policy document, at its line and column when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(*line, *column))]
pub struct PolicyError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        _ => String::new(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    description: String,
    #[serde(default)]
    job: Vec<Spanned<String>>,
    #[serde(default)]
    alloc: Vec<Spanned<String>>,
    #[serde(default)]
    node: Vec<Spanned<String>>,
    #[serde(default)]
    operator: Vec<Spanned<String>>,
    #[serde(default)]
    deployment: Vec<Spanned<String>>,
    #[serde(default)]
    acl: Vec<Spanned<String>>,
}

/// Reads a policy document; every problem names its line and column.
pub fn parse(source: &str) -> Result<Rules, PolicyError> {
    if source.len() > MAX_POLICY_BYTES {
        return Err(PolicyError {
            line: None,
            column: None,
            message: format!("a policy is at most {MAX_POLICY_BYTES} bytes"),
        });
    }
    let at = |offset: usize, message: String| {
        let (line, column) = line_column(source, offset);
        PolicyError {
            line: Some(line),
            column: Some(column),
            message,
        }
    };
    let raw: RawPolicy = toml::from_str(source).map_err(|e| match e.span() {
        Some(span) => at(span.start, e.message().to_string()),
        None => PolicyError {
            line: None,
            column: None,
            message: e.message().to_string(),
        },
    })?;
    let mut capabilities = BTreeSet::new();
    let areas = [
        ("job", &raw.job),
        ("alloc", &raw.alloc),
        ("node", &raw.node),
        ("operator", &raw.operator),
        ("deployment", &raw.deployment),
        ("acl", &raw.acl),
    ];
    for (area, verbs) in areas {
        for verb in verbs {
            let caps = Capability::of(area, verb.get_ref()).ok_or_else(|| {
                at(
                    verb.span().start,
                    format!(
                        "{area}: unknown verb {:?} (one of: {})",
                        verb.get_ref(),
                        Capability::verbs(area)
                    ),
                )
            })?;
            capabilities.extend(caps.iter().copied());
        }
    }
    Ok(Rules {
        description: raw.description,
        capabilities,
    })
}

/// True for a policy or token name: 1 to 128 of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// What a request's token holds: everything (a management token) or the union of its
/// policies' rules. Sent to clients that check tokens (`"management"` or
/// `{"rules": ["job:read", ...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grants {
    Management,
    Rules(BTreeSet<Capability>),
}

impl Grants {
    /// The union of `policies`.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Rules>) -> Grants {
        Grants::Rules(
            policies
                .into_iter()
                .flat_map(|p| p.capabilities.iter().copied())
                .collect(),
        )
    }

    /// `Ok` when `cap` is granted, else the capability that is missing.
    pub fn require(&self, cap: Capability) -> Result<(), Capability> {
        match self {
            Grants::Management => Ok(()),
            Grants::Rules(caps) if caps.contains(&cap) => Ok(()),
            Grants::Rules(_) => Err(cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CI: &str = r#"
description = "deploys from CI"
job = ["submit", "read", "scale"]
node = ["write"]
deployment = ["actions"]
"#;

    #[test]
    fn a_policy_grants_its_verbs_and_write_includes_read() {
        let rules = parse(CI).unwrap();
        assert_eq!(rules.description, "deploys from CI");
        let want: BTreeSet<Capability> = [
            Capability::JobSubmit,
            Capability::JobRead,
            Capability::JobScale,
            Capability::NodeWrite,
            Capability::NodeRead,
            Capability::DeploymentActions,
        ]
        .into_iter()
        .collect();
        assert_eq!(rules.capabilities, want);
        assert!(!rules.allows(Capability::JobStop));
        assert!(!rules.allows(Capability::AllocExec));
    }

    #[test]
    fn an_empty_policy_grants_nothing() {
        assert!(parse("").unwrap().capabilities.is_empty());
        assert_eq!(
            Grants::of([&parse("").unwrap()]).require(Capability::JobRead),
            Err(Capability::JobRead)
        );
    }

    #[test]
    fn an_unknown_verb_or_area_is_refused_at_its_line_and_column() {
        let e = parse("job = [\"read\", \"destroy\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(16)));
        assert!(e.message.contains("\"destroy\""), "{e}");
        assert!(e.message.contains("submit, read, stop"), "{e}");

        let e = parse("job = [\"read\"]\nnamespace = [\"x\"]\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("namespace"), "{e}");

        let e = parse("node = \"read\"\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn grants_are_the_union_of_policies_and_management_has_all() {
        let read = parse("job = [\"read\"]").unwrap();
        let logs = parse("alloc = [\"logs\"]").unwrap();
        let grants = Grants::of([&read, &logs]);
        assert_eq!(grants.require(Capability::JobRead), Ok(()));
        assert_eq!(grants.require(Capability::AllocLogs), Ok(()));
        assert_eq!(
            grants.require(Capability::AllocExec),
            Err(Capability::AllocExec)
        );
        for cap in Capability::ALL {
            assert_eq!(Grants::Management.require(cap), Ok(()));
        }
    }

    #[test]
    fn every_capability_is_named_as_serde_names_it() {
        for cap in Capability::ALL {
            let json = serde_json::to_string(&cap).unwrap();
            assert_eq!(json, format!("{:?}", cap.as_str()));
            let (area, verb) = cap.as_str().split_once(':').unwrap();
            assert!(Capability::of(area, verb).unwrap().contains(&cap));
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("ci-deploy_1.2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(&"x".repeat(129)));
    }
}
