//! Reliability and security, proven adversarially: destinations that hang, refuse or die,
//! lifecycle calls on every runtime flavour, drops made visible, hostile input, redaction and
//! limits. Every scenario is deterministic: a paused tokio clock, semaphores and notifications
//! do the synchronisation; where real sockets need the real clock, waits poll a condition.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Empty;
use serde_json::{Value, json};
use support::Scripted;
use support::http::{Server, client, get as req, send};
use support::logs::Logs;
use tower_telemetry::{
    Context, DropReport, Event, Telemetry, Tracker,
    config::{Config, DeliveryConfig, DestinationConfig},
    destination::{BoxFuture, DeliveryError, Destination, MemoryDestination},
    layer::TelemetryLayer,
    limits::LimitsConfig,
    props, track,
};

const SECOND: Duration = Duration::from_secs(1);

// ----- helpers -----------------------------------------------------------------------------

fn fast() -> DeliveryConfig {
    DeliveryConfig::default().with_flush_interval(Duration::ZERO)
}

fn one(name: &str, delivery: DeliveryConfig, d: impl Destination) -> Telemetry {
    Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new(name).with_delivery(delivery)),
        )
        .destination(name, d)
        .build()
        .unwrap()
}

/// A destination that fails every batch with the same error.
#[derive(Clone)]
struct Failing(DeliveryError);

impl Destination for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn send<'a>(&'a self, _: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let e = self.0.clone();
        Box::pin(async move { Err(e) })
    }
}

/// Delivers everything except drop reports, which it refuses for good.
#[derive(Clone, Default)]
struct RefusesReports {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Destination for RefusesReports {
    fn name(&self) -> &str {
        "refuses-reports"
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut seen = self.seen.lock().unwrap();
            let mut failed = Vec::new();
            for (i, e) in batch.iter().enumerate() {
                seen.push(e.name().to_owned());
                if e.name() == tower_telemetry::DropReport::EVENT_NAME {
                    failed.push((i, DeliveryError::permanent("no reports here")));
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(DeliveryError::partial(failed))
            }
        })
    }
}

/// Runs `f` on its own thread and fails the test if it has not finished within `limit`:
/// a deadlock becomes a failure, not a hung test run.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("deadlock: did not finish in time")
}

fn runtimes() -> Vec<(&'static str, tokio::runtime::Runtime)> {
    vec![
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "multi_thread(1)",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ]
}

// ----- a destination that blocks forever -----------------------------------------------------

#[tokio::test]
async fn a_destination_that_blocks_forever_never_blocks_requests_or_tracking() {
    const CAPACITY: usize = 64;
    let stuck = Scripted::gated(); // never answers
    let t = one(
        "stuck",
        fast().with_queue_capacity(CAPACITY).with_batch_size(1),
        stuck.clone(),
    );
    // The worker takes the first event and hangs in `send`: from now on the queue only fills.
    track!(&t => "user.first");
    stuck.wait_calls(1).await;

    async fn work(tracker: Tracker) -> &'static str {
        tracker.track("user.work", props! { "step" => 1 });
        tracker.track("user.work", props! { "step" => 2 });
        "done"
    }
    let app = Router::new()
        .route("/work", get(work))
        .layer(TelemetryLayer::new(t.clone()));
    let server = Server::start(app).await;
    let client = client();
    let requests = async {
        for _ in 0..100 {
            let (res, body) = send(
                &client,
                req(&server.url("/work"))
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await;
            assert_eq!((res.status(), body.as_str()), (StatusCode::OK, "done"));
        }
    };
    tokio::time::timeout(SECOND * 30, requests)
        .await
        .expect("requests through the layer must complete while the destination hangs");

    // 200 events from requests: with the first event in delivery, the queue took
    // CAPACITY - 1 (the destination holds CAPACITY in all), the rest were dropped and counted.
    let s = t.stats();
    let d = s.destination("stuck").unwrap();
    assert_eq!(d.queued, CAPACITY - 1);
    assert_eq!(d.enqueued, CAPACITY as u64);
    assert_eq!(d.dropped_queue_full, 200 - (CAPACITY as u64 - 1));

    // `track` returns at once: 10 000 more calls finish (a blocked call would hang here), and
    // each is a counted drop; the queue never grows past its capacity.
    let started = StdInstant::now();
    for i in 0..10_000 {
        track!(&t => "user.more", i = i);
    }
    assert!(started.elapsed() < SECOND * 5, "{:?}", started.elapsed());
    let d = t.stats().destination("stuck").unwrap().clone();
    assert_eq!(d.queued, CAPACITY - 1);
    assert_eq!(d.dropped_queue_full, 10_000 + 200 - (CAPACITY as u64 - 1));

    // shutdown(deadline) returns by the deadline, with exact counts.
    let deadline = Duration::from_millis(300);
    let started = StdInstant::now();
    let report = t.shutdown(deadline).await;
    let took = started.elapsed();
    assert!(report.timed_out);
    assert!(took >= deadline && took < deadline + SECOND * 2, "{took:?}");
    let d = report.destination("stuck").unwrap();
    assert_eq!(
        (d.enqueued, d.delivered, d.undelivered, d.dropped_queue_full),
        (
            CAPACITY as u64,
            0,
            CAPACITY as u64,
            10_000 + 200 - (CAPACITY as u64 - 1)
        )
    );
    server.stop().await;
}

