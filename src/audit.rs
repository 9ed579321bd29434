//! `audit.k8s.io/v1` types, as the kube-apiserver's webhook backend sends them.
//!
//! k8s-openapi has no audit types. These borrow from the request body where they
//! can, and keep request/response objects as raw JSON: most events pass through
//! without their bodies ever being parsed.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

pub const API_VERSION: &str = "audit.k8s.io/v1";

/// A batch of audit events (`kind: EventList`), its items not yet read: one
/// unreadable item must not cost the others (the apiserver does not retry a 400).
#[derive(Debug, Deserialize)]
struct RawList<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    items: Vec<&'a RawValue>,
}

/// A batch whose items are all readable events: the apiserver's batches,
/// parsed in one pass.
#[derive(Debug, Deserialize)]
struct StrictList<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    items: Vec<Event<'a>>,
}

/// A batch, item by item.
#[derive(Debug)]
pub struct EventList<'a> {
    pub items: Vec<Item<'a>>,
}

/// One item of a batch: an event, or why it could not be read.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Nearly every item is an event; boxing would cost an allocation each.
pub enum Item<'a> {
    Event(Event<'a>),
    Malformed(Malformed),
}

/// An item that is not a readable audit event. It is recorded as a trace of its
/// own (`trace_name: malformed event`), so the loss is visible and provable.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub reason: String,
    /// BLAKE3 of the item's bytes, hex.
    pub hash: String,
    pub bytes: usize,
}

impl Malformed {
    pub fn new(reason: impl Into<String>, bytes: &[u8]) -> Malformed {
        Malformed {
            reason: reason.into(),
            hash: blake3::hash(bytes).to_hex().to_string(),
            bytes: bytes.len(),
        }
    }
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
    /// The object before an UPDATE: not an audit field; admission capture
    /// (`source::admission`) sets it.
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    /// A dry-run request (admission capture only; audit events do not say).
    #[serde(default)]
    pub dry_run: bool,
    #[serde(borrow, default)]
    pub request_received_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub stage_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub annotations: Option<&'a RawValue>,
    /// The event was over the per-event limit and its bodies and annotations
    /// were dropped.
    #[serde(skip)]
    pub truncated: bool,
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

/// Why a batch was refused (only a body that is not an EventList at all). No
/// variant quotes the body: this text is the client's answer and is logged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("malformed JSON: expected a JSON object")]
    NotAnObject,
    #[error("malformed JSON: invalid UTF-8 after byte {0}")]
    Utf8(usize),
    #[error("malformed JSON: {0}")]
    Json(#[source] JsonError),
    #[error("expected kind EventList")]
    WrongKind,
    #[error("expected apiVersion {API_VERSION}")]
    WrongApiVersion,
}

/// A JSON parse failure told by what and where, never by the input's bytes.
///
/// serde_json's own message can quote them (`invalid type: string "hunter2",
/// expected i32`), and a parse failure's text reaches the client's answer, the
/// log, metrics and the stored malformed-event trace. This is the one place
/// that text is made: kept are serde_json's fixed syntax messages, the type of
/// the value found, what was expected and field names of our own schema
/// (`missing field`, `duplicate field`); the line and column say where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at line {line} column {column}")]
pub struct JsonError {
    pub what: String,
    pub line: usize,
    pub column: usize,
}

/// How serde names the type of a value it did not expect (`serde::de::Unexpected`).
const VALUE_TYPES: &[&str] = &[
    "string",
    "integer",
    "floating point",
    "boolean",
    "null",
    "unit value",
    "map",
    "sequence",
    "character",
    "byte array",
    "Option value",
    "newtype struct",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
    "number",
];

impl From<&serde_json::Error> for JsonError {
    fn from(e: &serde_json::Error) -> JsonError {
        use serde_json::error::Category;
        let full = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        let msg = full.strip_suffix(&at).unwrap_or(&full);
        let what = match e.classify() {
            Category::Io => "unreadable input".to_string(),
            Category::Eof => "unexpected end of input".to_string(),
            // serde_json's fixed messages ("expected value", "trailing
            // characters"); a quote would mean one that is not.
            Category::Syntax if !msg.contains('"') => msg.to_string(),
            Category::Syntax => "invalid JSON".to_string(),
            Category::Data => data_error(msg),
        };
        JsonError {
            what,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// A data error's message without the value it quotes.
fn data_error(msg: &str) -> String {
    // Field names serde quotes for these are our schema's.
    for prefix in ["missing field `", "duplicate field `"] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some((field, _)) = rest.split_once('`')
            && field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return format!("{prefix}{field}`");
        }
    }
    // "invalid type: string \"…\", expected i32": the type found, not the
    // value; what was expected comes after the value, so after its last mention.
    let expected = msg.rsplit_once(", expected ").map(|(_, e)| e).filter(|e| {
        e.len() <= 64
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" _:".contains(&b))
    });
    let with_expected = |what: String| match expected {
        Some(e) => format!("{what}, expected {e}"),
        None => what,
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let found = VALUE_TYPES
                .iter()
                .filter(|t| {
                    rest.strip_prefix(**t)
                        .is_some_and(|r| r.is_empty() || r.starts_with([' ', ',']))
                })
                .max_by_key(|t| t.len())
                .unwrap_or(&"value");
            return with_expected(format!("{} {found}", prefix.trim_end_matches(": ")));
        }
    }
    for prefix in ["invalid length", "unknown variant", "unknown field"] {
        if msg.starts_with(prefix) {
            return with_expected(prefix.to_string());
        }
    }
    "invalid value".to_string()
}

