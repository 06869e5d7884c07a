//! Allocation writes: a user's stop (the allocation is migrated: replaced like a failed
//! one, then stopped) and a client's batched status updates (a newly failed allocation
//! gets an `alloc-failure` evaluation so the scheduler can reschedule it).

use std::collections::BTreeSet;

use orch_common::api::{AllocClientUpdate, AllocUpdateResponse};
use orch_common::ids::{AllocId, EvalId, JobId, NodeId};
use orch_common::model::{triggers, ClientStatus, DesiredStatus, Evaluation};

use super::context::{Endpoints, ReadError};
use super::nodes::{self, NodeError};
use crate::state::{Command, LogError, Table};

/// What a stop request committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocStopped {
    /// The `alloc-stop` evaluation that places the replacement.
    pub eval_id: EvalId,
    pub index: u64,
}

/// Why an allocation write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("allocation {alloc_id:?} not found")]
    NotFound { alloc_id: AllocId },
    #[error("allocation {alloc_id} is already {client_status} (desired {desired_status}); nothing to stop")]
    AlreadyStopped {
        alloc_id: AllocId,
        client_status: &'static str,
        desired_status: &'static str,
    },
    #[error("job {job_id:?} of allocation {alloc_id} not found")]
    JobNotFound { job_id: JobId, alloc_id: AllocId },
    /// A client's update for a node that is not registered.
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Stops an allocation by replacing it like a failed one (a new allocation is placed,
/// preferring no particular node, then this one is stopped), through an `alloc-stop`
/// evaluation of its job. Refused for an allocation that is already terminal.
pub async fn stop(ctx: &Endpoints, alloc_id: &AllocId) -> Result<AllocStopped, AllocError> {
    let lookup = alloc_id.clone();
    let (alloc, job) = ctx
        .read(move |s| {
            let Some(a) = s.alloc(&lookup)? else {
                return Ok(None);
            };
            let job = s.job(&a.job_id)?;
            Ok(Some((a, job)))
        })
        .await?
        .ok_or_else(|| AllocError::NotFound {
            alloc_id: alloc_id.clone(),
        })?;
    if alloc.desired_status != DesiredStatus::Run || alloc.client_status.is_terminal() {
        return Err(AllocError::AlreadyStopped {
            alloc_id: alloc_id.clone(),
            client_status: alloc.client_status.as_str(),
            desired_status: alloc.desired_status.as_str(),
        });
    }
    let job = job.ok_or_else(|| AllocError::JobNotFound {
        job_id: alloc.job_id.clone(),
        alloc_id: alloc_id.clone(),
    })?;
    let eval = Evaluation::for_job(&job, triggers::ALLOC_STOP);
    let eval_id = eval.id.clone();
    let index = ctx
        .log
        .submit(Command::MigrateAllocs {
            alloc_ids: vec![alloc_id.clone()],
            evals: vec![eval],
        })
        .await?
        .index;
    tracing::info!(alloc_id = %alloc_id, eval_id = %eval_id, "allocation stop requested");
    Ok(AllocStopped { eval_id, index })
}

/// Stores a client's allocation states, when it presented its node's secret. Updates
/// for allocations of other nodes or unknown ids are ignored.
pub async fn update_from_client(
    ctx: &Endpoints,
    node_id: &NodeId,
    secret: Option<&str>,
    allocs: Vec<AllocClientUpdate>,
) -> Result<AllocUpdateResponse, AllocError> {
    nodes::authenticate(ctx, node_id, secret).await?;
    let nid = node_id.clone();
    let (updates, evals) = ctx
        .read(move |s| {
            let mut updates = Vec::new();
            let mut failed_jobs = BTreeSet::new();
            for update in allocs {
                let Some(existing) = s.alloc(&update.id)? else {
                    tracing::warn!(alloc_id = %update.id, node_id = %nid, "update for an unknown allocation");
                    continue;
                };
                if existing.node_id != nid {
                    tracing::warn!(alloc_id = %update.id, node_id = %nid, "update for another node's allocation");
                    continue;
                }
                // A client reports `lost` for an allocation it no longer runs that
                // the servers list as live (their state restored from a snapshot):
                // as for a failure, the job needs a replacement.
                if matches!(update.client_status, ClientStatus::Failed | ClientStatus::Lost)
                    && existing.client_status != update.client_status
                    && existing.desired_status == DesiredStatus::Run
                {
                    failed_jobs.insert(existing.job_id.clone());
                }
                updates.push(update);
            }
            let mut evals = Vec::new();
            for job_id in failed_jobs {
                if let Some(job) = s.job(&job_id)? {
                    if !job.stop {
                        evals.push(Evaluation::for_job(&job, triggers::ALLOC_FAILURE));
                    }
                }
            }
            Ok((updates, evals))
        })
        .await?;
    if updates.is_empty() {
        return Ok(AllocUpdateResponse {
            index: ctx.store.table_index(Table::Allocs),
        });
    }
    let index = ctx
        .log
        .submit(Command::UpdateAllocsFromClient { updates, evals })
        .await?
        .index;
    Ok(AllocUpdateResponse { index })
}
