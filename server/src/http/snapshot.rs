//! `GET /v1/operator/snapshot` (the state as a file, streamed, with its index as
//! `X-Orch-Index`) and `PUT /v1/operator/snapshot` (the body, streamed to a file
//! beside the state up to `[server] max_snapshot_bytes`, then restored). The rules are
//! `endpoints::snapshot`'s; these only move bytes. A snapshot may be far larger than
//! the request body limit, so the upload bypasses `RawBody` and never sits in memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt as _;
use orch_common::api::SnapshotRestoreResponse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::context::HttpState;
use super::error::ApiError;
use crate::endpoints::snapshot::{self, SnapshotError};
use orch_common::api::INDEX_HEADER;

/// The body type a snapshot travels as, both ways.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/octet-stream";

/// How much of the snapshot file one body chunk carries.
const CHUNK_BYTES: usize = 256 * 1024;

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        if let Some(reason) = e.bad_file_reason() {
            return ApiError::bad_request(reason);
        }
        match e {
            SnapshotError::Log(e) => e.into(),
            SnapshotError::State(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// `GET /v1/operator/snapshot`: a consistent copy of the state, taken now while
/// writes go on.
pub async fn save(State(st): State<Arc<HttpState>>) -> Result<Response, ApiError> {
    let saved = snapshot::save(&st.endpoints).await?;
    let file = tokio::fs::File::from_std(saved.file);
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut resp = Body::from_stream(chunks).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SNAPSHOT_CONTENT_TYPE),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(saved.meta.size_bytes),
    );
    headers.insert(INDEX_HEADER, HeaderValue::from(saved.meta.index));
    Ok(resp)
}

/// How long the rest of an oversized upload is read and discarded before the 413 is
/// sent: a client reads no answer until it has sent its body, and a connection closed
/// under it is an error without the reason. Past this the connection is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

async fn drain(body: Body) {
    drain_stream(body.into_data_stream()).await;
}

async fn drain_stream(mut body: axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}

/// Removes an upload's file unless the restore took it (a cancelled request, a
/// refused body).
struct UploadFile(PathBuf);

impl Drop for UploadFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `PUT /v1/operator/snapshot`: replaces the state with the snapshot in the body.
/// 413 above `max_snapshot_bytes`, 400 for a file that is not a snapshot this server
/// can restore (nothing changes then).
pub async fn restore(
    State(st): State<Arc<HttpState>>,
    req: Request,
) -> Result<Json<SnapshotRestoreResponse>, ApiError> {
    // The restore replaces this server's state outside the Raft log: the others would
    // not follow. On a single server (a cluster of one) it is what it always was.
    let servers = st.cluster.as_ref().map(|c| c.members().len()).unwrap_or(1);
    if servers > 1 {
        if !req.headers().contains_key(header::EXPECT) {
            drain(req.into_body()).await;
        }
        return Err(ApiError::Conflict(format!(
            "restoring a snapshot onto a cluster of {servers} servers is not supported: \
             restore it onto a single server, then add the others to it (docs/operations.md, \
             \"Servers that replicate\")"
        )));
    }
    let limit = st.endpoints.max_snapshot_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the snapshot is larger than this server accepts (max_snapshot_bytes = {limit})"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let waits_to_send = req.headers().contains_key(header::EXPECT);
    if declared.is_some_and(|n| n > limit) {
        // A client that waits for `100 Continue` before sending gets the 413 at once;
        // any other is sending already, and reads no answer until it has sent.
        if !waits_to_send {
            drain(req.into_body()).await;
        }
        return Err(too_large());
    }
    let upload = UploadFile(snapshot::upload_path(&st.endpoints));
    let io = |what: &str, e: std::io::Error| {
        ApiError::Internal(format!("{what} {}: {e}", upload.0.display()))
    };
    let mut file = tokio::fs::File::create(&upload.0)
        .await
        .map_err(|e| io("creating", e))?;
    let mut body = req.into_body().into_data_stream();
    let mut seen: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > limit {
            drop(file);
            drain_stream(body).await;
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(|e| io("writing", e))?;
    }
    if seen == 0 {
        return Err(ApiError::bad_request(
            "the request body is empty; send the snapshot file",
        ));
    }
    file.sync_all().await.map_err(|e| io("syncing", e))?;
    drop(file);
    let restored = snapshot::restore(&st.endpoints, upload.0.clone()).await?;
    Ok(Json(restored))
}
