//! Integrity and retention on real parts: operator processes write signed digest
//! chains into the real S3 server, `kubetrail verify` proves the trail whole,
//! each kind of tampering is found (each by its own test, on a copy of one
//! pristine trail), keys rotate, the continuous check turns `IntegrityVerified`
//! False and True again, and retention deletes expired days and nothing else.

use crate::Harness;
use crate::ingest::{batch, destination, tracker};
use crate::support::{self, Operator, eventually, http};
use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubetrail::api::{ConditionType, Tracker, condition};
use kubetrail::integrity::digest::{self, Signer};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::OnceCell;

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

/// `kubetrail verify --bucket` with the given trusted keys, as an auditor
/// outside the cluster would run it; returns the exit status and the report.
async fn verify_bucket(bucket: &str, tracker: &str, public_keys: &[String]) -> (bool, Value) {
    let env = support::env();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"));
    cmd.args(["verify", "--bucket", bucket, "--tracker-name", tracker])
        .args([
            "--prefix",
            "p",
            "--endpoint",
            &env.s3.endpoint,
            "--force-path-style",
        ])
        .args(["--cluster", "e2e", "--since", "2h", "-o", "json"])
        .args(["--clock-skew-seconds", "1"])
        .env("AWS_ACCESS_KEY_ID", support::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::s3::SECRET_KEY);
    for k in public_keys {
        cmd.args(["--public-key", k]);
    }
    let out = cmd.output().await.expect("running kubetrail verify");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify -o json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

/// A trail written by two operator processes (the fixture every tampering
/// test copies; it is never changed itself).
struct Trail {
    bucket: String,
    tracker: String,
    /// Public keys from the Tracker's status (base64).
    keys: Vec<String>,
    files: Vec<String>,
    digests: Vec<String>,
    /// The Lease holders seen, in order: a leader change happened.
    leaders: Vec<String>,
}

static TRAIL: OnceCell<Trail> = OnceCell::const_new();

async fn pristine_trail() -> &'static Trail {
    TRAIL.get_or_init(write_trail).await
}

/// Two writers with their own lease election across several one-minute
/// periods: one writer idle for a period, the lease holder killed (SIGKILL,
/// no closing digest) so the other takes over and the killed one resumes its
/// chain from its spool, the other stopped and restarted on an empty spool
/// (its chain read back from the bucket).
async fn write_trail() -> Trail {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("integrity").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    // Its own label: only the lease holder among the two writers reconciles.
    let label = support::unique("integ");
    let name = format!("{}-trail", h.namespace);
    let trackers: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "Tracker",
        "metadata": {"name": name, "labels": {"kubetrail.io/test": label}},
        "spec": {
            "destination": destination(&bucket, "p", &env.s3.endpoint),
            "delivery": {"maxBatchAge": "1s"},
            "integrity": {"digestPeriod": "1m", "verifyInterval": "10s"},
        },
    }))
    .unwrap();
    trackers.create(&PostParams::default(), &obj).await.unwrap();
    let spools: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addr = |_| format!("127.0.0.1:{}", support::free_port());
    let (a1, a2): (String, String) = (addr(1), addr(2));
    let args = |a: &str, spool: &std::path::Path| {
        let mut v = op_args(a, spool);
        v.extend(["--lease-seconds".to_string(), "3".into()]);
        v
    };
    let start = |who: &'static str, spool: usize| {
        let a = if who == "w1" { a1.clone() } else { a2.clone() };
        let args = args(&a, spools[spool].path());
        let (ns, label) = (h.namespace.clone(), label.clone());
        async move { Operator::start(&ns, &label, who, &args).await }
    };
    let mut w1 = Some(start("w1", 0).await);
    let mut w2 = Some(start("w2", 1).await);
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), &h.namespace);
    let holder = || async {
        leases
            .get_opt("kubetrail-leader")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    let first = eventually(Duration::from_secs(30), "a lease holder", holder).await;
    post(&a1, "w1-a", &h.namespace).await;
    post(&a2, "w2-a", &h.namespace).await;
    sleep_past_next_minute().await;
    // w2 idle for this period: its digest of it is empty. The lease holder
    // dies mid-period; the other takes over.
    post(&a1, "w1-b", &h.namespace).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = if first == "w1" { w1.take() } else { w2.take() };
    killed.unwrap().kill().await;
    let second = eventually(Duration::from_secs(30), "the other writer leads", || async {
        holder().await.filter(|h| *h != first)
    })
    .await;
    if first == "w1" {
        w1 = Some(start("w1", 0).await);
    } else {
        w2 = Some(start("w2", 1).await);
    }
    sleep_past_next_minute().await;
    // w2 restarts on an empty spool: its chain is read back from the bucket.
    assert!(w2.take().unwrap().stop().await.success());
    let w2 = start("w2", 2).await;
    post(&a1, "w1-c", &h.namespace).await;
    post(&a2, "w2-c", &h.namespace).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w1.take().unwrap().stop().await.success());
    assert!(w2.stop().await.success());

    let keys_published: Vec<String> = trackers
        .get(&name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.integrity)
        .map(|i| i.public_keys.into_iter().map(|k| k.public_key).collect())
        .unwrap_or_default();
    Trail {
        digests: keys(&bucket, "p/KubeTrail-Digest/").await,
        files: keys(&bucket, "p/KubeTrail/").await,
        bucket,
        tracker: name,
        keys: keys_published,
        leaders: vec![first, second],
    }
}

