//! The shim's side: what `orch-task-shim` (or `orch task-shim`) runs. The launcher
//! (`launch_loop`) reads requests on `LAUNCHER_FD` and forks one shim per request;
//! each shim starts its own session, moves itself into the task's cgroup, starts the
//! command (own process group, the task's user and environment), reports
//! "pid TASK shim SHIM" with a pidfd of itself (or "error WHY") on the report socket,
//! waits, and writes the `ExitRecord` over the blanks of the exit file the client
//! reserved (`reserve_exit_file`): a client that was away when the task ended still
//! learns its real exit. The launcher never waits for its shims (the kernel reaps
//! them) and exits when the client's end closes; shims outlive both.
//!
//! No threads, no runtime, nothing of the client's async side: the launcher is forked
//! once per task, and a fork of a small single-threaded process costs a tenth of an
//! exec (dynamic loading, relocations and libc's start-up, about 0.8 ms of CPU per
//! task).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;

use super::protocol::{
    recv_with_fds, send_with_fds, ExitRecord, ShimSpec, EXIT_FILE_RESERVED, LAUNCHER_ENV,
    LAUNCHER_FD, MAX_SPEC_BYTES, REQUEST_FDS,
};

/// Handlers that do nothing: a stray SIGTERM/SIGINT/SIGHUP to the shim must not leave
/// the task unsupervised. (Unlike SIG_IGN, handlers reset to the default at exec, so
/// the command gets normal signal behaviour.)
extern "C" fn ignore(_: libc::c_int) {}

/// One request to the launcher.
struct Request {
    spec: Result<ShimSpec, String>,
    report: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The launcher process: forks a shim for every request on fd 3 until the client's
/// end closes; returns the exit code.
pub fn launch_loop() -> i32 {
    // Still single-threaded: nothing reads the environment concurrently.
    std::env::remove_var(LAUNCHER_ENV);
    // SAFETY: fd 3 was placed there by the client for this process alone; SIGCHLD
    // ignored means the kernel reaps the shims (clients watch them through pidfds).
    let sock = unsafe {
        libc::fcntl(LAUNCHER_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        UnixStream::from_raw_fd(LAUNCHER_FD)
    };
    loop {
        match receive(&sock) {
            Ok(None) => return 0,
            Ok(Some(req)) => fork_shim(&sock, req),
            Err(e) => {
                eprintln!("orch task-shim launcher: reading a request: {e}");
                return 1;
            }
        }
    }
}

/// Reads one request; `None` at the end of the stream.
fn receive(sock: &UnixStream) -> std::io::Result<Option<Request>> {
    let mut len = [0u8; 4];
    let (n, mut fds) = recv_with_fds(sock.as_raw_fd(), &mut len, REQUEST_FDS)?;
    if n == 0 {
        return Ok(None);
    }
    (&*sock).read_exact(&mut len[n..])?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_SPEC_BYTES {
        return Err(std::io::Error::other(format!(
            "a request of {len} bytes (at most {MAX_SPEC_BYTES})"
        )));
    }
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body)?;
    if fds.len() != REQUEST_FDS {
        // Without its report socket nobody can be told: the client's read fails.
        return Err(std::io::Error::other(format!(
            "a request came with {} fds, not {REQUEST_FDS}",
            fds.len()
        )));
    }
    let stderr = fds.pop().expect("three fds");
    let stdout = fds.pop().expect("three fds");
    let report = fds.pop().expect("three fds");
    Ok(Some(Request {
        spec: serde_json::from_slice(&body).map_err(|e| format!("decoding the task spec: {e}")),
        report,
        stdout,
        stderr,
    }))
}

/// Forks the shim for `req`; the launcher keeps none of its fds.
fn fork_shim(sock: &UnixStream, req: Request) {
    // SAFETY: the launcher is single-threaded, so the child may do anything.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: the child's own copy of the launcher socket and signal state.
            unsafe {
                libc::close(sock.as_raw_fd());
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                libc::setsid();
            }
            let code = match req.spec {
                Ok(spec) => run_spec(&spec, req.report, req.stdout, req.stderr),
                Err(e) => {
                    fail(&req.report, &req.stderr, &e);
                    127
                }
            };
            std::process::exit(code);
        }
        -1 => {
            let e = std::io::Error::last_os_error();
            fail(
                &req.report,
                &req.stderr,
                &format!("forking the task shim: {e}"),
            );
        }
        _ => {}
    }
}

