//! The trace record (docs/architecture.md, "The trace record"): one JSON line per operation, built from one audit
//! event, with Secret values removed before anything touches disk.

use crate::api::Rating;
use crate::audit::Event;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

pub use crate::redact::REDACTED;

pub mod view;

pub use view::View;

/// Rating from the response code and stage: CTS's normal / warning / incident.
pub fn rating(code: Option<i32>, stage: &str) -> Rating {
    if stage == "Panic" {
        return Rating::Incident;
    }
    match code {
        Some(c) if c >= 500 => Rating::Incident,
        Some(c) if c >= 400 => Rating::Warning,
        _ => Rating::Normal,
    }
}

/// The user name the apiserver gives an unauthenticated request.
pub const ANONYMOUS: &str = "system:anonymous";

/// `SystemAction` for the control plane's own users, `ApiCall` for everyone else
/// (people, workloads' service accounts, and unauthenticated callers).
pub fn trace_type(user: &str) -> &'static str {
    if user == ANONYMOUS {
        "ApiCall"
    } else if user.starts_with("system:serviceaccount:") {
        if user.starts_with("system:serviceaccount:kube-system:") {
            "SystemAction"
        } else {
            "ApiCall"
        }
    } else if user.starts_with("system:") {
        "SystemAction"
    } else {
        "ApiCall"
    }
}

/// Read operations (CTS's "read" traces); everything else is a management operation.
pub fn is_read_only(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// What the router needs to know about a trace without parsing it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteMeta<'a> {
    #[serde(borrow)]
    pub verb: Cow<'a, str>,
    /// API group; `""` for core.
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    /// `resource` or `resource/subresource`; empty for non-resource URLs.
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub user: Cow<'a, str>,
    #[serde(borrow)]
    pub groups: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub stage: Cow<'a, str>,
    /// Trace time (requestReceivedTimestamp), Unix milliseconds.
    pub time_ms: i64,
    /// De-duplication key of the batch the trace came in (see
    /// [`crate::source::dedupe`]); 0 in records spooled by older versions.
    #[serde(default)]
    pub key: u64,
    /// A malformed-event record: every tracker keeps it (nobody can tell whether
    /// the event it stands for would have matched a filter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub malformed: bool,
    /// Response code, `0` when the event has none; `-1` in records spooled by
    /// older versions, which did not carry it (and the next two fields).
    #[serde(default = "unknown_code")]
    pub code: i32,
    /// Object name (objectRef.name).
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub name: Cow<'a, str>,
    /// The request was made on behalf of another user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub impersonated: bool,
}

fn unknown_code() -> i32 {
    -1
}

/// The window key in a spooled entry's routing metadata.
pub fn meta_key(meta: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        key: Option<u64>,
    }
    serde_json::from_slice::<Only>(meta).ok()?.key.filter(|k| *k != 0)
}

/// A request or response body: passed through as it came, or rewritten.
enum Body<'a> {
    Raw(&'a RawValue),
    Rewritten(Value),
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Raw(r) => r.serialize(s),
            Body::Rewritten(v) => v.serialize(s),
        }
    }
}

fn is_empty(s: &&str) -> bool {
    s.is_empty()
}

#[derive(Serialize)]
struct Record<'a> {
    trace_id: &'a str,
    trace_name: String,
    trace_rating: Rating,
    trace_type: &'static str,
    service_type: &'a str,
    resource_type: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    resource_name: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_id: Option<Cow<'a, str>>,
    user: &'a str,
    /// The caller did not authenticate (`system:anonymous`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unauthenticated: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    user_groups: &'a [Cow<'a, str>],
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<&'a str>,
    source_ips: &'a [Cow<'a, str>],
    #[serde(skip_serializing_if = "is_empty")]
    user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    time: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    stage_time: &'a str,
    stage: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    level: &'a str,
    read_only: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_version: String,
    request_uri: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Body<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<Body<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Body<'a>>,
    /// The object before an UPDATE (admission capture only).
    #[serde(skip_serializing_if = "Option::is_none")]
    old_object: Option<Body<'a>>,
    /// A dry-run request: nothing was persisted (admission capture only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    cluster: &'a str,
    source: &'static str,
    /// The event was over the per-event limit: its bodies were dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Builds the trace of `event`: its JSON line (without the closing `tracker`
