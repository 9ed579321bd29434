//! The pipeline's part of the digest chain: each delivered file is noted in the
//! open period; a sealed period is signed and written as a digest; a writer
//! without its spool resumes the chain from its published head.

use super::worker::{Object, PipelineError, Written, now_ms, open_sink};
use super::*;

impl Worker {
    /// Records a delivered file in the open period of the digest chain; the
    /// caller's next commit persists it together with the delivery.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn note_in_chain(
        &self,
        state: &mut TrackerCursor,
        key: &str,
        size: u64,
        sha256: String,
        events: u64,
        earliest_ms: i64,
        latest_ms: i64,
    ) {
        if self.spec.integrity.is_none() {
            return;
        }
        let chain = state.chain.get_or_insert_with(|| Chain {
            period_start_ms: now_ms(),
            ..Chain::default()
        });
        // A file rewritten after a restart replaces its earlier entry.
        chain.files.retain(|d| d.file.key != key);
        chain.files.push(Delivered {
            file: DigestFile {
                key: key.to_string(),
                size,
                sha256,
                events,
                earliest: digest_file::rfc3339(earliest_ms),
                latest: digest_file::rfc3339(latest_ms),
            },
            delivered_ms: now_ms(),
        });
    }

    /// Picks up the writer's chain: from the cursor file, or else from its
    /// published head (Tracker status, `serve`'s chain-head file) and the
    /// verified digests that follow it, or else (no head published) from its
    /// newest digest in the bucket if that verifies, or else starts a new chain
    /// now. Digests turned off: the chain is dropped, and turned on again it
    /// resumes from the head, its first digest covering the time they were off.
    pub(super) fn resume_chain(
        &self,
        state: &mut TrackerCursor,
        sink: &mut Option<Store>,
    ) -> Result<(), PipelineError> {
        let Some(spec) = &self.spec.integrity else {
            if state.chain.take().is_some() {
                *state = self.spool.commit(&self.spec.name, state)?;
            }
            return Ok(());
        };
        if let Some(chain) = &state.chain {
            // Report the head at once: a new process starts with no report.
            if let Some(previous) = &chain.previous {
                let head = crate::integrity::head_of(
                    &self.id.writer,
                    previous,
                    "",
                    chain.period_start_ms,
                    spec.period,
                );
                self.stats(|s| s.chain_head = Some(head));
            }
            return Ok(());
        }
        let mut keys = spec.anchor.keys.clone();
        keys.push(
            crate::integrity::PublicKey::parse(&spec.signer.public_key_b64())
                .map_err(|e| PipelineError::Chain(e.to_string()))?,
        );
        let found = self.handle.block_on(async {
            let store = open_sink(&self.spec.sink, sink)
                .await
                .map_err(|f| f.problem.to_string())?;
            let trail = crate::store::Trail::new(
                store.clone(),
                &self.spec.prefix,
                &self.id.cluster,
                &self.spec.name,
            );
            crate::integrity::verify::resume_point(
                &trail,
                &self.id.writer,
                spec.anchor.head.as_ref(),
                &keys,
                now_ms(),
            )
            .await
            .map_err(|e| e.to_string())
        });
        // An unreachable bucket must not hold up delivery (nor the backlog
        // accounting): the chain goes on from the head if there is one, else
        // starts anew, and `verify` shows where.
        let found = found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the digests after the chain head failed");
            crate::integrity::verify::Resume {
                from: spec.anchor.head.as_ref().and_then(|h| {
                    digest_file::parse_time(&h.period_end).map(|end| (crate::integrity::previous_of(h), end))
                }),
                untrusted: Vec::new(),
            }
        });
        for why in &found.untrusted {
            tracing::warn!(digest = %why, "a digest in the bucket is not trusted; the chain does not follow it");
            self.metrics.digests_untrusted.get_or_create(&self.labels).inc();
        }
        let chain = match found.from {
            Some((previous, end)) => {
                tracing::info!(key = %previous.key, from_head = spec.anchor.head.is_some(), "digest chain resumed");
                let head = crate::integrity::head_of(&self.id.writer, &previous, "", end, spec.period);
                self.stats(|s| s.chain_head = Some(head));
                Chain {
                    period_start_ms: end.min(now_ms()),
                    previous: Some(previous),
                    files: Vec::new(),
                }
            }
            None => {
                tracing::info!("new digest chain");
                Chain {
                    period_start_ms: now_ms(),
                    ..Chain::default()
                }
            }
        };
        state.chain = Some(chain);
        *state = self.spool.commit(&self.spec.name, state)?;
        Ok(())
    }

    /// Writes the digest of the open period, ending it at `end_ms`, and opens
    /// the next period.
    pub(super) fn write_digest(
        &self,
        state: &mut TrackerCursor,
        end_ms: i64,
        sink: &mut Option<Store>,
    ) -> Result<Written, PipelineError> {
        let (Some(spec), Some(chain)) = (&self.spec.integrity, state.chain.clone()) else {
            return Ok(Written::Yes);
        };
        if end_ms <= chain.period_start_ms {
            return Ok(Written::Yes);
        }
        let end_ms = sealed_end(chain.period_start_ms, end_ms);
        let wait = end_ms - now_ms();
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait as u64));
        }
        let (files, later): (Vec<Delivered>, Vec<Delivered>) =
            chain.files.into_iter().partition(|d| d.delivered_ms < end_ms);
        let key = digest_file::digest_key(
            &self.spec.prefix,
            &self.id.cluster,
            &self.spec.name,
            &self.id.writer,
            chain.period_start_ms,
        );
        let digest = crate::integrity::Digest {
            version: digest_file::VERSION,
            cluster: self.id.cluster.clone(),
            tracker: self.spec.name.clone(),
            writer: self.id.writer.clone(),
            period_start: digest_file::rfc3339(chain.period_start_ms),
            period_end: digest_file::rfc3339(end_ms),
            key_fingerprint: spec.signer.fingerprint().to_string(),
            previous: chain.previous.clone(),
            files: files.into_iter().map(|d| d.file).collect(),
        };
        let (body, signed) = spec
            .signer
            .sign(&digest, &key)
            .map_err(|e| PipelineError::Chain(e.to_string()))?;
        let what = Object::Digest {
            previous: &signed,
            fingerprint: spec.signer.fingerprint(),
        };
        if self.put(&key, body, &what, sink) == Written::Abandoned {
            return Ok(Written::Abandoned);
        }
        tracing::info!(%key, files = digest.files.len(), "digest written");
        self.metrics.digests_written.get_or_create(&self.labels).inc();
        let head = crate::integrity::head_of(
            &self.id.writer,
            &signed,
            spec.signer.fingerprint(),
            end_ms,
            spec.period,
        );
        self.stats(|s| s.chain_head = Some(head));
        state.chain = Some(Chain {
            period_start_ms: end_ms,
            previous: Some(signed),
            files: later,
        });
        *state = self.spool.commit(&self.spec.name, state)?;
        Ok(Written::Yes)
    }
}

/// When a period may end. A digest's key names its period's start to the second,
/// and the next period starts where this one ends: a period ended within the
/// second it began (a tracker edited right after a start drains at once) would
/// give the next digest the same key and be overwritten by it. Such a period
/// ends at the next whole second instead (the writer waits that long).
pub(super) fn sealed_end(period_start_ms: i64, end_ms: i64) -> i64 {
    end_ms.max((period_start_ms.div_euclid(1000) + 1) * 1000)
}
