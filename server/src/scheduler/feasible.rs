//! Feasibility: can this node run this task group at all? A chain of checks, cheapest
//! first, each naming why it rejects a node:
//!
//! ```text
//!   datacenter -> ready + eligible -> drivers -> constraints -> node-unique constraints
//!   \____ class-level, cached per node.computed_class ____/
//!     -> distinct_property (counts per value) -> distinct_hosts -> fit (cpu, memory, ports)
//!        \_________________ per node, never cached ____________________________/
//! ```
//!
//! Operators: `=`/`==`, `!=`, `<`, `<=`, `>`, `>=` (numeric when both sides parse as
//! numbers, else lexical), `regexp`, `version` (loose) and `semver` (strict, see
//! `version.rs`), `set_contains` (every listed value), `set_contains_any`, `is_set`,
//! `is_not_set`, `distinct_hosts`, `distinct_property` (value = how many allocations of
//! the job, or of the group when written at group level, may share one value; default
//! 1). Within a stage, constraints run cheapest operator first.
//!
//! The checks that only look at what a node *is* (datacenter, drivers, constraints on
//! non-unique attributes) give the same answer for every node of one computed class, so
//! their result is cached per class (10,000 nodes cost what their classes cost) and
//! reported as the evaluation's `class_eligibility` (the blocked-evals tracker uses it
//! to skip nodes that can never help). Rejections read `constraint ${attr.kernel.name} =
//! linux`, `missing driver "container"`, `distinct_hosts`, `distinct_property
//! ${meta.rack}`; fit failures name the dimension (`cpu`, `memory`, `ports`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use orch_common::model::{AllocatedPort, Constraint, Job, NetworkSpec, Node, Resources, TaskGroup};
use orch_common::regex::Regex;

use super::fxhash::FxHashMap;
use super::property::PropertyCounts;
use super::rng::Rng;
use super::version;

/// The operator of a `distinct_hosts` constraint.
pub const DISTINCT_HOSTS: &str = "distinct_hosts";

/// The reason string for a `distinct_hosts` rejection.
pub const DISTINCT_HOSTS_REASON: &str = "distinct_hosts";

/// The operator of a `distinct_property` constraint (value: how many allocations may
/// share one value of the attribute, default 1).
pub const DISTINCT_PROPERTY: &str = "distinct_property";

/// Resolves a constraint operand against a node: `${attr.x}`, `${meta.x}`,
/// `${node.id|name|class|datacenter|pool}` (and Nomad's `${node.unique.id|name}`).
/// Anything not wrapped in `${...}` is a literal. `None` when the node lacks it.
/// Borrowed from the operand or the node: resolving allocates nothing.
pub fn resolve<'a>(target: &'a str, node: &'a Node) -> Option<&'a str> {
    match Operand::split(target) {
        Split::Literal => Some(target),
        Split::Field(field) => Some(field.of(node)),
        Split::Attr(key) => node.attributes.get(key).map(String::as_str),
        Split::Meta(key) => node.meta.get(key).map(String::as_str),
        Split::Unknown => None,
    }
}

/// A node field an operand can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeField {
    Id,
    Name,
    Class,
    Datacenter,
    Pool,
}

impl NodeField {
    fn named(inner: &str) -> Option<NodeField> {
        Some(match inner {
            "node.id" | "node.unique.id" => NodeField::Id,
            "node.name" | "node.unique.name" => NodeField::Name,
            "node.class" => NodeField::Class,
            "node.datacenter" => NodeField::Datacenter,
            "node.pool" => NodeField::Pool,
            _ => return None,
        })
    }

    fn of(self, node: &Node) -> &str {
        match self {
            NodeField::Id => &node.id,
            NodeField::Name => &node.name,
            NodeField::Class => &node.node_class,
            NodeField::Datacenter => &node.datacenter,
            NodeField::Pool => &node.node_pool,
        }
    }
}

