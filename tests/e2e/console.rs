//! The web console in a real browser (headless Chromium) against the operator
//! binary, the real apiserver (TokenReview, SubjectAccessReview, RBAC) and
//! trace files in the real S3 server: filters, paging, detail, history and the
//! overview chart render the expected rows, and a user allowed in one namespace
//! sees only that namespace's traces.

use crate::Harness;
use crate::support::{self, Operator, eventually};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kubetrail::api::Tracker;
use kubetrail::store::Store;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// Start of the traces' window (absolute, so every URL is a fixed link).
const T0: &str = "2026-11-28T10:00:00Z";
const FROM: &str = "2026-11-28T09:00:00Z";
const TO: &str = "2026-11-28T12:00:00Z";

struct Tr {
    id: String,
    ms: i64,
    verb: &'static str,
    resource: &'static str,
    name: &'static str,
    ns: String,
    user: &'static str,
    code: i32,
}

fn line(t: &Tr) -> Value {
    let rating = match t.code {
        c if c >= 500 => "incident",
        c if c >= 400 => "warning",
        _ => "normal",
    };
    let time = jiff::Timestamp::from_millisecond(t.ms).unwrap().to_string();
    json!({
        "trace_id": t.id, "trace_name": format!("{} {}", t.verb, t.resource), "trace_rating": rating,
        "trace_type": "ApiCall", "service_type": "core", "resource_type": t.resource, "resource_name": t.name,
        "namespace": t.ns, "user": t.user, "source_ips": ["10.0.0.9"], "code": t.code, "time": time,
        "record_time": time, "stage": "ResponseComplete", "read_only": t.verb == "get",
        "request_uri": format!("/api/v1/namespaces/{}/{}/{}", t.ns, t.resource, t.name),
        "message": if t.code == 409 { "the object has been modified" } else { "" },
        "cluster": "e2e", "source": "webhook",
        "request": {"kind": "Secret", "data": {"password": "[REDACTED]"}},
    })
}

/// Trace files as delivery names them, `per_file` traces each.
async fn put_files(sink: &Store, tracker: &str, traces: &[Tr], per_file: usize) {
    put_files_of(sink, "e2e", tracker, traces, per_file).await
}

/// The same, as a writer in another cluster sharing the bucket.
async fn put_files_of(sink: &Store, cluster: &str, tracker: &str, traces: &[Tr], per_file: usize) {
    let mut sorted: Vec<&Tr> = traces.iter().collect();
    sorted.sort_by_key(|t| t.ms);
    for (n, group) in sorted.chunks(per_file).enumerate() {
        let lines: Vec<Vec<u8>> = group
            .iter()
            .map(|t| serde_json::to_vec(&line(t)).unwrap())
            .collect();
        support::put_trace_file(sink, "c", cluster, tracker, n as u64, group[0].ms, &lines).await;
    }
}

async fn create<K>(api: &Api<K>, v: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj).await.expect("creating");
}

