//! The `nats` destination: events into a NATS JetStream stream, exactly once per event id.
//!
//! Each event is published as versioned JSON (see [`encode_event`]) to a subject made from
//! its category, with the JetStream header `Nats-Msg-Id` set to the event's id, and counts as
//! delivered only when the stream acknowledged it. A publish that got no answer (no
//! responders while a new stream leader is elected, a timeout, a lost connection) is sent
//! again with the same id, so JetStream stores it once however often it was sent within the
//! stream's duplicate window. Read the stream with [`relay`](crate::relay) to feed the other
//! destinations (Umami, logging, ...) from it, from as many relays as needed.
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     nats:
//!       servers: [nats://10.0.0.1:4222, nats://10.0.0.2:4222, nats://10.0.0.3:4222]
//!       subject: telemetry.events.{category}   # {category}, {name}
//!       stream:                                # or just a name: `stream: TELEMETRY`
//!         name: TELEMETRY
//!         create: true              # create if missing; else it must exist
//!         replicas: 3               # 1 to 5
//!         subjects: [telemetry.events.>]   # default: from `subject`
//!         duplicate_window: 2m
//!         max_age: 7d               # default: unlimited
//!         max_bytes: 10000000000    # default: unlimited
//!         storage: file             # or memory
//!       # token: ${NATS_TOKEN}  | user: ..., password: ...  | credentials: /etc/nats/app.creds
//!       # tls: { required: true, ca_file: ca.pem, cert_file: c.pem, key_file: k.pem }
//!       publish_timeout: 5s         # wait for each acknowledgement
//!       failover_wait: 10s          # keep republishing through a leader election this long
//!       in_flight: 1024             # publishes awaiting acknowledgement at once
//!       connect_timeout: 5s
//!       # queue_capacity, batch_size, concurrency, timeout, retry: the core's delivery keys
//! ```
//!
//! # When the stream is set up
//!
//! Building the destination (from YAML or [`NatsDestination::new`]) only checks the settings:
//! it never waits on the network, so an app starts while NATS is away. The connection is made
//! and the stream created or checked at the first delivery, in the background; or call
//! [`NatsDestination::setup`] at startup to do it then and fail fast on a misconfigured
//! stream. A stream that exists with subjects that do not capture the events, other replicas,
//! or no duplicate window is a permanent error, logged and not retried; an unreachable server
//! is retried.
//!
//! ```no_run
//! use tower_telemetry::{Telemetry, destination::nats::{NatsConfig, NatsDestination}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let nats = NatsDestination::new(NatsConfig::new(["nats://127.0.0.1:4222"])).unwrap();
//! nats.setup().await.expect("the stream is usable");
//! let telemetry = Telemetry::builder().destination("nats", nats.clone()).build().unwrap();
//! # }
//! ```
//!
//! # Outcomes
//!
//! Acknowledged (new or duplicate): *delivered*. No responders, timeouts and connection loss:
//! republished with the same id for up to `failover_wait`, then *retried* by the core with
//! backoff (configure `retry:` to cover the longest outage you want to ride out; while it
//! lasts the bounded queue fills and then drops, counted). A message larger than the server's
//! `max_payload`, or a misconfigured stream: *failed*.

mod config;
mod connect;
pub mod schema;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

pub(crate) use config::{DEFAULT_STREAM, render_subject, subjects_covered};
pub use config::{NatsConfig, NatsStorage, NatsStreamConfig};
pub(crate) use connect::{CONNECT_KEYS, ConnectSettings, connect_settings_from, duration};
pub use connect::{NatsAuth, NatsTls};
pub(crate) use schema::{EVENT_SCHEMA, SCHEMA_HEADER, encode_event};

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, ConfigErrors, DeliveryConfig, Settings};
use crate::diag::RateLimitedWarning;
use crate::event::Event;

/// Events per batch unless `batch_size` is configured: publishes are pipelined, so large
/// batches cost little latency.
const DEFAULT_BATCH: usize = 256;
/// Batches in flight at once unless `concurrency` is configured.
const DEFAULT_CONCURRENCY: usize = 4;

/// Publishes events to a NATS JetStream stream. See the [module docs](self).
///
/// Clones share the connection and the counters.
#[derive(Clone)]
pub struct NatsDestination {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    addrs: Vec<async_nats::ServerAddr>,
    subjects: Vec<String>,
    conn: AsyncMutex<Option<jetstream::Context>>,
    misconfigured: RateLimitedWarning,
    published: AtomicU64,
    duplicates: AtomicU64,
    republished: AtomicU64,
}

/// What a [`NatsDestination`] did since it was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStats {
    /// Events the stream acknowledged as new.
    pub published: u64,
    /// Events the stream acknowledged as duplicates of one it already had (a re-send after
    /// a lost acknowledgement): stored once.
    pub duplicates: u64,
    /// Publishes sent again with the same id after no responders, a timeout or a lost
    /// connection.
    pub republished: u64,
}

