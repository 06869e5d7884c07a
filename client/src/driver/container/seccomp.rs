//! The container's default seccomp profile, modelled on Docker's: an allow-list of the
//! system calls ordinary programs make, everything else failing with `EPERM`. Left out
//! are the calls that reach past the container: new namespaces (`unshare`, `setns`,
//! `clone` with namespace flags, `clone3`), `mount` and its new API, `keyctl`, `bpf`,
//! `ptrace`, module loading, `kexec`, `reboot`, `io_uring`, `userfaultfd`, clock
//! setting and more. A few come back with the capability that governs them, as in
//! Docker (`cap_add = ["SYS_PTRACE"]` allows `ptrace`). Compiled to BPF before the
//! fork (`Profile::compile`) and installed by the command's process just before exec.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

/// `seccomp` in a container task's config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// The default profile.
    #[default]
    Default,
    /// No filter at all; only where the client allows it.
    Unconfined,
}

/// Why a profile could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp profile for this CPU architecture ({0}); run on x86_64 or aarch64")]
    Architecture(&'static str),
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
}

/// `clone` flags that make new namespaces: `CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
/// NEWUSER | NEWPID | NEWNET`. Without `CAP_SYS_ADMIN`, a `clone` with any is refused.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;
/// `personality` values Docker allows: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32`, and the query `0xffffffff`.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

// Calls newer than the libc crate's tables. From 5.1 on, new calls share one number on
// every architecture.
const SYS_CACHESTAT: i64 = 451;
const SYS_FCHMODAT2: i64 = 452;
const SYS_MAP_SHADOW_STACK: i64 = 453;
const SYS_FUTEX_WAKE: i64 = 454;
const SYS_FUTEX_WAIT: i64 = 455;
const SYS_FUTEX_REQUEUE: i64 = 456;

/// `calls![SYS_read, ...]`: the numbers of the named calls on this architecture.
macro_rules! calls {
    ($($name:ident),* $(,)?) => { &[$(libc::$name),*] };
}

/// Allowed whatever the container's capabilities, on every architecture.
#[rustfmt::skip]
const ALWAYS: &[i64] = calls![
    SYS_accept, SYS_accept4, SYS_adjtimex, SYS_bind, SYS_brk, SYS_capget, SYS_capset,
    SYS_chdir, SYS_clock_adjtime, SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep,
    SYS_close, SYS_close_range, SYS_connect, SYS_copy_file_range, SYS_dup, SYS_dup3,
    SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_eventfd2,
    SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_faccessat, SYS_faccessat2,
    SYS_fadvise64, SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat,
    SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr, SYS_flistxattr,
    SYS_flock, SYS_fremovexattr, SYS_fsetxattr, SYS_fstat, SYS_fstatfs, SYS_fsync,
    SYS_ftruncate, SYS_futex, SYS_futex_waitv, SYS_getcpu, SYS_getcwd, SYS_getdents64,
    SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups, SYS_getitimer, SYS_getpeername,
    SYS_getpgid, SYS_getpid, SYS_getppid, SYS_getpriority, SYS_getrandom, SYS_getresgid,
    SYS_getresuid, SYS_get_robust_list, SYS_getrusage, SYS_getsid, SYS_getsockname,
    SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr,
    SYS_inotify_add_watch, SYS_inotify_init1, SYS_inotify_rm_watch, SYS_io_cancel,
    SYS_ioctl, SYS_io_destroy, SYS_io_getevents, SYS_ioprio_get, SYS_ioprio_set,
    SYS_io_setup, SYS_io_submit, SYS_kill, SYS_landlock_add_rule,
    SYS_landlock_create_ruleset, SYS_landlock_restrict_self, SYS_lgetxattr, SYS_linkat,
    SYS_listen, SYS_listxattr, SYS_llistxattr, SYS_lremovexattr, SYS_lseek, SYS_lsetxattr,
    SYS_madvise, SYS_membarrier, SYS_memfd_create, SYS_memfd_secret, SYS_mincore,
    SYS_mkdirat, SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap, SYS_mprotect,
    SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive, SYS_mq_timedsend,
    SYS_mq_unlink, SYS_mremap, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_msync,
    SYS_munlock, SYS_munlockall, SYS_munmap, SYS_name_to_handle_at, SYS_nanosleep,
    SYS_newfstatat, SYS_openat, SYS_openat2, SYS_pidfd_open, SYS_pidfd_send_signal,
    SYS_pipe2, SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect, SYS_ppoll, SYS_prctl,
    SYS_pread64, SYS_preadv, SYS_preadv2, SYS_prlimit64, SYS_process_mrelease, SYS_pselect6,
    SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_read, SYS_readahead, SYS_readlinkat,
    SYS_readv, SYS_recvfrom, SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages,
    SYS_removexattr, SYS_renameat2, SYS_restart_syscall, SYS_rseq, SYS_rt_sigaction,
    SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo, SYS_rt_sigreturn,
    SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo, SYS_sched_getaffinity,
    SYS_sched_getattr, SYS_sched_getparam, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_getscheduler, SYS_sched_rr_get_interval,
    SYS_sched_setaffinity, SYS_sched_setattr, SYS_sched_setparam, SYS_sched_setscheduler,
    SYS_sched_yield, SYS_seccomp, SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop,
    SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_setfsgid, SYS_setfsuid,
    SYS_setgid, SYS_setgroups, SYS_setitimer, SYS_setpgid, SYS_setpriority, SYS_setregid,
    SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_set_robust_list, SYS_setsid,
    SYS_setsockopt, SYS_set_tid_address, SYS_setuid, SYS_setxattr, SYS_shmat, SYS_shmctl,
    SYS_shmdt, SYS_shmget, SYS_shutdown, SYS_sigaltstack, SYS_signalfd4, SYS_socketpair,
    SYS_splice, SYS_statfs, SYS_statx, SYS_symlinkat, SYS_sync, SYS_syncfs, SYS_sysinfo,
    SYS_tee, SYS_tgkill, SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun,
    SYS_timer_gettime, SYS_timer_settime, SYS_timerfd_create, SYS_timerfd_gettime,
    SYS_timerfd_settime, SYS_times, SYS_tkill, SYS_truncate, SYS_umask, SYS_uname,
    SYS_unlinkat, SYS_utimensat, SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write, SYS_writev,
];

