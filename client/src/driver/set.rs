//! `DriverSet`: the drivers a client offers, by name. It builds the configured ones
//! (`raw_exec` with its task shim, `container` with the client's image cache and
//! allowed volumes, `mock` when enabled), fingerprints them for the node, and finds the
//! driver a task or a saved handle names.

use std::collections::BTreeMap;
use std::sync::Arc;

use orch_common::model::DriverInfo;

use super::container::{ContainerDriver, ContainerOptions, ContainerPolicy};
use super::mock::MockDriver;
use super::raw_exec::{RawExecDriver, RawExecPolicy};
use super::types::Driver;
use crate::cgroups::CgroupManager;
use crate::config::ClientConfig;
use crate::shim::ShimCommand;

/// The drivers of one client, by the name jobs use in `driver = "..."`.
#[derive(Clone, Default)]
pub struct DriverSet {
    drivers: BTreeMap<String, Arc<dyn Driver>>,
}

impl DriverSet {
    /// No drivers (tests add the ones they use).
    pub fn new() -> Self {
        DriverSet::default()
    }

    /// The drivers `cfg` asks for: `raw_exec` and `container` always (each one's
    /// fingerprint says unhealthy when it cannot or may not run here: `raw_exec` under
    /// the client's `RawExecPolicy`), `mock` with `enable_mock_driver`.
    pub fn configured(cfg: &ClientConfig, cgroups: Option<Arc<dyn CgroupManager>>) -> Self {
        let mut set = DriverSet::new();
        set.insert(Arc::new(
            RawExecDriver::with_shim(cgroups.clone(), shim_command()).with_policy(RawExecPolicy {
                enabled: cfg.raw_exec,
                allow_root: cfg.allow_root_tasks,
                default_user: cfg.default_user.clone(),
            }),
        ));
        set.insert(Arc::new(ContainerDriver::new(
            cgroups,
            ContainerOptions {
                image_cache: cfg.client_dir().join("images"),
                allowed_volumes: cfg.container_volumes.clone(),
                policy: ContainerPolicy {
                    protected_dirs: vec![
                        cfg.alloc_root(),
                        cfg.client_dir(),
                        cfg.data_dir.join("server"),
                    ],
                    ..cfg.container.clone()
                },
                ..ContainerOptions::default()
            },
        )));
        if cfg.enable_mock_driver {
            set.insert(Arc::new(MockDriver::new()));
        }
        set
    }

    /// Adds `driver` under its own name (replacing one of the same name).
    pub fn insert(&mut self, driver: Arc<dyn Driver>) {
        self.drivers.insert(driver.name().to_string(), driver);
    }

    /// The driver called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Driver>> {
        self.drivers.get(name)
    }

    /// Fingerprints every driver: its `DriverInfo` by name (the node's `drivers`), and
    /// `driver.<name> = "1"` in `attributes` for each one that is detected and healthy
    /// (what constraints and the scheduler's driver check look at).
    pub fn fingerprint(
        &self,
        attributes: &mut BTreeMap<String, String>,
    ) -> BTreeMap<String, DriverInfo> {
        let mut infos = BTreeMap::new();
        for (name, d) in &self.drivers {
            let info = d.fingerprint();
            if info.detected && info.healthy {
                attributes.insert(format!("driver.{name}"), "1".to_string());
            }
            infos.insert(name.clone(), info);
        }
        infos
    }
}

/// How `raw_exec` starts its task shim: `orch-task-shim` (or this binary as
/// `orch task-shim`); a unit test's binary has its own entry point for it.
#[cfg(not(test))]
fn shim_command() -> ShimCommand {
    ShimCommand::default()
}

#[cfg(test)]
fn shim_command() -> ShimCommand {
    crate::shim::supervisor::tests::test_shim()
}
