//! The worker of a destination with a spool (feature `spool`).
//!
//! It does two things at once, so that an outage never stops the first:
//!
//! - **intake**: it takes what `track!` pushed into the memory queue, as it comes, and writes
//!   it to the spool in one commit per chunk; the events' room in the memory queue is given
//!   back then, so during an outage the spool (bounded by its `max_bytes`) holds what the
//!   memory queue cannot. Beyond `max_bytes`, drop-oldest removes the oldest unsent records
//!   (`dropped_oldest`); drop-newest leaves the events in memory, where they keep their room,
//!   so the memory queue fills and new events are dropped when pushed (`dropped_queue_full`).
//! - **sending**: batches of `batch_size` (or what there is after `flush_interval`), oldest
//!   first, through the same attempt loop as the memory-only worker (`concurrency` batches at
//!   once); a batch's records are removed from the spool after every event of it has its
//!   verdict (delivered, failed, discarded, given up).
//!
//! On start, the records an earlier process left are counted (`enqueued`, `replayed`) and sent
//! first, with their original ids and timestamps. Recently written events are kept in memory
//! too (a few batches' worth), so a healthy destination is sent what the worker holds rather
//! than what it reads back; what is not kept is read back from the store.
//!
//! The store is only ever called from blocking tasks (`spawn_blocking`), one call at a time:
//! the runtime's threads never wait on the disk. A store that fails (a full disk, an
//! unwritable path, a damaged file) is reported (a warning at most every 10 s) and its events
//! go on from memory, counted `spool_fallback`; it is tried again every 10 s.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::worker::{FinishGuard, Held, deliver, draw_ids, evict, lost};
use super::{Counters, LaneShared, WorkerParts};
use crate::diag::{Escaped, RateLimitedWarning};
use crate::event::Event;
use crate::spool::store::SyncClock;
use crate::spool::{Slot, Spool};

/// How long a failed store is left alone before it is tried again.
const RETRY_STORE: Duration = Duration::from_secs(10);

/// The most events kept in memory besides their records (beyond this, they are read back).
const CACHE_EVENTS: usize = 1024;
/// ... and the most bytes.
const CACHE_BYTES: usize = 16 << 20;

/// One batch on its way: its events, the records to remove once it settled, and the room
/// it holds in the memory queue (events that went on from memory only).
struct Batch {
    events: Vec<Arc<Event>>,
    keys: Vec<u64>,
    held: Held,
}

/// What an append in the blocking task hands back.
struct Spooled {
    events: Vec<Arc<Event>>,
    appended: crate::spool::store::Appended,
    /// The store's first record number and its records before the append.
    before: (u64, u64),
    next: u64,
    bytes: u64,
    clock: Arc<SyncClock>,
    salvaged: Option<crate::spool::store::Salvaged>,
}

/// The worker's view of the spool.
struct State {
    shared: Arc<LaneShared>,
    spool: Spool,
    clock: Option<Arc<SyncClock>>,
    /// The first record not yet taken for sending.
    cursor: u64,
    /// The number the next record gets.
    next: u64,
    /// Events of records `cursor..` kept in memory, in order, from `cursor` on.
    cache: VecDeque<(u64, Arc<Event>)>,
    cache_bytes: usize,
    /// Events taken from the memory queue that the spool did not take: they keep their room
    /// in the queue (their `held` sizes alongside) until their batch settles.
    loose: VecDeque<(Arc<Event>, usize)>,
    /// Since when something waits to be sent (the linger's start).
    waiting_since: Option<Instant>,
    /// A flush asked for what waits to be sent now.
    hurry: bool,
    /// The store failed: left alone until then.
    retry_at: Option<Instant>,
    /// Records whose removal failed, removed with the next ones.
    to_remove: Vec<u64>,
    warnings: RateLimitedWarning,
}

