//! Digest files: what one writer delivered for one tracker in one period, chained
//! to the writer's previous digest and signed with Ed25519 (docs/integrity.md).
//!
//! A digest file is the JSON of [`Digest`] with one more member, `signature`,
//! appended last. The digest's SHA-256 is taken over the file *without* that
//! member (the bytes up to the last `}` of the unsigned JSON, then `}`), so
//! the file carries its own signature and the hash is still well defined. The
//! signature covers the canonical string
//! `{periodEnd}\n{digest key}\n{digest SHA-256}\n{previous signature}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Digest format version.
pub const VERSION: u32 = 1;

/// The Secret key holding a signing key.
pub const SECRET_KEY: &str = "signingKey";

/// One delivered trace file, as a digest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestFile {
    pub key: String,
    pub size: u64,
    /// Hex SHA-256 of the object's bytes.
    pub sha256: String,
    pub events: u64,
    /// Earliest and latest trace time in the file (RFC 3339).
    pub earliest: String,
    pub latest: String,
}

/// The previous digest of the same chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    pub key: String,
    pub sha256: String,
    pub signature: String,
}

/// What a digest says (everything but its own signature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    pub version: u32,
    pub cluster: String,
    pub tracker: String,
    pub writer: String,
    /// The period this digest covers, [start, end), RFC 3339 UTC.
    pub period_start: String,
    pub period_end: String,
    /// Fingerprint of the public key that verifies this digest.
    pub key_fingerprint: String,
    /// `None` only for the first digest of a chain.
    pub previous: Option<Previous>,
    /// Every trace file the writer delivered in the period.
    pub files: Vec<DigestFile>,
}

/// A digest as read back: its content, signature and hash.
#[derive(Clone, Debug)]
pub struct SignedDigest {
    pub digest: Digest,
    pub signature: String,
    /// Hex SHA-256 of the unsigned JSON.
    pub sha256: String,
}

/// Why a digest cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("not a digest file: {0}")]
    Format(String),
    #[error("signing key: {0}")]
    Key(String),
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// RFC 3339 (UTC, seconds) of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Unix milliseconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// The string a digest's signature covers.
pub fn signing_string(period_end: &str, key: &str, sha256: &str, previous_signature: &str) -> String {
    format!("{period_end}\n{key}\n{sha256}\n{previous_signature}")
}

pub use crate::store::key::digest_key;

/// An Ed25519 signing key.
pub struct Signer {
    pair: Ed25519KeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Fingerprint of a raw Ed25519 public key: `sha256:` and the first 128 bits of
/// its SHA-256, hex.
pub fn fingerprint(public_key: &[u8]) -> String {
    format!("sha256:{}", &sha256_hex(public_key)[..32])
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem_body(text: &str, begin: &str, end: &str) -> Option<Vec<u8>> {
    let start = text.find(begin)? + begin.len();
    let stop = text[start..].find(end)? + start;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(b64).ok()
}

impl Signer {
    /// A new random key, as PKCS#8 PEM (what the operator stores in its Secret).
    pub fn generate_pem() -> Result<String, DigestError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| DigestError::Key(e.to_string()))?;
        let b64 = B64.encode(doc.as_ref());
        let mut pem = String::from(PEM_BEGIN);
        pem.push('\n');
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Ok(pem)
    }

    /// Reads a key: PKCS#8 PEM (`openssl genpkey -algorithm ed25519`), PKCS#8
    /// DER, or a raw 32-byte seed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signer, DigestError> {
        let pair = if let Some(der) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| pem_body(t, PEM_BEGIN, PEM_END))
        {
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| DigestError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?
        } else if bytes.len() == 32 {
            Ed25519KeyPair::from_seed_unchecked(bytes).map_err(|e| DigestError::Key(e.to_string()))?
        } else {
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).map_err(|_| {
                DigestError::Key("expected an Ed25519 key as PKCS#8 PEM, PKCS#8 DER or a 32-byte seed".into())
            })?
        };
        let fingerprint = fingerprint(pair.public_key().as_ref());
        Ok(Signer { pair, fingerprint })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The public key, base64 of its 32 raw bytes.
    pub fn public_key_b64(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// The public key as PEM (SubjectPublicKeyInfo), for `openssl` and `--public-key`.
    pub fn public_key_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }

    /// Encodes and signs a digest to be written under `key`; returns the file's
    /// bytes and the [`Previous`] that the next digest of the chain names.
    pub fn sign(&self, digest: &Digest, key: &str) -> Result<(Vec<u8>, Previous), DigestError> {
        let unsigned = serde_json::to_vec(digest).map_err(|e| DigestError::Format(e.to_string()))?;
        let sha256 = sha256_hex(&unsigned);
        let prev_sig = digest
            .previous
            .as_ref()
            .map(|p| p.signature.as_str())
            .unwrap_or("");
        let message = signing_string(&digest.period_end, key, &sha256, prev_sig);
        let signature = B64.encode(self.pair.sign(message.as_bytes()).as_ref());
        let mut file = unsigned;
        file.pop(); // the closing brace
        file.extend_from_slice(format!(",\"signature\":\"{signature}\"}}\n").as_bytes());
        Ok((
            file,
            Previous {
                key: key.to_string(),
                sha256,
                signature,
            },
        ))
    }
}

