//! Services and their health checks: `service()` and `check()`, added to a job with
//! `JobBuilder::service`. A test sets on the value the few fields it is about.

use std::time::Duration;

use crate::model::{CheckSpec, CheckType, ServiceSpec};

/// Service `name` on the group's port `port` (`None`: no port), without tags, meta or
/// checks.
pub fn service(name: &str, port: Option<&str>) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        port: port.map(str::to_string),
        tags: Vec::new(),
        canary_tags: Vec::new(),
        meta: Default::default(),
        address_mode: None,
        checks: Vec::new(),
    }
}

/// An unnamed check of `check_type` on its service's port, every second with a 1s
/// timeout, passing or critical at the first result; an `http` check asks for `/`, a
/// `script` check runs `/bin/true`.
pub fn check(check_type: CheckType) -> CheckSpec {
    CheckSpec {
        check_type,
        name: None,
        path: (check_type == CheckType::Http).then(|| "/".to_string()),
        method: None,
        headers: Default::default(),
        command: (check_type == CheckType::Script).then(|| "/bin/true".to_string()),
        args: Vec::new(),
        port: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        success_before_passing: 1,
        failures_before_critical: 1,
        check_restart: None,
    }
}
