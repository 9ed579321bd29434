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
    printcolumn(name = "Sent", type_ = "integer", json_path = ".status.sent"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.operations) || has(self.presets)").message("name operations or presets"))]
#[x_kube(validation = Rule::new("has(self.webhook) || self.kubernetesEvent").message("a notification needs a target: webhook or kubernetesEvent"))]
pub struct KeyEventNotificationSpec {
    /// Operations by verb and resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationSelector>,
    /// Named sets of operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presets: Vec<Preset>,
    /// Only operations by these users (a trailing `*` matches a prefix); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Only traces of these ratings; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratings: Vec<Rating>,
    /// HTTPS webhook that receives a JSON body per trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Also record a Kubernetes Event on this object.
    #[serde(default = "default_true")]
    pub kubernetes_event: bool,
}

fn default_true() -> bool {
    true
}

/// Verbs and resources of the operations that notify.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationSelector {
    #[schemars(length(min = 1))]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[schemars(length(min = 1))]
    pub resources: Vec<String>,
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
    /// Reads and writes of Secrets.
    SecretAccess,
    /// `pods/exec`, `pods/attach`, `pods/portforward`.
    PodExec,
}

/// An HTTPS endpoint.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// The URL; must be https.
    #[x_kube(validation = Rule::new("isURL(self) && self.startsWith('https://')").message("webhook url must be an https:// URL"))]
    pub url: String,
    /// Secret (key `hmacKey`) used to sign bodies (header `X-Kubetrail-Signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretRef>,
}

/// Delivery counters.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyEventNotificationStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<Time>,
}
