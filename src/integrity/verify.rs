//! The check that a trail is whole and untouched: `kubetrail verify` and the
//! leader's continuous check both run [`verify`].
//!
//! Every digest in range is checked against the public keys given (which come
//! from outside the bucket), each writer's chain is followed link by link, every
//! file a digest lists is fetched and hashed, and every trace file that no
//! digest lists is reported. Files delivered in a period whose digest is not
//! written yet are *pending*, not added.

use super::digest::{self, PublicKey, SignedDigest};
use crate::deliver::key;
use crate::store::{DestinationError, ObjectInfo, Store};
use futures::{FutureExt as _, StreamExt as _};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How far back a writer looks for its last digest when its spool lost it.
const RESUME_LOOKBACK_DAYS: i64 = 31;
const DAY_MS: i64 = 86_400_000;

/// The writer's latest digest of `tracker`, searched day by day backwards from
/// `now_ms` (a month at most).
pub async fn latest_digest(
    store: &Store,
    prefix: &str,
    cluster: &str,
    tracker: &str,
    writer: &str,
    now_ms: i64,
) -> Result<Option<(String, SignedDigest)>, DestinationError> {
    let suffix = format!("_{writer}_digest.json");
    for back in 0..RESUME_LOOKBACK_DAYS {
        let listed = store
            .list(&digest_day_prefix(
                prefix,
                cluster,
                tracker,
                now_ms - back * DAY_MS,
            ))
            .await?;
        let mut keys: Vec<&ObjectInfo> = listed
            .iter()
            .filter(|o| is_digest_of(&o.key, cluster, tracker) && o.key.ends_with(&suffix))
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

fn ymd(ms: i64) -> (i16, i8, i8) {
    let dt = jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime();
    (dt.year(), dt.month(), dt.day())
}

fn digest_day_prefix(prefix: &str, cluster: &str, tracker: &str, ms: i64) -> String {
    let (y, m, d) = ymd(ms);
    digest::day_prefix(prefix, cluster, tracker, y, m, d)
}

fn trace_day_prefix(prefix: &str, cluster: &str, tracker: &str, ms: i64) -> String {
    let (y, m, d) = ymd(ms);
    key::day_prefix(prefix, cluster, tracker, y, m, d)
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn is_digest_of(key: &str, cluster: &str, tracker: &str) -> bool {
    let name = file_name(key);
    name.starts_with(&format!("{cluster}_{tracker}_")) && name.ends_with("_digest.json")
}

/// The writer named in a trace file's key, if the name has the layout.
pub fn writer_of(key: &str, cluster: &str, tracker: &str) -> Option<String> {
    let rest = file_name(key).strip_prefix(&format!("{cluster}_{tracker}_"))?;
    // yyyymmddTHHMMSSZ_
    let rest = rest.get(17..)?;
    let (writer, _) = rest.rsplit_once('_')?;
    Some(writer.to_string())
}

/// The start of the UTC day of `ms`.
fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// What to check.
#[derive(Clone, Debug)]
pub struct Request {
    pub prefix: String,
    pub cluster: String,
    pub tracker: String,
    /// Digests whose period overlaps [from, to), and trace files of those days.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Keys that verify signatures, found by their fingerprint.
    pub keys: Vec<PublicKey>,
    /// Start of the oldest day retention keeps: older files and digests are
    /// expired, not missing.
    pub oldest_kept_ms: Option<i64>,
    pub now_ms: i64,
    /// Objects fetched and hashed at once.
    pub parallelism: usize,
    /// Hashes of files already read, by key, with the size and modification
    /// time they had: a file unchanged in both is not fetched again (the
    /// continuous check; S3 sets the modification time, a client cannot).
    pub known: Option<Known>,
    /// Clock skew allowed between writers and the store: a file no digest
    /// lists is pending, not added, while it is younger than its writer's last
    /// digest by less than this.
    pub skew_ms: i64,
}

/// The default [`Request::skew_ms`].
pub const DEFAULT_SKEW_MS: i64 = 60_000;

/// Hashes of files already read: key → (size, modified, SHA-256).
pub type Known = std::sync::Arc<std::sync::Mutex<HashMap<String, (u64, i64, String)>>>;

/// The state of one digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DigestState {
    Valid,
    InvalidSignature,
    Missing,
    ChainBroken,
}

/// The state of one trace file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileState {
    Valid,
    Modified,
    Deleted,
    Added,
    /// Delivered in a period whose digest is not written yet.
    Pending,
}

/// One digest in the report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestReport {
    pub writer: String,
    pub key: String,
    pub period_start: String,
    pub period_end: String,
    pub state: DigestState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub files: usize,
}

