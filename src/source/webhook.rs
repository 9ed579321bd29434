//! The audit webhook: where the kube-apiserver sends `EventList` batches.
//!
//! Who may connect is settled before any body is read ([`super::gate`]). Then,
//! each with its own answer and nothing written before the last: JSON content
//! type and no browser `Origin` (415/403), room in the memory budget for bodies
//! (503), body within the cap and the time limit (413/408), a body that is an
//! `audit.k8s.io/v1` `EventList` (400; an unreadable item inside one is kept as
//! a malformed-event trace and an oversized event loses its bodies, so one bad
//! event never costs the batch), room in the spool (503, the apiserver backs off
//! and retries). Only a batch that is in the spool and fsynced gets 200. A batch
//! already stored (an apiserver retry) is acknowledged without being stored
//! again. While the process stops, new batches get 503 with `Retry-After`: the
//! apiserver sends them again, to another replica or after the restart.

use super::gate::{AuthPolicy, Gate, REFUSAL_DRAIN, authenticate, drain_stream, reject_from};
use super::intake::{InFlight, Intake, IntakeError};
use crate::spool::AppendError;
use crate::telemetry::Metrics;
use crate::trace;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Bounds on what one request may take.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Time to receive a whole body.
    pub body_timeout: Duration,
    /// Bytes of bodies held at once, over all requests.
    pub inflight_body_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: 32 << 20,
            body_timeout: Duration::from_secs(60),
            inflight_body_bytes: 128 << 20,
        }
    }
}

/// The memory budget for request bodies, in KiB permits.
#[derive(Clone)]
pub struct BodyBudget {
    sem: Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        let total = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).clamp(1, 1 << 30);
        BodyBudget {
            sem: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        }
    }

    /// Reserves room for `bytes` more of a body, waiting at most `wait`; the
    /// room is added to `held`. A body larger than the whole budget gets none.
    async fn reserve(
        &self,
        bytes: usize,
        wait: Duration,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> bool {
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        let want = bytes.div_ceil(1024).saturating_sub(have);
        if want == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(want) else { return false };
        if have + want > self.total as usize {
            return false;
        }
        let Ok(Ok(more)) = tokio::time::timeout(wait, self.sem.clone().acquire_many_owned(n)).await else {
            return false;
        };
        match held {
            Some(p) => p.merge(more),
            None => *held = Some(more),
        }
        true
    }
}

/// State of the webhook handler.
#[derive(Clone)]
pub struct Ingest {
    /// Where the batches go (it also knows the largest event kept whole).
    pub intake: Intake,
    pub limits: RequestLimits,
    pub bodies: BodyBudget,
    pub auth: Arc<AuthPolicy>,
}

/// The webhook router; tests drive it without a socket.
pub fn app(ingest: Ingest) -> Router {
    let gate = Gate {
        auth: ingest.auth.clone(),
        metrics: ingest.intake.metrics().clone(),
        source: trace::Source::Webhook,
    };
    Router::new()
        .route("/", post(receive))
        .route("/audit", post(receive))
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
        .layer(axum::middleware::from_fn_with_state(gate, authenticate))
}

fn reject(metrics: &Metrics, status: StatusCode, reason: &'static str, message: String) -> Response {
    reject_from(metrics, trace::Source::Webhook, status, reason, message)
}

/// Adds `Retry-After` to a refusal the apiserver should retry.
fn retry_after(mut r: Response, seconds: &'static str) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static(seconds));
    r
}

/// A media type is JSON (`application/json`, with or without parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// How long a request waits for room in the body budget.
const BUDGET_WAIT: Duration = Duration::from_secs(2);

