//! The listeners' connections: TLS (client certificates checked against the
//! CA and the allowed names, files reloaded when they change) and HTTP/1.1 or 2
//! bounded in number, in time (TLS handshake, headers, body, idle) and, for
//! HTTP/2, in streams, so what clients do cannot grow memory without bound.

use super::gate::PeerAuth;
use crate::telemetry::{Metrics, ReasonLabels};
use axum::Router;
use axum::extract::Extension;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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
