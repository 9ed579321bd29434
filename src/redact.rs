//! The sensitive-data policy: which values of which resources never leave the
//! cluster, applied to every shape a request or response body can take.
//!
//! One mechanism serves the built-in rules (Secret values, service-account
//! tokens, token reviews) and a tracker's `spec.redaction.fields`. A rule names a
//! resource and field paths; the body may be the object itself, a List
//! (`items[]`), a Table (`rows[].object`), a watch event (`object`), a merge or
//! strategic-merge patch (shaped like the object) or a JSON patch (operations
//! whose `path` is compared with the rule's paths). Redaction fails closed: a
//! value that is not the shape the rule expects is replaced whole.

use serde_json::Value;

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";
/// The annotation `kubectl apply` keeps a full copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How the value at a path is hidden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// The value becomes `"[redacted]"`.
    Whole,
    /// A map keeps its keys and each value becomes `"[redacted]"` (which key of a
    /// Secret changed is audit data; its value is not).
    Values,
    /// An array keeps its length and each element becomes `"[redacted]"` (an
    /// exec command keeps its shape, as its `command=` parameters in the
    /// request URI do).
    Elements,
}

/// A field of an object: its path from the object's root. An array on the way
/// applies the rest of the path to each element (`spec.containers.env`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    pub segments: Vec<String>,
    pub mask: Mask,
    /// Whether an array on the way is gone through (a tracker's paths such as
    /// `spec.containers.env`); where not (the built-in rules, whose fields sit
    /// in objects all the way), an array is an unexpected shape and is
    /// replaced whole.
    pub through_arrays: bool,
}

impl FieldPath {
    /// A dotted path such as `spec.template.spec.containers`.
    pub fn dotted(path: &str, mask: Mask) -> FieldPath {
        FieldPath {
            segments: path.split('.').map(str::to_string).collect(),
            mask,
            through_arrays: true,
        }
    }

    fn of(segments: &[&str], mask: Mask) -> FieldPath {
        FieldPath {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            mask,
            through_arrays: false,
        }
    }
}

/// The fields of one resource that are redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group; `""` is the core group (`core` is accepted and means the same).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub fields: Vec<FieldPath>,
}

impl Rule {
    pub fn new(group: &str, resource: &str, fields: Vec<FieldPath>) -> Rule {
        Rule {
            group: core_group(group).to_string(),
            resource: resource.to_string(),
            fields,
        }
    }

    /// Whether the rule concerns a request on `group`/`resource`.
    pub fn matches(&self, group: &str, resource: &str) -> bool {
        self.group == core_group(group) && self.resource == resource
    }
}

/// `core` is the core group, whose name is the empty string in audit events.
pub fn core_group(group: &str) -> &str {
    if group == "core" { "" } else { group }
}

/// The built-in rules, applied by the trace builder to every event before it is
/// spooled, whatever any tracker says.
pub fn builtin() -> &'static [Rule] {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            // Secret values, also of bootstrap-token Secrets (`token-secret`), and
            // the full copy `kubectl apply` keeps in an annotation.
            Rule::new(
                "",
                "secrets",
                vec![
                    FieldPath::of(&["data"], Mask::Values),
                    FieldPath::of(&["stringData"], Mask::Values),
                    FieldPath::of(&["metadata", "annotations", LAST_APPLIED], Mask::Whole),
                ],
            ),
            // The token a TokenRequest returns (the kubelet asks for one for every
            // projected service-account token).
            Rule::new(
                "",
                "serviceaccounts/token",
                vec![FieldPath::of(&["status", "token"], Mask::Whole)],
            ),
            // The token a TokenReview asks about, in the request and the response.
            Rule::new(
                "authentication.k8s.io",
                "tokenreviews",
                vec![FieldPath::of(&["spec", "token"], Mask::Whole)],
            ),
            // The command of an exec (a command line can carry a password), as
            // admission capture sees it: a PodExecOptions object. The request
            // URI's `command=` parameters are masked by [`redact_uri`].
            Rule::new("", "pods/exec", vec![FieldPath::of(&["command"], Mask::Elements)]),
            // PodAttachOptions has no command today; the rule keeps one out if
            // it ever has, as the URI rule does for `command=`.
            Rule::new(
                "",
                "pods/attach",
                vec![FieldPath::of(&["command"], Mask::Elements)],
            ),
        ]
    })
}

