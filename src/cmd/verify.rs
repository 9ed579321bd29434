//! `kubetrail verify`: proves that a tracker's trail is whole and untouched.

use anyhow::{Context as _, bail};
use kube::api::Api;
use kubetrail::api::{Destination, Tracker};
use kubetrail::integrity::verify::{self, DigestState, FileState, Report};
use kubetrail::integrity::{ChainHead, HeadFile, PublicKey, retention};
use kubetrail::store::{self, Credentials, Store};
use std::path::PathBuf;

/// Output formats.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Flags of `kubetrail verify`.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// Tracker whose trail is verified: destination, credentials and public keys
    /// are read through the Kubernetes API (the keys from its status, never from
    /// the bucket).
    #[arg(long, conflicts_with_all = ["bucket", "directory"])]
    pub tracker: Option<String>,
    /// Namespace of the tracker's credentials Secret (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubetrail")]
    pub operator_namespace: String,
    /// Verify a bucket directly (credentials from the AWS environment); needs
    /// --tracker-name and --public-key.
    #[arg(long, requires_all = ["tracker_name", "public_key"])]
    pub bucket: Option<String>,
    /// Verify a local directory written by `kubetrail serve`.
    #[arg(long, requires_all = ["tracker_name", "public_key"])]
    pub directory: Option<PathBuf>,
    /// Tracker name in the object keys, with --bucket or --directory.
    #[arg(long)]
    pub tracker_name: Option<String>,
    /// A trusted public key: base64 of the 32 raw bytes, a PEM file, or
    /// base64 DER. Repeat for rotated keys.
    #[arg(long)]
    pub public_key: Vec<String>,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long)]
    pub force_path_style: bool,
    /// Cluster name in the object keys.
    #[arg(long, env = "KUBETRAIL_CLUSTER_NAME", default_value = "kubernetes")]
    pub cluster: String,
    /// A trailing window, e.g. 7d or 24h (default 24h unless --from is given).
    #[arg(long, conflicts_with = "from")]
    pub since: Option<String>,
    /// Start (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// End (RFC 3339, default now).
    #[arg(long)]
    pub to: Option<String>,
    /// With --bucket or --directory: files older than this many days are
    /// expired, not missing (a tracker's own retentionDays is used otherwise).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Clock skew allowed between writers and the store, in seconds: a file no
    /// digest lists is "pending" until its writer's digests pass it by more.
    #[arg(long, default_value_t = 60)]
    pub clock_skew_seconds: u64,
    /// Objects fetched and hashed at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    /// With --bucket or --directory: the chain heads `kubetrail serve` keeps
    /// outside the bucket (its `--chain-head` file). Every writer's chain must
    /// then reach its head, and only those writers' newest files are pending.
    #[arg(long)]
    pub chain_head: Option<PathBuf>,
    /// With --bucket or --directory: the digest period of the trail (e.g. 1h),
    /// how long a file may wait for its digest (default: from the chain heads
    /// or the digests).
    #[arg(long)]
    pub digest_period: Option<String>,
    /// Print every file, not only those with a problem.
    #[arg(long)]
    pub all_files: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `7d`, `24h`, `90m`.
fn parse_since(s: &str) -> anyhow::Result<i64> {
    let d = kubetrail::api::Duration::parse_span(s).context("--since")?;
    Ok(d.as_millis_i64())
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    Ok(s.parse::<jiff::Timestamp>()
        .with_context(|| format!("{s:?} is not an RFC 3339 time such as 2026-11-24T03:12:00Z"))?
        .as_millisecond())
}

fn read_key(arg: &str) -> anyhow::Result<PublicKey> {
    let text = if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    PublicKey::parse(&text).with_context(|| format!("public key {arg:?}"))
}

/// Where to look and what to trust.
struct Target {
    store: Store,
    prefix: String,
    tracker: String,
    keys: Vec<PublicKey>,
    retention_days: Option<u32>,
    heads: Option<Vec<ChainHead>>,
    known_writers: Vec<String>,
    period_ms: Option<i64>,
}

/// The heads of `tracker` in `serve`'s chain-head file, and its writers.
fn read_heads(
    path: &std::path::Path,
    tracker: &str,
    cluster: &str,
) -> anyhow::Result<(Vec<ChainHead>, Vec<String>)> {
    let file = HeadFile::read(path)
        .with_context(|| format!("reading the chain heads {}", path.display()))?
        .with_context(|| format!("chain-head file {} does not exist", path.display()))?;
    if file.cluster != cluster {
        bail!(
            "chain-head file {} is of cluster {:?}, not {cluster:?}",
            path.display(),
            file.cluster
        );
    }
    Ok((
        file.trackers.get(tracker).cloned().unwrap_or_default(),
        file.writers,
    ))
}

fn period_arg(args: &VerifyArgs) -> anyhow::Result<Option<i64>> {
    args.digest_period
        .as_deref()
        .map(|p| {
            kubetrail::api::Duration::parse(p)
                .map(|d| d.as_millis_i64())
                .context("--digest-period")
        })
        .transpose()
}

