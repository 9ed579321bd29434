//! The Tracker: where traces go and which ones (CTS's tracker).

use super::common::{SecretRef, conditions_schema};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a tracker delivers its trace files and which operations it keeps.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kubetrail.io",
    version = "v1alpha1",
    kind = "Tracker",
    shortname = "trk",
    category = "kubetrail",
    status = "TrackerStatus",
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.destination.bucket"),
    printcolumn(name = "Prefix", type_ = "string", json_path = ".spec.destination.prefix"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last Delivery",
        type_ = "date",
        json_path = ".status.lastDelivery.time"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TrackerSpec {
    /// A disabled tracker keeps its configuration and delivers nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The bucket and prefix trace files are written to.
    pub destination: Destination,
    /// Which operations this tracker keeps. Empty keeps every completed request.
    #[serde(default)]
    pub filter: TrackerFilter,
    /// How traces are batched into files.
    #[serde(default)]
    pub delivery: Delivery,
    /// Digest files that make tampering with delivered files detectable.
    #[serde(default)]
    pub integrity: Integrity,
    /// How `destination.retentionDays` is enforced.
    #[serde(default)]
    pub retention: Retention,
    /// Fields removed from traces before they leave the cluster, beyond the
    /// Secret values that are always removed.
    #[serde(default)]
    pub redaction: Redaction,
}

fn default_true() -> bool {
    true
}

/// An S3 (or S3-compatible) bucket and the prefix under which files are written.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.kmsKeyId) || (has(self.encryption) && self.encryption == 'aws:kms')").message("kmsKeyId is only valid with encryption aws:kms").field_path(".kmsKeyId"))]
#[x_kube(validation = Rule::new("!has(self.encryption) || self.encryption != 'aws:kms' || has(self.kmsKeyId)").message("encryption aws:kms needs kmsKeyId").field_path(".kmsKeyId"))]
pub struct Destination {
    /// Bucket name, following S3 naming rules: 3–63 characters of lowercase
    /// letters, digits, dots and hyphens, starting and ending with a letter or digit.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    #[x_kube(validation = Rule::new("!self.contains('..')").message("bucket name must not contain two adjacent dots"))]
    #[x_kube(validation = Rule::new("!self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')").message("bucket name must not be formatted as an IP address"))]
    pub bucket: String,
    /// Prefix (folder) for this tracker's files; empty writes at the bucket root.
    /// No leading `/`, no `..`, S3-safe characters only.
    #[serde(default)]
    #[schemars(length(max = 512), pattern(r"^[A-Za-z0-9!_.*'()/-]*$"))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("prefix must not start with '/'"))]
    #[x_kube(validation = Rule::new("!self.contains('..')").message("prefix must not contain '..'"))]
    #[x_kube(validation = Rule::new("!self.contains('//')").message("prefix must not contain an empty path segment ('//')"))]
    pub prefix: String,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, OBS…); empty uses AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Address the bucket as `endpoint/bucket` instead of `bucket.endpoint`; most
    /// S3-compatible stores need this.
    #[serde(default)]
    pub force_path_style: bool,
    /// Secret with keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`. Without it the default AWS chain is used (IRSA, pod
    /// identity, environment, instance profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Server-side encryption of delivered files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// KMS key id or ARN, with `encryption: aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
    /// Days a trace file and digest are kept after the end of their UTC day; a
    /// bucket lifecycle rule or the operator removes older ones (see
    /// `retention.mode`). Unset keeps files forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub retention_days: Option<u32>,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl Destination {
    /// A destination without credentials reference, encryption or retention
    /// (for `serve`, `query` and `bench`, which take credentials elsewhere).
    pub fn plain(
        bucket: &str,
        prefix: &str,
        region: &str,
        endpoint: Option<String>,
        force_path_style: bool,
    ) -> Self {
        Destination {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: region.into(),
            endpoint,
            force_path_style,
            credentials_secret_ref: None,
            encryption: None,
            kms_key_id: None,
            retention_days: None,
        }
    }
}

