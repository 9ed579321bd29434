//! The audit webhook's flags, shared by `operator` and `serve`, and its start:
//! the spool, the de-duplication window, the listener.

use anyhow::{Context as _, bail};
use kubetrail::source::dedupe::Window;
use kubetrail::source::{self, AuthPolicy, Ingest, Intake, Lifecycle, TlsFiles};
use kubetrail::spool::{self, Spool};
use kubetrail::telemetry::{Metrics, Readiness};
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
    #[command(flatten)]
    pub limits: LimitArgs,
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
    /// A batch re-sent byte for byte (an apiserver retry) within this many
    /// seconds of the first is stored once (the query engine shows a trace
    /// found twice once).
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
    /// Also follow this audit log file (the apiserver's `--audit-log-path`,
    /// JSON lines). Without TLS files and without --insecure-http the webhook
    /// is not started: the file is the only source.
    #[arg(long, env = "KUBETRAIL_AUDIT_LOG_FILE")]
    pub audit_log_file: Option<PathBuf>,
    /// Also serve the admission capture webhook (`POST /admission`, always
    /// allows) on this address, with the same serving certificate and the same
    /// authentication as the audit webhook (--client-ca-file with
    /// --client-cert-names, --token-file): the apiserver presents them from
    /// the kubeconfig its `--admission-control-config-file` names.
    #[arg(long, env = "KUBETRAIL_ADMISSION_ADDR")]
    pub admission_addr: Option<SocketAddr>,
    /// Take admission reviews from anyone who can reach --admission-addr, for
    /// clusters whose apiserver cannot be given admission webhook credentials
    /// (managed control planes). Anyone who reaches the port can then forge
    /// admission traces: only a NetworkPolicy stands in the way.
    #[arg(long, env = "KUBETRAIL_ADMISSION_ALLOW_UNAUTHENTICATED")]
    pub admission_allow_unauthenticated: bool,
}

/// Who may connect, and what a connection or a request may take (shared by
/// `operator` and `serve`).
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    /// Subjects (certificate common name or DNS name) a client certificate must
    /// carry one of; `*` accepts any certificate the CA signed.
    #[arg(
        long,
        env = "KUBETRAIL_CLIENT_CERT_NAMES",
        value_delimiter = ',',
        default_value = "kube-apiserver-audit"
    )]
    pub client_cert_names: Vec<String>,
    /// Largest accepted audit batch body, in bytes (a bigger one gets 413).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest audit event kept whole, in bytes; a bigger one is kept without
    /// its request and response bodies (`truncated: true`).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,
    /// Bytes of request bodies held at once over all connections; past it,
    /// batches get 503 and the apiserver sends them again.
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    pub inflight_body_bytes: usize,
    /// Seconds to receive a whole request body (408 after).
    #[arg(long, default_value_t = 60)]
    pub body_timeout_seconds: u64,
    /// Open webhook connections at most; past it new ones are closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds for a TLS handshake, and for a request's headers.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout_seconds: u64,
    /// Seconds a connection may stay without traffic before it is closed.
    #[arg(long, default_value_t = 90)]
    pub idle_timeout_seconds: u64,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, default_value_t = 16)]
    pub max_streams: u32,
}

