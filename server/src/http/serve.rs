//! The agent's accept loop: hyper connections under axum's router, with the limits a
//! listener on a network needs. At most `max_connections` at once, and `max_per_ip`
//! from one address (more are closed as they arrive); a connection must send its request head within `header_read_timeout`;
//! and at most `max_waiting` connections may wait for their first request, the oldest
//! closed beyond that, so thousands of half-open connections never crowd out a real
//! request (nor use up the agent's file descriptors). Each request carries its
//! connection's `Peer` (`ConnectInfo`). Graceful shutdown stops accepting and waits for
//! open requests.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use super::tls::Peer;
use super::waiting::Waiting;

/// How many connections the agent serves, and how patiently.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open connections at most. Default: 4096.
    pub max_connections: usize,
    /// Connections that have not sent a request yet, at most. Default: 256.
    pub max_waiting: usize,
    /// Open connections from one IP address, at most. Default: 1024.
    pub max_per_ip: usize,
    /// How long a request head may take to arrive (also between requests on a kept
    /// connection). Default: 10 s.
    pub header_read_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 4096,
            max_waiting: 256,
            max_per_ip: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish (the caller bounds that wait). `peer` turns the listener's
/// address into the `Peer` requests see.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ServeLimits,
    peer: impl Fn(L::Addr) -> Peer + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
{
    // HTTP/1.1 only (what the CLI, clients and browsers here speak; TLS offers only
    // it): without protocol sniffing, the header timeout runs from the first byte.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let (stopping_tx, stopping) = watch::channel(false);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let waiting = Arc::new(Waiting::default());
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!("at the connection limit; closing a new connection");
            continue;
        };
        let peer = peer(addr);
        let ip = peer.addr.ip();
        {
            let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry(ip).or_insert(0);
            if *count >= limits.max_per_ip {
                tracing::debug!(%ip, "at the per-address connection limit; closing a new connection");
                continue;
            }
            *count += 1;
        }
        let started = Arc::new(AtomicBool::new(false));
        let (id, closed) = waiting.push(started.clone(), limits.max_waiting);
        let router = router.clone();
        let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
            started.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        let waiting = waiting.clone();
        let per_ip = per_ip.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => log_end(served),
                // Closed as the oldest of too many idle connections (a sender dropped
                // once the connection started is no signal).
                Ok(()) = closed => {}
                _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
                }
            }
            waiting.remove(id);
            let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    // Every connection gives its permit back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = open.acquire_many(all).await;
    Ok(())
}

fn log_end(served: Result<(), hyper::Error>) {
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::*;

    async fn start(limits: ServeLimits) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/ok", get(|| async { "ok" }));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            router,
            limits,
            |addr| Peer { addr, roles: None },
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    async fn get_ok(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(ServeLimits {
            header_read_timeout: Duration::from_millis(200),
            ..ServeLimits::default()
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0, "no answer, just closed");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(get_ok(addr).await.ends_with("ok"));
    }

    #[tokio::test]
    async fn a_kept_alive_connection_left_idle_after_a_request_is_closed() {
        let (addr, _stop) = start(ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        })
        .await;
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
        let t0 = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
            .await
            .expect("the idle connection is closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed, nothing more sent");
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn many_half_open_connections_leave_room_for_a_request() {
        let (addr, _stop) = start(ServeLimits {
            max_waiting: 16,
            ..ServeLimits::default()
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let answer = tokio::time::timeout(Duration::from_secs(5), get_ok(addr))
            .await
            .expect("answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The oldest idle connections were closed to make room.
        let mut buf = [0u8; 8];
        let first = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf))
            .await
            .expect("the oldest idle connection was closed")
            .unwrap_or(0);
        assert_eq!(first, 0);
    }

    /// Opens `n` connections that send nothing, then checks that one more is closed
    /// unanswered; returns the `n`.
    async fn fill_then_refused(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("closed")
            .unwrap_or(0);
        assert_eq!(read, 0, "connection {} is closed unanswered", n + 1);
        held
    }

    #[tokio::test]
    async fn one_address_gets_at_most_its_share_of_connections() {
        let (addr, _stop) = start(ServeLimits {
            max_per_ip: 3,
            max_waiting: 100,
            ..ServeLimits::default()
        })
        .await;
        let mut held = fill_then_refused(addr, 3).await;
        held.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            get_ok(addr).await.ends_with("ok"),
            "room again once one closed"
        );
    }

    #[tokio::test]
    async fn past_the_connection_limit_new_connections_are_closed() {
        let (addr, _stop) = start(ServeLimits {
            max_connections: 4,
            max_waiting: 100,
            ..ServeLimits::default()
        })
        .await;
        drop(fill_then_refused(addr, 4).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(get_ok(addr).await.ends_with("ok"));
    }
}
