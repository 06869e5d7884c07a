//! Container driver tests. They need root (namespaces, mounts): without it each one
//! prints why it is skipped and passes. The driver's helper is this test binary
//! itself, entered through `container_init_entry`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::image::tests::{gzip, oci_image, oci_image_with, TarBuilder};
use super::*;
use crate::driver::suite::{self, Harness, TaskDirs};

/// Set in the helper's environment when this test binary is the container helper.
const HELPER_ENV: &str = "ORCH_TEST_CONTAINER_INIT";

/// Not a test: the `container-init` helper when the driver under test runs this
/// binary as its helper (a libtest binary has no other entry point).
#[test]
fn container_init_entry() {
    if std::env::var_os(HELPER_ENV).is_some() {
        std::process::exit(init::main());
    }
}

const APPLETS: &[&str] = &[
    "sh", "ps", "hostname", "id", "cat", "ls", "echo", "sleep", "test", "touch", "true", "grep",
    "mkdir", "dd", "unshare",
];

/// A busybox root filesystem in a temp dir (removed on drop), and a driver whose
/// helper is this test binary.
pub(crate) struct ContainerHarness {
    pub rootfs: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

impl ContainerHarness {
    pub fn new() -> Self {
        let rootfs = world_readable_tempdir();
        let bin = rootfs.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
        std::fs::copy(busybox(), bin.join("busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        std::fs::write(rootfs.path().join("etc/motd"), "source\n").unwrap();
        ContainerHarness {
            rootfs,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn options(&self) -> ContainerOptions {
        ContainerOptions {
            image_cache: self.cache.path().join("images"),
            allowed_volumes: Vec::new(),
            helper: HelperCommand {
                program: std::env::current_exe().unwrap(),
                args: [
                    "--exact",
                    "driver::container::tests::container_init_entry",
                    "--nocapture",
                    "--test-threads=1",
                    "--quiet",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                env: vec![(HELPER_ENV.to_string(), "1".to_string())],
            },
            layer: LayerMode::Auto,
            // Temp dirs anywhere (not host system directories); otherwise the defaults.
            policy: ContainerPolicy {
                rootfs_roots: vec![PathBuf::from("/")],
                ..ContainerPolicy::default()
            },
        }
    }

    fn container(&self, opts: ContainerOptions) -> ContainerDriver {
        ContainerDriver::new(None, opts)
    }

    fn sh(&self, script: &str) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("rootfs".to_string(), json!(self.rootfs.path())),
            ("command".to_string(), json!("/bin/sh")),
            ("args".to_string(), json!(["-c", script])),
        ])
    }
}

fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox-static is installed")
}

fn world_readable_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}

fn not_supported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("containers need root".to_string());
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        return Some("busybox is not installed".to_string());
    }
    None
}

impl Harness for ContainerHarness {
    fn driver(&self) -> Arc<dyn Driver> {
        Arc::new(self.container(self.options()))
    }
    fn exits_with(&self, code: i32) -> BTreeMap<String, serde_json::Value> {
        self.sh(&format!("exit {code}"))
    }
    fn runs_until_stopped(&self) -> BTreeMap<String, serde_json::Value> {
        self.sh("exec sleep 300")
    }
    fn ignores_stop_signal(&self) -> BTreeMap<String, serde_json::Value> {
        self.sh("trap '' TERM; while true; do sleep 0.1; done")
    }
    fn skip(&self) -> Option<String> {
        not_supported()
    }
}

suite::driver_suite!(ContainerHarness::new());

macro_rules! need_root {
    () => {
        if let Some(why) = not_supported() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Runs one task to its end; its exit and stdout (stderr on failure, for the message).
async fn run(d: &ContainerDriver, t: &TaskDirs, req: StartRequest) -> (ExitResult, String) {
    let h = d.start(req).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), d.wait(&h))
        .await
        .expect("the container ends")
        .unwrap();
    d.destroy(&h).await.unwrap();
    let out = std::fs::read_to_string(&t.stdout).unwrap_or_default();
    if !r.successful() {
        let err = std::fs::read_to_string(&t.stderr).unwrap_or_default();
        eprintln!("stdout: {out}\nstderr: {err}");
    }
    (r, out)
}

