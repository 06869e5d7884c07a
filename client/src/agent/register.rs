//! Registration and liveness: the node the client registers (`build_node`), the
//! register + heartbeat loop (heartbeats at TTL/2; registering again when a server no
//! longer knows the node) and the disconnect watchdog, which stops allocations whose
//! `disconnect.lost_after` passed while no server answered.

use std::sync::Arc;
use std::time::Duration;

use orch_common::api::HeartbeatRequest;
use orch_common::ids::{now_ms, NodeId};
use orch_common::model::{Node, NodeStatus};
use tokio::sync::watch;

use super::shared::{backoff, sleep_or_stop, Shared};
use crate::config::ClientConfig;
use crate::driver::DriverSet;
use crate::fingerprint::Fingerprint;

/// The node this client registers: the host's fingerprint, the drivers' and the
/// configured name, datacenter, class, metadata, reservations and ports.
pub(super) fn build_node(
    cfg: &ClientConfig,
    id: NodeId,
    fp: Fingerprint,
    drivers: &DriverSet,
) -> Node {
    let mut attributes = fp.attributes;
    let infos = drivers.fingerprint(&mut attributes);
    let name = if cfg.name.is_empty() {
        attributes
            .get("unique.hostname")
            .cloned()
            .unwrap_or_else(|| id.to_string())
    } else {
        cfg.name.clone()
    };
    let mut node = Node {
        id,
        name,
        datacenter: cfg.datacenter.clone(),
        node_class: cfg.node_class.clone(),
        node_pool: "default".to_string(),
        status: NodeStatus::Ready,
        status_description: String::new(),
        eligibility: Default::default(),
        attributes,
        meta: cfg.meta.clone(),
        resources: fp.resources,
        reserved: cfg.reserved,
        drivers: infos,
        http_addr: cfg.http_advertise.clone(),
        min_dynamic_port: cfg.min_dynamic_port,
        max_dynamic_port: cfg.max_dynamic_port,
        reserved_ports: cfg.reserved_ports.clone(),
        computed_class: String::new(),
        status_updated_at: now_ms(),
        drain: None,
        last_drain: None,
        secret_hash: String::new(),
        create_index: 0,
        modify_index: 0,
    };
    node.compute_class();
    node
}

/// Registers (retrying with backoff over the server list), then heartbeats at TTL/2;
/// registers again when a server no longer knows the node.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let node_id = shared.node.id.clone();
    'register: loop {
        let mut wait = Duration::from_millis(250);
        let mut attempts = 0u32;
        let mut ttl = loop {
            match shared.api.register(&shared.node).await {
                Ok(r) => {
                    shared.contacted();
                    tracing::info!(node_id = %node_id, ttl_ms = r.heartbeat_ttl_ms, "registered with the servers");
                    break Duration::from_millis(r.heartbeat_ttl_ms);
                }
                Err(e) => {
                    attempts += 1;
                    // The first failures are normal while servers start; say so quietly.
                    if attempts > 3 {
                        tracing::warn!(error = %e, "registering the node; retrying");
                    } else {
                        tracing::debug!(error = %e, "registering the node; retrying");
                    }
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                    wait = backoff(wait);
                }
            }
        };
        let _ = shared.registered.send(true);
        let mut failed = false;
        loop {
            let next = if failed {
                Duration::from_secs(1)
            } else {
                (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
            };
            if sleep_or_stop(next, &mut stop).await {
                return;
            }
            // After a failed heartbeat the server may have marked the node down: ask for
            // ready again.
            let req = HeartbeatRequest {
                status: failed.then_some(NodeStatus::Ready),
            };
            match shared.api.heartbeat(&node_id, &req).await {
                Ok(r) => {
                    shared.contacted();
                    shared.api.learn_servers(&r.servers);
                    ttl = Duration::from_millis(r.heartbeat_ttl_ms);
                    failed = false;
                }
                Err(e) if e.is_not_found() => {
                    tracing::warn!(error = %e, "the server does not know this node; registering again");
                    continue 'register;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    failed = true;
                }
            }
        }
    }
}

/// How often the watchdog looks at how long the servers have been out of reach.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// Stops the allocations whose group's `disconnect.lost_after` has passed since a
/// server last answered: by then the servers count them lost and have replaced them,
/// so running on would leave two copies once the network heals.
pub(super) async fn disconnect_watchdog(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if sleep_or_stop(WATCHDOG_TICK, &mut stop).await {
            return;
        }
        let Some(last) = *shared.last_contact.lock().expect("contact time poisoned") else {
            continue;
        };
        let away = last.elapsed();
        let runners = shared.runners.lock().expect("runner table poisoned");
        for r in runners.values() {
            let Some(lost_after) = r.lost_after else {
                continue;
            };
            if away > lost_after && !r.stop_requested() && !r.is_done() {
                let why = format!(
                    "no server reachable for {:.0}s (disconnect.lost_after is {})",
                    away.as_secs_f64(),
                    orch_common::duration::format(lost_after)
                );
                tracing::warn!(alloc = %r.alloc_id, "stopping allocation: {why}");
                r.stop(&why);
            }
        }
    }
}
