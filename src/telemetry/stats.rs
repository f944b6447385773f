//! What a handle reports: live counters and the shutdown summary.

use std::fmt;

use crate::dispatch::DestinationStats;

/// Live counters of a handle. See [`Telemetry::stats`](crate::Telemetry::stats).
///
/// Serializes (with serde) to an object with these fields under these names, for a JSON route
/// of your own (`axum::Json(telemetry.stats())`); [`prometheus`](Self::prometheus) writes them
/// for Prometheus.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = tower_telemetry::Telemetry::from_yaml_str("telemetry:\n  destinations:\n    memory: {}\n").unwrap();
/// telemetry.track("user.signup", tower_telemetry::props! {});
/// let json = serde_json::to_value(telemetry.stats()).unwrap();
/// assert_eq!(json["destinations"][0]["name"], "memory");
/// assert_eq!(json["destinations"][0]["enqueued"], 1);
/// assert_eq!(json["rejected"], 0);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Per destination, in configuration order.
    pub destinations: Vec<DestinationStats>,
    /// Events rejected before routing (invalid name, properties not an object).
    pub rejected: u64,
    /// Events tracked after shutdown began (counted, not queued).
    pub after_shutdown: u64,
    /// Events cut to fit the [limits](crate::limits::LimitsConfig) (and still sent).
    pub truncated: u64,
    /// Events rejected for being larger than the `max_event_size` limit.
    pub oversized: u64,
    /// Property values (and context fields) replaced by [redaction](crate::config::RedactConfig).
    pub redacted: u64,
    /// Events and identity operations not sent because of the request's
    /// [`Consent`](crate::identity::Consent): every event of a `Denied` request, and the
    /// `identify` and `alias` calls of an `Anonymous` one. Counted once per event, before
    /// routing to destinations.
    pub consent_denied: u64,
}

impl Stats {
    /// The counters of destination `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationStats> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// Events delivered, over all destinations.
    pub fn delivered(&self) -> u64 {
        self.destinations.iter().map(|d| d.delivered).sum()
    }

    /// Events not delivered (queued or in flight), over all destinations.
    pub fn undelivered(&self) -> u64 {
        self.destinations.iter().map(|d| d.undelivered).sum()
    }

    /// Events dropped because a queue was full, over all destinations.
    pub fn dropped_queue_full(&self) -> u64 {
        self.destinations.iter().map(|d| d.dropped_queue_full).sum()
    }

    /// Queued events dropped for newer ones ([`Overflow::DropOldest`](crate::config::Overflow)),
    /// over all destinations.
    pub fn dropped_oldest(&self) -> u64 {
        self.destinations.iter().map(|d| d.dropped_oldest).sum()
    }
}

/// What [`Telemetry::shutdown`](crate::Telemetry::shutdown) achieved: final counters and whether the timeout was hit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The counters when the workers stopped. `undelivered` is what was abandoned.
    pub stats: Stats,
    /// Whether the timeout ran out before every queue was drained.
    pub timed_out: bool,
}

impl ShutdownReport {
    /// Events delivered, over all destinations, since the handle was built.
    pub fn delivered(&self) -> u64 {
        self.stats.delivered()
    }

    /// Events abandoned at shutdown (still queued or in flight), over all destinations.
    pub fn undelivered(&self) -> u64 {
        self.stats.undelivered()
    }

    /// The final counters of destination `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationStats> {
        self.stats.destination(name)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "telemetry shutdown{}:",
            if self.timed_out { " (timed out)" } else { "" }
        )?;
        for d in &self.stats.destinations {
            write!(
                f,
                "\n  {}: delivered {}, undelivered {}, dropped (queue full) {}, sampled out {}, failed {}, discarded {}",
                d.name,
                d.delivered,
                d.undelivered,
                d.dropped_queue_full,
                d.sampled_out,
                d.failed,
                d.discarded
            )?;
            if d.dropped_oldest > 0 {
                write!(f, ", dropped (oldest) {}", d.dropped_oldest)?;
            }
            if d.unsupported > 0 {
                write!(f, ", unsupported {}", d.unsupported)?;
            }
            if d.spooled > 0 || d.replayed > 0 || d.spool_bytes > 0 || d.spool_corrupt > 0 {
                write!(
                    f,
                    "; spool: spooled {}, replayed {}, {} bytes held, corrupt {}",
                    d.spooled, d.replayed, d.spool_bytes, d.spool_corrupt
                )?;
            }
            if d.spool_fallback > 0 {
                write!(f, ", in memory for want of the spool {}", d.spool_fallback)?;
            }
        }
        let s = &self.stats;
        if s.rejected > 0 || s.after_shutdown > 0 || s.truncated > 0 || s.oversized > 0 {
            write!(
                f,
                "\n  rejected {}, after shutdown {}, truncated {}, oversized {}",
                s.rejected, s.after_shutdown, s.truncated, s.oversized
            )?;
        }
        if s.consent_denied > 0 {
            write!(f, "\n  kept in the process by consent {}", s.consent_denied)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(name: &str, delivered: u64, undelivered: u64) -> DestinationStats {
        DestinationStats {
            name: name.to_owned(),
            queued: 0,
            capacity: 10,
            held_bytes: 0,
            max_bytes: 1 << 20,
            enqueued: delivered + undelivered,
            delivered,
            dropped_queue_full: 1,
            dropped_oldest: 0,
            sampled_out: 0,
            unsupported: 0,
            failed: 0,
            discarded: 0,
            retries: 0,
            drop_reports_lost: 0,
            undelivered,
            spooled: 0,
            replayed: 0,
            spool_bytes: 0,
            spool_corrupt: 0,
            spool_fallback: 0,
        }
    }

    fn stats() -> Stats {
        Stats {
            destinations: vec![destination("a", 3, 1), destination("b", 4, 0)],
            rejected: 0,
            after_shutdown: 0,
            truncated: 0,
            oversized: 0,
            redacted: 0,
            consent_denied: 0,
        }
    }

    #[test]
    fn totals_sum_over_destinations() {
        let s = stats();
        assert_eq!(
            (s.delivered(), s.undelivered(), s.dropped_queue_full()),
            (7, 1, 2)
        );
        assert_eq!(s.destination("b").map(|d| d.delivered), Some(4));
        assert!(s.destination("c").is_none());
    }

    #[test]
    fn the_report_lists_each_destination_and_other_counters_only_when_set() {
        let mut report = ShutdownReport {
            stats: stats(),
            timed_out: true,
        };
        assert_eq!(
            report.to_string(),
            "telemetry shutdown (timed out):\
             \n  a: delivered 3, undelivered 1, dropped (queue full) 1, sampled out 0, failed 0, discarded 0\
             \n  b: delivered 4, undelivered 0, dropped (queue full) 1, sampled out 0, failed 0, discarded 0"
        );
        report.timed_out = false;
        report.stats.rejected = 2;
        assert!(report.to_string().starts_with("telemetry shutdown:"));
        assert!(
            report
                .to_string()
                .ends_with("\n  rejected 2, after shutdown 0, truncated 0, oversized 0")
        );
    }
}
