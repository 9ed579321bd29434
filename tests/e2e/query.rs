//! TraceQuery against known trace files spanning several days in a real bucket.

use crate::Harness;
use crate::support::{self, eventually};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kubetrail::api::{ConditionType, QueryPhase, TraceQuery, Tracker};
use kubetrail::store::Store;
use serde_json::json;
use std::time::Duration;

const ADMIN_NS: &str = "kubetrail-admin";

struct T {
    id: &'static str,
    time: &'static str,
    verb: &'static str,
    resource: &'static str,
    name: &'static str,
    ns: String,
    user: &'static str,
    code: i32,
}

fn line(t: &T) -> Vec<u8> {
    let rating = if t.code >= 500 {
        "incident"
    } else if t.code >= 400 {
        "warning"
    } else {
        "normal"
    };
    serde_json::to_vec(&json!({
        "trace_id": t.id, "trace_name": format!("{} {}", t.verb, t.resource), "trace_rating": rating,
        "trace_type": "ApiCall", "service_type": "core", "resource_type": t.resource, "resource_name": t.name,
        "namespace": t.ns, "user": t.user, "source_ips": ["10.0.0.9"], "code": t.code, "time": t.time,
        "record_time": t.time, "stage": "ResponseComplete", "read_only": matches!(t.verb, "get" | "list"),
        "request_uri": "/x", "cluster": "e2e",
    }))
    .unwrap()
}

/// Writes one trace file per group, keyed as delivery would name it.
async fn write_files(sink: &Store, tracker: &str, files: &[Vec<&T>]) {
    write_files_of(sink, "e2e", tracker, files).await
}

/// The same, as a writer of `cluster`.
async fn write_files_of(sink: &Store, cluster: &str, tracker: &str, files: &[Vec<&T>]) {
    for (n, group) in files.iter().enumerate() {
        // Named as delivery names files: after the earliest trace in it.
        let first = group
            .iter()
            .map(|t| kubetrail::trace::parse_time_ms(t.time).unwrap())
            .min()
            .unwrap();
        let lines: Vec<Vec<u8>> = group.iter().map(|t| line(t)).collect();
        support::put_trace_file(sink, "q", cluster, tracker, n as u64, first, &lines).await;
    }
}

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let _ = api.create(&PostParams::default(), &ns).await;
}

async fn run_query(h: &Harness, ns: &str, spec: serde_json::Value) -> TraceQuery {
    run_query_on(h, &h.label, ns, spec).await
}

/// The same, answered by the controller that watches `label`.
async fn run_query_on(h: &Harness, label: &str, ns: &str, spec: serde_json::Value) -> TraceQuery {
    let api: Api<TraceQuery> = Api::namespaced(h.client.clone(), ns);
    let name = support::unique("q");
    let obj: TraceQuery = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "TraceQuery",
        "metadata": {"name": name, "labels": {"kubetrail.io/test": label}},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating TraceQuery");
    eventually(
        Duration::from_secs(60),
        &format!("query {name} finished"),
        || async {
            let q = api.get(&name).await.ok()?;
            matches!(
                q.status.as_ref()?.phase,
                Some(QueryPhase::Succeeded | QueryPhase::Failed)
            )
            .then_some(q)
        },
    )
    .await
}

fn ids(q: &TraceQuery) -> Vec<String> {
    q.status
        .as_ref()
        .unwrap()
        .results
        .iter()
        .map(|r| r.trace_id.clone())
        .collect()
}

