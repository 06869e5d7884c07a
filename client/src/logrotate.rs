//! Task output with rotation. A task writes its stdout and stderr into pipes; a task on
//! the client's runtime copies each pipe into `<task>.<stream>.<n>`, starting file
//! `n + 1` once file `n` holds `max_file_size` MiB and deleting the oldest files beyond
//! `max_files`. (A process keeps writing to the file it opened whatever the file is
//! renamed to, so rotating files a task writes directly would lose or misplace output.)
//!
//! The copy ends when every process holding the pipe's write end has exited. Tasks
//! that must outlive the client (`raw_exec`, `container`) write into a FIFO in their
//! task dir instead (`capture_fifo`), which a restarted client opens again
//! (`reattach_fifo`).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use orch_common::model::LogConfig;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

const MIB: u64 = 1024 * 1024;
/// Bytes read from the pipe at once.
const READ_SIZE: usize = 64 * 1024;

/// The rotated files of one stream: `<dir>/<prefix>.<n>`, oldest first.
pub fn rotated_files(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let index = name
                .to_str()?
                .strip_prefix(prefix)?
                .strip_prefix('.')?
                .parse::<u32>()
                .ok()?;
            Some((index, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// Splits `<dir>/<prefix>.0` (the first file of a stream) into the directory and prefix.
pub(crate) fn split_first_file(first: &Path) -> std::io::Result<(PathBuf, String)> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("log file {} does not end in \".0\"", first.display()),
        )
    };
    let dir = first.parent().ok_or_else(bad)?.to_path_buf();
    let name = first.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let prefix = name.strip_suffix(".0").ok_or_else(bad)?;
    Ok((dir, prefix.to_string()))
}

/// Writes one stream into its rotated files.
#[derive(Debug)]
pub struct RotatingWriter {
    dir: PathBuf,
    prefix: String,
    max_files: u32,
    max_bytes: u64,
    index: u32,
    file: std::fs::File,
    written: u64,
}

