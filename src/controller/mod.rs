//! Reconcilers of kubetrail's custom resources (Tracker, TraceQuery) and what
//! the lease holder writes besides: KeyEventNotification and delivery status
//! folded from every replica's report. Per-replica work is in `runner`.

#[cfg(test)]
pub mod mock;
pub mod notification;
pub mod query;
pub mod report;
pub mod signing;
pub mod tracker;
pub mod trail;

use crate::telemetry::Metrics;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Field manager of every status patch kubetrail writes.
pub const FIELD_MANAGER: &str = "kubetrail";
/// Finalizer on Trackers: lets the operator flush and clean up before deletion.
pub const TRACKER_FINALIZER: &str = "kubetrail.io/tracker-cleanup";

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace the operator runs in; credentials Secrets are read from here.
    pub namespace: String,
    /// Only reconcile Trackers matching this label selector (sharding, tests).
    pub tracker_selector: Option<String>,
    /// Name of this instance in events (the pod name).
    pub instance: String,
    /// How often a healthy tracker's destination is checked again.
    pub recheck_interval: Duration,
    /// Cluster name in traces and object keys.
    pub cluster: String,
    /// Namespaces whose TraceQueries see every namespace's traces.
    pub admin_namespaces: Vec<String>,
    /// Other clusters' trails an admin namespace's TraceQueries may search.
    pub readable_clusters: crate::scope::ReadableClusters,
    /// Longest time range a TraceQuery may ask for, in days.
    pub max_query_days: i64,
    /// TraceQueries run at once; the others wait (phase Pending).
    pub query_concurrency: usize,
    /// Longest a TraceQuery may run before it fails with reason `Timeout`.
    pub query_timeout: Duration,
    /// Most bytes of result lines one TraceQuery keeps (and writes).
    pub query_max_result_bytes: usize,
    /// Where a running TraceQuery's result lines wait (not in memory).
    pub query_scratch_dir: std::path::PathBuf,
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Slots for running TraceQueries (`Settings::query_concurrency`).
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// Digest signing keys, shared by delivery and the Tracker reconciler.
    pub signing_keys: signing::KeyCache,
    /// The last verification of each tracker's trail (lease holder).
    pub verified: Arc<Mutex<HashMap<String, trail::Verified>>>,
    /// Trackers whose trail is being verified now (in a task of its own).
    pub verifying: Arc<Mutex<std::collections::HashSet<String>>>,
    /// The last retention run of each tracker (lease holder).
    pub retained: Mutex<HashMap<String, trail::Retained>>,
    /// This replica's key event notification counters (for its report).
    pub notify_stats: Arc<Mutex<std::collections::BTreeMap<String, crate::notify::NotifyStats>>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let reporter = Reporter {
            controller: "kubetrail".into(),
            instance: Some(settings.instance.clone()),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            query_slots: Arc::new(tokio::sync::Semaphore::new(settings.query_concurrency.max(1))),
            settings,
            metrics,
            signing_keys: signing::KeyCache::default(),
            verified: Arc::default(),
            verifying: Arc::default(),
            retained: Mutex::default(),
            notify_stats: Arc::default(),
            failures: Mutex::default(),
        })
    }

    /// Records a failure of `key` and returns how long to wait before trying again:
    /// 2 s doubling to 5 min, per object, so one broken tracker does not slow others.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// What the controllers and runners watch: every object, or those with the
    /// tracker selector's labels (sharding, tests).
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default().any_semantic();
        match &self.settings.tracker_selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// Counts and times one reconcile of `controller` by its result (`ok` or
    /// a reason): `kubetrail_reconciles_total`, `kubetrail_reconcile_duration_seconds`.
    pub fn observe_reconcile(
        &self,
        controller: &'static str,
        started: std::time::Instant,
        result: &'static str,
    ) {
        use crate::telemetry::{ControllerLabels, ReconcileLabels};
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Delay before retry number `attempt` (1-based): 2 s, 4 s, … capped at 5 minutes.
pub fn backoff_delay(attempt: u32) -> Duration {
    let secs = 2u64.saturating_pow(attempt.min(16)).min(300);
    Duration::from_secs(secs)
}

/// Folds every replica's delivery report into KeyEventNotification and Tracker
/// status every `interval`. Runs only on the Lease holder, with the reconcilers.
pub async fn fold_loop(ctx: Arc<Context>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let round = async {
            let reports = report::read_reports(&ctx).await?;
            if let Err(e) = notification::fold_once(&ctx, &reports).await {
                tracing::warn!(error = %e, "writing notification status failed; retrying");
            }
            report::fold_trackers(&ctx, &reports).await
        };
        match round.await {
            Ok(true) => {}
            Ok(false) => {
                // Folding on would add every writer's whole count again each round.
                tracing::error!(
                    "the installed Tracker CRD has no status.writers (older than this operator): \
                     delivery counters are not updated until `kubectl apply -f crds/` and a restart"
                );
                std::future::pending::<()>().await;
            }
            Err(e) => tracing::warn!(error = %e, "folding delivery reports failed; retrying"),
        }
    }
}

/// Publishes an event on `obj`; a failure to publish is logged, not fatal.
pub async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, action: &str, note: &str)
where
    K: kube::Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(9), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }
}
