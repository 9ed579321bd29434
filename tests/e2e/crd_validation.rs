//! The apiserver itself refuses invalid objects, with a message naming the field.

use crate::support;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kubetrail.io", "v1alpha1", kind))
}

/// Creates `obj` with a server-side dry run and returns the apiserver's error text.
async fn create(
    client: &kube::Client,
    kind: &str,
    namespace: Option<&str>,
    obj: serde_json::Value,
) -> Result<(), String> {
    let ar = resource(kind);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&pp, &obj).await.map(|_| ()).map_err(|e| e.to_string())
}

fn tracker(destination: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"destination": destination});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "kubetrail.io/v1alpha1",
        "kind": "Tracker",
        "metadata": {"name": support::unique("v")},
        "spec": spec,
    })
}

#[tokio::test]
async fn valid_tracker_is_accepted_with_defaults() {
    let client = support::env().cp.client().await;
    let ok = tracker(
        json!({"bucket": "audit-logs", "prefix": "prod/cluster-a"}),
        json!({}),
    );
    create(&client, "Tracker", None, ok)
        .await
        .expect("a valid tracker is accepted");
}

#[tokio::test]
async fn invalid_trackers_are_refused_with_the_field_and_reason() {
    let client = support::env().cp.client().await;
    let cases = [
        (
            json!({"bucket": "Audit_Logs"}),
            json!({}),
            "spec.destination.bucket",
        ),
        (json!({"bucket": "ab"}), json!({}), "spec.destination.bucket"),
        (json!({"bucket": "a..b"}), json!({}), "two adjacent dots"),
        (json!({"bucket": "192.168.1.10"}), json!({}), "IP address"),
        (
            json!({"bucket": "audit", "prefix": "/prod"}),
            json!({}),
            "prefix must not start with '/'",
        ),
        (
            json!({"bucket": "audit", "prefix": "prod/../x"}),
            json!({}),
            "prefix must not contain '..'",
        ),
        (
            json!({"bucket": "audit", "prefix": "a b"}),
            json!({}),
            "spec.destination.prefix",
        ),
        (
            json!({"bucket": "audit", "endpoint": "ftp://x"}),
            json!({}),
            "endpoint must be an http",
        ),
        (
            json!({"bucket": "audit", "encryption": "aws:kms"}),
            json!({}),
            "encryption aws:kms needs kmsKeyId",
        ),
        (
            json!({"bucket": "audit", "encryption": "AES256", "kmsKeyId": "k"}),
            json!({}),
            "kmsKeyId is only valid",
        ),
        (
            json!({"bucket": "audit", "encryption": "DES"}),
            json!({}),
            "spec.destination.encryption",
        ),
        (
            json!({"bucket": "audit", "retentionDays": 0}),
            json!({}),
            "spec.destination.retentionDays",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"delivery": {"maxBatchAge": "500ms"}}),
            "maxBatchAge must be a duration between 1s and 1h",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"delivery": {"maxBatchAge": "soon"}}),
            "maxBatchAge must be a duration",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"integrity": {"digestPeriod": "30s"}}),
            "digestPeriod must be a duration between 1m and 24h",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"integrity": {"verifyInterval": "1s"}}),
            "verifyInterval must be a duration between 10s and 168h",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"retention": {"mode": "sometimes"}}),
            "spec.retention.mode",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"delivery": {"maxBatchEvents": 0}}),
            "spec.delivery.maxBatchEvents",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"delivery": {"compression": "lz4"}}),
            "spec.delivery.compression",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"filter": {"include": [{}]}}),
            "a match rule needs at least one",
        ),
        (
            json!({"bucket": "audit"}),
            json!({"filter": {"readOnly": "sometimes"}}),
            "spec.filter.readOnly",
        ),
        (json!({}), json!({}), "spec.destination.bucket"),
    ];
    for (dest, extra, expected) in cases {
        let obj = tracker(dest.clone(), extra.clone());
        let err = create(&client, "Tracker", None, obj).await.expect_err(&format!(
            "tracker with destination {dest} and {extra} must be refused"
        ));
        assert!(
            err.contains(expected),
            "refusal of {dest} {extra} should mention {expected:?}, got: {err}"
        );
    }
}

