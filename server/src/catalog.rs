//! The service catalog: a view over allocations, computed on each read from the state
//! (`StateStore::catalog_view`, a `CatalogView` the store defines and fills in one
//! transaction: `crate::state::views`), never stored. An instance exists for every
//! `[[group.G.service]]` block of every allocation that runs (client `running`, desired
//! `run`) on a node that is not `down` or `disconnected`, so registration and removal
//! follow the allocation's and its node's own lifecycle (stop, failure, loss, node
//! down, garbage collection) with no commands of their own and nothing that could
//! drift from them. See docs/architecture.md ("Service catalog").

use std::collections::{BTreeMap, BTreeSet};

use orch_common::api::{ServiceInstance, ServiceListStub};
use orch_common::model::{AllocatedPort, Allocation, CheckHealth, Node, NodeStatus, ServiceSpec};

use crate::state::{CatalogView, StateError, StateStore};

/// Every instance in `view` (of service `name` only, when given), sorted by service,
/// node name, then allocation id.
pub fn instances(view: &CatalogView, name: Option<&str>) -> Vec<ServiceInstance> {
    let mut out = Vec::new();
    for alloc in &view.allocs {
        // The allocation's own job version says which services it has: a running
        // instance keeps the blocks it was placed (or last updated in place) with.
        let Some(job) = view.jobs.get(&(alloc.job_id.clone(), alloc.job_version)) else {
            continue;
        };
        let Some(group) = job.groups.iter().find(|g| g.name == alloc.group) else {
            continue;
        };
        let node = view.nodes.get(&alloc.node_id);
        // A node that stopped heartbeating cannot be vouched for: its allocations stay
        // `running` until the scheduler marks them lost (or, while `disconnected`,
        // until `lost_after`), but nobody should be sent there meanwhile.
        if node.is_some_and(|n| matches!(n.status, NodeStatus::Down | NodeStatus::Disconnected)) {
            continue;
        }
        for spec in &group.services {
            if name.is_some_and(|n| n != spec.name) {
                continue;
            }
            out.push(instance(alloc, node, spec));
        }
    }
    out.sort_by(|a, b| {
        (&a.service, &a.node_name, &a.alloc_id).cmp(&(&b.service, &b.node_name, &b.alloc_id))
    });
    out
}

/// The instances of service `name` read from the state (one transaction), passing ones
/// only with `healthy_only`: what `GET /v1/service/{name}[?healthy=true]` answers and
/// what the DNS interface (`crate::dns`) serves. Blocking (SQLite): call it from
/// `spawn_blocking`.
pub fn service_instances(
    store: &StateStore,
    name: &str,
    healthy_only: bool,
) -> Result<Vec<ServiceInstance>, StateError> {
    let view = store.catalog_view(Some(name))?;
    let mut out = instances(&view, Some(name));
    if healthy_only {
        out.retain(|i| i.health == CheckHealth::Passing);
    }
    Ok(out)
}

/// One service block of one allocation as a catalog instance.
fn instance(alloc: &Allocation, node: Option<&Node>, spec: &ServiceSpec) -> ServiceInstance {
    let port = spec
        .port
        .as_deref()
        .and_then(|label| alloc.resources.ports.iter().find(|p| p.label == label));
    let prefix = format!("{}/", spec.name);
    let checks: BTreeMap<_, _> = alloc
        .checks
        .iter()
        .filter_map(|(key, status)| {
            key.strip_prefix(&prefix)
                .map(|check| (check.to_string(), status.clone()))
        })
        .collect();
    let health = health(spec.checks.len(), checks.values().map(|c| c.status));
    let canary = alloc.is_canary();
    let tags = if canary && !spec.canary_tags.is_empty() {
        spec.canary_tags.clone()
    } else {
        spec.tags.clone()
    };
    ServiceInstance {
        service: spec.name.clone(),
        alloc_id: alloc.id.clone(),
        job_id: alloc.job_id.clone(),
        group: alloc.group.clone(),
        node_id: alloc.node_id.clone(),
        node_name: node
            .map(|n| n.name.clone())
            .unwrap_or_else(|| alloc.node_name.clone()),
        address: address(port, node),
        port: port.map(|p| p.value),
        address_mode: spec.address_mode.clone().unwrap_or_else(|| "auto".into()),
        tags,
        canary_tags: spec.canary_tags.clone(),
        canary,
        meta: spec.meta.clone(),
        health,
        checks,
    }
}

/// Where the instance is reached: the port's host address when it is a concrete one
/// (not a wildcard), else the node's address (its fingerprinted IP, or the host of its
/// HTTP address). All address modes resolve like `host`: orch gives allocations no
/// network address of their own, so the host's address and port are the only ones
/// another machine can dial.
fn address(port: Option<&AllocatedPort>, node: Option<&Node>) -> String {
    if let Some(p) = port {
        if !matches!(p.host_ip.as_str(), "" | "0.0.0.0" | "::") {
            return p.host_ip.clone();
        }
    }
    match node {
        Some(n) => n.host_ip(),
        None => String::new(),
    }
}

