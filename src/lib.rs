//! kubetrail: Cloud Trace Service for Kubernetes.
//!
//! The cluster's audit events become traces, delivered as compressed trace files
//! to an S3-compatible bucket per Tracker. See `docs/architecture.md`. The
//! subcommands of the `kubetrail` binary (and the load generator) live in the
//! binary crate (`src/cmd/`), as thin shells over this library.

/// Custom resource types (Tracker, TraceQuery, KeyEventNotification).
pub mod api;
/// audit.k8s.io/v1 types, as the webhook receives them.
pub mod audit;
/// The web console and its query API.
pub mod console;
/// Reconcilers of the custom resources, and what the lease holder writes.
pub mod controller;
/// Delivery: when to cut trace files, their keys and bytes, the per-tracker pipelines.
pub mod deliver;
/// Signed digest chains, `verify`, and retention of delivered files.
pub mod integrity;

/// Key event notifications: selection, messages, webhook delivery.
pub mod notify;
/// The query engine over delivered trace files.
pub mod query;
/// The sensitive-data policy: what is redacted, in every shape of body.
pub mod redact;
/// Which traces each tracker keeps.
pub mod route;
/// Which clusters' trails a reader may search (`--readable-clusters`).
pub mod scope;

/// Per-replica work beside the reconcilers: delivery, notifiers, reports, leader election.
pub mod runner;
/// Signals and the drain on stop.
pub mod runtime;
/// Tables over trace files for SQL engines (`kubetrail schema`).
pub mod schema;
/// The audit webhook (HTTPS, authenticated, size-capped) and its de-duplication.
pub mod source;
/// The write-ahead spool between the webhook and delivery.
pub mod spool;
/// Where trace files live (S3 or a directory), opened from a destination and its credentials.
pub mod store;
/// Logging, metrics and health endpoints.
pub mod telemetry;
/// The trace record: rating, trace type, built-in redaction applied.
pub mod trace;

/// Selects rustls' process-wide crypto provider (ring). Both ring and aws-lc-rs
/// are linked in through dependencies, so rustls cannot pick one by itself.
/// Call before the first TLS connection; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
