//! The audit-log source on a real node: the DaemonSet follows the apiserver's own
//! `--audit-log-path` file across a `helm upgrade`.

use crate::support::{eventually, unique};
use crate::{CHART, NS, create_and_delete_secret, deletions, install, node};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use std::time::Duration;

/// The audit-log source: the DaemonSet on the (control-plane labelled) node follows
/// the file the apiserver writes with --audit-log-path, and keeps following it, with
/// nothing delivered twice, after `helm upgrade` replaces its pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
