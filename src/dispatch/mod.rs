//! The per-destination lanes: a bounded queue, its counters, and the worker that drains it.
//!
//! Everything outside this module goes through [`Dispatcher`]: lane fields are private here.

pub(crate) mod attempt;
mod drops;
mod lanes;
pub(crate) mod recycle;
#[cfg(feature = "spool")]
mod spooled;
mod view;
mod worker;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

use crate::config::{DeliveryConfig, Overflow};
use crate::destination::Destination;
use crate::diag::RateLimitedWarning;
use crate::event::Event;

pub(crate) use drops::DropSignal;
pub(crate) use drops::{DEFAULT_DROP_REPORT_INTERVAL, DROPPED_EVENT};
pub use drops::{DestinationDrops, DropReport};
pub use lanes::DestinationStats;
pub(crate) use lanes::{Dispatcher, LaneSpec};
pub(crate) use view::PropertyView;
use worker::spawn_workers;

/// Counters of one destination. Relaxed atomics: they are statistics, read as a whole only
/// after the worker has stopped (shutdown) or as a live approximation (`stats()`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(super) enqueued: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    /// Queued events dropped to make room for newer ones ([`Overflow::DropOldest`]); unlike
    /// `dropped_queue_full`, they were counted in `enqueued` first.
    pub(super) dropped_oldest: AtomicU64,
    pub(super) sampled_out: AtomicU64,
    pub(super) unsupported: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) discarded: AtomicU64,
    pub(super) retries: AtomicU64,
    /// Drop reports among `failed` / `discarded`: never reported again (no recursion).
    pub(super) report_failed: AtomicU64,
    pub(super) report_discarded: AtomicU64,
    /// Drop reports not queued because the queue was full (not in `dropped_queue_full`).
    pub(super) reports_lost: AtomicU64,
    /// The spool's (feature `spool`): events written to it, records taken over from an
    /// earlier process, bytes of records held now, damaged records, events that went on from
    /// memory because the spool could not take them.
    pub(super) spooled: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) spool_bytes: AtomicU64,
    pub(super) spool_corrupt: AtomicU64,
    pub(super) spool_fallback: AtomicU64,
}

impl Counters {
    pub(super) fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Events accepted that reached an end: delivered, failed for good, discarded by the
    /// receiver, or dropped from the queue for newer ones.
    pub(super) fn settled(&self) -> u64 {
        Self::get(&self.delivered)
            + Self::get(&self.failed)
            + Self::get(&self.discarded)
            + Self::get(&self.dropped_oldest)
    }
}

/// What the emitting side and the worker of one destination share.
#[derive(Debug)]
pub(crate) struct LaneShared {
    pub(super) name: String,
    pub(super) counters: Counters,
    pub(super) capacity: usize,
    /// `queue_max_bytes`: the most [`held_bytes`](Self::held_bytes) before events are dropped.
    pub(super) max_bytes: usize,
    /// [`Event::held`] summed over the same events `queued` counts (queued, in the batch
    /// being filled, in delivery, waiting to retry): added by the push, given back with
    /// `queued` (eviction, a settled batch's `Release`).
    pub(super) held_bytes: AtomicUsize,
    /// [`Overflow::DropOldest`]: a full queue takes the new event and has the worker drop
    /// the oldest (see `Lane::offer`).
    pub(super) drop_oldest: bool,
    /// Raised when the queue is over its capacity (drop-oldest only): the worker evicts.
    pub(super) evict: Notify,
    /// Events the destination holds: sent and not yet settled, whether still in the queue or
    /// taken by the worker (`in_delivery`). The queue itself is unbounded; this bounds it, so
    /// the destination never holds more than its capacity, an outage included. (tokio's
    /// bounded channel gives each taken event's permit back under a mutex; the worker here
    /// gives a whole batch back with one subtraction once it settled.)
    pub(super) queued: AtomicUsize,
    /// Of `queued`, the events taken by the worker and not settled yet: the batch it fills,
    /// those in delivery, those waiting to be retried.
    pub(super) in_delivery: AtomicUsize,
    /// Events that make a full batch: the batch size, at most the capacity.
    pub(super) full_batch: usize,
    /// While the worker lingers: the queue length that, with the events it holds, fills its
    /// batch.
    pub(super) fills_batch: AtomicUsize,
    /// Raised by the event that fills a batch, to end the worker's linger. (The first event of
    /// a batch wakes the worker through the queue itself; the events in between wake nothing.)
    pub(super) batch_full: Notify,
    /// Cut the current linger short (flush).
    pub(super) flush_now: Notify,
    /// Stop taking events, deliver what is queued, then exit.
    pub(super) closing: AtomicBool,
    /// When the close must be done by (`shutdown`'s timeout), if it has a deadline: a worker
    /// with a spool starts no batch it could not finish by then (what it holds stays in the
    /// spool for the next start, rather than being cut off mid-delivery).
    pub(super) deadline: Mutex<Option<tokio::time::Instant>>,
    pub(super) close_now: Notify,
    /// Set by the worker's drop guard, whether it ended normally or was aborted.
    pub(super) finished: AtomicBool,
    pub(super) abort: Mutex<Option<tokio::task::AbortHandle>>,
    /// Delivery failures are logged at most every 10 s.
    pub(super) failures: RateLimitedWarning,
    /// Whether the last delivery attempt failed as a whole (the destination is down or
    /// refusing): such a destination is not sent drop reports.
    pub(super) failing: AtomicBool,
    /// The per-destination property filter, applied by the worker before `send`.
    pub(super) view: Option<PropertyView>,
    /// Raised with every counted drop, for the handle's drop monitor.
    pub(super) drop_signal: Arc<DropSignal>,
    /// The inspector's tap and this lane's index in it.
    #[cfg(feature = "inspector")]
    pub(super) tap: Option<crate::inspector::tap::LaneTap>,
}