#[tokio::test]
async fn ps_shows_only_the_tasks_tree_with_the_init_as_pid_1() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let (r, out) = run(&d, &t, t.request("ps", c.sh("ps -o pid,comm"))).await;
    assert!(r.successful(), "{r:?}");
    let pids: Vec<(u32, String)> = out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (pid, comm) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, comm.trim().to_string()))
        })
        .collect();
    // The init (this binary), the shell and ps: nothing of the host.
    assert!(pids.len() <= 3, "{out}");
    assert!(pids.iter().any(|(p, _)| *p == 1), "{out}");
    assert!(pids.iter().any(|(_, c)| c == "ps"), "{out}");
}

#[tokio::test]
async fn the_init_reaps_orphans() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    // The subshell exits at once: its `sleep` is orphaned to PID 1, which must reap it
    // when it ends, or `ps` would show a zombie.
    let script = "(sleep 0.1 &); sleep 0.5; ps -o stat,comm | grep -c '^Z' || true";
    let (r, out) = run(&d, &t, t.request("orphans", c.sh(script))).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "0\n");
}

#[tokio::test]
async fn the_hostname_is_the_allocs_and_the_user_is_not_root() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let req = t.request("host", c.sh("hostname; id -u; id -g"));
    let alloc8: String = req.alloc_id.chars().take(8).collect();
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, format!("{alloc8}\n65534\n65534\n"));
}

#[tokio::test]
async fn host_files_outside_the_rootfs_are_not_visible() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let secret = world_readable_tempdir();
    let marker = secret.path().join("host-only");
    std::fs::write(&marker, "x").unwrap();
    let script = format!(
        "test -e {} && echo visible || echo hidden; cat /etc/motd",
        marker.display()
    );
    let (r, out) = run(&d, &t, t.request("hidden", c.sh(&script))).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "hidden\nsource\n");
}

async fn writes_stay_in_the_task_layer(layer: LayerMode) {
    let c = ContainerHarness::new();
    let mut opts = c.options();
    opts.layer = layer;
    let d = c.container(opts);
    let t = TaskDirs::new();
    let mut req = t.request(
        "writer",
        c.sh("echo changed > /etc/motd && touch /bin/new && mkdir /made && cat /etc/motd"),
    );
    req.user = Some("root".to_string());
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "changed\n");
    let src = c.rootfs.path();
    assert_eq!(
        std::fs::read_to_string(src.join("etc/motd")).unwrap(),
        "source\n"
    );
    assert!(!src.join("bin/new").exists() && !src.join("made").exists());
}

#[tokio::test]
async fn writes_do_not_change_the_source_rootfs_with_overlayfs() {
    need_root!();
    writes_stay_in_the_task_layer(LayerMode::Auto).await;
}

#[tokio::test]
async fn writes_do_not_change_the_source_rootfs_with_a_copy() {
    need_root!();
    writes_stay_in_the_task_layer(LayerMode::Copy).await;
}

#[tokio::test]
async fn a_readonly_rootfs_still_has_a_writable_task_dir_and_tmp() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let script = format!(
        "touch /etc/x 2>/dev/null || echo ro; touch /tmp/y {}/z && echo rw",
        t.task_dir.display()
    );
    let mut cfg = c.sh(&script);
    cfg.insert("readonly_rootfs".into(), json!(true));
    let mut req = t.request("ro", cfg);
    req.user = Some("root".into());
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "ro\nrw\n");
}

#[tokio::test]
async fn the_alloc_and_task_dirs_are_where_the_env_says() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let shared = t.task_dir.parent().unwrap().join("alloc");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(t.task_dir.join("local")).unwrap();
    let mut req = t.request(
        "dirs",
        c.sh("test -d $ORCH_ALLOC_DIR && touch $ORCH_TASK_DIR/out && echo ok"),
    );
    req.env
        .insert("ORCH_ALLOC_DIR".into(), shared.display().to_string());
    req.env.insert(
        "ORCH_TASK_DIR".into(),
        t.task_dir.join("local").display().to_string(),
    );
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "ok\n");
    assert!(t.task_dir.join("local/out").exists());
}

