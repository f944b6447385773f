//! [`Stats`] (and a relay's counters) in Prometheus' text exposition format, for a
//! `/metrics` route.

use std::fmt::{self, Write as _};

use super::stats::Stats;
use crate::dispatch::DestinationStats;
#[cfg(feature = "nats")]
use crate::relay::{RelayDestinationStats, RelayStats};

/// What a metric is, for its `# TYPE` line.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A destination's metric: name (after the prefix), kind, help, and its value(s) — one per
/// extra label value where the metric has one (`reason` for the drops).
struct PerDestination<D> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    values: fn(&D) -> Values,
}

enum Values {
    One(u64),
    ByReason([(&'static str, u64); 2]),
}

const DESTINATION_METRICS: &[PerDestination<DestinationStats>] = &[
    PerDestination {
        name: "events_enqueued_total",
        kind: Kind::Counter,
        help: "Events accepted into the destination's queue (with a spool, also those an earlier process left in it).",
        values: |d| Values::One(d.enqueued),
    },
    PerDestination {
        name: "events_delivered_total",
        kind: Kind::Counter,
        help: "Events the destination took.",
        values: |d| Values::One(d.delivered),
    },
    PerDestination {
        name: "events_failed_total",
        kind: Kind::Counter,
        help: "Events that failed for good: a permanent error, the retry budget spent, or a panic in the destination.",
        values: |d| Values::One(d.failed),
    },
    PerDestination {
        name: "events_discarded_total",
        kind: Kind::Counter,
        help: "Events the receiver accepted and threw away (e.g. Umami's bot check).",
        values: |d| Values::One(d.discarded),
    },
    PerDestination {
        name: "events_dropped_total",
        kind: Kind::Counter,
        help: "Events dropped for want of room: reason=\"queue_full\", the new event, never enqueued; reason=\"oldest\", a queued event dropped for a newer one.",
        values: |d| {
            Values::ByReason([
                ("queue_full", d.dropped_queue_full),
                ("oldest", d.dropped_oldest),
            ])
        },
    },
    PerDestination {
        name: "events_sampled_out_total",
        kind: Kind::Counter,
        help: "Events routed to the destination that sampling left out.",
        values: |d| Values::One(d.sampled_out),
    },
    PerDestination {
        name: "events_unsupported_total",
        kind: Kind::Counter,
        help: "Identity operations routed to the destination that it has no counterpart for.",
        values: |d| Values::One(d.unsupported),
    },
    PerDestination {
        name: "events_undelivered",
        kind: Kind::Gauge,
        help: "Events accepted and not yet settled: queued or in flight. enqueued = delivered + failed + discarded + dropped{reason=\"oldest\"} + undelivered.",
        values: |d| Values::One(d.undelivered),
    },
    PerDestination {
        name: "delivery_retries_total",
        kind: Kind::Counter,
        help: "Delivery attempts retried.",
        values: |d| Values::One(d.retries),
    },
    PerDestination {
        name: "drop_reports_lost_total",
        kind: Kind::Counter,
        help: "Drop reports not queued because the queue was full.",
        values: |d| Values::One(d.drop_reports_lost),
    },
    PerDestination {
        name: "queue_events",
        kind: Kind::Gauge,
        help: "Events waiting in the destination's queue now.",
        values: |d| Values::One(d.queued as u64),
    },
    PerDestination {
        name: "queue_capacity_events",
        kind: Kind::Gauge,
        help: "The queue's capacity in events (queue_capacity).",
        values: |d| Values::One(d.capacity as u64),
    },
    PerDestination {
        name: "queue_bytes",
        kind: Kind::Gauge,
        help: "Bytes the destination holds in memory now, as queue_max_bytes counts them.",
        values: |d| Values::One(d.held_bytes as u64),
    },
    PerDestination {
        name: "queue_max_bytes",
        kind: Kind::Gauge,
        help: "The destination's queue_max_bytes.",
        values: |d| Values::One(d.max_bytes as u64),
    },
    PerDestination {
        name: "spool_written_total",
        kind: Kind::Counter,
        help: "Events written to the destination's spool (0 without one).",
        values: |d| Values::One(d.spooled),
    },
    PerDestination {
        name: "spool_replayed_total",
        kind: Kind::Counter,
        help: "Events found in the spool when the handle was built, left by an earlier process.",
        values: |d| Values::One(d.replayed),
    },
    PerDestination {
        name: "spool_bytes",
        kind: Kind::Gauge,
        help: "Bytes of records the spool holds now (what its max_bytes bounds).",
        values: |d| Values::One(d.spool_bytes),
    },
    PerDestination {
        name: "spool_corrupt_total",
        kind: Kind::Counter,
        help: "Spool records lost to damage.",
        values: |d| Values::One(d.spool_corrupt),
    },
    PerDestination {
        name: "spool_fallback_total",
        kind: Kind::Counter,
        help: "Events that went on from memory because the spool could not take them.",
        values: |d| Values::One(d.spool_fallback),
    },
];

/// One of the whole's own counters (the handle's, the relay's): name (after the prefix),
/// help, value.
type Overall<S> = (&'static str, &'static str, fn(&S) -> u64);

const HANDLE_METRICS: &[Overall<Stats>] = &[
    (
        "events_rejected_total",
        "Events refused before routing: an invalid name or properties, a blank identity.",
        |s| s.rejected,
    ),
    (
        "events_oversized_total",
        "Events refused for being larger than max_event_size.",
        |s| s.oversized,
    ),
    (
        "events_truncated_total",
        "Events cut to fit the limits (and still sent).",
        |s| s.truncated,
    ),
    (
        "values_redacted_total",
        "Property values and context fields replaced by redaction.",
        |s| s.redacted,
    ),
    (
        "events_consent_denied_total",
        "Events and identity operations kept in the process by the request's consent.",
        |s| s.consent_denied,
    ),
    (
        "events_after_shutdown_total",
        "Events tracked after shutdown began (counted, not queued).",
        |s| s.after_shutdown,
    ),
];

#[cfg(feature = "nats")]
const RELAY_METRICS: &[Overall<RelayStats>] = &[
    (
        "messages_received_total",
        "Messages received from the stream (redeliveries included).",
        |s| s.received,
    ),
    (
        "messages_acked_total",
        "Messages acknowledged: every routed destination settled their event.",
        |s| s.acked,
    ),
    (
        "messages_nacked_total",
        "Messages handed back for redelivery.",
        |s| s.nacked,
    ),
    (
        "messages_rejected_total",
        "Messages that are not events of a known schema version or not within the limits: terminated.",
        |s| s.rejected,
    ),
    (
        "messages_redelivered_total",
        "Messages received that JetStream had delivered before.",
        |s| s.redelivered,
    ),
];

#[cfg(feature = "nats")]
const RELAY_DESTINATION_METRICS: &[PerDestination<RelayDestinationStats>] = &[
    PerDestination {
        name: "events_delivered_total",
        kind: Kind::Counter,
        help: "Events the destination took.",
        values: |d| Values::One(d.delivered),
    },
    PerDestination {
        name: "events_failed_total",
        kind: Kind::Counter,
        help: "Events the destination refused for good (retries that ran out are redelivered, not counted here).",
        values: |d| Values::One(d.failed),
    },
    PerDestination {
        name: "events_discarded_total",
        kind: Kind::Counter,
        help: "Events the receiver accepted and threw away.",
        values: |d| Values::One(d.discarded),
    },
    PerDestination {
        name: "events_sampled_out_total",
        kind: Kind::Counter,
        help: "Events routed to the destination that sampling left out.",
        values: |d| Values::One(d.sampled_out),
    },
    PerDestination {
        name: "events_unsupported_total",
        kind: Kind::Counter,
        help: "Identity operations routed to the destination that it has no counterpart for.",
        values: |d| Values::One(d.unsupported),
    },
    PerDestination {
        name: "events_skipped_duplicates_total",
        kind: Kind::Counter,
        help: "Redelivered events not sent again because the destination already had them.",
        values: |d| Values::One(d.skipped_duplicates),
    },
    PerDestination {
        name: "delivery_retries_total",
        kind: Kind::Counter,
        help: "Delivery attempts retried.",
        values: |d| Values::One(d.retries),
    },
];

/// [`Stats`] in the Prometheus text exposition format (version 0.0.4, which OpenMetrics
/// scrapers read too): made by [`Stats::prometheus`], written by its `Display`.
///
/// Every metric is named `tower_telemetry_…` (or with the prefix given to
/// [`prefix`](Self::prefix)); the destinations' carry a `destination` label. Counters end in
/// `_total`; what is held now (queues, the spool, what is undelivered) is a gauge. The
/// accounting holds across them for every destination:
/// `events_enqueued_total = events_delivered_total + events_failed_total +
/// events_discarded_total + events_dropped_total{reason="oldest"} + events_undelivered`.
///
/// Serve it from a route of your own (behind your own access control, like any metrics
/// endpoint), with [`CONTENT_TYPE`](Self::CONTENT_TYPE):
///
/// ```
/// use axum::{Router, http::header, routing::get};
/// use tower_telemetry::{PrometheusStats, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::from_yaml_str("telemetry:\n  destinations:\n    memory: {}\n").unwrap();
/// let t = telemetry.clone();
/// let app: Router = Router::new().route(
///     "/metrics",
///     get(move || async move {
///         let body = t.stats().prometheus().to_string();
///         ([(header::CONTENT_TYPE, PrometheusStats::CONTENT_TYPE)], body)
///     }),
/// );
/// # let _ = app;
/// telemetry.track("user.signup", tower_telemetry::props! {});
/// let text = telemetry.stats().prometheus().to_string();
/// assert!(text.contains("tower_telemetry_events_enqueued_total{destination=\"memory\"} 1\n"));
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PrometheusStats<'a> {
    source: Source<'a>,
    prefix: &'a str,
}

#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    Handle(&'a Stats),
    #[cfg(feature = "nats")]
    Relay(&'a RelayStats),
}

impl<'a> PrometheusStats<'a> {
    /// The `Content-Type` of the text format: `text/plain; version=0.0.4; charset=utf-8`.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// The metrics' common prefix, instead of `tower_telemetry_` (e.g. `myapp_telemetry_`,
    /// or `""` for none). It should match `[a-zA-Z_:][a-zA-Z0-9_:]*` or be empty; other
    /// characters are replaced by `_`.
    pub fn prefix(self, prefix: &'a str) -> Self {
        PrometheusStats { prefix, ..self }
    }
}

impl Stats {
    /// These counters in the Prometheus text exposition format, for a `/metrics` route (see
    /// [`PrometheusStats`]).
    pub fn prometheus(&self) -> PrometheusStats<'_> {
        PrometheusStats {
            source: Source::Handle(self),
            prefix: "tower_telemetry_",
        }
    }
}

#[cfg(feature = "nats")]
impl RelayStats {
    /// These counters in the Prometheus text exposition format, for a relay's `/metrics`
    /// route: named `tower_telemetry_relay_…` (see [`PrometheusStats`]).
    ///
    /// ```
    /// let stats = tower_telemetry::relay::RelayStats::default();
    /// let text = stats.prometheus().to_string();
    /// assert!(text.contains("# TYPE tower_telemetry_relay_messages_received_total counter\n"));
    /// ```
    pub fn prometheus(&self) -> PrometheusStats<'_> {
        PrometheusStats {
            source: Source::Relay(self),
            prefix: "tower_telemetry_relay_",
        }
    }
}