// ----- a destination that is down, then up ---------------------------------------------------

#[cfg(feature = "umami")]
#[tokio::test]
async fn a_refused_connection_then_recovery_delivers_what_was_queued_exactly_once() {
    use support::umami_server::{UmamiServer, WEBSITE_ID, reserve_addr};
    use tower_telemetry::{
        config::RetryConfig,
        destination::umami::{UmamiConfig, UmamiDestination},
    };

    let addr = reserve_addr(); // nothing listens: connections are refused
    let umami =
        UmamiDestination::new(UmamiConfig::new(format!("http://{addr}"), WEBSITE_ID)).unwrap();
    let delivery = fast()
        .with_queue_capacity(20)
        .with_batch_size(5)
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(10_000)
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(50)),
        );
    let t = one("umami", delivery, umami);
    // A current-thread runtime: the worker runs only when this task awaits, so the queue is
    // filled before it takes its first batch of 5.
    for seq in 0..20 {
        track!(&t => "user.signup", seq = seq);
    }
    let down_for_a_while = async {
        while t.stats().destination("umami").unwrap().retries < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await; // polling a condition
        }
    };
    tokio::time::timeout(SECOND * 10, down_for_a_while)
        .await
        .unwrap();
    // 5 in the retrying batch and 15 queued fill the capacity of 20: the other 30 are dropped.
    for seq in 20..50 {
        track!(&t => "user.signup", seq = seq);
    }
    let d = t.stats().destination("umami").unwrap().clone();
    assert_eq!((d.enqueued, d.dropped_queue_full, d.delivered), (20, 30, 0));

    let server = UmamiServer::start_on(addr).await;
    let report = t.shutdown(SECOND * 10).await;
    assert!(!report.timed_out);
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.failed, d.undelivered), (20, 0, 0));
    let mut stored: Vec<u64> = server
        .events()
        .iter()
        .filter_map(|e| e.datum("seq").and_then(Value::as_u64))
        .collect();
    stored.sort_unstable();
    assert_eq!(
        stored,
        (0..20).collect::<Vec<_>>(),
        "each queued event once"
    );
}

// ----- two destinations, one dead ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_dead_destination_does_not_affect_the_live_one() {
    let dead = Scripted::gated();
    let live = MemoryDestination::new();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(
                    DestinationConfig::new("dead").with_delivery(fast().with_queue_capacity(10)),
                )
                .with_destination(DestinationConfig::new("live").with_delivery(fast())),
        )
        .destination("dead", dead.clone())
        .destination("live", live.clone())
        .build()
        .unwrap();
    for i in 0..1000 {
        track!(&t => "user.x", i = i);
    }
    assert!(live.wait_for_count(1000, SECOND * 5).await);
    let got: HashSet<i64> = live
        .named("user.x")
        .iter()
        .map(|e| e.properties().get("i").unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(got.len(), 1000, "the live one delivers everything");

    // flush does not hang on the dead one: it returns by its deadline, saying so.
    let started = tokio::time::Instant::now();
    assert!(!t.flush(SECOND).await);
    let took = started.elapsed();
    assert!(
        took >= SECOND && took < SECOND + Duration::from_millis(10),
        "{took:?}"
    );

    // The dead one's drops are reported to the live one.
    let report = live
        .wait_for(tower_telemetry::DropReport::EVENT_NAME, SECOND * 5)
        .await
        .expect("a drop report on the healthy destination");
    let p = report.properties();
    let dead_drops = &p.get("destinations").unwrap()["dead"];
    let dropped = t.stats().destination("dead").unwrap().dropped_queue_full;
    assert!(dropped >= 989, "{dropped}");
    assert_eq!(dead_drops["queue_full"], json!(dropped));
    assert_eq!(p.get("total").unwrap(), &json!(dropped));
    assert!(p.get("destinations").unwrap().get("live").is_none());
}

