//! `orch alloc exec` on the client: runs a command inside a running task (through its
//! driver) and carries its stdin, stdout, stderr, terminal size and exit code over one
//! WebSocket in `orch_common::exec_frames` frames.

use std::os::fd::{AsRawFd, OwnedFd};

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use orch_common::exec_frames as frames;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::driver::ExecSession;

const READ_SIZE: usize = 32 * 1024;
/// How long the peer gets to answer the close before the socket is dropped.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long output may still arrive after the command exited.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the session until the command exits and its output is sent (or the peer goes
/// away, which kills the command).
pub(crate) async fn serve(socket: WebSocket, session: ExecSession) {
    let ExecSession { mut child, pty } = session;
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);

    // Output readers; each ends at EOF (the pty gives EIO once the last process
    // holding the terminal exits).
    let mut readers = Vec::new();
    let mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> = None;
    let mut pty_master: Option<OwnedFd> = None;
    match pty {
        Some(master) => {
            let writer = master.try_clone().map(tokio_file);
            let reader = master.try_clone().map(tokio_file);
            if let (Ok(w), Ok(r)) = (writer, reader) {
                stdin = Some(Box::new(w));
                readers.push(tokio::spawn(pump(r, frames::STDOUT, out_tx.clone())));
            }
            pty_master = Some(master);
        }
        None => {
            if let Some(out) = child.stdout.take() {
                readers.push(tokio::spawn(pump(out, frames::STDOUT, out_tx.clone())));
            }
            if let Some(err) = child.stderr.take() {
                readers.push(tokio::spawn(pump(err, frames::STDERR, out_tx.clone())));
            }
            if let Some(input) = child.stdin.take() {
                stdin = Some(Box::new(input));
            }
        }
    }
    drop(out_tx);

    let sender = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });

    // Input until the peer closes or the command exits.
    let exited = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            msg = incoming.next() => match msg {
                Some(Ok(Message::Binary(data))) => match data.split_first() {
                    Some((&frames::STDIN, bytes)) => {
                        if let Some(w) = stdin.as_mut() {
                            if w.write_all(bytes).await.is_err() || w.flush().await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    Some((&frames::STDIN_EOF, _)) => {
                        // Without a tty, closing the pipe is the command's EOF; a
                        // terminal gets ^D.
                        match (&pty_master, stdin.as_mut()) {
                            (Some(_), Some(w)) => {
                                let _ = w.write_all(&[4]).await;
                            }
                            _ => stdin = None,
                        }
                    }
                    Some((&frames::RESIZE, payload)) => {
                        if let (Some(master), Some((rows, cols))) =
                            (&pty_master, frames::parse_resize(payload))
                        {
                            set_window_size(master, rows, cols);
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The peer is gone: the command goes with it (kill_on_drop).
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    drop(stdin);
    drop(pty_master);
    // Output still in the pipes is sent; a process left in the background holding
    // them open does not keep the session.
    for r in readers {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, r).await;
    }
    let Ok(Some(mut sink)) = sender.await else {
        return;
    };
    let code = exited.map(exit_code).unwrap_or(-1);
    let _ = sink.send(Message::Binary(frames::exit(code).into())).await;
    let _ = sink.close().await;
    // Read what the peer still sends (input typed after the command ended, its close)
    // before the socket goes: closing a socket with unread data resets the connection,
    // and a reset can reach the peer before the exit code does, which it then loses.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = incoming.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn tokio_file(fd: OwnedFd) -> tokio::fs::File {
    tokio::fs::File::from_std(std::fs::File::from(fd))
}

/// Sends everything `r` yields as `kind` frames.
async fn pump(mut r: impl AsyncRead + Unpin, kind: u8, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(frames::frame(kind, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn set_window_size(master: &OwnedFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer on an open pty fd.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}