#[tokio::test]
async fn capabilities_default_to_dockers_set_for_root() {
    need_root!();
    let c = ContainerHarness::new();
    let mut opts = c.options();
    opts.policy
        .allow_caps
        .insert(caps::number("SYS_PTRACE").unwrap());
    let d = c.container(opts);
    let t = TaskDirs::new();
    let mut cfg = c.sh("grep -E '^Cap(Bnd|Eff)' /proc/self/status");
    cfg.insert("cap_drop".into(), json!(["NET_RAW"]));
    cfg.insert("cap_add".into(), json!(["sys_ptrace"]));
    let mut req = t.request("caps", cfg);
    req.user = Some("root".into());
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    let want = 0xa80425fbu64 & !(1 << 13) | (1 << 19);
    assert_eq!(out, format!("CapEff:\t{want:016x}\nCapBnd:\t{want:016x}\n"));
}

#[tokio::test]
async fn cap_add_beyond_the_clients_allow_caps_is_refused() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let mut cfg = c.sh("true");
    cfg.insert("cap_add".into(), json!(["SYS_ADMIN"]));
    let mut req = t.request("admin", cfg);
    req.user = Some("root".into());
    let err = d.start(req).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cap_add SYS_ADMIN is not allowed on this client"),
        "{err}"
    );
    assert!(!err.is_recoverable());
}

#[tokio::test]
async fn the_seccomp_profile_refuses_new_user_namespaces_unless_unconfined_is_allowed() {
    need_root!();
    let c = ContainerHarness::new();
    let script = "grep '^Seccomp:' /proc/self/status; \
                  unshare -U true 2>/dev/null && echo unshared || echo refused";
    let t = TaskDirs::new();
    let mut req = t.request("filtered", c.sh(script));
    req.user = Some("root".into());
    let (r, out) = run(&c.container(c.options()), &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "Seccomp:\t2\nrefused\n");

    let mut cfg = c.sh(script);
    cfg.insert("seccomp".into(), json!("unconfined"));
    let err = c
        .container(c.options())
        .start(t.request("unconfined", cfg.clone()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("seccomp \"unconfined\" is not allowed")
            && err
                .to_string()
                .contains("container_allow_unconfined_seccomp"),
        "{err}"
    );
    let mut opts = c.options();
    opts.policy.allow_unconfined_seccomp = true;
    let t = TaskDirs::new();
    let mut req = t.request("unconfined", cfg);
    req.user = Some("root".into());
    let (r, out) = run(&c.container(opts), &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "Seccomp:\t0\nunshared\n");
}

#[tokio::test]
async fn a_host_directory_is_never_a_root_filesystem() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    for dir in ["/", "/etc", "/usr"] {
        let mut cfg = c.sh("cat /etc/shadow");
        cfg.insert("rootfs".into(), json!(dir));
        let mut req = t.request("hostroot", cfg);
        req.user = Some("root".into());
        let err = d.start(req).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("rootfs {dir}: "))
                && err.to_string().contains("refused"),
            "{dir}: {err}"
        );
        assert!(!err.is_recoverable());
    }
    // Outside the client's container_rootfs: refused too.
    let mut opts = c.options();
    opts.policy.rootfs_roots = vec![PathBuf::from("/var/lib/orch/images")];
    let err = c
        .container(opts)
        .start(t.request("outside", c.sh("true")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("container_rootfs"), "{err}");
}

/// The interface names in `/proc/net/dev` output.
fn interfaces(out: &str) -> Vec<&str> {
    out.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect()
}

#[tokio::test]
async fn network_mode_none_has_only_loopback() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let mut cfg = c.sh("cat /proc/net/dev");
    cfg.insert("network_mode".into(), json!("none"));
    let (r, out) = run(&d, &t, t.request("nonet", cfg)).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(interfaces(&out), ["lo"], "{out}");
}