pub(super) async fn run(parts: WorkerParts, spool: Spool) {
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
    let mut state = State::new(shared.clone(), spool);
    let full_batch = shared.full_batch;
    let chunk = delivery.batch_size.max(512);
    let concurrency = delivery.concurrency.max(1);
    let mut buf: Vec<Arc<Event>> = Vec::with_capacity(chunk);
    let mut in_flight: JoinSet<Vec<u64>> = JoinSet::new();
    let mut closing = false;
    let mut intake_done = false;

    loop {
        if !closing && shared.closing.load(Ordering::Acquire) {
            closing = true;
            rx.close(); // take the rest as it comes
        }
        while let Some(joined) = in_flight.try_join_next() {
            state.settled(Some(joined)).await;
        }
        // Closing by a deadline: no batch starts that its timeout could carry past it (what is
        // left stays in the spool for the next start, delivered once).
        let too_late = closing && state.too_late(&delivery);
        while !too_late && in_flight.len() < concurrency && state.ready(closing, &delivery) {
            let Some(batch) = state.take(full_batch).await else {
                break;
            };
            let (d, s, p) = (destination.clone(), shared.clone(), progress.clone());
            in_flight.spawn(async move {
                let Batch { events, keys, held } = batch;
                deliver(&*d, events, held, &s, &delivery).await;
                p.notify_waiters();
                keys
            });
        }
        if intake_done && in_flight.is_empty() && (state.is_empty() || too_late) {
            break;
        }
        // A batch waiting for a free delivery slot is not woken by its linger.
        let linger = if in_flight.len() < concurrency && !too_late {
            state.linger_deadline(&delivery)
        } else {
            None
        };
        let sync_at = (state.clock.as_ref())
            .and_then(|c| c.deadline())
            .map(Instant::from_std);
        tokio::select! {
            biased;
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                state.settled(Some(joined)).await;
            }
            _ = shared.close_now.notified(), if !closing => {}
            _ = shared.flush_now.notified() => state.hurry = true,
            _ = shared.evict.notified(), if shared.drop_oldest => evict(&mut rx, &shared),
            n = rx.recv_many(&mut buf, chunk), if !intake_done => {
                if n == 0 {
                    intake_done = true;
                } else {
                    state.intake(std::mem::take(&mut buf)).await;
                    buf.reserve(chunk);
                    progress.notify_waiters();
                }
            }
            _ = sleep_until(linger), if linger.is_some() => {}
            _ = sleep_until(sync_at), if sync_at.is_some() => state.sync().await,
        }
    }
    state.sync().await;
    destination.shutdown().await;
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Runs `f` on the store in a blocking task; `None` if that task could not run (the runtime
/// is shutting down).
async fn on_store<T: Send + 'static>(
    slot: &Arc<Mutex<Slot>>,
    f: impl FnOnce(&mut Slot) -> T + Send + 'static,
) -> Option<T> {
    let slot = slot.clone();
    tokio::task::spawn_blocking(move || f(&mut slot.lock().unwrap_or_else(|e| e.into_inner())))
        .await
        .ok()
}

impl State {
    fn new(shared: Arc<LaneShared>, mut spool: Spool) -> State {
        let c = &shared.counters;
        let mut slot = spool.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (first, next, left, bytes, clock) = match slot.usable() {
            Some(store) => (
                store.first(),
                store.next(),
                store.records(),
                store.bytes(),
                Some(store.clock()),
            ),
            None => (0, 0, 0, 0, None),
        };
        let retry_at = slot.failure.is_some().then(|| Instant::now() + RETRY_STORE);
        drop(slot);
        // What an earlier process left: taken in now, sent first.
        Counters::add(&c.enqueued, left as usize);
        Counters::add(&c.replayed, left as usize);
        c.spool_bytes.store(bytes, Ordering::Relaxed);
        if let Some(salvaged) = spool.salvaged.take() {
            Counters::add(&c.spool_corrupt, salvaged.lost as usize);
            if salvaged.lost > 0 {
                shared.drop_signal.raise();
            }
            tracing::warn!(
                target: "tower_telemetry",
                destination = %Escaped(&shared.name),
                moved_to = %salvaged.moved_to.display(),
                salvaged = salvaged.records,
                lost = salvaged.lost,
                "the telemetry spool was damaged: {} record(s) salvaged, {} lost",
                salvaged.records,
                salvaged.lost
            );
        }
        State {
            clock,
            cursor: first,
            next,
            cache: VecDeque::new(),
            cache_bytes: 0,
            loose: VecDeque::new(),
            // Left by an earlier process: sent at once, not after a linger.
            waiting_since: (left > 0).then(|| Instant::now() - Duration::from_secs(3600)),
            hurry: false,
            retry_at,
            to_remove: Vec::new(),
            warnings: RateLimitedWarning::default(),
            shared,
            spool,
        }
    }

