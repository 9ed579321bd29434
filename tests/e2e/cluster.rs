//! Installed for real: the chart on a one-node cluster (containerd, kubelet,
//! controller-manager, scheduler, kube-proxy; `tests/node/up.sh`), with the image
//! built from the binary under test and imported without a registry, the
//! apiserver's audit webhook configured as the chart's NOTES tell a user.
//!
//! Not in the default run: it needs root and changes the host while it runs (all
//! restored when it stops). Run it with
//! `scripts/test.sh --test e2e cluster -- --ignored --test-threads=1`.

use crate::support::node::{self, Node};
use crate::support::s3::{ACCESS_KEY, SECRET_KEY};
use crate::support::{S3Server, eventually, free_port, unique};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kubetrail::api::{QueryPhase, TraceQuery};
use std::collections::BTreeMap;
use std::time::Duration;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kubetrail");
const NS: &str = "kubetrail";

/// What NOTES.txt step 1 and 2 tell a user, for an apiserver on the host network:
/// the policy and webhook kubeconfig from the release's Secret, the webhook's
/// server pointed at the Service's ClusterIP with the Service name kept for TLS,
/// and the flags.
async fn configure_audit_webhook(node: &Node, client: &kube::Client) {
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
struct Installed {
    node: Node,
    s3: S3Server,
    bucket: String,
    work: std::path::PathBuf,
    client: kube::Client,
}

async fn install(sets: &[String], prepare: impl FnOnce(&Node)) -> Installed {
    kubetrail::install_crypto_provider();
    let work = std::env::temp_dir().join(format!("kubetrail-cluster-{}", std::process::id()));
    let image = node::image_archive(&work).expect("building the kubetrail image");
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
    fn stop(self) {
        self.s3.stop();
        drop(self.node);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a one-node cluster on this host (root): run with --ignored"]
async fn helm_install_then_deletions_denials_and_execs_are_traced_and_queried() {
    let Installed {
        node,
        s3,
        bucket,
        work,
        client,
    } = install(&[], |_| {}).await;

    // Digests every minute (the default is hourly), so `kubetrail verify` has a
    // signed trail to check before the test ends.
    node.kubectl(&[
        "patch",
        "tracker",
        "system",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"integrity":{"digestPeriod":"1m"}}}"#,
    ])
    .expect("patching the default tracker");

    configure_audit_webhook(&node, &client).await;

    // An audited Secret deletion, by the admin, traced into the bucket.
    let client = node.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let name = unique("doomed");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
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
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the Secret");

    let trace = eventually(
        Duration::from_secs(120),
        "the deletion's trace in the bucket",
        || async {
            s3.objects(&bucket, "").await.into_iter().find_map(|(_, text)| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|t| t["trace_name"] == "delete secrets" && t["resource_name"] == name.as_str())
            })
        },
    )
    .await;
    assert_eq!(trace["user"], "kubetrail-node-admin", "{trace}");
    assert_eq!(trace["namespace"], "default", "{trace}");
    assert_eq!(trace["code"], 200, "{trace}");

    // A denied request and an exec, traced with who and what.
    let denied = node.kubectl_as("nobody", &["-n", "default", "get", "secrets"]);
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.contains("Forbidden") || e.contains("forbidden")),
        "{denied:?}"
    );
    let exec = node
        .kubectl(&[
            "-n",
            NS,
            "exec",
            "kubetrail-0",
            "--",
            "/usr/local/bin/kubetrail",
            "--version",
        ])
        .expect("kubectl exec");
    assert!(exec.contains("kubetrail"), "{exec}");
    let traces = |pred: fn(&serde_json::Value) -> bool| {
        let s3 = &s3;
        let bucket = &bucket;
        async move {
            s3.objects(bucket, "").await.into_iter().find_map(|(_, text)| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(&pred)
            })
        }
    };
    let forbidden = eventually(Duration::from_secs(120), "the denied request's trace", || {
        traces(|t| t["user"] == "kubetrail-node-nobody" && t["code"] == 403)
    })
    .await;
    assert_eq!(forbidden["resource_type"], "secrets", "{forbidden}");
    let exec = eventually(Duration::from_secs(120), "the exec's trace", || {
        traces(|t| {
            t["resource_name"] == "kubetrail-0"
                && t["request_uri"].as_str().is_some_and(|u| u.contains("/exec"))
        })
    })
    .await;
    assert_eq!(exec["namespace"], NS, "{exec}");

    // "Who deleted that Secret?", asked as a user asks: a TraceQuery.
    let queries: Api<TraceQuery> = Api::namespaced(client.clone(), "default");
    let query: TraceQuery = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubetrail.io/v1alpha1", "kind": "TraceQuery",
        "metadata": {"name": "who-deleted"},
        "spec": {
            "tracker": "system",
            "timeRange": {"last": "1h"},
            "filter": {"verbs": ["delete"], "resources": ["secrets"], "resourceNames": [name]},
        },
    }))
    .unwrap();
    queries
        .create(&PostParams::default(), &query)
        .await
        .expect("creating the TraceQuery");
    let answered = eventually(Duration::from_secs(90), "the TraceQuery's answer", || async {
        let q = queries.get("who-deleted").await.ok()?;
        matches!(
            q.status.as_ref()?.phase,
            Some(QueryPhase::Succeeded | QueryPhase::Failed)
        )
        .then_some(q)
    })
    .await;
    let status = answered.status.expect("status");
    assert_eq!(status.phase, Some(QueryPhase::Succeeded), "{:?}", status.message);
    assert_eq!(status.matched, 1, "{:?}", status.results);
    assert_eq!(status.results[0].user, "kubetrail-node-admin");

    // `kubetrail verify --tracker`, as a user runs it: clean once a digest is signed.
    let summary = eventually(
        Duration::from_secs(180),
        "a clean `kubetrail verify --tracker system`",
        || async {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
                .args(["verify", "--tracker", "system", "--operator-namespace", NS])
                .env("KUBECONFIG", &node.kubeconfig)
                .output()
                .await
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let summary = text
                .lines()
                .rev()
                .find(|l| l.contains("digests valid"))?
                .to_string();
            let counts: Vec<u64> = summary
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            // "A/B digests valid, C/D files valid, …"
            let clean = out.status.success()
                && counts.len() >= 4
                && counts[0] >= 1
                && counts[0] == counts[1]
                && counts[2] >= 1
                && counts[2] == counts[3];
            clean.then_some(summary)
        },
    )
    .await;
    eprintln!("verify: {summary}");

    Installed {
        node,
        s3,
        bucket,
        work,
        client,
    }
    .stop();
}

