//! Delivery reports. Every replica delivers its own files, but only the Lease
//! holder writes Tracker status. So each replica publishes its per-tracker
//! delivery counters in a Lease of its own (`kubetrail-writer-<instance>`, which
//! doubles as its heartbeat), and the holder folds those reports into each
//! Tracker's `status` (totals, `lastDelivery`, one `writers` entry per replica).
//!
//! Counters in a report count from the start of the writer's process (its
//! incarnation). The holder remembers in `status.writers` how much of each
//! incarnation it has already added, so a new holder continues where the old one
//! stopped and a restarted writer is counted from zero again, never twice.

use super::Context;
use crate::api::{ChainHead, LastDelivery, Reason, Tracker, TrackerStatus, WriterStatus};
use crate::deliver::pipeline::DeliveryStats;
use crate::telemetry::ControllerLabels;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Label on every report Lease.
pub const REPORT_LABEL: &str = "kubetrail.io/delivery-report";
/// Annotation holding the report (JSON).
pub const REPORT_ANNOTATION: &str = "kubetrail.io/delivery-report";
/// A writer republishes at least this often, even when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// A report not renewed for this long belongs to a replica that is gone; the
/// holder folds it one last time and deletes it.
pub const STALE: Duration = Duration::from_secs(3600);

/// What one replica has delivered since its process started.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub incarnation: String,
    #[serde(default)]
    pub trackers: BTreeMap<String, TrackerReport>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notifications: BTreeMap<String, NotifyReport>,
}

/// One key event notification's counters in a [`Report`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotifyReport {
    pub matched: u64,
    pub sent: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub failing: bool,
}

/// One tracker's deliveries in a [`Report`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackerReport {
    pub events: u64,
    pub files: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
    /// `Reason: message` of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The reason of `last_error`, as is (absent in a report of an older
    /// version, and when this version does not know a newer one's reason).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Reason::lenient"
    )]
    pub last_error_reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<jiff::Timestamp>,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub overflowing: bool,
    /// The writer still delivers this tracker (running, or draining after it was
    /// disabled or deleted). A deleted Tracker's finalizer waits for this to clear.
    #[serde(default)]
    pub active: bool,
    /// The latest digest this writer wrote (its chain head), for the holder to
    /// publish in the Tracker's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<crate::api::ChainHead>,
}

impl TrackerReport {
    /// What a pipeline's statistics say, for the report; `active` while the
    /// writer still delivers the tracker.
    pub fn of(s: &DeliveryStats, active: bool) -> TrackerReport {
        let last_delivery = match (&s.last_time, &s.last_key) {
            (Some(time), Some(key)) => Some(LastDelivery {
                time: Time(*time),
                object_key: key.clone(),
                events: s.last_events,
            }),
            _ => None,
        };
        TrackerReport {
            events: s.events,
            files: s.files,
            last_delivery,
            last_error: s
                .last_error
                .as_ref()
                // Bounded: the report lives in an annotation (256 KiB in all).
                .map(|p| p.to_string().chars().take(512).collect()),
            last_error_reason: s.last_error.as_ref().map(|p| p.reason),
            failing_since: s.failing_since,
            dropped: s.dropped,
            overflowing: s.overflowing,
            active,
            head: s.chain_head.clone(),
        }
    }
}

/// A report as the holder reads it.
#[derive(Clone, Debug)]
pub struct WriterReport {
    pub writer: String,
    pub renewed: Option<jiff::Timestamp>,
    pub report: Report,
}

/// Name of the report Lease of `instance` (a DNS subdomain).
pub fn lease_name(instance: &str) -> String {
    let clean: String = instance
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!(
        "kubetrail-writer-{}",
        clean.trim_matches(|c| c == '-' || c == '.')
    );
    name.chars().take(253).collect()
}

/// Writers whose report, renewed within `fresh`, says they still deliver `tracker`.
pub async fn still_delivering(
    ctx: &Context,
    tracker: &str,
    fresh: Duration,
) -> Result<Vec<String>, kube::Error> {
    let now = jiff::Timestamp::now();
    Ok(read_reports(ctx)
        .await?
        .into_iter()
        .filter(|r| {
            r.renewed
                .is_some_and(|t| now.duration_since(t).as_secs() <= fresh.as_secs() as i64)
        })
        .filter(|r| r.report.trackers.get(tracker).is_some_and(|t| t.active))
        .map(|r| r.writer)
        .collect())
}