impl RotatingWriter {
    /// Opens the stream whose first file is `first` (`<dir>/<task>.<stream>.0`). A task
    /// that starts again appends to its newest file.
    pub fn open(first: &Path, cfg: LogConfig) -> std::io::Result<RotatingWriter> {
        let (dir, prefix) = split_first_file(first)?;
        let index = rotated_files(&dir, &prefix)
            .last()
            .map(|(i, _)| *i)
            .unwrap_or(0);
        // The logs dir is made with the alloc dir; made here only when it is missing.
        let (file, written) = match Self::open_file(&dir, &prefix, index) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                Self::open_file(&dir, &prefix, index)?
            }
            opened => opened?,
        };
        Ok(RotatingWriter {
            dir,
            prefix,
            max_files: cfg.max_files.max(1),
            // Saturating: the size is a user's number of MiB.
            max_bytes: cfg.max_file_size.max(1).saturating_mul(MIB),
            index,
            file,
            written,
        })
    }

    /// 0640 whatever the umask: a task's output may hold what its environment held.
    fn open_file(dir: &Path, prefix: &str, index: u32) -> std::io::Result<(std::fs::File, u64)> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(dir.join(format!("{prefix}.{index}")))?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }

    /// Appends `data`, moving to the next file whenever the current one is full.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.written >= self.max_bytes {
                self.rotate()?;
            }
            let room = (self.max_bytes - self.written) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.file.write_all(now)?;
            self.written += now.len() as u64;
            data = rest;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.index += 1;
        let (file, written) = Self::open_file(&self.dir, &self.prefix, self.index)?;
        self.file = file;
        self.written = written;
        let keep_from = (self.index + 1).saturating_sub(self.max_files);
        for (index, path) in rotated_files(&self.dir, &self.prefix) {
            if index < keep_from {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// A pipe for one output stream of a task: give `child_end` to the process (its
/// stdout or stderr); the copy into the rotated files runs until the pipe closes.
pub struct Capture {
    pub child_end: OwnedFd,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts copying a new pipe into the rotated files of `first`. Must be called on the
/// tokio runtime.
pub fn capture(first: &Path, cfg: LogConfig) -> std::io::Result<Capture> {
    let writer = RotatingWriter::open(first, cfg)?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let reader = pipe::Receiver::from_owned_fd(read_end)?;
    Ok(Capture {
        child_end: write_end,
        done: spawn_copy(reader, writer),
    })
}

/// Like `capture`, through a FIFO at `fifo` (replacing whatever is there) that
/// outlives the client: `child_end` is opened read-write, so the task itself always
/// holds a reader and never gets SIGPIPE while no client copies; a later client
/// continues with `reattach_fifo`. While nobody copies, a writer blocks once the pipe
/// buffer (64 KiB) is full, and the next reader drains it: nothing is lost.
pub fn capture_fifo(fifo: &Path, first: &Path, cfg: LogConfig) -> std::io::Result<Capture> {
    let writer = RotatingWriter::open(first, cfg)?;
    match std::fs::remove_file(fifo) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    // The task's end first, so the reader below never sees a FIFO without writers.
    let child_end: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)?
        .into();
    let reader = pipe::OpenOptions::new().open_receiver(fifo)?;
    Ok(Capture {
        child_end,
        done: spawn_copy(reader, writer),
    })
}

/// Copies a FIFO made by `capture_fifo` for a task of an earlier client run into the
/// rotated files of `first` until its last writer is gone. Must be called on the tokio
/// runtime.
pub fn reattach_fifo(
    fifo: &Path,
    first: &Path,
    cfg: LogConfig,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let writer = RotatingWriter::open(first, cfg)?;
    let reader = pipe::OpenOptions::new().open_receiver(fifo)?;
    Ok(spawn_copy(reader, writer))
}

fn spawn_copy(
    mut reader: pipe::Receiver,
    mut writer: RotatingWriter,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    if let Err(e) = writer.write(&buf[..n]) {
                        tracing::warn!(dir = %writer.dir.display(), file = %writer.prefix, error = %e, "writing task output failed; output dropped");
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %writer.dir.display(), file = %writer.prefix, error = %e, "reading task output failed");
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_files: u32, max_file_size: u64) -> LogConfig {
        LogConfig {
            max_files,
            max_file_size,
        }
    }

    fn indices(dir: &Path, prefix: &str) -> Vec<u32> {
        rotated_files(dir, prefix)
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn files_rotate_at_the_size_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("web.stdout.0");
        let mut w = RotatingWriter::open(&first, cfg(3, 1)).unwrap();
        let mib = vec![b'x'; MIB as usize];
        for _ in 0..5 {
            w.write(&mib).unwrap();
        }
        w.write(b"tail").unwrap();
        assert_eq!(indices(dir.path(), "web.stdout"), vec![3, 4, 5]);
        let len = |i: u32| {
            std::fs::metadata(dir.path().join(format!("web.stdout.{i}")))
                .unwrap()
                .len()
        };
        assert_eq!((len(3), len(4), len(5)), (MIB, MIB, 4));
        // Another stream of the same task is left alone.
        assert!(indices(dir.path(), "web.stderr").is_empty());
    }

    #[test]
    fn a_write_larger_than_a_file_is_split_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(&dir.path().join("t.stderr.0"), cfg(10, 1)).unwrap();
        w.write(&vec![b'y'; (MIB * 2 + 10) as usize]).unwrap();
        assert_eq!(indices(dir.path(), "t.stderr"), vec![0, 1, 2]);
    }

    #[test]
    fn a_restarted_task_appends_to_its_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("t.stdout.0");
        std::fs::write(&first, "a").unwrap();
        std::fs::write(dir.path().join("t.stdout.1"), "b").unwrap();
        let mut w = RotatingWriter::open(&first, cfg(10, 1)).unwrap();
        w.write(b"c").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.stdout.1")).unwrap(),
            "bc"
        );
        assert!(RotatingWriter::open(&dir.path().join("t.stdout"), cfg(1, 1)).is_err());
    }

    #[tokio::test]
    async fn a_captured_pipe_lands_in_the_files_until_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("t.stdout.0");
        let cap = capture(&first, cfg(2, 1)).unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("echo one; echo two")
            .stdout(std::process::Stdio::from(cap.child_end))
            .spawn()
            .unwrap();
        child.wait().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), cap.done)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "one\ntwo\n");
    }
}
