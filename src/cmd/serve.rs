//! `kubetrail serve`: the pipeline without the Kubernetes API. Trackers come from
//! a YAML file; destinations are S3 buckets or local directories. It is the quick
//! start, and the shape of a sidecar on a self-managed control plane.

use super::webhook::{LimitArgs, WebhookArgs};
use anyhow::Context as _;
use futures::FutureExt;
use kubetrail::api::{Delivery, Destination, Integrity, Redaction, TrackerFilter, TrackerSpec};
use kubetrail::deliver::pipeline::{Pipelines, StoreFactory, WriterId};
use kubetrail::integrity::{Anchor, HeadFile};
use kubetrail::runner::delivery::pipeline_spec;
use kubetrail::store::{self, StaticCredentials, Store};
use kubetrail::telemetry::{self, Metrics, Readiness};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The configuration used when no `--config` is given: one tracker keeping every
/// completed request in `./kubetrail-traces`, files cut every 5 seconds.
pub const DEFAULT_CONFIG: &str = "\
cluster: local
trackers:
  - name: system
    directory: ./kubetrail-traces
    delivery:
      maxBatchAge: 5s
";

/// The `serve` configuration file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeConfig {
    /// Cluster name in traces and keys.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    pub trackers: Vec<ServeTracker>,
}

fn default_cluster() -> String {
    "local".into()
}

/// One tracker of `serve`: a local `directory` or an S3 `destination`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeTracker {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub directory: Option<PathBuf>,
    #[serde(default)]
    pub destination: Option<Destination>,
    /// Static S3 credentials; without them the default AWS chain is used.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    #[serde(default)]
    pub filter: TrackerFilter,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub redaction: Redaction,
    /// Digests: `digests` (default on) and `digestPeriod`; the key is
    /// `--signing-key`, not a Secret.
    #[serde(default)]
    pub integrity: Integrity,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl ServeConfig {
    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> anyhow::Result<ServeConfig> {
        let config: ServeConfig = serde_saphyr::from_str(text).context("parsing the serve configuration")?;
        let mut seen = std::collections::HashSet::new();
        for t in &config.trackers {
            if !seen.insert(&t.name) {
                anyhow::bail!("tracker {:?} is defined twice", t.name);
            }
            match (&t.directory, &t.destination) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => anyhow::bail!(
                    "tracker {:?} needs exactly one of directory or destination",
                    t.name
                ),
            }
            if let Some(d) = &t.destination {
                // `serve` has no Kubernetes API to read a Secret from, and no
                // bucket lifecycle management: refuse rather than ignore.
                if d.credentials_secret_ref.is_some() {
                    anyhow::bail!(
                        "tracker {:?}: destination.credentialsSecretRef needs the Kubernetes API; \
                         `serve` takes `credentials` (accessKeyId, secretAccessKey) or the default AWS chain",
                        t.name
                    );
                }
                if d.retention_days.is_some() {
                    anyhow::bail!(
                        "tracker {:?}: destination.retentionDays is not applied by `serve`; \
                         set a lifecycle rule on the bucket instead",
                        t.name
                    );
                }
            }
            if t.integrity.signing_key_secret_ref.is_some() {
                anyhow::bail!(
                    "tracker {:?}: integrity.signingKeySecretRef needs the Kubernetes API; `serve` signs with --signing-key",
                    t.name
                );
            }
            if kubetrail::api::Duration::parse(&t.integrity.digest_period)
                .map_or(true, |d| d.get() < kubetrail::integrity::MIN_PERIOD)
            {
                anyhow::bail!(
                    "tracker {:?}: integrity.digestPeriod must be a duration of at least 1m",
                    t.name
                );
            }
            if kubetrail::api::Duration::parse(&t.delivery.max_batch_age)
                .map_or(true, |d| d.get() < std::time::Duration::from_secs(1))
            {
                anyhow::bail!(
                    "tracker {:?}: maxBatchAge must be a duration of at least 1s",
                    t.name
                );
            }
        }
        Ok(config)
    }
}