/// Allowed whatever the capabilities, on x86_64 only: calls aarch64 never had, or that
/// the libc crate does not name there.
#[rustfmt::skip]
#[cfg(target_arch = "x86_64")]
const ALWAYS_ARCH: &[i64] = calls![
    SYS_access, SYS_alarm, SYS_arch_prctl, SYS_chmod, SYS_chown, SYS_creat, SYS_dup2,
    SYS_epoll_create, SYS_epoll_wait, SYS_eventfd, SYS_fork, SYS_futimesat, SYS_getdents,
    SYS_getpgrp, SYS_inotify_init, SYS_lchown, SYS_link, SYS_lstat, SYS_mkdir, SYS_mknod,
    SYS_modify_ldt, SYS_open, SYS_pause, SYS_pipe, SYS_poll, SYS_readlink, SYS_rename,
    SYS_rmdir, SYS_select, SYS_signalfd, SYS_stat, SYS_symlink, SYS_time, SYS_unlink,
    SYS_utime, SYS_utimes, SYS_vfork, SYS_get_thread_area, SYS_set_thread_area,
    SYS_getrlimit, SYS_setrlimit, SYS_renameat, SYS_sync_file_range,
];
#[cfg(target_arch = "aarch64")]
const ALWAYS_ARCH: &[i64] = &[];

/// Calls allowed when the container keeps one capability (its number, per `caps`).
fn by_capability() -> Vec<(&'static str, Vec<i64>)> {
    let mut rules: Vec<(&'static str, Vec<i64>)> = vec![
        (
            "SYS_ADMIN",
            calls![
                SYS_bpf,
                SYS_clone,
                SYS_fanotify_init,
                SYS_fsconfig,
                SYS_fsmount,
                SYS_fsopen,
                SYS_fspick,
                SYS_mount,
                SYS_mount_setattr,
                SYS_move_mount,
                SYS_open_tree,
                SYS_perf_event_open,
                SYS_quotactl,
                SYS_quotactl_fd,
                SYS_setdomainname,
                SYS_sethostname,
                SYS_setns,
                SYS_umount2,
                SYS_unshare,
                SYS_pivot_root,
            ]
            .to_vec(),
        ),
        ("SYS_BOOT", calls![SYS_reboot].to_vec()),
        ("SYS_CHROOT", calls![SYS_chroot].to_vec()),
        (
            "SYS_MODULE",
            calls![SYS_init_module, SYS_finit_module, SYS_delete_module].to_vec(),
        ),
        ("SYS_PACCT", calls![SYS_acct].to_vec()),
        (
            "SYS_PTRACE",
            calls![
                SYS_kcmp,
                SYS_pidfd_getfd,
                SYS_process_madvise,
                SYS_process_vm_readv,
                SYS_process_vm_writev,
                SYS_ptrace,
            ]
            .to_vec(),
        ),
        (
            "SYS_TIME",
            calls![SYS_settimeofday, SYS_clock_settime].to_vec(),
        ),
        ("SYS_TTY_CONFIG", calls![SYS_vhangup].to_vec()),
        (
            "SYS_NICE",
            calls![
                SYS_get_mempolicy,
                SYS_mbind,
                SYS_set_mempolicy,
                SYS_set_mempolicy_home_node,
            ]
            .to_vec(),
        ),
        ("SYSLOG", calls![SYS_syslog].to_vec()),
        ("BPF", calls![SYS_bpf].to_vec()),
        ("PERFMON", calls![SYS_perf_event_open].to_vec()),
        ("DAC_READ_SEARCH", calls![SYS_open_by_handle_at].to_vec()),
    ];
    #[cfg(target_arch = "x86_64")]
    rules.push(("SYS_RAWIO", calls![SYS_iopl, SYS_ioperm].to_vec()));
    rules
}

