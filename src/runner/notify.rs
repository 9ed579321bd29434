//! Key event notifications on every replica: keeps this replica's notifiers (each
//! matching its own spool) in line with the KeyEventNotifications. Their status
//! is the holder's (`controller::notification`).

use super::watch::Watched;
use crate::api::KeyEventNotification;
use crate::controller::Context;
use crate::controller::notification::setup;
use crate::notify::channel::{Channel, KubernetesEvents};
use crate::notify::send::Target;
use crate::notify::{NotifierSpec, Notifiers};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// The channels of a notification, Kubernetes Events first (they are not
/// retried, so a failing webhook does not record them again).
fn channels(ctx: &Context, n: &KeyEventNotification, webhook: Option<Target>) -> Vec<Arc<dyn Channel>> {
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    if n.spec.kubernetes_event {
        channels.push(Arc::new(KubernetesEvents {
            recorder: ctx.recorder.clone(),
            notification: n.object_ref(&()),
        }));
    }
    if let Some(t) = webhook {
        channels.push(Arc::new(t));
    }
    channels
}

fn fingerprint(n: &KeyEventNotification, key: &Option<Vec<u8>>) -> String {
    let key_hash = key.as_ref().map(|k| blake3::hash(k).to_hex().to_string());
    serde_json::to_string(&(&n.spec, key_hash, n.uid())).unwrap_or_default()
}

/// Keeps this replica's notifiers in line with the KeyEventNotifications;
/// runs until the process stops.
pub async fn run(ctx: Arc<Context>, notifiers: Arc<Notifiers>) {
    // Again now and then: a created or rotated HMAC Secret is picked up.
    let mut watched =
        Watched::<KeyEventNotification>::new(&ctx, "keyeventnotification", Duration::from_secs(30));
    while let Some(listed) = watched.next().await {
        let mut desired = Vec::new();
        let mut paused = Vec::new();
        for n in listed.iter() {
            let name = n.name_any();
            match setup(&ctx, &n.spec).await {
                Ok((selection, target, key)) => desired.push(NotifierSpec {
                    name: name.clone(),
                    selection: Arc::new(selection),
                    channels: channels(&ctx, n, target),
                    window: crate::api::Duration::or(&n.spec.grouping.window, Duration::from_secs(2))
                        .max(Duration::from_millis(100)),
                    max_traces: n.spec.grouping.max_traces.max(1) as usize,
                    min_interval: Duration::from_secs(1) / n.spec.grouping.max_messages_per_second.max(1),
                    fingerprint: fingerprint(n, &key),
                }),
                Err(e) => {
                    tracing::warn!(notification = %name, reason = %e.reason(), error = %e, "notification not running");
                    paused.push(name);
                }
            }
        }
        notifiers.apply(desired, &paused);
    }
}
