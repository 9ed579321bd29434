//! Other sources than the webhook, on the real apiserver: its audit log file
//! (written with `--audit-log-path`, rotated at 1 MB while the test runs).

use crate::Harness;
use crate::ingest::{destination, traces, tracker};
use crate::support::{self, Operator, eventually};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Creates a ConfigMap of about 2 KB; returns the request's audit ID.
async fn create(client: &kube::Client, ns: &str, name: &str) -> String {
    let body = json!({"metadata": {"name": name}, "data": {"blob": "x".repeat(2048)}});
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/configmaps"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
    resp.headers()["audit-id"].to_str().unwrap().to_string()
}

/// The operator follows the apiserver's audit log file (no webhook at all)
/// while the apiserver rotates it several times; it is killed (SIGKILL) mid-file
/// and started again while requests go on. Every request of the test is
/// delivered exactly once, marked `source: auditLog`.
#[tokio::test]
async fn the_audit_log_file_is_followed_across_rotations_and_a_kill() {
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("auditlog").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{ns}-log"),
        json!({
            "destination": destination(&bucket, "log", &env.s3.endpoint),
            "filter": {"include": [{"namespaces": [ns], "resources": ["configmaps"]}]},
            "delivery": {"maxBatchAge": "1s"},
        }),
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    let log = env.cp.audit_log_path.display().to_string();
    let args = vec![
        "--audit-log-file".to_string(),
        log.clone(),
        "--spool-dir".into(),
        spool.path().display().to_string(),
        // An address of its own, unused: no TLS files, so no webhook is started.
        "--webhook-addr".into(),
        format!("127.0.0.1:{}", support::free_port()),
    ];
    let backups = || {
        let dir = env.cp.audit_log_path.parent().unwrap();
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    };
    let files_before = backups();
    let op = Operator::start(&ns, &h.label, "log-0", &args).await;
    let mut ids = Vec::new();
    for i in 0..250 {
        ids.push(create(&h.client, &ns, &format!("a{i}")).await);
    }
    op.kill().await;
    for i in 0..150 {
        ids.push(create(&h.client, &ns, &format!("b{i}")).await);
    }
    let op = Operator::start(&ns, &h.label, "log-0", &args).await;
    for i in 0..250 {
        ids.push(create(&h.client, &ns, &format!("c{i}")).await);
    }
    assert!(
        backups() >= files_before + 2,
        "the apiserver rotated its log during the test ({files_before} → {} files)",
        backups()
    );
    let found = eventually(Duration::from_secs(120), "every request delivered", || async {
        let t = traces(&env.s3, &bucket, "log/").await;
        let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
        for (_, v) in t {
            if v["trace_name"] == "create configmaps" {
                seen.entry(v["trace_id"].as_str().unwrap().to_string())
                    .or_default()
                    .push(v);
            }
        }
        ids.iter().all(|id| seen.contains_key(id)).then_some(seen)
    })
    .await;
    // Delivery is done; a little longer for any copy that would follow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for (_, v) in traces(&env.s3, &bucket, "log/").await {
        if v["trace_name"] == "create configmaps" {
            *count
                .entry(v["trace_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(count.get(id), Some(&1), "request {id} delivered exactly once");
    }
    assert_eq!(count.len(), ids.len(), "nothing else: {} traces", count.len());
    for id in &ids {
        let v = &found[id][0];
        assert_eq!(v["source"], "auditLog");
        assert_eq!(v["stage"], "ResponseComplete");
        assert_eq!(v["namespace"], ns.as_str());
    }
    assert!(op.stop().await.success());
}