/// A new bucket holding a byte-for-byte copy of the pristine trail.
async fn copy_of_trail() -> (&'static Trail, String) {
    let t = pristine_trail().await;
    let env = support::env();
    let bucket = env.s3.bucket("tampered").await;
    for k in t.digests.iter().chain(&t.files) {
        put(&bucket, k, get(&t.bucket, k).await).await;
    }
    (t, bucket)
}

fn digests_of<'a>(t: &'a Trail, writer: &str) -> Vec<&'a String> {
    t.digests
        .iter()
        .filter(|k| k.ends_with(&format!("_{writer}_digest.json")))
        .collect()
}

/// A file of w1 from the first period: later digests of w1 exist.
fn victim(t: &Trail) -> String {
    t.files
        .iter()
        .find(|k| k.contains("_w1_"))
        .expect("a file of w1")
        .clone()
}

/// A digest of w1 in the middle of its chain.
fn middle_digest(t: &Trail) -> String {
    let d = digests_of(t, "w1");
    d[d.len() / 2].clone()
}

#[tokio::test]
async fn a_clean_trail_across_restarts_and_a_leader_change_verifies() {
    let t = pristine_trail().await;
    assert_ne!(t.leaders[0], t.leaders[1], "the lease moved to the other writer");
    assert_eq!(t.keys.len(), 1, "one published key: {:?}", t.keys);
    assert!(t.files.len() >= 5, "one file per batch at least: {:?}", t.files);
    let w2 = digests_of(t, "w2");
    assert!(
        w2.len() >= 3,
        "w2: digests of every period, idle ones too: {w2:?}"
    );
    let mut empty = 0;
    for k in &w2 {
        if digest::decode(&get(&t.bucket, k).await)
            .unwrap()
            .digest
            .files
            .is_empty()
        {
            empty += 1;
        }
    }
    assert!(empty >= 1, "w2's idle period has an empty digest");
    let (ok, report) = verify_bucket(&t.bucket, &t.tracker, &t.keys).await;
    assert!(ok, "a clean trail verifies: {report:#}");
    let (n, f) = (t.digests.len(), t.files.len());
    let line = report["summaryLine"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("{n}/{n} digests valid, {f}/{f} files valid")),
        "{line}"
    );
    // Without the right key nothing is trusted.
    let other = Signer::from_bytes(&[7u8; 32]).unwrap().public_key_b64();
    let (ok, report) = verify_bucket(&t.bucket, &t.tracker, &[other]).await;
    assert!(!ok);
    assert!(
        states(&report, "digests")
            .iter()
            .all(|(_, s)| *s == "invalidSignature"),
        "{report:#}"
    );
}

