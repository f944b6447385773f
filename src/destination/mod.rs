//! Destinations: where events are delivered.
//!
//! A destination receives batches of events from its own background worker and says, per
//! batch (or per item of a batch), whether they were delivered, should be retried, or can never
//! be delivered. Queueing, batching, retries with backoff, timeouts and counting are the
//! worker's job, so an implementation is only the delivery itself:
//!
//! ```
//! use std::sync::Arc;
//! use tower_telemetry::{Event, destination::{BoxFuture, DeliveryError, Destination}};
//!
//! struct Stdout;
//!
//! impl Destination for Stdout {
//!     fn name(&self) -> &str {
//!         "stdout"
//!     }
//!
//!     fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
//!         Box::pin(async move {
//!             for event in batch {
//!                 let line = serde_json::to_string(&**event)
//!                     .map_err(|e| DeliveryError::permanent(e.to_string()))?;
//!                 println!("{line}");
//!             }
//!             Ok(())
//!         })
//!     }
//! }
//! ```
//!
//! Supply such a destination by name with
//! [`TelemetryBuilder::destination`](crate::TelemetryBuilder::destination), or let a
//! configuration build it from its own keys (`type: stdout`) by registering a
//! [`DestinationKind`] with
//! [`TelemetryBuilder::destination_kind`](crate::TelemetryBuilder::destination_kind).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BuiltinKinds, DeliveryConfig, KindEnv};
use crate::event::{Event, EventKind};

#[cfg(any(
    feature = "umami",
    feature = "posthog",
    feature = "segment",
    feature = "webhook",
    feature = "otlp"
))]
pub(crate) mod http;
mod logging;
mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "posthog")]
pub mod posthog;
pub(crate) mod registry;
#[cfg(feature = "segment")]
pub mod segment;

#[cfg(feature = "umami")]
pub mod umami;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use logging::LoggingDestination;
pub use memory::MemoryDestination;
pub use registry::DestinationKind;

impl KindEnv for BuiltinKinds {
    fn env_names() -> &'static [&'static str] {
        #[cfg(feature = "otlp")]
        {
            otlp::ENV_NAMES
        }
        #[cfg(not(feature = "otlp"))]
        {
            &[]
        }
    }
}

/// A boxed, `Send` future: what [`Destination::send`] returns, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where events go: Umami, the log, a test's memory, or your own.
///
/// Object-safe, so destinations can be chosen from configuration at run time. One worker task
/// per destination calls [`send`](Self::send) with batches; with a `concurrency` above 1 it may
/// call it again before the previous call finished.
pub trait Destination: Send + Sync + 'static {
    /// A short description for logs (`"umami"`, `"logging"`).
    fn name(&self) -> &str;

    /// Delivers a batch. `Ok` means every event was delivered; an error says which were not
    /// and whether trying again can help (see [`DeliveryError`]). Must not block the thread.
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// The largest batch this destination wants. Defaults to 100.
    fn preferred_batch_size(&self) -> usize {
        crate::config::DEFAULT_BATCH_SIZE
    }

    /// Delivery settings used for the keys a configuration does not give. Defaults to
    /// [`DeliveryConfig::default`] with [`preferred_batch_size`](Self::preferred_batch_size).
    fn delivery_defaults(&self) -> DeliveryConfig {
        DeliveryConfig::default().with_batch_size(self.preferred_batch_size())
    }

    /// Called once after the last batch at shutdown. Defaults to nothing.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Whether it has a counterpart for events of `kind`. Identity operations
    /// ([`EventKind::Identify`], [`Alias`](EventKind::Alias), [`Group`](EventKind::Group)) of
    /// a kind it does not support are never sent to it, only counted in its
    /// [`unsupported`](crate::DestinationStats::unsupported). Asked once, when the handle is
    /// built. Defaults to every kind.
    fn supports(&self, kind: EventKind) -> bool {
        let _ = kind;
        true
    }
}