#[tokio::test]
async fn the_network_defaults_to_none_and_to_the_hosts_only_with_ports_where_allowed() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let (r, out) = run(&d, &t, t.request("default", c.sh("cat /proc/net/dev"))).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(interfaces(&out), ["lo"], "{out}");

    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let port = orch_common::model::AllocatedPort {
        label: "http".into(),
        value: 20001,
        to: None,
        host_ip: "127.0.0.1".into(),
    };
    let t = TaskDirs::new();
    let mut req = t.request("ports", c.sh("cat /proc/net/dev"));
    req.ports = vec![port.clone()];
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    let mut want = interfaces(&host);
    let mut got = interfaces(&out);
    want.sort();
    got.sort();
    assert_eq!(got, want, "the host's interfaces");

    let mut opts = c.options();
    opts.policy.allow_host_network = false;
    let strict = c.container(opts);
    let mut req = t.request("ports", c.sh("true"));
    req.ports = vec![port];
    let err = strict.start(req).await.unwrap_err();
    assert!(
        err.to_string().contains("group's ports http")
            && err.to_string().contains("container_host_network = false"),
        "{err}"
    );
    let mut cfg = c.sh("true");
    cfg.insert("network_mode".into(), json!("host"));
    let err = strict.start(t.request("host", cfg)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("network_mode \"host\" is not allowed"),
        "{err}"
    );
}

#[tokio::test]
async fn volumes_bind_allowed_host_paths_and_refuse_others() {
    need_root!();
    let c = ContainerHarness::new();
    let data = world_readable_tempdir();
    std::fs::write(data.path().join("greeting"), "hello\n").unwrap();
    let mut opts = c.options();
    opts.allowed_volumes = vec![data.path().to_path_buf()];
    let d = c.container(opts);
    let t = TaskDirs::new();
    let mut cfg = c.sh("cat /data/greeting; touch /data/nope 2>/dev/null || echo read-only");
    cfg.insert(
        "volumes".into(),
        json!([format!("{}:/data:ro", data.path().display())]),
    );
    let mut req = t.request("vol", cfg);
    req.user = Some("root".into());
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "hello\nread-only\n");

    let elsewhere = world_readable_tempdir();
    let mut cfg = c.sh("true");
    cfg.insert(
        "volumes".into(),
        json!([format!("{}:/data", elsewhere.path().display())]),
    );
    let err = d.start(t.request("vol2", cfg)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("container_volumes")
            && text.contains(&elsewhere.path().display().to_string()),
        "{text}"
    );
    assert!(!err.is_recoverable());
}

/// A two-layer OCI image: busybox, then a layer that whites out a file and adds one.
fn busybox_image(dir: &Path) -> PathBuf {
    busybox_image_with(dir, json!({}))
}

/// `busybox_image` whose image config's `config` object is `run`.
fn busybox_image_with(dir: &Path, run: serde_json::Value) -> PathBuf {
    let mut lower = TarBuilder::new()
        .dir("bin/")
        .file("bin/busybox", &std::fs::read(busybox()).unwrap(), 0o755)
        .file("etc/gone.txt", b"old\n", 0o644);
    for a in APPLETS {
        lower = lower.symlink(&format!("bin/{a}"), "busybox");
    }
    let upper = TarBuilder::new()
        .file("etc/.wh.gone.txt", b"", 0o644)
        .file("etc/hello.txt", b"from layer two\n", 0o644)
        .finish();
    let tarball = oci_image_with(&[lower.finish(), gzip(&upper)], run);
    let path = dir.join("busybox.tar");
    std::fs::write(&path, tarball).unwrap();
    path
}

