//! The audit webhook: where the kube-apiserver sends `EventList` batches.
//!
//! Order of checks, each with its own answer and nothing written before the last:
//! caller authenticated (401), body within the cap (413, enforced while reading),
//! a well-formed `audit.k8s.io/v1` `EventList` with an `auditID` on every event
//! (400), room in the spool (503, the apiserver backs off and retries). Only a
//! batch that is in the spool and fsynced gets 200. Events already stored (an
//! apiserver retry) are acknowledged without being stored again ([`dedupe`]).
//! While the process stops, new batches get 503 with `Retry-After`: the apiserver
//! sends them again, to another replica or after the restart.

pub mod dedupe;

use crate::audit;
use crate::spool::{AppendError, Spool, entries};
use crate::telemetry::{Metrics, ReasonLabels};
use crate::trace;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dedupe::{Admit, Window};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Who may send audit batches.
#[derive(Clone, Debug, Default)]
pub struct AuthPolicy {
    /// Bearer tokens accepted (from `--token-file`).
    pub tokens: Vec<String>,
    /// Accept callers without credentials. Only for a loopback listener in `serve`.
    pub allow_anonymous: bool,
}

/// Whether the connection presented a client certificate the CA verified.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerAuth {
    pub client_cert: bool,
}

/// State of the webhook handler.
#[derive(Clone)]
pub struct Ingest {
    pub spool: Spool,
    /// Largest accepted body; set by [`app`].
    pub max_body_bytes: usize,
    pub metrics: Arc<Metrics>,
    pub cluster: Arc<str>,
    pub auth: Arc<AuthPolicy>,
    pub dedupe: Arc<Window>,
    pub lifecycle: Lifecycle,
}

/// Whether the webhook takes batches, and how many it is handling. It takes
/// them only while the process is ready (its trackers listen: a batch accepted
/// before would be behind a new tracker's starting point) and not stopping.
#[derive(Clone, Default)]
pub struct Lifecycle {
    ready: crate::telemetry::Readiness,
    draining: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

impl Lifecycle {
    /// Takes batches while `ready` says so.
    pub fn new(ready: crate::telemetry::Readiness) -> Lifecycle {
        Lifecycle {
            ready,
            ..Lifecycle::default()
        }
    }

    /// Takes batches from now on (benchmarks and tests without a readiness gate).
    pub fn open() -> Lifecycle {
        let l = Lifecycle::default();
        l.ready.set_ready(true);
        l
    }

    fn accepting(&self) -> bool {
        self.ready.is_ready() && !self.is_draining()
    }

