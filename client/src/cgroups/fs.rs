//! File helpers shared by the cgroup backends: write without creating (a missing
//! interface file means a missing controller, never a new plain file), read back,
//! parse keyed files, kill-until-empty and remove-with-retry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

/// Writes `data` to an existing cgroup file.
pub(super) fn write(path: &Path, data: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        data: data.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(data.as_bytes()).map_err(err)
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    read_small(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a small interface file. `std::fs::read_to_string` first stats the file to
/// size its buffer, which for a cgroup file (size 0) is a wasted system call on every
/// limit check and usage sample.
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(out).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text,
    })
}

/// The value of `key` in a "key value" per line file (`memory.events`, `cpu.stat`,
/// `memory.oom_control`); a missing key reads as 0 (older kernels lack some counters).
pub(super) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read(path)?;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or_default();
            return v.parse().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                content: line.to_string(),
            });
        }
    }
    Ok(0)
}

/// Every "key value" pair of a keyed file (`cpu.stat`, `cpuacct.stat`); lines that
/// are not a key and a number are skipped.
pub(super) fn read_all_keyed(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, u64>, CgroupError> {
    Ok(read(path)?
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect())
}

/// Writes `wanted` and checks the file then reads `expect` (the kernel's spelling).
pub(super) fn write_verified(path: &Path, wanted: &str, expect: &str) -> Result<(), CgroupError> {
    write(path, wanted)?;
    let got = read(path)?;
    if got.trim() != expect {
        return Err(CgroupError::LimitNotApplied {
            path: path.to_path_buf(),
            wanted: wanted.to_string(),
            got: got.trim().to_string(),
        });
    }
    Ok(())
}

/// Pids listed in a `cgroup.procs` file; a cgroup that is gone has none.
pub(super) fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match read_small(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// How long kill-all keeps killing before giving up.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Freeze, SIGKILL everything listed, thaw; repeat until no process is left. Freezing
/// first means no process can fork a child we have not seen yet.
pub(super) fn kill_until_empty(
    label: &Path,
    list: impl Fn() -> Result<Vec<i32>, CgroupError>,
    freeze: impl Fn(bool) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        let pids = list()?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() > KILL_DEADLINE {
            return Err(CgroupError::KillTimeout {
                path: label.to_path_buf(),
                pids,
            });
        }
        // A freezer that fails is not fatal: the SIGKILL loop still converges, just
        // with a window for forks.
        let frozen = freeze(true).is_ok();
        for pid in list()? {
            // ESRCH (already gone) is the goal, so errors are ignored.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if frozen {
            freeze(false)?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes cgroup directories, retrying while the kernel still counts exiting tasks.
pub(super) fn remove_dirs(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs {
        let start = Instant::now();
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e)
                    if start.elapsed() < Duration::from_secs(2)
                        && e.raw_os_error() == Some(libc::EBUSY) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

/// Creates a directory (and parents); one that exists is fine.
pub(super) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_path_buf(),
        source,
    })
}