/// Server-side encryption modes.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum Encryption {
    /// S3-managed keys (SSE-S3).
    #[serde(rename = "AES256")]
    Aes256,
    /// KMS-managed keys (SSE-KMS); needs `kmsKeyId`.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// Which audit events a tracker keeps.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackerFilter {
    /// Keep only events matching at least one of these rules; empty keeps all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<MatchRule>,
    /// Drop events matching any of these rules, even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<MatchRule>,
    /// Read operations (get, list, watch): `include` keeps them, `exclude` keeps
    /// only management (write) operations, `only` keeps only reads.
    #[serde(default)]
    pub read_only: ReadOnly,
    /// Audit stages kept; default `ResponseComplete`, `Panic` and `Admission`
    /// (the one stage of admission capture's traces).
    #[serde(default = "default_stages")]
    #[schemars(length(min = 1))]
    pub stages: Vec<Stage>,
}

impl Default for TrackerFilter {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            read_only: ReadOnly::default(),
            stages: default_stages(),
        }
    }
}

fn default_stages() -> Vec<Stage> {
    vec![Stage::ResponseComplete, Stage::Panic, Stage::Admission]
}

/// One match rule: every field that is set must match (lists match any entry).
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.verbs) || has(self.apiGroups) || has(self.resources) || has(self.namespaces) || has(self.users) || has(self.userGroups)").message("a match rule needs at least one of verbs, apiGroups, resources, namespaces, users, userGroups"))]
pub struct MatchRule {
    /// Verbs such as `create`, `delete`, `get`; `*` matches all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// API groups; `""` or `core` is the core group; `*` matches all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, optionally with subresource (`pods/exec`); `*` matches all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Namespaces; `""` matches cluster-scoped requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// User names; a trailing `*` matches a prefix (`system:serviceaccount:*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups of the requesting user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_groups: Vec<String>,
}

/// What to do with read-only operations.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ReadOnly {
    /// Keep reads and writes.
    #[default]
    Include,
    /// Keep writes only.
    Exclude,
    /// Keep reads only.
    Only,
}

/// Audit event stages (audit.k8s.io).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
    /// A request as kubetrail's admission webhook saw it (no outcome yet).
    Admission,
}

/// How traces are cut into files.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Compression of trace files.
    #[serde(default)]
    pub compression: Compression,
    /// A file is delivered at the latest this long after its first trace
    /// (a duration such as `30s` or `5m`; minimum `1s`).
    #[serde(default = "default_max_batch_age")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("maxBatchAge must be a duration between 1s and 1h, such as 30s or 5m"))]
    pub max_batch_age: String,
    /// Most traces in one file.
    #[serde(default = "default_max_batch_events")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_batch_events: u32,
    /// Most uncompressed bytes in one file.
    #[serde(default = "default_max_batch_bytes")]
    #[schemars(range(min = 1024, max = 1_073_741_824))]
    pub max_batch_bytes: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            max_batch_age: default_max_batch_age(),
            max_batch_events: default_max_batch_events(),
            max_batch_bytes: default_max_batch_bytes(),
        }
    }
}

fn default_max_batch_age() -> String {
    "60s".into()
}
fn default_max_batch_events() -> u32 {
    50_000
}
fn default_max_batch_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Compression of trace files.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Compression {
    /// `.jsonl.gz`, readable by `zcat`, Athena, Trino and DuckDB.
    #[default]
    Gzip,
    /// `.jsonl.zst`.
    Zstd,
    /// `.jsonl`.
    None,
}

