//! The worker: drains one destination's queue in batches and delivers them with retries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::attempt::{Attempt, Items, Settle, Verdict};
use super::{Counters, LaneShared, WorkerParts, recycle};
use crate::destination::{DeliveryError, DeliveryErrorKind, Destination};
use crate::diag::Escaped;
use crate::event::Event;
#[cfg(feature = "inspector")]
use crate::inspector::tap::Outcome;

/// A background task that runs next to the workers (the drop monitor).
pub(crate) type Companion = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts every worker and `companion`: on the current tokio runtime when there is one, else
/// on a dedicated thread running a small runtime of its own (so a handle built outside async
/// code works).
pub(crate) fn spawn_workers(parts: Vec<WorkerParts>, companion: Option<Companion>) {
    if parts.is_empty() {
        return;
    }
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        for p in parts {
            let shared = p.shared.clone();
            let task = handle.spawn(run(p));
            *lock(&shared) = Some(task.abort_handle());
        }
        if let Some(c) = companion {
            handle.spawn(c);
        }
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(target: "tower_telemetry", error = %e, "cannot start the telemetry runtime; events will queue and be dropped");
            return;
        }
    };
    let mut tasks = Vec::with_capacity(parts.len());
    for p in parts {
        let shared = p.shared.clone();
        let task = rt.spawn(run(p));
        *lock(&shared) = Some(task.abort_handle());
        tasks.push(task);
    }
    if let Some(c) = companion {
        tasks.push(rt.spawn(c));
    }
    let spawned = std::thread::Builder::new()
        .name("tower-telemetry".into())
        .spawn(move || {
            rt.block_on(async {
                for t in tasks {
                    let _ = t.await;
                }
            })
        });
    if let Err(e) = spawned {
        tracing::error!(target: "tower_telemetry", error = %e, "cannot start the telemetry thread");
    }
}

fn lock(shared: &LaneShared) -> std::sync::MutexGuard<'_, Option<tokio::task::AbortHandle>> {
    shared.abort.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the worker finished however it ends (normally, aborted, or panicking).
pub(super) struct FinishGuard {
    pub(super) shared: Arc<LaneShared>,
    pub(super) progress: Arc<Notify>,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.shared.finished.store(true, Ordering::Release);
        self.progress.notify_waiters();
    }
}

async fn run(parts: WorkerParts) {
    #[cfg(feature = "spool")]
    let parts = match parts.spool {
        Some(spool) => {
            let parts = WorkerParts {
                spool: None,
                ..parts
            };
            return super::spooled::run(parts, spool).await;
        }
        None => parts,
    };
    let WorkerParts {
        destination,
        mut rx,
        shared,
        progress,
        delivery,
        ..
    } = parts;
    let _guard = FinishGuard {
        shared: shared.clone(),
        progress: progress.clone(),
    };
    let max = delivery.batch_size;
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(max);
    let mut in_flight = JoinSet::new();

    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        if closing {
            rx.close(); // take the rest as it comes, without lingering
        }
        // Wait for the first event: the queue wakes us. Idle, the worker has no timer.
        evict(&mut rx, &shared);
        let n = if closing {
            rx.recv_many(&mut batch, max).await
        } else {
            tokio::select! {
                biased;
                _ = shared.close_now.notified() => continue,
                n = rx.recv_many(&mut batch, max) => n,
            }
        };
        if n == 0 {
            break; // closed and drained
        }
        shared.in_delivery.fetch_add(n, Ordering::Relaxed);
        if !closing && batch.len() < max {
            evicting(&mut rx, &shared, linger(&shared, &delivery, batch.len())).await;
            evict(&mut rx, &shared);
            take_queued(&mut rx, &mut batch, max, &shared);
        }
        let mut full = std::mem::replace(&mut batch, Vec::with_capacity(max));
        // What the taken events count against `queue_max_bytes` (before a view copies them).
        let bytes = full.iter().map(|e| e.held()).sum();
        draw_ids(&mut full);
        if let Some(view) = &shared.view {
            full = view.apply(full);
        }
        if delivery.concurrency <= 1 {
            let held = Held {
                events: full.len(),
                bytes,
            };
            let delivered = deliver(&*destination, full, held, &shared, &delivery);
            evicting(&mut rx, &shared, delivered).await;
            progress.notify_waiters();
        } else {
            while in_flight.len() >= delivery.concurrency {
                let joined = evicting(&mut rx, &shared, in_flight.join_next()).await;
                lost(&shared, joined);
            }
            let (d, s, p) = (destination.clone(), shared.clone(), progress.clone());
            let held = Held {
                events: full.len(),
                bytes,
            };
            in_flight.spawn(async move {
                deliver(&*d, full, held, &s, &delivery).await;
                p.notify_waiters();
            });
        }
    }
    while let Some(joined) = in_flight.join_next().await {
        lost(&shared, Some(joined));
    }
    destination.shutdown().await;
}

