//! The S3 server of the tests: `s3s-fs` from crates.io, on 127.0.0.1.

use super::{free_port, log_tail, spawn_child};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "kubetrail-test";
pub const SECRET_KEY: &str = "kubetrail-test-secret-key";

pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    pub port: u16,
    host: String,
    dir: PathBuf,
    pid: std::sync::atomic::AtomicI32,
}

impl S3Server {
    pub fn start(dir: &Path) -> Result<S3Server, String> {
        Self::start_on(dir, free_port())
    }

    /// Starts a server on `port` with its data under `dir` (kept across restarts).
    pub fn start_on(dir: &Path, port: u16) -> Result<S3Server, String> {
        Self::start_at(dir, "127.0.0.1", port)
    }

    /// Starts a server on `host:port` (e.g. the one-node cluster's bridge gateway,
    /// which its pods reach) with its data under `dir`.
    pub fn start_at(dir: &Path, host: &str, port: u16) -> Result<S3Server, String> {
        let bin = std::env::var("KUBETRAIL_S3S_FS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                Path::new(&home).join(".cache/kubetrail/s3s-fs/bin/s3s-fs")
            });
        if !bin.exists() {
            return Err(format!(
                "S3 server binary {} not found: run `bash scripts/test-env.sh` first",
                bin.display()
            ));
        }
        let root = dir.join("data");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["--host", host, "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root);
        let log = dir.join("s3s-fs.log");
        let mut child = spawn_child(cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((host, port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("s3s-fs exited with {status}: {}", log_tail(&log, 20)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "s3s-fs did not listen on port {port}: {}",
                    log_tail(&log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = child.id() as i32;
        std::mem::forget(child);
        Ok(S3Server {
            endpoint: format!("http://{host}:{port}"),
            root,
            port,
            host: host.to_string(),
            dir: dir.to_path_buf(),
            pid: pid.into(),
        })
    }

    /// Kills the server (SIGKILL): the bucket becomes unreachable.
    pub fn stop(&self) {
        let pid = self.pid.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: signalling a child process this server started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&self) -> Result<(), String> {
        let again = Self::start_at(&self.dir, &self.host, self.port)?;
        let pid = again.pid.load(std::sync::atomic::Ordering::SeqCst);
        self.pid.store(pid, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// An S3 client with the server's keys.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with(ACCESS_KEY, SECRET_KEY)
    }

    pub fn client_with(&self, access: &str, secret: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                access, secret, None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Trace files under `prefix` (digests left out), each with its text.
    pub async fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        self.all_objects(bucket, prefix)
            .await
            .into_iter()
            .filter(|(k, _)| !k.contains("KubeTrail-Digest/"))
            .collect()
    }

    /// Every object under `prefix`, each with its (decompressed) text.
    pub async fn all_objects(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        use std::io::Read;
        let client = self.client();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let mut req = client.list_objects_v2().bucket(bucket).prefix(prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let Ok(page) = req.send().await else { return out };
            for obj in page.contents() {
                let key = obj.key().unwrap_or_default().to_string();
                let Ok(got) = client.get_object().bucket(bucket).key(&key).send().await else {
                    continue;
                };
                let Ok(bytes) = got.body.collect().await else {
                    continue;
                };
                let bytes = bytes.into_bytes();
                let mut text = String::new();
                if key.ends_with(".gz") {
                    let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text);
                } else if key.ends_with(".zst") {
                    text = String::from_utf8_lossy(&zstd::decode_all(&bytes[..]).unwrap_or_default())
                        .to_string();
                } else {
                    text = String::from_utf8_lossy(&bytes).to_string();
                }
                out.push((key, text));
            }
            token = page.next_continuation_token().map(String::from);
            if token.is_none() {
                return out;
            }
        }
    }

    /// Creates a bucket of its own for one test.
    pub async fn bucket(&self, prefix: &str) -> String {
        let name = super::unique(prefix);
        self.client()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e:?}"));
        name
    }
}
