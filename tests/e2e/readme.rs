//! The README's first steps, as a newcomer types them: `kubetrail serve`, the
//! `curl` line that sends the example batch, and the trace file with the
//! Secret's value redacted; then the console of `serve` over that file.

use crate::support::{self, eventually};
use std::time::Duration;

#[tokio::test]
async fn the_readme_quick_start_works_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let curl = readme
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("audit-batch.json"))
        .expect("the README's curl line");
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin, console) = (support::free_port(), support::free_port(), support::free_port());
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--console-addr", &format!("127.0.0.1:{console}")])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .spawn()
        .expect("kubetrail serve");
    eventually(Duration::from_secs(20), "serve is ready", || async {
        support::http(&format!("127.0.0.1:{admin}"), "GET", "/ready", b"")
            .await
            .filter(|(c, _)| *c == 200)
    })
    .await;
    // The same command, on this test's port and with the example's full path.
    let command = curl
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{listen}"))
        .replace("@examples/", &format!("@{}/examples/", root.display()))
        + " -sS -o /dev/null -w '%{http_code}'";
    let out = tokio::process::Command::new("bash")
        .args(["-c", &command])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{command}: {out:?}");
    // "read the trace file that appears about five seconds later"
    let trace = eventually(Duration::from_secs(20), "the trace file", || async {
        let base = dir.path().join("kubetrail-traces/KubeTrail/local");
        let file = walk(&base)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".jsonl.gz"))?;
        let mut text = String::new();
        use std::io::Read as _;
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&file).ok()?)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    })
    .await;
    let t: serde_json::Value = serde_json::from_str(trace.lines().next().unwrap()).unwrap();
    assert!(
        t.to_string().contains("\"password\":\"[redacted]\""),
        "the trace shows \"[redacted]\": {t}"
    );
    assert!(
        !trace.contains("hunter2") && !trace.contains("aHVudGVyMg"),
        "{trace}"
    );
    // The console of `serve` (loopback, no token) finds it.
    let from = kubetrail::trace::parse_time_ms(t["time"].as_str().unwrap()).unwrap();
    let (code, body) = support::http(
        &format!("127.0.0.1:{console}"),
        "GET",
        &format!(
            "/api/v1/traces?tracker=system&cluster=local&from={from}&to={}",
            from + 1000
        ),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["traces"][0]["trace_id"], t["trace_id"], "{body}");
}

/// `serve`'s console has no authentication and trusts being on loopback: it
/// answers only to loopback names, so a page whose DNS name was rebound to
/// 127.0.0.1 cannot read traces through it.
#[tokio::test]
async fn serve_console_answers_only_to_loopback_names() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin, console) = (support::free_port(), support::free_port(), support::free_port());
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--console-addr", &format!("127.0.0.1:{console}")])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .spawn()
        .expect("kubetrail serve");
    eventually(Duration::from_secs(20), "serve is ready", || async {
        support::http(&format!("127.0.0.1:{admin}"), "GET", "/ready", b"")
            .await
            .filter(|(c, _)| *c == 200)
    })
    .await;
    let get = |host: String, path: &'static str| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "-H"])
            .arg(format!("host: {host}"))
            .arg(format!("http://127.0.0.1:{console}{path}"))
            .output()
            .await
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let api = "/api/v1/traces?tracker=system&cluster=local&last=1h";
    for host in ["evil.example".to_string(), format!("evil.example:{console}")] {
        for path in ["/", api] {
            let (code, body) = get(host.clone(), path).await;
            assert_eq!(code, 403, "{host} {path}: {body}");
            assert!(body.contains("unexpected Host"), "{body}");
        }
    }
    for host in [
        format!("127.0.0.1:{console}"),
        format!("localhost:{console}"),
        format!("[::1]:{console}"),
        "localhost".to_string(),
    ] {
        let (code, body) = get(host.clone(), api).await;
        assert_eq!(code, 200, "{host}: {body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(page["traces"].is_array(), "{body}");
        assert_eq!(get(host, "/").await.0, 200);
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
