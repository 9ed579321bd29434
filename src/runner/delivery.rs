//! Delivery on every replica: keeps one pipeline per enabled Tracker in line with
//! the Tracker objects, and publishes what it delivered (see [`super::report`]).

use crate::api::{self, Tracker, TrackerSpec};
use crate::controller::Context;
use crate::deliver::pipeline::{PipelineSpec, Pipelines, StoreFactory};
use crate::integrity::{Anchor, IntegritySpec, Signer};
use crate::route::Filter;
use crate::store::{self, Credentials};
use crate::telemetry::Readiness;
use futures::FutureExt;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// The pipeline of a tracker spec; `sink` builds its destination, `signer`
/// signs its digests (none: no digests, whatever the spec says).
/// `anchor` is what the writer trusts if it must pick up its chain without its
/// spool; it is not part of the fingerprint (a new head does not restart it).
pub fn pipeline_spec(
    name: &str,
    spec: &TrackerSpec,
    sink: StoreFactory,
    signer: Option<Arc<Signer>>,
    anchor: Anchor,
) -> PipelineSpec {
    let integrity = signer
        .filter(|_| spec.integrity.digests)
        .map(|signer| IntegritySpec {
            period: api::Duration::or(&spec.integrity.digest_period, Duration::from_secs(3600))
                .max(crate::integrity::MIN_PERIOD),
            signer,
            anchor,
        });
    let fingerprint = serde_json::to_string(&(
        &spec.destination,
        &spec.filter,
        &spec.delivery,
        &spec.redaction,
        integrity
            .as_ref()
            .map(|i| (i.period.as_millis() as u64, i.signer.fingerprint().to_string())),
    ))
    .unwrap_or_default();
    PipelineSpec {
        name: name.to_string(),
        prefix: spec.destination.prefix.trim_end_matches('/').to_string(),
        filter: Filter::new(&spec.filter),
        compression: spec.delivery.compression,
        max_age: api::Duration::or(&spec.delivery.max_batch_age, Duration::from_secs(60)),
        max_events: u64::from(spec.delivery.max_batch_events),
        max_bytes: spec.delivery.max_batch_bytes,
        redaction: spec.redaction.clone(),
        integrity,
        sink,
        fingerprint,
    }
}

/// This writer's trust anchor from the Tracker's status: its chain head and
/// the published keys.
fn anchor_of(t: &Tracker, writer: &str) -> Anchor {
    let status = t.status.as_ref();
    Anchor {
        head: status.and_then(|s| s.chain_heads.iter().find(|h| h.writer == writer).cloned()),
        keys: status
            .and_then(|s| s.integrity.as_ref())
            .map(|i| crate::controller::trail::trusted_keys(&i.public_keys))
            .unwrap_or_default(),
    }
}

/// A store factory that reads the tracker's credentials Secret each time.
fn s3_store(ctx: &Arc<Context>, tracker: &Tracker) -> StoreFactory {
    let ctx = ctx.clone();
    let dest = tracker.spec.destination.clone();
    Arc::new(move || {
        let ctx = ctx.clone();
        let dest = dest.clone();
        async move {
            let creds = Credentials::Secret {
                client: &ctx.client,
                namespace: &ctx.settings.namespace,
            };
            store::open(&dest, creds).await.map_err(|e| e.problem())
        }
        .boxed()
    })
}

/// Runs until the process stops. `ready` flips once the first list of Trackers
/// has been applied, so no batch is accepted before its trackers are listening.
pub async fn run(
    ctx: Arc<Context>,
    pipelines: Arc<Pipelines>,
    publisher: Arc<tokio::sync::Mutex<super::report::Publisher>>,
    status_interval: Duration,
    ready: Readiness,
) {
    // Again now and then without a Tracker change: a rotated signing key is
    // picked up, a missing one retried.
    let mut trackers = super::watch::Watched::<Tracker>::new(&ctx, "tracker", Duration::from_secs(30));
    let status = tokio::spawn(super::report::publish_loop(
        ctx.clone(),
        pipelines.clone(),
        publisher,
        status_interval,
    ));
    while let Some(listed) = trackers.next().await {
        let mut desired: Vec<PipelineSpec> = Vec::new();
        for t in listed.iter().filter(|t| t.spec.enabled) {
            let signer = if t.spec.integrity.digests {
                match ctx
                    .signing_keys
                    .get(
                        &ctx.client,
                        &ctx.settings.namespace,
                        t.spec.integrity.signing_key_secret_ref.as_ref(),
                    )
                    .await
                {
                    Ok(k) => Some(k),
                    Err(e) => {
                        // Files are still delivered; the missing digests show
                        // in `verify` and in the Tracker's status.
                        tracing::warn!(tracker = %t.name_any(), reason = %e.reason(), error = %e, "no signing key: delivering without digests");
                        None
                    }
                }
            } else {
                None
            };
            desired.push(pipeline_spec(
                &t.name_any(),
                &t.spec,
                s3_store(&ctx, t),
                signer,
                anchor_of(t, &ctx.settings.instance),
            ));
        }
        pipelines.apply(desired);
        ready.set_ready(true);
    }
    status.abort();
}