    /// From now on new batches get 503 with `Retry-After`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Waits (at most `limit`) until no batch is being handled, so everything
    /// acknowledged is in the spool before delivery drains it.
    pub async fn settled(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a batch in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(l: &Lifecycle) -> InFlight {
        l.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(l.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a batch waits for an identical one being stored by another request.
const DEDUPE_WAIT: Duration = Duration::from_secs(10);

/// The webhook router; tests drive it without a socket.
pub fn app(mut ingest: Ingest, max_body_bytes: usize) -> Router {
    ingest.max_body_bytes = max_body_bytes;
    Router::new()
        .route("/", post(receive))
        .route("/audit", post(receive))
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
}

fn reject(metrics: &Metrics, status: StatusCode, reason: &str, message: String) -> Response {
    metrics
        .batches_rejected
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
    tracing::warn!(status = status.as_u16(), reason, %message, "audit batch refused");
    (status, message).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares without leaking where two tokens differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn receive(
    State(st): State<Ingest>,
    peer: Option<Extension<PeerAuth>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let _in_flight = InFlight::new(&st.lifecycle);
    if !st.lifecycle.accepting() {
        let _ = read_capped(body, 1024 * 1024).await;
        let (reason, message) = if st.lifecycle.is_draining() {
            ("stopping", "this replica is stopping; send the batch again")
        } else {
            ("starting", "this replica is starting; send the batch again")
        };
        let mut r = reject(
            &st.metrics,
            StatusCode::SERVICE_UNAVAILABLE,
            reason,
            message.into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    let cert = peer.map(|p| p.client_cert).unwrap_or(false);
    let token = bearer(&headers)
        .map(|t| {
            st.auth
                .tokens
                .iter()
                .any(|ok| constant_time_eq(ok.as_bytes(), t.as_bytes()))
        })
        .unwrap_or(false);
    if !(cert || token || st.auth.allow_anonymous) {
        // Read (and drop) a bounded part of the body so the caller gets the 401
        // instead of a reset connection.
        let _ = read_capped(body, 1024 * 1024).await;
        return reject(
            &st.metrics,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a client certificate signed by the configured CA or a valid bearer token is required".into(),
        );
    }
    let body = match read_capped(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            return reject(
                &st.metrics,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body too large: more than {} bytes", st.max_body_bytes),
            );
        }
        Err(ReadError::Broken(e)) => {
            return reject(
                &st.metrics,
                StatusCode::BAD_REQUEST,
                "unreadable",
                format!("reading body: {e}"),
            );
        }
    };
    let received = jiff::Timestamp::now();
    let key = dedupe::batch_key(&body);
    let encoded = match encode(&body, &st.cluster, received, key) {
        Ok(v) => v,
        Err(e) => return reject(&st.metrics, StatusCode::BAD_REQUEST, "malformed", e.to_string()),
    };
    let events = encoded.events;
    st.metrics.events_received.inc_by(u64::from(events));
    // A batch stored before is a retry; one being stored by another request
    // right now waits for that request's outcome.
    let waited = Instant::now();
    loop {
        match st.dedupe.admit(key) {
            Admit::New => break,
            Admit::Copy => {
                st.metrics.events_deduplicated.inc_by(u64::from(events));
                tracing::debug!(events, "batch stored already (a retry); not stored again");
                return (StatusCode::OK, "").into_response();
            }
            Admit::Wait if waited.elapsed() < DEDUPE_WAIT => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Admit::Wait => {
                let mut r = reject(
                    &st.metrics,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "an identical batch is still being stored; send it again".into(),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return r;
            }
        }
    }
    if events == 0 {
        st.dedupe.release(key);
        return (StatusCode::OK, "").into_response();
    }
    match st
        .spool
        .append(encoded.payload, events, Some(key), received.as_millisecond())
        .await
    {
        Ok(seq) => {
            st.dedupe.confirm(key, events, received.as_millisecond());
            st.metrics.events_spooled.inc_by(u64::from(events));
            st.metrics.spool_bytes.set(st.spool.bytes() as i64);
            tracing::debug!(seq, events, "audit batch spooled");
            (StatusCode::OK, "").into_response()
        }
        Err(e) => {
            st.dedupe.release(key);
            match e {
                e @ AppendError::Full { .. } => {
                    let mut r = reject(
                        &st.metrics,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "spool_full",
                        e.to_string(),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                    r
                }
                e @ AppendError::TooLarge(_) => reject(
                    &st.metrics,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    e.to_string(),
                ),
                e => reject(
                    &st.metrics,
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
    Broken(axum::Error),
}

/// Reads a body of at most `max` bytes. Past the cap, the rest is read and
/// dropped (up to 4× the cap) so the client gets a clean 413 rather than a reset
/// connection; memory holds at most `max` bytes either way.
async fn read_capped(body: axum::body::Body, max: usize) -> Result<Bytes, ReadError> {
    use axum::body::HttpBody as _;
    // Content-Length, when sent, sizes the buffer once.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(0);
    let mut buf = Vec::with_capacity(expected.min(max));
    let mut stream = body.into_data_stream();
    let mut over = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        if over > 0 || buf.len() + chunk.len() > max {
            over += chunk.len();
            buf = Vec::new();
            if over > max.saturating_mul(4) {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if over > 0 {
        return Err(ReadError::TooLarge);
    }
    Ok(Bytes::from(buf))
}

/// A batch's traces encoded as one spool record payload.
pub struct Encoded {
    pub payload: Vec<u8>,
    pub events: u32,
}

/// Parses a batch and encodes its traces as one spool record payload; every
/// trace's routing metadata carries the batch's de-duplication `key`.
pub fn encode(
    body: &[u8],
    cluster: &str,
    received: jiff::Timestamp,
    key: u64,
) -> Result<Encoded, audit::ParseError> {
    let list = audit::parse_event_list(body)?;
    let record_time = received.to_string();
    let mut payload = Vec::with_capacity(body.len() + body.len() / 8);
    let mut line = Vec::with_capacity(4096);
    let mut meta = Vec::with_capacity(256);
    for event in &list.items {
        line.clear();
        meta.clear();
        let mut m = trace::build(event, cluster, &record_time, &mut line);
        m.key = key;
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut meta, &m);
        entries::push(&mut payload, &meta, &line);
    }
    Ok(Encoded {
        payload,
        events: list.items.len() as u32,
    })
}

/// TLS settings of the webhook listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs accepted client certificates.
    pub client_ca: Option<PathBuf>,
}

/// Builds a TLS acceptor from the files; re-read when they change.
struct TlsState {
    files: TlsFiles,
    stamp: Vec<Option<SystemTime>>,
    checked: Instant,
    acceptor: TlsAcceptor,
}

fn mtimes(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Errors loading the TLS files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn load_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let file_err = |p: &PathBuf, e: &dyn std::fmt::Display| TlsError::File {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_err(&files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, &e))? {
                roots
                    .add(c.map_err(|e| file_err(ca, &e))?)
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            }
            // Certificates are optional at the TLS layer so a bearer token can be
            // used instead; a presented certificate must verify.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Loads the TLS files once, to report a bad certificate at start.
pub fn check_tls(files: &TlsFiles) -> Result<(), TlsError> {
    load_acceptor(files).map(|_| ())
}

impl TlsState {
    fn new(files: TlsFiles) -> Result<TlsState, TlsError> {
        let acceptor = load_acceptor(&files)?;
        Ok(TlsState {
            stamp: mtimes(&files),
            files,
            checked: Instant::now(),
            acceptor,
        })
    }

    /// The acceptor, rebuilt when a file changed (checked at most once a second).
    fn current(&mut self) -> TlsAcceptor {
        if self.checked.elapsed() >= Duration::from_secs(1) {
            self.checked = Instant::now();
            let stamp = mtimes(&self.files);
            if stamp != self.stamp {
                match load_acceptor(&self.files) {
                    Ok(a) => {
                        tracing::info!("webhook TLS certificate reloaded");
                        self.acceptor = a;
                        self.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading webhook TLS failed; keeping the previous certificate")
                    }
                }
            }
        }
        self.acceptor.clone()
    }
}

/// Serves the webhook on `listener` (HTTPS when `tls` is set) until the process ends.
pub async fn serve(listener: TcpListener, tls: Option<TlsFiles>, router: Router) -> Result<(), TlsError> {
    let mut tls = tls.map(TlsState::new).transpose()?;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a webhook connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_mut().map(TlsState::current);
        let router = router.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let client_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        let svc = TowerToHyperService::new(router.layer(Extension(PeerAuth { client_cert })));
                        builder.serve_connection(TokioIo::new(stream), svc).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let svc = TowerToHyperService::new(router.layer(Extension(PeerAuth::default())));
                    builder.serve_connection(TokioIo::new(tcp), svc).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Config, Position};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const BATCH: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
        {"auditID":"a1","stage":"ResponseComplete","verb":"create","user":{"username":"alice"},
         "objectRef":{"resource":"secrets","namespace":"d","name":"s","apiVersion":"v1"},
         "requestObject":{"kind":"Secret","data":{"k":"c2VjcmV0"}},"responseStatus":{"code":201},
         "requestReceivedTimestamp":"2026-11-24T01:00:00Z"}]}"#;

    fn ingest(dir: &std::path::Path, max_bytes: u64, anonymous: bool) -> Ingest {
        let spool = Spool::open(Config {
            dir: dir.into(),
            max_bytes,
            segment_bytes: 1 << 20,
            fsync: false,
            tracker_budget: 0,
            dedupe_window_ms: 900_000,
            dedupe_max: 1000,
        })
        .unwrap();
        Ingest {
            spool,
            max_body_bytes: 0,
            metrics: Arc::new(Metrics::default()),
            cluster: "c".into(),
            auth: Arc::new(AuthPolicy {
                tokens: vec!["s3cret-token".into()],
                allow_anonymous: anonymous,
            }),
            dedupe: Arc::new(Window::new(Duration::from_secs(900), 1000, vec![], 0)),
            lifecycle: Lifecycle::open(),
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
        let spool = st.spool.clone();
        let (code, _) = post(app(st.clone(), 1 << 20), BATCH, Some("s3cret-token"), false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(spool.head(), 1);
        let rec = spool.reader(Position::default()).next_record().unwrap().unwrap();
        let text = String::from_utf8_lossy(&rec.payload);
        assert!(text.contains(r#""trace_id":"a1""#));
        assert!(
            !text.contains("c2VjcmV0"),
            "secret value reached the spool: {text}"
        );
        let (code, _) = post(app(st, 1 << 20), BATCH, None, true).await;
        assert_eq!(code, StatusCode::OK, "a verified client certificate is enough");
    }

    #[tokio::test]
    async fn bad_requests_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, false);
        let spool = st.spool.clone();
        let router = app(st.clone(), 2048);
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
                BATCH.replace(r#""auditID":"a1","#, ""),
                Some("s3cret-token"),
                StatusCode::BAD_REQUEST,
                "has no auditID",
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
        let metrics = &st.metrics;
        let count = |r: &str| {
            metrics
                .batches_rejected
                .get_or_create(&ReasonLabels { reason: r.into() })
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
        let (code, _) = post(app(st.clone(), 1 << 20), BATCH, None, false).await;
        assert_eq!(code, StatusCode::OK);
        let router = app(st.clone(), 1 << 20);
        let other = BATCH.replace(r#""auditID":"a1""#, r#""auditID":"a2""#);
        let req = Request::post("/audit").body(Body::from(other.clone())).unwrap();
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "5");
        assert_eq!(st.spool.head(), 1);
        // What was refused is not remembered as stored: the retry is stored.
        assert_eq!(st.dedupe.events(), 1);
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
            let (code, _) = post(app(st.clone(), 1 << 20), BATCH, None, false).await;
            assert_eq!(code, StatusCode::OK, "a retry is acknowledged");
        }
        assert_eq!(st.spool.head(), 1, "stored once");
        assert_eq!(st.metrics.events_deduplicated.get(), 2);
        // The same Audit-ID on a different operation (a client can choose it).
        let other = BATCH.replace(r#""verb":"create""#, r#""verb":"delete""#);
        let (code, _) = post(app(st.clone(), 1 << 20), &other, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(spooled_ids(&st.spool), ["a1:create secrets", "a1:delete secrets"]);
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
        let (code, _) = post(app(st.clone(), 1 << 20), &both, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            spooled_ids(&st.spool),
            [
                "a1:create secrets",
                "a1:delete secrets",
                "a1:create secrets",
                "a1:patch secrets"
            ]
        );
        // And stored once however often it is re-sent.
        let (code, _) = post(app(st.clone(), 1 << 20), &both, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(st.spool.head(), 3);
    }

    #[tokio::test]
    async fn a_stopping_webhook_turns_batches_away_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, true);
        st.lifecycle.start_draining();
        let router = app(st.clone(), 1 << 20);
        let req = Request::post("/audit").body(Body::from(BATCH)).unwrap();
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        assert_eq!(st.spool.head(), 0, "nothing stored while stopping");
        st.lifecycle.settled(Duration::from_secs(1)).await;
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
