//! Integrity and retention on real parts: operator processes write signed digest
//! chains into the real S3 server, `kubetrail verify` proves the trail whole,
//! each kind of tampering is found, the lease holder's continuous check turns
//! `IntegrityVerified` False and True again, and retention deletes expired days
//! and nothing else.

use crate::Harness;
use crate::ingest::{batch, destination, tracker};
use crate::support::{self, Operator, eventually, http};
use aws_sdk_s3::primitives::ByteStream;
use kube::api::Api;
use kubetrail::api::{Tracker, condition};
use kubetrail::integrity::digest::{self, Signer};
use serde_json::{Value, json};
use std::time::Duration;

fn op_args(addr: &str, spool: &std::path::Path) -> Vec<String> {
    vec![
        "--insecure-http".into(),
        "--webhook-addr".into(),
        addr.into(),
        "--spool-dir".into(),
        spool.display().to_string(),
    ]
}

async fn post(addr: &str, tag: &str, ns: &str) {
    let (code, body) = http(addr, "POST", "/audit", &batch(tag, 5, ns))
        .await
        .expect("webhook answers");
    assert_eq!(code, 200, "{body}");
}

/// Runs `kubetrail verify --tracker` as an auditor would; returns the exit
/// status and the JSON report.
async fn verify(h: &Harness, name: &str) -> (bool, Value) {
    let env = support::env();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["verify", "--tracker", name, "--operator-namespace", &h.namespace])
        .args([
            "--cluster",
            "e2e",
            "--since",
            "2h",
            "-o",
            "json",
            "--clock-skew-seconds",
            "1",
        ])
        .env("KUBECONFIG", env.cp.admin_kubeconfig())
        .output()
        .await
        .expect("running kubetrail verify");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify -o json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

fn states<'a>(report: &'a Value, what: &str) -> Vec<(&'a str, &'a str)> {
    report[what]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["key"].as_str().unwrap(), x["state"].as_str().unwrap()))
        .collect()
}

fn problems(report: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for what in ["digests", "files"] {
        for (k, s) in states(report, what) {
            if s != "valid" && s != "pending" {
                out.push((s.to_string(), k.to_string()));
            }
        }
    }
    out
}

async fn put(bucket: &str, key: &str, body: Vec<u8>) {
    support::env()
        .s3
        .client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .expect("put");
}

