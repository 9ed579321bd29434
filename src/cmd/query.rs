//! `kubetrail query`: the query engine from the command line.

use anyhow::{Context as _, bail};
use kube::api::Api;
use kubetrail::api::{Destination, Order, QueryFilter, Rating, Tracker};
use kubetrail::query::{self, Query};
use kubetrail::store::{self, Credentials, Store, Trail};
use std::path::PathBuf;

/// Output formats.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Jsonl,
}

/// Flags of `kubetrail query`.
#[derive(Clone, Debug, clap::Args)]
pub struct QueryArgs {
    /// Tracker whose destination is searched (read through the Kubernetes API).
    #[arg(long, conflicts_with_all = ["bucket", "directory"])]
    pub tracker: Option<String>,
    /// Namespace of the tracker's credentials Secret (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubetrail")]
    pub operator_namespace: String,
    /// Search a bucket directly (credentials from the AWS environment).
    #[arg(long, requires = "tracker_name")]
    pub bucket: Option<String>,
    /// Search a local directory written by `kubetrail serve`.
    #[arg(long, requires = "tracker_name")]
    pub directory: Option<PathBuf>,
    /// Tracker name in the object keys, with --bucket or --directory.
    #[arg(long)]
    pub tracker_name: Option<String>,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long)]
    pub force_path_style: bool,
    /// Cluster names in the object keys (one bucket may hold many clusters).
    #[arg(
        long,
        value_delimiter = ',',
        env = "KUBETRAIL_CLUSTER_NAME",
        default_value = "kubernetes"
    )]
    pub cluster: Vec<String>,
    /// Search every cluster found in the bucket under the prefix.
    #[arg(long)]
    pub all_clusters: bool,
    /// A trailing window, e.g. 24h (default 1h unless --from is given).
    #[arg(long, conflicts_with = "from")]
    pub since: Option<String>,
    /// Start (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// End (RFC 3339, default now).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub verb: Vec<String>,
    #[arg(long)]
    pub user: Vec<String>,
    /// `resource` or `resource/name`, e.g. `secrets/db-password`.
    #[arg(long)]
    pub resource: Vec<String>,
    #[arg(long)]
    pub api_group: Vec<String>,
    #[arg(short = 'n', long)]
    pub namespace: Vec<String>,
    #[arg(long, value_parser = parse_rating)]
    pub rating: Vec<Rating>,
    #[arg(long)]
    pub source_ip: Vec<String>,
    #[arg(long)]
    pub trace_id: Vec<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// A resource's operations, oldest first.
    #[arg(long)]
    pub lifecycle: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Longest time range, in days.
    #[arg(long, default_value_t = 366)]
    pub max_days: i64,
}

fn parse_rating(s: &str) -> Result<Rating, String> {
    match s {
        "normal" => Ok(Rating::Normal),
        "warning" => Ok(Rating::Warning),
        "incident" => Ok(Rating::Incident),
        _ => Err(format!("rating must be normal, warning or incident, not {s:?}")),
    }
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    Ok(s.parse::<jiff::Timestamp>()
        .with_context(|| format!("{s:?} is not an RFC 3339 time such as 2026-11-24T03:12:00Z"))?
        .as_millisecond())
}

