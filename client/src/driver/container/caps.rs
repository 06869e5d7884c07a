//! Linux capabilities of a container: the names the jobspec uses, Docker's default
//! set with `cap_add` / `cap_drop` applied within what the client allows
//! (`allow_caps`), and dropping the rest from the bounding, inheritable and ambient
//! sets (runs in the forked child before exec).

use std::collections::BTreeSet;

/// Capability names in kernel order (the index is the capability number).
pub const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities: enough for ordinary services, none that reach
/// outside the container (no SYS_ADMIN, NET_ADMIN, SYS_MODULE, ...).
pub const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A capability name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("unknown capability {name:?} (expected a name such as \"NET_ADMIN\" or \"CAP_NET_ADMIN\", or \"ALL\")")]
pub struct UnknownCap {
    pub name: String,
}

/// Why a task's capabilities cannot be granted.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error(transparent)]
    Unknown(#[from] UnknownCap),
    #[error("cap_add {asked} is not allowed on this client (its allow_caps: {allowed}); refused")]
    NotAllowed { asked: String, allowed: String },
}

/// Names of the capabilities numbered `set`, comma-separated (`"none"` when empty).
pub fn names(set: &BTreeSet<u8>) -> String {
    if set.is_empty() {
        return "none".to_string();
    }
    set.iter()
        .map(|&c| NAMES.get(usize::from(c)).copied().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The numbers of `names` ("ALL": every capability).
pub fn parse_set(names: &[String]) -> Result<BTreeSet<u8>, UnknownCap> {
    if names.iter().any(|s| s.trim().eq_ignore_ascii_case("ALL")) {
        return Ok((0..NAMES.len() as u8).collect());
    }
    names.iter().map(|n| number(n)).collect()
}

/// The numbers of Docker's default set.
pub fn default_set() -> BTreeSet<u8> {
    DEFAULT
        .iter()
        .map(|n| number(n).expect("the default set names known capabilities"))
        .collect()
}

/// The capabilities a container keeps on a client that allows `allowed`: the default
/// set within `allowed`, minus `drop`, plus `add`; every capability `add` names must
/// be allowed (as Nomad's `allow_caps`).
pub fn granted(
    add: &[String],
    drop: &[String],
    allowed: &BTreeSet<u8>,
) -> Result<BTreeSet<u8>, CapError> {
    let asked = parse_set(add)?;
    let refused: BTreeSet<u8> = asked.difference(allowed).copied().collect();
    if !refused.is_empty() {
        return Err(CapError::NotAllowed {
            asked: names(&refused),
            allowed: names(allowed),
        });
    }
    let dropped = parse_set(drop)?;
    let mut set: BTreeSet<u8> = default_set()
        .into_iter()
        .filter(|c| allowed.contains(c) && !dropped.contains(c))
        .collect();
    set.extend(asked);
    Ok(set)
}

/// "net_admin", "CAP_NET_ADMIN" -> 12.
pub fn number(name: &str) -> Result<u8, UnknownCap> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u8)
        .ok_or_else(|| UnknownCap {
            name: name.to_string(),
        })
}

/// The capabilities a container keeps where every capability is allowed: the default
/// set, minus `drop`, plus `add` ("ALL" in either means every capability).
pub fn effective_set(add: &[String], drop: &[String]) -> Result<BTreeSet<u8>, CapError> {
    granted(add, drop, &parse_set(&["ALL".to_string()])?)
}

/// The highest capability this kernel knows.
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u8 - 1)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Drops every capability not in `keep` from the bounding and inheritable sets and
/// clears the ambient set. Called before switching user and exec: a root container
/// process then gets at most `keep`, a non-root one gets none.
pub fn restrict(keep: &[u8], last: u8) -> std::io::Result<()> {
    let kept = |c: u8| keep.contains(&c);
    // SAFETY: prctl and capget/capset with valid, owned arguments.
    unsafe {
        for c in 0..=last {
            if !kept(c) && libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(c), 0, 0, 0) != 0
            {
                let e = std::io::Error::last_os_error();
                // EINVAL: a capability this kernel does not have.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut mask = [0u32; 2];
        for &c in keep {
            mask[usize::from(c / 32)] |= 1 << (c % 32);
        }
        for (d, m) in data.iter_mut().zip(mask) {
            d.inheritable &= m;
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_the_cap_prefix() {
        assert_eq!(number("net_admin").unwrap(), 12);
        assert_eq!(number("CAP_SYS_ADMIN").unwrap(), 21);
        assert!(number("CAP_NOPE")
            .unwrap_err()
            .to_string()
            .contains("CAP_NOPE"));
    }

    #[test]
    fn the_default_set_is_dockers() {
        let set = effective_set(&[], &[]).unwrap();
        let mask: u64 = set.iter().map(|c| 1u64 << c).sum();
        // Docker's CapBnd as /proc/<pid>/status shows it.
        assert_eq!(mask, 0xa80425fb);
    }

    #[test]
    fn cap_add_is_limited_to_what_the_client_allows() {
        let dockers = default_set();
        let err = granted(&["SYS_ADMIN".into(), "CHOWN".into()], &[], &dockers).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cap_add SYS_ADMIN is not allowed"),
            "{err}"
        );
        assert!(granted(&["ALL".into()], &[], &dockers).is_err());
        let wider: BTreeSet<u8> = dockers.iter().copied().chain([21]).collect();
        assert!(granted(&["SYS_ADMIN".into()], &[], &wider)
            .unwrap()
            .contains(&21));
        // A narrower allow-list narrows the default set too.
        let narrow = parse_set(&["CHOWN".into(), "KILL".into()]).unwrap();
        assert_eq!(names(&granted(&[], &[], &narrow).unwrap()), "CHOWN, KILL");
        assert_eq!(
            granted(&[], &["ALL".into()], &dockers).unwrap(),
            BTreeSet::new()
        );
    }

    #[test]
    fn add_and_drop_change_the_default_set() {
        let set = effective_set(&["SYS_ADMIN".into()], &["net_raw".into()]).unwrap();
        assert!(set.contains(&21) && !set.contains(&13));
        assert!(effective_set(&[], &["ALL".into()]).unwrap().is_empty());
        assert_eq!(
            effective_set(&["all".into()], &[]).unwrap().len(),
            NAMES.len()
        );
    }
}
