//! SQL over the bucket: DuckDB (from PyPI) runs the documented DuckDB view and
//! questions over files the pipeline delivered, and gets exactly the counts
//! `kubetrail query` reports.

use crate::support::{self, eventually, http};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn python() -> String {
    let p = std::env::var("KUBETRAIL_PYTHON").unwrap_or_default();
    assert!(
        !p.is_empty() && std::path::Path::new(&p).exists(),
        "KUBETRAIL_PYTHON (a python with duckdb) not found: run the tests with scripts/test.sh"
    );
    p
}

fn batch(b: usize) -> Vec<u8> {
    let users = ["alice", "bob", "eve"];
    let verbs = ["get", "create", "delete", "update"];
    let items: Vec<Value> = (0..100)
        .map(|i| {
            let code = if i % 7 == 0 { 403 } else { 200 };
            json!({
                "level": "Metadata", "auditID": format!("sql-{b}-{i}"), "stage": "ResponseComplete",
                "verb": verbs[i % 4], "user": {"username": users[(i + b) % 3]},
                "objectRef": {"resource": if i % 2 == 0 { "secrets" } else { "configmaps" }, "namespace": "shop",
                              "name": format!("o{}", i % 9), "apiVersion": "v1"},
                "responseStatus": {"code": code},
                "requestReceivedTimestamp": jiff::Timestamp::now().to_string(),
            })
        })
        .collect();
    support::audit::event_list(items)
}

#[tokio::test]
async fn duckdb_counts_match_kubetrail_query() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces");
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster: lab\ntrackers:\n  - name: all\n    directory: {}\n    delivery:\n      maxBatchAge: 1s\n",
            out.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let admin = format!("127.0.0.1:{}", support::free_port());
    let bin = env!("CARGO_BIN_EXE_kubetrail");
    let mut serve = tokio::process::Command::new(bin)
        .arg("serve")
        .args(["--config", &config.display().to_string()])
        .args(["--listen", &listen, "--admin-addr", &admin])
        .args(["--spool-dir", &dir.path().join("spool").display().to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("starting kubetrail serve");
    eventually(Duration::from_secs(30), "serve /ready", || async {
        http(&admin, "GET", "/ready", b"")
            .await
            .filter(|(c, _)| *c == 200)
    })
    .await;
    for b in 0..5 {
        let (code, _) = http(&listen, "POST", "/audit", &batch(b)).await.unwrap();
        assert_eq!(code, 200);
    }
    // SAFETY: a signal to our own child process.
    unsafe {
        libc::kill(serve.id().unwrap() as i32, libc::SIGTERM);
    }
    assert!(serve.wait().await.unwrap().success());

    // kubetrail query's answer.
    let q = tokio::process::Command::new(bin)
        .args([
            "query",
            "--directory",
            &out.display().to_string(),
            "--tracker-name",
            "all",
        ])
        .args([
            "--cluster",
            "lab",
            // Days are a unit of --since, as the README shows (`--since 7d`).
            "--since",
            "1d",
            "--limit",
            "100000",
            "-o",
            "jsonl",
        ])
        .output()
        .await
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 500);
    let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
    let mut denied: BTreeMap<String, i64> = BTreeMap::new();
    for t in &lines {
        *by_name
            .entry(t["trace_name"].as_str().unwrap().into())
            .or_default() += 1;
        if t["code"] == 403 {
            *denied.entry(t["user"].as_str().unwrap().into()).or_default() += 1;
        }
    }

    // DuckDB's answer, from the view `kubetrail schema` prints and the
    // questions of docs/sql.md.
    let ddl = tokio::process::Command::new(bin)
        .args([
            "schema",
            "--engine",
            "duckdb",
            "--directory",
            &out.display().to_string(),
            "--tracker-name",
            "all",
        ])
        .output()
        .await
        .unwrap();
    assert!(ddl.status.success(), "{}", String::from_utf8_lossy(&ddl.stderr));
    let ddl = String::from_utf8(ddl.stdout).unwrap();
    let script = r#"
import duckdb, json, sys
con = duckdb.connect()
con.execute(sys.argv[1])
total = con.execute("SELECT count(*) FROM kubetrail_all").fetchone()[0]
names = dict(con.execute("SELECT trace_name, count(*) FROM kubetrail_all GROUP BY trace_name").fetchall())
denied = dict(con.execute("""
    SELECT "user", count(*) AS denied FROM kubetrail_all
    WHERE code IN (401, 403) GROUP BY "user" ORDER BY denied DESC""").fetchall())
print(json.dumps({"total": total, "names": names, "denied": denied}))
"#;
    let py = tokio::process::Command::new(python())
        .args(["-c", script, &ddl])
        .output()
        .await
        .unwrap();
    assert!(
        py.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let got: Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(got["total"], 500);
    let names: BTreeMap<String, i64> = serde_json::from_value(got["names"].clone()).unwrap();
    let denied_sql: BTreeMap<String, i64> = serde_json::from_value(got["denied"].clone()).unwrap();
    assert_eq!(names, by_name, "per operation");
    assert_eq!(denied_sql, denied, "denied requests per user");
    assert!(!denied.is_empty());
}
