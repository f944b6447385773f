//! The `umami` destination: events to an [Umami](https://umami.is) server over HTTP.
//!
//! Each event becomes an Umami event (`name`, `data` = its properties) or, for the automatic
//! request events of [`TelemetryLayer`](crate::layer::TelemetryLayer), a page view; the request's
//! path, host, language, referrer and the end user's User-Agent come from the event's context,
//! `id` from its user id. Events are posted in batches to `/api/batch` (one request for up to
//! `batch_size` events, several requests in flight over kept-alive connections), with a
//! remembered fallback to one `/api/send` per event for servers without it. Everything happens
//! in the destination's background worker: a slow or absent Umami never delays a request.
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     umami:
//!       url: ${UMAMI_URL:-http://127.0.0.1:3000}   # the server's base URL
//!       website_id: ${UMAMI_WEBSITE_ID}            # the website's UUID
//!       events: [user.*, generation.*, payment.*]
//!       # hostname: app.example.com      # default: the request's Host
//!       # user_agent: "Mozilla/5.0 ..."  # default: browser-like, passes Umami's bot check
//!       # forward: { user_agent: true, language: true, referrer: true, ip: false }
//!       # distinct_id: user_id           # or none
//!       # mode: auto                     # or batch, send
//!       # include_query: false
//!       # context_data: [session_id, request_id]
//!       # batch_size: 20, concurrency: 4, timeout: 10s, and the other core delivery keys
//! ```
//!
//! The same in code, keeping a handle for [`UmamiDestination::stats`]:
//!
//! ```
//! use tower_telemetry::{Telemetry, destination::umami::{Forward, UmamiConfig, UmamiDestination}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let umami = UmamiDestination::new(
//!     UmamiConfig::new("http://127.0.0.1:3000", "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60")
//!         .with_forward(Forward::default().with_ip(false))
//!         .with_context_data(["session_id"]),
//! )
//! .unwrap();
//! let telemetry = Telemetry::builder().destination("umami", umami.clone()).build().unwrap();
//! assert_eq!(umami.stats().names_truncated, 0);
//! # }
//! ```
//!
//! # Mapping
//!
//! | our event | Umami |
//! |---|---|
//! | an event (`track!`, ...) | `{"type":"event"}`: `name` = its name (cut to 50), `data` = its properties, the `context_data` fields and its groups |
//! | a request event of the layer ([`EventKind::PageView`]) | `{"type":"event"}` without `name` or `data`: a page view |
//! | [`identify`](crate::identity) ([`EventKind::Identify`]) | `{"type":"identify"}`: `data` = the `$set_once` traits, then the traits (a trait in both takes the latter's value; Umami has no set-once), stored as the session's data; no `data` when there are no traits (Umami then stores nothing) |
//! | [`alias`](crate::identity), [`group`](crate::identity) ([`EventKind::Alias`], [`EventKind::Group`]) | not sent: Umami has no such call. [`supports`](Destination::supports) says so, and the handle counts them in [`unsupported`](crate::DestinationStats::unsupported) |
//! | the context's groups ([`Context::with_group`](crate::Context::with_group)) | in an event's `data` as `$groups: {"company": "acme"}`, which Umami stores as `$groups.company`; a property `$groups` (or `$groups.company`) wins |
//! | user id | `id` (unless `distinct_id: none`; left out when over 50 characters), in events and identify alike |
//! | path (+ query with `include_query`), host | `url`, `hostname` |
//! | Accept-Language, referrer, User-Agent, client IP | `language`, `referrer` (events only), `userAgent`, `ip`, as `forward` says |
//! | timestamp | `timestamp`, in seconds |
//!
//! Umami puts an identify's data in the session the request resolves to: `uuid(website, id)`
//! with an `id`, else one derived from the IP and User-Agent. An identify goes with the same
//! `id`, `userAgent` and `ip` as the user's events, so its data lands in their session and no
//! second session is made. Events of the same visitor from before the identify (no user id
//! yet) stay in their anonymous session: Umami cannot merge sessions.
//!
//! # Outcomes
//!
//! Per event, as the server answers (see the handle's [`stats`](crate::Telemetry::stats)):
//! 2xx is *delivered*; `200 {"beep":"boop"}` (Umami's bot check) is *discarded*, with one
//! warning naming the remedy; 400/403/404 are *failed* for good, logged with the server's
//! message; 408, 429, 5xx, timeouts and connection errors are retried with backoff, honouring
//! `Retry-After`. Items of a batch that fail are retried or failed on their own; the others are
//! not sent again.