/// The fields `rules` redact in bodies of `group`/`resource`.
pub fn fields_for<'r>(rules: &'r [Rule], group: &str, resource: &str) -> Vec<&'r FieldPath> {
    rules
        .iter()
        .filter(|r| r.matches(group, resource))
        .flat_map(|r| r.fields.iter())
        .collect()
}

/// The kinds whose bodies the built-in rules are about, and the rule (group,
/// resource) for each.
const SENSITIVE_KINDS: &[(&str, &str, &str)] = &[
    ("Secret", "", "secrets"),
    ("SecretList", "", "secrets"),
    ("TokenRequest", "", "serviceaccounts/token"),
    ("TokenReview", "authentication.k8s.io", "tokenreviews"),
    ("PodExecOptions", "", "pods/exec"),
    ("PodAttachOptions", "", "pods/attach"),
];

/// The built-in fields for a body whose object is of a sensitive kind.
///
/// Only an object's own `kind` counts, where the body's shape puts it (see
/// [`object_kinds`]): a ConfigMap whose data has a key `kind` with the value
/// `Secret` is a ConfigMap, and its values stay visible. A byte search finds
/// bodies that name a sensitive kind anywhere first, so other bodies stay
/// unparsed; a body that names one and cannot be parsed counts as that kind
/// (it is then redacted whole).
pub fn fields_by_kind(raw: &str) -> Vec<&'static FieldPath> {
    let named = named_kinds(raw);
    if named.is_empty() {
        return Vec::new();
    }
    let kinds: Vec<&str> = match serde_json::from_str::<Value>(raw) {
        Ok(v) => {
            let mut found = Vec::new();
            body_kinds(&v, &mut found);
            found
                .into_iter()
                .filter_map(|k| SENSITIVE_KINDS.iter().find(|s| s.0 == k).map(|s| s.0))
                .collect()
        }
        Err(_) => named,
    };
    let mut out = Vec::new();
    for (kind, group, resource) in SENSITIVE_KINDS {
        if kinds.contains(kind) {
            for f in fields_for(builtin(), group, resource) {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
    }
    out
}

/// The sensitive kinds named anywhere in `raw` as `"kind":"Secret"` (as the
/// apiserver writes it, or with spaces), in one byte search.
fn named_kinds(raw: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    for at in memchr::memmem::find_iter(bytes, b"\"kind\"") {
        let rest = &bytes[at + 6..];
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        let Some(rest) = rest.strip_prefix(b"\"") else {
            continue;
        };
        for (kind, _, _) in SENSITIVE_KINDS {
            if rest.starts_with(kind.as_bytes()) && rest.get(kind.len()) == Some(&b'"') && !out.contains(kind)
            {
                out.push(*kind);
            }
        }
    }
    out
}

/// The kinds of the objects a body carries: a JSON patch's whole-object
/// `value` (path `""`); else the body as an object (see [`object_kinds`]).
fn body_kinds<'v>(body: &'v Value, out: &mut Vec<&'v str>) {
    match body {
        Value::Array(ops) => {
            for op in ops {
                if op.get("path").and_then(Value::as_str) == Some("")
                    && let Some(v) = op.get("value")
                {
                    object_kinds(v, out);
                }
            }
        }
        other => object_kinds(other, out),
    }
}