// ----- flush and shutdown on every runtime flavour --------------------------------------------

#[test]
fn flush_and_shutdown_never_deadlock_and_are_safe_twice_or_concurrently() {
    within(SECOND * 60, || {
        for (flavour, rt) in runtimes() {
            rt.block_on(async {
                let slow = Scripted::slow(Duration::from_millis(2));
                let t = one("d", fast().with_batch_size(8), slow.clone());
                for i in 0..50 {
                    track!(&t => "user.x", i = i);
                }
                let (a, b) = tokio::join!(t.flush(SECOND * 10), t.flush(SECOND * 10));
                assert!(a && b, "{flavour}");
                assert_eq!(slow.delivered().len(), 50, "{flavour}");
                for i in 50..60 {
                    track!(&t => "user.x", i = i);
                }
                let (r1, r2) = tokio::join!(t.shutdown(SECOND * 10), t.shutdown(SECOND * 10));
                assert!(!r1.timed_out && !r2.timed_out, "{flavour}");
                assert_eq!((r1.delivered(), r2.delivered()), (60, 60), "{flavour}");
                let r3 = t.shutdown(SECOND).await;
                assert_eq!(r3.delivered(), 60, "{flavour}");
                assert!(t.flush(SECOND).await, "{flavour}: flush after shutdown");
                assert_eq!(slow.delivered().len(), 60, "{flavour}");
            });
            rt.block_on(async {
                // A destination that never answers: both return by their deadline, and the
                // runtime keeps running other tasks meanwhile.
                let stuck = Scripted::gated();
                let t = one("d", fast(), stuck.clone());
                for i in 0..5 {
                    track!(&t => "user.x", i = i);
                }
                let deadline = Duration::from_millis(200);
                let started = StdInstant::now();
                // While flush waits, the runtime must keep running other tasks: the other
                // branch has to finish before flush returns (an order, not a timing).
                let other_done = std::sync::atomic::AtomicBool::new(false);
                let (flushed, ()) = tokio::join!(
                    async {
                        let flushed = t.flush(deadline).await;
                        assert!(
                            other_done.load(std::sync::atomic::Ordering::SeqCst),
                            "{flavour}: the runtime was blocked"
                        );
                        flushed
                    },
                    async {
                        tokio::task::yield_now().await;
                        other_done.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                );
                assert!(!flushed, "{flavour}");
                assert!(started.elapsed() < deadline + SECOND * 2, "{flavour}");
                let started = StdInstant::now();
                let (r1, r2) = tokio::join!(t.shutdown(deadline), t.shutdown(deadline));
                assert!(r1.timed_out && r2.timed_out, "{flavour}");
                assert!(started.elapsed() < deadline + SECOND * 2, "{flavour}");
                assert_eq!(r1.undelivered(), 5, "{flavour}");
                assert_eq!(r2.undelivered(), 5, "{flavour}");
            });
        }
    });
}

// ----- dropping the last handle without shutdown ----------------------------------------------

#[test]
fn dropping_the_last_handle_without_shutdown_warns_with_the_count() {
    let logs = Logs::default();
    let reports: Arc<Mutex<Vec<DropReport>>> = Arc::default();
    let sink = reports.clone();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stuck = Scripted::gated();
        let t = Telemetry::builder()
            .config(
                Config::default().with_destination(
                    DestinationConfig::new("d")
                        .with_delivery(fast().with_queue_capacity(4).with_batch_size(1)),
                ),
            )
            .destination("d", stuck.clone())
            .on_drop(move |r: &DropReport| sink.lock().unwrap().push(r.clone()))
            .build()
            .unwrap();
        track!(&t => "user.first");
        stuck.wait_calls(1).await;
        for i in 0..10 {
            track!(&t => "user.x", i = i);
        }
        let clone = t.clone();
        drop(t);
        assert!(logs.text().is_empty(), "not the last handle yet");
        drop(clone); // no panic, no hang
    });
    let text = logs.text();
    assert!(
        text.contains("4 event(s) not yet delivered may be lost"),
        "{text}"
    );
    // The drops nobody reported yet are reported then too.
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].destination("d").unwrap().queue_full, 7);
    assert!(text.contains("7 telemetry event(s) dropped"), "{text}");
}