async fn target(args: &VerifyArgs) -> anyhow::Result<Target> {
    let keys = args
        .public_key
        .iter()
        .map(|k| read_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let period_ms = period_arg(args)?;
    let name = args.tracker_name.clone().unwrap_or_default();
    let (heads, known_writers) = match args.chain_head.as_deref() {
        Some(p) => {
            let (heads, writers) = read_heads(p, &name, &args.cluster)?;
            (Some(heads), writers)
        }
        None => (None, Vec::new()),
    };
    if let Some(dir) = &args.directory {
        return Ok(Target {
            store: Store::Dir(dir.clone()),
            prefix: args.prefix.clone(),
            tracker: name,
            keys,
            retention_days: args.retention_days,
            heads,
            known_writers: known_writers.clone(),
            period_ms,
        });
    }
    if let Some(bucket) = &args.bucket {
        let dest = Destination::plain(
            bucket,
            &args.prefix,
            &args.region,
            args.endpoint.clone(),
            args.force_path_style,
        );
        let store = store::open(&dest, Credentials::Default).await?;
        return Ok(Target {
            store,
            prefix: args.prefix.clone(),
            tracker: name,
            keys,
            retention_days: args.retention_days,
            heads,
            known_writers: known_writers.clone(),
            period_ms,
        });
    }
    let Some(name) = &args.tracker else {
        bail!("name a --tracker, or give --bucket or --directory with --tracker-name and --public-key");
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let tracker = Api::<Tracker>::all(client.clone())
        .get_opt(name)
        .await
        .context("reading the tracker")?
        .with_context(|| format!("tracker {name:?} does not exist"))?;
    let mut keys = keys;
    let status = tracker.status.clone().unwrap_or_default();
    let published = status
        .integrity
        .as_ref()
        .map(|i| i.public_keys.as_slice())
        .unwrap_or_default();
    for k in published {
        PublicKey::parse(&k.public_key)
            .with_context(|| format!("public key {} in the tracker's status", k.fingerprint))?;
    }
    keys.extend(kubetrail::controller::trail::trusted_keys(published));
    if keys.is_empty() {
        bail!(
            "tracker {name:?} publishes no public key yet (status.integrity.publicKeys); is integrity.digests on and the operator running?"
        );
    }
    let dest = tracker.spec.destination.clone();
    let creds = Credentials::Secret {
        client: &client,
        namespace: &args.operator_namespace,
    };
    let store = store::open(&dest, creds)
        .await
        .context("reading the tracker's credentials")?;
    let prefix = dest.prefix.trim_end_matches('/').to_string();
    let period_ms = match period_ms {
        Some(p) => Some(p),
        None => kubetrail::api::Duration::parse(&tracker.spec.integrity.digest_period)
            .ok()
            .map(|d| d.get().max(kubetrail::integrity::MIN_PERIOD).as_millis() as i64),
    };
    Ok(Target {
        store,
        prefix,
        tracker: name.clone(),
        keys,
        retention_days: dest.retention_days,
        heads: Some(status.chain_heads),
        known_writers: status.writers.iter().map(|w| w.writer.clone()).collect(),
        period_ms,
    })
}

fn print_text(report: &Report, all_files: bool) {
    let mut writer = None;
    for d in &report.digests {
        if writer != Some(&d.writer) {
            println!("writer {}", if d.writer.is_empty() { "?" } else { &d.writer });
            writer = Some(&d.writer);
        }
        let state = match d.state {
            DigestState::Valid => "valid",
            DigestState::InvalidSignature => "INVALID SIGNATURE",
            DigestState::Missing => "MISSING",
            DigestState::ChainBroken => "CHAIN BROKEN",
            DigestState::Truncated => "TRUNCATED",
        };
        print!(
            "  {} .. {}  {state:<17} {:>5} files  {}",
            d.period_start, d.period_end, d.files, d.key
        );
        match &d.reason {
            Some(r) => println!("  ({r})"),
            None => println!(),
        }
    }
    for f in &report.files {
        let state = match f.state {
            FileState::Valid if !all_files => continue,
            FileState::Valid => "valid",
            FileState::Modified => "MODIFIED",
            FileState::Deleted => "DELETED",
            FileState::Added => "ADDED",
            FileState::Pending => "pending",
        };
        println!("file {state:<8} {}", f.key);
    }
    println!("{}", report.summary_line());
}

/// Runs `kubetrail verify`; an error (exit status 1) when anything is wrong.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    kubetrail::install_crypto_provider();
    let Target {
        store,
        prefix,
        tracker,
        keys,
        retention_days,
        heads,
        known_writers,
        period_ms,
    } = target(&args).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    let to_ms = match &args.to {
        Some(t) => parse_time(t)?,
        None => now,
    };
    let from_ms = match (&args.from, &args.since) {
        (Some(f), _) => parse_time(f)?,
        (None, Some(s)) => to_ms - parse_since(s)?,
        (None, None) => to_ms - 86_400_000,
    };
    if from_ms >= to_ms {
        bail!("--from must be before --to");
    }
    let req = verify::Request {
        trail: kubetrail::store::Trail::new(store, &prefix, &args.cluster, &tracker),
        from_ms,
        to_ms,
        keys,
        oldest_kept_ms: retention_days.map(|d| retention::oldest_day_kept(now, d)),
        now_ms: now,
        parallelism: args.parallelism.max(1),
        known: None,
        skew_ms: args.clock_skew_seconds as i64 * 1000,
        heads,
        known_writers,
        period_ms,
    };
    let report = verify::verify(&req).await.context("reading the trail")?;
    match args.output {
        Output::Text => print_text(&report, args.all_files),
        Output::Json => {
            let out = serde_json::json!({
                "summary": report.summary(),
                "summaryLine": report.summary_line(),
                "ok": report.ok(),
                "digests": report.digests,
                "files": report.files,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    if !report.ok() {
        bail!("the trail is not intact: {}", report.summary_line());
    }
    Ok(())
}