async fn get(bucket: &str, key: &str) -> Vec<u8> {
    support::env()
        .s3
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

async fn delete(bucket: &str, key: &str) {
    support::env()
        .s3
        .client()
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("delete");
}

async fn keys(bucket: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = support::env()
        .s3
        .all_objects(bucket, prefix)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    v.sort();
    v
}

async fn sleep_past_next_minute() {
    let now = jiff::Timestamp::now().as_millisecond();
    let next = (now / 60_000 + 1) * 60_000;
    tokio::time::sleep(Duration::from_millis((next - now + 1_500) as u64)).await;
}

/// Two writers across several one-minute periods (one of them idle for one
/// writer), a restart that keeps the spool, a restart that loses it: `verify`
/// finds every digest and file valid. Then each kind of tampering is found by
/// `verify`, and the continuous check reports a modified file and recovers.
#[tokio::test]
async fn digest_chains_verify_and_every_tampering_is_found() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("integrity").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-trail", h.namespace);
    tracker(
        &h,
        &name,
        json!({
            "destination": destination(&bucket, "p", &env.s3.endpoint),
            "delivery": {"maxBatchAge": "1s"},
            "integrity": {"digestPeriod": "1m", "verifyInterval": "10s"},
        }),
    )
    .await;
    let (spool1, spool2, spool2b) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (a1, a2) = (
        format!("127.0.0.1:{}", support::free_port()),
        format!("127.0.0.1:{}", support::free_port()),
    );
    let w1 = Operator::start(&h.namespace, &h.label, "w1", &op_args(&a1, spool1.path())).await;
    let w2 = Operator::start(&h.namespace, &h.label, "w2", &op_args(&a2, spool2.path())).await;
    post(&a1, "w1-a", &h.namespace).await;
    post(&a2, "w2-a", &h.namespace).await;
    sleep_past_next_minute().await;
    // w2 idle for this period: its digest of it is empty.
    post(&a1, "w1-b", &h.namespace).await;
    sleep_past_next_minute().await;
    // Restart w1 on the same spool; restart w2 on an empty one (its chain is
    // read back from the bucket).
    assert!(w1.stop().await.success());
    assert!(w2.stop().await.success());
    let w1 = Operator::start(&h.namespace, &h.label, "w1", &op_args(&a1, spool1.path())).await;
    let w2 = Operator::start(&h.namespace, &h.label, "w2", &op_args(&a2, spool2b.path())).await;
    post(&a1, "w1-c", &h.namespace).await;
    post(&a2, "w2-c", &h.namespace).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w1.stop().await.success());
    assert!(w2.stop().await.success());

    let digests = keys(&bucket, "p/KubeTrail-Digest/").await;
    let files = keys(&bucket, "p/KubeTrail/").await;
    assert!(files.len() >= 5, "one file per batch at least: {files:?}");
    let w2_digests: Vec<&String> = digests
        .iter()
        .filter(|k| k.ends_with("_w2_digest.json"))
        .collect();
    assert!(
        w2_digests.len() >= 3,
        "w2: digests of every period, idle ones too: {w2_digests:?}"
    );
    let empty = {
        let mut n = 0;
        for k in &w2_digests {
            let d = digest::decode(&get(&bucket, k).await).unwrap();
            if d.digest.files.is_empty() {
                n += 1;
            }
        }
        n
    };
    assert!(empty >= 1, "w2's idle period has an empty digest");

    let (ok, report) = verify(&h, &name).await;
    assert!(ok, "a clean trail verifies: {report:#}");
    let line = report["summaryLine"].as_str().unwrap().to_string();
    let n_digests = digests.len();
    assert!(
        line.starts_with(&format!(
            "{n_digests}/{n_digests} digests valid, {}/{} files valid",
            files.len(),
            files.len()
        )),
        "{line}"
    );

    // The continuous check agrees.
    let trackers: Api<Tracker> = Api::all(h.client.clone());
    let cond = |want: &'static str, reason: &'static str| {
        let trackers = trackers.clone();
        let name = name.clone();
        async move {
            let t = trackers.get(&name).await.ok()?;
            let c = condition(&t.status?.conditions, "IntegrityVerified")?.clone();
            (c.status == want && c.reason == reason).then_some(c)
        }
    };
    eventually(Duration::from_secs(60), "IntegrityVerified True", || {
        cond("True", "Verified")
    })
    .await;

    // 1. One byte of a trace file changed.
    let victim = files
        .iter()
        .find(|k| k.contains("_w1_"))
        .expect("a file of w1")
        .clone();
    let original = get(&bucket, &victim).await;
    let mut changed = original.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    put(&bucket, &victim, changed).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    assert_eq!(problems(&report), vec![("modified".into(), victim.clone())]);
    let c = eventually(
        Duration::from_secs(60),
        "IntegrityVerified False FileModified",
        || cond("False", "FileModified"),
    )
    .await;
    assert!(c.message.contains(&victim), "{}", c.message);
    put(&bucket, &victim, original.clone()).await;
    eventually(Duration::from_secs(60), "IntegrityVerified True again", || {
        cond("True", "Verified")
    })
    .await;

    // 2. A trace file deleted.
    delete(&bucket, &victim).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    assert_eq!(problems(&report), vec![("deleted".into(), victim.clone())]);
    put(&bucket, &victim, original.clone()).await;

    // 3. A forged file added, dated before the writer's last digest: once the
    //    writer has signed a later digest, no digest lists it.
    let forged = victim.replace("-00000.jsonl.gz", "-99999.jsonl.gz");
    assert_ne!(forged, victim);
    put(&bucket, &forged, original.clone()).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let w1 = Operator::start(&h.namespace, &h.label, "w1", &op_args(&a1, spool1.path())).await;
    assert!(w1.stop().await.success());
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    assert_eq!(problems(&report), vec![("added".into(), forged.clone())]);
    delete(&bucket, &forged).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(ok, "{report:#}");

    // 4. A digest edited.
    let digests = keys(&bucket, "p/KubeTrail-Digest/").await;
    let w1_digests: Vec<String> = digests
        .iter()
        .filter(|k| k.ends_with("_w1_digest.json"))
        .cloned()
        .collect();
    let middle = w1_digests[w1_digests.len() / 2].clone();
    let original_digest = get(&bucket, &middle).await;
    let edited =
        String::from_utf8(original_digest.clone())
            .unwrap()
            .replacen("\"version\":1", "\"version\":2", 1);
    put(&bucket, &middle, edited.into_bytes()).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    assert!(
        problems(&report).contains(&("invalidSignature".into(), middle.clone())),
        "{:?}",
        problems(&report)
    );

    // 5. A digest deleted: missing, and the chain is broken after it.
    delete(&bucket, &middle).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    let p = problems(&report);
    assert!(p.contains(&("missing".into(), middle.clone())), "{p:?}");
    assert!(p.iter().any(|(s, _)| s == "chainBroken"), "{p:?}");

    // 6. The digest re-signed with another key (its content unchanged, its
    //    fingerprint claiming the real key, or naming the other key).
    let attacker = Signer::from_bytes(&[9u8; 32]).unwrap();
    let mut content = digest::decode(&original_digest).unwrap().digest;
    let (forged_digest, _) = attacker.sign(&content, &middle).unwrap();
    put(&bucket, &middle, forged_digest).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    assert!(problems(&report).contains(&("invalidSignature".into(), middle.clone())));
    content.key_fingerprint = attacker.fingerprint().to_string();
    let (forged_digest, _) = attacker.sign(&content, &middle).unwrap();
    put(&bucket, &middle, forged_digest).await;

    // 7. ... and its public key planted in the bucket: verify takes its keys
    //    from the Tracker's status, never from the bucket.
    let dir = middle.rsplit_once('/').unwrap().0;
    put(
        &bucket,
        &format!("{dir}/public-key.pem"),
        attacker.public_key_pem().into_bytes(),
    )
    .await;
    put(
        &bucket,
        "p/public-key.pem",
        attacker.public_key_pem().into_bytes(),
    )
    .await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    let d = report["digests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == middle.as_str())
        .unwrap();
    assert_eq!(d["state"], "invalidSignature");
    assert!(d["reason"].as_str().unwrap().contains("unknown key"), "{d}");

    // Restored: valid again.
    put(&bucket, &middle, original_digest).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(ok, "{report:#}");
}

