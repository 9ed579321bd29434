//! Audit events as the apiserver sends them to the webhook: one builder for
//! every test that posts some.

use serde_json::{Value, json};

/// A completed `get` of pods in `namespace` by user `u`, answered 200 and
/// received now: the smallest event the webhook takes. [`with`] changes a field.
pub fn get_pods(id: &str, namespace: &str) -> Value {
    json!({"auditID": id, "stage": "ResponseComplete", "verb": "get", "user": {"username": "u"},
        "objectRef": {"resource": "pods", "namespace": namespace, "apiVersion": "v1"},
        "responseStatus": {"code": 200}, "requestReceivedTimestamp": jiff::Timestamp::now().to_string()})
}

/// `event` with the field at the dotted `path` (`"objectRef.resource"`) set to
/// `value`; missing objects on the way are created.
pub fn with(mut event: Value, path: &str, value: Value) -> Value {
    let mut at = &mut event;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !at.get(part).is_some_and(Value::is_object) && parts.peek().is_some() {
            at[part] = json!({});
        }
        if parts.peek().is_none() {
            at[part] = value;
            break;
        }
        at = &mut at[part];
    }
    event
}

/// `n` [`get_pods`] events with ids `{tag}-0` … `{tag}-{n-1}`, as one batch.
pub fn tagged_batch(tag: &str, namespace: &str, n: usize) -> Vec<u8> {
    event_list((0..n).map(|i| get_pods(&format!("{tag}-{i}"), namespace)))
}

/// An `audit.k8s.io/v1` `EventList` body holding `items`.
pub fn event_list(items: impl IntoIterator<Item = Value>) -> Vec<u8> {
    let items: Vec<Value> = items.into_iter().collect();
    serde_json::to_vec(&json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}))
        .unwrap()
}

#[test]
fn with_sets_nested_fields() {
    let e = with(get_pods("a", "n"), "objectRef.resource", json!("secrets"));
    assert_eq!(e["objectRef"]["resource"], "secrets");
    assert_eq!(e["objectRef"]["namespace"], "n");
    let e = with(e, "responseStatus.code", json!(403));
    assert_eq!(e["responseStatus"]["code"], 403);
    let e = with(e, "impersonatedUser.username", json!("bob"));
    assert_eq!(e["impersonatedUser"]["username"], "bob");
    let body: Value = serde_json::from_slice(&tagged_batch("t", "n", 3)).unwrap();
    assert_eq!(body["kind"], "EventList");
    assert_eq!(body["items"][2]["auditID"], "t-2");
}
