//! The process lifecycle: signals and the drain on stop.
//!
//! Stopping is part of the lifecycle (SIGTERM: a rolling update, a drain, an
//! eviction): the webhook turns new batches away (503 + `Retry-After`, readiness
//! false), the batches being handled finish, every pipeline reads what is spooled
//! and cuts and writes its open files, then the process exits. What cannot be
//! written before the drain deadline stays in the spool for the next start.

use crate::deliver::pipeline::Pipelines;
use crate::source::Lifecycle;
use crate::telemetry::Readiness;
use std::sync::Arc;
use std::time::Duration;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Stops taking audit batches and waits for the ones being handled.
pub async fn stop_ingest(lifecycle: &Lifecycle, readiness: &Readiness) {
    tracing::info!("stopping: turning new audit batches away");
    readiness.set_ready(false);
    lifecycle.start_draining();
    lifecycle.settled(Duration::from_secs(5)).await;
}

/// Delivers what is spooled, within `deadline`.
pub async fn drain_delivery(pipelines: &Arc<Pipelines>, deadline: Duration) {
    tracing::info!(deadline_seconds = deadline.as_secs(), "draining delivery");
    let p = pipelines.clone();
    let _ = tokio::task::spawn_blocking(move || p.shutdown(deadline)).await;
    tracing::info!("drained");
}
