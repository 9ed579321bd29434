//! Real parts for the end-to-end tests: etcd + kube-apiserver built from the
//! published Go modules (`tests/envtest/`), and the `s3s-fs` S3 server.
//!
//! One control plane and one S3 server are started per test binary, on first use,
//! and live until the binary exits (children get SIGKILL when it does, even on a
//! panic). Tests isolate themselves: own namespace, own bucket, own label.

pub mod audit;
pub mod certs;
pub mod controlplane;
pub mod node;
pub mod s3;

use std::sync::OnceLock;

pub use controlplane::ControlPlane;

/// The test apiserver sends its audit batches to one fixed address: a test
/// that listens there holds this for as long as it does.
pub static AUDIT_WEBHOOK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
pub use s3::S3Server;

/// Everything a test needs to reach the shared real parts.
pub struct TestEnv {
    pub cp: ControlPlane,
    pub s3: S3Server,
}

static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();

/// The shared environment, started on first call. A test fails (never skips) with
/// the reason when a part cannot be started.
pub fn env() -> &'static TestEnv {
    let env = ENV.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The thread that starts the children must outlive them: PR_SET_PDEATHSIG
        // fires when the forking thread exits. It parks until the binary exits.
        std::thread::Builder::new()
            .name("test-env".into())
            .spawn(move || {
                let started = start();
                let _ = tx.send(started);
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the test-env thread");
        rx.recv().unwrap_or_else(|_| Err("test-env thread died".into()))
    });
    match env {
        Ok(env) => env,
        Err(e) => panic!("test environment unavailable: {e}"),
    }
}

fn start() -> Result<TestEnv, String> {
    kubetrail::install_crypto_provider();
    let root = work_root();
    let s3 = S3Server::start(&root.join("s3"))?;
    let cp = ControlPlane::start(&root.join("cp"))?;
    Ok(TestEnv { cp, s3 })
}

/// A fresh working directory for this test binary; directories of earlier runs
/// whose process is gone are removed.
fn work_root() -> std::path::PathBuf {
    let base = std::env::temp_dir().join("kubetrail-e2e");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if let Some(pid) = pid
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("creating the test work directory");
    dir
}

/// A free TCP port on 127.0.0.1 for a server a test starts. Taken below the
/// kernel's ephemeral range (32768 and up), so no outgoing connection of the
/// many running tests can take it between this check and the server's bind
/// (which made a process fail with "address in use"), and never handed out
/// twice in one run.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FIRST + (offset + n) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// A short random id for names of namespaces, buckets and labels.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}{n}", (nanos ^ std::process::id()) & 0xfffff)
}

/// Starts a child process that is killed when this test binary exits.
pub fn spawn_child(
    mut cmd: std::process::Command,
    log: &std::path::Path,
) -> Result<std::process::Child, String> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdout(out).stderr(err).stdin(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))
}

/// The last lines of a log file, for failure messages.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where the Go-built binaries are (see `scripts/test-env.sh`).
pub fn bin_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("KUBETRAIL_TEST_BIN") {
        return dir.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    std::path::Path::new(&home).join(".cache/kubetrail/bin")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A minimal HTTP/1.1 request over a fresh connection; returns the status and body.
pub async fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A `kubetrail operator` process against the test cluster.
pub struct Operator {
    pub child: tokio::process::Child,
    pub admin: String,
}

impl Operator {
    /// Starts the binary with `args` (webhook and spool flags) and waits for `/ready`.
    pub async fn start(namespace: &str, label: &str, instance: &str, args: &[String]) -> Operator {
        let env = env();
        let admin = format!("127.0.0.1:{}", free_port());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
            .arg("operator")
            .args([
                "--admin-addr",
                &admin,
                "--namespace",
                namespace,
                "--instance",
                instance,
            ])
            .args(["--tracker-selector", &format!("kubetrail.io/test={label}")])
            .args(["--status-seconds", "1", "--cluster-name", "e2e"])
            .args(args)
            .env("KUBECONFIG", env.cp.admin_kubeconfig())
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .spawn()
            .expect("starting kubetrail operator");
        let op = Operator { child, admin };
        eventually(std::time::Duration::from_secs(30), "operator /ready", || async {
            http(&op.admin, "GET", "/ready", b"")
                .await
                .filter(|(c, _)| *c == 200)
        })
        .await;
        op
    }

    /// SIGTERM, as Kubernetes stops a pod; waits until the process has exited.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            // SAFETY: sends a signal to our own child process.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .expect("operator stops within 30 s of SIGTERM")
            .expect("waiting for the operator")
    }

    /// SIGKILL, as a node loss or OOM kill would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Writes one gzip trace file of `lines` into `sink`, keyed as delivery names
/// it: under `prefix` for `cluster` and `tracker`, the `seq`-th file of writer
/// `w0`, named after its earliest trace (`earliest_ms`).
pub async fn put_trace_file(
    sink: &kubetrail::store::Store,
    prefix: &str,
    cluster: &str,
    tracker: &str,
    seq: u64,
    earliest_ms: i64,
    lines: &[Vec<u8>],
) {
    use kubetrail::api::Compression;
    use kubetrail::deliver::batch::{Batch, tracker_suffix};
    use kubetrail::store::key::{FileId, object_key};
    let mut b = Batch::new(Compression::Gzip);
    let suffix = tracker_suffix(tracker);
    for line in lines {
        b.push(line, &suffix).unwrap();
    }
    let key = object_key(&FileId {
        prefix,
        cluster,
        tracker,
        writer: "w0",
        epoch: "00000000",
        start_seq: seq,
        start_idx: 0,
        earliest_ms,
        compression: Compression::Gzip,
    });
    sink.put(&key, b.finish().unwrap(), Compression::Gzip)
        .await
        .unwrap();
}
