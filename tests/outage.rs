//! Outages and misbehaving destinations: a refusing destination loses nothing while the retry
//! budget and the queue last, a full queue drops by its documented policy and counts it, and a
//! panicking destination hurts only the batch it panicked on. Every scenario runs on tokio's
//! paused clock: minutes of outage take milliseconds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::logs::Logs;
use tokio::time::Instant;
use tower_telemetry::{
    DestinationStats, DropReport, Event, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, Overflow},
    destination::{BoxFuture, DeliveryError, Destination, MemoryDestination},
    track,
};

mod support;

const SECOND: Duration = Duration::from_secs(1);

/// A destination that refuses (retryably, like a refused connection) until `up_at`, then takes
/// everything, recording the `seq` of each event it took and every event id.
#[derive(Clone)]
struct Outage {
    up_at: Instant,
    taken: Arc<Mutex<Vec<(u64, uuid::Uuid)>>>,
}

impl Outage {
    fn for_(d: Duration) -> Outage {
        Outage {
            up_at: Instant::now() + d,
            taken: Arc::default(),
        }
    }

    /// The `seq` of every event taken, sorted, after checking each event id came once.
    fn seqs(&self) -> Vec<u64> {
        let taken = self.taken.lock().unwrap();
        let ids: HashSet<uuid::Uuid> = taken.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), taken.len(), "an event was delivered twice");
        let mut seqs: Vec<u64> = taken.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs
    }
}

fn seq_of(e: &Event) -> u64 {
    e.properties()
        .get("seq")
        .and_then(|v| v.to_json().as_u64())
        .expect("every event has a seq")
}

impl Destination for Outage {
    fn name(&self) -> &str {
        "outage"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if Instant::now() < self.up_at {
                return Err(DeliveryError::retryable("connection refused"));
            }
            let mut taken = self.taken.lock().unwrap();
            taken.extend(batch.iter().map(|e| (seq_of(e), e.id())));
            Ok(())
        })
    }
}

fn handle(delivery: DeliveryConfig, d: impl Destination) -> Telemetry {
    Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("outage").with_delivery(delivery)),
        )
        .destination("outage", d)
        .build()
        .unwrap()
}

/// Tracks `n` events (`seq` 0..n), one every `every` of virtual time.
async fn track_steadily(t: &Telemetry, n: u64, every: Duration) {
    for seq in 0..n {
        track!(t => "page.view", seq = seq);
        tokio::time::sleep(every).await;
    }
}

/// `enqueued = delivered + failed + discarded + dropped_oldest + undelivered`, and every event
/// tracked was either enqueued or dropped as the newest.
fn assert_accounted(d: &DestinationStats, tracked: u64) {
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{d:?}"
    );
    assert_eq!(d.enqueued + d.dropped_queue_full, tracked, "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn a_30_s_outage_loses_nothing_while_the_queue_has_room() {
    let outage = Outage::for_(SECOND * 30);
    let t = handle(DeliveryConfig::default(), outage.clone());
    // 100 events a second for 100 s: the first 3 000 arrive during the outage.
    track_steadily(&t, 10_000, Duration::from_millis(10)).await;
    assert!(t.flush(SECOND * 60).await, "{:?}", t.stats());
    let report = t.shutdown(SECOND).await;
    let d = report.destination("outage").unwrap();
    assert_eq!(outage.seqs(), (0..10_000).collect::<Vec<_>>());
    assert_eq!((d.delivered, d.failed, d.undelivered), (10_000, 0, 0));
    assert_eq!((d.dropped_queue_full, d.dropped_oldest), (0, 0));
    assert!(d.retries > 0, "the outage was retried through: {d:?}");
    assert_accounted(d, 10_000);
}

