//! Where a writer picks up its digest chain when its spool lost it: from its
//! published head, following only successors that verify.

use super::{DAY_MS, DEFAULT_SKEW_MS, Request, is_digest_of, trust_problem};
use crate::integrity::digest::{self, PublicKey, SignedDigest};
use crate::store::key::Area;
use crate::store::{DestinationError, ObjectInfo, Trail};
use std::collections::HashMap;

/// How far back a writer looks for its last digest when its spool lost it.
const RESUME_LOOKBACK_DAYS: i64 = 31;

/// The writer's latest digest of `tracker`, searched day by day backwards from
/// `now_ms` (a month at most).
pub async fn latest_digest(
    trail: &Trail,
    writer: &str,
    now_ms: i64,
) -> Result<Option<(String, SignedDigest)>, DestinationError> {
    let store = &trail.store;
    let suffix = format!("_{writer}_digest.json");
    for back in 0..RESUME_LOOKBACK_DAYS {
        let listed = store
            .list(&trail.day(Area::Digests, now_ms - back * DAY_MS))
            .await?;
        let mut keys: Vec<&ObjectInfo> = listed
            .iter()
            .filter(|o| is_digest_of(&o.key, &trail.cluster, &trail.tracker) && o.key.ends_with(&suffix))
            .collect();
        keys.sort_by(|a, b| b.key.cmp(&a.key));
        for o in keys {
            let bytes = store.get(&o.key).await?;
            match digest::decode(&bytes) {
                Ok(d) if d.digest.writer == writer => return Ok(Some((o.key.clone(), d))),
                Ok(_) => {}
                Err(e) => tracing::warn!(key = %o.key, error = %e, "unreadable digest skipped"),
            }
        }
    }
    Ok(None)
}

/// Where a writer without its spool picks up its chain.
#[derive(Debug, Default)]
pub struct Resume {
    /// The digest to chain onto and where its period ended; `None`: a new chain.
    pub from: Option<(digest::Previous, i64)>,
    /// Digests found and not followed (unverifiable, or dated in the future).
    pub untrusted: Vec<String>,
}

/// Where the writer's chain goes on when its spool lost it: from its published
/// head (never from the bucket's newest object), following only successors
/// that name it and verify with `keys`. With no head published (a first start,
/// or an older operator), the writer's newest digest in the bucket, if it
/// verifies and is not dated in the future.
pub async fn resume_point(
    trail: &Trail,
    writer: &str,
    head: Option<&crate::integrity::ChainHead>,
    keys: &[PublicKey],
    now_ms: i64,
) -> Result<Resume, DestinationError> {
    let keys: HashMap<&str, &PublicKey> = keys.iter().map(|k| (k.fingerprint.as_str(), k)).collect();
    let store = &trail.store;
    let req = Request {
        trail: trail.clone(),
        from_ms: 0,
        to_ms: 0,
        keys: Vec::new(),
        oldest_kept_ms: None,
        now_ms,
        parallelism: 1,
        known: None,
        skew_ms: DEFAULT_SKEW_MS,
        heads: None,
        known_writers: Vec::new(),
        period_ms: None,
    };
    let mut out = Resume::default();
    let Some(head) = head else {
        let Some((key, d)) = latest_digest(trail, writer, now_ms).await? else {
            return Ok(out);
        };
        match trust_problem(&req, &keys, &key, &d) {
            Some(why) => out.untrusted.push(format!("{key}: {why}")),
            None => {
                let end = digest::parse_time(&d.digest.period_end).unwrap_or(now_ms);
                out.from = Some((
                    digest::Previous {
                        key,
                        sha256: d.sha256,
                        signature: d.signature,
                    },
                    end,
                ));
            }
        }
        return Ok(out);
    };
    let mut prev = crate::integrity::previous_of(head);
    let Some(mut end) = digest::parse_time(&head.period_end) else {
        out.untrusted
            .push(format!("{}: the published head has no period end", head.key));
        return Ok(out);
    };
    // Successors are named by their period start, the end of the one before.
    while end <= now_ms {
        let next = trail.digest_key(writer, end);
        let Some(bytes) = store.get_opt(&next).await? else {
            break;
        };
        let d = match digest::decode(&bytes) {
            Ok(d) => d,
            Err(e) => {
                out.untrusted.push(format!("{next}: {e}"));
                break;
            }
        };
        let names_prev = d.digest.previous.as_ref() == Some(&prev) && d.digest.writer == writer;
        let problem = trust_problem(&req, &keys, &next, &d)
            .or_else(|| (!names_prev).then(|| "it does not name the published head".to_string()));
        if let Some(why) = problem {
            out.untrusted.push(format!("{next}: {why}"));
            break;
        }
        end = digest::parse_time(&d.digest.period_end).unwrap_or(now_ms);
        prev = digest::Previous {
            key: next,
            sha256: d.sha256,
            signature: d.signature,
        };
    }
    out.from = Some((prev, end));
    Ok(out)
}
