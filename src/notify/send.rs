//! The HTTPS webhook target: TLS with the system roots plus an optional CA
//! bundle, custom headers, an HMAC signature, and retries with exponential
//! backoff on 5xx, 429, timeouts and connection errors (honoring `Retry-After`).

use super::message::{ID_HEADER, SIGNATURE_HEADER, sign};
use crate::api::{MessageFormat, Webhook};
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::time::Duration;

/// Longest wait between two attempts (also the cap on `Retry-After`).
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("webhook url {0:?} is not a valid https:// URL")]
    Url(String),
    #[error("caBundle: {0}")]
    Ca(String),
    #[error("header {0:?} is not a valid HTTP header")]
    Header(String),
}

/// One attempt's failure, and whether another attempt may help.
#[derive(Debug)]
pub struct AttemptError {
    pub message: String,
    pub retry: bool,
    pub retry_after: Option<Duration>,
}

/// A configured webhook.
pub struct Target {
    uri: Uri,
    pub format: MessageFormat,
    headers: Vec<(HeaderName, HeaderValue)>,
    hmac: Option<Vec<u8>>,
    pub max_attempts: u32,
    timeout: Duration,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<bytes::Bytes>>,
}

impl Target {
    pub fn new(w: &Webhook, hmac: Option<Vec<u8>>) -> Result<Target, TargetError> {
        let uri: Uri = w.url.parse().map_err(|_| TargetError::Url(w.url.clone()))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(TargetError::Url(w.url.clone()));
        }
        let mut roots = system_roots();
        if let Some(pem) = &w.ca_bundle {
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| TargetError::Ca(e.to_string()))?;
                roots.add(c).map_err(|e| TargetError::Ca(e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(TargetError::Ca("no PEM certificate in it".into()));
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        let mut headers = Vec::new();
        for (k, v) in &w.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| TargetError::Header(k.clone()))?;
            let value = HeaderValue::from_str(v).map_err(|_| TargetError::Header(k.clone()))?;
            headers.push((name, value));
        }
        Ok(Target {
            uri,
            format: w.format,
            headers,
            hmac,
            max_attempts: w.max_attempts.max(1),
            timeout: Duration::from_secs(u64::from(w.timeout_seconds.max(1))),
            client,
        })
    }

    /// One attempt.
    pub async fn attempt(&self, body: &[u8], content_type: &str, id: &str) -> Result<(), AttemptError> {
        let mut req = Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .header(ID_HEADER, id)
            .header(http::header::USER_AGENT, "kubetrail");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(key) = &self.hmac {
            req = req.header(SIGNATURE_HEADER, sign(key, body));
        }
        let req = req
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))
            .map_err(|e| AttemptError {
                message: e.to_string(),
                retry: false,
                retry_after: None,
            })?;
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => {
                return Err(AttemptError {
                    message: format!("no answer within {} s", self.timeout.as_secs()),
                    retry: true,
                    retry_after: None,
                });
            }
            Ok(Err(e)) => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message = format!("{message}: {s}");
                    source = s.source();
                }
                return Err(AttemptError {
                    message,
                    retry: true,
                    retry_after: None,
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Read (a bounded part of) the body so the connection can be reused.
        let _ = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect()).await;
        if status.is_success() {
            return Ok(());
        }
        Err(AttemptError {
            message: format!("webhook answered {status}"),
            retry: status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT,
            retry_after,
        })
    }
}

/// The system's CA certificates (unreadable ones are skipped).
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    roots
}

/// The wait before attempt `n + 1` (n ≥ 1): 0.5 s doubling, capped; a
/// `Retry-After` the receiver asked for wins when it is longer.
pub fn retry_delay(n: u32, retry_after: Option<Duration>) -> Duration {
    let backoff =
        Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(16))).min(MAX_DELAY);
    retry_after.map_or(backoff, |r| r.min(MAX_DELAY).max(backoff))
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    Some(Duration::from_millis(
        at.as_millisecond().saturating_sub(now.as_millisecond()).max(0) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_honor_retry_after() {
        assert_eq!(retry_delay(1, None), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None), Duration::from_secs(1));
        assert_eq!(retry_delay(4, None), Duration::from_secs(4));
        assert_eq!(retry_delay(30, None), MAX_DELAY);
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(retry_delay(1, Some(Duration::from_secs(3600))), MAX_DELAY);
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn only_https_urls_and_valid_cas() {
        let w = |url: &str, ca: Option<&str>| Webhook {
            url: url.into(),
            format: MessageFormat::CloudEvents,
            hmac_secret_ref: None,
            headers: Default::default(),
            ca_bundle: ca.map(String::from),
            max_attempts: 3,
            timeout_seconds: 5,
        };
        crate::install_crypto_provider();
        assert!(Target::new(&w("https://example.com/x", None), None).is_ok());
        assert!(matches!(
            Target::new(&w("http://example.com/x", None), None),
            Err(TargetError::Url(_))
        ));
        assert!(matches!(
            Target::new(&w("https://example.com", Some("nope")), None),
            Err(TargetError::Ca(_))
        ));
    }
}
