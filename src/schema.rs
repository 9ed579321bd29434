//! Tables over a tracker's trace files for SQL engines (Athena, Trino, DuckDB):
//! the files are JSON Lines under
//! `{prefix}/KubeTrail/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/`, so the DDL maps
//! the trace record's fields to columns and, for Athena and Trino, the layout
//! to partitions by projection (cluster and day), so a query on a few days
//! reads only those days' files.

/// A SQL engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Athena,
    Trino,
    Duckdb,
}

/// Where the files are.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `s3://bucket/prefix` or a local directory (DuckDB), without a trailing `/`.
    pub root: String,
    pub tracker: String,
    /// Cluster names in the keys (the projection's values).
    pub clusters: Vec<String>,
    pub table: String,
    /// First day of the projection (`yyyy/MM/dd`).
    pub start_day: String,
}

/// Scalar fields of the trace record (docs/architecture.md, "The trace
/// record"), with their type: `s` string, `i` integer, `b` boolean, `a` list
/// of strings. Bodies (`request`, `response`, `old_object`, `annotations`)
/// are columns of DuckDB's JSON type only.
const FIELDS: &[(&str, char)] = &[
    ("trace_id", 's'),
    ("trace_name", 's'),
    ("trace_rating", 's'),
    ("trace_type", 's'),
    ("service_type", 's'),
    ("resource_type", 's'),
    ("resource_name", 's'),
    ("namespace", 's'),
    ("resource_id", 's'),
    ("user", 's'),
    ("unauthenticated", 'b'),
    ("user_groups", 'a'),
    ("impersonated_user", 's'),
    ("source_ips", 'a'),
    ("user_agent", 's'),
    ("code", 'i'),
    ("message", 's'),
    ("time", 's'),
    ("stage_time", 's'),
    ("stage", 's'),
    ("level", 's'),
    ("read_only", 'b'),
    ("api_version", 's'),
    ("request_uri", 's'),
    ("cluster", 's'),
    ("source", 's'),
    ("truncated", 'b'),
    ("dry_run", 'b'),
    ("record_time", 's'),
    ("tracker", 's'),
];

const BODIES: &[&str] = &["request", "response", "old_object", "annotations"];

