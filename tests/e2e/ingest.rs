//! Audit events become trace files: the real apiserver's audit webhook, the
//! operator binary, the real S3 server.

use crate::Harness;
use crate::support::audit::tagged_batch;
use crate::support::{self, Operator, eventually, http};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubetrail::api::Tracker;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// Creates a Tracker with the harness label.
pub(crate) async fn tracker(h: &Harness, name: &str, spec: Value) {
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(h.tracker(name, spec)).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating tracker");
}

pub(crate) fn destination(bucket: &str, prefix: &str, endpoint: &str) -> Value {
    json!({
        "bucket": bucket, "prefix": prefix, "endpoint": endpoint,
        "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"},
    })
}

/// Every trace line under `prefix`, parsed, with the key of its object.
pub(crate) async fn traces(s3: &support::S3Server, bucket: &str, prefix: &str) -> Vec<(String, Value)> {
    s3.objects(bucket, prefix)
        .await
        .into_iter()
        .flat_map(|(key, text)| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .map(|v| (key.clone(), v))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A request through the apiserver, returning its status and `Audit-Id` header.
async fn call(client: &kube::Client, method: &str, path: &str, ctype: &str, body: Value) -> (u16, String) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype)
        .body(body)
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("request sent");
    let audit = resp
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.status().as_u16(), audit)
}

fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The end-to-end path: kubectl-style calls → apiserver audit webhook (HTTPS,
/// client certificate) → operator → spool → two trackers → bucket.
#[tokio::test]
async fn apiserver_audit_events_become_trace_files() {
    let env = support::env();
    let _audit = support::AUDIT_WEBHOOK.lock().await;
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("e2e").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{ns}-all"),
        json!({
            "destination": destination(&bucket, "all", &env.s3.endpoint),
            "filter": {"include": [{"namespaces": [ns]}]},
            "delivery": {"maxBatchAge": "1s"},
        }),
    )
    .await;
    // Token reviews are cluster-scoped: a tracker of their own.
    tracker(
        &h,
        &format!("{ns}-reviews"),
        json!({
            "destination": destination(&bucket, "reviews", &env.s3.endpoint),
            "filter": {"include": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"]}]},
            "delivery": {"maxBatchAge": "1s"},
        }),
    )
    .await;
    tracker(
        &h,
        &format!("{ns}-writes"),
        json!({
            "destination": destination(&bucket, "writes/secrets", &env.s3.endpoint),
            "filter": {"include": [{"namespaces": [ns], "resources": ["secrets"]}], "readOnly": "exclude"},
            "delivery": {"maxBatchAge": "1s", "compression": "zstd"},
        }),
    )
    .await;

    // The operator's webhook on the URL the test apiserver sends its audit batches to.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cert = write("tls.crt", &env.cp.webhook_serving.cert_pem);
    let key = write("tls.key", &env.cp.webhook_serving.key_pem);
    let ca = write("ca.crt", &env.cp.ca_pem);
    let addr = env
        .cp
        .audit_webhook_url
        .trim_start_matches("https://")
        .trim_end_matches("/audit")
        .to_string();
    let spool = dir.path().join("spool").display().to_string();
    let _op = Operator::start(
        &ns,
        &h.label,
        "e2e-0",
        &[
            "--webhook-addr".into(),
            addr,
            "--tls-cert-file".into(),
            cert,
            "--tls-key-file".into(),
            key,
            "--client-ca-file".into(),
            ca,
            "--spool-dir".into(),
            spool,
        ],
    )
    .await;

    // Activity: ConfigMaps and Secrets by the admin, and a request RBAC denies.
    let admin = &h.client;
    let secret_value = "sup3r-s3cret-value";
    let patched_value = "an0ther-s3cret";
    let cm = format!("/api/v1/namespaces/{ns}/configmaps");
    let sec = format!("/api/v1/namespaces/{ns}/secrets");
    let json_ct = "application/json";
    let merge = "application/merge-patch+json";
    let mut expected: Vec<(String, &str, &str, &str)> = Vec::new(); // (audit id, trace name, rating, user)
    let mut op =
        |(code, id): (u16, String), ok: u16, name: &'static str, rating: &'static str, user: &'static str| {
            assert_eq!(code, ok, "{name}");
            assert!(!id.is_empty(), "Audit-Id header on {name}");
            expected.push((id, name, rating, user));
        };
    let admin_user = support::controlplane::ADMIN;
    op(
        call(
            admin,
            "POST",
            &cm,
            json_ct,
            json!({"metadata": {"name": "cm1"}, "data": {"a": "1"}}),
        )
        .await,
        201,
        "create configmaps",
        "normal",
        admin_user,
    );
    op(
        call(
            admin,
            "PATCH",
            &format!("{cm}/cm1"),
            merge,
            json!({"data": {"a": "2"}}),
        )
        .await,
        200,
        "patch configmaps",
        "normal",
        admin_user,
    );
    op(
        call(admin, "DELETE", &format!("{cm}/cm1"), json_ct, Value::Null).await,
        200,
        "delete configmaps",
        "normal",
        admin_user,
    );
    op(
        call(
            admin,
            "POST",
            &sec,
            json_ct,
            json!({"metadata": {"name": "db"}, "stringData": {"password": secret_value}}),
        )
        .await,
        201,
        "create secrets",
        "normal",
        admin_user,
    );
    op(
        call(
            admin,
            "PATCH",
            &format!("{sec}/db"),
            merge,
            json!({"data": {"token": base64(patched_value)}}),
        )
        .await,
        200,
        "patch secrets",
        "normal",
        admin_user,
    );
    op(
        call(admin, "GET", &format!("{sec}/db"), json_ct, Value::Null).await,
        200,
        "get secrets",
        "normal",
        admin_user,
    );
    op(
        call(admin, "DELETE", &format!("{sec}/db"), json_ct, Value::Null).await,
        200,
        "delete secrets",
        "normal",
        admin_user,
    );
    // A live service-account token, as the kubelet requests one for every pod.
    op(
        call(
            admin,
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            json_ct,
            json!({"metadata": {"name": "robot"}}),
        )
        .await,
        201,
        "create serviceaccounts",
        "normal",
        admin_user,
    );
    let token_req = http::Request::post(format!("/api/v1/namespaces/{ns}/serviceaccounts/robot/token"))
        .header("content-type", json_ct)
        .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})).unwrap())
        .unwrap();
    let issued: Value = admin.request(token_req).await.expect("token request");
    let live_token = issued["status"]["token"]
        .as_str()
        .expect("a token was issued")
        .to_string();
    // A TokenReview of that token: the token is in its request and response.
    let review_req = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
        .header("content-type", json_ct)
        .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": live_token}})).unwrap())
        .unwrap();
    let reviewed: Value = admin.request(review_req).await.expect("token review");
    assert_eq!(reviewed["status"]["authenticated"], true, "{reviewed}");
    let eve = env.cp.client_as("eve", &["intruders"]).await;
    op(
        call(&eve, "GET", &format!("{sec}/db"), json_ct, Value::Null).await,
        403,
        "get secrets",
        "warning",
        "eve",
    );

    // Tracker "all": every operation, by audit ID, with the right name, rating and user.
    let all = eventually(WAIT, "every operation in the all tracker's files", || async {
        let t = traces(&env.s3, &bucket, "all/").await;
        let ids: HashSet<&str> = t.iter().filter_map(|(_, v)| v["trace_id"].as_str()).collect();
        expected
            .iter()
            .all(|(id, ..)| ids.contains(id.as_str()))
            .then_some(t)
    })
    .await;
    let by_id: HashMap<&str, (&String, &Value)> = all
        .iter()
        .filter_map(|(k, v)| Some((v["trace_id"].as_str()?, (k, v))))
        .collect();
    for (id, name, rating, user) in &expected {
        let (key, t) = by_id[id.as_str()];
        assert_eq!(t["trace_name"], *name, "{t}");
        assert_eq!(t["trace_rating"], *rating, "{t}");
        assert_eq!(t["user"], *user, "{t}");
        assert_eq!(t["namespace"], ns.as_str());
        assert_eq!(t["cluster"], "e2e");
        assert_eq!(t["tracker"], format!("{ns}-all"));
        assert!(key.starts_with("all/KubeTrail/e2e/"), "{key}");
        assert!(
            key.contains(&format!("/{ns}-all/e2e_{ns}-all_")) && key.ends_with(".jsonl.gz"),
            "{key}"
        );
        assert!(key.contains("_e2e-0_"), "writer id in {key}");
    }
    let dups = all.len()
        - all
            .iter()
            .filter_map(|(_, v)| v["trace_id"].as_str())
            .collect::<HashSet<_>>()
            .len();
    assert_eq!(dups, 0, "no trace delivered twice");

    // Tracker "writes": exactly the Secret writes of the namespace.
    let writes = eventually(WAIT, "secret writes in the writes tracker", || async {
        let t = traces(&env.s3, &bucket, "writes/secrets/").await;
        let ids: HashSet<&str> = t.iter().filter_map(|(_, v)| v["trace_id"].as_str()).collect();
        let want = expected
            .iter()
            .filter(|(_, n, ..)| matches!(*n, "create secrets" | "patch secrets" | "delete secrets"));
        want.clone()
            .all(|(id, ..)| ids.contains(id.as_str()))
            .then_some(t)
    })
    .await;
    for (key, t) in &writes {
        assert_eq!(t["resource_type"], "secrets", "{t}");
        assert_eq!(t["read_only"], false, "{t}");
        assert!(key.ends_with(".jsonl.zst"), "{key}");
        assert!(!t["trace_name"].as_str().unwrap_or("").starts_with("get"), "{t}");
    }
    let write_ids: HashSet<&str> = writes
        .iter()
        .filter_map(|(_, v)| v["trace_id"].as_str())
        .collect();
    for (id, name, ..) in &expected {
        let is_secret_write = matches!(*name, "create secrets" | "patch secrets" | "delete secrets");
        assert_eq!(
            write_ids.contains(id.as_str()),
            is_secret_write,
            "{name} in writes tracker"
        );
    }

    // The token request is in the trail, its token is not.
    eventually(WAIT, "the token request in the all tracker's files", || async {
        traces(&env.s3, &bucket, "all/")
            .await
            .iter()
            .any(|(_, v)| {
                v["trace_name"] == "create serviceaccounts/token"
                    && v["response"]["status"]["token"] == "[redacted]"
            })
            .then_some(())
    })
    .await;
    eventually(
        WAIT,
        "the token review in the reviews tracker's files",
        || async {
            traces(&env.s3, &bucket, "reviews/")
                .await
                .iter()
                .any(|(_, v)| {
                    v["trace_name"] == "create tokenreviews"
                        && v["request"]["spec"]["token"] == "[redacted]"
                        && v["response"]["spec"]["token"] == "[redacted]"
                        && v["response"]["status"]["authenticated"] == true
                })
                .then_some(())
        },
    )
    .await;
    // No Secret value or token anywhere in the bucket, plain or base64.
    for (key, text) in env.s3.objects(&bucket, "").await {
        assert!(
            !text.contains(&live_token),
            "a live service-account token leaked into {key}"
        );
        for needle in [
            secret_value.to_string(),
            base64(secret_value),
            patched_value.to_string(),
            base64(patched_value),
        ] {
            assert!(!text.contains(&needle), "{needle} leaked into {key}");
        }
    }

    // The tracker reports its deliveries.
    let api: Api<Tracker> = Api::all(h.client.clone());
    let name = format!("{ns}-all");
    eventually(WAIT, "delivery status on the tracker", || async {
        let s = api.get(&name).await.ok()?.status?;
        let last = s.last_delivery?;
        (s.events_delivered > 0 && s.files_delivered > 0 && last.object_key.starts_with("all/")).then_some(())
    })
    .await;
}

