//! Day two on the node, under a steady stream of audited writes: a `helm upgrade`
//! that rolls both replicas, the lease holder's pod deleted, both pods killed
//! while the bucket is down (the spool on a PersistentVolume carries what they
//! held), then `helm uninstall`. Every write is in the bucket exactly once, and
//! the uninstall deletes nothing there (and finishes: the default Tracker is kept).

use crate::support::{eventually, unique};
use crate::{CHART, NS, apply, configure_audit_webhook, install, node, ready_pods, traces_where};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const OPERATOR: &str = "app.kubernetes.io/name=kubetrail,app.kubernetes.io/component=operator";
const STORAGE_CLASS: &str = "kubetrail-spool";

/// Writes ConfigMaps `{prefix}-N` into `load` about five times a second until
/// stopped; the names the apiserver accepted.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(client: &kube::Client, prefix: &str) -> Load {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "load");
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = prefix.to_string();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut accepted = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("{prefix}-{n}");
                    n += 1;
                    let cm = ConfigMap {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.clone()),
                            ..Default::default()
                        },
                        data: Some(BTreeMap::from([("n".to_string(), n.to_string())])),
                        ..Default::default()
                    };
                    if api.create(&PostParams::default(), &cm).await.is_ok() {
                        accepted.push(name);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                accepted
            }
        });
        Load { stop, task }
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the load task")
    }
}

