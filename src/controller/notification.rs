//! KeyEventNotification status, written by the lease holder. The reconciler
//! ([`run`]) checks a notification when it changes (and again now and then: the
//! HMAC Secret is read, not watched) and says whether it can run in `Ready`
//! (`InvalidCondition`, `SecretNotFound`, `InvalidWebhook`, `KubeError`). The
//! fold round ([`fold_once`]) adds every replica's counters and, for one that
//! can run, whether its messages are failing (`DeliveryFailing`). What a
//! notification needs to run ([`setup`]) is shared with the notifiers every
//! replica runs (`runner::notify`).

use super::Context;
use super::report::WriterReport;
use crate::api::{
    ConditionType, FALSE, KeyEventNotification, KeyEventNotificationSpec, KeyEventNotificationStatus,
    NotifierWriter, Reason, TRUE, condition, set_condition,
};
use crate::notify::message::HMAC_KEY;
use crate::notify::select::{SelectError, Selection};
use crate::notify::send::{Target, TargetError};
use crate::telemetry::ControllerLabels;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use std::sync::Arc;
use std::time::Duration;

/// Why a notification cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Condition(#[from] SelectError),
    #[error("HMAC Secret {namespace}/{name} not found or without key {HMAC_KEY}")]
    SecretNotFound { namespace: String, name: String },
    #[error(transparent)]
    Webhook(#[from] TargetError),
    #[error("reading the HMAC Secret: {0}")]
    Kube(#[from] kube::Error),
}

impl SetupError {
    pub fn reason(&self) -> crate::api::Reason {
        match self {
            Self::Condition(_) => crate::api::Reason::InvalidCondition,
            Self::SecretNotFound { .. } => crate::api::Reason::SecretNotFound,
            Self::Webhook(_) => crate::api::Reason::InvalidWebhook,
            Self::Kube(_) => crate::api::Reason::KubeError,
        }
    }
}

async fn hmac_key(ctx: &Context, spec: &KeyEventNotificationSpec) -> Result<Option<Vec<u8>>, SetupError> {
    let Some(r) = spec.webhook.as_ref().and_then(|w| w.hmac_secret_ref.as_ref()) else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let key = secrets
        .get_opt(&r.name)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| d.get(HMAC_KEY).map(|b| b.0.clone()))
        .filter(|k| !k.is_empty());
    match key {
        Some(k) => Ok(Some(k)),
        None => Err(SetupError::SecretNotFound {
            namespace: ctx.settings.namespace.clone(),
            name: r.name.clone(),
        }),
    }
}

/// What a notification needs to run: its compiled selection and its webhook.
pub async fn setup(
    ctx: &Context,
    spec: &KeyEventNotificationSpec,
) -> Result<(Selection, Option<Target>, Option<Vec<u8>>), SetupError> {
    let selection = Selection::compile(spec)?;
    let key = hmac_key(ctx, spec).await?;
    let target = spec
        .webhook
        .as_ref()
        .map(|w| Target::new(w, key.clone()))
        .transpose()?;
    Ok((selection, target, key))
}

/// The status after folding in every replica's counters. Pure, like the
/// tracker's fold: a writer's process counts from zero, and only its growth
/// since the last fold is added.
pub fn fold(
    name: &str,
    status: &KeyEventNotificationStatus,
    reports: &[WriterReport],
) -> KeyEventNotificationStatus {
    let mut next = status.clone();
    let mut writers = Vec::new();
    for r in reports {
        let prev = status.writers.iter().find(|w| w.writer == r.writer);
        let Some(n) = r.report.notifications.get(name) else {
            if let Some(p) = prev {
                writers.push(p.clone());
            }
            continue;
        };
        let counted = match prev {
            Some(p) if p.incarnation == r.report.incarnation => {
                if n.matched < p.matched || n.sent < p.sent || n.failed < p.failed {
                    writers.push(p.clone());
                    continue;
                }
                (p.matched, p.sent, p.failed)
            }
            _ => (0, 0, 0),
        };
        next.matched += n.matched - counted.0;
        next.sent += n.sent - counted.1;
        next.failed += n.failed - counted.2;
        if let Some(t) = n.last_sent
            && next.last_sent.as_ref().is_none_or(|l| l.0 < t)
        {
            next.last_sent = Some(Time(t));
        }
        if n.last_error.is_some() {
            next.last_error = n.last_error.clone();
        }
        writers.push(NotifierWriter {
            writer: r.writer.clone(),
            incarnation: r.report.incarnation.clone(),
            matched: n.matched,
            sent: n.sent,
            failed: n.failed,
        });
    }
    writers.sort_by(|a, b| a.writer.cmp(&b.writer));
    next.writers = writers;
    next
}

