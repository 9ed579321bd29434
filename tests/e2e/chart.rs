//! The Helm chart lints, renders with and without its optional parts, is accepted
//! by the real apiserver, refuses bad values, and its default Tracker works.

use crate::Harness;
use crate::support::{self, eventually};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kubetrail::api::{ConditionType, Tracker, condition};
use std::collections::HashSet;
use std::time::Duration;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kubetrail");

fn helm() -> std::path::PathBuf {
    let path = std::env::var("KUBETRAIL_HELM")
        .map(Into::into)
        .unwrap_or_else(|_| support::bin_dir().join("helm"));
    assert!(
        path.exists(),
        "helm not found at {}: run `bash scripts/test-env.sh`",
        path.display()
    );
    path
}

/// Runs helm; returns (success, stdout, stderr).
fn run_helm(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(helm())
        .args(args)
        .output()
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Renders as for the test apiserver, which serves NetworkPolicy.
fn render(namespace: &str, sets: &[String]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "template",
        "kt",
        CHART,
        "-n",
        namespace,
        "--api-versions",
        "networking.k8s.io/v1/NetworkPolicy",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (ok, out, err) = run_helm(&args);
    assert!(ok, "helm template failed: {err}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("rendered YAML parses");
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// Server-side dry-run apply of every object whose kind the apiserver serves;
/// returns the kinds applied.
async fn dry_run(client: &kube::Client, namespace: &str, docs: &[serde_json::Value]) -> HashSet<String> {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut applied = HashSet::new();
    for doc in docs {
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("gvk");
        let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
            // e.g. ServiceMonitor, Certificate: their CRDs are not in the test cluster.
            continue;
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &ar),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let name = obj.metadata.name.clone().expect("name");
        api.patch(
            &name,
            &PatchParams::apply("kubetrail-chart-test").dry_run(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apiserver refused {} {name}: {e}", gvk.kind));
        applied.insert(gvk.kind);
    }
    applied
}

#[tokio::test]
async fn chart_lints_renders_and_is_accepted_by_the_apiserver() {
    let h = Harness::start().await;
    let (ok, out, err) = run_helm(&["lint", CHART, "--set", "destination.bucket=audit-logs"]);
    assert!(ok, "helm lint: {out}{err}");

    let base = vec!["destination.bucket=audit-logs".to_string()];
    let docs = render(&h.namespace, &base);
    let kinds = dry_run(&h.client, &h.namespace, &docs).await;
    for k in [
        "StatefulSet",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "Tracker",
    ] {
        assert!(kinds.contains(k), "{k} rendered and accepted: {kinds:?}");
    }
    // Security context of the operator container.
    assert!(
        !docs.iter().any(|d| d["kind"] == "Deployment"),
        "a StatefulSet, not a Deployment"
    );
    let deploy = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.contains(&"--client-ca-file=/etc/kubetrail/tls/ca.crt"),
        "{args:?}"
    );
    // The files for the apiserver are rendered.
    let audit = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "kt-kubetrail-apiserver-audit")
        .expect("apiserver audit secret");
    assert!(
        audit["stringData"]["audit-webhook.kubeconfig"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "https://kt-kubetrail-webhook.{}.svc:443/audit",
                h.namespace
            ))
    );
    assert!(
        audit["stringData"]["audit-policy.yaml"]
            .as_str()
            .unwrap()
            .contains("kind: Policy")
    );

    // Every optional part on.
    let mut all = base.clone();
    all.extend(
        [
            "replicas=2",
            "networkPolicy.enabled=true",
            "serviceMonitor.enabled=true",
            "dashboard.enabled=true",
            "adminNamespaces={ops,security}",
            "readableClusters={east,west}",
        ]
        .map(String::from),
    );
    let docs = render(&h.namespace, &all);
    let kinds_rendered: HashSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "ConfigMap",
    ] {
        assert!(kinds_rendered.contains(k), "{k} rendered: {kinds_rendered:?}");
    }
    let kinds = dry_run(&h.client, &h.namespace, &docs).await;
    for k in ["PodDisruptionBudget", "NetworkPolicy", "ConfigMap"] {
        assert!(kinds.contains(k), "{k} accepted: {kinds:?}");
    }
    // Other clusters are readable only when listed; by default none is.
    let all_args =
        docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["args"]
            .clone();
    assert!(
        all_args
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--readable-clusters=east,west"),
        "{all_args}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--readable-clusters")),
        "{args:?}"
    );
    // The default spool is an emptyDir: no claims.
    let volumes = deploy["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["name"] == "spool" && v["emptyDir"].is_object()),
        "{volumes:?}"
    );
    assert!(deploy["spec"]["volumeClaimTemplates"].is_null());
    // The drain fits in the grace period.
    assert!(args.contains(&"--drain-seconds=45"), "{args:?}");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        60
    );
    assert_eq!(deploy["spec"]["serviceName"], "kt-kubetrail-headless");

    // A persistent spool per replica, for 1 and 3 replicas, accepted by the apiserver.
    for replicas in [1, 3] {
        let docs = render(
            &h.namespace,
            &[
                base[0].clone(),
                "spool.persistence.enabled=true".into(),
                "spool.persistence.size=5Gi".into(),
                format!("replicas={replicas}"),
                "shutdown.drainSeconds=100".into(),
            ],
        );
        let sets: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "StatefulSet").collect();
        assert_eq!(sets.len(), 1);
        let sts = sets[0];
        assert_eq!(sts["spec"]["replicas"], replicas);
        assert_eq!(sts["spec"]["updateStrategy"]["type"], "RollingUpdate");
        let claims = sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .expect("claim templates");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["metadata"]["name"], "spool");
        assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "5Gi");
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "Retain"
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert!(
            !pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == "spool"),
            "the spool comes from the claim template"
        );
        assert_eq!(pod["terminationGracePeriodSeconds"], 115);
        assert!(
            pod["containers"][0]["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--drain-seconds=100")
        );
        assert!(!docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
        let kinds = dry_run(&h.client, &h.namespace, &docs).await;
        assert!(kinds.contains("StatefulSet"), "{kinds:?}");
    }
}