#[cfg(target_arch = "x86_64")]
const ARCH: Result<TargetArch, &str> = Ok(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Result<TargetArch, &str> = Ok(TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Result<TargetArch, &str> = Err(std::env::consts::ARCH);

/// The compiled filters of one container, installed in order.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    filters: Vec<BpfProgram>,
}

impl Profile {
    /// The filters for `mode` and the capabilities the container keeps (numbers).
    pub fn compile(mode: Seccomp, keep_caps: &[u8]) -> Result<Profile, SeccompError> {
        if mode == Seccomp::Unconfined {
            return Ok(Profile::default());
        }
        let arch = ARCH.map_err(SeccompError::Architecture)?;
        let compile = |rules, mismatch, matched| -> Result<BpfProgram, SeccompError> {
            SeccompFilter::new(rules, mismatch, matched, arch)
                .and_then(BpfProgram::try_from)
                .map_err(|e| SeccompError::Compile(e.to_string()))
        };
        let allow_list = compile(
            allowed_calls(keep_caps)?,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
        )?;
        // `clone3` passes its flags in memory a filter cannot read, so it cannot be
        // allowed without namespace flags; ENOSYS (not EPERM) makes libc fall back to
        // `clone`, which can be checked. Installed last, it wins over the first
        // filter's EPERM: for equal actions the newest filter's errno is returned.
        let clone3 = compile(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
        )?;
        Ok(Profile {
            filters: vec![allow_list, clone3],
        })
    }

    /// Whether there is anything to install.
    pub fn is_unconfined(&self) -> bool {
        self.filters.is_empty()
    }

    /// Installs the filters on the calling thread (sets `no_new_privs`). Only syscalls:
    /// safe in a forked child.
    pub fn install(&self) -> std::io::Result<()> {
        for f in &self.filters {
            seccompiler::apply_filter(f).map_err(|e| match e {
                seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => io,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        Ok(())
    }
}

/// Syscall number -> the rules under which it is allowed (no rules: always).
fn allowed_calls(keep_caps: &[u8]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut calls: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let unconditional = ALWAYS.iter().chain(ALWAYS_ARCH).chain(&[
        SYS_CACHESTAT,
        SYS_FCHMODAT2,
        SYS_MAP_SHADOW_STACK,
        SYS_FUTEX_WAKE,
        SYS_FUTEX_WAIT,
        SYS_FUTEX_REQUEUE,
    ]);
    for &nr in unconditional {
        calls.insert(nr, Vec::new());
    }
    let kept = |name: &str| {
        super::caps::number(name)
            .map(|n| keep_caps.contains(&n))
            .unwrap_or(false)
    };
    for (cap, nrs) in by_capability() {
        if kept(cap) {
            for nr in nrs {
                calls.insert(nr, Vec::new());
            }
        }
    }
    let rule = |index, len, op, value| -> Result<SeccompRule, SeccompError> {
        SeccompCondition::new(index, len, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| SeccompError::Compile(e.to_string()))
    };
    // Rules only narrow calls not already allowed outright by a capability.
    calls.entry(libc::SYS_clone).or_insert(vec![rule(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS),
        0,
    )?]);
    calls.entry(libc::SYS_socket).or_insert(vec![rule(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Ne,
        AF_VSOCK,
    )?]);
    calls.insert(
        libc::SYS_personality,
        PERSONALITIES
            .iter()
            .map(|&p| rule(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, p))
            .collect::<Result<_, _>>()?,
    );
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_leaves_out_what_reaches_past_the_container() {
        let calls = allowed_calls(&[]).unwrap();
        for nr in [
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_bpf,
            libc::SYS_ptrace,
            libc::SYS_init_module,
            libc::SYS_kexec_load,
            libc::SYS_reboot,
            libc::SYS_io_uring_setup,
            libc::SYS_userfaultfd,
            libc::SYS_clone3,
        ] {
            assert!(!calls.contains_key(&nr), "syscall {nr} is allowed");
        }
        assert_eq!(calls[&libc::SYS_clone].len(), 1, "clone is narrowed");
        assert!(calls[&libc::SYS_read].is_empty());
    }

    #[test]
    fn a_kept_capability_brings_back_its_calls() {
        let admin = super::super::caps::number("SYS_ADMIN").unwrap();
        let calls = allowed_calls(&[admin]).unwrap();
        assert!(calls[&libc::SYS_mount].is_empty());
        assert!(calls[&libc::SYS_clone].is_empty(), "clone is not narrowed");
        let ptrace = super::super::caps::number("SYS_PTRACE").unwrap();
        assert!(allowed_calls(&[ptrace])
            .unwrap()
            .contains_key(&libc::SYS_ptrace));
    }

    #[test]
    fn profiles_compile_and_unconfined_is_empty() {
        let p = Profile::compile(Seccomp::Default, &[]).unwrap();
        assert_eq!(p.filters.len(), 2);
        // Within the kernel's 4096-instruction limit for one filter.
        assert!(
            p.filters.iter().all(|f| f.len() < 4096),
            "{:?}",
            p.filters[0].len()
        );
        assert!(Profile::compile(Seccomp::Unconfined, &[])
            .unwrap()
            .is_unconfined());
    }
}
