//! A throwaway Linux machine for tests: the host's own kernel booted under
//! `qemu-system-x86_64` (software emulation, no disk) from an initramfs built at test
//! time (a newc cpio written here), with a console file, a results file (the guest's
//! second serial port) and a hard deadline; qemu is killed when the `Vm` is dropped.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What booting needs from the host: qemu and a kernel.
#[derive(Debug, Clone)]
pub struct Host {
    pub qemu: PathBuf,
    /// The newest `/boot/vmlinuz-*`.
    pub vmlinuz: PathBuf,
}

impl Host {
    /// qemu and the newest installed kernel, or why they are not there (the caller
    /// skips the test with that message).
    pub fn find() -> Result<Host, String> {
        let qemu = which("qemu-system-x86_64")
            .ok_or("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")?;
        let vmlinuz = newest_kernel(Path::new("/boot"))
            .ok_or("no kernel at /boot/vmlinuz-* (Debian: linux-image-amd64)")?;
        Ok(Host { qemu, vmlinuz })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The first `name` on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The `vmlinuz-*` in `boot` with the highest version (numbers compared as numbers, so
/// `6.1.0-10` is newer than `6.1.0-9`).
pub fn newest_kernel(boot: &Path) -> Option<PathBuf> {
    std::fs::read_dir(boot)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| file_name(p).starts_with("vmlinuz-") && p.is_file())
        .max_by_key(|p| version_key(&file_name(p)))
}

/// The runs of digits in `s`, as numbers: a sort key for version strings.
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

/// A newc cpio archive (what the kernel unpacks as its initramfs) being put together:
/// files, directories (parents are added before their children), symlinks and device
/// nodes, all owned by root, written in the order they were added.
#[derive(Default)]
pub struct Initramfs {
    entries: Vec<(String, Entry)>,
    dirs: BTreeSet<String>,
}

enum Entry {
    Dir,
    File { source: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the directory `path` (absolute in the guest) and its parents.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return self;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entries.push((path.to_string(), Entry::Dir));
        self
    }

    fn parent_of(&mut self, path: &str) -> String {
        let path = path.trim_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    /// Adds the host file `source` at `path`, keeping its permission bits.
    pub fn file(&mut self, path: &str, source: &Path) -> &mut Self {
        let mode = std::fs::metadata(source)
            .unwrap_or_else(|e| panic!("initramfs: reading {}: {e}", source.display()))
            .permissions()
            .mode()
            & 0o7777;
        let path = self.parent_of(path);
        self.entries.push((
            path,
            Entry::File {
                source: source.to_path_buf(),
                mode,
            },
        ));
        self
    }

    /// Adds a file with these contents and permission bits.
    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        let path = self.parent_of(path);
        self.entries.push((
            path,
            Entry::Bytes {
                data: data.into(),
                mode,
            },
        ));
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let path = self.parent_of(path);
        self.entries.push((
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        ));
        self
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let path = self.parent_of(path);
        self.entries
            .push((path, Entry::CharDevice { major, minor }));
        self
    }

    /// Adds every file under the host directory `source` below `path`.
    pub fn tree(&mut self, path: &str, source: &Path) -> &mut Self {
        let mut names: Vec<PathBuf> = std::fs::read_dir(source)
            .unwrap_or_else(|e| panic!("initramfs: listing {}: {e}", source.display()))
            .map(|e| e.expect("initramfs: a directory entry").path())
            .collect();
        names.sort();
        self.dir(path);
        for p in names {
            let dest = format!("{}/{}", path.trim_end_matches('/'), file_name(&p));
            if p.is_dir() {
                self.tree(&dest, &p);
            } else {
                self.file(&dest, &p);
            }
        }
        self
    }

    /// Adds a dynamically linked program at `path`, without its debug sections (the
    /// guest holds the initramfs in memory), and every shared library `ldd` names for it
    /// at the same path as on the host, the dynamic loader included. `scratch` holds the
    /// stripped copy until the archive is written.
    pub fn program(&mut self, path: &str, source: &Path, scratch: &Path) -> &mut Self {
        let stripped = scratch.join(format!("stripped-{}", file_name(source)));
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(source)
            .status()
            .expect("running strip (binutils, part of the C toolchain cargo links with)");
        assert!(
            status.success(),
            "strip --strip-debug {}: {status}",
            source.display()
        );
        self.file(path, &stripped);
        for lib in shared_libraries(source) {
            let dest = lib.to_string_lossy().into_owned();
            if !self
                .entries
                .iter()
                .any(|(p, _)| *p == dest.trim_matches('/'))
            {
                self.file(&dest, &lib);
            }
        }
        self
    }

    /// Writes the archive to `out`.
    pub fn write(&self, out: &Path) {
        let file = File::create(out)
            .unwrap_or_else(|e| panic!("initramfs: creating {}: {e}", out.display()));
        let mut w = BufWriter::new(file);
        let mut ino = 1u32;
        for (path, entry) in &self.entries {
            ino += 1;
            let res = match entry {
                Entry::Dir => cpio_entry(&mut w, ino, path, 0o040_755, 0, (0, 0), &mut &[][..]),
                Entry::File { source, mode } => {
                    let mut f = File::open(source)
                        .unwrap_or_else(|e| panic!("initramfs: opening {}: {e}", source.display()));
                    let len = f
                        .metadata()
                        .unwrap_or_else(|e| panic!("initramfs: {}: {e}", source.display()))
                        .len();
                    cpio_entry(&mut w, ino, path, 0o100_000 | mode, len, (0, 0), &mut f)
                }
                Entry::Bytes { data, mode } => cpio_entry(
                    &mut w,
                    ino,
                    path,
                    0o100_000 | mode,
                    data.len() as u64,
                    (0, 0),
                    &mut data.as_slice(),
                ),
                Entry::Symlink { target } => cpio_entry(
                    &mut w,
                    ino,
                    path,
                    0o120_777,
                    target.len() as u64,
                    (0, 0),
                    &mut target.as_bytes(),
                ),
                Entry::CharDevice { major, minor } => cpio_entry(
                    &mut w,
                    ino,
                    path,
                    0o020_600,
                    0,
                    (*major, *minor),
                    &mut &[][..],
                ),
            };
            res.unwrap_or_else(|e| panic!("initramfs: writing {path}: {e}"));
        }
        cpio_entry(&mut w, 0, "TRAILER!!!", 0, 0, (0, 0), &mut &[][..])
            .and_then(|()| w.flush())
            .unwrap_or_else(|e| panic!("initramfs: writing {}: {e}", out.display()));
    }
}

/// One newc record: the 110-byte ASCII header, the name, the data, each padded to 4.
fn cpio_entry(
    w: &mut impl Write,
    ino: u32,
    name: &str,
    mode: u32,
    len: u64,
    (rdev_major, rdev_minor): (u32, u32),
    data: &mut impl Read,
) -> std::io::Result<()> {
    let size = u32::try_from(len).map_err(|_| std::io::Error::other("file over 4 GiB"))?;
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // dev major
        0, // dev minor
        rdev_major,
        rdev_minor,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + name.len() + 1)?;
    let copied = std::io::copy(&mut data.take(len), w)?;
    if copied != len {
        return Err(std::io::Error::other(format!(
            "{name}: {copied} of {len} bytes"
        )));
    }
    pad(w, len as usize)
}

fn pad(w: &mut impl Write, written: usize) -> std::io::Result<()> {
    w.write_all(&[0u8; 3][..(4 - written % 4) % 4])
}

/// The shared libraries and the loader `ldd` lists for `program` (none for a static one).
pub fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .expect("running ldd (libc-bin)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// How to start the machine.
pub struct Boot<'a> {
    pub host: &'a Host,
    /// The kernel image (`Host::vmlinuz`).
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// Kernel command line after `console=ttyS0 panic=-1`.
    pub append: &'a str,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Where the console and results files go.
    pub dir: &'a Path,
}

/// A running machine: qemu, killed on drop (so also when a test panics).
pub struct Vm {
    child: Child,
    started: Instant,
    pub console: PathBuf,
    pub results: PathBuf,
    qemu_log: PathBuf,
}

/// What a machine that powered off (or was killed at its deadline) left.
#[derive(Debug)]
pub struct Finished {
    pub console: String,
    /// The guest's second serial port (`/dev/ttyS1`), carriage returns removed.
    pub results: String,
    /// qemu's own stdout and stderr.
    pub qemu_log: String,
    pub wall: Duration,
    pub timed_out: bool,
}

impl Finished {
    /// The last `n` lines of the console.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Vm {
    /// Starts qemu: TCG (software emulation, whatever /dev/kvm says), no disk, no
    /// network device, the console on the first serial port and results on the second.
    pub fn start(b: &Boot) -> Vm {
        let console = b.dir.join("console.log");
        let results = b.dir.join("results.log");
        let qemu_log = b.dir.join("qemu.log");
        let log = File::create(&qemu_log).expect("creating qemu.log");
        let child = Command::new(&b.host.qemu)
            .args(["-accel", "tcg", "-nodefaults", "-display", "none"])
            .args(["-no-reboot", "-monitor", "none"])
            .args(["-m", &b.memory_mib.to_string(), "-smp", &b.cpus.to_string()])
            .arg("-kernel")
            .arg(b.kernel)
            .arg("-initrd")
            .arg(b.initramfs)
            .args(["-append", &format!("console=ttyS0 panic=-1 {}", b.append)])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", results.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("qemu.log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", b.host.qemu.display()));
        Vm {
            child,
            started: Instant::now(),
            console,
            results,
            qemu_log,
        }
    }

    /// Waits until the guest powers off, or kills it at `deadline` (from the start).
    pub fn wait(mut self, deadline: Duration) -> Finished {
        let mut timed_out = false;
        loop {
            match self.child.try_wait().expect("waiting for qemu") {
                Some(_) => break,
                None if self.started.elapsed() > deadline => {
                    timed_out = true;
                    self.kill();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let read = |p: &Path| {
            String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).replace('\r', "")
        };
        Finished {
            console: read(&self.console),
            results: read(&self.results),
            qemu_log: read(&self.qemu_log),
            wall: self.started.elapsed(),
            timed_out,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