    /// Records not yet taken for sending, and events waiting in memory.
    fn waiting(&self) -> u64 {
        (self.next - self.cursor) + self.loose.len() as u64
    }

    /// Nothing waits to be sent.
    fn is_empty(&self) -> bool {
        self.waiting() == 0
    }

    /// Whether a batch should be sent now: a full one waits, or the oldest waiting event
    /// lingered `flush_interval`, or a flush or the close asks for everything.
    fn ready(&self, closing: bool, delivery: &crate::config::DeliveryConfig) -> bool {
        let waiting = self.waiting();
        waiting > 0
            && (closing
                || self.hurry
                || waiting >= self.shared.full_batch as u64
                || self
                    .linger_deadline(delivery)
                    .is_none_or(|at| at <= Instant::now()))
    }

    /// When the oldest waiting event has lingered long enough.
    fn linger_deadline(&self, delivery: &crate::config::DeliveryConfig) -> Option<Instant> {
        if self.is_empty() || self.hurry {
            return None;
        }
        self.waiting_since.map(|t| t + delivery.flush_interval)
    }

    /// Whether the close's deadline is too near for a batch's attempt (its `timeout`).
    fn too_late(&self, delivery: &crate::config::DeliveryConfig) -> bool {
        let deadline = *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        deadline.is_some_and(|d| Instant::now() + delivery.timeout > d)
    }

    /// Whether the store may be called now (usable, or its retry time has come).
    fn store_due(&self) -> bool {
        self.retry_at.is_none_or(|at| at <= Instant::now())
    }