/// A ServiceAccount in `ns`, allowed to create TraceQueries in `allowed_in`
/// (if any), and a token for it.
async fn user(client: &kube::Client, ns: &str, name: &str, allowed_in: Option<&str>) -> String {
    create(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        json!({"metadata": {"name": name}}),
    )
    .await;
    if let Some(target) = allowed_in {
        create(
            &Api::<Role>::namespaced(client.clone(), target),
            json!({"metadata": {"name": format!("{name}-tq")},
                   "rules": [{"apiGroups": ["kubetrail.io"], "resources": ["tracequeries"], "verbs": ["create"]}]}),
        )
        .await;
        create(
            &Api::<RoleBinding>::namespaced(client.clone(), target),
            json!({"metadata": {"name": format!("{name}-tq")},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{name}-tq")},
                   "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
        )
        .await;
    }
    let req: TokenRequest = serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .expect("token request")
        .status
        .unwrap()
        .token
}

/// GET over HTTP/1 with optional bearer token and Host: (status, body, headers).
async fn get(addr: &str, path: &str, token: Option<&str>, host: Option<&str>) -> (u16, String, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "-D", "-", "--max-time", "30"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    if let Some(h) = host {
        cmd.args(["-H", &format!("host: {h}")]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string(), head.to_lowercase())
}

/// A GET over a raw HTTP/1.1 connection; the status code.
async fn raw_status(addr: &str, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn chromium() -> String {
    std::env::var("KUBETRAIL_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// The page's DOM after its scripts ran, in headless Chromium.
async fn browse(url: &str, profile: &std::path::Path) -> String {
    let dom = dom(url, profile).await;
    assert!(
        dom.contains("data-state=\"ready\""),
        "page {url} did not render: {}",
        between(&dom, "<div id=\"error\"", "</div>").unwrap_or(&dom[..dom.len().min(2000)])
    );
    dom
}

/// The DOM, whatever state the page ended in.
async fn dom(url: &str, profile: &std::path::Path) -> String {
    let out = tokio::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=15000", "--dump-dom", url])
        .kill_on_drop(true)
        .output()
        .await
        .expect("running chromium (apt-get install chromium; scripts/test-env.sh does)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A screenshot of the page (PNG).
async fn screenshot(url: &str, profile: &std::path::Path, to: &std::path::Path) {
    let status = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1280,860", "--virtual-time-budget=15000"])
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .expect("chromium");
    assert!(status.status.success(), "screenshot of {url}");
    let png = std::fs::read(to).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is a PNG with content",
        to.display()
    );
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Every value of `attr` on elements whose opening tag starts with `tag_start`.
fn attrs(dom: &str, tag_start: &str, attr: &str) -> Vec<String> {
    dom.match_indices(tag_start)
        .filter_map(|(i, _)| {
            let tag = &dom[i..i + dom[i..].find('>')?];
            between(tag, &format!("{attr}=\""), "\"").map(|v| v.replace("&amp;", "&"))
        })
        .collect()
}

#[tokio::test]
async fn the_console_shows_each_user_what_their_trace_query_could() {
    let env = support::env();
    let h = Harness::start().await;
    let client = h.client.clone();
    let tenant = support::unique("team");
    let other = support::unique("other");
    let admins = support::unique("audit");
    for ns in [&tenant, &other, &admins] {
        create(
            &Api::<Namespace>::all(client.clone()),
            json!({"metadata": {"name": ns}}),
        )
        .await;
    }
    let bucket = env.s3.bucket("console").await;
    h.put_credentials("s3", support::s3::ACCESS_KEY, support::s3::SECRET_KEY)
        .await;
    let tracker = format!("{}-trail", h.namespace);
    create(
        &Api::<Tracker>::all(client.clone()),
        h.tracker(
            &tracker,
            json!({"destination": {"bucket": bucket, "prefix": "c", "endpoint": env.s3.endpoint,
                   "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}}}),
        ),
    )
    .await;

    // The tenant's namespace: 100 reads, a Secret's whole lifecycle with a
    // conflict, and three denied reads of it. Another namespace: 40 traces,
    // 20 of them denied, that the tenant must never see.
    let t0 = kubetrail::trace::parse_time_ms(T0).unwrap();
    let mut traces = Vec::new();
    let tr = |id: String, ms, verb, resource, name, ns: &str, user, code| Tr {
        id,
        ms,
        verb,
        resource,
        name,
        ns: ns.to_string(),
        user,
        code,
    };
    for i in 0..100 {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        traces.push(tr(
            format!("get-{i:03}"),
            t0 + i * 60_000,
            "get",
            "configmaps",
            "cfg",
            &tenant,
            user,
            200,
        ));
    }
    let life = [
        ("db-create", 310_000, "create", "alice", 201),
        ("db-conflict", 1_210_000, "update", "bob", 409),
        ("db-update", 1_270_000, "update", "bob", 200),
        ("db-denied-1", 1_810_000, "get", "eve", 403),
        ("db-denied-2", 1_811_000, "get", "eve", 403),
        ("db-denied-3", 1_812_000, "get", "eve", 403),
        ("db-delete", 3_610_000, "delete", "alice", 200),
    ];
    for (id, at, verb, user, code) in life {
        traces.push(tr(id.into(), t0 + at, verb, "secrets", "db", &tenant, user, code));
    }
    for i in 0..40 {
        let (verb, resource, code) = if i % 2 == 0 {
            ("list", "pods", 403)
        } else {
            ("delete", "secrets", 200)
        };
        traces.push(tr(
            format!("other-{i:02}"),
            t0 + 45_000 + i * 90_000,
            verb,
            resource,
            "pay",
            &other,
            "carol",
            code,
        ));
    }
    let sink = Store::S3(kubetrail::store::s3::Bucket::from_client(
        env.s3.client(),
        serde_json::from_value(json!({"bucket": bucket})).unwrap(),
    ));
    put_files(&sink, &tracker, &traces, 40).await;
    // Another cluster writes to the same bucket and prefix.
    let east: Vec<Tr> = (0..3)
        .map(|i| {
            tr(
                format!("east-{i}"),
                t0 + 600_000 + i * 1000,
                "patch",
                "deployments",
                "web",
                &tenant,
                "dave",
                200,
            )
        })
        .collect();
    put_files_of(&sink, "east", &tracker, &east, 40).await;
    let tenant_ids: BTreeSet<String> = traces
        .iter()
        .filter(|t| t.ns == tenant)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(tenant_ids.len(), 107);

    let viewer = user(&client, &tenant, "viewer", Some(&tenant)).await;
    let auditor = user(&client, &admins, "auditor", Some(&admins)).await;
    let nobody = user(&client, &tenant, "nobody", None).await;

    let console = format!("127.0.0.1:{}", support::free_port());
    let op = Operator::start(
        &h.namespace,
        &h.label,
        "w1",
        &[
            "--webhook-addr".into(),
            format!("127.0.0.1:{}", support::free_port()),
            "--insecure-http".into(),
            "--console-addr".into(),
            console.clone(),
            "--admin-namespaces".into(),
            admins.clone(),
            "--readable-clusters".into(),
            "east".into(),
        ],
    )
    .await;

    // The API: the same access rule as a TraceQuery.
    let range = format!("tracker={tracker}&from={FROM}&to={TO}");
    let api = |ns: &str, extra: &str| format!("/api/v1/traces?ns={ns}&{range}&limit=500{extra}");
    let (code, body, _) = get(&console, &api(&tenant, ""), None, None).await;
    assert_eq!(code, 401, "no token: {body}");
    let (code, _, _) = get(&console, &api(&tenant, ""), Some("not-a-token"), None).await;
    assert_eq!(code, 401, "a token the apiserver does not know");
    let (code, body, _) = get(&console, &api(&tenant, ""), Some(&nobody), None).await;
    assert_eq!(code, 403, "no RBAC: {body}");
    assert!(body.contains("may not create tracequeries"), "{body}");
    let (code, _, _) = get(&console, &api(&other, ""), Some(&viewer), None).await;
    assert_eq!(
        code, 403,
        "the viewer acting in a namespace they have no rights in"
    );
    let (code, body, head) = get(&console, &api(&tenant, ""), Some(&viewer), None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    let page: Value = serde_json::from_str(&body).unwrap();
    let seen: BTreeSet<String> = page["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seen, tenant_ids,
        "the viewer sees exactly their namespace's traces"
    );
    // A flood of made-up tokens: each is refused, and a real user is still served.
    let flood: Vec<_> = (0..100)
        .map(|i| {
            let (console, path) = (console.clone(), api(&tenant, ""));
            tokio::spawn(async move { raw_status(&console, &path, &format!("forged-{i}")).await })
        })
        .collect();
    for f in flood {
        assert_eq!(f.await.unwrap(), 401, "a forged token");
    }
    let (code, _, _) = get(&console, &api(&tenant, ""), Some(&viewer), None).await;
    assert_eq!(code, 200, "served after the flood");
    let (code, body, _) = get(&console, &api(&admins, ""), Some(&auditor), None).await;
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["matched"], 147, "an admin namespace sees every namespace");

    // Other clusters sharing the bucket: an admin namespace reads the ones the
    // operator lists (`--readable-clusters east`), a tenant none.
    let of = |ns: &str, clusters: &str| format!("{}&user=dave&cluster={clusters}", api(ns, ""));
    let answer = |body: &str| -> Value { serde_json::from_str(body).unwrap() };
    let ids = |body: &str| -> BTreeSet<String> {
        answer(body)["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect()
    };
    let east_ids: BTreeSet<String> = east.iter().map(|t| t.id.clone()).collect();
    for clusters in ["east", "*", "e2e,east"] {
        let (code, body, _) = get(&console, &of(&tenant, clusters), Some(&viewer), None).await;
        assert_eq!(code, 403, "a tenant asking for {clusters:?}: {body}");
        let a = answer(&body);
        assert_eq!(a["reason"], "ClusterNotAllowed", "{body}");
        let error = a["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("namespace {tenant:?} is not an admin namespace")),
            "{error}"
        );
    }
    let (code, body, _) = get(&console, &of(&tenant, "e2e"), Some(&viewer), None).await;
    assert_eq!((code, ids(&body).len()), (200, 0), "its own cluster: {body}");
    let (code, body, _) = get(&console, &of(&admins, "east"), Some(&auditor), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ids(&body), east_ids, "an admin reads a listed cluster");
    let (code, body, _) = get(&console, &of(&admins, "e2e,east"), Some(&auditor), None).await;
    assert_eq!((code, ids(&body)), (200, east_ids.clone()), "{body}");
    for (clusters, names) in [("west", "\"west\""), ("*", "\"*\""), ("east,west", "\"west\"")] {
        let (code, body, _) = get(&console, &of(&admins, clusters), Some(&auditor), None).await;
        assert_eq!(code, 403, "an admin asking for {clusters:?}: {body}");
        let a = answer(&body);
        assert_eq!(a["reason"], "ClusterNotReadable", "{body}");
        let error = a["error"].as_str().unwrap();
        assert!(
            error.contains(names) && error.contains("--readable-clusters") && error.contains("east"),
            "{error}"
        );
    }
    // The page is told which clusters the caller may name.
    let (_, body, _) = get(
        &console,
        &format!("/api/v1/whoami?ns={admins}"),
        Some(&auditor),
        None,
    )
    .await;
    assert_eq!(answer(&body)["clusters"], json!(["e2e", "east"]), "{body}");
    let (_, body, _) = get(
        &console,
        &format!("/api/v1/whoami?ns={tenant}"),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(answer(&body)["clusters"], json!(["e2e"]), "{body}");

    // `kubetrail console` refuses a kubeconfig user without a token (the admin
    // here has a client certificate), and says what to do.
    let dir = tempfile::tempdir().unwrap();
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args([
            "console",
            "--url",
            &format!("http://{console}"),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", env.cp.admin_kubeconfig())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--token-file"), "{err}");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &nobody).unwrap();
    // With --token-file the same kubeconfig is fine: the listener starts.
    let mut with_file = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args([
            "console",
            "--url",
            "http://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--token-file")
        .arg(&token_file)
        .env("KUBECONFIG", env.cp.admin_kubeconfig())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncBufReadExt as _;
        let out = with_file.stdout.take().unwrap();
        let line = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(out).lines().next_line(),
        )
        .await
        .expect("it starts")
        .unwrap()
        .unwrap_or_default();
        assert!(line.starts_with("kubetrail console: http://127.0.0.1:"), "{line}");
    }
    drop(with_file);

    // The browser, through `kubetrail console` acting as the viewer: the token
    // and the namespace come from the viewer's kubeconfig context.
    let kubeconfig = dir.path().join("viewer.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
             users: [{{name: viewer, user: {{token: '{viewer}'}}}}]\n\
             contexts: [{{name: v, context: {{cluster: c, user: viewer, namespace: '{tenant}'}}}}]\n\
             current-context: v\n"
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args([
            "console",
            "--url",
            &format!("http://{console}"),
            "--listen",
            &listen,
        ])
        .args(["--tracker", &tracker])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubetrail console");
    let stdout = proxy.stdout.take().unwrap();
    let first = {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("kubetrail console prints its URL")
            .unwrap()
            .unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        first
    };
    let printed = first.trim_start_matches("kubetrail console: ").to_string();
    assert_eq!(
        printed,
        format!("http://{listen}/#/traces?ns={tenant}&tracker={tracker}")
    );
    eventually(Duration::from_secs(10), "console proxy answers", || async {
        (get(&listen, "/", None, None).await.0 == 200).then_some(())
    })
    .await;
    // Another site's name for this address (DNS rebinding) is refused.
    let (code, _, _) = get(&listen, "/api/v1/whoami", None, Some("evil.example:80")).await;
    assert_eq!(code, 403, "a foreign Host is refused by the local listener");

    let base = format!("http://{listen}/#/");
    let q = format!("ns={tenant}&tracker={tracker}&from={FROM}&to={TO}");
    let profile = dir.path().join("chromium");
    let shots = std::env::var("KUBETRAIL_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();

    // Trace List, paged: three pages of 50, 50 and 7, newest first, no repeats.
    let mut url = format!("{base}traces?{q}&limit=50");
    let mut pages = Vec::new();
    let mut all = Vec::new();
    loop {
        let dom = browse(&url, &profile).await;
        let ids = attrs(&dom, "<tr class=\"trace\"", "data-id");
        pages.push(ids.len());
        all.extend(ids);
        match attrs(&dom, "<a id=\"next\"", "href").first() {
            Some(next) => url = format!("http://{listen}/{next}"),
            None => break,
        }
        assert!(pages.len() < 5, "paging ends");
    }
    assert_eq!(pages, vec![50, 50, 7]);
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(
        unique, tenant_ids,
        "every page together: the tenant's traces, each once"
    );
    assert_eq!(all.first().map(String::as_str), Some("get-099"), "newest first");
    assert_eq!(all.last().map(String::as_str), Some("get-000"), "oldest last");

    // Straight to the operator, without a token: the page asks for one.
    let direct = dom(&format!("http://{console}/#/traces?{q}"), &profile).await;
    assert!(direct.contains("data-state=\"error\""), "{direct}");
    assert!(
        direct.contains("<form id=\"login\">"),
        "the sign-in form is shown: {direct}"
    );
    assert!(direct.contains("bearer token is required"), "{direct}");

    // The cluster picker: the viewer's own cluster; another is refused, and
    // the page says why.
    let own = browse(&format!("{base}traces?{q}&user=dave"), &profile).await;
    assert_eq!(attrs(&own, "<tr class=\"trace\"", "data-id").len(), 0);
    for cluster in ["east", "*"] {
        let page = dom(&format!("{base}traces?{q}&user=dave&cluster={cluster}"), &profile).await;
        assert!(
            page.contains("data-state=\"error\"") && page.contains("is not an admin namespace"),
            "cluster {cluster:?}: {page}"
        );
    }

    // Every range preset is accepted (the traces' window is fixed, so no rows are counted here).
    for preset in ["15m", "1h", "6h", "24h", "7d"] {
        browse(
            &format!("{base}traces?ns={tenant}&tracker={tracker}&last={preset}"),
            &profile,
        )
        .await;
    }

    // Filters from the URL: deletes only (the other namespace's deletes stay hidden).
    let dom = browse(&format!("{base}traces?{q}&verb=delete"), &profile).await;
    assert_eq!(attrs(&dom, "<tr class=\"trace\"", "data-id"), vec!["db-delete"]);
    let dom = browse(&format!("{base}traces?{q}&rating=warning&user=eve"), &profile).await;
    assert_eq!(attrs(&dom, "<tr class=\"trace\"", "data-id").len(), 3);
    screenshot(
        &format!("{base}traces?{q}&limit=20"),
        &profile,
        &shots.join("console-trace-list.png"),
    )
    .await;

    // Trace detail: every field, the redacted body, the whole trace as JSON.
    let detail = format!("{base}trace?{q}&id=db-conflict");
    let dom = browse(&detail, &profile).await;
    assert!(
        dom.contains("data-field=\"code\">409<"),
        "the code field: {}",
        between(&dom, "<dl", "</dl>").unwrap_or(&dom)
    );
    assert!(dom.contains("data-field=\"user\">bob<"), "the user field");
    let json = between(&dom, "<pre id=\"json\">", "</pre>").expect("the JSON block");
    assert!(
        json.contains("\"trace_id\": \"db-conflict\"") && json.contains("[REDACTED]"),
        "{json}"
    );
    assert!(dom.contains("id=\"copy\""), "copy as JSON");
    let request = between(&dom, "data-body=\"request\">", "</pre>").expect("the request body");
    assert!(request.contains("\"password\": \"[REDACTED]\""), "{request}");
    screenshot(&detail, &profile, &shots.join("console-trace-detail.png")).await;

    // Resource history: the Secret's lifecycle, oldest first, failures marked.
    let history = format!("{base}history?{q}&resource=secrets&name=db&namespace={tenant}&group=core");
    let dom = browse(&history, &profile).await;
    assert_eq!(
        attrs(&dom, "<li class=\"event", "data-verb"),
        vec!["create", "update", "update", "get", "get", "get", "delete"]
    );
    assert_eq!(
        dom.matches("<li class=\"event failed\"").count(),
        4,
        "the conflict and the denied reads"
    );
    screenshot(&history, &profile, &shots.join("console-resource-history.png")).await;

    // Overview: per-bucket counts by rating that add up, top users, top denied.
    let overview = format!("{base}overview?{q}");
    let dom = browse(&overview, &profile).await;
    let counts: Vec<u64> = attrs(&dom, "<rect class=\"bar\"", "data-count")
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        107,
        "the chart counts the tenant's traces"
    );
    let warnings: u64 = dom
        .match_indices("<rect class=\"bar\"")
        .filter_map(|(i, _)| {
            let tag = &dom[i..i + dom[i..].find('>')?];
            tag.contains("data-rating=\"warning\"")
                .then(|| between(tag, "data-count=\"", "\"")?.parse::<u64>().ok())
                .flatten()
        })
        .sum();
    assert_eq!(warnings, 4);
    let users = between(&dom, "<table id=\"top-users\">", "</table>").unwrap();
    assert!(
        users.contains(">alice<") && users.contains(">eve<") && !users.contains("carol"),
        "{users}"
    );
    let denied = between(&dom, "<table id=\"top-denied\">", "</table>").unwrap();
    assert!(
        denied.contains(">get secrets<") && !denied.contains("list pods"),
        "{denied}"
    );
    screenshot(&overview, &profile, &shots.join("console-overview.png")).await;

    // Every API call is counted by endpoint and result.
    let (_, metrics) = support::http(&op.admin, "GET", "/metrics", b"").await.unwrap();
    for (endpoint, result) in [
        ("traces", "unauthorized"),
        ("traces", "forbidden"),
        ("traces", "ok"),
        ("overview", "ok"),
        ("history", "ok"),
    ] {
        let line =
            format!("kubetrail_console_requests_total{{endpoint=\"{endpoint}\",result=\"{result}\"}} ");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}