/// The top-level `kind` of an object, and of the objects it holds as a List
/// (`items[]`), a Table (`rows[].object`) or a watch event (`object`): the
/// places [`redact_body`] applies a rule to. A `kind` key anywhere else is data.
fn object_kinds<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    let Value::Object(map) = v else { return };
    if let Some(Value::String(k)) = map.get("kind") {
        out.push(k);
    }
    if let Some(Value::Array(items)) = map.get("items") {
        for item in items {
            object_kinds(item, out);
        }
    }
    if let Some(Value::Array(rows)) = map.get("rows") {
        for row in rows {
            if let Some(obj) = row.get("object") {
                object_kinds(obj, out);
            }
        }
    }
    if let Some(obj) = map.get("object") {
        object_kinds(obj, out);
    }
}

/// Redacts `fields` in a body given as JSON text. Text that is not JSON
/// becomes `"[redacted]"`.
pub fn redact_text(raw: &str, fields: &[&FieldPath]) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(mut v) => {
            redact_body(&mut v, fields);
            v
        }
        Err(_) => Value::String(REDACTED.into()),
    }
}

/// Redacts `fields` in a body of any shape (see the module docs).
pub fn redact_body(body: &mut Value, fields: &[&FieldPath]) {
    if fields.is_empty() {
        return;
    }
    match body {
        Value::Array(ops) => {
            for op in ops {
                redact_patch_op(op, fields);
            }
        }
        Value::Object(map) => {
            if let Some(items) = map.get_mut("items") {
                each_object(items, |o| redact_body(o, fields));
            }
            if let Some(rows) = map.get_mut("rows") {
                match rows {
                    Value::Array(rows) => {
                        for row in rows {
                            match row {
                                Value::Object(r) => {
                                    if let Some(obj) = r.get_mut("object") {
                                        redact_body(obj, fields);
                                    }
                                }
                                other => mask(other, Mask::Whole),
                            }
                        }
                    }
                    other => mask(other, Mask::Whole),
                }
            }
            // A watch event: {"type": "ADDED", "object": {...}}.
            if map.get("type").is_some_and(Value::is_string)
                && let Some(obj) = map.get_mut("object")
            {
                redact_body(obj, fields);
            }
            // The object itself (also a merge or strategic-merge patch). For a
            // List or Table this touches only their own metadata.
            for f in fields {
                redact_path(body, &f.segments, f.mask, f.through_arrays);
            }
        }
        Value::Null => {}
        other => mask(other, Mask::Whole),
    }
}

/// Applies `f` to each element of an array; anything else is replaced whole.
fn each_object(v: &mut Value, mut f: impl FnMut(&mut Value)) {
    match v {
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) => f(item),
                    other => mask(other, Mask::Whole),
                }
            }
        }
        Value::Null => {}
        other => mask(other, Mask::Whole),
    }
}

/// Hides a value (null stays null: an absent value reveals nothing).
fn mask(v: &mut Value, how: Mask) {
    match (how, &mut *v) {
        (_, Value::Null) => {}
        (Mask::Values, Value::Object(map)) => {
            for val in map.values_mut() {
                if !val.is_null() {
                    *val = Value::String(REDACTED.into());
                }
            }
        }
        (Mask::Elements, Value::Array(items)) => {
            for item in items {
                *item = Value::String(REDACTED.into());
            }
        }
        _ => *v = Value::String(REDACTED.into()),
    }
}

/// Redacts the value at `path` below `v`. A value on the way that is neither an
/// object nor an array is replaced whole: it is not what the rule expects, so
/// it may hold anything.
fn redact_path(v: &mut Value, path: &[String], how: Mask, arrays: bool) {
    let Some((first, rest)) = path.split_first() else {
        mask(v, how);
        return;
    };
    match v {
        Value::Object(map) => {
            if let Some(next) = map.get_mut(first.as_str()) {
                redact_path(next, rest, how, arrays);
            }
        }
        Value::Array(items) if arrays => {
            for item in items {
                redact_path(item, path, how, arrays);
            }
        }
        Value::Null => {}
        other => mask(other, Mask::Whole),
    }
}

