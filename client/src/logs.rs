//! Reading task logs: `<alloc_dir>/alloc/logs/<task>.<stdout|stderr>.<n>` (rotated by
//! `logrotate`), read as one stream over the files that are there, from a position
//! counted from its start or its end, once or following new output (into newer files as
//! they appear) until the task is dead and the newest file fully read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::Stream;

/// How often a followed file is checked for new bytes.
const POLL: Duration = Duration::from_millis(200);
/// Largest chunk sent at once.
const CHUNK: usize = 64 * 1024;

/// Why logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("type must be \"stdout\" or \"stderr\", not {0:?}")]
    BadType(String),
    #[error("origin must be \"start\" or \"end\", not {0:?}")]
    BadOrigin(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which end `offset` counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Start,
    End,
}

impl Origin {
    pub fn parse(s: Option<&str>) -> Result<Origin, LogsError> {
        match s.unwrap_or("start") {
            "start" => Ok(Origin::Start),
            "end" => Ok(Origin::End),
            other => Err(LogsError::BadOrigin(other.to_string())),
        }
    }
}

/// `stdout` (default) or `stderr`.
pub fn parse_stream(s: Option<&str>) -> Result<&'static str, LogsError> {
    match s.unwrap_or("stdout") {
        "stdout" => Ok("stdout"),
        "stderr" => Ok("stderr"),
        other => Err(LogsError::BadType(other.to_string())),
    }
}

/// The byte position to start at in a file of `len` bytes.
pub fn start_position(len: u64, origin: Origin, offset: u64) -> u64 {
    match origin {
        Origin::Start => offset.min(len),
        Origin::End => len.saturating_sub(offset),
    }
}

/// The rotated files `<dir>/<prefix>.<n>` with their lengths, oldest first.
fn files_of(dir: &Path, prefix: &str) -> Result<Vec<(u32, PathBuf, u64)>, LogsError> {
    let mut out = Vec::new();
    for (index, path) in crate::logrotate::rotated_files(dir, prefix) {
        match std::fs::metadata(&path) {
            Ok(m) => out.push((index, path, m.len())),
            // Rotated away since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogsError::Read { path, source }),
        }
    }
    Ok(out)
}

/// Where a read starts: `offset` bytes from the start or the end of the files taken as
/// one stream, as (file index, byte position in it).
fn locate(files: &[(u32, PathBuf, u64)], origin: Origin, offset: u64) -> (u32, u64) {
    let total: u64 = files.iter().map(|(_, _, len)| len).sum();
    let mut skip = start_position(total, origin, offset);
    for (index, _, len) in files {
        if skip < *len {
            return (*index, skip);
        }
        skip -= len;
    }
    match files.last() {
        Some((last, _, len)) => (*last, *len),
        None => (0, 0),
    }
}

/// Reads up to `max` bytes from `pos`. A file that shrank (truncated) is read from the
/// start again; a file not there (yet, or any more) reads as empty.
pub fn read_chunk(path: &Path, pos: u64, max: usize) -> Result<(Vec<u8>, u64), LogsError> {
    let err = |source| LogsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), pos)),
        Err(e) => return Err(err(e)),
    };
    let len = f.metadata().map_err(err)?.len();
    let pos = if len < pos { 0 } else { pos };
    f.seek(SeekFrom::Start(pos)).map_err(err)?;
    let want = (len - pos).min(max as u64) as usize;
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf).map_err(err)?;
    Ok((buf, pos + want as u64))
}

/// A position in the stream of rotated files `<dir>/<prefix>.<n>`.
struct Cursor {
    dir: PathBuf,
    prefix: String,
    index: u32,
    pos: u64,
}

impl Cursor {
    /// `first` is the stream's first file, `<dir>/<prefix>.0`.
    fn start(first: PathBuf, origin: Origin, offset: u64) -> Result<Cursor, LogsError> {
        let (dir, prefix) =
            crate::logrotate::split_first_file(&first).map_err(|source| LogsError::Read {
                path: first.clone(),
                source,
            })?;
        let (index, pos) = locate(&files_of(&dir, &prefix)?, origin, offset);
        Ok(Cursor {
            dir,
            prefix,
            index,
            pos,
        })
    }

    /// The next bytes: from the current file, else from the next newer file there is.
    /// Empty when the newest file is read to its end.
    fn next_chunk(&mut self) -> Result<Vec<u8>, LogsError> {
        loop {
            let file = self.dir.join(format!("{}.{}", self.prefix, self.index));
            let (chunk, next) = read_chunk(&file, self.pos, CHUNK)?;
            if !chunk.is_empty() {
                self.pos = next;
                return Ok(chunk);
            }
            // Only the names are needed here (this runs on every poll of a follow).
            let newer = crate::logrotate::rotated_files(&self.dir, &self.prefix)
                .into_iter()
                .map(|(i, _)| i)
                .find(|i| *i > self.index);
            match newer {
                Some(i) => {
                    self.index = i;
                    self.pos = 0;
                }
                None => return Ok(Vec::new()),
            }
        }
    }
}

/// Everything from the requested position to the current end (the HTTP route streams
/// the same with `follow` and a `dead` that is always true).
#[cfg(test)]
pub fn read_once(first: &Path, origin: Origin, offset: u64) -> Result<Vec<u8>, LogsError> {
    let mut cursor = Cursor::start(first.to_path_buf(), origin, offset)?;
    let mut out = Vec::new();
    loop {
        let chunk = cursor.next_chunk()?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
    }
}