    /// Writes `events` (just taken from the memory queue) to the spool, giving their room in
    /// the memory queue back; what the spool does not take waits in memory.
    async fn intake(&mut self, mut events: Vec<Arc<Event>>) {
        let shared = self.shared.clone();
        let n = events.len();
        shared.in_delivery.fetch_add(n, Ordering::Relaxed);
        let held: Vec<usize> = events.iter().map(|e| e.held()).collect();
        draw_ids(&mut events);
        if let Some(view) = &shared.view {
            events = view.apply(events);
        }
        if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        if !self.store_due() {
            return self.keep_in_memory(events, held, true);
        }
        let evict_from = shared.drop_oldest.then_some(self.cursor);
        let config = self.spool.config.clone();
        let result = on_store(&self.spool.slot, move |slot| {
            let mut salvaged = None;
            if slot.usable().is_none() {
                match slot.reopen(&config) {
                    Ok(s) => salvaged = s,
                    Err(why) => return Err((events, why)),
                }
            }
            let Some(store) = slot.usable() else {
                return Err((events, "the store is closed".to_owned()));
            };
            let before = (store.first(), store.records());
            match store.append(&events, evict_from) {
                Ok(a) => Ok(Spooled {
                    events,
                    appended: a,
                    before,
                    next: store.next(),
                    bytes: store.bytes(),
                    clock: store.clock(),
                    salvaged,
                }),
                Err(e) => Err((events, e.to_string())),
            }
        })
        .await;
        let Some(result) = result else {
            return; // the runtime is going away: the events stay counted as undelivered
        };
        match result {
            Ok(Spooled {
                events,
                appended,
                before,
                next,
                bytes,
                clock,
                salvaged,
            }) => {
                self.retry_at = None;
                if self.clock.is_none() {
                    // Opened only now (it could not be at start): what it held is older than
                    // anything this process sent, and is taken in now.
                    let (first, records) = before;
                    let left = records as usize;
                    Counters::add(&shared.counters.enqueued, left);
                    Counters::add(&shared.counters.replayed, left);
                    self.cursor = first;
                }
                self.clock = Some(clock);
                if let Some(s) = salvaged {
                    Counters::add(&shared.counters.spool_corrupt, s.lost as usize);
                }
                let c = &shared.counters;
                let taken = appended.taken;
                let taken_bytes: usize = held[..taken].iter().sum();
                shared.in_delivery.fetch_sub(taken, Ordering::Relaxed);
                shared.held_bytes.fetch_sub(taken_bytes, Ordering::Relaxed);
                shared.queued.fetch_sub(taken, Ordering::SeqCst);
                Counters::add(&c.spooled, taken);
                c.spool_bytes.store(bytes, Ordering::Relaxed);
                if appended.evicted > 0 {
                    Counters::add(&c.dropped_oldest, appended.evicted as usize);
                    shared.drop_signal.raise();
                    while self
                        .cache
                        .front()
                        .is_some_and(|(k, _)| *k < appended.cursor)
                    {
                        if let Some((_, e)) = self.cache.pop_front() {
                            self.cache_bytes -= e.held();
                        }
                    }
                    self.cursor = self.cursor.max(appended.cursor);
                }
                self.next = next;
                let mut events = events;
                let rest = events.split_off(taken);
                self.remember(appended.first, events);
                if !rest.is_empty() {
                    self.keep_in_memory(rest, held[taken..].to_vec(), false);
                }
            }
            Err((events, why)) => {
                self.retry_at = Some(Instant::now() + RETRY_STORE);
                self.warn(&why);
                self.keep_in_memory(events, held, true);
            }
        }
    }

    /// Events the spool did not take: sent from memory, keeping their room in the queue.
    fn keep_in_memory(&mut self, events: Vec<Arc<Event>>, held: Vec<usize>, fallback: bool) {
        if fallback {
            Counters::add(&self.shared.counters.spool_fallback, events.len());
        }
        self.loose.extend(events.into_iter().zip(held));
    }

    /// Keeps the events of records `first..` in memory, if they follow what is kept and
    /// there is room.
    fn remember(&mut self, first: u64, events: Vec<Arc<Event>>) {
        let follows = match self.cache.back() {
            Some((k, _)) => k + 1 == first,
            None => self.cursor == first,
        };
        let bytes: usize = events.iter().map(|e| e.held()).sum();
        if !follows
            || self.cache.len() + events.len() > CACHE_EVENTS
            || self.cache_bytes + bytes > CACHE_BYTES
        {
            return;
        }
        self.cache_bytes += bytes;
        self.cache.extend((first..).zip(events));
    }

