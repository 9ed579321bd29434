//! etcd + kube-apiserver on 127.0.0.1, with certificates, an admin kubeconfig, an
//! audit policy and an audit webhook kubeconfig pointing at a URL the test chose.

use super::certs::{Ca, Pair};
use super::{bin_dir, free_port, log_tail, spawn_child};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the admin user (group system:masters).
pub const ADMIN: &str = "kubetrail-test-admin";

pub struct ControlPlane {
    pub dir: PathBuf,
    pub server: String,
    /// Where the apiserver sends its audit batches.
    pub audit_webhook_url: String,
    /// The audit log file the apiserver writes (JSON lines; rotated at 1 MB).
    pub audit_log_path: PathBuf,
    pub ca_pem: String,
    /// Serving pair for a receiver of the audit webhook (signed by the same CA).
    pub webhook_serving: Pair,
    ca: std::sync::Arc<Ca>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and applies kubetrail's CRDs.
    pub fn start(dir: &Path) -> Result<ControlPlane, String> {
        let audit_port = free_port();
        Self::start_with(dir, &format!("https://127.0.0.1:{audit_port}/audit"))
    }

    pub fn start_with(dir: &Path, audit_webhook_url: &str) -> Result<ControlPlane, String> {
        let bins = bin_dir();
        let etcd_bin = bins.join("etcd");
        let apiserver_bin = bins.join("kube-apiserver");
        for b in [&etcd_bin, &apiserver_bin] {
            if !b.exists() {
                return Err(format!(
                    "{} not found: run `bash scripts/test-env.sh` first",
                    b.display()
                ));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let write = |name: &str, content: &str| -> Result<PathBuf, String> {
            let p = dir.join(name);
            std::fs::write(&p, content).map_err(|e| format!("writing {}: {e}", p.display()))?;
            Ok(p)
        };

        // Certificates.
        let ca = Ca::new();
        let ca_file = write("ca.crt", &ca.cert_pem())?;
        let serving = ca.server("kube-apiserver");
        let tls_cert = write("apiserver.crt", &serving.cert_pem)?;
        let tls_key = write("apiserver.key", &serving.key_pem)?;
        let sa = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let sa_pub = write("sa.pub", &sa.public_key_pem())?;
        let sa_key = write("sa.key", &sa.serialize_pem())?;
        let audit_client = ca.client("kube-apiserver-audit", &[]);
        let audit_crt = write("audit-client.crt", &audit_client.cert_pem)?;
        let audit_key = write("audit-client.key", &audit_client.key_pem)?;
        let webhook_serving = ca.server("kubetrail-audit-webhook");

        // Audit: every request at RequestResponse level, sent in 1 s batches.
        let policy = write(
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: None\n  nonResourceURLs: [\"/healthz*\", \"/readyz*\", \"/livez*\", \"/version\", \"/openapi*\"]\n\
             - level: RequestResponse\n",
        )?;
        let webhook_cfg = write(
            "audit-webhook.kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: kubetrail\n  cluster:\n    server: {audit_webhook_url}\n    certificate-authority: {ca}\n\
                 users:\n- name: apiserver\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
                 contexts:\n- name: default\n  context:\n    cluster: kubetrail\n    user: apiserver\ncurrent-context: default\n",
                ca = ca_file.display(),
                crt = audit_crt.display(),
                key = audit_key.display(),
            ),
        )?;

        // Admission webhooks: the apiserver presents the same client
        // certificate to every one (`*`), as admission capture requires.
        let admission_kubeconfig = write(
            "admission-webhooks.kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n",
                crt = audit_crt.display(),
                key = audit_key.display(),
            ),
        )?;
        let admission_cfg = write(
            "admission-config.yaml",
            &format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n\
                 - name: ValidatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {k}\n\
                 - name: MutatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {k}\n",
                k = admission_kubeconfig.display(),
            ),
        )?;

        // etcd.
        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_log = dir.join("etcd.log");
        let mut etcd = std::process::Command::new(&etcd_bin);
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        etcd.arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let mut etcd_child = spawn_child(etcd, &etcd_log)?;
        wait_tcp(etcd_port, &mut etcd_child, &etcd_log, "etcd")?;
        std::mem::forget(etcd_child);

        // kube-apiserver.
        let port = free_port();
        let api_log = dir.join("kube-apiserver.log");
        let audit_log_path = dir.join("audit").join("audit.log");
        let mut api = std::process::Command::new(&apiserver_bin);
        api.arg(format!("--etcd-servers={client_url}"))
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--cert-dir={}", dir.display()))
            .arg(format!("--tls-cert-file={}", tls_cert.display()))
            .arg(format!("--tls-private-key-file={}", tls_key.display()))
            .arg(format!("--client-ca-file={}", ca_file.display()))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=RBAC")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!(
                "--admission-control-config-file={}",
                admission_cfg.display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!("--service-account-signing-key-file={}", sa_key.display()))
            .arg("--enable-priority-and-fairness=false")
            .arg(format!("--audit-policy-file={}", policy.display()))
            .arg(format!("--audit-webhook-config-file={}", webhook_cfg.display()))
            .arg("--audit-webhook-batch-max-wait=1s")
            .arg("--audit-webhook-batch-throttle-enable=false")
            .arg("--audit-webhook-initial-backoff=1s")
            .arg(format!("--audit-log-path={}", audit_log_path.display()))
            .arg("--audit-log-format=json")
            .arg("--audit-log-maxsize=1")
            .arg("--audit-log-maxbackup=100")
            .arg("--v=1");
        let mut api_child = spawn_child(api, &api_log)?;
        wait_tcp(port, &mut api_child, &api_log, "kube-apiserver")?;