/// What an operand's text says to read, borrowed from it.
enum Split<'a> {
    Literal,
    Field(NodeField),
    Attr(&'a str),
    Meta(&'a str),
    Unknown,
}

/// An operand parsed once, for the per-node paths (spread scoring, `distinct_property`)
/// that resolve the same operand on every node a placement looks at: matching its
/// text against the field names there was a tenth of the scheduler's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Literal(String),
    Field(NodeField),
    Attr(String),
    Meta(String),
    Unknown,
}

impl Operand {
    pub fn parse(target: &str) -> Operand {
        match Operand::split(target) {
            Split::Literal => Operand::Literal(target.to_string()),
            Split::Field(field) => Operand::Field(field),
            Split::Attr(key) => Operand::Attr(key.to_string()),
            Split::Meta(key) => Operand::Meta(key.to_string()),
            Split::Unknown => Operand::Unknown,
        }
    }

    fn split(target: &str) -> Split<'_> {
        let Some(inner) = target
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            return Split::Literal;
        };
        if let Some(field) = NodeField::named(inner) {
            Split::Field(field)
        } else if let Some(key) = inner.strip_prefix("attr.") {
            Split::Attr(key)
        } else if let Some(key) = inner.strip_prefix("meta.") {
            Split::Meta(key)
        } else {
            Split::Unknown
        }
    }

    /// Like `resolve` on the operand's text.
    pub fn resolve<'a>(&'a self, node: &'a Node) -> Option<&'a str> {
        match self {
            Operand::Literal(text) => Some(text),
            Operand::Field(field) => Some(field.of(node)),
            Operand::Attr(key) => node.attributes.get(key).map(String::as_str),
            Operand::Meta(key) => node.meta.get(key).map(String::as_str),
            Operand::Unknown => None,
        }
    }
}

/// True when the operand names something unique to one node (so a result for it can't be
/// shared by the node's whole class).
fn is_node_unique(target: &str) -> bool {
    target.contains("unique.") || target == "${node.id}" || target == "${node.name}"
}

/// True when a constraint's answer is the same for every node of one computed class.
pub fn is_class_level(c: &Constraint) -> bool {
    c.operator != DISTINCT_HOSTS
        && c.operator != DISTINCT_PROPERTY
        && !is_node_unique(&c.attribute)
        && !is_node_unique(&c.value)
}

/// Compiled `regexp` constraint patterns (an invalid pattern matches nothing).
#[derive(Debug, Default)]
pub struct RegexCache {
    compiled: FxHashMap<String, Option<Regex>>,
}

impl RegexCache {
    fn is_match(&mut self, pattern: &str, value: &str) -> bool {
        if !self.compiled.contains_key(pattern) {
            // Compiled once per pattern; later lookups allocate nothing.
            self.compiled
                .insert(pattern.to_string(), Regex::new(pattern).ok());
        }
        self.compiled
            .get(pattern)
            .and_then(Option::as_ref)
            .is_some_and(|re| re.is_match(value))
    }
}

/// Evaluates one constraint (other than `distinct_hosts`) on a node.
pub fn check_constraint(c: &Constraint, node: &Node, regexes: &mut RegexCache) -> bool {
    let left = resolve(&c.attribute, node);
    let right = resolve(&c.value, node);
    match c.operator.as_str() {
        "=" | "==" | "is" => left.is_some() && left == right,
        // Like Nomad: a missing attribute is "not equal".
        "!=" | "not" => left != right,
        "<" | "<=" | ">" | ">=" => match (left, right) {
            (Some(l), Some(r)) => check_order(&c.operator, l, r),
            _ => false,
        },
        "is_set" => left.is_some(),
        "is_not_set" => left.is_none(),
        "regexp" => match (left, right) {
            (Some(l), Some(r)) => regexes.is_match(r, l),
            _ => false,
        },
        "version" => match (left, right) {
            (Some(l), Some(r)) => version::satisfies(l, r, version::Flavor::Loose),
            _ => false,
        },
        "semver" => match (left, right) {
            (Some(l), Some(r)) => version::satisfies(l, r, version::Flavor::Strict),
            _ => false,
        },
        "set_contains" | "set_contains_all" => match (left, right) {
            (Some(l), Some(r)) => {
                let have = split_set(l);
                split_set(r).iter().all(|x| have.contains(x))
            }
            _ => false,
        },
        "set_contains_any" => match (left, right) {
            (Some(l), Some(r)) => {
                let have = split_set(l);
                split_set(r).iter().any(|x| have.contains(x))
            }
            _ => false,
        },
        DISTINCT_HOSTS | DISTINCT_PROPERTY => true,
        _ => false,
    }
}