#[cfg(feature = "inspector")]
impl LaneShared {
    /// The tap, while a page is open.
    #[inline]
    pub(super) fn inspecting(&self) -> Option<&crate::inspector::tap::LaneTap> {
        self.tap.as_ref().filter(|t| t.tap.active())
    }
}

impl LaneShared {
    /// Once per batch: out of line, so the code every event runs stays compact.
    #[cold]
    #[inline(never)]
    fn wake_worker(&self) {
        self.batch_full.notify_one();
    }

    /// The most events the queue may hold for a moment under drop-oldest, before the worker
    /// evicts: past it, new events are refused as under drop-newest (a worker that cannot
    /// run, e.g. a destination blocking its thread, never lets the queue grow unbounded).
    fn hard_capacity(&self) -> usize {
        self.capacity.saturating_mul(2)
    }

    /// [`hard_capacity`](Self::hard_capacity) in bytes.
    fn hard_max_bytes(&self) -> usize {
        self.max_bytes.saturating_mul(2)
    }

    /// Whether the destination holds more than it may: events or bytes (the worker evicts
    /// under drop-oldest).
    pub(super) fn over(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > self.capacity
            || self.held_bytes.load(Ordering::Relaxed) > self.max_bytes
    }
}

/// One destination as the handle sees it.
pub(crate) struct Lane {
    pub(super) tx: mpsc::UnboundedSender<Arc<Event>>,
    pub(super) shared: Arc<LaneShared>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// Everything a worker needs, handed over when the handle is built.
pub(crate) struct WorkerParts {
    pub(super) destination: Arc<dyn Destination>,
    pub(super) rx: mpsc::UnboundedReceiver<Arc<Event>>,
    pub(super) shared: Arc<LaneShared>,
    pub(super) progress: Arc<Notify>,
    pub(super) delivery: DeliveryConfig,
    /// The destination's spool: its worker is then [`spooled::run`].
    #[cfg(feature = "spool")]
    pub(super) spool: Option<crate::spool::Spool>,
}

/// A lane and its not-yet-spawned worker.
pub(super) fn lane(
    name: String,
    destination: Arc<dyn Destination>,
    delivery: DeliveryConfig,
    progress: Arc<Notify>,
    view: Option<PropertyView>,
    drop_signal: Arc<DropSignal>,
    #[cfg(feature = "inspector")] tap: Option<crate::inspector::tap::LaneTap>,
) -> (Lane, WorkerParts) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(LaneShared {
        name,
        counters: Counters::default(),
        capacity: delivery.queue_capacity,
        max_bytes: delivery.queue_max_bytes,
        held_bytes: AtomicUsize::new(0),
        drop_oldest: delivery.overflow == Overflow::DropOldest,
        evict: Notify::new(),
        queued: AtomicUsize::new(0),
        in_delivery: AtomicUsize::new(0),
        full_batch: delivery.batch_size.clamp(1, delivery.queue_capacity.max(1)),
        fills_batch: AtomicUsize::new(usize::MAX),
        batch_full: Notify::new(),
        flush_now: Notify::new(),
        closing: AtomicBool::new(false),
        deadline: Mutex::new(None),
        close_now: Notify::new(),
        finished: AtomicBool::new(false),
        abort: Mutex::new(None),
        failures: RateLimitedWarning::default(),
        failing: AtomicBool::new(false),
        view,
        drop_signal,
        #[cfg(feature = "inspector")]
        tap,
    });
    let parts = WorkerParts {
        destination,
        rx,
        shared: shared.clone(),
        progress,
        delivery,
        #[cfg(feature = "spool")]
        spool: None,
    };
    (Lane { tx, shared }, parts)
}

