//! The `orch container-init` helper, re-executed by the container driver so that no
//! namespace is ever created by forking the agent's multi-threaded runtime.
//!
//! Three processes, each small:
//! - the helper (the driver's child, in the task's cgroup from before exec) reads the
//!   `InitSpec` from stdin, points stdout/stderr at the task's logs, unshares the
//!   mount, UTS, IPC, PID (and with `network_mode = "none"` network) namespaces, forks
//!   the namespace init, forwards the signals it gets to it and finally exits the way
//!   the container's command did (re-raising a fatal signal), so the driver sees the
//!   command's own exit;
//! - the namespace init (PID 1 inside) builds the root (`rootfs::build`), sets the
//!   hostname, forks the command, then forwards signals to it and reaps every zombie
//!   until the command exits; when it exits the kernel kills whatever is left inside;
//! - the command's process drops capabilities, sets `no_new_privs`, switches user and
//!   execs.
//!
//! Setup errors are written to fd 3 (the driver's "ready" pipe, close-on-exec in the
//! command) and to the stderr log: the driver reads the pipe to EOF, so an empty read
//! means the command was exec'd and anything else is the reason it was not.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::{unshare, CloneFlags};

use super::command::{exit_like, wait_for, ExecPlan};
use super::exec_helper;
use super::init_error::InitError;
use super::rootfs;
use super::spec::{InitSpec, NetworkMode, READY_FD, STDERR_FD, STDOUT_FD};

/// Signals the helper and the namespace init pass on to the container's command.
const FORWARDED: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGCONT,
];

/// The namespace init's pid, for the helper's signal handler (0 until forked).
static INIT_PID: AtomicI32 = AtomicI32::new(0);
/// Whether fd 3 is the driver's ready pipe (a manual run may have anything there).
static READY_OPEN: AtomicI32 = AtomicI32::new(0);

/// Runs the helper; returns the exit code for the process (when it does not die by
/// the command's signal instead).
pub fn main() -> i32 {
    // SAFETY: fstat on a possibly closed fd only fails.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(READY_FD, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO {
            READY_OPEN.store(1, Ordering::SeqCst);
        }
    }
    if let Ok(exec_spec) = std::env::var(exec_helper::ENV) {
        return exec_helper::main(&exec_spec);
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        fail(&InitError::ReadSpec(e));
        return 127;
    }
    let spec: InitSpec = match serde_json::from_slice(&input) {
        Ok(s) => s,
        Err(e) => {
            fail(&InitError::BadSpec(e));
            return 127;
        }
    };
    match helper(&spec) {
        Ok(code) => code,
        Err(e) => {
            fail(&e);
            127
        }
    }
}

/// Tells the driver (ready pipe) and the task's stderr log why setup failed.
fn fail(error: &InitError) {
    let message = error.to_string();
    let _ = writeln!(std::io::stderr(), "orch container-init: {message}");
    if READY_OPEN.load(Ordering::SeqCst) == 1 {
        // SAFETY: write to an fd we checked is a pipe.
        unsafe {
            libc::write(READY_FD, message.as_ptr().cast(), message.len());
        }
    }
}

fn close_ready() {
    if READY_OPEN.swap(0, Ordering::SeqCst) == 1 {
        // SAFETY: closing the ready pipe we own.
        unsafe {
            libc::close(READY_FD);
        }
    }
}

extern "C" fn forward_to_init(sig: libc::c_int) {
    let pid = INIT_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn helper(spec: &InitSpec) -> Result<i32, InitError> {
    // The exit file's directory, opened while the host's root is still ours (the
    // namespace init's pivot_root may move the root of this mount namespace).
    let exit_dir = match &spec.exit_file {
        Some(f) => {
            let dir = f.parent().unwrap_or(Path::new("/"));
            let name = f
                .file_name()
                .map(|n| n.to_os_string())
                .ok_or_else(|| InitError::ExitFileName { path: f.clone() })?;
            let d = std::fs::File::open(dir).map_err(|source| InitError::Open {
                path: dir.to_path_buf(),
                source,
            })?;
            Some((d, name))
        }
        None => None,
    };
    redirect(0, Path::new("/dev/null"), false)?;
    match &spec.stdout {
        Some(path) => redirect(1, path, true)?,
        None => take_fd(STDOUT_FD, 1)?,
    }
    match &spec.stderr {
        Some(path) => redirect(2, path, true)?,
        None => take_fd(STDERR_FD, 2)?,
    }

    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if spec.network == NetworkMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(InitError::Unshare)?;
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(InitError::StatusPipe)?;

    // SAFETY: signal masks and handlers set with valid arguments; the handler only
    // calls kill.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        for &sig in FORWARDED {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_to_init as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        old
    };

    // SAFETY: the child only runs this module's setup code and exits with _exit.
    match unsafe { nix::unistd::fork() }.map_err(|source| InitError::Fork {
        what: "forking the init",
        source,
    })? {
        nix::unistd::ForkResult::Child => {
            drop(status_r);
            let code = match namespace_init(spec, &status_w) {
                Ok(code) => code,
                Err(e) => {
                    fail(&e);
                    127
                }
            };
            // SAFETY: leaving the forked child without running the parent's atexit.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(status_w);
            close_ready();
            INIT_PID.store(child.as_raw(), Ordering::SeqCst);
            // SAFETY: restoring the mask saved above; pending signals now reach the init.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
            }
            let init_status = wait_for(child.as_raw());
            let mut buf = [0u8; 4];
            let mut f = std::fs::File::from(status_r);
            let status = match f.read_exact(&mut buf) {
                Ok(()) => i32::from_ne_bytes(buf),
                // The init died before the command ended (killed, or setup failed).
                Err(_) => init_status,
            };
            if let Some((dir, name)) = &exit_dir {
                record_exit(dir, name, child.as_raw(), status);
            }
            Ok(exit_like(status))
        }
    }
}