/// Reads every replica's report (in the operator's namespace).
pub async fn read_reports(ctx: &Context) -> Result<Vec<WriterReport>, kube::Error> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let leases = api
        .list(&ListParams::default().labels(&format!("{REPORT_LABEL}=true")))
        .await?;
    let mut out = Vec::new();
    for lease in leases {
        let spec = lease.spec.clone().unwrap_or_default();
        let Some(writer) = spec.holder_identity else {
            continue;
        };
        let report = match lease
            .annotations()
            .get(REPORT_ANNOTATION)
            .map(|a| serde_json::from_str(a))
        {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::warn!(lease = %lease.name_any(), error = %e, "ignoring an unreadable delivery report");
                continue;
            }
            None => continue,
        };
        out.push(WriterReport {
            writer,
            renewed: spec.renew_time.map(|t| t.0),
            report,
        });
    }
    Ok(out)
}

/// The delivery part of a tracker's status after folding in `reports`.
/// Pure, so the counting rules are unit-tested.
pub fn fold(tracker: &str, status: &TrackerStatus, reports: &[WriterReport]) -> TrackerStatus {
    let mut next = status.clone();
    let mut writers = Vec::new();
    for r in reports {
        let Some(t) = r.report.trackers.get(tracker) else {
            // Keep what was counted of a writer that no longer delivers this tracker.
            if let Some(prev) = status.writers.iter().find(|w| w.writer == r.writer) {
                writers.push(prev.clone());
            }
            continue;
        };
        let prev = status.writers.iter().find(|w| w.writer == r.writer);
        let (counted_events, counted_files, counted_dropped) = match prev {
            // Same process: its counters only rise, so count only the growth; a
            // report behind what was already counted is stale and changes nothing.
            Some(p) if p.incarnation == r.report.incarnation => {
                if t.events < p.events || t.files < p.files || t.dropped < p.events_dropped {
                    writers.push(p.clone());
                    continue;
                }
                (p.events, p.files, p.events_dropped)
            }
            _ => (0, 0, 0),
        };
        next.events_delivered += t.events - counted_events;
        next.files_delivered += t.files - counted_files;
        next.events_dropped += t.dropped - counted_dropped;
        if let Some(last) = &t.last_delivery
            && next.last_delivery.as_ref().is_none_or(|l| l.time.0 < last.time.0)
        {
            next.last_delivery = Some(last.clone());
        }
        writers.push(WriterStatus {
            writer: r.writer.clone(),
            incarnation: r.report.incarnation.clone(),
            events: t.events,
            files: t.files,
            last_delivery: t.last_delivery.clone(),
            last_error: t.last_error.clone(),
            last_error_reason: t.last_error_reason,
            failing_since: t.failing_since.map(Time),
            events_dropped: t.dropped,
            backlog_overflow: t.overflowing,
        });
    }
    writers.sort_by(|a, b| a.writer.cmp(&b.writer));
    next.writers = writers;
    next.chain_heads = fold_heads(tracker, &status.chain_heads, reports);
    next
}

/// The chain heads after `reports`: a newer head replaces a writer's older
/// one (never the other way round), a writer is `running` while its report
/// says it delivers the tracker, and the head of a writer that is gone stays.
pub fn fold_heads(tracker: &str, heads: &[ChainHead], reports: &[WriterReport]) -> Vec<ChainHead> {
    let mut out: BTreeMap<String, ChainHead> = heads
        .iter()
        .map(|h| {
            let mut h = h.clone();
            h.running = false;
            (h.writer.clone(), h)
        })
        .collect();
    let end = |h: &ChainHead| h.period_end.parse::<jiff::Timestamp>().ok();
    for r in reports {
        let Some(t) = r.report.trackers.get(tracker) else {
            continue;
        };
        if let Some(new) = &t.head {
            let mut new = new.clone();
            new.writer = r.writer.clone();
            match out.get(&r.writer) {
                Some(old) if end(old) > end(&new) => {
                    tracing::warn!(writer = %r.writer, head = %new.key, published = %old.key, "a writer reported a chain head older than the published one; kept the published one");
                }
                _ => {
                    out.insert(r.writer.clone(), new);
                }
            }
        }
        // Alive: renewed within two heartbeats (a killed replica's report
        // lingers until it is stale).
        let alive = r.renewed.is_some_and(|at| {
            jiff::Timestamp::now().duration_since(at).as_secs() <= 2 * HEARTBEAT.as_secs() as i64 + 30
        });
        if let Some(h) = out.get_mut(&r.writer) {
            h.running = t.active && alive;
        }
    }
    out.into_values().collect()
}