/// A list of strings borrowed from the body where they have no escapes (serde's
/// own `Vec<Cow<str>>` allocates every element).
fn borrowed_strs<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    let items: Vec<Borrowed<'a>> = Deserialize::deserialize(d)?;
    Ok(items.into_iter().map(|b| b.0).collect())
}

impl<'a> Event<'a> {
    /// Bytes of the request and response bodies and annotations: what an event
    /// over the per-event limit loses.
    pub fn body_bytes(&self) -> usize {
        [
            self.request_object,
            self.response_object,
            self.old_object,
            self.annotations,
        ]
        .iter()
        .flatten()
        .map(|r| r.get().len())
        .sum()
    }

    fn limit(mut self, max_event_bytes: usize) -> Event<'a> {
        if self.body_bytes() > max_event_bytes {
            self.request_object = None;
            self.response_object = None;
            self.old_object = None;
            self.annotations = None;
            self.truncated = true;
        }
        self
    }
}

fn check_kind(kind: Option<&str>, api_version: Option<&str>) -> Result<(), ParseError> {
    match kind {
        Some("EventList") => {}
        _ => return Err(ParseError::WrongKind),
    }
    match api_version {
        Some(API_VERSION) => Ok(()),
        _ => Err(ParseError::WrongApiVersion),
    }
}

