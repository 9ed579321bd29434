//! `audit.k8s.io/v1` types, as the kube-apiserver's webhook backend sends them.
//!
//! k8s-openapi has no audit types. These borrow from the request body where they
//! can, and keep request/response objects as raw JSON: most events pass through
//! without their bodies ever being parsed.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

pub const API_VERSION: &str = "audit.k8s.io/v1";

/// A batch of audit events (`kind: EventList`).
#[derive(Debug, Deserialize)]
pub struct EventList<'a> {
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "apiVersion")]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub items: Vec<Event<'a>>,
}

/// One audit event.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    #[serde(borrow, default)]
    pub level: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "auditID")]
    pub audit_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub stage: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "requestURI")]
    pub request_uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub verb: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user: UserInfo<'a>,
    #[serde(borrow, default)]
    pub impersonated_user: Option<UserInfo<'a>>,
    #[serde(borrow, default, rename = "sourceIPs", deserialize_with = "borrowed_strs")]
    pub source_ips: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub object_ref: Option<ObjectReference<'a>>,
    #[serde(borrow, default)]
    pub response_status: Option<ResponseStatus<'a>>,
    #[serde(borrow, default)]
    pub request_object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub response_object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub request_received_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub stage_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub annotations: Option<&'a RawValue>,
}

/// The user of a request.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo<'a> {
    #[serde(borrow, default)]
    pub username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_strs")]
    pub groups: Vec<Cow<'a, str>>,
}

/// What the request was about.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference<'a> {
    #[serde(borrow, default)]
    pub resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub api_group: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub subresource: Option<Cow<'a, str>>,
}

/// The response's status (a `metav1.Status` subset).
#[derive(Debug, Default, Deserialize)]
pub struct ResponseStatus<'a> {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
}

/// Why a batch was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("expected kind EventList, got {0:?}")]
    WrongKind(String),
    #[error("expected apiVersion {API_VERSION}, got {0:?}")]
    WrongApiVersion(String),
    #[error("event {index} has no auditID")]
    MissingAuditId { index: usize },
}

/// A list of strings borrowed from the body where they have no escapes (serde's
/// own `Vec<Cow<str>>` allocates every element).
fn borrowed_strs<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    let items: Vec<Borrowed<'a>> = Deserialize::deserialize(d)?;
    Ok(items.into_iter().map(|b| b.0).collect())
}

/// Parses and checks a webhook body. Every event must carry an `auditID`.
pub fn parse_event_list(body: &[u8]) -> Result<EventList<'_>, ParseError> {
    let list: EventList<'_> = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    match list.kind.as_deref() {
        Some("EventList") => {}
        other => return Err(ParseError::WrongKind(other.unwrap_or("").to_string())),
    }
    match list.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(ParseError::WrongApiVersion(other.unwrap_or("").to_string())),
    }
    if let Some(index) = list
        .items
        .iter()
        .position(|e| e.audit_id.as_deref().is_none_or(str::is_empty))
    {
        return Err(ParseError::MissingAuditId { index });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_batch() {
        let body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[
          {"level":"RequestResponse","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/secrets/s",
           "verb":"get","user":{"username":"alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.0.0.1"],
           "userAgent":"kubectl","objectRef":{"resource":"secrets","namespace":"d","name":"s","apiVersion":"v1"},
           "responseStatus":{"metadata":{},"code":200},"responseObject":{"kind":"Secret","data":{"k":"dg=="}},
           "requestReceivedTimestamp":"2026-11-24T01:00:00.000000Z","stageTimestamp":"2026-11-24T01:00:00.010000Z"}]}"#;
        let list = parse_event_list(body).unwrap();
        assert_eq!(list.items.len(), 1);
        let e = &list.items[0];
        assert_eq!(e.audit_id.as_deref(), Some("a-1"));
        assert_eq!(e.user.groups.len(), 2);
        // Plain strings are borrowed from the body, not copied.
        assert!(matches!(e.user.groups[0], Cow::Borrowed("dev")));
        assert!(matches!(e.source_ips[0], Cow::Borrowed("10.0.0.1")));
        assert_eq!(e.response_status.as_ref().unwrap().code, Some(200));
        assert!(e.response_object.unwrap().get().contains("dg=="));
    }

    #[test]
    fn refuses_wrong_kind_version_and_missing_id() {
        assert!(matches!(parse_event_list(b"{"), Err(ParseError::Json(_))));
        assert_eq!(
            parse_event_list(br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","items":[]}"#).unwrap_err(),
            ParseError::WrongKind("Event".into())
        );
        assert_eq!(
            parse_event_list(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}"#)
                .unwrap_err(),
            ParseError::WrongApiVersion("audit.k8s.io/v1beta1".into())
        );
        assert_eq!(
            parse_event_list(
                br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"x"},{"verb":"get"}]}"#
            )
            .unwrap_err(),
            ParseError::MissingAuditId { index: 1 }
        );
    }
}
