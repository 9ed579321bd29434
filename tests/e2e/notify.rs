//! Key event notifications on real parts: the real apiserver's audit events go
//! through the operator binary to a real HTTPS receiver started here (its own
//! CA), as signed CloudEvents; retries, a restart with the receiver down, a
//! burst, CEL conditions and the Slack format.

use crate::Harness;
use crate::support::{self, Operator, certs, eventually, http};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubetrail::api::{ConditionType, KeyEventNotification, condition};
use kubetrail::notify::message::sign;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

/// An HTTPS receiver: records every request; answers each path from its
/// script of status codes, then 200.
struct Receiver {
    port: u16,
    ca_pem: String,
    pair: certs::Pair,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<u16>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let ca = certs::Ca::new();
        let pair = ca.server("receiver");
        let mut r = Receiver {
            port: support::free_port(),
            ca_pem: ca.cert_pem(),
            pair,
            got: Arc::default(),
            script: Arc::default(),
            task: tokio::spawn(async {}),
        };
        r.listen().await;
        r
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// (Re)starts listening on the same port with the same certificate.
    async fn listen(&mut self) {
        let certs = vec![CertificateDer::from_pem_slice(self.pair.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.pair.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("receiver port");
        let (got, script) = (self.got.clone(), self.script.clone());
        self.task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, got, script) = (acceptor.clone(), got.clone(), script.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let (got, script) = (got.clone(), script.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let headers = req.headers().clone();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().to_vec())
                                    .unwrap_or_default();
                                let code = script
                                    .lock()
                                    .unwrap()
                                    .get_mut(&path)
                                    .and_then(|q| q.pop_front())
                                    .unwrap_or(200);
                                got.lock().unwrap().push(Got {
                                    path,
                                    headers,
                                    body,
                                    answered: code,
                                });
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(code)
                                        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                });
            }
        });
    }

    fn stop(&self) {
        self.task.abort();
    }

    fn script(&self, path: &str, codes: &[u16]) {
        self.script
            .lock()
            .unwrap()
            .insert(path.into(), codes.iter().copied().collect());
    }

    fn got(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    /// Delivered (200) CloudEvents bodies of `path`.
    fn delivered(&self, path: &str) -> Vec<Value> {
        self.got(path)
            .into_iter()
            .filter(|g| g.answered == 200)
            .map(|g| serde_json::from_slice(&g.body).unwrap())
            .collect()
    }
}

/// Every trace the delivered messages of `path` list.
fn traces(r: &Receiver, path: &str) -> Vec<Value> {
    r.delivered(path)
        .into_iter()
        .flat_map(|m| m["data"]["traces"].as_array().cloned().unwrap_or_default())
        .collect()
}

async fn notification(h: &Harness, name: &str, spec: Value) {
    let api: Api<KeyEventNotification> = Api::all(h.client.clone());
    let obj: KeyEventNotification = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "KeyEventNotification",
        "metadata": {"name": name, "labels": {"kubetrail.io/test": h.label}},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating KeyEventNotification");
}

async fn hmac_secret(h: &Harness, key: &str) {
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.namespace);
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hmac"}, "stringData": {"hmacKey": key}});
    secrets
        .patch("hmac", &PatchParams::apply("e2e").force(), &Patch::Apply(&s))
        .await
        .unwrap();
}

async fn status(h: &Harness, name: &str) -> Option<kubetrail::api::KeyEventNotificationStatus> {
    let api: Api<KeyEventNotification> = Api::all(h.client.clone());
    api.get(name).await.ok()?.status
}

/// Audit events as the apiserver sends them: `(id, verb, resource, user, code)`.
fn events(ns: &str, items: &[(String, &str, &str, &str, i32)]) -> Vec<u8> {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, verb, resource, user, code)| {
            json!({
                "level": "Metadata", "auditID": id, "stage": "ResponseComplete",
                "requestURI": format!("/api/v1/namespaces/{ns}/{resource}/x"), "verb": verb,
                "user": {"username": user, "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.9"],
                "objectRef": {"resource": resource, "namespace": ns, "name": "x", "apiVersion": "v1"},
                "responseStatus": {"code": code},
                "requestReceivedTimestamp": jiff::Timestamp::now().to_string(),
                "stageTimestamp": jiff::Timestamp::now().to_string(),
            })
        })
        .collect();
    support::audit::event_list(items)
}

