//! The relay: reads events from a JetStream stream and delivers them to the other
//! destinations — Umami, logging, your own — with the normal routing and sampling.
//!
//! Apps publish with the [`nats`](crate::destination::nats::NatsDestination) destination; one or more relays,
//! anywhere, read the stream through one durable pull consumer and share the work. A message
//! is acknowledged only after every destination its event routes to has accepted it or
//! rejected it for good; otherwise it is redelivered (to this relay or another) after a
//! delay, at most `max_deliver` times. A redelivered message does not reach a destination that
//! already has its event: delivered event ids are remembered per destination for
//! `dedupe_window`, in the relay and (by default) in a JetStream key-value bucket that all
//! relays of the consumer share.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_telemetry::relay::{Relay, RelayConfig};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (relay_config, telemetry_config) = RelayConfig::from_yaml_str(r#"
//! relay:
//!   servers: [nats://127.0.0.1:4222]
//!   stream: TELEMETRY
//!   durable: telemetry-relay
//! telemetry:
//!   destinations:
//!     umami:
//!       url: http://127.0.0.1:3000
//!       website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60
//!       events: [user.*, generation.*, payment.*]
//!     logging:
//!       events: [error.*]
//! "#)?;
//! let relay = Relay::builder(relay_config).config(telemetry_config).build()?;
//! let running = relay.start().await?;
//! tokio::signal::ctrl_c().await?;
//! let stats = running.shutdown(Duration::from_secs(10)).await;
//! println!("{stats:?}");
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - No loss: a message is acknowledged only when every routed destination settled it
//!   (accepted it, or rejected it for good), and JetStream redelivers what a relay did not
//!   acknowledge (it crashed, or a destination kept failing) after `ack_wait` or the retry
//!   delay, at most `max_deliver` times. A destination's batch is retried as in the app, for
//!   up to its `retry.max_elapsed` (10 min by default; `max_attempts` if set), the messages
//!   kept alive meanwhile; a panic in a destination fails its events for that destination
//!   (acknowledged, not redelivered) and the relay goes on.
//! - A graceful stop ([`RunningRelay::shutdown`] within its timeout) is exactly once: the relay
//!   stops pulling, finishes the batch its destinations were given (delivers, records and
//!   acknowledges it), and hands every message it fetched and did not start back to the
//!   stream, where the other relays get it at once.
//! - A crash ([`RunningRelay::abort`], a killed process, a `shutdown` past its timeout) loses
//!   nothing, and at most the batch in flight to each destination — that destination's
//!   `batch_size` events — may be delivered twice. Each destination batch is recorded as
//!   delivered (per destination and event id, in a JetStream key-value bucket shared by the
//!   relays, for `dedupe_window`) before the next one is sent, and redeliveries skip what is
//!   recorded. The batch in flight may have reached the destination without the answer
//!   reaching the relay; no relay can tell, and Umami has no idempotency key to close that
//!   window. (With `shared_dedupe: false`, another relay does not see the record and delivers
//!   again everything the crashed relay had not acknowledged.)
//! - The relay never drops for lack of room: it reads only as fast as the destinations take.
//!   (Per-destination `queue_capacity` and `queue_max_bytes` do not apply here: the relay
//!   decodes one batch of messages at a time, each within the limits below; `batch_size`,
//!   `timeout`, `retry`, `allow_properties` and `drop_properties` do. The `redact` section does not: the apps
//!   applied it before publishing.)
//!
//! # A stream it does not trust
//!
//! Every message is decoded within the `limits` section (the defaults unless given; give the
//! apps' own if they raised them) by
//! [`decode_event_with_limits`](crate::destination::nats::schema::decode_event_with_limits):
//! a message longer than `max_event_size` + 1 KiB is refused unread; properties over
//! `max_properties`, `max_string_length` or `max_depth` are refused while they are decoded,
//! before they are allocated, and so is an event that would hold more than 16 ×
//! `max_event_size` in memory; the version, id, name and timestamp are validated. A refused
//! message is terminated (not redelivered) and counted in [`RelayStats::rejected`]; the
//! warning that says why is escaped (a field's newline or escape sequence forges no log
//! line) and logged at most every 10 s, with the count since the last one.

mod config;
mod run;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

pub use config::RelayConfig;

use crate::config::{Config, ConfigError, ConfigErrors, DeliveryConfig};
use crate::destination::registry::DestinationKind;
use crate::destination::{Destination, MemoryDestination};
use crate::diag::RateLimitedWarning;
use crate::dispatch::PropertyView;
use crate::limits::LimitsConfig;
use crate::pipeline::{self, Sources};
use crate::routing::Router;