fn split_set(s: &str) -> BTreeSet<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Numeric order when both sides are numbers, lexical order otherwise.
fn check_order(op: &str, l: &str, r: &str) -> bool {
    let ord = match (l.trim().parse::<f64>(), r.trim().parse::<f64>()) {
        (Ok(a), Ok(b)) => match a.partial_cmp(&b) {
            Some(o) => o,
            None => return false,
        },
        _ => l.cmp(r),
    };
    match op {
        "<" => ord.is_lt(),
        "<=" => ord.is_le(),
        ">" => ord.is_gt(),
        ">=" => ord.is_ge(),
        _ => false,
    }
}

/// What already uses a node, as the plan being built would leave it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUsage {
    pub used: Resources,
    pub ports: BTreeSet<u16>,
    /// Allocations of the job being scheduled on the node.
    pub job_allocs: u32,
    /// Allocations of the task group being scheduled on the node.
    pub group_allocs: u32,
}

impl NodeUsage {
    pub fn empty() -> NodeUsage {
        NodeUsage {
            used: Resources::ZERO,
            ..Default::default()
        }
    }
}

/// Whose allocations a `distinct_*` constraint keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DistinctScope {
    Job,
    Group,
}

/// A `distinct_property` constraint with its counts of the job's (or group's)
/// allocations per value, existing and planned.
#[derive(Debug, Clone)]
struct DistinctProperty {
    attribute: Operand,
    limit: u32,
    scope: DistinctScope,
    counts: PropertyCounts,
    reason: String,
}

/// The feasibility chain for one task group of one job, with its per-class cache.
#[derive(Debug)]
pub struct FeasibilityChecker {
    group: String,
    datacenters: Vec<String>,
    drivers: Vec<String>,
    class_constraints: Vec<Constraint>,
    /// Constraints on node-unique targets, each with its rejection reason written once.
    node_constraints: Vec<(Constraint, String)>,
    distinct: Option<DistinctScope>,
    properties: Vec<DistinctProperty>,
    class_cache: FxHashMap<String, Result<(), String>>,
    /// The reason of the last uncached class check (nodes without a computed class).
    uncached_reason: String,
    regexes: RegexCache,
    /// computed class -> passed the class-level checks.
    pub class_eligibility: BTreeMap<String, bool>,
    /// How many times the class-level checks actually ran (the rest were cache hits).
    pub class_checks: usize,
}

fn is_distinct_hosts(c: &Constraint) -> bool {
    c.operator == DISTINCT_HOSTS && c.value != "false"
}

/// Relative cost of evaluating a constraint: cheap comparisons run first so most
/// rejections never reach a regular expression or a version parse.
fn constraint_cost(c: &Constraint) -> u8 {
    match c.operator.as_str() {
        "is_set" | "is_not_set" => 0,
        "=" | "==" | "is" | "!=" | "not" => 1,
        "<" | "<=" | ">" | ">=" => 2,
        "set_contains" | "set_contains_all" | "set_contains_any" => 3,
        "version" | "semver" => 4,
        _ => 5,
    }
}

/// The reason recorded when a constraint rejects a node.
fn constraint_reason(c: &Constraint) -> String {
    format!("constraint {c}")
}