// ----- drop reports: rate-limited, never recursive, with a callback -------------------------

#[tokio::test(start_paused = true)]
async fn drops_are_reported_rate_limited_to_healthy_destinations_and_never_recursively() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let reports: Arc<Mutex<Vec<DropReport>>> = Arc::default();
    let sink = reports.clone();
    let picky = RefusesReports::default();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(
                    DestinationConfig::new("dead").with_delivery(fast().with_batch_size(1)),
                )
                .with_destination(DestinationConfig::new("discarding").with_delivery(fast()))
                .with_destination(DestinationConfig::new("picky").with_delivery(fast())),
        )
        .destination("dead", Failing(DeliveryError::permanent("403")))
        .destination("discarding", Failing(DeliveryError::discarded("bot")))
        .destination("picky", picky.clone())
        .on_drop(move |r: &DropReport| sink.lock().unwrap().push(r.clone()))
        .build()
        .unwrap();
    let reports_now = || reports.lock().unwrap().clone();

    for i in 0..5 {
        track!(&t => "user.x", i = i);
    }
    tokio::time::sleep(SECOND * 2).await; // paused clock: advances the monitor deterministically
    let first = reports_now();
    assert_eq!(first.len(), 1, "{first:?}");
    let dead = first[0].destination("dead").unwrap();
    assert_eq!((dead.failed, dead.queue_full, dead.discarded), (5, 0, 0));
    assert_eq!(first[0].destination("discarding").unwrap().discarded, 5);
    assert!(first[0].destination("picky").is_none());
    // The healthy destination was offered the report event (and refused it for good).
    assert!(
        picky
            .seen
            .lock()
            .unwrap()
            .contains(&tower_telemetry::DropReport::EVENT_NAME.to_owned())
    );
    assert_eq!(t.stats().destination("picky").unwrap().failed, 1);

    // More drops within 10 s: no report yet (rate limit); after 10 s: one, with the new drops
    // only. The refused report event never appears in a report.
    for i in 0..3 {
        track!(&t => "user.x", i = i);
    }
    tokio::time::sleep(SECOND * 5).await;
    assert_eq!(reports_now().len(), 1);
    tokio::time::sleep(SECOND * 6).await;
    let second = reports_now();
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[1].destination("dead").unwrap().failed, 3);
    assert!(second[1].destination("picky").is_none(), "{second:?}");

    // Nothing new: a long quiet time and shutdown add no report.
    tokio::time::sleep(SECOND * 60).await;
    let report = t.shutdown(SECOND * 10).await;
    assert!(!report.timed_out);
    let all = reports_now();
    assert!(
        all.iter().all(|r| r.destination("picky").is_none()),
        "a lost report never causes another: {all:?}"
    );
    assert_eq!(all.len(), 2, "{all:?}");
    // The warning log is rate-limited too: one warning per report, and one per failing
    // destination for its delivery errors (not one per failed batch).
    let text = logs.text();
    assert_eq!(
        text.matches("telemetry event(s) dropped").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("telemetry events not delivered").count(),
        3,
        "{text}"
    );
}

