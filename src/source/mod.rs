//! The audit webhook: where the kube-apiserver sends `EventList` batches.
//!
//! Who may connect is settled before any body is read: a client certificate must
//! chain to the configured CA and name an allowed subject (else the TLS handshake
//! fails), or the request must carry a valid bearer token (else 401 and the
//! connection closes, the body unread). Then, each with its own answer and
//! nothing written before the last: JSON content type and no browser `Origin`
//! (415/403), room in the memory budget for bodies (503), body within the cap
//! and the time limit (413/408), a body that is an `audit.k8s.io/v1` `EventList`
//! (400; an unreadable item inside one is kept as a malformed-event trace and an
//! oversized event loses its bodies, so one bad event never costs the batch),
//! room in the spool (503, the apiserver backs off and retries). Only a batch
//! that is in the spool and fsynced gets 200. A batch already stored (an
//! apiserver retry) is acknowledged without being stored again ([`dedupe`]).
//! While the process stops, new batches get 503 with `Retry-After`: the apiserver
//! sends them again, to another replica or after the restart.
//!
//! Connections are bounded in number, in time (TLS handshake, headers, body,
//! idle) and, for HTTP/2, in streams, so what clients do cannot grow memory
//! without bound.

pub mod admission;
pub mod dedupe;
pub mod logfile;
pub mod mutate;

use crate::audit;
use crate::spool::{AppendError, Spool, entries};
use crate::telemetry::{Metrics, ReasonLabels, RejectLabels};
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

/// Whether the connection presented a client certificate the CA verified and
/// whose subject is allowed (the TLS layer refuses any other).
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerAuth {
    pub client_cert: bool,
}