/// field, which routing adds) and its routing metadata.
///
/// Secret values are removed here, whatever the audit level, so they never reach
/// the spool, a bucket or a notification.
pub fn build<'a>(
    event: &'a Event<'a>,
    cluster: &'a str,
    source: Source,
    record_time: &'a str,
    line: &mut Vec<u8>,
) -> RouteMeta<'a> {
    let verb = event.verb.as_deref().unwrap_or("");
    let stage = event.stage.as_deref().unwrap_or("");
    let obj = event.object_ref.as_ref();
    let group = obj.and_then(|o| o.api_group.as_deref()).unwrap_or("");
    let resource: Cow<'a, str> = match obj {
        Some(o) => match (o.resource.as_deref(), o.subresource.as_deref()) {
            (Some(r), Some(s)) if !s.is_empty() => Cow::Owned(format!("{r}/{s}")),
            (Some(r), _) => Cow::Borrowed(r),
            (None, _) => Cow::Borrowed(""),
        },
        None => Cow::Borrowed(""),
    };
    let request_uri = event.request_uri.as_deref().unwrap_or("");
    let trace_name = if resource.is_empty() {
        // Non-resource request: name it by its path.
        format!("{verb} {}", request_uri.split('?').next().unwrap_or(""))
    } else {
        format!("{verb} {resource}")
    };
    let user = event.user.username.as_deref().unwrap_or("");
    let status = event.response_status.as_ref();
    let code = status.and_then(|s| s.code);
    let api_version = match obj.and_then(|o| o.api_version.as_deref()) {
        Some(v) if !group.is_empty() => format!("{group}/{v}"),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    // The sensitive-data policy (crate::redact): its fields are redacted in
    // every body, and the event's own annotations are too.
    let sensitive = crate::redact::fields_for(crate::redact::builtin(), group, &resource);
    // A body that says it is a Secret or a token is redacted as one, whatever
    // the event's objectRef says, and so is the other body of the same event
    // (a JSON patch whose response is a Secret is a patch of a Secret).
    let mut by_kind = Vec::new();
    for raw in [event.request_object, event.response_object, event.old_object]
        .into_iter()
        .flatten()
    {
        for f in crate::redact::fields_by_kind(raw.get()) {
            if !sensitive.contains(&f) && !by_kind.contains(&f) {
                by_kind.push(f);
            }
        }
    }
    let mut sensitive = sensitive;
    sensitive.extend(by_kind);
    let body = |raw: Option<&'a RawValue>| -> Option<Body<'a>> {
        let raw = raw?;
        if sensitive.is_empty() {
            Some(Body::Raw(raw))
        } else {
            Some(Body::Rewritten(crate::redact::redact_text(raw.get(), &sensitive)))
        }
    };
    let annotations = event.annotations.map(|raw| {
        if sensitive.is_empty() {
            Body::Raw(raw)
        } else {
            Body::Rewritten(crate::redact::redact_event_annotations(raw.get()))
        }
    });
    // Commands and tokens in the query never leave the cluster (crate::redact).
    let request_uri = crate::redact::redact_uri(request_uri, group, &resource);
    let resource_id = obj
        .and_then(|o| o.uid.as_deref())
        .filter(|u| !u.is_empty())
        .map(Cow::Borrowed)
        .or_else(|| event.response_object.and_then(object_uid).map(Cow::Owned));
    let time = event.request_received_timestamp.as_deref().unwrap_or("");
    let record = Record {
        trace_id: event.audit_id.as_deref().unwrap_or(""),
        trace_name,
        trace_rating: rating(code, stage),
        trace_type: trace_type(user),
        service_type: if group.is_empty() { "core" } else { group },
        resource_type: &resource,
        resource_name: obj.and_then(|o| o.name.as_deref()).unwrap_or(""),
        namespace: obj.and_then(|o| o.namespace.as_deref()).unwrap_or(""),
        resource_id,
        user,
        unauthenticated: user == ANONYMOUS,
        user_groups: &event.user.groups,
        impersonated_user: event
            .impersonated_user
            .as_ref()
            .and_then(|u| u.username.as_deref()),
        source_ips: &event.source_ips,
        user_agent: event.user_agent.as_deref().unwrap_or(""),
        code,
        message: status
            .and_then(|s| s.message.as_deref())
            .filter(|m| !m.is_empty()),
        time,
        stage_time: event.stage_timestamp.as_deref().unwrap_or(""),
        stage,
        level: event.level.as_deref().unwrap_or(""),
        read_only: is_read_only(verb),
        api_version,
        request_uri,
        annotations,
        request: body(event.request_object),
        response: body(event.response_object),
        old_object: body(event.old_object),
        dry_run: event.dry_run,
        cluster,
        source: source.as_str(),
        truncated: event.truncated,
    };
    // Serializing plain data into a Vec cannot fail. `record_time` (which
    // differs between a batch and its retry) comes last, so a reader can key a
    // trace by everything before it.
    let _ = serde_json::to_writer(&mut *line, &record);
    line.pop(); // the record's closing brace
    line.extend_from_slice(b",\"record_time\":");
    let _ = serde_json::to_writer(&mut *line, record_time);
    line.push(b'}');
    let namespace = obj.and_then(|o| o.namespace.as_deref()).unwrap_or("");
    RouteMeta {
        verb: Cow::Borrowed(verb),
        group: Cow::Borrowed(group),
        resource,
        namespace: Cow::Borrowed(namespace),
        user: Cow::Borrowed(user),
        groups: event
            .user
            .groups
            .iter()
            .map(|g| Cow::Borrowed(g.as_ref()))
            .collect(),
        stage: Cow::Borrowed(stage),
        time_ms: parse_time_ms(time).unwrap_or(0),
        key: 0,
        malformed: false,
        code: code.unwrap_or(0),
        name: Cow::Borrowed(obj.and_then(|o| o.name.as_deref()).unwrap_or("")),
        impersonated: event
            .impersonated_user
            .as_ref()
            .is_some_and(|u| u.username.as_deref().is_some_and(|n| !n.is_empty())),
    }
}

