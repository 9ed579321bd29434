//! The `operator` subcommand: audit webhook, spool, delivery and controllers.

use anyhow::Context as _;
use kubetrail::controller::{self, Context, Settings};
use kubetrail::deliver::pipeline::{Pipelines, WriterId};
use kubetrail::runner;
use kubetrail::telemetry::{self, Metrics, Readiness};
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
    /// Namespaces whose TraceQueries may read every namespace's traces (comma-separated).
    /// Queries elsewhere see only their own namespace's traces.
    #[arg(long, env = "KUBETRAIL_ADMIN_NAMESPACES", value_delimiter = ',')]
    pub admin_namespaces: Vec<String>,
    /// Other clusters (sharing a tracker's bucket) whose traces TraceQueries and
    /// the console of an admin namespace may read (comma-separated; `*`: every
    /// cluster found). Empty: only this cluster's traces are readable, by anyone.
    #[arg(long, env = "KUBETRAIL_READABLE_CLUSTERS", value_delimiter = ',')]
    pub readable_clusters: Vec<String>,
    /// Longest time range a TraceQuery may ask for, in days.
    #[arg(long, default_value_t = 31)]
    pub max_query_days: i64,
    /// TraceQueries run at once; the others wait in phase Pending.
    #[arg(long, default_value_t = 2)]
    pub query_concurrency: usize,
    /// Seconds a TraceQuery may run before it fails with reason Timeout.
    #[arg(long, default_value_t = 300)]
    pub query_timeout_seconds: u64,
    /// Most bytes of result lines one TraceQuery keeps (on scratch disk, not in
    /// memory); past it fewer than `limit` traces are returned (status says so).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub query_max_result_bytes: usize,
    /// Scratch directory for running TraceQueries' result lines
    /// (default: `kubetrail-query` in the system temp directory).
    #[arg(long)]
    pub query_scratch_dir: Option<std::path::PathBuf>,
    /// Name of the Lease (in --namespace) whose holder runs the reconcilers.
    #[arg(long, default_value = "kubetrail-leader")]
    pub lease_name: String,
    /// Lease duration in seconds: how long a lost leader is waited for.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// Seconds between delivery reports of this replica, and between the lease
    /// holder's status writes that fold them in (lastDelivery, counters).
    #[arg(long, default_value_t = 10)]
    pub status_seconds: u64,
    /// Address of the web console and its query API (plain HTTP: reach it
    /// with `kubetrail console` or behind an Ingress that terminates TLS).
    /// Callers authenticate with a Kubernetes bearer token. Off when unset.
    #[arg(long, env = "KUBETRAIL_CONSOLE_ADDR")]
    pub console_addr: Option<SocketAddr>,
    /// Console queries running at once; more wait.
    #[arg(long, default_value_t = 4)]
    pub console_concurrency: usize,
    #[command(flatten)]
    pub webhook: super::webhook::WebhookArgs,
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    kubetrail::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    telemetry::spawn_admin(args.admin_addr, metrics.clone(), readiness.clone()).await?;
    let webhook = args.webhook.start(metrics.clone(), readiness.clone()).await?;
    let pipelines = Pipelines::new(
        webhook.spool.clone(),
        WriterId {
            cluster: args.webhook.cluster_name.clone(),
            writer: args.instance.clone(),
        },
        metrics.clone(),
    );
    let ctx = Context::new(
        client,
        Settings {
            namespace: args.namespace,
            tracker_selector: args.tracker_selector,
            instance: args.instance,
            recheck_interval: Duration::from_secs(args.recheck_seconds),
            cluster: args.webhook.cluster_name.clone(),
            admin_namespaces: args.admin_namespaces.clone(),
            readable_clusters: kubetrail::scope::ReadableClusters::from_flag(&args.readable_clusters),
            max_query_days: args.max_query_days,
            query_concurrency: args.query_concurrency.max(1),
            query_timeout: Duration::from_secs(args.query_timeout_seconds.max(1)),
            query_max_result_bytes: args.query_max_result_bytes.max(64 * 1024),
            query_scratch_dir: args
                .query_scratch_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("kubetrail-query")),
        },
        metrics,
    );
    if let Some(addr) = args.console_addr {
        let console = kubetrail::console::Console {
            access: Some(kubetrail::console::auth::Access::new(
                ctx.client.clone(),
                ctx.settings.admin_namespaces.clone(),
            )),
            trails: kubetrail::console::Trails::Cluster {
                client: ctx.client.clone(),
                secret_namespace: ctx.settings.namespace.clone(),
                cluster: ctx.settings.cluster.clone(),
                stores: Default::default(),
            },
            readable_clusters: ctx.settings.readable_clusters.clone(),
            max_days: ctx.settings.max_query_days,
            slots: tokio::sync::Semaphore::new(args.console_concurrency.max(1)),
            metrics: ctx.metrics.clone(),
        };
        kubetrail::console::spawn(addr, Arc::new(console)).await?;
    }
    let status_interval = Duration::from_secs(args.status_seconds.max(1));
    let publisher = Arc::new(tokio::sync::Mutex::new(runner::report::Publisher::new(&ctx)));
    let delivery = tokio::spawn(runner::delivery::run(
        ctx.clone(),
        pipelines.clone(),
        publisher.clone(),
        status_interval,
        readiness.clone(),
    ));
    let notifiers = kubetrail::notify::Notifiers::new(
        webhook.spool.clone(),
        ctx.settings.cluster.clone(),
        ctx.metrics.clone(),
        ctx.notify_stats.clone(),
    );
    let notifying = tokio::spawn(runner::notify::run(ctx.clone(), notifiers.clone()));
    tracing::info!("operator started");
    // Every replica ingests and delivers; only the Lease holder reconciles.
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let election = runner::leader::Election {
        namespace: ctx.settings.namespace.clone(),
        name: args.lease_name.clone(),
        identity: ctx.settings.instance.clone(),
        lease: Duration::from_secs(args.lease_seconds.max(1)),
    };
    let elector = tokio::spawn(runner::leader::run(
        ctx.client.clone(),
        election.clone(),
        leading_tx,
    ));
    let mut reconcilers: Option<tokio::task::JoinHandle<()>> = None;
    let shutdown = kubetrail::runtime::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let lead = *leading.borrow_and_update();
        ctx.metrics.leader.set(i64::from(lead));
        match (lead, reconcilers.is_some()) {
            (true, false) => {
                tracing::info!("leading: starting reconcilers");
                let c = ctx.clone();
                reconcilers = Some(tokio::spawn(async move {
                    tokio::join!(
                        controller::tracker::run(c.clone()),
                        controller::query::run(c.clone()),
                        controller::notification::run(c.clone()),
                        controller::fold_loop(c, status_interval),
                    );
                }));
            }
            (false, true) => {
                tracing::info!("not leading: stopping reconcilers");
                if let Some(r) = reconcilers.take() {
                    r.abort();
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            changed = leading.changed() => if changed.is_err() { break },
        }
    }
    // Stop taking batches first: the apiserver sends them to another replica.
    let drain_started = std::time::Instant::now();
    let drain = Duration::from_secs(args.webhook.drain_seconds);
    kubetrail::runtime::stop_ingest(&webhook.lifecycle, &readiness).await;
    elector.abort();
    if let Some(r) = reconcilers.take() {
        r.abort();
    }
    // Bounded: an unreachable API must not eat the grace period the spool flush needs.
    let release = runner::leader::release(ctx.client.clone(), &election);
    match tokio::time::timeout(Duration::from_secs(3), release)
        .await
        .unwrap_or(Ok(false))
    {
        Ok(true) => {
            ctx.metrics.leader.set(0);
            tracing::info!("lease released")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "releasing the lease failed; it expires on its own"),
    }
    delivery.abort();
    notifying.abort();
    notifiers.shutdown().await;
    kubetrail::runtime::drain_delivery(&pipelines, drain.saturating_sub(drain_started.elapsed())).await;
    // What was delivered while stopping reaches the status through the holder.
    let last_report = async { publisher.lock().await.publish(&ctx, &pipelines).await };
    if tokio::time::timeout(Duration::from_secs(5), last_report)
        .await
        .is_err()
    {
        tracing::warn!("publishing the last delivery report timed out");
    }
    tracing::info!("operator stopped");
    Ok(())
}
