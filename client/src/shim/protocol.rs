//! The task shim's protocol, shared by the client (`supervisor`) and the shim
//! (`launcher`): the launcher's fd and environment, the request (`ShimSpec`, behind a
//! 4-byte little-endian length, with `REQUEST_FDS` fds attached), the report size, the
//! exit file (`ExitRecord` over the blanks `reserve_exit_file` wrote), and passing fds
//! over unix sockets (`send_with_fds`, `recv_with_fds`).

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The fd the launcher reads its requests on.
pub const LAUNCHER_FD: RawFd = 3;
/// Fds that come with each request: the report socket, stdout, stderr.
pub const REQUEST_FDS: usize = 3;
/// Set in the launcher's environment by the client (how a test binary standing in for
/// `orch-task-shim` knows to run the launcher); not passed on to tasks.
pub const LAUNCHER_ENV: &str = "ORCH_TASK_SHIM_LAUNCHER";
/// The largest spec a request may carry (a task's environment included).
pub const MAX_SPEC_BYTES: usize = 16 << 20;
/// The largest report a shim sends.
pub const MAX_REPORT_BYTES: usize = 4096;
/// The exit file's name in the task's control dir (`crate::allocdir::control_dir`).
pub const EXIT_FILE: &str = "exit.json";

/// What the shim runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub command: String,
    pub args: Vec<String>,
    pub exit_file: PathBuf,
    /// Added to the command's environment (and not the shim's own, so tools that find
    /// a task's processes by `ORCH_ALLOC_ID` see the command only).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// uid, gid and supplementary groups to switch to before exec (resolved by the
    /// client).
    #[serde(default)]
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The command's working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// `cgroup.procs` files the shim moves itself into before starting the command
    /// (the client spawns it without a fork-time hook, see `spawn`).
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
}

/// What the shim leaves in the exit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: i32,
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// Milliseconds since the epoch.
    pub finished_at: u64,
}

/// Bytes the client writes into a task's exit file before the start (`reserve_exit_file`):
/// blanks, which read as "no exit recorded yet". A record is at most 200 bytes.
pub const EXIT_FILE_RESERVED: usize = 512;

/// Makes (or blanks) `path` for the shim's exit record. Called by the client, so the
/// file's inode and page are charged to the client's memory cgroup: were the shim,
/// which runs in the task's cgroups, to create them, they would keep that memory
/// cgroup alive in the kernel (a "dying" cgroup) after its removal, one per finished
/// task until its alloc dir goes, and thousands of those slow every memory cgroup
/// operation down.
///
/// A fresh file every time (whatever was at `path` removed first, a symlink never
/// followed), 0600 whatever the umask: it lives in the client's own control dir.
pub fn reserve_exit_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?
        .write_all(&[b' '; EXIT_FILE_RESERVED])
}

/// Sends `data` on unix socket `sock` with `fds` attached (SCM_RIGHTS), all of it
/// (the fds go with the first part).
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut sent = 0;
    let mut fds = fds;
    while sent < data.len() || !fds.is_empty() {
        let rest = &data[sent..];
        let mut iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
        let mut control = vec![0u8; if fds.is_empty() { 0 } else { space }];
        // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            // SAFETY: the control buffer has room for one header with `fds`.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr(),
                    libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                    fds.len(),
                );
            }
        }
        // SAFETY: msg describes valid buffers; MSG_NOSIGNAL turns a closed peer into
        // EPIPE instead of a signal.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
        fds = &[];
    }
    Ok(())
}

/// Receives into `buf` from unix socket `sock`, with up to `max_fds` attached fds
/// (close-on-exec); `(0, [])` at the end of the stream. Blocks unless the socket is
/// non-blocking.
pub fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space =
        unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: msg describes valid buffers.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`; each
    // SCM_RIGHTS fd is new and owned by nobody else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fds))
}
