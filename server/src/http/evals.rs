//! Evaluation routes: the list and one evaluation.

use std::sync::Arc;

use axum::extract::State;
use orch_common::ids::EvalId;
use orch_common::model::Evaluation;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, Params};
use crate::state::Table;

/// `GET /v1/evaluations[?prefix=P&job_id=J]`, oldest first.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<Evaluation>>, ApiError> {
    let index = st.wait(Table::Evals, &params).await?;
    let prefix = params.prefix().to_string();
    let job_id = params.get("job_id").map(str::to_string);
    let evals = st
        .read(move |s| match &job_id {
            Some(j) => s.evals_by_job(j),
            None => s.evals(),
        })
        .await?;
    Ok(Indexed(
        index,
        evals
            .into_iter()
            .filter(|e| e.id.starts_with(&prefix))
            .collect(),
    ))
}

/// `GET /v1/evaluation/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Evaluation>, ApiError> {
    let id = st.resolve::<EvalId>(&prefix).await?;
    let index = st.wait(Table::Evals, &params).await?;
    let lookup = id.clone();
    let eval = st
        .read(move |s| s.eval(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("evaluation {:?} not found", id.as_str())))?;
    Ok(Indexed(index, eval))
}