/// Bounds on what one request may take.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Largest event kept whole; a bigger one loses its bodies.
    pub max_event_bytes: usize,
    /// Time to receive a whole body.
    pub body_timeout: Duration,
    /// Bytes of bodies held at once, over all requests.
    pub inflight_body_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: 32 << 20,
            max_event_bytes: 1 << 20,
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
    pub spool: Spool,
    pub limits: RequestLimits,
    pub bodies: BodyBudget,
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
pub fn app(ingest: Ingest) -> Router {
    let gate = Gate {
        auth: ingest.auth.clone(),
        metrics: ingest.metrics.clone(),
        source: trace::Source::Webhook,
    };
    Router::new()
        .route("/", post(receive))
        .route("/audit", post(receive))
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
        .layer(axum::middleware::from_fn_with_state(gate, authenticate))
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

fn reject(metrics: &Metrics, status: StatusCode, reason: &'static str, message: String) -> Response {
    reject_from(metrics, trace::Source::Webhook, status, reason, message)
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
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// How much of a refused caller's body is read before the answer: enough for a
/// misconfigured client's batch to see the refusal, little for a flood.
const REFUSAL_DRAIN: usize = 64 * 1024;

/// How long a request waits for room in the body budget.
const BUDGET_WAIT: Duration = Duration::from_secs(2);

async fn receive(State(st): State<Ingest>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let _in_flight = InFlight::new(&st.lifecycle);
    if !is_json(&headers) {
        drain_stream(
            &mut body.into_data_stream(),
            REFUSAL_DRAIN,
            Duration::from_secs(1),
        )
        .await;
        return reject(
            &st.metrics,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "Content-Type must be application/json".into(),
        );
    }
    if !st.lifecycle.accepting() {
        // Read (and drop) a bounded part of the body so the caller gets the 503
        // instead of a reset connection.
        drain_stream(&mut body.into_data_stream(), 1 << 20, Duration::from_secs(5)).await;
        let (reason, message) = if st.lifecycle.is_draining() {
            ("stopping", "this replica is stopping; send the batch again")
        } else {
            ("starting", "this replica is starting; send the batch again")
        };
        let r = reject(
            &st.metrics,
            StatusCode::SERVICE_UNAVAILABLE,
            reason,
            message.into(),
        );
        return retry_after(r, "1");
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
        return reject(
            &st.metrics,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body too large: {n} bytes, more than {max}"),
        );
    }
    // Room in the shared budget is taken as the bytes arrive (a slow or
    // stalled body holds only what it sent), and kept until the batch is stored.
    let mut room = None;
    let mut stream = body.into_data_stream();
    let read = read_capped(&mut stream, max, Some((&st.bodies, &mut room)));
    let body = match tokio::time::timeout(st.limits.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(ReadError::TooLarge)) => {
            drop(room);
            drain_stream(&mut stream, max.saturating_mul(4), Duration::from_secs(5)).await;
            return reject(
                &st.metrics,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body too large: more than {max} bytes"),
            );
        }
        Ok(Err(ReadError::Busy)) => {
            let r = reject(
                &st.metrics,
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many audit batches being received at once; send it again".into(),
            );
            return retry_after(r, "1");
        }
        Ok(Err(ReadError::Broken(e))) => {
            return reject(
                &st.metrics,
                StatusCode::BAD_REQUEST,
                "unreadable",
                format!("reading body: {e}"),
            );
        }
        Err(_) => {
            return reject(
                &st.metrics,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body was not received within {} s",
                    st.limits.body_timeout.as_secs()
                ),
            );
        }
    };
    let received = jiff::Timestamp::now();
    let key = dedupe::batch_key(&body);
    let encoded = match encode(
        &body,
        &st.cluster,
        trace::Source::Webhook,
        received,
        key,
        st.limits.max_event_bytes,
    ) {
        Ok(v) => v,
        Err(e) => return reject(&st.metrics, StatusCode::BAD_REQUEST, "malformed", e.to_string()),
    };
    drop(body);
    match spool_batch(
        &st.spool,
        &st.dedupe,
        &st.metrics,
        encoded,
        key,
        received.as_millisecond(),
    )
    .await
    {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(StoreError::Busy) => {
            let r = reject(
                &st.metrics,
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "an identical batch is still being stored; send it again".into(),
            );
            retry_after(r, "1")
        }
        Err(StoreError::Append(e)) => {
            match e {
                e @ AppendError::Full { .. } => {
                    let r = reject(
                        &st.metrics,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "spool_full",
                        e.to_string(),
                    );
                    retry_after(r, "5")
                }
                e @ AppendError::TooLarge(_) => reject(
                    &st.metrics,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    e.to_string(),
                ),
                // The disk is full: like a full spool, the apiserver should retry.
                AppendError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    let r = reject(
                        &st.metrics,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "disk_full",
                        format!("spool disk full: {e}"),
                    );
                    retry_after(r, "5")
                }
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

/// How storing a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Appended (and fsynced) as spool record `seq`.
    Spooled(u64),
    /// Stored before (a retry): not stored again.
    Copy,
    /// No events in it.
    Empty,
}

/// Why a batch was not stored.
#[derive(Debug)]
pub enum StoreError {
    /// An identical batch is still being stored by someone else.
    Busy,
    Append(AppendError),
}

/// Stores an encoded batch once: a batch stored before (same de-duplication
/// `key`) is a retry and is acknowledged without storing it again; one being
/// stored right now by another caller is waited for. Shared by every source.
pub async fn spool_batch(
    spool: &Spool,
    dedupe: &dedupe::Window,
    metrics: &Metrics,
    encoded: Encoded,
    key: u64,
    received_ms: i64,
) -> Result<Stored, StoreError> {
    let events = encoded.events;
    metrics.events_received.inc_by(u64::from(events));
    let waited = Instant::now();
    loop {
        match dedupe.admit(key) {
            Admit::New => break,
            Admit::Copy => {
                metrics.events_deduplicated.inc_by(u64::from(events));
                tracing::debug!(events, "batch stored already (a retry); not stored again");
                return Ok(Stored::Copy);
            }
            Admit::Wait if waited.elapsed() < DEDUPE_WAIT => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Admit::Wait => return Err(StoreError::Busy),
        }
    }
    if events == 0 {
        dedupe.release(key);
        return Ok(Stored::Empty);
    }
    match spool
        .append(encoded.payload, events, Some(key), received_ms)
        .await
    {
        Ok(seq) => {
            dedupe.confirm(key, events, received_ms);
            metrics.events_spooled.inc_by(u64::from(events));
            metrics.events_malformed.inc_by(u64::from(encoded.malformed));
            metrics.events_truncated.inc_by(u64::from(encoded.truncated));
            metrics.spool_bytes.set(spool.bytes() as i64);
            if encoded.malformed > 0 || encoded.truncated > 0 {
                tracing::warn!(
                    seq,
                    events,
                    malformed = encoded.malformed,
                    truncated = encoded.truncated,
                    "audit batch spooled with malformed or oversized events"
                );
            } else {
                tracing::debug!(seq, events, "audit batch spooled");
            }
            Ok(Stored::Spooled(seq))
        }
        Err(e) => {
            dedupe.release(key);
            Err(StoreError::Append(e))
        }
    }
}

enum ReadError {
    TooLarge,
    /// No room in the body budget.
    Busy,
    Broken(axum::Error),
}

/// Reads and drops up to `limit` bytes of a body being refused (for at most
/// `wait`), so the caller sees the answer rather than a reset connection.
async fn drain_stream(stream: &mut axum::body::BodyDataStream, limit: usize, wait: Duration) {
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

/// A batch's traces encoded as one spool record payload.
pub struct Encoded {
    pub payload: Vec<u8>,
    pub events: u32,
    /// Items kept as malformed-event traces.
    pub malformed: u32,
    /// Events whose bodies were dropped for size.
    pub truncated: u32,
}

/// Parses a batch and encodes its traces as one spool record payload; every
/// trace's routing metadata carries the batch's de-duplication `key`. An item
/// that is not a readable event is kept as a malformed-event trace; an event
/// over `max_event_bytes` loses its bodies (and, if still too big, is kept as a
/// malformed-event trace).
pub fn encode(
    body: &[u8],
    cluster: &str,
    source: trace::Source,
    received: jiff::Timestamp,
    key: u64,
    max_event_bytes: usize,
) -> Result<Encoded, audit::ParseError> {
    let list = audit::parse_event_list(body, max_event_bytes)?;
    let record_time = received.to_string();
    let received_ms = received.as_millisecond();
    let mut payload = Vec::with_capacity(body.len() + body.len() / 8);
    let mut line = Vec::with_capacity(4096);
    let mut meta = Vec::with_capacity(256);
    let mut malformed = 0;
    for item in &list.items {
        line.clear();
        meta.clear();
        let mut m = match item {
            audit::Item::Event(event) => {
                let m = trace::build(event, cluster, source, &record_time, &mut line);
                // Room for the `tracker` field routing adds.
                if line.len() > max_event_bytes.max(4096) {
                    let too_big = audit::Malformed {
                        reason: format!(
                            "event of {} bytes is over the limit of {max_event_bytes} even without its bodies",
                            line.len()
                        ),
                        hash: blake3::hash(&line).to_hex().to_string(),
                        bytes: line.len(),
                    };
                    line.clear();
                    malformed += 1;
                    trace::build_malformed(&too_big, cluster, source, &record_time, received_ms, &mut line)
                } else {
                    m
                }
            }
            audit::Item::Malformed(bad) => {
                malformed += 1;
                trace::build_malformed(bad, cluster, source, &record_time, received_ms, &mut line)
            }
        };
        m.key = key;
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut meta, &m);
        entries::push(&mut payload, &meta, &line);
    }
    let truncated = list
        .items
        .iter()
        .filter(|i| matches!(i, audit::Item::Event(e) if e.truncated))
        .count() as u32;
    Ok(Encoded {
        payload,
        events: list.items.len() as u32,
        malformed,
        truncated,
    })
}

/// TLS settings of the webhook listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs accepted client certificates.
    pub client_ca: Option<PathBuf>,
    /// Subjects (common name or DNS name) a client certificate must carry one
    /// of; `*` accepts any the CA signed.
    pub client_names: Vec<String>,
    /// A client without a certificate may still authenticate with a bearer
    /// token; without tokens the handshake requires a certificate.
    pub certificate_optional: bool,
}

/// Verifies client certificates with the CA (WebPKI) and then their subject
/// against the allowed names, so a certificate the CA issued for something
/// else fails the handshake.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    names: Vec<String>,
}

