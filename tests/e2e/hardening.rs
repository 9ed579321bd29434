//! The webhook as an attacker meets it: forged callers, floods, oversized and
//! broken input, against the real binary (`kubetrail serve` over TLS) with real
//! TLS clients.

use crate::support::certs::{Ca, Pair};
use crate::support::{self, eventually, http};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The name the chart puts in the apiserver's webhook client certificate, and
/// the webhook's default allowed subject.
const APISERVER: &str = "kube-apiserver-audit";

/// `kubetrail serve` over TLS with a client CA, delivering into a directory.
struct Serve {
    child: tokio::process::Child,
    addr: String,
    admin: String,
    ca: Ca,
    traces: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    async fn start(extra: &[&str], tokens: Option<&str>) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let serving = ca.server("kubetrail-webhook");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let traces = dir.path().join("traces");
        let config = write(
            "serve.yaml",
            &format!(
                "cluster: hard\ntrackers:\n  - name: all\n    directory: {}\n    delivery:\n      maxBatchAge: 1s\n      compression: none\n",
                traces.display()
            ),
        );
        let addr = format!("127.0.0.1:{}", support::free_port());
        let admin = format!("127.0.0.1:{}", support::free_port());
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"));
        cmd.arg("serve")
            .args(["--config", &config, "--listen", &addr, "--admin-addr", &admin])
            .args(["--tls-cert-file", &write("tls.crt", &serving.cert_pem)])
            .args(["--tls-key-file", &write("tls.key", &serving.key_pem)])
            .args(["--client-ca-file", &write("ca.crt", &ca.cert_pem())])
            .args(["--spool-dir", &dir.path().join("spool").display().to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .kill_on_drop(true);
        if let Some(t) = tokens {
            cmd.args(["--token-file", &write("tokens", t)]);
        }
        let child = cmd.spawn().expect("starting kubetrail serve");
        let s = Serve {
            child,
            addr,
            admin,
            ca,
            traces,
            _dir: dir,
        };
        eventually(Duration::from_secs(30), "serve /ready", || async {
            http(&s.admin, "GET", "/ready", b"")
                .await
                .filter(|(c, _)| *c == 200)
        })
        .await;
        s
    }

    /// Peak resident memory of the process (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.id().expect("serve is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc/pid/status");
        kib / 1024
    }

    /// What the process has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("serve.log")).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        http(&self.admin, "GET", "/metrics", b"").await.unwrap().1
    }

    /// A TLS connection, with a client certificate or without.
    async fn connect(&self, client: Option<&Pair>, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        use rustls::pki_types::pem::PemObject;
        kubetrail::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(self.ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut config = match client {
            Some(p) => {
                let certs =
                    vec![rustls::pki_types::CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).unwrap()];
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let tcp = TcpStream::connect(&self.addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// POSTs `body` over a new HTTP/1.1 connection; `Err` when the connection
    /// or the request failed before an answer.
    async fn post(&self, client: Option<&Pair>, body: &[u8]) -> Result<(u16, String), String> {
        let tls = self
            .connect(client, &[b"http/1.1"])
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::post("/audit")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let text = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&text).to_string()))
    }

    /// Every delivered trace.
    fn delivered(&self) -> Vec<Value> {
        fn walk(dir: &Path, out: &mut Vec<Value>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "jsonl") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    out.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.traces, &mut out);
        out
    }
}

fn batch(items: Vec<Value>) -> Vec<u8> {
    support::audit::event_list(items)
}

fn event(id: &str) -> Value {
    support::audit::get_pods(id, "d")
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0) as u64
}