mod bot;
mod client;
mod config;
mod deliver;
mod payload;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use config::DEFAULT_USER_AGENT;
pub use config::{DistinctId, Forward, UmamiConfig, UmamiMode};

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, ConfigErrors, DEFAULT_TIMEOUT, DeliveryConfig, Settings};
use crate::diag::{Escaped, Masked};
use crate::event::{Event, EventKind};
use client::Client;
use payload::{Changes, Mapping};

/// Requests (batches) in flight at once, unless `concurrency` is configured.
pub(crate) const DEFAULT_REQUESTS_IN_FLIGHT: usize = 4;

/// Events per `/api/batch` request, unless `batch_size` is configured. Umami handles a
/// batch's items one after the other and each item costs it more the later it comes (a batch
/// of 500 took 7.4 s, 20 items took 106 ms), so smaller batches in parallel deliver more: at
/// Umami 3.1's measured pace, 20 × 4 in flight sustains ~270 events/s where 100 × 4 sustained
/// ~190 (BENCHMARKS.md, "Umami at the real server's pace").
pub(crate) const DEFAULT_UMAMI_BATCH_SIZE: usize = 20;

/// Delivers events to an Umami server. See the [module docs](self).
///
/// Clones share the same connections and counters.
#[derive(Clone)]
pub struct UmamiDestination {
    inner: Arc<Inner>,
}

struct Inner {
    config: UmamiConfig,
    mapping: Mapping,
    client: Client,
    user_agent: String,
    mode: UmamiMode,
    fallen_back: AtomicBool,
    unreproduced_500: AtomicU32,
    bot_warned: AtomicBool,
    unreported: Mutex<HashSet<Uuid>>,
    names_truncated: AtomicU64,
    values_truncated: AtomicU64,
    fields_omitted: AtomicU64,
    discarded: AtomicU64,
    requests: AtomicU64,
}

/// What an [`UmamiDestination`] had to change or could not deliver, since it was built.
///
/// The handle's [`DestinationStats`](crate::DestinationStats) count events (delivered,
/// failed, discarded, retries); these count what happened inside them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UmamiStats {
    /// Event names cut to Umami's 50 characters.
    pub names_truncated: u64,
    /// String values in `data` cut to 500 characters (Umami's database rejects longer ones).
    pub values_truncated: u64,
    /// Optional fields left out because Umami would reject them: a `hostname` over 100
    /// characters, a `language` over 35, an `id` over 50, an `ip` that is not an IP address.
    pub fields_omitted: u64,
    /// Events Umami's bot check discarded (`200 {"beep":"boop"}`).
    pub discarded: u64,
    /// HTTP requests made (retries included).
    pub requests: u64,
    /// Whether `mode: auto` found no usable `/api/batch` and now sends one request per event.
    pub send_fallback: bool,
}

impl UmamiDestination {
    /// A destination for the server and website of `config`; fails if the URL, the website
    /// id, the hostname or the User-Agent is unusable. Makes no request.
    pub fn new(config: UmamiConfig) -> Result<UmamiDestination, ConfigErrors> {
        Self::build(config, &|key, msg| {
            ConfigError::new(format!("umami.{key}"), None, msg)
        })
        .map_err(ConfigErrors::from)
    }

