//! Operator routes: the cluster-wide scheduler configuration
//! (`GET/PUT /v1/operator/scheduler/configuration`), stored through
//! `Command::SetSchedulerConfig` and read by every scheduler run from its snapshot.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::SchedulerConfigUpdateResponse;
use orch_common::model::SchedulerConfiguration;

use super::{ApiError, HttpState, Indexed, RawBody};
use crate::state::Command;

/// `GET /v1/operator/scheduler/configuration`: the configuration in force (defaults
/// until one is set), with its `modify_index` as `X-Orch-Index`.
pub async fn get_config(
    State(st): State<Arc<HttpState>>,
) -> Result<Indexed<SchedulerConfiguration>, ApiError> {
    let config = st.read(|s| s.scheduler_config()).await?;
    Ok(Indexed(config.modify_index.max(1), config))
}

/// `PUT /v1/operator/scheduler/configuration`: replaces the configuration with the
/// body (fields left out take their defaults; `create_index`/`modify_index` are set by
/// the server). Answers once the write is committed.
pub async fn put_config(
    State(st): State<Arc<HttpState>>,
    body: RawBody,
) -> Result<Json<SchedulerConfigUpdateResponse>, ApiError> {
    let mut config: SchedulerConfiguration = body.json()?;
    config.create_index = 0;
    config.modify_index = 0;
    let index = st
        .log
        .submit(Command::SetSchedulerConfig { config })
        .await?;
    tracing::info!(index, "scheduler configuration updated");
    Ok(Json(SchedulerConfigUpdateResponse {
        updated: true,
        index,
    }))
}
