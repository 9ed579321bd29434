//! The web console: a page embedded in the binary (no CDN: clusters are often
//! offline) and the small query API it calls — Trace List, trace detail, a
//! resource's history and an overview — over the same engine as TraceQuery,
//! behind the same access rule (see [`auth`]).

pub mod auth;

use crate::api::{Order, QueryFilter, Rating, Tracker};
use crate::query::{self, Query};
use crate::store::{self, Credentials, Store, Trail};
use auth::{Access, AuthError, Scope};
use axum::extract::{Query as QueryString, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Rows of a Trace List page unless the caller asks for fewer (at most [`MAX_PAGE`]).
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Users and denied operations listed in the overview.
const TOP: usize = 10;

/// Where the trails are.
pub enum Trails {
    /// Tracker resources, credentials from Secrets in the operator's namespace.
    Cluster {
        client: kube::Client,
        secret_namespace: String,
        cluster: String,
        /// Opened trails by tracker, with the resourceVersion they were opened at.
        stores: Mutex<HashMap<String, (String, Trail)>>,
    },
    /// `serve`'s trackers: name → trail.
    Static {
        cluster: String,
        trackers: BTreeMap<String, Trail>,
    },
}

impl Trails {
    fn cluster(&self) -> &str {
        match self {
            Trails::Cluster { cluster, .. } | Trails::Static { cluster, .. } => cluster,
        }
    }

    async fn names(&self) -> Result<Vec<String>, ApiError> {
        match self {
            Trails::Cluster { client, .. } => {
                let api: Api<Tracker> = Api::all(client.clone());
                let list = api.list(&Default::default()).await.map_err(ApiError::kube)?;
                Ok(list.items.iter().map(|t| t.name_any()).collect())
            }
            Trails::Static { trackers, .. } => Ok(trackers.keys().cloned().collect()),
        }
    }

    /// A tracker's trail in this cluster (its store opened).
    async fn open(&self, name: &str) -> Result<Trail, ApiError> {
        match self {
            Trails::Static { trackers, .. } => trackers
                .get(name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("tracker {name:?} does not exist"))),
            Trails::Cluster {
                client,
                secret_namespace,
                stores,
                ..
            } => {
                let api: Api<Tracker> = Api::all(client.clone());
                let tracker = api
                    .get_opt(name)
                    .await
                    .map_err(ApiError::kube)?
                    .ok_or_else(|| ApiError::not_found(format!("tracker {name:?} does not exist")))?;
                let version = tracker.resource_version().unwrap_or_default();
                if let Some((v, trail)) = stores.lock().unwrap_or_else(|e| e.into_inner()).get(name)
                    && *v == version
                {
                    return Ok(trail.clone());
                }
                let dest = &tracker.spec.destination;
                let sink = store::open(
                    dest,
                    Credentials::Secret {
                        client,
                        namespace: secret_namespace,
                    },
                )
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.reason().as_str(), e.to_string()))?;
                let trail = Trail::new(sink, dest.prefix.trim_end_matches('/'), self.cluster(), name);
                stores
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.into(), (version, trail.clone()));
                Ok(trail)
            }
        }
    }
}

/// The console's state.
pub struct Console {
    /// `None`: no authentication (only `serve` on a loopback address).
    pub access: Option<Access>,
    pub trails: Trails,
    /// Other clusters an admin namespace may read (`--readable-clusters`), as
    /// for TraceQuery.
    pub readable_clusters: crate::scope::ReadableClusters,
    /// Longest range a query may span, in days (as for TraceQuery).
    pub max_days: i64,
    /// Console queries running at once; more wait.
    pub slots: tokio::sync::Semaphore,
    pub metrics: Arc<crate::telemetry::Metrics>,
}