#[tokio::test]
async fn trace_queries_answer_exactly_within_their_scope() {
    let env = support::env();
    let h = Harness::start().await;
    let tenant = h.namespace.clone();
    let billing = support::unique("billing");
    ensure_namespace(&h.client, ADMIN_NS).await;
    let bucket = env.s3.bucket("query").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let tracker = format!("{tenant}-trk");
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(h.tracker(
        &tracker,
        json!({"destination": {
        "bucket": bucket, "prefix": "q", "endpoint": env.s3.endpoint, "forcePathStyle": true,
        "credentialsSecretRef": {"name": "s3"}}}),
    ))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();

    let t = |id, time, verb, resource, name, ns: &str, user, code| T {
        id,
        time,
        verb,
        resource,
        name,
        ns: ns.to_string(),
        user,
        code,
    };
    let d20a = t(
        "d20-create",
        "2026-11-20T09:00:00Z",
        "create",
        "secrets",
        "db",
        &tenant,
        "alice",
        201,
    );
    let d20b = t(
        "d20-get",
        "2026-11-20T09:05:00Z",
        "get",
        "configmaps",
        "cfg",
        &tenant,
        "bob",
        200,
    );
    let d21a = t(
        "d21-delete",
        "2026-11-21T10:00:00Z",
        "delete",
        "secrets",
        "db",
        &tenant,
        "alice",
        200,
    );
    let d21b = t(
        "d21-denied",
        "2026-11-21T10:01:00Z",
        "get",
        "secrets",
        "db",
        &tenant,
        "eve",
        403,
    );
    let d21c = t(
        "d21-cluster",
        "2026-11-21T11:00:00Z",
        "create",
        "namespaces",
        "x",
        "",
        "admin",
        201,
    );
    let d22a = t(
        "d22-billing",
        "2026-11-22T08:00:00Z",
        "delete",
        "secrets",
        "pay",
        &billing,
        "carol",
        200,
    );
    let d22b = t(
        "d22-patch",
        "2026-11-22T08:30:00Z",
        "patch",
        "deployments",
        "web",
        &tenant,
        "alice",
        200,
    );
    let d23a = t(
        "d23-delete",
        "2026-11-23T07:00:00Z",
        "delete",
        "secrets",
        "db-2",
        &tenant,
        "alice",
        200,
    );
    let sink = Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        serde_json::from_value(json!({"bucket": bucket})).unwrap(),
    ));
    // Day 21's delete is in two files (a redelivery by another writer): one trace, not two.
    write_files(
        &sink,
        &tracker,
        &[
            vec![&d20a, &d20b],
            vec![&d21a, &d21b],
            vec![&d21a, &d21c],
            vec![&d22a, &d22b],
            vec![&d23a],
        ],
    )
    .await;

    // Deletes of Secrets on days 20–21, in the tenant namespace: exactly one trace,
    // and only the files of those two days were read.
    let q = run_query(&h, &tenant, json!({"tracker": tracker, "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z"},
        "filter": {"verbs": ["delete"], "resources": ["secrets"]}})).await;
    let s = q.status.clone().unwrap();
    assert_eq!(s.phase, Some(QueryPhase::Succeeded), "{:?}", s.message);
    assert_eq!(ids(&q), ["d21-delete"]);
    assert_eq!(s.matched, 1);
    assert_eq!(s.scanned_objects, 3, "only the files of the two asked days");
    assert!(!s.truncated);
    let row = &s.results[0];
    assert_eq!(
        (
            row.trace_name.as_str(),
            row.user.as_str(),
            row.resource_name.as_str()
        ),
        ("delete secrets", "alice", "db")
    );
    // The full result set is in the bucket.
    let key = s.result_key.clone().expect("result key");
    let body = sink.get(&key).await.expect("result object");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
        .expect("gzipped result");
    assert_eq!(text.lines().count(), 1);

    // Denied requests over all days.
    let q = run_query(&h, &tenant, json!({"tracker": tracker, "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-24T00:00:00Z"},
        "filter": {"ratings": ["warning"]}})).await;
    assert_eq!(ids(&q), ["d21-denied"]);

    // A tenant sees its namespace only: not billing's, not cluster-scoped traces.
    let q = run_query(&h, &tenant, json!({"tracker": tracker, "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-24T00:00:00Z"}})).await;
    assert_eq!(
        ids(&q),
        [
            "d23-delete",
            "d22-patch",
            "d21-denied",
            "d21-delete",
            "d20-get",
            "d20-create"
        ],
        "newest first, no duplicates"
    );
    let q = run_query(&h, &tenant, json!({"tracker": tracker, "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-24T00:00:00Z"},
        "filter": {"namespaces": [billing]}})).await;
    assert_eq!(
        q.status.as_ref().unwrap().matched,
        0,
        "another namespace's traces are out of reach"
    );

    // The admin namespace sees everything; oldest first with a limit is a lifecycle view.
    let q = run_query(&h, ADMIN_NS, json!({"tracker": tracker, "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-24T00:00:00Z"}})).await;
    assert_eq!(q.status.as_ref().unwrap().matched, 8);
    assert!(ids(&q).contains(&"d22-billing".to_string()) && ids(&q).contains(&"d21-cluster".to_string()));
    let q = run_query(&h, ADMIN_NS, json!({"tracker": tracker, "order": "oldestFirst", "limit": 2,
        "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-24T00:00:00Z"}, "filter": {"resourceNames": ["db"]}})).await;
    assert_eq!(ids(&q), ["d20-create", "d21-delete"]);
    assert!(q.status.as_ref().unwrap().truncated);

    // Failures, each with its reason.
    let q = run_query(&h, &tenant, json!({"tracker": "no-such-tracker"})).await;
    let s = q.status.unwrap();
    assert_eq!(s.phase, Some(QueryPhase::Failed));
    assert!(s.message.unwrap_or_default().contains("does not exist"));
    assert_eq!(s.conditions[0].reason, "TrackerNotFound");
    let q = run_query(&h, &tenant, json!({"tracker": tracker, "timeRange": {"from": "2026-01-01T00:00:00Z", "to": "2026-11-24T00:00:00Z"}})).await;
    let s = q.status.unwrap();
    assert_eq!(s.phase, Some(QueryPhase::Failed));
    assert_eq!(s.conditions[0].reason, "RangeTooLarge");

    // Finished queries go away after their TTL (long enough to see them finish first).
    let q = run_query(
        &h,
        &tenant,
        json!({"tracker": tracker, "ttlSecondsAfterFinished": 5, "timeRange": {"last": "1h"}}),
    )
    .await;
    let api: Api<TraceQuery> = Api::namespaced(h.client.clone(), &tenant);
    let name = kube::ResourceExt::name_any(&q);
    eventually(Duration::from_secs(30), "query deleted after its TTL", || async {
        api.get_opt(&name)
            .await
            .ok()
            .and_then(|o| o.is_none().then_some(()))
    })
    .await;
}

