//! Cpu fingerprint: core count and total compute in MHz.
//!
//! MHz per core comes from `/proc/cpuinfo` ("cpu MHz"), else from
//! `/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq` (kHz), else 1000.

use std::path::Path;

use super::error::{read_file, FingerprintError};

/// Assumed speed when the host does not say.
const FALLBACK_MHZ: u64 = 1000;

/// What the cpu fingerprint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    pub cores: u64,
    pub mhz_per_core: u64,
    /// `cores * mhz_per_core`: the node's cpu capacity.
    pub total_mhz: u64,
    pub model: Option<String>,
}

pub(super) fn read(proc_root: &Path, sys_root: &Path) -> Result<CpuInfo, FingerprintError> {
    let path = proc_root.join("cpuinfo");
    let text = read_file(&path)?;
    let mut cores = 0u64;
    let mut mhz: Option<f64> = None;
    let mut model = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => cores += 1,
            "cpu MHz" if mhz.is_none() => mhz = value.parse::<f64>().ok().filter(|m| *m > 0.0),
            "model name" if model.is_none() => model = Some(value.to_string()),
            _ => {}
        }
    }
    if cores == 0 {
        // Some architectures print no "processor" lines; trust the scheduler's view.
        cores = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .map_err(|_| FingerprintError::Missing {
                path: path.clone(),
                field: "processor",
            })?;
    }
    let mhz_per_core = match mhz {
        Some(m) => m.round() as u64,
        None => max_freq_mhz(sys_root).unwrap_or(FALLBACK_MHZ),
    };
    Ok(CpuInfo {
        cores,
        mhz_per_core,
        total_mhz: cores * mhz_per_core,
        model,
    })
}

fn max_freq_mhz(sys_root: &Path) -> Option<u64> {
    let p = sys_root.join("devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
    let khz: u64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
    (khz >= 1000).then_some(khz / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(cpuinfo: &str, max_freq_khz: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), cpuinfo).unwrap();
        if let Some(f) = max_freq_khz {
            let d = dir.path().join("sys/devices/system/cpu/cpu0/cpufreq");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpuinfo_max_freq"), f).unwrap();
        }
        dir
    }

    fn read_tree(dir: &tempfile::TempDir) -> CpuInfo {
        read(&dir.path().join("proc"), &dir.path().join("sys")).unwrap()
    }

    #[test]
    fn cpu_mhz_from_cpuinfo_times_cores() {
        let dir = tree(
            "processor : 0\ncpu MHz : 2596.144\nprocessor : 1\ncpu MHz : 2596.144\n\
             processor : 2\ncpu MHz : 2596.144\nprocessor : 3\ncpu MHz : 2596.144\n",
            Some("3500000"),
        );
        let c = read_tree(&dir);
        assert_eq!((c.cores, c.mhz_per_core, c.total_mhz), (4, 2596, 10384));
    }

    #[test]
    fn cpu_mhz_falls_back_to_cpufreq_max() {
        let dir = tree("processor : 0\nprocessor : 1\n", Some("3200000\n"));
        let c = read_tree(&dir);
        assert_eq!((c.cores, c.total_mhz), (2, 6400));
    }

    #[test]
    fn cpu_mhz_falls_back_to_1000_per_core() {
        let dir = tree("processor : 0\nprocessor : 1\nprocessor : 2\n", None);
        let c = read_tree(&dir);
        assert_eq!((c.cores, c.total_mhz), (3, 3000));
    }
}