/// JSON pointer segments of a patch operation's `path` (`~1` is `/`, `~0` is `~`).
fn pointer(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let rest = path.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// An array index in a pointer (`0`, `12`, `-`).
fn is_index(seg: &str) -> bool {
    seg == "-" || (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
}

/// How a patch operation's target relates to a redacted field.
enum Overlap<'p> {
    /// The target contains the field: apply the rest of the field's path to the value.
    Contains(&'p [String]),
    /// The target is inside the field: the value is part of it.
    Inside,
    None,
}

/// Compares a pointer with a field path; array indices in the pointer stand for
/// the "each element" a field path applies to arrays.
fn overlap<'p>(ptr: &[String], field: &'p [String]) -> Overlap<'p> {
    let (mut i, mut j) = (0, 0);
    while i < ptr.len() && j < field.len() {
        if ptr[i] == field[j] {
            i += 1;
            j += 1;
        } else if is_index(&ptr[i]) {
            i += 1;
        } else {
            return Overlap::None;
        }
    }
    if j == field.len() {
        if i == ptr.len() {
            // The operation targets the field itself.
            Overlap::Contains(&field[field.len()..])
        } else {
            Overlap::Inside
        }
    } else {
        Overlap::Contains(&field[j..])
    }
}

fn redact_patch_op(op: &mut Value, fields: &[&FieldPath]) {
    // Anything that is not a JSON patch operation (`op` and `path` strings)
    // is not understood, so it is replaced whole.
    let ptr = match &*op {
        Value::Object(map) if map.get("op").is_some_and(Value::is_string) => {
            map.get("path").and_then(Value::as_str).and_then(pointer)
        }
        _ => None,
    };
    let Some(ptr) = ptr else {
        mask(op, Mask::Whole);
        return;
    };
    let Value::Object(map) = op else { return };
    let Some(value) = map.get_mut("value") else {
        return;
    };
    for f in fields {
        match overlap(&ptr, &f.segments) {
            Overlap::Contains([]) => mask(value, f.mask),
            Overlap::Contains(rest) => redact_path(value, rest, f.mask, f.through_arrays),
            Overlap::Inside => mask(value, Mask::Whole),
            Overlap::None => {}
        }
    }
}

/// Event annotations kept on a sensitive request: they describe the decision,
/// not the object. Any other (a mutating webhook's patch, say) is redacted.
const SAFE_ANNOTATIONS: &[&str] = &[
    "authorization.k8s.io/",
    "authentication.k8s.io/",
    "mutation.webhook.admission.k8s.io/",
    "validation.policy.admission.k8s.io/",
    "pod-security.kubernetes.io/",
    "apiserver.latency.k8s.io/",
    "apiserver.k8s.io/",
];

/// The audit event's own annotations on a request about a sensitive object:
/// values outside [`SAFE_ANNOTATIONS`] are redacted. Not an object: redacted whole.
pub fn redact_event_annotations(raw: &str) -> Value {
    let Ok(mut v) = serde_json::from_str::<Value>(raw) else {
        return Value::String(REDACTED.into());
    };
    match &mut v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if !SAFE_ANNOTATIONS.iter().any(|p| k.starts_with(p)) {
                    mask(val, Mask::Whole);
                }
            }
        }
        other => mask(other, Mask::Whole),
    }
    v
}

/// Query parameters whose values are masked in every request URI: a token in
/// a URL (dashboards and proxies accept `?token=` / `?access_token=`).
const TOKEN_PARAMS: &[&str] = &["token", "access_token"];
/// Query parameters of exec and attach requests whose values are masked (each
/// `command=` is one word of the command line).
const EXEC_PARAMS: &[&str] = &["command"];
/// Query parameters of node, pod and service proxy requests whose values are
/// masked: the kubelet's `/run` and `/exec` endpoints take a command as `cmd`
/// (or `command`), reached through `nodes/proxy` or a pod's own proxy.
const PROXY_PARAMS: &[&str] = &["command", "cmd"];
/// What a masked parameter's value becomes ([`REDACTED`], URL-encoded).
const REDACTED_PARAM: &str = "%5Bredacted%5D";

