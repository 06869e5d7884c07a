//! Tasks: `task()` and `TaskBuilder`, for the groups a test puts together itself
//! (`JobBuilder::tasks`) and for the client's task runner.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{default_kill_signal, default_kill_timeout, Resources, Task};

/// Task `name` of `driver`, with the driver's smallest valid config (`raw_exec`: a
/// command; other drivers: empty) and 500 MHz / 256 MiB.
pub fn task(name: &str, driver: &str) -> Task {
    TaskBuilder::new(name, driver).build()
}

/// What a task of `driver` is configured with unless a test says otherwise: `raw_exec`
/// needs a command; the other drivers start from an empty config.
pub(super) fn default_config(driver: &str) -> BTreeMap<String, serde_json::Value> {
    match driver {
        "raw_exec" => BTreeMap::from([("command".to_string(), "/bin/true".into())]),
        _ => BTreeMap::new(),
    }
}

/// Builds a task: by default what `task()` returns.
pub struct TaskBuilder(Task);

impl TaskBuilder {
    pub fn new(name: &str, driver: &str) -> TaskBuilder {
        TaskBuilder(Task {
            name: name.to_string(),
            driver: driver.to_string(),
            config: default_config(driver),
            resources: Resources {
                cpu: 500,
                memory: 256,
                ..Resources::ZERO
            },
            env: BTreeMap::new(),
            kill_timeout: default_kill_timeout(),
            kill_signal: default_kill_signal(),
            user: None,
            logs: Default::default(),
            meta: BTreeMap::new(),
        })
    }

    /// Sets one key of the driver config (over the driver's default config).
    pub fn config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.0.config.insert(key.to_string(), value);
        self
    }

    pub fn cpu(mut self, mhz: u64) -> Self {
        self.0.resources.cpu = mhz;
        self
    }

    pub fn memory(mut self, mib: u64) -> Self {
        self.0.resources.memory = mib;
        self
    }

    /// How long a stop waits after the kill signal before killing outright.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.0.kill_timeout = timeout;
        self
    }

    pub fn build(self) -> Task {
        self.0
    }
}