impl fmt::Display for PrometheusStats<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = sanitized(self.prefix);
        match self.source {
            Source::Handle(s) => write_all(
                f,
                &prefix,
                s,
                HANDLE_METRICS,
                &s.destinations,
                |d| &d.name,
                DESTINATION_METRICS,
            ),
            #[cfg(feature = "nats")]
            Source::Relay(s) => write_all(
                f,
                &prefix,
                s,
                RELAY_METRICS,
                &s.destinations,
                |d| &d.name,
                RELAY_DESTINATION_METRICS,
            ),
        }
    }
}

/// The per-destination metrics of `destinations` (each labelled with `name_of`), then the
/// overall ones of `stats`.
fn write_all<S, D>(
    f: &mut fmt::Formatter<'_>,
    prefix: &str,
    stats: &S,
    overall: &[Overall<S>],
    destinations: &[D],
    name_of: fn(&D) -> &str,
    per_destination: &[PerDestination<D>],
) -> fmt::Result {
    for m in per_destination {
        header(f, prefix, m.name, m.kind, m.help)?;
        for d in destinations {
            let label = LabelValue(name_of(d));
            match (m.values)(d) {
                Values::One(v) => {
                    writeln!(f, "{prefix}{}{{destination=\"{label}\"}} {v}", m.name)?;
                }
                Values::ByReason(values) => {
                    for (reason, v) in values {
                        writeln!(
                            f,
                            "{prefix}{}{{destination=\"{label}\",reason=\"{reason}\"}} {v}",
                            m.name
                        )?;
                    }
                }
            }
        }
    }
    for (name, help, value) in overall {
        header(f, prefix, name, Kind::Counter, help)?;
        writeln!(f, "{prefix}{name} {}", value(stats))?;
    }
    Ok(())
}

