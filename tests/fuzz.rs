//! Fuzzing on stable Rust, in `make test`: each target takes its seeds from
//! `fuzz/corpus/<target>/`, mutates them (bit flips, byte and chunk edits, splices,
//! tokens that break parsers: huge numbers, quotes, brackets, NULs) for a fixed number
//! of iterations with a fixed seed, and feeds each input to the code under test. Any
//! panic fails the test and saves the input to `target/fuzz-crashes/<target>-<hash>`,
//! the reproducer. `FUZZ_ITERATIONS=N` runs longer, `FUZZ_SEED=N` elsewhere.
//!
//! Targets: the job spec parser (TOML) and JSON job bodies through validation, the
//! server's API request bodies through its real router and store, the exec frame
//! decoders, and the container image tarball reader.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens that tend to reach the corners of parsers and validators.
const TOKENS: &[&str] = &[
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "-1",
    "0",
    "1e309",
    "NaN",
    "200000000000000d",
    "99999999999999999999h",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    "\n",
    "\0",
    "\\u0000",
    "[[",
    "]]",
    "null",
    "true",
    "\"\"",
    "🦀",
    "count",
    "memory",
    "group",
    "task",
    "driver",
    "resources",
    "lost_after",
    "interval",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                out.drain(start..end);
            }
            3 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = out[start..end].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, chunk);
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                // A number somewhere, made huge.
                let at = rng.below(len);
                if out[at].is_ascii_digit() {
                    out.splice(at..at, b"99999999999".iter().copied());
                }
            }
            _ => {
                let at = rng.below(len + 1);
                out.insert(at, rng.next() as u8);
            }
        }
    }
    out
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.into_iter().map(|(_, b)| b).collect()
}

fn iterations(default: usize) -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `target` on the seeds and `iterations` mutants of them; a panic is a failure
/// with the input saved.
fn fuzz(name: &str, default_iterations: usize, mut target: impl FnMut(&[u8])) {
    let seeds = corpus(name);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0f0c_4a11_u64);
    let mut rng = Rng(seed | 1);
    let mut queue = seeds.clone();
    let n = iterations(default_iterations);
    // Panics are the findings: keep their default messages off the output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut crash = None;
    for i in 0..seeds.len() + n {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let base = &queue[rng.below(queue.len())];
            mutate(&mut rng, &seeds, base)
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            crash = Some(input);
            break;
        }
        // Keep some mutants as bases: deeper mutations without a coverage map.
        if i >= seeds.len() && rng.below(16) == 0 && queue.len() < 512 {
            queue.push(input);
        }
    }
    std::panic::set_hook(hook);
    if let Some(input) = crash {
        let dir = repo().join("target/fuzz-crashes");
        std::fs::create_dir_all(&dir).unwrap();
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let path = dir.join(format!("{name}-{hash:016x}"));
        std::fs::write(&path, &input).unwrap();
        // Run it again with the default hook, to show where it panics.
        target(&input);
        panic!("{name}: a panic on the input saved in {}", path.display());
    }
}

#[test]
fn fuzz_jobspec_toml() {
    fuzz("jobspec_toml", 20_000, |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Ok(mut job) = orch_common::jobspec::parse(text) {
                let _ = orch_common::jobspec::validate(&job);
                orch_common::jobspec::canonicalize(&mut job);
            }
        }
    });
}

#[test]
fn fuzz_job_json() {
    fuzz("job_json", 20_000, |bytes| {
        if let Ok(req) = serde_json::from_slice::<orch_common::api::JobRegisterRequest>(bytes) {
            let mut job = req.job;
            if orch_common::jobspec::validate(&job).is_ok() {
                orch_common::jobspec::canonicalize(&mut job);
                let _ = serde_json::to_vec(&job);
            }
        }
    });
}

#[test]
fn fuzz_exec_frames() {
    use orch_common::exec_frames as frames;
    fuzz("exec_frames", 50_000, |bytes| {
        if let Some((kind, payload)) = bytes.split_first() {
            match *kind {
                frames::RESIZE => {
                    let _ = frames::parse_resize(payload);
                }
                frames::EXIT => {
                    let _ = frames::parse_exit(payload);
                }
                _ => {
                    let _ = frames::frame(*kind, payload);
                }
            }
        }
    });
}

#[test]
fn fuzz_image_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.tar");
    fuzz("image_tar", 300, |bytes| {
        let cache = tempfile::tempdir_in(dir.path()).unwrap();
        std::fs::write(&image, bytes).unwrap();
        if let Ok(unpacked) =
            orch_client::driver::container::image::unpack_cached(cache.path(), &image)
        {
            // Whatever it unpacked stays inside the cache.
            assert!(unpacked.rootfs.starts_with(cache.path()));
            assert_nothing_outside(dir.path(), &image);
        }
    });
}

/// The tarball reader wrote nothing beside the image and the caches.
fn assert_nothing_outside(dir: &Path, image: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        assert!(
            p == image || p.is_dir(),
            "the image reader wrote {} outside its cache",
            p.display()
        );
    }
}

#[test]
fn fuzz_api_bodies() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let router = runtime.block_on(async {
        let store =
            orch_server::state::StateStore::open(dir.path().join("state.db")).expect("store");
        let log = orch_server::state::CommandLog::start(store.clone(), vec![]).expect("log");
        let heartbeats = orch_server::heartbeat::Heartbeats::new(
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        let agent = orch_server::http::AgentInfo {
            name: "fuzz".into(),
            datacenter: "dc1".into(),
            http_addr: "127.0.0.1:4747".into(),
            data_dir: dir.path().display().to_string(),
            version: "0".into(),
        };
        let state = Arc::new(orch_server::http::HttpState::new(
            store,
            log,
            heartbeats,
            agent,
            1 << 20,
        ));
        orch_server::http::router(state)
    });
    // Each input: a route (its first byte picks one) and a body (the rest).
    const ROUTES: &[(&str, &str, &str)] = &[
        ("POST", "/v1/jobs", "application/json"),
        ("POST", "/v1/jobs", "application/toml"),
        ("POST", "/v1/job/web/plan", "application/json"),
        ("POST", "/v1/job/web/scale", "application/json"),
        (
            "PUT",
            "/v1/operator/scheduler/configuration",
            "application/json",
        ),
        ("POST", "/v1/node/register", "application/json"),
        ("POST", "/v1/acl/token", "application/json"),
        ("PUT", "/v1/acl/policy/p", "application/toml"),
        ("POST", "/v1/node/n1/eligibility", "application/json"),
        ("POST", "/v1/node/n1/drain", "application/json"),
    ];
    fuzz("api_bodies", 3_000, |bytes| {
        let Some((pick, body)) = bytes.split_first() else {
            return;
        };
        let (method, path, content_type) = ROUTES[usize::from(*pick) % ROUTES.len()];
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("x-orch-node-secret", "f".repeat(64))
            .body(Body::from(body.to_vec()))
            .unwrap();
        let answer = runtime
            .block_on(router.clone().oneshot(req))
            .expect("infallible");
        // Bad input is a 4xx, never a server fault.
        assert!(
            answer.status().as_u16() < 500,
            "{method} {path}: {}",
            answer.status()
        );
    });
}