    /// The next batch: events waiting in memory first (they hold room in the queue), else the
    /// oldest records, from memory or read back.
    async fn take(&mut self, max: usize) -> Option<Batch> {
        if !self.loose.is_empty() {
            let n = self.loose.len().min(max);
            let mut held = Held::default();
            let events = self
                .loose
                .drain(..n)
                .map(|(e, bytes)| {
                    held.events += 1;
                    held.bytes += bytes;
                    e
                })
                .collect();
            self.after_take();
            return Some(Batch {
                events,
                keys: Vec::new(),
                held,
            });
        }
        while self.cursor < self.next {
            if self.cache.front().is_some_and(|(k, _)| *k == self.cursor) {
                let n = self.cache.len().min(max);
                let mut keys = Vec::with_capacity(n);
                let mut events = Vec::with_capacity(n);
                for (k, e) in self.cache.drain(..n) {
                    self.cache_bytes -= e.held();
                    keys.push(k);
                    events.push(e);
                }
                self.cursor = keys[keys.len() - 1] + 1;
                self.after_take();
                return Some(Batch {
                    events,
                    keys,
                    held: Held::default(),
                });
            }
            let from = self.cursor;
            let read = on_store(&self.spool.slot, move |slot| match slot.usable() {
                Some(store) => store.read(from, max).map_err(|e| e.to_string()),
                None => Err("the store is closed".to_owned()),
            })
            .await;
            let records = match read {
                Some(Ok(records)) => records,
                Some(Err(why)) => {
                    // Unreadable now: what it holds stays for the next start.
                    self.warn(&why);
                    self.retry_at = Some(Instant::now() + RETRY_STORE);
                    self.cursor = self.next;
                    self.after_take();
                    return None;
                }
                None => {
                    self.cursor = self.next;
                    self.after_take();
                    return None;
                }
            };
            let Some(last) = records.last().map(|r| r.0) else {
                self.cursor = self.next;
                break;
            };
            self.cursor = last + 1;
            let mut keys = Vec::with_capacity(records.len());
            let mut events = Vec::with_capacity(records.len());
            let mut damaged = 0usize;
            for (key, record) in records {
                match record {
                    Ok(event) => {
                        keys.push(key);
                        events.push(Arc::new(event));
                    }
                    Err(why) => {
                        damaged += 1;
                        self.to_remove.push(key);
                        self.warn(&format!("record {key} is damaged: {why}"));
                    }
                }
            }
            if damaged > 0 {
                // Counted in `enqueued` when found at start, or when tracked: they end here.
                let c = &self.shared.counters;
                Counters::add(&c.spool_corrupt, damaged);
                Counters::add(&c.failed, damaged);
                self.shared.drop_signal.raise();
            }
            if !events.is_empty() {
                self.after_take();
                return Some(Batch {
                    events,
                    keys,
                    held: Held::default(),
                });
            }
        }
        self.after_take();
        None
    }

    /// After a batch was taken: the linger starts again for what still waits.
    fn after_take(&mut self) {
        if self.is_empty() {
            self.waiting_since = None;
            self.hurry = false;
        } else if self.waiting() < self.shared.full_batch as u64 && !self.hurry {
            self.waiting_since = Some(Instant::now());
        }
    }

    /// A batch settled: its records are removed from the spool.
    async fn settled(&mut self, joined: Option<Result<Vec<u64>, tokio::task::JoinError>>) {
        let keys = match joined {
            Some(Ok(keys)) => keys,
            Some(Err(e)) => {
                // Its records stay: sent again at the next start.
                lost(&self.shared, Some(Err(e)));
                return;
            }
            None => return,
        };
        let mut keys = keys;
        keys.append(&mut self.to_remove);
        if keys.is_empty() {
            return;
        }
        let removed = on_store(&self.spool.slot, move |slot| match slot.usable() {
            Some(store) => match store.remove(&keys) {
                Ok(()) => Ok(store.bytes()),
                Err(e) => Err((keys, e.to_string())),
            },
            None => Err((keys, "the store is closed".to_owned())),
        })
        .await;
        match removed {
            Some(Ok(bytes)) => self
                .shared
                .counters
                .spool_bytes
                .store(bytes, Ordering::Relaxed),
            Some(Err((keys, why))) => {
                self.warn(&why);
                self.to_remove = keys;
            }
            None => {}
        }
    }

    /// Syncs what the interval has not synced yet.
    async fn sync(&mut self) {
        if self.clock.is_none() {
            return;
        }
        let synced = on_store(&self.spool.slot, |slot| match slot.usable() {
            Some(store) => store.sync().map_err(|e| e.to_string()),
            None => Ok(()),
        })
        .await;
        if let Some(Err(why)) = synced {
            self.warn(&why);
        }
    }

    /// A store failure, logged at most every 10 s.
    fn warn(&self, why: &str) {
        if let Some(since) = self.warnings.hit() {
            tracing::warn!(
                target: "tower_telemetry",
                destination = %Escaped(&self.shared.name),
                error = %Escaped(why),
                failures_since_last_warning = since,
                "the telemetry spool failed; events go on from memory"
            );
        }
    }
}