#[tokio::test]
async fn only_the_allowed_certificate_subject_gets_in() {
    let s = Serve::start(&[], None).await;
    let apiserver = s.ca.client(APISERVER, &[]);
    let (code, text) = s
        .post(Some(&apiserver), &batch(vec![event("cert-ok")]))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    // Signed by the same CA, for another subject: refused in the handshake.
    let intruder = s.ca.client("system:admin", &["system:masters"]);
    let refused = s
        .post(Some(&intruder), &batch(vec![event("cert-intruder")]))
        .await;
    assert!(refused.is_err(), "another subject got an answer: {refused:?}");
    // Signed by another CA with the right subject: refused too.
    let forged = Ca::new().client(APISERVER, &[]);
    let refused = s.post(Some(&forged), &batch(vec![event("cert-forged")])).await;
    assert!(refused.is_err(), "a foreign CA got an answer: {refused:?}");
    // No certificate and no tokens configured: the handshake needs one.
    let refused = s.post(None, &batch(vec![event("cert-none")])).await;
    assert!(refused.is_err(), "no certificate got an answer: {refused:?}");
    let m = s.metrics().await;
    assert!(
        counter(
            &m,
            "kubetrail_webhook_connections_closed_total{reason=\"handshake_failed\"}"
        ) >= 3,
        "{m}"
    );
    eventually(
        Duration::from_secs(20),
        "the accepted trace delivered",
        || async {
            let ids: Vec<String> = s
                .delivered()
                .iter()
                .filter_map(|t| t["trace_id"].as_str().map(String::from))
                .collect();
            (ids == ["cert-ok"]).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_unauthenticated_body_is_never_read() {
    let s = Serve::start(&["--max-body-bytes", "1048576"], Some("the-token\n")).await;
    // No certificate (allowed: a token may stand in), no token, and a body that
    // is announced but never sent: the answer comes without it.
    let mut tls = s.connect(None, &[b"http/1.1"]).await.unwrap();
    tls.write_all(
        b"POST /audit HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer without the body, and the connection stayed open: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    // With the token, a body announced over the cap gets 413 without being
    // kept: the server reads (and drops) a bounded part for at most 5 s.
    let mut tls = s.connect(None, &[b"http/1.1"]).await.unwrap();
    tls.write_all(
        b"POST /audit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer the-token\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut head))
        .await
        .expect("an answer without the body")
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 413"));
    let m = s.metrics().await;
    assert_eq!(
        counter(
            &m,
            "kubetrail_batches_rejected_total{source=\"webhook\",reason=\"unauthenticated\"}"
        ),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn a_flood_does_not_stop_well_behaved_batches_or_grow_memory() {
    let s = Arc::new(Serve::start(&["--handshake-timeout-seconds", "5"], None).await);
    let apiserver = s.ca.client(APISERVER, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // 500 connections that never finish (or never start) a TLS handshake.
    let mut idle = Vec::new();
    for i in 0..500 {
        let mut tcp = TcpStream::connect(&s.addr).await.unwrap();
        if i % 2 == 0 {
            // Half a ClientHello record header, then nothing.
            let _ = tcp.write_all(&[0x16, 0x03, 0x01]).await;
        }
        idle.push(tcp);
    }
    // 20 authenticated connections that send their headers a byte at a time.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        let pair = apiserver.clone();
        let stop = stop.clone();
        slow.push(tokio::spawn(async move {
            let Ok(mut tls) = s.connect(Some(&pair), &[b"http/1.1"]).await else {
                return;
            };
            for b in b"POST /audit HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if stop.load(Ordering::Relaxed) || tls.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    // HTTP/2: 4 connections, each asking for 200 streams whose bodies announce
    // 32 MiB and trickle a byte a second.
    let opened = Arc::new(AtomicUsize::new(0));
    let mut h2 = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        let pair = apiserver.clone();
        let stop = stop.clone();
        let opened = opened.clone();
        h2.push(tokio::spawn(async move {
            let tls = s.connect(Some(&pair), &[b"h2"]).await.unwrap();
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut streams = Vec::new();
            for _ in 0..200 {
                let mut send = send.clone();
                let stop = stop.clone();
                let opened = opened.clone();
                streams.push(tokio::spawn(async move {
                    let body = StreamBody::new(Box::pin(futures::stream::unfold(0u32, move |n| {
                        let stop = stop.clone();
                        async move {
                            if stop.load(Ordering::Relaxed) {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            Some((
                                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b" "))),
                                n + 1,
                            ))
                        }
                    })));
                    let req = hyper::Request::post("https://localhost/audit")
                        .header("content-type", "application/json")
                        .header("content-length", (32u64 << 20).to_string())
                        .body(body)
                        .unwrap();
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = send.send_request(req).await;
                }));
            }
            for st in streams {
                let _ = st.await;
            }
        }));
    }
    // Meanwhile the apiserver keeps sending batches: every one is taken.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let id = format!("flood-{sent}");
        let (code, text) = s
            .post(Some(&apiserver), &batch(vec![event(&id)]))
            .await
            .unwrap_or_else(|e| panic!("batch {id} failed during the flood: {e}"));
        assert_eq!(code, 200, "batch {id} during the flood: {text}");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = s.peak_rss_mib();
    let m = s.metrics().await;
    stop.store(true, Ordering::Relaxed);
    drop(idle);
    assert!(sent >= 20, "only {sent} batches in 15 s");
    assert!(
        opened.load(Ordering::Relaxed) >= 100,
        "the HTTP/2 flood did not run"
    );
    assert!(peak < 256, "peak RSS {peak} MiB under the flood");
    assert!(
        counter(
            &m,
            "kubetrail_webhook_connections_closed_total{reason=\"handshake_timeout\"}"
        ) >= 400,
        "idle handshakes are cut: {m}"
    );
    eventually(
        Duration::from_secs(20),
        "every flood-time batch delivered",
        || async {
            let n = s
                .delivered()
                .iter()
                .filter(|t| t["trace_id"].as_str().is_some_and(|i| i.starts_with("flood-")))
                .count();
            (n == sent).then_some(())
        },
    )
    .await;
    eprintln!("flood: {sent} batches taken, peak RSS {peak} MiB");
}

#[tokio::test]
async fn a_huge_and_a_broken_event_do_not_cost_their_batch() {
    let s = Serve::start(&[], None).await;
    let apiserver = s.ca.client(APISERVER, &[]);
    let huge = "A".repeat(3 << 20);
    let mut big = event("batch-big");
    big["verb"] = json!("update");
    big["objectRef"] = json!({"resource": "configmaps", "namespace": "d", "name": "c", "apiVersion": "v1"});
    big["requestObject"] = json!({"kind": "ConfigMap", "data": {"blob": huge}});
    let broken = json!({"auditID": "batch-broken", "verb": {"not": "a verb"}, "user": "nobody"});
    let body = batch(vec![event("batch-1"), big, broken, event("batch-2")]);
    let (code, text) = s.post(Some(&apiserver), &body).await.unwrap();
    assert_eq!(code, 200, "{text}");
    let traces = eventually(Duration::from_secs(20), "the batch delivered", || async {
        let t = s.delivered();
        (t.len() >= 4).then_some(t)
    })
    .await;
    assert_eq!(traces.len(), 4, "{traces:?}");
    let by_name = |name: &str| traces.iter().find(|t| t["trace_id"] == name).cloned();
    assert!(by_name("batch-1").is_some() && by_name("batch-2").is_some());
    let big = by_name("batch-big").expect("the big event is kept");
    assert_eq!(big["truncated"], true);
    assert!(big.get("request").is_none(), "its body is dropped");
    assert_eq!(big["resource_name"], "c");
    let bad = traces
        .iter()
        .find(|t| t["trace_name"] == "malformed event")
        .expect("the broken item is recorded");
    assert_eq!(bad["trace_rating"], "warning");
    assert!(
        bad["message"].as_str().unwrap().contains("unreadable event"),
        "{bad}"
    );
    assert_eq!(bad["malformed"]["blake3"].as_str().unwrap().len(), 64);
    let m = s.metrics().await;
    assert_eq!(counter(&m, "kubetrail_events_malformed_total"), 1, "{m}");
    assert_eq!(counter(&m, "kubetrail_events_truncated_total"), 1, "{m}");
}

/// A value to plant, unique in the run.
fn plant(n: &mut usize) -> String {
    *n += 1;
    format!("PLANTED{}x{:x}", n, std::process::id())
}

/// For every built-in rule and every shape of body, an event carrying a
/// planted value; returns the events and the values.
fn corpus() -> (Vec<Value>, Vec<String>) {
    let mut n = 0;
    let mut planted = Vec::new();
    let mut events = Vec::new();
    let mut push = |id: String,
                    object_ref: Value,
                    uri: &str,
                    request: Option<Value>,
                    response: Option<Value>,
                    extra: Value| {
        let mut e = json!({"auditID": id, "stage": "ResponseComplete", "verb": "update", "level": "RequestResponse",
            "user": {"username": "alice"}, "objectRef": object_ref, "requestURI": uri,
            "responseStatus": {"code": 200}, "requestReceivedTimestamp": jiff::Timestamp::now().to_string()});
        if let Some(r) = request {
            e["requestObject"] = r;
        }
        if let Some(r) = response {
            e["responseObject"] = r;
        }
        if let Value::Object(x) = extra {
            for (k, v) in x {
                e[k] = v;
            }
        }
        events.push(e);
    };
    let secret_ref = json!({"resource": "secrets", "namespace": "d", "name": "s", "apiVersion": "v1"});
    // A Secret in full, with every sensitive field planted.
    let secret = |n: &mut usize, planted: &mut Vec<String>| {
        let (a, b, c) = (plant(n), plant(n), plant(n));
        planted.extend([a.clone(), b.clone(), c.clone()]);
        json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s", "namespace": "d",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"data\":{{\"k\":\"{c}\"}}}}")}},
            "data": {"k": a}, "stringData": {"p": b}, "type": "Opaque"})
    };
    // Single objects, request and response.
    let (req, resp) = (secret(&mut n, &mut planted), secret(&mut n, &mut planted));
    push(
        "corpus-object".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets/s",
        Some(req),
        Some(resp),
        json!({}),
    );
    // A List, a Table with objects, a watch event.
    let list = json!({"kind": "SecretList", "apiVersion": "v1", "items": [secret(&mut n, &mut planted), secret(&mut n, &mut planted)]});
    push(
        "corpus-list".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets",
        None,
        Some(list),
        json!({"verb": "list"}),
    );
    let table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": [],
        "rows": [{"cells": ["s"], "object": secret(&mut n, &mut planted)}]});
    push(
        "corpus-table".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets",
        None,
        Some(table),
        json!({"verb": "list"}),
    );
    let watch = json!({"type": "MODIFIED", "object": secret(&mut n, &mut planted)});
    push(
        "corpus-watch".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets?watch=1",
        None,
        Some(watch),
        json!({"verb": "watch"}),
    );
    // Patches: merge, strategic merge, JSON patch at every depth.
    let (a, b) = (plant(&mut n), plant(&mut n));
    planted.extend([a.clone(), b.clone()]);
    push(
        "corpus-merge".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets/s",
        Some(json!({"data": {"k": a}, "stringData": {"x": b}})),
        None,
        json!({"verb": "patch"}),
    );
    let (a, b) = (plant(&mut n), plant(&mut n));
    planted.extend([a.clone(), b.clone()]);
    push(
        "corpus-smp".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets/s",
        Some(
            json!({"$patch": "merge", "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": a}}, "data": {"$retainKeys": ["k"], "k": b}}),
        ),
        None,
        json!({"verb": "patch"}),
    );
    let whole = secret(&mut n, &mut planted);
    let mut ops = vec![json!({"op": "add", "path": "", "value": whole})];
    for path in ["/data", "/stringData"] {
        let v = plant(&mut n);
        planted.push(v.clone());
        ops.push(json!({"op": "add", "path": path, "value": {"k": v}}));
    }
    for path in [
        "/data/k",
        "/stringData/p",
        "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
    ] {
        let v = plant(&mut n);
        planted.push(v.clone());
        ops.push(json!({"op": "replace", "path": path, "value": v}));
    }
    let v = plant(&mut n);
    planted.push(v.clone());
    ops.push(json!({"op": "add", "path": "/metadata", "value": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": v}}}));
    let v = plant(&mut n);
    planted.push(v.clone());
    ops.push(json!({"op": "test", "path": "/data/k", "value": v}));
    push(
        "corpus-jsonpatch".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets/s",
        Some(Value::Array(ops)),
        None,
        json!({"verb": "patch"}),
    );
    // A bootstrap token (a Secret in kube-system).
    let v = plant(&mut n);
    planted.push(v.clone());
    push(
        "corpus-bootstrap".into(),
        json!({"resource": "secrets", "namespace": "kube-system", "name": "bootstrap-token-abcdef", "apiVersion": "v1"}),
        "/api/v1/namespaces/kube-system/secrets",
        Some(json!({"kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-abcdef"}, "stringData": {"token-id": "abcdef", "token-secret": v}})),
        None,
        json!({"verb": "create"}),
    );
    // The event's own annotations on a sensitive object (a mutating webhook's patch).
    let v = plant(&mut n);
    planted.push(v.clone());
    push(
        "corpus-annotations".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets/s",
        None,
        None,
        json!({"annotations": {"authorization.k8s.io/decision": "allow", "patch.webhook.admission.k8s.io/round_0_index_0": format!("[{{\"op\":\"add\",\"path\":\"/data/x\",\"value\":\"{v}\"}}]")}}),
    );
    // Service-account tokens, in an object and in a List.
    let (a, b) = (plant(&mut n), plant(&mut n));
    planted.extend([a.clone(), b.clone()]);
    push(
        "corpus-token".into(),
        json!({"resource": "serviceaccounts", "subresource": "token", "namespace": "d", "name": "default", "apiVersion": "v1"}),
        "/api/v1/namespaces/d/serviceaccounts/default/token",
        Some(json!({"kind": "TokenRequest", "spec": {"audiences": ["x"]}})),
        Some(
            json!({"kind": "TokenRequest", "status": {"token": a, "expirationTimestamp": "2030-01-01T00:00:00Z"}}),
        ),
        json!({"verb": "create"}),
    );
    push(
        "corpus-token-list".into(),
        json!({"resource": "serviceaccounts", "subresource": "token", "namespace": "d", "apiVersion": "v1"}),
        "/api/v1/namespaces/d/serviceaccounts/default/token",
        None,
        Some(json!({"kind": "List", "items": [{"status": {"token": b}}]})),
        json!({"verb": "create"}),
    );
    // Token reviews: request and response.
    let (a, b) = (plant(&mut n), plant(&mut n));
    planted.extend([a.clone(), b.clone()]);
    push(
        "corpus-review".into(),
        json!({"resource": "tokenreviews", "apiGroup": "authentication.k8s.io", "apiVersion": "v1"}),
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(json!({"kind": "TokenReview", "spec": {"token": a}})),
        Some(json!({"kind": "TokenReview", "spec": {"token": b}, "status": {"authenticated": true}})),
        json!({"verb": "create"}),
    );
    // exec and attach commands.
    for sub in ["exec", "attach"] {
        let v = plant(&mut n);
        planted.push(v.clone());
        push(
            format!("corpus-{sub}"),
            json!({"resource": "pods", "subresource": sub, "namespace": "d", "name": "p", "apiVersion": "v1"}),
            &format!("/api/v1/namespaces/d/pods/p/{sub}?command=sh&command=-c&command={v}&stdin=true"),
            None,
            None,
            json!({"verb": "create"}),
        );
    }
    // An exec's command as an object (PodExecOptions, as admission shows it).
    let v = plant(&mut n);
    planted.push(v.clone());
    push(
        "corpus-exec-options".into(),
        json!({"resource": "pods", "subresource": "exec", "namespace": "d", "name": "p", "apiVersion": "v1"}),
        "/api/v1/namespaces/d/pods/p/exec",
        Some(
            json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdout": true, "command": ["sh", "-c", v]}),
        ),
        None,
        json!({"verb": "create"}),
    );
    // Commands through the node, pod and service proxies.
    for (id, resource, uri) in [
        (
            "corpus-node-proxy",
            "nodes",
            "/api/v1/nodes/n1/proxy/run/d/p/c?cmd=cat+",
        ),
        (
            "corpus-pod-proxy",
            "pods",
            "/api/v1/namespaces/d/pods/p/proxy/exec?command=",
        ),
        (
            "corpus-service-proxy",
            "services",
            "/api/v1/namespaces/d/services/s:80/proxy/run?cmd=",
        ),
    ] {
        let v = plant(&mut n);
        planted.push(v.clone());
        push(
            id.into(),
            json!({"resource": resource, "subresource": "proxy", "namespace": "d", "name": "x", "apiVersion": "v1"}),
            &format!("{uri}{v}&keep=1"),
            None,
            None,
            json!({"verb": "get"}),
        );
    }
    // A token in the URI of any request.
    let (t1, t2) = (plant(&mut n), plant(&mut n));
    planted.extend([t1.clone(), t2.clone()]);
    push(
        "corpus-uri-token".into(),
        json!({"resource": "configmaps", "namespace": "d", "apiVersion": "v1"}),
        &format!("/api/v1/namespaces/d/configmaps?token={t1}&limit=5&access_token={t2}"),
        None,
        None,
        json!({"verb": "list"}),
    );
    // A ConfigMap whose data has a key `kind` with the value `Secret`: not a
    // Secret, so its values stay visible (checked by the test).
    push(
        "corpus-configmap-kind".into(),
        json!({"resource": "configmaps", "namespace": "d", "name": "c", "apiVersion": "v1"}),
        "/api/v1/namespaces/d/configmaps/c",
        Some(
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"},
                    "data": {"kind": "Secret", "other": "visible-value"}}),
        ),
        None,
        json!({}),
    );
    // Fail closed: shapes the rule does not expect, and nesting no parser takes.
    let (a, b, c) = (plant(&mut n), plant(&mut n), plant(&mut n));
    planted.extend([a.clone(), b.clone(), c.clone()]);
    let deep = (0..200).fold(json!(c), |v, _| json!([v]));
    push(
        "corpus-odd".into(),
        secret_ref.clone(),
        "/api/v1/namespaces/d/secrets/s",
        Some(json!({"data": a, "items": [b]})),
        Some(json!({"kind": "Secret", "data": deep})),
        json!({}),
    );
    (events, planted)
}