/// The first drop is reported at once, and a handle with nothing to report runs no timer: the
/// drop monitor sleeps until something is dropped.
#[tokio::test(start_paused = true)]
async fn the_first_drop_is_reported_at_once_and_an_idle_handle_runs_no_timer() {
    let reported = Arc::new(tokio::sync::Notify::new());
    let signal = reported.clone();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("dead").with_delivery(fast())),
        )
        .destination("dead", Failing(DeliveryError::permanent("403")))
        .on_drop(move |_: &DropReport| signal.notify_one())
        .build()
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let start = tokio::time::Instant::now();
    track!(&t => "user.x");
    reported.notified().await;
    assert_eq!(start.elapsed(), Duration::ZERO, "reported when it happened");

    // Ten quiet minutes: the runtime wakes only for the test's own timer (which takes a few
    // turns of the timer wheel). A monitor looking every second would wake it 600 times.
    let parks = metrics.worker_park_count(0);
    tokio::time::sleep(SECOND * 600).await;
    let woken = metrics.worker_park_count(0) - parks;
    assert!(
        woken < 20,
        "the runtime woke {woken} times in ten quiet minutes"
    );
    let report = t.shutdown(SECOND).await;
    assert_eq!(report.destination("dead").unwrap().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_drop_callback_is_contained() {
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("dead").with_delivery(fast())),
        )
        .destination("dead", Failing(DeliveryError::permanent("403")))
        .on_drop(|_: &DropReport| panic!("user callback bug"))
        .build()
        .unwrap();
    track!(&t => "user.x");
    tokio::time::sleep(SECOND * 2).await;
    track!(&t => "user.y");
    let report = t.shutdown(SECOND).await;
    assert_eq!(report.destination("dead").unwrap().failed, 2);
}

// ----- hostile input ------------------------------------------------------------------------

#[tokio::test]
async fn hostile_headers_through_a_real_server_are_dropped_or_replaced() {
    let t = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    let memory = t.memory("m").unwrap();
    async fn work(tracker: Tracker, Query(q): Query<Vec<(String, String)>>) -> &'static str {
        let name = q
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "user.work".to_owned());
        tracker.track(name, props! { "ok" => true });
        "done"
    }
    let app = Router::new()
        .route("/work", get(work))
        .layer(TelemetryLayer::new(t.clone()));
    let server = Server::start(app).await;
    let client = client();
    let huge = "r".repeat(16 * 1024);
    let cases: Vec<Vec<(&str, HeaderValue)>> = vec![
        vec![
            (
                "user-agent",
                HeaderValue::from_bytes(b"Mozilla/5.0 \xff\xfe").unwrap(),
            ),
            ("referer", HeaderValue::from_str(&huge).unwrap()),
            (
                "accept-language",
                HeaderValue::from_bytes(b"de-\xc3\x28").unwrap(),
            ),
            ("x-request-id", HeaderValue::from_bytes(b"id-\xff").unwrap()),
        ],
        vec![
            ("user-agent", HeaderValue::from_str(&huge).unwrap()),
            (
                "referer",
                HeaderValue::from_bytes(b"https://x/\x80").unwrap(),
            ),
            ("accept-language", HeaderValue::from_str(&huge).unwrap()),
            (
                "x-request-id",
                HeaderValue::from_str(&"i".repeat(129)).unwrap(),
            ),
        ],
    ];
    for headers in &cases {
        let mut r = req(&server.url("/work"));
        for (k, v) in headers {
            r = r.header(*k, v.clone());
        }
        let (res, body) = send(&client, r.body(Empty::<Bytes>::new()).unwrap()).await;
        assert_eq!((res.status(), body.as_str()), (StatusCode::OK, "done"));
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(echoed.len(), 36, "a fresh UUID replaces the hostile id");
    }
    // A name with control characters (here from a query parameter) is rejected, not tracked.
    let (res, _) = send(
        &client,
        req(&server.url("/work?name=user.x%0Aforged%1B%5B31m"))
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(t.flush(SECOND * 5).await);
    let events = memory.take();
    assert_eq!(events.len(), 2);
    for e in &events {
        let c = e.context();
        assert_eq!(e.name(), "user.work");
        assert_eq!(
            (c.user_agent(), c.referrer(), c.language()),
            (None, None, None)
        );
        assert_eq!(c.request_id().unwrap().len(), 36);
    }
    assert_eq!(t.stats().rejected, 1);
    server.stop().await;
}