/// Runs the `kubetrail query` binary; returns stdout.
async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("query")
        .args(args)
        .env("KUBECONFIG", support::env().cp.admin_kubeconfig())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running kubetrail query");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn query_command_reads_a_tracker_through_the_api() {
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("cli").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let tracker = format!("{ns}-cli");
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(h.tracker(
        &tracker,
        json!({"destination": {
        "bucket": bucket, "prefix": "q", "endpoint": env.s3.endpoint, "forcePathStyle": true,
        "credentialsSecretRef": {"name": "s3"}}}),
    ))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let t = |id, time, verb, name, user, code| T {
        id,
        time,
        verb,
        resource: "secrets",
        name,
        ns: ns.clone(),
        user,
        code,
    };
    let a = t(
        "c-1",
        "2026-11-21T10:00:00Z",
        "create",
        "db-password",
        "alice",
        201,
    );
    let b = t("c-2", "2026-11-21T11:00:00Z", "get", "db-password", "eve", 403);
    let c = t(
        "c-3",
        "2026-11-22T09:00:00Z",
        "delete",
        "db-password",
        "alice",
        200,
    );
    let d = t("c-4", "2026-11-22T09:30:00Z", "delete", "other", "bob", 200);
    let sink = Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        serde_json::from_value(json!({"bucket": bucket})).unwrap(),
    ));
    write_files(&sink, &tracker, &[vec![&a, &b], vec![&c, &d]]).await;

    let range = ["--from", "2026-11-21T00:00:00Z", "--to", "2026-11-23T00:00:00Z"];
    let base = [
        "--tracker",
        tracker.as_str(),
        "--operator-namespace",
        ns.as_str(),
        "--cluster",
        "e2e",
    ];
    let args = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .chain(range.iter())
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |a: Vec<String>| async move {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        cli(&refs).await
    };
    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["trace_id"].as_str().unwrap_or("").to_string())
            .collect()
    };

    let (ok, out, err) = run(args(&[
        "--verb",
        "delete",
        "--resource",
        "secrets/db-password",
        "-o",
        "jsonl",
    ]))
    .await;
    assert!(ok, "{err}");
    assert_eq!(ids(&out), ["c-3"]);
    assert!(err.contains("1 matched") && err.contains("in 2 day(s)"), "{err}");
    let (ok, out, _) = run(args(&[
        "--resource",
        "secrets/db-password",
        "--lifecycle",
        "-o",
        "jsonl",
    ]))
    .await;
    assert!(ok);
    assert_eq!(ids(&out), ["c-1", "c-2", "c-3"], "lifecycle is oldest first");
    let (ok, out, _) = run(args(&["--rating", "warning", "-o", "table"])).await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("OPERATION"),
        "{out}"
    );
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("eve") && lines[1].contains("get secrets") && lines[1].contains("403"),
        "{out}"
    );
    let (ok, out, _) = run(args(&["--user", "bob", "-o", "json"])).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().map(|a| a.len()), Some(1));
    // Errors are clear and fail the command.
    let (ok, _, err) = cli(&["--tracker", "no-such-tracker-x", "--since", "1h"]).await;
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = run(args(&["--rating", "fatal"])).await;
    assert!(!ok && err.contains("rating must be"), "{err}");
}