/// Masks the values of sensitive query parameters of a request URI, keeping
/// their names and every other parameter: [`TOKEN_PARAMS`] always,
/// [`EXEC_PARAMS`] on `pods/exec` and `pods/attach`, [`PROXY_PARAMS`] on
/// `nodes/proxy`, `pods/proxy` and `services/proxy`. The request is also
/// recognised by its path (a segment `exec`, `attach` or `proxy`), so an event
/// with a missing or odd `objectRef` does not slip through. A parameter's name
/// is compared percent-decoded and in any case (the query is text the client
/// chose).
pub fn redact_uri<'u>(uri: &'u str, group: &str, resource: &str) -> std::borrow::Cow<'u, str> {
    use std::borrow::Cow;
    let Some((path, query)) = uri.split_once('?') else {
        return Cow::Borrowed(uri);
    };
    let group = core_group(group);
    let segment = |name: &str| path.split('/').any(|s| s == name);
    let exec = is_exec(group, resource) || segment("exec") || segment("attach");
    let proxy = (group.is_empty() && matches!(resource, "nodes/proxy" | "pods/proxy" | "services/proxy"))
        || segment("proxy");
    let sensitive = |name: &str| {
        let name = percent_decode(name);
        let is = |list: &[&str]| list.iter().any(|p| p.eq_ignore_ascii_case(&name));
        is(TOKEN_PARAMS) || (exec && is(EXEC_PARAMS)) || (proxy && is(PROXY_PARAMS))
    };
    let mut changed = false;
    let kept: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, value)) if sensitive(name) && value != REDACTED_PARAM => {
                changed = true;
                Cow::Owned(format!("{name}={REDACTED_PARAM}"))
            }
            _ => Cow::Borrowed(p),
        })
        .collect();
    if !changed {
        return Cow::Borrowed(uri);
    }
    Cow::Owned(format!("{path}?{}", kept.join("&")))
}

