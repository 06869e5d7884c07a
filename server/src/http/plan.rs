//! `POST /v1/job/{id}/plan`: decodes the job (JSON `JobPlanRequest`, or the job as
//! TOML) for the dry run in `endpoints::plan`, which writes nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::{JobPlanRequest, JobPlanResponse};
use orch_common::ids::JobId;
use orch_common::jobspec;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Params, RawBody};
use crate::endpoints::plan::{self, PlanError, PlanRequest};

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::InvalidSpec(errors) => ApiError::invalid_spec(&errors),
            PlanError::IdMismatch { .. } | PlanError::CountAboveLimit(_) => {
                ApiError::bad_request(e.to_string())
            }
            PlanError::State(e) => e.into(),
            PlanError::Scheduler(_) | PlanError::Diff(_) | PlanError::Task(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

/// `POST /v1/job/{id}/plan`: JSON `JobPlanRequest`, or the job as TOML
/// (`Content-Type: application/toml`, `?diff=true` for the diff).
pub async fn plan(
    State(st): State<Arc<HttpState>>,
    IdPath(job_id): IdPath<JobId>,
    params: Params,
    body: RawBody,
) -> Result<Json<JobPlanResponse>, ApiError> {
    let (job, diff) = if body.is_toml() {
        let text = std::str::from_utf8(&body.bytes)
            .map_err(|_| ApiError::bad_request("the TOML body is not valid UTF-8"))?;
        let job = jobspec::parse(text).map_err(|e| ApiError::invalid_spec(&e))?;
        (job, params.flag("diff")?)
    } else {
        let req: JobPlanRequest = body.json()?;
        (req.job, req.diff || params.flag("diff")?)
    };
    let req = PlanRequest { job_id, job, diff };
    Ok(Json(plan::plan(&st.endpoints, req).await?))
}
