//! The Tracker reconciler against the real apiserver and the real S3 server.

use crate::Harness;
use crate::support::{self, Operator, eventually, http};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubetrail::api::{ConditionType, Reason, Tracker, TrackerPhase, condition};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn create(h: &Harness, name: &str, spec: serde_json::Value) -> Api<Tracker> {
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(h.tracker(name, spec)).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating tracker");
    api
}

fn destination(bucket: &str, secret: &str) -> serde_json::Value {
    json!({
        "bucket": bucket,
        "prefix": "prod",
        "endpoint": support::env().s3.endpoint,
        "forcePathStyle": true,
        "credentialsSecretRef": {"name": secret},
    })
}

/// Waits until the tracker's Ready condition has `status` and `reason`, for the
/// current generation, and returns the tracker.
async fn wait_ready(api: &Api<Tracker>, name: &str, status: &str, reason: &str) -> Tracker {
    eventually(
        WAIT,
        &format!("tracker {name} Ready={status} reason {reason}"),
        || async {
            let t = api.get(name).await.ok()?;
            let s = t.status.as_ref()?;
            let ready = condition(&s.conditions, ConditionType::Ready)?;
            let current = s.observed_generation == t.metadata.generation;
            (current && ready.status == status && ready.reason == reason).then_some(t)
        },
    )
    .await
}

/// Waits for an event with `reason` and type on the tracker.
async fn wait_event(h: &Harness, name: &str, type_: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::all(h.client.clone());
    eventually(
        WAIT,
        &format!("{type_} event {reason} on tracker {name}"),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some(type_)
            })
        },
    )
    .await
}

#[tokio::test]
async fn reachable_bucket_makes_the_tracker_ready() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("ok").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("trk");
    let api = create(&h, &name, json!({"destination": destination(&bucket, "s3")})).await;

    let t = wait_ready(&api, &name, "True", "Ready").await;
    let status = t.status.clone().unwrap();
    assert_eq!(status.phase, Some(TrackerPhase::Enabled));
    assert_eq!(status.observed_generation, t.metadata.generation);
    assert_eq!(status.last_error, None);
    let reachable =
        condition(&status.conditions, ConditionType::DestinationReachable).expect("DestinationReachable");
    assert_eq!(reachable.status, "True");
    assert!(
        t.finalizers().iter().any(|f| f == "kubetrail.io/tracker-cleanup"),
        "finalizer set: {:?}",
        t.finalizers()
    );
    wait_event(&h, &name, "Normal", "Ready").await;

    // Defaults were applied by the apiserver from the CRD schema.
    assert!(t.spec.enabled);
    assert_eq!(t.spec.delivery.max_batch_age, "60s");
    assert_eq!(t.spec.destination.region, "us-east-1");
}

#[tokio::test]
async fn missing_bucket_is_reported_and_clears_once_created() {
    let h = Harness::start().await;
    let env = support::env();
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let bucket = support::unique("later");
    let name = support::unique("trk");
    let api = create(&h, &name, json!({"destination": destination(&bucket, "s3")})).await;

    let t = wait_ready(&api, &name, "False", "BucketNotFound").await;
    let status = t.status.unwrap();
    assert_eq!(status.phase, Some(TrackerPhase::Error));
    assert!(
        status.last_error.as_deref().unwrap_or("").contains(&bucket),
        "{:?}",
        status.last_error
    );
    assert_eq!(
        condition(&status.conditions, ConditionType::DestinationReachable)
            .unwrap()
            .reason,
        "BucketNotFound"
    );
    wait_event(&h, &name, "Warning", "BucketNotFound").await;

    env.s3
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let t = wait_ready(&api, &name, "True", "Ready").await;
    assert_eq!(t.status.unwrap().last_error, None);
}

#[tokio::test]
async fn wrong_secret_is_access_denied_until_the_secret_is_fixed() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("denied").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, "not-the-secret")
        .await;
    let name = support::unique("trk");
    let api = create(&h, &name, json!({"destination": destination(&bucket, "s3")})).await;

    wait_ready(&api, &name, "False", "AccessDenied").await;
    wait_event(&h, &name, "Warning", "AccessDenied").await;

    // Fixing the Secret wakes the tracker through the Secret watch; no restart.
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let t = wait_ready(&api, &name, "True", "Ready").await;
    assert_eq!(t.status.unwrap().phase, Some(TrackerPhase::Enabled));
}

#[tokio::test]
async fn missing_credentials_secret_is_reported_until_created() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("nocreds").await;
    let name = support::unique("trk");
    let api = create(&h, &name, json!({"destination": destination(&bucket, "creds")})).await;

    let t = wait_ready(&api, &name, "False", "CredentialsNotFound").await;
    let msg = t.status.unwrap().last_error.unwrap_or_default();
    assert!(
        msg.contains(&format!("{}/creds", h.namespace)),
        "message names the Secret: {msg}"
    );
    wait_event(&h, &name, "Warning", "CredentialsNotFound").await;

    h.put_credentials("creds", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    wait_ready(&api, &name, "True", "Ready").await;
}

