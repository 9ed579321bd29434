//! Retention of delivered files (`destination.retentionDays`).
//!
//! A day's files are kept for `retentionDays` days after the end of that UTC
//! day. Where the bucket supports lifecycle rules and the tracker's prefix is its
//! own, one rule of the operator's (ID `kubetrail-<tracker>`) expires objects
//! under the prefix, merged with the bucket's other rules. Otherwise (or with
//! `retention.mode: operator`) the lease holder deletes whole expired days of
//! the tracker's trace files and digests, and nothing else.

use crate::api::RetentionMode;
use crate::store::key::{Area, area_prefix};
use crate::store::{DestinationError, Store};

const DAY_MS: i64 = 86_400_000;

/// The start (Unix ms) of the oldest UTC day kept: the day that contains
/// `now - days`. Files of earlier days are expired.
pub fn oldest_day_kept(now_ms: i64, days: u32) -> i64 {
    (now_ms - i64::from(days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS
}

/// `YYYY-MM-DD` of a day start.
pub fn day_string(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d")
        .to_string()
}

/// What one enforcement did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `lifecycle` or `operator`.
    pub mode: &'static str,
    pub oldest_day_kept: i64,
    /// Objects deleted (operator mode).
    pub deleted: usize,
    /// Why the operator deletes instead of a lifecycle rule, when it does.
    pub message: Option<String>,
}

/// Where the tracker's files are.
pub struct Scope<'a> {
    pub prefix: &'a str,
    pub cluster: &'a str,
    pub tracker: &'a str,
    /// Another tracker writes under the same bucket and prefix: a lifecycle rule
    /// on the prefix would expire its files too.
    pub prefix_shared: bool,
}

/// The rule ID of a tracker.
pub fn rule_id(tracker: &str) -> String {
    format!("kubetrail-{tracker}")
}

/// Applies retention once.
pub async fn enforce(
    store: &Store,
    scope: &Scope<'_>,
    days: u32,
    mode: RetentionMode,
    now_ms: i64,
) -> Result<Outcome, DestinationError> {
    let oldest = oldest_day_kept(now_ms, days);
    let mut message = None;
    if mode == RetentionMode::Auto {
        if scope.prefix.trim_matches('/').is_empty() {
            message = Some(
                "the tracker writes at the bucket root: a lifecycle rule would expire the whole bucket"
                    .into(),
            );
        } else if scope.prefix_shared {
            message =
                Some("another tracker shares the prefix: a lifecycle rule would expire its files too".into());
        } else {
            match store
                .set_expiration(&rule_id(scope.tracker), scope.prefix, days)
                .await
            {
                Ok(()) => {
                    return Ok(Outcome {
                        mode: "lifecycle",
                        oldest_day_kept: oldest,
                        deleted: 0,
                        message: None,
                    });
                }
                Err(e) => message = Some(format!("bucket lifecycle rules unavailable ({e})")),
            }
        }
    }
    let deleted = delete_expired(store, scope, oldest).await?;
    Ok(Outcome {
        mode: "operator",
        oldest_day_kept: oldest,
        deleted,
        message,
    })
}

/// Deletes every trace file and digest of the tracker in days before `oldest`.
async fn delete_expired(store: &Store, scope: &Scope<'_>, oldest: i64) -> Result<usize, DestinationError> {
    let mut deleted = 0;
    for area in [Area::Traces, Area::Digests] {
        let mut base = area_prefix(scope.prefix, area);
        base.push_str(&format!("{}/", scope.cluster));
        for year in store.list_dirs(&base).await? {
            for month in store.list_dirs(&year).await? {
                for day in store.list_dirs(&month).await? {
                    let Some(start) = day_of_dir(&base, &day) else {
                        continue;
                    };
                    if start >= oldest {
                        continue;
                    }
                    let dir = format!("{day}{}/", scope.tracker);
                    for o in store.list(&dir).await? {
                        store.delete(&o.key).await?;
                        deleted += 1;
                    }
                }
            }
        }
    }
    if deleted > 0 {
        tracing::info!(tracker = scope.tracker, deleted, oldest = %day_string(oldest), "expired files deleted");
    }
    Ok(deleted)
}

/// The day start of `{base}{yyyy}/{mm}/{dd}/`.
fn day_of_dir(base: &str, dir: &str) -> Option<i64> {
    let rest = dir.strip_prefix(base)?.trim_end_matches('/');
    let mut parts = rest.split('/');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    super::key_day_ms(y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_kept_for_its_days_after_it_ends() {
        let now = "2026-12-01T10:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(day_string(oldest_day_kept(now, 1)), "2026-11-30");
        assert_eq!(day_string(oldest_day_kept(now, 30)), "2026-11-01");
        assert_eq!(
            day_of_dir("p/KubeTrail/c/", "p/KubeTrail/c/2026/11/01/"),
            Some(oldest_day_kept(now, 30))
        );
        assert_eq!(day_of_dir("p/KubeTrail/c/", "p/KubeTrail/c/notes/"), None);
    }
}
