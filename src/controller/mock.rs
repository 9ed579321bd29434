//! A mocked Kubernetes API for reconciler unit tests that need no real
//! apiserver: a `kube::Client` over a tower service that answers from a
//! handler and records every request, so a test states what the reconciler
//! read and wrote. (The e2e and cluster tests use a real apiserver.)

use super::{Context, Settings};
use crate::telemetry::Metrics;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the reconciler made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: serde_json::Value,
}

/// What the API answers: a status code and a JSON body.
pub type Handler = dyn Fn(&Method, &str, &serde_json::Value) -> (u16, serde_json::Value) + Send + Sync;

/// The calls made so far.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The calls with `method` whose path ends with `suffix`.
    pub fn to(&self, method: Method, suffix: &str) -> Vec<Call> {
        self.all()
            .into_iter()
            .filter(|c| c.method == method && c.path.ends_with(suffix))
            .collect()
    }
}

/// A context whose client talks to `handler` (namespace `kubetrail`).
pub fn context(handler: Box<Handler>) -> (Arc<Context>, Calls) {
    // Setup may build TLS clients (a notification's webhook).
    crate::install_crypto_provider();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler: Arc<Handler> = Arc::from(handler);
    let service = tower::service_fn(move |req: Request<Body>| {
        let seen = seen.clone();
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let (code, answer) = handler(&parts.method, parts.uri.path(), &body);
            seen.0.lock().unwrap_or_else(|e| e.into_inner()).push(Call {
                method: parts.method,
                path: parts.uri.path().to_string(),
                body,
            });
            let resp = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                .map_err(|e| kube::Error::Service(e.into()))?;
            Ok::<_, kube::Error>(resp)
        }
    });
    let client = kube::Client::new(service, "kubetrail");
    (
        Context::new(client, settings(), Arc::new(Metrics::default())),
        calls,
    )
}

/// A `NotFound` Status, as the apiserver answers a missing object.
pub fn not_found(what: &str) -> (u16, serde_json::Value) {
    (
        404,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("{what} not found")}),
    )
}

/// What the apiserver answers a status patch of `object`: the object with the
/// patch's `status` (the client reads the answer back as the whole object).
pub fn patched_status(object: &serde_json::Value, patch: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut answer = object.clone();
    answer["status"] = patch["status"].clone();
    (200, answer)
}

/// What the apiserver answers a create (an Event, say): the object sent.
pub fn created(body: &serde_json::Value) -> (u16, serde_json::Value) {
    (201, body.clone())
}

/// The condition of `type_` in a status (a patch's `status`), as
/// (status, reason, observedGeneration); `None` when it is absent.
pub fn condition_of(status: &serde_json::Value, type_: &str) -> Option<(String, String, i64)> {
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["observedGeneration"].as_i64()?,
    ))
}

fn settings() -> Settings {
    Settings {
        namespace: "kubetrail".into(),
        tracker_selector: None,
        instance: "test-0".into(),
        recheck_interval: Duration::from_secs(300),
        cluster: "test".into(),
        admin_namespaces: vec![],
        readable_clusters: Default::default(),
        max_query_days: 31,
        query_concurrency: 1,
        query_timeout: Duration::from_secs(60),
        query_max_result_bytes: 1 << 20,
        query_scratch_dir: std::env::temp_dir().join("kubetrail-mock-query"),
    }
}