/// Moves the fd the driver passed on `from` to `target`.
fn take_fd(from: i32, target: i32) -> Result<(), InitError> {
    // SAFETY: dup2 and close on fds this process owns.
    unsafe {
        if libc::dup2(from, target) < 0 {
            return Err(InitError::TakeFd {
                fd: from,
                source: std::io::Error::last_os_error(),
            });
        }
        libc::close(from);
    }
    Ok(())
}

/// Points fd `target` at `path` (appending, created when `create`).
/// A created file is 0640 whatever the umask, as the client's task logs are.
fn redirect(target: i32, path: &Path, create: bool) -> Result<(), InitError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = if create {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
    } else {
        std::fs::OpenOptions::new().read(true).open(path)
    }
    .map_err(|source| InitError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: dup2 between valid fds.
    if unsafe { libc::dup2(f.as_raw_fd(), target) } < 0 {
        return Err(InitError::Redirect {
            fd: target,
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Writes the command's exit (wait status `status`) into `dir`/`name`: over the blanks
/// of a reserved file, else into a new file renamed into place.
fn record_exit(dir: &std::fs::File, name: &std::ffi::OsStr, pid: i32, status: i32) {
    let result = if libc::WIFSIGNALED(status) {
        crate::driver::ExitResult::signaled(libc::WTERMSIG(status))
    } else {
        crate::driver::ExitResult::code(libc::WEXITSTATUS(status))
    };
    let record = crate::shim::ExitRecord {
        pid,
        exit_code: result.exit_code,
        signal: result.signal,
        finished_at: orch_common::ids::now_ms(),
    };
    let Ok(json) = serde_json::to_vec(&record) else {
        return;
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let (Ok(tmp), Ok(fin)) = (
        CString::new(tmp_name.as_bytes()),
        CString::new(name.as_bytes()),
    ) else {
        return;
    };
    // SAFETY: openat/pwrite/write/close/renameat relative to a directory fd we own,
    // with NUL-terminated names.
    unsafe {
        // Over the blanks the client reserved, in place (see `shim::reserve_exit_file`).
        if json.len() <= crate::shim::protocol::EXIT_FILE_RESERVED {
            let fd = libc::openat(
                dir.as_raw_fd(),
                fin.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::pwrite(fd, json.as_ptr().cast(), json.len(), 0);
                libc::close(fd);
                return;
            }
        }
        let fd = libc::openat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return;
        }
        let n = libc::write(fd, json.as_ptr().cast(), json.len());
        libc::close(fd);
        if n == json.len() as isize {
            libc::renameat(dir.as_raw_fd(), tmp.as_ptr(), dir.as_raw_fd(), fin.as_ptr());
        }
    }
}

/// PID 1 of the new namespaces: builds the root, starts the command, then reaps.
fn namespace_init(spec: &InitSpec, status_w: &OwnedFd) -> Result<i32, InitError> {
    // Signals stay blocked (inherited from the helper): they are taken with
    // sigwaitinfo below, which is also how PID 1 receives signals from outside.
    rootfs::build(spec).map_err(InitError::Rootfs)?;
    nix::unistd::sethostname(&spec.hostname).map_err(|source| InitError::Hostname {
        hostname: spec.hostname.clone(),
        source,
    })?;
    if spec.network == NetworkMode::None {
        loopback_up().map_err(InitError::Loopback)?;
    }
    let exec = ExecPlan::new(spec)?;
    // SAFETY: the child runs `exec.run`, which only makes syscalls and exits.
    let child = match unsafe { nix::unistd::fork() }.map_err(|source| InitError::Fork {
        what: "forking",
        source,
    })? {
        nix::unistd::ForkResult::Child => {
            let error = exec.run();
            fail(&error);
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => child.as_raw(),
    };
    close_ready();
    // SAFETY: sigwaitinfo/waitpid/kill on valid arguments.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let sig = libc::sigwaitinfo(&all, std::ptr::null_mut());
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
            let mut main_status = None;
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    main_status = Some(status);
                }
            }
            if let Some(status) = main_status {
                let bytes = status.to_ne_bytes();
                libc::write(status_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                return Ok(if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    libc::WEXITSTATUS(status)
                });
            }
        }
    }
}

/// `ip link set lo up` in the new network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a socket and two ioctls on a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(())
}