impl FeasibilityChecker {
    pub fn new(job: &Job, group: &TaskGroup) -> FeasibilityChecker {
        let mut drivers: Vec<String> = group.tasks.iter().map(|t| t.driver.clone()).collect();
        drivers.sort();
        drivers.dedup();
        let distinct = if group.constraints.iter().any(is_distinct_hosts) {
            Some(DistinctScope::Group)
        } else if job.constraints.iter().any(is_distinct_hosts) {
            Some(DistinctScope::Job)
        } else {
            None
        };
        let scoped = job
            .constraints
            .iter()
            .map(|c| (c, DistinctScope::Job))
            .chain(group.constraints.iter().map(|c| (c, DistinctScope::Group)));
        let properties = scoped
            .filter(|(c, _)| c.operator == DISTINCT_PROPERTY)
            .map(|(c, scope)| DistinctProperty {
                attribute: Operand::parse(&c.attribute),
                limit: c
                    .value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or(1),
                scope,
                counts: PropertyCounts::new(),
                reason: format!("{DISTINCT_PROPERTY} {}", c.attribute),
            })
            .collect();
        let (mut class_constraints, mut node_constraints): (Vec<Constraint>, Vec<Constraint>) = job
            .constraints
            .iter()
            .chain(group.constraints.iter())
            .filter(|c| c.operator != DISTINCT_HOSTS && c.operator != DISTINCT_PROPERTY)
            .cloned()
            .partition(is_class_level);
        class_constraints.sort_by_key(constraint_cost);
        node_constraints.sort_by_key(constraint_cost);
        let node_constraints = node_constraints
            .into_iter()
            .map(|c| {
                let reason = constraint_reason(&c);
                (c, reason)
            })
            .collect();
        FeasibilityChecker {
            group: group.name.clone(),
            datacenters: job.datacenters.clone(),
            drivers,
            class_constraints,
            node_constraints,
            distinct,
            properties,
            class_cache: FxHashMap::default(),
            uncached_reason: String::new(),
            regexes: RegexCache::default(),
            class_eligibility: BTreeMap::new(),
            class_checks: 0,
        }
    }

    /// The job runs in the node's datacenter.
    pub fn datacenter_ok(&self, node: &Node) -> bool {
        node.in_datacenters(&self.datacenters)
    }

    /// Drivers and class-level constraints (and the datacenter), uncached.
    fn check_class_uncached(&mut self, node: &Node) -> Result<(), String> {
        self.class_checks += 1;
        if !self.datacenter_ok(node) {
            return Err(format!("datacenter {:?}", node.datacenter));
        }
        if let Some(d) = self.drivers.iter().find(|d| !node.has_driver(d)) {
            return Err(match node.drivers.get(d.as_str()) {
                Some(info) if info.detected && !info.description.is_empty() => {
                    format!("driver {d:?} unavailable: {}", info.description)
                }
                _ => format!("missing driver {d:?}"),
            });
        }
        for c in &self.class_constraints {
            if !check_constraint(c, node, &mut self.regexes) {
                return Err(constraint_reason(c));
            }
        }
        Ok(())
    }

    /// The class-level checks, cached per computed class (never for an empty class).
    /// On `false`, `class_reason` says why.
    fn class_ok(&mut self, node: &Node) -> bool {
        let class = node.computed_class.as_str();
        if class.is_empty() {
            return match self.check_class_uncached(node) {
                Ok(()) => true,
                Err(reason) => {
                    self.uncached_reason = reason;
                    false
                }
            };
        }
        if let Some(cached) = self.class_cache.get(class) {
            return cached.is_ok();
        }
        let verdict = self.check_class_uncached(node);
        let ok = verdict.is_ok();
        self.class_eligibility.insert(class.to_string(), ok);
        self.class_cache.insert(class.to_string(), verdict);
        ok
    }

    /// Why the node's class failed `class_ok` (borrowed: no copy per rejected node).
    fn class_reason(&self, node: &Node) -> &str {
        match self.class_cache.get(node.computed_class.as_str()) {
            Some(Err(reason)) => reason,
            _ => &self.uncached_reason,
        }
    }

