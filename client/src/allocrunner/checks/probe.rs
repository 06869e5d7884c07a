//! One run of a health check: an HTTP request, a TCP connect, or a script run inside
//! the task through its driver's `exec`. Each returns whether it succeeded and what it
//! said (at most `MAX_OUTPUT` bytes); the caller bounds it with the check's `timeout`.

use std::time::Duration;

use orch_common::model::CheckSpec;

use crate::driver::ExecRequest;

use super::context::CheckContext;

/// Output kept of one run (Consul keeps 4 KiB too).
pub const MAX_OUTPUT: usize = 4096;

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    pub output: String,
}

impl Outcome {
    fn ok(output: impl Into<String>) -> Self {
        Outcome {
            success: true,
            output: truncate(output.into()),
        }
    }

    fn failed(output: impl Into<String>) -> Self {
        Outcome {
            success: false,
            output: truncate(output.into()),
        }
    }

    pub fn timed_out(timeout: Duration) -> Self {
        Outcome::failed(format!(
            "timed out after {}",
            orch_common::duration::format(timeout)
        ))
    }
}

/// Cuts `s` to `MAX_OUTPUT` bytes at a character boundary.
fn truncate(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `METHOD http://host:port/path` with the check's headers; any 2xx is a success. The
/// output is the status line (not the body: a body that changes on every request would
/// turn every run into a status update to the servers).
pub async fn http(client: &reqwest::Client, spec: &CheckSpec, host: &str, port: u16) -> Outcome {
    let method = spec.method.as_deref().unwrap_or("GET");
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return Outcome::failed(format!("invalid HTTP method {method:?}"));
    };
    let path = spec.path.as_deref().unwrap_or("/");
    let sep = if path.starts_with('/') { "" } else { "/" };
    let url = format!("http://{}{sep}{path}", host_port(host, port));
    let mut req = client.request(m, &url).timeout(spec.timeout);
    for (name, values) in &spec.headers {
        for v in values {
            req = req.header(name.as_str(), v.as_str());
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let line = format!(
                "HTTP {method} {url}: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let line = line.trim_end().to_string();
            if status.is_success() {
                Outcome::ok(line)
            } else {
                Outcome::failed(line)
            }
        }
        Err(e) => Outcome::failed(format!("HTTP {method} {url}: {}", error_chain(&e))),
    }
}

/// Connects to `host:port`; a connection is a success (it is closed at once).
pub async fn tcp(host: &str, port: u16) -> Outcome {
    let addr = host_port(host, port);
    match tokio::net::TcpStream::connect(&addr).await {
        Ok(_) => Outcome::ok(format!("TCP connect {addr}: Success")),
        Err(e) => Outcome::failed(format!("TCP connect {addr}: {e}")),
    }
}

/// Runs `command args...` inside `task` (its driver's exec: the task's cgroup,
/// environment and user); exit 0 is a success. Output: stdout, then stderr. A run cut
/// short by the timeout is killed with it (`kill_on_drop`).
pub async fn script(ctx: &CheckContext, spec: &CheckSpec, task: &str) -> Outcome {
    let Some(command) = spec.command.clone() else {
        return Outcome::failed("script check without a command");
    };
    let (driver, handle) = match ctx.running_task(task) {
        Ok(found) => found,
        Err(e) => return Outcome::failed(e),
    };
    let mut argv = vec![command];
    argv.extend(spec.args.iter().cloned());
    let req = ExecRequest {
        command: argv,
        tty: false,
    };
    let session = match driver.exec(&handle, req).await {
        Ok(s) => s,
        Err(e) => return Outcome::failed(format!("running the script in task {task:?}: {e}")),
    };
    // stdin is a pipe: dropped (closed) by `wait_with_output`, so a script that reads
    // it sees the end at once.
    match session.child.wait_with_output().await {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            if out.status.success() {
                Outcome::ok(text)
            } else if text.trim().is_empty() {
                Outcome::failed(describe_exit(out.status))
            } else {
                Outcome::failed(text)
            }
        }
        Err(e) => Outcome::failed(format!("waiting for the script: {e}")),
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited abnormally".to_string(),
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An error with its causes (reqwest's own message alone says little, e.g. "error
/// sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_at_a_character_boundary() {
        let s = "é".repeat(MAX_OUTPUT);
        let t = truncate(s);
        assert!(t.len() <= MAX_OUTPUT);
        assert!(t.chars().all(|c| c == 'é'));
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("127.0.0.1", 80), "127.0.0.1:80");
    }
}