impl<D: Destination + ?Sized> Destination for Arc<D> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        (**self).send(batch)
    }
    fn preferred_batch_size(&self) -> usize {
        (**self).preferred_batch_size()
    }
    fn delivery_defaults(&self) -> DeliveryConfig {
        (**self).delivery_defaults()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        (**self).shutdown()
    }
    fn supports(&self, kind: EventKind) -> bool {
        (**self).supports(kind)
    }
}

/// What became of events that were not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryErrorKind {
    /// A transient failure (timeout, connection refused, 5xx, 429): try again later.
    Retryable,
    /// The destination will never accept it (validation error, forbidden): do not retry.
    Permanent,
    /// The destination accepted the request but threw the event away (e.g. Umami's bot check).
    Discarded,
}

/// Why a batch, or some of its events, were not delivered.
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::{destination::{DeliveryError, DeliveryErrorKind}};
///
/// let throttled = DeliveryError::retryable("429 Too Many Requests").with_retry_after(Duration::from_secs(2));
/// assert!(throttled.is_retryable());
///
/// // Item 3 of the batch was rejected; the others were delivered.
/// let partial = DeliveryError::partial([(3, DeliveryError::permanent("400 Bad request"))]);
/// assert_eq!(partial.items().unwrap()[0].0, 3);
/// ```
#[derive(Clone)]
pub struct DeliveryError {
    kind: DeliveryErrorKind,
    message: String,
    retry_after: Option<Duration>,
    items: Option<Vec<(usize, DeliveryError)>>,
}

impl DeliveryError {
    fn new(kind: DeliveryErrorKind, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            message: message.into(),
            retry_after: None,
            items: None,
        }
    }

    /// The whole batch failed transiently; it will be retried with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(DeliveryErrorKind::Retryable, message)
    }

    /// The whole batch can never be delivered; it is counted as failed.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(DeliveryErrorKind::Permanent, message)
    }

    /// The whole batch was accepted and thrown away by the receiver; counted as discarded.
    pub fn discarded(message: impl Into<String>) -> Self {
        Self::new(DeliveryErrorKind::Discarded, message)
    }

    /// Some items failed: `(index in the batch, why)`. Items not listed were delivered. Only
    /// the retryable ones are retried.
    pub fn partial(items: impl IntoIterator<Item = (usize, DeliveryError)>) -> Self {
        let items: Vec<_> = items.into_iter().collect();
        let retry_after = items.iter().filter_map(|(_, e)| e.retry_after).max();
        DeliveryError {
            kind: if items.iter().any(|(_, e)| e.is_retryable()) {
                DeliveryErrorKind::Retryable
            } else {
                DeliveryErrorKind::Permanent
            },
            message: format!("{} item(s) of the batch failed", items.len()),
            retry_after,
            items: Some(items),
        }
    }

    /// The server asked to wait this long before trying again (a floor for the backoff,
    /// capped at 60 s).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DeliveryErrorKind {
        self.kind
    }

    /// Whether trying again can help.
    pub fn is_retryable(&self) -> bool {
        self.kind == DeliveryErrorKind::Retryable
    }

    /// The server-given delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// A description of the failure.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The per-item failures, for a partial failure.
    pub fn items(&self) -> Option<&[(usize, DeliveryError)]> {
        self.items.as_deref()
    }
}

impl fmt::Debug for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DeliveryError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(r) = self.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(items) = &self.items {
            d.field("items", items);
        }
        d.finish()
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeliveryErrorKind::Retryable => "retryable",
            DeliveryErrorKind::Permanent => "permanent",
            DeliveryErrorKind::Discarded => "discarded",
        };
        // The message may quote a server's answer or an address: escaped, passwords masked.
        write!(
            f,
            "{kind} delivery failure: {}",
            crate::diag::Masked(&self.message)
        )?;
        if let Some(r) = self.retry_after {
            write!(f, " (retry after {r:?})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DeliveryError {}