    /// Everything but resources and `distinct_*`: datacenter, status, drivers,
    /// constraints. `Err` carries the reason recorded into the metrics.
    pub fn check_node(&mut self, node: &Node) -> Result<(), Cow<'_, str>> {
        if !self.datacenter_ok(node) {
            return Err(Cow::Owned(format!("datacenter {:?}", node.datacenter)));
        }
        if !node.is_schedulable() {
            return Err(Cow::Borrowed("node not ready or not eligible"));
        }
        self.check_candidate(node)
    }

    /// `check_node` for a node already known to be in the job's datacenters, ready and
    /// eligible (the placer's candidates): drivers and constraints only. The reason is
    /// borrowed from the checker, so rejecting a node allocates nothing.
    pub fn check_candidate(&mut self, node: &Node) -> Result<(), Cow<'_, str>> {
        if !self.class_ok(node) {
            return Err(Cow::Borrowed(self.class_reason(node)));
        }
        for (c, reason) in &self.node_constraints {
            if !check_constraint(c, node, &mut self.regexes) {
                return Err(Cow::Borrowed(reason));
            }
        }
        Ok(())
    }

    /// `distinct_hosts`: no other allocation of the job (or group) on the node.
    pub fn check_distinct(&self, usage: &NodeUsage) -> Result<(), &'static str> {
        let taken = match self.distinct {
            None => false,
            Some(DistinctScope::Job) => usage.job_allocs > 0,
            Some(DistinctScope::Group) => usage.group_allocs > 0,
        };
        if taken {
            Err(DISTINCT_HOSTS_REASON)
        } else {
            Ok(())
        }
    }

    /// True when the group has `distinct_property` constraints (callers then keep the
    /// counts current with `count_alloc`).
    pub fn has_distinct_properties(&self) -> bool {
        !self.properties.is_empty()
    }

    /// `distinct_property`: fewer than `limit` allocations of the job (or group) on
    /// nodes with this node's value. A node without the property is infeasible.
    pub fn check_distinct_property(&self, node: &Node) -> Result<(), &str> {
        for p in &self.properties {
            let ok = p
                .attribute
                .resolve(node)
                .is_some_and(|v| p.counts.get(v) < p.limit);
            if !ok {
                return Err(&p.reason);
            }
        }
        Ok(())
    }

    /// Counts one allocation of `group` on `node` in (`added`) or out of the
    /// `distinct_property` tallies that cover that group.
    pub fn count_alloc(&mut self, group: &str, node: &Node, added: bool) {
        for p in &mut self.properties {
            if p.scope == DistinctScope::Group && group != self.group {
                continue;
            }
            if let Some(v) = p.attribute.resolve(node) {
                if added {
                    p.counts.add(v);
                } else {
                    p.counts.remove(v);
                }
            }
        }
    }
}

/// Merges one group's class eligibility into the job's: a class is eligible when it is
/// for at least one group.
pub fn merge_class_eligibility(into: &mut BTreeMap<String, bool>, from: &BTreeMap<String, bool>) {
    for (class, ok) in from {
        let entry = into.entry(class.clone()).or_insert(false);
        *entry = *entry || *ok;
    }
}

/// Whether `ask` and the group's ports fit on the node next to `usage`; `Err` names the
/// exhausted dimension (`cpu`, `memory`, `ports`).
pub fn check_fit(
    node: &Node,
    usage: &NodeUsage,
    ask: &Resources,
    network: &NetworkSpec,
) -> Result<(), &'static str> {
    let available = node.allocatable().saturating_sub(&usage.used);
    ask.fits(&available)?;
    if !ports_available(node, usage, network) {
        return Err("ports");
    }
    Ok(())
}

fn port_taken(node: &Node, usage: &NodeUsage, port: u16) -> bool {
    usage.ports.contains(&port) || node.reserved_ports.contains(&port)
}

