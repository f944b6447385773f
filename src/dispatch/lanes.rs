//! [`Dispatcher`]: the lanes of one handle behind one small API.
//!
//! The handle routes and samples an event, then hands it to the dispatcher by lane index; it
//! never sees a lane's queue, counters or worker. Flushing, closing, aborting, the drop
//! bookkeeping and the counters' snapshot are here too, next to the state they read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::drops::{DropReport, DropSignal, DropTracker};
use super::worker::Companion;
use super::{Counters, Lane, PropertyView, Push, WorkerParts};
use crate::config::DeliveryConfig;
use crate::destination::Destination;
use crate::event::{Event, EventKind};

/// The identity kinds a destination may not support, in the order of
/// `Dispatcher::identity_support`.
const IDENTITY_KINDS: [EventKind; 3] = [EventKind::Identify, EventKind::Alias, EventKind::Group];

/// What a lane is made of: the pipeline's compiled form of one enabled destination.
pub(crate) struct LaneSpec {
    pub(crate) name: String,
    pub(crate) destination: Arc<dyn Destination>,
    /// The destination's defaults, overridden by what the configuration gave explicitly.
    pub(crate) delivery: DeliveryConfig,
    /// Its `allow_properties` / `drop_properties`, if it has any.
    pub(crate) view: Option<PropertyView>,
    /// Its durable spool, if it has one.
    #[cfg(feature = "spool")]
    pub(crate) spool: Option<crate::spool::Spool>,
}

/// The lanes of a handle, one per destination, in configuration order: lane `i` is bit `i`
/// of a route.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    lanes: Box<[Lane]>,
    /// Notified by the workers whenever events settle or a worker ends (flush, shutdown).
    progress: Arc<Notify>,
    drops: DropTracker,
    drop_signal: Arc<DropSignal>,
    /// The lanes whose destination supports each identity kind (identify, alias, group).
    identity_support: [u32; 3],
}

/// The workers of a [`Dispatcher`], built and not yet started.
#[must_use = "workers do nothing until spawned"]
pub(crate) struct Workers(Vec<WorkerParts>);

impl Workers {
    /// Starts every worker and `companion` (see [`spawn_workers`](super::spawn_workers)).
    pub(crate) fn spawn(self, companion: Option<Companion>) {
        super::spawn_workers(self.0, companion);
    }
}