/// A relay, configured and not yet started. See the [module docs](self).
pub struct Relay {
    config: RelayConfig,
    /// What a message may decode to (the `limits` section).
    limits: LimitsConfig,
    router: Router,
    lanes: Vec<Lane>,
    memories: HashMap<String, MemoryDestination>,
}

/// One destination as the relay sees it.
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) destination: Arc<dyn Destination>,
    pub(crate) delivery: DeliveryConfig,
    /// Its `allow_properties` / `drop_properties`, if it has any.
    pub(crate) view: Option<Arc<PropertyView>>,
    pub(crate) counters: LaneCounters,
}

#[derive(Default)]
pub(crate) struct LaneCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) sampled_out: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) unsupported: AtomicU64,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field(
                "destinations",
                &self.lanes.iter().map(|l| &l.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Builds a [`Relay`]: where to read, and the destinations to feed.
#[must_use = "a builder does nothing until .build() is called"]
pub struct RelayBuilder {
    relay: RelayConfig,
    config: Config,
    sources: Sources,
}

impl fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("relay", &self.relay)
            .field("config", &self.config)
            .field("sources", &self.sources)
            .finish()
    }
}

impl RelayBuilder {
    /// The destinations, routing and sampling, as for a [`Telemetry`](crate::Telemetry)
    /// handle. Defaults to none.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Supplies the implementation of destination `name`, as
    /// [`TelemetryBuilder::destination`](crate::TelemetryBuilder::destination) does.
    pub fn destination(mut self, name: impl Into<String>, destination: impl Destination) -> Self {
        self.sources.supply(name.into(), destination);
        self
    }

    /// Registers a destination kind for `type: <kind>`, as
    /// [`TelemetryBuilder::destination_kind`](crate::TelemetryBuilder::destination_kind) does.
    pub fn destination_kind(
        mut self,
        kind: impl Into<String>,
        builder: impl DestinationKind,
    ) -> Self {
        self.sources.register(kind.into(), builder);
        self
    }

    /// Checks everything that can be checked without the network and builds the relay.
    pub fn build(self) -> Result<Relay, ConfigErrors> {
        let RelayBuilder {
            relay,
            config,
            sources,
        } = self;
        let mut errors = relay.validate();
        let compiled = pipeline::compile(&config, sources, &mut errors);
        #[cfg(feature = "spool")]
        for lane in &compiled.lanes {
            if let Some(spool) = &lane.spool {
                errors.push(ConfigError::new(
                    spool.key_path.clone(),
                    spool.line,
                    "a relay keeps what it has not delivered in the stream; `spool` is for apps",
                ));
            }
        }
        if compiled.lanes.is_empty() {
            errors.push(ConfigError::new(
                "telemetry.destinations",
                None,
                "the relay has no enabled destination to deliver to",
            ));
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let lanes = compiled
            .lanes
            .into_iter()
            .map(|spec| Lane {
                name: spec.name,
                destination: spec.destination,
                delivery: spec.delivery,
                view: spec.view.map(Arc::new),
                counters: LaneCounters::default(),
            })
            .collect();
        Ok(Relay {
            config: relay,
            limits: *config.limits(),
            router: compiled.router,
            lanes,
            memories: compiled.memories,
        })
    }
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The NATS servers could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The stream is missing or unreadable.
    #[error("stream `{stream}`: {message}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// What went wrong.
        message: String,
    },
    /// The durable consumer could not be created or bound.
    #[error("consumer `{durable}`: {message}")]
    Consumer {
        /// The consumer's name.
        durable: String,
        /// What went wrong.
        message: String,
    },
}

impl Relay {
    /// A builder reading as `config` says.
    pub fn builder(config: RelayConfig) -> RelayBuilder {
        RelayBuilder {
            relay: config,
            config: Config::default(),
            sources: Sources::default(),
        }
    }

    /// The [`MemoryDestination`] registered as `name`, if that destination is one.
    pub fn memory(&self, name: &str) -> Option<MemoryDestination> {
        self.memories.get(name).cloned()
    }

    /// Connects, binds the durable consumer (creating it if missing) and starts relaying on
    /// the current tokio runtime.
    pub async fn start(self) -> Result<RunningRelay, RelayError> {
        let shared = Arc::new(Shared {
            config: self.config,
            limits: self.limits,
            decode_warnings: RateLimitedWarning::default(),
            router: self.router,
            lanes: self.lanes,
            counters: RelayCounters::default(),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        });
        let bound = run::bind(&shared).await?;
        let task = tokio::spawn(run::run(shared.clone(), bound));
        Ok(RunningRelay {
            shared,
            task: Some(task),
            memories: self.memories,
        })
    }
}

