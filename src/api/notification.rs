//! KeyEventNotification: tell someone when a key operation happens (CTS's SMN).

use super::common::{Rating, SecretRef, conditions_schema};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which operations raise a notification, and where it goes.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kubetrail.io",
    version = "v1alpha1",
    kind = "KeyEventNotification",
    shortname = "ken",
    category = "kubetrail",
    status = "KeyEventNotificationStatus",
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matched"),
    printcolumn(name = "Sent", type_ = "integer", json_path = ".status.sent"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.operations) || has(self.presets) || has(self.users) || has(self.userGroups) || has(self.namespaces) || has(self.ratings) || has(self.condition)").message("select something: operations, presets, users, userGroups, namespaces, ratings or condition"))]
#[x_kube(validation = Rule::new("has(self.webhook) || self.kubernetesEvent").message("a notification needs a target: webhook or kubernetesEvent"))]
pub struct KeyEventNotificationSpec {
    /// Operations by verb, API group, resource and name (any entry matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub operations: Vec<OperationSelector>,
    /// Named sets of operations (any preset matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presets: Vec<Preset>,
    /// Only operations by these users (a trailing `*` matches a prefix); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub users: Vec<String>,
    /// Only operations by members of these groups; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub user_groups: Vec<String>,
    /// Only operations in these namespaces; empty: all (cluster-scoped too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub namespaces: Vec<String>,
    /// Only traces of these ratings; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratings: Vec<Rating>,
    /// A CEL expression over the trace record (`trace.code`, `trace.user`,
    /// `trace.trace_name`, `trace.verb`, `trace.resource_type`, ...) that must be
    /// true, e.g. `trace.code >= 400 && !trace.user.startsWith("system:")`.
    /// A compile error is reported in the `Ready` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub condition: Option<String>,
    /// HTTPS webhook that receives the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Also record a Kubernetes Event (reason `KeyEvent`) on this object, and on
    /// the operated object when it still exists and its kind is known.
    #[serde(default = "default_true")]
    pub kubernetes_event: bool,
    /// How matches are grouped into messages.
    #[serde(default)]
    pub grouping: Grouping,
}

fn default_true() -> bool {
    true
}

/// Storm control: the first match is sent at once; after a message, matches
/// wait until `window` has passed and go out together, at most `maxTraces` in
/// a message. A full message goes without waiting for the window, within the
/// rate limit of `maxMessagesPerSecond`.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Grouping {
    /// Least time between two messages (Go duration, 100ms to 5m).
    #[serde(default = "default_window")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ms|s|m))+$') && duration(self) >= duration('100ms') && duration(self) <= duration('5m')").message("window must be a duration between 100ms and 5m, such as 2s"))]
    pub window: String,
    /// Most traces in one message.
    #[serde(default = "default_max_traces")]
    #[schemars(range(min = 1, max = 5000))]
    pub max_traces: u32,
    /// Most messages per second, full ones included: the rate limit.
    #[serde(default = "default_max_messages")]
    #[schemars(range(min = 1, max = 100))]
    pub max_messages_per_second: u32,
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            window: default_window(),
            max_traces: default_max_traces(),
            max_messages_per_second: default_max_messages(),
        }
    }
}

fn default_window() -> String {
    "2s".into()
}

fn default_max_traces() -> u32 {
    500
}

fn default_max_messages() -> u32 {
    10
}

/// Verbs, groups, resources and names of the operations that notify. An
/// empty list matches anything; `*` too.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// API groups (`""` or `core` for the core group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// `resource` or `resource/subresource`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names (a trailing `*` matches a prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// Named operation sets.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Preset {
    /// Every delete and deletecollection.
    AllDeletes,
    /// Writes to Roles, ClusterRoles and their bindings.
    RbacChanges,
    /// Requests answered 401 or 403.
    DeniedRequests,
    /// Reads of Secrets (get, list, watch).
    SecretReads,
    /// Reads and writes of Secrets.
    SecretAccess,
    /// `pods/exec`, `pods/attach`, `pods/portforward`.
    PodExec,
    /// Writes to kubetrail's own resources (Trackers, TraceQueries,
    /// KeyEventNotifications).
    KubetrailChanges,
    /// Requests made on behalf of another user (impersonation).
    Impersonation,
}

/// Body shape of webhook messages.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MessageFormat {
    /// CloudEvents 1.0, structured mode (`application/cloudevents+json`).
    #[default]
    CloudEvents,
    /// A Slack-compatible incoming-webhook body (`{"text": ...}`).
    Slack,
}

/// An HTTPS endpoint.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// The URL; must be https.
    #[x_kube(validation = Rule::new("isURL(self) && self.startsWith('https://')").message("webhook url must be an https:// URL"))]
    pub url: String,
    #[serde(default)]
    pub format: MessageFormat,
    /// Secret (key `hmacKey`) whose value signs each body: header
    /// `X-Kubetrail-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretRef>,
    /// Extra request headers (not Host, Content-Type, Content-Length or the
    /// signature header).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !(k.lowerAscii() in ['host', 'content-type', 'content-length', 'x-kubetrail-signature']))").message("headers may not set Host, Content-Type, Content-Length or X-Kubetrail-Signature"))]
    pub headers: std::collections::BTreeMap<String, String>,
    /// PEM certificates trusted for this URL in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Attempts per message (5xx, 429, timeouts and connection errors are
    /// retried with exponential backoff, honoring `Retry-After`); then the
    /// message counts as failed.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// Seconds one attempt may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
}

fn default_attempts() -> u32 {
    8
}

fn default_timeout() -> u32 {
    10
}

/// Delivery counters and state, written by the lease holder.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyEventNotificationStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Traces that matched.
    #[serde(default)]
    pub matched: u64,
    /// Messages delivered.
    #[serde(default)]
    pub sent: u64,
    /// Messages given up after `maxAttempts`.
    #[serde(default)]
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What each replica's process has counted (already in the totals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<NotifierWriter>,
}

/// One replica's counters (its process: `incarnation`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotifierWriter {
    pub writer: String,
    pub incarnation: String,
    #[serde(default)]
    pub matched: u64,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub failed: u64,
}