/// A batch of `n` synthetic audit events with IDs `{tag}-{i}`.
pub(crate) fn batch(tag: &str, n: usize, namespace: &str) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "level": "RequestResponse", "auditID": format!("{tag}-{i}"), "stage": "ResponseComplete",
                "requestURI": format!("/api/v1/namespaces/{namespace}/configmaps/c{i}"), "verb": "update",
                "user": {"username": "loadgen", "groups": ["system:authenticated"]}, "sourceIPs": ["127.0.0.1"],
                "objectRef": {"resource": "configmaps", "namespace": namespace, "name": format!("c{i}"), "apiVersion": "v1"},
                "responseStatus": {"code": 200},
                "requestObject": {"kind": "ConfigMap", "data": {"k": "x".repeat(600)}},
                "requestReceivedTimestamp": jiff::Timestamp::now().to_string(),
                "stageTimestamp": jiff::Timestamp::now().to_string(),
            })
        })
        .collect();
    support::audit::event_list(items)
}

/// Sends batches from `senders` tasks until `stop`; returns the tags of acknowledged batches.
async fn load(
    addr: String,
    ns: String,
    prefix: &str,
    senders: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (addr, ns, mut stop, prefix) = (addr.clone(), ns.clone(), stop.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for b in 0.. {
                if *stop.borrow_and_update() {
                    break;
                }
                let tag = format!("{prefix}-{s}-{b}");
                match http(&addr, "POST", "/audit", &batch(&tag, 20, &ns)).await {
                    Some((200, _)) => acked.push(tag),
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

/// Checks every acknowledged batch's 20 events are in the bucket exactly once.
pub(crate) async fn assert_delivered_once(s3: &support::S3Server, bucket: &str, acked: &[String]) {
    let want: HashSet<String> = acked
        .iter()
        .flat_map(|t| (0..20).map(move |i| format!("{t}-{i}")))
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, v) in traces(s3, bucket, "").await {
            if let Some(id) = v["trace_id"].as_str() {
                *counts.entry(id.to_string()).or_default() += 1;
            }
        }
        let missing: Vec<&String> = want.iter().filter(|id| !counts.contains_key(*id)).collect();
        if missing.is_empty() {
            let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
            assert!(twice.is_empty(), "delivered more than once: {twice:?}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let mut sample: Vec<_> = missing.iter().take(10).collect();
            sample.sort();
            panic!(
                "{} of {} acknowledged events missing, e.g. {sample:?}; {} traces in the bucket",
                missing.len(),
                want.len(),
                counts.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("crash").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{}-crash", h.namespace),
        json!({
            "destination": destination(&bucket, "p", &env.s3.endpoint),
            "delivery": {"maxBatchAge": "1s", "maxBatchEvents": 50},
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let args = vec![
        "--insecure-http".to_string(),
        "--webhook-addr".into(),
        addr.clone(),
        "--spool-dir".into(),
        dir.path().join("spool").display().to_string(),
    ];
    let first = Operator::start(&h.namespace, &h.label, "w1", &args).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(load(addr.clone(), h.namespace.clone(), "k", 3, stop_rx));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _second = Operator::start(&h.namespace, &h.label, "w1", &args).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    let acked = sender.await.unwrap();
    assert!(
        acked.len() > 10,
        "the load generator got batches through: {}",
        acked.len()
    );
    assert_delivered_once(&env.s3, &bucket, &acked).await;
}

#[tokio::test]
async fn s3_outage_is_absorbed_by_the_spool() {
    let h = Harness::start().await;
    let s3dir = tempfile::tempdir().unwrap();
    let s3 = support::S3Server::start(s3dir.path()).expect("dedicated S3 server");
    let bucket = s3.bucket("outage").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-outage", h.namespace);
    tracker(
        &h,
        &name,
        json!({
            "destination": destination(&bucket, "p", &s3.endpoint),
            "delivery": {"maxBatchAge": "1s"},
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let args = vec![
        "--insecure-http".to_string(),
        "--webhook-addr".into(),
        addr.clone(),
        "--spool-dir".into(),
        spool_dir.display().to_string(),
    ];
    let op = Operator::start(&h.namespace, &h.label, "w1", &args).await;
    let api: Api<Tracker> = Api::all(h.client.clone());
    eventually(WAIT, "tracker ready", || async {
        let s = api.get(&name).await.ok()?.status?;
        (s.phase == Some(kubetrail::api::TrackerPhase::Enabled)).then_some(())
    })
    .await;

    s3.stop();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(load(addr.clone(), h.namespace.clone(), "o", 2, stop_rx));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    let acked = sender.await.unwrap();
    assert!(
        acked.len() > 10,
        "batches acknowledged while S3 was down: {}",
        acked.len()
    );
    // Delivery tries, fails, counts the failure, and keeps the data.
    eventually(WAIT, "a counted delivery failure", || async {
        let (_, metrics) = http(&op.admin, "GET", "/metrics", b"").await?;
        metrics
            .contains("kubetrail_delivery_errors_total{reason=\"DestinationUnreachable\"}")
            .then_some(())
    })
    .await;

    s3.restart().expect("restarting S3");
    assert_delivered_once(&s3, &bucket, &acked).await;
    // The spool drains: delivered segments are removed.
    eventually(WAIT, "spool drained to one segment", || async {
        let segs = std::fs::read_dir(&spool_dir)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .count();
        (segs == 1).then_some(())
    })
    .await;
    s3.stop();
}

/// Bad input over the real HTTPS listener: every refusal, and nothing written.
#[tokio::test]
async fn https_webhook_refuses_bad_input() {
    let env = support::env();
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cert = write("tls.crt", &env.cp.webhook_serving.cert_pem);
    let key = write("tls.key", &env.cp.webhook_serving.key_pem);
    let ca = write("ca.crt", &env.cp.ca_pem);
    let client = env.cp.client_pair("kube-apiserver-audit");
    let client_crt = write("client.crt", &client.cert_pem);
    let client_key = write("client.key", &client.key_pem);
    let tokens = write("tokens", "token-one\n");
    let port = support::free_port();
    let spool = dir.path().join("spool");
    let op = Operator::start(
        &h.namespace,
        &h.label,
        "w1",
        &[
            "--webhook-addr".into(),
            format!("127.0.0.1:{port}"),
            "--tls-cert-file".into(),
            cert,
            "--tls-key-file".into(),
            key,
            "--client-ca-file".into(),
            ca.clone(),
            "--token-file".into(),
            tokens,
            "--max-body-bytes".into(),
            "65536".into(),
            "--spool-dir".into(),
            spool.display().to_string(),
        ],
    )
    .await;
    let good = String::from_utf8(batch("https", 2, &h.namespace)).unwrap();
    let url = format!("https://localhost:{port}/audit");
    let curl = |extra: Vec<String>, body: String| {
        let url = url.clone();
        let ca = ca.clone();
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "-",
                    "-w",
                    "\n%{http_code}",
                    "--cacert",
                    &ca,
                    "-H",
                    "content-type: application/json",
                ])
                .args(extra)
                .args(["--data-binary", "@-", &url])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl");
            let mut child = out;
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(body.as_bytes()).await.unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
            (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
        }
    };
    let cert_args = vec![
        "--cert".to_string(),
        client_crt.clone(),
        "--key".into(),
        client_key.clone(),
    ];
    let token = vec!["-H".to_string(), "authorization: Bearer token-one".into()];
    let bad_token = vec!["-H".to_string(), "authorization: Bearer nope".into()];
    let cases = [
        (vec![], good.clone(), 401, "client certificate"),
        (bad_token, good.clone(), 401, "bearer token"),
        (token.clone(), "{\"kind\":".into(), 400, "malformed JSON"),
        (
            token.clone(),
            good.replace("EventList", "Event"),
            400,
            "expected kind EventList",
        ),
        (
            cert_args.clone(),
            r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":7}"#.to_string(),
            400,
            "malformed JSON",
        ),
        (
            cert_args.clone(),
            String::from_utf8(batch("big", 200, &h.namespace)).unwrap(),
            413,
            "too large",
        ),
    ];
    for (args, body, code, message) in cases {
        // A refusal answered before the body is read once raced the upload
        // over HTTP/2 (curl: stream error): each case is sent several times.
        for _ in 0..5 {
            let (got, text) = curl(args.clone(), body.clone()).await;
            assert_eq!(got, code, "{message}: {text}");
            assert!(text.contains(message), "{message:?} in {text:?}");
        }
    }
    let segments_bytes = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(segments_bytes(), 0, "nothing was spooled");
    assert_eq!(
        curl(cert_args, good.clone()).await.0,
        200,
        "client certificate accepted"
    );
    // The same batch again: acknowledged (it is a retry), not stored twice.
    assert_eq!(curl(token, good).await.0, 200, "bearer token accepted");
    assert!(segments_bytes() > 0);
    let (_, metrics) = http(&op.admin, "GET", "/metrics", b"").await.unwrap();
    assert!(
        metrics
            .contains("kubetrail_batches_rejected_total{source=\"webhook\",reason=\"unauthenticated\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("kubetrail_events_spooled_total 2"), "{metrics}");
    assert!(
        metrics.contains("kubetrail_events_deduplicated_total 2"),
        "{metrics}"
    );
}

/// Posts tagged batches until one of them shows up under `prefix`; returns its tag.
async fn post_until_delivered(
    hook: &str,
    s3: &support::S3Server,
    bucket: &str,
    prefix: &str,
    tag: &str,
    ns: &str,
) -> String {
    let mut n = 0;
    eventually(WAIT, &format!("a {tag} batch under {prefix}/"), || {
        n += 1;
        let t = format!("{tag}{n}");
        async move {
            let (code, _) = http(hook, "POST", "/audit", &tagged_batch(&t, ns, 3)).await?;
            assert_eq!(code, 200);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let all: String = s3
                .objects(bucket, &format!("{prefix}/"))
                .await
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            all.contains(&format!("\"{t}-0\"")).then_some(t)
        }
    })
    .await
}

#[tokio::test]
async fn tracker_changes_take_effect_without_a_restart() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("change").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = format!("{}-change", h.namespace);
    tracker(
        &h,
        &name,
        json!({"destination": destination(&bucket, "one", &env.s3.endpoint), "delivery": {"maxBatchAge": "1s"}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("127.0.0.1:{}", support::free_port());
    let args = vec![
        "--insecure-http".to_string(),
        "--webhook-addr".into(),
        hook.clone(),
        "--spool-dir".into(),
        dir.path().join("spool").display().to_string(),
    ];
    let _op = Operator::start(&h.namespace, &h.label, "w1", &args).await;
    let api: Api<Tracker> = Api::all(h.client.clone());
    let ns = h.namespace.clone();
    post_until_delivered(&hook, &env.s3, &bucket, "one", "first", &ns).await;

    // A new prefix: the pipeline restarts from its cursor and writes there.
    let patch = |v: Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&v))
                .await
                .expect("patching the tracker")
        }
    };
    patch(json!({"spec": {"destination": {"prefix": "two"}}})).await;
    post_until_delivered(&hook, &env.s3, &bucket, "two", "moved", &ns).await;
    let (code, _) = http(&hook, "POST", "/audit", &tagged_batch("after-move", &ns, 3))
        .await
        .unwrap();
    assert_eq!(code, 200);
    eventually(WAIT, "after-move under two/", || async {
        let all: String = env
            .s3
            .objects(&bucket, "two/")
            .await
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        all.contains("\"after-move-0\"").then_some(())
    })
    .await;
    let old: String = env
        .s3
        .objects(&bucket, "one/")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(!old.contains("after-move"), "nothing new under the old prefix");

    // Disabled: batches are still accepted, and nothing is delivered for it.
    patch(json!({"spec": {"enabled": false}})).await;
    eventually(WAIT, "tracker disabled", || async {
        let s = api.get(&name).await.ok()?.status?;
        (s.phase == Some(kubetrail::api::TrackerPhase::Disabled)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, _) = http(&hook, "POST", "/audit", &tagged_batch("while-off", &ns, 3))
        .await
        .unwrap();
    assert_eq!(code, 200, "a disabled tracker does not refuse the apiserver");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all: String = env
        .s3
        .objects(&bucket, "")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(!all.contains("while-off"), "a disabled tracker delivers nothing");

    // Enabled again: it delivers what arrives from then on.
    patch(json!({"spec": {"enabled": true}})).await;
    post_until_delivered(&hook, &env.s3, &bucket, "two", "back", &ns).await;
    let all: String = env
        .s3
        .objects(&bucket, "")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        !all.contains("while-off"),
        "what arrived while disabled stays undelivered"
    );
}