/// Waits while a batch fills: until it is full, the flush interval has passed since it began,
/// a flush asks for it, or the handle closes. One timer per batch, and the worker listens to
/// no event but the one that fills the batch (see `Lane::offer`): a lone event costs one
/// wake-up at its deadline, not a poll every few milliseconds.
async fn linger(shared: &LaneShared, delivery: &crate::config::DeliveryConfig, held: usize) {
    let wanted = shared.full_batch.saturating_sub(held);
    if delivery.flush_interval.is_zero() || wanted == 0 {
        return;
    }
    // `queued` also counts what the worker took and has not settled (the `held` events and
    // batches in delivery): the batch fills when the queue proper has `wanted` more. Batches
    // settling meanwhile lower `queued` and can only make the wake-up later, never lost (the
    // deadline stands).
    let fills = wanted + shared.in_delivery.load(Ordering::Relaxed);
    // Published before the queue is looked at: an event queued meanwhile either sees the
    // threshold or is counted in that look.
    shared.fills_batch.store(fills, Ordering::SeqCst);
    let full = || shared.queued.load(Ordering::SeqCst) >= fills;
    if full() {
        return;
    }
    let deadline = tokio::time::sleep(delivery.flush_interval);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = shared.close_now.notified() => return,
            _ = shared.flush_now.notified() => return,
            // A permit left from an earlier batch wakes us early: look again.
            _ = shared.batch_full.notified() => if full() { return },
            _ = &mut deadline => return,
        }
    }
}

/// Logs a delivery task that ended without settling its batch. Not expected: the attempt
/// loop catches the destination's panics, so only a panic in the crate's own code gets here.
pub(super) fn lost(shared: &LaneShared, joined: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = joined {
        tracing::error!(
            target: "tower_telemetry",
            destination = %Escaped(&shared.name),
            error = %Escaped(&e.to_string()),
            "a telemetry delivery task ended without settling its batch"
        );
    }
}

/// Runs `work` while evicting the oldest queued events whenever the queue is over its
/// capacity (drop-oldest: see `Lane::overflow`), so a batch in retry never stops the queue
/// from keeping the newest events.
async fn evicting<F: std::future::Future>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    shared: &LaneShared,
    work: F,
) -> F::Output {
    if !shared.drop_oldest {
        return work.await;
    }
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            output = &mut work => return output,
            _ = shared.evict.notified() => evict(rx, shared),
        }
    }
}

/// Drops the oldest queued events while the queue is over its capacity, counting them.
pub(super) fn evict(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    shared: &LaneShared,
) {
    if !shared.drop_oldest {
        return;
    }
    let mut evicted = 0;
    while shared.over() {
        match rx.try_recv() {
            Ok(event) => {
                shared.held_bytes.fetch_sub(event.held(), Ordering::Relaxed);
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                evicted += 1;
                #[cfg(feature = "inspector")]
                if let Some(t) = shared.inspecting() {
                    let why = "dropped for a newer event: the queue was full";
                    t.tap
                        .outcomes(t.lane, std::iter::once(&event), Outcome::Dropped, Some(why));
                }
            }
            Err(_) => break,
        }
    }
    if evicted > 0 {
        Counters::add(&shared.counters.dropped_oldest, evicted);
        shared.drop_signal.raise();
    }
}

/// Draws the ids `track!` left to the worker (see `Event::draw_id`), before any destination
/// or view sees the batch. Such an event went to this destination only, and nothing but the
/// queue held it: the worker is its only owner and sets the id in place.
pub(super) fn draw_ids(batch: &mut [Arc<Event>]) {
    for e in batch {
        if e.id_pending {
            match Arc::get_mut(e) {
                Some(event) => event.draw_id(),
                // Not reached (see above); a copy keeps the event whole if it ever is.
                None => {
                    let mut copy = Event::clone(e);
                    copy.draw_id();
                    *e = Arc::new(copy);
                }
            }
        }
    }
}

/// Moves what is queued into `batch`, up to `max` events, counting them as taken by the worker
/// (their room in the queue comes back when their batch settles: see `Release`).
fn take_queued(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    batch: &mut Vec<Arc<Event>>,
    max: usize,
    shared: &LaneShared,
) {
    let before = batch.len();
    while batch.len() < max {
        match rx.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break,
        }
    }
    let taken = batch.len() - before;
    if taken > 0 {
        shared.in_delivery.fetch_add(taken, Ordering::Relaxed);
    }
}

/// The room in the memory queue a batch holds until it settles: its events and their
/// [`Event::held`] bytes (none for a batch read from a spool).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Held {
    pub(super) events: usize,
    pub(super) bytes: usize,
}

/// Delivers one batch through the attempt loop, counting every event exactly once, then
/// gives back the room in the queue it `held`.
pub(super) async fn deliver(
    destination: &dyn Destination,
    batch: Vec<Arc<Event>>,
    held: Held,
    shared: &LaneShared,
    delivery: &crate::config::DeliveryConfig,
) {
    let _release = Release {
        shared,
        events: held.events,
        bytes: held.bytes,
    };
    let mut count = Count {
        shared,
        delivered: 0,
    };
    Attempt::new(destination, delivery)
        .run(&batch, &mut count)
        .await;
    recycle::give(batch);
    // Counts the delivered events after the batch went back to the pool: once `flush` sees
    // them settled, the tracking thread finds them there for its next events.
    drop(count);
}

