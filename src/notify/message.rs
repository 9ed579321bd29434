//! The messages a notification sends: CloudEvents 1.0 (structured mode) or a
//! Slack-compatible body, their stable ids and their HMAC signature.

use crate::api::MessageFormat;
use crate::trace::View;
use serde::Serialize;

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-kubetrail-signature";
/// Header carrying the message id (also the CloudEvents `id`).
pub const ID_HEADER: &str = "x-kubetrail-message-id";
/// Key of the HMAC key in its Secret.
pub const HMAC_KEY: &str = "hmacKey";
/// CloudEvents `type`.
pub const EVENT_TYPE: &str = "io.kubetrail.keyevent";
/// Slack lists at most this many traces; the rest are counted.
const SLACK_LINES: usize = 20;

/// One matched trace, as a message lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Matched {
    /// The trace's own id (the audit ID): receivers de-duplicate by it.
    pub trace_id: String,
    pub trace_name: String,
    pub trace_rating: String,
    pub verb: String,
    pub api_group: String,
    pub resource_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    pub time: String,
    pub source_ips: Vec<String>,
    /// When kubetrail acknowledged the batch (Unix ms): latency is measured from it.
    #[serde(skip)]
    pub received_ms: i64,
    /// The operated object's kind, when a body names it (for its Event).
    #[serde(skip)]
    pub kind: Option<String>,
    #[serde(skip)]
    pub api_version: String,
}

impl Matched {
    pub fn new(m: &crate::trace::RouteMeta<'_>, v: &View<'_>, received_ms: i64) -> Matched {
        Matched {
            trace_id: v.trace_id.to_string(),
            trace_name: v.trace_name.to_string(),
            trace_rating: v.trace_rating.to_string(),
            verb: m.verb.to_string(),
            api_group: m.group.to_string(),
            resource_type: v.resource_type.to_string(),
            resource_name: v.resource_name.to_string(),
            namespace: v.namespace.to_string(),
            user: v.user.to_string(),
            impersonated_user: v.impersonated_user.as_ref().map(|u| u.to_string()),
            code: v.code,
            time: v.time.to_string(),
            source_ips: v.source_ips.iter().map(|s| s.to_string()).collect(),
            received_ms,
            kind: None,
            api_version: String::new(),
        }
    }

    /// `delete secrets ns/name by alice → 200`
    pub fn line(&self) -> String {
        let object = match (self.namespace.as_str(), self.resource_name.as_str()) {
            ("", "") => String::new(),
            ("", n) => format!(" {n}"),
            (ns, "") => format!(" in {ns}"),
            (ns, n) => format!(" {ns}/{n}"),
        };
        let code = self.code.map(|c| format!(" → {c}")).unwrap_or_default();
        let on_behalf = self
            .impersonated_user
            .as_ref()
            .map(|u| format!(" as {u}"))
            .unwrap_or_default();
        format!(
            "{} {}{} by {}{}{}",
            self.verb, self.resource_type, object, self.user, on_behalf, code
        )
    }
}

/// A message: the traces it covers and its stable id.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub traces: Vec<Matched>,
}

impl Message {
    /// The id is derived from the cluster, the notification and the traces
    /// covered, so a message sent again (a retry, a restart) has the same id.
    pub fn new(cluster: &str, notification: &str, traces: Vec<Matched>) -> Message {
        let mut h = blake3::Hasher::new();
        h.update(cluster.as_bytes());
        h.update(b"\0");
        h.update(notification.as_bytes());
        for t in &traces {
            h.update(b"\0");
            h.update(t.trace_id.as_bytes());
        }
        let id = format!("kt-{}", &h.finalize().to_hex()[..32]);
        Message { id, traces }
    }

    /// One line for a person: the first trace, and how many more.
    pub fn summary(&self) -> String {
        let first = self.traces.first().map(|t| t.line()).unwrap_or_default();
        match self.traces.len() {
            0 | 1 => first,
            n => format!("{first} (and {} more)", n - 1),
        }
    }

    /// Body and content type in `format`.
    pub fn body(
        &self,
        format: MessageFormat,
        cluster: &str,
        notification: &str,
        now: &str,
    ) -> (Vec<u8>, &'static str) {
        match format {
            MessageFormat::CloudEvents => {
                let first = self.traces.first();
                let body = serde_json::json!({
                    "specversion": "1.0",
                    "id": self.id,
                    "source": format!("kubetrail://{cluster}/keyeventnotifications/{notification}"),
                    "type": EVENT_TYPE,
                    "subject": first.map(|t| t.trace_name.clone()).unwrap_or_default(),
                    "time": now,
                    "datacontenttype": "application/json",
                    "data": {
                        "notification": notification,
                        "cluster": cluster,
                        "count": self.traces.len(),
                        "traces": self.traces,
                    },
                });
                (
                    serde_json::to_vec(&body).unwrap_or_default(),
                    "application/cloudevents+json",
                )
            }
            MessageFormat::Slack => {
                let mut text = format!(
                    "*kubetrail* `{cluster}` — {} key event{} ({notification})",
                    self.traces.len(),
                    if self.traces.len() == 1 { "" } else { "s" }
                );
                for t in self.traces.iter().take(SLACK_LINES) {
                    text.push_str(&format!("\n• {} `{}`", t.time, t.line()));
                }
                if self.traces.len() > SLACK_LINES {
                    text.push_str(&format!("\n… and {} more", self.traces.len() - SLACK_LINES));
                }
                let body = serde_json::json!({"text": text});
                (serde_json::to_vec(&body).unwrap_or_default(), "application/json")
            }
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`key`, `body`).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!("sha256={}", hex::encode(ring::hmac::sign(&k, body).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str) -> Matched {
        Matched {
            trace_id: id.into(),
            trace_name: "delete secrets".into(),
            trace_rating: "normal".into(),
            verb: "delete".into(),
            api_group: "".into(),
            resource_type: "secrets".into(),
            resource_name: "db".into(),
            namespace: "prod".into(),
            user: "alice".into(),
            impersonated_user: None,
            code: Some(200),
            time: "2026-12-01T00:00:00Z".into(),
            source_ips: vec!["10.0.0.1".into()],
            received_ms: 0,
            kind: None,
            api_version: String::new(),
        }
    }

    #[test]
    fn ids_are_stable_and_differ_by_content() {
        let a = Message::new("c", "n", vec![t("1"), t("2")]);
        let b = Message::new("c", "n", vec![t("1"), t("2")]);
        let c = Message::new("c", "n", vec![t("1")]);
        let d = Message::new("c", "m", vec![t("1"), t("2")]);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id);
    }

    #[test]
    fn cloudevents_and_slack_bodies() {
        let m = Message::new("c", "n", vec![t("1"), t("2")]);
        let (body, ctype) = m.body(MessageFormat::CloudEvents, "c", "n", "2026-12-01T00:00:01Z");
        assert_eq!(ctype, "application/cloudevents+json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], m.id.as_str());
        assert_eq!(v["type"], EVENT_TYPE);
        assert_eq!(v["data"]["count"], 2);
        assert_eq!(v["data"]["traces"][1]["trace_id"], "2");
        let many = Message::new("c", "n", (0..25).map(|i| t(&i.to_string())).collect());
        let (body, ctype) = many.body(MessageFormat::Slack, "c", "n", "x");
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("25 key events"), "{text}");
        assert!(text.contains("delete secrets prod/db by alice → 200"), "{text}");
        assert!(text.contains("… and 5 more"), "{text}");
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
