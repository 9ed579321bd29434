//! The trail of a tracker, looked after by the lease holder: its digest signing
//! keys published in status, the continuous integrity check (condition
//! `IntegrityVerified`), and retention.

use super::Context;
use crate::api::{
    ConditionType, FALSE, IntegrityStatus, Problem, PublicKeyStatus, Reason, RetentionStatus, TRUE, Tracker,
    TrackerStatus, UNKNOWN, condition, remove_condition, set_condition,
};
use crate::integrity::{PublicKey, retention, verify};
use crate::store::Store;
use crate::telemetry::TrackerLabels;
use futures::FutureExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The continuous check covers at least this much of the trail.
const VERIFY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How soon a tracker whose trail is being verified is looked at again.
const VERIFY_POLL: Duration = Duration::from_secs(2);
/// How often retention is enforced.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The last verification of a tracker's trail.
pub struct Verified {
    at: Instant,
    generation: Option<i64>,
    when: jiff::Timestamp,
    /// `Ok(None)`: whole; `Ok(Some(problem))`: a problem;
    /// `Err`: the check could not run.
    result: Result<Option<Problem>, String>,
    summary: String,
    known: verify::Known,
}

/// The last retention run of a tracker: when, for which generation, outcome.
pub type Retained = (Instant, Option<i64>, Result<retention::Outcome, String>);

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the integrity and retention parts of `status`; returns how soon to look
/// again. `store` is the tracker's destination, already checked.
pub async fn reconcile(
    tracker: &Tracker,
    ctx: &Context,
    store: &Store,
    status: &mut TrackerStatus,
    now: &Time,
) -> Option<Duration> {
    let mut next: Option<Duration> = None;
    let mut sooner = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
    if let Some(d) = integrity(tracker, ctx, store, status, now).await {
        sooner(d);
    }
    if let Some(d) = retain(tracker, ctx, store, status).await {
        sooner(d);
    }
    next
}

async fn integrity(
    tracker: &Tracker,
    ctx: &Context,
    store: &Store,
    status: &mut TrackerStatus,
    now: &Time,
) -> Option<Duration> {
    let name = tracker.name_any();
    let spec = &tracker.spec.integrity;
    let generation = tracker.metadata.generation;
    let labels = TrackerLabels {
        tracker: name.clone(),
    };
    if !spec.digests {
        remove_condition(&mut status.conditions, ConditionType::IntegrityVerified);
        guard(&ctx.verified).remove(&name);
        ctx.metrics.integrity_verified.remove(&labels);
        return None;
    }
    let signer = match ctx
        .signing_keys
        .get(
            &ctx.client,
            &ctx.settings.namespace,
            spec.signing_key_secret_ref.as_ref(),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            set_condition(
                &mut status.conditions,
                ConditionType::IntegrityVerified,
                FALSE,
                e.reason(),
                &format!("{e}: digests are not written"),
                generation,
                now,
            );
            return Some(Duration::from_secs(30));
        }
    };
    let integ = status.integrity.get_or_insert_with(IntegrityStatus::default);
    publish_key(integ, signer.fingerprint(), &signer.public_key_b64(), now);
    let interval = crate::api::Duration::or(&spec.verify_interval, Duration::from_secs(3600))
        .max(Duration::from_secs(10));
    let running = verify_if_due(tracker, ctx, store, status, interval);
    // While a check runs, look again soon to publish its result.
    let soon = |next: Duration| if running { next.min(VERIFY_POLL) } else { next };
    let (when, result, summary, at) = {
        let map = guard(&ctx.verified);
        let Some(v) = map.get(&name) else {
            return Some(soon(interval));
        };
        (v.when, v.result.clone(), v.summary.clone(), v.at)
    };
    report_verified(tracker, ctx, status, when, &result, &summary, now).await;
    Some(soon(interval.saturating_sub(at.elapsed())).max(Duration::from_secs(1)))
}

/// Publishes the signing key in status (once) and closes the windows of the
/// keys it replaced.
fn publish_key(integ: &mut IntegrityStatus, fingerprint: &str, public_key: &str, now: &Time) {
    if !integ.public_keys.iter().any(|k| k.fingerprint == fingerprint) {
        tracing::info!(fingerprint, "publishing digest public key");
        integ.public_keys.push(PublicKeyStatus {
            fingerprint: fingerprint.to_string(),
            public_key: public_key.to_string(),
            since: now.clone(),
            until: None,
        });
    }
    rotate_windows(&mut integ.public_keys, fingerprint, now);
}