#[tokio::test]
async fn the_logging_destination_cannot_be_used_for_log_injection() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::INFO));
    let t =
        Telemetry::from_yaml_str("telemetry:\n  destinations:\n    logging:\n      level: INFO\n")
            .unwrap();
    let evil = "line\nFAKE 2026-01-01 ERROR forged\r\u{1b}[31mred\u{9b}2J\u{7f}\u{2028}\u{202e}";
    t.scope(
        Context::new()
            .with_user_id(evil)
            .with_request_id("r\n1")
            .with_path("/p\u{1b}[0m"),
        async {
            let nested: serde_json::Map<String, Value> =
                [(evil.to_owned(), json!([evil]))].into_iter().collect();
            track!(&t => "user.evil", value = evil, nested = nested);
        },
    )
    .await;
    track!(&t => "user\n.forged");
    t.shutdown(SECOND * 5).await;
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("event=user.evil"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(!text.contains("\nFAKE"), "{text}");
    for c in ['\r', '\u{1b}', '\u{9b}', '\u{7f}', '\u{2028}', '\u{202e}'] {
        assert!(!text.contains(c), "raw {c:?} in {text}");
    }
    // Quoted: the value has blanks, which a logfmt reader would split at.
    assert!(line.contains("user_id=\"line\\nFAKE"), "{line}");
    assert!(line.contains("request_id=r\\n1"), "{line}");
    assert_eq!(t.stats().rejected, 1, "the name with a newline is rejected");
}

// ----- redaction ----------------------------------------------------------------------------

#[tokio::test]
async fn sensitive_values_are_redacted_at_any_depth_before_any_destination_sees_them() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::INFO));
    let t = Telemetry::builder()
        .config(
            Config::from_yaml_str_with_env(
                r#"
telemetry:
  redact:
    keys: [email]
    replacement: "***"
  destinations:
    logging: {}
    memory: {}
"#,
                |_| None,
            )
            .unwrap(),
        )
        .context(Context::new().with_field("API-Key", "base-secret-1"))
        .build()
        .unwrap();
    let memory = t.memory("memory").unwrap();
    t.scope(
        Context::new().with_field("session", json!({ "Cookie": "secret-2" })),
        async {
            track!(&t => "user.signup",
                Password = "secret-3",
                email = "secret-4@example.com",
                profile = json!({ "name": "Ada", "cards": [{ "CVV": "secret-5", "card_number": "secret-6" }] }),
                max_tokens = 512,
            );
        },
    )
    .await;
    t.shutdown(SECOND * 5).await;
    let e = &memory.events()[0];
    let p = serde_json::to_value(e.properties()).unwrap();
    assert_eq!(
        p,
        json!({
            "Password": "***",
            "email": "***",
            "profile": { "name": "Ada", "cards": [{ "CVV": "***", "card_number": "***" }] },
            "max_tokens": 512
        })
    );
    assert_eq!(e.context().field("API-Key").unwrap(), "***");
    assert_eq!(e.context().field("session").unwrap()["Cookie"], "***");
    let everything = format!("{}{:?}", logs.text(), memory.events());
    for n in 1..=6 {
        assert!(
            !everything.contains(&format!("secret-{n}")),
            "secret-{n} leaked"
        );
    }
    assert_eq!(t.stats().redacted, 6);
}

/// One `track!` call site, so its cached key checks are shared by every handle below.
fn signup_at_one_call_site(t: &Telemetry, n: i64) {
    track!(t => "user.signup", email = "secret@example.com", a_key_longer_than_twelve = n, plan = "pro");
}

