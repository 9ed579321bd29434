//! `kubetrail schema`: prints the table a SQL engine needs over a tracker's
//! trace files (see docs/sql.md).

use anyhow::{Context as _, bail};
use kube::api::Api;
use kubetrail::api::Tracker;
use kubetrail::schema::{self, Engine, Layout};

/// Flags of `kubetrail schema`.
#[derive(Clone, Debug, clap::Args)]
pub struct SchemaArgs {
    /// Tracker whose destination the table reads (read through the Kubernetes API).
    #[arg(long, conflicts_with_all = ["bucket", "directory"])]
    pub tracker: Option<String>,
    /// A bucket directly, with --tracker-name.
    #[arg(long, requires = "tracker_name")]
    pub bucket: Option<String>,
    /// A local directory (DuckDB; `kubetrail serve`'s output or a copy of a bucket).
    #[arg(long, requires = "tracker_name")]
    pub directory: Option<std::path::PathBuf>,
    /// Tracker name in the object keys, with --bucket or --directory.
    #[arg(long)]
    pub tracker_name: Option<String>,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long, value_enum)]
    pub engine: Engine,
    /// Cluster names in the keys (Athena and Trino project them).
    #[arg(
        long,
        value_delimiter = ',',
        env = "KUBETRAIL_CLUSTER_NAME",
        default_value = "kubernetes"
    )]
    pub clusters: Vec<String>,
    /// Table (or view) name; default `kubetrail_<tracker>`.
    #[arg(long)]
    pub table: Option<String>,
    /// First day the partition projection covers (`yyyy/MM/dd`).
    #[arg(long, default_value = "2026/01/01")]
    pub start_day: String,
}

pub async fn run(args: SchemaArgs) -> anyhow::Result<()> {
    let (root, tracker) = if let Some(dir) = &args.directory {
        if args.engine != Engine::Duckdb {
            bail!("--directory is for --engine duckdb; Athena and Trino read a bucket");
        }
        let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
        let mut root = dir.display().to_string();
        if !args.prefix.is_empty() {
            root = format!("{root}/{}", args.prefix.trim_matches('/'));
        }
        (root, args.tracker_name.clone().unwrap_or_default())
    } else if let Some(bucket) = &args.bucket {
        (
            s3_root(bucket, &args.prefix),
            args.tracker_name.clone().unwrap_or_default(),
        )
    } else if let Some(name) = &args.tracker {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let t = Api::<Tracker>::all(client)
            .get(name)
            .await
            .with_context(|| format!("reading Tracker {name}"))?;
        (
            s3_root(&t.spec.destination.bucket, &t.spec.destination.prefix),
            name.clone(),
        )
    } else {
        bail!("name a --tracker, or give --bucket or --directory with --tracker-name");
    };
    let table = args
        .table
        .clone()
        .unwrap_or_else(|| format!("kubetrail_{}", tracker.replace(['-', '.'], "_")));
    print!(
        "{}",
        schema::ddl(
            args.engine,
            &Layout {
                root,
                tracker,
                clusters: args.clusters.clone(),
                table,
                start_day: args.start_day.clone(),
            },
        )
    );
    Ok(())
}

fn s3_root(bucket: &str, prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}