/// A query controller of its own (on its own label), with tight bounds.
fn bounded_controller(
    h: &Harness,
    concurrency: usize,
    timeout: Duration,
    max_bytes: usize,
) -> (String, std::sync::Arc<kubetrail::controller::Context>) {
    own_controller(h, "bounded", |s| {
        s.admin_namespaces.clear();
        s.query_concurrency = concurrency;
        s.query_timeout = timeout;
        s.query_max_result_bytes = max_bytes;
    })
}

/// A query controller of its own, on its own label: the harness's settings
/// changed by `change`.
fn own_controller(
    h: &Harness,
    name: &str,
    change: impl FnOnce(&mut kubetrail::controller::Settings),
) -> (String, std::sync::Arc<kubetrail::controller::Context>) {
    use kubetrail::controller::Context;
    let label = support::unique(name);
    let mut settings = h.ctx.settings.clone();
    settings.tracker_selector = Some(format!("kubetrail.io/test={label}"));
    settings.instance = format!("test-{label}");
    settings.query_scratch_dir = std::env::temp_dir().join(support::unique("kubetrail-query"));
    change(&mut settings);
    let ctx = Context::new(
        h.client.clone(),
        settings,
        std::sync::Arc::new(kubetrail::telemetry::Metrics::default()),
    );
    let c = ctx.clone();
    tokio::spawn(kubetrail::controller::query::run(c));
    (label, ctx)
}

async fn create_query(h: &Harness, label: &str, spec: serde_json::Value) -> String {
    let api: Api<TraceQuery> = Api::namespaced(h.client.clone(), &h.namespace);
    let name = support::unique("bq");
    let obj: TraceQuery = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "TraceQuery",
        "metadata": {"name": name, "labels": {"kubetrail.io/test": label}},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating TraceQuery");
    name
}

async fn finished(h: &Harness, name: &str) -> TraceQuery {
    let api: Api<TraceQuery> = Api::namespaced(h.client.clone(), &h.namespace);
    eventually(
        Duration::from_secs(60),
        &format!("query {name} finished"),
        || async {
            let q = api.get(name).await.ok()?;
            matches!(
                q.status.as_ref()?.phase,
                Some(QueryPhase::Succeeded | QueryPhase::Failed)
            )
            .then_some(q)
        },
    )
    .await
}

