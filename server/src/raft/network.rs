//! How a server calls the other servers' Raft: openraft's `RaftNetworkFactory`
//! (`Network`, one shared HTTP client) and `RaftNetwork` (`Connection`, one per
//! target), posting each RPC to the target's RPC address (`ServerNode::rpc_addr`). With TLS
//! the call is HTTPS presenting this server's certificate and accepting only a peer
//! whose certificate has the server role; the peer's `rpc::router` answers.
//!
//! The wire (both sides use the paths and codecs here):
//!
//! ```text
//!  POST /v1/raft/append    JSON AppendEntriesRequest   -> JSON Result<AppendEntriesResponse, RaftError>
//!  POST /v1/raft/vote      JSON VoteRequest            -> JSON Result<VoteResponse, RaftError>
//!  POST /v1/raft/snapshot  u32 BE n, n bytes of JSON InstallSnapshotRequest without its
//!                          data, then the chunk's raw bytes
//!                                                      -> JSON Result<InstallSnapshotResponse,
//!                                                         RaftError<InstallSnapshotError>>
//! ```
//!
//! Entries go as JSON (as the log store keeps them): 1000 entries of 2 KB commands,
//! 2 MB, encode in about 4 ms and decode in 20 ms (release build), and openraft sends
//! at most `max_payload_entries` (300 by default) at once. A snapshot chunk goes raw:
//! serde_json writes a `Vec<u8>` as an array of numbers (3 MiB became 11 MB, 38 ms to
//! decode).
//!
//! What openraft makes of the errors (`RPCError`): a connection that cannot be made
//! (refused, no route, TLS handshake refused, connect timeout) is `Unreachable`, the
//! only one it backs off after (`Connection::backoff`); a request that ran out of its
//! time (`RPCOption::hard_ttl`) is `Timeout`; a `RaftError` the peer answered with is
//! `RemoteError`; 413 to an AppendEntries is `PayloadTooLarge` (openraft retries at
//! once with half the entries); anything else (another status, an undecodable
//! answer) is `Network`.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Vote};
use orch_common::tls::{Role, Tls};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::view::Contacts;
use super::{OrchRaft, ServerNode};

type NodeId = u64;

/// The AppendEntries route.
/// The header naming the server an RPC is for: a server answers only its own.
pub const TARGET_HEADER: &str = "x-orch-raft-target";
pub const APPEND_PATH: &str = "/v1/raft/append";
/// The RequestVote route.
pub const VOTE_PATH: &str = "/v1/raft/vote";
/// The InstallSnapshot route (one chunk per call).
pub const SNAPSHOT_PATH: &str = "/v1/raft/snapshot";

/// How long connecting to a peer may take: a server that does not answer this fast is
/// treated as unreachable (and backed off from) rather than waited for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause after a peer was found unreachable, and the longest
/// (`Connection::backoff`).
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How much of an unexpected answer's body an error quotes.
const QUOTED_BODY: usize = 200;

/// Calls the other servers' Raft: openraft's network factory. Cheap to clone; every
/// `Connection` shares its HTTP client (and so its kept-alive connections).
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    scheme: &'static str,
    /// Where every answered call is recorded (the peer's last contact).
    contacts: Contacts,
}

impl Network {
    /// Plain HTTP without `tls`; else HTTPS presenting this server's certificate, to
    /// peers whose certificate has the server role only.
    pub fn new(tls: Option<&Arc<Tls>>, contacts: Contacts) -> Result<Network, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        Ok(match tls {
            None => Network {
                http: builder.build()?,
                scheme: "http",
                contacts,
            },
            Some(tls) => Network {
                http: builder
                    .use_preconfigured_tls(tls.client_config_for_roles(&[Role::Server]))
                    .build()?,
                scheme: "https",
                contacts,
            },
        })
    }
}

impl RaftNetworkFactory<OrchRaft> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> Connection {
        Connection {
            http: self.http.clone(),
            base: format!("{}://{}", self.scheme, node.rpc_addr),
            target,
            node: node.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

/// One target server's Raft, as openraft calls it.
pub struct Connection {
    http: reqwest::Client,
    /// `scheme://host:port`.
    base: String,
    target: NodeId,
    node: ServerNode,
    contacts: Contacts,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, ServerNode, RaftError<NodeId, E>>>;

/// What went wrong with one call, before it is an `RPCError` of a given shape.
enum CallError<E> {
    Unreachable(reqwest::Error),
    Misdirected(String),
    Timeout,
    TooLarge,
    Network(AnyError),
    Remote(RaftError<NodeId, E>),
}

impl Connection {
    /// Posts `body` to `path` within `ttl` and decodes the peer's
    /// `Result<T, RaftError<E>>`.
    async fn call<T, E>(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<T, CallError<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}{path}", self.base);
        let sent = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(TARGET_HEADER, self.target.to_string())
            .timeout(ttl)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            // A connect timeout is also a timeout: test for the connection first.
            Err(e) if e.is_connect() => return Err(CallError::Unreachable(e)),
            Err(e) if e.is_timeout() => return Err(CallError::Timeout),
            Err(e) => return Err(CallError::Network(AnyError::new(&e))),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(bytes) => bytes,
            Err(e) if e.is_timeout() => return Err(CallError::Timeout),
            Err(e) => return Err(CallError::Network(AnyError::new(&e))),
        };
        // Another server answers at the target's address now (one whose data dir was
        // wiped rejoins with a new id): as unreachable as a stopped one.
        if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
            return Err(CallError::Misdirected(format!(
                "POST {url}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(CallError::TooLarge);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let quoted: String = text.chars().take(QUOTED_BODY).collect();
            return Err(CallError::Network(AnyError::error(format!(
                "POST {url}: HTTP {status}: {quoted}"
            ))));
        }
        match serde_json::from_slice::<Result<T, RaftError<NodeId, E>>>(&bytes) {
            Ok(Ok(answer)) => {
                self.contacts.touch(self.target);
                Ok(answer)
            }
            Ok(Err(e)) => Err(CallError::Remote(e)),
            Err(e) => Err(CallError::Network(AnyError::error(format!(
                "POST {url}: undecodable answer: {e}"
            )))),
        }
    }

    /// The `RPCError` openraft acts on for `e`. `vote` is the request's (its leader or
    /// candidate is this server, which a `Timeout` names); `too_large` is the error a
    /// 413 becomes.
    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError<E>,
        action: RPCTypes,
        vote: &Vote<NodeId>,
        ttl: Duration,
        too_large: impl FnOnce() -> RPCError<NodeId, ServerNode, RaftError<NodeId, E>>,
    ) -> RPCError<NodeId, ServerNode, RaftError<NodeId, E>> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Misdirected(e) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e)))
            }
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: vote.leader_id().voted_for().unwrap_or_default(),
                target: self.target,
                timeout: ttl,
            }),
            CallError::TooLarge => too_large(),
            CallError::Network(e) => RPCError::Network(NetworkError::from(e)),
            CallError::Remote(e) => RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            )),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    serde_json::to_vec(value).map_err(|e| AnyError::new(&e))
}

