//! `orch operator snapshot save FILE | restore FILE`: the server's state as a file
//! (`GET/PUT /v1/operator/snapshot`), for online backups and restoring them. A save is
//! written beside FILE, synced and renamed, so FILE is whole or untouched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use orch_common::api::SnapshotRestoreResponse;

use crate::output::{self, key_values};
use crate::Ctx;

const PATH: &str = "/v1/operator/snapshot";

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save the server's state to FILE (a consistent copy, taken while it runs).
    Save {
        /// Where to write the snapshot (replaced if it exists).
        file: PathBuf,
    },
    /// Replace the server's whole state with the snapshot in FILE.
    Restore {
        /// A file written by `orch operator snapshot save`.
        file: PathBuf,
    },
}

pub const SNAPSHOT_EXAMPLES: &str = "EXAMPLES:
  orch operator snapshot save backup.snap
  orch operator snapshot restore backup.snap
  orch operator snapshot save --json backup.snap

A restore replaces every job, allocation, node and ACL token with the file's; clients
reconcile what they run against the restored state as after a server restart. It needs
a management token when ACLs are on.";

/// What `save` did, for `--json`.
#[derive(Debug, serde::Serialize)]
struct Saved {
    file: String,
    index: u64,
    size_bytes: u64,
}

pub async fn run(ctx: &Ctx, cmd: SnapshotCommand) -> Result<ExitCode> {
    match cmd {
        SnapshotCommand::Save { file } => save(ctx, &file).await,
        SnapshotCommand::Restore { file } => restore(ctx, &file).await,
    }
}

/// A name beside `file` for the download in progress.
fn partial_name(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".part-{}", std::process::id()));
    PathBuf::from(name)
}

async fn save(ctx: &Ctx, file: &Path) -> Result<ExitCode> {
    let api = ctx.api()?;
    let partial = partial_name(file);
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let fetched = async {
        let (index, size_bytes) = api.download(PATH, &mut out).await?;
        out.sync_all()
            .await
            .with_context(|| format!("syncing {}", partial.display()))?;
        tokio::fs::rename(&partial, file)
            .await
            .with_context(|| format!("renaming {} to {}", partial.display(), file.display()))?;
        anyhow::Ok((index, size_bytes))
    }
    .await;
    let (index, size_bytes) = match fetched {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    let saved = Saved {
        file: file.display().to_string(),
        index,
        size_bytes,
    };
    if ctx.json {
        output::print_json(&saved)?;
    } else {
        print!(
            "{}",
            key_values(&[
                ("File", saved.file.clone()),
                ("Index", index.to_string()),
                ("Size", format!("{size_bytes} bytes")),
            ])
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore(ctx: &Ctx, file: &Path) -> Result<ExitCode> {
    let api = ctx.api()?;
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let len = opened
        .metadata()
        .await
        .with_context(|| format!("reading the size of {}", file.display()))?
        .len();
    let resp: SnapshotRestoreResponse = api.upload(PATH, opened, len).await?;
    if ctx.json {
        output::print_json(&resp)?;
    } else {
        println!(
            "Restored {} (saved at index {}): index {} -> {}",
            file.display(),
            resp.snapshot_index,
            resp.previous_index,
            resp.index
        );
    }
    Ok(ExitCode::SUCCESS)
}
