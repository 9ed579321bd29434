//! Where a tracker's files are written: an S3 bucket, or a local directory (the
//! `serve` quick start).

use super::s3::{DestinationError, classify};
use crate::api::{Compression, Destination, Encryption};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use std::path::PathBuf;

/// A destination, ready to write to.
#[derive(Clone, Debug)]
pub enum Sink {
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
}

impl Sink {
    /// Lists every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, DestinationError> {
        match self {
            Sink::S3 { client, dest } => {
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
                        });
                    }
                    token = page.next_continuation_token().map(String::from);
                    if token.is_none() {
                        return Ok(out);
                    }
                }
            }
            Sink::Dir(root) => {
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
                                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                                if !key.ends_with(".partial") {
                                    out.push(ObjectInfo { key, size });
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

    /// Reads one object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, DestinationError> {
        match self {
            Sink::S3 { client, dest } => {
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
            Sink::Dir(root) => std::fs::read(root.join(key))
                .map_err(|e| DestinationError::Unreachable(format!("reading {key}: {e}"))),
        }
    }

    /// Writes one object. Writing the same key again replaces it (idempotent).
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        compression: Compression,
    ) -> Result<(), DestinationError> {
        match self {
            Sink::S3 { client, dest } => {
                let mut req = client
                    .put_object()
                    .bucket(&dest.bucket)
                    .key(key)
                    .content_type(content_type(compression))
                    .body(ByteStream::from(body));
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
            Sink::Dir(root) => {
                let path = root.join(key);
                let result = (|| {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    let tmp = path.with_extension("partial");
                    std::fs::write(&tmp, &body)?;
                    std::fs::rename(&tmp, &path)
                })();
                result.map_err(|e| DestinationError::Unreachable(format!("writing {}: {e}", path.display())))
            }
        }
    }
}
