//! The TraceQuery reconciler: runs a query when the object is created or its spec
//! changes, and reports the answer in its status.

use super::{Context, FIELD_MANAGER};
use crate::api::{
    ConditionType, FALSE, Problem, QueryPhase, Reason, TRUE, TraceQuery, TraceQueryStatus, TraceRow, Tracker,
    set_condition,
};
use crate::query::{self, Query};
use crate::store::{self, Credentials};
use crate::telemetry::ControllerLabels;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use std::sync::Arc;
use std::time::Duration;

/// Rows kept inline in the status; the full result is in the bucket.
pub const INLINE_ROWS: usize = 20;

/// The `controller` label of this reconciler's metrics.
const CONTROLLER: &str = "tracequery";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
}

impl Error {
    /// The `result` label of a failed reconcile.
    fn reason(&self) -> Reason {
        match self {
            Error::Kube(_) => Reason::KubeError,
        }
    }
}

/// Runs the TraceQuery controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<TraceQuery> = Api::all(ctx.client.clone());
    let config = ctx.watch_config();
    Controller::new(api, config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(q: Arc<TraceQuery>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(query = %q.name_any(), error = %err, "reconcile failed");
    Action::requeue(ctx.backoff(&format!("tq/{}", q.name_any())))
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// One reconcile, counted and timed per result
/// (`kubetrail_reconciles_total{controller="tracequery"}`,
/// `kubetrail_reconcile_duration_seconds{controller="tracequery"}`).
async fn reconcile(q: Arc<TraceQuery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_query(q, ctx.clone()).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.reason().as_str(),
    };
    ctx.observe_reconcile(CONTROLLER, started, label);
    result
}

#[tracing::instrument(skip_all, fields(query = %q.name_any(), namespace = %q.namespace().unwrap_or_default()))]
async fn reconcile_query(q: Arc<TraceQuery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = q.namespace().unwrap_or_default();
    let api: Api<TraceQuery> = Api::namespaced(ctx.client.clone(), &ns);
    let status = q.status.clone().unwrap_or_default();
    let done = matches!(status.phase, Some(QueryPhase::Succeeded | QueryPhase::Failed));
    if done && status.observed_generation == q.metadata.generation {
        return finished(&q, &ctx, &api, &status).await;
    }
    // A slot first: at most `query_concurrency` queries run at once.
    let Some(slot) = take_slot(&q, &ctx, &api).await? else {
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let started = now();
    let mut running = TraceQueryStatus {
        phase: Some(QueryPhase::Running),
        start_time: Some(started.clone()),
        observed_generation: q.metadata.generation,
        ..TraceQueryStatus::default()
    };
    set_condition(
        &mut running.conditions,
        ConditionType::Complete,
        FALSE,
        Reason::Running,
        "query is running",
        q.metadata.generation,
        &started,
    );
    write(&api, &q, &running, &ctx).await?;

    let mut result = running.clone();
    let limit = ctx.settings.query_timeout;
    let answer = match tokio::time::timeout(limit, execute(&q, &ctx)).await {
        Ok(answer) => answer,
        Err(_) => Err(Problem::new(
            Reason::Timeout,
            format!("the query did not finish within {} s", limit.as_secs()),
        )),
    };
    drop(slot);
    answered(&mut result, answer, &ctx, q.metadata.generation);
    result.completion_time = Some(now());
    write(&api, &q, &result, &ctx).await?;
    ctx.reset_backoff(&format!("tq/{}", q.name_any()));
    Ok(match q.spec.ttl_seconds_after_finished {
        Some(ttl) => Action::requeue(Duration::from_secs(u64::from(ttl))),
        None => Action::await_change(),
    })
}

/// A finished query: only its TTL is left to handle. On expiry its result file
/// goes with it; if the bucket cannot be reached, that is tried again for ten
/// minutes, then the query goes anyway and an Event says so.
async fn finished(
    q: &TraceQuery,
    ctx: &Context,
    api: &Api<TraceQuery>,
    status: &TraceQueryStatus,
) -> Result<Action, Error> {
    if let (Some(ttl), Some(end)) = (q.spec.ttl_seconds_after_finished, &status.completion_time) {
        let expires = end.0.as_millisecond() + i64::from(ttl) * 1000;
        let left = expires - jiff::Timestamp::now().as_millisecond();
        if left <= 0 {
            // The result file goes with the query. If the bucket cannot be
            // reached, try again for ten minutes, then let the query go and say so.
            if status.phase == Some(QueryPhase::Succeeded) {
                match remove_result(q, ctx).await {
                    Ok(key) => tracing::debug!(key, "result file removed"),
                    Err(e) if left > -600_000 => {
                        tracing::warn!(error = %e, "removing the result file failed; retrying");
                        return Ok(Action::requeue(Duration::from_secs(30)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "giving up removing the result file");
                        warn_event(
                            ctx,
                            q,
                            "ResultNotRemoved",
                            &format!("the result file was not removed: {e}"),
                        )
                        .await;
                    }
                }
            }
            tracing::info!("deleting finished query after its TTL");
            api.delete(&q.name_any(), &DeleteParams::default())
                .await
                .map_err(Error::Kube)?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(Duration::from_millis(left as u64)));
    }
    Ok(Action::await_change())
}

/// A query slot; while none is free the query is `Pending` (written once) and
/// waits for one. `None` if the slots are gone (the process is stopping).
async fn take_slot(
    q: &TraceQuery,
    ctx: &Context,
    api: &Api<TraceQuery>,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Error> {
    Ok(match ctx.query_slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) => {
            let waiting_since = now();
            let mut pending = TraceQueryStatus {
                phase: Some(QueryPhase::Pending),
                observed_generation: q.metadata.generation,
                ..TraceQueryStatus::default()
            };
            set_condition(
                &mut pending.conditions,
                ConditionType::Complete,
                FALSE,
                Reason::Waiting,
                &format!(
                    "waiting for a query slot ({} queries run at once)",
                    ctx.settings.query_concurrency
                ),
                q.metadata.generation,
                &waiting_since,
            );
            write(api, q, &pending, ctx).await?;
            ctx.query_slots.clone().acquire_owned().await.ok()
        }
    })
}

/// The status of an answered query: Succeeded with its counts and first rows,
/// or Failed with the reason.
fn answered(
    result: &mut TraceQueryStatus,
    answer: Result<(query::Outcome, String), Problem>,
    ctx: &Context,
    generation: Option<i64>,
) {
    match answer {
        Ok((outcome, key)) => {
            result.phase = Some(QueryPhase::Succeeded);
            result.matched = outcome.matched;
            result.scanned_objects = outcome.scanned_objects;
            result.scanned_bytes = outcome.scanned_bytes;
            result.truncated = outcome.truncated;
            result.results = outcome
                .hits
                .iter()
                .take(INLINE_ROWS)
                .filter_map(|h| outcome.line(h).ok().map(|l| row(&l)))
                .collect();
            result.result_key = Some(key);
            let mut msg = format!(
                "{} traces matched in {} files",
                outcome.matched, outcome.scanned_objects
            );
            if outcome.memory_capped {
                msg.push_str(&format!(
                    "; {} returned: their lines reached the per-query bound of {} bytes",
                    outcome.hits.len(),
                    ctx.settings.query_max_result_bytes
                ));
                result.message = Some(msg.clone());
            }
            set_condition(
                &mut result.conditions,
                ConditionType::Complete,
                TRUE,
                Reason::Succeeded,
                &msg,
                generation,
                &now(),
            );
            tracing::info!(
                matched = outcome.matched,
                objects = outcome.scanned_objects,
                "query succeeded"
            );
        }
        Err(Problem { reason, message }) => {
            result.phase = Some(QueryPhase::Failed);
            result.message = Some(message.clone());
            set_condition(
                &mut result.conditions,
                ConditionType::Complete,
                TRUE,
                reason,
                &message,
                generation,
                &now(),
            );
            tracing::warn!(%reason, %message, "query failed");
        }
    }
}

/// A compact status row of a trace line.
fn row(line: &str) -> TraceRow {
    let t = crate::trace::View::parse(line.as_bytes()).unwrap_or_default();
    TraceRow {
        time: t.time.into_owned(),
        trace_id: t.trace_id.into_owned(),
        trace_name: t.trace_name.into_owned(),
        rating: t.trace_rating.into_owned(),
        user: t.user.into_owned(),
        namespace: t.namespace.into_owned(),
        resource_name: t.resource_name.into_owned(),
        code: t.code.unwrap_or(0),
    }
}

/// The time range of a query spec as Unix ms, default the last hour.
pub fn time_range(q: &crate::api::TraceQuerySpec, now_ms: i64) -> Result<(i64, i64), String> {
    let range = q.time_range.clone().unwrap_or_default();
    if let Some(last) = &range.last {
        let d = crate::api::Duration::parse(last).map_err(|e| format!("last: {e}"))?;
        return Ok((now_ms - d.as_millis_i64(), now_ms + 1));
    }
    let to = range.to.map(|t| t.0.as_millisecond()).unwrap_or(now_ms + 1);
    let from = range.from.map(|t| t.0.as_millisecond()).unwrap_or(to - 3_600_000);
    Ok((from, to))
}

/// Runs the query; on failure returns the problem for its condition.
async fn execute(q: &TraceQuery, ctx: &Context) -> Result<(query::Outcome, String), Problem> {
    let ns = q.namespace().unwrap_or_default();
    let admin = ctx.settings.admin_namespaces.iter().any(|a| a == &ns);
    let tenant = (!admin).then_some(ns.as_str());
    let clusters = ctx
        .settings
        .readable_clusters
        .check(&ctx.settings.cluster, &q.spec.clusters, tenant)
        .map_err(|e| Problem::new(e.reason(), e.to_string()))?;
    let trackers: Api<Tracker> = Api::all(ctx.client.clone());
    let tracker = trackers
        .get_opt(&q.spec.tracker)
        .await
        .map_err(|e| Problem::new(Reason::KubeError, e.to_string()))?
        .ok_or_else(|| {
            Problem::new(
                Reason::TrackerNotFound,
                format!("tracker {:?} does not exist", q.spec.tracker),
            )
        })?;
    let (from_ms, to_ms) = time_range(&q.spec, jiff::Timestamp::now().as_millisecond())
        .map_err(|e| Problem::new(Reason::InvalidTimeRange, e))?;
    let dest = tracker.spec.destination.clone();
    let sink = store::open(
        &dest,
        Credentials::Secret {
            client: &ctx.client,
            namespace: &ctx.settings.namespace,
        },
    )
    .await
    .map_err(|e| Problem::new(e.reason(), e.to_string()))?;
    let query = Query {
        filter: q.spec.filter.clone(),
        limit: q.spec.limit as usize,
        order: q.spec.order,
        namespace_scope: tenant.map(String::from),
        max_hit_bytes: ctx.settings.query_max_result_bytes,
        spill_dir: Some(ctx.settings.query_scratch_dir.clone()),
        ..Query::new(
            dest.prefix.trim_end_matches('/'),
            clusters,
            tracker.name_any(),
            from_ms,
            to_ms,
        )
    };
    let outcome = query::run(&sink, &query, ctx.settings.max_query_days)
        .await
        .map_err(|e| Problem::new(e.reason(), e.to_string()))?;
    // The full result set, as gzipped JSON Lines, next to the tracker's files:
    // read back from the scratch file one line at a time and compressed as it
    // is written, so only the compressed copy is in memory.
    let body = {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        for h in &outcome.hits {
            let line = outcome.line(h).map_err(|e| {
                Problem::new(
                    Reason::ScratchError,
                    format!("reading the result lines back: {e}"),
                )
            })?;
            let _ = gz.write_all(line.as_bytes());
            let _ = gz.write_all(b"\n");
        }
        gz.finish().unwrap_or_default()
    };
    let key = result_key(&query.prefix, &ctx.settings.cluster, q);
    sink.put(&key, body, crate::api::Compression::Gzip)
        .await
        .map_err(|e| Problem::new(e.reason(), format!("writing the result set: {e}")))?;
    Ok((outcome, key))
}

/// Where a query's result file is written: derived from the query itself (its
/// namespace, name and uid) and the operator's cluster, never read back from
/// the status — whoever can edit a status must not steer what the operator
/// deletes.
pub fn result_key(prefix: &str, cluster: &str, q: &TraceQuery) -> String {
    let mut key = crate::store::key::area_prefix(prefix, crate::store::key::Area::QueryResults);
    key.push_str(&format!(
        "{cluster}/{}/{}/{}.jsonl.gz",
        q.namespace().unwrap_or_default(),
        q.name_any(),
        q.uid().unwrap_or_default()
    ));
    key
}

/// Removes a finished query's result file from its tracker's bucket, by the
/// key derived from the query (see [`result_key`]); returns that key.
async fn remove_result(q: &TraceQuery, ctx: &Context) -> Result<String, String> {
    let trackers: Api<Tracker> = Api::all(ctx.client.clone());
    let Some(tracker) = trackers
        .get_opt(&q.spec.tracker)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("tracker {:?} no longer exists", q.spec.tracker));
    };
    let sink = store::open(
        &tracker.spec.destination,
        Credentials::Secret {
            client: &ctx.client,
            namespace: &ctx.settings.namespace,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let key = result_key(&tracker.spec.destination.prefix, &ctx.settings.cluster, q);
    sink.delete(&key).await.map_err(|e| format!("{key}: {e}"))?;
    Ok(key)
}

async fn warn_event(ctx: &Context, q: &TraceQuery, reason: &str, note: &str) {
    use kube::Resource as _;
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "CleanUp".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &q.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

async fn write(
    api: &Api<TraceQuery>,
    q: &TraceQuery,
    status: &TraceQueryStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "kubetrail.io/v1alpha1",
        "kind": "TraceQuery",
        "status": status,
    });
    api.patch_status(
        &q.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::Kube)?;
    ctx.metrics
        .status_patches
        .get_or_create(&ControllerLabels {
            controller: CONTROLLER,
        })
        .inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mock;
    use http::Method;

    const OBJECT: &str = "/apis/kubetrail.io/v1alpha1/namespaces/team/tracequeries/q";
    const STATUS: &str = "/apis/kubetrail.io/v1alpha1/namespaces/team/tracequeries/q/status";

    /// TraceQuery `team/q` (generation 2) of tracker `tracker`.
    fn query(tracker: &str, ttl: Option<u32>, status: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "kubetrail.io/v1alpha1", "kind": "TraceQuery",
            "metadata": {"name": "q", "namespace": "team", "uid": "u-q", "generation": 2},
            "spec": {"tracker": tracker, "ttlSecondsAfterFinished": ttl},
            "status": status,
        })
    }

    /// A status that finished `ago` seconds ago.
    fn finished(phase: &str, ago: i64) -> serde_json::Value {
        let end = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - ago).unwrap();
        serde_json::json!({"phase": phase, "observedGeneration": 2,
            "completionTime": serde_json::to_value(Time(end)).unwrap()})
    }

    fn deleted() -> (u16, serde_json::Value) {
        (
            200,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "code": 200}),
        )
    }

    /// A failed query (no result file) is deleted once its TTL has passed, and
    /// until then is only checked again when it will have: no request at all.
    #[tokio::test]
    async fn a_finished_query_is_deleted_after_its_ttl_and_not_before() {
        let (ctx, calls) = mock::context(Box::new(|method, path, _| match (method.as_str(), path) {
            ("DELETE", OBJECT) => deleted(),
            _ => mock::not_found(path),
        }));
        let q: TraceQuery = serde_json::from_value(query("t", Some(60), finished("Failed", 20))).unwrap();
        let action = reconcile_query(Arc::new(q), ctx.clone()).await.unwrap();
        // 40 s left, less the part of the second gone by (and some slack).
        assert!(
            (38_000..=40_000).any(|ms| action == Action::requeue(Duration::from_millis(ms))),
            "requeued for the ~40 s left: {action:?}"
        );
        assert!(calls.all().is_empty(), "{:?}", calls.all());

        let q: TraceQuery = serde_json::from_value(query("t", Some(60), finished("Failed", 120))).unwrap();
        let action = reconcile_query(Arc::new(q), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        let all = calls.all();
        assert_eq!(all.len(), 1, "only the delete: {all:?}");
        assert_eq!((&all[0].method, all[0].path.as_str()), (&Method::DELETE, OBJECT));
    }

    /// A succeeded query's result file goes with it: while the file cannot be
    /// removed (here its tracker is gone) the query is kept and retried every
    /// 30 s, for ten minutes past its TTL; then it is deleted anyway, with a
    /// `ResultNotRemoved` Warning event.
    #[tokio::test]
    async fn a_succeeded_query_waits_for_its_result_file_at_most_ten_minutes() {
        const TRACKER: &str = "/apis/kubetrail.io/v1alpha1/trackers/gone";
        let (ctx, calls) = mock::context(Box::new(|method, path, body| match (method.as_str(), path) {
            ("DELETE", OBJECT) => deleted(),
            ("POST", "/apis/events.k8s.io/v1/namespaces/team/events") => mock::created(body),
            _ => mock::not_found(path),
        }));
        let q: TraceQuery =
            serde_json::from_value(query("gone", Some(60), finished("Succeeded", 120))).unwrap();
        let action = reconcile_query(Arc::new(q), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
        let all = calls.all();
        assert_eq!(all.len(), 1, "only the tracker is read: {all:?}");
        assert_eq!((&all[0].method, all[0].path.as_str()), (&Method::GET, TRACKER));

        let q: TraceQuery =
            serde_json::from_value(query("gone", Some(60), finished("Succeeded", 60 + 601))).unwrap();
        let action = reconcile_query(Arc::new(q), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        let events = calls.to(Method::POST, "/events");
        assert_eq!(events.len(), 1, "{:?}", calls.all());
        assert_eq!(
            (&events[0].body["type"], &events[0].body["reason"]),
            (&"Warning".into(), &"ResultNotRemoved".into())
        );
        assert_eq!(calls.to(Method::DELETE, OBJECT).len(), 1, "{:?}", calls.all());
    }

    /// With every query slot taken, a new query is written Pending (reason
    /// Waiting) and runs nothing; once a slot is free it runs: Running, then
    /// Failed with reason TrackerNotFound, since its tracker does not exist;
    /// the slot is given back and the query is checked again after its TTL.
    #[tokio::test]
    async fn a_query_waits_pending_for_a_slot_then_fails_on_a_missing_tracker() {
        const TRACKER: &str = "/apis/kubetrail.io/v1alpha1/trackers/gone";
        let object = query("gone", Some(300), serde_json::Value::Null);
        let answer = object.clone();
        let (ctx, calls) = mock::context(Box::new(move |method, path, body| {
            match (method.as_str(), path) {
                ("PATCH", STATUS) => mock::patched_status(&answer, body),
                _ => mock::not_found(path),
            }
        }));
        let taken = ctx.query_slots.clone().try_acquire_owned().unwrap();
        let q: TraceQuery = serde_json::from_value(object).unwrap();
        let running = tokio::spawn(reconcile_query(Arc::new(q), ctx.clone()));
        for _ in 0..500 {
            if !calls.all().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Give it the chance to go further than it should.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting = calls.all();
        assert_eq!(waiting.len(), 1, "only the Pending status: {waiting:?}");
        assert_eq!(
            (&waiting[0].method, waiting[0].path.as_str()),
            (&Method::PATCH, STATUS)
        );
        let pending = &waiting[0].body["status"];
        assert_eq!(pending["phase"], "Pending");
        assert_eq!(pending["observedGeneration"], 2);
        assert_eq!(
            mock::condition_of(pending, "Complete"),
            Some(("False".into(), "Waiting".into(), 2))
        );
        assert!(!running.is_finished());

        drop(taken);
        let action = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("runs once a slot is free")
            .unwrap()
            .unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        assert_eq!(ctx.query_slots.available_permits(), 1, "the slot is given back");
        let all = calls.all();
        let order: Vec<_> = all
            .iter()
            .map(|c| {
                let phase = c.body["status"]["phase"].as_str().unwrap_or_default();
                format!("{} {} {phase}", c.method, c.path)
            })
            .collect();
        assert_eq!(
            order,
            [
                format!("PATCH {STATUS} Pending"),
                format!("PATCH {STATUS} Running"),
                format!("GET {TRACKER} "),
                format!("PATCH {STATUS} Failed"),
            ]
        );
        let failed = &all[3].body["status"];
        assert_eq!(
            mock::condition_of(failed, "Complete"),
            Some(("True".into(), "TrackerNotFound".into(), 2))
        );
        let message = failed["message"].as_str().unwrap();
        assert!(message.contains("\"gone\""), "{message}");
        assert!(failed["completionTime"].is_string(), "{failed}");
    }

    #[test]
    fn time_ranges() {
        let spec = |tr: serde_json::Value| -> crate::api::TraceQuerySpec {
            serde_json::from_value(serde_json::json!({"tracker": "t", "timeRange": tr})).unwrap()
        };
        let now = 1_000_000_000_000;
        assert_eq!(
            time_range(&spec(serde_json::json!({"last": "24h"})), now).unwrap(),
            (now - 86_400_000, now + 1)
        );
        assert_eq!(
            time_range(&spec(serde_json::json!({})), now).unwrap(),
            (now + 1 - 3_600_000, now + 1)
        );
        let (f, t) = time_range(
            &spec(serde_json::json!({"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"})),
            now,
        )
        .unwrap();
        assert_eq!(t - f, 86_400_000);
    }

    #[test]
    fn result_keys_come_from_the_query_not_its_status() {
        let mut q: TraceQuery = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubetrail.io/v1alpha1", "kind": "TraceQuery",
            "metadata": {"name": "who", "namespace": "team", "uid": "u-1"},
            "spec": {"tracker": "t"},
            "status": {"resultKey": "prod/KubeTrail/e2e/2026/11/20/t/some-trace-file.jsonl.gz"},
        }))
        .unwrap();
        assert_eq!(
            result_key("prod/", "east", &q),
            "prod/KubeTrail-Query/east/team/who/u-1.jsonl.gz"
        );
        assert_eq!(
            result_key("", "east", &q),
            "KubeTrail-Query/east/team/who/u-1.jsonl.gz"
        );
        q.status = None;
        assert_eq!(
            result_key("prod", "east", &q),
            "prod/KubeTrail-Query/east/team/who/u-1.jsonl.gz"
        );
    }
}
