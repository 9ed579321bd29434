//! `kubetrail console`: opens the operator's web console for the current
//! kubeconfig user. A local listener on a loopback address forwards each
//! request to the console — through a port-forward made with the Kubernetes
//! API, or to `--url` (an Ingress) — with the user's bearer token added, so the
//! operator sees (and checks) who is asking.

use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `kubetrail console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Namespace kubetrail runs in.
    #[arg(short = 'n', long, default_value = "kubetrail")]
    pub namespace: String,
    /// Label selector of the operator's pods.
    #[arg(
        long,
        default_value = "app.kubernetes.io/name=kubetrail,app.kubernetes.io/component=operator"
    )]
    pub selector: String,
    /// The console's port in the pod (the operator's `--console-addr`).
    #[arg(long, default_value_t = 8082)]
    pub port: u16,
    /// Reach the console at this URL (an Ingress, or a direct address) instead
    /// of a port-forward.
    #[arg(long)]
    pub url: Option<String>,
    /// Local address to listen on (loopback only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The namespace you act in: you must be allowed to create TraceQueries
    /// there (default: the kubeconfig context's namespace, else `default`).
    #[arg(long = "as-namespace")]
    pub as_namespace: Option<String>,
    /// Tracker the page opens on.
    #[arg(long)]
    pub tracker: Option<String>,
    /// A file holding the bearer token to use (default: the kubeconfig user's
    /// `token` or `tokenFile`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Where requests go.
enum Upstream {
    Url {
        base: String,
        client:
            Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Body>,
    },
    PortForward {
        pods: Api<Pod>,
        selector: String,
        port: u16,
    },
}

struct Proxy {
    upstream: Upstream,
    token: HeaderValue,
}

/// The kubeconfig user's bearer token and context namespace.
fn kubeconfig_token(args: &ConsoleArgs) -> anyhow::Result<(String, Option<String>)> {
    let kc = kube::config::Kubeconfig::read().context("reading the kubeconfig")?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone());
    let namespace = ctx.as_ref().and_then(|c| c.namespace.clone());
    if let Some(path) = &args.token_file {
        let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok((t.trim().to_string(), namespace));
    }
    let user_name = ctx.map(|c| c.user.unwrap_or_default()).unwrap_or_default();
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user_name)
        .and_then(|a| a.auth_info.clone())
        .with_context(|| format!("the kubeconfig has no user {user_name:?}"))?;
    if let Some(t) = &auth.token {
        use secrecy::ExposeSecret as _;
        return Ok((t.expose_secret().trim().to_string(), namespace));
    }
    if let Some(path) = &auth.token_file {
        let t = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        return Ok((t.trim().to_string(), namespace));
    }
    bail!(
        "the kubeconfig user {user_name:?} has no bearer token (a client certificate or an exec plugin \
         cannot be checked with a TokenReview); pass --token-file with a token, e.g. from `kubectl create token`"
    )
}

/// Runs the local listener until Ctrl-C.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    kubetrail::install_crypto_provider();
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address: the listener adds your token to every request");
    }
    let (token, context_ns) = kubeconfig_token(&args)?;
    let token =
        HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a valid header value")?;
    let upstream = match &args.url {
        Some(url) => {
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(kubetrail::notify::send::system_roots())
                .with_no_client_auth();
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build();
            Upstream::Url {
                base: url.trim_end_matches('/').to_string(),
                client: Client::builder(TokioExecutor::new()).build(https),
            }
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (KUBECONFIG)")?;
            let pods: Api<Pod> = Api::namespaced(client, &args.namespace);
            // Fail now, not on the first page load, when nothing can be reached.
            pick_pod(&pods, &args.selector).await?;
            Upstream::PortForward {
                pods,
                selector: args.selector.clone(),
                port: args.port,
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let proxy = Arc::new(Proxy { upstream, token });
    // The listener adds the user's token: a page on a rebound DNS name must
    // not get to use it.
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy)
        .layer(axum::middleware::from_fn(kubetrail::console::loopback_only));
    let ns = args
        .as_namespace
        .or(context_ns)
        .unwrap_or_else(|| "default".into());
    let mut fragment = format!("#/traces?ns={ns}");
    if let Some(t) = &args.tracker {
        fragment.push_str(&format!("&tracker={t}"));
    }
    {
        // Whoever reads stdout may have gone; the listener keeps serving.
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "kubetrail console: http://{local}/{fragment}");
        let _ = writeln!(out, "(Ctrl-C to stop; the page acts as you, in namespace {ns})");
        let _ = out.flush();
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(kubetrail::runtime::shutdown_signal())
        .await?;
    Ok(())
}

/// A ready operator pod.
async fn pick_pod(pods: &Api<Pod>, selector: &str) -> anyhow::Result<String> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .context("listing the operator's pods")?;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    list.items
        .iter()
        .find(|p| ready(p))
        .map(|p| p.name_any())
        .with_context(|| format!("no ready pod matches {selector:?}"))
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// Forwards one request with the token added.
async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(header::COOKIE);
    parts.headers.remove(header::HOST);
    parts.headers.insert(header::AUTHORIZATION, p.token.clone());
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let result = match &p.upstream {
        Upstream::Url { base, client } => {
            let uri = match format!("{base}{path}").parse::<http::Uri>() {
                Ok(u) => u,
                Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
            };
            parts.uri = uri;
            client
                .request(Request::from_parts(parts, body))
                .await
                .map(|r| r.map(Body::new))
                .map_err(|e| e.to_string())
        }
        Upstream::PortForward { pods, selector, port } => {
            parts.uri = match path.parse() {
                Ok(u) => u,
                Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("{e}")),
            };
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_static("localhost"));
            through_port_forward(pods, selector, *port, Request::from_parts(parts, body)).await
        }
    };
    match result {
        Ok(r) => r,
        Err(e) => refuse(StatusCode::BAD_GATEWAY, format!("reaching the console: {e}")),
    }
}

/// One request over a fresh port-forward to a ready operator pod.
async fn through_port_forward(
    pods: &Api<Pod>,
    selector: &str,
    port: u16,
    req: Request,
) -> Result<Response, String> {
    let pod = pick_pod(pods, selector).await.map_err(|e| format!("{e:#}"))?;
    let mut pf = pods
        .portforward(&pod, &[port])
        .await
        .map_err(|e| format!("port-forward to {pod}: {e}"))?;
    let stream = pf
        .take_stream(port)
        .ok_or_else(|| format!("port-forward to {pod}: no stream"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = pf.join().await;
    });
    let r = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
