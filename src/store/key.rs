//! The object-key layout of a trail (docs/architecture.md, "Delivery"): trace
//! files, their digests and TraceQuery results. [`super::Trail`] names keys
//! with it; the writers and readers of a trail call either.
//!
//! `{prefix}/KubeTrail/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/{cluster}_{tracker}_{yyyymmddTHHMMSSZ}_{writer}_{seq}.jsonl.gz`
//!
//! Partition invariant: every trace in a file lies in the UTC day of its key, and
//! the time in the name is the file's *earliest* trace time (see
//! [`crate::deliver::batcher`]). A query lists only the days it asks for, and may skip a
//! file whose earliest time is past its range. `seq` is the spool position of the
//! file's first entry (with the spool's epoch and the writer), so the key of a
//! file is fixed before it is written and a retry rewrites the same object.

use crate::api::Compression;

/// Identity of one file.
pub struct FileId<'a> {
    pub prefix: &'a str,
    pub cluster: &'a str,
    pub tracker: &'a str,
    pub writer: &'a str,
    pub epoch: &'a str,
    /// The spool position of its first entry: record `start_seq`, entry `start_idx`.
    pub start_seq: u64,
    pub start_idx: u32,
    /// Earliest trace time in the file, Unix milliseconds.
    pub earliest_ms: i64,
    pub compression: Compression,
}

/// The top folders under a tracker's prefix: the one place their names are spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Trace files.
    Traces,
    /// Signed digests of the trace files.
    Digests,
    /// TraceQuery results written back to the bucket.
    QueryResults,
}

impl Area {
    /// The folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Traces => "KubeTrail",
            Area::Digests => "KubeTrail-Digest",
            Area::QueryResults => "KubeTrail-Query",
        }
    }
}

/// `{prefix}/{area}/`, or `{area}/` with no prefix.
pub fn area_prefix(prefix: &str, area: Area) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        format!("{}/", area.as_str())
    } else {
        format!("{prefix}/{}/", area.as_str())
    }
}

/// File name extension for a compression.
pub fn extension(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "jsonl.gz",
        Compression::Zstd => "jsonl.zst",
        Compression::None => "jsonl",
    }
}

/// `{prefix}/KubeTrail/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/` for a day.
pub fn day_prefix(prefix: &str, cluster: &str, tracker: &str, year: i16, month: i8, day: i8) -> String {
    area_day_prefix(prefix, Area::Traces, cluster, tracker, year, month, day)
}

/// `{prefix}/{area}/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/`: one layout for trace
/// files (`KubeTrail`) and their digests (`KubeTrail-Digest`).
pub fn area_day_prefix(
    prefix: &str,
    area: Area,
    cluster: &str,
    tracker: &str,
    year: i16,
    month: i8,
    day: i8,
) -> String {
    let mut key = area_prefix(prefix, area);
    key.push_str(&format!("{cluster}/{year:04}/{month:02}/{day:02}/{tracker}/"));
    key
}

/// The object key of a file.
pub fn object_key(id: &FileId<'_>) -> String {
    let ts = jiff::Timestamp::from_millisecond(id.earliest_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let mut key = day_prefix(id.prefix, id.cluster, id.tracker, dt.year(), dt.month(), dt.day());
    key.push_str(&format!(
        "{cluster}_{tracker}_{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z_{writer}_{epoch}-{seq:012}-{idx:05}.{ext}",
        cluster = id.cluster,
        tracker = id.tracker,
        y = dt.year(),
        mo = dt.month(),
        d = dt.day(),
        h = dt.hour(),
        mi = dt.minute(),
        s = dt.second(),
        writer = id.writer,
        epoch = id.epoch,
        seq = id.start_seq,
        idx = id.start_idx,
        ext = extension(id.compression),
    ));
    key
}

/// `{prefix}/KubeTrail-Digest/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/` of a day.
pub fn digest_day_prefix(
    prefix: &str,
    cluster: &str,
    tracker: &str,
    year: i16,
    month: i8,
    day: i8,
) -> String {
    area_day_prefix(prefix, Area::Digests, cluster, tracker, year, month, day)
}

/// The object key of the digest of a period, named by its start:
/// `…/{cluster}_{tracker}_{yyyymmddTHHMMSSZ}_{writer}_digest.json`.
pub fn digest_key(prefix: &str, cluster: &str, tracker: &str, writer: &str, period_start_ms: i64) -> String {
    let dt = jiff::Timestamp::from_millisecond(period_start_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime();
    let mut key = digest_day_prefix(prefix, cluster, tracker, dt.year(), dt.month(), dt.day());
    key.push_str(&format!(
        "{cluster}_{tracker}_{:04}{:02}{:02}T{:02}{:02}{:02}Z_{writer}_digest.json",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    ));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &str, compression: Compression) -> FileId<'_> {
        FileId {
            prefix,
            cluster: "prod-eu",
            tracker: "system",
            writer: "kubetrail-7d9f-x2",
            epoch: "0a1b2c3d",
            start_seq: 42,
            start_idx: 7,
            earliest_ms: 1_795_482_061_500, // 2026-11-24T01:01:01.5Z
            compression,
        }
    }

    #[test]
    fn key_layout() {
        assert_eq!(
            object_key(&id("audit/prod", Compression::Gzip)),
            "audit/prod/KubeTrail/prod-eu/2026/11/24/system/prod-eu_system_20261124T010101Z_kubetrail-7d9f-x2_0a1b2c3d-000000000042-00007.jsonl.gz"
        );
    }

    #[test]
    fn empty_prefix_and_trailing_slash() {
        assert!(object_key(&id("", Compression::Zstd)).starts_with("KubeTrail/prod-eu/2026/11/24/system/"));
        assert!(object_key(&id("", Compression::Zstd)).ends_with(".jsonl.zst"));
        assert!(object_key(&id("p/", Compression::None)).starts_with("p/KubeTrail/"));
        assert!(object_key(&id("p/", Compression::None)).ends_with("-00007.jsonl"));
    }

    #[test]
    fn day_prefix_pads() {
        assert_eq!(
            day_prefix("x", "c", "t", 2026, 1, 2),
            "x/KubeTrail/c/2026/01/02/t/"
        );
    }
}
