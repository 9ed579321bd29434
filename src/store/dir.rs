//! A local directory as a destination (the `serve` quick start, benchmarks and
//! tests): object keys are relative paths, and a write is durable before it
//! returns.

use super::{DestinationError, ObjectInfo, ObjectStore};
use std::path::PathBuf;

impl ObjectStore for PathBuf {
    async fn check(&self) -> Result<(), DestinationError> {
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, DestinationError> {
        let root = self;
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

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.join(prefix)) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    out.push(format!("{prefix}{}/", e.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, DestinationError> {
        std::fs::read(self.join(key))
            .map_err(|e| DestinationError::Unreachable(format!("reading {key}: {e}")))
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        match std::fs::remove_file(self.join(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DestinationError::Unreachable(format!("removing {key}: {e}"))),
        }
    }

    /// A directory keeps no content type or metadata.
    async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
        _metadata: &[(&str, &str)],
    ) -> Result<(), DestinationError> {
        let path = self.join(key);
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
