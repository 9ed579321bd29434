//! This replica's delivery report: what its pipelines delivered and its
//! notifiers sent, published in a Lease of its own for the holder to fold into
//! status (`controller::report`).

use crate::controller::Context;
use crate::controller::report::{
    HEARTBEAT, NotifyReport, REPORT_ANNOTATION, REPORT_LABEL, Report, STALE, TrackerReport, lease_name,
};
use crate::deliver::pipeline::Pipelines;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publishes this replica's report every `interval` when it changed, and at
/// least every minute as a heartbeat. Runs on every replica.
pub async fn publish_loop(
    ctx: Arc<Context>,
    pipelines: Arc<Pipelines>,
    publisher: Arc<tokio::sync::Mutex<Publisher>>,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        publisher.lock().await.publish(&ctx, &pipelines).await;
    }
}

/// Publishes one replica's reports, remembering what it last published. One per
/// process: its incarnation tells the holder where counting restarts.
pub struct Publisher {
    incarnation: String,
    last: Option<(Report, Instant)>,
}

impl Publisher {
    pub fn new(ctx: &Context) -> Self {
        let now = jiff::Timestamp::now();
        Self {
            incarnation: format!(
                "{}-{}-{:x}",
                ctx.settings.instance,
                std::process::id(),
                now.as_nanosecond()
            ),
            last: None,
        }
    }

    fn report(&self, ctx: &Context, pipelines: &Pipelines) -> Report {
        let notifications = ctx
            .notify_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    NotifyReport {
                        matched: s.matched,
                        sent: s.sent,
                        failed: s.failed,
                        last_sent: s.last_sent,
                        last_error: s.last_error.clone(),
                        failing: s.failing,
                    },
                )
            })
            .collect();
        let delivering = pipelines.delivering();
        let stats = pipelines.stats.lock().unwrap_or_else(|e| e.into_inner());
        Report {
            incarnation: self.incarnation.clone(),
            notifications,
            trackers: stats
                .iter()
                .map(|(name, s)| (name.clone(), TrackerReport::of(s, delivering.contains(name))))
                .collect(),
        }
    }

    /// Writes the report Lease if the report changed or the heartbeat is due.
    pub async fn publish(&mut self, ctx: &Context, pipelines: &Pipelines) {
        let report = self.report(ctx, pipelines);
        if let Some((last, at)) = &self.last
            && *last == report
            && at.elapsed() < HEARTBEAT
        {
            return;
        }
        let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
        let name = lease_name(&ctx.settings.instance);
        let Ok(body) = serde_json::to_string(&report) else {
            return;
        };
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "labels": {REPORT_LABEL: "true", "app.kubernetes.io/managed-by": "kubetrail"},
                "annotations": {REPORT_ANNOTATION: body},
            },
            "spec": {
                "holderIdentity": ctx.settings.instance,
                "leaseDurationSeconds": STALE.as_secs(),
                "renewTime": MicroTime(jiff::Timestamp::now()),
            },
        });
        match api
            .patch(
                &name,
                &PatchParams::apply("kubetrail-writer").force(),
                &Patch::Apply(lease),
            )
            .await
        {
            Ok(_) => self.last = Some((report, Instant::now())),
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "publishing the delivery report failed; retrying")
            }
        }
    }
}
