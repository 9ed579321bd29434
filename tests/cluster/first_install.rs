//! The path a user takes first: `helm install`, the audit webhook as NOTES say,
//! then "who deleted that Secret?" answered by the bucket, a TraceQuery, a key
//! event notification, the console through a real port-forward and a clean
//! `kubetrail verify`.

use crate::support::{self, eventually, unique};
use crate::{Installed, NS, apply, configure_audit_webhook, install};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kubetrail::api::{KeyEventNotification, QueryPhase, TraceQuery};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_then_deletions_rbac_changes_denials_and_execs_are_traced_queried_notified_and_shown() {
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

    // A key event notification, as a security team would set one: RBAC changes
    // and deletions (any preset matches), as Kubernetes Events.
    apply(
        &node,
        "apiVersion: kubetrail.io/v1alpha1\nkind: KeyEventNotification\n\
         metadata: {name: secrets-and-rbac}\n\
         spec:\n  presets: [rbacChanges, allDeletes]\n",
    );

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

    // A RoleBinding created, then changed (a subject added), as an attacker
    // widening access would.
    node.kubectl(&[
        "-n",
        "default",
        "create",
        "rolebinding",
        "readers",
        "--clusterrole=view",
        "--user=alice",
    ])
    .expect("creating the RoleBinding");
    node.kubectl(&[
        "-n",
        "default",
        "set",
        "subject",
        "rolebinding",
        "readers",
        "--user=mallory",
    ])
    .expect("adding a subject to the RoleBinding");
    let change = eventually(Duration::from_secs(120), "the RoleBinding change's trace", || {
        traces(|t| {
            t["resource_type"] == "rolebindings"
                && t["resource_name"] == "readers"
                && (t["trace_name"] == "update rolebindings" || t["trace_name"] == "patch rolebindings")
        })
    })
    .await;
    assert_eq!(change["user"], "kubetrail-node-admin", "{change}");
    assert!(
        change.to_string().contains("mallory"),
        "the new subject is in the trace: {change}"
    );

    // The notification fired: a KeyEvent Event on it, and its status counts the
    // Secret deletion and both RoleBinding writes.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let key_events = |regarding: &'static str| {
        let events = events.clone();
        async move {
            let list = events.list(&kube::api::ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("KeyEvent")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
            })
        }
    };
    eventually(
        Duration::from_secs(120),
        "a KeyEvent Event on the notification",
        || key_events("secrets-and-rbac"),
    )
    .await;
    let on_binding = eventually(
        Duration::from_secs(120),
        "a KeyEvent Event on the RoleBinding",
        || key_events("readers"),
    )
    .await;
    assert!(
        on_binding
            .note
            .as_deref()
            .is_some_and(|n| n.contains("rolebindings")),
        "{on_binding:?}"
    );
    let notifications: Api<KeyEventNotification> = Api::all(client.clone());
    let status = eventually(Duration::from_secs(60), "the notification's counts", || async {
        let s = notifications.get("secrets-and-rbac").await.ok()?.status?;
        (s.matched >= 3 && s.sent >= 1).then_some(s)
    })
    .await;
    assert_eq!(status.failed, 0, "{status:?}");

    console_through_a_port_forward(&node, &s3, &bucket).await;

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

    // `kubetrail verify --tracker`, as a user runs it: clean once a digest is
    // signed. Files newer than the last digest are `pending` (not a failure:
    // audit traffic never stops on a live cluster); anything else fails it.
    let last = std::sync::Mutex::new(String::new());
    let summary = tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
                .args(["verify", "--tracker", "system", "--operator-namespace", NS])
                .env("KUBECONFIG", &node.kubeconfig)
                .output()
                .await
                .expect("running kubetrail verify");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            *last.lock().unwrap() = text.clone();
            if let Some(summary) = text.lines().rev().find(|l| l.contains("digests valid")) {
                // "A/B digests valid, C/D files valid[, N pending (not yet in a digest)]"
                let counts: Vec<u64> = summary
                    .replace(", ", ";")
                    .replace(',', "")
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse().ok())
                    .collect();
                let only_pending = summary
                    .split(", ")
                    .skip(2)
                    .all(|part| part.ends_with("pending (not yet in a digest)"));
                if out.status.success()
                    && counts.len() >= 4
                    && counts[0] >= 1
                    && counts[0] == counts[1]
                    && counts[2] >= 1
                    && only_pending
                {
                    return summary.to_string();
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no clean `kubetrail verify --tracker system` in 240 s; the last run said:\n{}",
            last.lock().unwrap()
        )
    });
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

