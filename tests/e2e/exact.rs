//! The record is exact: nothing acknowledged is lost on a stop, a restart or a
//! crash; nothing is stored twice; every trace is where a query looks; one
//! broken tracker does not stop the others. Real apiserver (Trackers, status),
//! real operator processes, real S3 server.

use crate::Harness;
use crate::ingest::{WAIT, assert_delivered_once, batch, destination, traces, tracker};
use crate::support::{self, Operator, eventually, http};
use kube::api::Api;
use kubetrail::api::{ConditionType, Destination, Order, Tracker, condition};
use kubetrail::query::{self, Query};
use kubetrail::store::Store;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn webhook_args(addr: &str, spool: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--insecure-http".to_string(),
        "--webhook-addr".into(),
        addr.into(),
        "--spool-dir".into(),
        spool.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// One audit event at `time` (RFC 3339) with `id`, for `namespace`.
fn event(id: &str, verb: &str, namespace: &str, time: &str, stage_time: &str) -> Value {
    json!({
        "level": "Metadata", "auditID": id, "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/{namespace}/pods/p/exec?command=sh"), "verb": verb,
        "user": {"username": "alice", "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.1"],
        "objectRef": {"resource": "pods", "subresource": "exec", "namespace": namespace, "name": "p", "apiVersion": "v1"},
        "responseStatus": {"code": 101},
        "requestReceivedTimestamp": time, "stageTimestamp": stage_time,
    })
}

fn event_list(items: Vec<Value>) -> Vec<u8> {
    support::audit::event_list(items)
}

fn s3_sink(env: &support::TestEnv, bucket: &str) -> Store {
    Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        Destination::plain(bucket, "p", "us-east-1", Some(env.s3.endpoint.clone()), true),
    ))
}

async fn run_query(env: &support::TestEnv, bucket: &str, tracker: &str, from: &str, to: &str) -> Vec<Value> {
    let (from, to) = (
        from.parse::<jiff::Timestamp>().unwrap().as_millisecond(),
        to.parse::<jiff::Timestamp>().unwrap().as_millisecond(),
    );
    let q = Query {
        limit: 100_000,
        order: Order::OldestFirst,
        parallelism: 4,
        ..Query::new("p", vec!["e2e".into()], tracker, from, to)
    };
    query::run(&s3_sink(env, bucket), &q, 31)
        .await
        .expect("query runs")
        .hits
        .into_iter()
        .map(|h| serde_json::from_str(&h.line).unwrap())
        .collect()
}