/// A stream of the log's bytes from the requested position, following new output
/// until `dead()` says the task will write no more and the newest file is fully read.
/// Dropping the stream (client gone) stops it.
pub fn follow(
    first: PathBuf,
    origin: Origin,
    offset: u64,
    dead: impl Fn() -> bool + Send + 'static,
) -> Result<impl Stream<Item = Result<Vec<u8>, LogsError>> + Send, LogsError> {
    struct St<F> {
        cursor: Cursor,
        dead: F,
        done: bool,
    }
    let st = St {
        cursor: Cursor::start(first, origin, offset)?,
        dead,
        done: false,
    };
    Ok(futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            // Read "dead" before reading the file, so bytes written just before the
            // task died are still sent.
            let dead = (st.dead)();
            match st.cursor.next_chunk() {
                Ok(chunk) if !chunk.is_empty() => return Some((Ok(chunk), st)),
                Ok(_) if dead => return None,
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn positions_count_from_either_end() {
        assert_eq!(start_position(100, Origin::Start, 10), 10);
        assert_eq!(start_position(100, Origin::Start, 500), 100);
        assert_eq!(start_position(100, Origin::End, 10), 90);
        assert_eq!(start_position(100, Origin::End, 500), 0);
    }

    #[test]
    fn read_once_honours_origin_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.stdout.0");
        std::fs::write(&p, "hello world\n").unwrap();
        assert_eq!(read_once(&p, Origin::Start, 0).unwrap(), b"hello world\n");
        assert_eq!(read_once(&p, Origin::Start, 6).unwrap(), b"world\n");
        assert_eq!(read_once(&p, Origin::End, 6).unwrap(), b"world\n");
        assert!(
            read_once(&dir.path().join("none.stdout.0"), Origin::Start, 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_rotated_files_read_as_one_stream_from_either_end() {
        let dir = tempfile::tempdir().unwrap();
        // .0 was rotated away; .1 .. .3 are left.
        for (i, text) in [(1, "one\n"), (2, "two\n"), (3, "three\n")] {
            std::fs::write(dir.path().join(format!("t.stdout.{i}")), text).unwrap();
        }
        let first = dir.path().join("t.stdout.0");
        assert_eq!(
            read_once(&first, Origin::Start, 0).unwrap(),
            b"one\ntwo\nthree\n"
        );
        assert_eq!(read_once(&first, Origin::Start, 5).unwrap(), b"wo\nthree\n");
        assert_eq!(read_once(&first, Origin::End, 8).unwrap(), b"o\nthree\n");
        assert_eq!(read_once(&first, Origin::End, 0).unwrap(), b"");
        assert!(read_once(&dir.path().join("t.stderr.0"), Origin::Start, 0)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn follow_moves_on_to_newer_files_as_the_writer_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("t.stdout.0");
        let mut w = crate::logrotate::RotatingWriter::open(
            &first,
            orch_common::model::LogConfig {
                max_files: 2,
                max_file_size: 1,
            },
        )
        .unwrap();
        w.write(b"start\n").unwrap();
        let dead = Arc::new(AtomicBool::new(false));
        let d2 = dead.clone();
        let s = follow(first.clone(), Origin::Start, 0, move || {
            d2.load(Ordering::SeqCst)
        })
        .unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // 1 MiB files: this fills .0, then .1 ... the reader must keep up across them.
            let line = vec![b'x'; 1023];
            for _ in 0..1500 {
                w.write(&line).unwrap();
                w.write(b"\n").unwrap();
            }
            w.write(b"end\n").unwrap();
            dead.store(true, Ordering::SeqCst);
        });
        let out: Vec<u8> = tokio::time::timeout(
            Duration::from_secs(20),
            s.map(|c| c.unwrap()).collect::<Vec<_>>(),
        )
        .await
        .unwrap()
        .concat();
        writer.await.unwrap();
        assert!(out.starts_with(b"start\n"));
        assert!(out.ends_with(b"end\n"));
        assert_eq!(out.len(), 6 + 1500 * 1024 + 4, "nothing lost or repeated");
    }

    #[test]
    fn bad_type_and_origin_are_errors() {
        assert!(parse_stream(Some("stdin")).is_err());
        assert_eq!(parse_stream(None).unwrap(), "stdout");
        assert!(Origin::parse(Some("middle")).is_err());
    }

    #[tokio::test]
    async fn follow_streams_new_bytes_until_the_task_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.stdout.0");
        std::fs::write(&p, "one\n").unwrap();
        let dead = Arc::new(AtomicBool::new(false));
        let d2 = dead.clone();
        let s = follow(p.clone(), Origin::Start, 0, move || {
            d2.load(Ordering::SeqCst)
        })
        .unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(b"two\n").unwrap();
            // The last line lands right before the task dies.
            f.write_all(b"three\n").unwrap();
            dead.store(true, Ordering::SeqCst);
        });
        let chunks: Vec<Vec<u8>> =
            tokio::time::timeout(Duration::from_secs(10), s.map(|c| c.unwrap()).collect())
                .await
                .unwrap();
        writer.await.unwrap();
        assert_eq!(chunks.concat(), b"one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn follow_of_a_file_that_appears_later_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("late.stdout.0");
        let dead = Arc::new(AtomicBool::new(false));
        let d2 = dead.clone();
        let mut s = Box::pin(
            follow(p.clone(), Origin::Start, 0, move || {
                d2.load(Ordering::SeqCst)
            })
            .unwrap(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::fs::write(&p, "late\n").unwrap();
        });
        let first = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap();
        assert_eq!(first.unwrap().unwrap(), b"late\n");
        dead.store(true, Ordering::SeqCst);
        assert!(tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap()
            .is_none());
    }
}
