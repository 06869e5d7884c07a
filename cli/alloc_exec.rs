//! `orch alloc exec [-t] ALLOC [TASK] -- CMD...`: runs a command inside a running task
//! through the client that runs it (a WebSocket of `orch_common::exec_frames` frames): stdin
//! is sent, stdout and stderr are printed as they come, and the CLI exits with the
//! command's exit code. With `-t` the command gets a terminal and this one is switched
//! to raw mode until it ends.

use std::io::{IsTerminal as _, Write as _};
use std::os::fd::AsFd as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use orch_common::exec_frames as frames;
use orch_common::tls::Tls;
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::alloc::{alloc_and_client, pick_task};
use crate::api_client::encode;
use crate::Ctx;

pub const EXAMPLES: &str = "EXAMPLES:
  orch alloc exec 8f3c2a1b -- hostname
  orch alloc exec 8f3c2a1b server -- sh -c 'ls $ORCH_TASK_DIR'
  echo hello | orch alloc exec 8f3c2a1b -- cat
  orch alloc exec -t 8f3c2a1b -- /bin/sh";

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Give the command a terminal (for interactive programs such as a shell).
    #[arg(short = 't', long)]
    tty: bool,
    /// Allocation id (a unique prefix is enough).
    alloc: String,
    /// Task name; may be left out when the allocation has one task.
    task: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// A byte stream the WebSocket runs over: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Opens the WebSocket: `ws://` over TCP, `wss://` over TLS with the CLI's CA and
/// certificate (the client agent's certificate is checked against the host dialed).
async fn connect(
    request: Request,
    tls: Option<&Arc<Tls>>,
) -> Result<WebSocketStream<Box<dyn Io>>, WsError> {
    let uri = request.uri().clone();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if secure {
        let tls = tls.ok_or_else(|| {
            WsError::Io(std::io::Error::other(
                "a wss:// client needs the CA: --ca-cert or ORCH_CACERT",
            ))
        })?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| WsError::Io(std::io::Error::other(e)))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.client_config_for_address()));
        Box::new(connector.connect(name, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(socket)
}

pub async fn exec(ctx: &Ctx, args: ExecArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    let (a, client) = alloc_and_client(&api, &args.alloc).await?;
    let task = pick_task(&a, args.task.as_deref())?;
    let command = serde_json::to_string(&args.command)?;
    let ws_base = client
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .or_else(|| {
            client
                .strip_prefix("https://")
                .map(|rest| format!("wss://{rest}"))
        })
        .unwrap_or(client.clone());
    let url = format!(
        "{ws_base}/v1/client/allocation/{}/exec?task={}&tty={}&command={}",
        encode(&a.id),
        encode(&task),
        args.tty,
        encode(&command)
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .context("building the exec request")?;
    if let Some(token) = api.token() {
        request.headers_mut().insert(
            orch_common::api::TOKEN_HEADER,
            token
                .parse()
                .context("the ACL token is not a valid header value")?,
        );
    }
    let socket = match connect(request, api.tls()).await {
        Ok(socket) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            let body = answer
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            bail!("{} ({})", message, answer.status());
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {client}")),
    };
    let (mut sink, mut incoming) = socket.split();

    let raw = if args.tty && std::io::stdin().is_terminal() {
        if let Some((rows, cols)) = terminal_size() {
            sink.send(Message::Binary(frames::resize(rows, cols).into()))
                .await?;
        }
        Some(RawMode::enter()?)
    } else {
        None
    };

    // stdin -> STDIN frames, then STDIN_EOF, through the main loop (which owns the
    // sending half, so it can also close the session).
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let input = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = frames_tx.send(frames::frame(frames::STDIN_EOF, &[])).await;
                    return;
                }
                Ok(n) => {
                    if frames_tx
                        .send(frames::frame(frames::STDIN, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });

    let mut code: Option<i32> = None;
    let mut failure: Option<String> = None;
    let mut input_open = true;
    loop {
        let msg = tokio::select! {
            frame = frames_rx.recv(), if input_open => {
                match frame {
                    Some(f) => {
                        // A session that ended meanwhile shows up on the reading side.
                        let _ = sink.send(Message::Binary(f.into())).await;
                    }
                    None => input_open = false,
                }
                continue;
            }
            msg = incoming.next() => msg,
        };
        let Some(msg) = msg else { break };
        match msg.context("reading the exec session")? {
            Message::Binary(data) => match data.split_first() {
                Some((&frames::STDOUT, bytes)) => {
                    let mut out = std::io::stdout();
                    out.write_all(bytes)?;
                    out.flush()?;
                }
                Some((&frames::STDERR, bytes)) => {
                    let mut err = std::io::stderr();
                    err.write_all(bytes)?;
                    err.flush()?;
                }
                Some((&frames::EXIT, payload)) => {
                    code = frames::parse_exit(payload);
                    // The session is over: answer its close.
                    let _ = sink.close().await;
                    break;
                }
                _ => {}
            },
            Message::Text(text) => failure = Some(text.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    input.abort();
    drop(raw);
    if let Some(f) = failure {
        bail!("{f}");
    }
    match code {
        Some(c) => Ok(ExitCode::from(u8::try_from(c).unwrap_or(1))),
        None => bail!("the exec session ended without the command's exit code"),
    }
}

/// The local terminal's rows and columns.
fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through a valid pointer.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// The local terminal in raw mode (keys go to the remote command as typed); restored
/// on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw)
            .context("setting the terminal to raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = nix::sys::termios::tcsetattr(
            stdin.as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
