//! System routes: `PUT /v1/system/gc` (and `POST`), a garbage collection now with
//! every threshold zero, as `nomad system gc`; answers with what it deleted.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::GcResponse;

use super::context::HttpState;
use super::error::ApiError;
use crate::endpoints::operator;

/// `PUT|POST /v1/system/gc`: collects everything the rules allow now (see
/// docs/operations.md); answers once every deletion is committed.
pub async fn gc(State(st): State<Arc<HttpState>>) -> Result<Json<GcResponse>, ApiError> {
    Ok(Json(operator::collect_garbage(&st.endpoints).await?))
}
