//! Deployments: `deployment()`, `deployment_group()` and `DeploymentBuilder`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::{DeploymentId, EvalId};
use crate::model::{deployment_desc, Deployment, DeploymentGroup, DeploymentStatus, Job};

/// A group's part of a rollout: `total` instances, `canaries` of them canaries, a
/// 10-minute progress deadline (no deadline set yet), nothing placed.
pub fn deployment_group(total: u32, canaries: u32) -> DeploymentGroup {
    DeploymentGroup {
        desired_total: total,
        desired_canaries: canaries,
        progress_deadline: Duration::from_secs(600),
        ..Default::default()
    }
}

/// A running deployment of `job`'s current version, one `deployment_group` per group
/// of the job (its count; its update policy's canaries), with a random id.
pub fn deployment(job: &Job) -> Deployment {
    DeploymentBuilder::new(job).build()
}

/// Builds a deployment of a job version: by default what `deployment()` returns.
pub struct DeploymentBuilder(Deployment);

impl DeploymentBuilder {
    pub fn new(job: &Job) -> DeploymentBuilder {
        let task_groups = job
            .groups
            .iter()
            .map(|g| {
                let canaries = g.update.as_ref().map_or(0, |u| u.canary);
                (g.name.clone(), deployment_group(g.count, canaries))
            })
            .collect();
        DeploymentBuilder(Deployment {
            id: DeploymentId::generate(),
            job_id: job.id.clone(),
            job_version: job.version,
            job_modify_index: job.job_modify_index,
            job_create_index: job.create_index,
            status: DeploymentStatus::Running,
            status_description: deployment_desc::RUNNING.to_string(),
            task_groups,
            eval_id: EvalId::default(),
            create_time: 0,
            modify_time: 0,
            create_index: 0,
            modify_index: 0,
        })
    }

    pub fn id(mut self, id: impl Into<DeploymentId>) -> Self {
        self.0.id = id.into();
        self
    }

    /// Sets (or adds) one group's part.
    pub fn group(mut self, name: &str, group: DeploymentGroup) -> Self {
        self.0.task_groups.insert(name.to_string(), group);
        self
    }

    /// Replaces every group's part with these.
    pub fn groups<'a>(
        mut self,
        groups: impl IntoIterator<Item = (&'a str, DeploymentGroup)>,
    ) -> Self {
        self.0.task_groups = groups
            .into_iter()
            .map(|(name, g)| (name.to_string(), g))
            .collect::<BTreeMap<_, _>>();
        self
    }

    pub fn status(mut self, status: DeploymentStatus, description: &str) -> Self {
        self.0.status = status;
        self.0.status_description = description.to_string();
        self
    }

    /// The evaluation whose plan created it.
    pub fn eval_id(mut self, eval_id: impl Into<EvalId>) -> Self {
        self.0.eval_id = eval_id.into();
        self
    }

    pub fn build(self) -> Deployment {
        self.0
    }
}
