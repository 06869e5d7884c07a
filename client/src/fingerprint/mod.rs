//! Host fingerprinting: turns `/proc`, `/sys` and `/etc` facts into node attributes
//! (`cpu.numcores`, `memory.totalbytes`, `kernel.name`, ...) and node resources.
//!
//! Every source file is read relative to a root given to `Fingerprinter::new`, so tests
//! run against fixture trees in a temp dir.

mod cpu;
mod error;
mod host;
mod memory;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orch_common::model::Resources;

pub use cpu::CpuInfo;
pub use error::FingerprintError;

use crate::cgroups::{self, CgroupVersion};

/// What the host looks like: attributes for constraints plus total capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub attributes: BTreeMap<String, String>,
    /// Total cpu MHz and memory MiB of the host.
    pub resources: Resources,
}

/// Reads host facts from a file-system root (`/` on a real host).
#[derive(Debug, Clone)]
pub struct Fingerprinter {
    proc_root: PathBuf,
    sys_root: PathBuf,
    etc_root: PathBuf,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Fingerprinter::new("/")
    }
}

impl Fingerprinter {
    /// Reads `<root>/proc`, `<root>/sys` and `<root>/etc`.
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Fingerprinter {
            proc_root: root.join("proc"),
            sys_root: root.join("sys"),
            etc_root: root.join("etc"),
        }
    }

    /// Fingerprints cpu, memory, host and cgroups. Cpu, memory and the kernel are
    /// required; the OS release and cgroup version are reported when found.
    pub fn fingerprint(&self) -> Result<Fingerprint, FingerprintError> {
        let mut attrs = BTreeMap::new();

        let cpu = cpu::read(&self.proc_root, &self.sys_root)?;
        attrs.insert("cpu.numcores".to_string(), cpu.cores.to_string());
        attrs.insert("cpu.totalcompute".to_string(), cpu.total_mhz.to_string());
        attrs.insert("cpu.frequency".to_string(), cpu.mhz_per_core.to_string());
        if let Some(model) = &cpu.model {
            attrs.insert("cpu.modelname".to_string(), model.clone());
        }
        attrs.insert("cpu.arch".to_string(), std::env::consts::ARCH.to_string());

        let mem_bytes = memory::total_bytes(&self.proc_root)?;
        attrs.insert("memory.totalbytes".to_string(), mem_bytes.to_string());

        let kernel = host::kernel(&self.proc_root)?;
        attrs.insert("kernel.name".to_string(), kernel.name);
        attrs.insert("kernel.version".to_string(), kernel.version);
        attrs.insert("kernel.release".to_string(), kernel.release);
        attrs.insert("unique.hostname".to_string(), kernel.hostname);

        if let Some(os) = host::os_release(&self.etc_root) {
            attrs.insert("os.name".to_string(), os.name);
            if !os.version.is_empty() {
                attrs.insert("os.version".to_string(), os.version);
            }
        }

        match cgroups::detect_version(&self.proc_root.join("mounts")) {
            Some(CgroupVersion::V1) => {
                attrs.insert("cgroup.version".to_string(), "v1".to_string());
            }
            Some(CgroupVersion::V2) => {
                attrs.insert("cgroup.version".to_string(), "v2".to_string());
            }
            None => {}
        }

        Ok(Fingerprint {
            attributes: attrs,
            resources: Resources {
                cpu: cpu.total_mhz,
                memory: mem_bytes / (1024 * 1024),
                // Dedicated `cores` are counted against this.
                cores: Some(cpu.cores as u32),
                ..Resources::ZERO
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn fixture_host(root: &Path) {
        write(
            root,
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU\ncpu MHz\t\t: 2500.000\n\n\
             processor\t: 1\nmodel name\t: Test CPU\ncpu MHz\t\t: 2500.000\n\n",
        );
        write(
            root,
            "proc/meminfo",
            "MemTotal:        2048000 kB\nMemFree:  100 kB\n",
        );
        write(root, "proc/sys/kernel/ostype", "Linux\n");
        write(root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        write(root, "proc/sys/kernel/hostname", "box1\n");
        write(
            root,
            "etc/os-release",
            "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        write(
            root,
            "proc/mounts",
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n",
        );
    }

    #[test]
    fn fingerprint_reads_every_attribute_from_the_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        fixture_host(dir.path());
        let fp = Fingerprinter::new(dir.path()).fingerprint().unwrap();
        let a = &fp.attributes;
        assert_eq!(a["cpu.numcores"], "2");
        assert_eq!(a["cpu.totalcompute"], "5000");
        assert_eq!(a["cpu.modelname"], "Test CPU");
        assert_eq!(a["memory.totalbytes"], (2_048_000u64 * 1024).to_string());
        assert_eq!(a["kernel.name"], "linux");
        assert_eq!(a["kernel.version"], "6.1.0");
        assert_eq!(a["kernel.release"], "6.1.0-18-amd64");
        assert_eq!(a["unique.hostname"], "box1");
        assert_eq!(a["os.name"], "debian");
        assert_eq!(a["os.version"], "12");
        assert_eq!(a["cgroup.version"], "v1");
        assert_eq!(a["cpu.arch"], std::env::consts::ARCH);
        assert_eq!(fp.resources.cpu, 5000);
        assert_eq!(fp.resources.memory, 2000);
    }

    #[test]
    fn fingerprint_without_os_release_or_cgroups_still_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        fixture_host(dir.path());
        std::fs::remove_file(dir.path().join("etc/os-release")).unwrap();
        write(dir.path(), "proc/mounts", "proc /proc proc rw 0 0\n");
        let fp = Fingerprinter::new(dir.path()).fingerprint().unwrap();
        assert!(!fp.attributes.contains_key("os.name"));
        assert!(!fp.attributes.contains_key("cgroup.version"));
    }

    #[test]
    fn fingerprint_without_meminfo_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fixture_host(dir.path());
        std::fs::remove_file(dir.path().join("proc/meminfo")).unwrap();
        let err = Fingerprinter::new(dir.path()).fingerprint().unwrap_err();
        assert!(err.to_string().contains("meminfo"), "{err}");
    }

    #[test]
    fn fingerprint_of_this_host_has_cores_and_memory() {
        let fp = Fingerprinter::default().fingerprint().unwrap();
        assert!(fp.resources.cpu > 0);
        assert!(fp.resources.memory > 0);
        assert!(fp.attributes.contains_key("unique.hostname"));
    }
}