#[tokio::test]
async fn a_call_site_checks_its_keys_against_each_handles_policy_on_every_call() {
    let redacting = Telemetry::from_yaml_str(
        "telemetry:\n  redact:\n    keys: [email]\n  destinations:\n    memory: {}\n",
    )
    .unwrap();
    let plain = Telemetry::builder()
        .memory_destination("memory")
        .build()
        .unwrap();
    let short_keys = Telemetry::builder()
        .memory_destination("memory")
        .limits(LimitsConfig::default().with_max_string_length(12))
        .build()
        .unwrap();
    // Alternating handles, several calls each: the call site caches one verdict at a time.
    for n in 0..3 {
        signup_at_one_call_site(&plain, n);
        signup_at_one_call_site(&redacting, n);
        signup_at_one_call_site(&redacting, n);
        signup_at_one_call_site(&short_keys, n);
        signup_at_one_call_site(&plain, n);
    }
    let events = |t: &Telemetry| {
        let memory = t.memory("memory").unwrap();
        let t = t.clone();
        async move {
            t.flush(SECOND * 5).await;
            memory.events()
        }
    };
    let plain_events = events(&plain).await;
    assert_eq!(plain_events.len(), 6);
    for e in &plain_events {
        assert_eq!(e.properties().get("email").unwrap(), "secret@example.com");
        assert!(e.properties().get("a_key_longer_than_twelve").is_some());
    }
    let redacted = events(&redacting).await;
    assert_eq!(redacted.len(), 6);
    for e in &redacted {
        assert_ne!(e.properties().get("email").unwrap(), "secret@example.com");
        assert_eq!(e.properties().get("plan").unwrap(), "pro");
    }
    assert_eq!(redacting.stats().redacted, 6);
    let cut = events(&short_keys).await;
    assert_eq!(cut.len(), 3);
    for e in &cut {
        assert!(
            e.properties().get("a_key_longer_than_twelve").is_none(),
            "{e:?}"
        );
        // Values are still limited where the keys are known to be clean.
        assert_eq!(e.properties().get("email").unwrap(), "secret@examp");
    }
    assert_eq!(short_keys.stats().truncated, 3);
}

/// A call site whose values are literals and numbers: its properties pass each policy's limits
/// the same way every time, which the call site may remember.
fn plan_at_one_call_site(t: &Telemetry, n: i64) {
    track!(t => "user.plan", plan = "professional", seats = n);
}

/// A call site whose values can differ in size from call to call.
fn note_at_one_call_site(t: &Telemetry, note: &str, extra: &Value) {
    track!(t => "user.note", note = note, extra = extra, plan = "pro");
}

