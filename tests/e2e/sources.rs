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

async fn send(client: &kube::Client, method: &str, path: String, body: Value) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        })
        .unwrap();
    client
        .send(req.map(kube::client::Body::from))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The real apiserver calls the admission capture webhook for a create, an
/// update, a delete, a dry run and an exec: each arrives as a trace with the
/// request's fields, no outcome, Secret data redacted (in the object and the
/// old object), the dry run marked. With the webhook down, API calls go on.
#[tokio::test]
async fn admission_capture_records_what_the_apiserver_admits() {
    use base64::Engine as _;
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("admission").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{ns}-adm"),
        json!({
            "destination": destination(&bucket, "adm", &env.s3.endpoint),
            "filter": {"include": [{"namespaces": [ns], "resources": ["secrets", "configmaps", "pods", "pods/exec"]}]},
            "delivery": {"maxBatchAge": "1s"},
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: &str| {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let admission = format!("127.0.0.1:{}", support::free_port());
    let args = vec![
        "--webhook-addr".to_string(),
        format!("127.0.0.1:{}", support::free_port()),
        "--admission-addr".into(),
        admission.clone(),
        "--tls-cert-file".into(),
        write("tls.crt", &env.cp.webhook_serving.cert_pem),
        "--tls-key-file".into(),
        write("tls.key", &env.cp.webhook_serving.key_pem),
        "--client-ca-file".into(),
        write("ca.crt", &env.cp.ca_pem),
        "--spool-dir".into(),
        dir.path().join("spool").display().to_string(),
    ];
    let op = Operator::start(&ns, &h.label, "adm-0", &args).await;
    let name = format!("{ns}-capture");
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "capture.kubetrail.io",
            "clientConfig": {"url": format!("https://{admission}/admission"),
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(&env.cp.ca_pem)},
            "rules": [{"operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"], "apiGroups": ["*"],
                       "apiVersions": ["*"], "resources": ["*/*"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 2,
            "admissionReviewVersions": ["v1"],
        }],
    });
    assert_eq!(
        send(
            &h.client,
            "POST",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations".into(),
            config
        )
        .await,
        201
    );
    let traces_now = || async {
        traces(&env.s3, &bucket, "adm/")
            .await
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<Value>>()
    };
    // The apiserver picks the configuration up within a moment: probe until a
    // capture arrives.
    eventually(Duration::from_secs(60), "the webhook is called", || async {
        let probe = format!("probe-{}", support::free_port());
        send(
            &h.client,
            "POST",
            format!("/api/v1/namespaces/{ns}/configmaps"),
            json!({"metadata": {"name": probe}}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        traces_now()
            .await
            .into_iter()
            .any(|t| t["resource_name"] == probe.as_str())
            .then_some(())
    })
    .await;

    let secret_value = base64::engine::general_purpose::STANDARD.encode("s3cret-value");
    let new_value = base64::engine::general_purpose::STANDARD.encode("n3w-value");
    let secrets = format!("/api/v1/namespaces/{ns}/secrets");
    assert_eq!(
        send(
            &h.client,
            "POST",
            secrets.clone(),
            json!({"metadata": {"name": "db"}, "data": {"p": secret_value}})
        )
        .await,
        201
    );
    assert_eq!(
        send(
            &h.client,
            "PUT",
            format!("{secrets}/db"),
            json!({"metadata": {"name": "db"}, "data": {"p": new_value}})
        )
        .await,
        200
    );
    assert_eq!(
        send(
            &h.client,
            "POST",
            format!("/api/v1/namespaces/{ns}/configmaps?dryRun=All"),
            json!({"metadata": {"name": "dry"}})
        )
        .await,
        201
    );
    assert_eq!(
        send(&h.client, "DELETE", format!("{secrets}/db"), Value::Null).await,
        200
    );
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "example.com/x:1"}]}});
    assert_eq!(
        send(&h.client, "POST", format!("/api/v1/namespaces/{ns}/pods"), pod).await,
        201
    );
    // No node runs the pod: the exec fails after admission, which still saw it.
    // Its command carries a planted value: admission sees it as a
    // PodExecOptions object, whose command is masked word by word.
    let planted = format!("pl4nted-{}", support::free_port());
    let exec = send(
        &h.client,
        "POST",
        format!(
            "/api/v1/namespaces/{ns}/pods/p/exec?command=sh&command=-c&command=echo+{planted}&stdout=true"
        ),
        Value::Null,
    )
    .await;
    assert!(exec >= 400, "exec into a pod without a node fails: {exec}");
    // A ConfigMap whose data has `kind: Secret` is still a ConfigMap.
    assert_eq!(
        send(
            &h.client,
            "POST",
            format!("/api/v1/namespaces/{ns}/configmaps"),
            json!({"metadata": {"name": "looks-like"}, "data": {"kind": "Secret", "other": "visible-value"}})
        )
        .await,
        201
    );

    let want = [
        ("create secrets", "db"),
        ("update secrets", "db"),
        ("create configmaps", "dry"),
        ("delete secrets", "db"),
        ("create pods", "p"),
        ("connect pods/exec", "p"),
        ("create configmaps", "looks-like"),
    ];
    let all = eventually(Duration::from_secs(60), "every admitted request", || async {
        let t = traces_now().await;
        want.iter()
            .all(|(n, r)| {
                t.iter()
                    .any(|x| x["trace_name"] == *n && x["resource_name"] == *r)
            })
            .then_some(t)
    })
    .await;
    let find = |n: &str, r: &str| {
        all.iter()
            .find(|x| x["trace_name"] == n && x["resource_name"] == r)
            .unwrap()
            .clone()
    };
    for (n, r) in want {
        let t = find(n, r);
        assert_eq!(t["source"], "admission", "{t}");
        assert_eq!(t["stage"], "Admission");
        assert_eq!(t["user"], support::controlplane::ADMIN);
        assert!(t.get("code").is_none(), "no outcome is invented: {t}");
        assert_eq!(t["namespace"], ns.as_str());
    }
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains(&secret_value) && !text.contains(&new_value),
        "Secret data redacted"
    );
    assert!(
        find("update secrets", "db").get("old_object").is_some(),
        "the update's old object is kept"
    );
    assert!(!text.contains(&planted), "the exec command is redacted");
    let exec = find("connect pods/exec", "p");
    assert_eq!(
        exec["request"]["command"],
        json!(["[redacted]", "[redacted]", "[redacted]"]),
        "{exec}"
    );
    assert_eq!(exec["request"]["kind"], "PodExecOptions", "{exec}");
    let cm = find("create configmaps", "looks-like");
    assert_eq!(cm["request"]["data"]["other"], "visible-value", "{cm}");
    assert_eq!(find("create configmaps", "dry")["dry_run"], true);
    assert!(find("create secrets", "db").get("dry_run").is_none());

    // The webhook down: the apiserver goes on (failurePolicy Ignore, short timeout).
    assert!(op.stop().await.success());
    let started = std::time::Instant::now();
    assert_eq!(
        send(
            &h.client,
            "POST",
            format!("/api/v1/namespaces/{ns}/configmaps"),
            json!({"metadata": {"name": "while-down"}})
        )
        .await,
        201
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    send(
        &h.client,
        "DELETE",
        format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}"),
        Value::Null,
    )
    .await;
}