/// Flags of `kubetrail serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Trackers file (YAML); without it, one tracker writes to ./kubetrail-traces.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the audit webhook. Without TLS flags only loopback is allowed.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of `/live`, `/ready`, `/metrics`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub admin_addr: SocketAddr,
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long, default_value = "./kubetrail-spool")]
    pub spool_dir: PathBuf,
    /// Also follow this audit log file (the apiserver's `--audit-log-path`).
    #[arg(long)]
    pub audit_log_file: Option<PathBuf>,
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub spool_max_bytes: u64,
    /// Writer id in object keys (default: the host name).
    #[arg(long, env = "HOSTNAME", default_value = "local")]
    pub writer: String,
    /// Spool segment size.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub spool_segment_bytes: u64,
    /// Most spool bytes one tracker may have undelivered (default: half the spool).
    #[arg(long)]
    pub tracker_backlog_bytes: Option<u64>,
    /// Seconds within which a batch re-sent byte for byte is stored once.
    #[arg(long, default_value_t = 900)]
    pub dedupe_window_seconds: u64,
    /// Events remembered for de-duplication (0: off).
    #[arg(long, default_value_t = 1_000_000)]
    pub dedupe_max_events: usize,
    /// On SIGTERM: seconds to deliver what is spooled before exiting anyway.
    #[arg(long, default_value_t = 45)]
    pub drain_seconds: u64,
    /// Ed25519 key that signs digests (PKCS#8 PEM). Without it, a key is
    /// generated once as `signing-key.pem` in the spool directory; its public
    /// half is written next to it (`signing-key.pub.pem`) for `verify`.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// Where each writer's latest digest (its chain head) is kept, outside the
    /// bucket and the spool: a restart without the spool goes on from here,
    /// and `verify --chain-head` checks the trail against it (default:
    /// `<spool-dir>.chain-head.json`, beside the spool directory).
    #[arg(long)]
    pub chain_head: Option<PathBuf>,
    /// Address of the web console over these trackers, without
    /// authentication: a loopback address only. Off when unset.
    #[arg(long)]
    pub console_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The signing key of `serve`: the given file, or one generated in the spool