#[tokio::test]
async fn what_a_call_site_remembers_never_lets_a_changed_value_or_context_past_the_limits() {
    let limits = LimitsConfig::default()
        .with_max_string_length(8)
        .with_max_event_size(1024);
    let narrow = Telemetry::builder()
        .memory_destination("memory")
        .limits(limits)
        .build()
        .unwrap();
    let wide = Telemetry::builder()
        .memory_destination("memory")
        .build()
        .unwrap();
    // Alternating handles at one call site: each handle's limits apply on every call, after
    // the other handle's verdict was remembered.
    for n in 0..3 {
        plan_at_one_call_site(&wide, n);
        plan_at_one_call_site(&narrow, n);
        plan_at_one_call_site(&narrow, n);
    }
    // Short values first, then long ones at the same call site: a string or a `Serialize`
    // value is looked at every time.
    note_at_one_call_site(&narrow, "short", &json!(1));
    note_at_one_call_site(&narrow, "short", &json!(2));
    note_at_one_call_site(
        &narrow,
        "much longer than eight",
        &json!("also far too long"),
    );
    // The remembered properties still count toward the event's size: a context that makes the
    // event too large gets it rejected.
    let huge = Context::new().with_user_agent("x".repeat(2_000));
    narrow.scope_sync(huge, || plan_at_one_call_site(&narrow, 7));
    narrow.scope_sync(Context::new().with_user_id("u1"), || {
        plan_at_one_call_site(&narrow, 8)
    });

    for t in [&narrow, &wide] {
        assert!(t.flush(SECOND * 5).await);
    }
    let wide_plans = wide.memory("memory").unwrap().named("user.plan");
    assert_eq!(wide_plans.len(), 3);
    for e in &wide_plans {
        assert_eq!(e.properties().get("plan").unwrap(), "professional");
    }
    let narrow_memory = narrow.memory("memory").unwrap();
    let plans = narrow_memory.named("user.plan");
    let seats: Vec<_> = plans
        .iter()
        .map(|e| e.properties().get("seats").unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(
        seats,
        [0, 0, 1, 1, 2, 2, 8],
        "the oversized event (7) is rejected"
    );
    for e in &plans {
        assert_eq!(e.properties().get("plan").unwrap(), "professi");
    }
    let notes = narrow_memory.named("user.note");
    let got: Vec<_> = notes
        .iter()
        .map(|e| {
            let p = e.properties();
            (
                p.get("note").unwrap().to_json(),
                p.get("extra").unwrap().to_json(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!("short"), json!(1)),
            (json!("short"), json!(2)),
            (json!("much lon"), json!("also far")),
        ]
    );
    let s = narrow.stats();
    // Seven truncated plans and one truncated note; the oversized plan counts as oversized.
    assert_eq!((s.truncated, s.oversized), (8, 1));
    assert_eq!(wide.stats().truncated, 0);
}

#[tokio::test]
async fn allow_and_drop_properties_narrow_each_destination_without_touching_the_others() {
    let t = Telemetry::from_yaml_str(
        r#"
telemetry:
  destinations:
    analytics:
      type: memory
      allow_properties: [model, "utm_*"]
      drop_properties: [utm_id]
    audit:
      type: memory
      drop_properties: [ip]
    everything:
      type: memory
"#,
    )
    .unwrap();
    track!(&t => "user.x", model = "flux", utm_source = "ad", utm_id = 7, ip = "1.2.3.4", plan = "pro");
    t.shutdown(SECOND * 5).await;
    let keys = |name: &str| -> Vec<String> {
        t.memory(name).unwrap().events()[0]
            .properties()
            .iter()
            .map(|(k, _)| k.to_owned())
            .collect()
    };
    assert_eq!(keys("analytics"), ["model", "utm_source"]);
    assert_eq!(keys("audit"), ["model", "utm_source", "utm_id", "plan"]);
    assert_eq!(
        keys("everything"),
        ["model", "utm_source", "utm_id", "ip", "plan"]
    );
    let ids: HashSet<_> = ["analytics", "audit", "everything"]
        .iter()
        .map(|n| t.memory(n).unwrap().events()[0].id())
        .collect();
    assert_eq!(ids.len(), 1, "one event, three views");
}

// ----- limits -------------------------------------------------------------------------------

#[tokio::test]
async fn over_limit_events_are_truncated_or_rejected_and_counted_never_a_panic() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let t = Telemetry::builder()
        .memory_destination("m")
        .limits(
            LimitsConfig::default()
                .with_max_properties(8)
                .with_max_string_length(100)
                .with_max_depth(3)
                .with_max_event_size(4096),
        )
        .build()
        .unwrap();
    let memory = t.memory("m").unwrap();

    let mut many = tower_telemetry::Properties::new();
    for i in 0..1000 {
        many.insert(format!("k{i:04}"), i);
    }
    t.track("user.many", many);
    t.track("user.long", props! { "s" => "é".repeat(10_000) });
    // Far deeper than the limit.
    let mut deep = json!(1);
    for _ in 0..1_000 {
        deep = json!([deep]);
    }
    t.track("user.deep", props! { "v" => deep });
    // Within every other limit (8 arrays of 8 strings of 100 bytes), but over 4 KiB once
    // serialized: rejected.
    let mut big = tower_telemetry::Properties::new();
    for i in 0..8 {
        big.insert(format!("s{i}"), vec!["x".repeat(100); 8]);
    }
    t.track("user.big", big);
    t.track("user.fine", props! { "ok" => true });
    t.shutdown(SECOND * 5).await;

    let by = |n: &str| memory.named(n).into_iter().next();
    assert_eq!(by("user.many").unwrap().properties().len(), 8);
    let long = by("user.long").unwrap();
    assert_eq!(
        long.properties().get("s").unwrap().as_str().unwrap().len(),
        100
    );
    let deep = serde_json::to_string(by("user.deep").unwrap().properties()).unwrap();
    assert_eq!(deep, r#"{"v":[[["[TRUNCATED]"]]]}"#);
    assert!(by("user.big").is_none(), "oversized events are rejected");
    assert!(by("user.fine").is_some());
    let s = t.stats();
    assert_eq!((s.truncated, s.oversized), (3, 1));
    assert!(
        logs.text()
            .contains("telemetry event truncated to fit the limits")
    );
}