/// Marks a tracker's trail as being verified for as long as its task lives
/// (however the task ends).
struct Running(std::sync::Arc<Mutex<std::collections::HashSet<String>>>, String);

impl Drop for Running {
    fn drop(&mut self) {
        guard(&self.0).remove(&self.1);
    }
}

/// Starts a verification of the trail's last day (at least) when the interval
/// has passed or the spec changed, in a task of its own: a long check never
/// holds up the reconcile. The result waits in `ctx.verified` for the next
/// reconcile. Files checked before and unchanged are not fetched again.
/// Returns whether a verification is running.
fn verify_if_due(
    tracker: &Tracker,
    ctx: &Context,
    store: &Store,
    status: &TrackerStatus,
    interval: Duration,
) -> bool {
    let name = tracker.name_any();
    let spec = &tracker.spec.integrity;
    let generation = tracker.metadata.generation;
    let Some(integ) = status.integrity.as_ref() else {
        return false;
    };
    if guard(&ctx.verifying).contains(&name) {
        return true;
    }
    let (due, known) = {
        let map = guard(&ctx.verified);
        match map.get(&name) {
            Some(v) if v.generation == generation && v.at.elapsed() < interval => (false, v.known.clone()),
            Some(v) => (true, v.known.clone()),
            None => (true, verify::Known::default()),
        }
    };
    if !due {
        return false;
    }
    let keys = trusted_keys(&integ.public_keys);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let window = VERIFY_WINDOW.max(interval * 2).as_millis() as i64;
    let req = verify::Request {
        trail: crate::store::Trail::new(
            store.clone(),
            tracker.spec.destination.prefix.trim_end_matches('/'),
            &ctx.settings.cluster,
            &name,
        ),
        from_ms: now_ms - window,
        to_ms: now_ms,
        keys,
        oldest_kept_ms: tracker
            .spec
            .destination
            .retention_days
            .map(|d| retention::oldest_day_kept(now_ms, d)),
        now_ms,
        parallelism: 8,
        known: Some(known.clone()),
        skew_ms: verify::DEFAULT_SKEW_MS,
        heads: Some(status.chain_heads.clone()),
        known_writers: status.writers.iter().map(|w| w.writer.clone()).collect(),
        period_ms: crate::api::Duration::parse(&spec.digest_period)
            .ok()
            .map(|d| d.get().max(crate::integrity::MIN_PERIOD).as_millis() as i64),
    };
    guard(&ctx.verifying).insert(name.clone());
    let verified = ctx.verified.clone();
    let running = Running(ctx.verifying.clone(), name.clone());
    tokio::spawn(async move {
        let _running = running;
        let started = Instant::now();
        let (result, summary) = match verify::verify(&req).boxed().await {
            Ok(report) => {
                let summary = report.summary_line();
                let problem = report.first_problem();
                (Ok(problem), summary)
            }
            Err(e) => (Err(e.to_string()), String::new()),
        };
        tracing::info!(tracker = %name, ms = started.elapsed().as_millis() as u64, %summary, error = ?result.as_ref().err(), "trail verified");
        guard(&verified).insert(
            name.clone(),
            Verified {
                at: Instant::now(),
                generation,
                when: jiff::Timestamp::now(),
                result,
                summary,
                known,
            },
        );
    });
    true
}

/// `IntegrityVerified` and the integrity status from the last verification; a
/// new problem is an Event too.
async fn report_verified(
    tracker: &Tracker,
    ctx: &Context,
    status: &mut TrackerStatus,
    when: jiff::Timestamp,
    result: &Result<Option<Problem>, String>,
    summary: &str,
    now: &Time,
) {
    let name = tracker.name_any();
    let generation = tracker.metadata.generation;
    let labels = TrackerLabels {
        tracker: name.clone(),
    };
    let was = condition(&status.conditions, ConditionType::IntegrityVerified)
        .map(|c| (c.status.clone(), c.reason.clone()));
    let integ = status.integrity.get_or_insert_with(IntegrityStatus::default);
    integ.last_verified = Some(Time(when));
    match result {
        Ok(None) => {
            integ.last_result = Some(summary.to_string());
            set_condition(
                &mut status.conditions,
                ConditionType::IntegrityVerified,
                TRUE,
                Reason::Verified,
                summary,
                generation,
                now,
            );
            ctx.metrics.integrity_verified.get_or_create(&labels).set(1);
        }
        Ok(Some(Problem { reason, message })) => {
            let reason = *reason;
            integ.last_result = Some(summary.to_string());
            let message = format!("{summary}; first: {message}");
            set_condition(
                &mut status.conditions,
                ConditionType::IntegrityVerified,
                FALSE,
                reason,
                &message,
                generation,
                now,
            );
            ctx.metrics.integrity_verified.get_or_create(&labels).set(0);
            if was != Some((FALSE.to_string(), reason.to_string())) {
                tracing::warn!(tracker = %name, %reason, %message, "trail integrity problem");
                super::publish(
                    ctx,
                    tracker,
                    EventType::Warning,
                    reason.as_str(),
                    "Verify",
                    &message,
                )
                .await;
            }
        }
        Err(e) => {
            integ.last_result = Some(format!("verification failed: {e}"));
            set_condition(
                &mut status.conditions,
                ConditionType::IntegrityVerified,
                UNKNOWN,
                Reason::VerifyFailed,
                &format!("the trail could not be read: {e}"),
                generation,
                now,
            );
        }
    }
}