impl LimitArgs {
    /// Connection limits of a listener (the audit webhook and admission capture alike).
    fn connections(&self) -> source::ConnectionLimits {
        source::ConnectionLimits {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds.max(1)),
            header_timeout: Duration::from_secs(self.handshake_timeout_seconds.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds.max(1)),
            max_streams: self.max_streams.max(1),
        }
    }
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
        tracing::info!(
            remembered_events = dedupe.events(),
            "de-duplication window restored"
        );
        let lifecycle = Lifecycle::new(ready);
        let intake = Intake::new(
            spool.clone(),
            dedupe,
            metrics.clone(),
            &self.cluster_name,
            self.limits.max_event_bytes,
            lifecycle.clone(),
        );
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
        let webhook_on = self.audit_log_file.is_none()
            || self.insecure_http
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some();
        if let Some(path) = &self.audit_log_file {
            let follower = source::logfile::Follower {
                path: path.clone(),
                intake: intake.clone(),
                poll: Duration::from_millis(200),
            };
            tokio::spawn(async move {
                if let Err(e) = follower.run().await {
                    tracing::error!(error = %e, "audit log file source stopped");
                }
            });
        }
        if let Some(addr) = self.admission_addr {
            self.start_admission(addr, &tokens, &intake).await?;
        }
        if !webhook_on {
            tracing::info!("no webhook TLS files: the audit log file is the only source");
            return Ok(Webhook { spool, lifecycle });
        }
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca_file.clone(),
                client_names: self.limits.client_cert_names.clone(),
                certificate_optional: !tokens.is_empty(),
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
        if self.limits.client_cert_names.iter().all(|n| n.trim().is_empty()) {
            bail!(
                "--client-cert-names is empty: name the allowed client certificate subjects, or `*` for any"
            );
        }
        let limits = source::RequestLimits {
            max_body_bytes: self.limits.max_body_bytes,
            body_timeout: Duration::from_secs(self.limits.body_timeout_seconds.max(1)),
            inflight_body_bytes: self.limits.inflight_body_bytes.max(self.limits.max_body_bytes),
        };
        let ingest = Ingest {
            intake,
            bodies: source::BodyBudget::new(limits.inflight_body_bytes),
            limits,
            auth: Arc::new(AuthPolicy {
                tokens,
                allow_anonymous: tls.is_none(),
            }),
        };
        let router = source::app(ingest);
        let connections = self.limits.connections();
        let listener = tokio::net::TcpListener::bind(self.webhook_addr)
            .await
            .with_context(|| format!("binding the webhook address {}", self.webhook_addr))?;
        let tls_on = tls.is_some();
        // Load the certificate now, so a bad one fails the start rather than every handshake.
        if let Some(files) = &tls {
            source::check_tls(files).context("loading the webhook TLS files")?;
        }
        tokio::spawn(async move {
            if let Err(e) = source::serve(listener, tls, router, connections, metrics).await {
                tracing::error!(error = %e, "audit webhook stopped");
            }
        });
        tracing::info!(addr = %self.webhook_addr, tls = tls_on, "audit webhook listening");
        Ok(Webhook { spool, lifecycle })
    }

    /// Starts admission capture on `addr`: HTTPS always (the apiserver calls
    /// admission webhooks over HTTPS only), and authenticated like the audit
    /// webhook unless --admission-allow-unauthenticated says otherwise.
    async fn start_admission(
        &self,
        addr: SocketAddr,
        tokens: &[String],
        intake: &Intake,
    ) -> anyhow::Result<()> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            bail!(
                "--admission-addr needs --tls-cert-file and --tls-key-file (the apiserver calls admission webhooks over HTTPS)"
            );
        };
        let authenticated = self.client_ca_file.is_some() || !tokens.is_empty();
        if !authenticated && !self.admission_allow_unauthenticated {
            bail!(
                "--admission-addr needs a way to authenticate the apiserver: --client-ca-file and/or --token-file \
                 (given to the apiserver by its --admission-control-config-file; see docs/sources.md), \
                 or --admission-allow-unauthenticated to take reviews from anyone who reaches the port"
            );
        }
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.client_ca_file.clone(),
            client_names: self.limits.client_cert_names.clone(),
            certificate_optional: !tokens.is_empty() || self.admission_allow_unauthenticated,
        };
        source::check_tls(&files).context("loading the admission webhook TLS files")?;
        if self.admission_allow_unauthenticated {
            tracing::warn!(
                %addr,
                "admission capture takes reviews without authentication (--admission-allow-unauthenticated)"
            );
        }
        let router = source::admission::app(source::admission::Admission {
            intake: intake.clone(),
            auth: Arc::new(AuthPolicy {
                tokens: tokens.to_vec(),
                allow_anonymous: self.admission_allow_unauthenticated,
            }),
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the admission address {addr}"))?;
        let connections = self.limits.connections();
        let m = intake.metrics().clone();
        tokio::spawn(async move {
            if let Err(e) = source::serve(listener, Some(files), router, connections, m).await {
                tracing::error!(error = %e, "admission webhook stopped");
            }
        });
        tracing::info!(%addr, authenticated, "admission capture webhook listening");
        Ok(())
    }
}
