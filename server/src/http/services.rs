//! Service catalog routes: `GET /v1/services` (one row per service name) and
//! `GET /v1/service/{name}` (its instances, `?healthy=true` for passing ones only).
//! Both are blocking queries woken by job, allocation and node changes, the tables the
//! catalog is computed from (`crate::catalog`).

use std::sync::Arc;

use axum::extract::State;
use orch_common::api::{ServiceInstance, ServiceListStub};

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, Params};
use crate::catalog;
use crate::state::Table;

/// The tables the catalog is computed from: a change to any may change it.
const CATALOG_TABLES: [Table; 3] = [Table::Jobs, Table::Allocs, Table::Nodes];

/// `GET /v1/services`: every service with instances, sorted by name.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<ServiceListStub>>, ApiError> {
    let index = st.wait_any(&CATALOG_TABLES, &params).await?;
    let view = st.read(|s| s.catalog_view(None)).await?;
    Ok(Indexed(
        index,
        catalog::list(&catalog::instances(&view, None)),
    ))
}

/// `GET /v1/service/{name}[?healthy=true]`: the service's instances sorted by node name
/// and allocation id; an unknown name (or one with no running instance) is `[]`, as in
/// Nomad and Consul, so a watcher can block on a service before it first runs.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(name): IdPath,
    params: Params,
) -> Result<Indexed<Vec<ServiceInstance>>, ApiError> {
    let healthy_only = params.flag("healthy")?;
    let index = st.wait_any(&CATALOG_TABLES, &params).await?;
    let instances = st
        .read(move |s| catalog::service_instances(s, &name, healthy_only))
        .await?;
    Ok(Indexed(index, instances))
}