#[tokio::test]
async fn an_image_runs_its_own_entrypoint_cmd_env_and_working_dir_when_the_task_names_none() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let images = tempfile::tempdir().unwrap();
    let image = busybox_image_with(
        images.path(),
        json!({
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo \"$GREETING from $(pwd) as $(id -u)\""],
            "Env": ["GREETING=image-says-hi", "PATH=/bin"],
            "WorkingDir": "/etc",
            "User": "42",
        }),
    );
    let t = TaskDirs::new();
    let cfg = BTreeMap::from([("image".to_string(), json!(image))]);
    let (r, out) = run(&d, &t, t.request("defaults", cfg)).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "image-says-hi from /etc as 42\n");

    // The task's args replace Cmd (the entrypoint stays); its env wins over the image's.
    let t = TaskDirs::new();
    let cfg = BTreeMap::from([
        ("image".to_string(), json!(image)),
        ("args".to_string(), json!(["echo \"$GREETING\""])),
    ]);
    let mut req = t.request("override", cfg);
    req.env.insert("GREETING".into(), "task-says-hi".into());
    let (r, out) = run(&d, &t, req).await;
    assert!(r.successful(), "{r:?}");
    assert_eq!(out, "task-says-hi\n");

    // An image with neither, and no command in the task: a clear error.
    let t = TaskDirs::new();
    let bare_dir = images.path().join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bare = busybox_image(&bare_dir);
    let cfg = BTreeMap::from([("image".to_string(), json!(bare))]);
    let err = d
        .start(t.request("none", cfg))
        .await
        .expect_err("no command");
    assert!(err.to_string().contains("Entrypoint or Cmd"), "{err}");
}

#[tokio::test]
async fn an_oci_image_runs_and_the_second_task_reuses_the_cache() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let images = tempfile::tempdir().unwrap();
    let image = busybox_image(images.path());
    let cfg = BTreeMap::from([
        ("image".to_string(), json!(image)),
        ("command".to_string(), json!("sh")),
        (
            "args".to_string(),
            json!([
                "-c",
                "cat /etc/hello.txt; test -e /etc/gone.txt && echo still-there; true"
            ]),
        ),
    ]);
    let mut cached = Vec::new();
    for name in ["first", "second"] {
        let t = TaskDirs::new();
        let h = d.start(t.request(name, cfg.clone())).await.unwrap();
        cached.push(h.driver_state["image"]["cached"].clone());
        assert!(d.wait(&h).await.unwrap().successful());
        d.destroy(&h).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&t.stdout).unwrap(),
            "from layer two\n"
        );
    }
    assert_eq!(cached, [json!(false), json!(true)]);
}

#[tokio::test]
async fn an_image_with_a_dot_dot_entry_is_refused_naming_it() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let images = tempfile::tempdir().unwrap();
    let evil = TarBuilder::new()
        .file("../../etc/evil", b"x", 0o644)
        .finish();
    let path = images.path().join("evil.tar");
    std::fs::write(&path, oci_image(&[evil])).unwrap();
    let t = TaskDirs::new();
    let cfg = BTreeMap::from([
        ("image".to_string(), json!(path)),
        ("command".to_string(), json!("/bin/true")),
    ]);
    let err = d.start(t.request("evil", cfg)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"../../etc/evil\""), "{text}");
    assert!(!err.is_recoverable());
}