/// Folds `reports` into the trackers' status and deletes the reports of
/// replicas gone for good; `Ok(false)` when the apiserver dropped
/// `status.writers` (an old CRD). One round of [`super::fold_loop`].
pub async fn fold_trackers(ctx: &Context, reports: &[WriterReport]) -> Result<bool, kube::Error> {
    let api: Api<Tracker> = Api::all(ctx.client.clone());
    let mut params = ListParams::default();
    if let Some(selector) = &ctx.settings.tracker_selector {
        params = params.labels(selector);
    }
    let mut complete = true;
    for tracker in api.list(&params).await? {
        let name = tracker.name_any();
        let status = tracker.status.clone().unwrap_or_default();
        let next = fold(&name, &status, reports);
        if next == status {
            continue;
        }
        let patch = serde_json::json!({
            // Compare-and-swap: a concurrent change makes this round retry.
            "metadata": {"resourceVersion": tracker.resource_version()},
            "status": {
                "lastDelivery": next.last_delivery,
                "eventsDelivered": next.events_delivered,
                "filesDelivered": next.files_delivered,
                "eventsDropped": next.events_dropped,
                "writers": next.writers,
                "chainHeads": next.chain_heads,
            }
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                let kept = updated.status.is_some_and(|s| !s.writers.is_empty());
                if !next.writers.is_empty() && !kept {
                    return Ok(false);
                }
                ctx.metrics
                    .status_patches
                    .get_or_create(&ControllerLabels {
                        controller: "delivery",
                    })
                    .inc();
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                complete = false;
                tracing::debug!(tracker = %name, "tracker changed meanwhile; folding again next round")
            }
            Err(e) => return Err(e),
        }
    }
    // Reports of replicas gone for good: their counts are folded above (only
    // deleted after a round in which every tracker's fold was written).
    if !complete {
        return Ok(true);
    }
    let now = jiff::Timestamp::now();
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    for r in reports {
        let stale = r
            .renewed
            .is_some_and(|t| now.duration_since(t).as_secs() > STALE.as_secs() as i64);
        if stale {
            tracing::info!(writer = %r.writer, "deleting the report of a replica that is gone");
            if let Err(e) = leases
                .delete(&lease_name(&r.writer), &DeleteParams::default())
                .await
            {
                tracing::warn!(writer = %r.writer, error = %e, "deleting a stale delivery report failed");
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(writer: &str, incarnation: &str, events: u64, files: u64, at: i64) -> WriterReport {
        let time = jiff::Timestamp::from_second(at).unwrap();
        let mut trackers = BTreeMap::new();
        trackers.insert(
            "t".to_string(),
            TrackerReport {
                events,
                files,
                last_delivery: Some(LastDelivery {
                    time: Time(time),
                    object_key: format!("{writer}-{at}"),
                    events: 1,
                }),
                last_error: None,
                ..Default::default()
            },
        );
        WriterReport {
            writer: writer.into(),
            renewed: Some(time),
            report: Report {
                incarnation: incarnation.into(),
                trackers,
                notifications: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn replicas_add_up_and_growth_is_counted_once() {
        let s0 = TrackerStatus::default();
        let s1 = fold(
            "t",
            &s0,
            &[report("a", "a1", 10, 1, 100), report("b", "b1", 5, 1, 200)],
        );
        assert_eq!((s1.events_delivered, s1.files_delivered), (15, 2));
        assert_eq!(s1.last_delivery.as_ref().unwrap().object_key, "b-200");
        assert_eq!(s1.writers.len(), 2);
        // Folding the same reports again changes nothing.
        let again = fold(
            "t",
            &s1,
            &[report("a", "a1", 10, 1, 100), report("b", "b1", 5, 1, 200)],
        );
        assert_eq!(again, s1);
        // Only growth is added.
        let s2 = fold(
            "t",
            &s1,
            &[report("a", "a1", 14, 2, 300), report("b", "b1", 5, 1, 200)],
        );
        assert_eq!((s2.events_delivered, s2.files_delivered), (19, 3));
        assert_eq!(s2.last_delivery.as_ref().unwrap().object_key, "a-300");
    }

    #[test]
    fn a_restarted_writer_counts_from_zero_and_a_stale_report_is_ignored() {
        let s1 = fold("t", &TrackerStatus::default(), &[report("a", "a1", 10, 2, 100)]);
        // New process, same pod name: its 3 events are all new.
        let s2 = fold("t", &s1, &[report("a", "a2", 3, 2, 200)]);
        assert_eq!((s2.events_delivered, s2.files_delivered), (13, 4));
        assert_eq!(s2.writers[0].incarnation, "a2");
        // Same process, a report behind what was counted (stale): nothing changes.
        let s3 = fold("t", &s2, &[report("a", "a2", 2, 1, 300)]);
        assert_eq!(s3, s2);
    }

    #[test]
    fn writers_without_a_report_are_dropped_but_their_counts_stay() {
        let s1 = fold(
            "t",
            &TrackerStatus::default(),
            &[report("a", "a1", 10, 1, 100), report("b", "b1", 5, 1, 100)],
        );
        let s2 = fold("t", &s1, &[report("b", "b1", 5, 1, 100)]);
        assert_eq!(s2.events_delivered, 15);
        assert_eq!(
            s2.writers.iter().map(|w| w.writer.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // A report for another tracker leaves this one alone.
        assert_eq!(
            fold(
                "other",
                &TrackerStatus::default(),
                &[report("a", "a1", 10, 1, 100)]
            ),
            TrackerStatus::default()
        );
    }

    #[test]
    fn lease_names_are_dns_subdomains() {
        assert_eq!(
            lease_name("kubetrail-7d9f-abc"),
            "kubetrail-writer-kubetrail-7d9f-abc"
        );
        assert_eq!(lease_name("Replica_A"), "kubetrail-writer-replica-a");
    }

    fn head(writer: &str, end: &str) -> ChainHead {
        ChainHead {
            writer: writer.into(),
            key: format!("{writer}-{end}"),
            period_end: end.into(),
            ..Default::default()
        }
    }

    #[test]
    fn heads_only_move_forward_and_outlive_their_writers() {
        let now = jiff::Timestamp::now().as_second();
        let mut a = report("a", "a1", 1, 1, now);
        a.report.trackers.get_mut("t").unwrap().head = Some(head("a", "2026-11-24T10:00:00Z"));
        a.report.trackers.get_mut("t").unwrap().active = true;
        let published = vec![
            head("a", "2026-11-24T09:00:00Z"),
            head("gone", "2026-11-20T00:00:00Z"),
        ];
        let heads = fold_heads("t", &published, &[a.clone()]);
        assert_eq!(heads.len(), 2, "the gone writer's head stays: {heads:?}");
        assert_eq!(heads[0].key, "a-2026-11-24T10:00:00Z");
        assert!(heads[0].running && !heads[1].running, "{heads:?}");
        // An older head reported (a writer that lost its state) does not win.
        a.report.trackers.get_mut("t").unwrap().head = Some(head("a", "2026-11-24T08:00:00Z"));
        let heads = fold_heads("t", &published, &[a.clone()]);
        assert_eq!(heads[0].key, "a-2026-11-24T09:00:00Z");
        // A report not renewed for minutes (a killed replica) is not running.
        let mut stale = report("a", "a1", 1, 1, now - 600);
        stale.report.trackers.get_mut("t").unwrap().active = true;
        let heads = fold_heads("t", &published, &[stale]);
        assert!(!heads[0].running);
    }
}