/// directory on first start.
fn signing_key(args: &ServeArgs) -> anyhow::Result<Arc<kubetrail::integrity::Signer>> {
    use kubetrail::integrity::Signer;
    let path = match &args.signing_key {
        Some(p) => p.clone(),
        None => {
            std::fs::create_dir_all(&args.spool_dir)
                .with_context(|| format!("creating {}", args.spool_dir.display()))?;
            let p = args.spool_dir.join("signing-key.pem");
            if !p.exists() {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let pem = Signer::generate_pem()?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)
                    .with_context(|| format!("creating {}", p.display()))?;
                f.write_all(pem.as_bytes())?;
                f.sync_all()?;
                tracing::info!(path = %p.display(), "generated a digest signing key");
            }
            p
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let signer = Signer::from_bytes(&bytes).with_context(|| format!("signing key {}", path.display()))?;
    let public = path.with_file_name("signing-key.pub.pem");
    if args.signing_key.is_none() {
        std::fs::write(&public, signer.public_key_pem())
            .with_context(|| format!("writing {}", public.display()))?;
    }
    tracing::info!(fingerprint = signer.fingerprint(), public_key = %signer.public_key_b64(), "digests are signed with this key");
    Ok(Arc::new(signer))
}

/// Runs `serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    kubetrail::install_crypto_provider();
    let text = match &args.config {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => DEFAULT_CONFIG.to_string(),
    };
    let config = ServeConfig::parse(&text)?;
    let signer = if config.trackers.iter().any(|t| t.enabled && t.integrity.digests) {
        Some(signing_key(&args)?)
    } else {
        None
    };
    let head_path = args.chain_head.clone().unwrap_or_else(|| {
        let mut p = args.spool_dir.clone().into_os_string();
        p.push(".chain-head.json");
        PathBuf::from(p)
    });
    let mut heads = HeadFile::read(&head_path)
        .with_context(|| format!("reading the chain heads {}", head_path.display()))?
        .unwrap_or_else(|| HeadFile {
            cluster: config.cluster.clone(),
            ..Default::default()
        });
    if heads.cluster != config.cluster {
        anyhow::bail!(
            "chain-head file {} belongs to cluster {:?}, not {:?}",
            head_path.display(),
            heads.cluster,
            config.cluster
        );
    }
    if !heads.writers.contains(&args.writer) {
        heads.writers.push(args.writer.clone());
        heads
            .write(&head_path)
            .with_context(|| format!("writing the chain heads {}", head_path.display()))?;
    }
    let metrics = Arc::new(Metrics::default());
    let console_metrics = metrics.clone();
    let readiness = Readiness::default();
    telemetry::spawn_admin(args.admin_addr, metrics.clone(), readiness.clone()).await?;
    let webhook = WebhookArgs {
        webhook_addr: args.listen,
        insecure_http: args.tls_cert_file.is_none(),
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        client_ca_file: args.client_ca_file,
        token_file: args.token_file,
        limits: args.limits,
        spool_dir: args.spool_dir,
        spool_max_bytes: args.spool_max_bytes,
        cluster_name: config.cluster.clone(),
        spool_segment_bytes: args.spool_segment_bytes,
        tracker_backlog_bytes: args.tracker_backlog_bytes,
        dedupe_window_seconds: args.dedupe_window_seconds,
        dedupe_max_events: args.dedupe_max_events,
        drain_seconds: args.drain_seconds,
        audit_log_file: args.audit_log_file,
        admission_addr: None,
        admission_allow_unauthenticated: false,
    };
    let started = webhook.start(metrics.clone(), readiness.clone()).await?;
    let writer = args.writer.clone();
    let pipelines = Pipelines::new(
        started.spool.clone(),
        WriterId {
            cluster: config.cluster.clone(),
            writer: args.writer,
        },
        metrics,
    );
    let desired = config
        .trackers
        .iter()
        .filter(|t| t.enabled)
        .map(|t| {
            let (destination, sink) = sink_of(t);
            let spec = TrackerSpec {
                enabled: true,
                destination,
                filter: t.filter.clone(),
                delivery: t.delivery.clone(),
                integrity: t.integrity.clone(),
                retention: Default::default(),
                redaction: t.redaction.clone(),
            };
            let anchor = Anchor {
                head: heads.head(&t.name, &writer).cloned(),
                keys: Vec::new(),
            };
            pipeline_spec(&t.name, &spec, sink, signer.clone(), anchor)
        })
        .collect();
    pipelines.apply(desired);
    let pipelines = Arc::new(pipelines);
    // Every new chain head goes to the file as soon as its digest is written.
    let keeper = {
        let pipelines = pipelines.clone();
        let path = head_path.clone();
        let mut heads = heads.clone();
        tokio::spawn(async move {
            loop {
                keep_heads(&pipelines, &mut heads, &path, true);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    if let Some(addr) = args.console_addr {
        let mut trackers = std::collections::BTreeMap::new();
        for t in config.trackers.iter().filter(|t| t.enabled) {
            let (destination, factory) = sink_of(t);
            let sink = factory()
                .await
                .map_err(|e| anyhow::anyhow!("console: tracker {}: {e}", t.name))?;
            trackers.insert(
                t.name.clone(),
                kubetrail::store::Trail::new(
                    sink,
                    destination.prefix.trim_end_matches('/'),
                    &config.cluster,
                    &t.name,
                ),
            );
        }
        let console = kubetrail::console::Console {
            access: None,
            trails: kubetrail::console::Trails::Static {
                cluster: config.cluster.clone(),
                trackers,
            },
            // No authentication, loopback only: the local user reads what
            // `serve`'s own configuration opens.
            readable_clusters: kubetrail::scope::ReadableClusters::All,
            max_days: 31,
            slots: tokio::sync::Semaphore::new(2),
            metrics: console_metrics,
        };
        kubetrail::console::spawn(addr, Arc::new(console)).await?;
    }
    readiness.set_ready(true);
    tracing::info!(trackers = ?pipelines.names(), "serving");
    kubetrail::runtime::shutdown_signal().await;
    let drain = std::time::Duration::from_secs(args.drain_seconds);
    let began = std::time::Instant::now();
    kubetrail::runtime::stop_ingest(&started.lifecycle, &readiness).await;
    kubetrail::runtime::drain_delivery(&pipelines, drain.saturating_sub(began.elapsed())).await;
    keeper.abort();
    // The drain closed every open period: the last heads, and no longer running.
    if let Ok(Some(latest)) = HeadFile::read(&head_path) {
        heads = latest;
    }
    keep_heads(&pipelines, &mut heads, &head_path, false);
    Ok(())
}

/// Writes the writers' newest chain heads to `path` when they changed.
fn keep_heads(pipelines: &Pipelines, heads: &mut HeadFile, path: &std::path::Path, running: bool) {
    let before = heads.clone();
    let newest: Vec<(String, kubetrail::integrity::ChainHead)> = pipelines
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|(tracker, s)| s.chain_head.clone().map(|h| (tracker.clone(), h)))
        .collect();
    for (tracker, head) in newest {
        heads.set(&tracker, head);
    }
    let delivering = pipelines.delivering();
    for (tracker, list) in heads.trackers.iter_mut() {
        for h in list.iter_mut() {
            h.running = running && delivering.contains(tracker);
        }
    }
    if *heads != before
        && let Err(e) = heads.write(path)
    {
        tracing::error!(path = %path.display(), error = %e, "writing the chain heads failed");
    }
}

/// The destination and sink of a serve tracker.
fn sink_of(t: &ServeTracker) -> (Destination, StoreFactory) {
    match (&t.directory, &t.destination) {
        (Some(dir), _) => {
            let dir = dir.clone();
            let destination = Destination::plain("local", "", "local", None, false);
            (
                destination,
                Arc::new(move || futures::future::ready(Ok(Store::Dir(dir.clone()))).boxed()),
            )
        }
        (None, Some(dest)) => {
            let dest = dest.clone();
            let creds = t.credentials.as_ref().map(|c| StaticCredentials {
                access_key_id: c.access_key_id.clone(),
                secret_access_key: c.secret_access_key.clone(),
                session_token: None,
            });
            let d = dest.clone();
            let factory: StoreFactory = Arc::new(move || {
                let d = d.clone();
                let creds = creds.clone();
                async move {
                    let creds = match creds {
                        Some(c) => store::Credentials::Static(c),
                        None => store::Credentials::Default,
                    };
                    store::open(&d, creds).await.map_err(|e| e.problem())
                }
                .boxed()
            });
            (dest, factory)
        }
        (None, None) => unreachable!("checked by ServeConfig::parse"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let c = ServeConfig::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.trackers.len(), 1);
        assert_eq!(c.trackers[0].delivery.max_batch_age, "5s");
        assert_eq!(
            c.trackers[0].filter.stages.len(),
            3,
            "defaults apply: ResponseComplete, Panic, Admission"
        );
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases = [
            ("trackers: [{name: a}]", "exactly one of directory or destination"),
            (
                "trackers: [{name: a, directory: x}, {name: a, directory: y}]",
                "defined twice",
            ),
            (
                "trackers: [{name: a, directory: x, delivery: {maxBatchAge: 10ms}}]",
                "maxBatchAge",
            ),
            ("trackers: [{name: a, directory: x, colour: red}]", "parsing"),
            (
                "trackers: [{name: a, destination: {bucket: bkt, credentialsSecretRef: {name: s3}}}]",
                "credentialsSecretRef needs the Kubernetes API",
            ),
            (
                "trackers: [{name: a, destination: {bucket: bkt, retentionDays: 30}}]",
                "retentionDays is not applied by `serve`",
            ),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", ServeConfig::parse(text).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../examples/serve/kubetrail.yaml");
        let c = super::ServeConfig::parse(text).unwrap();
        assert_eq!(c.trackers.len(), 2);
    }
}