/// Host pids whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn stopping_a_container_leaves_no_process() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let tag = format!("{}", 4000 + std::process::id() % 1000);
    let script = format!("sleep 1{tag} & (trap '' TERM; sleep 2{tag}) & exec sleep 3{tag}");
    let h = d.start(t.request("tree", c.sh(&script))).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let sleeps = |n: u32| pids_with(&format!("sleep\x00{n}{tag}\x00"));
    while sleeps(1).is_empty() || sleeps(2).is_empty() || sleeps(3).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            pids_with(&tag)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop(&h, Signal::SIGTERM, Duration::from_secs(2))
        .await
        .unwrap();
    d.destroy(&h).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !pids_with(&tag)
        .iter()
        .all(|p| !crate::driver::process_alive(*p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "left: {:?}",
            pids_with(&tag)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_command_is_a_setup_error_in_the_stderr_log() {
    need_root!();
    let c = ContainerHarness::new();
    let d = c.container(c.options());
    let t = TaskDirs::new();
    let mut cfg = c.sh("");
    cfg.insert("command".into(), json!("/no/such/binary"));
    let err = d.start(t.request("nobin", cfg)).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    let log = std::fs::read_to_string(&t.stderr).unwrap();
    assert!(log.contains("/no/such/binary"), "{log}");
}

#[test]
fn config_errors_name_the_key() {
    let t = TaskDirs::new();
    let bad = |cfg: BTreeMap<String, serde_json::Value>| {
        ContainerConfig::from_config(&t.request("c", cfg))
            .unwrap_err()
            .to_string()
    };
    let base = || BTreeMap::from([("command".to_string(), json!("/bin/true"))]);
    assert!(bad(base()).contains("\"rootfs\""));
    let mut both = base();
    both.insert("rootfs".into(), json!("/r"));
    both.insert("image".into(), json!("/i.tar"));
    assert!(bad(both.clone()).contains("not both"));
    both.remove("image");
    both.insert("network_mode".into(), json!("bridge"));
    assert!(bad(both.clone()).contains("bridge"));
    both.remove("network_mode");
    both.insert("imagee".into(), json!("x"));
    assert!(bad(both).contains("imagee"));
}

#[test]
fn users_resolve_from_the_rootfs_passwd_or_the_built_in_names() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n",
    )
    .unwrap();
    assert_eq!(resolve_user(d.path(), "web").unwrap().uid, 1000);
    assert_eq!(resolve_user(d.path(), "web").unwrap().gid, 1001);
    assert_eq!(resolve_user(d.path(), "nobody").unwrap().uid, 65534);
    assert_eq!(resolve_user(d.path(), "42:7").unwrap().gid, 7);
    assert!(resolve_user(d.path(), "ghost").is_err());
}

/// Real cgroups through the whole driver.
mod cgroup {
    use super::*;
    use crate::driver::suite::TestCgroup;

    fn setup() -> Option<(Arc<dyn CgroupManager>, TestCgroup)> {
        if let Some(why) = not_supported() {
            eprintln!("skipped: {why}");
            return None;
        }
        let g = TestCgroup::new(64)?;
        Some((g.m.clone(), g))
    }