/// Static ports free, and enough free dynamic ports left in the node's range.
fn ports_available(node: &Node, usage: &NodeUsage, network: &NetworkSpec) -> bool {
    let mut statics = BTreeSet::new();
    let mut dynamic = 0usize;
    for p in &network.ports {
        match p.static_port {
            Some(port) => {
                if port_taken(node, usage, port) || !statics.insert(port) {
                    return false;
                }
            }
            None => dynamic += 1,
        }
    }
    if dynamic == 0 {
        return true;
    }
    if node.min_dynamic_port > node.max_dynamic_port {
        return false;
    }
    let range = usize::from(node.max_dynamic_port - node.min_dynamic_port) + 1;
    let in_range = |p: &&u16| (node.min_dynamic_port..=node.max_dynamic_port).contains(*p);
    let blocked: BTreeSet<u16> = usage
        .ports
        .iter()
        .chain(node.reserved_ports.iter())
        .chain(statics.iter())
        .filter(in_range)
        .copied()
        .collect();
    range.saturating_sub(blocked.len()) >= dynamic
}

/// Picks the group's ports on a node that passed `check_fit`: static ones as asked,
/// dynamic ones at random from the node's range, skipping used and reserved ports.
pub fn assign_ports(
    node: &Node,
    usage: &NodeUsage,
    network: &NetworkSpec,
    rng: &mut Rng,
) -> Result<Vec<AllocatedPort>, &'static str> {
    let ip = node.host_ip();
    let mut taken: BTreeSet<u16> = usage.ports.clone();
    taken.extend(node.reserved_ports.iter().copied());
    taken.extend(network.ports.iter().filter_map(|p| p.static_port));
    let mut out = Vec::with_capacity(network.ports.len());
    for p in &network.ports {
        let value = match p.static_port {
            Some(port) => port,
            None => {
                let port = pick_dynamic(node, &taken, rng).ok_or("ports")?;
                taken.insert(port);
                port
            }
        };
        out.push(AllocatedPort {
            label: p.label.clone(),
            value,
            to: p.to,
            host_ip: ip.clone(),
        });
    }
    Ok(out)
}

