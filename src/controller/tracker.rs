//! The Tracker reconciler: checks the destination and reports it in status.

use super::{Context, FIELD_MANAGER, TRACKER_FINALIZER, publish};
use crate::api::{
    ConditionType, FALSE, Problem, Reason, TRUE, Tracker, TrackerPhase, TrackerStatus, UNKNOWN, condition,
    set_condition,
};
use crate::store::{self, Credentials, StoreError};
use crate::telemetry::{ControllerLabels, ReconcileLabels};
use futures::{FutureExt as _, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, instrument, warn};

const CONTROLLER: &str = "tracker";

/// How soon a tracker whose credentials Secret is missing or wrong is checked
/// again (Secrets are not watched).
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(15);

/// Errors of a Tracker reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A stable name for each kind of failure: the metric label and the
    /// Warning event's reason.
    fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(_) => "KubeError",
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(Error::Kube(_)) => "ApplyKubeError",
                F::ApplyFailed(Error::Finalizer(_)) => "ApplyFailed",
                F::CleanupFailed(Error::Kube(_)) => "CleanupKubeError",
                F::CleanupFailed(Error::Finalizer(_)) => "CleanupFailed",
                F::AddFinalizer(_) => "AddFinalizerFailed",
                F::RemoveFinalizer(_) => "RemoveFinalizerFailed",
                F::UnnamedObject => "UnnamedObject",
                F::InvalidFinalizer => "InvalidFinalizer",
            },
        }
    }
}

/// The error and its causes, one after the other.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Runs the Tracker controller until the process is asked to stop.
pub async fn run(ctx: Arc<Context>) {
    let trackers: Api<Tracker> = Api::all(ctx.client.clone());
    let config = ctx.watch_config();
    // Credentials Secrets are read by name when a tracker is checked, never
    // listed or watched: a tracker whose Secret is missing or wrong is checked
    // again within CREDENTIALS_RECHECK.
    Controller::new(trackers, config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[instrument(skip_all, fields(tracker = %tracker.name_any()))]
async fn reconcile(tracker: Arc<Tracker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<Tracker> = Api::all(ctx.client.clone());
    // The drain wait is decided before `finalizer`: it removes the finalizer
    // after any successful cleanup, whatever the Action says.
    let result = match drain_wait(&tracker, &ctx).await {
        Some(again) => Ok(again),
        None => finalizer(&api, TRACKER_FINALIZER, tracker, |event| async {
            match event {
                Finalizer::Apply(t) => apply(&t, &ctx).await,
                Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e))),
    };
    ctx.metrics
        .reconcile_duration
        .get_or_create(&ControllerLabels {
            controller: CONTROLLER,
        })
        .observe(started.elapsed().as_secs_f64());
    result
}

fn error_policy(tracker: Arc<Tracker>, err: &Error, ctx: Arc<Context>) -> Action {
    let reason = err.reason();
    let message = chain(err);
    warn!(tracker = %tracker.name_any(), reason, error = %message, "reconcile failed");
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: CONTROLLER,
            result: reason,
        })
        .inc();
    // A Warning event on the Tracker with the whole chain (error_policy is not
    // async, so it is published from a task).
    let delay = ctx.backoff(&tracker.name_any());
    tokio::spawn(async move {
        publish(
            &ctx,
            tracker.as_ref(),
            EventType::Warning,
            reason,
            "Reconcile",
            &message,
        )
        .await;
    });
    Action::requeue(delay)
}

/// Brings the tracker's status in line with its spec and destination.
async fn apply(tracker: &Tracker, ctx: &Context) -> Result<Action, Error> {
    let name = tracker.name_any();
    let generation = tracker.metadata.generation;
    let now = Time(jiff::Timestamp::now());
    let mut status = tracker.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    let outcome = if tracker.spec.enabled {
        Some(check_destination(tracker, ctx).await)
    } else {
        None
    };

    let action = match &outcome {
        None => disabled(ctx, &name, &mut status, generation, &now),
        Some(Ok(store)) => reachable(tracker, ctx, store, &mut status, &now).await,
        Some(Err(error)) => unusable(tracker, ctx, error, &mut status, &now).await,
    };
    let was_ready = tracker
        .status
        .as_ref()
        .and_then(|s| condition(&s.conditions, ConditionType::Ready))
        .map(|c| c.status == TRUE)
        .unwrap_or(false);
    let is_ready = matches!(outcome, Some(Ok(_))) && status.phase == Some(TrackerPhase::Enabled);
    if is_ready && !was_ready {
        info!("tracker ready");
        publish(
            ctx,
            tracker,
            EventType::Normal,
            Reason::Ready.as_str(),
            "CheckDestination",
            "destination reachable; tracker is delivering",
        )
        .await;
    }

    write_status(tracker, status, ctx).await?;
    let result = match &outcome {
        Some(Err(e)) => e.reason().as_str(),
        _ => "ok",
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: CONTROLLER,
            result,
        })
        .inc();
    Ok(action)
}

