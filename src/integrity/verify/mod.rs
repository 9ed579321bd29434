//! The check that a trail is whole and untouched: `kubetrail verify` and the
//! leader's continuous check both run [`verify`].
//!
//! Every digest in range is checked against the public keys given (which come
//! from outside the bucket), each writer's chain is followed link by link, every
//! file a digest lists is fetched and hashed, and every trace file that no
//! digest lists is reported. Files delivered in a period whose digest is not
//! written yet are *pending*, not added.

use super::digest::{self, PublicKey, SignedDigest};
use crate::api::{Problem, Reason};
use crate::store::key::Area;
use crate::store::{DestinationError, ObjectInfo, Store, Trail};
use futures::{FutureExt as _, StreamExt as _};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

mod resume;

pub use resume::{Resume, latest_digest, resume_point};

const DAY_MS: i64 = 86_400_000;

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
    /// The trail checked: its store and where in it.
    pub trail: Trail,
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
    /// Every writer's published chain head (Tracker status or `serve`'s
    /// `--chain-head` file), when known: each chain must reach its head, a
    /// running writer's head must be recent, and only these writers' files can
    /// be pending. `None`: heads unknown, the newest valid digest of each writer
    /// stands in (a deleted tail cannot be seen then).
    pub heads: Option<Vec<super::ChainHead>>,
    /// Writers known to deliver this tracker that may have no head yet (the
    /// Tracker's `status.writers`, `serve`'s chain-head file): their files are
    /// pending for a period after they start, until their first digest.
    pub known_writers: Vec<String>,
    /// The tracker's digest period, when known (else taken from the heads or
    /// the digests): how long a file may wait for its digest.
    pub period_ms: Option<i64>,
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
    /// The chain does not reach its published head (a deleted or replaced
    /// tail), or a running writer's head is more than two periods old.
    Truncated,
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
    pub truncated: usize,
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
                DigestState::Truncated => s.truncated += 1,
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
    /// `FileAdded`, `DigestInvalid`, `ChainBroken`, `ChainTruncated`), with a message.
    pub fn first_problem(&self) -> Option<Problem> {
        for d in &self.digests {
            let reason = match d.state {
                DigestState::Valid => continue,
                DigestState::InvalidSignature => Reason::DigestInvalid,
                DigestState::Missing | DigestState::ChainBroken => Reason::ChainBroken,
                DigestState::Truncated => Reason::ChainTruncated,
            };
            return Some(Problem::new(
                reason,
                format!("{}: {}", d.key, d.reason.clone().unwrap_or_default()),
            ));
        }
        for f in &self.files {
            let reason = match f.state {
                FileState::Valid | FileState::Pending => continue,
                FileState::Modified => Reason::FileModified,
                FileState::Deleted => Reason::FileMissing,
                FileState::Added => Reason::FileAdded,
            };
            return Some(Problem::new(reason, f.key.clone()));
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
            (s.truncated, "truncated"),
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

/// The days a check covers.
struct Scope {
    /// Nothing older is checked (the range's first day, or retention's).
    floor: i64,
    first_day: i64,
    last_day: i64,
    /// Days whose digests are read: the range, two more (files late in the
    /// range may be listed there) and up to every published head.
    digest_days: Vec<i64>,
    /// Days whose trace files are read.
    trace_days: Vec<i64>,
}

impl Scope {
    fn of(req: &Request) -> Scope {
        let floor = req.oldest_kept_ms.unwrap_or(i64::MIN).max(day_start(req.from_ms));
        let first_day = day_start(floor.max(req.from_ms.min(req.to_ms)));
        let last_day = day_start(req.to_ms.max(req.from_ms));
        let heads_last = req
            .heads
            .iter()
            .flatten()
            .filter_map(|h| digest::parse_time(&previous_period_start(&h.key)))
            .max()
            .map_or(last_day, day_start);
        let digest_last_day = day_start(req.now_ms)
            .min((last_day + 2 * DAY_MS).max(heads_last))
            .max(last_day);
        let digest_days: Vec<i64> = (0..)
            .map(|i| first_day + i * DAY_MS)
            .take_while(|d| *d <= digest_last_day)
            .collect();
        let trace_days = digest_days.iter().copied().filter(|d| *d <= last_day).collect();
        Scope {
            floor,
            first_day,
            last_day,
            digest_days,
            trace_days,
        }
    }
}

/// What the valid digests of every chain say.
#[derive(Default)]
struct Chains {
    /// Every file a valid digest lists: the digest's key and the entry.
    listed: HashMap<String, (String, digest::DigestFile)>,
    /// Each writer's latest valid period end.
    latest_end: HashMap<String, i64>,
    /// Each writer's shortest period.
    shortest: HashMap<String, i64>,
}

/// Checks the trail of one tracker: signatures, then each writer's chain, its
/// published head, every listed file, and the files no digest lists.
pub async fn verify(req: &Request) -> Result<Report, DestinationError> {
    let scope = Scope::of(req);
    let fetched = fetch_digests(req, &scope).await?;
    let present = list_trace_files(req, &scope).await?;
    let keys: HashMap<&str, &PublicKey> = req.keys.iter().map(|k| (k.fingerprint.as_str(), k)).collect();
    let mut report = Report::default();
    let by_writer = check_signatures(req, &keys, &fetched, &mut report);
    let chains = check_chains(req, &scope, &by_writer, &fetched, &mut report);
    let head_end = check_heads(req, &keys, &scope, &by_writer, &chains, &mut report).await?;
    check_listed_files(req, &scope, &chains, &present, &mut report).await?;
    check_unlisted_files(req, &chains, &head_end, &present, &mut report);
    report
        .digests
        .sort_by(|a, b| (&a.writer, &a.period_start, &a.key).cmp(&(&b.writer, &b.period_start, &b.key)));
    report.files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}

/// Every digest of the tracker in the scope's digest days, fetched and decoded.
async fn fetch_digests(req: &Request, scope: &Scope) -> Result<Vec<Fetched>, DestinationError> {
    let store = &req.trail.store;
    let parallelism = req.parallelism.max(1);
    let listings = futures::stream::iter(scope.digest_days.iter().copied().map(|day| {
        let p = req.trail.day(Area::Digests, day);
        async move { store.list(&p).await }.boxed()
    }))
    .buffered(parallelism)
    .collect::<Vec<_>>()
    .await;
    let mut digest_keys = Vec::new();
    for l in listings {
        digest_keys.extend(
            l?.into_iter()
                .filter(|o| is_digest_of(&o.key, &req.trail.cluster, &req.trail.tracker)),
        );
    }
    let names: Vec<String> = digest_keys.iter().map(|o| o.key.clone()).collect();
    futures::stream::iter(names.into_iter().map(|key| {
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
    .collect()
}

/// Every trace file in the scope's trace days, by key.
async fn list_trace_files(
    req: &Request,
    scope: &Scope,
) -> Result<BTreeMap<String, ObjectInfo>, DestinationError> {
    let store = &req.trail.store;
    let trace_listings = futures::stream::iter(scope.trace_days.iter().copied().map(|day| {
        let p = req.trail.day(Area::Traces, day);
        async move { store.list(&p).await }.boxed()
    }))
    .buffered(req.parallelism.max(1))
    .collect::<Vec<_>>()
    .await;
    let mut present: BTreeMap<String, ObjectInfo> = BTreeMap::new();
    for l in trace_listings {
        for o in l? {
            present.insert(o.key.clone(), o);
        }
    }
    Ok(present)
}

/// Whether a period overlaps the range asked for.
fn in_range(req: &Request, start: i64, end: i64) -> bool {
    start < req.to_ms && end > req.from_ms
}

/// Signatures (by a trusted key, within its window, not from the future):
/// every digest grouped by writer, each marked valid or not. An untrusted
/// digest is reported when its content or its name falls in the range, or
/// either lies in the future (a plant meant to sort last).
fn check_signatures(
    req: &Request,
    keys: &HashMap<&str, &PublicKey>,
    fetched: &[Fetched],
    report: &mut Report,
) -> BTreeMap<String, Vec<Good>> {
    let reportable = |key: &str, start: i64, end: i64| {
        let named = digest::parse_time(&previous_period_start(key));
        in_range(req, start, end)
            || end > req.now_ms + req.skew_ms
            || named.is_some_and(|t| (t < req.to_ms && t >= req.from_ms) || t > req.now_ms)
    };
    let mut by_writer: BTreeMap<String, Vec<Good>> = BTreeMap::new();
    for f in fetched {
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
        let problem = trust_problem(req, keys, &f.key, d);
        if let Some(reason) = &problem
            && reportable(&f.key, start, end)
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

    for chain in by_writer.values_mut() {
        chain.sort_by_key(|g| (g.start, g.end));
    }
    by_writer
}

/// Each writer's chain, link by link, in the range: a link to a digest that is
/// not valid, or missing though it would be in the range, breaks it.
fn check_chains(
    req: &Request,
    scope: &Scope,
    by_writer: &BTreeMap<String, Vec<Good>>,
    fetched: &[Fetched],
    report: &mut Report,
) -> Chains {
    let (first_day, floor) = (scope.first_day, scope.floor);
    let fetched_keys: HashSet<&str> = fetched.iter().map(|f| f.key.as_str()).collect();
    let mut chains = Chains::default();
    let Chains {
        listed,
        latest_end,
        shortest,
    } = &mut chains;
    for (writer, chain) in by_writer {
        let valid: HashMap<&str, &Good> = chain
            .iter()
            .filter(|g| g.valid)
            .map(|g| (g.key.as_str(), g))
            .collect();
        for g in chain.iter().filter(|g| g.valid) {
            let e = latest_end.entry(writer.clone()).or_insert(g.end);
            *e = (*e).max(g.end);
            let len = g.end - g.start;
            if len > 0 {
                let s = shortest.entry(writer.clone()).or_insert(len);
                *s = (*s).min(len);
            }
            for f in &g.d.digest.files {
                listed.insert(f.key.clone(), (g.key.clone(), f.clone()));
            }
        }
        for g in chain.iter() {
            if !in_range(req, g.start, g.end) || !g.valid {
                continue;
            }
            let link = match &g.d.digest.previous {
                None => Ok(()),
                Some(p) => match valid.get(p.key.as_str()) {
                    Some(before) => link_problem(p, before, g).map_or(Ok(()), Err),
                    None => {
                        let p_start = digest::parse_time(&previous_period_start(&p.key)).unwrap_or(i64::MIN);
                        if fetched_keys.contains(p.key.as_str()) {
                            Err(format!(
                                "the previous digest {} is not a valid digest of this chain",
                                p.key
                            ))
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
                },
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

    chains
}

/// Each chain must reach its published head, and a running writer's head must
/// be recent: a deleted or replaced tail, or a stopped chain, shows. Returns
/// each writer's head end (the published one or a newer valid digest's) and
/// period.
async fn check_heads(
    req: &Request,
    keys: &HashMap<&str, &PublicKey>,
    scope: &Scope,
    by_writer: &BTreeMap<String, Vec<Good>>,
    chains: &Chains,
    report: &mut Report,
) -> Result<HashMap<String, (i64, i64)>, DestinationError> {
    let (store, first_day, floor) = (&req.trail.store, scope.first_day, scope.floor);
    let mut head_end: HashMap<String, (i64, i64)> = HashMap::new();
    for h in req.heads.iter().flatten() {
        let h_end = digest::parse_time(&h.period_end).unwrap_or(i64::MIN);
        let period = if h.period_seconds > 0 {
            h.period_seconds as i64 * 1000
        } else {
            req.period_ms.unwrap_or(3_600_000)
        };
        let listed_end = chains.latest_end.get(&h.writer).copied().unwrap_or(i64::MIN);
        head_end.insert(h.writer.clone(), (h_end.max(listed_end), period));
        if h_end < floor {
            continue; // expired with retention
        }
        let chain = by_writer.get(&h.writer);
        let problem = match check_head(store, req, keys, h, chain, first_day).await? {
            Some(p) => Some(p),
            None if h.running && h_end.max(listed_end) < req.now_ms - 2 * period - req.skew_ms => {
                Some(format!(
                    "the writer is running but its chain stopped: its last digest ends at {}, more than two periods ago",
                    h.period_end
                ))
            }
            None => None,
        };
        if let Some(reason) = problem {
            report.digests.push(DigestReport {
                writer: h.writer.clone(),
                key: h.key.clone(),
                period_start: previous_period_start(&h.key),
                period_end: h.period_end.clone(),
                state: DigestState::Truncated,
                reason: Some(reason),
                files: 0,
            });
        }
    }
    Ok(head_end)
}

/// Files listed by a valid digest in the range: present and unchanged (size,
/// then SHA-256; a file unchanged in size and modification time since the last
/// check is not fetched again).
async fn check_listed_files(
    req: &Request,
    scope: &Scope,
    chains: &Chains,
    present: &BTreeMap<String, ObjectInfo>,
    report: &mut Report,
) -> Result<(), DestinationError> {
    let (store, parallelism) = (&req.trail.store, req.parallelism.max(1));
    let trace_first = scope.first_day;
    let trace_end = scope.last_day + DAY_MS;
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
    for (k, (digest_key, f)) in &chains.listed {
        let Some(day) = key_day(k) else { continue };
        if day < trace_first || day >= trace_end {
            continue;
        }
        let writer = writer_of(k, &req.trail.cluster, &req.trail.tracker).unwrap_or_default();
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

    Ok(())
}

/// Files no digest lists: pending only while a known writer's next digest may
/// still list them (newer than its head by at most a period plus the slack); a
/// writer nobody knows has no pending files.
fn check_unlisted_files(
    req: &Request,
    chains: &Chains,
    head_end: &HashMap<String, (i64, i64)>,
    present: &BTreeMap<String, ObjectInfo>,
    report: &mut Report,
) {
    for (k, o) in present {
        if chains.listed.contains_key(k) {
            continue;
        }
        let writer = writer_of(k, &req.trail.cluster, &req.trail.tracker).unwrap_or_default();
        let period = req
            .period_ms
            .or_else(|| chains.shortest.get(&writer).copied())
            .unwrap_or(3_600_000);
        // Its head: the published one (or a newer valid digest: a head is
        // published a few seconds after its digest); else, without published
        // heads or before the writer's first one, its newest valid digest; else
        // a writer the status knows, before its first digest, which is due
        // within a period of now.
        let head = head_end
            .get(&writer)
            .copied()
            .or_else(|| chains.latest_end.get(&writer).map(|end| (*end, period)))
            .or_else(|| {
                (req.heads.is_some() && req.known_writers.contains(&writer))
                    .then_some((req.now_ms - period, period))
            });
        let pending = head.is_some_and(|(end, period)| {
            o.modified_ms >= end.saturating_sub(req.skew_ms) && o.modified_ms <= end + period + req.skew_ms
        });
        let state = if pending {
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
}

/// A digest as checked: where it is, what it says, and whether it is trusted.
struct Good {
    key: String,
    d: SignedDigest,
    start: i64,
    end: i64,
    valid: bool,
}

/// Why a digest is not trusted: not where its content says it belongs, an
/// unknown key, a bad signature, a key outside its window, or a period that
/// has not ended yet.
fn trust_problem(
    req: &Request,
    keys: &HashMap<&str, &PublicKey>,
    key: &str,
    d: &SignedDigest,
) -> Option<String> {
    let start = digest::parse_time(&d.digest.period_start);
    let end = digest::parse_time(&d.digest.period_end);
    let (Some(start), Some(end)) = (start, end) else {
        return Some("its period is not a pair of RFC 3339 times".into());
    };
    let expected = req.trail.digest_key(&d.digest.writer, start);
    if expected != key
        || d.digest.cluster != req.trail.cluster
        || d.digest.tracker != req.trail.tracker
        || end <= start
    {
        return Some("its content does not belong under its key".into());
    }
    let Some(k) = keys.get(d.digest.key_fingerprint.as_str()) else {
        return Some(format!("signed by unknown key {}", d.digest.key_fingerprint));
    };
    if !digest::check_signature(d, key, k) {
        return Some("the signature does not verify".into());
    }
    if let Err(e) = k.covers(end) {
        return Some(e);
    }
    if end > req.now_ms + req.skew_ms {
        return Some(format!(
            "dated in the future: its period ends at {}",
            d.digest.period_end
        ));
    }
    None
}

/// Why `g` does not follow `before`, the digest its `previous` names.
fn link_problem(p: &digest::Previous, before: &Good, g: &Good) -> Option<String> {
    if p.sha256 != before.d.sha256 || p.signature != before.d.signature {
        Some(format!(
            "the previous digest {} is not the one this digest names",
            p.key
        ))
    } else if before.end != g.start {
        Some(format!(
            "the previous digest ends at {}, this one starts at {}",
            before.d.digest.period_end, g.d.digest.period_start
        ))
    } else {
        None
    }
}

/// Whether the writer's chain reaches its published head `h`: the head digest
/// is in the bucket, is the one published, and links back, digest by digest,
/// to the range checked. `Some(reason)` when not.
async fn check_head(
    store: &Store,
    req: &Request,
    keys: &HashMap<&str, &PublicKey>,
    h: &super::ChainHead,
    chain: Option<&Vec<Good>>,
    first_day: i64,
) -> Result<Option<String>, DestinationError> {
    let fetched = chain.and_then(|c| c.iter().find(|g| g.key == h.key));
    let replaced = || {
        Some(format!(
            "the digest at the published head {} is not the one published: the chain's tail was replaced",
            h.key
        ))
    };
    let head = match fetched {
        Some(g) if g.valid => g.d.clone(),
        Some(_) => return Ok(replaced()),
        None => match store.get_opt(&h.key).await? {
            None => {
                return Ok(Some(format!(
                    "the published head {} is not in the bucket: the chain's tail was deleted",
                    h.key
                )));
            }
            Some(bytes) => match digest::decode(&bytes) {
                Ok(d) if trust_problem(req, keys, &h.key, &d).is_none() => d,
                _ => return Ok(replaced()),
            },
        },
    };
    if head.sha256 != h.sha256 || head.signature != h.signature {
        return Ok(replaced());
    }
    // Back from the head to the range: every link present and the one named.
    let Some(chain) = chain else { return Ok(None) };
    let by_key: HashMap<&str, &Good> = chain
        .iter()
        .filter(|g| g.valid)
        .map(|g| (g.key.as_str(), g))
        .collect();
    let mut cur = head;
    loop {
        let start = digest::parse_time(&cur.digest.period_start).unwrap_or(i64::MIN);
        if start < req.to_ms {
            return Ok(None);
        }
        let Some(p) = &cur.digest.previous else {
            return Ok(None);
        };
        let p_start = digest::parse_time(&previous_period_start(&p.key)).unwrap_or(i64::MIN);
        match by_key.get(p.key.as_str()) {
            Some(before) if before.d.sha256 == p.sha256 && before.d.signature == p.signature => {
                cur = before.d.clone();
            }
            Some(_) => {
                return Ok(Some(format!(
                    "between the range and the published head, {} is not the digest its successor names",
                    p.key
                )));
            }
            None if p_start < first_day => return Ok(None),
            None => {
                return Ok(Some(format!(
                    "between the range and the published head, {} is missing or invalid",
                    p.key
                )));
            }
        }
    }
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
mod tests;