async fn receive(State(st): State<Ingest>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let _in_flight = InFlight::new(st.intake.lifecycle());
    let body = match admit(&st, &headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    // Room in the shared budget is taken as the bytes arrive (a slow or
    // stalled body holds only what it sent), and kept until the batch is stored.
    let mut room = None;
    let body = match read_body(&st, body, &mut room).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let received = jiff::Timestamp::now();
    let key = super::dedupe::batch_key(&body);
    let stored = st.intake.take(&body, trace::Source::Webhook, received, key).await;
    answer(st.intake.metrics(), stored)
}

/// What is refused before a byte of the body is kept: another media type, a
/// replica starting or stopping, a declared length over the cap. A refused
/// body is read (and dropped) in part, so the caller sees the answer rather
/// than a reset connection.
async fn admit(
    st: &Ingest,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Body, Response> {
    let metrics = st.intake.metrics();
    let lifecycle = st.intake.lifecycle();
    if !is_json(headers) {
        drain_stream(
            &mut body.into_data_stream(),
            REFUSAL_DRAIN,
            Duration::from_secs(1),
        )
        .await;
        return Err(reject(
            metrics,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "Content-Type must be application/json".into(),
        ));
    }
    if !lifecycle.accepting() {
        drain_stream(&mut body.into_data_stream(), 1 << 20, Duration::from_secs(5)).await;
        let (reason, message) = if lifecycle.is_draining() {
            ("stopping", "this replica is stopping; send the batch again")
        } else {
            ("starting", "this replica is starting; send the batch again")
        };
        let r = reject(metrics, StatusCode::SERVICE_UNAVAILABLE, reason, message.into());
        return Err(retry_after(r, "1"));
    }
    let max = st.limits.max_body_bytes;
    let declared = {
        use axum::body::HttpBody as _;
        body.size_hint().exact()
    };
    if let Some(n) = declared
        && n > max as u64
    {
        // An authenticated caller: read and drop a bounded part of the body so
        // it sees the 413 rather than a reset connection.
        drain_stream(
            &mut body.into_data_stream(),
            max.saturating_mul(4),
            Duration::from_secs(5),
        )
        .await;
        return Err(reject(
            metrics,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body too large: {n} bytes, more than {max}"),
        ));
    }
    Ok(body)
}

/// Reads the body within the cap, the time limit and the memory budget (room
/// held in `room`); a refusal is the answer.
async fn read_body(
    st: &Ingest,
    body: axum::body::Body,
    room: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Bytes, Response> {
    let metrics = st.intake.metrics();
    let max = st.limits.max_body_bytes;
    let mut stream = body.into_data_stream();
    let read = read_capped(&mut stream, max, Some((&st.bodies, &mut *room)));
    match tokio::time::timeout(st.limits.body_timeout, read).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(ReadError::TooLarge)) => {
            room.take();
            drain_stream(&mut stream, max.saturating_mul(4), Duration::from_secs(5)).await;
            Err(reject(
                metrics,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body too large: more than {max} bytes"),
            ))
        }
        Ok(Err(ReadError::Busy)) => {
            let r = reject(
                metrics,
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many audit batches being received at once; send it again".into(),
            );
            Err(retry_after(r, "1"))
        }
        Ok(Err(ReadError::Broken(e))) => Err(reject(
            metrics,
            StatusCode::BAD_REQUEST,
            "unreadable",
            format!("reading body: {e}"),
        )),
        Err(_) => Err(reject(
            metrics,
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body was not received within {} s",
                st.limits.body_timeout.as_secs()
            ),
        )),
    }
}

