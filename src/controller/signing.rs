//! Digest signing keys: read from the Secret a tracker names, or from the
//! operator's own `kubetrail-signing-key`, generated the first time it is needed.
//! Every replica reads the key (each signs its own chain); the public key is
//! published in the Tracker's status by the lease holder.

use crate::api::SecretRef;
use crate::integrity::Signer;
use crate::integrity::digest::SECRET_KEY;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Secret generated when a tracker names none.
pub const DEFAULT_SECRET: &str = "kubetrail-signing-key";

/// How long a key read from its Secret is used before it is read again (a
/// rotated key is picked up within this time).
const REFRESH: Duration = Duration::from_secs(30);

/// Why a tracker's signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("signing key Secret {namespace}/{name}: {reason}")]
    Invalid {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("reading signing key Secret: {0}")]
    Kube(#[source] kube::Error),
}

impl KeyError {
    /// Condition and event reason.
    pub fn reason(&self) -> crate::api::Reason {
        match self {
            Self::NotFound { .. } => crate::api::Reason::SigningKeyNotFound,
            Self::Invalid { .. } => crate::api::Reason::SigningKeyInvalid,
            Self::Kube(_) => crate::api::Reason::KubeError,
        }
    }
}

/// Reads (or, for the default Secret, creates) a signing key.
pub async fn load(
    client: &kube::Client,
    namespace: &str,
    secret_ref: Option<&SecretRef>,
) -> Result<Arc<Signer>, KeyError> {
    let name = secret_ref.map(|r| r.name.as_str()).unwrap_or(DEFAULT_SECRET);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secret = api.get_opt(name).await.map_err(KeyError::Kube)?;
    if secret.is_none() && secret_ref.is_none() {
        let pem = Signer::generate_pem().map_err(|e| KeyError::Invalid {
            namespace: namespace.into(),
            name: name.into(),
            reason: e.to_string(),
        })?;
        let new: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "kubetrail"},
                "annotations": {"kubetrail.io/purpose": "Ed25519 key that signs trace file digests"},
            },
            "type": "Opaque",
            "stringData": {SECRET_KEY: pem},
        }))
        .map_err(|e| KeyError::Invalid {
            namespace: namespace.into(),
            name: name.into(),
            reason: e.to_string(),
        })?;
        match api.create(&PostParams::default(), &new).await {
            Ok(s) => {
                tracing::info!(%namespace, %name, "generated the digest signing key");
                secret = Some(s);
            }
            // Another replica was first: use its key.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                secret = api.get_opt(name).await.map_err(KeyError::Kube)?;
            }
            Err(e) => return Err(KeyError::Kube(e)),
        }
    }
    let secret = secret.ok_or_else(|| KeyError::NotFound {
        namespace: namespace.into(),
        name: name.into(),
    })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| KeyError::Invalid {
            namespace: namespace.into(),
            name: name.into(),
            reason: format!("no key {SECRET_KEY}"),
        })?;
    Signer::from_bytes(&bytes)
        .map(Arc::new)
        .map_err(|e| KeyError::Invalid {
            namespace: namespace.into(),
            name: name.into(),
            reason: e.to_string(),
        })
}

/// Keys by Secret name, read again after [`REFRESH`].
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<String, (Instant, Arc<Signer>)>>,
}

impl KeyCache {
    pub async fn get(
        &self,
        client: &kube::Client,
        namespace: &str,
        secret_ref: Option<&SecretRef>,
    ) -> Result<Arc<Signer>, KeyError> {
        let name = secret_ref
            .map(|r| r.name.clone())
            .unwrap_or_else(|| DEFAULT_SECRET.into());
        if let Some((at, k)) = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(&name)
            && at.elapsed() < REFRESH
        {
            return Ok(k.clone());
        }
        let key = load(client, namespace, secret_ref).await?;
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, (Instant::now(), key.clone()));
        Ok(key)
    }
}
