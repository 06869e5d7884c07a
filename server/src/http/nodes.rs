//! Node routes for users: the list (stubs) and one node.

use std::sync::Arc;

use axum::extract::State;
use orch_common::api::NodeListStub;
use orch_common::structs::Node;

use super::{ApiError, HttpState, IdPath, Indexed, Params};
use crate::state::Table;

/// `GET /v1/nodes[?prefix=P]`.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<NodeListStub>>, ApiError> {
    let index = st.wait(Table::Nodes, &params).await?;
    let prefix = params.prefix().to_string();
    let nodes = st.read(|s| s.nodes()).await?;
    Ok(Indexed(
        index,
        nodes
            .iter()
            .filter(|n| n.id.starts_with(&prefix))
            .map(NodeListStub::from)
            .collect(),
    ))
}

/// `GET /v1/node/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Node>, ApiError> {
    let id = st.resolve(Table::Nodes, "node", &prefix).await?;
    let index = st.wait(Table::Nodes, &params).await?;
    let lookup = id.clone();
    let node = st
        .read(move |s| s.node(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {id:?} not found")))?;
    Ok(Indexed(index, node))
}