/// Integrity digests (log file validation) and their continuous check.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Integrity {
    /// Each writer signs a digest of the files it delivered, once per
    /// `digestPeriod`, chained to its previous digest.
    #[serde(default = "default_true")]
    pub digests: bool,
    /// Secret in the operator's namespace holding the Ed25519 signing key (key
    /// `signingKey`: PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes
    /// it). Unset: the operator generates `kubetrail-signing-key` there once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<SecretRef>,
    /// Length of a digest period, aligned to the clock (`1h`: hourly, on the
    /// hour); at least `1m`.
    #[serde(default = "default_digest_period")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("digestPeriod must be a duration between 1m and 24h, such as 1h"))]
    pub digest_period: String,
    /// How often the lease holder re-verifies the last 24 hours of the trail and
    /// sets the `IntegrityVerified` condition; at least `10s`.
    #[serde(default = "default_verify_interval")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$') && duration(self) >= duration('10s') && duration(self) <= duration('168h')").message("verifyInterval must be a duration between 10s and 168h, such as 1h"))]
    pub verify_interval: String,
}

fn default_digest_period() -> String {
    "1h".into()
}
fn default_verify_interval() -> String {
    "1h".into()
}

impl Default for Integrity {
    fn default() -> Self {
        Self {
            digests: true,
            signing_key_secret_ref: None,
            digest_period: default_digest_period(),
            verify_interval: default_verify_interval(),
        }
    }
}

/// How `retentionDays` is enforced.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    #[serde(default)]
    pub mode: RetentionMode,
}

/// Who removes expired files.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RetentionMode {
    /// A bucket lifecycle rule where the bucket supports one and the tracker's
    /// prefix is its own; otherwise the operator deletes expired days.
    #[default]
    Auto,
    /// The operator's lease holder deletes whole expired days of the tracker's
    /// trace files and digests, and nothing else.
    Operator,
}

/// Extra redaction, beyond the built-in rules that always apply (Secret values
/// and their last-applied copy, service-account tokens, token reviews, exec and
/// attach commands; see `docs/redaction.md`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Redaction {
    /// Fields whose values are replaced with `[redacted]` in request and response
    /// bodies of a resource, in every shape (object, list, table, watch event,
    /// merge and JSON patches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub fields: Vec<FieldRedaction>,
}

impl Redaction {
    /// The fields as rules of the sensitive-data policy.
    pub fn rules(&self) -> Vec<crate::redact::Rule> {
        self.fields
            .iter()
            .map(|f| {
                crate::redact::Rule::new(
                    &f.api_group,
                    &f.resource,
                    f.paths
                        .iter()
                        .map(|p| crate::redact::FieldPath::dotted(p, crate::redact::Mask::Whole))
                        .collect(),
                )
            })
            .collect()
    }
}

/// Fields of one resource that never leave the cluster.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldRedaction {
    /// API group of the resource; `""` or `core` for the core group.
    #[serde(default)]
    pub api_group: String,
    /// Resource, optionally with its subresource (`configmaps`, `pods/status`).
    #[schemars(length(min = 1, max = 253))]
    pub resource: String,
    /// Dotted paths from the object's root, e.g. `data` or
    /// `spec.template.spec.containers.env` (an array on the way applies the rest
    /// of the path to each element).
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 512), pattern(r"^[^.]+([.][^.]+)*$"))
    )]
    pub paths: Vec<String>,
}

/// Observed state of a tracker.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackerStatus {
    /// `Enabled`, `Disabled` or `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TrackerPhase>,
    /// `Ready` and `DestinationReachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The most recent file delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
    /// Traces delivered since the tracker was created.
    #[serde(default)]
    pub events_delivered: u64,
    /// Files delivered since the tracker was created.
    #[serde(default)]
    pub files_delivered: u64,
    /// Spool entries dropped unexamined over the backlog budget (all writers).
    #[serde(default)]
    pub events_dropped: u64,
    /// Every replica delivers its own files; this is what each one reported, as
    /// folded into the totals above by the lease holder (the only status writer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["writer"]))]
    pub writers: Vec<WriterStatus>,
    /// The last error, cleared when the tracker is healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Digest signing keys and the last verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegrityStatus>,
    /// The latest digest of every writer's chain, published where whoever can
    /// write the bucket cannot reach it: a writer that lost its spool goes on
    /// from here (never from the bucket's newest object), and `verify --tracker`
    /// requires each chain to reach its head. Kept after a writer is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["writer"]))]
    pub chain_heads: Vec<ChainHead>,
    /// How retention is enforced and how far back files are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionStatus>,
}