/// The `create configmaps` traces in the bucket, counted by name.
async fn created(s3: &crate::S3Server, bucket: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, t) in traces_where(s3, bucket, |t| {
        t["trace_name"] == "create configmaps" && t["namespace"] == "load"
    })
    .await
    {
        *counts
            .entry(t["resource_name"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Waits until every name in `names` is in the bucket, then checks each is there
/// exactly once.
async fn all_delivered_once(s3: &crate::S3Server, bucket: &str, names: &[String], what: &str) {
    assert!(!names.is_empty(), "{what}: the load wrote nothing");
    let counts = eventually(Duration::from_secs(240), what, || async {
        let counts = created(s3, bucket).await;
        names.iter().all(|n| counts.contains_key(n)).then_some(counts)
    })
    .await;
    let twice: Vec<_> = names
        .iter()
        .filter(|n| counts.get(*n).copied().unwrap_or(0) != 1)
        .map(|n| (n, counts[n]))
        .collect();
    assert!(twice.is_empty(), "{what}: delivered more than once: {twice:?}");
}

/// The sum of `metric` over the operator pods' /metrics, read at their pod IPs.
fn metric_sum(node: &crate::Node, metric: &str) -> f64 {
    let ips = node
        .kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            OPERATOR,
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
        .unwrap_or_default();
    let mut sum = 0.0;
    for ip in ips.split_whitespace() {
        let Ok(out) = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", &format!("http://{ip}:8080/metrics")])
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix(metric)
                && let Some(v) = rest.split_whitespace().last()
                && (rest.starts_with(' ') || rest.starts_with('{'))
            {
                sum += v.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_lease_holder_loss_killed_pods_and_uninstall_lose_nothing() {
    let pv_root = std::path::PathBuf::from(node::NODE_DIR).join("pv");
    let sets: Vec<String> = [
        "replicas=2",
        "spool.persistence.enabled=true",
        "spool.persistence.size=1Gi",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("spool.persistence.storageClassName={STORAGE_CLASS}")])
    .collect();
    let inst = install(&sets, |node| {
        // Two static hostPath volumes for the two replicas' claims; the pods run
        // as 65532 and a hostPath ignores fsGroup.
        for i in 0..2 {
            let dir = pv_root.join(i.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(65532), Some(65532)).unwrap();
            apply(
                node,
                &format!(
                    "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: kubetrail-spool-{i}}}\n\
                     spec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n\
                     \x20 persistentVolumeReclaimPolicy: Retain\n  storageClassName: {STORAGE_CLASS}\n\
                     \x20 hostPath: {{path: {}, type: Directory}}\n",
                    dir.display()
                ),
            );
        }
    })
    .await;
    let node = &inst.node;
    let first = ready_pods(&inst.client, OPERATOR, 2).await;
    configure_audit_webhook(node, &inst.client).await;
    let client = node.client().await;
    node.kubectl(&["create", "namespace", "load"]).unwrap();

    // 1. A rolling upgrade under load: a changed value replaces both pods, one at
    //    a time; the apiserver retries a batch a stopping pod turns away.
    let load = Load::start(&client, &unique("roll"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    node.helm(&[
        "upgrade",
        "kubetrail",
        CHART,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "logFormat=text",
        "--wait",
        "--timeout",
        "5m",
    ])
    .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    let rolled = ready_pods(&client, OPERATOR, 2).await;
    for (name, uid) in &rolled {
        assert!(
            !first.iter().any(|(_, old)| old == uid),
            "{name} was replaced by the upgrade"
        );
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let names = load.stop().await;
    all_delivered_once(
        &inst.s3,
        &inst.bucket,
        &names,
        "writes during the rolling upgrade",
    )
    .await;

    // 2. The lease holder's pod deleted under load: the other replica takes the
    //    lease, the StatefulSet brings the pod back, nothing is lost.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let (holder, transitions) = eventually(Duration::from_secs(60), "a lease holder", || async {
        let spec = leases.get("kubetrail-leader").await.ok()?.spec?;
        let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
        Some((holder, spec.lease_transitions.unwrap_or(0)))
    })
    .await;
    assert!(
        rolled.iter().any(|(n, _)| *n == holder),
        "holder {holder} is a pod: {rolled:?}"
    );
    let load = Load::start(&client, &unique("lease"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    node.kubectl(&["-n", NS, "delete", "pod", &holder])
        .unwrap_or_else(|e| panic!("deleting the lease holder: {e}"));
    // The StatefulSet's new pod has the same name: a transition counts the hand-over.
    let other = eventually(Duration::from_secs(120), "the lease taken over", || async {
        let spec = leases.get("kubetrail-leader").await.ok()?.spec?;
        let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
        (spec.lease_transitions.unwrap_or(0) > transitions).then_some(holder)
    })
    .await;
    ready_pods(&client, OPERATOR, 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let names = load.stop().await;
    all_delivered_once(
        &inst.s3,
        &inst.bucket,
        &names,
        "writes while the lease holder went",
    )
    .await;
    eprintln!("lease: {holder} -> {other}");

    // 3. Persistence: with the bucket down, writes wait in the spools; both pods
    //    are killed (no drain); their successors replay the spools from the
    //    same volumes once the bucket is back.
    let received = metric_sum(node, "kubetrail_events_received_total");
    inst.s3.stop();
    let load = Load::start(&client, &unique("spooled"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let names = load.stop().await;
    eventually(
        Duration::from_secs(60),
        "the writes received into the spools",
        || async {
            let now = metric_sum(node, "kubetrail_events_received_total");
            (now >= received + names.len() as f64).then_some(())
        },
    )
    .await;
    node.kubectl(&[
        "-n",
        NS,
        "delete",
        "pod",
        "kubetrail-0",
        "kubetrail-1",
        "--grace-period=0",
        "--force",
    ])
    .unwrap_or_else(|e| panic!("killing the pods: {e}"));
    ready_pods(&client, OPERATOR, 2).await;
    inst.s3.restart().expect("the S3 server back");
    all_delivered_once(
        &inst.s3,
        &inst.bucket,
        &names,
        "writes spooled when the pods were killed",
    )
    .await;

    // 4. `helm uninstall` deletes nothing in the bucket, and keeps the claims
    //    (retainWhenDeleted) that may hold undelivered traces.
    let before = inst.s3.all_objects(&inst.bucket, "").await;
    assert!(!before.is_empty());
    node.helm(&["uninstall", "kubetrail", "-n", NS, "--wait", "--timeout", "3m"])
        .unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    eventually(Duration::from_secs(120), "the release's pods gone", || async {
        let out = node.kubectl(&["-n", NS, "get", "pods", "-o", "name"]).ok()?;
        out.trim().is_empty().then_some(())
    })
    .await;
    let after: BTreeMap<String, String> = inst.s3.all_objects(&inst.bucket, "").await.into_iter().collect();
    for (key, text) in &before {
        assert_eq!(after.get(key), Some(text), "{key} unchanged after helm uninstall");
    }
    // The default Tracker is kept, not left Terminating on a finalizer nobody
    // releases (the operator went in the same uninstall).
    let trackers: Api<kubetrail::api::Tracker> = Api::all(client.clone());
    let kept = trackers.get("system").await.expect("the default Tracker is kept");
    assert!(kept.metadata.deletion_timestamp.is_none(), "{:?}", kept.metadata);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let kept = claims.list(&Default::default()).await.expect("listing claims");
    assert_eq!(kept.items.len(), 2, "the spool claims are kept");
    inst.stop();
}
