//! The `operator` subcommand.

use crate::controller::{self, Context, Settings};
use crate::telemetry::{self, Metrics, Readiness};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `kubetrail operator`.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorArgs {
    /// Namespace the operator runs in; credentials Secrets are read from it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubetrail")]
    pub namespace: String,
    /// Name of this replica (the pod name), used in events and file names.
    #[arg(long, env = "POD_NAME", default_value = "kubetrail-0")]
    pub instance: String,
    /// Address of the admin endpoints (`/live`, `/ready`, `/metrics`).
    #[arg(long, env = "KUBETRAIL_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Only handle Trackers matching this label selector.
    #[arg(long, env = "KUBETRAIL_TRACKER_SELECTOR")]
    pub tracker_selector: Option<String>,
    /// Seconds between checks of a healthy tracker's destination.
    #[arg(long, default_value_t = 300)]
    pub recheck_seconds: u64,
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let admin = telemetry::admin_router(metrics.clone(), readiness.clone());
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin).await {
            tracing::error!(error = %e, "admin endpoints stopped");
        }
    });
    let ctx = Context::new(
        client,
        Settings {
            namespace: args.namespace,
            tracker_selector: args.tracker_selector,
            instance: args.instance,
            recheck_interval: Duration::from_secs(args.recheck_seconds),
        },
        metrics,
    );
    readiness.set_ready(true);
    tracing::info!("operator started");
    controller::tracker::run(ctx).await;
    tracing::info!("operator stopped");
    Ok(())
}