/// What the relay's task and its handle share.
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    /// What a message may decode to.
    pub(crate) limits: LimitsConfig,
    /// Refused messages are logged at most every 10 s.
    pub(crate) decode_warnings: RateLimitedWarning,
    pub(crate) router: Router,
    pub(crate) lanes: Vec<Lane>,
    pub(crate) counters: RelayCounters,
    /// Set by a graceful shutdown, before `stop` is notified.
    pub(crate) stopping: AtomicBool,
    pub(crate) stop: Notify,
}

#[derive(Default)]
pub(crate) struct RelayCounters {
    pub(crate) received: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) redelivered: AtomicU64,
}

/// A started relay. Dropping it aborts the relay like [`abort`](Self::abort).
pub struct RunningRelay {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    memories: HashMap<String, MemoryDestination>,
}

impl fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningRelay")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RunningRelay {
    /// Live counters.
    pub fn stats(&self) -> RelayStats {
        let s = &*self.shared;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayStats {
            received: get(&s.counters.received),
            acked: get(&s.counters.acked),
            nacked: get(&s.counters.nacked),
            rejected: get(&s.counters.rejected),
            redelivered: get(&s.counters.redelivered),
            destinations: s
                .lanes
                .iter()
                .map(|l| RelayDestinationStats {
                    name: l.name.clone(),
                    delivered: get(&l.counters.delivered),
                    failed: get(&l.counters.failed),
                    discarded: get(&l.counters.discarded),
                    retries: get(&l.counters.retries),
                    sampled_out: get(&l.counters.sampled_out),
                    unsupported: get(&l.counters.unsupported),
                    skipped_duplicates: get(&l.counters.skipped),
                })
                .collect(),
        }
    }

    /// The [`MemoryDestination`] registered as `name`, if that destination is one.
    pub fn memory(&self, name: &str) -> Option<MemoryDestination> {
        self.memories.get(name).cloned()
    }

    /// Stops reading, finishes (delivers, records and acknowledges) the batch its destinations
    /// were given, hands the messages it took and did not start back to the stream (other
    /// relays get them at once), and shuts the destinations down — within `timeout`, after
    /// which the relay is aborted (its unacknowledged messages are redelivered to other relays
    /// after `ack_wait`).
    pub async fn shutdown(mut self, timeout: Duration) -> RelayStats {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.stop.notify_one();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
        for lane in &self.shared.lanes {
            lane.destination.shutdown().await;
        }
        self.stats()
    }

    /// Stops at once, as a crash would: nothing more is delivered or acknowledged, and the
    /// messages in hand are redelivered (to any relay of the consumer) after `ack_wait`.
    pub fn abort(mut self) -> RelayStats {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.stats()
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Counters of a [`RunningRelay`]. Serializes (with serde) to an object with these fields
/// under these names; [`prometheus`](Self::prometheus) writes them for Prometheus.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages received (redeliveries included).
    pub received: u64,
    /// Messages acknowledged: every routed destination settled their event.
    pub acked: u64,
    /// Messages handed back for redelivery: later when a destination kept failing, at once
    /// when the relay stopped before starting them.
    pub nacked: u64,
    /// Messages that are not events of a known schema version, or not within the `limits`
    /// (see the [module docs](self)); terminated, never redelivered.
    pub rejected: u64,
    /// Messages received that JetStream had delivered before.
    pub redelivered: u64,
    /// Per destination, in configuration order.
    pub destinations: Vec<RelayDestinationStats>,
}

impl RelayStats {
    /// The counters of destination `name`.
    pub fn destination(&self, name: &str) -> Option<&RelayDestinationStats> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// Counters of one destination of a relay.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RelayDestinationStats {
    /// The destination's name.
    pub name: String,
    /// Events delivered.
    pub delivered: u64,
    /// Events rejected for good (permanent errors). Retries that ran out are not counted
    /// here: their messages are redelivered.
    pub failed: u64,
    /// Events the receiver accepted and threw away.
    pub discarded: u64,
    /// Retried delivery attempts.
    pub retries: u64,
    /// Events not sent there because sampling dropped them.
    pub sampled_out: u64,
    /// Identity operations it has no counterpart for
    /// ([`Destination::supports`]): not sent.
    pub unsupported: u64,
    /// Events not sent again because this destination already had them (redeliveries).
    pub skipped_duplicates: u64,
}
