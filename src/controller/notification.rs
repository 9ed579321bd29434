//! KeyEventNotification status, written by the lease holder: the `Ready`
//! condition (`InvalidCondition`, `SecretNotFound`, `InvalidWebhook`,
//! `DeliveryFailing`) and the counters folded from every replica's report. What
//! a notification needs to run ([`setup`]) is shared with the notifiers every
//! replica runs (`runner::notify`).

use super::Context;
use super::report::WriterReport;
use crate::api::{
    ConditionType, FALSE, KeyEventNotification, KeyEventNotificationSpec, KeyEventNotificationStatus,
    NotifierWriter, Reason, TRUE, set_condition,
};
use crate::notify::message::HMAC_KEY;
use crate::notify::select::{SelectError, Selection};
use crate::notify::send::{Target, TargetError};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

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

/// One round of the holder's status writes for every notification.
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
        let now = Time(jiff::Timestamp::now());
        let generation = n.metadata.generation;
        let failing: Vec<&str> = reports
            .iter()
            .filter(|r| r.report.notifications.get(&name).is_some_and(|x| x.failing))
            .map(|r| r.writer.as_str())
            .collect();
        let (state, reason, message) = match setup(ctx, &n.spec).await {
            Err(e) => (FALSE, e.reason(), e.to_string()),
            Ok(_) if !failing.is_empty() => (
                FALSE,
                Reason::DeliveryFailing,
                format!(
                    "{}: {}",
                    failing.join(", "),
                    next.last_error.clone().unwrap_or_default()
                ),
            ),
            Ok(_) => (TRUE, Reason::Ready, "matching traces are notified".to_string()),
        };
        set_condition(
            &mut next.conditions,
            ConditionType::Ready,
            state,
            reason,
            &message,
            generation,
            &now,
        );
        if next == status {
            continue;
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": n.resource_version()},
            "status": next,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                tracing::debug!(notification = %name, "changed meanwhile; folding again next round")
            }
            Err(e) => return Err(e),
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
