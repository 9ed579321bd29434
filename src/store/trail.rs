//! A tracker's trail: the store it is in and where in it (file prefix, cluster,
//! tracker). Readers and writers of a trail ask it for their keys (trace files,
//! digests, the day folders of both) rather than assembling prefix, cluster and
//! tracker themselves; the layout is spelled in `store::key` (docs/architecture.md,
//! "Object layout").

use super::Store;
use crate::api::Compression;
use crate::store::key::{self, Area, FileId};

/// One tracker's trail of one cluster, in a store.
#[derive(Clone, Debug)]
pub struct Trail {
    pub store: Store,
    /// The file prefix (`spec.destination.prefix`); may be empty.
    pub prefix: String,
    pub cluster: String,
    pub tracker: String,
}

/// The UTC date of a Unix-millisecond time.
fn ymd(ms: i64) -> (i16, i8, i8) {
    let dt = jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime();
    (dt.year(), dt.month(), dt.day())
}

impl Trail {
    pub fn new(store: Store, prefix: &str, cluster: &str, tracker: &str) -> Trail {
        Trail {
            store,
            prefix: prefix.to_string(),
            cluster: cluster.to_string(),
            tracker: tracker.to_string(),
        }
    }

    /// `{prefix}/{area}/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/` of the UTC day of `ms`.
    pub fn day(&self, area: Area, ms: i64) -> String {
        let (y, m, d) = ymd(ms);
        key::area_day_prefix(&self.prefix, area, &self.cluster, &self.tracker, y, m, d)
    }

    /// The key of a trace file `writer` wrote from spool position `start_seq`/`start_idx` of
    /// its spool `epoch`, whose earliest trace is at `earliest_ms`.
    pub fn file_key(
        &self,
        writer: &str,
        epoch: &str,
        start_seq: u64,
        start_idx: u32,
        earliest_ms: i64,
        compression: Compression,
    ) -> String {
        key::object_key(&FileId {
            prefix: &self.prefix,
            cluster: &self.cluster,
            tracker: &self.tracker,
            writer,
            epoch,
            start_seq,
            start_idx,
            earliest_ms,
            compression,
        })
    }

    /// The key of `writer`'s digest of the period starting at `period_start_ms`.
    pub fn digest_key(&self, writer: &str, period_start_ms: i64) -> String {
        key::digest_key(
            &self.prefix,
            &self.cluster,
            &self.tracker,
            writer,
            period_start_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trail names the same keys the layout functions spell, for both areas.
    #[test]
    fn keys_of_a_trail() {
        let t = Trail::new(Store::Dir("/x".into()), "audit/prod/", "east", "system");
        let ms = 1_795_482_061_500; // 2026-11-24T01:01:01.5Z
        assert_eq!(
            t.day(Area::Traces, ms),
            "audit/prod/KubeTrail/east/2026/11/24/system/"
        );
        assert_eq!(
            t.day(Area::Digests, ms),
            "audit/prod/KubeTrail-Digest/east/2026/11/24/system/"
        );
        let f = t.file_key("w-0", "0a1b2c3d", 42, 7, ms, Compression::Gzip);
        assert_eq!(
            f,
            "audit/prod/KubeTrail/east/2026/11/24/system/east_system_20261124T010101Z_w-0_0a1b2c3d-000000000042-00007.jsonl.gz"
        );
        assert!(f.starts_with(&t.day(Area::Traces, ms)));
        let d = t.digest_key("w-0", ms - 61_500);
        assert_eq!(
            d,
            "audit/prod/KubeTrail-Digest/east/2026/11/24/system/east_system_20261124T010000Z_w-0_digest.json"
        );
        let bare = Trail::new(Store::Dir("/x".into()), "", "east", "system");
        assert_eq!(bare.day(Area::Traces, ms), "KubeTrail/east/2026/11/24/system/");
    }
}
