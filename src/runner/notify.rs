//! Key event notifications on every replica: keeps this replica's notifiers (each
//! matching its own spool) in line with the KeyEventNotifications. Their status
//! is the holder's (`controller::notification`).

use super::watch::Watched;
use crate::api::KeyEventNotification;
use crate::controller::Context;
use crate::controller::notification::setup;
use crate::notify::message::Message;
use crate::notify::{EventSink, NotifierSpec, Notifiers};
use futures::FutureExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Most Events on operated objects per message (the notification's own Event
/// covers every trace).
const OBJECT_EVENTS: usize = 10;

/// Records a message's Kubernetes Events: one on the notification, and one on
/// each operated object (up to [`OBJECT_EVENTS`]) whose kind is known.
fn event_sink(ctx: Arc<Context>, notification: ObjectReference) -> EventSink {
    Arc::new(move |msg: Message| {
        let ctx = ctx.clone();
        let notification = notification.clone();
        async move {
            let note: String = msg.summary().chars().take(1024).collect();
            let event = Event {
                type_: EventType::Warning,
                reason: "KeyEvent".into(),
                note: Some(note),
                action: "Notify".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &notification).await {
                tracing::warn!(error = %e, "recording the KeyEvent event failed");
            }
            for t in msg.traces.iter().filter(|t| t.kind.is_some()).take(OBJECT_EVENTS) {
                let object = ObjectReference {
                    api_version: Some(t.api_version.clone()),
                    kind: t.kind.clone(),
                    name: Some(t.resource_name.clone()),
                    namespace: (!t.namespace.is_empty()).then(|| t.namespace.clone()),
                    ..Default::default()
                };
                let event = Event {
                    type_: EventType::Warning,
                    reason: "KeyEvent".into(),
                    note: Some(format!("{} (kubetrail notification {})", t.line(), msg.id)),
                    action: "Notify".into(),
                    secondary: Some(notification.clone()),
                };
                if let Err(e) = ctx.recorder.publish(&event, &object).await {
                    tracing::debug!(error = %e, "recording a KeyEvent on the operated object failed");
                }
            }
        }
        .boxed()
    })
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
                    target: target.map(Arc::new),
                    events: n
                        .spec
                        .kubernetes_event
                        .then(|| event_sink(ctx.clone(), n.object_ref(&()))),
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