/// The lane indices of the bits set in `mask`, lowest first.
fn lanes_of(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

/// A shutdown waits this many scheduler turns for aborted workers to be dropped.
const ABORT_YIELDS: usize = 16;

impl Dispatcher {
    /// The lanes for `specs` and their workers. `drop_report_interval`: the least time
    /// between two drop reports.
    #[cfg_attr(feature = "inspector", allow(dead_code))] // the handle uses `tapped` then
    pub(crate) fn new(specs: Vec<LaneSpec>, drop_report_interval: Duration) -> (Self, Workers) {
        #[cfg(feature = "inspector")]
        return Self::tapped(specs, drop_report_interval, None);
        #[cfg(not(feature = "inspector"))]
        Self::build(specs, drop_report_interval)
    }

    /// [`new`](Self::new), the lanes reporting to the inspector's `tap`.
    #[cfg(feature = "inspector")]
    pub(crate) fn tapped(
        specs: Vec<LaneSpec>,
        drop_report_interval: Duration,
        tap: Option<Arc<crate::inspector::tap::Tap>>,
    ) -> (Self, Workers) {
        Self::build(specs, drop_report_interval, tap)
    }

    fn build(
        specs: Vec<LaneSpec>,
        drop_report_interval: Duration,
        #[cfg(feature = "inspector")] tap: Option<Arc<crate::inspector::tap::Tap>>,
    ) -> (Self, Workers) {
        let progress = Arc::new(Notify::new());
        let drop_signal = Arc::new(DropSignal::default());
        let mut lanes = Vec::with_capacity(specs.len());
        let mut workers = Vec::with_capacity(specs.len());
        let mut identity_support = [0u32; 3];
        for (i, spec) in specs.into_iter().enumerate() {
            for (mask, kind) in identity_support.iter_mut().zip(IDENTITY_KINDS) {
                if spec.destination.supports(kind) {
                    *mask |= 1 << i;
                }
            }
            let (lane, parts) = super::lane(
                spec.name,
                spec.destination,
                spec.delivery,
                progress.clone(),
                spec.view,
                drop_signal.clone(),
                #[cfg(feature = "inspector")]
                tap.clone()
                    .map(|tap| crate::inspector::tap::LaneTap { tap, lane: i }),
            );
            #[cfg(feature = "spool")]
            let parts = WorkerParts {
                spool: spec.spool,
                ..parts
            };
            lanes.push(lane);
            workers.push(parts);
        }
        let dispatcher = Dispatcher {
            drops: DropTracker::new(lanes.len(), drop_report_interval),
            lanes: lanes.into_boxed_slice(),
            progress,
            drop_signal,
            identity_support,
        };
        (dispatcher, Workers(workers))
    }

    /// The destinations' names, in lane order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.lanes.iter().map(|l| l.shared.name.as_str())
    }

    /// Offers `event` to lane `lane`: never blocks; a full queue drops and counts it.
    /// The hot path: the same code as the lane's own push, inlined into the handle.
    #[inline]
    pub(crate) fn push(&self, lane: usize, event: Arc<Event>) -> Push {
        self.lanes[lane].push(event)
    }

    /// The lanes of `dests` that take events of `kind`; the others count the event as
    /// `unsupported`. Only identity operations can be unsupported.
    pub(crate) fn supported(&self, kind: EventKind, dests: u32) -> u32 {
        let Some(i) = IDENTITY_KINDS.iter().position(|k| *k == kind) else {
            return dests;
        };
        let keep = dests & self.identity_support[i];
        for lane in lanes_of(dests & !keep) {
            Counters::add(&self.lanes[lane].shared.counters.unsupported, 1);
        }
        keep
    }

    /// Counts one event sampled out for every lane in `mask`.
    #[inline]
    pub(crate) fn count_sampled_out(&self, mut mask: u32) {
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Counters::add(&self.lanes[i].shared.counters.sampled_out, 1);
        }
    }

    /// Offers a drop report to the healthy lanes of `mask` (not failing, room in the queue).
    /// `make` builds the event once, when the first such lane is found; a full queue loses the
    /// report without counting it as a drop.
    pub(crate) fn push_report(&self, mask: u32, make: impl FnOnce() -> Arc<Event>) {
        let healthy: Vec<&Lane> = lanes_of(mask)
            .map(|i| &self.lanes[i])
            .filter(|lane| lane.healthy())
            .collect();
        if healthy.is_empty() {
            return;
        }
        let event = make();
        for lane in healthy {
            lane.push_report(event.clone());
        }
    }

    /// The drops not reported yet, when a report is due (always when `force`), with the mask
    /// of the lanes that dropped something.
    pub(crate) fn take_drops(&self, force: bool) -> Option<(DropReport, u32)> {
        self.drops.take(&self.lanes, force)
    }

    /// When the next drop report may be made (`None`: now).
    pub(crate) fn next_drop_report(&self) -> Option<Instant> {
        self.drops.next_due()
    }

    /// Raised with every counted drop (for the handle's drop monitor).
    pub(crate) fn drop_signal(&self) -> Arc<DropSignal> {
        self.drop_signal.clone()
    }

    /// [`close`](Self::close), to be done by `deadline` (a spooled worker starts no batch it
    /// could not finish by then).
    pub(crate) fn close_by(&self, deadline: Instant) {
        for lane in self.lanes.iter() {
            *lane
                .shared
                .deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        }
        self.close();
    }

    /// Tells every worker to stop taking events, deliver what is queued without lingering,
    /// and end.
    pub(crate) fn close(&self) {
        for lane in self.lanes.iter() {
            lane.close();
        }
    }

    /// Whether every worker has ended.
    pub(crate) fn finished(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.shared.finished.load(Ordering::Acquire))
    }

    /// Waits until every event queued before this call has settled (or its worker ended),
    /// cutting batching delays short, at most `timeout`. Whether everything settled in time.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let targets: Vec<u64> = self
            .lanes
            .iter()
            .map(|l| Counters::get(&l.shared.counters.enqueued))
            .collect();
        for lane in self.lanes.iter() {
            lane.shared.flush_now.notify_one();
        }
        self.wait_until(timeout, || {
            self.lanes.iter().zip(&targets).all(|(l, target)| {
                l.shared.counters.settled() >= *target || l.shared.finished.load(Ordering::Acquire)
            })
        })
        .await
    }

    /// Waits until every worker has ended, at most `timeout`. Whether they all did.
    pub(crate) async fn wait_finished(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.finished()).await
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let progressed = self.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                return done();
            }
        }
    }

    /// Aborts every worker, then gives the runtime a few turns to drop them (without waiting
    /// on the clock, so a shutdown returns by its deadline).
    pub(crate) async fn abort(&self) {
        for lane in self.lanes.iter() {
            if let Some(abort) = lane
                .shared
                .abort
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                abort.abort();
            }
        }
        for _ in 0..ABORT_YIELDS {
            if self.finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Events accepted and not yet settled, over all lanes.
    pub(crate) fn undelivered(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| {
                let c = &l.shared.counters;
                Counters::get(&c.enqueued).saturating_sub(c.settled())
            })
            .sum()
    }

    /// Every lane's counters now.
    pub(crate) fn stats(&self) -> Vec<DestinationStats> {
        self.lanes
            .iter()
            .map(|l| {
                let c = &l.shared.counters;
                let enqueued = Counters::get(&c.enqueued);
                DestinationStats {
                    name: l.shared.name.clone(),
                    queued: l.queued(),
                    capacity: l.shared.capacity,
                    held_bytes: l.shared.held_bytes.load(Ordering::Relaxed),
                    max_bytes: l.shared.max_bytes,
                    enqueued,
                    delivered: Counters::get(&c.delivered),
                    dropped_queue_full: Counters::get(&c.dropped_queue_full),
                    dropped_oldest: Counters::get(&c.dropped_oldest),
                    sampled_out: Counters::get(&c.sampled_out),
                    unsupported: Counters::get(&c.unsupported),
                    failed: Counters::get(&c.failed),
                    discarded: Counters::get(&c.discarded),
                    retries: Counters::get(&c.retries),
                    drop_reports_lost: Counters::get(&c.reports_lost),
                    undelivered: enqueued.saturating_sub(c.settled()),
                    spooled: Counters::get(&c.spooled),
                    replayed: Counters::get(&c.replayed),
                    spool_bytes: Counters::get(&c.spool_bytes),
                    spool_corrupt: Counters::get(&c.spool_corrupt),
                    spool_fallback: Counters::get(&c.spool_fallback),
                }
            })
            .collect()
    }
}