    #[tokio::test]
    async fn a_container_over_its_memory_limit_is_oom_killed_and_says_so_as_root() {
        if let Some(why) = not_supported() {
            eprintln!("skipped: {why}");
            return;
        }
        let Some(g) = TestCgroup::new(16) else { return };
        let m = g.m.clone();
        let c = ContainerHarness::new();
        let d = ContainerDriver::new(Some(m.clone()), c.options());
        let t = TaskDirs::new();
        // A 64 MiB buffer filled from /dev/zero, in a 16 MiB cgroup.
        let mut req = t.request("hog", c.sh("dd if=/dev/zero of=/dev/null bs=64M count=1"));
        req.cgroup = Some(g.cg.clone());
        let h = d.start(req).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), d.wait(&h))
            .await
            .expect("the container ends")
            .unwrap();
        assert!(r.oom_killed, "{r:?}");
        assert!(m.oom_kills(&g.cg).unwrap() >= 1);
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn the_whole_container_is_in_the_tasks_cgroup_and_stop_empties_it_as_root() {
        let Some((m, g)) = setup() else { return };
        let c = ContainerHarness::new();
        let d = ContainerDriver::new(Some(m.clone()), c.options());
        let t = TaskDirs::new();
        let mut req = t.request(
            "incg",
            c.sh("cat /proc/self/cgroup; sleep 300 & exec sleep 301"),
        );
        req.cgroup = Some(g.cg.clone());
        let h = d.start(req).await.unwrap();
        // helper, init, the shell's sleep and the exec'd sleep (`cat` has ended: the
        // shell runs `sleep 301` only after it).
        // Output reaches the log file through the client's copy of the pipe: wait for it
        // too.
        let cgroup_line = |out: &str| out.contains(":memory:") || out.contains("0::");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pids_with("sleep\x00301\x00").is_empty()
            || m.pids(&g.cg).unwrap().len() != 4
            || !cgroup_line(&std::fs::read_to_string(&t.stdout).unwrap_or_default())
        {
            assert!(std::time::Instant::now() < deadline, "{:?}", m.pids(&g.cg));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = std::fs::read_to_string(&t.stdout).unwrap();
        let line = out
            .lines()
            .find(|l| l.contains(":memory:") || l.starts_with("0::"))
            .unwrap();
        assert!(line.ends_with(&g.cg.name), "{out}");
        assert_eq!(d.stats(&h).await.unwrap().pids, 4);
        d.stop(&h, Signal::SIGTERM, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(m.pids(&g.cg).unwrap().is_empty());
        assert_eq!(d.wait(&h).await.unwrap().signal, Some(15));
        d.destroy(&h).await.unwrap();
    }
}

/// The host's Debian python3 (`/usr/bin/python3.X`) and its standard library dir.
fn host_python() -> Option<(PathBuf, PathBuf)> {
    let bin = std::fs::canonicalize("/usr/bin/python3").ok()?;
    let name = bin.file_name()?.to_str()?.to_string();
    let lib = Path::new("/usr/lib").join(&name);
    (bin.starts_with("/usr/bin") && lib.is_dir()).then_some((bin, lib))
}

/// Ordinary programs keep working under the default seccomp profile: glibc's threads
/// (`clone3` refused with ENOSYS, so `clone`), processes, sockets, timers, mmap.
#[tokio::test]
async fn a_glibc_program_with_threads_processes_and_sockets_runs_under_the_default_profile() {
    need_root!();
    let Some((python, stdlib)) = host_python() else {
        eprintln!("skipped: no Debian python3 in /usr/bin");
        return;
    };
    let c = ContainerHarness::new();
    let root = c.rootfs.path();
    let libs = [
        Path::new("/usr/lib/x86_64-linux-gnu"),
        Path::new("/usr/lib64"),
    ];
    for dir in libs.iter().copied().chain([stdlib.as_path()]) {
        std::fs::create_dir_all(root.join(dir.strip_prefix("/").unwrap())).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy(&python, root.join("usr/bin/python3")).unwrap();
    let mut opts = c.options();
    opts.allowed_volumes = libs
        .iter()
        .map(|p| p.to_path_buf())
        .chain([stdlib.clone()])
        .collect();
    let volumes: Vec<String> = opts
        .allowed_volumes
        .iter()
        .map(|p| format!("{0}:{0}:ro", p.display()))
        .collect();
    let program = r#"
import asyncio, mmap, os, socket, subprocess, threading, time
results = []
threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert sorted(results) == [i * i for i in range(8)], results
child = subprocess.run(["/bin/echo", "from a child"], capture_output=True, text=True, check=True)
pid = os.fork()
if pid == 0: os._exit(7)
assert os.waitpid(pid, 0)[1] >> 8 == 7
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); conn, _ = server.accept()
client.sendall(b"ping"); assert conn.recv(4) == b"ping"
m = mmap.mmap(-1, 4096); m.write(b"x"); m.close()
async def tick(): await asyncio.sleep(0.01); return "tick"
assert asyncio.run(tick()) == "tick"
time.sleep(0.01)
print("ok", child.stdout.strip())
"#;
    let d = c.container(opts);
    let t = TaskDirs::new();
    let cfg = BTreeMap::from([
        ("rootfs".to_string(), json!(root)),
        ("command".to_string(), json!("/usr/bin/python3")),
        ("args".to_string(), json!(["-c", program])),
        ("volumes".to_string(), json!(volumes)),
    ]);
    let (r, out) = run(&d, &t, t.request("python", cfg)).await;
    let err = std::fs::read_to_string(&t.stderr).unwrap_or_default();
    assert!(r.successful(), "{r:?}\nstdout: {out}\nstderr: {err}");
    assert_eq!(out, "ok from a child\n", "stderr: {err}");
}