async fn post(addr: &str, body: &[u8]) {
    let (code, text) = http(addr, "POST", "/audit", body).await.expect("webhook answers");
    assert_eq!(code, 200, "{text}");
}

/// The apiserver's audit events of a Secret delete, a RoleBinding change and a
/// denied request reach the receiver as CloudEvents with a valid HMAC, within
/// seconds; a ConfigMap update does not. The Kubernetes Event is recorded and
/// the status counts what was sent.
#[tokio::test]
async fn apiserver_key_events_reach_an_https_receiver_as_signed_cloudevents() {
    let env = support::env();
    let _audit = support::AUDIT_WEBHOOK.lock().await;
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let receiver = Receiver::start().await;
    hmac_secret(&h, "s3cret-hmac-key").await;
    let name = format!("{ns}-security");
    notification(
        &h,
        &name,
        json!({
            "presets": ["allDeletes", "rbacChanges", "deniedRequests"],
            "namespaces": [ns],
            "webhook": {"url": receiver.url("/hook"), "caBundle": receiver.ca_pem, "hmacSecretRef": {"name": "hmac"},
                        "headers": {"X-Team": "security"}},
            "kubernetesEvent": true,
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: &str| {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let addr = env
        .cp
        .audit_webhook_url
        .trim_start_matches("https://")
        .trim_end_matches("/audit")
        .to_string();
    let op = Operator::start(
        &ns,
        &h.label,
        "notify-0",
        &[
            "--webhook-addr".into(),
            addr,
            "--tls-cert-file".into(),
            write("tls.crt", &env.cp.webhook_serving.cert_pem),
            "--tls-key-file".into(),
            write("tls.key", &env.cp.webhook_serving.key_pem),
            "--client-ca-file".into(),
            write("ca.crt", &env.cp.ca_pem),
            "--spool-dir".into(),
            dir.path().join("spool").display().to_string(),
        ],
    )
    .await;
    eventually(Duration::from_secs(30), "notification Ready", || async {
        let s = status(&h, &name).await?;
        (condition(&s.conditions, ConditionType::Ready)?.status == "True").then_some(())
    })
    .await;

    let admin = &h.client;
    let req = |method: &str, path: String, body: Value| {
        let ctype = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ctype)
            .body(if body.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&body).unwrap()
            })
            .unwrap()
    };
    let send = |client: kube::Client, r: http::Request<Vec<u8>>| async move {
        let resp = client.send(r.map(kube::client::Body::from)).await.unwrap();
        resp.status().as_u16()
    };
    let cm = format!("/api/v1/namespaces/{ns}/configmaps");
    let sec = format!("/api/v1/namespaces/{ns}/secrets");
    let rb = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings");
    assert_eq!(
        send(
            admin.clone(),
            req(
                "POST",
                cm.clone(),
                json!({"metadata": {"name": "c"}, "data": {"a": "1"}})
            )
        )
        .await,
        201
    );
    assert_eq!(
        send(
            admin.clone(),
            req(
                "PUT",
                format!("{cm}/c"),
                json!({"metadata": {"name": "c"}, "data": {"a": "2"}})
            )
        )
        .await,
        200
    );
    assert_eq!(
        send(
            admin.clone(),
            req(
                "POST",
                sec.clone(),
                json!({"metadata": {"name": "db"}, "stringData": {"p": "x"}})
            )
        )
        .await,
        201
    );
    let started = std::time::Instant::now();
    assert_eq!(
        send(admin.clone(), req("DELETE", format!("{sec}/db"), Value::Null)).await,
        200
    );
    let binding = json!({"metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                         "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
    assert_eq!(send(admin.clone(), req("POST", rb.clone(), binding)).await, 201);
    assert_eq!(
        send(
            admin.clone(),
            req(
                "PATCH",
                format!("{rb}/rb"),
                json!({"metadata": {"labels": {"x": "y"}}})
            )
        )
        .await,
        200
    );
    let eve = env.cp.client_as("eve", &["intruders"]).await;
    assert_eq!(send(eve, req("GET", format!("{sec}/db"), Value::Null)).await, 403);

    let want: HashSet<(String, String)> = [
        ("delete", "secrets"),
        ("create", "rolebindings"),
        ("patch", "rolebindings"),
        ("get", "secrets"),
    ]
    .iter()
    .map(|(v, r)| (v.to_string(), r.to_string()))
    .collect();
    let got = eventually(Duration::from_secs(60), "the four key events", || async {
        let seen: HashSet<(String, String)> = traces(&receiver, "/hook")
            .iter()
            .map(|t| {
                (
                    t["verb"].as_str().unwrap().to_string(),
                    t["resource_type"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        want.is_subset(&seen).then_some(seen)
    })
    .await;
    let first_delay = started.elapsed();
    assert_eq!(got, want, "exactly the key events, no ConfigMap or Secret create");
    let denied = traces(&receiver, "/hook")
        .into_iter()
        .find(|t| t["verb"] == "get")
        .unwrap();
    assert_eq!(denied["user"], "eve");
    assert_eq!(denied["code"], 403);
    for g in receiver.got("/hook") {
        let sig = g.headers["x-kubetrail-signature"].to_str().unwrap();
        assert_eq!(sig, sign(b"s3cret-hmac-key", &g.body), "HMAC of the body");
        assert_eq!(g.headers["content-type"], "application/cloudevents+json");
        assert_eq!(g.headers["x-team"], "security");
        let v: Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "io.kubetrail.keyevent");
        assert_eq!(
            g.headers["x-kubetrail-message-id"].to_str().unwrap(),
            v["id"].as_str().unwrap()
        );
        assert_eq!(
            v["data"]["count"].as_u64().unwrap() as usize,
            v["data"]["traces"].as_array().unwrap().len()
        );
    }
    // The apiserver batches audit events for up to 1 s; the notification adds little.
    assert!(first_delay < Duration::from_secs(30), "{first_delay:?}");

    // The Kubernetes Event on the notification.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(h.client.clone());
    eventually(Duration::from_secs(30), "a KeyEvent Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("KeyEvent")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
        })
    })
    .await;
    let s = eventually(Duration::from_secs(30), "status counts", || async {
        let s = status(&h, &name).await?;
        (s.matched == 4 && s.sent >= 1 && s.last_sent.is_some()).then_some(s)
    })
    .await;
    assert_eq!(s.failed, 0);
    assert_eq!(s.sent as usize, receiver.delivered("/hook").len());
    assert!(op.stop().await.success());
}

/// Storms, failures and restarts through the operator binary's webhook: a
/// receiver answering 500 three times gets the message once (counted once);
/// a message matched while the receiver is down and the operator restarts is
/// delivered after both are back; a burst of 2,000 matches arrives as a few
/// messages that account for all of them; a CEL condition selects exactly the
/// intended traces and an invalid one is reported; `format: slack` bodies.
#[tokio::test]
async fn retries_restarts_bursts_conditions_and_slack() {
    let h = Harness::start().await;
    let ns = h.namespace.clone();
    let mut receiver = Receiver::start().await;
    let hook =
        |path: &str| json!({"url": receiver.url(path), "caBundle": receiver.ca_pem, "maxAttempts": 10});
    notification(&h, &format!("{ns}-deletes"), json!({"presets": ["allDeletes"], "namespaces": [ns], "webhook": hook("/deletes"), "kubernetesEvent": false})).await;
    notification(
        &h,
        &format!("{ns}-cel"),
        json!({"namespaces": [ns], "condition": "trace.code >= 400 && !trace.user.startsWith('system:')", "webhook": hook("/cel"), "kubernetesEvent": false}),
    )
    .await;
    let mut slack = hook("/slack");
    slack["format"] = json!("slack");
    notification(
        &h,
        &format!("{ns}-slack"),
        json!({"presets": ["rbacChanges"], "namespaces": [ns], "webhook": slack, "kubernetesEvent": false}),
    )
    .await;
    notification(
        &h,
        &format!("{ns}-broken"),
        json!({"namespaces": [ns], "condition": "trace.code >= ", "kubernetesEvent": true}),
    )
    .await;

    let spool = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let args = vec![
        "--insecure-http".to_string(),
        "--webhook-addr".into(),
        addr.clone(),
        "--spool-dir".into(),
        spool.path().display().to_string(),
    ];
    let op = Operator::start(&ns, &h.label, "n-0", &args).await;

    // An invalid condition: reported with the compile error.
    let broken = format!("{ns}-broken");
    let c = eventually(Duration::from_secs(30), "InvalidCondition", || async {
        let s = status(&h, &broken).await?;
        let c = condition(&s.conditions, ConditionType::Ready)?.clone();
        (c.reason == "InvalidCondition").then_some(c)
    })
    .await;
    assert_eq!(c.status, "False");
    assert!(c.message.contains("does not compile"), "{}", c.message);

    // 500 three times, then 200: delivered once, counted once.
    receiver.script("/deletes", &[500, 500, 500]);
    post(
        &addr,
        &events(&ns, &[("del-1".into(), "delete", "secrets", "alice", 200)]),
    )
    .await;
    eventually(Duration::from_secs(30), "delivered after three 500s", || async {
        (receiver.delivered("/deletes").len() == 1).then_some(())
    })
    .await;
    let attempts = receiver.got("/deletes");
    assert_eq!(
        attempts.iter().map(|g| g.answered).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    let ids: HashSet<String> = attempts
        .iter()
        .map(|g| g.headers["x-kubetrail-message-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "every attempt is the same message");
    let deletes = format!("{ns}-deletes");
    eventually(Duration::from_secs(30), "counted once", || async {
        let s = status(&h, &deletes).await?;
        (s.sent == 1 && s.matched == 1 && s.failed == 0).then_some(())
    })
    .await;

    // CEL: only failed requests by people.
    post(
        &addr,
        &events(
            &ns,
            &[
                ("cel-ok".into(), "get", "pods", "alice", 200),
                ("cel-denied".into(), "get", "pods", "alice", 403),
                ("cel-system".into(), "get", "pods", "system:kube-scheduler", 403),
                ("cel-missing".into(), "get", "pods", "bob", 404),
            ],
        ),
    )
    .await;
    let want: HashSet<&str> = ["cel-denied", "cel-missing"].into();
    eventually(Duration::from_secs(30), "CEL matches", || async {
        let ids: Vec<String> = traces(&receiver, "/cel")
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect();
        (ids.len() >= 2).then_some(ids)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: HashSet<String> = traces(&receiver, "/cel")
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, want.iter().map(|s| s.to_string()).collect::<HashSet<_>>());

    // Slack body shape.
    let rb = |id: &str| {
        let mut e: Value = serde_json::from_slice(&events(
            &ns,
            &[(id.into(), "create", "rolebindings", "alice", 201)],
        ))
        .unwrap();
        e["items"][0]["objectRef"]["apiGroup"] = json!("rbac.authorization.k8s.io");
        serde_json::to_vec(&e).unwrap()
    };
    post(&addr, &rb("rb-1")).await;
    let body = eventually(Duration::from_secs(30), "a Slack message", || async {
        receiver.got("/slack").into_iter().find(|g| g.answered == 200)
    })
    .await;
    assert_eq!(body.headers["content-type"], "application/json");
    let v: Value = serde_json::from_slice(&body.body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("1 key event") && text.contains("create rolebindings"),
        "{text}"
    );
    assert_eq!(v.as_object().unwrap().len(), 1, "only `text`: {v}");

    // The receiver is down while the operator restarts: delivered after both are back.
    receiver.stop();
    post(
        &addr,
        &events(&ns, &[("del-down".into(), "delete", "secrets", "alice", 200)]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(op.stop().await.success());
    let op = Operator::start(&ns, &h.label, "n-0", &args).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.listen().await;
    eventually(Duration::from_secs(60), "delivered after the restart", || async {
        traces(&receiver, "/deletes")
            .iter()
            .any(|t| t["trace_id"] == "del-down")
            .then_some(())
    })
    .await;

    // A burst of 2,000 matching operations.
    let before = receiver.delivered("/deletes").len();
    for b in 0..20 {
        let items: Vec<(String, &str, &str, &str, i32)> = (0..100)
            .map(|i| (format!("burst-{b}-{i}"), "delete", "configmaps", "alice", 200))
            .collect();
        post(&addr, &events(&ns, &items)).await;
    }
    let burst = |r: &Receiver| -> Vec<Value> {
        r.delivered("/deletes")
            .into_iter()
            .skip(before)
            .filter(|m| {
                m["data"]["traces"][0]["trace_id"]
                    .as_str()
                    .unwrap()
                    .starts_with("burst-")
            })
            .collect()
    };
    let messages = eventually(Duration::from_secs(60), "all 2,000 in messages", || async {
        let m = burst(&receiver);
        let n: u64 = m.iter().map(|m| m["data"]["count"].as_u64().unwrap()).sum();
        (n >= 2000).then_some(m)
    })
    .await;
    let ids: HashSet<String> = messages
        .iter()
        .flat_map(|m| {
            m["data"]["traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["trace_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids.len(), 2000, "every one of the 2,000, once");
    assert!(
        messages.len() <= 10,
        "a bounded number of messages: {}",
        messages.len()
    );
    assert!(op.stop().await.success());
}