#[tokio::test]
async fn tampering_one_byte_of_a_trace_file_is_found() {
    let (t, bucket) = copy_of_trail().await;
    let victim = victim(t);
    let mut changed = get(&bucket, &victim).await;
    let last = changed.len() - 1;
    changed[last] ^= 1;
    put(&bucket, &victim, changed).await;
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    assert_eq!(problems(&report), vec![("modified".into(), victim)]);
}

#[tokio::test]
async fn tampering_a_deleted_trace_file_is_found() {
    let (t, bucket) = copy_of_trail().await;
    let victim = victim(t);
    delete(&bucket, &victim).await;
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    assert_eq!(problems(&report), vec![("deleted".into(), victim)]);
}

/// A file no digest lists counts as added once its writer has signed a digest
/// of a later period (until then it is pending: it may be on its way into
/// the open period). A copy cannot show that, so this test has a live writer.
#[tokio::test]
async fn tampering_a_forged_trace_file_added_is_found() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("forged").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-forged", h.namespace);
    tracker(
        &h,
        &name,
        json!({
            "destination": destination(&bucket, "p", &env.s3.endpoint),
            "delivery": {"maxBatchAge": "1s"},
            "integrity": {"digestPeriod": "1m"},
        }),
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    let a1 = format!("127.0.0.1:{}", support::free_port());
    let w1 = Operator::start(&h.namespace, &h.label, "w1", &op_args(&a1, spool.path())).await;
    post(&a1, "forged-a", &h.namespace).await;
    let victim = eventually(Duration::from_secs(30), "a trace file", || async {
        keys(&bucket, "p/KubeTrail/").await.into_iter().next()
    })
    .await;
    let forged = victim.replace("-00000.jsonl.gz", "-99999.jsonl.gz");
    assert_ne!(forged, victim);
    put(&bucket, &forged, get(&bucket, &victim).await).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Stopping closes the period with a digest signed after the forgery.
    assert!(w1.stop().await.success());
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok);
    assert_eq!(problems(&report), vec![("added".into(), forged.clone())]);
    delete(&bucket, &forged).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(ok, "{report:#}");
}

#[tokio::test]
async fn tampering_an_edited_digest_is_found() {
    let (t, bucket) = copy_of_trail().await;
    let middle = middle_digest(t);
    let edited =
        String::from_utf8(get(&bucket, &middle).await)
            .unwrap()
            .replacen("\"version\":1", "\"version\":2", 1);
    put(&bucket, &middle, edited.into_bytes()).await;
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    let p = problems(&report);
    assert!(p.contains(&("invalidSignature".into(), middle)), "{p:?}");
}

#[tokio::test]
async fn tampering_a_deleted_digest_breaks_the_chain() {
    let (t, bucket) = copy_of_trail().await;
    let middle = middle_digest(t);
    delete(&bucket, &middle).await;
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    let p = problems(&report);
    assert!(p.contains(&("missing".into(), middle)), "{p:?}");
    assert!(p.iter().any(|(s, _)| s == "chainBroken"), "{p:?}");
}

#[tokio::test]
async fn tampering_a_digest_resigned_with_another_key_is_found() {
    let (t, bucket) = copy_of_trail().await;
    let middle = middle_digest(t);
    let attacker = Signer::from_bytes(&[9u8; 32]).unwrap();
    let mut content = digest::decode(&get(&bucket, &middle).await).unwrap().digest;
    // Content unchanged, fingerprint claiming the real key.
    let (forged, _) = attacker.sign(&content, &middle).unwrap();
    put(&bucket, &middle, forged).await;
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    assert!(problems(&report).contains(&("invalidSignature".into(), middle.clone())));
    // ... or naming the attacker's key.
    content.key_fingerprint = attacker.fingerprint().to_string();
    let (forged, _) = attacker.sign(&content, &middle).unwrap();
    put(&bucket, &middle, forged).await;
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    assert!(problems(&report).contains(&("invalidSignature".into(), middle)));
}

