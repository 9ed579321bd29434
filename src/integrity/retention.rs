//! Retention of delivered files (`destination.retentionDays`).
//!
//! A day's files are kept for `retentionDays` days after the end of that UTC
//! day. Where the bucket supports lifecycle rules and the tracker's prefix is its
//! own, one rule of the operator's (ID `kubetrail-<tracker>`) expires objects
//! under the prefix, merged with the bucket's other rules. Otherwise (or with
//! `retention.mode: operator`) the lease holder deletes whole expired days of
//! the tracker's trace files and digests, and nothing else.

use crate::api::RetentionMode;
use crate::deliver::key::{Area, area_prefix};
use crate::store::{DestinationError, Store};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};

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

/// The bucket's rules with the tracker's own rule set to `days` on `prefix/`;
/// every other rule is kept as it is.
pub fn merge_rules(existing: &[LifecycleRule], tracker: &str, prefix: &str, days: u32) -> Vec<LifecycleRule> {
    let id = rule_id(tracker);
    let mut rules: Vec<LifecycleRule> = existing
        .iter()
        .filter(|r| r.id() != Some(id.as_str()))
        .cloned()
        .collect();
    let own = LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(
            LifecycleRuleFilter::builder()
                .prefix(format!("{}/", prefix.trim_end_matches('/')))
                .build(),
        )
        .expiration(LifecycleExpiration::builder().days(days as i32).build())
        .build();
    if let Ok(own) = own {
        rules.push(own);
    }
    rules
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
            match put_lifecycle_rule(store, scope, days).await {
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

async fn put_lifecycle_rule(store: &Store, scope: &Scope<'_>, days: u32) -> Result<(), String> {
    let Store::S3 { client, dest } = store else {
        return Err("not an S3 bucket".into());
    };
    let existing = match client
        .get_bucket_lifecycle_configuration()
        .bucket(&dest.bucket)
        .send()
        .await
    {
        Ok(out) => out.rules().to_vec(),
        Err(e) => {
            let code = e.as_service_error().and_then(|s| {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                s.code().map(String::from)
            });
            if code.as_deref() == Some("NoSuchLifecycleConfiguration") {
                Vec::new()
            } else {
                return Err(code.unwrap_or_else(|| crate::store::s3::error_chain(&e)));
            }
        }
    };
    let rules = merge_rules(&existing, scope.tracker, scope.prefix, days);
    let config = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .map_err(|e| e.to_string())?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(&dest.bucket)
        .lifecycle_configuration(config)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata as _;
            e.code()
                .map(String::from)
                .unwrap_or_else(|| crate::store::s3::error_chain(&e))
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

    #[test]
    fn the_own_rule_is_merged_and_others_are_kept() {
        let other = LifecycleRule::builder()
            .id("logs-90d")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
            .expiration(LifecycleExpiration::builder().days(90).build())
            .build()
            .unwrap();
        let first = merge_rules(std::slice::from_ref(&other), "audit", "trail/prod", 30);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], other);
        assert_eq!(first[1].id(), Some("kubetrail-audit"));
        assert_eq!(first[1].expiration().and_then(|e| e.days()), Some(30));
        assert_eq!(first[1].filter().and_then(|f| f.prefix()), Some("trail/prod/"));
        // Changed days replace the own rule, never duplicate it.
        let again = merge_rules(&first, "audit", "trail/prod", 7);
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].expiration().and_then(|e| e.days()), Some(7));
    }
}
