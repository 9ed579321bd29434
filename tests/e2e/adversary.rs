//! An attacker who can write the bucket (not the signing key), scripted against
//! `kubetrail serve` with one-minute digests and `kubetrail verify --directory
//! --public-key --chain-head`: a planted digest dated 2099, a forged writer's
//! file, a deleted tail (seen at once, and after a restart without the spool).
//! Each of these passed verify before chain heads were kept outside the bucket.
//!
//! The rest of issue 18's list, each by its own e2e test on the real parts:
//! - a key used outside its window, and a tail deleted under `verify --tracker`:
//!   `integrity::keys_rotate_and_the_continuous_check_notices_a_modified_file`;
//! - admission capture refuses unauthenticated posts, also through a loopback
//!   relay standing in for a port-forward:
//!   `sources::admission_capture_refuses_unauthenticated_posts_even_from_loopback`,
//!   `sources::admission_capture_without_authentication_refuses_to_start`;
//! - scope by cluster: `query::queries_search_the_clusters_they_name`,
//!   `console::the_console_shows_each_user_what_their_trace_query_could`;
//! - the operator deletes only what it wrote:
//!   `query::an_edited_result_key_deletes_only_the_result`;
//! - redaction gaps: `hardening::no_planted_secret_reaches_a_delivered_byte`,
//!   `sources::admission_capture_records_what_the_apiserver_admits`,
//!   `hardening::malformed_input_is_never_quoted`;
//! - `serve --console-addr` checks the Host header:
//!   `readme::serve_console_answers_only_to_loopback_names`.

use crate::ingest::batch;
use crate::support::{self, eventually, http};
use kubetrail::integrity::HeadFile;
use kubetrail::integrity::digest::{self, Signer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One `serve` and everything it keeps: traces (the "bucket"), the spool, the
/// signing key and the chain-head file (both outside the spool).
struct Site {
    dir: tempfile::TempDir,
    listen: String,
    admin: String,
    child: Option<tokio::process::Child>,
}

const WRITER: &str = "w1";

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("signing-key.pem"),
            Signer::generate_pem().unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("kubetrail.yaml"),
            format!(
                "cluster: local\ntrackers:\n  - name: system\n    directory: {}\n    delivery:\n      maxBatchAge: 1s\n    integrity:\n      digestPeriod: 1m\n",
                dir.path().join("traces").display()
            ),
        )
        .unwrap();
        Site {
            dir,
            listen: format!("127.0.0.1:{}", support::free_port()),
            admin: format!("127.0.0.1:{}", support::free_port()),
            child: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn traces(&self) -> PathBuf {
        self.path("traces")
    }

    fn public_key(&self) -> String {
        let pem = std::fs::read(self.path("signing-key.pem")).unwrap();
        Signer::from_bytes(&pem).unwrap().public_key_b64()
    }

    async fn start(&mut self) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
            .arg("serve")
            .args(["--config", &self.path("kubetrail.yaml").display().to_string()])
            .args(["--listen", &self.listen, "--admin-addr", &self.admin])
            .args(["--spool-dir", &self.path("spool").display().to_string()])
            .args([
                "--signing-key",
                &self.path("signing-key.pem").display().to_string(),
            ])
            .args([
                "--chain-head",
                &self.path("chain-head.json").display().to_string(),
            ])
            .args(["--writer", WRITER])
            .kill_on_drop(true)
            .spawn()
            .expect("starting kubetrail serve");
        self.child = Some(child);
        let admin = self.admin.clone();
        eventually(Duration::from_secs(30), "serve /ready", || async {
            http(&admin, "GET", "/ready", b"")
                .await
                .filter(|(c, _)| *c == 200)
        })
        .await;
    }

    /// SIGTERM: serve drains and closes its period with a digest.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("serve runs");
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
        }
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("serve stops")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }

    async fn post(&self, tag: &str) {
        let (code, body) = http(&self.listen, "POST", "/audit", &batch(tag, 3, "shop"))
            .await
            .expect("webhook answers");
        assert_eq!(code, 200, "{body}");
    }

    fn head(&self) -> kubetrail::integrity::ChainHead {
        HeadFile::read(&self.path("chain-head.json"))
            .unwrap()
            .expect("serve keeps its chain heads")
            .head("system", WRITER)
            .expect("the writer's head")
            .clone()
    }

    /// `kubetrail verify --directory` of `traces` as an auditor runs it.
    async fn verify(&self, traces: &Path, chain_head: Option<&Path>, to: Option<&str>) -> (bool, Value) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"));
        cmd.args(["verify", "--directory", &traces.display().to_string()])
            .args(["--tracker-name", "system", "--cluster", "local"])
            .args(["--public-key", &self.public_key()])
            .args(["-o", "json", "--clock-skew-seconds", "2"]);
        if let Some(h) = chain_head {
            cmd.args(["--chain-head", &h.display().to_string()]);
        }
        match to {
            Some(to) => {
                let from = to.parse::<jiff::Timestamp>().unwrap() - jiff::SignedDuration::from_hours(2);
                cmd.args(["--to", to, "--from", &from.to_string()]);
            }
            None => {
                cmd.args(["--since", "2h"]);
            }
        }
        let out = cmd.output().await.expect("running kubetrail verify");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("verify -o json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), report)
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for p in walk(from) {
        let rel = p.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&p, to.join(rel)).unwrap();
    }
}