    /// Builds one from the settings of a configured destination (the keys of the
    /// [module docs](self)); each error names the key path and line.
    pub fn from_settings(settings: &Settings) -> Result<UmamiDestination, Vec<ConfigError>> {
        settings.build_with(UmamiConfig::from_settings(settings), Self::build)
    }

    fn build(
        config: UmamiConfig,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Self, Vec<ConfigError>> {
        let v = config.validate(error)?;
        let client = Client::new(&v).map_err(|msg| vec![error("url", msg)])?;
        let mapping = Mapping {
            website: v.website_id,
            hostname: config.hostname.clone(),
            forward: config.forward,
            distinct_id: config.distinct_id,
            include_query: config.include_query,
            context_data: config.context_data.clone(),
        };
        Ok(UmamiDestination {
            inner: Arc::new(Inner {
                mapping,
                client,
                user_agent: config.user_agent.clone(),
                mode: config.mode,
                config,
                fallen_back: AtomicBool::new(false),
                unreproduced_500: AtomicU32::new(0),
                bot_warned: AtomicBool::new(false),
                unreported: Mutex::new(HashSet::new()),
                names_truncated: AtomicU64::new(0),
                values_truncated: AtomicU64::new(0),
                fields_omitted: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &UmamiConfig {
        &self.inner.config
    }

    /// Live counters of truncations, omissions, bot discards and requests.
    pub fn stats(&self) -> UmamiStats {
        let i = &*self.inner;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UmamiStats {
            names_truncated: get(&i.names_truncated),
            values_truncated: get(&i.values_truncated),
            fields_omitted: get(&i.fields_omitted),
            discarded: get(&i.discarded),
            requests: get(&i.requests),
            send_fallback: i.fallen_back.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn lock_unreported(&self) -> MutexGuard<'_, HashSet<Uuid>> {
        // Only whole ids are inserted and removed: a poisoned set is still consistent.
        self.unreported.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn count_changes(&self, c: &Changes) {
        if c.name_truncated {
            self.names_truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.values_truncated
            .fetch_add(c.values_truncated.into(), Ordering::Relaxed);
        self.fields_omitted
            .fetch_add(c.fields_omitted.into(), Ordering::Relaxed);
    }

    fn fall_back(&self, why: &DeliveryError) {
        if !self.fallen_back.swap(true, Ordering::Relaxed) {
            tracing::info!(
                target: "tower_telemetry",
                destination = "umami",
                reason = %why,
                "this Umami server has no usable /api/batch (it needs 2.17+, 3.0.2+ to be reliable); \
                 sending one /api/send request per event from now on"
            );
        }
    }

    fn unreproduced_500_seen(&self) {
        let n = self.unreproduced_500.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= deliver::UNREPRODUCED_500_LIMIT {
            self.fall_back(&DeliveryError::retryable(format!(
                "/api/batch answered 500 {n} times in a row while /api/send worked"
            )));
        }
    }

    /// A bot-check discard: counted, and the first one explained.
    fn discarded(&self, user_agent: &str) -> DeliveryError {
        self.discarded.fetch_add(1, Ordering::Relaxed);
        let ours = user_agent == self.user_agent;
        if !self.bot_warned.swap(true, Ordering::Relaxed) {
            if ours {
                tracing::warn!(
                    target: "tower_telemetry",
                    destination = "umami",
                    user_agent = %Escaped(user_agent),
                    "Umami discarded events as bot traffic (answer {{\"beep\":\"boop\"}}) because of the configured \
                     user_agent; set `user_agent` to a browser-like value such as `{DEFAULT_USER_AGENT}` \
                     (or remove it to get that default)"
                );
            } else {
                tracing::warn!(
                    target: "tower_telemetry",
                    destination = "umami",
                    user_agent = %Escaped(user_agent),
                    "Umami discarded events as bot traffic (answer {{\"beep\":\"boop\"}}) because of the end user's \
                     forwarded User-Agent; that is Umami's design for bots, but if these are API clients you \
                     want counted, set `forward.user_agent: false`"
                );
            }
        }
        DeliveryError::discarded(if ours {
            "Umami's bot check discarded the event (configured user_agent looks like a bot)"
        } else {
            "Umami's bot check discarded the event (the end user's User-Agent looks like a bot)"
        })
    }
}

impl fmt::Debug for UmamiDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UmamiDestination")
            .field("url", &Masked(&self.inner.config.url))
            .field("website_id", &Masked(&self.inner.config.website_id))
            .field("mode", &self.inner.mode)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Destination for UmamiDestination {
    fn name(&self) -> &str {
        "umami"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(deliver::deliver(&self.inner, batch))
    }

    fn preferred_batch_size(&self) -> usize {
        DEFAULT_UMAMI_BATCH_SIZE
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        DeliveryConfig::default()
            .with_batch_size(DEFAULT_UMAMI_BATCH_SIZE)
            .with_concurrency(DEFAULT_REQUESTS_IN_FLIGHT)
            .with_timeout(DEFAULT_TIMEOUT)
    }

    /// Events, page views and identify: Umami has no alias or group call.
    fn supports(&self, kind: EventKind) -> bool {
        payload::has_counterpart(kind)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let s = self.stats();
        if s.names_truncated + s.values_truncated + s.fields_omitted + s.discarded > 0 {
            tracing::info!(
                target: "tower_telemetry",
                destination = "umami",
                names_truncated = s.names_truncated,
                values_truncated = s.values_truncated,
                fields_omitted = s.fields_omitted,
                discarded_as_bot = s.discarded,
                "Umami destination: events changed to fit Umami's limits, or discarded"
            );
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod identity_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::DeliveryConfig;
    use crate::context::Context;
    use crate::destination::DeliveryErrorKind;
    use crate::dispatch::{Dispatcher, LaneSpec};
    use crate::event::Properties;
    use crate::identity;
    use crate::props;

    /// A destination for a port nothing listens on: any request it made would fail, and be
    /// counted in `requests`.
    fn unreachable() -> UmamiDestination {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        UmamiDestination::new(UmamiConfig::new(
            format!("http://127.0.0.1:{port}"),
            "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60",
        ))
        .unwrap()
    }

    fn alias() -> Arc<Event> {
        Arc::new(
            Event::new(
                identity::ALIAS,
                props! { identity::PREVIOUS_ID => "anon_1" },
            )
            .with_kind(EventKind::Alias)
            .with_context(Context::new().with_user_id("user_1")),
        )
    }

    fn group() -> Arc<Event> {
        Arc::new(
            Event::new(
                identity::GROUP,
                props! { identity::GROUP_TYPE => "company", identity::GROUP_KEY => "acme", "seats" => 3 },
            )
            .with_kind(EventKind::Group),
        )
    }

    /// The core asks `supports` once per lane: alias and group operations routed to Umami are
    /// counted `unsupported` and never reach its queue; identify does.
    #[tokio::test]
    async fn alias_and_group_are_counted_unsupported_by_the_dispatcher() {
        let umami = unreachable();
        let spec = LaneSpec {
            name: "umami".into(),
            destination: Arc::new(umami.clone()),
            delivery: DeliveryConfig::default(),
            view: None,
            #[cfg(feature = "spool")]
            spool: None,
        };
        let (d, _workers) = Dispatcher::new(vec![spec], Duration::ZERO);
        assert_eq!(d.supported(EventKind::Alias, 0b1), 0);
        assert_eq!(d.supported(EventKind::Group, 0b1), 0);
        assert_eq!(d.supported(EventKind::Identify, 0b1), 0b1);
        assert_eq!(d.supported(EventKind::Custom, 0b1), 0b1);
        assert_eq!(d.supported(EventKind::PageView, 0b1), 0b1);
        let stats = &d.stats()[0];
        assert_eq!((stats.unsupported, stats.enqueued), (2, 0));
        assert_eq!(umami.stats().requests, 0);
    }

    /// Called directly (no dispatcher to ask `supports`), an alias or a group is failed for
    /// good without a request, never sent as an event named `$alias`; the rest of the batch
    /// is attempted as usual.
    #[tokio::test]
    async fn an_alias_or_group_given_anyway_fails_without_a_request() {
        let umami = unreachable();
        let err = umami.send(&[alias(), group()]).await.unwrap_err();
        assert_eq!(err.kind(), DeliveryErrorKind::Permanent);
        let items = err.items().expect("a verdict per item");
        for ((i, e), (at, kind)) in items.iter().zip([(0, "alias"), (1, "group")]) {
            assert_eq!((*i, e.kind()), (at, DeliveryErrorKind::Permanent));
            assert!(e.message().contains(kind), "{e}");
        }
        assert_eq!(umami.stats().requests, 0);

        let event = Arc::new(Event::new("user.x", Properties::new()));
        let err = umami.send(&[alias(), event]).await.unwrap_err();
        let items = err.items().expect("a verdict per item");
        assert_eq!(items[0].0, 0);
        assert_eq!(items[0].1.kind(), DeliveryErrorKind::Permanent);
        assert_eq!(items[1].0, 1);
        assert!(
            items[1].1.is_retryable(),
            "the event met the refused connection"
        );
        assert_eq!(umami.stats().requests, 1, "only the event was sent");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use proptest::prelude::*;
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};

    use super::client::{classify, retry_after};

    /// `Retry-After` values a hostile or broken server may send: seconds of any length, the
    /// three date forms with any fields (years far past 9999), and anything printable.
    fn retry_after_value() -> impl Strategy<Value = String> {
        let day = prop_oneof![Just("Sun"), Just("Mon"), Just("Sunday"), Just("Xyz")];
        let month = prop_oneof![Just("Nov"), Just("Feb"), Just("Dec"), Just("Foo")];
        prop_oneof![
            "[0-9]{1,40}",
            "-[0-9]{1,20}",
            (
                day.clone(),
                0u64..100,
                month.clone(),
                any::<u64>(),
                0u32..100,
                0u32..100,
                0u32..100
            )
                .prop_map(|(d, dd, m, y, h, mi, s)| format!(
                    "{d}, {dd:02} {m} {y} {h:02}:{mi:02}:{s:02} GMT"
                )),
            (
                day.clone(),
                0u64..100,
                month.clone(),
                any::<u64>(),
                0u32..100
            )
                .prop_map(|(d, dd, m, y, h)| format!("{d}, {dd:02}-{m}-{y} {h:02}:49:37 GMT")),
            (day, month, 0u64..100, any::<i64>())
                .prop_map(|(d, m, dd, y)| format!("{d} {m} {dd:2} 08:49:37 {y}")),
            "[ -~]{0,64}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any status with any `Retry-After` and `Location` gets a verdict without a panic:
        /// retryable exactly for 408, 429 and 5xx, and a wait only on a retryable one.
        #[test]
        fn any_answer_is_classified(
            status in 100u16..1000,
            after in retry_after_value(),
            location in "[ -~]{0,40}",
            body in "\\PC{0,80}",
            secs in 0u64..(1 << 40),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(&after).unwrap());
            headers.insert(LOCATION, HeaderValue::from_str(&location).unwrap());
            let e = classify(status, &headers, "/api/send", &body);
            let retryable = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            prop_assert_eq!(e.is_retryable(), retryable);
            if !retryable {
                prop_assert_eq!(e.retry_after(), None);
            }
            // Any clock: the epoch, now, far ahead.
            for now in [UNIX_EPOCH, SystemTime::now(), UNIX_EPOCH + Duration::from_secs(secs)] {
                if let Some(wait) = retry_after(&after, now) {
                    // Seconds are taken as given; a date is never further than from the epoch.
                    match after.trim().parse::<u64>() {
                        Ok(s) => prop_assert_eq!(wait, Duration::from_secs(s)),
                        Err(_) => prop_assert!(wait <= Duration::from_secs(253_402_300_800)),
                    }
                }
            }
        }
    }
}