#[test]
fn bad_values_are_refused_by_the_schema() {
    for (set, expected) in [
        ("destination.bucket=Bad_Bucket", "/destination/bucket"),
        ("destination.prefix=/prod", "/destination/prefix"),
        ("destination.prefix=a/../b", "/destination/prefix"),
        ("replicas=0", "/replicas"),
        (
            "defaultTracker.delivery.compression=lz4",
            "/defaultTracker/delivery/compression",
        ),
        ("logFormat=xml", "/logFormat"),
    ] {
        let (ok, _, err) = run_helm(&[
            "template",
            "kt",
            CHART,
            "--set",
            "destination.bucket=audit-logs",
            "--set",
            set,
        ]);
        assert!(!ok, "{set} must be refused");
        assert!(err.contains(expected), "{set}: {err}");
    }
    let (ok, _, err) = run_helm(&["template", "kt", CHART]);
    assert!(!ok && err.contains("destination.bucket is required"), "{err}");
    let (ok, _, err) = run_helm(&[
        "template",
        "kt",
        CHART,
        "--set",
        "destination.bucket=a-b-c",
        "--set",
        "shutdown.drainSeconds=1",
    ]);
    assert!(!ok && err.contains("/shutdown/drainSeconds"), "{err}");
    // A persistent spool with several replicas is fine now (one claim each).
    let (ok, _, err) = run_helm(&[
        "template",
        "kt",
        CHART,
        "--set",
        "destination.bucket=a-b-c",
        "--set",
        "replicas=2",
        "--set",
        "spool.persistence.enabled=true",
    ]);
    assert!(ok, "{err}");
}

