//! The S3 client of a destination and its health check.
//!
//! One client per destination, built from the Tracker's `destination` and the
//! credentials it names. Errors are classified into a few stable reasons that show
//! up as condition reasons, event reasons and metric labels.

use crate::api::{Destination, Problem, Reason};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, timeout::TimeoutConfig};
use aws_sdk_s3::error::SdkError;
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
