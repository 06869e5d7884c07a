//! Host fingerprint: kernel name/version and host name (`/proc/sys/kernel`, what
//! uname(2) reports), and the OS from `/etc/os-release`.

use std::path::Path;

use super::error::{read_file, FingerprintError};

pub(super) struct Kernel {
    /// Lower case, e.g. `linux`.
    pub name: String,
    /// The numeric part of the release (`6.1.0` of `6.1.0-18-amd64`), so `version`
    /// constraints compare cleanly.
    pub version: String,
    /// The full release string.
    pub release: String,
    pub hostname: String,
}

pub(super) fn kernel(proc_root: &Path) -> Result<Kernel, FingerprintError> {
    let dir = proc_root.join("sys/kernel");
    let name = read_file(&dir.join("ostype"))?.trim().to_lowercase();
    let release = read_file(&dir.join("osrelease"))?.trim().to_string();
    let hostname = read_file(&dir.join("hostname"))?.trim().to_string();
    let version = release
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_string();
    Ok(Kernel {
        name,
        version,
        release,
        hostname,
    })
}

pub(super) struct OsRelease {
    pub name: String,
    pub version: String,
}

/// `ID` and `VERSION_ID` of os-release; `None` when the file is missing or has no ID.
pub(super) fn os_release(etc_root: &Path) -> Option<OsRelease> {
    let text = std::fs::read_to_string(etc_root.join("os-release")).ok()?;
    let mut name = None;
    let mut version = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => name = Some(v),
            "VERSION_ID" => version = v,
            _ => {}
        }
    }
    Some(OsRelease {
        name: name?,
        version,
    })
}