/// A disabled tracker: delivers nothing, its destination is not checked.
fn disabled(
    ctx: &Context,
    name: &str,
    status: &mut TrackerStatus,
    generation: Option<i64>,
    now: &Time,
) -> Action {
    status.phase = Some(TrackerPhase::Disabled);
    status.last_error = None;
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        FALSE,
        Reason::Disabled,
        "tracker is disabled: it delivers nothing",
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        ConditionType::DestinationReachable,
        UNKNOWN,
        Reason::Disabled,
        "not checked while the tracker is disabled",
        generation,
        now,
    );
    ctx.reset_backoff(name);
    Action::await_change()
}

/// A reachable destination: the trail's part (keys, verification, retention),
/// then Ready from what the writers report.
async fn reachable(
    tracker: &Tracker,
    ctx: &Context,
    store: &store::Store,
    status: &mut TrackerStatus,
    now: &Time,
) -> Action {
    let name = tracker.name_any();
    let generation = tracker.metadata.generation;
    let trail_next = super::trail::reconcile(tracker, ctx, store, status, now)
        .boxed()
        .await;
    let dest = &tracker.spec.destination;
    let msg = format!("bucket {} is reachable", dest.bucket);
    set_condition(
        &mut status.conditions,
        ConditionType::DestinationReachable,
        TRUE,
        Reason::BucketReachable,
        &msg,
        generation,
        now,
    );
    ctx.reset_backoff(&name);
    match delivery_problem(status, jiff::Timestamp::now()) {
        None => {
            status.phase = Some(TrackerPhase::Enabled);
            status.last_error = None;
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                TRUE,
                Reason::Ready,
                "tracker is delivering",
                generation,
                now,
            );
            Action::requeue(trail_next.map_or(ctx.settings.recheck_interval, |d| {
                d.min(ctx.settings.recheck_interval)
            }))
        }
        Some(Problem { reason, message }) => {
            // HeadBucket works, yet files are not delivered (a KMS or
            // write permission, say) or the backlog overflows.
            status.phase = Some(TrackerPhase::Error);
            status.last_error = Some(message.clone());
            let was = tracker
                .status
                .as_ref()
                .and_then(|s| condition(&s.conditions, ConditionType::Ready))
                .map(|c| c.reason.clone());
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                FALSE,
                reason,
                &message,
                generation,
                now,
            );
            if was.as_deref() != Some(reason.as_str()) {
                warn!(%reason, error = %message, "delivery problem");
                publish(
                    ctx,
                    tracker,
                    EventType::Warning,
                    reason.as_str(),
                    "Deliver",
                    &message,
                )
                .await;
            }
            Action::requeue(Duration::from_secs(30))
        }
    }
}