/// One trace file in the report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    pub key: String,
    pub writer: String,
    pub state: FileState,
    /// The digest that lists it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Everything `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub digests: Vec<DigestReport>,
    pub files: Vec<FileReport>,
}

/// Counts for the summary line and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub digests: usize,
    pub digests_valid: usize,
    pub files: usize,
    pub files_valid: usize,
    pub modified: usize,
    pub deleted: usize,
    pub added: usize,
    pub pending: usize,
    pub invalid_signature: usize,
    pub missing: usize,
    pub chain_broken: usize,
}

/// Thousands separators: 2,304.
fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for d in &self.digests {
            s.digests += 1;
            match d.state {
                DigestState::Valid => s.digests_valid += 1,
                DigestState::InvalidSignature => s.invalid_signature += 1,
                DigestState::Missing => s.missing += 1,
                DigestState::ChainBroken => s.chain_broken += 1,
            }
        }
        for f in &self.files {
            match f.state {
                FileState::Pending => {
                    s.pending += 1;
                    continue;
                }
                FileState::Valid => s.files_valid += 1,
                FileState::Modified => s.modified += 1,
                FileState::Deleted => s.deleted += 1,
                FileState::Added => s.added += 1,
            }
            s.files += 1;
        }
        s
    }

    /// Whether anything is wrong.
    pub fn ok(&self) -> bool {
        let s = self.summary();
        s.digests == s.digests_valid && s.files == s.files_valid
    }

    /// The first problem, as a condition reason (`FileModified`, `FileMissing`,
    /// `FileAdded`, `DigestInvalid`, `ChainBroken`), with a message.
    pub fn first_problem(&self) -> Option<(&'static str, String)> {
        for d in &self.digests {
            let reason = match d.state {
                DigestState::Valid => continue,
                DigestState::InvalidSignature => "DigestInvalid",
                DigestState::Missing | DigestState::ChainBroken => "ChainBroken",
            };
            return Some((
                reason,
                format!("{}: {}", d.key, d.reason.clone().unwrap_or_default()),
            ));
        }
        for f in &self.files {
            let reason = match f.state {
                FileState::Valid | FileState::Pending => continue,
                FileState::Modified => "FileModified",
                FileState::Deleted => "FileMissing",
                FileState::Added => "FileAdded",
            };
            return Some((reason, f.key.clone()));
        }
        None
    }

    /// `168/168 digests valid, 2,304/2,304 files valid`, and what else there is.
    pub fn summary_line(&self) -> String {
        let s = self.summary();
        let mut line = format!(
            "{}/{} digests valid, {}/{} files valid",
            grouped(s.digests_valid),
            grouped(s.digests),
            grouped(s.files_valid),
            grouped(s.files)
        );
        for (n, what) in [
            (s.invalid_signature, "invalid signature"),
            (s.missing, "missing"),
            (s.chain_broken, "chain broken"),
            (s.modified, "modified"),
            (s.deleted, "deleted"),
            (s.added, "added"),
            (s.pending, "pending (not yet in a digest)"),
        ] {
            if n > 0 {
                line.push_str(&format!(", {} {what}", grouped(n)));
            }
        }
        line
    }
}

/// A digest as fetched.
struct Fetched {
    key: String,
    signed: Result<SignedDigest, String>,
}

