//! Integrity: signed digest chains of delivered files ([`digest`]), the check that
//! proves a trail whole and untouched ([`verify`]), and retention ([`retention`]).
//!
//! Each writer keeps one chain per tracker. Its state lives in the spool's cursor
//! file next to the tracker's delivery state ([`Chain`]): the files delivered in
//! the open period are recorded in the same commit that records their delivery,
//! so a crash neither loses a file from its digest nor lists it twice.

pub mod digest;
pub mod retention;
pub mod verify;

pub use crate::api::ChainHead;
pub use digest::{Digest, DigestFile, Previous, PublicKey, Signer};

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Digests of one tracker, as its pipeline writes them.
#[derive(Clone, Debug)]
pub struct IntegritySpec {
    /// Length of a digest period (aligned to the Unix epoch: hours start on the hour).
    pub period: Duration,
    pub signer: Arc<Signer>,
    /// What the writer trusts when it picks up its chain without its spool.
    pub anchor: Anchor,
}

/// A writer's trust anchor, kept outside the bucket: its published chain head
/// and the published keys (with their windows).
#[derive(Clone, Debug, Default)]
pub struct Anchor {
    pub head: Option<ChainHead>,
    pub keys: Vec<PublicKey>,
}

/// A file delivered in the open period, waiting for its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    #[serde(flatten)]
    pub file: DigestFile,
    pub delivered_ms: i64,
}

/// The open period of a writer's chain for one tracker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Start of the open period (Unix ms); the end of the last digest written.
    pub period_start_ms: i64,
    /// The last digest written, which the next one names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// Files delivered since `period_start_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Delivered>,
}

/// The head a digest makes once written: what the next digest names, and what
/// is published outside the bucket.
pub fn head_of(
    writer: &str,
    previous: &Previous,
    fingerprint: &str,
    period_end_ms: i64,
    period: Duration,
) -> ChainHead {
    ChainHead {
        writer: writer.to_string(),
        key: previous.key.clone(),
        sha256: previous.sha256.clone(),
        signature: previous.signature.clone(),
        key_fingerprint: fingerprint.to_string(),
        period_end: digest::rfc3339(period_end_ms),
        period_seconds: period.as_secs(),
        running: false,
    }
}

/// The [`Previous`] a chain head stands for.
pub fn previous_of(head: &ChainHead) -> Previous {
    Previous {
        key: head.key.clone(),
        sha256: head.sha256.clone(),
        signature: head.signature.clone(),
    }
}

/// The chain heads `serve` keeps outside the bucket (`--chain-head FILE`), by
/// tracker; `verify --chain-head FILE` reads the same file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadFile {
    pub cluster: String,
    /// Writers that deliver into this trail, from their first start (before
    /// their first digest gives them a head).
    #[serde(default)]
    pub writers: Vec<String>,
    #[serde(default)]
    pub trackers: std::collections::BTreeMap<String, Vec<ChainHead>>,
}

impl HeadFile {
    /// Reads the file; `Ok(None)` when there is none yet.
    pub fn read(path: &std::path::Path) -> std::io::Result<Option<HeadFile>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the file atomically (a temporary file, fsynced, renamed).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The head of `writer` for `tracker`.
    pub fn head(&self, tracker: &str, writer: &str) -> Option<&ChainHead> {
        self.trackers.get(tracker)?.iter().find(|h| h.writer == writer)
    }

    /// Records a head, replacing the writer's earlier one.
    pub fn set(&mut self, tracker: &str, head: ChainHead) {
        let heads = self.trackers.entry(tracker.to_string()).or_default();
        heads.retain(|h| h.writer != head.writer);
        heads.push(head);
        heads.sort_by(|a, b| a.writer.cmp(&b.writer));
    }
}

/// The end of the period that contains `start`: the next multiple of `period`.
pub fn period_end(start_ms: i64, period: Duration) -> i64 {
    let p = (period.as_millis() as i64).max(1);
    (start_ms.div_euclid(p) + 1) * p
}

/// The latest period boundary at or before `now`.
pub fn boundary_before(now_ms: i64, period: Duration) -> i64 {
    let p = (period.as_millis() as i64).max(1);
    now_ms.div_euclid(p) * p
}

/// The shortest digest period (`integrity.digestPeriod`).
pub const MIN_PERIOD: Duration = Duration::from_secs(60);

/// Unix ms of the start of the UTC day `y`/`m`/`d` as written in object keys
/// (`2026`, `11`, `24`).
pub fn key_day_ms(y: &str, m: &str, d: &str) -> Option<i64> {
    let date: jiff::civil::Date = format!("{y}-{m}-{d}").parse().ok()?;
    Some(
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_align_to_the_epoch() {
        let h = Duration::from_secs(3600);
        assert_eq!(period_end(0, h), 3_600_000);
        assert_eq!(period_end(3_599_999, h), 3_600_000);
        assert_eq!(period_end(3_600_000, h), 7_200_000);
        assert_eq!(boundary_before(7_199_999, h), 3_600_000);
        assert_eq!(boundary_before(7_200_000, h), 7_200_000);
    }
}