/// The common names and DNS names of a certificate's subject.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

impl rustls::server::danger::ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if self.names.iter().any(|n| n == "*") {
            return Ok(ok);
        }
        let names = certificate_names(end_entity.as_ref());
        if names.iter().any(|n| self.names.contains(n)) {
            Ok(ok)
        } else {
            tracing::warn!(subject = ?names, allowed = ?self.names, "client certificate refused: subject not allowed");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
            // Certificates are optional at the TLS layer only when a bearer token
            // can be used instead; a presented certificate must verify and name
            // an allowed subject.
            let mut webpki =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if files.certificate_optional {
                webpki = webpki.allow_unauthenticated();
            }
            let inner = webpki.build().map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(NamedClients {
                inner,
                names: files.client_names.clone(),
            }))
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

/// Bounds on connections: how many, and how long each step may take.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; past it, new ones are closed at once.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Time to receive a request's headers (also the wait for the next request
    /// on a kept-alive HTTP/1 connection).
    pub header_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_streams: 16,
        }
    }
}

/// A connection's bytes, with the time of the last one seen either way.
struct Watched<T> {
    io: T,
    last: Arc<std::sync::atomic::AtomicU64>,
    start: Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts an open connection for as long as it lives.
struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.webhook_connections.dec();
    }
}

