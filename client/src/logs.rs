//! Reading task logs: `<alloc_dir>/alloc/logs/<task>.<stdout|stderr>.0`, from a position
//! counted from the start or the end, once or following new output until the task is
//! dead and the file fully read.

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

fn file_len(path: &Path) -> Result<u64, LogsError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(LogsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads up to `max` bytes from `pos`. A file that shrank (truncated) is read from the
/// start again; a file not there yet reads as empty.
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

/// Everything from the requested position to the current end.
pub fn read_once(path: &Path, origin: Origin, offset: u64) -> Result<Vec<u8>, LogsError> {
    let start = start_position(file_len(path)?, origin, offset);
    let mut out = Vec::new();
    let mut pos = start;
    loop {
        let (chunk, next) = read_chunk(path, pos, CHUNK)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        pos = next;
    }
}

/// A stream of the file's bytes from the requested position, following new output
/// until `dead()` says the task will write no more and the file is fully read. Dropping
/// the stream (client gone) stops it.
pub fn follow(
    path: PathBuf,
    origin: Origin,
    offset: u64,
    dead: impl Fn() -> bool + Send + 'static,
) -> Result<impl Stream<Item = Result<Vec<u8>, LogsError>> + Send, LogsError> {
    let start = start_position(file_len(&path)?, origin, offset);
    struct St<F> {
        path: PathBuf,
        pos: u64,
        dead: F,
        done: bool,
    }
    let st = St {
        path,
        pos: start,
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
            match read_chunk(&st.path, st.pos, CHUNK) {
                Ok((chunk, next)) if !chunk.is_empty() => {
                    st.pos = next;
                    return Some((Ok(chunk), st));
                }
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
        assert!(read_once(&dir.path().join("none"), Origin::Start, 0)
            .unwrap()
            .is_empty());
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
