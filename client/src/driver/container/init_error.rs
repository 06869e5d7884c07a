//! `InitError`: why the `container-init` helper (building a container, or joining one
//! for `orch alloc exec`) could not start the command. Each variant carries the failed
//! call's error and the path, fd or name it was about; its message is what the driver
//! reads from the ready pipe and what the task's stderr log shows.

use std::ffi::CString;
use std::path::PathBuf;

use super::rootfs::SetupError;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("reading the container spec from stdin: {0}")]
    ReadSpec(#[source] std::io::Error),
    #[error("the container spec on stdin is not valid: {0}")]
    BadSpec(#[source] serde_json::Error),
    #[error("the spec in {var} is not valid: {source}")]
    BadExecSpec {
        var: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("exit file {path} has no name")]
    ExitFileName { path: PathBuf },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("taking the output pipe on fd {fd}: {source}")]
    TakeFd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("redirecting fd {fd} to {path}: {source}")]
    Redirect {
        fd: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unsharing namespaces: {0}")]
    Unshare(#[source] nix::Error),
    #[error("creating the status pipe: {0}")]
    StatusPipe(#[source] nix::Error),
    /// `what` says which process was being forked ("forking the init", "forking" for
    /// the command).
    #[error("{what}: {source}")]
    Fork {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("forking: {0}")]
    ForkExec(#[source] std::io::Error),
    #[error("building the root: {0}")]
    Rootfs(#[source] SetupError),
    #[error("setting the hostname {hostname:?}: {source}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
    #[error("bringing up the loopback interface: {0}")]
    Loopback(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
    #[error("installing the seccomp filter: {0}")]
    InstallSeccomp(#[source] std::io::Error),
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("command {command:?} not found on PATH {path:?}")]
    CommandNotFound { command: String, path: String },
    #[error("joining the container's {namespace} namespace: {source}")]
    JoinNamespace {
        namespace: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("entering the container's root: {0}")]
    EnterRoot(#[source] std::io::Error),
    #[error("entering the working directory {cwd:?}: {source}")]
    Chdir {
        cwd: CString,
        #[source]
        source: std::io::Error,
    },
    #[error("dropping capabilities: {0}")]
    DropCapabilities(#[source] std::io::Error),
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("switching to uid {uid} gid {gid}: {source}")]
    SwitchUser {
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("executing {path:?}: {source}")]
    Exec {
        path: CString,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed_as_the_ready_pipe_reports_it() {
        let not_found = InitError::CommandNotFound {
            command: "nope".into(),
            path: "/bin:/usr/bin".into(),
        };
        assert_eq!(
            not_found.to_string(),
            "command \"nope\" not found on PATH \"/bin:/usr/bin\""
        );
        let chdir = InitError::Chdir {
            cwd: CString::new("/work").unwrap(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(
            chdir
                .to_string()
                .starts_with("entering the working directory \"/work\": "),
            "{chdir}"
        );
        let open = InitError::Open {
            path: PathBuf::from("/proc/1/ns/ipc"),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(open.to_string().starts_with("opening /proc/1/ns/ipc: "));
        let fork = InitError::Fork {
            what: "forking the init",
            source: nix::Error::EAGAIN,
        };
        assert_eq!(
            fork.to_string(),
            format!("forking the init: {}", nix::Error::EAGAIN)
        );
    }
}
