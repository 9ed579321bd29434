//! Where trace files live: an S3 bucket, or a local directory (the `serve` quick
//! start). The one place that turns a destination and its credentials into
//! something that reads and writes — delivery, queries, the Tracker check and
//! the command line all open a [`Store`] here.

pub mod s3;

pub use s3::{DestinationError, StaticCredentials};

use crate::api::{Compression, Destination, Encryption, Problem, Reason};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN, classify};
use std::path::PathBuf;

/// A destination, ready to read and write.
#[derive(Clone, Debug)]
pub enum Store {
    S3 {
        client: aws_sdk_s3::Client,
        dest: Box<Destination>,
    },
    Dir(PathBuf),
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
        match self {
            Store::S3 { client, dest } => s3::check_bucket(client, dest).await,
            Store::Dir(_) => Ok(()),
        }
    }

    /// Lists every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, DestinationError> {
        match self {
            Store::S3 { client, dest } => {
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
            Store::Dir(root) => {
                // Walk the deepest directory the prefix names, then match keys.
                let dir = match prefix.rfind('/') {
                    Some(i) => root.join(&prefix[..i]),
                    None => root.clone(),
                };
                let mut out = Vec::new();
                let mut stack = vec![dir];
                while let Some(d) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        let path = e.path();
                        if path.is_dir() {
                            stack.push(path);
                        } else if let Ok(rel) = path.strip_prefix(root) {
                            let key = rel.to_string_lossy().replace('\\', "/");
                            if key.starts_with(prefix) {
                                let meta = e.metadata().ok();
                                let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
                                let modified_ms = meta
                                    .and_then(|m| m.modified().ok())
                                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                                    .map(|d| d.as_millis() as i64)
                                    .unwrap_or(0);
                                if !key.ends_with(".partial") {
                                    out.push(ObjectInfo {
                                        key,
                                        size,
                                        modified_ms,
                                    });
                                }
                            }
                        }
                    }
                }
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            }
        }
    }

    /// The "folders" directly under `prefix` (which ends with `/`), each with
    /// its trailing `/`, sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        match self {
            Store::S3 { client, dest } => {
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
            Store::Dir(root) => {
                let mut out = Vec::new();
                if let Ok(entries) = std::fs::read_dir(root.join(prefix)) {
                    for e in entries.flatten() {
                        if e.path().is_dir() {
                            out.push(format!("{prefix}{}/", e.file_name().to_string_lossy()));
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// Reads one object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, DestinationError> {
        match self {
            Store::S3 { client, dest } => {
                let resp = client
                    .get_object()
                    .bucket(&dest.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| classify(e, dest))?;
                let body = resp
                    .body
                    .collect()
                    .await
                    .map_err(|e| DestinationError::Unreachable(format!("reading {key}: {e}")))?;
                Ok(body.into_bytes().to_vec())
            }
            Store::Dir(root) => std::fs::read(root.join(key))
                .map_err(|e| DestinationError::Unreachable(format!("reading {key}: {e}"))),
        }
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
        match self {
            Store::S3 { client, dest } => client
                .delete_object()
                .bucket(&dest.bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, dest)),
            Store::Dir(root) => match std::fs::remove_file(root.join(key)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(DestinationError::Unreachable(format!("removing {key}: {e}"))),
            },
        }
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
        match self {
            Store::S3 { client, dest } => {
                let mut req = client
                    .put_object()
                    .bucket(&dest.bucket)
                    .key(key)
                    .content_type(content_type)
                    .body(ByteStream::from(body));
                for (k, v) in metadata {
                    req = req.metadata(*k, *v);
                }
                match dest.encryption {
                    Some(Encryption::Aes256) => {
                        req = req.server_side_encryption(ServerSideEncryption::Aes256)
                    }
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
            Store::Dir(root) => {
                let path = root.join(key);
                // Durable before the caller moves its cursor: the file's bytes,
                // then its name (and any new directory's), are fsynced.
                let result = (|| {
                    use std::io::Write as _;
                    if let Some(parent) = path.parent() {
                        let mut missing = Vec::new();
                        let mut d = parent;
                        while !d.exists() {
                            missing.push(d);
                            match d.parent() {
                                Some(p) => d = p,
                                None => break,
                            }
                        }
                        std::fs::create_dir_all(parent)?;
                        for dir in missing.iter().rev() {
                            if let Some(up) = dir.parent() {
                                std::fs::File::open(up)?.sync_all()?;
                            }
                        }
                    }
                    let tmp = path.with_extension("partial");
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&body)?;
                    f.sync_all()?;
                    drop(f);
                    std::fs::rename(&tmp, &path)?;
                    if let Some(parent) = path.parent() {
                        std::fs::File::open(parent)?.sync_all()?;
                    }
                    Ok::<(), std::io::Error>(())
                })();
                result.map_err(|e| DestinationError::Unreachable(format!("writing {}: {e}", path.display())))
            }
        }
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
    Ok(Store::S3 {
        client: s3::client(dest, creds).await,
        dest: Box::new(dest.clone()),
    })
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
