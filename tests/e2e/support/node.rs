//! A one-node Kubernetes cluster on this host for the `cluster` tests: the same
//! bring-up as `tests/node/up.sh` (a user can run it by hand), stopped by
//! `tests/node/down.sh` on drop, which restores what the node changed on the host
//! (sysctls, iptables, the pod bridge, mounts, network namespaces, cgroups).
//!
//! The node uses fixed addresses (bridge 10.88.0.0/16, apiserver 10.88.0.1:6443,
//! etcd 127.0.0.1:2479): one node per host at a time. It needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the node keeps its state; a node left behind by a killed run is stopped
/// (and the host restored) before a new one starts.
pub const NODE_DIR: &str = "/tmp/kubetrail-node";
/// The pod bridge's gateway: the host as pods see it (the apiserver advertises it,
/// and a server the pods must reach, like the test's S3, listens on it).
pub const GATEWAY: &str = "10.88.0.1";
/// The node's name (tests/node/up.sh NODE_NAME).
pub const NODE_NAME: &str = "ktnode";

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Node {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    // Fixed addresses: one node at a time in this process, whatever --test-threads says.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_NODE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn script(name: &str) -> PathBuf {
    Path::new(ROOT).join("tests/node").join(name)
}

/// Runs a command; its combined output on failure.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("running {:?}: {e}", cmd.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed ({}):\n{text}", out.status))
    }
}

/// The kubetrail image as an OCI archive in `dir`: `$KUBETRAIL_IMAGE` when set
/// (`scripts/test.sh` sets it to `scripts/oci-image.sh` of the stripped release
/// binary, the image users run), else packed from the binary under test (a stripped
/// copy of the debug build).
/// Packed once per test binary: tests that run at the same time share it.
pub fn image_archive(dir: &Path) -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("KUBETRAIL_IMAGE") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!(
                "KUBETRAIL_IMAGE={} is not an image archive",
                path.display()
            ));
        }
        eprintln!("cluster: the image is {}", path.display());
        return Ok(path);
    }
    static PACKED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut packed = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = packed.as_ref().filter(|p| p.exists()) {
        return Ok(path.clone());
    }
    let path = pack_image(dir)?;
    *packed = Some(path.clone());
    Ok(path)
}

fn pack_image(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let bin = dir.join("kubetrail");
    if run(Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(env!("CARGO_BIN_EXE_kubetrail")))
    .is_err()
    {
        std::fs::copy(env!("CARGO_BIN_EXE_kubetrail"), &bin).map_err(|e| e.to_string())?;
    }
    let out = dir.join("kubetrail-image.tar");
    run(Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/oci-image.sh"))
        .arg(&bin)
        .arg(&out))?;
    Ok(out)
}

impl Node {
    /// Starts the node with `images` (OCI archives) imported; Ready when it returns.
    pub fn start(images: &[PathBuf]) -> Result<Node, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the one-node cluster needs root (containerd, kubelet, iptables)".into());
        }
        let cache = super::bin_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let guard = ONE_NODE.lock().unwrap_or_else(|e| e.into_inner());
        let dir = PathBuf::from(NODE_DIR);
        let _ = run(Command::new("bash").arg(script("down.sh")).arg(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        let up = run(Command::new("bash")
            .arg(script("up.sh"))
            .arg(&dir)
            .args(images)
            .env("KUBETRAIL_CACHE", &cache));
        let node = Node {
            kubeconfig: dir.join("etc/admin.kubeconfig"),
            dir,
            _one_at_a_time: guard,
        };
        match up {
            Ok(_) => Ok(node),
            Err(e) => {
                let logs = node.log_tails(20);
                drop(node);
                Err(format!("{e}\n{logs}"))
            }
        }
    }

    /// The last lines of every component's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in [
            "containerd",
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
            "kubelet",
        ] {
            let log = self.dir.join("logs").join(format!("{name}.log"));
            out.push_str(&format!("--- {name} ---\n{}\n", super::log_tail(&log, lines)));
        }
        out
    }

    /// Runs the test environment's kubectl against the node as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_as("admin", args)
    }

    /// Runs kubectl as `user`: `admin` (system:masters) or `nobody` (no RBAC).
    pub fn kubectl_as(&self, user: &str, args: &[&str]) -> Result<String, String> {
        run(Command::new(super::bin_dir().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.dir.join(format!("etc/{user}.kubeconfig"))))
    }

    /// Runs helm against the node as the admin.
    pub fn helm(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(super::bin_dir().join("helm"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data")))
    }

    /// A client for the admin user (system:masters).
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("reading kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kubeconfig to config");
        kube::Client::try_from(config).expect("building client")
    }

    /// Restarts kube-apiserver with `flags` (one a line) added, as an administrator
    /// edits its manifest; returns once it is ready.
    pub fn restart_apiserver(&self, flags: &str) -> Result<(), String> {
        std::fs::write(self.dir.join("etc/apiserver.flags"), flags).map_err(|e| e.to_string())?;
        run(Command::new("bash")
            .arg(script("apiserver-restart.sh"))
            .arg(&self.dir))
        .map(|_| ())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failing test: what the pods were doing, before the node goes.
        if std::thread::panicking() {
            let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
            eprintln!("--- pods ---\n{}", pods.unwrap_or_else(|e| e));
            let logs = self.kubectl(&[
                "-n",
                "kubetrail",
                "logs",
                "-l",
                "app.kubernetes.io/name=kubetrail",
                "--prefix",
                "--tail=150",
                "--max-log-requests=10",
            ]);
            eprintln!("--- kubetrail pods' logs ---\n{}", logs.unwrap_or_else(|e| e));
        }
        match run(Command::new("bash").arg(script("down.sh")).arg(&self.dir)) {
            Ok(_) => {}
            Err(e) => eprintln!("stopping the one-node cluster: {e}"),
        }
    }
}