fn header(
    f: &mut fmt::Formatter<'_>,
    prefix: &str,
    name: &str,
    kind: Kind,
    help: &str,
) -> fmt::Result {
    write!(f, "# HELP {prefix}{name} ")?;
    // HELP text escapes backslashes and line feeds.
    for c in help.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c => f.write_char(c)?,
        }
    }
    writeln!(f)?;
    writeln!(f, "# TYPE {prefix}{name} {}", kind.as_str())
}

/// `prefix` with every character a metric name may not hold replaced by `_`.
fn sanitized(prefix: &str) -> String {
    prefix
        .char_indices()
        .map(|(i, c)| {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit());
            if ok { c } else { '_' }
        })
        .collect()
}

/// A label value, escaped as the text format wants (`\\`, `\"`, `\n`).
struct LabelValue<'a>(&'a str);

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(name: &str) -> DestinationStats {
        DestinationStats {
            name: name.to_owned(),
            queued: 1,
            capacity: 100,
            held_bytes: 300,
            max_bytes: 1 << 20,
            enqueued: 10,
            delivered: 6,
            dropped_queue_full: 3,
            dropped_oldest: 1,
            sampled_out: 0,
            unsupported: 0,
            failed: 1,
            discarded: 1,
            retries: 2,
            drop_reports_lost: 0,
            undelivered: 1,
            spooled: 0,
            replayed: 0,
            spool_bytes: 0,
            spool_corrupt: 0,
            spool_fallback: 0,
        }
    }

    fn stats() -> Stats {
        Stats {
            destinations: vec![destination("umami"), destination("we\"ird\\na\nme")],
            rejected: 2,
            after_shutdown: 0,
            truncated: 1,
            oversized: 0,
            redacted: 5,
            consent_denied: 0,
        }
    }

    #[test]
    fn every_metric_has_help_type_and_one_sample_per_destination() {
        let text = stats().prometheus().to_string();
        assert!(text.contains(
            "# HELP tower_telemetry_events_delivered_total Events the destination took.\n\
             # TYPE tower_telemetry_events_delivered_total counter\n\
             tower_telemetry_events_delivered_total{destination=\"umami\"} 6\n"
        ));
        assert!(text.contains(
            "tower_telemetry_events_dropped_total{destination=\"umami\",reason=\"queue_full\"} 3\n\
             tower_telemetry_events_dropped_total{destination=\"umami\",reason=\"oldest\"} 1\n"
        ));
        assert!(text.contains("# TYPE tower_telemetry_events_undelivered gauge\n"));
        assert!(
            text.contains("tower_telemetry_queue_capacity_events{destination=\"umami\"} 100\n")
        );
        assert!(text.contains(
            "# TYPE tower_telemetry_events_rejected_total counter\ntower_telemetry_events_rejected_total 2\n"
        ));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(
            samples,
            (DESTINATION_METRICS.len() + 1) * 2 + HANDLE_METRICS.len()
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            let counter = line.ends_with(" counter");
            assert_eq!(counter, name.ends_with("_total"), "{line}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped_and_the_prefix_is_a_metric_name() {
        let s = stats();
        let text = s.prometheus().to_string();
        assert!(
            text.contains("{destination=\"we\\\"ird\\\\na\\nme\"} 6\n"),
            "{text}"
        );
        let custom = s.prometheus().prefix("my app.").to_string();
        assert!(custom.contains("\nmy_app_events_delivered_total{destination=\"umami\"} 6\n"));
        let bare = s.prometheus().prefix("").to_string();
        assert!(bare.starts_with("# HELP events_enqueued_total "));
        assert_eq!(sanitized("9lives"), "_lives");
    }
}