#[tokio::test]
async fn no_planted_secret_reaches_a_delivered_byte() {
    let s = Serve::start(&[], None).await;
    let apiserver = s.ca.client(APISERVER, &[]);
    let (events, planted) = corpus();
    let expected = events.len();
    let (code, text) = s.post(Some(&apiserver), &batch(events)).await.unwrap();
    assert_eq!(code, 200, "{text}");
    let traces = eventually(Duration::from_secs(20), "the corpus delivered", || async {
        let t = s.delivered();
        (t.len() >= expected).then_some(t)
    })
    .await;
    assert_eq!(traces.len(), expected, "every event delivered once");
    // Every byte of every delivered file, and the spool too.
    let mut bytes = Vec::new();
    for root in [s.traces.clone(), s._dir.path().join("spool")] {
        fn all(dir: &Path, out: &mut Vec<u8>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    all(&p, out)
                } else {
                    out.extend(std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        all(&root, &mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    for v in &planted {
        assert!(
            !text.contains(v.as_str()),
            "{v} reached a delivered or spooled byte"
        );
    }
    // What is not sensitive stays.
    let exec = traces.iter().find(|t| t["trace_id"] == "corpus-exec").unwrap();
    assert!(exec["request_uri"].as_str().unwrap().ends_with("&stdin=true"));
    let token = traces.iter().find(|t| t["trace_id"] == "corpus-token").unwrap();
    assert_eq!(
        token["response"]["status"]["expirationTimestamp"],
        "2030-01-01T00:00:00Z"
    );
    let proxy = traces
        .iter()
        .find(|t| t["trace_id"] == "corpus-node-proxy")
        .unwrap();
    assert_eq!(
        proxy["request_uri"],
        "/api/v1/nodes/n1/proxy/run/d/p/c?cmd=%5Bredacted%5D&keep=1"
    );
    let options = traces
        .iter()
        .find(|t| t["trace_id"] == "corpus-exec-options")
        .unwrap();
    assert_eq!(
        options["request"]["command"],
        json!(["[redacted]", "[redacted]", "[redacted]"])
    );
    assert_eq!(options["request"]["stdout"], true);
    let cm = traces
        .iter()
        .find(|t| t["trace_id"] == "corpus-configmap-kind")
        .unwrap();
    assert_eq!(cm["request"]["data"]["other"], "visible-value", "{cm}");
    assert_eq!(cm["request"]["data"]["kind"], "Secret", "{cm}");
    let object = traces.iter().find(|t| t["trace_id"] == "corpus-object").unwrap();
    assert_eq!(object["request"]["data"]["k"], "[redacted]", "keys stay visible");
    eprintln!(
        "corpus: {} events, {} planted values, none delivered",
        expected,
        planted.len()
    );
}

/// A malformed batch is refused, and a malformed item recorded, without any of
/// their bytes: a planted value is in no answer, log line, metric, delivered
/// or spooled byte, while the answer still says where the fault is.
#[tokio::test]
async fn malformed_input_is_never_quoted() {
    let s = Serve::start(&[], None).await;
    let apiserver = s.ca.client(APISERVER, &[]);
    let mut n = 1000;
    let (a, b, c, d) = (plant(&mut n), plant(&mut n), plant(&mut n), plant(&mut n));
    let refused = [
        format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":"{a}"}}"#),
        format!(r#"{{"kind":"{b}","apiVersion":"audit.k8s.io/v1","items":[]}}"#),
    ];
    let mut answers = String::new();
    for body in &refused {
        let (code, text) = s.post(Some(&apiserver), body.as_bytes()).await.unwrap();
        assert_eq!(code, 400, "{text}");
        answers.push_str(&text);
    }
    assert!(answers.contains("at line 1 column"), "{answers}");
    let mut broken = event("malformed-planted");
    broken["responseStatus"] = json!({"code": c});
    let body = batch(vec![event("malformed-ok"), broken, json!(d)]);
    let (code, text) = s.post(Some(&apiserver), &body).await.unwrap();
    assert_eq!(code, 200, "{text}");
    let traces = eventually(Duration::from_secs(20), "the batch delivered", || async {
        let t = s.delivered();
        (t.len() >= 3).then_some(t)
    })
    .await;
    let bad: Vec<&Value> = traces
        .iter()
        .filter(|t| t["trace_name"] == "malformed event")
        .collect();
    assert_eq!(bad.len(), 2, "{traces:?}");
    assert!(
        bad.iter().any(|t| t["message"]
            .as_str()
            .unwrap()
            .contains("invalid type string, expected i32")),
        "{bad:?}"
    );
    let mut bytes = Vec::new();
    fn all(dir: &Path, out: &mut Vec<u8>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                all(&p, out)
            } else {
                out.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    all(s._dir.path(), &mut bytes);
    let everything = format!(
        "{answers}{}{}{}",
        s.log(),
        s.metrics().await,
        String::from_utf8_lossy(&bytes)
    );
    assert!(s.log().contains("request refused"), "the refusals are logged");
    for v in [&a, &b, &c, &d] {
        assert!(!everything.contains(v.as_str()), "{v} was quoted");
    }
}