/// A destination that cannot be used: both conditions say why, an Event too,
/// and it is checked again with backoff (sooner for a credentials Secret).
async fn unusable(
    tracker: &Tracker,
    ctx: &Context,
    error: &StoreError,
    status: &mut TrackerStatus,
    now: &Time,
) -> Action {
    let name = tracker.name_any();
    let generation = tracker.metadata.generation;
    let problem = error.problem();
    // Dropping traces is the graver news: it names Ready's reason.
    let ready = match delivery_problem(status, jiff::Timestamp::now()) {
        Some(p) if p.reason == Reason::BacklogOverflow => {
            Problem::new(p.reason, format!("{}; {}", p.message, problem.message))
        }
        _ => problem.clone(),
    };
    status.phase = Some(TrackerPhase::Error);
    status.last_error = Some(ready.message.clone());
    set_condition(
        &mut status.conditions,
        ConditionType::DestinationReachable,
        FALSE,
        problem.reason,
        &problem.message,
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        FALSE,
        ready.reason,
        &ready.message,
        generation,
        now,
    );
    warn!(reason = %ready.reason, error = %ready.message, "destination not usable");
    publish(
        ctx,
        tracker,
        EventType::Warning,
        ready.reason.as_str(),
        "CheckDestination",
        &ready.message,
    )
    .await;
    let delay = ctx.backoff(&name);
    if matches!(
        error,
        StoreError::CredentialsNotFound { .. } | StoreError::CredentialsInvalid { .. }
    ) {
        Action::requeue(delay.min(CREDENTIALS_RECHECK))
    } else {
        Action::requeue(delay)
    }
}

/// How long writes may fail before `Ready` turns False (a transient S3 error
/// that a retry fixes is not worth an alarm).
const DELIVERY_GRACE_SECONDS: i64 = 60;