fn pick_dynamic(node: &Node, taken: &BTreeSet<u16>, rng: &mut Rng) -> Option<u16> {
    let (lo, hi) = (node.min_dynamic_port, node.max_dynamic_port);
    if lo > hi {
        return None;
    }
    let span = u64::from(hi - lo) + 1;
    // A few random tries first (cheap when the range is mostly free), then a scan.
    for _ in 0..16 {
        let port = lo + rng.below(span) as u16;
        if !taken.contains(&port) {
            return Some(port);
        }
    }
    let start = rng.below(span) as u16;
    (0..span as u32)
        .map(|i| lo + ((u32::from(start) + i) % span as u32) as u16)
        .find(|p| !taken.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::mock::{JobBuilder, NodeBuilder};
    use orch_common::model::{NodeStatus, PortSpec};

    fn constraint(attribute: &str, operator: &str, value: &str) -> Constraint {
        Constraint {
            attribute: attribute.into(),
            operator: operator.into(),
            value: value.into(),
        }
    }

    fn holds(c: Constraint, node: &Node) -> bool {
        check_constraint(&c, node, &mut RegexCache::default())
    }

    #[test]
    fn targets_resolve_from_attributes_meta_and_node_fields() {
        let node = NodeBuilder::new()
            .name("n1")
            .class("fast")
            .attr("kernel.name", "linux")
            .meta("rack", "r1")
            .build();
        assert_eq!(resolve("${attr.kernel.name}", &node), Some("linux"));
        assert_eq!(resolve("${meta.rack}", &node), Some("r1"));
        assert_eq!(resolve("${node.class}", &node), Some("fast"));
        assert_eq!(resolve("${node.name}", &node), Some("n1"));
        assert_eq!(resolve("${node.datacenter}", &node), Some("dc1"));
        assert_eq!(resolve("${node.pool}", &node), Some("default"));
        assert_eq!(resolve("${attr.missing}", &node), None);
        assert_eq!(resolve("plain", &node), Some("plain"));
    }

    #[test]
    fn equality_and_inequality_constraints() {
        let node = NodeBuilder::new().attr("kernel.name", "linux").build();
        assert!(holds(
            constraint("${attr.kernel.name}", "=", "linux"),
            &node
        ));
        assert!(!holds(
            constraint("${attr.kernel.name}", "=", "darwin"),
            &node
        ));
        assert!(holds(
            constraint("${attr.kernel.name}", "!=", "darwin"),
            &node
        ));
        assert!(!holds(constraint("${attr.nope}", "=", "linux"), &node));
        assert!(holds(constraint("${attr.nope}", "!=", "linux"), &node));
    }

    #[test]
    fn order_constraints_compare_numbers_numerically() {
        let node = NodeBuilder::new().attr("cpu.numcores", "16").build();
        assert!(holds(constraint("${attr.cpu.numcores}", ">", "4"), &node));
        assert!(holds(constraint("${attr.cpu.numcores}", ">=", "16"), &node));
        assert!(!holds(constraint("${attr.cpu.numcores}", "<", "8"), &node));
        assert!(holds(constraint("${attr.cpu.numcores}", "<=", "16"), &node));
        let named = NodeBuilder::new().attr("zone", "b").build();
        assert!(holds(constraint("${attr.zone}", ">", "a"), &named));
    }

    #[test]
    fn regexp_and_set_and_version_constraints() {
        let node = NodeBuilder::new()
            .attr("os.name", "debian")
            .attr("tags", "ssd,gpu")
            .attr("kernel.version", "6.1.0-13-amd64")
            .build();
        assert!(holds(
            constraint("${attr.os.name}", "regexp", "^deb"),
            &node
        ));
        assert!(!holds(
            constraint("${attr.os.name}", "regexp", "^ubu"),
            &node
        ));
        assert!(!holds(constraint("${attr.os.name}", "regexp", "("), &node));
        assert!(holds(
            constraint("${attr.tags}", "set_contains", "gpu"),
            &node
        ));
        assert!(!holds(
            constraint("${attr.tags}", "set_contains", "gpu,tpu"),
            &node
        ));
        assert!(holds(
            constraint("${attr.tags}", "set_contains_any", "gpu,tpu"),
            &node
        ));
        assert!(holds(
            constraint("${attr.kernel.version}", "version", ">= 5.10, < 7"),
            &node
        ));
        assert!(!holds(
            constraint("${attr.kernel.version}", "version", "~> 5.10"),
            &node
        ));
        assert!(holds(
            constraint("${attr.kernel.version}", "version", "~> 6.0"),
            &node
        ));
    }

    #[test]
    fn is_set_and_is_not_set_constraints() {
        let node = NodeBuilder::new().meta("rack", "r1").build();
        assert!(holds(constraint("${meta.rack}", "is_set", ""), &node));
        assert!(!holds(constraint("${meta.zone}", "is_set", ""), &node));
        assert!(holds(constraint("${meta.zone}", "is_not_set", ""), &node));
    }

    #[test]
    fn checker_names_the_missing_driver() {
        let job = JobBuilder::new("web").driver("container").build();
        let mut checker = FeasibilityChecker::new(&job, &job.groups[0]);
        let node = NodeBuilder::new().build();
        assert_eq!(
            checker.check_node(&node).map_err(Cow::into_owned),
            Err("missing driver \"container\"".to_string())
        );
        assert_eq!(
            checker.class_eligibility.get(&node.computed_class),
            Some(&false)
        );
    }

    #[test]
    fn checker_rejects_down_and_ineligible_nodes() {
        let job = JobBuilder::new("web").build();
        let mut checker = FeasibilityChecker::new(&job, &job.groups[0]);
        let down = NodeBuilder::new().status(NodeStatus::Down).build();
        assert!(checker.check_node(&down).is_err());
        let ok = NodeBuilder::new().build();
        assert!(checker.check_node(&ok).is_ok());
    }

    #[test]
    fn checker_reports_the_failed_constraint_as_written() {
        let job = JobBuilder::new("web")
            .constraint("${attr.kernel.name}", "=", "plan9")
            .build();
        let mut checker = FeasibilityChecker::new(&job, &job.groups[0]);
        let node = NodeBuilder::new().attr("kernel.name", "linux").build();
        assert_eq!(
            checker.check_node(&node).map_err(Cow::into_owned),
            Err("constraint ${attr.kernel.name} = plan9".to_string())
        );
    }

    #[test]
    fn node_unique_constraints_are_not_class_level() {
        assert!(!is_class_level(&constraint("${node.id}", "=", "x")));
        assert!(!is_class_level(&constraint(
            "${attr.unique.hostname}",
            "=",
            "x"
        )));
        assert!(is_class_level(&constraint(
            "${attr.kernel.name}",
            "=",
            "linux"
        )));
        // Two nodes of one class, told apart by a node-level constraint.
        let a = NodeBuilder::new().name("a").build();
        let b = NodeBuilder::new().name("b").build();
        assert_eq!(a.computed_class, b.computed_class);
        let job = JobBuilder::new("web")
            .constraint("${node.name}", "=", "b")
            .build();
        let mut checker = FeasibilityChecker::new(&job, &job.groups[0]);
        assert!(checker.check_node(&a).is_err());
        assert!(checker.check_node(&b).is_ok());
    }

    #[test]
    fn fit_names_the_exhausted_dimension() {
        let node = NodeBuilder::new().cpu(1000).memory(1024).build();
        let ask = Resources {
            cpu: 500,
            memory: 2048,
            memory_max: None,
            ..Default::default()
        };
        let net = NetworkSpec::default();
        assert_eq!(
            check_fit(&node, &NodeUsage::empty(), &ask, &net),
            Err("memory")
        );
        let usage = NodeUsage {
            used: Resources {
                cpu: 800,
                memory: 0,
                memory_max: None,
                ..Default::default()
            },
            ..NodeUsage::empty()
        };
        let small = Resources {
            cpu: 300,
            memory: 10,
            memory_max: None,
            ..Default::default()
        };
        assert_eq!(check_fit(&node, &usage, &small, &net), Err("cpu"));
    }

    #[test]
    fn static_port_in_use_is_exhausted_on_ports() {
        let node = NodeBuilder::new().reserved_ports(&[22]).build();
        let mut usage = NodeUsage::empty();
        usage.ports.insert(8080);
        let ask = Resources::default();
        let net = |port| NetworkSpec {
            mode: None,
            ports: vec![PortSpec {
                label: "http".into(),
                static_port: Some(port),
                to: None,
            }],
        };
        assert_eq!(check_fit(&node, &usage, &ask, &net(8080)), Err("ports"));
        assert_eq!(check_fit(&node, &usage, &ask, &net(22)), Err("ports"));
        assert!(check_fit(&node, &usage, &ask, &net(9090)).is_ok());
    }

    #[test]
    fn dynamic_ports_avoid_used_and_reserved_ports() {
        let node = NodeBuilder::new()
            .port_range(30000, 30003)
            .reserved_ports(&[30001])
            .build();
        let mut usage = NodeUsage::empty();
        usage.ports.insert(30000);
        let net = NetworkSpec {
            mode: None,
            ports: vec![
                PortSpec {
                    label: "a".into(),
                    static_port: None,
                    to: None,
                },
                PortSpec {
                    label: "b".into(),
                    static_port: None,
                    to: Some(80),
                },
            ],
        };
        assert!(check_fit(&node, &usage, &Resources::default(), &net).is_ok());
        let ports = assign_ports(&node, &usage, &net, &mut Rng::new(3)).expect("ports");
        let mut values: Vec<u16> = ports.iter().map(|p| p.value).collect();
        values.sort();
        assert_eq!(values, vec![30002, 30003]);
        usage.ports.insert(30002);
        assert_eq!(
            check_fit(&node, &usage, &Resources::default(), &net),
            Err("ports")
        );
    }
}
