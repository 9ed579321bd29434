//! Who is asking, and what they may see: the caller's bearer token checked with
//! a TokenReview, then a SubjectAccessReview "may this user create
//! `tracequeries` in that namespace" — the same rule as a TraceQuery, so the
//! console shows nobody a trace their own TraceQuery could not.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Api;
use kube::api::PostParams;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A caller the apiserver vouched for.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    #[serde(skip)]
    pub uid: String,
    #[serde(skip)]
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// Which traces a caller may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace's (an admin namespace, or an unauthenticated loopback `serve`).
    All,
    /// Only this namespace's.
    Namespace(String),
}

impl Scope {
    /// The one namespace the caller is confined to (`None`: every namespace).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Namespace(ns) => Some(ns),
        }
    }
}

/// Why a caller is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required (Authorization: Bearer …)")]
    NoToken,
    #[error("the token was not accepted by the Kubernetes API")]
    BadToken,
    #[error("{user} may not create tracequeries in namespace {namespace:?}")]
    Forbidden { user: String, namespace: String },
    #[error("a namespace is required (the namespace whose TraceQueries you may create)")]
    NoNamespace,
    #[error("asking the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl AuthError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::NoToken | Self::BadToken => http::StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => http::StatusCode::FORBIDDEN,
            Self::NoNamespace => http::StatusCode::BAD_REQUEST,
            Self::Kube(_) => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// How long a review's answer is reused: a revoked token or role binding takes
/// effect within this time.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most answers kept; the cache is emptied when full (a flood of bad tokens
/// cannot grow it).
const CACHE_MAX: usize = 10_000;

/// Answers with the time they were given.
type Cache<K, V> = Mutex<HashMap<K, (Instant, V)>>;

/// TokenReviews and SubjectAccessReviews in flight at once.
const REVIEWS_IN_FLIGHT: usize = 8;

/// The access checks, with their answers cached for [`CACHE_TTL`].
pub struct Access {
    client: kube::Client,
    admin_namespaces: Vec<String>,
    /// BLAKE3 of a token → who it is (`None`: refused).
    tokens: Cache<[u8; 32], Option<Identity>>,
    /// (BLAKE3 of a token, namespace) → allowed.
    reviews: Cache<([u8; 32], String), bool>,
    /// Reviews asked of the apiserver at once: a flood of made-up tokens
    /// waits here instead of becoming a flood of TokenReviews.
    in_flight: tokio::sync::Semaphore,
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(m: &Cache<K, V>, k: &K) -> Option<V> {
    let m = m.lock().unwrap_or_else(|e| e.into_inner());
    m.get(k)
        .filter(|(at, _)| at.elapsed() < CACHE_TTL)
        .map(|(_, v)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(m: &Cache<K, V>, k: K, v: V) {
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= CACHE_MAX {
        m.clear();
    }
    m.insert(k, (Instant::now(), v));
}

impl Access {
    pub fn new(client: kube::Client, admin_namespaces: Vec<String>) -> Self {
        Self {
            client,
            admin_namespaces,
            tokens: Mutex::default(),
            reviews: Mutex::default(),
            in_flight: tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT),
        }
    }

    /// The caller behind a bearer token (TokenReview).
    pub async fn authenticate(&self, token: Option<&str>) -> Result<(Identity, [u8; 32]), AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::NoToken)?;
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        let who = match cached(&self.tokens, &key) {
            Some(who) => who,
            None => {
                let _turn = self.in_flight.acquire().await;
                let review = TokenReview {
                    spec: TokenReviewSpec {
                        token: Some(token.to_string()),
                        audiences: None,
                    },
                    ..Default::default()
                };
                let api: Api<TokenReview> = Api::all(self.client.clone());
                let answer = api.create(&PostParams::default(), &review).await?;
                let status = answer.status.unwrap_or_default();
                let who = match (status.authenticated, status.user) {
                    (Some(true), Some(u)) => Some(Identity {
                        user: u.username.unwrap_or_default(),
                        groups: u.groups.unwrap_or_default(),
                        uid: u.uid.unwrap_or_default(),
                        extra: u.extra.unwrap_or_default(),
                    }),
                    _ => None,
                };
                remember(&self.tokens, key, who.clone());
                who
            }
        };
        who.map(|w| (w, key)).ok_or(AuthError::BadToken)
    }

    /// What `who` may read when acting in `namespace` (SubjectAccessReview).
    pub async fn authorize(
        &self,
        who: &Identity,
        key: [u8; 32],
        namespace: &str,
    ) -> Result<Scope, AuthError> {
        if namespace.is_empty() {
            return Err(AuthError::NoNamespace);
        }
        let allowed = match cached(&self.reviews, &(key, namespace.to_string())) {
            Some(a) => a,
            None => {
                let _turn = self.in_flight.acquire().await;
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(who.user.clone()),
                        groups: Some(who.groups.clone()),
                        uid: (!who.uid.is_empty()).then(|| who.uid.clone()),
                        extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                        resource_attributes: Some(ResourceAttributes {
                            group: Some(crate::api::GROUP.into()),
                            resource: Some("tracequeries".into()),
                            verb: Some("create".into()),
                            namespace: Some(namespace.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
                let answer = api.create(&PostParams::default(), &review).await?;
                let allowed = answer.status.is_some_and(|s| s.allowed);
                remember(&self.reviews, (key, namespace.to_string()), allowed);
                allowed
            }
        };
        if !allowed {
            return Err(AuthError::Forbidden {
                user: who.user.clone(),
                namespace: namespace.into(),
            });
        }
        Ok(if self.admin_namespaces.iter().any(|a| a == namespace) {
            Scope::All
        } else {
            Scope::Namespace(namespace.into())
        })
    }
}
