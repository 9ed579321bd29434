//! Admission capture: a validating admission webhook that always allows, and
//! records every request it is shown as a trace (`source: admission`), for
//! clusters whose apiserver flags are out of reach.
//!
//! What it sees differs from an audit event: reads never reach admission
//! webhooks, and the outcome is not known yet, so a trace from here has no
//! `code` and its stage is `Admission`. Its `request` is the object as
//! admitted (for DELETE, the object being deleted), `old_object` the object
//! before an UPDATE; both go through the same redaction as audit bodies.

use super::intake::{Intake, IntakeError, Stored};
use super::{AuthPolicy, Gate, dedupe};
use crate::trace::Source;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

/// Most bytes of an AdmissionReview read (the apiserver's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 6 * 1024 * 1024;

/// What the admission endpoint needs.
#[derive(Clone)]
pub struct Admission {
    /// Where the reviews go as traces.
    pub intake: Intake,
    /// Who may post reviews: the same check as the audit webhook's, since a
    /// posted review becomes a trace like any audit event.
    pub auth: Arc<AuthPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    resource: Gvr<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(borrow, default)]
    user_info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
struct Gvr<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    resource: Cow<'a, str>,
}

/// Why a body is not an AdmissionReview with a request. The text is the
/// apiserver's answer (which it logs): it never quotes the body.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Json(#[source] crate::audit::JsonError),
    #[error("AdmissionReview without a request")]
    NoRequest,
    #[error("the admission request could not be encoded as an audit event")]
    Encode(#[source] serde_json::Error),
}

/// The audit-event form of an admission request (an `EventList` body of one
/// item), and the request's uid.
pub fn to_event_list(review: &[u8], now: &str) -> Result<(String, Vec<u8>), ReviewError> {
    let r: Review<'_> = serde_json::from_slice(review).map_err(|e| ReviewError::Json((&e).into()))?;
    let _ = r.api_version;
    let q = r.request.ok_or(ReviewError::NoRequest)?;
    let verb = match q.operation.as_ref() {
        "CREATE" => "create",
        "UPDATE" => "update",
        "DELETE" => "delete",
        "CONNECT" => "connect",
        other => other,
    };
    let g = &q.resource;
    let base = if g.group.is_empty() {
        format!("/api/{}", g.version)
    } else {
        format!("/apis/{}/{}", g.group, g.version)
    };
    let mut uri = base;
    if let Some(ns) = q.namespace.as_deref().filter(|n| !n.is_empty()) {
        uri.push_str(&format!("/namespaces/{ns}"));
    }
    uri.push_str(&format!("/{}", g.resource));
    if let Some(n) = q.name.as_deref().filter(|n| !n.is_empty()) {
        uri.push_str(&format!("/{n}"));
    }
    if let Some(s) = q.sub_resource.as_deref().filter(|s| !s.is_empty()) {
        uri.push_str(&format!("/{s}"));
    }
    // A DELETE shows the object being deleted as its old object.
    let (object, old) = match (verb, q.object, q.old_object) {
        ("delete", None, old) => (old, None),
        (_, o, old) => (o, old),
    };
    let event = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": q.uid, "stage": "Admission", "requestURI": uri, "verb": verb,
        "user": q.user_info, "sourceIPs": [],
        "objectRef": {
            "resource": g.resource, "subresource": q.sub_resource, "namespace": q.namespace,
            "name": q.name, "apiGroup": g.group, "apiVersion": g.version,
        },
        "requestObject": object, "oldObject": old,
        "requestReceivedTimestamp": now, "stageTimestamp": now,
        "dryRun": q.dry_run.unwrap_or(false),
    });
    let body = serde_json::to_vec(&serde_json::json!({
        "kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [event],
    }))
    .map_err(ReviewError::Encode)?;
    Ok((q.uid.into_owned(), body))
}