/// Slack before a key's `since`: writers may sign with a new key before the
/// lease holder's next round publishes it (at most its recheck interval).
pub const KEY_SINCE_SLACK_MS: i64 = 10 * 60_000;
/// Slack after a key's `until`: a writer picks up a rotated key within half a
/// minute of the lease holder.
pub const KEY_UNTIL_SLACK_MS: i64 = 60_000;

/// A public key that verifies digests, with the window in which it signed.
#[derive(Clone, Debug)]
pub struct PublicKey {
    raw: Vec<u8>,
    pub fingerprint: String,
    /// Published at (Unix ms): digests ending earlier do not verify with it.
    pub since_ms: Option<i64>,
    /// Replaced at (Unix ms): digests ending later do not verify with it.
    pub until_ms: Option<i64>,
}

impl PublicKey {
    /// Reads a public key: base64 of the 32 raw bytes (the Tracker status), or
    /// PEM / base64 DER of its SubjectPublicKeyInfo (`openssl pkey -pubout`).
    pub fn parse(text: &str) -> Result<PublicKey, DigestError> {
        let text = text.trim();
        let der = pem_body(text, "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----")
            .or_else(|| B64.decode(text).ok())
            .ok_or_else(|| DigestError::Key("public key is neither PEM nor base64".into()))?;
        let raw = match der.len() {
            32 => der,
            44 if der[..12] == SPKI_PREFIX => der[12..].to_vec(),
            n => return Err(DigestError::Key(format!("not an Ed25519 public key ({n} bytes)"))),
        };
        Ok(PublicKey {
            fingerprint: fingerprint(&raw),
            raw,
            since_ms: None,
            until_ms: None,
        })
    }

    /// The same key, trusted only for digests ending within `[since, until]`
    /// (give or take [`KEY_SINCE_SLACK_MS`] and [`KEY_UNTIL_SLACK_MS`]).
    pub fn with_window(mut self, since_ms: Option<i64>, until_ms: Option<i64>) -> Self {
        self.since_ms = since_ms;
        self.until_ms = until_ms;
        self
    }