/// The shim: runs `spec` with its output on `stdout`/`stderr`, reports on `report`,
/// waits and records the exit; returns the shim's exit code.
fn run_spec(spec: &ShimSpec, report: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> i32 {
    // SAFETY: sigaction with a valid handler that does nothing.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // A pidfd of this shim for the client, which is not its parent: it pins the
    // process (no pid reuse) and becomes readable when the shim exits.
    // SAFETY: pidfd_open returns a new fd or -1.
    let me = std::process::id();
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, me as libc::pid_t, 0) };
    if pidfd < 0 {
        let e = std::io::Error::last_os_error();
        fail(
            &report,
            &stderr,
            &format!("opening a pidfd of the shim: {e}"),
        );
        return 127;
    }
    // SAFETY: the syscall just returned this fd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // Into the task's cgroup first, so the command and everything it starts are
    // accounted and limited there.
    let me = me.to_string();
    for procs in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(procs, &me) {
            fail(
                &report,
                &stderr,
                &format!("joining cgroup {}: {e}", procs.display()),
            );
            return 127;
        }
    }
    // The command gets a copy: the original stays here to say why a start failed.
    let task_stderr = match stderr.try_clone() {
        Ok(fd) => fd,
        Err(e) => {
            fail(
                &report,
                &stderr,
                &format!("duplicating the stderr FIFO: {e}"),
            );
            return 127;
        }
    };
    let mut cmd = std::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(task_stderr))
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    if let Some((uid, gid, groups)) = spec.user.clone() {
        // SAFETY: setgroups/setgid/setuid on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            fail(&report, &stderr, &e.to_string());
            return 127;
        }
    };
    drop(stderr);
    let pid = child.id() as i32;
    let _ = send_with_fds(
        report.as_raw_fd(),
        format!("pid {pid} shim {me}").as_bytes(),
        &[pidfd.as_raw_fd()],
    );
    drop(report);
    drop(pidfd);
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return 127,
        }
    };
    let (exit_code, signal) = match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    };
    let record = ExitRecord {
        pid,
        exit_code,
        signal,
        finished_at: orch_common::ids::now_ms(),
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        write_exit_record(&spec.exit_file, &json);
    }
    exit_code.clamp(0, 255)
}

/// Writes `json` over the blanks of a reserved exit file, in place: no new inode or
/// page is charged to the task's cgroup. The rest stays blank (JSON allows trailing
/// whitespace). Without a reserved file (a client from before it), a new file is
/// written and renamed into place.
fn write_exit_record(path: &Path, json: &[u8]) {
    use std::os::unix::fs::FileExt;
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) if json.len() <= EXIT_FILE_RESERVED => {
            let _ = file.write_all_at(json, 0);
        }
        _ => {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

/// Tells the client (report socket) and the task's stderr log why the command did
/// not start.
fn fail(report: &OwnedFd, stderr: &OwnedFd, message: &str) {
    let _ = send_with_fds(
        report.as_raw_fd(),
        format!("error {message}").as_bytes(),
        &[],
    );
    let line = format!("orch task-shim: {message}\n");
    // SAFETY: a write to the task's stderr FIFO (a failed write changes nothing).
    unsafe {
        libc::write(stderr.as_raw_fd(), line.as_ptr().cast(), line.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::protocol::{reserve_exit_file, EXIT_FILE};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_record_goes_over_the_reserved_blanks_in_the_same_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EXIT_FILE);
        reserve_exit_file(&path).unwrap();
        let blank = std::fs::read(&path).unwrap();
        assert!(blank.iter().all(|b| *b == b' '));
        assert!(
            serde_json::from_slice::<ExitRecord>(&blank).is_err(),
            "blank is no record"
        );
        let inode = std::fs::metadata(&path).unwrap().ino();
        let record = ExitRecord {
            pid: 42,
            exit_code: 137,
            signal: Some(9),
            finished_at: 1,
        };
        write_exit_record(&path, &serde_json::to_vec(&record).unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "written in place"
        );
        let back: ExitRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, record);
        // Reserving again (the next run attempt) blanks the old record.
        reserve_exit_file(&path).unwrap();
        assert!(serde_json::from_slice::<ExitRecord>(&std::fs::read(&path).unwrap()).is_err());
    }

    #[test]
    fn without_a_reserved_file_the_record_is_written_and_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EXIT_FILE);
        let record = ExitRecord {
            pid: 7,
            exit_code: 0,
            signal: None,
            finished_at: 2,
        };
        write_exit_record(&path, &serde_json::to_vec(&record).unwrap());
        let back: ExitRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, record);
        assert!(!path.with_extension("tmp").exists());
    }
}
