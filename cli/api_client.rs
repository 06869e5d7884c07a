//! A small typed HTTP client for the server's `/v1` API: JSON reads (plain and
//! blocking), writes, raw JSON for `--json`, and server errors turned into `ApiError`.
//! Over HTTPS it checks agents' certificates against the CA given (`ORCH_CACERT`) and
//! presents the CLI's own when one is given (`ORCH_CLIENT_CERT`, `ORCH_CLIENT_KEY`).

use std::fmt;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use orch_common::api::{ErrorBody, INDEX_HEADER, TOKEN_HEADER};
use orch_common::tls::{Tls, TlsFiles};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a plain request may take; blocking queries add their wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A 4xx/5xx answer from the API, shown to people as `error` plus one line per detail.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status (e.g. 404), so callers can tell "not found" from a failure.
    pub status: u16,
    pub body: ErrorBody,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.body.error)?;
        for d in &self.body.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A value read from the API together with the state index it was read at.
pub struct Indexed<T> {
    pub value: T,
    pub index: u64,
}

/// Talks to one agent's HTTP API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// The CA (and the CLI's certificate), when one was given.
    tls: Option<Arc<Tls>>,
}

/// `127.0.0.1:4747` -> `<scheme>://127.0.0.1:4747`; trailing slashes dropped.
pub fn normalize_address(address: &str, scheme: &str) -> String {
    let a = address.trim().trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("{scheme}://{a}")
    }
}

