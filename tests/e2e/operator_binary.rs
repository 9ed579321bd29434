//! The `kubetrail operator` binary starts, serves its admin endpoints and reconciles
//! Trackers and TraceQueries, each counted under its own `controller` label.

use crate::support::{self, eventually};
use kube::api::{Api, PostParams};
use kubetrail::api::{ConditionType, KeyEventNotification, QueryPhase, TraceQuery, Tracker, condition};
use serde_json::json;
use std::time::Duration;

async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    support::http(addr, "GET", path, b"").await
}

#[tokio::test]
async fn operator_binary_serves_health_and_metrics_and_reconciles() {
    let env = support::env();
    let h = crate::Harness::start().await;
    // The in-process operator of the harness is not needed: the binary does the work.
    h.ctx.metrics.reconciles.clear();
    let label = support::unique("bin");
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("operator")
        .args(["--admin-addr", &addr, "--namespace", &h.namespace])
        .args([
            "--insecure-http",
            "--webhook-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .arg("--spool-dir")
        .arg(tempfile::tempdir().expect("tempdir").keep())
        .args(["--tracker-selector", &format!("kubetrail.io/test={label}")])
        .env("KUBECONFIG", env.cp.admin_kubeconfig())
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .spawn()
        .expect("starting kubetrail operator");

    let (code, body) = eventually(Duration::from_secs(30), "/ready answers 200", || async {
        http_get(&addr, "/ready").await.filter(|(c, _)| *c == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ready"));
    assert_eq!(http_get(&addr, "/live").await.map(|r| r.0), Some(200));

    let bucket = env.s3.bucket("bin").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("trk");
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1",
        "kind": "Tracker",
        "metadata": {"name": name, "labels": {"kubetrail.io/test": label}},
        "spec": {"destination": {
            "bucket": bucket, "endpoint": env.s3.endpoint, "forcePathStyle": true,
            "credentialsSecretRef": {"name": "s3"}
        }},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create tracker");
    eventually(
        Duration::from_secs(60),
        "tracker ready via the binary",
        || async {
            let t = api.get(&name).await.ok()?;
            let ready = condition(&t.status.as_ref()?.conditions, ConditionType::Ready)?;
            (ready.status == "True").then_some(())
        },
    )
    .await;

    // A TraceQuery answered by the binary: its reconciler has metrics of its own.
    let queries: Api<TraceQuery> = Api::namespaced(h.client.clone(), &h.namespace);
    let query = support::unique("q");
    let obj: TraceQuery = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "TraceQuery",
        "metadata": {"name": query, "labels": {"kubetrail.io/test": label}},
        "spec": {"tracker": name, "timeRange": {"last": "1h"}},
    }))
    .unwrap();
    queries
        .create(&PostParams::default(), &obj)
        .await
        .expect("create TraceQuery");
    let phase = eventually(Duration::from_secs(60), "the TraceQuery answered", || async {
        let q = queries.get(&query).await.ok()?;
        q.status?
            .phase
            .filter(|p| matches!(p, QueryPhase::Succeeded | QueryPhase::Failed))
    })
    .await;
    assert_eq!(phase, QueryPhase::Succeeded);

    // A KeyEventNotification whose HMAC Secret is missing: its own reconciler
    // says so in Ready (the fold round only adds counters and DeliveryFailing).
    let notifications: Api<KeyEventNotification> = Api::all(h.client.clone());
    let ken = support::unique("ken");
    let obj: KeyEventNotification = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "KeyEventNotification",
        "metadata": {"name": ken, "labels": {"kubetrail.io/test": label}},
        "spec": {"presets": ["allDeletes"], "webhook": {
            "url": "https://receiver.invalid/hook", "hmacSecretRef": {"name": support::unique("missing")}}},
    }))
    .unwrap();
    notifications
        .create(&PostParams::default(), &obj)
        .await
        .expect("create KeyEventNotification");
    let ready = eventually(Duration::from_secs(30), "the notification's Ready", || async {
        let n = notifications.get(&ken).await.ok()?;
        condition(&n.status.as_ref()?.conditions, ConditionType::Ready).cloned()
    })
    .await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretNotFound")
    );
    notifications
        .delete(&ken, &Default::default())
        .await
        .expect("delete KeyEventNotification");

    let (code, metrics) = http_get(&addr, "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    for line in [
        r#"kubetrail_reconciles_total{controller="tracker",result="ok"}"#,
        r#"kubetrail_reconciles_total{controller="tracequery",result="ok"}"#,
        r#"kubetrail_reconcile_duration_seconds_count{controller="tracequery"}"#,
        r#"kubetrail_status_patches_total{controller="tracequery"}"#,
        r#"kubetrail_reconciles_total{controller="keyeventnotification",result="ok"}"#,
        r#"kubetrail_status_patches_total{controller="keyeventnotification"}"#,
    ] {
        assert!(metrics.contains(line), "metrics show {line}: {metrics}");
    }
    child.kill().await.ok();
}