/// `{root}/KubeTrail/`: where the tracker's trace files are.
fn traces(l: &Layout) -> String {
    format!("{}/{}/", l.root, crate::store::key::Area::Traces.as_str())
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// The DDL (and, for DuckDB, a view) for `engine`.
pub fn ddl(engine: Engine, l: &Layout) -> String {
    match engine {
        Engine::Athena => athena(l),
        Engine::Trino => trino(l),
        Engine::Duckdb => duckdb(l),
    }
}

fn athena(l: &Layout) -> String {
    let cols: Vec<String> = FIELDS
        .iter()
        .map(|(n, t)| {
            let ty = match t {
                'i' => "int",
                'b' => "boolean",
                'a' => "array<string>",
                _ => "string",
            };
            format!("  `{n}` {ty}")
        })
        .collect();
    format!(
        "-- kubetrail: tracker {tracker}, Athena (partition projection over cluster and day).\n\
         CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n{cols}\n)\n\
         PARTITIONED BY (`cluster_name` string, `day` string)\n\
         ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
         WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')\n\
         LOCATION '{traces}'\n\
         TBLPROPERTIES (\n\
         \x20 'projection.enabled' = 'true',\n\
         \x20 'projection.cluster_name.type' = 'enum',\n\
         \x20 'projection.cluster_name.values' = '{clusters}',\n\
         \x20 'projection.day.type' = 'date',\n\
         \x20 'projection.day.format' = 'yyyy/MM/dd',\n\
         \x20 'projection.day.range' = '{start},NOW',\n\
         \x20 'projection.day.interval' = '1',\n\
         \x20 'projection.day.interval.unit' = 'DAYS',\n\
         \x20 'storage.location.template' = '{traces}${{cluster_name}}/${{day}}/{tracker}/'\n\
         );\n",
        tracker = l.tracker,
        table = l.table,
        cols = cols.join(",\n"),
        traces = quote(&traces(l)),
        clusters = quote(&l.clusters.join(",")),
        start = quote(&l.start_day),
    )
}

fn trino(l: &Layout) -> String {
    let cols: Vec<String> = FIELDS
        .iter()
        .map(|(n, t)| {
            let ty = match t {
                'i' => "integer",
                'b' => "boolean",
                'a' => "array(varchar)",
                _ => "varchar",
            };
            format!("  \"{n}\" {ty}")
        })
        .collect();
    let clusters: Vec<String> = l.clusters.iter().map(|c| format!("'{}'", quote(c))).collect();
    format!(
        "-- kubetrail: tracker {tracker}, Trino Hive connector (partition projection over cluster and day).\n\
         CREATE TABLE IF NOT EXISTS {table} (\n{cols},\n\
         \x20 \"cluster_name\" varchar WITH (partition_projection_type = 'enum', partition_projection_values = ARRAY[{clusters}]),\n\
         \x20 \"day\" varchar WITH (partition_projection_type = 'date', partition_projection_format = 'yyyy/MM/dd',\n\
         \x20   partition_projection_range = ARRAY['{start}', 'NOW'], partition_projection_interval = 1,\n\
         \x20   partition_projection_interval_unit = 'DAYS')\n\
         )\n\
         WITH (\n\
         \x20 format = 'JSON',\n\
         \x20 external_location = '{traces}',\n\
         \x20 partitioned_by = ARRAY['cluster_name', 'day'],\n\
         \x20 partition_projection_enabled = true,\n\
         \x20 partition_projection_location_template = '{traces}${{cluster_name}}/${{day}}/{tracker}/'\n\
         );\n",
        tracker = l.tracker,
        table = l.table,
        cols = cols.join(",\n"),
        clusters = clusters.join(", "),
        traces = quote(&traces(l)),
        start = quote(&l.start_day),
    )
}

fn duckdb(l: &Layout) -> String {
    let mut cols: Vec<String> = FIELDS
        .iter()
        .map(|(n, t)| {
            let ty = match t {
                'i' => "INTEGER",
                'b' => "BOOLEAN",
                'a' => "VARCHAR[]",
                _ => "VARCHAR",
            };
            format!("{n}: '{ty}'")
        })
        .collect();
    cols.extend(BODIES.iter().map(|b| format!("{b}: 'JSON'")));
    let glob = format!("{}*/*/*/*/{}/*.jsonl*", traces(l), l.tracker);
    format!(
        "-- kubetrail: tracker {tracker}, DuckDB. One row per trace: a trace stored twice (a\n\
         -- file written again after a crash) is read once, as `kubetrail query` does.\n\
         CREATE OR REPLACE VIEW {table} AS\n\
         SELECT DISTINCT ON (cluster, trace_id, stage, stage_time, code) *\n\
         FROM read_json('{glob}',\n\
         \x20 format = 'newline_delimited',\n\
         \x20 columns = {{{cols}}});\n",
        tracker = l.tracker,
        table = l.table,
        glob = quote(&glob),
        cols = cols.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &str) -> Layout {
        Layout {
            root: root.into(),
            tracker: "system".into(),
            clusters: vec!["prod-eu".into(), "prod-us".into()],
            table: "kubetrail_system".into(),
            start_day: "2026/01/01".into(),
        }
    }

    #[test]
    fn athena_and_trino_project_cluster_and_day_onto_the_key_layout() {
        let a = ddl(Engine::Athena, &layout("s3://audit/prod"));
        assert!(
            a.contains(
                "'storage.location.template' = 's3://audit/prod/KubeTrail/${cluster_name}/${day}/system/'"
            ),
            "{a}"
        );
        assert!(a.contains("'projection.cluster_name.values' = 'prod-eu,prod-us'"));
        assert!(
            a.contains("`user` string")
                && a.contains("`code` int")
                && a.contains("`source_ips` array<string>")
        );
        let t = ddl(Engine::Trino, &layout("s3://audit/prod"));
        assert!(t.contains("partition_projection_location_template = 's3://audit/prod/KubeTrail/${cluster_name}/${day}/system/'"), "{t}");
        assert!(t.contains("ARRAY['prod-eu', 'prod-us']"));
    }

    #[test]
    fn duckdb_reads_every_cluster_and_day_of_the_tracker() {
        let d = ddl(Engine::Duckdb, &layout("/data/it's"));
        assert!(
            d.contains("read_json('/data/it''s/KubeTrail/*/*/*/*/system/*.jsonl*'"),
            "{d}"
        );
        assert!(d.contains("request: 'JSON'"));
    }
}