#[tokio::test]
async fn tampering_a_public_key_planted_in_the_bucket_is_not_trusted() {
    let (t, bucket) = copy_of_trail().await;
    let middle = middle_digest(t);
    let attacker = Signer::from_bytes(&[9u8; 32]).unwrap();
    let mut content = digest::decode(&get(&bucket, &middle).await).unwrap().digest;
    content.key_fingerprint = attacker.fingerprint().to_string();
    let (forged, _) = attacker.sign(&content, &middle).unwrap();
    put(&bucket, &middle, forged).await;
    let dir = middle.rsplit_once('/').unwrap().0;
    for k in [format!("{dir}/public-key.pem"), "p/public-key.pem".to_string()] {
        put(&bucket, &k, attacker.public_key_pem().into_bytes()).await;
    }
    // verify takes its keys from the Tracker's status (or the auditor's
    // --public-key), never from the bucket.
    let (ok, report) = verify_bucket(&bucket, &t.tracker, &t.keys).await;
    assert!(!ok);
    let d = report["digests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == middle.as_str())
        .unwrap();
    assert_eq!(d["state"], "invalidSignature");
    assert!(d["reason"].as_str().unwrap().contains("unknown key"), "{d}");
}

async fn set_signing_key(h: &Harness, name: &str, pem: &str) {
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.namespace);
    let s = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {digest::SECRET_KEY: pem},
    });
    secrets
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&s))
        .await
        .expect("signing key Secret");
}