impl ApiClient {
    /// The ACL token this client sends (`--token`, `ORCH_TOKEN`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `address` without a scheme is `https://` when `tls` is given, else `http://`.
    pub fn new(address: &str, token: Option<String>, tls: Option<TlsFiles>) -> Result<ApiClient> {
        let tls =
            match tls {
                Some(files) => Some(Tls::load(files, "global", false).context(
                    "loading the CLI's TLS files (--ca-cert, --client-cert, --client-key)",
                )?),
                None => None,
            };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = normalize_address(address, scheme);
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        match &tls {
            Some(tls) => builder = builder.use_preconfigured_tls(tls.client_config_for_address()),
            None if base.starts_with("https://") => bail!(
                "{base} is HTTPS: give the CA that signed the agents' certificates with \
                 --ca-cert or ORCH_CACERT"
            ),
            None => {}
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(ApiClient {
            base,
            token,
            http,
            tls,
        })
    }

    /// The base address, e.g. `http://127.0.0.1:4747`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The CLI's TLS identity, for connections made outside this client (exec).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The base URL of another agent (a client node's `host:port`), in this agent's
    /// scheme.
    pub fn agent_base(&self, host_port: &str) -> String {
        let scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        normalize_address(host_port, scheme)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url);
        if let Some(t) = &self.token {
            rb = rb.header(TOKEN_HEADER, t);
        }
        rb
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request and returns the successful response, or the server's error.
    async fn send(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                let without_identity = self
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.files().identity.is_none());
                let hint = tls_hint(&e, without_identity);
                return Err(anyhow::Error::new(e).context(format!(
                    "{what}: cannot reach the orch agent at {}{hint}",
                    self.base
                )));
            }
        };
        check_status(resp).await
    }

    /// `GET path` decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.get_indexed(path, None).await?.value)
    }

    /// `GET path?index=N&wait=W` (when `block` is set), with the answer's `X-Orch-Index`.
    pub async fn get_indexed<T: DeserializeOwned>(
        &self,
        path: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<Indexed<T>> {
        let mut url = self.url(path);
        let mut timeout = REQUEST_TIMEOUT;
        if let Some((index, wait)) = block {
            let sep = if url.contains('?') { '&' } else { '?' };
            url.push_str(&format!("{sep}index={index}&wait={}ms", wait.as_millis()));
            timeout += wait;
        }
        let rb = self.request(reqwest::Method::GET, &url).timeout(timeout);
        let resp = self.send(rb, &format!("GET {path}")).await?;
        let index = index_of(&resp);
        let value = resp
            .json::<T>()
            .await
            .with_context(|| format!("GET {path}: unexpected answer"))?;
        Ok(Indexed { value, index })
    }

    /// `GET path` written to `out` as it arrives (no timeout: a state snapshot may be
    /// gigabytes); returns the answer's `X-Orch-Index` and the bytes written.
    pub async fn download(&self, path: &str, out: &mut tokio::fs::File) -> Result<(u64, u64)> {
        use tokio::io::AsyncWriteExt as _;
        let rb = self.request(reqwest::Method::GET, &self.url(path));
        let mut resp = self.send(rb, &format!("GET {path}")).await?;
        let index = index_of(&resp);
        let mut written = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("GET {path}: reading the answer"))?
        {
            out.write_all(&chunk)
                .await
                .context("writing the download")?;
            written += chunk.len() as u64;
        }
        Ok((index, written))
    }

    /// `PUT path` with `file` (of `len` bytes) as an `application/octet-stream` body,
    /// streamed (no timeout), decoded as `T`.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: tokio::fs::File,
        len: u64,
    ) -> Result<T> {
        use tokio::io::AsyncReadExt as _;
        let chunks = futures::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let rb = self
            .request(reqwest::Method::PUT, &self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(chunks));
        let resp = self.send(rb, &format!("PUT {path}")).await?;
        resp.json::<T>()
            .await
            .with_context(|| format!("PUT {path}: unexpected answer"))
    }

    /// `GET path` decoded as `T`, or None when the server answers 404 (e.g. a job's
    /// latest deployment when it has none).
    pub async fn get_optional<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.get_indexed(path, None).await {
            Ok(r) => Ok(Some(r.value)),
            Err(e)
                if e.downcast_ref::<ApiError>()
                    .is_some_and(|a| a.status == 404) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET path` as raw JSON, for `--json`.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.get(path).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let rb = self
            .request(reqwest::Method::POST, &self.url(path))
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        let resp = self.send(rb, &format!("POST {path}")).await?;
        resp.json::<T>()
            .await
            .with_context(|| format!("POST {path}: unexpected answer"))
    }

    /// `PUT path` with a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let rb = self
            .request(reqwest::Method::PUT, &self.url(path))
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        let resp = self.send(rb, &format!("PUT {path}")).await?;
        resp.json::<T>()
            .await
            .with_context(|| format!("PUT {path}: unexpected answer"))
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let rb = self
            .request(reqwest::Method::DELETE, &self.url(path))
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(rb, &format!("DELETE {path}")).await?;
        resp.json::<T>()
            .await
            .with_context(|| format!("DELETE {path}: unexpected answer"))
    }

    /// `POST` of an absolute URL (a client agent's route) with a JSON body.
    pub async fn post_url<B: Serialize, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T> {
        let rb = self.request(reqwest::Method::POST, url).json(body);
        self.send_url(rb, "POST", url).await
    }

    /// `GET` of an absolute URL (e.g. a client agent's stats endpoint) decoded as `T`.
    pub async fn get_url<T: DeserializeOwned>(&self, url: &str) -> Result<T> {
        let rb = self.request(reqwest::Method::GET, url);
        self.send_url(rb, "GET", url).await
    }

    /// Sends a request to an absolute URL and decodes the JSON answer.
    async fn send_url<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        method: &str,
        url: &str,
    ) -> Result<T> {
        let resp = rb
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        check_status(resp)
            .await?
            .json::<T>()
            .await
            .with_context(|| format!("{method} {url}: unexpected answer"))
    }

    /// `GET` of an absolute URL (e.g. a client agent's log endpoint) without a timeout,
    /// for streaming the body.
    pub async fn get_stream(&self, url: &str) -> Result<reqwest::Response> {
        let rb = self.request(reqwest::Method::GET, url);
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        check_status(resp).await
    }
}

/// An answer's `X-Orch-Index` (0 when it has none).
fn index_of(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get(INDEX_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Turns a non-2xx answer into an `ApiError` (JSON body when there is one).
/// What to do about a failed TLS handshake, when that is why a call failed.
/// `without_identity`: the CLI has a CA but no certificate of its own. Under TLS 1.3
/// the agent's refusal of such a caller may arrive after the client thinks the
/// handshake done, and the call then fails as a closed connection, not an alert.
fn tls_hint(e: &reqwest::Error, without_identity: bool) -> &'static str {
    let mut text = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(cause) = next {
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    let closed_early = text.contains("connection was not ready")
        || text.contains("connection closed")
        || text.contains("reset by peer");
    if text.contains("CertificateRequired") || (without_identity && closed_early) {
        " (it verifies callers: give a certificate with --client-cert and --client-key, or \
         ORCH_CLIENT_CERT and ORCH_CLIENT_KEY)"
    } else if text.contains("invalid peer certificate") {
        " (its certificate does not check out against --ca-cert / ORCH_CACERT for this address)"
    } else {
        ""
    }
}

async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
        error: if text.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", text.trim())
        },
        details: Vec::new(),
    });
    Err(ApiError {
        status: status.as_u16(),
        body,
    }
    .into())
}

/// Percent-encodes a path segment or query value (ids are safe, job ids may not be).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_get_the_default_scheme() {
        assert_eq!(
            normalize_address("127.0.0.1:4747", "http"),
            "http://127.0.0.1:4747"
        );
        assert_eq!(
            normalize_address("127.0.0.1:4747", "https"),
            "https://127.0.0.1:4747"
        );
        assert_eq!(
            normalize_address("http://127.0.0.1:4747/", "https"),
            "http://127.0.0.1:4747"
        );
    }

    #[test]
    fn https_without_a_ca_is_refused() {
        let e = ApiClient::new("https://127.0.0.1:4747", None, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ORCH_CACERT"), "{e}");
    }

    #[test]
    fn api_errors_show_the_error_then_each_detail() {
        let e = ApiError {
            status: 400,
            body: ErrorBody {
                error: "invalid job".into(),
                details: vec!["a: bad".into(), "b: worse".into()],
            },
        };
        assert_eq!(e.to_string(), "invalid job\n  a: bad\n  b: worse");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("web/1 x"), "web%2F1%20x");
        assert_eq!(encode("abc-123_x.y"), "abc-123_x.y");
    }
}
