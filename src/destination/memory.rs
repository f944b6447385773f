//! The `memory` destination: captures events so tests can assert on them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::DeliveryConfig;
use crate::event::Event;

/// Keeps every event it receives, for your tests.
///
/// Clones share the same store. Register one under the name a configuration routes to, run
/// your code, then assert (see [`assert_tracked!`](crate::assert_tracked)). It delivers as soon
/// as events arrive (no batching delay), so [`wait_for`](Self::wait_for) returns promptly.
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::{Telemetry, assert_tracked, track, destination::MemoryDestination};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let memory = MemoryDestination::new();
/// let telemetry = Telemetry::builder().destination("umami", memory.clone()).build().unwrap();
///
/// track!(&telemetry => "checkout.completed", package_id = "creator", amount = 9.99);
///
/// memory.wait_for("checkout.completed", Duration::from_secs(1)).await.unwrap();
/// assert_tracked!(memory, "checkout.completed", package_id = "creator");
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryDestination {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: Mutex<Vec<Arc<Event>>>,
    arrived: Notify,
}

impl MemoryDestination {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Event>>> {
        self.inner.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every event received so far, in arrival order.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.lock().clone()
    }

    /// The events received so far, leaving the store empty.
    pub fn take(&self) -> Vec<Arc<Event>> {
        std::mem::take(&mut *self.lock())
    }

    /// The number of events received.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none were received.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every event.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The events named `name`.
    pub fn named(&self, name: &str) -> Vec<Arc<Event>> {
        self.lock()
            .iter()
            .filter(|e| e.name() == name)
            .cloned()
            .collect()
    }

    /// Waits until an event named `name` has arrived, at most `timeout` (tokio time, so a
    /// paused clock works); returns the first such event.
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Option<Arc<Event>> {
        self.wait_until(timeout, |events| {
            events.iter().find(|e| e.name() == name).cloned()
        })
        .await
    }

    /// Waits until at least `n` events have arrived, at most `timeout`; returns whether they did.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |events| (events.len() >= n).then_some(()))
            .await
            .is_some()
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Arc<Event>]) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = check(&self.lock()) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return check(&self.lock());
            }
        }
    }

    /// Whether an event named `name` whose properties include every `(key, value)` of
    /// `subset` was received. Used by [`assert_tracked!`](crate::assert_tracked).
    pub fn contains(&self, name: &str, subset: &[(&str, serde_json::Value)]) -> bool {
        self.lock().iter().any(|e| {
            e.name() == name
                && subset
                    .iter()
                    .all(|(k, v)| e.properties().get(k).is_some_and(|p| p == v))
        })
    }
}

impl Destination for MemoryDestination {
    fn name(&self) -> &str {
        "memory"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.lock().extend(batch.iter().cloned());
        self.inner.arrived.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        DeliveryConfig::default().with_flush_interval(Duration::ZERO)
    }
}

/// Asserts that a [`MemoryDestination`] received an event with this name and (at least)
/// these properties; on failure, lists what it did receive.
///
/// ```
/// # use tower_telemetry::{Event, props, assert_tracked, destination::{MemoryDestination, Destination}};
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let memory = MemoryDestination::new();
/// # memory.send(&[Arc::new(Event::new("generation.started", props! { "model" => "flux-dev", "credits" => 10 }))]).await.unwrap();
/// assert_tracked!(memory, "generation.started");
/// assert_tracked!(memory, "generation.started", model = "flux-dev", credits = 10);
/// # }
/// ```
#[macro_export]
macro_rules! assert_tracked {
    ($memory:expr, $name:expr $(, $key:ident = $value:expr)* $(,)?) => {{
        let memory: &$crate::destination::MemoryDestination = &$memory;
        let subset: ::std::vec::Vec<(&str, $crate::__private::serde_json::Value)> = ::std::vec![
            $( (::core::stringify!($key), $crate::__private::serde_json::json!($value)) ),*
        ];
        if !memory.contains($name, &subset) {
            let seen: ::std::vec::Vec<_> = memory
                .events()
                .iter()
                .map(|e| ::std::format!("{} {}", e.name(), $crate::__private::serde_json::to_string(e.properties()).unwrap_or_default()))
                .collect();
            ::core::panic!(
                "no event `{}` with {:?} was tracked; received:\n  {}",
                $name,
                subset,
                seen.join("\n  ")
            );
        }
    }};
}