/// (state, key) of everything not valid and not pending.
fn problems(report: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for what in ["digests", "files"] {
        for x in report[what].as_array().unwrap() {
            let s = x["state"].as_str().unwrap();
            if s != "valid" && s != "pending" {
                out.push((s.to_string(), x["key"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

async fn past_next_minute() {
    let now = jiff::Timestamp::now().as_millisecond();
    let next = (now / 60_000 + 1) * 60_000;
    tokio::time::sleep(Duration::from_millis((next - now + 3_000) as u64)).await;
}

/// The digest a head names, decoded.
fn decode(traces: &Path, key: &str) -> digest::SignedDigest {
    digest::decode(&std::fs::read(traces.join(key)).unwrap()).unwrap()
}

#[tokio::test]
async fn whoever_writes_the_bucket_cannot_bend_the_trail() {
    let mut site = Site::new();
    site.start().await;
    site.post("first").await;
    past_next_minute().await;
    let traces = site.traces();
    let heads = site.path("chain-head.json");
    let head = eventually(Duration::from_secs(30), "a digest and its head", || async {
        let h = HeadFile::read(&heads).ok()??.head("system", WRITER)?.clone();
        Some(h)
    })
    .await;
    assert!(head.running, "serve marks its writer running: {head:?}");
    let (ok, report) = site.verify(&traces, Some(&heads), None).await;
    assert!(ok, "the untouched trail verifies: {report:#}");

    // 1. A deleted tail: the newest digest and the files it lists. With the
    //    chain head it is TRUNCATED, also when the range ends before it.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&traces, copy.path());
    let newest = decode(copy.path(), &head.key);
    for f in &newest.digest.files {
        std::fs::remove_file(copy.path().join(&f.key)).unwrap();
    }
    std::fs::remove_file(copy.path().join(&head.key)).unwrap();
    let (ok, report) = site.verify(copy.path(), Some(&heads), None).await;
    assert!(!ok, "a deleted tail is seen: {report:#}");
    assert!(
        problems(&report).contains(&("truncated".into(), head.key.clone())),
        "{report:#}"
    );
    let before_tail = newest.digest.period_start.clone();
    let (ok, report) = site.verify(copy.path(), Some(&heads), Some(&before_tail)).await;
    assert!(
        !ok,
        "a range ending before the deleted tail still sees it: {report:#}"
    );
    assert!(
        problems(&report).contains(&("truncated".into(), head.key.clone())),
        "{report:#}"
    );

    // 2. A forged file under a writer nobody knows: ADDED, never pending.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&traces, copy.path());
    let real = walk(copy.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .expect("a trace file");
    let name = real.file_name().unwrap().to_string_lossy().to_string();
    let forged = real.with_file_name(name.replace(&format!("_{WRITER}_"), "_bob_"));
    assert_ne!(forged, real);
    std::fs::copy(&real, &forged).unwrap();
    let forged_key = forged.strip_prefix(copy.path()).unwrap().display().to_string();
    for chain_head in [Some(heads.as_path()), None] {
        let (ok, report) = site.verify(copy.path(), chain_head, None).await;
        assert!(!ok, "a forged writer's file is seen: {report:#}");
        assert_eq!(
            problems(&report),
            vec![("added".into(), forged_key.clone())],
            "{report:#}"
        );
    }

    // 3. A planted unsigned digest that sorts last and ends in 2099, then a
    //    restart without the spool: the writer goes on from its head (the file
    //    outside the bucket), not from the plant, and keeps signing.
    let day = Path::new(&head.key).parent().unwrap();
    let planted_key = day
        .join(format!(
            "local_system_{}T235959Z_{WRITER}_digest.json",
            &jiff::Timestamp::now().strftime("%Y%m%d").to_string()
        ))
        .display()
        .to_string();
    let mut fake = newest.digest.clone();
    fake.period_start = "2099-12-31T00:00:00.000Z".into();
    fake.period_end = "2099-12-31T23:59:59.000Z".into();
    fake.files.clear();
    let mut body = serde_json::to_vec(&fake).unwrap();
    body.pop();
    body.extend_from_slice(b",\"signature\":\"AAAA\"}\n");
    std::fs::write(traces.join(&planted_key), body).unwrap();
    site.stop().await;
    let closing = site.head();
    assert!(!closing.running, "a stopped serve marks its writer stopped");
    std::fs::remove_dir_all(site.path("spool")).unwrap();
    site.start().await;
    site.post("after-restart").await;
    past_next_minute().await;
    let resumed = eventually(Duration::from_secs(30), "a digest after the restart", || async {
        let h = site.head();
        (h.key != closing.key).then_some(h)
    })
    .await;
    // Follow the chain back from the new head to the closing one.
    let mut at = decode(&traces, &resumed.key);
    let mut hops = 0;
    while at.digest.previous.as_ref().map(|p| &p.key) != Some(&closing.key) {
        let p = at
            .digest
            .previous
            .clone()
            .expect("the chain reaches the head before the restart");
        assert_ne!(p.key, planted_key, "never chained onto the planted digest");
        at = decode(&traces, &p.key);
        hops += 1;
        assert!(hops < 10);
    }
    let (ok, report) = site.verify(&traces, Some(&heads), None).await;
    assert!(!ok, "the planted digest is reported: {report:#}");
    assert_eq!(
        problems(&report),
        vec![("invalidSignature".into(), planted_key.clone())],
        "only the plant is wrong; the chain across the restart holds: {report:#}"
    );
    // A file delivered after the restart is in a signed digest: editing it shows.
    let listed = decode(&traces, &resumed.key);
    let victim = listed
        .digest
        .files
        .first()
        .map(|f| f.key.clone())
        .or_else(|| {
            let prev = listed.digest.previous.clone()?;
            decode(&traces, &prev.key)
                .digest
                .files
                .first()
                .map(|f| f.key.clone())
        })
        .expect("a file delivered after the restart, in a digest");
    let original = std::fs::read(traces.join(&victim)).unwrap();
    let mut changed = original.clone();
    changed[0] ^= 1;
    std::fs::write(traces.join(&victim), &changed).unwrap();
    let (_, report) = site.verify(&traces, Some(&heads), None).await;
    assert!(
        problems(&report).contains(&("modified".into(), victim.clone())),
        "{report:#}"
    );
    std::fs::write(traces.join(&victim), &original).unwrap();
    std::fs::remove_file(traces.join(&planted_key)).unwrap();

    // 4. The tail deleted while serve is down, then a restart without the
    //    spool: the writer goes on from its head, so the gap shows (it used
    //    to relink to the newest surviving digest and hide it).
    site.stop().await;
    let tail = site.head();
    let tail_digest = decode(&traces, &tail.key);
    for f in &tail_digest.digest.files {
        std::fs::remove_file(traces.join(&f.key)).unwrap();
    }
    std::fs::remove_file(traces.join(&tail.key)).unwrap();
    std::fs::remove_dir_all(site.path("spool")).unwrap();
    site.start().await;
    site.post("after-deletion").await;
    past_next_minute().await;
    let next = eventually(Duration::from_secs(30), "a digest after the deletion", || async {
        let h = site.head();
        (h.key != tail.key).then_some(h)
    })
    .await;
    site.stop().await;
    let mut at = decode(&traces, &next.key);
    while let Some(p) = at.digest.previous.clone() {
        if p.key == tail.key {
            break;
        }
        at = decode(&traces, &p.key);
    }
    assert_eq!(
        at.digest.previous.as_ref().map(|p| p.key.clone()),
        Some(tail.key.clone()),
        "the chain goes on from the head, the deleted digest"
    );
    let (ok, report) = site.verify(&traces, Some(&heads), None).await;
    assert!(!ok, "the deleted tail is seen after the restart: {report:#}");
    let found = problems(&report);
    assert!(
        found
            .iter()
            .any(|(s, k)| k == &tail.key && (s == "missing" || s == "truncated")),
        "{report:#}"
    );
}