/// Closes the window of every key but the one signing now, and reopens that
/// one's (a key rotated back to signs again from now on).
pub fn rotate_windows(keys: &mut [PublicKeyStatus], signing: &str, now: &Time) {
    for k in keys.iter_mut() {
        if k.fingerprint == signing {
            if k.until.take().is_some() {
                tracing::info!(fingerprint = %k.fingerprint, "a rotated-away key signs again");
            }
        } else if k.until.is_none() {
            tracing::info!(fingerprint = %k.fingerprint, "digest key rotated away: its window closes now");
            k.until = Some(now.clone());
        }
    }
}

/// The published keys, each trusted only within its window.
pub fn trusted_keys(keys: &[PublicKeyStatus]) -> Vec<PublicKey> {
    keys.iter()
        .filter_map(|k| {
            PublicKey::parse(&k.public_key).ok().map(|p| {
                p.with_window(
                    Some(k.since.0.as_millisecond()),
                    k.until.as_ref().map(|u| u.0.as_millisecond()),
                )
            })
        })
        .collect()
}

async fn retain(
    tracker: &Tracker,
    ctx: &Context,
    store: &Store,
    status: &mut TrackerStatus,
) -> Option<Duration> {
    let name = tracker.name_any();
    let Some(days) = tracker.spec.destination.retention_days else {
        status.retention = None;
        return None;
    };
    let generation = tracker.metadata.generation;
    let previous = guard(&ctx.retained).get(&name).cloned();
    let due = match &previous {
        Some((at, g, _)) => *g != generation || at.elapsed() >= RETENTION_EVERY,
        None => true,
    };
    let outcome = if due {
        let dest = &tracker.spec.destination;
        let shared = match Api::<Tracker>::all(ctx.client.clone())
            .list(&Default::default())
            .await
        {
            Ok(list) => list.items.iter().any(|t| {
                t.name_any() != name
                    && t.spec.destination.bucket == dest.bucket
                    && t.spec.destination.prefix.trim_end_matches('/') == dest.prefix.trim_end_matches('/')
            }),
            // Unknown: assume shared, so no rule can expire another's files.
            Err(_) => true,
        };
        let prefix = dest.prefix.trim_end_matches('/').to_string();
        let scope = retention::Scope {
            prefix: &prefix,
            cluster: &ctx.settings.cluster,
            tracker: &name,
            prefix_shared: shared,
        };
        let result = retention::enforce(
            store,
            &scope,
            days,
            tracker.spec.retention.mode,
            jiff::Timestamp::now().as_millisecond(),
        )
        .boxed()
        .await
        .map_err(|e| e.to_string());
        if let Ok(o) = &result
            && o.deleted > 0
        {
            ctx.metrics
                .retention_deleted
                .get_or_create(&TrackerLabels {
                    tracker: name.clone(),
                })
                .inc_by(o.deleted as u64);
        }
        guard(&ctx.retained).insert(name.clone(), (Instant::now(), generation, result.clone()));
        result
    } else {
        previous
            .map(|(_, _, r)| r)
            .unwrap_or_else(|| Err("not run yet".into()))
    };
    let now_ms = jiff::Timestamp::now().as_millisecond();
    status.retention = Some(match outcome {
        Ok(o) => RetentionStatus {
            mode: o.mode.to_string(),
            oldest_day_kept: retention::day_string(o.oldest_day_kept),
            message: o.message,
        },
        Err(e) => RetentionStatus {
            mode: "operator".into(),
            oldest_day_kept: retention::day_string(retention::oldest_day_kept(now_ms, days)),
            message: Some(format!("enforcing retention failed: {e}")),
        },
    });
    Some(RETENTION_EVERY)
}
