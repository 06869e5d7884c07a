//! The container's command process, shared by the helper's two modes (`init` starts
//! the task's command, `exec_helper` an `orch alloc exec` command): `ExecPlan`, made
//! before the fork, drops capabilities, sets `no_new_privs`, switches user and execs;
//! the parent waits for it and ends the way it did.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::caps;
use super::init_error::InitError;
use super::seccomp::Profile;
use super::spec::{InitSpec, DEFAULT_PATH, READY_FD};

/// Everything the command's process needs, prepared before the fork.
pub(super) struct ExecPlan {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    keep_caps: Vec<u8>,
    last_cap: u8,
    seccomp: Profile,
}

impl ExecPlan {
    pub(super) fn new(spec: &InitSpec) -> Result<Self, InitError> {
        let c = |s: &[u8], what: &'static str| CString::new(s).map_err(|_| InitError::Nul { what });
        let path = resolve_command(spec)?;
        let mut argv = vec![c(spec.command.as_bytes(), "the command")?];
        for a in &spec.args {
            argv.push(c(a.as_bytes(), "an argument")?);
        }
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes(), "the environment"))
            .collect::<Result<_, _>>()?;
        Ok(ExecPlan {
            path: c(path.as_os_str().as_bytes(), "the command path")?,
            argv,
            envp,
            cwd: c(spec.cwd.as_os_str().as_bytes(), "the working directory")?,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            keep_caps: spec.keep_caps.clone(),
            last_cap: caps::last_cap(),
            seccomp: Profile::compile(spec.seccomp, &spec.keep_caps)?,
        })
    }

    /// Runs in the forked command process; returns only on failure, with the reason.
    pub(super) fn run(&self) -> InitError {
        // SAFETY: plain syscalls on data prepared before the fork.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                // errno first: the clone below allocates.
                let source = std::io::Error::last_os_error();
                return InitError::Chdir {
                    cwd: self.cwd.clone(),
                    source,
                };
            }
            if let Err(e) = caps::restrict(&self.keep_caps, self.last_cap) {
                return InitError::DropCapabilities(e);
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return InitError::NoNewPrivs(std::io::Error::last_os_error());
            }
            if libc::setgroups(self.groups.len() as _, self.groups.as_ptr()) != 0
                || libc::setgid(self.gid) != 0
                || libc::setuid(self.uid) != 0
            {
                return InitError::SwitchUser {
                    uid: self.uid,
                    gid: self.gid,
                    source: std::io::Error::last_os_error(),
                };
            }
            // Last before exec: the filter would refuse the calls above.
            if let Err(e) = self.seccomp.install() {
                return InitError::InstallSeccomp(e);
            }
            libc::fcntl(READY_FD, libc::F_SETFD, libc::FD_CLOEXEC);
            let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
            envp.push(std::ptr::null());
            libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let source = std::io::Error::last_os_error();
            InitError::Exec {
                path: self.path.clone(),
                source,
            }
        }
    }
}

/// The command's path inside the container: as given when it has a `/`, else the
/// first match on the container's `PATH`.
fn resolve_command(spec: &InitSpec) -> Result<std::path::PathBuf, InitError> {
    if spec.command.contains('/') {
        return Ok(spec.command.clone().into());
    }
    let path = spec
        .env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|d| Path::new(d).join(&spec.command))
        .find(|p| p.is_file())
        .ok_or_else(|| InitError::CommandNotFound {
            command: spec.command.clone(),
            path: path.to_string(),
        })
}

/// waitpid(pid) through EINTR; the raw wait status.
pub(super) fn wait_for(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 127 << 8;
        }
    }
}

/// Ends like a process with wait status `status`: the same exit code, or death by
/// the same signal (so the driver classifies the command's exit, not the helper's).
pub(super) fn exit_like(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: default disposition, unblock, then raise: the process dies of `sig`.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        128 + sig
    } else {
        libc::WEXITSTATUS(status)
    }
}