/// A writer that cannot open the destination because the credentials Secret is
/// missing says so in its status entry: `CredentialsNotFound`, the store's own
/// reason (it was the generic `SinkUnavailable` while reasons travelled as text).
#[tokio::test]
async fn a_writer_reports_a_missing_credentials_secret_by_its_reason() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("nocredsw").await;
    let name = support::unique("trk");
    let spec = json!({"destination": destination(&bucket, "creds"), "delivery": {"maxBatchAge": "1s"}});
    let api = create(&h, &name, spec).await;
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("127.0.0.1:{}", support::free_port());
    let args = vec![
        "--insecure-http".to_string(),
        "--webhook-addr".into(),
        hook.clone(),
        "--spool-dir".into(),
        dir.path().join("spool").display().to_string(),
    ];
    let op = Operator::start(&h.namespace, &h.label, "w1", &args).await;
    let body = crate::ingest::batch("nocreds", 3, &h.namespace);
    let (code, _) = http(&hook, "POST", "/audit", &body).await.unwrap();
    assert_eq!(code, 200);

    let writer = eventually(WAIT, "the writer's failure in the tracker's status", || async {
        let s = api.get(&name).await.ok()?.status?;
        s.writers.into_iter().find(|w| w.last_error.is_some())
    })
    .await;
    let error = writer.last_error.unwrap_or_default();
    assert!(error.starts_with("CredentialsNotFound: "), "{error}");
    assert!(
        error.contains(&format!("{}/creds", h.namespace)),
        "names the Secret: {error}"
    );
    assert_eq!(writer.last_error_reason, Some(Reason::CredentialsNotFound));
    // Its file cannot be delivered: a clean stop would wait out the drain.
    op.kill().await;
}

#[tokio::test]
async fn unreachable_endpoint_is_reported() {
    let h = Harness::start().await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let port = support::free_port(); // nothing listens there
    let name = support::unique("trk");
    let mut dest = destination("nowhere", "s3");
    dest["endpoint"] = json!(format!("http://127.0.0.1:{port}"));
    let api = create(&h, &name, json!({"destination": dest})).await;
    let t = wait_ready(&api, &name, "False", "DestinationUnreachable").await;
    assert_eq!(t.status.unwrap().phase, Some(TrackerPhase::Error));
}

#[tokio::test]
async fn fixing_the_spec_clears_the_error() {
    let h = Harness::start().await;
    let env = support::env();
    let good = env.s3.bucket("fix").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("trk");
    let api = create(
        &h,
        &name,
        json!({"destination": destination("no-such-bucket-x", "s3")}),
    )
    .await;
    wait_ready(&api, &name, "False", "BucketNotFound").await;

    let patch = json!({"spec": {"destination": {"bucket": good}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let t = wait_ready(&api, &name, "True", "Ready").await;
    assert_eq!(t.status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn disabled_tracker_is_disabled_and_can_be_enabled() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("dis").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("trk");
    let api = create(
        &h,
        &name,
        json!({"enabled": false, "destination": destination(&bucket, "s3")}),
    )
    .await;

    let t = wait_ready(&api, &name, "False", "Disabled").await;
    assert_eq!(t.status.unwrap().phase, Some(TrackerPhase::Disabled));

    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"enabled": true}})),
    )
    .await
    .expect("enable");
    let t = wait_ready(&api, &name, "True", "Ready").await;
    assert_eq!(t.status.unwrap().phase, Some(TrackerPhase::Enabled));
}

#[tokio::test]
async fn deletion_goes_through_the_finalizer() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("del").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("trk");
    let api = create(&h, &name, json!({"destination": destination(&bucket, "s3")})).await;
    wait_ready(&api, &name, "True", "Ready").await;

    api.delete(&name, &DeleteParams::default()).await.expect("delete");
    eventually(WAIT, "tracker gone", || async {
        api.get_opt(&name)
            .await
            .ok()
            .and_then(|t| t.is_none().then_some(()))
    })
    .await;
    wait_event(&h, &name, "Normal", "Deleted").await;
}

#[tokio::test]
async fn unchanged_status_is_not_rewritten() {
    let h = Harness::start().await;
    let env = support::env();
    let bucket = env.s3.bucket("quiet").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("trk");
    let api = create(&h, &name, json!({"destination": destination(&bucket, "s3")})).await;
    let t = wait_ready(&api, &name, "True", "Ready").await;
    let version = t.resource_version();

    // A label change wakes the reconciler but changes nothing it reports.
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let touched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label");
    assert_ne!(touched.resource_version(), version);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = api.get(&name).await.unwrap();
    assert_eq!(
        after.resource_version(),
        touched.resource_version(),
        "no status write after a no-op reconcile"
    );
}
