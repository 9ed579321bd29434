//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica receives audit batches and delivers its own files; only the
//! holder of the Lease runs the reconcilers (and so writes their status). A
//! holder renews every `lease / 3`; another replica takes over once the lease has
//! not been renewed for its duration. Updates carry the resourceVersion, so two
//! replicas can never both win the same takeover.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease: Duration,
}

/// Runs the election forever, publishing whether this replica leads.
pub async fn run(client: kube::Client, e: Election, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let renew = (e.lease / 3).max(Duration::from_millis(500));
    loop {
        let is_leader = match try_acquire(&api, &e).await {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(error = %err, lease = %e.name, "leader election round failed");
                // Without a successful renewal the lease may lapse: step down
                // rather than risk two leaders.
                false
            }
        };
        if *leading.borrow() != is_leader {
            tracing::info!(leader = is_leader, identity = %e.identity, "leadership changed");
        }
        let _ = leading.send(is_leader);
        tokio::time::sleep(renew).await;
    }
}

/// Gives the lease up if this replica holds it, so another replica takes over at
/// once instead of after the lease duration (a rolling update, a drained node).
pub async fn release(client: kube::Client, e: &Election) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(1);
    // With the resourceVersion: a lease someone else took meanwhile is left alone.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One round: returns whether this replica holds the lease afterwards.
async fn try_acquire(api: &Api<Lease>, e: &Election) -> Result<bool, kube::Error> {
    let secs = e.lease.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": e.name},
            "spec": {
                "holderIdentity": e.identity,
                "leaseDurationSeconds": secs,
                "acquireTime": now(),
                "renewTime": now(),
                "leaseTransitions": 0,
            }
        }))
        .map_err(kube::Error::SerdeError)?;
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(secs)) * 1000;
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    let expired = jiff::Timestamp::now().as_millisecond() > renewed + duration;
    if holder != e.identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != e.identity {
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(e.identity.clone());
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(secs);
    // The resourceVersion in `lease` makes this a compare-and-swap.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