/// SIGTERM right after a 200: the trace file is in the bucket before the process
/// exits, and it exits 0. The batch age is an hour, so only the drain can write it.
#[tokio::test]
async fn sigterm_after_an_ack_delivers_before_exit() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("drain").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-drain", h.namespace);
    tracker(
        &h,
        &name,
        json!({"destination": destination(&bucket, "p", &env.s3.endpoint), "delivery": {"maxBatchAge": "1h"}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let op = Operator::start(
        &h.namespace,
        &h.label,
        "d1",
        &webhook_args(&addr, dir.path(), &[]),
    )
    .await;
    let (code, _) = http(&addr, "POST", "/audit", &batch("drain", 20, &h.namespace))
        .await
        .expect("webhook answers");
    assert_eq!(code, 200);
    assert!(
        traces(&env.s3, &bucket, "").await.is_empty(),
        "nothing delivered before the stop"
    );
    let status = op.stop().await;
    assert!(status.success(), "exit status {status:?}");
    // Checked right after the exit: no waiting for anything that happens later.
    let ids: HashSet<String> = traces(&env.s3, &bucket, "")
        .await
        .into_iter()
        .filter_map(|(_, v)| v["trace_id"].as_str().map(String::from))
        .collect();
    assert_eq!(
        ids.len(),
        20,
        "every acknowledged event delivered by the drain: {ids:?}"
    );
}

/// A restart that replays the spool (the cursors as they were before the first
/// delivery: a crash right after PutObject) writes exactly the same object keys,
/// and nothing twice.
#[tokio::test]
async fn a_replayed_spool_rewrites_the_same_keys() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("replay").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{}-replay", h.namespace),
        json!({"destination": destination(&bucket, "p", &env.s3.endpoint),
               "delivery": {"maxBatchAge": "1h", "maxBatchEvents": 20}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let args = webhook_args(&addr, dir.path(), &[]);
    let op = Operator::start(&h.namespace, &h.label, "r1", &args).await;
    let before = std::fs::read(dir.path().join("cursors.json")).expect("cursor file written at start");
    let mut acked = Vec::new();
    for b in 0..5 {
        let tag = format!("replay-{b}");
        let (code, _) = http(&addr, "POST", "/audit", &batch(&tag, 20, &h.namespace))
            .await
            .unwrap();
        assert_eq!(code, 200);
        acked.push(tag);
    }
    let first: Vec<String> = eventually(WAIT, "five files", || async {
        let keys: Vec<String> = env
            .s3
            .objects(&bucket, "")
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        (keys.len() == 5).then_some(keys)
    })
    .await;
    assert!(op.stop().await.success());
    // As if the process had died after writing the files but before recording it.
    std::fs::write(dir.path().join("cursors.json"), &before).unwrap();
    let op = Operator::start(&h.namespace, &h.label, "r1", &args).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(op.stop().await.success());
    let mut again: Vec<String> = env
        .s3
        .objects(&bucket, "")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut first = first;
    first.sort();
    again.sort();
    assert_eq!(again, first, "replay wrote the same keys and no others");
    assert_delivered_once(&env.s3, &bucket, &acked).await;
}

/// Events from 23:59 to 00:02 on two interleaved clocks, and a 2-hour exec
/// session: every trace lies in its file's day, every file is named after its
/// earliest trace, and queries find them where they belong.
#[tokio::test]
async fn traces_land_in_their_own_day_and_queries_find_them() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("midnight").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-mid", h.namespace);
    tracker(
        &h,
        &name,
        json!({"destination": destination(&bucket, "p", &env.s3.endpoint), "delivery": {"maxBatchAge": "1s"}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let op = Operator::start(
        &h.namespace,
        &h.label,
        "m1",
        &webhook_args(&addr, dir.path(), &[]),
    )
    .await;
    let day0 = "2026-11-20T23:59:00Z".parse::<jiff::Timestamp>().unwrap();
    let mut items = Vec::new();
    let mut after = 0;
    for i in 0..240i64 {
        // Two clocks: one a minute behind the other.
        let t = day0 + jiff::SignedDuration::from_millis(i * 750 - if i % 2 == 0 { 60_000 } else { 0 });
        if t >= "2026-11-21T00:00:00Z".parse::<jiff::Timestamp>().unwrap()
            && t < "2026-11-21T01:00:00Z".parse::<jiff::Timestamp>().unwrap()
        {
            after += 1;
        }
        items.push(event(
            &format!("mid-{i}"),
            "get",
            &h.namespace,
            &t.to_string(),
            &t.to_string(),
        ));
    }
    // A 12:xx trace first, then an exec session that began at 10:15 and ended at 12:15.
    items.push(event(
        "noon",
        "get",
        &h.namespace,
        "2026-11-21T12:05:00Z",
        "2026-11-21T12:05:00Z",
    ));
    items.push(event(
        "exec",
        "create",
        &h.namespace,
        "2026-11-21T10:15:00Z",
        "2026-11-21T12:15:00Z",
    ));
    for chunk in items.chunks(40) {
        let (code, _) = http(&addr, "POST", "/audit", &event_list(chunk.to_vec()))
            .await
            .unwrap();
        assert_eq!(code, 200);
    }
    let all = eventually(WAIT, "all 242 traces delivered", || async {
        let t = traces(&env.s3, &bucket, "").await;
        (t.len() == 242).then_some(t)
    })
    .await;
    assert!(op.stop().await.success());
    let mut earliest: HashMap<String, String> = HashMap::new();
    for (key, v) in &all {
        let time: jiff::Timestamp = v["time"].as_str().unwrap().parse().unwrap();
        let day = time.strftime("%Y/%m/%d").to_string();
        assert!(
            key.contains(&format!("/{day}/")),
            "{} at {time} is in {key}",
            v["trace_id"]
        );
        let stamp = time.strftime("%Y%m%dT%H%M%SZ").to_string();
        let e = earliest.entry(key.clone()).or_insert(stamp.clone());
        if stamp < *e {
            *e = stamp;
        }
    }
    for (key, stamp) in &earliest {
        assert!(
            key.contains(&format!("_{stamp}_")),
            "{key} is named after its earliest trace {stamp}"
        );
    }
    let hits = run_query(
        env,
        &bucket,
        &name,
        "2026-11-21T00:00:00Z",
        "2026-11-21T01:00:00Z",
    )
    .await;
    assert_eq!(hits.len(), after, "exactly the after-midnight traces");
    assert!(
        hits.iter()
            .all(|v| v["time"].as_str().unwrap().starts_with("2026-11-21T00:"))
    );
    let exec = run_query(
        env,
        &bucket,
        &name,
        "2026-11-21T10:00:00Z",
        "2026-11-21T11:00:00Z",
    )
    .await;
    let ids: Vec<&str> = exec.iter().filter_map(|v| v["trace_id"].as_str()).collect();
    assert_eq!(ids, ["exec"], "the long session is found in the hour it started");
}

/// A batch POSTed twice, also across a restart, is stored once; two different
/// operations with one auditID are both stored and both found.
#[tokio::test]
async fn retries_are_stored_once_and_a_shared_audit_id_hides_nothing() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("dedupe").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-dd", h.namespace);
    tracker(
        &h,
        &name,
        json!({"destination": destination(&bucket, "p", &env.s3.endpoint), "delivery": {"maxBatchAge": "1s"}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let args = webhook_args(&addr, dir.path(), &[]);
    let now = jiff::Timestamp::now().to_string();
    let body = event_list(vec![
        event("same-id", "delete", &h.namespace, &now, &now),
        event("same-id", "get", &h.namespace, &now, &now),
        event("other", "get", &h.namespace, &now, &now),
    ]);
    let op = Operator::start(&h.namespace, &h.label, "dd", &args).await;
    for _ in 0..2 {
        assert_eq!(http(&addr, "POST", "/audit", &body).await.unwrap().0, 200);
    }
    eventually(WAIT, "three traces", || async {
        (traces(&env.s3, &bucket, "").await.len() >= 3).then_some(())
    })
    .await;
    assert!(op.stop().await.success());
    let op = Operator::start(&h.namespace, &h.label, "dd", &args).await;
    assert_eq!(
        http(&addr, "POST", "/audit", &body).await.unwrap().0,
        200,
        "a retry after the restart"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(op.stop().await.success());
    let stored = traces(&env.s3, &bucket, "").await;
    let mut names: Vec<String> = stored
        .iter()
        .map(|(_, v)| {
            format!(
                "{} {}",
                v["trace_id"].as_str().unwrap(),
                v["trace_name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "other get pods/exec",
            "same-id delete pods/exec",
            "same-id get pods/exec"
        ]
    );
    let day = &now[..10];
    let hits = run_query(
        env,
        &bucket,
        &name,
        &format!("{day}T00:00:00Z"),
        &(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string(),
    )
    .await;
    let mut found: Vec<String> = hits
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["trace_id"].as_str().unwrap(),
                v["trace_name"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, names, "the query shows both operations of the shared ID");
}

/// Two trackers, one whose credentials are revoked (its Secret holds keys the
/// S3 server refuses) under load: the other receives everything, the webhook
/// never answers 503, the broken one reports BacklogOverflow and its drops, and
/// fixing its Secret resumes it.
#[tokio::test]
async fn a_broken_tracker_does_not_stop_the_others() {
    let env = support::env();
    let h = Harness::start().await;
    let good = env.s3.bucket("good").await;
    let bad = env.s3.bucket("bad").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let good_name = format!("{}-good", h.namespace);
    let bad_name = format!("{}-bad", h.namespace);
    h.put_credentials("s3-revoked", "revoked-key", "revoked-secret")
        .await;
    for (n, b, secret) in [(&good_name, &good, "s3"), (&bad_name, &bad, "s3-revoked")] {
        tracker(
            &h,
            n,
            json!({"destination": {"bucket": b, "prefix": "p", "endpoint": env.s3.endpoint,
                                   "forcePathStyle": true, "credentialsSecretRef": {"name": secret}},
                   "delivery": {"maxBatchAge": "1s", "maxBatchEvents": 2000}}),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let args = webhook_args(
        &addr,
        dir.path(),
        &[
            "--spool-max-bytes=200000000",
            "--spool-segment-bytes=500000",
            "--tracker-backlog-bytes=10000000",
        ],
    );
    let op = Operator::start(&h.namespace, &h.label, "iso", &args).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (addr, ns, refused) = (addr.clone(), h.namespace.clone(), refused.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for b in 0.. {
                if *stop.borrow_and_update() {
                    break;
                }
                let tag = format!("iso-{b}");
                match http(&addr, "POST", "/audit", &batch(&tag, 20, &ns)).await {
                    Some((200, _)) => acked.push(tag),
                    _ => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            acked
        })
    };
    let api: Api<Tracker> = Api::all(h.client.clone());
    let overflow = eventually(WAIT, "BacklogOverflow on the broken tracker", || async {
        let s = api.get(&bad_name).await.ok()?.status?;
        let ready = condition(&s.conditions, ConditionType::Ready)?;
        (ready.status == "False" && ready.reason == "BacklogOverflow" && s.events_dropped > 0).then_some(s)
    })
    .await;
    stop_tx.send(true).unwrap();
    let acked = sender.await.unwrap();
    assert!(acked.len() > 100, "load got through: {} batches", acked.len());
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the webhook never refused a batch"
    );
    assert_delivered_once(&env.s3, &good, &acked).await;
    assert!(
        overflow
            .writers
            .iter()
            .any(|w| w.backlog_overflow && w.events_dropped > 0)
    );
    assert!(
        traces(&env.s3, &bad, "").await.is_empty(),
        "nothing reached the broken tracker's bucket"
    );
    // Fixed: the Secret holds valid keys again; new traces reach the bucket.
    h.put_credentials("s3-revoked", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let (code, _) = http(&addr, "POST", "/audit", &batch("after-fix", 20, &h.namespace))
        .await
        .unwrap();
    assert_eq!(code, 200);
    eventually(WAIT, "the fixed tracker delivers again", || async {
        let t = traces(&env.s3, &bad, "").await;
        t.iter()
            .any(|(_, v)| {
                v["trace_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("after-fix-"))
            })
            .then_some(())
    })
    .await;
    eventually(WAIT, "Ready again", || async {
        let s = api.get(&bad_name).await.ok()?.status?;
        (condition(&s.conditions, ConditionType::Ready)?.status == "True").then_some(())
    })
    .await;
    assert!(op.stop().await.success());
}

/// A rolling restart of two replicas on emptyDir spools under steady load; the
/// sender plays the apiserver: a batch that was not acknowledged is sent again,
/// to the other replica. Every acknowledged event is in the bucket, none twice.
#[tokio::test]
async fn a_rolling_restart_of_two_replicas_loses_nothing() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("rolling").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{}-roll", h.namespace),
        json!({"destination": destination(&bucket, "p", &env.s3.endpoint), "delivery": {"maxBatchAge": "30s"}}),
    )
    .await;
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", support::free_port()))
        .collect();
    let start = |i: usize| {
        let (h, addrs) = (&h, &addrs);
        async move {
            // emptyDir: every start gets a new, empty spool.
            let dir = tempfile::tempdir().unwrap();
            let op = Operator::start(
                &h.namespace,
                &h.label,
                &format!("roll-{i}"),
                &webhook_args(&addrs[i], dir.path(), &["--drain-seconds=20"]),
            )
            .await;
            (op, dir)
        }
    };
    let mut replicas = vec![start(0).await, start(1).await];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = {
        let (addrs, ns) = (addrs.clone(), h.namespace.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut stop = stop_rx;
            for b in 0usize.. {
                if *stop.borrow_and_update() {
                    break;
                }
                let tag = format!("roll-{b}");
                let body = batch(&tag, 20, &ns);
                // Retried, alternating replicas, until acknowledged.
                for attempt in 0.. {
                    match http(&addrs[(b + attempt) % 2], "POST", "/audit", &body).await {
                        Some((200, _)) => {
                            acked.push(tag);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            acked
        })
    };
    for i in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (op, dir) = replicas.remove(0);
        assert!(op.stop().await.success(), "replica {i} drained and exited 0");
        drop(dir); // the emptyDir goes with the pod
        replicas.push(start(i).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).unwrap();
    let acked = sender.await.unwrap();
    assert!(acked.len() > 50, "load got through: {}", acked.len());
    for (op, _dir) in replicas {
        assert!(op.stop().await.success());
    }
    assert_delivered_once(&env.s3, &bucket, &acked).await;
}

/// Disabling a tracker delivers its open file first; deleting one does too, and
/// the Tracker object is gone only once its traces are in the bucket (the
/// finalizer waits for the writers). The batch age is an hour: only the drain
/// can have written them.
#[tokio::test]
async fn disabling_or_deleting_a_tracker_delivers_its_open_files_first() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("retire").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let dis = format!("{}-dis", h.namespace);
    let del = format!("{}-del", h.namespace);
    for (n, prefix) in [(&dis, "dis"), (&del, "del")] {
        tracker(
            &h,
            n,
            json!({"destination": destination(&bucket, prefix, &env.s3.endpoint), "delivery": {"maxBatchAge": "1h"}}),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let op = Operator::start(
        &h.namespace,
        &h.label,
        "ret",
        &webhook_args(&addr, dir.path(), &[]),
    )
    .await;
    let (code, _) = http(&addr, "POST", "/audit", &batch("retire", 20, &h.namespace))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let api: Api<Tracker> = Api::all(h.client.clone());
    // Wait until the operator (the lease holder) has added its finalizer.
    eventually(WAIT, "finalizer on the tracker", || async {
        let t = api.get(&del).await.ok()?;
        (!t.metadata.finalizers.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
    api.patch(
        &dis,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"enabled": false}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "the disabled tracker's open file delivered", || async {
        (traces(&env.s3, &bucket, "dis/").await.len() == 20).then_some(())
    })
    .await;
    api.delete(&del, &Default::default()).await.unwrap();
    eventually(WAIT, "the deleted tracker gone", || async {
        api.get_opt(&del).await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(
        traces(&env.s3, &bucket, "del/").await.len(),
        20,
        "the deleted tracker's traces were in the bucket before the object went"
    );
    assert!(op.stop().await.success());
}

/// The quick start's case: `kubetrail serve`, one batch acknowledged, Ctrl-C /
/// SIGTERM half a second later: the trace file is written before the process
/// exits 0, and the spool holds nothing undelivered.
#[tokio::test]
async fn serve_delivers_on_sigterm_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces");
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster: lab\ntrackers:\n  - name: all\n    directory: {}\n    delivery:\n      maxBatchAge: 1h\n",
            out.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let admin = format!("127.0.0.1:{}", support::free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("serve")
        .args(["--config", &config.display().to_string()])
        .args(["--listen", &listen, "--admin-addr", &admin])
        .args(["--spool-dir", &dir.path().join("spool").display().to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("starting kubetrail serve");
    eventually(Duration::from_secs(30), "serve /ready", || async {
        http(&admin, "GET", "/ready", b"")
            .await
            .filter(|(c, _)| *c == 200)
    })
    .await;
    let (code, _) = http(&listen, "POST", "/audit", &batch("serve", 20, "shop"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: a signal to our own child process.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("serve stops within 30 s")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut lines = 0;
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("trace directory written").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gz") {
                use std::io::Read;
                let mut text = String::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
                    .read_to_string(&mut text)
                    .unwrap();
                lines += text.lines().count();
            }
        }
    }
    assert_eq!(lines, 20, "every acknowledged event is in a trace file");
}
