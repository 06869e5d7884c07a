//! Operator routes: the cluster-wide scheduler configuration
//! (`GET/PUT /v1/operator/scheduler/configuration`; the write is
//! `endpoints::operator`), read by every scheduler run from its snapshot.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::SchedulerConfigUpdateResponse;
use orch_common::model::SchedulerConfiguration;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{Indexed, RawBody};
use crate::endpoints::operator::{self, OperatorError};
use crate::gc::GcError;

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        match e {
            OperatorError::Log(e) | OperatorError::Gc(GcError::Log(e)) => e.into(),
            OperatorError::Gc(GcError::State(e)) => e.into(),
            OperatorError::Gc(e @ GcError::Task(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

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
    let config: SchedulerConfiguration = body.json()?;
    Ok(Json(
        operator::set_scheduler_config(&st.endpoints, config).await?,
    ))
}