fn closed(metrics: &Metrics, reason: &str) {
    metrics
        .webhook_connections_closed
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
}

/// Serves one connection's HTTP (1.1 or 2) within the limits.
async fn serve_http<T>(io: T, router: Router, peer: PeerAuth, limits: &ConnectionLimits, metrics: &Metrics)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let io = Watched {
        io,
        last: last.clone(),
        start,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(64))
        .max_send_buf_size(256 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let svc = TowerToHyperService::new(router.layer(Extension(peer)));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = tokio::time::sleep(Duration::from_secs(1)), if !closing => {
                let quiet = (start.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
                if quiet >= idle_ms {
                    closed(metrics, "idle");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "webhook connection ended with an error");
    }
}

/// Serves the webhook on `listener` (HTTPS when `tls` is set) until the process ends.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsFiles>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) -> Result<(), TlsError> {
    let mut tls = tls.map(TlsState::new).transpose()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a webhook connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            closed(&metrics, "limit");
            tracing::debug!(%peer, "webhook connection limit reached; connection closed");
            drop(tcp);
            continue;
        };
        metrics.webhook_connections.inc();
        let open = OpenConnection {
            _permit: permit,
            metrics: metrics.clone(),
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_mut().map(TlsState::current);
        let router = router.clone();
        let limits = limits.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _open = open;
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            serve_http(stream, router, PeerAuth { client_cert }, &limits, &metrics).await
                        }
                        Ok(Err(e)) => {
                            closed(&metrics, "handshake_failed");
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            closed(&metrics, "handshake_timeout");
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
                None => serve_http(tcp, router, PeerAuth::default(), &limits, &metrics).await,
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
            limits: RequestLimits::default(),
            bodies: BodyBudget::new(8 << 20),
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
        let spool = st.spool.clone();
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
        let metrics = &st.metrics;
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
            let (code, _) = post(app(st.clone()), BATCH, None, false).await;
            assert_eq!(code, StatusCode::OK, "a retry is acknowledged");
        }
        assert_eq!(st.spool.head(), 1, "stored once");
        assert_eq!(st.metrics.events_deduplicated.get(), 2);
        // The same Audit-ID on a different operation (a client can choose it).
        let other = BATCH.replace(r#""verb":"create""#, r#""verb":"delete""#);
        let (code, _) = post(app(st.clone()), &other, None, false).await;
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
        let (code, _) = post(app(st.clone()), &both, None, false).await;
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
        let (code, _) = post(app(st.clone()), &both, None, false).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(st.spool.head(), 3);
    }

    #[tokio::test]
    async fn a_stopping_webhook_turns_batches_away_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let st = ingest(dir.path(), 1 << 20, true);
        st.lifecycle.start_draining();
        let router = app(st.clone());
        let req = Request::post("/audit")
            .header("content-type", "application/json")
            .body(Body::from(BATCH))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        assert_eq!(st.spool.head(), 0, "nothing stored while stopping");
        st.lifecycle.settled(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn one_bad_or_huge_event_does_not_cost_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = ingest(dir.path(), 64 << 20, true);
        st.limits.max_event_bytes = 64 * 1024;
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
        let mut r = st.spool.reader(Position::default());
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
        assert_eq!(st.metrics.events_malformed.get(), 1);
        assert_eq!(st.metrics.events_truncated.get(), 1);
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
        assert_eq!(st.spool.head(), 0);
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
