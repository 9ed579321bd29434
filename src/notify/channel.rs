//! Where a notification's messages go. A [`Channel`] is one way out: the HTTPS
//! webhook ([`super::send::Target`]) or Kubernetes Events ([`KubernetesEvents`]).
//! The notifier hands each message to its channels in order; the message counts
//! as delivered when every channel delivered it (or gave up after its last
//! attempt), and only then does the cursor move past its traces.

use super::message::Message;
use super::send::{self, Target};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::watch;

/// How handing a message to a channel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Given up after the last attempt; says why.
    Failed(String),
    /// The notifier stopped first; the message is sent again after a restart.
    Stopped,
}

/// What a channel needs besides the message.
pub struct Delivery<'a> {
    pub cluster: &'a str,
    /// The KeyEventNotification's name.
    pub notification: &'a str,
    /// Turns true when the notifier stops.
    pub stop: watch::Receiver<bool>,
    /// Told of each failed attempt that will be retried (status shows the last).
    pub on_retry: &'a (dyn Fn(&str) + Send + Sync),
}

/// One way a notification's messages leave the cluster.
pub trait Channel: Send + Sync {
    /// Its name in logs and metrics.
    fn name(&self) -> &'static str;
    /// Delivers `msg`, retrying as the channel does.
    fn send<'a>(&'a self, msg: &'a Message, d: Delivery<'a>) -> BoxFuture<'a, Outcome>;
}

impl Channel for Target {
    fn name(&self) -> &'static str {
        "webhook"
    }

    /// Retries 5xx, 429, timeouts and connection errors with backoff (honoring
    /// `Retry-After`) up to the webhook's `maxAttempts`; the body (and so its
    /// signature) is the same in every attempt.
    fn send<'a>(&'a self, msg: &'a Message, mut d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        async move {
            let now = jiff::Timestamp::now().to_string();
            let (body, ctype) = msg.body(self.format, d.cluster, d.notification, &now);
            let mut n = 0;
            loop {
                n += 1;
                let err = tokio::select! {
                    _ = d.stop.changed() => return Outcome::Stopped,
                    r = self.attempt(&body, ctype, &msg.id) => match r {
                        Ok(()) => {
                            tracing::debug!(message = %msg.id, traces = msg.traces.len(), attempts = n, "notification delivered");
                            return Outcome::Delivered;
                        }
                        Err(e) => e,
                    },
                };
                if !err.retry || n >= self.max_attempts {
                    return Outcome::Failed(format!("{} (attempt {n} of {})", err.message, self.max_attempts));
                }
                (d.on_retry)(&err.message);
                let delay = send::retry_delay(n, err.retry_after);
                tracing::info!(message = %msg.id, attempt = n, error = %err.message, delay_ms = delay.as_millis() as u64, "notification attempt failed; retrying");
                tokio::select! {
                    _ = d.stop.changed() => return Outcome::Stopped,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        .boxed()
    }
}

/// Most Events on operated objects per message (the notification's own Event
/// covers every trace).
const OBJECT_EVENTS: usize = 10;

/// Kubernetes Events: one on the KeyEventNotification for each message, and
/// one on each operated object (up to [`OBJECT_EVENTS`]) whose kind is known.
/// Recording is best effort (an Event is not a delivery guarantee): a failure
/// is logged and the message still counts as delivered here.
pub struct KubernetesEvents {
    pub recorder: Recorder,
    /// The KeyEventNotification.
    pub notification: ObjectReference,
}

impl Channel for KubernetesEvents {
    fn name(&self) -> &'static str {
        "kubernetes-event"
    }

    fn send<'a>(&'a self, msg: &'a Message, _: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        async move {
            let note: String = msg.summary().chars().take(1024).collect();
            let event = Event {
                type_: EventType::Warning,
                reason: "KeyEvent".into(),
                note: Some(note),
                action: "Notify".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &self.notification).await {
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
                    secondary: Some(self.notification.clone()),
                };
                if let Err(e) = self.recorder.publish(&event, &object).await {
                    tracing::debug!(error = %e, "recording a KeyEvent on the operated object failed");
                }
            }
            Outcome::Delivered
        }
        .boxed()
    }
}