/// A delivery problem the writers report: a backlog over its budget, or writes
/// failing for longer than [`DELIVERY_GRACE_SECONDS`] (with the reason the
/// writer reported, `DeliveryFailing` when it reported none). Pure, for unit tests.
pub fn delivery_problem(status: &TrackerStatus, now: jiff::Timestamp) -> Option<Problem> {
    if let Some(w) = status.writers.iter().find(|w| w.backlog_overflow) {
        return Some(Problem::new(
            Reason::BacklogOverflow,
            format!(
                "writer {} is over the tracker's backlog budget and drops its oldest traces \
                 ({} dropped by it, {} in all); the destination is not keeping up{}",
                w.writer,
                w.events_dropped,
                status.events_dropped,
                w.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let failing = status.writers.iter().find(|w| {
        w.failing_since
            .as_ref()
            .is_some_and(|t| now.as_second() - t.0.as_second() >= DELIVERY_GRACE_SECONDS)
    })?;
    Some(Problem::new(
        failing.last_error_reason.unwrap_or(Reason::DeliveryFailing),
        format!(
            "writer {} cannot write trace files: {}",
            failing.writer,
            failing.last_error.as_deref().unwrap_or_default()
        ),
    ))
}

/// Longest a deleted Tracker waits for its writers to deliver their open files.
const DRAIN_WAIT_SECONDS: i64 = 120;

/// Runs when a Tracker is deleted and its writers are done ([`drain_wait`]:
/// every replica stops the tracker's pipeline as soon as the deletion is
/// requested, and the pipeline first delivers its open files; the finalizer
/// stays until no writer's report says it still delivers the tracker, or two
/// minutes have passed), so the object disappears only once its last traces
/// are in the bucket. Says so in an Event; the finalizer goes after it.
async fn cleanup(tracker: &Tracker, ctx: &Context) -> Result<Action, Error> {
    info!("tracker deleted");
    ctx.reset_backoff(&tracker.name_any());
    publish(
        ctx,
        tracker,
        EventType::Normal,
        "Deleted",
        "Cleanup",
        "tracker removed; files already delivered stay in the bucket",
    )
    .await;
    Ok(Action::await_change())
}

/// While a deleted tracker (still holding our finalizer) has writers
/// delivering its open files: when to look again. `None` once none does, or
/// after [`DRAIN_WAIT_SECONDS`], or for a tracker not being deleted.
async fn drain_wait(tracker: &Tracker, ctx: &Context) -> Option<Action> {
    let deleted = tracker.metadata.deletion_timestamp.as_ref()?;
    if !tracker.finalizers().iter().any(|f| f == TRACKER_FINALIZER) {
        return None;
    }
    let since = jiff::Timestamp::now().as_second() - deleted.0.as_second();
    if since >= DRAIN_WAIT_SECONDS {
        warn!("writers did not confirm delivering the deleted tracker's open files in time");
        return None;
    }
    let fresh = Duration::from_secs(120);
    match super::report::still_delivering(ctx, &tracker.name_any(), fresh).await {
        Ok(writers) if !writers.is_empty() => {
            info!(
                ?writers,
                "waiting for writers to deliver the deleted tracker's open files"
            );
            Some(Action::requeue(Duration::from_secs(2)))
        }
        Ok(_) => None,
        Err(e) => {
            warn!(error = %e, "reading delivery reports failed; retrying");
            Some(Action::requeue(Duration::from_secs(2)))
        }
    }
}

/// Opens the destination with its credentials and checks the bucket.
async fn check_destination(tracker: &Tracker, ctx: &Context) -> Result<store::Store, StoreError> {
    let creds = Credentials::Secret {
        client: &ctx.client,
        namespace: &ctx.settings.namespace,
    };
    let store = store::open(&tracker.spec.destination, creds).await?;
    store.check().await?;
    Ok(store)
}

/// Writes the reconciler's part of the status (phase, conditions,
/// observedGeneration, lastError) with server-side apply, and only when it changed.
/// Delivery fields belong to the delivery writers and are left alone.
async fn write_status(tracker: &Tracker, status: TrackerStatus, ctx: &Context) -> Result<(), Error> {
    let owned = |s: &TrackerStatus| {
        serde_json::json!({
            "phase": s.phase,
            "conditions": s.conditions,
            "observedGeneration": s.observed_generation,
            "lastError": s.last_error,
            "integrity": s.integrity,
            "retention": s.retention,
        })
    };
    let wanted = owned(&status);
    if tracker.status.as_ref().map(owned).as_ref() == Some(&wanted) {
        return Ok(());
    }
    let mut fields = wanted;
    if let Some(map) = fields.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let api: Api<Tracker> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": "kubetrail.io/v1alpha1",
        "kind": "Tracker",
        "status": fields,
    });
    api.patch_status(
        &tracker.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::Kube)?;
    ctx.metrics
        .status_patches
        .get_or_create(&ControllerLabels {
            controller: CONTROLLER,
        })
        .inc();
    Ok(())
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use kube::runtime::finalizer::Error as F;

    #[test]
    fn each_error_kind_has_its_own_reason() {
        let kube = || kube::Error::Service("connection refused".into());
        let errors = [
            Error::Kube(kube()),
            Error::Finalizer(Box::new(F::ApplyFailed(Error::Kube(kube())))),
            Error::Finalizer(Box::new(F::CleanupFailed(Error::Kube(kube())))),
            Error::Finalizer(Box::new(F::AddFinalizer(kube()))),
            Error::Finalizer(Box::new(F::RemoveFinalizer(kube()))),
            Error::Finalizer(Box::new(F::UnnamedObject)),
            Error::Finalizer(Box::new(F::InvalidFinalizer)),
        ];
        let reasons: std::collections::HashSet<&str> = errors.iter().map(Error::reason).collect();
        assert_eq!(reasons.len(), errors.len(), "{reasons:?}");
        assert!(!reasons.contains("FinalizerError"));
        let text = chain(&errors[1]);
        assert!(
            text.contains("connection refused"),
            "the chain names the cause: {text}"
        );
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::*;
    use crate::api::WriterStatus;

    fn writer(name: &str) -> WriterStatus {
        WriterStatus {
            writer: name.into(),
            incarnation: "i".into(),
            events: 0,
            files: 0,
            last_delivery: None,
            last_error: None,
            last_error_reason: None,
            failing_since: None,
            events_dropped: 0,
            backlog_overflow: false,
        }
    }

    #[test]
    fn ready_reflects_delivery_not_only_head_bucket() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut status = TrackerStatus {
            writers: vec![writer("a"), writer("b")],
            ..Default::default()
        };
        assert_eq!(delivery_problem(&status, now), None);
        // Failing for a moment: a retry may fix it.
        status.writers[1].last_error = Some("AccessDenied: access to bucket \"x\" denied".into());
        status.writers[1].last_error_reason = Some(Reason::AccessDenied);
        status.writers[1].failing_since =
            Some(Time(jiff::Timestamp::from_second(1_800_000_000 - 10).unwrap()));
        assert_eq!(delivery_problem(&status, now), None);
        status.writers[1].failing_since =
            Some(Time(jiff::Timestamp::from_second(1_800_000_000 - 120).unwrap()));
        let Problem { reason, message } = delivery_problem(&status, now).unwrap();
        assert_eq!(reason, Reason::AccessDenied);
        assert!(
            message.contains("writer b") && message.contains("denied"),
            "{message}"
        );
        // A backlog over budget wins, with the counts.
        status.writers[0].backlog_overflow = true;
        status.writers[0].events_dropped = 42;
        status.events_dropped = 50;
        let Problem { reason, message } = delivery_problem(&status, now).unwrap();
        assert_eq!(reason, Reason::BacklogOverflow);
        assert!(message.contains("42 dropped by it, 50 in all"), "{message}");
    }

    #[test]
    fn the_reason_is_the_reported_one_never_read_from_the_message() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut w = writer("a");
        w.failing_since = Some(Time(jiff::Timestamp::from_second(1_800_000_000 - 120).unwrap()));
        // A message that looks like it starts with a reason is only a message.
        w.last_error = Some("BucketNotFound: something else".into());
        let mut status = TrackerStatus {
            writers: vec![w],
            ..Default::default()
        };
        assert_eq!(
            delivery_problem(&status, now).unwrap().reason,
            Reason::DeliveryFailing,
            "no reason reported (an older writer's report)"
        );
        status.writers[0].last_error_reason = Some(Reason::CredentialsNotFound);
        assert_eq!(
            delivery_problem(&status, now).unwrap().reason,
            Reason::CredentialsNotFound
        );
    }

    /// A writer that cannot open its store because the credentials Secret is
    /// missing reports `CredentialsNotFound`, and the tracker's `Ready` takes
    /// that reason once writes have failed for a minute (it was `SinkUnavailable`
    /// when the reason travelled as text).
    #[test]
    fn a_store_error_reason_reaches_ready_unchanged() {
        use crate::api::{Problem, Reason};
        use crate::controller::report::{Report, TrackerReport, WriterReport, fold};
        use crate::deliver::pipeline::DeliveryStats;
        use crate::store::StoreError;
        use std::collections::BTreeMap;
        let missing = StoreError::CredentialsNotFound {
            namespace: "kubetrail".into(),
            name: "s3".into(),
        };
        let since = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let stats = DeliveryStats {
            last_error: Some(missing.problem()),
            failing_since: Some(since),
            ..Default::default()
        };
        // Through the Lease annotation, as another replica reads it.
        let json = serde_json::to_string(&TrackerReport::of(&stats, true)).unwrap();
        let report: TrackerReport = serde_json::from_str(&json).unwrap();
        let mut trackers = BTreeMap::new();
        trackers.insert("t".to_string(), report);
        let reports = [WriterReport {
            writer: "a".into(),
            renewed: Some(since),
            report: Report {
                incarnation: "a1".into(),
                trackers,
                notifications: BTreeMap::new(),
            },
        }];
        let status = fold("t", &TrackerStatus::default(), &reports);
        let w = &status.writers[0];
        assert_eq!(w.last_error_reason, Some(Reason::CredentialsNotFound));
        assert_eq!(
            w.last_error.as_deref(),
            Some("CredentialsNotFound: credentials Secret kubetrail/s3 not found")
        );
        let later = jiff::Timestamp::from_second(1_800_000_000 + 120).unwrap();
        let Problem { reason, message } = delivery_problem(&status, later).unwrap();
        assert_eq!(reason, Reason::CredentialsNotFound);
        assert!(message.contains("kubetrail/s3"), "{message}");
    }
}

/// The reconciler against a mocked API (no apiserver, no bucket): only the
/// paths that need no S3 (the credentials Secret is read before the bucket is
/// contacted; a disabled or deleted tracker contacts no bucket).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mock;
    use crate::controller::report::{REPORT_ANNOTATION, REPORT_LABEL, Report, TrackerReport};
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    const STATUS: &str = "/apis/kubetrail.io/v1alpha1/trackers/t/status";
    const OBJECT: &str = "/apis/kubetrail.io/v1alpha1/trackers/t";
    const SECRET: &str = "/api/v1/namespaces/kubetrail/secrets/s3";
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kubetrail/leases";

    /// Tracker `t` (generation 3) with the credentials Secret `s3`.
    fn tracker(enabled: bool, metadata: serde_json::Value) -> serde_json::Value {
        let mut t = serde_json::json!({
            "apiVersion": "kubetrail.io/v1alpha1", "kind": "Tracker",
            "metadata": {"name": "t", "uid": "u-t", "generation": 3, "resourceVersion": "9",
                "finalizers": [TRACKER_FINALIZER]},
            "spec": {"enabled": enabled, "destination": {"bucket": "audit", "prefix": "prod",
                "credentialsSecretRef": {"name": "s3"}}},
        });
        if let (Some(meta), Some(extra)) = (t["metadata"].as_object_mut(), metadata.as_object()) {
            meta.extend(extra.clone());
        }
        t
    }

    fn is_event(path: &str) -> bool {
        path.starts_with("/apis/events.k8s.io/v1/")
    }

    /// The Secret is missing: Ready and DestinationReachable are False with
    /// reason CredentialsNotFound, a Warning event says so, the tracker is
    /// checked again on the backoff but never later than 15 s (Secrets are not
    /// watched), and nothing but the status and events is written.
    #[tokio::test]
    async fn missing_credentials_secret_is_not_ready_and_checked_again_within_15s() {
        let object = tracker(true, serde_json::json!({}));
        let answer = object.clone();
        let (ctx, calls) = mock::context(Box::new(move |method, path, body| {
            match (method.as_str(), path) {
                ("GET", SECRET) => mock::not_found("secrets \"s3\""),
                ("PATCH", STATUS) => mock::patched_status(&answer, body),
                ("POST" | "PATCH", p) if is_event(p) => (200, body.clone()),
                _ => mock::not_found(path),
            }
        }));
        let t: Tracker = serde_json::from_value(object).unwrap();
        let mut delays = Vec::new();
        for _ in 0..5 {
            let action = reconcile(Arc::new(t.clone()), ctx.clone()).await.unwrap();
            delays.push(action);
        }
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(delays, [secs(2), secs(4), secs(8), secs(15), secs(15)]);

        let patches = calls.to(Method::PATCH, STATUS);
        assert_eq!(patches.len(), 5, "{:?}", calls.all());
        let status = &patches[0].body["status"];
        assert_eq!(status["phase"], "Error");
        assert_eq!(status["observedGeneration"], 3);
        for type_ in ["Ready", "DestinationReachable"] {
            assert_eq!(
                mock::condition_of(status, type_),
                Some(("False".into(), "CredentialsNotFound".into(), 3)),
                "{type_}: {status}"
            );
        }
        let last_error = status["lastError"].as_str().unwrap();
        assert!(last_error.contains("kubetrail/s3"), "{last_error}");

        let event = &calls.to(Method::POST, "/events")[0];
        assert_eq!(
            (&event.body["type"], &event.body["reason"]),
            (&"Warning".into(), &"CredentialsNotFound".into())
        );
        for c in calls.all() {
            match c.method {
                Method::GET => assert_eq!(c.path, SECRET, "only the Secret is read"),
                _ => assert!(
                    c.path == STATUS || is_event(&c.path),
                    "only status and events are written (no finalizer patch): {} {}",
                    c.method,
                    c.path
                ),
            }
        }
    }

    /// A disabled tracker reads nothing (not even its Secret): Ready False and
    /// DestinationReachable Unknown, both with reason Disabled, and it waits for
    /// a change; a status that already says so is not written again.
    #[tokio::test]
    async fn a_disabled_tracker_reads_nothing_and_is_written_once() {
        let object = tracker(false, serde_json::json!({}));
        let answer = object.clone();
        let (ctx, calls) = mock::context(Box::new(move |method, path, body| {
            match (method.as_str(), path) {
                ("PATCH", STATUS) => mock::patched_status(&answer, body),
                _ => mock::not_found(path),
            }
        }));
        let t: Tracker = serde_json::from_value(object.clone()).unwrap();
        let action = reconcile(Arc::new(t), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        let all = calls.all();
        assert_eq!(all.len(), 1, "one request, the status patch: {all:?}");
        assert_eq!((&all[0].method, all[0].path.as_str()), (&Method::PATCH, STATUS));
        let status = &all[0].body["status"];
        assert_eq!(status["phase"], "Disabled");
        assert!(status.get("lastError").is_none(), "{status}");
        assert_eq!(
            mock::condition_of(status, "Ready"),
            Some(("False".into(), "Disabled".into(), 3))
        );
        assert_eq!(
            mock::condition_of(status, "DestinationReachable"),
            Some(("Unknown".into(), "Disabled".into(), 3))
        );

        // The next reconcile sees the status it wrote: nothing to do.
        let mut written = object;
        written["status"] = status.clone();
        let t: Tracker = serde_json::from_value(written).unwrap();
        let action = reconcile(Arc::new(t), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        assert_eq!(calls.all().len(), 1, "{:?}", calls.all());
    }

    /// A context whose API holds writer `a`'s fresh report, which says it
    /// (still) delivers tracker `t` when `active`, and tracker `t` being
    /// deleted, with our finalizer second of two.
    fn deleting(active: bool) -> (Arc<Context>, mock::Calls, Tracker) {
        let deleted = serde_json::to_value(Time(jiff::Timestamp::now())).unwrap();
        let object = tracker(
            true,
            serde_json::json!({"deletionTimestamp": deleted,
                "finalizers": ["example.com/other", TRACKER_FINALIZER]}),
        );
        let mut released = object.clone();
        released["metadata"]["finalizers"] = serde_json::json!(["example.com/other"]);
        let mut report = Report {
            incarnation: "a1".into(),
            ..Default::default()
        };
        report.trackers.insert(
            "t".into(),
            TrackerReport {
                active,
                ..Default::default()
            },
        );
        let report = serde_json::to_string(&report).unwrap();
        let (ctx, calls) = mock::context(Box::new(move |method, path, body| {
            match (method.as_str(), path) {
                ("GET", LEASES) => {
                    let renewed = serde_json::to_value(MicroTime(jiff::Timestamp::now())).unwrap();
                    (
                        200,
                        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                            "metadata": {"resourceVersion": "1"},
                            "items": [{"metadata": {"name": "kubetrail-writer-a", "namespace": "kubetrail",
                                "labels": {REPORT_LABEL: "true"},
                                "annotations": {REPORT_ANNOTATION: report}},
                                "spec": {"holderIdentity": "a", "renewTime": renewed}}]}),
                    )
                }
                ("PATCH", OBJECT) => (200, released.clone()),
                ("POST", p) if is_event(p) => mock::created(body),
                _ => mock::not_found(path),
            }
        }));
        (ctx, calls, serde_json::from_value(object).unwrap())
    }

    /// A deleted tracker no writer delivers any more: the writers' reports are
    /// read, then our finalizer (not the other one) is removed by a JSON patch
    /// that first tests it is still at that index, and a `Deleted` event is
    /// published. No status is written and no bucket is contacted.
    #[tokio::test]
    async fn a_deleted_tracker_no_writer_delivers_loses_its_finalizer() {
        let (ctx, calls, t) = deleting(false);
        let action = reconcile(Arc::new(t), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        assert_eq!(calls.to(Method::GET, LEASES).len(), 1, "{:?}", calls.all());
        let removed = calls.to(Method::PATCH, OBJECT);
        assert_eq!(removed.len(), 1, "{:?}", calls.all());
        assert_eq!(
            removed[0].body,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": TRACKER_FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
        let events = calls.to(Method::POST, "/events");
        assert_eq!(events.len(), 1, "{:?}", calls.all());
        assert_eq!(events[0].body["reason"], "Deleted");
        assert!(calls.to(Method::PATCH, STATUS).is_empty(), "no status written");
        assert_eq!(calls.all().len(), 3, "{:?}", calls.all());
    }

    /// The finalizer stays while a writer's fresh report says it still
    /// delivers the tracker's open files, and the tracker is looked at again in
    /// 2 s: nothing is written (`kube::runtime::finalizer` would remove the
    /// finalizer after any successful cleanup, so the wait is decided first).
    #[tokio::test]
    async fn a_deleted_tracker_keeps_its_finalizer_while_a_writer_delivers_it() {
        let (ctx, calls, t) = deleting(true);
        let action = reconcile(Arc::new(t), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(2)));
        assert_eq!(calls.to(Method::GET, LEASES).len(), 1, "{:?}", calls.all());
        assert!(
            calls.all().iter().all(|c| c.method == Method::GET),
            "nothing written while a writer delivers: {:?}",
            calls.all()
        );
    }
}
