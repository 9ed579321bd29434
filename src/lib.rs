//! kubetrail: Cloud Trace Service for Kubernetes.
//!
//! The cluster's audit events become traces, delivered as compressed trace files
//! to an S3-compatible bucket per Tracker. See `docs/architecture.md`.

/// Custom resource types (Tracker, TraceQuery, KeyEventNotification).
pub mod api;
/// audit.k8s.io/v1 types, as the webhook receives them.
pub mod audit;
/// `kubetrail bench`: load generator against the ingest path.
pub mod bench;
/// Command-line interface of the `kubetrail` binary.
pub mod cli;
/// Reconcilers of the custom resources.
pub mod controller;
/// Delivery to destinations (S3 clients and their health checks).
pub mod deliver;
/// The `operator` subcommand: wires controllers and admin endpoints together.
pub mod operator;
/// The query engine over delivered trace files.
pub mod query;
/// `kubetrail query`.
pub mod query_command;
/// Which traces each tracker keeps.
pub mod route;
/// Signals and the drain on stop.
pub mod runtime;
/// `kubetrail serve`: the pipeline without the Kubernetes API.
pub mod serve;
/// The audit webhook (HTTPS, authenticated, size-capped) and its de-duplication.
pub mod source;
/// The write-ahead spool between the webhook and delivery.
pub mod spool;
/// Logging, metrics and health endpoints.
pub mod telemetry;
/// The trace record: rating, trace type, redaction.
pub mod trace;

/// Selects rustls' process-wide crypto provider (ring). Both ring and aws-lc-rs
/// are linked in through dependencies, so rustls cannot pick one by itself.
/// Call before the first TLS connection; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
