//! `kubetrail bench`: a load generator against the real ingest path.
//!
//! Starts the webhook, spool and one delivery pipeline in this process, posts
//! realistic audit batches to the webhook over loopback HTTP from several senders,
//! waits until every accepted event is in a trace file, and reports throughput,
//! event→object latency and peak RSS. The destination is an S3 endpoint (e.g.
//! `s3s-fs` on loopback) or, without `--endpoint`, a local directory.

use anyhow::Context as _;
use futures::FutureExt;
use kubetrail::api::{Compression, Delivery, Destination, TrackerFilter, TrackerSpec};
use kubetrail::deliver::pipeline::{Pipelines, StoreFactory, WriterId};
use kubetrail::runner::delivery::pipeline_spec;
use kubetrail::source::{self, AuthPolicy, Ingest};
use kubetrail::spool::{self, Spool};
use kubetrail::store::s3::{self, StaticCredentials};
use kubetrail::store::{ObjectStore as _, Store};
use kubetrail::telemetry::Metrics;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flags of `kubetrail bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Concurrent senders (the apiserver sends one batch at a time per backend).
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Events per batch (the apiserver's default batch size is 400).
    #[arg(long, default_value_t = 400)]
    pub batch_events: usize,
    /// S3 endpoint; without it, files go to a temporary directory.
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, default_value = "kubetrail-bench")]
    pub bucket: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "")]
    pub access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", default_value = "")]
    pub secret_key: String,
    /// gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    #[arg(long, default_value = "5s")]
    pub max_batch_age: String,
    /// Spool directory (default: a temporary directory).
    #[arg(long)]
    pub spool_dir: Option<std::path::PathBuf>,
    /// Cap on the offered load, events per second over all senders (0: as fast as
    /// the webhook answers).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Query benchmark instead of ingest: write this many traces spread over
    /// `--query-days` days, then time full scans with and without filters.
    #[arg(long, default_value_t = 0)]
    pub query_traces: usize,
    #[arg(long, default_value_t = 7)]
    pub query_days: usize,
    /// Traces per trace file in the query benchmark (delivery cuts a file
    /// every `maxBatchAge` or `maxBatchBytes`; 1,000 per file is a file every
    /// ~10 minutes at a million traces a week).
    #[arg(long, default_value_t = 50_000)]
    pub query_file_traces: usize,
    /// Skip fsync (to see what it costs).
    #[arg(long)]
    pub no_fsync: bool,
    /// Events remembered by the de-duplication window (the operator's default;
    /// 0 turns it off, to measure what it costs).
    #[arg(long, default_value_t = 1_000_000)]
    pub dedupe_max_events: usize,
    /// Robustness run instead of ingest: this many mutated audit batches through
    /// the webhook's parse, redaction and encoding (no panic, the right answer,
    /// no planted secret stored). Exits non-zero on the first failure.
    #[arg(long, default_value_t = 0)]
    pub fuzz_cases: u64,
    /// Seed of the robustness run (the same seed gives the same cases).
    #[arg(long, default_value_t = 1)]
    pub fuzz_seed: u64,
    /// Also run a key event notification (preset `deniedRequests`: 2 % of the
    /// generated events) that sends to an HTTPS receiver on loopback, and
    /// report acknowledgement→delivery latency.
    #[arg(long)]
    pub notify: bool,
    /// The notification's grouping window.
    #[arg(long, default_value = "2s")]
    pub notify_window: String,
}

/// An HTTPS receiver on loopback for `--notify`: a CA of its own, counts the
/// traces of the messages it gets. Returns its URL and CA (PEM).
async fn notify_receiver(
    traces: Arc<AtomicU64>,
    messages: Arc<AtomicU64>,
) -> anyhow::Result<(String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::pem::PemObject;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &ca)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from_pem_slice(
                cert.pem().as_bytes(),
            )?],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}/notify", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, traces, messages) = (acceptor.clone(), traces.clone(), messages.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (traces, messages) = (traces.clone(), messages.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        traces.fetch_add(v["data"]["count"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        messages.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::new(),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok((url, ca.pem()))
}

/// One realistic event of about 1.5 KB.
fn event(i: usize, batch: usize) -> serde_json::Value {
    let verbs = [
        "get", "list", "update", "patch", "create", "delete", "watch", "get",
    ];
    let resources = [
        ("", "configmaps"),
        ("apps", "deployments"),
        ("", "pods"),
        ("", "secrets"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    ];
    let (group, resource) = resources[i % resources.len()];
    let verb = verbs[(i / 3) % verbs.len()];
    let ns = format!("team-{}", i % 17);
    let name = format!("{resource}-{:04}", (i * 7919) % 5000);
    let code = if i.is_multiple_of(50) {
        403
    } else if verb == "create" {
        201
    } else {
        200
    };
    let api_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", batch, i, i % 4096, batch % 4096, i * 31 + batch),
        "stage": "ResponseComplete",
        "requestURI": format!("/api{}/namespaces/{ns}/{resource}/{name}?timeout=30s", if group.is_empty() { "/v1".to_string() } else { format!("s/{group}/v1") }),
        "verb": verb,
        "user": {"username": format!("system:serviceaccount:{ns}:deployer-{}", i % 5), "uid": "9f2c0f6e-5d0a-4d7e-9f61-0c2f7e3d8a11",
                 "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                 "extra": {"authentication.kubernetes.io/pod-name": [format!("deployer-{}-7d9f8c6b5-x2kq9", i % 5)]}},
        "sourceIPs": [format!("10.{}.{}.{}", i % 200, (i / 200) % 250, i % 250)],
        "userAgent": "kubectl/v1.34.4 (linux/amd64) kubernetes/4b3a8c1",
        "objectRef": {"resource": resource, "namespace": ns, "name": name, "apiGroup": group, "apiVersion": "v1", "resourceVersion": "48213"},
        "responseStatus": {"metadata": {}, "code": code},
        "requestObject": {"kind": "ConfigMap", "apiVersion": api_version, "metadata": {"name": name, "namespace": ns,
            "labels": {"app.kubernetes.io/name": "shop", "app.kubernetes.io/part-of": "storefront", "team": ns},
            "annotations": {"deploy.example.com/revision": format!("{}", i % 97)}},
            "data": {"config.yaml": "replicas: 3\nimage: registry.example.com/shop/web:1.42.0\nresources:\n  cpu: 500m\n  memory: 512Mi\n", "feature-flags": "checkout-v2=true,search-v3=false"}},
        "requestReceivedTimestamp": "2026-11-24T01:00:00.123456Z",
        "stageTimestamp": "2026-11-24T01:00:00.145678Z",
        "annotations": {"authorization.k8s.io/decision": if code == 403 { "forbid" } else { "allow" },
                        "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"deployer\" of Role \"deployer\" to ServiceAccount"}
    })
}

fn batch_body(batch: usize, events: usize) -> Vec<u8> {
    let items: Vec<_> = (0..events).map(|i| event(i, batch)).collect();
    serde_json::to_vec(
        &json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}),
    )
    .unwrap_or_default()
}

/// Peak resident set size of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(String::from))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Posts one body on a kept-alive connection; returns the status code.
async fn post(stream: &mut tokio::net::TcpStream, body: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let head = format!(
        "POST /audit HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    buf.clear();
    // Read the head, then the body by Content-Length.
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Ok(code);
        }
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The bench bucket, which is created if missing.
async fn bench_bucket(args: &BenchArgs, destination: &Destination) -> anyhow::Result<s3::Bucket> {
    let creds = StaticCredentials {
        access_key_id: args.access_key.clone(),
        secret_access_key: args.secret_key.clone(),
        session_token: None,
    };
    let bucket = s3::Bucket::connect(destination, Some(creds)).await;
    bucket.create_if_missing().await;
    bucket.check().await.context("checking the bench bucket")?;
    Ok(bucket)
}

/// The latency samples (ms) so far, sorted for percentiles.
fn sorted(latencies: &kubetrail::deliver::pipeline::Latencies) -> Vec<i64> {
    let mut lat: Vec<i64> = latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    lat.sort_unstable();
    lat
}

/// Runs the benchmark and prints a report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    kubetrail::install_crypto_provider();
    if args.query_traces > 0 {
        return run_query(args).await;
    }
    if args.fuzz_cases > 0 {
        return run_fuzz(args.fuzz_cases, args.fuzz_seed);
    }
    let tmp = std::env::temp_dir().join(format!("kubetrail-bench-{}", std::process::id()));
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| tmp.join("spool"));
    let metrics = Arc::new(Metrics::default());
    let spool = Spool::open(spool::Config {
        dir: spool_dir.clone(),
        max_bytes: 8 * 1024 * 1024 * 1024,
        segment_bytes: 64 * 1024 * 1024,
        fsync: !args.no_fsync,
        tracker_budget: 0,
        dedupe_window_ms: 900_000,
        dedupe_max: args.dedupe_max_events,
    })
    .context("opening the spool")?;
    let pipelines = start_delivery(&args, &tmp, &spool, &metrics).await?;
    let notifiers =
        kubetrail::notify::Notifiers::new(spool.clone(), "bench".into(), metrics.clone(), Default::default());
    let notified = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    if args.notify {
        start_notify(&args, &notifiers, &notified).await?;
    }
    let addr = start_webhook(&args, &spool, &metrics).await?;
    let Load {
        avg_event,
        sent_events,
        sent_bytes,
        refused,
        started,
    } = send_load(&args, addr).await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let accepted = sent_events.load(Ordering::Relaxed);
    eprintln!("load done; waiting for delivery of {accepted} events…");
    let labels = kubetrail::telemetry::TrackerLabels {
        tracker: "bench".into(),
    };
    let wait_deadline = Instant::now() + Duration::from_secs(600);
    while metrics.events_delivered.get_or_create(&labels).get() < accepted && Instant::now() < wait_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let delivered = metrics.events_delivered.get_or_create(&labels).get();
    let files = metrics.files_delivered.get_or_create(&labels).get();
    let lat = sorted(&pipelines.latencies);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mb = sent_bytes.load(Ordering::Relaxed) as f64 / 1e6;
    println!(
        "kubetrail bench: {} s, {} senders, {} events/batch, avg event {:.0} B, rate {}, compression {}, fsync {}, destination {}",
        args.seconds,
        args.senders,
        args.batch_events,
        avg_event,
        if args.rate > 0 {
            format!("{}/s", args.rate)
        } else {
            "unlimited".into()
        },
        args.compression,
        !args.no_fsync,
        args.endpoint.as_deref().unwrap_or("local directory")
    );
    println!(
        "accepted   {accepted} events, {:.0} events/s, {:.1} MB/s of audit JSON ({:.0} events/s per core on {cores} cores)",
        accepted as f64 / ingest_secs,
        mb / ingest_secs,
        accepted as f64 / ingest_secs / cores as f64
    );
    println!(
        "delivered  {delivered} events in {files} files, {:.0} events/s end to end",
        delivered as f64 / total_secs
    );
    println!(
        "latency    p50 {} ms, p99 {} ms, max {} ms (receive → object written; maxBatchAge {})",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        args.max_batch_age
    );
    println!(
        "refused    {} batches (503: spool full)",
        refused.load(Ordering::Relaxed)
    );
    if args.notify {
        let matched = || {
            notifiers
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get("bench")
                .map_or(0, |s| s.matched)
        };
        let until = Instant::now() + Duration::from_secs(120);
        while (matched() == 0 || notified.0.load(Ordering::Relaxed) < matched()) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lat = sorted(&notifiers.latencies);
        println!(
            "notify     {} matched, {} delivered in {} messages; latency p50 {} ms, p99 {} ms, max {} ms (receive → HTTPS receiver answered; window {})",
            matched(),
            notified.0.load(Ordering::Relaxed),
            notified.1.load(Ordering::Relaxed),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0),
            args.notify_window
        );
        notifiers.shutdown().await;
    }
    println!("peak RSS   {:.0} MiB", peak_rss_mib());
    let p = pipelines.clone();
    let _ = tokio::task::spawn_blocking(move || p.shutdown(Duration::from_secs(30))).await;
    if args.spool_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if delivered < accepted {
        anyhow::bail!("only {delivered} of {accepted} accepted events were delivered");
    }
    Ok(())
}

/// The bench tracker's pipeline: every trace, to the S3 endpoint or a local
/// directory, digests off (the benchmark measures ingest and delivery).
async fn start_delivery(
    args: &BenchArgs,
    tmp: &std::path::Path,
    spool: &Spool,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<Pipelines>> {
    let compression = match args.compression.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        other => anyhow::bail!("unknown compression {other:?}"),
    };
    let destination = Destination::plain(&args.bucket, "bench", "us-east-1", args.endpoint.clone(), true);
    let sink: StoreFactory = match &args.endpoint {
        Some(_) => {
            let bucket = bench_bucket(args, &destination).await?;
            Arc::new(move || futures::future::ready(Ok(Store::S3(bucket.clone()))).boxed())
        }
        None => {
            let dir = tmp.join("files");
            Arc::new(move || futures::future::ready(Ok(Store::Dir(dir.clone()))).boxed())
        }
    };
    let spec = TrackerSpec {
        enabled: true,
        destination,
        filter: TrackerFilter::default(),
        delivery: Delivery {
            compression,
            max_batch_age: args.max_batch_age.clone(),
            ..Delivery::default()
        },
        // Digests off: the benchmark measures ingest and delivery.
        integrity: kubetrail::api::Integrity {
            digests: false,
            ..Default::default()
        },
        retention: Default::default(),
        redaction: Default::default(),
    };
    let pipelines = Pipelines::new(
        spool.clone(),
        WriterId {
            cluster: "bench".into(),
            writer: "bench-0".into(),
        },
        metrics.clone(),
    );
    pipelines.apply(vec![pipeline_spec(
        "bench",
        &spec,
        sink,
        None,
        Default::default(),
    )]);
    Ok(pipelines)
}

/// A `deniedRequests` notification to a local HTTPS receiver that counts what
/// it gets (`notified`: traces, messages).
async fn start_notify(
    args: &BenchArgs,
    notifiers: &kubetrail::notify::Notifiers,
    notified: &(Arc<AtomicU64>, Arc<AtomicU64>),
) -> anyhow::Result<()> {
    let (url, ca) = notify_receiver(notified.0.clone(), notified.1.clone()).await?;
    let n: kubetrail::api::KeyEventNotificationSpec = serde_json::from_value(json!({
        "presets": ["deniedRequests"], "kubernetesEvent": false,
        "webhook": {"url": url, "caBundle": ca},
    }))?;
    let target = kubetrail::notify::send::Target::new(n.webhook.as_ref().context("webhook")?, None)?;
    notifiers.apply(
        vec![kubetrail::notify::NotifierSpec {
            name: "bench".into(),
            selection: Arc::new(kubetrail::notify::select::Selection::compile(&n)?),
            channels: vec![Arc::new(target)],
            window: kubetrail::api::Duration::parse(&args.notify_window)
                .context("--notify-window")?
                .get(),
            max_traces: 500,
            min_interval: Duration::from_millis(100),
            fingerprint: "bench".into(),
        }],
        &[],
    );
    Ok(())
}

/// The audit webhook on a loopback port (plain HTTP, no authentication),
/// spooling into `spool` as in production.
async fn start_webhook(
    args: &BenchArgs,
    spool: &Spool,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<std::net::SocketAddr> {
    // The production default: every event is checked against the window.
    let dedupe = Arc::new(kubetrail::source::dedupe::Window::new(
        Duration::from_secs(900),
        args.dedupe_max_events,
        vec![],
        0,
    ));
    let ingest = Ingest {
        intake: source::Intake::new(
            spool.clone(),
            dedupe,
            metrics.clone(),
            "bench",
            1 << 20,
            source::Lifecycle::open(),
        ),
        limits: source::RequestLimits {
            max_body_bytes: 64 * 1024 * 1024,
            ..Default::default()
        },
        bodies: source::BodyBudget::new(256 * 1024 * 1024),
        auth: Arc::new(AuthPolicy {
            tokens: vec![],
            allow_anonymous: true,
        }),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(source::serve(
        listener,
        None,
        source::app(ingest),
        source::ConnectionLimits::default(),
        metrics.clone(),
    ));
    Ok(addr)
}

/// What the senders did.
struct Load {
    avg_event: f64,
    sent_events: Arc<AtomicU64>,
    sent_bytes: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    started: Instant,
}

/// `--senders` connections posting batches (each with new audit IDs) for
/// `--seconds`, at `--rate` if given.
async fn send_load(args: &BenchArgs, addr: std::net::SocketAddr) -> anyhow::Result<Load> {
    eprintln!(
        "generating {} distinct batches of {} events…",
        32, args.batch_events
    );
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..32).map(|b| batch_body(b, args.batch_events)).collect());
    let avg_event = bodies.iter().map(Vec::len).sum::<usize>() as f64 / (32 * args.batch_events) as f64;
    let sent_events = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let senders = args.senders.max(1);
    for s in 0..senders {
        let (bodies, sent_events, sent_bytes, refused) = (
            bodies.clone(),
            sent_events.clone(),
            sent_bytes.clone(),
            refused.clone(),
        );
        let batch_events = args.batch_events as u64;
        // Each sender's share of the rate, as a pause between its batches.
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(batch_events as f64 * args.senders as f64 / args.rate as f64));
        tasks.push(tokio::spawn(async move {
            // Every send carries new audit IDs (the first 8 hex digits are this
            // sender's counter), so no event is a copy the webhook would skip.
            // A sender copies only the bodies it sends.
            let mut mine: Vec<Vec<u8>> = (s..bodies.len())
                .step_by(senders)
                .map(|j| bodies[j].clone())
                .collect();
            if mine.is_empty() {
                mine.push(bodies[s % bodies.len()].clone());
            }
            let marks: Vec<Vec<usize>> = mine
                .iter()
                .map(|b| {
                    memchr::memmem::find_iter(b, b"\"auditID\":\"")
                        .map(|i| i + 11)
                        .collect()
                })
                .collect();
            let mut sends = 0u32;
            let mut next = Instant::now();
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = Vec::new();
            let mut i = s;
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    next += iv;
                    tokio::time::sleep_until(next.into()).await;
                }
                let which = i % mine.len();
                i += 1;
                let stamp = format!("{:08x}", ((s as u32 & 0xf) << 28) | (sends & 0x0fff_ffff));
                sends += 1;
                for at in &marks[which] {
                    mine[which][*at..*at + 8].copy_from_slice(stamp.as_bytes());
                }
                let body = &mine[which];
                match post(&mut stream, body, &mut buf).await? {
                    200 => {
                        sent_events.fetch_add(batch_events, Ordering::Relaxed);
                        sent_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("sender task")?.context("sender")?;
    }
    Ok(Load {
        avg_event,
        sent_events,
        sent_bytes,
        refused,
        started,
    })
}

/// The query benchmark: known trace files over several days, then scans.
/// The robustness property over `cases` mutated batches, spread over the cores.
fn run_fuzz(cases: u64, seed: u64) -> anyhow::Result<()> {
    use kubetrail::source::mutate::{self, MUTATIONS, Outcome, Rng};
    use rayon::prelude::*;
    // Quiet the default panic message: a panic is caught and reported as a failure.
    std::panic::set_hook(Box::new(|_| {}));
    let started = std::time::Instant::now();
    let chunks = 256u64;
    let per = cases.div_ceil(chunks);
    let results: Vec<Result<(u64, u64), String>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut rng = Rng::new(seed ^ (c + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut accepted, mut refused) = (0, 0);
            for i in 0..per.min(cases.saturating_sub(c * per)) {
                let batch = mutate::seed_batch(&mut rng);
                let m = MUTATIONS[(i as usize) % MUTATIONS.len()];
                let body = mutate::mutate(&mut rng, &batch, m, 1 << 20);
                match mutate::check(&body, 1 << 20) {
                    Ok(Outcome::Accepted) => accepted += 1,
                    Ok(Outcome::Refused) => refused += 1,
                    Err(e) => return Err(format!("chunk {c} case {i} ({m:?}): {e}")),
                }
            }
            Ok((accepted, refused))
        })
        .collect();
    let _ = std::panic::take_hook();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for r in results {
        let (a, f) = r.map_err(|e| anyhow::anyhow!("robustness property failed: {e}"))?;
        accepted += a;
        refused += f;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {} cases (seed {seed}) in {secs:.1} s, {:.0} cases/s: {accepted} accepted, {refused} refused; no panic, no wrong answer, no planted secret stored",
        accepted + refused,
        (accepted + refused) as f64 / secs
    );
    Ok(())
}

async fn run_query(args: BenchArgs) -> anyhow::Result<()> {
    use kubetrail::api::QueryFilter;
    use kubetrail::query::{self, Query};

    let tmp = std::env::temp_dir().join(format!("kubetrail-bench-query-{}", std::process::id()));
    let destination = Destination::plain(&args.bucket, "bench", "us-east-1", args.endpoint.clone(), true);
    let sink = match &args.endpoint {
        Some(_) => Store::S3(bench_bucket(&args, &destination).await?),
        None => Store::Dir(tmp.clone()),
    };
    let cluster = format!("bq{}", std::process::id());
    let trail = kubetrail::store::Trail::new(sink.clone(), "bench", &cluster, "bench");
    let start_day = jiff::Timestamp::from_second(1_795_132_800).unwrap_or(jiff::Timestamp::UNIX_EPOCH); // 2026-11-20
    let Corpus {
        files,
        raw_bytes,
        listed,
        per_day,
    } = write_corpus(&args, &trail, start_day).await?;
    let from = start_day.as_millisecond();
    let to = from + args.query_days as i64 * 86_400_000;
    let (signer, digests) = write_digests(&trail, &listed, from, args.query_days).await?;
    let base = Query {
        limit: 100,
        ..Query::new("bench", vec![cluster.clone()], "bench", from, to)
    };
    let filtered = Query {
        filter: QueryFilter {
            verbs: vec!["delete".into()],
            resources: vec!["secrets".into()],
            ..QueryFilter::default()
        },
        ..base.clone()
    };
    let one_day = Query {
        from_ms: from + 3 * 86_400_000,
        to_ms: from + 4 * 86_400_000,
        ..base.clone()
    };
    println!(
        "kubetrail bench --query-traces: {} traces in {files} files over {} days ({:.0} MB uncompressed), destination {}",
        per_day * args.query_days,
        args.query_days,
        raw_bytes as f64 / 1e6,
        args.endpoint.as_deref().unwrap_or("local directory")
    );
    for (name, q) in [
        ("full scan, no filter", &base),
        ("full scan, delete secrets", &filtered),
        ("one day of seven", &one_day),
    ] {
        let started = Instant::now();
        let out = query::run(&sink, q, 400)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name:<28} {:>9} traces in {:.2} s = {:>9.0} traces/s, {:>6.1} MB/s compressed; {} prefixes listed, {} objects read, {} matched",
            out.scanned_traces,
            secs,
            out.scanned_traces as f64 / secs,
            out.scanned_bytes as f64 / 1e6 / secs,
            out.listed_prefixes.len(),
            out.scanned_objects,
            out.matched
        );
    }
    // The console's Trace List: one hour (day 4, 13:00) of one namespace,
    // newest first, pages of 50, each page after the previous one's cursor.
    let hour = Query {
        from_ms: from + 3 * 86_400_000 + 13 * 3_600_000,
        to_ms: from + 3 * 86_400_000 + 14 * 3_600_000,
        filter: QueryFilter {
            namespaces: vec!["team-3".into()],
            ..QueryFilter::default()
        },
        limit: 50,
        ..base.clone()
    };
    let mut page = hour.clone();
    for n in 1..=3 {
        let started = Instant::now();
        let out = query::run(&sink, &page, 400)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<28} {:>9} traces in {:.3} s; {} objects read, {} rows, {} matched from here on",
            format!("console page {n}, 1 h, team-3"),
            out.scanned_traces,
            secs,
            out.scanned_objects,
            out.hits.len(),
            out.matched
        );
        match out.hits.last() {
            Some(last) if out.matched > out.hits.len() as u64 => {
                page.cursor = Some((last.time_ms, last.trace_id.clone()));
            }
            _ => break,
        }
    }
    // The console's first page of the last 7 days, unfiltered: it stops once
    // no file left can hold a newer trace.
    let week_page = Query {
        limit: 50,
        stop_early: true,
        ..base.clone()
    };
    let started = Instant::now();
    let out = query::run(&sink, &week_page, 400)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{:<28} {:>9} traces in {:.3} s; {} objects read, {} rows",
        "console page 1, 7 days",
        out.scanned_traces,
        started.elapsed().as_secs_f64(),
        out.scanned_objects,
        out.hits.len()
    );
    let started = Instant::now();
    let o = query::overview(&sink, &hour, 400, 300_000, 10)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{:<28} {:>9} traces in {:.3} s; {} objects read, {} matched",
        "console overview, 1 h",
        o.scanned_traces,
        started.elapsed().as_secs_f64(),
        o.scanned_objects,
        o.total
    );
    let started = Instant::now();
    let report = kubetrail::integrity::verify::verify(&kubetrail::integrity::verify::Request {
        trail: kubetrail::store::Trail::new(sink.clone(), "bench", &cluster, "bench"),
        from_ms: from,
        to_ms: to,
        keys: vec![kubetrail::integrity::PublicKey::parse(&signer.public_key_b64())?],
        oldest_kept_ms: None,
        now_ms: jiff::Timestamp::now().as_millisecond(),
        parallelism: 16,
        known: None,
        skew_ms: kubetrail::integrity::verify::DEFAULT_SKEW_MS,
        heads: None,
        known_writers: Vec::new(),
        period_ms: None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<28} {digests:>9} digests in {secs:.2} s: {}",
        "verify, the whole week",
        report.summary_line()
    );
    if !report.ok() {
        anyhow::bail!(
            "the benchmark's own trail does not verify: {}",
            report.summary_line()
        );
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib());
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The query benchmark's trail: what was written.
struct Corpus {
    files: u64,
    raw_bytes: u64,
    /// (earliest ms, digest entry) of every file, for the hourly digests.
    listed: Vec<(i64, kubetrail::integrity::DigestFile)>,
    per_day: usize,
}

/// Writes `--query-traces` traces over `--query-days` days from `start_day` into
/// `trail` as gzip trace files of `--query-file-traces` each, encoded as the
/// webhook encodes them.
async fn write_corpus(
    args: &BenchArgs,
    trail: &kubetrail::store::Trail,
    start_day: jiff::Timestamp,
) -> anyhow::Result<Corpus> {
    use kubetrail::deliver::batch::{Batch, tracker_suffix};
    use kubetrail::spool::entries;

    let per_day = args.query_traces / args.query_days.max(1);
    let per_file = args.query_file_traces.max(1);
    eprintln!(
        "writing {} traces over {} days…",
        per_day * args.query_days,
        args.query_days
    );
    let template = batch_body(0, args.batch_events);
    let suffix = tracker_suffix("bench");
    let mut files = 0u64;
    let mut raw_bytes = 0u64;
    let mut chunk = 0u64;
    let mut listed: Vec<(i64, kubetrail::integrity::DigestFile)> = Vec::new();
    let spacing_ms = (86_400_000 / per_day.max(1)).max(1);
    for day in 0..args.query_days {
        let mut written = 0usize;
        while written < per_day {
            let n = per_file.min(per_day - written);
            let first_ms =
                start_day.as_millisecond() + day as i64 * 86_400_000 + (written * spacing_ms) as i64;
            let mut batch = Batch::new(Compression::Gzip);
            let mut done = 0usize;
            while done < n {
                // Spread the traces over the day, each chunk with its own audit IDs.
                let ts = jiff::Timestamp::from_millisecond(first_ms + (done * spacing_ms) as i64)
                    .unwrap_or(start_day);
                chunk += 1;
                let body = String::from_utf8_lossy(&template)
                    .replace("2026-11-24T01:00:00.123456Z", &ts.to_string())
                    .replace("\"auditID\":\"00000000-", &format!("\"auditID\":\"{chunk:08x}-"));
                let encoded = source::encode(
                    body.as_bytes(),
                    &trail.cluster,
                    kubetrail::trace::Source::Webhook,
                    ts,
                    0,
                    1024 * 1024,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                for (_, line) in entries::iter(&encoded.payload).take(n - done) {
                    batch.push(line, &suffix)?;
                    done += 1;
                }
            }
            raw_bytes += batch.raw_bytes;
            let key = trail.file_key("w0", "00000000", files, 0, first_ms, Compression::Gzip);
            let body = batch.finish()?;
            let last_ms = first_ms + ((n.max(1) - 1) * spacing_ms) as i64;
            listed.push((
                first_ms,
                kubetrail::integrity::DigestFile {
                    key: key.clone(),
                    size: body.len() as u64,
                    sha256: kubetrail::integrity::digest::sha256_hex(&body),
                    events: n as u64,
                    earliest: kubetrail::integrity::digest::rfc3339(first_ms),
                    latest: kubetrail::integrity::digest::rfc3339(last_ms),
                },
            ));
            trail
                .store
                .put(&key, body, Compression::Gzip)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // A delivered file is written shortly after its last trace; a local
            // directory can say so (an S3 server sets its own time).
            if let Store::Dir(root) = &trail.store {
                let written = std::time::UNIX_EPOCH + Duration::from_millis((last_ms + 30_000).max(0) as u64);
                if let Ok(f) = std::fs::File::options().write(true).open(root.join(&key)) {
                    let _ = f.set_modified(written);
                }
            }
            files += 1;
            written += n;
        }
    }
    Ok(Corpus {
        files,
        raw_bytes,
        listed,
        per_day,
    })
}

/// One signed digest per hour over `days` from `from`, chained, as a writer
/// would have written them; returns the signer and how many.
async fn write_digests(
    trail: &kubetrail::store::Trail,
    listed: &[(i64, kubetrail::integrity::DigestFile)],
    from: i64,
    days: usize,
) -> anyhow::Result<(kubetrail::integrity::Signer, usize)> {
    let signer =
        kubetrail::integrity::Signer::from_bytes(kubetrail::integrity::Signer::generate_pem()?.as_bytes())?;
    let mut previous = None;
    let mut digests = 0usize;
    for hour in 0..(days as i64 * 24) {
        let start = from + hour * 3_600_000;
        let end = start + 3_600_000;
        let d = kubetrail::integrity::Digest {
            version: kubetrail::integrity::digest::VERSION,
            cluster: trail.cluster.clone(),
            tracker: "bench".into(),
            writer: "w0".into(),
            period_start: kubetrail::integrity::digest::rfc3339(start),
            period_end: kubetrail::integrity::digest::rfc3339(end),
            key_fingerprint: signer.fingerprint().into(),
            previous: previous.clone(),
            files: listed
                .iter()
                .filter(|(t, _)| *t >= start && *t < end)
                .map(|(_, f)| f.clone())
                .collect(),
        };
        let key = trail.digest_key("w0", start);
        let (body, signed) = signer.sign(&d, &key)?;
        trail
            .store
            .put_object(&key, body, "application/json", &[])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        previous = Some(signed);
        digests += 1;
    }
    Ok((signer, digests))
}
