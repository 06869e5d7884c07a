//! Operator writes: the cluster-wide scheduler configuration (stored through
//! `Command::SetSchedulerConfig` and read by every scheduler run from its snapshot)
//! and a garbage collection now, with every threshold zero, as `nomad system gc`.

use orch_common::api::{GcResponse, SchedulerConfigUpdateResponse};
use orch_common::model::SchedulerConfiguration;

use super::context::Endpoints;
use crate::gc::GcError;
use crate::state::{Command, LogError};

/// Why an operator write failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Gc(#[from] GcError),
}

/// Replaces the scheduler configuration (`create_index`/`modify_index` are the
/// store's, whatever was sent). Answers once the write is committed.
pub async fn set_scheduler_config(
    ctx: &Endpoints,
    mut config: SchedulerConfiguration,
) -> Result<SchedulerConfigUpdateResponse, OperatorError> {
    config.create_index = 0;
    config.modify_index = 0;
    let index = ctx
        .log
        .submit(Command::SetSchedulerConfig { config })
        .await?
        .index;
    tracing::info!(index, "scheduler configuration updated");
    Ok(SchedulerConfigUpdateResponse {
        updated: true,
        index,
    })
}

/// Collects everything the rules allow now (see docs/operations.md); answers once every
/// deletion is committed.
pub async fn collect_garbage(ctx: &Endpoints) -> Result<GcResponse, OperatorError> {
    Ok(ctx.gc.collect(true).await?)
}
