//! Three `openraft::Raft`s in one process, each with its SQLite log store and a small
//! in-memory state machine, calling each other through `Network` and `rpc::router` on
//! real sockets: election, replication in order, failover, catching up by snapshot,
//! TLS; and how the client maps what a peer does to openraft's errors.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::testing::log_id;
use openraft::{
    Config, Entry, EntryPayload, LogId, OptionalSend, Raft, SnapshotPolicy, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use orch_common::tls::issue::{self, CertRequest};
use orch_common::tls::{Role, Tls, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::http::serve::{serve, ServeLimits};
use crate::http::tls::{Peer, TlsListener};
use crate::raft::log_store::LogStore;
use crate::raft::{rpc, Applied, Proposal};
use crate::state::Command;

const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long a test waits for the cluster to do something.
const PATIENCE: Duration = Duration::from_secs(10);

// --- A test-only state machine: the proposals applied, in order. ---

#[derive(Default)]
struct Records {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, ServerNode>,
    applied: Vec<Proposal>,
    snapshot: Option<(SnapshotMeta<u64, ServerNode>, Vec<u8>)>,
    /// Snapshots installed from a leader.
    installed: usize,
}

#[derive(Clone, Default)]
struct MemSm(Arc<Mutex<Records>>);

impl MemSm {
    fn applied(&self) -> Vec<Proposal> {
        self.0.lock().unwrap().applied.clone()
    }

    fn installed(&self) -> usize {
        self.0.lock().unwrap().installed
    }
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(openraft::AnyError::error(e.to_string())).into()
}

impl RaftStateMachine<OrchRaft> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, ServerNode>), StorageError<u64>> {
        let r = self.0.lock().unwrap();
        Ok((r.last_applied, r.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<OrchRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut r = self.0.lock().unwrap();
        let mut out = Vec::new();
        for entry in entries {
            r.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(p) => r.applied.push(p),
                EntryPayload::Membership(m) => {
                    r.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            out.push(Applied {
                index: entry.log_id.index,
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, ServerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let applied: Vec<Proposal> = serde_json::from_slice(&data).map_err(sm_error)?;
        let mut r = self.0.lock().unwrap();
        r.applied = applied;
        r.last_applied = meta.last_log_id;
        r.membership = meta.last_membership.clone();
        r.snapshot = Some((meta.clone(), data));
        r.installed += 1;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<OrchRaft>>, StorageError<u64>> {
        let r = self.0.lock().unwrap();
        Ok(r.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

impl RaftSnapshotBuilder<OrchRaft> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<OrchRaft>, StorageError<u64>> {
        let mut r = self.0.lock().unwrap();
        let data = serde_json::to_vec(&r.applied).map_err(sm_error)?;
        let meta = SnapshotMeta {
            last_log_id: r.last_applied,
            last_membership: r.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                r.last_applied.map_or(0, |l| l.index),
                r.applied.len()
            ),
        };
        r.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

// --- Servers on real sockets. ---

fn config() -> Config {
    Config {
        cluster_name: "test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        ..Config::default()
    }
}

struct Server {
    id: u64,
    addr: SocketAddr,
    raft: Raft<OrchRaft>,
    sm: MemSm,
    log: PathBuf,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn start(
    id: u64,
    tcp: TcpListener,
    log: &Path,
    sm: MemSm,
    config: &Config,
    tls: Option<&Arc<Tls>>,
) -> Server {
    let addr = tcp.local_addr().unwrap();
    let config = Arc::new(config.clone().validate().unwrap());
    let raft = Raft::new(
        id,
        config,
        Network::new(tls, Default::default()).unwrap(),
        LogStore::open(log).unwrap(),
        sm.clone(),
    )
    .await
    .unwrap();
    let router = rpc::router(
        raft.clone(),
        MAX_BODY,
        Default::default(),
        axum::Router::new(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let served = match tls {
        None => tokio::spawn(serve(
            tcp,
            router,
            ServeLimits::default(),
            |addr| Peer { addr, roles: None },
            stopped,
        )),
        Some(tls) => tokio::spawn(serve(
            TlsListener::new(tcp, tls.clone()).unwrap(),
            router,
            ServeLimits::default(),
            |peer| peer,
            stopped,
        )),
    };
    Server {
        id,
        addr,
        raft,
        sm,
        log: log.to_path_buf(),
        stop,
        served,
    }
}

impl Server {
    /// Stops Raft, then the listener (as a server going down does).
    async fn stop(self) -> (SocketAddr, PathBuf, MemSm) {
        self.raft.shutdown().await.unwrap();
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(PATIENCE, self.served).await;
        (self.addr, self.log, self.sm)
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    servers: Vec<Server>,
}

/// Three servers (ids 1 to 3), initialized from server 1, with a leader.
async fn cluster(config: &Config, tls: Option<&Arc<Tls>>) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for id in 1..=3u64 {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let log = dir.path().join(format!("{id}/raft.db"));
        servers.push(start(id, tcp, &log, MemSm::default(), config, tls).await);
    }
    let members: BTreeMap<u64, ServerNode> = servers
        .iter()
        .map(|s| (s.id, test_node(s.addr.to_string())))
        .collect();
    servers[0].raft.initialize(members).await.unwrap();
    let cluster = Cluster { _dir: dir, servers };
    cluster.leader(None).await;
    cluster
}

impl Cluster {
    fn server(&self, id: u64) -> &Server {
        self.servers.iter().find(|s| s.id == id).unwrap()
    }

    /// The leader every running server agrees on, once there is one other than `not`.
    async fn leader(&self, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen: Vec<Option<u64>> = self
                .servers
                .iter()
                .map(|s| s.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = seen.first() {
                let agreed = seen.iter().all(|l| *l == Some(*leader));
                let leading = self
                    .servers
                    .iter()
                    .find(|s| s.id == *leader)
                    .is_some_and(|s| s.raft.metrics().borrow().state.is_leader());
                if agreed && leading && Some(*leader) != not {
                    return *leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader agreed on: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn remove(&mut self, id: u64) -> Server {
        let at = self.servers.iter().position(|s| s.id == id).unwrap();
        self.servers.remove(at)
    }

    async fn shutdown(self) {
        for s in self.servers {
            s.stop().await;
        }
    }
}

fn proposal(i: u64) -> Proposal {
    Proposal {
        time_ms: 1_700_000_000_000 + i,
        command: Command::DeleteAclPolicies {
            names: vec![format!("policy-{i}")],
        },
        id: i,
    }
}

async fn write(raft: &Raft<OrchRaft>, i: u64) {
    let written = raft.client_write(proposal(i)).await.unwrap();
    assert_eq!(written.data.index, written.log_id.index);
}

/// Waits until every server in `servers` has applied `want`, then checks they did
/// in that order.
async fn applied_everywhere(servers: &[Server], want: &[Proposal]) {
    for s in servers {
        let deadline = Instant::now() + PATIENCE;
        while s.sm.applied().len() < want.len() {
            assert!(
                Instant::now() < deadline,
                "server {} applied {} of {}",
                s.id,
                s.sm.applied().len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.sm.applied(), want, "server {} applied in order", s.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_elect_replicate_in_order_and_fail_over() {
    let mut cluster = cluster(&config(), None).await;
    let leader = cluster.leader(None).await;
    for i in 0..5 {
        write(&cluster.server(leader).raft, i).await;
    }
    let mut want: Vec<Proposal> = (0..5).map(proposal).collect();
    applied_everywhere(&cluster.servers, &want).await;

    let t0 = Instant::now();
    cluster.remove(leader).await.stop().await;
    let next = cluster.leader(Some(leader)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "a new leader after {:?}",
        t0.elapsed()
    );
    write(&cluster.server(next).raft, 5).await;
    want.push(proposal(5));
    applied_everywhere(&cluster.servers, &want).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_was_down_catches_up_by_snapshot() {
    let config = Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        ..config()
    };
    let mut cluster = cluster(&config, None).await;
    let leader = cluster.leader(None).await;
    write(&cluster.server(leader).raft, 0).await;
    let down = (1..=3).find(|id| *id != leader).unwrap();
    let (addr, log, sm) = cluster.remove(down).await.stop().await;
    let before = sm.applied().len();

    for i in 1..=20 {
        write(&cluster.server(leader).raft, i).await;
    }
    let raft = &cluster.server(leader).raft;
    raft.trigger().snapshot().await.unwrap();
    let last = raft.metrics().borrow().last_applied.unwrap().index;
    raft.wait(Some(PATIENCE))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last),
            "the leader's snapshot",
        )
        .await
        .unwrap();
    raft.trigger().purge_log(last).await.unwrap();
    raft.wait(Some(PATIENCE))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= last),
            "the leader's log purged",
        )
        .await
        .unwrap();

    // Back at the same address, with its log and state: the entries it missed are
    // gone from the leader's log, so it is sent the snapshot.
    let tcp = TcpListener::bind(addr).await.unwrap();
    let back = start(down, tcp, &log, sm, &config, None).await;
    cluster.servers.push(back);
    let want: Vec<Proposal> = (0..=20).map(proposal).collect();
    applied_everywhere(&cluster.servers, &want).await;
    let back = cluster.server(down);
    assert!(back.sm.installed() >= 1, "caught up by snapshot");
    assert!(before < want.len());
    // And follows the log after it (from whichever server leads now: one returning
    // late may have stood for election).
    let leader = cluster.leader(None).await;
    write(&cluster.server(leader).raft, 21).await;
    let want: Vec<Proposal> = (0..=21).map(proposal).collect();
    applied_everywhere(&cluster.servers, &want).await;
    cluster.shutdown().await;
}

// --- TLS ---

struct Certs {
    _dir: tempfile::TempDir,
    server: Arc<Tls>,
    client: Arc<Tls>,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ca = issue::ca("global", 1).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let load = |role: Role| {
        let issued = issue::cert(
            &ca,
            &CertRequest {
                role,
                region: "global".into(),
                days: 1,
                dns_names: vec![],
                ip_addresses: vec![],
            },
        )
        .unwrap();
        let cert = dir.path().join(format!("{role}.pem"));
        let key = dir.path().join(format!("{role}-key.pem"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let files = TlsFiles {
            ca_file: ca_file.clone(),
            identity: Some((cert, key)),
        };
        Tls::load(files, "global", true).unwrap()
    };
    let server = load(Role::Server);
    let client = load(Role::Client);
    Certs {
        _dir: dir,
        server,
        client,
    }
}

fn vote_request() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(1, 9), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_servers_replicate_and_a_client_certificate_is_refused() {
    let certs = certs();
    let cluster = cluster(&config(), Some(&certs.server)).await;
    let leader = cluster.leader(None).await;
    for i in 0..3 {
        write(&cluster.server(leader).raft, i).await;
    }
    let want: Vec<Proposal> = (0..3).map(proposal).collect();
    applied_everywhere(&cluster.servers, &want).await;

    // A client's certificate gets through the handshake but not to Raft.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(certs.client.client_config_for_roles(&[Role::Server]))
        .build()
        .unwrap();
    let url = format!("https://{}{VOTE_PATH}", cluster.servers[0].addr);
    let resp = http.post(&url).json(&vote_request()).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("server certificate") && error.contains("client"),
        "{error}"
    );
    // Through `Network`, that refusal is a network error.
    let e = Network::new(Some(&certs.client), Default::default())
        .unwrap()
        .new_client(1, &test_node(cluster.servers[0].addr.to_string()))
        .await
        .vote(vote_request(), option())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RPCError::Network(_)) && e.to_string().contains("403"),
        "{e:?}"
    );
    cluster.shutdown().await;

    // Only a server may answer: one presenting a client's certificate is not called.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        TlsListener::new(tcp, certs.client.clone()).unwrap(),
        axum::Router::new(),
        ServeLimits::default(),
        |peer| peer,
        async move {
            let _ = stopped.await;
        },
    ));
    let e = Network::new(Some(&certs.server), Default::default())
        .unwrap()
        .new_client(1, &test_node(addr.to_string()))
        .await
        .vote(vote_request(), option())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
}

// --- The router's answers and the client's errors, one server. ---

async fn one_server(
    max_body: usize,
) -> (
    tempfile::TempDir,
    Raft<OrchRaft>,
    SocketAddr,
    oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config().validate().unwrap());
    let raft = Raft::new(
        1,
        config,
        Network::new(None, Default::default()).unwrap(),
        LogStore::open(&dir.path().join("raft.db")).unwrap(),
        MemSm::default(),
    )
    .await
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        tcp,
        rpc::router(
            raft.clone(),
            max_body,
            Default::default(),
            axum::Router::new(),
        ),
        ServeLimits::default(),
        |addr| Peer { addr, roles: None },
        async move {
            let _ = stopped.await;
        },
    ));
    (dir, raft, addr, stop)
}

async fn connection(addr: impl ToString) -> Connection {
    Network::new(None, Default::default())
        .unwrap()
        .new_client(1, &test_node(addr.to_string()))
        .await
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_millis(500))
}

#[tokio::test]
async fn the_routes_answer_json_errors() {
    let (_dir, raft, addr, _stop) = one_server(1024).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let check = |resp: reqwest::Response, status: u16| async move {
        assert_eq!(resp.status(), status);
        let body: serde_json::Value = resp.json().await.unwrap();
        body["error"].as_str().unwrap().to_string()
    };
    let e = check(post("/v1/raft/nothing", Vec::new()).await.unwrap(), 404).await;
    assert!(e.contains("no such Raft route"), "{e}");
    let e = check(post(VOTE_PATH, vec![b' '; 4096]).await.unwrap(), 413).await;
    assert!(e.contains("1024 bytes"), "{e}");
    let e = check(post(APPEND_PATH, b"{}".to_vec()).await.unwrap(), 400).await;
    assert!(e.contains("invalid Raft request"), "{e}");
    let e = check(post(SNAPSHOT_PATH, b"{}".to_vec()).await.unwrap(), 400).await;
    assert!(e.contains("snapshot chunk"), "{e}");
    let resp = http
        .get(format!("http://{addr}{VOTE_PATH}"))
        .send()
        .await
        .unwrap();
    check(resp, 405).await;

    // A vote the server grants: the answer decodes as openraft's.
    let granted = connection(addr)
        .await
        .vote(vote_request(), option())
        .await
        .unwrap();
    assert!(granted.vote_granted);
    raft.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_client_maps_failures_to_the_errors_openraft_acts_on() {
    // Nobody listening: unreachable, so openraft backs off.
    let closed = {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.local_addr().unwrap()
    };
    let e = connection(closed)
        .await
        .vote(vote_request(), option())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    let pauses: Vec<u64> = connection(closed)
        .await
        .backoff()
        .take(5)
        .map(|d| d.as_millis() as u64)
        .collect();
    assert_eq!(pauses, [100, 200, 250, 250, 250]);

    // Connected but never answered within the request's time: a timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let t0 = Instant::now();
    let e = connection(silent_addr)
        .await
        .vote(vote_request(), RPCOption::new(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Timeout(_)), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Too many entries for the peer's limit: openraft is told to send half.
    let (_dir, raft, addr, _stop) = one_server(1024).await;
    let entries: Vec<Entry<OrchRaft>> = (1..=10)
        .map(|i| Entry {
            log_id: log_id(1, 9, i),
            payload: EntryPayload::Normal(proposal(i)),
        })
        .collect();
    let req = AppendEntriesRequest {
        vote: Vote::new_committed(1, 9),
        prev_log_id: None,
        leader_commit: None,
        entries,
    };
    let e = connection(addr)
        .await
        .append_entries(req, option())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::PayloadTooLarge(_)), "{e:?}");

    // Raft's own refusal comes back as the remote error: an uninitialized server
    // refuses an AppendEntries that does not follow its (empty) log.
    let req = AppendEntriesRequest::<OrchRaft> {
        vote: Vote::new_committed(1, 9),
        prev_log_id: Some(log_id(1, 9, 5)),
        leader_commit: None,
        entries: Vec::new(),
    };
    let answer = connection(addr)
        .await
        .append_entries(req, option())
        .await
        .unwrap();
    assert!(!answer.is_success(), "{answer:?}");
    raft.shutdown().await.unwrap();
    // A server whose Raft has stopped answers with openraft's fatal error.
    let e = connection(addr)
        .await
        .vote(vote_request(), option())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::RemoteError(_)), "{e:?}");
}

#[test]
fn a_snapshot_chunk_goes_raw_behind_its_metadata() {
    let req = InstallSnapshotRequest::<OrchRaft> {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "42-7".into(),
        },
        offset: 1 << 20,
        data: (0..=255u8).cycle().take(10_000).collect(),
        done: false,
    };
    let body = encode_snapshot_chunk(&req).unwrap();
    assert!(body.len() < req.data.len() + 400, "{}", body.len());
    let back = decode_snapshot_chunk(&body).unwrap();
    assert_eq!(back, req);
    assert!(decode_snapshot_chunk(&body[..3]).is_err());
    assert!(decode_snapshot_chunk(&[0, 0, 1, 0, b'{']).is_err());
}

/// A server known only by its RPC address.
fn test_node(addr: String) -> ServerNode {
    ServerNode {
        name: addr.clone(),
        rpc_addr: addr,
        http_addr: String::new(),
    }
}
