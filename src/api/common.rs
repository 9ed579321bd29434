//! Pieces shared by more than one resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Severity of a trace, from its response code (CTS's trace rating).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Rating {
    /// The request succeeded (code below 400).
    Normal,
    /// The request was refused or invalid (code 400–499), e.g. denied by RBAC.
    Warning,
    /// The server failed (code 500 and above) or panicked.
    Incident,
}

/// A reference to a Secret in the operator's namespace.
///
/// Secrets are read only from the namespace kubetrail runs in, so the operator
/// needs no cluster-wide Secret access.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret in the operator's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Schema extension that makes a `conditions` list a map keyed on `type`, so
/// server-side apply merges conditions one by one.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}
