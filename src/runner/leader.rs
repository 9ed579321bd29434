//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica receives audit batches and delivers its own files; only the
//! holder of the Lease runs the reconcilers (and so writes their status). A
//! holder renews every `lease / 3`, each call bounded by that time; updates carry
//! the resourceVersion, so two replicas can never both win the same takeover.
//!
//! Time is judged on each replica's own monotonic clock, never by comparing
//! another pod's `renewTime` with ours: another replica takes over only once it
//! has seen the Lease unchanged for its whole duration ([`Observer`]), and a
//! holder stops acting as leader a margin *before* its last successful renewal
//! (counted from when that call was sent) could have expired, even while a call
//! hangs ([`Holding`]).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease: Duration,
}

/// What this replica has seen of a Lease held by someone else, on its own clock.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// Records the Lease as read at `now` (`record`: holder, renewTime and
    /// resourceVersion together); returns whether it has stayed unchanged for
    /// `duration` of our own time, so its holder has lapsed.
    pub fn expired(&mut self, record: String, duration: Duration, now: Instant) -> bool {
        match &self.seen {
            Some((r, since)) if *r == record => now.saturating_duration_since(*since) >= duration,
            _ => {
                self.seen = Some((record, now));
                false
            }
        }
    }
}

/// Whether this replica may act as leader: since the start of its last
/// successful renewal, less than the lease minus a margin has passed.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    lease: Duration,
    margin: Duration,
    renewed: Option<Instant>,
}

impl Holding {
    pub fn new(lease: Duration) -> Holding {
        Holding {
            lease,
            margin: (lease / 5).max(Duration::from_millis(500)).min(lease / 2),
            renewed: None,
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.renewed = Some(sent);
    }

    /// Someone else holds the lease.
    pub fn lost(&mut self) {
        self.renewed = None;
    }

    /// When this replica must stop acting as leader, if it holds the lease.
    pub fn deadline(&self) -> Option<Instant> {
        self.renewed.map(|t| t + self.lease - self.margin)
    }

    pub fn leading(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }
}

/// Awaits `fut`; if `deadline` passes first, publishes that this replica no
/// longer leads, then goes on waiting.
async fn stepping_down<F: std::future::Future>(
    fut: F,
    deadline: Option<Instant>,
    leading: &watch::Sender<bool>,
) -> F::Output {
    tokio::pin!(fut);
    if let Some(d) = deadline {
        tokio::select! {
            out = &mut fut => return out,
            _ = tokio::time::sleep_until(d.into()) => {
                if *leading.borrow() {
                    tracing::warn!("lease not renewed in time; no longer acting as leader");
                }
                let _ = leading.send(false);
            }
        }
    }
    fut.await
}

/// Runs the election forever, publishing whether this replica leads.
pub async fn run(client: kube::Client, e: Election, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let renew = (e.lease / 3).max(Duration::from_millis(500));
    let mut observer = Observer::default();
    let mut holding = Holding::new(e.lease);
    loop {
        let sent = Instant::now();
        let call = tokio::time::timeout(renew, try_acquire(&api, &e, &mut observer));
        match stepping_down(call, holding.deadline(), &leading).await {
            Ok(Ok(true)) => holding.renewed(sent),
            Ok(Ok(false)) => holding.lost(),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, lease = %e.name, "leader election round failed")
            }
            Err(_) => tracing::warn!(lease = %e.name, timeout = ?renew, "leader election call timed out"),
        }
        let is_leader = holding.leading(Instant::now());
        if *leading.borrow() != is_leader {
            tracing::info!(leader = is_leader, identity = %e.identity, "leadership changed");
        }
        let _ = leading.send(is_leader);
        stepping_down(tokio::time::sleep(renew), holding.deadline(), &leading).await;
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
async fn try_acquire(api: &Api<Lease>, e: &Election, observer: &mut Observer) -> Result<bool, kube::Error> {
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
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(1));
    // Unchanged (holder, renewTime, resourceVersion) for its duration, by our clock.
    let record = format!(
        "{holder}|{:?}|{:?}",
        spec.renew_time.as_ref().map(|t| t.0),
        lease.metadata.resource_version
    );
    let expired = observer.expired(record, duration, Instant::now());
    let spec = lease.spec.get_or_insert_with(Default::default);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_holder_lapses_only_after_its_duration_unchanged_on_our_clock() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(15);
        let mut o = Observer::default();
        // Its renewTime is far in the future or the past: irrelevant.
        let rec = |renew: &str, rv: &str| format!("other|{renew}|{rv}");
        assert!(!o.expired(rec("2099-01-01", "1"), lease, t0));
        assert!(!o.expired(rec("2099-01-01", "1"), lease, t0 + Duration::from_secs(14)));
        assert!(o.expired(rec("2099-01-01", "1"), lease, t0 + Duration::from_secs(15)));
        // A renewal (any change) starts the count again.
        assert!(!o.expired(rec("1970-01-01", "2"), lease, t0 + Duration::from_secs(16)));
        assert!(!o.expired(rec("1970-01-01", "2"), lease, t0 + Duration::from_secs(30)));
        assert!(o.expired(rec("1970-01-01", "2"), lease, t0 + Duration::from_secs(31)));
    }

    #[test]
    fn a_holder_steps_down_before_its_lease_can_lapse() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(15);
        let mut h = Holding::new(lease);
        assert!(!h.leading(t0));
        h.renewed(t0);
        assert!(h.leading(t0 + Duration::from_secs(5)));
        // Renewals failing or hanging: leadership ends a margin before the
        // earliest moment another replica could take over (t0 + lease).
        let d = h.deadline().unwrap();
        assert!(d < t0 + lease && d >= t0 + lease - lease / 2);
        assert!(!h.leading(d));
        h.renewed(t0 + Duration::from_secs(5));
        assert!(h.leading(t0 + Duration::from_secs(16)));
        h.lost();
        assert!(!h.leading(t0 + Duration::from_secs(16)));
    }

    #[tokio::test]
    async fn a_hanging_call_does_not_delay_the_step_down() {
        let (tx, rx) = watch::channel(true);
        let mut h = Holding::new(Duration::from_millis(1500));
        h.renewed(Instant::now());
        let deadline = h.deadline();
        let hang = stepping_down(tokio::time::sleep(Duration::from_secs(3600)), deadline, &tx);
        let stepped = async {
            let mut rx = rx.clone();
            rx.wait_for(|l| !*l).await.unwrap();
            Instant::now()
        };
        tokio::select! {
            _ = hang => panic!("the hanging call finished first"),
            at = stepped => assert!(at <= deadline.unwrap() + Duration::from_millis(200)),
        }
    }
}