/// Secret deletions in the bucket: (object key, trace) for `name`.
async fn deletions(s3: &S3Server, bucket: &str, name: &str) -> Vec<(String, serde_json::Value)> {
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

async fn create_and_delete_secret(client: &kube::Client, name: &str) {
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

/// The audit-log source: the DaemonSet on the (control-plane labelled) node follows
/// the file the apiserver writes with --audit-log-path, and keeps following it, with
/// nothing delivered twice, after `helm upgrade` replaces its pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a one-node cluster on this host (root): run with --ignored"]
async fn audit_log_daemonset_follows_the_apiservers_log_across_an_upgrade() {
    kubetrail::install_crypto_provider();
    let base = std::path::PathBuf::from(node::NODE_DIR);
    let log_dir = base.join("audit");
    let log = log_dir.join("audit.log");
    let sets = vec![
        "source.auditLogFile.enabled=true".to_string(),
        format!("source.auditLogFile.path={}", log.display()),
        format!(
            "source.auditLogFile.spoolHostPath={}",
            base.join("auditlog-spool").display()
        ),
    ];
    let inst = install(&sets, |node| {
        std::fs::create_dir_all(&log_dir).unwrap();
        node.kubectl(&[
            "label",
            "node",
            node::NODE_NAME,
            "node-role.kubernetes.io/control-plane=",
        ])
        .expect("labelling the node");
    })
    .await;

    // The apiserver writes its log with the chart's policy (no webhook: only the
    // file source sees the requests).
    let secrets: Api<Secret> = Api::namespaced(inst.client.clone(), NS);
    let audit = secrets
        .get("kubetrail-apiserver-audit")
        .await
        .expect("the release's apiserver-audit Secret");
    let policy = audit.data.unwrap_or_default()["audit-policy.yaml"].0.clone();
    let policy_file = inst.node.dir.join("etc/audit-policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    inst.node
        .restart_apiserver(&format!(
            "--audit-policy-file={}\n--audit-log-path={}\n--audit-log-format=json\n\
             --audit-log-maxsize=1\n--audit-log-maxbackup=20\n",
            policy_file.display(),
            log.display()
        ))
        .unwrap_or_else(|e| panic!("restarting kube-apiserver with an audit log: {e}"));
    let client = inst.node.client().await;

    let before = unique("before");
    create_and_delete_secret(&client, &before).await;
    let first = eventually(
        Duration::from_secs(120),
        "the deletion read from the log",
        || async {
            deletions(&inst.s3, &inst.bucket, &before)
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(
        first.0.contains("_kubetrail-auditlog-"),
        "written by the DaemonSet's pod: {}",
        first.0
    );

    // A changed value rolls the DaemonSet's pod; the new one resumes from the
    // position in its spool on the node.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let auditlog_pods = || async {
        pods.list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=auditlog"))
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let old = auditlog_pods().await;
    inst.node
        .helm(&[
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
            "3m",
        ])
        .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    let new = auditlog_pods().await;
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(!old.contains(&new[0]), "the pod was replaced: {old:?} -> {new:?}");

    let after = unique("after");
    create_and_delete_secret(&client, &after).await;
    let second = eventually(
        Duration::from_secs(120),
        "the deletion after the upgrade",
        || async { deletions(&inst.s3, &inst.bucket, &after).await.into_iter().next() },
    )
    .await;
    assert!(second.0.contains(&new[0]), "written by the new pod: {}", second.0);
    // Nothing read twice: the first deletion is in the bucket once.
    assert_eq!(deletions(&inst.s3, &inst.bucket, &before).await.len(), 1);

    inst.stop();
}
