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

/// `GET /v1/operator/raft/configuration`: the Raft configuration (every server, voter
/// or learner, and which leads) with the log index it was made at.
pub async fn raft_configuration(
    State(st): State<Arc<HttpState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = st
        .cluster
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server does not replicate".to_string()))?;
    let index = cluster
        .raft
        .metrics()
        .borrow()
        .membership_config
        .log_id()
        .map(|l| l.index)
        .unwrap_or(0);
    Ok(Json(serde_json::json!({
        "index": index,
        "servers": cluster.members(),
    })))
}

/// Which server `DELETE /v1/operator/raft/peer` removes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerQuery {
    pub id: Option<u64>,
    pub address: Option<String>,
}

/// `DELETE /v1/operator/raft/peer?id=N` or `?address=host:port`: removes a server
/// from the Raft configuration (on the leader; a follower forwards it). Refused for
/// the leader itself and for an unknown server.
pub async fn remove_raft_peer(
    State(st): State<Arc<HttpState>>,
    axum::extract::Query(q): axum::extract::Query<PeerQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = st
        .cluster
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server does not replicate".to_string()))?;
    let members = cluster.members();
    let target = match (&q.id, &q.address) {
        (Some(id), None) => members.iter().find(|m| m.id == *id),
        (None, Some(addr)) => members.iter().find(|m| m.rpc_addr == *addr),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of id=N or address=host:port".to_string(),
            ))
        }
    }
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "no server {} in the Raft configuration",
            q.id.map(|i| i.to_string())
                .or(q.address.clone())
                .unwrap_or_default()
        ))
    })?
    .clone();
    if target.id == cluster.me {
        return Err(ApiError::bad_request(
            "this server leads the cluster: remove it from another server after a new \
             leader is elected (stop it first)"
                .to_string(),
        ));
    }
    crate::raft::cluster::remove_server(&cluster.raft, target.id)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(Json(serde_json::json!({ "removed": target })))
}
