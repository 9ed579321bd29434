//! An S3 bucket as a destination: the client, the health check, the object
//! calls, lifecycle rules. The only module that speaks `aws_sdk_s3`.
//!
//! One client per destination, built from the Tracker's `destination` and the
//! credentials it names. Errors are classified into a few stable reasons that show
//! up as condition reasons, event reasons and metric labels.

use super::{ObjectInfo, ObjectStore};
use crate::api::{Destination, Encryption, Problem, Reason};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, timeout::TimeoutConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    ServerSideEncryption,
};
use std::time::Duration;

/// Keys of a credentials Secret (the names AWS tools use for the same values).
pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Static credentials read from a Secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a destination cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("bucket {bucket:?} does not exist")]
    BucketNotFound { bucket: String },
    #[error("access to bucket {bucket:?} denied: check the credentials and the bucket policy")]
    AccessDenied { bucket: String },
    #[error("bucket {bucket:?} is in another region than {region:?}")]
    WrongRegion { bucket: String, region: String },
    #[error("endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("S3 error (HTTP {status}): {message}")]
    Other { status: u16, message: String },
}

impl DestinationError {
    /// A stable, low-cardinality reason for conditions, events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Self::BucketNotFound { .. } => Reason::BucketNotFound,
            Self::AccessDenied { .. } => Reason::AccessDenied,
            Self::WrongRegion { .. } => Reason::WrongRegion,
            Self::Unreachable(_) => Reason::DestinationUnreachable,
            Self::Other { .. } => Reason::S3Error,
        }
    }

    /// The reason and message, for a condition.
    pub fn problem(&self) -> Problem {
        Problem::new(self.reason(), self.to_string())
    }

    /// Whether trying again later without a change can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_))
            || matches!(self, Self::Other { status, .. } if *status >= 500 || *status == 429)
    }
}

/// A destination's bucket and the client that reaches it.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: aws_sdk_s3::Client,
    dest: Box<Destination>,
}

impl Bucket {
    /// The bucket of `dest`, reached with `creds` (none: the default AWS chain).
    /// Nothing is sent until the first call.
    pub async fn connect(dest: &Destination, creds: Option<StaticCredentials>) -> Bucket {
        Bucket::from_client(client(dest, creds).await, dest.clone())
    }

    /// The bucket of `dest` through a client built elsewhere (tests).
    pub fn from_client(client: aws_sdk_s3::Client, dest: Destination) -> Bucket {
        Bucket {
            client,
            dest: Box::new(dest),
        }
    }

    /// The destination it was opened for.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Creates the bucket; one that exists already is not an error (the
    /// benchmark's own bucket).
    pub async fn create_if_missing(&self) {
        if let Err(e) = self.client.create_bucket().bucket(&self.dest.bucket).send().await {
            tracing::debug!(error = ?e, "create bucket (may exist)");
        }
    }
}

impl ObjectStore for Bucket {
    async fn check(&self) -> Result<(), DestinationError> {
        check_bucket(&self.client, &self.dest).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, DestinationError> {
        let (client, dest) = (&self.client, &self.dest);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = client.list_objects_v2().bucket(&dest.bucket).prefix(prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| classify(e, dest))?;
            for o in page.contents() {
                out.push(ObjectInfo {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified_ms: o.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0),
                });
            }
            token = page.next_continuation_token().map(String::from);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let (client, dest) = (&self.client, &self.dest);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = client
                .list_objects_v2()
                .bucket(&dest.bucket)
                .prefix(prefix)
                .delimiter("/");
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| classify(e, dest))?;
            out.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(String::from)),
            );
            token = page.next_continuation_token().map(String::from);
            if token.is_none() {
                out.sort();
                return Ok(out);
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, DestinationError> {
        let resp = self
            .client
            .get_object()
            .bucket(&self.dest.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, &self.dest))?;
        let body = resp
            .body
            .collect()
            .await
            .map_err(|e| DestinationError::Unreachable(format!("reading {key}: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        self.client
            .delete_object()
            .bucket(&self.dest.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &self.dest))
    }

    async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), DestinationError> {
        let dest = &self.dest;
        let mut req = self
            .client
            .put_object()
            .bucket(&dest.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body));
        for (k, v) in metadata {
            req = req.metadata(*k, *v);
        }
        match dest.encryption {
            Some(Encryption::Aes256) => req = req.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Encryption::AwsKms) => {
                req = req.server_side_encryption(ServerSideEncryption::AwsKms);
                if let Some(k) = &dest.kms_key_id {
                    req = req.ssekms_key_id(k);
                }
            }
            None => {}
        }
        req.send().await.map(|_| ()).map_err(|e| classify(e, dest))
    }

    async fn set_expiration(&self, id: &str, prefix: &str, days: u32) -> Result<(), String> {
        let (client, dest) = (&self.client, &self.dest);
        let existing = match client
            .get_bucket_lifecycle_configuration()
            .bucket(&dest.bucket)
            .send()
            .await
        {
            Ok(out) => out.rules().to_vec(),
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code().map(String::from));
                if code.as_deref() == Some("NoSuchLifecycleConfiguration") {
                    Vec::new()
                } else {
                    return Err(code.unwrap_or_else(|| error_chain(&e)));
                }
            }
        };
        let rules = merge_rules(&existing, id, prefix, days);
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| e.to_string())?;
        client
            .put_bucket_lifecycle_configuration()
            .bucket(&dest.bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.code().map(String::from).unwrap_or_else(|| error_chain(&e)))
    }
}

