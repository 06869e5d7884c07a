//! The stored form of one `command_log` entry: a format byte, then the command's JSON
//! compressed with LZ4 (its length prepended). An `ApplyPlan` carries every placed
//! allocation again after its `allocs` row; compressed, the log no longer doubles the
//! database (the keys repeat per allocation and most ids repeat per plan).
//!
//! An `ApplyPlan` entry holds its placements as they were written to their rows
//! (stamped with the commit's index and time) rather than as submitted: the writer
//! encodes each allocation once, for its row and for the log, and encoding was a fifth
//! of the c1m benchmark's instructions. Applying such an entry again writes the same
//! rows.

use orch_common::model::{Allocation, Deployment, DeploymentStatusUpdate, Evaluation};
use serde::Serialize;
use serde_json::value::RawValue;

/// `Command::ApplyPlan`'s JSON shape, with the placements already encoded.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum LoggedPlan<'a> {
    ApplyPlan {
        allocs: &'a [Box<RawValue>],
        stopped: &'a [Allocation],
        evals: &'a [Evaluation],
        #[serde(skip_serializing_if = "Option::is_none")]
        deployment: &'a Option<Deployment>,
        #[serde(skip_serializing_if = "<[DeploymentStatusUpdate]>::is_empty")]
        deployment_updates: &'a [DeploymentStatusUpdate],
    },
}

/// Format byte of an LZ4 block holding the command's JSON.
const LZ4_JSON: u8 = 1;

/// The entry stored for a command encoded as `json`.
pub(crate) fn compress(json: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(1 + 4 + json.len() / 2);
    entry.push(LZ4_JSON);
    entry.extend_from_slice(&lz4_flex::block::compress_prepend_size(json));
    entry
}

/// The command's JSON back from a stored entry; an error says what is wrong with it.
pub(crate) fn decompress(entry: &[u8]) -> Result<Vec<u8>, String> {
    match entry.split_first() {
        Some((&LZ4_JSON, block)) => {
            lz4_flex::block::decompress_size_prepended(block).map_err(|e| format!("LZ4 block: {e}"))
        }
        Some((format, _)) => Err(format!("unknown entry format {format}")),
        None => Err("empty entry".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decompresses_to_the_json_it_was_made_from() {
        let json = br#"{"type":"upsert_evals","evals":[]}"#.repeat(50);
        let entry = compress(&json);
        assert!(entry.len() < json.len() / 4, "{} bytes", entry.len());
        assert_eq!(decompress(&entry).expect("decompress"), json);
    }

    #[test]
    fn an_unknown_format_byte_is_an_error_not_garbage() {
        let mut entry = compress(b"{}");
        entry[0] = 9;
        assert_eq!(
            decompress(&entry).expect_err("format"),
            "unknown entry format 9"
        );
    }

    #[test]
    fn a_truncated_entry_is_an_error() {
        let entry = compress(&b"{\"a\":1}".repeat(20));
        assert!(decompress(&entry[..entry.len() - 3]).is_err());
        assert!(decompress(&[]).is_err());
    }
}
