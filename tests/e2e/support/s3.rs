//! The S3 server of the tests: `s3s-fs` from crates.io, on 127.0.0.1.

use super::{free_port, log_tail, spawn_child};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "kubetrail-test";
pub const SECRET_KEY: &str = "kubetrail-test-secret-key";

pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
}

impl S3Server {
    pub fn start(dir: &Path) -> Result<S3Server, String> {
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
        let port = free_port();
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root);
        let log = dir.join("s3s-fs.log");
        let mut child = spawn_child(cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
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
        std::mem::forget(child);
        Ok(S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        })
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