/// The bucket's rules with the rule `id` set to expire `prefix/` after `days`;
/// every other rule is kept as it is.
fn merge_rules(existing: &[LifecycleRule], id: &str, prefix: &str, days: u32) -> Vec<LifecycleRule> {
    let mut rules: Vec<LifecycleRule> = existing.iter().filter(|r| r.id() != Some(id)).cloned().collect();
    let own = LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(
            LifecycleRuleFilter::builder()
                .prefix(format!("{}/", prefix.trim_end_matches('/')))
                .build(),
        )
        .expiration(LifecycleExpiration::builder().days(days as i32).build())
        .build();
    if let Ok(own) = own {
        rules.push(own);
    }
    rules
}

/// Builds the S3 client of a destination.
///
/// Without static credentials the default AWS chain (IRSA, pod identity,
/// environment, instance profile) is loaded.
pub async fn client(dest: &Destination, creds: Option<StaticCredentials>) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    let mut builder = match creds {
        Some(c) => aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                c.session_token,
                None,
                "kubetrail-secret",
            )),
        None => {
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(dest.region.clone()))
                .load()
                .await;
            aws_sdk_s3::config::Builder::from(&shared)
        }
    };
    builder = builder
        .region(Region::new(dest.region.clone()))
        .timeout_config(timeouts)
        .force_path_style(dest.force_path_style)
        // Third-party S3 stores do not all speak the newer default checksums.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    if let Some(endpoint) = &dest.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Checks that the bucket exists and the credentials may use it (HeadBucket).
pub async fn check_bucket(client: &aws_sdk_s3::Client, dest: &Destination) -> Result<(), DestinationError> {
    match client.head_bucket().bucket(&dest.bucket).send().await {
        Ok(_) => Ok(()),
        Err(err) => Err(classify(err, dest)),
    }
}

/// Maps an SDK error to a [`DestinationError`].
pub fn classify<E, R>(err: SdkError<E, R>, dest: &Destination) -> DestinationError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let bucket = dest.bucket.clone();
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status_code();
            match status {
                404 => DestinationError::BucketNotFound { bucket },
                401 | 403 => DestinationError::AccessDenied { bucket },
                301 => DestinationError::WrongRegion {
                    bucket,
                    region: dest.region.clone(),
                },
                _ => DestinationError::Other {
                    status,
                    message: error_chain(&err),
                },
            }
        }
        SdkError::ResponseError(response) => DestinationError::Other {
            status: response.raw().status_code(),
            message: error_chain(&err),
        },
        _ => DestinationError::Unreachable(error_chain(&err)),
    }
}

/// The status code of a raw response.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// An error and its sources on one line, for conditions and events.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_rule_is_merged_and_others_are_kept() {
        let other = LifecycleRule::builder()
            .id("logs-90d")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
            .expiration(LifecycleExpiration::builder().days(90).build())
            .build()
            .unwrap();
        let first = merge_rules(std::slice::from_ref(&other), "kubetrail-audit", "trail/prod", 30);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], other);
        assert_eq!(first[1].id(), Some("kubetrail-audit"));
        assert_eq!(first[1].expiration().and_then(|e| e.days()), Some(30));
        assert_eq!(first[1].filter().and_then(|f| f.prefix()), Some("trail/prod/"));
        // Changed days replace the own rule, never duplicate it.
        let again = merge_rules(&first, "kubetrail-audit", "trail/prod", 7);
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].expiration().and_then(|e| e.days()), Some(7));
    }
}
