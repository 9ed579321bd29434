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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mock;
    use crate::notify::message::Matched;
    use http::Method;

    fn trace(i: usize, kind: Option<&str>) -> Matched {
        Matched {
            trace_id: format!("t-{i}"),
            trace_name: "delete secrets".into(),
            trace_rating: "normal".into(),
            verb: "delete".into(),
            api_group: String::new(),
            resource_type: "secrets".into(),
            resource_name: format!("db-{i}"),
            namespace: "prod".into(),
            user: "alice".into(),
            impersonated_user: None,
            code: Some(200),
            time: "2026-12-01T00:00:00Z".into(),
            source_ips: vec![],
            received_ms: 0,
            kind: kind.map(String::from),
            api_version: "v1".into(),
        }
    }

    fn channel(ctx: &crate::controller::Context) -> KubernetesEvents {
        KubernetesEvents {
            recorder: ctx.recorder.clone(),
            notification: ObjectReference {
                api_version: Some("kubetrail.io/v1alpha1".into()),
                kind: Some("KeyEventNotification".into()),
                name: Some("deletes".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
        }
    }

    async fn send(ch: &KubernetesEvents, msg: &Message) -> Outcome {
        let (_stop, rx) = watch::channel(false);
        let d = Delivery {
            cluster: "c",
            notification: "deletes",
            stop: rx,
            on_retry: &|_| {},
        };
        ch.send(msg, d).await
    }

    /// A message is one Warning Event `KeyEvent` on the notification, and one
    /// on each operated object whose kind is known, at most ten; recording is
    /// best effort: an API that refuses them does not fail the delivery.
    #[tokio::test]
    async fn kubernetes_events_name_the_notification_and_the_objects() {
        let (ctx, calls) = mock::context(Box::new(|_, _, body| (201, body.clone())));
        let mut traces: Vec<Matched> = (0..12).map(|i| trace(i, Some("Secret"))).collect();
        traces.push(trace(99, None));
        let msg = Message::new("c", "deletes", traces);
        assert_eq!(send(&channel(&ctx), &msg).await, Outcome::Delivered);
        let posted = calls.to(Method::POST, "/events");
        assert_eq!(posted.len(), 1 + OBJECT_EVENTS, "{:?}", calls.all());
        assert!(
            posted
                .iter()
                .all(|c| c.body["reason"] == "KeyEvent" && c.body["type"] == "Warning")
        );
        assert_eq!(posted[0].body["regarding"]["name"], "deletes");
        let objects: Vec<&serde_json::Value> = posted[1..].iter().map(|c| &c.body["regarding"]).collect();
        assert!(
            objects
                .iter()
                .all(|o| o["kind"] == "Secret" && o["namespace"] == "prod"),
            "{objects:?}"
        );
        assert!(
            posted[1..].iter().all(|c| c.body["related"]["name"] == "deletes"),
            "each object's Event points back at the notification"
        );
        assert!(
            !objects.iter().any(|o| o["name"] == "db-99"),
            "no Event for an object of unknown kind"
        );

        let (ctx, calls) = mock::context(Box::new(|_, path, _| (403, mock::not_found(path).1)));
        assert_eq!(send(&channel(&ctx), &msg).await, Outcome::Delivered);
        assert!(!calls.to(Method::POST, "/events").is_empty(), "it tried");
    }
}
