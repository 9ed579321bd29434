//! Who may post to a listener that takes traces (the audit webhook and
//! admission capture): one check for both, made before any handler reads the
//! body, and one way to count and answer a refusal.

use crate::telemetry::{Metrics, RejectLabels};
use crate::trace;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Who may send audit batches.
#[derive(Clone, Debug, Default)]
pub struct AuthPolicy {
    /// Bearer tokens accepted (from `--token-file`).
    pub tokens: Vec<String>,
    /// Accept callers without credentials. Only for a loopback listener in `serve`.
    pub allow_anonymous: bool,
}

/// Whether the connection presented a client certificate the CA verified and
/// whose subject is allowed (the TLS layer refuses any other).
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerAuth {
    pub client_cert: bool,
}

/// Who may call a listener that takes traces (the audit webhook, admission
/// capture): one check for both, made before any handler reads the body.
#[derive(Clone)]
pub struct Gate {
    pub auth: Arc<AuthPolicy>,
    pub metrics: Arc<Metrics>,
    /// The listener's source, the `source` label of its refusals.
    pub source: trace::Source,
}

/// Lets through a caller with a verified client certificate (the TLS layer
/// already refused one of a subject not allowed) or a valid bearer token;
/// answers anyone else 401 and closes the connection. Nothing is trusted for
/// where a connection comes from: a plain loopback connection (a port-forward)
/// is refused like any other unless the listener was started without
/// authentication on purpose. A browser (an `Origin` header) is refused too.
pub async fn authenticate(
    State(gate): State<Gate>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cert = req.extensions().get::<PeerAuth>().is_some_and(|p| p.client_cert);
    let token = bearer(req.headers()).is_some_and(|t| {
        gate.auth
            .tokens
            .iter()
            .any(|ok| constant_time_eq(ok.as_bytes(), t.as_bytes()))
    });
    if !(cert || token || gate.auth.allow_anonymous) {
        // Only a small part of the body is read (and dropped, never parsed or
        // stored), so a caller with a wrong credential sees the 401 rather
        // than a reset stream (HTTP/2 resets a stream answered before its body
        // was read); the connection closes after the answer.
        drain_stream(
            &mut req.into_body().into_data_stream(),
            REFUSAL_DRAIN,
            Duration::from_secs(1),
        )
        .await;
        let mut r = reject_from(
            &gate.metrics,
            gate.source,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a client certificate signed by the configured CA or a valid bearer token is required".into(),
        );
        r.headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return r;
    }
    // A browser can be made to post to a loopback listener; it always says
    // where from, and cannot send a JSON content type cross-origin without a
    // preflight this server never answers.
    if req.headers().contains_key(header::ORIGIN) {
        drain_stream(
            &mut req.into_body().into_data_stream(),
            REFUSAL_DRAIN,
            Duration::from_secs(1),
        )
        .await;
        return reject_from(
            &gate.metrics,
            gate.source,
            StatusCode::FORBIDDEN,
            "browser_origin",
            "requests from a browser (with an Origin header) are refused".into(),
        );
    }
    next.run(req).await
}

/// Counts and logs a refused request of `source`, and answers it.
pub fn reject_from(
    metrics: &Metrics,
    source: trace::Source,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Response {
    metrics
        .batches_rejected
        .get_or_create(&RejectLabels {
            source: source.as_str(),
            reason,
        })
        .inc();
    tracing::warn!(source = source.as_str(), status = status.as_u16(), reason, %message, "request refused");
    (status, message).into_response()
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares without leaking where two tokens differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How much of a refused caller's body is read before the answer: enough for a
/// misconfigured client's batch to see the refusal, little for a flood.
pub(super) const REFUSAL_DRAIN: usize = 64 * 1024;

/// Reads and drops up to `limit` bytes of a body being refused (for at most
/// `wait`), so the caller sees the answer rather than a reset connection.
pub(super) async fn drain_stream(stream: &mut axum::body::BodyDataStream, limit: usize, wait: Duration) {
    let _ = tokio::time::timeout(wait, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > limit {
                break;
            }
        }
    })
    .await;
}
