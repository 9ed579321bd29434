//! The `operator` subcommand: audit webhook, spool, delivery and controllers.

use crate::controller::{self, Context, Settings};
use crate::deliver::pipeline::{Pipelines, WriterId};
use crate::source::dedupe::Window;
use crate::source::{self, AuthPolicy, Ingest, Lifecycle, TlsFiles};
use crate::spool::{self, Spool};
use crate::telemetry::{self, Metrics, Readiness};
use anyhow::{Context as _, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of the audit webhook, shared by `operator` and `serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address of the audit webhook.
    #[arg(long, env = "KUBETRAIL_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// Serving certificate (PEM); re-read when it changes.
    #[arg(long, env = "KUBETRAIL_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "KUBETRAIL_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA whose client certificates are accepted (the apiserver's webhook client cert).
    #[arg(long, env = "KUBETRAIL_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// File with accepted bearer tokens, one per line.
    #[arg(long, env = "KUBETRAIL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve plain HTTP without authentication. Refused unless the address is loopback.
    #[arg(long)]
    pub insecure_http: bool,
    /// Largest accepted audit batch body, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Spool directory (write-ahead log).
    #[arg(long, env = "KUBETRAIL_SPOOL_DIR", default_value = "/var/lib/kubetrail/spool")]
    pub spool_dir: PathBuf,
    /// Bytes the spool may hold before the webhook answers 503.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub spool_max_bytes: u64,
    /// Name of this cluster in traces and object keys.
    #[arg(long, env = "KUBETRAIL_CLUSTER_NAME", default_value = "kubernetes")]
    pub cluster_name: String,
    /// Size at which a new spool segment is started (the unit in which a tracker
    /// over its budget drops its oldest traces).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub spool_segment_bytes: u64,
    /// Most spool bytes one tracker may have undelivered; past it, that tracker
    /// drops its oldest traces (and reports it) while the others go on.
    /// Default: half of --spool-max-bytes.
    #[arg(long)]
    pub tracker_backlog_bytes: Option<u64>,
    /// An identical audit event (an apiserver retry) received within this many
    /// seconds of the first is stored once.
    #[arg(long, default_value_t = 900)]
    pub dedupe_window_seconds: u64,
    /// At most this many events are remembered for de-duplication (0: off).
    #[arg(long, default_value_t = 1_000_000)]
    pub dedupe_max_events: usize,
    /// On SIGTERM: seconds to deliver what is spooled before exiting anyway
    /// (the rest stays in the spool for the next start). Keep it below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "KUBETRAIL_DRAIN_SECONDS", default_value_t = 45)]
    pub drain_seconds: u64,
}

/// The webhook as started: its spool, and its lifecycle for the drain.
pub struct Webhook {
    pub spool: Spool,
    pub lifecycle: Lifecycle,
}

impl WebhookArgs {
    /// Opens the spool and starts the webhook listener.
    /// Batches are taken only while `ready` is set.
    pub async fn start(&self, metrics: Arc<Metrics>, ready: Readiness) -> anyhow::Result<Webhook> {
        let window = Duration::from_secs(self.dedupe_window_seconds);
        let spool = Spool::open(spool::Config {
            dir: self.spool_dir.clone(),
            max_bytes: self.spool_max_bytes,
            segment_bytes: self.spool_segment_bytes.max(4096),
            fsync: true,
            tracker_budget: self.tracker_backlog_bytes.unwrap_or(self.spool_max_bytes / 2),
            dedupe_window_ms: window.as_millis() as i64,
            dedupe_max: self.dedupe_max_events,
        })
        .with_context(|| format!("opening the spool in {}", self.spool_dir.display()))?;
        let recovered = spool.take_recovered_hashes();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let dedupe = Arc::new(Window::new(window, self.dedupe_max_events, recovered, now_ms));
        tracing::info!(remembered = dedupe.len(), "de-duplication window restored");
        let lifecycle = Lifecycle::new(ready);
        let tokens = match &self.token_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading token file {}", p.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            None => Vec::new(),
        };
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca_file.clone(),
            }),
            (None, None) if self.insecure_http => {
                if !self.webhook_addr.ip().is_loopback() {
                    bail!(
                        "--insecure-http is only allowed on a loopback address, not {}",
                        self.webhook_addr
                    );
                }
                None
            }
            _ => bail!(
                "the audit webhook needs --tls-cert-file and --tls-key-file (or --insecure-http on loopback)"
            ),
        };
        if tls.is_some() && self.client_ca_file.is_none() && tokens.is_empty() {
            bail!(
                "the audit webhook needs a way to authenticate the apiserver: --client-ca-file and/or --token-file"
            );
        }
        let ingest = Ingest {
            spool: spool.clone(),
            max_body_bytes: self.max_body_bytes,
            metrics,
            cluster: self.cluster_name.as_str().into(),
            auth: Arc::new(AuthPolicy {
                tokens,
                allow_anonymous: tls.is_none(),
            }),
            dedupe,
            lifecycle: lifecycle.clone(),
        };
        let router = source::app(ingest, self.max_body_bytes);
        let listener = tokio::net::TcpListener::bind(self.webhook_addr)
            .await
            .with_context(|| format!("binding the webhook address {}", self.webhook_addr))?;
        let tls_on = tls.is_some();
        // Load the certificate now, so a bad one fails the start rather than every handshake.
        if let Some(files) = &tls {
            source::check_tls(files).context("loading the webhook TLS files")?;
        }
        tokio::spawn(async move {
            if let Err(e) = source::serve(listener, tls, router).await {
                tracing::error!(error = %e, "audit webhook stopped");
            }
        });
        tracing::info!(addr = %self.webhook_addr, tls = tls_on, "audit webhook listening");
        Ok(Webhook { spool, lifecycle })
    }
}

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
    /// Longest time range a TraceQuery may ask for, in days.
    #[arg(long, default_value_t = 31)]
    pub max_query_days: i64,
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
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    crate::install_crypto_provider();
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
            max_query_days: args.max_query_days,
        },
        metrics,
    );
    let status_interval = Duration::from_secs(args.status_seconds.max(1));
    let publisher = Arc::new(tokio::sync::Mutex::new(controller::report::Publisher::new(&ctx)));
    let delivery = tokio::spawn(controller::delivery::run(
        ctx.clone(),
        pipelines.clone(),
        publisher.clone(),
        status_interval,
        readiness.clone(),
    ));
    tracing::info!("operator started");
    // Every replica ingests and delivers; only the Lease holder reconciles.
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let election = controller::leader::Election {
        namespace: ctx.settings.namespace.clone(),
        name: args.lease_name.clone(),
        identity: ctx.settings.instance.clone(),
        lease: Duration::from_secs(args.lease_seconds.max(1)),
    };
    let elector = tokio::spawn(controller::leader::run(
        ctx.client.clone(),
        election.clone(),
        leading_tx,
    ));
    let mut reconcilers: Option<tokio::task::JoinHandle<()>> = None;
    let shutdown = crate::runtime::shutdown_signal();
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
                        controller::report::fold_loop(c, status_interval),
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
    crate::runtime::stop_ingest(&webhook.lifecycle, &readiness).await;
    elector.abort();
    if let Some(r) = reconcilers.take() {
        r.abort();
    }
    // Bounded: an unreachable API must not eat the grace period the spool flush needs.
    let release = controller::leader::release(ctx.client.clone(), &election);
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
    crate::runtime::drain_delivery(&pipelines, drain.saturating_sub(drain_started.elapsed())).await;
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