#[tokio::test]
async fn invalid_trace_queries_are_refused() {
    let client = support::env().cp.client().await;
    let ns = "default";
    let query = |spec: serde_json::Value| {
        json!({
            "apiVersion": "kubetrail.io/v1alpha1",
            "kind": "TraceQuery",
            "metadata": {"name": support::unique("q")},
            "spec": spec,
        })
    };
    let ok =
        query(json!({"tracker": "system", "timeRange": {"last": "24h"}, "filter": {"verbs": ["delete"]}}));
    create(&client, "TraceQuery", Some(ns), ok)
        .await
        .expect("a valid query is accepted");
    let cases = [
        (
            json!({"tracker": "system", "timeRange": {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}}),
            "from must be before to",
        ),
        (
            json!({"tracker": "system", "timeRange": {"last": "1h", "from": "2026-01-01T00:00:00Z"}}),
            "set either last or from/to",
        ),
        (
            json!({"tracker": "system", "timeRange": {"last": "yesterday"}}),
            "last must be a positive duration",
        ),
        (json!({"tracker": "system", "limit": 0}), "spec.limit"),
        (json!({"tracker": ""}), "spec.tracker"),
        (
            json!({"tracker": "system", "filter": {"ratings": ["fatal"]}}),
            "spec.filter.ratings",
        ),
    ];
    for (spec, expected) in cases {
        let err = create(&client, "TraceQuery", Some(ns), query(spec.clone()))
            .await
            .expect_err(&format!("query {spec} must be refused"));
        assert!(
            err.contains(expected),
            "refusal of {spec} should mention {expected:?}, got: {err}"
        );
    }
}

#[tokio::test]
async fn invalid_notifications_are_refused() {
    let client = support::env().cp.client().await;
    let ken = |spec: serde_json::Value| {
        json!({
            "apiVersion": "kubetrail.io/v1alpha1",
            "kind": "KeyEventNotification",
            "metadata": {"name": support::unique("n")},
            "spec": spec,
        })
    };
    create(
        &client,
        "KeyEventNotification",
        None,
        ken(json!({"presets": ["allDeletes"], "webhook": {"url": "https://hooks.example.com/x"}})),
    )
    .await
    .expect("a valid notification is accepted");
    let cases = [
        (
            json!({"webhook": {"url": "https://hooks.example.com/x"}}),
            "select something",
        ),
        (
            json!({"presets": ["allDeletes"], "webhook": {"url": "https://h.example.com/x"}, "grouping": {"window": "10ms"}}),
            "window must be a duration between 100ms and 5m",
        ),
        (
            json!({"presets": ["allDeletes"], "webhook": {"url": "https://h.example.com/x"}, "grouping": {"maxTraces": 0}}),
            "maxTraces",
        ),
        (
            json!({"users": (0..51).map(|i| format!("u{i}")).collect::<Vec<_>>(), "webhook": {"url": "https://h.example.com/x"}}),
            "users",
        ),
        (
            json!({"presets": ["allDeletes"], "webhook": {"url": "https://h.example.com/x", "headers": {"Host": "evil"}}}),
            "headers may not set Host",
        ),
        (
            json!({"presets": ["noSuchPreset"], "webhook": {"url": "https://h.example.com/x"}}),
            "noSuchPreset",
        ),
        (
            json!({"presets": ["allDeletes"], "webhook": {"url": "http://hooks.example.com/x"}}),
            "webhook url must be an https",
        ),
        (
            json!({"presets": ["allDeletes"], "kubernetesEvent": false}),
            "needs a target",
        ),
    ];
    for (spec, expected) in cases {
        let err = create(&client, "KeyEventNotification", None, ken(spec.clone()))
            .await
            .expect_err(&format!("notification {spec} must be refused"));
        assert!(
            err.contains(expected),
            "refusal of {spec} should mention {expected:?}, got: {err}"
        );
    }
}

/// The plain-YAML examples under `examples/` are valid objects.
#[tokio::test]
async fn shipped_examples_are_accepted() {
    let client = support::env().cp.client().await;
    for (file, kind, ns) in [
        ("tracker.yaml", "Tracker", None),
        ("tracequery.yaml", "TraceQuery", Some("default")),
        ("keyeventnotification.yaml", "KeyEventNotification", None),
    ] {
        let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("example");
        let mut obj: serde_json::Value = serde_saphyr::from_str(&text).expect("example parses");
        if let Some(ns) = ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        create(&client, kind, ns, obj)
            .await
            .unwrap_or_else(|e| panic!("{file} refused: {e}"));
    }
}