/// Gives a batch's room in the queue back once it settled (or, were its delivery ever to end
/// without settling, when it is dropped): until then its events count against the capacity,
/// so an outage never makes the destination hold more than `queue_capacity` events (nor
/// `queue_max_bytes` bytes).
struct Release<'a> {
    shared: &'a LaneShared,
    events: usize,
    /// The events' [`Event::held`] sizes, summed when the worker took them.
    bytes: usize,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.shared
            .in_delivery
            .fetch_sub(self.events, Ordering::Relaxed);
        self.shared
            .held_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
        self.shared.queued.fetch_sub(self.events, Ordering::SeqCst);
    }
}

/// Counts a batch's verdicts in its lane's counters as they come (the delivered ones once the
/// batch settled), and logs failures.
struct Count<'a> {
    shared: &'a LaneShared,
    /// Delivered events, added to the counters when this is dropped: by `deliver` after it
    /// recycled the batch, or wherever its delivery is abandoned (an aborted task).
    delivered: usize,
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        Counters::add(&self.shared.counters.delivered, self.delivered);
    }
}

impl Settle for Count<'_> {
    fn answered(&mut self, result: Result<(), &DeliveryError>) {
        // A destination refusing whole batches is not sent drop reports.
        let failing = match result {
            Ok(()) => false,
            Err(e) => e.items().is_none() && e.kind() != DeliveryErrorKind::Discarded,
        };
        self.shared.failing.store(failing, Ordering::Relaxed);
    }

    fn settled(
        &mut self,
        verdict: Verdict,
        items: Items<'_>,
        error: Option<&DeliveryError>,
        attempts: u32,
    ) {
        let shared = self.shared;
        let c = &shared.counters;
        let n = items.len();
        let reports = || reports_in(items.events());
        #[cfg(feature = "inspector")]
        if let Some(t) = &shared.tap {
            inspect_settled(t, verdict, items, error);
        }
        match verdict {
            Verdict::Delivered => {
                self.delivered += n;
                return;
            }
            Verdict::Discarded => {
                Counters::add(&c.discarded, n);
                Counters::add(&c.report_discarded, reports());
            }
            Verdict::Failed | Verdict::GaveUp => {
                Counters::add(&c.failed, n);
                Counters::add(&c.report_failed, reports());
            }
        }
        shared.drop_signal.raise();
        let Some(since) = shared.failures.hit() else {
            return;
        };
        let error = error.map(tracing::field::display);
        if verdict == Verdict::GaveUp {
            tracing::warn!(
                target: "tower_telemetry",
                destination = %Escaped(&shared.name),
                events = n,
                attempts,
                failures_since_last_warning = since,
                error,
                "telemetry delivery failed; giving up on these events"
            );
        } else {
            tracing::warn!(
                target: "tower_telemetry",
                destination = %Escaped(&shared.name),
                events = n,
                failures_since_last_warning = since,
                error,
                "telemetry events not delivered"
            );
        }
    }

    fn retrying(&mut self, attempt: u32, items: Items<'_>, wait: Duration, error: &DeliveryError) {
        let events = items.len();
        #[cfg(feature = "inspector")]
        if let Some(t) = &self.shared.tap {
            let message = error.to_string();
            t.tap
                .error(t.lane, Outcome::Retrying, message.clone(), events);
            if t.tap.active() {
                t.tap
                    .outcomes(t.lane, items.events(), Outcome::Retrying, Some(&message));
            }
        }
        tracing::debug!(
            target: "tower_telemetry",
            destination = %Escaped(&self.shared.name),
            events,
            attempt,
            ?wait,
            error = %error,
            "telemetry delivery failed; retrying"
        );
        Counters::add(&self.shared.counters.retries, 1);
    }
}

/// Tells the inspector what became of a settled part of a batch: its errors always (they are
/// kept for the page), each event's outcome while a page is open.
#[cfg(feature = "inspector")]
fn inspect_settled(
    t: &crate::inspector::tap::LaneTap,
    verdict: Verdict,
    items: Items<'_>,
    error: Option<&DeliveryError>,
) {
    let outcome = match verdict {
        Verdict::Delivered => Outcome::Delivered,
        Verdict::Discarded => Outcome::Discarded,
        Verdict::Failed | Verdict::GaveUp => Outcome::Failed,
    };
    let message = error.map(|e| match verdict {
        Verdict::GaveUp => format!("gave up after retrying: {e}"),
        _ => e.to_string(),
    });
    if let Some(m) = &message {
        t.tap.error(t.lane, outcome, m.clone(), items.len());
    }
    if t.tap.active() {
        t.tap
            .outcomes(t.lane, items.events(), outcome, message.as_deref());
    }
}

/// How many of `events` are drop reports (whose own loss is never reported).
fn reports_in<'a>(events: impl Iterator<Item = &'a Arc<Event>>) -> usize {
    events
        .filter(|e| e.name() == crate::dispatch::DROPPED_EVENT)
        .count()
}
