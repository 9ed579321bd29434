//! Pieces shared by more than one resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

/// Sets (or replaces) the condition of `type_` in `conditions`.
///
/// `lastTransitionTime` is kept unless the status changes, so watchers see when a
/// condition actually flipped rather than when it was last reconciled.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Finds a condition by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Schema extension that makes a `conditions` list a map keyed on `type`, so
/// server-side apply merges conditions one by one.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut c = Vec::new();
        set_condition(
            &mut c,
            "Ready",
            FALSE,
            "A",
            "a",
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut c,
            "Ready",
            FALSE,
            "B",
            "b",
            Some(2),
            &t("2026-01-01T00:05:00Z"),
        );
        let ready = condition(&c, "Ready").unwrap();
        assert_eq!(ready.reason, "B");
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(ready.last_transition_time, t("2026-01-01T00:00:00Z"));
        set_condition(
            &mut c,
            "Ready",
            TRUE,
            "Ok",
            "",
            Some(2),
            &t("2026-01-01T00:09:00Z"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:09:00Z"));
    }

    #[test]
    fn conditions_sorted_by_type() {
        let mut c = Vec::new();
        let now = t("2026-01-01T00:00:00Z");
        set_condition(&mut c, "Ready", TRUE, "Ok", "", None, &now);
        set_condition(&mut c, "DestinationReachable", TRUE, "Ok", "", None, &now);
        let types: Vec<_> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["DestinationReachable", "Ready"]);
    }
}
