//! Memory fingerprint: total bytes from `/proc/meminfo`.

use std::path::Path;

use super::error::{read_file, FingerprintError};

pub(super) fn total_bytes(proc_root: &Path) -> Result<u64, FingerprintError> {
    let path = proc_root.join("meminfo");
    let text = read_file(&path)?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .ok_or(FingerprintError::Missing {
            path,
            field: "MemTotal",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_without_memtotal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meminfo"), "MemFree: 10 kB\n").unwrap();
        let err = total_bytes(dir.path()).unwrap_err();
        assert!(err.to_string().contains("MemTotal"), "{err}");
    }
}