/// Checks the trail of one tracker.
pub async fn verify(store: &Store, req: &Request) -> Result<Report, DestinationError> {
    let floor = req.oldest_kept_ms.unwrap_or(i64::MIN).max(day_start(req.from_ms));
    let first_day = day_start(floor.max(req.from_ms.min(req.to_ms)));
    let last_day = day_start(req.to_ms.max(req.from_ms));
    // Digests of two more days: files late in the range may be listed there.
    let digest_last_day = day_start(req.now_ms).min(last_day + 2 * DAY_MS).max(last_day);
    let parallelism = req.parallelism.max(1);

    let digest_days: Vec<i64> = (0..)
        .map(|i| first_day + i * DAY_MS)
        .take_while(|d| *d <= digest_last_day)
        .collect();
    let trace_days: Vec<i64> = digest_days.iter().copied().filter(|d| *d <= last_day).collect();

    let listings = futures::stream::iter(digest_days.iter().copied().map(|day| {
        let p = digest_day_prefix(&req.prefix, &req.cluster, &req.tracker, day);
        async move { store.list(&p).await }.boxed()
    }))
    .buffered(parallelism)
    .collect::<Vec<_>>()
    .await;
    let mut digest_keys = Vec::new();
    for l in listings {
        digest_keys.extend(
            l?.into_iter()
                .filter(|o| is_digest_of(&o.key, &req.cluster, &req.tracker)),
        );
    }
    let names: Vec<String> = digest_keys.iter().map(|o| o.key.clone()).collect();
    let fetched: Vec<Fetched> = futures::stream::iter(names.into_iter().map(|key| {
        async move {
            let bytes = store.get(&key).await?;
            Ok::<_, DestinationError>(Fetched {
                key,
                signed: digest::decode(&bytes).map_err(|e| e.to_string()),
            })
        }
        .boxed()
    }))
    .buffered(parallelism)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;

    let trace_listings = futures::stream::iter(trace_days.iter().copied().map(|day| {
        let p = trace_day_prefix(&req.prefix, &req.cluster, &req.tracker, day);
        async move { store.list(&p).await }.boxed()
    }))
    .buffered(parallelism)
    .collect::<Vec<_>>()
    .await;
    let mut present: BTreeMap<String, ObjectInfo> = BTreeMap::new();
    for l in trace_listings {
        for o in l? {
            present.insert(o.key.clone(), o);
        }
    }

    let keys: HashMap<&str, &PublicKey> = req.keys.iter().map(|k| (k.fingerprint.as_str(), k)).collect();
    let mut report = Report::default();
    let in_range = |start: i64, end: i64| start < req.to_ms && end > req.from_ms;

    // Signatures, then chains per writer.
    struct Good {
        key: String,
        d: SignedDigest,
        start: i64,
        end: i64,
        valid: bool,
    }
    let mut by_writer: BTreeMap<String, Vec<Good>> = BTreeMap::new();
    let fetched_keys: HashSet<&str> = fetched.iter().map(|f| f.key.as_str()).collect();
    for f in &fetched {
        let d = match &f.signed {
            Ok(d) => d,
            Err(e) => {
                report.digests.push(DigestReport {
                    writer: String::new(),
                    key: f.key.clone(),
                    period_start: String::new(),
                    period_end: String::new(),
                    state: DigestState::InvalidSignature,
                    reason: Some(format!("unreadable: {e}")),
                    files: 0,
                });
                continue;
            }
        };
        let start = digest::parse_time(&d.digest.period_start).unwrap_or(0);
        let end = digest::parse_time(&d.digest.period_end).unwrap_or(0);
        let expected_key =
            digest::digest_key(&req.prefix, &req.cluster, &req.tracker, &d.digest.writer, start);
        let problem =
            if expected_key != f.key || d.digest.cluster != req.cluster || d.digest.tracker != req.tracker {
                Some("its content does not belong under its key".to_string())
            } else {
                match keys.get(d.digest.key_fingerprint.as_str()) {
                    None => Some(format!("signed by unknown key {}", d.digest.key_fingerprint)),
                    Some(k) if !digest::check_signature(d, &f.key, k) => {
                        Some("the signature does not verify".into())
                    }
                    Some(_) => None,
                }
            };
        if let Some(reason) = &problem
            && in_range(start, end)
        {
            report.digests.push(DigestReport {
                writer: d.digest.writer.clone(),
                key: f.key.clone(),
                period_start: d.digest.period_start.clone(),
                period_end: d.digest.period_end.clone(),
                state: DigestState::InvalidSignature,
                reason: Some(reason.clone()),
                files: d.digest.files.len(),
            });
        }
        by_writer.entry(d.digest.writer.clone()).or_default().push(Good {
            key: f.key.clone(),
            d: d.clone(),
            start,
            end,
            valid: problem.is_none(),
        });
    }

    let mut listed: HashMap<String, (String, digest::DigestFile)> = HashMap::new();
    let mut latest_end: HashMap<String, i64> = HashMap::new();
    for (writer, chain) in by_writer.iter_mut() {
        chain.sort_by_key(|g| (g.start, g.end));
        for i in 0..chain.len() {
            let g = &chain[i];
            if g.valid {
                let e = latest_end.entry(writer.clone()).or_insert(g.end);
                *e = (*e).max(g.end);
                for f in &g.d.digest.files {
                    listed.insert(f.key.clone(), (g.key.clone(), f.clone()));
                }
            }
            if !in_range(g.start, g.end) || !g.valid {
                continue;
            }
            let link = match (&g.d.digest.previous, i.checked_sub(1).map(|j| &chain[j])) {
                (None, _) => Ok(()),
                (Some(p), Some(before)) if p.key == before.key => {
                    if p.sha256 != before.d.sha256 || p.signature != before.d.signature {
                        Err(format!(
                            "the previous digest {} is not the one this digest names",
                            p.key
                        ))
                    } else if before.end != g.start {
                        Err(format!(
                            "the previous digest ends at {}, this one starts at {}",
                            before.d.digest.period_end, g.d.digest.period_start
                        ))
                    } else {
                        Ok(())
                    }
                }
                (Some(p), _) => {
                    let p_start = digest::parse_time(&previous_period_start(&p.key)).unwrap_or(i64::MIN);
                    if fetched_keys.contains(p.key.as_str()) {
                        Err(format!("the previous digest {} is out of order", p.key))
                    } else if p_start >= first_day && p_start >= floor {
                        report.digests.push(DigestReport {
                            writer: writer.clone(),
                            key: p.key.clone(),
                            period_start: previous_period_start(&p.key),
                            period_end: g.d.digest.period_start.clone(),
                            state: DigestState::Missing,
                            reason: Some(format!("named by {} but not in the bucket", g.key)),
                            files: 0,
                        });
                        Err(format!("the previous digest {} is missing", p.key))
                    } else {
                        // Before the range (or expired): not checked.
                        Ok(())
                    }
                }
            };
            report.digests.push(DigestReport {
                writer: writer.clone(),
                key: g.key.clone(),
                period_start: g.d.digest.period_start.clone(),
                period_end: g.d.digest.period_end.clone(),
                state: if link.is_ok() {
                    DigestState::Valid
                } else {
                    DigestState::ChainBroken
                },
                reason: link.err(),
                files: g.d.digest.files.len(),
            });
        }
    }

    // Files listed by a valid digest: present and unchanged?
    let trace_first = first_day;
    let trace_end = last_day + DAY_MS;
    let key_day = |k: &str| -> Option<i64> {
        // …/KubeTrail/{cluster}/{yyyy}/{mm}/{dd}/{tracker}/name
        let parts: Vec<&str> = k.rsplitn(5, '/').collect();
        if parts.len() < 5 {
            return None;
        }
        let (d, m, y) = (parts[2], parts[3], parts[4].rsplit('/').next()?);
        super::key_day_ms(y, m, d)
    };
    let mut to_hash = Vec::new();
    for (k, (digest_key, f)) in &listed {
        let Some(day) = key_day(k) else { continue };
        if day < trace_first || day >= trace_end {
            continue;
        }
        let writer = writer_of(k, &req.cluster, &req.tracker).unwrap_or_default();
        match present.get(k) {
            None => report.files.push(FileReport {
                key: k.clone(),
                writer,
                state: FileState::Deleted,
                digest: Some(digest_key.clone()),
            }),
            Some(o) if o.size != f.size => report.files.push(FileReport {
                key: k.clone(),
                writer,
                state: FileState::Modified,
                digest: Some(digest_key.clone()),
            }),
            Some(o) => to_hash.push((k.clone(), writer, digest_key.clone(), f.sha256.clone(), o.clone())),
        }
    }
    let known = req.known.clone();
    let hashed = futures::stream::iter(to_hash.into_iter().map(|(k, writer, dk, want, o)| {
        let known = known.clone();
        async move {
            let cached = known.as_ref().and_then(|m| {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&k)
                    .filter(|(size, modified, _)| {
                        *size == o.size && *modified == o.modified_ms && o.modified_ms != 0
                    })
                    .map(|(_, _, sha)| sha.clone())
            });
            let got = match cached {
                Some(sha) => sha,
                None => {
                    let bytes = store.get(&k).await?;
                    let sha = tokio::task::spawn_blocking(move || digest::sha256_hex(&bytes))
                        .await
                        .unwrap_or_default();
                    if let Some(m) = &known {
                        m.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(k.clone(), (o.size, o.modified_ms, sha.clone()));
                    }
                    sha
                }
            };
            Ok::<_, DestinationError>(FileReport {
                state: if got == want {
                    FileState::Valid
                } else {
                    FileState::Modified
                },
                key: k,
                writer,
                digest: Some(dk),
            })
        }
        .boxed()
    }))
    .buffer_unordered(parallelism)
    .collect::<Vec<_>>()
    .await;
    for h in hashed {
        report.files.push(h?);
    }

    // Files no digest lists.
    for (k, o) in &present {
        if listed.contains_key(k) {
            continue;
        }
        let writer = writer_of(k, &req.cluster, &req.tracker).unwrap_or_default();
        let covered_until = latest_end.get(&writer).copied().unwrap_or(i64::MIN);
        let state = if o.modified_ms >= covered_until.saturating_sub(req.skew_ms) {
            FileState::Pending
        } else {
            FileState::Added
        };
        report.files.push(FileReport {
            key: k.clone(),
            writer,
            state,
            digest: None,
        });
    }
    report
        .digests
        .sort_by(|a, b| (&a.writer, &a.period_start, &a.key).cmp(&(&b.writer, &b.period_start, &b.key)));
    report.files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}

/// The period start a digest key names (`…_{yyyymmddTHHMMSSZ}_{writer}_digest.json`),
/// RFC 3339; empty if the key has another layout.
fn previous_period_start(key: &str) -> String {
    let name = file_name(key);
    let Some(t) = name.find(|c: char| c.is_ascii_digit()).and_then(|_| {
        name.split('_')
            .find(|p| p.len() == 16 && p.as_bytes()[8] == b'T' && p.ends_with('Z'))
    }) else {
        return String::new();
    };
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[9..11],
        &t[11..13],
        &t[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_counts() {
        assert_eq!(
            writer_of(
                "p/KubeTrail/c/2026/11/24/t/c_t_20261124T010101Z_kubetrail-0_0a1b-000000000042-00007.jsonl.gz",
                "c",
                "t"
            )
            .as_deref(),
            Some("kubetrail-0")
        );
        assert_eq!(writer_of("p/x.jsonl.gz", "c", "t"), None);
        assert_eq!(
            previous_period_start("p/KubeTrail-Digest/c/2026/11/24/t/c_t_20261124T010000Z_w_digest.json"),
            "2026-11-24T01:00:00Z"
        );
        assert_eq!(grouped(2304), "2,304");
        assert_eq!(grouped(168), "168");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}
