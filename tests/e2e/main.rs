//! End-to-end tests on a real kube-apiserver + etcd and a real S3 server.
//!
//! Run one: `cargo test --test e2e tracker::missing_bucket`.

#[allow(dead_code)] // helpers shared with tests of later features
mod support;

mod adversary;
mod chart;
mod console;
mod crd_validation;
mod exact;
mod ha;
mod hardening;
mod ingest;
mod integrity;
mod notify;
mod operator_binary;
mod query;
mod readme;
mod sources;
mod sql;
mod tracker;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kubetrail::controller::{Context, Settings};
use kubetrail::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// One test's slice of the shared cluster: its own namespace (the operator's
/// namespace for credentials Secrets) and label, and an operator that only
/// reconciles Trackers with that label.
pub struct Harness {
    pub client: kube::Client,
    pub namespace: String,
    pub label: String,
    pub ctx: Arc<Context>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    pub async fn start() -> Harness {
        kubetrail::install_crypto_provider();
        let env = support::env();
        let client = env.cp.client().await;
        let namespace = support::unique("kt");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating test namespace");
        let label = namespace.clone();
        let ctx = Context::new(
            client.clone(),
            Settings {
                namespace: namespace.clone(),
                tracker_selector: Some(format!("kubetrail.io/test={label}")),
                instance: format!("test-{label}"),
                recheck_interval: Duration::from_secs(300),
                cluster: "e2e".into(),
                admin_namespaces: vec!["kubetrail-admin".into()],
                // The query tests' other clusters sharing a bucket.
                readable_clusters: kubetrail::scope::ReadableClusters::Listed(vec![
                    "other".into(),
                    "third".into(),
                ]),
                max_query_days: 31,
                query_concurrency: 2,
                query_timeout: Duration::from_secs(120),
                query_max_result_bytes: 64 * 1024 * 1024,
                query_scratch_dir: std::env::temp_dir().join("kubetrail-query-e2e"),
            },
            Arc::new(Metrics::default()),
        );
        let c = ctx.clone();
        let task = tokio::spawn(async move {
            // As on the lease holder: reconcilers, and the fold of the
            // writers' reports (counters, chain heads) into status.
            tokio::join!(
                kubetrail::controller::tracker::run(c.clone()),
                kubetrail::controller::query::run(c.clone()),
                kubetrail::controller::fold_loop(c, Duration::from_secs(2))
            );
        });
        Harness {
            client,
            namespace,
            label,
            ctx,
            task,
        }
    }

    /// Creates (or replaces) a credentials Secret in the operator's namespace.
    pub async fn put_credentials(&self, name: &str, access: &str, secret: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let obj: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
        }))
        .unwrap();
        api.patch(
            name,
            &kube::api::PatchParams::apply("kubetrail-test").force(),
            &kube::api::Patch::Apply(&obj),
        )
        .await
        .expect("applying credentials secret");
    }

    /// A Tracker manifest with this test's label.
    pub fn tracker(&self, name: &str, spec: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "kubetrail.io/v1alpha1",
            "kind": "Tracker",
            "metadata": {"name": name, "labels": {"kubetrail.io/test": self.label}},
            "spec": spec,
        })
    }
}