#[tokio::test]
async fn default_tracker_from_values_becomes_ready() {
    let env = support::env();
    let h = Harness::start().await;
    let bucket = env.s3.bucket("chart").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let name = support::unique("system");
    let sets = vec![
        format!("destination.bucket={bucket}"),
        "destination.prefix=prod".into(),
        format!("destination.endpoint={}", env.s3.endpoint),
        "destination.forcePathStyle=true".into(),
        "destination.credentialsSecret=s3".into(),
        format!("defaultTracker.name={name}"),
        format!("defaultTracker.labels.kubetrail\\.io/test={}", h.label),
    ];
    let docs = render(&h.namespace, &sets);
    let tracker = docs
        .iter()
        .find(|d| d["kind"] == "Tracker")
        .expect("default tracker rendered")
        .clone();
    let api: Api<Tracker> = Api::all(h.client.clone());
    let obj: Tracker = serde_json::from_value(tracker).expect("a valid Tracker");
    api.patch(&name, &PatchParams::apply("helm"), &Patch::Apply(&obj))
        .await
        .expect("applying the default tracker");
    let t = eventually(Duration::from_secs(60), "default tracker ready", || async {
        let t = api.get(&name).await.ok()?;
        (condition(&t.status.as_ref()?.conditions, ConditionType::Ready)?.status == "True").then_some(t)
    })
    .await;
    assert_eq!(t.spec.destination.prefix, "prod");
    assert_eq!(t.spec.delivery.max_batch_age, "60s");
}

/// The audit policy the chart renders for the apiserver, parsed.
fn audit_policy(docs: &[serde_json::Value]) -> serde_json::Value {
    let audit = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "kt-kubetrail-apiserver-audit")
        .expect("apiserver audit secret");
    serde_saphyr::from_str(audit["stringData"]["audit-policy.yaml"].as_str().unwrap()).expect("policy parses")
}

/// Index of the first rule that gives `level` to `group`/`resource` (ignoring user scoping).
fn first_rule(policy: &serde_json::Value, level: &str, group: &str, resource: &str) -> Option<usize> {
    policy["rules"].as_array().unwrap().iter().position(|r| {
        r["level"] == level
            && r.get("userGroups").is_none()
            && r["resources"].as_array().is_some_and(|rs| {
                rs.iter().any(|g| {
                    g["group"] == group && g["resources"].as_array().unwrap().iter().any(|x| x == resource)
                })
            })
    })
}