/// Counters of one destination. See [`Telemetry::stats`](crate::Telemetry::stats).
///
/// Serializes (with serde) to an object with these fields under these names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DestinationStats {
    /// The destination's name.
    pub name: String,
    /// Events waiting in its queue now (not those its worker took: the batch it fills and
    /// those being sent or waiting for a retry, which also count against `queue_capacity`).
    pub queued: usize,
    /// The queue's capacity.
    pub capacity: usize,
    /// Bytes the destination holds now, as `queue_max_bytes` counts them (the events waiting
    /// in its queue and those its worker took and has not settled; each event's in-memory
    /// size, over-estimated).
    pub held_bytes: usize,
    /// Its `queue_max_bytes`.
    pub max_bytes: usize,
    /// Events accepted into its queue.
    pub enqueued: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Events dropped because the queue was full (the new event, under
    /// [`Overflow::DropNewest`](crate::config::Overflow::DropNewest)): never enqueued.
    pub dropped_queue_full: u64,
    /// Queued events dropped to make room for newer ones, under
    /// [`Overflow::DropOldest`](crate::config::Overflow::DropOldest): counted in `enqueued` first.
    pub dropped_oldest: u64,
    /// Events not sent there because sampling dropped them.
    pub sampled_out: u64,
    /// Identity operations routed there that it has no counterpart for
    /// ([`Destination::supports`](crate::destination::Destination::supports)): never enqueued.
    pub unsupported: u64,
    /// Events that failed for good (permanent errors, the retry budget exhausted, or a
    /// panic in the destination).
    pub failed: u64,
    /// Events the receiver accepted and threw away (e.g. Umami's bot check).
    pub discarded: u64,
    /// Retried delivery attempts.
    pub retries: u64,
    /// [`DropReport::EVENT_NAME`](crate::DropReport::EVENT_NAME) reports not queued because the queue was
    /// full (not counted as drops: a report's loss is never reported).
    pub drop_reports_lost: u64,
    /// Events accepted but not (yet) delivered, failed, discarded or dropped as the oldest:
    /// queued or in flight. `enqueued = delivered + failed + discarded + dropped_oldest +
    /// undelivered`.
    pub undelivered: u64,
    /// Events its worker wrote to its [spool](crate::config::DestinationConfig) (feature
    /// `spool`; 0 without one).
    pub spooled: u64,
    /// Events found in its spool when the handle was built, left by an earlier process: counted
    /// in `enqueued` too (and then delivered, failed, ... like any event), before new ones.
    pub replayed: u64,
    /// Bytes of records its spool holds now (what the spool's `max_bytes` bounds).
    pub spool_bytes: u64,
    /// Spool records lost to damage: found damaged when read (those are also counted in
    /// `failed`), or missing from a spool file that could not be opened and was salvaged
    /// (those were never enqueued in this process).
    pub spool_corrupt: u64,
    /// Events that went on from memory because the spool could not take them (a full disk,
    /// an unwritable path, a broken store): delivered as without a spool.
    pub spool_fallback: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::MemoryDestination;
    use crate::text::Text;

    fn spec(name: &str, capacity: usize) -> LaneSpec {
        LaneSpec {
            name: name.to_owned(),
            destination: Arc::new(MemoryDestination::new()),
            delivery: DeliveryConfig::default().with_queue_capacity(capacity),
            view: None,
            #[cfg(feature = "spool")]
            spool: None,
        }
    }

    fn event() -> Arc<Event> {
        Arc::new(Event::new(Text::from_static("x.y"), Default::default()))
    }

    #[test]
    fn pushes_count_per_lane_and_a_full_queue_drops() {
        let (d, _workers) = Dispatcher::new(vec![spec("a", 1), spec("b", 4)], Duration::ZERO);
        assert_eq!(d.names().collect::<Vec<_>>(), ["a", "b"]);
        assert!(matches!(d.push(0, event()), Push::Queued));
        assert!(matches!(d.push(0, event()), Push::Full(_)));
        assert!(matches!(d.push(1, event()), Push::Queued));
        d.count_sampled_out(0b11);
        let stats = d.stats();
        assert_eq!(
            (
                stats[0].enqueued,
                stats[0].dropped_queue_full,
                stats[0].queued
            ),
            (1, 1, 1)
        );
        assert_eq!((stats[1].enqueued, stats[1].sampled_out), (1, 1));
        assert_eq!(d.undelivered(), 2);
        let (report, mask) = d.take_drops(true).unwrap();
        assert_eq!((report.total(), mask), (1, 0b01));
        assert!(d.take_drops(true).is_none(), "each drop is reported once");
    }

    #[test]
    fn a_report_is_made_once_and_offered_to_healthy_lanes_only() {
        let (d, _workers) = Dispatcher::new(vec![spec("full", 1), spec("ok", 4)], Duration::ZERO);
        assert!(matches!(d.push(0, event()), Push::Queued));
        let mut made = 0;
        d.push_report(0b11, || {
            made += 1;
            event()
        });
        assert_eq!(made, 1);
        let stats = d.stats();
        assert_eq!(stats[0].enqueued, 1, "a full lane is not healthy");
        assert_eq!(stats[1].enqueued, 1);
        let mut made = 0;
        d.push_report(0b01, || {
            made += 1;
            event()
        });
        assert_eq!(made, 0, "no healthy lane: no event built");
    }

    #[test]
    fn drop_oldest_takes_new_events_past_capacity_up_to_a_hard_bound() {
        let mut oldest = spec("oldest", 2);
        oldest.delivery = oldest
            .delivery
            .with_overflow(crate::config::Overflow::DropOldest);
        // No worker runs here to evict: the queue takes up to twice its capacity, then
        // refuses as under drop-newest.
        let (d, _workers) = Dispatcher::new(vec![oldest], Duration::ZERO);
        for _ in 0..4 {
            assert!(matches!(d.push(0, event()), Push::Queued));
        }
        assert!(matches!(d.push(0, event()), Push::Full(_)));
        let stats = &d.stats()[0];
        assert_eq!((stats.enqueued, stats.dropped_queue_full), (4, 1));
        assert_eq!(stats.queued, 2, "reported up to the capacity");
    }

    #[test]
    fn the_byte_bound_drops_like_the_count_bound() {
        let one = event().held();
        let mut bytes = spec("bytes", 100);
        bytes.delivery = bytes.delivery.with_queue_max_bytes(3 * one);
        let (d, _workers) = Dispatcher::new(vec![bytes], Duration::ZERO);
        for _ in 0..3 {
            assert!(matches!(d.push(0, event()), Push::Queued));
        }
        assert!(
            matches!(d.push(0, event()), Push::Full(_)),
            "over the bytes"
        );
        let stats = &d.stats()[0];
        assert_eq!((stats.enqueued, stats.dropped_queue_full), (3, 1));
        assert_eq!((stats.held_bytes, stats.max_bytes), (3 * one, 3 * one));
        // An event larger than the whole bound is never taken.
        let mut lone = spec("lone", 100);
        lone.delivery = lone.delivery.with_queue_max_bytes(one - 1);
        let (d, _workers) = Dispatcher::new(vec![lone], Duration::ZERO);
        assert!(matches!(d.push(0, event()), Push::Full(_)));
        assert_eq!(
            d.stats()[0].held_bytes,
            0,
            "a refused event's bytes are given back"
        );
    }

    #[test]
    fn drop_oldest_takes_new_events_past_the_byte_bound_up_to_twice_it() {
        let one = event().held();
        let mut oldest = spec("oldest", 100);
        oldest.delivery = oldest
            .delivery
            .with_queue_max_bytes(2 * one)
            .with_overflow(crate::config::Overflow::DropOldest);
        let (d, _workers) = Dispatcher::new(vec![oldest], Duration::ZERO);
        for _ in 0..4 {
            assert!(matches!(d.push(0, event()), Push::Queued));
        }
        assert!(matches!(d.push(0, event()), Push::Full(_)));
    }

    #[test]
    fn a_closed_lane_refuses_events() {
        let (d, workers) = Dispatcher::new(vec![spec("a", 4)], Duration::ZERO);
        drop(workers); // the receiving end is gone
        assert!(matches!(d.push(0, event()), Push::Closed));
        assert_eq!(d.stats()[0].enqueued, 0);
    }
}