/// A GET through the local console listener; (status, body).
async fn get(listen: &str, path: &str) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .arg(format!("http://{listen}{path}"))
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `kubetrail console` as a namespace's viewer (a ServiceAccount allowed to create
/// TraceQueries in `shop` only), through a real port-forward to the operator pod:
/// it shows `shop`'s traces and nothing of `default`, which it may not read.
async fn console_through_a_port_forward(node: &crate::Node, s3: &crate::S3Server, bucket: &str) {
    let visible = unique("shop-visible");
    apply(
        node,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: viewer, namespace: shop}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: trail-reader, namespace: shop}}\n\
             rules: [{{apiGroups: [kubetrail.io], resources: [tracequeries], verbs: [create, get, list]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: trail-reader, namespace: shop}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: trail-reader}}\n\
             subjects: [{{kind: ServiceAccount, name: viewer, namespace: shop}}]\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {visible}, namespace: shop}}\ndata: {{k: v}}\n"
        ),
    );
    eventually(Duration::from_secs(120), "the shop ConfigMap's trace", || async {
        let found = crate::traces_where(s3, bucket, |t| t["resource_name"] == visible.as_str()).await;
        (!found.is_empty()).then_some(())
    })
    .await;

    let token = node
        .kubectl(&["-n", "shop", "create", "token", "viewer"])
        .expect("a token for the viewer");
    // The port-forward is made as the admin (someone allowed to reach the
    // operator's pod); the console decides with the viewer's token, which
    // `--token-file` passes on.
    let token_file = node.dir.join("etc/viewer.token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut console = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["console", "-n", NS, "--listen", &listen, "--as-namespace", "shop"])
        .arg("--token-file")
        .arg(&token_file)
        .env("KUBECONFIG", &node.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubetrail console");
    let stdout = console.stdout.take().unwrap();
    let first = {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("kubetrail console prints its URL")
            .unwrap()
            .unwrap_or_default();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        first
    };
    if !first.starts_with(&format!("kubetrail console: http://{listen}/#/traces?ns=shop")) {
        use tokio::io::AsyncReadExt as _;
        let _ = console.start_kill();
        let mut err = String::new();
        let _ = console.stderr.take().unwrap().read_to_string(&mut err).await;
        panic!("kubetrail console printed {first:?}; its stderr:\n{err}");
    }
    // The logs go to stderr; keep reading them so the pipe never fills.
    let mut stderr = console.stderr.take().unwrap();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    });

    let traces = "/api/v1/traces?tracker=system&last=1h&limit=500";
    let (code, body) = eventually(
        Duration::from_secs(60),
        "the console through the port-forward",
        || async {
            let (code, body) = get(&listen, &format!("{traces}&ns=shop")).await;
            (code == 200 && body.contains(visible.as_str())).then_some((code, body))
        },
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        !body.contains("\"namespace\":\"default\""),
        "the viewer sees only shop's traces: {body}"
    );
    let (code, body) = get(&listen, &format!("{traces}&ns=default")).await;
    assert_eq!(
        code, 403,
        "the viewer may not create TraceQueries in default: {body}"
    );
    let (code, body) = get(&listen, "/api/v1/whoami?ns=shop").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("system:serviceaccount:shop:viewer"), "{body}");
    let _ = console.kill().await;
}
