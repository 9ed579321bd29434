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
