//! Status conditions: their types, their reasons, and the one function that sets
//! them.
//!
//! A failure travels as a [`Problem`] (a [`Reason`] and a message) from where it
//! happens (a store error, a delivery attempt, a verification) to the condition
//! that reports it, so a specific reason is never turned into text and guessed
//! back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// The condition types kubetrail sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Tracker: delivering; KeyEventNotification: notifying.
    Ready,
    /// Tracker: the bucket answers `HeadBucket` with the tracker's credentials.
    DestinationReachable,
    /// Tracker: the last verification of its trail found nothing wrong.
    IntegrityVerified,
    /// TraceQuery: finished (successfully or not).
    Complete,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::DestinationReachable => "DestinationReachable",
            Self::IntegrityVerified => "IntegrityVerified",
            Self::Complete => "Complete",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a condition has its status: every reason kubetrail writes into a
/// condition (also the reason of the matching Warning event and the `reason`
/// label of `kubetrail_delivery_errors_total`). Serialized as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Reason {
    // Healthy or neutral states.
    Ready,
    Disabled,
    BucketReachable,
    Verified,
    Waiting,
    Running,
    Succeeded,
    // Credentials and the destination (`store`).
    CredentialsNotFound,
    CredentialsInvalid,
    BucketNotFound,
    AccessDenied,
    WrongRegion,
    DestinationUnreachable,
    S3Error,
    KubeError,
    // Delivery.
    BacklogOverflow,
    DeliveryFailing,
    PipelineFailed,
    // Integrity (`integrity::verify`, the signing key).
    SigningKeyNotFound,
    SigningKeyInvalid,
    DigestInvalid,
    ChainBroken,
    ChainTruncated,
    FileModified,
    FileMissing,
    FileAdded,
    VerifyFailed,
    // Queries.
    Timeout,
    TrackerNotFound,
    InvalidTimeRange,
    RangeTooLarge,
    ScratchError,
    ClusterNotAllowed,
    ClusterNotReadable,
    // Key event notifications.
    InvalidCondition,
    SecretNotFound,
    InvalidWebhook,
}

impl Reason {
    /// The name, as it appears in conditions, events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Disabled => "Disabled",
            Self::BucketReachable => "BucketReachable",
            Self::Verified => "Verified",
            Self::Waiting => "Waiting",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::CredentialsNotFound => "CredentialsNotFound",
            Self::CredentialsInvalid => "CredentialsInvalid",
            Self::BucketNotFound => "BucketNotFound",
            Self::AccessDenied => "AccessDenied",
            Self::WrongRegion => "WrongRegion",
            Self::DestinationUnreachable => "DestinationUnreachable",
            Self::S3Error => "S3Error",
            Self::KubeError => "KubeError",
            Self::BacklogOverflow => "BacklogOverflow",
            Self::DeliveryFailing => "DeliveryFailing",
            Self::PipelineFailed => "PipelineFailed",
            Self::SigningKeyNotFound => "SigningKeyNotFound",
            Self::SigningKeyInvalid => "SigningKeyInvalid",
            Self::DigestInvalid => "DigestInvalid",
            Self::ChainBroken => "ChainBroken",
            Self::ChainTruncated => "ChainTruncated",
            Self::FileModified => "FileModified",
            Self::FileMissing => "FileMissing",
            Self::FileAdded => "FileAdded",
            Self::VerifyFailed => "VerifyFailed",
            Self::Timeout => "Timeout",
            Self::TrackerNotFound => "TrackerNotFound",
            Self::InvalidTimeRange => "InvalidTimeRange",
            Self::RangeTooLarge => "RangeTooLarge",
            Self::ScratchError => "ScratchError",
            Self::ClusterNotAllowed => "ClusterNotAllowed",
            Self::ClusterNotReadable => "ClusterNotReadable",
            Self::InvalidCondition => "InvalidCondition",
            Self::SecretNotFound => "SecretNotFound",
            Self::InvalidWebhook => "InvalidWebhook",
        }
    }

    /// Reads a reason written by another replica, which may be of a newer
    /// version with reasons this one does not know: those read as `None`
    /// instead of failing the whole object.
    pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Reason>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        Ok(text.and_then(|t| serde_json::from_value(serde_json::Value::String(t)).ok()))
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with its reason, carried as is from where it happened to the
/// condition, event and metric that report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// `Reason: message`, the form of a writer's `lastError`.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// Sets (or replaces) the condition of `type_` in `conditions`.
///
/// `lastTransitionTime` is kept unless the status changes, so watchers see when a
/// condition actually flipped rather than when it was last reconciled.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: &str,
    reason: Reason,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let type_ = type_.as_str();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Removes the condition of `type_`.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: ConditionType) {
    conditions.retain(|c| c.type_ != type_.as_str());
}

/// Finds a condition by type.
pub fn condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        use ConditionType::Ready;
        let mut c = Vec::new();
        let at = |s| t(s);
        set_condition(
            &mut c,
            Ready,
            FALSE,
            Reason::AccessDenied,
            "a",
            Some(1),
            &at("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut c,
            Ready,
            FALSE,
            Reason::S3Error,
            "b",
            Some(2),
            &at("2026-01-01T00:05:00Z"),
        );
        let ready = condition(&c, Ready).unwrap();
        assert_eq!(ready.reason, "S3Error");
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(ready.last_transition_time, t("2026-01-01T00:00:00Z"));
        set_condition(
            &mut c,
            Ready,
            TRUE,
            Reason::Ready,
            "",
            Some(2),
            &at("2026-01-01T00:09:00Z"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:09:00Z"));
    }

    #[test]
    fn conditions_sorted_by_type() {
        let mut c = Vec::new();
        let now = t("2026-01-01T00:00:00Z");
        set_condition(&mut c, ConditionType::Ready, TRUE, Reason::Ready, "", None, &now);
        set_condition(
            &mut c,
            ConditionType::DestinationReachable,
            TRUE,
            Reason::BucketReachable,
            "",
            None,
            &now,
        );
        let types: Vec<_> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["DestinationReachable", "Ready"]);
    }

    #[test]
    fn reasons_serialize_as_their_names() {
        for r in [
            Reason::CredentialsNotFound,
            Reason::DestinationUnreachable,
            Reason::BacklogOverflow,
            Reason::FileMissing,
            Reason::ClusterNotReadable,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        // Unknown reasons (a newer replica's) read as none, not as an error.
        #[derive(Deserialize)]
        struct W {
            #[serde(default, deserialize_with = "Reason::lenient")]
            r: Option<Reason>,
        }
        let w: W = serde_json::from_str(r#"{"r":"AccessDenied"}"#).unwrap();
        assert_eq!(w.r, Some(Reason::AccessDenied));
        let w: W = serde_json::from_str(r#"{"r":"SomethingNew"}"#).unwrap();
        assert_eq!(w.r, None);
        let w: W = serde_json::from_str("{}").unwrap();
        assert_eq!(w.r, None);
    }
}
