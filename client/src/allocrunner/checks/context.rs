//! `CheckContext`: what a check loop needs from the client (the drivers and task
//! handles a script check execs through, and the HTTP client of HTTP checks).

use std::sync::Arc;

use crate::driver::{Driver, DriverSet, TaskHandle};
use crate::state::HandleStore;
use orch_common::ids::AllocId;

/// What a check loop needs from the client.
#[derive(Clone)]
pub struct CheckContext {
    pub alloc_id: AllocId,
    pub drivers: Arc<DriverSet>,
    pub handles: Option<HandleStore>,
    pub http: reqwest::Client,
}

impl CheckContext {
    pub fn new(alloc_id: &AllocId, drivers: Arc<DriverSet>, handles: Option<HandleStore>) -> Self {
        CheckContext {
            alloc_id: alloc_id.clone(),
            drivers,
            handles,
            // Checks go to this host's own ports: never through a proxy from the env.
            // No idle connections are kept: every run opens its own, so a server that
            // no longer accepts connections fails its check (as in Consul).
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default(),
        }
    }

    /// The driver and handle of the running `task` (as `orch alloc exec` finds them).
    pub(super) fn running_task(&self, task: &str) -> Result<(Arc<dyn Driver>, TaskHandle), String> {
        let handles = self
            .handles
            .as_ref()
            .ok_or_else(|| "this client keeps no task handles to exec into".to_string())?;
        let handle = handles
            .load(&self.alloc_id, task)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "task {task:?} of allocation {} is not running",
                    self.alloc_id
                )
            })?;
        let driver = self
            .drivers
            .get(&handle.driver)
            .cloned()
            .ok_or_else(|| format!("driver {:?} is not available", handle.driver))?;
        Ok((driver, handle))
    }
}
