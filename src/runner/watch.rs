//! What every replica keeps in line with a kind of resource (Trackers →
//! delivery pipelines, KeyEventNotifications → notifiers): a reflector over the
//! objects with the tracker selector's labels, and when to recompute.

use crate::controller::Context;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

type Events<K> = Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

/// The objects of one kind, and a clock that says when to look again.
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq + Clone,
{
    store: Store<K>,
    events: Events<K>,
    tick: tokio::time::Interval,
    listed: bool,
    kind: &'static str,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Hash + Eq + Clone,
{
    /// Watches every `K` (with the tracker selector's labels); `every` also
    /// recomputes without a change (a rotated Secret, a retry).
    pub fn new(ctx: &Context, kind: &'static str, every: Duration) -> Self {
        let api: Api<K> = Api::all(ctx.client.clone());
        let config = ctx.watch_config();
        let (store, writer) = reflector::store();
        let events = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .boxed();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            store,
            events,
            tick,
            listed: false,
            kind,
        }
    }

    /// Waits until the objects should be looked at again — after a complete
    /// list, a change, or a tick once listed — and returns them (not those
    /// being deleted). `None` when the watch has ended.
    pub async fn next(&mut self) -> Option<Vec<Arc<K>>> {
        loop {
            tokio::select! {
                event = self.events.next() => match event {
                    None => return None,
                    Some(Err(e)) => {
                        tracing::warn!(kind = self.kind, error = %e, "watch error");
                        continue;
                    }
                    // The store is complete only once a (re)list is done.
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => self.listed = true,
                },
                _ = self.tick.tick() => if !self.listed { continue },
            }
            return Some(
                self.store
                    .state()
                    .into_iter()
                    .filter(|o| o.meta().deletion_timestamp.is_none())
                    .collect(),
            );
        }
    }
}