/// Outcome of offering an event to a lane.
pub(crate) enum Push {
    Queued,
    /// Not queued: the queue was full. The event comes back (an open inspector page is told
    /// which one was dropped).
    Full(Arc<Event>),
    Closed,
}

impl Lane {
    /// Never blocks: a full queue drops the event and counts it (reported later by the drop
    /// monitor, off this path).
    #[inline]
    pub(super) fn push(&self, event: Arc<Event>) -> Push {
        match self.offer(event) {
            Push::Queued => {
                Counters::add(&self.shared.counters.enqueued, 1);
                Push::Queued
            }
            Push::Full(event) => {
                Counters::add(&self.shared.counters.dropped_queue_full, 1);
                self.shared.drop_signal.raise();
                Push::Full(event)
            }
            Push::Closed => Push::Closed,
        }
    }

    /// Offers a drop report; a full queue loses it without counting it as a drop.
    pub(super) fn push_report(&self, event: Arc<Event>) {
        match self.offer(event) {
            Push::Queued => Counters::add(&self.shared.counters.enqueued, 1),
            Push::Full(_) => Counters::add(&self.shared.counters.reports_lost, 1),
            Push::Closed => {}
        }
    }

    /// Queues `event` if there is room (a slot and its bytes are taken first, so the queue never
    /// holds more than its capacity or `queue_max_bytes`, whatever the number of producers).
    ///
    /// The worker is woken twice per batch at most: through the queue by the first event (it
    /// starts the batch's clock), and here by the one that fills the batch. The worker takes
    /// nothing from the queue while a batch fills, so the count alone tells when that is.
    #[inline]
    fn offer(&self, event: Arc<Event>) -> Push {
        let shared = &*self.shared;
        // SeqCst with the worker's publishing of `fills_batch` (a store, then a load of
        // `queued`): of the two, one sees the other, so the event that fills a batch is never
        // missed. (On x86 the same instructions as relaxed ones.)
        let before = shared.queued.fetch_add(1, Ordering::SeqCst);
        // The byte bound: one more atomic add, of the size computed when the event was built.
        let held = event.held();
        let bytes = shared
            .held_bytes
            .fetch_add(held, Ordering::Relaxed)
            .saturating_add(held);
        if (before >= shared.capacity || bytes > shared.max_bytes) && !self.overflow(before, bytes)
        {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            shared.held_bytes.fetch_sub(held, Ordering::Relaxed);
            return Push::Full(event);
        }
        match self.tx.send(event) {
            Ok(()) => {
                if before + 1 == shared.fills_batch.load(Ordering::SeqCst) {
                    shared.wake_worker();
                }
                Push::Queued
            }
            Err(_) => {
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                shared.held_bytes.fetch_sub(held, Ordering::Relaxed);
                Push::Closed
            }
        }
    }

    /// The queue is full: whether to take the event anyway (drop-oldest: the worker is told
    /// to evict the oldest). Out of line: the full queue is the slow path.
    #[cold]
    #[inline(never)]
    fn overflow(&self, before: usize, bytes: usize) -> bool {
        let shared = &*self.shared;
        if !shared.drop_oldest
            || before >= shared.hard_capacity()
            || bytes > shared.hard_max_bytes()
        {
            return false;
        }
        shared.evict.notify_one();
        true
    }

    /// Tells the worker to stop taking events, deliver what is queued without lingering for
    /// fuller batches, and end (shutdown, or the last handle dropped).
    pub(super) fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.close_now.notify_one();
    }

    /// Whether a drop report may be sent here: not failing and room in the queue.
    pub(super) fn healthy(&self) -> bool {
        !self.shared.failing.load(Ordering::Relaxed)
            && self.queued() < self.shared.capacity
            && self.shared.held_bytes.load(Ordering::Relaxed) < self.shared.max_bytes
    }

    /// Events waiting in the queue (not those the worker took).
    pub(super) fn queued(&self) -> usize {
        let shared = &self.shared;
        let held = shared.queued.load(Ordering::Relaxed);
        held.saturating_sub(shared.in_delivery.load(Ordering::Relaxed))
            .min(shared.capacity)
    }
}