impl NatsDestination {
    /// A destination for `config`; fails if a setting is unusable. Does not connect.
    pub fn new(config: NatsConfig) -> Result<NatsDestination, ConfigErrors> {
        Self::build(config, &|key, msg| {
            ConfigError::new(format!("nats.{key}"), None, msg)
        })
        .map_err(ConfigErrors::from)
    }

    /// Builds one from the settings of a configured destination (the keys of the
    /// [module docs](self)); each error names the key path and line.
    pub fn from_settings(settings: &Settings) -> Result<NatsDestination, Vec<ConfigError>> {
        settings.build_with(NatsConfig::from_settings(settings), Self::build)
    }

    fn build(
        config: NatsConfig,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Self, Vec<ConfigError>> {
        let addrs = config.validate(error)?;
        let subjects = config.stream.effective_subjects(&config.subject);
        Ok(NatsDestination {
            inner: Arc::new(Inner {
                addrs,
                subjects,
                config,
                conn: AsyncMutex::new(None),
                misconfigured: RateLimitedWarning::default(),
                published: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                republished: AtomicU64::new(0),
            }),
        })
    }

    /// Connects and creates or checks the stream now, instead of at the first delivery.
    ///
    /// Returns a retryable error when the servers cannot be reached (or JetStream has no
    /// leader for the stream yet), a permanent one when the stream is misconfigured.
    pub async fn setup(&self) -> Result<(), DeliveryError> {
        self.inner.context().await.map(|_| ())
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// Live counters.
    pub fn stats(&self) -> NatsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NatsStats {
            published: get(&self.inner.published),
            duplicates: get(&self.inner.duplicates),
            republished: get(&self.inner.republished),
        }
    }
}

impl Inner {
    /// The JetStream context, connecting and setting up the stream the first time.
    async fn context(&self) -> Result<jetstream::Context, DeliveryError> {
        let mut slot = self.conn.lock().await;
        if let Some(js) = &*slot {
            return Ok(js.clone());
        }
        let client = self
            .config
            .connect
            .connect(&self.addrs)
            .await
            .map_err(DeliveryError::retryable)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.config.publish_timeout)
            .max_ack_inflight(self.config.in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        match ensure_stream(&js, &self.config, &self.subjects).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                if self.misconfigured.hit().is_some() {
                    tracing::error!(
                        target: "tower_telemetry",
                        destination = "nats",
                        error = %crate::diag::Masked(e.message()),
                        "the NATS stream is not usable; events to it fail until the configuration or the stream is fixed"
                    );
                }
                return Err(e);
            }
        }
        *slot = Some(js.clone());
        Ok(js)
    }

    async fn publish_all(&self, batch: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let js = self.context().await?;
        let deadline = Instant::now() + self.config.failover_wait;
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut failures: Vec<(usize, DeliveryError)> = Vec::new();
        let mut pause = Duration::from_millis(50);
        loop {
            let mut acks = Vec::with_capacity(pending.len());
            let mut again = Vec::new();
            let mut last_error = None;
            for &i in &pending {
                let e = &batch[i];
                let publish = jetstream::message::PublishMessage::build()
                    .payload(encode_event(e).into())
                    .message_id(e.id().to_string())
                    .header(SCHEMA_HEADER, EVENT_SCHEMA);
                let subject = render_subject(&self.config.subject, e);
                match js.send_publish(subject, publish).await {
                    Ok(ack) => acks.push((i, ack)),
                    Err(err) => match classify(&err) {
                        Ok(retry) => {
                            last_error = Some(retry);
                            again.push(i);
                        }
                        Err(permanent) => failures.push((i, permanent)),
                    },
                }
            }
            for (i, ack) in acks {
                match ack.await {
                    Ok(a) if a.duplicate => {
                        self.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        self.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => match classify(&err) {
                        Ok(retry) => {
                            last_error = Some(retry);
                            again.push(i);
                        }
                        Err(permanent) => failures.push((i, permanent)),
                    },
                }
            }
            if again.is_empty() {
                break;
            }
            let now = Instant::now();
            if now + pause > deadline {
                let why =
                    last_error.unwrap_or_else(|| DeliveryError::retryable("not acknowledged"));
                failures.extend(again.into_iter().map(|i| (i, why.clone())));
                break;
            }
            // Same ids: whatever did reach the stream is acknowledged as a duplicate.
            self.republished
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            again.sort_unstable();
            pending = again;
        }
        if failures.is_empty() {
            Ok(())
        } else if failures.len() == batch.len() && failures.iter().all(|(_, e)| e.is_retryable()) {
            Err(failures.swap_remove(0).1)
        } else {
            Err(DeliveryError::partial(failures))
        }
    }
}

