//! The TraceQuery: "what happened", as a resource (CTS's trace list).

use super::common::{Rating, conditions_schema};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A query over a tracker's delivered traces; the answer is in its status.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kubetrail.io",
    version = "v1alpha1",
    kind = "TraceQuery",
    namespaced,
    shortname = "tq",
    category = "kubetrail",
    status = "TraceQueryStatus",
    printcolumn(name = "Tracker", type_ = "string", json_path = ".spec.tracker"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matched"),
    printcolumn(name = "Truncated", type_ = "boolean", json_path = ".status.truncated"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TraceQuerySpec {
    /// Name of the Tracker whose bucket is searched.
    #[schemars(length(min = 1, max = 253))]
    pub tracker: String,
    /// Clusters whose traces are searched, when the tracker's bucket holds
    /// several (each cluster's operator writing under its own name); `*`: all
    /// found. Default: this operator's cluster. Any other cluster is read only
    /// from an admin namespace, and only if the operator's
    /// `--readable-clusters` lists it (or is `*`); else the query fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub clusters: Vec<String>,
    /// Time range; default the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<TimeRange>,
    /// Conditions every returned trace meets; empty fields match everything.
    #[serde(default)]
    pub filter: QueryFilter,
    /// Most traces returned.
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 100_000))]
    pub limit: u32,
    /// `newestFirst` (default) or `oldestFirst` (a resource's lifecycle).
    #[serde(default)]
    pub order: Order,
    /// Delete the query this many seconds after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<u32>,
}

fn default_limit() -> u32 {
    100
}

/// Either an absolute range (`from`, `to`) or a trailing window (`last`).
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.last) || (!has(self.from) && !has(self.to))").message("set either last or from/to, not both"))]
#[x_kube(validation = Rule::new("!has(self.from) || !has(self.to) || self.from < self.to").message("from must be before to").field_path(".from"))]
pub struct TimeRange {
    /// Start of the range (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Time>,
    /// End of the range (exclusive); default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Time>,
    /// A trailing window ending now, such as `24h` or `90m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(s|m|h))+$') && duration(self) > duration('0s')").message("last must be a positive duration such as 15m or 24h"))]
    pub last: Option<String>,
}

/// Filters of a query: a trace matches when every non-empty field matches.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueryFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratings: Vec<Rating>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_ids: Vec<String>,
}

/// Result order.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// The answer to a query.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceQueryStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<QueryPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Traces that matched.
    #[serde(default)]
    pub matched: u64,
    /// Objects read from the bucket.
    #[serde(default)]
    pub scanned_objects: u64,
    /// Compressed bytes read from the bucket.
    #[serde(default)]
    pub scanned_bytes: u64,
    /// More traces matched than `limit`.
    #[serde(default)]
    pub truncated: bool,
    /// The first results, one compact row per trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TraceRow>,
    /// Object key of the full result set (JSON Lines) in the tracker's bucket.
    /// For reading only: the operator removes the file by the key it derives
    /// from the query, never by this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,
    /// Why the query failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Query phase.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum QueryPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// One trace, compactly.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceRow {
    pub time: String,
    pub trace_id: String,
    pub trace_name: String,
    pub rating: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_name: String,
    pub code: i32,
}