/// The answer to a body the intake took (200 only once it is in the spool) or
/// refused: 400 for a body that is not an EventList, 503 with `Retry-After`
/// for what a retry can fix, 413 for a record over the spool's limit.
fn answer(metrics: &Metrics, stored: Result<super::intake::Stored, IntakeError>) -> Response {
    match stored {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(IntakeError::Malformed(e)) => {
            reject(metrics, StatusCode::BAD_REQUEST, "malformed", e.to_string())
        }
        Err(e @ IntakeError::Busy) => {
            let r = reject(metrics, StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string());
            retry_after(r, "1")
        }
        Err(IntakeError::Append(e)) => {
            match e {
                e @ AppendError::Full { .. } => {
                    let r = reject(
                        metrics,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "spool_full",
                        e.to_string(),
                    );
                    retry_after(r, "5")
                }
                e @ AppendError::TooLarge(_) => {
                    reject(metrics, StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
                }
                // The disk is full: like a full spool, the apiserver should retry.
                AppendError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    let r = reject(
                        metrics,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "disk_full",
                        format!("spool disk full: {e}"),
                    );
                    retry_after(r, "5")
                }
                e => reject(
                    metrics,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "spool_error",
                    e.to_string(),
                ),
            }
        }
    }
}

enum ReadError {
    TooLarge,
    /// No room in the body budget.
    Busy,
    Broken(axum::Error),
}

