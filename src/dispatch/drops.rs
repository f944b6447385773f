//! Drop reports: what was lost, per destination and reason, made visible.
//!
//! The hot path only counts a drop (one relaxed atomic add) and, for the first drop since the
//! last look, wakes a small monitor task. The monitor sleeps until then (an idle handle has no
//! timer running); woken, it waits until the last report is at least the report interval
//! (10 s by default) old, then produces a [`DropReport`] and
//!
//! - logs one warning with the counts,
//! - calls the `on_drop` callback (see [`TelemetryBuilder::on_drop`](crate::TelemetryBuilder::on_drop)),
//! - emits a [`DropReport::EVENT_NAME`] event to the destinations that are healthy (no drops of their
//!   own in the report, not failing, queue not full) and whose `events` globs match it.
//!
//! Drops of a [`DropReport::EVENT_NAME`] event are never reported, so a report can not cause another.
//! [`Telemetry::shutdown`](crate::Telemetry::shutdown) reports what is left unreported at once,
//! whatever the interval.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Counters, Lane};

/// The name of the drop report event ([`DropReport::EVENT_NAME`]).
pub(crate) const DROPPED_EVENT: &str = "telemetry.dropped";

/// The default least time between two drop reports ([`DropReport::DEFAULT_INTERVAL`]).
pub(crate) const DEFAULT_DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Events dropped since the previous report, per destination and reason.
///
/// Given to the `on_drop` callback and, as properties, carried by the [`DropReport::EVENT_NAME`] event:
/// `{"total": 15, "destinations": {"umami": {"queue_full": 12, "failed": 3, "discarded": 0}}}`.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_telemetry::{DropReport, Telemetry};
///
/// let seen: Arc<Mutex<Vec<DropReport>>> = Arc::default();
/// let sink = seen.clone();
/// let telemetry = Telemetry::builder()
///     .memory_destination("memory")
///     .on_drop(move |report: &DropReport| sink.lock().unwrap().push(report.clone()))
///     .build()
///     .unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropReport {
    /// The destinations that dropped events since the previous report, in configuration order.
    pub destinations: Vec<DestinationDrops>,
}

/// One destination's drops in a [`DropReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestinationDrops {
    /// The destination's name.
    pub name: String,
    /// Dropped because its queue was full (the destination is slow or down): the new events
    /// under [`Overflow::DropNewest`](crate::config::Overflow::DropNewest), the oldest queued ones
    /// under [`Overflow::DropOldest`](crate::config::Overflow::DropOldest).
    pub queue_full: u64,
    /// Failed for good (permanent errors, the retry budget exhausted, or a panic in the
    /// destination).
    pub failed: u64,
    /// Accepted and thrown away by the receiver (e.g. Umami's bot check).
    pub discarded: u64,
}

impl DestinationDrops {
    /// All of this destination's drops.
    pub fn total(&self) -> u64 {
        self.queue_full + self.failed + self.discarded
    }
}

impl DropReport {
    /// The name of the event that carries a report: `telemetry.dropped`.
    pub const EVENT_NAME: &'static str = DROPPED_EVENT;

    /// The default least time between two reports of a handle (10 s); see
    /// [`TelemetryBuilder::drop_report_interval`](crate::TelemetryBuilder::drop_report_interval).
    pub const DEFAULT_INTERVAL: Duration = DEFAULT_DROP_REPORT_INTERVAL;

    /// All drops in the report.
    pub fn total(&self) -> u64 {
        self.destinations.iter().map(DestinationDrops::total).sum()
    }

    /// The drops of destination `name`, if it dropped any.
    pub fn destination(&self, name: &str) -> Option<&DestinationDrops> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// The report as event properties.
    pub(crate) fn to_properties(&self) -> crate::Properties {
        let mut per = serde_json::Map::new();
        for d in &self.destinations {
            per.insert(
                d.name.clone(),
                serde_json::json!({
                    "queue_full": d.queue_full,
                    "failed": d.failed,
                    "discarded": d.discarded,
                }),
            );
        }
        let mut p = crate::Properties::with_capacity(2);
        p.insert("total", self.total());
        p.insert_json("destinations", serde_json::Value::Object(per));
        p
    }
}

impl fmt::Display for DropReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} telemetry event(s) dropped:", self.total())?;
        for d in &self.destinations {
            write!(
                f,
                " {}: {} (queue full {}, failed {}, discarded {});",
                crate::diag::Escaped(&d.name),
                d.total(),
                d.queue_full,
                d.failed,
                d.discarded
            )?;
        }
        Ok(())
    }
}

/// Wakes the drop monitor when a drop is counted: once, until the monitor looks again.
#[derive(Debug, Default)]
pub(crate) struct DropSignal {
    raised: AtomicBool,
    notify: Notify,
}

impl DropSignal {
    /// Called after a drop was counted.
    pub(crate) fn raise(&self) {
        // With the fence in `lower`: either the monitor's look sees this drop's count, or this
        // sees the signal lowered and raises it again.
        fence(Ordering::SeqCst);
        if !self.raised.load(Ordering::Relaxed) && !self.raised.swap(true, Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }

    /// Waits until a drop is counted (at once if one was since the last `lower`).
    pub(crate) async fn raised(&self) {
        self.notify.notified().await;
    }

    /// The monitor is about to look at the counters: drops from now on raise the signal again.
    pub(crate) fn lower(&self) {
        self.raised.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

/// Remembers what was reported, so each drop is reported once.
#[derive(Debug)]
pub(super) struct DropTracker {
    state: Mutex<State>,
    interval: Duration,
}

#[derive(Debug)]
struct State {
    reported: Vec<[u64; 3]>,
    last_report: Option<Instant>,
}

/// A lane's drops so far, by reason, not counting drops of drop reports.
fn drops_of(lane: &Lane) -> [u64; 3] {
    let c = &lane.shared.counters;
    [
        Counters::get(&c.dropped_queue_full) + Counters::get(&c.dropped_oldest),
        Counters::get(&c.failed).saturating_sub(Counters::get(&c.report_failed)),
        Counters::get(&c.discarded).saturating_sub(Counters::get(&c.report_discarded)),
    ]
}

impl DropTracker {
    pub(super) fn new(lanes: usize, interval: Duration) -> DropTracker {
        DropTracker {
            state: Mutex::new(State {
                reported: vec![[0; 3]; lanes],
                last_report: None,
            }),
            interval,
        }
    }

    /// When the next report may be made (`None`: now).
    pub(super) fn next_due(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_report.and_then(|t| t.checked_add(self.interval))
    }

    /// The drops not yet reported, when a report is due (always when `force`); with the mask
    /// of the lanes that dropped something.
    pub(super) fn take(&self, lanes: &[Lane], force: bool) -> Option<(DropReport, u32)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !force
            && state
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            return None;
        }
        let mut report = DropReport {
            destinations: Vec::new(),
        };
        let mut mask = 0u32;
        for (i, lane) in lanes.iter().enumerate() {
            let now_drops = drops_of(lane);
            let before = state.reported.get(i).copied().unwrap_or_default();
            let d = [0, 1, 2].map(|r| now_drops[r].saturating_sub(before[r]));
            if d.iter().any(|n| *n > 0) {
                mask |= 1 << i;
                report.destinations.push(DestinationDrops {
                    name: lane.shared.name.clone(),
                    queue_full: d[0],
                    failed: d[1],
                    discarded: d[2],
                });
                if let Some(slot) = state.reported.get_mut(i) {
                    *slot = now_drops;
                }
            }
        }
        if mask == 0 {
            return None;
        }
        state.last_report = Some(now);
        Some((report, mask))
    }
}
