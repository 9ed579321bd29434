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

impl Sink {
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