#[tokio::test]
async fn safe_audit_policy_network_policy_and_webhook_limits() {
    let h = Harness::start().await;
    let base = vec!["destination.bucket=audit-logs".to_string()];
    let docs = render(&h.namespace, &base);
    let policy = audit_policy(&docs);
    assert_eq!(policy["omitStages"], serde_json::json!(["RequestReceived"]));
    let catch_all = policy["rules"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["level"] == "RequestResponse")
        .expect("writes at RequestResponse");
    for (group, resource) in [
        ("", "serviceaccounts/token"),
        ("authentication.k8s.io", "tokenreviews"),
    ] {
        let at = first_rule(&policy, "Metadata", group, resource).expect("tokens at Metadata");
        assert!(
            at < catch_all,
            "{resource} at Metadata before any RequestResponse rule"
        );
    }
    for (group, resource) in [
        ("coordination.k8s.io", "leases"),
        ("", "events"),
        ("events.k8s.io", "events"),
    ] {
        assert!(
            first_rule(&policy, "None", group, resource).is_some(),
            "{resource} not logged by default"
        );
    }
    let noisy = render(
        &h.namespace,
        &[base[0].clone(), "auditPolicy.logNoisy=true".into()],
    );
    let noisy = audit_policy(&noisy);
    assert!(first_rule(&noisy, "None", "coordination.k8s.io", "leases").is_none());
    assert!(first_rule(&noisy, "Metadata", "", "serviceaccounts/token").is_some());
    // The webhook's limits and allowed client subject reach the operator.
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--max-event-bytes=1048576"), "{args}");
    assert!(
        args.contains("--client-cert-names=kube-apiserver-audit"),
        "{args}"
    );
    // NetworkPolicy: rendered by default where the cluster serves it, not elsewhere.
    assert!(docs.iter().any(|d| d["kind"] == "NetworkPolicy"));
    let (ok, out, err) = run_helm(&["template", "kt", CHART, "--set", "destination.bucket=audit-logs"]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("kind: NetworkPolicy"),
        "rendered without cluster support"
    );
    let (ok, out, err) = run_helm(&[
        "template",
        "kt",
        CHART,
        "-n",
        &h.namespace,
        "--set",
        "destination.bucket=audit-logs",
        "--set",
        "networkPolicy.controlPlaneCIDRs={10.0.0.10/32}",
        "--api-versions",
        "networking.k8s.io/v1/NetworkPolicy",
    ]);
    assert!(ok, "{err}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).unwrap();
    let np: Vec<serde_json::Value> = docs
        .into_iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert_eq!(np.len(), 1);
    let ingress = &np[0]["spec"]["ingress"];
    assert_eq!(ingress[0]["ports"][0]["port"], 8443);
    assert_eq!(ingress[0]["from"][0]["ipBlock"]["cidr"], "10.0.0.10/32");
    assert_eq!(
        ingress[0]["from"][1]["podSelector"]["matchLabels"]["component"],
        "kube-apiserver"
    );
    assert_eq!(ingress[1]["ports"][0]["port"], 8080);
    assert_eq!(
        ingress[1]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "prometheus"
    );
    let kinds = dry_run(&h.client, &h.namespace, &np).await;
    assert!(kinds.contains("NetworkPolicy"), "accepted by the apiserver");
    // No peers at all: no rule, so nobody (never an empty `from`, which admits all).
    let closed = render(
        &h.namespace,
        &[
            base[0].clone(),
            "networkPolicy.webhookFrom=null".into(),
            "networkPolicy.metricsFrom=null".into(),
        ],
    );
    let np = closed.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert!(
        np["spec"]["ingress"].as_array().is_none_or(|i| i.is_empty()),
        "{}",
        np["spec"]
    );
    // The NOTES give the truncation flags with limits that fit the webhook's caps.
    let out = std::process::Command::new(helm())
        .args([
            "install",
            "kt",
            CHART,
            "-n",
            &h.namespace,
            "--dry-run=client",
            "--set",
            "destination.bucket=audit-logs",
        ])
        .env("KUBECONFIG", support::env().cp.admin_kubeconfig())
        .output()
        .expect("helm install --dry-run");
    let notes = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{notes}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(notes.contains("--audit-webhook-truncate-enabled=true"), "{notes}");
    assert!(
        notes.contains("--audit-webhook-truncate-max-batch-size=10485760"),
        "{notes}"
    );
    assert!(
        notes.contains("--audit-webhook-truncate-max-event-size=1048576"),
        "{notes}"
    );
    assert!(
        notes.contains("networkPolicy.controlPlaneCIDRs"),
        "the NOTES warn about host-network apiservers"
    );
}

/// The other sources in the chart: admission capture renders a
/// ValidatingWebhookConfiguration that can never block the cluster and skips
/// the release namespace, leases and events; the audit log file source a
/// DaemonSet on control-plane nodes with the log directory read-only. The
/// apiserver accepts both.
#[tokio::test]
async fn chart_renders_the_admission_and_audit_log_sources() {
    let h = Harness::start().await;
    let docs = render(
        &h.namespace,
        &[
            "destination.bucket=audit-logs".into(),
            "source.admission.enabled=true".into(),
            "source.auditLogFile.enabled=true".into(),
            "networkPolicy.enabled=true".into(),
            "networkPolicy.controlPlaneCIDRs={10.0.0.0/24}".into(),
        ],
    );
    let vwc = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .expect("a ValidatingWebhookConfiguration");
    let w = &vwc["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["sideEffects"], "None");
    assert!(w["timeoutSeconds"].as_u64().unwrap() <= 5);
    assert_eq!(w["clientConfig"]["service"]["path"], "/admission");
    assert!(
        w["clientConfig"]["caBundle"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(
        w["rules"][0]["operations"],
        serde_json::json!(["CREATE", "UPDATE", "DELETE", "CONNECT"])
    );
    let skipped = w["namespaceSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .unwrap();
    assert!(skipped.iter().any(|n| n == h.namespace.as_str()), "{skipped:?}");
    assert!(
        w["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("'leases'")
    );
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--admission-addr=0.0.0.0:9443"), "{args}");
    assert!(
        !args.contains("--admission-allow-unauthenticated"),
        "admission capture is authenticated by default: {args}"
    );
    // The apiserver's credentials for the capture webhook, named as the
    // apiserver looks them up (the Service's DNS name and port).
    let files = docs
        .iter()
        .find(|d| {
            d["kind"] == "Secret"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-apiserver-audit"))
        })
        .unwrap();
    let config: serde_json::Value =
        serde_saphyr::from_str(files["stringData"]["admission-config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["kind"], "AdmissionConfiguration");
    assert_eq!(config["plugins"][0]["name"], "ValidatingAdmissionWebhook");
    assert_eq!(
        config["plugins"][0]["configuration"]["kubeConfigFile"],
        "/etc/kubernetes/kubetrail/admission-webhooks.kubeconfig"
    );
    let kc: serde_json::Value = serde_saphyr::from_str(
        files["stringData"]["admission-webhooks.kubeconfig"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let service = &w["clientConfig"]["service"];
    assert_eq!(
        kc["users"][0]["name"],
        format!(
            "{}.{}.svc:9443",
            service["name"].as_str().unwrap(),
            service["namespace"].as_str().unwrap()
        ),
        "{kc}"
    );
    assert!(
        kc["users"][0]["user"]["client-certificate-data"].is_string(),
        "{kc}"
    );
    let open = render(
        &h.namespace,
        &[
            "destination.bucket=audit-logs".into(),
            "source.admission.enabled=true".into(),
            "source.admission.allowUnauthenticated=true".into(),
        ],
    );
    let sts = open.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--admission-allow-unauthenticated"), "{args}");
    let np = docs.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert!(np["spec"]["ingress"].to_string().contains("9443"), "{np}");

    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains("--audit-log-file=/var/log/kubernetes/audit/audit.log"),
        "{args}"
    );
    assert!(
        !args.contains("--tls-cert-file"),
        "no webhook in the DaemonSet: {args}"
    );
    assert!(pod["nodeSelector"].to_string().contains("control-plane"));
    assert!(pod["tolerations"].to_string().contains("control-plane"));
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/var/log/kubernetes/audit" && m["readOnly"] == true),
        "{mounts:?}"
    );
    let kinds = dry_run(&h.client, &h.namespace, &docs).await;
    for k in ["ValidatingWebhookConfiguration", "DaemonSet", "StatefulSet"] {
        assert!(kinds.contains(k), "{k} accepted: {kinds:?}");
    }
}

/// The console: its port and flag, a Service, the review permissions it needs,
/// an optional Ingress (a host is required), and a NetworkPolicy rule only for
/// the peers named. The apiserver accepts them all.
#[tokio::test]
async fn chart_renders_the_console_and_its_ingress() {
    let h = Harness::start().await;
    let docs = render(
        &h.namespace,
        &[
            "destination.bucket=audit-logs".into(),
            "console.ingress.enabled=true".into(),
            "console.ingress.host=trail.example.com".into(),
            "console.ingress.className=nginx".into(),
            "networkPolicy.enabled=true".into(),
            "networkPolicy.consoleFrom[0].namespaceSelector.matchLabels.name=ingress".into(),
        ],
    );
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"]
            .to_string()
            .contains("--console-addr=0.0.0.0:8082"),
        "{}",
        container["args"]
    );
    assert!(container["ports"].to_string().contains("8082"));
    let ingress = docs.iter().find(|d| d["kind"] == "Ingress").expect("an Ingress");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "trail.example.com");
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == backend["name"])
        .expect("the Ingress names the console Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "console");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap()
        .to_string();
    assert!(
        role.contains("tokenreviews") && role.contains("subjectaccessreviews"),
        "{role}"
    );
    let np = docs.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    let console_rule = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == 8082)
        .expect("a rule for the console port");
    assert!(console_rule["from"].to_string().contains("ingress"));
    let kinds = dry_run(&h.client, &h.namespace, &docs).await;
    for k in [
        "Ingress",
        "Service",
        "ClusterRole",
        "StatefulSet",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(k), "{k} accepted: {kinds:?}");
    }

    // An Ingress without a host is refused; the console can be turned off.
    let (ok, _, err) = run_helm(&[
        "template",
        "kt",
        CHART,
        "--set",
        "destination.bucket=audit-logs",
        "--set",
        "console.ingress.enabled=true",
    ]);
    assert!(!ok && err.contains("console.ingress.host is required"), "{err}");
    let docs = render(
        &h.namespace,
        &[
            "destination.bucket=audit-logs".into(),
            "console.enabled=false".into(),
        ],
    );
    let all = serde_json::to_string(&docs).unwrap();
    assert!(!all.contains("--console-addr"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap()
        .to_string();
    assert!(!role.contains("tokenreviews"), "{role}");
    assert!(!docs.iter().any(|d| d["kind"] == "Ingress"));
}
