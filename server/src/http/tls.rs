//! HTTPS for the agent's listener: TLS handshakes run beside the accept loop (a slow
//! or silent peer holds up no one; at most `MAX_HANDSHAKES` wait, the oldest dropped
//! beyond), each connection carries the roles its client certificate proves (`Peer`),
//! and the node routes refuse a connection whose certificate is not an agent's (a CLI
//! certificate cannot register or heartbeat a node).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use orch_common::tls::{Role, Tls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::authorize::{required, Need};
use super::error::ApiError;
use super::waiting::Waiting;

/// How long a peer may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; past it the oldest is dropped.
const MAX_HANDSHAKES: usize = 256;

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `None` on a plain HTTP listener; else the roles of the certificate presented
    /// (empty when none was, where `verify_https_client = false` lets that pass).
    pub roles: Option<Vec<Role>>,
}

/// A TCP listener whose connections are TLS-wrapped with the agent's current
/// certificates (a reload applies to the next handshake).
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<Tls>,
    done_tx: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
    done_rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    handshaking: Arc<Waiting>,
}

impl TlsListener {
    /// `tls` must hold a certificate and key (agents always do).
    pub fn new(tcp: TcpListener, tls: Arc<Tls>) -> Result<TlsListener, String> {
        if tls.server_config().is_none() {
            return Err("serving HTTPS needs cert_file and key_file".into());
        }
        let (done_tx, done_rx) = mpsc::channel(64);
        Ok(TlsListener {
            tcp,
            tls,
            done_tx,
            done_rx,
            handshaking: Arc::default(),
        })
    }

    fn handshake(&self, stream: TcpStream, addr: SocketAddr) {
        let Some(config) = self.tls.server_config() else {
            return;
        };
        let acceptor = TlsAcceptor::from(config);
        let tls = self.tls.clone();
        let done = self.done_tx.clone();
        let handshaking = self.handshaking.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let (id, dropped) = handshaking.push(finished.clone(), MAX_HANDSHAKES);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let shaken = tokio::select! {
                shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => shaken,
                Ok(()) = dropped => {
                    tracing::debug!(peer = %addr, "too many TLS handshakes; dropped the oldest");
                    return;
                }
            };
            finished.store(true, Ordering::Relaxed);
            handshaking.remove(id);
            let stream = match shaken {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                    return;
                }
            };
            let roles = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| tls.roles_of(cert))
                .unwrap_or_default();
            let _ = done
                .send((
                    stream,
                    Peer {
                        addr,
                        roles: Some(roles),
                    },
                ))
                .await;
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                Some(done) = self.done_rx.recv() => return done,
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, addr)) => self.handshake(stream, addr),
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        tracing::warn!(error = %e, "accepting an HTTPS connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.tcp.local_addr()?,
            roles: Some(Vec::new()),
        })
    }
}

/// With TLS on: the routes only nodes call (register, heartbeat, allocation watch and
/// updates) need a certificate of the client or server role.
pub async fn node_routes_need_agent_certificate(req: Request, next: Next) -> Response {
    if required(req.method(), req.uri().path()) != Need::NodeSecret {
        return next.run(req).await;
    }
    let roles = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|ConnectInfo(peer)| peer.roles.clone());
    match roles {
        // Plain HTTP: nothing to check here (the node secret still is).
        None => next.run(req).await,
        Some(roles) if roles.contains(&Role::Client) || roles.contains(&Role::Server) => {
            next.run(req).await
        }
        Some(roles) => {
            let presented = if roles.is_empty() {
                "no agent role".to_string()
            } else {
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            ApiError::Forbidden(format!(
                "node routes need a client or server certificate; this connection's \
                 certificate is for: {presented}"
            ))
            .into_response()
        }
    }
}