/// The trace standing for an item of a batch that was not a readable event:
/// rated `warning`, named `malformed event`, with the reason and a hash of its
/// bytes (the bytes themselves may hold anything, so they are not kept). Its
/// time is when the batch was received.
pub fn build_malformed<'a>(
    m: &crate::audit::Malformed,
    cluster: &str,
    source: Source,
    record_time: &str,
    received_ms: i64,
    line: &mut Vec<u8>,
) -> RouteMeta<'a> {
    let record = serde_json::json!({
        "trace_id": format!("malformed-{}", &m.hash[..32]),
        "trace_name": "malformed event",
        "trace_rating": Rating::Warning,
        "trace_type": "Malformed",
        "service_type": "",
        "resource_type": "",
        "user": "",
        "source_ips": [],
        "message": m.reason,
        "malformed": {"reason": m.reason, "blake3": m.hash, "bytes": m.bytes},
        "time": record_time,
        "stage": "",
        "read_only": false,
        "request_uri": "",
        "cluster": cluster,
        "source": source.as_str(),
        "record_time": record_time,
    });
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *line, &record);
    RouteMeta {
        verb: Cow::Borrowed(""),
        group: Cow::Borrowed(""),
        resource: Cow::Borrowed(""),
        namespace: Cow::Borrowed(""),
        user: Cow::Borrowed(""),
        groups: Vec::new(),
        stage: Cow::Borrowed(""),
        time_ms: received_ms,
        key: 0,
        malformed: true,
        code: 0,
        name: Cow::Borrowed(""),
        impersonated: false,
    }
}

/// Where a trace's event came from (the trace's `source` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kube-apiserver's audit webhook.
    Webhook,
    /// The audit log file the kube-apiserver writes (`--audit-log-path`).
    AuditLog,
    /// kubetrail's validating admission webhook.
    Admission,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::AuditLog => "auditLog",
            Source::Admission => "admission",
        }
    }
}