/// A snapshot chunk as the snapshot route reads it: the request's JSON without its
/// data, its length first (u32, big-endian), then the data as it is.
pub fn encode_snapshot_chunk(req: &InstallSnapshotRequest<OrchRaft>) -> Result<Vec<u8>, String> {
    let head = InstallSnapshotRequest::<OrchRaft> {
        vote: req.vote,
        meta: req.meta.clone(),
        offset: req.offset,
        data: Vec::new(),
        done: req.done,
    };
    let head = serde_json::to_vec(&head).map_err(|e| e.to_string())?;
    let len = u32::try_from(head.len()).map_err(|_| "snapshot metadata over 4 GiB".to_string())?;
    let mut out = Vec::with_capacity(4 + head.len() + req.data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&req.data);
    Ok(out)
}

/// The inverse of `encode_snapshot_chunk`.
pub fn decode_snapshot_chunk(body: &[u8]) -> Result<InstallSnapshotRequest<OrchRaft>, String> {
    let (len, rest) = body
        .split_first_chunk::<4>()
        .ok_or("a snapshot chunk starts with its metadata's length")?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(format!(
            "the snapshot chunk's metadata is {len} bytes but only {} follow",
            rest.len()
        ));
    }
    let (head, data) = rest.split_at(len);
    let mut req: InstallSnapshotRequest<OrchRaft> =
        serde_json::from_slice(head).map_err(|e| format!("snapshot chunk metadata: {e}"))?;
    req.data = data.to_vec();
    Ok(req)
}

impl RaftNetwork<OrchRaft> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<OrchRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let ttl = option.hard_ttl();
        let body = to_json(&rpc).map_err(|e| RPCError::Network(NetworkError::from(e)))?;
        let entries = rpc.entries.len() as u64;
        self.call(APPEND_PATH, "application/json", body, ttl)
            .await
            .map_err(|e| {
                self.rpc_error(e, RPCTypes::AppendEntries, &rpc.vote, ttl, || {
                    // Half as many entries next time (openraft retries at once).
                    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(
                        (entries / 2).max(1),
                    ))
                })
            })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<OrchRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let ttl = option.hard_ttl();
        let body = encode_snapshot_chunk(&rpc)
            .map_err(|e| RPCError::Network(NetworkError::from(AnyError::error(e))))?;
        self.call(SNAPSHOT_PATH, "application/octet-stream", body, ttl)
            .await
            .map_err(|e| {
                self.rpc_error(e, RPCTypes::InstallSnapshot, &rpc.vote, ttl, || {
                    // openraft cannot shrink a chunk: `snapshot_max_chunk_size` must fit
                    // the peer's body limit.
                    RPCError::Network(NetworkError::from(AnyError::error(
                        "the snapshot chunk is over the peer's body limit",
                    )))
                })
            })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let ttl = option.hard_ttl();
        let body = to_json(&rpc).map_err(|e| RPCError::Network(NetworkError::from(e)))?;
        self.call(VOTE_PATH, "application/json", body, ttl)
            .await
            .map_err(|e| {
                self.rpc_error(e, RPCTypes::Vote, &rpc.vote, ttl, || {
                    RPCError::Network(NetworkError::from(AnyError::error(
                        "the vote request is over the peer's body limit",
                    )))
                })
            })
    }

    /// After `Unreachable` (the peer's port refused the connection: the process is
    /// down or restarting), openraft sends that peer nothing, heartbeats included, until
    /// the pause is over; its default is a constant 500 ms. Here 100 ms, doubling to
    /// 250 ms: a server back after a blip or a quick restart is reached within about
    /// 100 ms. The cap matters more than the start: a returning server that hears no
    /// leader within its election timeout stands for election, and its higher term,
    /// answered to the leader's next AppendEntries, unseats a healthy leader. So the
    /// cap stays below `election_timeout_min` (500 ms by default). A refused connect
    /// is cheap, so trying a dead peer four times a second costs little (a host that
    /// drops packets instead gives `Timeout`, which openraft does not back off from:
    /// it retries at the next heartbeat).
    fn backoff(&self) -> Backoff {
        let mut next = BACKOFF_FIRST;
        Backoff::new(std::iter::from_fn(move || {
            let this = next;
            next = (next * 2).min(BACKOFF_MAX);
            Some(this)
        }))
    }
}

#[cfg(test)]
mod tests;
