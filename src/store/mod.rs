//! Where trace files live: an S3 bucket, or a local directory (the `serve` quick
//! start). The one place that turns a destination and its credentials into
//! something that reads and writes — delivery, queries, the Tracker check and
//! the command line all open a [`Store`] here.

pub mod dir;
pub mod key;
pub mod s3;
pub mod trail;

pub use s3::{DestinationError, StaticCredentials};
pub use trail::Trail;

use crate::api::{Compression, Destination, Problem, Reason};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};
use std::path::PathBuf;

/// What kubetrail needs of a destination. Every backend implements it (`s3`:
/// an S3 bucket; `dir`: a local directory) and [`Store`] holds one. A new
/// destination (GCS, Azure Blob) is a module implementing this and a `Store`
/// variant.
pub trait ObjectStore {
    /// Checks that the destination can be used (S3: `HeadBucket`).
    fn check(&self) -> impl Future<Output = Result<(), DestinationError>> + Send;

    /// Every object under `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectInfo>, DestinationError>> + Send;

    /// The "folders" directly under `prefix` (which ends with `/`), each with
    /// its trailing `/`, sorted.
    fn list_dirs(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, DestinationError>> + Send;

    /// Reads one object.
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, DestinationError>> + Send;

    /// Removes one object; a missing one is not an error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), DestinationError>> + Send;

    /// Writes one object with a content type and user metadata; writing a key
    /// again replaces it. Durable when it returns.
    fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> impl Future<Output = Result<(), DestinationError>> + Send;

    /// Has the destination itself expire objects under `prefix/` after `days`,
    /// with a rule named `id` beside the destination's other rules. Destinations
    /// without lifecycle rules say why not (retention then deletes expired days).
    fn set_expiration(
        &self,
        id: &str,
        prefix: &str,
        days: u32,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (id, prefix, days);
        async { Err("no lifecycle rules on this destination".to_string()) }
    }
}

/// A destination, ready to read and write.
#[derive(Clone, Debug)]
pub enum Store {
    S3(s3::Bucket),
    Dir(PathBuf),
}

/// Runs `$call` on the backend of `$store`, bound to `$b`.
macro_rules! on_backend {
    ($store:expr, $b:ident => $call:expr) => {
        match $store {
            Store::S3($b) => $call,
            Store::Dir($b) => $call,
        }
    };
}

fn content_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "application/gzip",
        Compression::Zstd => "application/zstd",
        Compression::None => "application/x-ndjson",
    }
}

/// An object in a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was last written (Unix ms), as the store reports it.
    pub modified_ms: i64,
}

impl Store {
    /// Checks that the destination can be used (S3: `HeadBucket`).
    pub async fn check(&self) -> Result<(), DestinationError> {
        on_backend!(self, b => b.check().await)
    }

    /// Lists every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, DestinationError> {
        on_backend!(self, b => b.list(prefix).await)
    }

    /// The "folders" directly under `prefix` (which ends with `/`), each with
    /// its trailing `/`, sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        on_backend!(self, b => b.list_dirs(prefix).await)
    }

    /// Reads one object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, DestinationError> {
        on_backend!(self, b => b.get(key).await)
    }

    /// Reads one object, or `None` when there is none under exactly `key`.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Vec<u8>>, DestinationError> {
        if !self.list(key).await?.iter().any(|o| o.key == key) {
            return Ok(None);
        }
        self.get(key).await.map(Some)
    }

    /// Removes one object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        on_backend!(self, b => b.delete(key).await)
    }

    /// Writes one trace file. Writing the same key again replaces it (idempotent).
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        compression: Compression,
    ) -> Result<(), DestinationError> {
        self.put_object(key, body, content_type(compression), &[]).await
    }

    /// Writes one object with a content type and user metadata (S3
    /// `x-amz-meta-*`; a directory keeps no metadata).
    pub async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), DestinationError> {
        on_backend!(self, b => b.put_object(key, body, content_type, metadata).await)
    }

    /// Sets the lifecycle rule `id` to expire `prefix/` after `days`, where the
    /// destination has lifecycle rules ([`ObjectStore::set_expiration`]).
    pub async fn set_expiration(&self, id: &str, prefix: &str, days: u32) -> Result<(), String> {
        on_backend!(self, b => b.set_expiration(id, prefix, days).await)
    }
}

/// Where a destination's credentials come from.
pub enum Credentials<'a> {
    /// The default AWS chain (IRSA, pod identity, environment, instance profile).
    Default,
    /// Given keys (the `serve` configuration, the benchmark).
    Static(StaticCredentials),
    /// The Secret the destination names (`credentialsSecretRef`), read from
    /// `namespace` (the operator's own: no cluster-wide Secret access); the
    /// default chain when it names none.
    Secret {
        client: &'a kube::Client,
        namespace: &'a str,
    },
}

/// Why a destination cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("credentials Secret {namespace}/{name} not found")]
    CredentialsNotFound { namespace: String, name: String },
    #[error("credentials Secret {namespace}/{name} lacks key {key}")]
    CredentialsInvalid {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("reading credentials Secret: {0}")]
    Kube(#[source] kube::Error),
}

impl StoreError {
    /// Condition and event reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::CredentialsNotFound { .. } => Reason::CredentialsNotFound,
            Self::CredentialsInvalid { .. } => Reason::CredentialsInvalid,
            Self::Destination(e) => e.reason(),
            Self::Kube(_) => Reason::KubeError,
        }
    }

    /// The reason and message, for a condition.
    pub fn problem(&self) -> Problem {
        Problem::new(self.reason(), self.to_string())
    }
}

/// Opens the S3 store of `dest` with its credentials.
pub async fn open(dest: &Destination, creds: Credentials<'_>) -> Result<Store, StoreError> {
    let creds = match creds {
        Credentials::Default => None,
        Credentials::Static(c) => Some(c),
        Credentials::Secret { client, namespace } => match &dest.credentials_secret_ref {
            Some(r) => Some(read_credentials(client, namespace, &r.name).await?),
            None => None,
        },
    };
    Ok(Store::S3(s3::Bucket::connect(dest, creds).await))
}

/// Reads static S3 credentials from the Secret `namespace/name` (keys
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`).
pub async fn read_credentials(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<StaticCredentials, StoreError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(StoreError::Kube)?
        .ok_or_else(|| StoreError::CredentialsNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let value = |key: &'static str| -> Option<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let missing = |key: &'static str| StoreError::CredentialsInvalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key,
    };
    Ok(StaticCredentials {
        access_key_id: value(ACCESS_KEY_ID).ok_or_else(|| missing(ACCESS_KEY_ID))?,
        secret_access_key: value(SECRET_ACCESS_KEY).ok_or_else(|| missing(SECRET_ACCESS_KEY))?,
        session_token: value(SESSION_TOKEN),
    })
}