/// Unix milliseconds of an RFC 3339 timestamp.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// `metadata.uid` of an object, read without building the whole object.
fn object_uid(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Obj<'a> {
        #[serde(borrow)]
        metadata: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        uid: Option<Cow<'a, str>>,
    }
    let obj: Obj<'_> = serde_json::from_str(raw.get()).ok()?;
    obj.metadata?.uid.map(|u| u.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::parse_event_list;

    fn one(event: &str) -> (Value, String) {
        let body = format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{event}]}}"#);
        let list = parse_event_list(body.as_bytes(), 1 << 20).unwrap();
        let crate::audit::Item::Event(e) = &list.items[0] else {
            panic!("malformed: {event}")
        };
        let mut line = Vec::new();
        let meta = build(e, "c1", Source::Webhook, "2026-11-24T01:00:01Z", &mut line);
        let meta = serde_json::to_string(&meta).unwrap();
        (serde_json::from_slice(&line).unwrap(), meta)
    }

    #[test]
    fn ratings() {
        assert_eq!(rating(Some(200), "ResponseComplete"), Rating::Normal);
        assert_eq!(rating(Some(399), "ResponseComplete"), Rating::Normal);
        assert_eq!(rating(Some(403), "ResponseComplete"), Rating::Warning);
        assert_eq!(rating(Some(499), "ResponseComplete"), Rating::Warning);
        assert_eq!(rating(Some(500), "ResponseComplete"), Rating::Incident);
        assert_eq!(rating(Some(200), "Panic"), Rating::Incident);
        assert_eq!(rating(None, "ResponseStarted"), Rating::Normal);
    }

    #[test]
    fn trace_types() {
        assert_eq!(trace_type("alice"), "ApiCall");
        assert_eq!(trace_type("system:kube-controller-manager"), "SystemAction");
        assert_eq!(
            trace_type("system:serviceaccount:kube-system:replicaset-controller"),
            "SystemAction"
        );
        assert_eq!(trace_type("system:serviceaccount:shop:api"), "ApiCall");
    }

    #[test]
    fn record_fields_come_from_the_event() {
        let (t, meta) = one(
            r#"{"level":"Metadata","auditID":"id-1","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/shop/deployments/web/scale",
            "verb":"update","user":{"username":"alice","groups":["dev"]},"impersonatedUser":{"username":"bob"},
            "sourceIPs":["10.1.2.3"],"userAgent":"kubectl/v1.34",
            "objectRef":{"resource":"deployments","subresource":"scale","namespace":"shop","name":"web","apiGroup":"apps","apiVersion":"v1","uid":"u-9"},
            "responseStatus":{"code":409,"message":"conflict"},
            "requestReceivedTimestamp":"2026-11-24T01:00:00.123456Z","stageTimestamp":"2026-11-24T01:00:00.200000Z"}"#,
        );
        assert_eq!(t["trace_id"], "id-1");
        assert_eq!(t["trace_name"], "update deployments/scale");
        assert_eq!(t["trace_rating"], "warning");
        assert_eq!(t["trace_type"], "ApiCall");
        assert_eq!(t["service_type"], "apps");
        assert_eq!(t["resource_type"], "deployments/scale");
        assert_eq!(t["resource_name"], "web");
        assert_eq!(t["namespace"], "shop");
        assert_eq!(t["resource_id"], "u-9");
        assert_eq!(t["user"], "alice");
        assert_eq!(t["impersonated_user"], "bob");
        assert_eq!(t["source_ips"][0], "10.1.2.3");
        assert_eq!(t["code"], 409);
        assert_eq!(t["message"], "conflict");
        assert_eq!(t["time"], "2026-11-24T01:00:00.123456Z");
        assert_eq!(t["record_time"], "2026-11-24T01:00:01Z");
        assert_eq!(t["read_only"], false);
        assert_eq!(t["api_version"], "apps/v1");
        assert_eq!(t["cluster"], "c1");
        assert!(t.get("request").is_none(), "no body at Metadata level");
        assert!(meta.contains(r#""resource":"deployments/scale""#), "{meta}");
        assert!(meta.contains(r#""time_ms":1795482000123"#), "{meta}");
    }

    #[test]
    fn core_group_and_non_resource_requests() {
        let (t, _) = one(
            r#"{"auditID":"x","verb":"get","requestURI":"/healthz?verbose","user":{"username":"system:anonymous"},"stage":"ResponseComplete","responseStatus":{"code":200}}"#,
        );
        assert_eq!(t["trace_name"], "get /healthz");
        assert_eq!(t["service_type"], "core");
        assert_eq!(t["read_only"], true);
        assert_eq!(
            t["trace_type"], "ApiCall",
            "an unauthenticated caller is not the system"
        );
    }

    #[test]
    fn resource_id_falls_back_to_the_response_object() {
        let (t, _) = one(
            r#"{"auditID":"x","verb":"create","objectRef":{"resource":"configmaps","namespace":"d","apiVersion":"v1"},"responseObject":{"kind":"ConfigMap","metadata":{"name":"c","uid":"uid-7"},"data":{"a":"b"}}}"#,
        );
        assert_eq!(t["resource_id"], "uid-7");
        assert_eq!(t["response"]["data"]["a"], "b", "non-secret bodies pass through");
    }

    #[test]
    fn secret_values_never_appear() {
        let (t, _) = one(
            r#"{"auditID":"s","verb":"create","objectRef":{"resource":"secrets","namespace":"d","name":"db","apiVersion":"v1"},
            "requestObject":{"kind":"Secret","metadata":{"name":"db","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"c2VjcmV0\"}}","team":"a"}},"data":{"password":"c2VjcmV0"},"stringData":{"token":"hunter2"}},
            "responseObject":{"kind":"Secret","metadata":{"name":"db"},"data":{"password":"c2VjcmV0","token":"aHVudGVyMg=="}}}"#,
        );
        let text = t.to_string();
        for secret in ["c2VjcmV0", "hunter2", "aHVudGVyMg=="] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(t["request"]["data"]["password"], REDACTED, "keys stay visible");
        assert_eq!(t["request"]["metadata"]["annotations"]["team"], "a");
        assert_eq!(t["response"]["data"]["token"], REDACTED);
    }

    #[test]
    fn service_account_tokens_and_token_reviews_never_appear() {
        let (t, _) = one(
            r#"{"auditID":"t","verb":"create","objectRef":{"resource":"serviceaccounts","subresource":"token","namespace":"d","name":"default","apiVersion":"v1"},
            "requestObject":{"kind":"TokenRequest","spec":{"audiences":["api"],"expirationSeconds":3600}},
            "responseObject":{"kind":"TokenRequest","spec":{"audiences":["api"]},"status":{"token":"eyJhbGciOiJSUzI1NiJ9.live","expirationTimestamp":"2026-11-25T04:00:00Z"}}}"#,
        );
        assert!(!t.to_string().contains("eyJhbGci"), "token leaked: {t}");
        assert_eq!(t["response"]["status"]["token"], REDACTED);
        assert_eq!(
            t["response"]["status"]["expirationTimestamp"], "2026-11-25T04:00:00Z",
            "the rest stays"
        );
        assert_eq!(t["request"]["spec"]["expirationSeconds"], 3600);
        let (t, _) = one(
            r#"{"auditID":"r","verb":"create","objectRef":{"resource":"tokenreviews","apiGroup":"authentication.k8s.io","apiVersion":"v1"},
            "requestObject":{"kind":"TokenReview","spec":{"token":"sha256~reviewed-token"}},
            "responseObject":{"kind":"TokenReview","spec":{"token":"sha256~reviewed-token"},"status":{"authenticated":true,"user":{"username":"alice"}}}}"#,
        );
        assert!(!t.to_string().contains("reviewed-token"), "token leaked: {t}");
        assert_eq!(t["response"]["status"]["user"]["username"], "alice");
    }

    #[test]
    fn unauthenticated_callers_make_api_calls() {
        let (t, _) = one(
            r#"{"auditID":"x","verb":"get","requestURI":"/api","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"stage":"ResponseComplete","responseStatus":{"code":403}}"#,
        );
        assert_eq!(t["trace_type"], "ApiCall");
        assert_eq!(t["unauthenticated"], true);
        let (t, _) = one(r#"{"auditID":"y","verb":"get","requestURI":"/api","user":{"username":"alice"}}"#);
        assert!(t.get("unauthenticated").is_none());
    }

    #[test]
    fn exec_commands_and_sensitive_annotations() {
        let (t, _) = one(
            r#"{"auditID":"e","verb":"create","requestURI":"/api/v1/namespaces/d/pods/p/exec?command=mysql&command=-pHUNTER2&stdin=true",
            "objectRef":{"resource":"pods","subresource":"exec","namespace":"d","name":"p","apiVersion":"v1"}}"#,
        );
        let uri = t["request_uri"].as_str().unwrap();
        assert!(!uri.contains("HUNTER2") && uri.ends_with("&stdin=true"), "{uri}");
        assert_eq!(t["resource_type"], "pods/exec");
        let (t, _) = one(
            r#"{"auditID":"a","verb":"update","objectRef":{"resource":"secrets","namespace":"d","name":"s","apiVersion":"v1"},
            "annotations":{"authorization.k8s.io/decision":"allow","patch.webhook.admission.k8s.io/round_0_index_0":"{\"data\":{\"k\":\"QUFB\"}}"}}"#,
        );
        assert_eq!(t["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(!t.to_string().contains("QUFB"), "{t}");
        let (t, _) = one(
            r#"{"auditID":"c","verb":"update","objectRef":{"resource":"configmaps","namespace":"d","name":"s","apiVersion":"v1"},
            "annotations":{"patch.webhook.admission.k8s.io/round_0_index_0":"p"}}"#,
        );
        assert_eq!(
            t["annotations"]["patch.webhook.admission.k8s.io/round_0_index_0"],
            "p"
        );
    }

    #[test]
    fn malformed_items_become_warning_traces() {
        let m = crate::audit::Malformed::new("unreadable event: x", b"{\"auditID\":7}");
        let mut line = Vec::new();
        let meta = build_malformed(
            &m,
            "c1",
            Source::Webhook,
            "2026-11-24T01:00:01Z",
            1_795_482_001_000,
            &mut line,
        );
        let t: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(t["trace_name"], "malformed event");
        assert_eq!(t["trace_rating"], "warning");
        assert_eq!(t["malformed"]["blake3"], m.hash);
        assert_eq!(t["message"], "unreadable event: x");
        assert!(meta.malformed);
        assert_eq!(meta.time_ms, 1_795_482_001_000);
    }
}