    /// Whether a digest whose period ends at `period_end_ms` may be signed by
    /// this key; `Err` says why not.
    pub fn covers(&self, period_end_ms: i64) -> Result<(), String> {
        let early = self
            .since_ms
            .is_some_and(|s| period_end_ms < s - KEY_SINCE_SLACK_MS);
        let late = self
            .until_ms
            .is_some_and(|u| period_end_ms > u + KEY_UNTIL_SLACK_MS);
        if early || late {
            return Err(format!(
                "signed by key {} outside its validity window ({} .. {})",
                self.fingerprint,
                self.since_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                self.until_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
            ));
        }
        Ok(())
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// Splits a digest file into its content, signature and hash. Does not check
/// the signature ([`check_signature`] does).
pub fn decode(file: &[u8]) -> Result<SignedDigest, DigestError> {
    #[derive(Deserialize)]
    struct WithSig {
        signature: String,
    }
    let sig: WithSig = serde_json::from_slice(file).map_err(|e| DigestError::Format(e.to_string()))?;
    let suffix = format!(",\"signature\":\"{}\"}}\n", sig.signature);
    let Some(head) = file.strip_suffix(suffix.as_bytes()) else {
        return Err(DigestError::Format("the signature is not the last member".into()));
    };
    let mut unsigned = head.to_vec();
    unsigned.push(b'}');
    let digest: Digest = serde_json::from_slice(&unsigned).map_err(|e| DigestError::Format(e.to_string()))?;
    Ok(SignedDigest {
        sha256: sha256_hex(&unsigned),
        digest,
        signature: sig.signature,
    })
}

/// Whether `d`, stored under `key`, carries a valid signature by `public`.
pub fn check_signature(d: &SignedDigest, key: &str, public: &PublicKey) -> bool {
    let Ok(sig) = B64.decode(&d.signature) else {
        return false;
    };
    let prev = d
        .digest
        .previous
        .as_ref()
        .map(|p| p.signature.as_str())
        .unwrap_or("");
    let message = signing_string(&d.digest.period_end, key, &d.sha256, prev);
    public.verifies(message.as_bytes(), &sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(signer: &Signer, previous: Option<Previous>) -> Digest {
        Digest {
            version: VERSION,
            cluster: "c".into(),
            tracker: "t".into(),
            writer: "w-0".into(),
            period_start: rfc3339(0),
            period_end: rfc3339(3_600_000),
            key_fingerprint: signer.fingerprint().into(),
            previous,
            files: vec![DigestFile {
                key: "KubeTrail/c/1970/01/01/t/f.jsonl.gz".into(),
                size: 10,
                sha256: sha256_hex(b"0123456789"),
                events: 2,
                earliest: rfc3339(1000),
                latest: rfc3339(2000),
            }],
        }
    }

    #[test]
    fn signs_and_verifies_and_detects_every_change() {
        let signer = Signer::from_bytes(Signer::generate_pem().unwrap().as_bytes()).unwrap();
        let public = PublicKey::parse(&signer.public_key_b64()).unwrap();
        assert_eq!(public.fingerprint, signer.fingerprint());
        assert_eq!(
            PublicKey::parse(&signer.public_key_pem()).unwrap().fingerprint,
            signer.fingerprint()
        );
        let key = digest_key("p", "c", "t", "w-0", 0);
        assert_eq!(
            key,
            "p/KubeTrail-Digest/c/1970/01/01/t/c_t_19700101T000000Z_w-0_digest.json"
        );
        let (file, prev) = signer.sign(&digest(&signer, None), &key).unwrap();
        let read = decode(&file).unwrap();
        assert_eq!(read.digest, digest(&signer, None));
        assert_eq!(read.sha256, prev.sha256);
        assert!(check_signature(&read, &key, &public));
        // Under another key name, it does not verify (a digest cannot be moved).
        assert!(!check_signature(&read, &format!("{key}x"), &public));
        // One byte of the content changed.
        let edited = String::from_utf8(file.clone())
            .unwrap()
            .replace("\"events\":2", "\"events\":3");
        let read = decode(edited.as_bytes()).unwrap();
        assert!(!check_signature(&read, &key, &public));
        // Re-signed with another key: the right key rejects it.
        let other = Signer::from_bytes(&[7u8; 32]).unwrap();
        let (forged, _) = other.sign(&digest(&signer, None), &key).unwrap();
        assert!(!check_signature(&decode(&forged).unwrap(), &key, &public));
        // The chain: the next one's signature covers the previous signature.
        let (file2, _) = signer.sign(&digest(&signer, Some(prev.clone())), &key).unwrap();
        let mut read2 = decode(&file2).unwrap();
        assert!(check_signature(&read2, &key, &public));
        read2.digest.previous.as_mut().unwrap().signature = "AAAA".into();
        assert!(!check_signature(&read2, &key, &public));
    }

    #[test]
    fn keys_in_every_accepted_form() {
        assert!(Signer::from_bytes(b"not a key").is_err());
        let seed = Signer::from_bytes(&[1u8; 32]).unwrap();
        assert!(seed.fingerprint().starts_with("sha256:") && seed.fingerprint().len() == 39);
        // openssl genpkey -algorithm ed25519 (PKCS#8 v1) for the seed [1; 32].
        let der = [
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
                0x20,
            ][..],
            &[1u8; 32][..],
        ]
        .concat();
        let pem = format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", B64.encode(&der));
        assert_eq!(
            Signer::from_bytes(pem.as_bytes()).unwrap().fingerprint(),
            seed.fingerprint()
        );
        assert!(PublicKey::parse("AAAA").is_err());
        assert!(decode(b"{\"version\":1}").is_err());
    }
}