/// Reads a body of at most `max` bytes; past the cap it stops reading. With a
/// budget, room for each chunk is reserved before it is kept.
async fn read_capped(
    stream: &mut axum::body::BodyDataStream,
    max: usize,
    mut budget: Option<(&BodyBudget, &mut Option<tokio::sync::OwnedSemaphorePermit>)>,
) -> Result<Bytes, ReadError> {
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        if buf.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        if let Some((b, held)) = budget.as_mut()
            && !b.reserve(buf.len() + chunk.len(), BUDGET_WAIT, held).await
        {
            return Err(ReadError::Busy);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::gate::{PeerAuth, constant_time_eq};
    use crate::spool::{Position, Spool, entries};
    use crate::telemetry::RejectLabels;
    use axum::body::Body;
    use axum::extract::Extension;
    use axum::http::Request;
    use tower::ServiceExt;

    const BATCH: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
        {"auditID":"a1","stage":"ResponseComplete","verb":"create","user":{"username":"alice"},
         "objectRef":{"resource":"secrets","namespace":"d","name":"s","apiVersion":"v1"},
         "requestObject":{"kind":"Secret","data":{"k":"c2VjcmV0"}},"responseStatus":{"code":201},
         "requestReceivedTimestamp":"2026-11-24T01:00:00Z"}]}"#;

    fn ingest(dir: &std::path::Path, max_bytes: u64, anonymous: bool) -> Ingest {
        ingest_events(dir, max_bytes, anonymous, 1 << 20)
    }

    fn ingest_events(
        dir: &std::path::Path,
        max_bytes: u64,
        anonymous: bool,
        max_event_bytes: usize,
    ) -> Ingest {
        Ingest {
            intake: crate::source::intake::test_intake(dir, max_bytes, max_event_bytes),
            limits: RequestLimits::default(),
            bodies: BodyBudget::new(8 << 20),
            auth: Arc::new(AuthPolicy {
                tokens: vec!["s3cret-token".into()],
                allow_anonymous: anonymous,
            }),
        }
    }

    async fn post(router: Router, body: &str, token: Option<&str>, cert: bool) -> (StatusCode, String) {
        let mut req = Request::post("/audit").header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .extension(PeerAuth { client_cert: cert })
            .body(Body::from(body.to_string()))
            .unwrap();
        let router = router.layer(Extension(PeerAuth { client_cert: cert }));
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let text = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&text).to_string())
    }

    #[tokio::test]
    async fn accepted_batch_is_spooled_without_secret_values() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, false);
        let spool = st.intake.spool().clone();
        let (code, _) = post(app(st.clone()), BATCH, Some("s3cret-token"), false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(spool.head(), 1);
        let rec = spool.reader(Position::default()).next_record().unwrap().unwrap();
        let text = String::from_utf8_lossy(&rec.payload);
        assert!(text.contains(r#""trace_id":"a1""#));
        assert!(
            !text.contains("c2VjcmV0"),
            "secret value reached the spool: {text}"
        );
        let (code, _) = post(app(st), BATCH, None, true).await;
        assert_eq!(code, StatusCode::OK, "a verified client certificate is enough");
    }

    #[tokio::test]
    async fn bad_requests_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, false);
        let spool = st.intake.spool().clone();
        let mut small = st.clone();
        small.limits.max_body_bytes = 2048;
        let router = app(small);
        let cases = [
            (
                BATCH.to_string(),
                None,
                StatusCode::UNAUTHORIZED,
                "client certificate",
            ),
            (
                BATCH.to_string(),
                Some("wrong"),
                StatusCode::UNAUTHORIZED,
                "bearer token",
            ),
            (
                "{not json".to_string(),
                Some("s3cret-token"),
                StatusCode::BAD_REQUEST,
                "malformed JSON",
            ),
            (
                BATCH.replace("EventList", "Event"),
                Some("s3cret-token"),
                StatusCode::BAD_REQUEST,
                "expected kind EventList",
            ),
            (
                BATCH.replace("audit.k8s.io/v1", "audit.k8s.io/v1beta1"),
                Some("s3cret-token"),
                StatusCode::BAD_REQUEST,
                "expected apiVersion",
            ),
            (
                r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}"#.to_string(),
                Some("s3cret-token"),
                StatusCode::BAD_REQUEST,
                "malformed JSON",
            ),
            (
                format!("{}{}", BATCH, " ".repeat(4096)),
                Some("s3cret-token"),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too large",
            ),
        ];
        for (body, token, status, message) in cases {
            let (code, text) = post(router.clone(), &body, token, false).await;
            assert_eq!(code, status, "{message}: {text}");
            assert!(text.contains(message), "expected {message:?} in {text:?}");
        }
        assert_eq!(spool.head(), 0, "nothing was spooled");
        let metrics = &st.intake.metrics();
        let count = |r: &'static str| {
            metrics
                .batches_rejected
                .get_or_create(&RejectLabels {
                    source: "webhook",
                    reason: r,
                })
                .get()
        };
        assert_eq!(count("unauthenticated"), 2);
        assert_eq!(count("malformed"), 4);
        assert_eq!(count("too_large"), 1);
    }

    #[tokio::test]
    async fn full_spool_answers_503() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 900, true);
        let (code, _) = post(app(st.clone()), BATCH, None, false).await;
        assert_eq!(code, StatusCode::OK);
        let router = app(st.clone());
        let other = BATCH.replace(r#""auditID":"a1""#, r#""auditID":"a2""#);
        let req = Request::post("/audit")
            .header("content-type", "application/json")
            .body(Body::from(other.clone()))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "5");
        assert_eq!(st.intake.spool().head(), 1);
        // What was refused is not remembered as stored: the retry is stored.
        assert_eq!(st.intake.dedupe().events(), 1);
    }

    fn spooled_ids(spool: &Spool) -> Vec<String> {
        let mut r = spool.reader(Position::default());
        let mut ids = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            for (_, line) in entries::iter(&rec.payload) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                ids.push(format!(
                    "{}:{}",
                    v["trace_id"].as_str().unwrap(),
                    v["trace_name"].as_str().unwrap()
                ));
            }
        }
        ids
    }

    #[tokio::test]
    async fn a_resent_batch_is_stored_once_and_a_reused_audit_id_is_not_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, true);
        for _ in 0..3 {
            let (code, _) = post(app(st.clone()), BATCH, None, false).await;
            assert_eq!(code, StatusCode::OK, "a retry is acknowledged");
        }
        assert_eq!(st.intake.spool().head(), 1, "stored once");
        assert_eq!(st.intake.metrics().events_deduplicated.get(), 2);
        // The same Audit-ID on a different operation (a client can choose it).
        let other = BATCH.replace(r#""verb":"create""#, r#""verb":"delete""#);
        let (code, _) = post(app(st.clone()), &other, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            spooled_ids(st.intake.spool()),
            ["a1:create secrets", "a1:delete secrets"]
        );
        // A different batch is a different batch, even when it repeats an event
        // (the apiserver re-sends whole batches; the query engine shows a repeated
        // event once).
        let both = BATCH.replace(
            "]}",
            &format!(
                ",{}]}}",
                &other[other.find("{\"auditID").unwrap()..other.rfind("]}").unwrap()]
                    .replace("delete", "patch")
            ),
        );
        let (code, _) = post(app(st.clone()), &both, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            spooled_ids(st.intake.spool()),
            [
                "a1:create secrets",
                "a1:delete secrets",
                "a1:create secrets",
                "a1:patch secrets"
            ]
        );
        // And stored once however often it is re-sent.
        let (code, _) = post(app(st.clone()), &both, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(st.intake.spool().head(), 3);
    }

    #[tokio::test]
    async fn a_stopping_webhook_turns_batches_away_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, true);
        st.intake.lifecycle().start_draining();
        let router = app(st.clone());
        let req = Request::post("/audit")
            .header("content-type", "application/json")
            .body(Body::from(BATCH))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        assert_eq!(st.intake.spool().head(), 0, "nothing stored while stopping");
        st.intake.lifecycle().settled(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn one_bad_or_huge_event_does_not_cost_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest_events(dir.path(), 64 << 20, true, 64 * 1024);
        let big = "A".repeat(3 << 20);
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
            {{"auditID":"good","verb":"get","stage":"ResponseComplete","requestReceivedTimestamp":"2026-11-24T01:00:00Z"}},
            {{"auditID":"huge","verb":"create","stage":"ResponseComplete","objectRef":{{"resource":"configmaps","apiVersion":"v1"}},
              "requestObject":{{"data":{{"k":"{big}"}}}},"requestReceivedTimestamp":"2026-11-24T01:00:01Z"}},
            {{"auditID":"broken","verb":["not","a","verb"]}},
            {{"auditID":"good2","verb":"list","stage":"ResponseComplete","requestReceivedTimestamp":"2026-11-24T01:00:02Z"}}]}}"#
        );
        let (code, text) = post(app(st.clone()), &body, None, false).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        let mut r = st.intake.spool().reader(Position::default());
        let rec = r.next_record().unwrap().unwrap();
        let lines: Vec<serde_json::Value> = entries::iter(&rec.payload)
            .map(|(_, l)| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "every item is kept");
        assert_eq!(lines[0]["trace_id"], "good");
        assert_eq!(lines[1]["trace_id"], "huge");
        assert_eq!(lines[1]["truncated"], true);
        assert!(lines[1].get("request").is_none());
        assert!(rec.payload.len() < 64 * 1024, "the big body is not stored");
        assert_eq!(lines[2]["trace_name"], "malformed event");
        assert_eq!(lines[2]["trace_rating"], "warning");
        assert!(lines[2]["message"].as_str().unwrap().contains("invalid type"));
        assert_eq!(lines[3]["trace_id"], "good2");
        assert_eq!(st.intake.metrics().events_malformed.get(), 1);
        assert_eq!(st.intake.metrics().events_truncated.get(), 1);
    }

    #[tokio::test]
    async fn browsers_and_other_media_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, true);
        let send = |ctype: Option<&'static str>, origin: Option<&'static str>| {
            let router = app(st.clone());
            async move {
                let mut req = Request::post("/audit");
                if let Some(c) = ctype {
                    req = req.header("content-type", c);
                }
                if let Some(o) = origin {
                    req = req.header("origin", o);
                }
                router
                    .oneshot(req.body(Body::from(BATCH)).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(
            send(Some("text/plain"), None).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(send(None, None).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            send(Some("application/json"), Some("https://evil.example")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(st.intake.spool().head(), 0);
        assert_eq!(
            send(Some("application/json; charset=utf-8"), None).await,
            StatusCode::OK
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