/// Parses a webhook body. The body must be an `audit.k8s.io/v1` `EventList`;
/// within it, an item that cannot be read, or has no `auditID`, becomes
/// [`Item::Malformed`], and an event whose bodies and annotations take more
/// than `max_event_bytes` keeps everything else (`truncated`).
pub fn parse_event_list(body: &[u8], max_event_bytes: usize) -> Result<EventList<'_>, ParseError> {
    // An object, not a sequence (which serde would map onto the fields in order).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ParseError::NotAnObject);
    }
    // JSON is UTF-8 throughout (the parser does not check fields it skips).
    let body = std::str::from_utf8(body).map_err(|e| ParseError::Utf8(e.valid_up_to()))?;
    // One pass when every item is a readable event with an auditID (the
    // apiserver's batches); item by item otherwise.
    if let Ok(list) = serde_json::from_str::<StrictList<'_>>(body) {
        check_kind(list.kind.as_deref(), list.api_version.as_deref())?;
        if list
            .items
            .iter()
            .all(|e| e.audit_id.as_deref().is_some_and(|id| !id.is_empty()))
        {
            let items = list
                .items
                .into_iter()
                .map(|e| Item::Event(e.limit(max_event_bytes)))
                .collect();
            return Ok(EventList { items });
        }
    }
    let list: RawList<'_> = serde_json::from_str(body).map_err(|e| ParseError::Json(JsonError::from(&e)))?;
    check_kind(list.kind.as_deref(), list.api_version.as_deref())?;
    let items = list
        .items
        .into_iter()
        .map(|raw| {
            let bytes = raw.get().as_bytes();
            match serde_json::from_str::<Event<'_>>(raw.get()) {
                Ok(e) if e.audit_id.as_deref().is_none_or(str::is_empty) => {
                    Item::Malformed(Malformed::new("event has no auditID", bytes))
                }
                Ok(e) => Item::Event(e.limit(max_event_bytes)),
                Err(err) => Item::Malformed(Malformed::new(
                    format!("unreadable event: {}", JsonError::from(&err)),
                    bytes,
                )),
            }
        })
        .collect();
    Ok(EventList { items })
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
        let list = parse_event_list(body, 1 << 20).unwrap();
        assert_eq!(list.items.len(), 1);
        let Item::Event(e) = &list.items[0] else {
            panic!("not an event")
        };
        assert_eq!(e.audit_id.as_deref(), Some("a-1"));
        assert_eq!(e.user.groups.len(), 2);
        // Plain strings are borrowed from the body, not copied.
        assert!(matches!(e.user.groups[0], Cow::Borrowed("dev")));
        assert!(matches!(e.source_ips[0], Cow::Borrowed("10.0.0.1")));
        assert_eq!(e.response_status.as_ref().unwrap().code, Some(200));
        assert!(e.response_object.unwrap().get().contains("dg=="));
    }

    #[test]
    fn refuses_only_what_is_not_an_event_list() {
        assert!(matches!(parse_event_list(b"{", 1024), Err(ParseError::Json(_))));
        assert_eq!(
            parse_event_list(b"[]", 1024).unwrap_err(),
            ParseError::NotAnObject
        );
        assert_eq!(parse_event_list(b"7", 1024).unwrap_err(), ParseError::NotAnObject);
        assert_eq!(
            parse_event_list(
                br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","items":[]}"#,
                1024
            )
            .unwrap_err(),
            ParseError::WrongKind
        );
        assert_eq!(
            parse_event_list(
                br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}"#,
                1024
            )
            .unwrap_err(),
            ParseError::WrongApiVersion
        );
    }

    #[test]
    fn bad_items_are_kept_as_malformed_and_big_ones_truncated() {
        let big = "x".repeat(300);
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
            {{"auditID":"ok","verb":"get"}},
            {{"verb":"get"}},
            {{"auditID":"typed","verb":7}},
            "not an object",
            {{"auditID":"dup","verb":"get","verb":"list"}},
            {{"auditID":"big","verb":"create","requestObject":{{"data":"{big}"}},"annotations":{{"a":"b"}}}}]}}"#
        );
        let list = parse_event_list(body.as_bytes(), 200).unwrap();
        let kinds: Vec<String> = list
            .items
            .iter()
            .map(|i| match i {
                Item::Event(e) => format!(
                    "event {} truncated={}",
                    e.audit_id.as_deref().unwrap(),
                    e.truncated
                ),
                Item::Malformed(m) => format!("malformed: {}", m.reason),
            })
            .collect();
        assert_eq!(kinds[0], "event ok truncated=false");
        assert_eq!(kinds[1], "malformed: event has no auditID");
        assert!(
            kinds[2].starts_with("malformed: unreadable event: invalid type"),
            "{}",
            kinds[2]
        );
        assert!(
            kinds[3].starts_with("malformed: unreadable event"),
            "{}",
            kinds[3]
        );
        assert!(kinds[4].contains("duplicate field"), "{}", kinds[4]);
        assert_eq!(kinds[5], "event big truncated=true");
        let Item::Event(e) = &list.items[5] else {
            unreachable!()
        };
        assert!(e.request_object.is_none() && e.annotations.is_none());
        let Item::Malformed(m) = &list.items[3] else {
            unreachable!()
        };
        assert_eq!(m.hash, blake3::hash(br#""not an object""#).to_hex().to_string());
    }

    /// No message about a malformed batch or item quotes the input: a planted
    /// value in any position is in no refusal and no malformed-event reason,
    /// while what and where are.
    #[test]
    fn malformed_messages_never_quote_the_input() {
        let p = "hunter2-planted";
        let batch =
            |items: &str| format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{items}}}"#);
        let refused = [
            batch(&format!(r#""{p}""#)),
            batch(&format!(r#"[{{"auditID":"{p}" "x"}}]"#)),
            batch(&format!(r#"[{{"auditID":"{p}\q"}}]"#)),
            format!(r#"{{"kind":"{p}","apiVersion":"audit.k8s.io/v1","items":[]}}"#),
            format!(r#"{{"kind":"EventList","apiVersion":"{p}","items":[]}}"#),
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{{"auditID":"{p}""#),
        ];
        for body in &refused {
            let e = parse_event_list(body.as_bytes(), 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(!e.contains(p), "{e}");
        }
        let e = parse_event_list(batch(&format!(r#""{p}""#)).as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed JSON: invalid type string, expected a sequence at line 1 column 76"
        );
        let items = [
            format!(r#"{{"auditID":"a","verb":["{p}"]}}"#),
            format!(r#"{{"auditID":"a","user":{{"groups":"{p}"}}}}"#),
            format!(r#"{{"auditID":"a","user":{{"groups":["ok",{{"{p}":1}}]}}}}"#),
            format!(r#"{{"auditID":"a","responseStatus":{{"code":"{p}"}}}}"#),
            r#"{"auditID":"a","responseStatus":{"code":31337.25}}"#.to_string(),
            format!(r#"{{"auditID":"a","objectRef":"{p}, expected x"}}"#),
            format!(r#""{p}""#),
            format!(r#"{{"auditID":"a","verb":"{p}","verb":"x"}}"#),
        ];
        let body = batch(&format!("[{}]", items.join(",")));
        let list = parse_event_list(body.as_bytes(), 1 << 20).unwrap();
        assert_eq!(list.items.len(), items.len());
        for (item, raw) in list.items.iter().zip(&items) {
            let Item::Malformed(m) = item else {
                panic!("{raw} was read")
            };
            assert!(
                !m.reason.contains(p) && !m.reason.contains("31337"),
                "{raw}: {}",
                m.reason
            );
            assert!(m.reason.contains(" at line 1 column "), "{}", m.reason);
        }
        let reasons: Vec<&str> = list
            .items
            .iter()
            .map(|i| match i {
                Item::Malformed(m) => m.reason.as_str(),
                Item::Event(_) => "",
            })
            .collect();
        assert_eq!(
            reasons[3],
            "unreadable event: invalid type string, expected i32 at line 1 column 57"
        );
        assert!(
            reasons[4].contains("invalid type floating point, expected i32"),
            "{}",
            reasons[4]
        );
        assert!(
            reasons[5].contains("invalid type string, expected struct ObjectReference"),
            "{}",
            reasons[5]
        );
        assert!(reasons[7].contains("duplicate field `verb`"), "{}", reasons[7]);
    }
}