/// The `controller` label of this reconciler's metrics.
const CONTROLLER: &str = "keyeventnotification";
/// How soon a notification that cannot run is checked again (its Secret may
/// have been created meanwhile).
const RETRY: Duration = Duration::from_secs(30);
/// How often one that runs is checked again (its Secret may be gone).
const RECHECK: Duration = Duration::from_secs(300);

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Kube(#[source] kube::Error),
}

/// Runs the KeyEventNotification reconciler until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<KeyEventNotification> = Api::all(ctx.client.clone());
    let config = ctx.watch_config();
    Controller::new(api, config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(n: Arc<KeyEventNotification>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(notification = %n.name_any(), error = %err, "reconcile failed");
    Action::requeue(ctx.backoff(&format!("ken/{}", n.name_any())))
}

/// One reconcile, counted and timed per result
/// (`kubetrail_reconciles_total{controller="keyeventnotification"}`).
async fn reconcile(n: Arc<KeyEventNotification>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_notification(&n, &ctx).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(_) => Reason::KubeError.as_str(),
    };
    ctx.observe_reconcile(CONTROLLER, started, label);
    if result.is_ok() {
        ctx.reset_backoff(&format!("ken/{}", n.name_any()));
    }
    result
}

/// Checks that the notification can run and writes `Ready` if that changed;
/// a notification that runs keeps a `DeliveryFailing` the fold round set.
#[tracing::instrument(skip_all, fields(notification = %n.name_any()))]
async fn reconcile_notification(n: &KeyEventNotification, ctx: &Context) -> Result<Action, Error> {
    let status = n.status.clone().unwrap_or_default();
    let mut next = status.clone();
    let (state, reason, message, again) = match setup(ctx, &n.spec).await {
        Err(e) => {
            tracing::info!(reason = %e.reason(), error = %e, "notification cannot run");
            (FALSE, e.reason(), e.to_string(), RETRY)
        }
        Ok(_)
            if condition(&status.conditions, ConditionType::Ready)
                .is_some_and(|c| c.reason == Reason::DeliveryFailing.as_str()) =>
        {
            return Ok(Action::requeue(RECHECK));
        }
        Ok(_) => (TRUE, Reason::Ready, READY_MESSAGE.to_string(), RECHECK),
    };
    set_condition(
        &mut next.conditions,
        ConditionType::Ready,
        state,
        reason,
        &message,
        n.metadata.generation,
        &Time(jiff::Timestamp::now()),
    );
    if next == status {
        return Ok(Action::requeue(again));
    }
    let api: Api<KeyEventNotification> = Api::all(ctx.client.clone());
    match write_status(&api, n, &next).await {
        Ok(true) => {
            ctx.metrics
                .status_patches
                .get_or_create(&ControllerLabels {
                    controller: CONTROLLER,
                })
                .inc();
            Ok(Action::requeue(again))
        }
        // Changed meanwhile (the fold round wrote): the change brings us back.
        Ok(false) => Ok(Action::requeue(Duration::from_secs(1))),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Writes `next` as the status if the object is still the version read;
/// `false` when it changed or went meanwhile.
async fn write_status(
    api: &Api<KeyEventNotification>,
    n: &KeyEventNotification,
    next: &KeyEventNotificationStatus,
) -> Result<bool, kube::Error> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": n.resource_version()},
        "status": next,
    });
    match api
        .patch_status(&n.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// `Ready`'s message when the notification runs and delivers.
const READY_MESSAGE: &str = "matching traces are notified";

/// Reasons only the reconciler sets (the notification cannot run); the fold
/// round leaves `Ready` alone while one of them holds.
fn cannot_run(reason: &str) -> bool {
    [
        Reason::InvalidCondition,
        Reason::SecretNotFound,
        Reason::InvalidWebhook,
        Reason::KubeError,
    ]
    .iter()
    .any(|r| r.as_str() == reason)
}

/// `Ready` after a fold round, when the fold decides it: `DeliveryFailing`
/// while any replica's latest message is failing, else ready. `None` while the
/// reconciler's word holds (the notification cannot run, or was not checked yet).
fn delivery_ready(
    status: &KeyEventNotificationStatus,
    failing: &[&str],
) -> Option<(&'static str, Reason, String)> {
    let current = condition(&status.conditions, ConditionType::Ready)?;
    if cannot_run(&current.reason) {
        return None;
    }
    Some(if failing.is_empty() {
        (TRUE, Reason::Ready, READY_MESSAGE.to_string())
    } else {
        (
            FALSE,
            Reason::DeliveryFailing,
            format!(
                "{}: {}",
                failing.join(", "),
                status.last_error.clone().unwrap_or_default()
            ),
        )
    })
}

/// One round of the holder's status writes for every notification: the
/// counters, and `DeliveryFailing` on and off.
pub async fn fold_once(ctx: &Context, reports: &[WriterReport]) -> Result<(), kube::Error> {
    let api: Api<KeyEventNotification> = Api::all(ctx.client.clone());
    let mut params = ListParams::default();
    if let Some(selector) = &ctx.settings.tracker_selector {
        params = params.labels(selector);
    }
    for n in api.list(&params).await? {
        let name = n.name_any();
        let status = n.status.clone().unwrap_or_default();
        let mut next = fold(&name, &status, reports);
        let failing: Vec<&str> = reports
            .iter()
            .filter(|r| r.report.notifications.get(&name).is_some_and(|x| x.failing))
            .map(|r| r.writer.as_str())
            .collect();
        if let Some((state, reason, message)) = delivery_ready(&next, &failing) {
            set_condition(
                &mut next.conditions,
                ConditionType::Ready,
                state,
                reason,
                &message,
                n.metadata.generation,
                &Time(jiff::Timestamp::now()),
            );
        }
        if next == status {
            continue;
        }
        if !write_status(&api, &n, &next).await? {
            tracing::debug!(notification = %name, "changed meanwhile; folding again next round");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::report::{NotifyReport, Report};

    fn report(writer: &str, incarnation: &str, sent: u64) -> WriterReport {
        let mut r = Report {
            incarnation: incarnation.into(),
            ..Default::default()
        };
        r.notifications.insert(
            "n".into(),
            NotifyReport {
                matched: sent * 2,
                sent,
                ..Default::default()
            },
        );
        WriterReport {
            writer: writer.into(),
            renewed: None,
            report: r,
        }
    }

    use crate::controller::mock;
    use http::Method;

    fn notification(spec: serde_json::Value, status: serde_json::Value) -> KeyEventNotification {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubetrail.io/v1alpha1", "kind": "KeyEventNotification",
            "metadata": {"name": "n", "uid": "u-1", "generation": 2, "resourceVersion": "7"},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn signed_webhook() -> serde_json::Value {
        serde_json::json!({"presets": ["allDeletes"], "webhook": {
            "url": "https://receiver.example/hook", "hmacSecretRef": {"name": "hmac"}}})
    }

    /// What the status patch wrote as `Ready` (status, reason, observedGeneration).
    fn patched_ready(calls: &mock::Calls) -> Vec<(String, String, i64)> {
        calls
            .to(Method::PATCH, "/keyeventnotifications/n/status")
            .iter()
            .map(|c| {
                assert_eq!(
                    c.body["metadata"]["resourceVersion"], "7",
                    "the patch is conditional"
                );
                let ready = c.body["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["type"] == "Ready")
                    .unwrap()
                    .clone();
                (
                    ready["status"].as_str().unwrap().to_string(),
                    ready["reason"].as_str().unwrap().to_string(),
                    ready["observedGeneration"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// The HMAC Secret is missing: Ready=False SecretNotFound, checked again
    /// soon; once it exists: Ready=True. Only the Secret is read and only the
    /// status subresource is written.
    #[tokio::test]
    async fn ready_follows_the_hmac_secret() {
        let secret = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let have = secret.clone();
        let (ctx, calls) = mock::context(Box::new(move |method, path, body| {
            match (method.as_str(), path) {
                ("GET", "/api/v1/namespaces/kubetrail/secrets/hmac") => {
                    if have.load(std::sync::atomic::Ordering::SeqCst) {
                        (
                            200,
                            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "hmac", "namespace": "kubetrail"}, "data": {HMAC_KEY: "czNjcmV0"}}),
                        )
                    } else {
                        mock::not_found("secrets \"hmac\"")
                    }
                }
                ("PATCH", "/apis/kubetrail.io/v1alpha1/keyeventnotifications/n/status") => (200, {
                    let mut n =
                        serde_json::to_value(notification(signed_webhook(), serde_json::json!({}))).unwrap();
                    n["status"] = body["status"].clone();
                    n
                }),
                _ => mock::not_found(path),
            }
        }));
        let n = notification(signed_webhook(), serde_json::json!({}));
        let action = reconcile_notification(&n, &ctx).await.unwrap();
        assert_eq!(action, Action::requeue(RETRY));
        assert_eq!(
            patched_ready(&calls),
            [("False".to_string(), "SecretNotFound".to_string(), 2)]
        );
        let writes: Vec<_> = calls
            .all()
            .into_iter()
            .filter(|c| c.method != Method::GET)
            .collect();
        assert_eq!(writes.len(), 1, "one write, the status: {writes:?}");

        secret.store(true, std::sync::atomic::Ordering::SeqCst);
        let before = calls.all().len();
        let action = reconcile_notification(&n, &ctx).await.unwrap();
        assert_eq!(action, Action::requeue(RECHECK));
        let ready = patched_ready(&calls);
        assert_eq!(ready.len(), 2, "{:?}", &calls.all()[before..]);
        assert_eq!(ready[1], ("True".to_string(), "Ready".to_string(), 2));
    }

    /// A condition that does not compile is InvalidCondition without reading
    /// anything; a Ready status that is already right is not written again;
    /// a notification the fold round marked DeliveryFailing keeps it.
    #[tokio::test]
    async fn writes_only_what_changed_and_keeps_delivery_failing() {
        let (ctx, calls) = mock::context(Box::new(|_, path, _| mock::not_found(path)));
        let broken = notification(
            serde_json::json!({"condition": "trace.code >= ", "kubernetesEvent": true}),
            serde_json::json!({}),
        );
        let _ = reconcile_notification(&broken, &ctx).await;
        assert_eq!(patched_ready(&calls)[0].1, "InvalidCondition");
        assert!(calls.to(Method::GET, "").is_empty(), "nothing read");

        let now = Time(jiff::Timestamp::now());
        for (reason, state) in [("Ready", TRUE), ("DeliveryFailing", FALSE)] {
            let (ctx, calls) = mock::context(Box::new(|_, path, _| mock::not_found(path)));
            let mut status = KeyEventNotificationStatus::default();
            let r = if reason == "Ready" {
                Reason::Ready
            } else {
                Reason::DeliveryFailing
            };
            let message = if reason == "Ready" {
                READY_MESSAGE
            } else {
                "n-0: 500"
            };
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                state,
                r,
                message,
                Some(2),
                &now,
            );
            let n = notification(
                serde_json::json!({"presets": ["allDeletes"], "kubernetesEvent": true}),
                serde_json::to_value(&status).unwrap(),
            );
            let action = reconcile_notification(&n, &ctx).await.unwrap();
            assert_eq!(action, Action::requeue(RECHECK));
            assert!(
                calls.all().is_empty(),
                "{reason}: nothing to write, nothing read: {:?}",
                calls.all()
            );
        }
    }

    /// The fold round turns DeliveryFailing on and off, and leaves Ready alone
    /// while the reconciler says the notification cannot run (or has not
    /// checked it yet).
    #[test]
    fn the_fold_round_decides_only_delivery() {
        let now = Time(jiff::Timestamp::now());
        let with = |state: &str, reason: Reason| {
            let mut s = KeyEventNotificationStatus {
                last_error: Some("HTTP 500".into()),
                ..Default::default()
            };
            set_condition(
                &mut s.conditions,
                ConditionType::Ready,
                state,
                reason,
                "",
                Some(1),
                &now,
            );
            s
        };
        let ready = with(TRUE, Reason::Ready);
        let (state, reason, message) = delivery_ready(&ready, &["n-0"]).unwrap();
        assert_eq!((state, reason), (FALSE, Reason::DeliveryFailing));
        assert_eq!(message, "n-0: HTTP 500");
        let failing = with(FALSE, Reason::DeliveryFailing);
        assert_eq!(delivery_ready(&failing, &[]).unwrap().1, Reason::Ready);
        for r in [
            Reason::SecretNotFound,
            Reason::InvalidCondition,
            Reason::InvalidWebhook,
            Reason::KubeError,
        ] {
            assert!(delivery_ready(&with(FALSE, r), &["n-0"]).is_none(), "{r:?} holds");
        }
        assert!(delivery_ready(&KeyEventNotificationStatus::default(), &[]).is_none());
    }

    #[test]
    fn counters_add_up_once_across_replicas_and_restarts() {
        let s = fold(
            "n",
            &Default::default(),
            &[report("a", "a1", 3), report("b", "b1", 2)],
        );
        assert_eq!((s.sent, s.matched), (5, 10));
        let s = fold("n", &s, &[report("a", "a1", 4), report("b", "b1", 2)]);
        assert_eq!(s.sent, 6);
        // a restarted: counts from zero again; a stale report changes nothing.
        let s = fold("n", &s, &[report("a", "a2", 1), report("b", "b1", 1)]);
        assert_eq!(s.sent, 7);
        assert_eq!(s.writers.len(), 2);
    }
}