/// A refusal or failure, as JSON `{"error", "reason"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message,
        }
    }
    fn bad(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    fn kube(e: kube::Error) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "KubeError", e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let reason = match e {
            AuthError::NoToken | AuthError::BadToken => "Unauthorized",
            AuthError::Forbidden { .. } => "Forbidden",
            AuthError::NoNamespace => "BadRequest",
            AuthError::Kube(_) => "KubeError",
        };
        Self::new(e.status(), reason, e.to_string())
    }
}

impl From<crate::scope::ClusterDenied> for ApiError {
    fn from(e: crate::scope::ClusterDenied) -> Self {
        Self::new(StatusCode::FORBIDDEN, e.reason().as_str(), e.to_string())
    }
}

impl From<query::QueryError> for ApiError {
    fn from(e: query::QueryError) -> Self {
        let status = match e {
            query::QueryError::EmptyRange | query::QueryError::RangeTooLarge { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, e.reason().as_str(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "reason": self.reason });
        (self.status, Json(body)).into_response()
    }
}

/// The query string every API call takes. Lists are comma-separated.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// The namespace the caller acts in: they must be allowed to create
    /// TraceQueries there; outside the admin namespaces they see only its traces.
    pub ns: Option<String>,
    pub tracker: Option<String>,
    /// Clusters (`*`: every cluster in the bucket); default this cluster.
    pub cluster: Option<String>,
    /// A duration back from now (`15m`, `1h`, `7d`); default `1h` without `from`.
    pub last: Option<String>,
    /// RFC 3339 or Unix ms.
    pub from: Option<String>,
    pub to: Option<String>,
    pub verb: Option<String>,
    pub group: Option<String>,
    pub resource: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub user: Option<String>,
    pub rating: Option<String>,
    pub ip: Option<String>,
    pub id: Option<String>,
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

fn list(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn time_ms(s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| ApiError::bad(format!("time {s:?}: {e} (RFC 3339 or Unix ms)")))
}

impl Params {
    /// The time range, Unix ms, `to` exclusive.
    pub fn range(&self, now_ms: i64) -> Result<(i64, i64), ApiError> {
        let to = match &self.to {
            Some(t) => time_ms(t)?,
            None => now_ms + 1,
        };
        let from = match (&self.from, &self.last) {
            (Some(f), _) => time_ms(f)?,
            (None, last) => {
                let last = last.as_deref().unwrap_or("1h");
                let ms = crate::api::Duration::parse_span(last)
                    .map(|d| d.as_millis_i64())
                    .map_err(|e| ApiError::bad(format!("last: {e}")))?;
                to - ms
            }
        };
        Ok((from, to))
    }