/// A service's health from its checks: `passing` when it has none or every one of its
/// `defined` checks reported passing, `critical` when any reported critical, else
/// `pending` (some not reported yet, or not yet passing).
pub fn health(defined: usize, reported: impl Iterator<Item = CheckHealth>) -> CheckHealth {
    if defined == 0 {
        return CheckHealth::Passing;
    }
    let mut passing = 0;
    for status in reported {
        match status {
            CheckHealth::Critical => return CheckHealth::Critical,
            CheckHealth::Passing => passing += 1,
            CheckHealth::Pending => {}
        }
    }
    if passing >= defined {
        CheckHealth::Passing
    } else {
        CheckHealth::Pending
    }
}

/// One row per service name, sorted by name: the union of its tags, its instance count
/// and how many are passing.
pub fn list(instances: &[ServiceInstance]) -> Vec<ServiceListStub> {
    let mut by_name: BTreeMap<&str, (BTreeSet<&str>, u32, u32)> = BTreeMap::new();
    for i in instances {
        let entry = by_name.entry(&i.service).or_default();
        entry.0.extend(i.tags.iter().map(String::as_str));
        entry.1 += 1;
        if i.health == CheckHealth::Passing {
            entry.2 += 1;
        }
    }
    by_name
        .into_iter()
        .map(|(name, (tags, instances, healthy))| ServiceListStub {
            name: name.to_string(),
            tags: tags.into_iter().map(str::to_string).collect(),
            instances,
            healthy,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use orch_common::mock::{alloc_on, JobBuilder, NodeBuilder};

    use super::*;

    #[test]
    fn a_service_without_checks_is_passing() {
        assert_eq!(health(0, std::iter::empty()), CheckHealth::Passing);
    }

    #[test]
    fn one_critical_check_makes_the_service_critical() {
        let reported = [CheckHealth::Passing, CheckHealth::Critical];
        assert_eq!(health(2, reported.into_iter()), CheckHealth::Critical);
    }

    #[test]
    fn a_check_not_reported_yet_keeps_the_service_pending() {
        assert_eq!(
            health(2, [CheckHealth::Passing].into_iter()),
            CheckHealth::Pending
        );
        assert_eq!(health(1, std::iter::empty()), CheckHealth::Pending);
        assert_eq!(
            health(2, [CheckHealth::Passing, CheckHealth::Passing].into_iter()),
            CheckHealth::Passing
        );
    }

    #[test]
    fn a_wildcard_port_address_falls_back_to_the_node() {
        let mut node = NodeBuilder::new()
            .id("n1")
            .http_addr("10.1.2.3:4747")
            .build();
        let port = AllocatedPort {
            label: "http".into(),
            value: 25000,
            to: None,
            host_ip: "0.0.0.0".into(),
        };
        assert_eq!(address(Some(&port), Some(&node)), "10.1.2.3");
        let concrete = AllocatedPort {
            host_ip: "192.168.0.9".into(),
            ..port
        };
        assert_eq!(address(Some(&concrete), Some(&node)), "192.168.0.9");
        node.attributes
            .insert("unique.network.ip-address".into(), "10.9.9.9".into());
        assert_eq!(address(None, Some(&node)), "10.9.9.9");
    }

    #[test]
    fn an_unpromoted_canary_is_registered_with_its_canary_tags() {
        let job = JobBuilder::new("web").build();
        let mut alloc = alloc_on("a1", &job, "n1", 0);
        let spec = ServiceSpec {
            name: "web".into(),
            port: None,
            tags: vec!["v1".into()],
            canary_tags: vec!["canary".into()],
            meta: BTreeMap::new(),
            address_mode: None,
            checks: vec![],
        };
        let regular = instance(&alloc, None, &spec);
        assert_eq!(
            (regular.tags.clone(), regular.canary),
            (vec!["v1".to_string()], false)
        );

        alloc.deployment_id = Some("d1".into());
        alloc.deployment_status = Some(orch_common::model::AllocDeploymentStatus {
            canary: true,
            ..Default::default()
        });
        let canary = instance(&alloc, None, &spec);
        assert_eq!(
            (canary.tags, canary.canary),
            (vec!["canary".to_string()], true)
        );

        // Without canary tags a canary keeps its regular tags.
        let plain = ServiceSpec {
            canary_tags: vec![],
            ..spec
        };
        assert_eq!(instance(&alloc, None, &plain).tags, vec!["v1".to_string()]);
    }
}
