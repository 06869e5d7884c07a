//! System routes: `PUT /v1/system/gc` (and `POST`), a garbage collection now with
//! every threshold zero, as `nomad system gc`; answers with what it deleted.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::GcResponse;

use super::{ApiError, HttpState};
use crate::gc::GcError;

/// `PUT|POST /v1/system/gc`: collects everything the rules allow now (see
/// docs/operations.md); answers once every deletion is committed.
pub async fn gc(State(st): State<Arc<HttpState>>) -> Result<Json<GcResponse>, ApiError> {
    match st.gc.collect(true).await {
        Ok(counts) => Ok(Json(counts)),
        Err(GcError::Log(e)) => Err(e.into()),
        Err(GcError::State(e)) => Err(e.into()),
        Err(e @ GcError::Task(_)) => Err(ApiError::Internal(e.to_string())),
    }
}
