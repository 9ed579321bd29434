//! Logging, Prometheus metrics and the admin endpoints (`/live`, `/ready`, `/metrics`).

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global tracing subscriber. The level comes from `RUST_LOG`
/// (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrackerLabels {
    /// Tracker name: bounded by the trackers an admin creates.
    pub tracker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// KeyEventNotification name: bounded by what an admin creates.
    pub notification: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A refused request: which listener (`webhook`, `admission`) and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsoleLabels {
    /// `traces`, `history`, `overview`, `whoami`.
    pub endpoint: &'static str,
    /// `ok`, `bad_request`, `unauthorized`, `forbidden`, `not_found`, `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// The operator's metrics. Labels are fixed words or tracker names, never
/// request data.
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by controller and outcome (`ok`, or the error reason).
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Status patches written (skipped ones are not counted).
    pub status_patches: Family<ControllerLabels, Counter>,
    /// Audit events in accepted batches.
    pub events_received: Counter,
    /// Audit events written to the spool (= received, once fsynced).
    pub events_spooled: Counter,
    /// Batches refused, by reason (unauthenticated, too_large, malformed, spool_full…).
    pub batches_rejected: Family<RejectLabels, Counter>,
    pub events_delivered: Family<TrackerLabels, Counter>,
    pub files_delivered: Family<TrackerLabels, Counter>,
    pub digests_written: Family<TrackerLabels, Counter>,
    /// Digests found in the bucket that a writer would not chain onto.
    pub digests_untrusted: Family<TrackerLabels, Counter>,
    /// 1 when the last verification of a tracker's trail found it whole, 0 when not.
    pub integrity_verified: Family<TrackerLabels, Gauge>,
    pub retention_deleted: Family<TrackerLabels, Counter>,
    /// Failed writes of trace files, by reason (retried).
    pub delivery_errors: Family<ReasonLabels, Counter>,
    /// Time from receiving a batch to its trace file being written.
    pub delivery_latency: Histogram,
    pub spool_bytes: Gauge,
    /// 1 while this replica holds the leader Lease (runs the reconcilers).
    pub leader: Gauge,
    /// Audit events not stored again because an identical event was (a retry).
    pub events_deduplicated: Counter,
    /// Batch items that were not readable events, kept as malformed-event traces.
    pub events_malformed: Counter,
    /// Events over the per-event limit, kept without their bodies.
    pub events_truncated: Counter,
    /// Open webhook connections.
    pub webhook_connections: Gauge,
    /// Webhook connections closed by the server, by reason (limit,
    /// handshake_timeout, handshake_failed, idle).
    pub webhook_connections_closed: Family<ReasonLabels, Counter>,
    /// Spool entries a tracker over its backlog budget dropped unexamined.
    pub events_dropped: Family<TrackerLabels, Counter>,
    /// 1 while a tracker is over its backlog budget.
    pub backlog_overflow: Family<TrackerLabels, Gauge>,
    /// Damaged spool records skipped by a tracker's delivery.
    pub spool_corrupt_records: Family<TrackerLabels, Counter>,
    /// Delivery pipelines restarted after a failure.
    pub pipeline_restarts: Family<TrackerLabels, Counter>,
    /// Admission requests allowed without their trace (not ready, spool full).
    pub admission_dropped: Counter,
    /// Traces a key event notification matched.
    pub notify_matched: Family<NotificationLabels, Counter>,
    /// Notification messages delivered.
    pub notify_sent: Family<NotificationLabels, Counter>,
    /// Notification messages given up after their last attempt.
    pub notify_failed: Family<NotificationLabels, Counter>,
    /// Seconds from a matching batch's acknowledgement to its message's delivery.
    pub notify_latency: Histogram,
    /// Console API calls by endpoint and result.
    pub console_requests: Family<ConsoleLabels, Counter>,
    /// Seconds a console API call took, by endpoint.
    pub console_duration: Family<EndpointLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubetrail");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let status_patches = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "status_patches",
            "Status patches written (unchanged status is not written)",
            status_patches.clone(),
        );
        let events_received = Counter::default();
        registry.register(
            "events_received",
            "Audit events in accepted batches",
            events_received.clone(),
        );
        let events_spooled = Counter::default();
        registry.register(
            "events_spooled",
            "Audit events durably written to the spool",
            events_spooled.clone(),
        );
        let batches_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "batches_rejected",
            "Requests refused by the audit webhook and admission capture, by source and reason",
            batches_rejected.clone(),
        );
        let events_delivered = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "events_delivered",
            "Traces written to trace files",
            events_delivered.clone(),
        );
        let files_delivered = Family::<TrackerLabels, Counter>::default();
        registry.register("files_delivered", "Trace files written", files_delivered.clone());
        let digests_written = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "digests_written",
            "Signed digest files written (one per period per writer)",
            digests_written.clone(),
        );
        let digests_untrusted = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "digests_untrusted",
            "Digests in the bucket a writer did not chain onto: unverifiable, dated in the future, or not naming its published head",
            digests_untrusted.clone(),
        );
        let integrity_verified = Family::<TrackerLabels, Gauge>::default();
        registry.register(
            "integrity_verified",
            "1 when the last check of the tracker's trail found it whole and untouched, 0 when not",
            integrity_verified.clone(),
        );
        let retention_deleted = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "retention_deleted_objects",
            "Expired trace files and digests deleted by the operator",
            retention_deleted.clone(),
        );
        let delivery_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "delivery_errors",
            "Failed (and retried) trace file writes",
            delivery_errors.clone(),
        );
        let delivery_latency = Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]);
        registry.register(
            "delivery_latency_seconds",
            "Time from receiving an audit batch to its trace file being written",
            delivery_latency.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register("spool_bytes", "Bytes held in the spool", spool_bytes.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let events_deduplicated = Counter::default();
        registry.register(
            "events_deduplicated",
            "Audit events not stored again: an identical event was stored already (apiserver retries)",
            events_deduplicated.clone(),
        );
        let events_malformed = Counter::default();
        registry.register(
            "events_malformed",
            "Batch items that were not readable audit events, kept as malformed-event traces",
            events_malformed.clone(),
        );
        let events_truncated = Counter::default();
        registry.register(
            "events_truncated",
            "Audit events over the per-event limit, kept without their request and response bodies",
            events_truncated.clone(),
        );
        let webhook_connections = Gauge::default();
        registry.register(
            "webhook_connections",
            "Open audit webhook connections",
            webhook_connections.clone(),
        );
        let webhook_connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "webhook_connections_closed",
            "Audit webhook connections the server closed or refused, by reason",
            webhook_connections_closed.clone(),
        );
        let events_dropped = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "events_dropped",
            "Spool entries dropped unexamined by a tracker over its backlog budget",
            events_dropped.clone(),
        );
        let backlog_overflow = Family::<TrackerLabels, Gauge>::default();
        registry.register(
            "backlog_overflow",
            "1 while a tracker is over its backlog budget and drops its oldest traces",
            backlog_overflow.clone(),
        );
        let spool_corrupt_records = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "spool_corrupt_records",
            "Damaged spool records skipped by a tracker's delivery",
            spool_corrupt_records.clone(),
        );
        let pipeline_restarts = Family::<TrackerLabels, Counter>::default();
        registry.register(
            "pipeline_restarts",
            "Delivery pipelines restarted after a failure",
            pipeline_restarts.clone(),
        );
        let admission_dropped = Counter::default();
        registry.register(
            "admission_dropped",
            "Admission requests allowed without recording their trace (not ready, spool full)",
            admission_dropped.clone(),
        );
        let notify_matched = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notify_matched",
            "Traces matched by a key event notification",
            notify_matched.clone(),
        );
        let notify_sent = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notify_sent",
            "Key event notification messages delivered",
            notify_sent.clone(),
        );
        let notify_failed = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notify_failed",
            "Key event notification messages given up after their last attempt",
            notify_failed.clone(),
        );
        let notify_latency = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0]);
        registry.register(
            "notify_latency_seconds",
            "From a matching batch's acknowledgement to the delivery of its message",
            notify_latency.clone(),
        );
        let console_requests = Family::<ConsoleLabels, Counter>::default();
        registry.register(
            "console_requests",
            "Console API calls by endpoint and result",
            console_requests.clone(),
        );
        let console_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
        });
        registry.register(
            "console_duration_seconds",
            "Seconds a console API call took, by endpoint",
            console_duration.clone(),
        );
        Self {
            console_requests,
            console_duration,
            admission_dropped,
            notify_matched,
            notify_sent,
            notify_failed,
            notify_latency,
            leader,
            events_deduplicated,
            events_malformed,
            events_truncated,
            webhook_connections,
            webhook_connections_closed,
            events_dropped,
            backlog_overflow,
            spool_corrupt_records,
            pipeline_restarts,
            registry,
            reconciles,
            reconcile_duration,
            status_patches,
            events_received,
            events_spooled,
            batches_rejected,
            events_delivered,
            files_delivered,
            digests_written,
            digests_untrusted,
            integrity_verified,
            retention_deleted,
            delivery_errors,
            delivery_latency,
            spool_bytes,
        }
    }
}

/// Readiness flag flipped once everything has started.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The admin router: liveness, readiness and metrics.
pub fn admin_router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, readiness })
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "metrics encoding failed".to_string(),
        ),
    }
}

/// Binds the admin endpoints on `addr` and serves them in the background.
pub async fn spawn_admin(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding the admin address {addr}: {e}")))?;
    let router = admin_router(metrics, readiness);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin endpoints stopped");
        }
    });
    tracing::info!(%addr, "admin endpoints listening");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_status(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_flips_only_when_set() {
        let metrics = Arc::new(Metrics::default());
        let readiness = Readiness::default();
        let router = admin_router(metrics, readiness.clone());
        assert_eq!(get_status(router.clone(), "/live").await.0, StatusCode::OK);
        assert_eq!(
            get_status(router.clone(), "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set_ready(true);
        assert_eq!(get_status(router, "/ready").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_exposed() {
        let metrics = Arc::new(Metrics::default());
        metrics
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller: "tracker",
                result: "ok",
            })
            .inc();
        let router = admin_router(metrics, Readiness::default());
        let (status, body) = get_status(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(r#"kubetrail_reconciles_total{controller="tracker",result="ok"} 1"#),
            "{body}"
        );
    }
}