#[tokio::test(start_paused = true)]
async fn a_two_minute_outage_at_10_events_a_second_loses_nothing() {
    let outage = Outage::for_(SECOND * 120);
    let t = handle(DeliveryConfig::default(), outage.clone());
    track_steadily(&t, 1_200, Duration::from_millis(100)).await;
    assert!(t.flush(SECOND * 60).await, "{:?}", t.stats());
    let report = t.shutdown(SECOND).await;
    let d = report.destination("outage").unwrap();
    assert_eq!(outage.seqs(), (0..1_200).collect::<Vec<_>>());
    assert_eq!((d.delivered, d.failed), (1_200, 0));
    assert_accounted(d, 1_200);
}

/// 10 000 events tracked within a 30 s outage (1 000 a second for 10 s) into a queue of
/// 1 000 with batches of 100: the batches in retry take their room in the queue, so the
/// destination holds 1 000 events in all and the overflow policy drops the other 9 000.
async fn overflow(policy: Overflow, concurrency: usize) -> (Vec<u64>, DestinationStats) {
    let outage = Outage::for_(SECOND * 30);
    let delivery = DeliveryConfig::default()
        .with_queue_capacity(1_000)
        .with_batch_size(100)
        .with_concurrency(concurrency)
        .with_overflow(policy);
    let t = handle(delivery, outage.clone());
    track_steadily(&t, 10_000, Duration::from_millis(1)).await;
    assert!(t.flush(SECOND * 60).await, "{:?}", t.stats());
    let report = t.shutdown(SECOND).await;
    let d = report.destination("outage").unwrap().clone();
    assert_accounted(&d, 10_000);
    assert_eq!((d.failed, d.undelivered), (0, 0));
    (outage.seqs(), d)
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_the_newest_events_by_default() {
    for concurrency in [1, 4] {
        let (seqs, d) = overflow(Overflow::DropNewest, concurrency).await;
        // The oldest 1 000: the batches in retry and the events queued behind them.
        assert_eq!(
            seqs,
            (0..1_000).collect::<Vec<_>>(),
            "concurrency {concurrency}"
        );
        assert_eq!(d.delivered, 1_000, "concurrency {concurrency}");
        assert_eq!((d.dropped_queue_full, d.dropped_oldest), (9_000, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_keeps_the_newest_events() {
    for concurrency in [1, 4] {
        let (seqs, d) = overflow(Overflow::DropOldest, concurrency).await;
        // The batches the worker took (the oldest events: `concurrency` batches of 100 in
        // retry, and the next one it holds for the first free slot), then the newest events:
        // nothing in between.
        let in_retry = seqs.iter().take_while(|&&s| s < 9_000).count() as u64;
        assert!(
            in_retry >= 1 && in_retry <= 100 * (concurrency as u64 + 1),
            "concurrency {concurrency}: {in_retry} in retry"
        );
        let expected: Vec<u64> = (0..in_retry).chain(9_000 + in_retry..10_000).collect();
        assert!(
            seqs == expected,
            "concurrency {concurrency}: {in_retry} in retry, then not the newest"
        );
        assert_eq!(d.delivered, 1_000, "concurrency {concurrency}");
        assert_eq!((d.dropped_queue_full, d.dropped_oldest), (0, 9_000));
        assert_eq!(
            d.enqueued, 10_000,
            "every event was queued, the oldest then dropped"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_is_reported_like_any_queue_full_drop() {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let t = Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("outage").with_delivery(
                    DeliveryConfig::default()
                        .with_queue_capacity(10)
                        .with_batch_size(5)
                        .with_overflow(Overflow::DropOldest),
                ),
            ),
        )
        .destination("outage", Outage::for_(SECOND * 30))
        .on_drop(move |r| seen.lock().unwrap().push(r.clone()))
        .build()
        .unwrap();
    track_steadily(&t, 100, Duration::from_millis(1)).await;
    let report = t.shutdown(SECOND * 60).await;
    let d = report.destination("outage").unwrap();
    assert_eq!((d.delivered, d.dropped_oldest), (10, 90));
    assert_accounted(d, 100);
    let reported: u64 = reports
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r.destination("outage").map(|d| d.queue_full))
        .sum();
    assert_eq!(reported, 90);
}

#[tokio::test(start_paused = true)]
async fn flush_and_shutdown_keep_their_deadlines_during_an_outage() {
    let outage = Outage::for_(SECOND * 3_600);
    let t = handle(DeliveryConfig::default(), outage);
    track_steadily(&t, 10, Duration::from_millis(10)).await;
    let start = Instant::now();
    assert!(!t.flush(SECOND).await, "nothing can be delivered");
    let took = start.elapsed();
    assert!(
        took >= SECOND && took <= SECOND + Duration::from_millis(50),
        "{took:?}"
    );

    let start = Instant::now();
    let report = t.shutdown(SECOND * 2).await;
    let took = start.elapsed();
    assert!(took <= SECOND * 2 + Duration::from_millis(50), "{took:?}");
    assert!(report.timed_out);
    let d = report.destination("outage").unwrap();
    assert_eq!((d.delivered, d.failed, d.undelivered), (0, 0, 10));
    assert_accounted(d, 10);
}

#[tokio::test(start_paused = true)]
async fn retries_end_when_the_time_budget_runs_out() {
    use tower_telemetry::config::RetryConfig;
    let outage = Outage::for_(SECOND * 3_600);
    let delivery =
        DeliveryConfig::default().with_retry(RetryConfig::default().with_max_elapsed(SECOND * 60));
    let t = handle(delivery, outage);
    track!(&t => "page.view", seq = 0u64);
    let start = Instant::now();
    assert!(t.flush(SECOND * 120).await, "given up within the budget");
    let took = start.elapsed();
    assert!(took <= SECOND * 62, "{took:?}");
    let d = t.stats().destination("outage").unwrap().clone();
    assert_eq!((d.delivered, d.failed), (0, 1));
    assert!(d.retries >= 5, "{d:?}");
    assert_accounted(&d, 1);
}

// ----- a destination that panics -------------------------------------------------------------

/// Panics on its `panic_on`-th call (in `send` itself or in its future), takes every other.
struct Panicky {
    calls: AtomicUsize,
    panic_on: usize,
    in_future: bool,
    taken: Arc<Mutex<Vec<u64>>>,
}

impl Destination for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call == self.panic_on && !self.in_future {
            panic!("boom in send");
        }
        Box::pin(async move {
            tokio::task::yield_now().await;
            if call == self.panic_on {
                panic!("boom in the future of call {call}");
            }
            self.taken.lock().unwrap().extend(
                batch
                    .iter()
                    .filter(|e| e.name() != DropReport::EVENT_NAME)
                    .map(|e| seq_of(e)),
            );
            Ok(())
        })
    }
}

async fn panics_on_the_third_batch(concurrency: usize, in_future: bool) {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let taken = Arc::new(Mutex::new(Vec::new()));
    let panicky = Panicky {
        calls: AtomicUsize::new(0),
        panic_on: 3,
        in_future,
        taken: taken.clone(),
    };
    let memory = MemoryDestination::new();
    let delivery = DeliveryConfig::default()
        .with_batch_size(10)
        .with_flush_interval(Duration::ZERO)
        .with_concurrency(concurrency);
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("panicky").with_delivery(delivery))
                .with_destination(DestinationConfig::new("memory")),
        )
        .destination("panicky", panicky)
        .destination("memory", memory.clone())
        .build()
        .unwrap();
    // Batches of exactly 10: each group is tracked, then flushed.
    for group in 0..6u64 {
        for i in 0..10 {
            track!(&t => "page.view", seq = group * 10 + i);
        }
        let start = Instant::now();
        assert!(t.flush(SECOND * 5).await, "group {group}: {:?}", t.stats());
        assert!(start.elapsed() < SECOND, "flush returned promptly");
    }
    let d = t.stats().destination("panicky").unwrap().clone();
    assert_eq!((d.delivered, d.failed, d.undelivered), (50, 10, 0), "{d:?}");
    assert_eq!(d.retries, 0, "a panic is not retried");
    assert_accounted(&d, 60);
    let mut seqs = taken.lock().unwrap().clone();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..20).chain(30..60).collect::<Vec<_>>(),
        "the 3rd batch failed"
    );

    let report = t.shutdown(SECOND * 5).await;
    assert!(!report.timed_out);
    assert_eq!(report.stats.after_shutdown, 0);
    // The other destination took every event, and the report of the failed batch.
    let m = report.destination("memory").unwrap();
    assert_eq!((m.delivered, m.failed, m.undelivered), (61, 0, 0));
    assert_accounted(m, 61);
    let events = memory.events();
    let (reports, tracked): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|e| e.name() == DropReport::EVENT_NAME);
    assert_eq!(tracked.len(), 60);
    assert_eq!(reports.len(), 1);
    let failed = reports[0]
        .properties()
        .get("destinations")
        .map(|v| v.to_json());
    assert_eq!(failed.unwrap()["panicky"]["failed"], 10);
    // Logged once, with the panic's message.
    let text = logs.text();
    let expected = if in_future {
        "the destination panicked: boom in the future of call 3"
    } else {
        "the destination panicked: boom in send"
    };
    assert_eq!(
        text.matches("the destination panicked").count(),
        1,
        "{text}"
    );
    assert!(text.contains(expected), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_send_fails_only_its_batch() {
    panics_on_the_third_batch(1, false).await;
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_future_fails_only_its_batch() {
    panics_on_the_third_batch(1, true).await;
}

#[tokio::test(start_paused = true)]
async fn a_panic_fails_only_its_batch_with_concurrency() {
    panics_on_the_third_batch(4, false).await;
    panics_on_the_third_batch(4, true).await;
}

// ----- configuration -------------------------------------------------------------------------

#[test]
fn the_budget_and_the_overflow_policy_are_configured_in_yaml() {
    use tower_telemetry::config::{DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_ELAPSED, RetryConfig};

    let yaml = "telemetry:\n  destinations:\n    memory:\n      overflow: drop_oldest\n      retry: { max_elapsed: 1h, max_attempts: 50 }\n    other: { type: memory }\n";
    let config = Config::from_yaml_str(yaml).unwrap();
    let memory = config.destination("memory").unwrap().delivery();
    let expected = DeliveryConfig::default()
        .with_overflow(Overflow::DropOldest)
        .with_retry(
            RetryConfig::default()
                .with_max_elapsed(SECOND * 3_600)
                .with_max_attempts(50),
        );
    assert_eq!(memory, &expected);

    // The defaults: drop the newest, retry for 10 minutes, no attempt count.
    let other = config.destination("other").unwrap().delivery();
    assert_eq!(other, &DeliveryConfig::default());
    assert_eq!(DEFAULT_MAX_ELAPSED, SECOND * 600);
    assert_eq!(DEFAULT_MAX_ATTEMPTS, u32::MAX);

    // A bad policy is an error with its path and line.
    let yaml = "telemetry:\n  destinations:\n    memory:\n      overflow: drop_random\n";
    let errors = Config::from_yaml_str(yaml).unwrap_err();
    let error = &errors.errors()[0];
    assert_eq!(error.path(), "telemetry.destinations.memory.overflow");
    assert_eq!(error.line(), Some(4));
    assert!(error.to_string().contains("drop_random"), "{error}");
    let yaml = "telemetry:\n  destinations:\n    memory:\n      retry: { max_elapsed: soon }\n";
    let errors = Config::from_yaml_str(yaml).unwrap_err();
    assert_eq!(
        errors.errors()[0].path(),
        "telemetry.destinations.memory.retry.max_elapsed"
    );
}