    pub fn filter(&self) -> Result<QueryFilter, ApiError> {
        let ratings = list(&self.rating)
            .iter()
            .map(|r| match r.as_str() {
                "normal" => Ok(Rating::Normal),
                "warning" => Ok(Rating::Warning),
                "incident" => Ok(Rating::Incident),
                other => Err(ApiError::bad(format!(
                    "rating {other:?}: one of normal, warning, incident"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(QueryFilter {
            verbs: list(&self.verb),
            api_groups: list(&self.group)
                .into_iter()
                .map(|g| if g == "core" { String::new() } else { g })
                .collect(),
            resources: list(&self.resource),
            resource_names: list(&self.name),
            namespaces: list(&self.namespace),
            users: list(&self.user),
            ratings,
            source_ips: list(&self.ip),
            trace_ids: list(&self.id),
        })
    }

    fn cursor(&self) -> Result<Option<(i64, String)>, ApiError> {
        let Some(c) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let (t, id) = c
            .split_once('.')
            .ok_or_else(|| ApiError::bad(format!("cursor {c:?} is not a page cursor")))?;
        let t = t
            .parse::<i64>()
            .map_err(|_| ApiError::bad(format!("cursor {c:?} is not a page cursor")))?;
        Ok(Some((t, id.to_string())))
    }
}

/// Who is asking and what they may read.
async fn scope(
    c: &Console,
    headers: &HeaderMap,
    p: &Params,
) -> Result<(Option<auth::Identity>, Scope), ApiError> {
    let Some(access) = &c.access else {
        return Ok((None, Scope::All));
    };
    let (who, key) = access.authenticate(crate::source::bearer(headers)).await?;
    let ns = p.ns.as_deref().unwrap_or("");
    let scope = access.authorize(&who, key, ns).await?;
    Ok((Some(who), scope))
}

/// The engine query for a request.
async fn build(
    c: &Console,
    p: &Params,
    scope: &Scope,
    order: Order,
    limit: usize,
) -> Result<(Store, Query), ApiError> {
    let tracker = p
        .tracker
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad("tracker is required".into()))?;
    // Refused before the tracker's store is opened: a refusal costs nothing.
    let tenant = scope.tenant();
    let clusters = c
        .readable_clusters
        .check(c.trails.cluster(), &list(&p.cluster), tenant)?;
    let trail = c.trails.open(tracker).await?;
    let (from_ms, to_ms) = p.range(jiff::Timestamp::now().as_millisecond())?;
    let q = Query {
        filter: p.filter()?,
        limit,
        order,
        namespace_scope: tenant.map(String::from),
        // A page is small; its lines stay in memory.
        max_hit_bytes: 64 << 20,
        cursor: p.cursor()?,
        // A page needs its rows, not the count of everything older.
        stop_early: true,
        ..Query::of(&trail, clusters, from_ms, to_ms)
    };
    Ok((trail.store, q))
}

/// Who read what: the console is itself a way into the trail.
fn log_read(what: &'static str, who: &Option<auth::Identity>, scope: &Scope, q: &Query) {
    tracing::info!(
        what,
        user = who.as_ref().map(|w| w.user.as_str()).unwrap_or("-"),
        scope = match scope { Scope::All => "all", Scope::Namespace(ns) => ns.as_str() },
        tracker = %q.tracker,
        clusters = ?q.clusters,
        from_ms = q.from_ms,
        to_ms = q.to_ms,
        "console read"
    );
}

/// A page of traces (newest first, or oldest first for a history).
async fn page(c: &Console, headers: &HeaderMap, p: &Params, order: Order) -> Result<Response, ApiError> {
    let (who, scope) = scope(c, headers, p).await?;
    let limit = p.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let (sink, q) = build(c, p, &scope, order, limit).await?;
    log_read(
        if order == Order::NewestFirst {
            "traces"
        } else {
            "history"
        },
        &who,
        &scope,
        &q,
    );
    let _slot = c
        .slots
        .acquire()
        .await
        .map_err(|_| ApiError::bad("stopping".into()))?;
    let started = std::time::Instant::now();
    let out = query::run(&sink, &q, c.max_days).await?;
    let mut traces = Vec::with_capacity(out.hits.len());
    for h in &out.hits {
        let line = out
            .line(h)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ScratchError", e.to_string()))?;
        // Passed on as stored: checked, not rebuilt.
        if let Ok(v) = serde_json::value::RawValue::from_string(line.into_owned()) {
            traces.push(v);
        }
    }
    // More beyond this page: the next starts after its last trace.
    let next = (out.hits.len() >= limit && out.truncated)
        .then(|| out.hits.last().map(|h| format!("{}.{}", h.time_ms, h.trace_id)))
        .flatten();
    tracing::debug!(tracker = %q.tracker, objects = out.scanned_objects, ms = started.elapsed().as_millis() as u64, "console page");
    Ok(Json(serde_json::json!({
        "traces": traces,
        "next": next,
        "matched": out.matched,
        // `matched` counts only the files read when the page stopped early.
        "truncated": out.truncated,
        "from": q.from_ms,
        "to": q.to_ms,
        "scanned": {
            "objects": out.scanned_objects,
            "bytes": out.scanned_bytes,
            "traces": out.scanned_traces,
        },
        "elapsedMs": started.elapsed().as_millis() as u64,
    }))
    .into_response())
}

async fn traces(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    QueryString(p): QueryString<Params>,
) -> Result<Response, ApiError> {
    page(&c, &headers, &p, Order::NewestFirst).await
}

/// A resource's whole lifecycle, oldest first: `resource` and `name` required.
async fn history(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    QueryString(p): QueryString<Params>,
) -> Result<Response, ApiError> {
    if list(&p.resource).len() != 1 || list(&p.name).len() != 1 {
        return Err(ApiError::bad("history needs one resource and one name".into()));
    }
    page(&c, &headers, &p, Order::OldestFirst).await
}

/// Traces per time bucket by rating (hourly; 5 minutes for ranges of 2 hours or
/// less, 30 minutes up to 12 hours), top users and top denied operations.
async fn overview(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    QueryString(p): QueryString<Params>,
) -> Result<Response, ApiError> {
    let (who, scope) = scope(&c, &headers, &p).await?;
    let (sink, q) = build(&c, &p, &scope, Order::NewestFirst, 1).await?;
    log_read("overview", &who, &scope, &q);
    let span = q.to_ms - q.from_ms;
    let bucket_ms = match span {
        s if s <= 2 * 3_600_000 => 300_000,
        s if s <= 12 * 3_600_000 => 1_800_000,
        _ => 3_600_000,
    };
    let _slot = c
        .slots
        .acquire()
        .await
        .map_err(|_| ApiError::bad("stopping".into()))?;
    let started = std::time::Instant::now();
    let out = query::overview(&sink, &q, c.max_days, bucket_ms, TOP).await?;
    let mut body = serde_json::to_value(&out).unwrap_or_default();
    body["elapsedMs"] = (started.elapsed().as_millis() as u64).into();
    body["to"] = q.to_ms.into();
    Ok(Json(body).into_response())
}

/// Who the caller is, what they see, and the trackers to pick from.
async fn whoami(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    QueryString(p): QueryString<Params>,
) -> Result<Response, ApiError> {
    let (who, scope) = scope(&c, &headers, &p).await?;
    let trackers = c.trails.names().await?;
    let clusters = c
        .readable_clusters
        .readable_by(c.trails.cluster(), scope.tenant());
    Ok(Json(serde_json::json!({
        "user": who.as_ref().map(|w| w.user.clone()),
        "groups": who.map(|w| w.groups).unwrap_or_default(),
        "namespace": p.ns,
        "scope": match scope { Scope::All => "all".to_string(), Scope::Namespace(ns) => ns },
        "cluster": c.trails.cluster(),
        // The clusters this caller may name (`*`: every one in the bucket).
        "clusters": clusters,
        "trackers": trackers,
    }))
    .into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Headers on every answer: no framing, no sniffing, scripts only from here,
/// API answers never cached (they hold what one user may see).
async fn harden(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Counts each API call by endpoint and result, and times it.
async fn measure(
    State(c): State<Arc<Console>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = match req.uri().path() {
        "/api/v1/traces" => "traces",
        "/api/v1/history" => "history",
        "/api/v1/overview" => "overview",
        "/api/v1/whoami" => "whoami",
        _ => return next.run(req).await,
    };
    let started = std::time::Instant::now();
    let r = next.run(req).await;
    let result = match r.status() {
        s if s.is_success() => "ok",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        _ => "error",
    };
    use crate::telemetry::{ConsoleLabels, EndpointLabels};
    c.metrics
        .console_requests
        .get_or_create(&ConsoleLabels { endpoint, result })
        .inc();
    c.metrics
        .console_duration
        .get_or_create(&EndpointLabels { endpoint })
        .observe(started.elapsed().as_secs_f64());
    r
}

/// The console's routes.
pub fn router(c: Arc<Console>) -> Router {
    let r = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/traces", get(traces))
        .route("/api/v1/history", get(history))
        .route("/api/v1/overview", get(overview))
        .layer(axum::middleware::from_fn_with_state(c.clone(), measure));
    // Without Kubernetes authentication the console trusts being on loopback,
    // which a page on a rebound DNS name would get around.
    let loopback = c.access.is_none();
    let r = r.with_state(c);
    let r = if loopback {
        r.layer(axum::middleware::from_fn(loopback_only))
    } else {
        r
    };
    r.layer(axum::middleware::from_fn(harden))
}

/// Whether a `Host` header names the loopback: `localhost`, `127.0.0.1` or
/// `[::1]`, with or without a port. A listener that trusts being on loopback
/// must check it, since a web page whose own name was made to resolve to
/// 127.0.0.1 (DNS rebinding) reaches the listener with its own name as Host.
pub fn is_loopback_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, after)) => (ip, after),
            None => return false,
        },
        None => host.split_at(host.find(':').unwrap_or(host.len())),
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = if host.starts_with('[') {
        name == "::1"
    } else {
        name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
    };
    port_ok && name_ok
}

/// Refuses (403) a request whose `Host` is not a loopback name: the check
/// against DNS rebinding of every listener that trusts being on loopback
/// (`serve --console-addr`, the `kubetrail console` proxy).
pub async fn loopback_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if is_loopback_host(host) {
        return next.run(req).await;
    }
    tracing::warn!(host, "console request refused: Host is not a loopback name");
    (
        StatusCode::FORBIDDEN,
        format!(
            "unexpected Host {host:?}: this console answers only to localhost, 127.0.0.1 or [::1] \
             (a guard against DNS rebinding)"
        ),
    )
        .into_response()
}

/// Serves the console on `addr` until the process ends.
pub async fn spawn(addr: SocketAddr, c: Arc<Console>) -> std::io::Result<SocketAddr> {
    if c.access.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "the console without Kubernetes authentication listens only on a loopback address, not {addr}"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding the console address {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let app = router(c);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "console stopped");
        }
    });
    tracing::info!(addr = %local, "console listening");
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(qs: &str) -> Params {
        let uri: http::Uri = format!("/?{qs}").parse().unwrap();
        QueryString::<Params>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn ranges_filters_and_cursors_from_the_query_string() {
        let now = 1_796_000_000_000;
        assert_eq!(
            params("").range(now).unwrap(),
            (now + 1 - 3_600_000, now + 1),
            "the last hour"
        );
        assert_eq!(params("last=7d").range(now).unwrap().0, now + 1 - 7 * 86_400_000);
        let (from, to) = params("from=2026-11-28T09:00:00Z&to=1796000000000")
            .range(now)
            .unwrap();
        assert_eq!((from, to), (1_795_856_400_000, 1_796_000_000_000));
        assert!(params("last=soon").range(now).is_err());
        assert!(params("from=yesterday").range(now).is_err());
        let f = params("verb=delete,%20patch&group=core,apps&rating=warning&id=x")
            .filter()
            .unwrap();
        assert_eq!(f.verbs, ["delete", "patch"]);
        assert_eq!(f.api_groups, ["", "apps"], "core is the empty group");
        assert_eq!(f.ratings, [Rating::Warning]);
        assert_eq!(f.trace_ids, ["x"]);
        let e = params("rating=bad").filter().unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            params("cursor=1796000000000.abc.def").cursor().unwrap(),
            Some((1_796_000_000_000, "abc.def".to_string()))
        );
        assert!(params("cursor=nope").cursor().is_err());
        assert_eq!(params("cursor=").cursor().unwrap(), None);
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for ok in [
            "localhost",
            "LocalHost:8090",
            "127.0.0.1",
            "127.0.0.1:7000",
            "[::1]",
            "[::1]:7000",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7000",
            "localhost.evil.example",
            "127.0.0.1.nip.io:7000",
            "localhost:",
            "localhost:70x0",
            "localhost:7000:1",
            "127.0.0.2",
            "[::1",
            "[::2]:7000",
            "[::1]7000",
            "0.0.0.0:7000",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