/// Retention in operator mode (the test S3 server has no lifecycle rules):
/// whole expired days of the tracker's files and digests are deleted; newer
/// days, other trackers' folders and other prefixes are untouched; the status
/// says how and from which day.
#[tokio::test]
async fn retention_deletes_expired_days_of_the_tracker_and_nothing_else() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("retention").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-ret", h.namespace);
    let day = |back: i64| {
        let t = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * back);
        t.strftime("%Y/%m/%d").to_string()
    };
    let old = day(10);
    let kept = day(2);
    let planted = [
        (
            format!("p/KubeTrail/e2e/{old}/{name}/e2e_{name}_x_w_0.jsonl.gz"),
            false,
        ),
        (
            format!("p/KubeTrail-Digest/e2e/{old}/{name}/e2e_{name}_x_w_digest.json"),
            false,
        ),
        (
            format!("p/KubeTrail/e2e/{kept}/{name}/e2e_{name}_y_w_0.jsonl.gz"),
            true,
        ),
        (
            format!("p/KubeTrail/e2e/{old}/other/e2e_other_x_w_0.jsonl.gz"),
            true,
        ),
        (
            format!("q/KubeTrail/e2e/{old}/{name}/e2e_{name}_x_w_0.jsonl.gz"),
            true,
        ),
        (format!("p/KubeTrail/other-cluster/{old}/{name}/x.jsonl.gz"), true),
    ];
    for (k, _) in &planted {
        put(&bucket, k, b"x".to_vec()).await;
    }
    tracker(
        &h,
        &name,
        json!({
            "destination": {
                "bucket": bucket, "prefix": "p", "endpoint": env.s3.endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}, "retentionDays": 3,
            },
            "integrity": {"digests": false},
        }),
    )
    .await;
    let trackers: Api<Tracker> = Api::all(h.client.clone());
    let status = eventually(Duration::from_secs(60), "retention status", || async {
        trackers.get(&name).await.ok()?.status?.retention
    })
    .await;
    assert_eq!(status.mode, "operator");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("lifecycle"),
        "says why not a lifecycle rule: {status:?}"
    );
    let expected_oldest = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72))
        .strftime("%Y-%m-%d")
        .to_string();
    assert_eq!(status.oldest_day_kept, expected_oldest);
    let left = keys(&bucket, "").await;
    for (k, keep) in &planted {
        assert_eq!(left.contains(k), *keep, "{k}: kept {keep}; left {left:?}");
    }
}
