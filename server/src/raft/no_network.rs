//! TEMPORARY placeholder until the HTTP network lands: every peer is unreachable.
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{OrchRaft, ServerId, ServerNode};

pub struct Network;
pub struct Peer;

fn unreachable<E: std::error::Error>() -> RPCError<ServerId, ServerNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no network yet")))
}

impl RaftNetworkFactory<OrchRaft> for Network {
    type Network = Peer;
    async fn new_client(&mut self, _target: ServerId, _node: &ServerNode) -> Peer {
        Peer
    }
}

impl RaftNetwork<OrchRaft> for Peer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<OrchRaft>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<ServerId>, RPCError<ServerId, ServerNode, RaftError<ServerId>>>
    {
        Err(unreachable())
    }
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<OrchRaft>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<ServerId>,
        RPCError<ServerId, ServerNode, RaftError<ServerId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }
    async fn vote(
        &mut self,
        _rpc: VoteRequest<ServerId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<ServerId>, RPCError<ServerId, ServerNode, RaftError<ServerId>>> {
        Err(unreachable())
    }
}
