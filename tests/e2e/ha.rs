//! Two operator replicas: both ingest and deliver (own spool, own files); only the
//! Lease holder reconciles; killing it hands over within the lease duration.

use crate::Harness;
use crate::support::{self, Operator, eventually, http};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubetrail::api::{ConditionType, Tracker, condition};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

async fn metric(op: &Operator, name: &str) -> Option<String> {
    let (_, text) = http(&op.admin, "GET", "/metrics", b"").await?;
    text.lines().find(|l| l.starts_with(name)).map(String::from)
}

fn batch(tag: &str, ns: &str) -> Vec<u8> {
    support::audit::tagged_batch(tag, ns, 10)
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_follower_takes_over() {
    let env = support::env();
    let h = Harness::start().await;
    let label = support::unique("ha");
    let bucket = env.s3.bucket("ha").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let start = |instance: &'static str| {
        let port = support::free_port();
        let spool = dir.path().join(instance).display().to_string();
        let (ns, label) = (h.namespace.clone(), label.clone());
        async move {
            let args = vec![
                "--insecure-http".to_string(),
                "--webhook-addr".into(),
                format!("127.0.0.1:{port}"),
                "--spool-dir".into(),
                spool,
                "--lease-seconds".into(),
                "3".into(),
            ];
            (
                Operator::start(&ns, &label, instance, &args).await,
                format!("127.0.0.1:{port}"),
            )
        }
    };
    let (a, a_hook) = start("replica-a").await;
    let (b, b_hook) = start("replica-b").await;

    let name = format!("{}-ha", h.namespace);
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "Tracker",
        "metadata": {"name": name, "labels": {"kubetrail.io/test": label}},
        "spec": {"destination": {"bucket": bucket, "endpoint": env.s3.endpoint, "forcePathStyle": true,
                 "credentialsSecretRef": {"name": "s3"}}, "delivery": {"maxBatchAge": "1s"}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    eventually(Duration::from_secs(60), "tracker ready", || async {
        let t = api.get(&name).await.ok()?;
        (condition(&t.status?.conditions, ConditionType::Ready)?.status == "True").then_some(())
    })
    .await;

    // Exactly one leader; only it reconciles; the Lease names it.
    let a_leads = eventually(Duration::from_secs(30), "one leader", || async {
        let la = metric(&a, "kubetrail_leader ").await?;
        let lb = metric(&b, "kubetrail_leader ").await?;
        match (la.ends_with(" 1"), lb.ends_with(" 1")) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, follower, leader_id, follower_id, follower_hook) = if a_leads {
        (a, b, "replica-a", "replica-b", b_hook.clone())
    } else {
        (b, a, "replica-b", "replica-a", a_hook.clone())
    };
    let reconciles = "kubetrail_reconciles_total{controller=\"tracker\"";
    assert!(
        metric(&leader, reconciles).await.is_some(),
        "the leader reconciles"
    );
    assert!(
        metric(&follower, reconciles).await.is_none(),
        "the follower does not reconcile"
    );
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), &h.namespace);
    let lease = leases.get("kubetrail-leader").await.expect("lease");
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(leader_id));

    // Both replicas accept batches and write their own, distinct files.
    for (i, hook) in [&a_hook, &b_hook].into_iter().enumerate() {
        let (code, _) = http(hook, "POST", "/audit", &batch(&format!("ha{i}"), &h.namespace))
            .await
            .unwrap();
        assert_eq!(code, 200);
    }
    let objects = eventually(Duration::from_secs(60), "files of both replicas", || async {
        let objs = env.s3.objects(&bucket, "").await;
        let ok = objs.iter().any(|(k, _)| k.contains("_replica-a_"))
            && objs.iter().any(|(k, _)| k.contains("_replica-b_"));
        ok.then_some(objs)
    })
    .await;
    let keys: HashSet<&String> = objects.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), objects.len(), "no two files share a key");
    let all: String = objects.iter().map(|(_, t)| t.as_str()).collect();
    for i in 0..2 {
        for j in 0..10 {
            assert!(all.contains(&format!("\"ha{i}-{j}\"")), "ha{i}-{j} delivered");
        }
    }

    // Only the leader writes Tracker status: it folds both replicas' delivery
    // reports (one Lease each) into the totals and one `writers` entry per replica.
    let status = eventually(Duration::from_secs(30), "both replicas counted", || async {
        let s = api.get(&name).await.ok()?.status?;
        (s.events_delivered == 20 && s.writers.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(
        status.files_delivered,
        status.writers.iter().map(|w| w.files).sum::<u64>()
    );
    for (w, id) in status.writers.iter().zip(["replica-a", "replica-b"]) {
        assert_eq!((w.writer.as_str(), w.events), (id, 10), "{w:?}");
        let last = w.last_delivery.as_ref().expect("writer's last delivery");
        assert!(last.object_key.contains(&format!("_{id}_")), "{last:?}");
    }
    for id in ["replica-a", "replica-b"] {
        leases
            .get(&format!("kubetrail-writer-{id}"))
            .await
            .expect("each replica publishes a delivery report");
    }
    let status_writes = "kubetrail_status_patches_total{controller=\"delivery\"";
    assert!(
        metric(&leader, status_writes).await.is_some(),
        "the leader writes delivery status"
    );
    assert!(
        metric(&follower, status_writes).await.is_none(),
        "the follower never writes status"
    );

    // Kill the leader: the follower takes over within the lease duration (3 s)
    // plus a renewal period, and reconciles from then on.
    let killed = Instant::now();
    leader.kill().await;
    eventually(Duration::from_secs(15), "follower leads", || async {
        metric(&follower, "kubetrail_leader ")
            .await
            .filter(|l| l.ends_with(" 1"))
    })
    .await;
    let handover = killed.elapsed();
    assert!(handover < Duration::from_secs(8), "handover took {handover:?}");
    let lease = leases.get("kubetrail-leader").await.expect("lease");
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(follower_id));

    // The new leader keeps the old one's counts and adds its own new deliveries.
    let (code, _) = http(&follower_hook, "POST", "/audit", &batch("ha-after", &h.namespace))
        .await
        .unwrap();
    assert_eq!(code, 200);
    eventually(Duration::from_secs(30), "new leader counts", || async {
        let s = api.get(&name).await.ok()?.status?;
        (s.events_delivered == 30).then_some(())
    })
    .await;
    assert!(metric(&follower, status_writes).await.is_some());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"destination": {"bucket": "no-such-bucket-ha"}}})),
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(60),
        "new leader reconciles the change",
        || async {
            let t = api.get(&name).await.ok()?;
            (condition(&t.status?.conditions, ConditionType::Ready)?.reason == "BucketNotFound").then_some(())
        },
    )
    .await;
    assert!(metric(&follower, reconciles).await.is_some());

    // A leader stopped cleanly (SIGTERM) gives the lease up on its way out, so a
    // new replica takes over without waiting for the lease to expire.
    let (c, _) = start("replica-c").await;
    let status = follower.stop().await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let lease = leases.get("kubetrail-leader").await.expect("lease");
    assert_ne!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(follower_id),
        "the stopped leader released the lease"
    );
    eventually(Duration::from_secs(15), "replica-c leads", || async {
        metric(&c, "kubetrail_leader ")
            .await
            .filter(|l| l.ends_with(" 1"))
    })
    .await;
}