/// `Ok(retryable)` for what a re-send with the same id can fix, `Err(permanent)` otherwise.
fn classify(
    err: &async_nats::error::Error<PublishErrorKind>,
) -> Result<DeliveryError, DeliveryError> {
    match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => Err(DeliveryError::permanent(format!(
            "the event is larger than the server's max_payload: {err}"
        ))),
        // No responders: no stream leader (an election) or no stream (it was deleted).
        PublishErrorKind::StreamNotFound => Ok(DeliveryError::retryable(
            "no responders: the stream has no leader right now (election or lost quorum)",
        )),
        PublishErrorKind::TimedOut => Ok(DeliveryError::retryable(format!(
            "no acknowledgement in time: {err}"
        ))),
        PublishErrorKind::BrokenPipe => {
            Ok(DeliveryError::retryable(format!("connection lost: {err}")))
        }
        _ => Ok(DeliveryError::retryable(format!("publish failed: {err}"))),
    }
}

/// Creates the stream, or checks the one that exists.
async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
    subjects: &[String],
) -> Result<(), DeliveryError> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    let s = &config.stream;
    match js.get_stream(&s.name).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(|e| {
                DeliveryError::retryable(format!("cannot read stream `{}`: {e}", s.name))
            })?;
            check_stream(&info.config, config, subjects).map_err(DeliveryError::permanent)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                if !s.create {
                    return Err(DeliveryError::permanent(format!(
                        "stream `{}` does not exist and `stream.create` is false; create it or turn `create` on",
                        s.name
                    )));
                }
                match js.create_stream(s.to_jetstream(&config.subject)).await {
                    Ok(_) => {
                        tracing::info!(target: "tower_telemetry", destination = "nats", stream = %s.name, replicas = s.replicas, "created the JetStream stream");
                        Ok(())
                    }
                    Err(e) => {
                        use async_nats::jetstream::context::CreateStreamErrorKind as K;
                        match e.kind() {
                            // The configuration itself is wrong: retrying cannot help.
                            K::JetStream(j)
                                if [
                                    ErrorCode::STREAM_INVALID_CONFIG,
                                    ErrorCode::STREAM_SUBJECT_OVERLAP,
                                    ErrorCode::STREAM_NAME_EXIST,
                                    ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED,
                                ]
                                .contains(&j.error_code()) =>
                            {
                                Err(DeliveryError::permanent(format!(
                                    "cannot create stream `{}`: {j}",
                                    s.name
                                )))
                            }
                            // E.g. "no suitable peers for placement" while a new cluster's
                            // servers are still joining, or too few servers for the replicas.
                            K::JetStream(j) => Err(DeliveryError::retryable(format!(
                                "cannot create stream `{}` yet: {j}",
                                s.name
                            ))),
                            _ => Err(DeliveryError::retryable(format!(
                                "cannot create stream `{}`: {e}",
                                s.name
                            ))),
                        }
                    }
                }
            }
            GetStreamErrorKind::JetStream(j) => Err(DeliveryError::permanent(format!(
                "cannot use stream `{}`: {j}",
                s.name
            ))),
            _ => Err(DeliveryError::retryable(format!(
                "cannot look up stream `{}` (is JetStream enabled and does it have a leader?): {e}",
                s.name
            ))),
        },
    }
}

/// What makes an existing stream unusable for these settings.
fn check_stream(
    have: &async_nats::jetstream::stream::Config,
    want: &NatsConfig,
    subjects: &[String],
) -> Result<(), String> {
    let name = &want.stream.name;
    let mut problems = Vec::new();
    if !subjects_covered(&have.subjects, subjects) {
        problems.push(format!(
            "its subjects {:?} do not capture {:?}",
            have.subjects, subjects
        ));
    }
    if have.num_replicas.max(1) != want.stream.replicas {
        problems.push(format!(
            "it has {} replica(s), the configuration asks for {}",
            have.num_replicas.max(1),
            want.stream.replicas
        ));
    }
    if have.duplicate_window.is_zero() {
        problems.push("it has no duplicate window, so re-sent events would be stored twice".into());
    }
    if problems.is_empty() {
        if have.duplicate_window < want.stream.duplicate_window
            || have.max_age != want.stream.max_age
        {
            tracing::warn!(
                target: "tower_telemetry",
                destination = "nats",
                stream = %name,
                "the existing stream's duplicate_window or max_age differ from the configuration; keeping the stream's"
            );
        }
        Ok(())
    } else {
        Err(format!(
            "stream `{name}` exists but {}; change the configuration or the stream (`nats stream edit {name}`)",
            problems.join("; ")
        ))
    }
}

impl fmt::Debug for NatsDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsDestination")
            .field(
                "servers",
                &connect::MaskedList(&self.inner.config.connect.servers),
            )
            .field("stream", &self.inner.config.stream.name)
            .field("subject", &self.inner.config.subject)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Destination for NatsDestination {
    fn name(&self) -> &str {
        "nats"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.inner.publish_all(batch))
    }

    fn preferred_batch_size(&self) -> usize {
        DEFAULT_BATCH
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        // One attempt may republish for `failover_wait`; the core's timeout must not cut it.
        let c = &self.inner.config;
        DeliveryConfig::default()
            .with_batch_size(DEFAULT_BATCH)
            .with_concurrency(DEFAULT_CONCURRENCY)
            .with_flush_interval(Duration::from_millis(100))
            .with_timeout(c.failover_wait + c.publish_timeout * 2 + c.connect.connect_timeout)
    }
}