/// The webhook's answer: always allowed.
fn allow(uid: &str) -> Response {
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The router of the admission endpoint (`POST /admission`). The caller is
/// authenticated before the review's body is read.
pub fn app(a: Admission) -> Router {
    let gate = Gate {
        auth: a.auth.clone(),
        metrics: a.intake.metrics().clone(),
        source: Source::Admission,
    };
    Router::new()
        .route("/admission", axum::routing::post(review))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(Arc::new(a))
        .layer(axum::middleware::from_fn_with_state(gate, super::authenticate))
}

#[tracing::instrument(name = "admission", skip_all)]
async fn review(State(a): State<Arc<Admission>>, body: Bytes) -> Response {
    let received = jiff::Timestamp::now();
    let (uid, list) = match to_event_list(&body, &received.to_string()) {
        Ok(v) => v,
        Err(e) => {
            return super::reject_from(
                a.intake.metrics(),
                Source::Admission,
                StatusCode::BAD_REQUEST,
                "malformed",
                e.to_string(),
            );
        }
    };
    // The cluster must never wait on kubetrail: anything that keeps the trace
    // out of the spool still allows the request, and counts it as dropped.
    if !a.intake.lifecycle().accepting() {
        a.intake.metrics().admission_dropped.inc();
        return allow(&uid);
    }
    let key = dedupe::batch_key(&body);
    match a.intake.take(&list, Source::Admission, received, key).await {
        Ok(Stored::Spooled(_) | Stored::Copy | Stored::Empty) | Err(IntakeError::Busy) => {}
        Err(e) => {
            tracing::warn!(%uid, error = %e, "admission request not recorded (the request is allowed)");
            a.intake.metrics().admission_dropped.inc();
        }
    }
    allow(&uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_request_becomes_an_audit_event_without_an_outcome() {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Secret"},
                "resource": {"group": "", "version": "v1", "resource": "secrets"},
                "name": "db", "namespace": "prod", "operation": "UPDATE",
                "userInfo": {"username": "alice", "groups": ["dev"]},
                "object": {"kind": "Secret", "data": {"p": "bmV3"}},
                "oldObject": {"kind": "Secret", "data": {"p": "b2xk"}},
                "dryRun": true,
            }
        });
        let (uid, list) =
            to_event_list(&serde_json::to_vec(&review).unwrap(), "2026-12-01T00:00:00Z").unwrap();
        assert_eq!(uid, "u-1");
        let enc =
            super::super::encode(&list, "c", Source::Admission, jiff::Timestamp::now(), 1, 1 << 20).unwrap();
        let (meta, line) = crate::spool::record::entries::iter(&enc.payload).next().unwrap();
        let t: serde_json::Value = serde_json::from_slice(line).unwrap();
        let m: crate::trace::RouteMeta<'_> = serde_json::from_slice(meta).unwrap();
        assert_eq!(t["trace_id"], "u-1");
        assert_eq!(t["trace_name"], "update secrets");
        assert_eq!(t["source"], "admission");
        assert_eq!(t["stage"], "Admission");
        assert_eq!(t["user"], "alice");
        assert_eq!(t["request_uri"], "/api/v1/namespaces/prod/secrets/db");
        assert!(t.get("code").is_none(), "no outcome is invented: {t}");
        assert_eq!(t["dry_run"], true);
        let text = String::from_utf8_lossy(line);
        assert!(
            !text.contains("bmV3") && !text.contains("b2xk"),
            "Secret values redacted in both objects: {text}"
        );
        assert_eq!(m.stage, "Admission");
        assert_eq!(m.code, 0);
    }

    /// A full spool never blocks the cluster: the request is allowed, the
    /// trace counted as dropped; a body that is not a review gets 400.
    #[tokio::test]
    async fn a_full_spool_still_allows_and_counts_the_trace_as_dropped() {
        use serde_json::json;
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let intake = crate::source::intake::test_intake(dir.path(), 1, 1 << 20);
        let metrics = intake.metrics().clone();
        let app = app(Admission {
            intake,
            auth: Arc::new(AuthPolicy {
                tokens: vec!["t0ken".into()],
                allow_anonymous: false,
            }),
        });
        let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-9", "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": "n", "name": "c", "operation": "CREATE", "userInfo": {"username": "alice"},
            "object": {"kind": "ConfigMap", "data": {"a": "1"}}}});
        let req = |body: Vec<u8>| {
            axum::http::Request::post("/admission")
                .header("content-type", "application/json")
                .header("authorization", "Bearer t0ken")
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let resp = app
            .clone()
            .oneshot(req(serde_json::to_vec(&review).unwrap()))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["response"]["uid"], "u-9");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(metrics.admission_dropped.get(), 1);
        let resp = app.clone().oneshot(req(b"not a review".to_vec())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let refused = metrics
            .batches_rejected
            .get_or_create(&crate::telemetry::RejectLabels {
                source: "admission",
                reason: "malformed",
            })
            .get();
        assert_eq!(refused, 1);
        // A malformed review's answer says where, and quotes nothing of it.
        let planted = "hunter2-planted";
        for bad in [
            json!({"request": {"uid": "u", "resource": {}, "operation": [planted]}}),
            json!({"request": {"uid": {"x": planted}, "resource": {}, "operation": "CREATE"}}),
            json!({"request": {"uid": "u", "resource": planted, "operation": "CREATE"}}),
        ] {
            let resp = app
                .clone()
                .oneshot(req(serde_json::to_vec(&bad).unwrap()))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            let text = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8_lossy(&text);
            assert!(!text.contains(planted), "{text}");
            assert!(text.contains("at line 1 column"), "{text}");
        }
    }

    /// Only a caller with a verified certificate or a valid token is heard; a
    /// refused review is never parsed or stored, whatever it says, and its
    /// refusal is counted under the admission source.
    #[tokio::test]
    async fn an_unauthenticated_review_is_refused_and_never_stored() {
        use super::super::PeerAuth;
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let intake = crate::source::intake::test_intake(dir.path(), 1 << 20, 1 << 20);
        let metrics = intake.metrics().clone();
        let spool = intake.spool().clone();
        let app = app(Admission {
            intake,
            auth: Arc::new(AuthPolicy {
                tokens: vec!["t0ken".into()],
                allow_anonymous: false,
            }),
        });
        let review = |uid: &str| {
            serde_json::to_vec(&serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": uid, "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "namespace": "n", "name": "forged", "operation": "DELETE", "userInfo": {"username": "mallory"}}}))
            .unwrap()
        };
        let send = |uid: &str, token: Option<&str>, cert: bool, origin: bool| {
            let mut req = axum::http::Request::post("/admission").header("content-type", "application/json");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            if origin {
                req = req.header("origin", "https://evil.example");
            }
            let req = req
                .extension(PeerAuth { client_cert: cert })
                .body(axum::body::Body::from(review(uid)))
                .unwrap();
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status();
                let close = resp.headers().get("connection").cloned();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                (status, close, String::from_utf8_lossy(&body).to_string())
            }
        };
        let (code, close, text) = send("u-1", None, false, false).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");
        assert_eq!(close.unwrap(), "close");
        assert!(text.contains("client certificate"), "{text}");
        let (code, _, _) = send("u-2", Some("wrong"), false, false).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _, _) = send("u-3", Some("t0ken"), false, true).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "a browser is refused");
        assert_eq!(spool.head(), 0, "nothing refused was stored");
        let count = |reason: &'static str| {
            metrics
                .batches_rejected
                .get_or_create(&crate::telemetry::RejectLabels {
                    source: "admission",
                    reason,
                })
                .get()
        };
        assert_eq!(count("unauthenticated"), 2);
        assert_eq!(count("browser_origin"), 1);
        assert_eq!(metrics.events_received.get(), 0, "no refused review was parsed");
        let (code, _, text) = send("u-4", Some("t0ken"), false, false).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        let (code, _, text) = send("u-5", None, true, false).await;
        assert_eq!(code, StatusCode::OK, "a verified client certificate: {text}");
        assert_eq!(spool.head(), 2);
    }
}
