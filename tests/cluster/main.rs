//! Installed for real: the chart on a one-node cluster (containerd, kubelet,
//! controller-manager, scheduler, kube-proxy; `tests/node/up.sh`), with the image
//! built from the binary under test and imported without a registry, the
//! apiserver's audit webhook configured as the chart's NOTES tell a user.
//!
//! Its own test binary, so it never runs beside the `e2e` group: it needs root,
//! uses fixed addresses (10.88.0.0/16) and changes the host while a node runs (all
//! restored when it stops). One node at a time; `scripts/test.sh --test cluster`.

#[allow(dead_code)]
#[path = "../e2e/support/mod.rs"]
mod support;

mod audit_log;
mod day_two;
mod first_install;

use crate::support::node::{self, Node};
use crate::support::s3::{ACCESS_KEY, SECRET_KEY};
use crate::support::{S3Server, eventually, free_port};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kubetrail");
pub const NS: &str = "kubetrail";

/// What NOTES.txt step 1 and 2 tell a user, for an apiserver on the host network:
/// the policy and webhook kubeconfig from the release's Secret, the webhook's
/// server pointed at the Service's ClusterIP with the Service name kept for TLS,
/// and the flags.
pub async fn configure_audit_webhook(node: &Node, client: &kube::Client) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let audit = secrets
        .get("kubetrail-apiserver-audit")
        .await
        .expect("the release's apiserver-audit Secret");
    let data = audit.data.unwrap_or_default();
    let file = |key: &str| {
        String::from_utf8(
            data.get(key)
                .unwrap_or_else(|| panic!("{key} in the Secret"))
                .0
                .clone(),
        )
        .expect("UTF-8")
    };
    let etc = node.dir.join("etc/kubetrail");
    std::fs::create_dir_all(&etc).unwrap();
    let host = "kubetrail-webhook.kubetrail.svc";
    let ip = node
        .kubectl(&[
            "-n",
            NS,
            "get",
            "svc",
            "kubetrail-webhook",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect("the webhook Service");
    let kubeconfig = file("audit-webhook.kubeconfig");
    let from = format!("server: https://{host}:443/audit");
    assert!(
        kubeconfig.contains(&from),
        "webhook kubeconfig names the Service:\n{kubeconfig}"
    );
    let kubeconfig = kubeconfig.replace(
        &from,
        &format!(
            "server: https://{}:443/audit\n      tls-server-name: {host}",
            ip.trim()
        ),
    );
    std::fs::write(etc.join("audit-policy.yaml"), file("audit-policy.yaml")).unwrap();
    std::fs::write(etc.join("audit-webhook.kubeconfig"), kubeconfig).unwrap();
    let flags = format!(
        "--audit-policy-file={etc}/audit-policy.yaml\n\
         --audit-webhook-config-file={etc}/audit-webhook.kubeconfig\n\
         --audit-webhook-mode=batch\n--audit-webhook-batch-max-size=400\n\
         --audit-webhook-batch-max-wait=5s\n--audit-webhook-initial-backoff=5s\n\
         --audit-webhook-truncate-enabled=true\n\
         --audit-webhook-truncate-max-batch-size=10485760\n\
         --audit-webhook-truncate-max-event-size=1048576\n",
        etc = etc.display()
    );
    node.restart_apiserver(&flags)
        .unwrap_or_else(|e| panic!("restarting kube-apiserver with the audit webhook: {e}"));
}

/// The node, the S3 server on its bridge, a bucket, and the chart installed with
/// the local image (`sets` added), its StatefulSet pod Ready. `prepare` runs on
/// the node before the install.
pub struct Installed {
    pub node: Node,
    pub s3: S3Server,
    pub bucket: String,
    pub work: std::path::PathBuf,
    pub client: kube::Client,
}

pub async fn install(sets: &[String], prepare: impl FnOnce(&Node)) -> Installed {
    kubetrail::install_crypto_provider();
    let work = std::env::temp_dir().join(support::unique("kubetrail-cluster"));
    // One image for the binary's tests, in cargo's scratch space (rebuilt each run).
    let image = node::image_archive(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-image"))
        .expect("building the kubetrail image");
    let node = Node::start(&[image]).unwrap_or_else(|e| panic!("one-node cluster: {e}"));
    let s3 = S3Server::start_at(&work.join("s3"), node::GATEWAY, free_port()).expect("S3 on the bridge");
    let bucket = s3.bucket("cluster").await;

    prepare(&node);
    node.kubectl(&["create", "namespace", NS]).unwrap();
    let destination_bucket = format!("destination.bucket={bucket}");
    let destination_endpoint = format!("destination.endpoint={}", s3.endpoint);
    node.kubectl(&[
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "s3-creds",
        &format!("--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}"),
        &format!("--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}"),
    ])
    .unwrap();
    let install = [
        "install",
        "kubetrail",
        CHART,
        "-n",
        NS,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &destination_bucket,
        "--set",
        &destination_endpoint,
        "--set",
        "destination.forcePathStyle=true",
        "--set",
        "destination.credentialsSecret=s3-creds",
        "--set",
        "defaultTracker.delivery.maxBatchAge=5s",
        "--wait",
        "--timeout",
        "3m",
    ]
    .into_iter()
    .map(String::from)
    .chain(sets.iter().map(|s| format!("--set={s}")))
    .collect::<Vec<_>>();
    let install = node.helm(&install.iter().map(String::as_str).collect::<Vec<_>>());
    if let Err(e) = install {
        panic!("helm install: {e}\n{}", node.log_tails(20));
    }

    let client = node.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(Duration::from_secs(120), "kubetrail-0 Ready", || async {
        let pod = pods.get("kubetrail-0").await.ok()?;
        let ready = pod
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;

    Installed {
        node,
        s3,
        bucket,
        work,
        client,
    }
}

impl Installed {
    pub fn stop(self) {
        self.s3.stop();
        drop(self.node);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Secret deletions in the bucket: (object key, trace) for `name`.
pub async fn deletions(s3: &S3Server, bucket: &str, name: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (key, text) in s3.objects(bucket, "").await {
        for line in text.lines() {
            let Ok(t) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if t["trace_name"] == "delete secrets" && t["resource_name"] == name {
                out.push((key.clone(), t));
            }
        }
    }
    out
}

pub async fn create_and_delete_secret(client: &kube::Client, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    };
    eventually(Duration::from_secs(30), "creating the Secret", || async {
        secrets.create(&PostParams::default(), &secret).await.ok()
    })
    .await;
    secrets
        .delete(name, &DeleteParams::default())
        .await
        .expect("deleting the Secret");
}

/// Every trace in the bucket's trace files that `pred` accepts: (object key, trace).
pub async fn traces_where(
    s3: &S3Server,
    bucket: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (key, text) in s3.objects(bucket, "").await {
        for line in text.lines() {
            if let Ok(t) = serde_json::from_str::<serde_json::Value>(line)
                && pred(&t)
            {
                out.push((key.clone(), t));
            }
        }
    }
    out
}

/// `kubectl apply -f` of `yaml`, as the admin.
pub fn apply(node: &Node, yaml: &str) {
    let file = node.dir.join(format!("etc/apply-{}.yaml", support::unique("m")));
    std::fs::write(&file, yaml).unwrap();
    node.kubectl(&["apply", "-f", file.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("kubectl apply:\n{yaml}\n{e}"));
}

/// Waits until every pod labelled `selector` in the release namespace is Ready
/// and there are `count` of them; their names and UIDs.
pub async fn ready_pods(client: &kube::Client, selector: &str, count: usize) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(
        Duration::from_secs(240),
        &format!("{count} Ready pods ({selector})"),
        || async {
            let list = pods
                .list(&kube::api::ListParams::default().labels(selector))
                .await
                .ok()?;
            let ready: Vec<(String, String)> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .map(|p| {
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        p.metadata.uid.clone().unwrap_or_default(),
                    )
                })
                .collect();
            (ready.len() == count && list.items.len() == count).then_some(ready)
        },
    )
    .await
}