#[tokio::test]
async fn queries_are_bounded_in_number_time_and_memory() {
    use std::io::Read;
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("bounded").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let tracker = format!("{ns}-trk");
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(h.tracker(
        &tracker,
        json!({"destination": {"bucket": bucket, "prefix": "q", "endpoint": env.s3.endpoint,
            "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}}}),
    ))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let traces: Vec<T> = (0..400)
        .map(|i| T {
            id: leak(format!("b-{i:03}")),
            time: leak(format!("2026-11-20T10:{:02}:{:02}Z", i / 60, i % 60)),
            verb: "get",
            resource: "pods",
            name: "p",
            ns: ns.clone(),
            user: "alice",
            code: 200,
        })
        .collect();
    let sink = Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        serde_json::from_value(json!({"bucket": bucket})).unwrap(),
    ));
    write_files(
        &sink,
        &tracker,
        &[traces[..200].iter().collect(), traces[200..].iter().collect()],
    )
    .await;
    let line_bytes = line(&traces[0]).len();
    let spec = json!({"tracker": tracker, "limit": 100000,
        "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"}, "ttlSecondsAfterFinished": 2});

    // A limit of 100,000: the lines wait in a scratch file (not memory), and
    // only what fits the bound (64 KiB here) is kept.
    let (label, ctx) = bounded_controller(&h, 1, Duration::from_secs(60), 64 * 1024);
    let name = create_query(&h, &label, spec.clone()).await;
    let q = finished(&h, &name).await;
    let s = q.status.clone().unwrap();
    assert_eq!(s.phase, Some(QueryPhase::Succeeded), "{:?}", s.message);
    assert_eq!(s.matched, 400);
    assert!(s.truncated);
    assert!(
        s.message.as_deref().unwrap_or("").contains("per-query bound"),
        "{:?}",
        s.message
    );
    let spills = std::fs::read_dir(&ctx.settings.query_scratch_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "spill"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        spills, 0,
        "the scratch file is removed once the result is written"
    );
    // The result file is gzipped JSON Lines of the traces held, newest first.
    let key = s.result_key.clone().expect("result key");
    assert!(key.ends_with(".jsonl.gz"), "{key}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&sink.get(&key).await.unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let kept: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        kept.len() < 400 && kept.len() * line_bytes <= 64 * 1024 + line_bytes,
        "{} kept",
        kept.len()
    );
    assert!(kept.len() > 20, "more than the inline rows");
    assert_eq!(kept[0]["trace_id"], "b-399", "newest first");
    // The TTL removes the query and its result file.
    let tq: Api<TraceQuery> = Api::namespaced(h.client.clone(), &h.namespace);
    eventually(
        Duration::from_secs(60),
        "the query and its result removed",
        || async {
            let gone = tq.get_opt(&name).await.ok()?.is_none();
            (gone && sink.get(&key).await.is_err()).then_some(())
        },
    )
    .await;

    // Concurrency: with the only slot taken, a query waits in Pending, then runs.
    let held = ctx.query_slots.clone().acquire_owned().await.unwrap();
    let name = create_query(&h, &label, spec.clone()).await;
    eventually(
        Duration::from_secs(30),
        "the query waiting for a slot",
        || async {
            let q = tq.get(&name).await.ok()?;
            let s = q.status?;
            (s.phase == Some(QueryPhase::Pending)
                && kubetrail::api::condition(&s.conditions, ConditionType::Complete)
                    .is_some_and(|c| c.reason == "Waiting"))
            .then_some(())
        },
    )
    .await;
    drop(held);
    assert_eq!(
        finished(&h, &name).await.status.unwrap().phase,
        Some(QueryPhase::Succeeded)
    );

    // Time: past the limit the query fails with reason Timeout.
    let (label, _ctx) = bounded_controller(&h, 1, Duration::from_millis(1), 64 * 1024);
    let name = create_query(&h, &label, spec).await;
    let s = finished(&h, &name).await.status.unwrap();
    assert_eq!(s.phase, Some(QueryPhase::Failed));
    let c = kubetrail::api::condition(&s.conditions, ConditionType::Complete).unwrap();
    assert_eq!(c.reason, "Timeout", "{}", c.message);
}