        let server = format!("https://127.0.0.1:{port}");
        let admin = ca.client(ADMIN, &["system:masters"]);
        let cp = ControlPlane {
            dir: dir.to_path_buf(),
            server,
            audit_webhook_url: audit_webhook_url.to_string(),
            audit_log_path,
            ca_pem: ca.cert_pem(),
            webhook_serving,
            ca: std::sync::Arc::new(ca),
        };
        cp.write_kubeconfig("admin.kubeconfig", &admin)?;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let ready = rt.block_on(async {
            let client = cp.client().await;
            wait_ready(&client).await?;
            apply_crds(&client).await
        });
        if let Err(e) = ready {
            return Err(format!(
                "{e}\n--- kube-apiserver log ---\n{}",
                log_tail(&api_log, 40)
            ));
        }
        std::mem::forget(api_child);
        Ok(cp)
    }

    fn write_kubeconfig(&self, name: &str, pair: &Pair) -> Result<PathBuf, String> {
        let crt = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        std::fs::write(&crt, &pair.cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(&key, &pair.key_pem).map_err(|e| e.to_string())?;
        let path = self.dir.join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: user\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: user\ncurrent-context: test\n",
            server = self.server,
            ca = self.dir.join("ca.crt").display(),
            crt = crt.display(),
            key = key.display(),
        );
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Path of the admin kubeconfig (also handy for `kubectl --kubeconfig`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A client for the admin user (system:masters).
    pub async fn client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig()).await
    }

    /// A client certificate signed by the cluster CA (e.g. for the audit webhook).
    pub fn client_pair(&self, user: &str) -> Pair {
        self.ca.client(user, &[])
    }

    /// A client for `user` in `groups`, with no permissions unless RBAC grants some.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let pair = self.ca.client(user, groups);
        let path = self
            .write_kubeconfig(&format!("{}.kubeconfig", super::unique(user)), &pair)
            .expect("writing kubeconfig");
        client_from(&path).await
    }
}

async fn client_from(path: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(path).expect("reading kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to config");
    kube::Client::try_from(config).expect("building client")
}

fn wait_tcp(port: u16, child: &mut std::process::Child, log: &Path, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}:\n{}", log_tail(log, 30)));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not listen on port {port} within 60s:\n{}",
                log_tail(log, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

async fn wait_ready(client: &kube::Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last;
    loop {
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(format!("kube-apiserver not ready within 90s: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Applies the CRDs exactly as `kubetrail crd` generates them and waits until
/// they are Established.
async fn apply_crds(client: &kube::Client) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kubetrail::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("kubetrail-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("applying CRD {name}: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for crd in kubetrail::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let current = api.get(&name).await.map_err(|e| e.to_string())?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("CRD {name} not established within 30s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