/// Integrity as the lease holder sees it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityStatus {
    /// Every key that has signed this tracker's digests, newest last: `verify`
    /// takes its trust anchor from here (never from the bucket), and a rotated
    /// key stays listed so older digests still verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PublicKeyStatus>,
    /// When the trail was last verified, and what was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
}

/// A digest verification key.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyStatus {
    /// `sha256:` and 32 hex digits; digests name the key they are signed with.
    pub fingerprint: String,
    /// The Ed25519 public key, base64 of its 32 bytes.
    pub public_key: String,
    /// When the key was first published: digests ending before it (less a
    /// few minutes of slack) do not verify with it.
    pub since: Time,
    /// When another key replaced it: digests ending after it (plus the same
    /// slack) do not verify with it. Absent while the key signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}

/// The latest digest of one writer's chain (a chain head).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// The writer (replica pod name) whose chain this is.
    pub writer: String,
    /// Object key of the digest.
    pub key: String,
    /// Hex SHA-256 of the digest (without its signature member).
    pub sha256: String,
    /// Its signature (base64).
    pub signature: String,
    /// Fingerprint of the key that signed it (empty when a restarted writer
    /// reports a head it read back from its spool).
    #[serde(default)]
    pub key_fingerprint: String,
    /// End of the period it covers (RFC 3339).
    pub period_end: String,
    /// The writer's digest period in seconds.
    #[serde(default)]
    pub period_seconds: u64,
    /// The writer still delivers this tracker: its next digest is due within a
    /// period, and `verify` calls a head older than two periods truncated.
    #[serde(default)]
    pub running: bool,
}

/// Retention as enforced.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionStatus {
    /// `lifecycle` (a bucket rule `kubetrail-<tracker>`) or `operator`.
    pub mode: String,
    /// The oldest UTC day (YYYY-MM-DD) whose files are kept.
    pub oldest_day_kept: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Tracker phase.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TrackerPhase {
    Enabled,
    Disabled,
    Error,
}

/// Delivery by one replica (writer), per its latest report.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriterStatus {
    /// Writer id: the replica's pod name, also in its file names.
    pub writer: String,
    /// Identifies the writer's process; counters restart with a new one.
    pub incarnation: String,
    /// Traces this incarnation delivered (already counted in the totals).
    #[serde(default)]
    pub events: u64,
    /// Files this incarnation delivered (already counted in the totals).
    #[serde(default)]
    pub files: u64,
    /// The writer's most recent file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
    /// Why the writer's latest attempt failed, if it did (`Reason: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The reason of `lastError` (`CredentialsNotFound`, `AccessDenied`, …): the
    /// reason `Ready` takes when writes keep failing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::Reason::lenient"
    )]
    // A string in the schema, not an enum: a reason a newer version adds must
    // not make the apiserver refuse the status during a rolling update.
    #[schemars(with = "Option<String>")]
    pub last_error_reason: Option<super::Reason>,
    /// Since when the writer's writes have failed without a success (its reason
    /// is `lastError`); absent while delivering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// Spool entries this incarnation dropped unexamined because the tracker was
    /// over its backlog budget (already counted in the totals).
    #[serde(default)]
    pub events_dropped: u64,
    /// The writer is over the tracker's backlog budget and drops its oldest traces.
    #[serde(default)]
    pub backlog_overflow: bool,
}

/// The most recent delivery of a tracker.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivery {
    pub time: Time,
    pub object_key: String,
    pub events: u64,
}