/// One bucket, three clusters' trails: a TraceQuery searches its own cluster by
/// default; an admin namespace's the clusters it names or all of them (`*`)
/// when the operator's `--readable-clusters` opens them; a tenant's nothing
/// but its own cluster. `kubetrail query` (the caller's own credentials)
/// likewise with `--cluster a,b` and `--all-clusters`.
#[tokio::test]
async fn queries_search_the_clusters_they_name() {
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("clusters").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let tracker = format!("{ns}-mc");
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(h.tracker(
        &tracker,
        json!({"destination": {
        "bucket": bucket, "prefix": "q", "endpoint": env.s3.endpoint, "forcePathStyle": true,
        "credentialsSecretRef": {"name": "s3"}}}),
    ))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let t = |id, cluster_ns: &str| T {
        id,
        time: "2026-11-20T09:00:00Z",
        verb: "delete",
        resource: "secrets",
        name: "db",
        ns: cluster_ns.to_string(),
        user: "alice",
        code: 200,
    };
    let (here, there, third) = (t("in-e2e", &ns), t("in-other", &ns), t("in-third", &ns));
    let sink = Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        serde_json::from_value(json!({"bucket": bucket})).unwrap(),
    ));
    write_files_of(&sink, "e2e", &tracker, &[vec![&here]]).await;
    write_files_of(&sink, "other", &tracker, &[vec![&there]]).await;
    write_files_of(&sink, "third", &tracker, &[vec![&third]]).await;
    let range = json!({"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"});
    let sorted = |q: &TraceQuery| {
        let mut v = ids(q);
        v.sort();
        v
    };
    ensure_namespace(&h.client, ADMIN_NS).await;
    let asking = |clusters: &[&str]| json!({"tracker": tracker, "timeRange": range, "clusters": clusters});
    // Refused: Failed, with the reason and a message that names what to change.
    let refused = |q: &TraceQuery| {
        let s = q.status.clone().unwrap();
        assert_eq!(s.phase, Some(QueryPhase::Failed), "{s:?}");
        assert!(s.results.is_empty() && s.result_key.is_none(), "{s:?}");
        let c = kubetrail::api::condition(&s.conditions, ConditionType::Complete).unwrap();
        assert_eq!(s.message.as_deref(), Some(c.message.as_str()));
        (c.reason.clone(), c.message.clone())
    };

    // A tenant: its own cluster, by default or by name, and nothing else.
    let q = run_query(&h, &ns, json!({"tracker": tracker, "timeRange": range})).await;
    assert_eq!(sorted(&q), vec!["in-e2e"], "its own cluster by default");
    let q = run_query(&h, &ns, asking(&["e2e"])).await;
    assert_eq!(sorted(&q), vec!["in-e2e"], "its own cluster by name");
    for clusters in [&["*"][..], &["other"], &["e2e", "third"]] {
        let q = run_query(&h, &ns, asking(clusters)).await;
        let (reason, message) = refused(&q);
        assert_eq!(reason, "ClusterNotAllowed", "{clusters:?}: {message}");
        assert!(
            message.contains(&format!("namespace {ns:?} is not an admin namespace"))
                && message.contains(&format!("{:?}", clusters[clusters.len() - 1])),
            "{message}"
        );
    }

    // An admin namespace: the listed clusters (here `other` and `third`).
    let q = run_query(&h, ADMIN_NS, asking(&["other", "third"])).await;
    assert_eq!(sorted(&q), vec!["in-other", "in-third"]);
    let q = run_query(&h, ADMIN_NS, asking(&["e2e", "other"])).await;
    assert_eq!(sorted(&q), vec!["in-e2e", "in-other"]);
    let q = run_query(&h, ADMIN_NS, asking(&["other", "fourth"])).await;
    let (reason, message) = refused(&q);
    assert_eq!(reason, "ClusterNotReadable", "{message}");
    assert!(
        message.contains("\"fourth\"") && message.contains("--readable-clusters (other,third)"),
        "{message}"
    );
    let q = run_query(&h, ADMIN_NS, asking(&["*"])).await;
    let (reason, message) = refused(&q);
    assert_eq!(
        reason, "ClusterNotReadable",
        "a list does not open every cluster: {message}"
    );
    // An operator with `--readable-clusters=*`: every cluster, for admins only.
    let (every, _ctx) = own_controller(&h, "every", |s| {
        s.readable_clusters = kubetrail::scope::ReadableClusters::All
    });
    let q = run_query_on(&h, &every, ADMIN_NS, asking(&["*"])).await;
    assert_eq!(sorted(&q), vec!["in-e2e", "in-other", "in-third"]);
    let q = run_query_on(&h, &every, &ns, asking(&["*"])).await;
    assert_eq!(refused(&q).0, "ClusterNotAllowed");

    let base = [
        "--bucket",
        &bucket,
        "--prefix",
        "q",
        "--tracker-name",
        &tracker,
        "--endpoint",
        &env.s3.endpoint,
        "--force-path-style",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-21T00:00:00Z",
        "-o",
        "jsonl",
    ];
    let found = |out: &str| {
        let mut v: Vec<String> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["trace_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    let run = |extra: &'static [&'static str]| {
        let args: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
                .arg("query")
                .args(&args)
                .env("AWS_ACCESS_KEY_ID", support::s3::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", support::s3::SECRET_KEY)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("running kubetrail query");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (ok, out, err) = run(&["--cluster", "e2e,other"]).await;
    assert!(ok, "{err}");
    assert_eq!(found(&out), vec!["in-e2e", "in-other"]);
    let (ok, out, err) = run(&["--all-clusters"]).await;
    assert!(ok, "{err}");
    assert_eq!(found(&out), vec!["in-e2e", "in-other", "in-third"]);
}

/// The operator removes a finished query's result file by the key it derives
/// from the query, so a status edited to name another object (here a trace
/// file) makes it delete nothing but the result.
#[tokio::test]
async fn an_edited_result_key_deletes_only_the_result() {
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("resultkey").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let tracker = format!("{ns}-rk");
    let obj: Tracker = serde_json::from_value(h.tracker(
        &tracker,
        json!({"destination": {
        "bucket": bucket, "prefix": "q", "endpoint": env.s3.endpoint, "forcePathStyle": true,
        "credentialsSecretRef": {"name": "s3"}}}),
    ))
    .unwrap();
    Api::<Tracker>::all(h.client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
    let sink = Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        serde_json::from_value(json!({"bucket": bucket})).unwrap(),
    ));
    let trace = T {
        id: "kept",
        time: "2026-11-20T09:00:00Z",
        verb: "delete",
        resource: "secrets",
        name: "db",
        ns: ns.clone(),
        user: "alice",
        code: 200,
    };
    write_files(&sink, &tracker, &[vec![&trace]]).await;
    let trace_files: Vec<String> = sink
        .list("q/KubeTrail/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(trace_files.len(), 1, "{trace_files:?}");
    let trace_file = trace_files[0].clone();

    let name = create_query(
        &h,
        &h.label,
        json!({"tracker": tracker, "ttlSecondsAfterFinished": 10,
               "timeRange": {"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"}}),
    )
    .await;
    let q = finished(&h, &name).await;
    let s = q.status.clone().unwrap();
    assert_eq!(s.phase, Some(QueryPhase::Succeeded), "{s:?}");
    assert_eq!(ids(&q), vec!["kept"]);
    let result = s.result_key.clone().unwrap();
    assert!(
        sink.get(&result).await.is_ok(),
        "the result file {result} was written"
    );

    // Whoever may write the status points the result key at the trace file.
    let api: Api<TraceQuery> = Api::namespaced(h.client.clone(), &ns);
    api.patch_status(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": {"resultKey": trace_file}})),
    )
    .await
    .expect("editing status.resultKey");
    let edited = api.get(&name).await.unwrap().status.unwrap();
    assert_eq!(edited.result_key.as_deref(), Some(trace_file.as_str()));

    // The TTL ends: the operator deletes the query and its own result file.
    eventually(
        Duration::from_secs(60),
        "the query deleted after its TTL",
        || async { api.get_opt(&name).await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        sink.get(&trace_file).await.is_ok(),
        "the trace file {trace_file} named by the edited status is still there"
    );
    assert!(
        sink.get(&result).await.is_err(),
        "the result file {result} was removed"
    );
    let uid = q.metadata.uid.clone().unwrap();
    assert_eq!(
        result,
        format!("q/KubeTrail-Query/e2e/{ns}/{name}/{uid}.jsonl.gz"),
        "the result key is derived from the query"
    );
}