/// Resolves where to search: the tracker's trail (the clusters searched are
/// the query's own list).
async fn trail_for(args: &QueryArgs) -> anyhow::Result<Trail> {
    let cluster = args.cluster.first().map(String::as_str).unwrap_or_default();
    if let Some(dir) = &args.directory {
        return Ok(Trail::new(
            Store::Dir(dir.clone()),
            &args.prefix,
            cluster,
            args.tracker_name.as_deref().unwrap_or_default(),
        ));
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
        return Ok(Trail::new(
            store,
            &args.prefix,
            cluster,
            args.tracker_name.as_deref().unwrap_or_default(),
        ));
    }
    let Some(name) = &args.tracker else {
        bail!("name a --tracker, or give --bucket or --directory with --tracker-name");
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let tracker = Api::<Tracker>::all(client.clone())
        .get_opt(name)
        .await
        .context("reading the tracker")?
        .with_context(|| format!("tracker {name:?} does not exist"))?;
    let dest = tracker.spec.destination.clone();
    let creds = Credentials::Secret {
        client: &client,
        namespace: &args.operator_namespace,
    };
    let store = store::open(&dest, creds)
        .await
        .context("reading the tracker's credentials")?;
    Ok(Trail::new(
        store,
        dest.prefix.trim_end_matches('/'),
        cluster,
        name,
    ))
}

/// Runs `kubetrail query` and prints the result.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    kubetrail::install_crypto_provider();
    let trail = trail_for(&args).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    let to_ms = match &args.to {
        Some(t) => parse_time(t)?,
        None => now + 1,
    };
    let from_ms = match (&args.from, &args.since) {
        (Some(f), _) => parse_time(f)?,
        (None, Some(s)) => {
            let d = kubetrail::api::Duration::parse_span(s).context("--since")?;
            to_ms - d.as_millis_i64()
        }
        (None, None) => to_ms - 3_600_000,
    };
    let mut filter = QueryFilter {
        verbs: args.verb.clone(),
        api_groups: args.api_group.clone(),
        namespaces: args.namespace.clone(),
        users: args.user.clone(),
        ratings: args.rating.clone(),
        source_ips: args.source_ip.clone(),
        trace_ids: args.trace_id.clone(),
        ..QueryFilter::default()
    };
    for r in &args.resource {
        match r.split_once('/') {
            Some((res, name)) => {
                filter.resources.push(res.to_string());
                filter.resource_names.push(name.to_string());
            }
            None => filter.resources.push(r.clone()),
        }
    }
    let clusters = if args.all_clusters {
        vec!["*".to_string()]
    } else {
        args.cluster.clone()
    };
    let q = Query {
        filter,
        limit: args.limit,
        order: if args.lifecycle {
            Order::OldestFirst
        } else {
            Order::NewestFirst
        },
        ..Query::of(&trail, clusters, from_ms, to_ms)
    };
    let out = query::run(&trail.store, &q, args.max_days).await?;
    print(&out, args.output);
    eprintln!(
        "{} matched{}, {} files ({} bytes, {} traces) scanned in {} day(s)",
        out.matched,
        if out.truncated {
            format!(" (first {} shown)", out.hits.len())
        } else {
            String::new()
        },
        out.scanned_objects,
        out.scanned_bytes,
        out.scanned_traces,
        out.listed_prefixes.len()
    );
    Ok(())
}

fn print(out: &query::Outcome, format: Output) {
    match format {
        Output::Jsonl => {
            for h in &out.hits {
                println!("{}", h.line);
            }
        }
        Output::Json => {
            let all: Vec<serde_json::Value> = out
                .hits
                .iter()
                .filter_map(|h| serde_json::from_str(&h.line).ok())
                .collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        }
        Output::Table | Output::Wide => {
            let wide = matches!(format, Output::Wide);
            let mut rows = vec![{
                let mut r = vec!["TIME", "RATING", "USER", "OPERATION", "RESOURCE", "CODE"];
                if wide {
                    r.extend(["TRACE ID", "SOURCE IP", "USER AGENT"]);
                }
                r.into_iter().map(String::from).collect::<Vec<_>>()
            }];
            for h in &out.hits {
                let t = kubetrail::trace::View::parse(h.line.as_bytes()).unwrap_or_default();
                let resource = match (t.namespace.as_ref(), t.resource_name.as_ref()) {
                    ("", "") => String::new(),
                    ("", n) => n.to_string(),
                    (ns, "") => format!("{ns}/"),
                    (ns, n) => format!("{ns}/{n}"),
                };
                let code = t.code.map(|c| c.to_string()).unwrap_or_else(|| "null".into());
                let mut r = vec![
                    t.time.to_string(),
                    t.trace_rating.to_string(),
                    t.user.to_string(),
                    t.trace_name.to_string(),
                    resource,
                    code,
                ];
                if wide {
                    r.extend([
                        t.trace_id.to_string(),
                        t.source_ips.first().map(|s| s.to_string()).unwrap_or_default(),
                        t.user_agent.to_string(),
                    ]);
                }
                rows.push(r);
            }
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
                .collect();
            for r in rows {
                let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                println!("{}", line.join("  ").trim_end());
            }
        }
    }
}