/// Forwards every connection on a local port to `target`, byte for byte, the
/// way `kubectl port-forward` delivers a connection to a pod: it arrives from
/// loopback and carries nothing but what the client sent.
async fn loopback_relay(target: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// Admission capture hears only the apiserver: over the real HTTPS listener,
/// directly and through a loopback relay (as a port-forward reaches it), a post
/// without credentials or with a wrong token gets 401 and a certificate of a
/// subject not allowed fails the TLS handshake; none of those forged reviews
/// is spooled or delivered, and the refusals are counted under the admission
/// source. The allowed certificate and the token are heard, and their reviews
/// delivered as traces.
#[tokio::test]
async fn admission_capture_refuses_unauthenticated_posts_even_from_loopback() {
    let env = support::env();
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let bucket = env.s3.bucket("admission-auth").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    tracker(
        &h,
        &format!("{ns}-adm-auth"),
        json!({
            "destination": destination(&bucket, "adm", &env.s3.endpoint),
            "filter": {"include": [{"namespaces": [ns]}]},
            "delivery": {"maxBatchAge": "1s"},
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: &str| {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca = write("ca.crt", &env.cp.ca_pem);
    let allowed = env.cp.client_pair("kube-apiserver-audit");
    let other = env.cp.client_pair("mallory");
    let (allowed_crt, allowed_key) = (
        write("allowed.crt", &allowed.cert_pem),
        write("allowed.key", &allowed.key_pem),
    );
    let (other_crt, other_key) = (
        write("other.crt", &other.cert_pem),
        write("other.key", &other.key_pem),
    );
    let port = support::free_port();
    let spool = dir.path().join("spool");
    let op = Operator::start(
        &ns,
        &h.label,
        "adm-auth-0",
        &[
            "--webhook-addr".into(),
            format!("127.0.0.1:{}", support::free_port()),
            "--admission-addr".into(),
            format!("127.0.0.1:{port}"),
            "--tls-cert-file".into(),
            write("tls.crt", &env.cp.webhook_serving.cert_pem),
            "--tls-key-file".into(),
            write("tls.key", &env.cp.webhook_serving.key_pem),
            "--client-ca-file".into(),
            ca.clone(),
            "--token-file".into(),
            write("tokens", "adm-token\n"),
            "--spool-dir".into(),
            spool.display().to_string(),
        ],
    )
    .await;
    let relay = loopback_relay(format!("127.0.0.1:{port}")).await;
    let review = |uid: &str| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": uid, "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": ns, "name": format!("cm-{uid}"), "operation": "DELETE",
            "userInfo": {"username": "someone-else"},
            "oldObject": {"kind": "ConfigMap", "metadata": {"name": format!("cm-{uid}")}}}})
        .to_string()
    };
    // curl: (status, body); 0 when no HTTP answer came (a refused handshake).
    let curl = |port: u16, extra: Vec<String>, body: String| {
        let ca = ca.clone();
        async move {
            let mut child = tokio::process::Command::new("curl")
                .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
                .args(["--cacert", &ca, "-H", "content-type: application/json"])
                .args(extra)
                .args(["--data-binary", "@-"])
                .arg(format!("https://localhost:{port}/admission"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("curl");
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
    let cert = |crt: &str, key: &str| vec!["--cert".to_string(), crt.into(), "--key".into(), key.into()];
    let bearer = |t: &str| vec!["-H".to_string(), format!("authorization: Bearer {t}")];
    let refused = [
        ("no credentials", vec![], 401),
        ("a wrong token", bearer("nope"), 401),
        (
            "a token in the wrong scheme",
            vec!["-H".into(), "authorization: Basic adm-token".into()],
            401,
        ),
        (
            "a certificate of a subject not allowed",
            cert(&other_crt, &other_key),
            0,
        ),
    ];
    let mut n = 0;
    for target in [port, relay] {
        for (what, args, code) in &refused {
            n += 1;
            let (got, text) = curl(target, args.clone(), review(&format!("forged-{n}"))).await;
            assert_eq!(got, *code, "{what} via port {target}: {text}");
            if *code == 401 {
                assert!(text.contains("client certificate"), "{what}: {text}");
            }
        }
    }
    let spooled = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(spooled(), 0, "no refused review was spooled");
    let (_, metrics) = support::http(&op.admin, "GET", "/metrics", b"").await.unwrap();
    assert!(
        metrics
            .contains("kubetrail_batches_rejected_total{source=\"admission\",reason=\"unauthenticated\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kubetrail_events_received_total 0"),
        "no refused review was parsed: {metrics}"
    );

    // The apiserver's credentials, directly and through the relay.
    let heard = [
        ("heard-cert", port, cert(&allowed_crt, &allowed_key)),
        ("heard-token", port, bearer("adm-token")),
        ("heard-relay", relay, bearer("adm-token")),
    ];
    for (uid, target, args) in &heard {
        let (code, text) = curl(*target, args.clone(), review(uid)).await;
        assert_eq!(code, 200, "{uid}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["response"]["uid"], *uid);
        assert_eq!(v["response"]["allowed"], true);
    }
    let delivered = eventually(Duration::from_secs(60), "the heard reviews", || async {
        let t: Vec<Value> = traces(&env.s3, &bucket, "adm/")
            .await
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        heard
            .iter()
            .all(|(uid, _, _)| t.iter().any(|x| x["trace_id"] == *uid))
            .then_some(t)
    })
    .await;
    for t in &delivered {
        assert_eq!(t["source"], "admission", "{t}");
        assert!(
            !t["trace_id"].as_str().unwrap_or("").starts_with("forged"),
            "a refused review was delivered: {t}"
        );
    }
    assert_eq!(delivered.len(), heard.len(), "{delivered:?}");
}

/// Admission capture without any way to authenticate the apiserver does not
/// start (unless --admission-allow-unauthenticated says so): the operator
/// exits and says what is missing.
#[tokio::test]
async fn admission_capture_without_authentication_refuses_to_start() {
    let env = support::env();
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: &str| {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("operator")
        .args(["--admin-addr", &format!("127.0.0.1:{}", support::free_port())])
        .args(["--webhook-addr", &format!("127.0.0.1:{}", support::free_port())])
        .args(["--admission-addr", &format!("127.0.0.1:{}", support::free_port())])
        .args([
            "--tls-cert-file",
            &write("tls.crt", &env.cp.webhook_serving.cert_pem),
        ])
        .args([
            "--tls-key-file",
            &write("tls.key", &env.cp.webhook_serving.key_pem),
        ])
        .args(["--spool-dir", &dir.path().join("spool").display().to_string()])
        .env("KUBECONFIG", env.cp.admin_kubeconfig())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the operator exits at once")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admission-addr needs a way to authenticate the apiserver"),
        "{err}"
    );
}