/// The signing key is rotated in its Secret: later digests are signed with
/// the new key, the status keeps both public keys, and `verify --tracker`
/// accepts the whole chain. The lease holder's continuous check then turns
/// `IntegrityVerified` False (FileModified) when a file is changed, and True
/// again once it is restored.
#[tokio::test]
async fn keys_rotate_and_the_continuous_check_notices_a_modified_file() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("rotation").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let (key_a, key_b) = (Signer::generate_pem().unwrap(), Signer::generate_pem().unwrap());
    let fp = |pem: &str| {
        Signer::from_bytes(pem.as_bytes())
            .unwrap()
            .fingerprint()
            .to_string()
    };
    let (fp_a, fp_b) = (fp(&key_a), fp(&key_b));
    set_signing_key(&h, "signing", &key_a).await;
    let name = format!("{}-rot", h.namespace);
    tracker(
        &h,
        &name,
        json!({
            "destination": destination(&bucket, "p", &env.s3.endpoint),
            "delivery": {"maxBatchAge": "1s"},
            "integrity": {"digestPeriod": "1m", "verifyInterval": "10s",
                          "signingKeySecretRef": {"name": "signing"}},
        }),
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    let a1 = format!("127.0.0.1:{}", support::free_port());
    let w1 = Operator::start(&h.namespace, &h.label, "w1", &op_args(&a1, spool.path())).await;
    post(&a1, "rot-a", &h.namespace).await;
    sleep_past_next_minute().await;
    set_signing_key(&h, "signing", &key_b).await;
    post(&a1, "rot-b", &h.namespace).await;
    let fingerprints = || async {
        let mut out = Vec::new();
        for k in keys(&bucket, "p/KubeTrail-Digest/").await {
            out.push(
                digest::decode(&get(&bucket, &k).await)
                    .unwrap()
                    .digest
                    .key_fingerprint,
            );
        }
        out
    };
    eventually(
        Duration::from_secs(180),
        "a digest signed with the new key",
        || async { fingerprints().await.contains(&fp_b).then_some(()) },
    )
    .await;
    assert!(w1.stop().await.success());
    let used = fingerprints().await;
    assert!(used.contains(&fp_a), "earlier digests keep the old key: {used:?}");

    let trackers: Api<Tracker> = Api::all(h.client.clone());
    let published = eventually(Duration::from_secs(60), "both keys published", || async {
        let keys = trackers.get(&name).await.ok()?.status?.integrity?.public_keys;
        let fps: Vec<String> = keys.iter().map(|k| k.fingerprint.clone()).collect();
        (fps.contains(&fp_a) && fps.contains(&fp_b)).then_some(keys)
    })
    .await;
    let since = |fp: &str| published.iter().find(|k| k.fingerprint == fp).unwrap().since.0;
    assert!(since(&fp_b) >= since(&fp_a), "{published:?}");
    let (ok, report) = verify(&h, &name).await;
    assert!(ok, "a chain across a key rotation verifies: {report:#}");

    let cond = |want: &'static str, reason: &'static str| {
        let trackers = trackers.clone();
        let name = name.clone();
        async move {
            let t = trackers.get(&name).await.ok()?;
            let c = condition(&t.status?.conditions, ConditionType::IntegrityVerified)?.clone();
            (c.status == want && c.reason == reason).then_some(c)
        }
    };
    eventually(Duration::from_secs(60), "IntegrityVerified True", || {
        cond("True", "Verified")
    })
    .await;
    let victim = keys(&bucket, "p/KubeTrail/").await[0].clone();
    let original = get(&bucket, &victim).await;
    let mut changed = original.clone();
    changed[0] ^= 1;
    put(&bucket, &victim, changed).await;
    let c = eventually(
        Duration::from_secs(60),
        "IntegrityVerified False FileModified",
        || cond("False", "FileModified"),
    )
    .await;
    assert!(c.message.contains(&victim), "{}", c.message);
    put(&bucket, &victim, original).await;
    eventually(Duration::from_secs(60), "IntegrityVerified True again", || {
        cond("True", "Verified")
    })
    .await;

    // The head of w1 is published outside the bucket, and the rotated-away key
    // has a closed window.
    let status = trackers.get(&name).await.unwrap().status.unwrap();
    let newest = keys(&bucket, "p/KubeTrail-Digest/").await.pop().unwrap();
    let head = status
        .chain_heads
        .iter()
        .find(|h| h.writer == "w1")
        .expect("w1's chain head");
    assert_eq!(head.key, newest, "{:?}", status.chain_heads);
    let until_a = status
        .integrity
        .unwrap()
        .public_keys
        .iter()
        .find(|k| k.fingerprint == fp_a)
        .and_then(|k| k.until.clone())
        .expect("the old key's window closed")
        .0
        .as_millisecond();
    // A leaked old key signs a later period: outside its window.
    let wait = until_a + digest::KEY_UNTIL_SLACK_MS + 15_000 - jiff::Timestamp::now().as_millisecond();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let start = jiff::Timestamp::now().as_millisecond() - 11_000;
    let forged = digest::Digest {
        version: digest::VERSION,
        cluster: "e2e".into(),
        tracker: name.clone(),
        writer: "w1".into(),
        period_start: digest::rfc3339(start),
        period_end: digest::rfc3339(start + 10_000),
        key_fingerprint: fp_a.clone(),
        previous: None,
        files: Vec::new(),
    };
    let forged_key = digest::digest_key("p", "e2e", &name, "w1", start);
    let (body, _) = Signer::from_bytes(key_a.as_bytes())
        .unwrap()
        .sign(&forged, &forged_key)
        .unwrap();
    put(&bucket, &forged_key, body).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok, "{report:#}");
    let d = report["digests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == forged_key.as_str())
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(d["state"], "invalidSignature", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("validity window"), "{d}");
    delete(&bucket, &forged_key).await;
    // The newest digest deleted: the chain no longer reaches its head.
    delete(&bucket, &newest).await;
    let (ok, report) = verify(&h, &name).await;
    assert!(!ok, "{report:#}");
    assert!(
        states(&report, "digests").contains(&(newest.as_str(), "truncated")),
        "{report:#}"
    );
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