/// A query parameter name, `%XX` and `+` decoded (an undecodable escape stays as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 3;
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a request's URI carries an exec or attach command.
pub fn is_exec(group: &str, resource: &str) -> bool {
    core_group(group).is_empty() && matches!(resource, "pods/exec" | "pods/attach")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret_fields() -> Vec<&'static FieldPath> {
        fields_for(builtin(), "core", "secrets")
    }

    fn redacted(mut v: Value, fields: &[&FieldPath]) -> Value {
        redact_body(&mut v, fields);
        v
    }

    #[test]
    fn bodies_are_recognised_by_their_kind() {
        assert_eq!(fields_by_kind(r#"{"kind":"Secret","data":{}}"#).len(), 3);
        assert_eq!(fields_by_kind(r#"{"kind": "TokenReview"}"#).len(), 1);
        assert_eq!(
            fields_by_kind(r#"{"kind":"List","items":[{"kind":"Secret"},{"kind":"TokenRequest"}]}"#).len(),
            4
        );
        assert!(fields_by_kind(r#"{"kind":"ConfigMap","data":{"a":"Secret"}}"#).is_empty());
        assert!(fields_by_kind(r#"{"kind":"ConfigMap","data":{"kind":"Secret"}}"#).is_empty());
        assert!(fields_by_kind(r#"{"kind":"SecretStore"}"#).is_empty());
        assert_eq!(fields_by_kind("{\"kind\" :\n \"Secret\"}").len(), 3);
    }

    #[test]
    fn rules_match_core_by_either_name() {
        assert_eq!(fields_for(builtin(), "", "secrets").len(), 3);
        assert_eq!(fields_for(builtin(), "core", "secrets").len(), 3);
        assert!(fields_for(builtin(), "apps", "secrets").is_empty());
        assert_eq!(fields_for(builtin(), "", "serviceaccounts/token").len(), 1);
        assert!(fields_for(builtin(), "", "serviceaccounts").is_empty());
        let r = Rule::new("core", "configmaps", vec![FieldPath::dotted("data", Mask::Whole)]);
        assert!(r.matches("", "configmaps") && r.matches("core", "configmaps"));
    }

    #[test]
    fn every_body_shape_of_a_secret() {
        let f = secret_fields();
        let obj = json!({"kind":"Secret","metadata":{"name":"a","annotations":{LAST_APPLIED:"{\"data\":{\"k\":\"AAA\"}}","team":"x"}},"data":{"k":"AAA"},"stringData":{"s":"BBB"},"type":"Opaque"});
        let cases = vec![
            obj.clone(),
            json!({"kind":"SecretList","items":[obj.clone(), obj.clone()]}),
            json!({"kind":"Table","rows":[{"cells":["a"],"object":obj.clone()}]}),
            json!({"type":"ADDED","object":obj.clone()}),
            json!({"data":{"k":"AAA"}}),
            json!({"stringData":{"s":"BBB"},"$patch":"merge"}),
            json!([{"op":"replace","path":"/data/k","value":"AAA"}]),
            json!([{"op":"add","path":"/data","value":{"k":"AAA"}}]),
            json!([{"op":"add","path":"","value":obj.clone()}]),
            json!([{"op":"add","path":"/metadata","value":{"annotations":{LAST_APPLIED:"AAA"}}}]),
            json!([{"op":"add","path":"/metadata/annotations","value":{LAST_APPLIED:"AAA"}}]),
            json!([{"op":"add","path":"/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration","value":"AAA"}]),
            json!([{"op":"test","path":"/stringData/s","value":"BBB"}]),
        ];
        for case in cases {
            let out = redacted(case.clone(), &f).to_string();
            assert!(
                !out.contains("AAA") && !out.contains("BBB"),
                "leaked from {case}: {out}"
            );
        }
        let out = redacted(obj, &f);
        assert_eq!(out["data"]["k"], REDACTED, "keys stay");
        assert_eq!(
            out["metadata"]["annotations"]["team"], "x",
            "other annotations stay"
        );
        assert_eq!(out["type"], "Opaque");
        let ops = redacted(
            json!([{"op":"add","path":"/metadata/labels/x","value":"y"},{"op":"remove","path":"/data/k"}]),
            &f,
        );
        assert_eq!(ops[0]["value"], "y", "unrelated operations stay");
    }

    #[test]
    fn fails_closed_on_unexpected_shapes() {
        let f = secret_fields();
        for odd in [
            json!("data: AAA"),
            json!(42),
            json!({"data":"AAA"}),
            json!({"data":["AAA"]}),
            json!({"metadata":[{"annotations":{LAST_APPLIED:"AAA"}}]}),
            json!({"metadata":"AAA"}),
            json!({"items":"AAA"}),
            json!({"items":["AAA"]}),
            json!({"rows":["AAA"]}),
            json!([["AAA"]]),
            json!([{"op":"add","path":7,"value":"AAA"}]),
            json!([{"op":"add","value":"AAA"}]),
        ] {
            let out = redacted(odd.clone(), &f).to_string();
            assert!(!out.contains("AAA"), "leaked from {odd}: {out}");
        }
        assert_eq!(redact_text("{not json", &f), Value::String(REDACTED.into()));
        // Nesting deeper than the parser allows is unreadable, so redacted whole.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(redact_text(&deep, &f), Value::String(REDACTED.into()));
    }

    #[test]
    fn tokens_and_reviews() {
        let f = fields_for(builtin(), "", "serviceaccounts/token");
        let out = redacted(
            json!({"kind":"TokenRequest","status":{"token":"eyJ.live","expirationTimestamp":"t"}}),
            &f,
        );
        assert_eq!(out["status"]["token"], REDACTED);
        assert_eq!(out["status"]["expirationTimestamp"], "t");
        let f = fields_for(builtin(), "authentication.k8s.io", "tokenreviews");
        let out = redacted(
            json!({"kind":"TokenReview","spec":{"token":"sha256~x"},"status":{"user":{"username":"u"}}}),
            &f,
        );
        assert_eq!(out["spec"]["token"], REDACTED);
        assert_eq!(out["status"]["user"]["username"], "u");
    }

    #[test]
    fn field_paths_go_through_arrays_and_patch_indices() {
        let env = FieldPath::dotted("spec.containers.env", Mask::Whole);
        let f = vec![&env];
        let pod =
            json!({"spec":{"containers":[{"name":"a","env":[{"name":"PW","value":"AAA"}]},{"name":"b"}]}});
        let out = redacted(pod, &f);
        assert_eq!(out["spec"]["containers"][0]["env"], REDACTED);
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
        let out = redacted(
            json!([{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"PW","value":"AAA"}},
                   {"op":"replace","path":"/spec/containers/1","value":{"name":"c","env":[{"value":"BBB"}]}}]),
            &f,
        )
        .to_string();
        assert!(!out.contains("AAA") && !out.contains("BBB"), "{out}");
        assert!(out.contains(r#""name":"c""#), "{out}");
    }

    #[test]
    fn annotations_and_exec_commands() {
        let a = redact_event_annotations(
            r#"{"authorization.k8s.io/decision":"allow","patch.webhook.admission.k8s.io/round_0_index_0":"{\"data\":\"AAA\"}"}"#,
        );
        assert_eq!(a["authorization.k8s.io/decision"], "allow");
        assert!(!a.to_string().contains("AAA"));
        assert_eq!(redact_event_annotations("[1]"), Value::String(REDACTED.into()));
        let exec = |u| redact_uri(u, "", "pods/exec").into_owned();
        assert_eq!(
            exec("/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=echo+pw&stdout=true"),
            "/api/v1/namespaces/d/pods/p/exec?command=%5Bredacted%5D&command=%5Bredacted%5D&command=%5Bredacted%5D&stdout=true"
        );
        assert_eq!(
            exec("/api/v1/namespaces/d/pods/p/attach"),
            "/api/v1/namespaces/d/pods/p/attach"
        );
    }

    /// An exec's command as admission sees it (a PodExecOptions object) is
    /// masked word by word, as its `command=` parameters are in the URI.
    #[test]
    fn exec_options_commands() {
        let f = fields_for(builtin(), "", "pods/exec");
        let out = redacted(
            json!({"kind":"PodExecOptions","apiVersion":"v1","stdout":true,"container":"c","command":["sh","-c","echo AAA"]}),
            &f,
        );
        assert_eq!(out["command"], json!([REDACTED, REDACTED, REDACTED]));
        assert_eq!(out["container"], "c");
        assert_eq!(out["stdout"], true);
        // Not an array: replaced whole.
        let out = redacted(json!({"command":"echo AAA"}), &f);
        assert_eq!(out["command"], REDACTED);
        assert_eq!(fields_for(builtin(), "core", "pods/attach").len(), 1);
        // Named by its kind, whatever the objectRef says.
        assert_eq!(
            fields_by_kind(r#"{"kind":"PodExecOptions","command":["x"]}"#),
            fields_for(builtin(), "", "pods/exec")
        );
    }

    #[test]
    fn commands_and_tokens_in_request_uris() {
        let r = |u, g, res| redact_uri(u, g, res).into_owned();
        // The kubelet's run endpoint through the node proxy.
        assert_eq!(
            r(
                "/api/v1/nodes/n1/proxy/run/ns/pod/c?cmd=cat+/etc/AAA",
                "",
                "nodes/proxy"
            ),
            "/api/v1/nodes/n1/proxy/run/ns/pod/c?cmd=%5Bredacted%5D"
        );
        assert_eq!(
            r(
                "/api/v1/namespaces/x/pods/p/proxy/exec?command=AAA&command=BBB&x=1",
                "",
                "pods/proxy"
            ),
            "/api/v1/namespaces/x/pods/p/proxy/exec?command=%5Bredacted%5D&command=%5Bredacted%5D&x=1"
        );
        assert_eq!(
            r(
                "/api/v1/namespaces/x/services/s:80/proxy/run?cmd=AAA",
                "core",
                "services/proxy"
            ),
            "/api/v1/namespaces/x/services/s:80/proxy/run?cmd=%5Bredacted%5D"
        );
        // Without an objectRef: known by the path.
        assert_eq!(
            r("/api/v1/nodes/n1/proxy/exec/ns/p/c?cmd=AAA", "", ""),
            "/api/v1/nodes/n1/proxy/exec/ns/p/c?cmd=%5Bredacted%5D"
        );
        assert_eq!(
            r("/api/v1/namespaces/d/pods/p/exec?command=AAA", "", ""),
            "/api/v1/namespaces/d/pods/p/exec?command=%5Bredacted%5D"
        );
        // Tokens in any URI, whatever the name's case or encoding.
        assert_eq!(
            r(
                "/api/v1/namespaces/d/configmaps?token=AAA&limit=5&access_token=BBB",
                "",
                "configmaps"
            ),
            "/api/v1/namespaces/d/configmaps?token=%5Bredacted%5D&limit=5&access_token=%5Bredacted%5D"
        );
        assert_eq!(
            r(
                "/apis/x.io/v1/things?Access_Token=AAA&%74oken=BBB",
                "x.io",
                "things"
            ),
            "/apis/x.io/v1/things?Access_Token=%5Bredacted%5D&%74oken=%5Bredacted%5D"
        );
        // Elsewhere `cmd` and `command` are ordinary parameters.
        assert_eq!(
            r("/apis/x.io/v1/things?cmd=ls&command=ls", "x.io", "things"),
            "/apis/x.io/v1/things?cmd=ls&command=ls"
        );
        // Nothing to mask: the URI is borrowed as it is.
        assert!(matches!(
            redact_uri("/api/v1/pods?watch=1", "", "pods"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(r("/api/v1/pods?token", "", "pods"), "/api/v1/pods?token");
    }

    /// Only an object's own kind makes it a Secret: a ConfigMap whose data has
    /// `kind: Secret` keeps its values.
    #[test]
    fn a_data_key_named_kind_is_not_the_objects_kind() {
        let cm = json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"data":{"kind":"Secret","other":"visible"}});
        for body in [
            cm.clone(),
            json!({"kind":"ConfigMapList","items":[cm.clone()]}),
            json!({"kind":"Table","rows":[{"object":cm.clone()}]}),
            json!({"type":"ADDED","object":cm.clone()}),
            json!([{"op":"add","path":"/data","value":{"kind":"Secret"}}]),
            json!({"data":{"nested":{"kind":"Secret"}}}),
        ] {
            assert!(fields_by_kind(&body.to_string()).is_empty(), "{body}");
        }
        let secret = json!({"kind":"Secret","data":{"k":"AAA"}});
        for body in [
            secret.clone(),
            json!({"kind":"List","items":[cm.clone(), secret.clone()]}),
            json!({"kind":"Table","rows":[{"object":secret.clone()}]}),
            json!({"type":"MODIFIED","object":secret.clone()}),
            json!([{"op":"add","path":"","value":secret.clone()}]),
            json!({"kind":"SecretList","items":[]}),
        ] {
            assert_eq!(fields_by_kind(&body.to_string()).len(), 3, "{body}");
        }
        // Names a Secret and cannot be read: counted as one (and so redacted whole).
        assert_eq!(fields_by_kind(r#"{"kind":"Secret","data":{"k":"AAA""#).len(), 3);
    }
}
