//! The core pipeline: routing, sampling, context, delivery, retries, drops and shutdown.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::{Answer, Scripted};
use tower_telemetry::{
    Context, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, RetryConfig, SampleKey, SamplingConfig},
    destination::{DeliveryError, MemoryDestination},
    props, track,
};

/// The seed module's `config.yaml`, exactly.
const SEED: &str = include_str!("fixtures/seed.yaml");

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn seed_config_routes_like_the_seed() {
    let umami = MemoryDestination::new();
    let logging = MemoryDestination::new();
    let telemetry = Telemetry::builder()
        .config(Config::from_yaml_str(SEED).unwrap())
        .destination("umami", umami.clone())
        .destination("logging", logging.clone())
        .build()
        .unwrap();

    for name in [
        "user.signup",
        "generation.started",
        "error.db",
        "system.boot",
        "foo.bar",
    ] {
        telemetry.track(name, props! { "n" => 1 });
    }
    assert!(telemetry.flush(SECOND).await);

    let names = |m: &MemoryDestination| {
        m.events()
            .iter()
            .map(|e| e.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&umami), ["user.signup", "generation.started"]);
    assert_eq!(names(&logging), ["error.db", "system.boot"]);

    assert_eq!(telemetry.explain("user.signup").routed_to(), ["umami"]);
    assert_eq!(
        telemetry.explain("generation.started").routed_to(),
        ["umami"]
    );
    assert_eq!(telemetry.explain("error.db").routed_to(), ["logging"]);
    assert_eq!(telemetry.explain("system.boot").routed_to(), ["logging"]);
    assert!(telemetry.explain("foo.bar").routed_to().is_empty());
    let why = telemetry.explain("user.profile.updated");
    assert_eq!(why.destinations[0].reason, "matches `user.*`");
    assert!(why.to_string().contains("-> umami"), "{why}");
}

#[tokio::test]
async fn exclusions_and_no_filter() {
    let telemetry = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(
                    DestinationConfig::new("a")
                        .with_kind("memory")
                        .with_events(["user.*", "!user.debug.*"]),
                )
                .with_destination(DestinationConfig::new("b").with_kind("memory")),
        )
        .build()
        .unwrap();
    assert_eq!(telemetry.explain("user.debug.x").routed_to(), ["b"]);
    assert_eq!(telemetry.explain("user.x").routed_to(), ["a", "b"]);
    track!(&telemetry => "user.debug.x");
    track!(&telemetry => "user.x");
    assert!(telemetry.flush(SECOND).await);
    assert_eq!(telemetry.memory("a").unwrap().len(), 1);
    assert_eq!(telemetry.memory("b").unwrap().len(), 2);
}

fn sampled(rate: f64, key: SampleKey, always: &[&str]) -> Telemetry {
    Telemetry::builder()
        .config(
            Config::default()
                .with_sampling(
                    SamplingConfig::new(rate)
                        .with_key(key)
                        .with_always(always.iter().copied()),
                )
                .with_destination(
                    DestinationConfig::new("memory")
                        .with_delivery(DeliveryConfig::default().with_queue_capacity(100_000)),
                ),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn request_sampling_keeps_half_and_whole_requests() {
    let telemetry = sampled(0.5, SampleKey::Request, &["error.*"]);
    const REQUESTS: usize = 10_000;
    for i in 0..REQUESTS {
        telemetry
            .scope(Context::new().with_request_id(format!("req-{i}")), async {
                track!("generation.started", step = 1);
                track!("generation.completed", step = 2);
                track!("user.clicked", step = 3);
                track!("error.boom");
            })
            .await;
    }
    assert!(telemetry.flush(SECOND * 10).await);
    let events = telemetry.memory("memory").unwrap().events();
    let mut per_request: HashMap<String, usize> = HashMap::new();
    let mut errors = 0;
    for e in &events {
        if e.name() == "error.boom" {
            errors += 1;
        } else {
            *per_request
                .entry(e.context().request_id().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(errors, REQUESTS, "`always` globs are never sampled out");
    assert!(
        per_request.values().all(|n| *n == 3),
        "every request is all or nothing"
    );
    let kept = per_request.len() as f64 / REQUESTS as f64;
    assert!((0.47..=0.53).contains(&kept), "kept {kept}");
    let stats = telemetry.stats();
    assert_eq!(
        stats.destination("memory").unwrap().sampled_out as usize,
        (REQUESTS - per_request.len()) * 3
    );
}

#[tokio::test]
async fn event_sampling_and_rate_zero() {
    let t = sampled(0.0, SampleKey::Event, &[]);
    for _ in 0..100 {
        track!(&t => "user.x");
    }
    assert!(t.flush(SECOND).await);
    assert!(t.memory("memory").unwrap().is_empty());
    assert_eq!(t.stats().destination("memory").unwrap().sampled_out, 100);
}

#[tokio::test]
async fn per_destination_sample_rate() {
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("all").with_kind("memory"))
                .with_destination(
                    DestinationConfig::new("none")
                        .with_kind("memory")
                        .with_sample_rate(0.0),
                ),
        )
        .build()
        .unwrap();
    for _ in 0..50 {
        track!(&t => "user.x");
    }
    assert!(t.flush(SECOND).await);
    assert_eq!(t.memory("all").unwrap().len(), 50);
    assert_eq!(t.memory("none").unwrap().len(), 0);
    assert_eq!(t.explain("user.x").destinations[1].sample_rate, 0.0);
}

#[tokio::test]
async fn context_inside_and_outside_scopes() {
    let telemetry = Telemetry::builder()
        .memory_destination("memory")
        .context(
            Context::new()
                .with_hostname("api.example.com")
                .with_field("env", "test"),
        )
        .build()
        .unwrap();
    let memory = telemetry.memory("memory").unwrap();

    telemetry
        .scope(
            Context::new()
                .with_user_id("user_123")
                .with_request_id("req_789"),
            async {
                track!("user.inside");
                telemetry.set_context(Context::new().with_session_id("sess_456"));
                track!("user.after_set");
                // Spawned tasks do not inherit the scope...
                let t = telemetry.clone();
                tokio::spawn(async move { track!(&t => "user.spawned_plain") })
                    .await
                    .unwrap();
                // ...unless carried along.
                use tower_telemetry::WithContextExt;
                tokio::spawn(async { track!("user.spawned_carried") }.in_current_context())
                    .await
                    .unwrap();
            },
        )
        .await;
    track!(&telemetry => "user.outside");
    assert!(telemetry.flush(SECOND).await);

    let by_name = |n: &str| memory.named(n).pop().unwrap();
    let inside = by_name("user.inside");
    assert_eq!(inside.context().user_id(), Some("user_123"));
    assert_eq!(inside.context().request_id(), Some("req_789"));
    assert_eq!(inside.context().hostname(), Some("api.example.com"));
    assert_eq!(inside.context().session_id(), None);
    assert_eq!(
        by_name("user.after_set").context().session_id(),
        Some("sess_456")
    );
    assert_eq!(
        by_name("user.spawned_carried").context().user_id(),
        Some("user_123")
    );
    let plain = by_name("user.spawned_plain");
    assert_eq!(plain.context().user_id(), None);
    let outside = by_name("user.outside");
    assert_eq!(outside.context().user_id(), None);
    assert_eq!(outside.context().request_id(), None);
    assert_eq!(outside.context().hostname(), Some("api.example.com"));
    assert_eq!(outside.context().field("env").unwrap(), "test");
    // set_context inside the scope did not touch the base.
    assert_eq!(telemetry.current_context().session_id(), None);
}

#[tokio::test]
async fn base_context_set_and_clear_outside_scopes() {
    let telemetry = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    telemetry.set_context(Context::new().with_user_id("u1"));
    track!(&telemetry => "user.a");
    telemetry.clear_context();
    track!(&telemetry => "user.b");
    assert!(telemetry.flush(SECOND).await);
    let m = telemetry.memory("m").unwrap();
    assert_eq!(m.named("user.a")[0].context().user_id(), Some("u1"));
    assert_eq!(m.named("user.b")[0].context().user_id(), None);
}

/// `track!` leaves an event's id to the worker of its one destination (off the request path),
/// but every destination still gets a UUIDv7 of the event's own millisecond, unique, the
/// same one wherever the event goes, and already drawn where debug output prints it.
#[tokio::test]
async fn every_event_reaches_its_destinations_with_one_unique_id_of_its_own_millisecond() {
    let config = Config::from_yaml_str(
        r#"
telemetry:
  destinations:
    one: { type: memory, events: ["solo.*", "both.*"] }
    two: { type: memory, events: ["both.*"] }
"#,
    )
    .unwrap();
    let check = |t: &Telemetry| {
        let mut ids = HashSet::new();
        for name in ["one", "two"] {
            for e in t.memory(name).unwrap().events() {
                assert_eq!(e.id().get_version_num(), 7, "{name}: {e:?}");
                let (secs, nanos) = e.id().get_timestamp().unwrap().to_unix();
                assert_eq!(
                    secs * 1000 + u64::from(nanos / 1_000_000),
                    e.timestamp_millis(),
                    "{name}: the id's millisecond is the event's"
                );
                ids.insert((
                    e.name().to_owned(),
                    e.properties().get("i").unwrap().to_json(),
                    e.id(),
                ));
            }
        }
        ids
    };
    for debug in [false, true] {
        let t = Telemetry::builder()
            .config(config.clone().with_debug(debug))
            .build()
            .unwrap();
        for i in 0..300 {
            track!(&t => "solo.step", i = i);
            track!(&t => "both.step", i = i);
        }
        // The worker shares this test's thread and runs only at the flush: the ids are drawn
        // milliseconds after the events' timestamps, which they must not take.
        std::thread::sleep(Duration::from_millis(3));
        assert!(t.flush(SECOND * 5).await);
        let ids = check(&t);
        // 300 solo events, 300 shared ones delivered twice under one id each.
        assert_eq!(ids.len(), 600, "debug {debug}");
        let distinct: HashSet<_> = ids.iter().map(|(_, _, id)| *id).collect();
        assert_eq!(
            distinct.len(),
            600,
            "debug {debug}: no two events share an id"
        );
        assert_eq!(t.memory("two").unwrap().events().len(), 300);
    }
}

#[tokio::test]
async fn properties_and_categories() {
    let telemetry = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    let model = String::from("flux-dev");
    track!(&telemetry => "generation.started", model = model, user_id = "user_123", credits_cost = 10, "a.b" = [1, 2]);
    telemetry.track_event(
        "checkout.completed",
        serde_json::json!({ "package_id": "creator", "amount": 9.99 }),
    );
    assert!(telemetry.flush(SECOND).await);
    let m = telemetry.memory("m").unwrap();
    let started = m.wait_for("generation.started", SECOND).await.unwrap();
    let keys: Vec<_> = started
        .properties()
        .iter()
        .map(|(k, _)| k.to_owned())
        .collect();
    assert_eq!(keys, ["model", "user_id", "credits_cost", "a.b"]);
    assert_eq!(started.properties().get("credits_cost").unwrap(), 10);
    assert_eq!(started.category().as_str(), "generation");
    let checkout = m.named("checkout.completed").pop().unwrap();
    assert_eq!(checkout.category().as_str(), "checkout");
    assert_eq!(checkout.properties().get("amount").unwrap(), 9.99);
    tower_telemetry::assert_tracked!(m, "checkout.completed", package_id = "creator");

    // A key given twice keeps its place and the last value, like `Properties::insert`
    // (`track!` skips that search only when its keys are distinct).
    track!(&telemetry => "user.twice", plan = "free", seats = 1, "plan" = "pro");
    assert!(telemetry.flush(SECOND).await);
    let twice = m.named("user.twice").pop().unwrap();
    let entries: Vec<_> = twice
        .properties()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_json()))
        .collect();
    assert_eq!(
        entries,
        [
            ("plan".to_owned(), serde_json::json!("pro")),
            ("seats".to_owned(), serde_json::json!(1))
        ]
    );
}

#[tokio::test]
async fn invalid_names_and_payloads_are_counted_rejections() {
    let telemetry = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    telemetry.track("", props! {});
    telemetry.track("user.\nforged", props! {});
    telemetry.track("x".repeat(201), props! {});
    telemetry.track_event("user.list", vec![1, 2, 3]);
    telemetry.track_event("user.text", "not an object");
    track!(&telemetry => "user.ok");
    assert!(telemetry.flush(SECOND).await);
    assert_eq!(telemetry.stats().rejected, 5);
    assert_eq!(telemetry.memory("m").unwrap().len(), 1);
}

#[tokio::test]
async fn properties_are_not_evaluated_when_not_routed() {
    let telemetry = Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("m")
                    .with_kind("memory")
                    .with_events(["user.*"]),
            ),
        )
        .build()
        .unwrap();
    let mut evaluated = 0;
    let mut count = || {
        evaluated += 1;
        evaluated
    };
    track!(&telemetry => "system.boot", n = count());
    track!(&telemetry => "user.signup", n = count());
    assert_eq!(evaluated, 1);
}

fn with_destination(d: Scripted, delivery: DeliveryConfig) -> Telemetry {
    Telemetry::builder()
        .config(
            Config::default().with_destination(DestinationConfig::new("d").with_delivery(delivery)),
        )
        .destination("d", d)
        .build()
        .unwrap()
}

fn fast() -> DeliveryConfig {
    DeliveryConfig::default().with_flush_interval(Duration::ZERO)
}

#[tokio::test(start_paused = true)]
async fn fails_twice_then_succeeds_delivers_once() {
    let d = Scripted::new([
        Answer::Fail(DeliveryError::retryable("503")),
        Answer::Fail(DeliveryError::retryable("connection refused")),
    ]);
    let t = with_destination(d.clone(), fast().with_batch_size(10));
    for i in 0..5 {
        track!(&t => "user.x", i = i);
    }
    let report = t.shutdown(SECOND * 30).await;
    assert!(!report.timed_out);
    let ids: Vec<_> = d.delivered().iter().map(|e| e.id()).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        5,
        "no event delivered twice"
    );
    let s = report.destination("d").unwrap();
    assert_eq!((s.delivered, s.failed, s.retries), (5, 0, 2));
    // Every attempt carried the same events (same ids).
    for (_, batch) in d.calls() {
        assert_eq!(batch.iter().map(|e| e.id()).collect::<Vec<_>>(), ids);
    }
}

/// A batch leaves when it is full (the clock stands still) or when its flush interval has
/// passed, and the worker sleeps through the wait instead of waking the runtime every tick.
#[tokio::test(start_paused = true)]
async fn batches_leave_when_full_or_due_and_the_wait_wakes_nothing() {
    let interval = Duration::from_secs(10);
    let d = Scripted::new([]);
    let t = with_destination(
        d.clone(),
        DeliveryConfig::default()
            .with_batch_size(10)
            .with_flush_interval(interval),
    );
    let queued = |t: &Telemetry| t.stats().destination("d").unwrap().queued;
    let start = tokio::time::Instant::now();
    for i in 0..4 {
        track!(&t => "user.x", i = i);
    }
    // The worker takes these four and lingers for six more.
    while queued(&t) > 0 {
        tokio::task::yield_now().await;
    }
    for i in 4..10 {
        track!(&t => "user.x", i = i);
    }
    d.wait_calls(1).await;
    let calls = d.calls();
    assert_eq!((calls[0].0 - start, calls[0].1.len()), (Duration::ZERO, 10));

    // Three events: their batch waits the whole interval, with the runtime asleep.
    let parks = tokio::runtime::Handle::current()
        .metrics()
        .worker_park_count(0);
    for i in 0..3 {
        track!(&t => "user.y", i = i);
    }
    d.wait_calls(2).await;
    let calls = d.calls();
    assert_eq!((calls[1].0 - start, calls[1].1.len()), (interval, 3));
    let woken = tokio::runtime::Handle::current()
        .metrics()
        .worker_park_count(0)
        - parks;
    assert!(
        woken <= 4,
        "the runtime was woken {woken} times in {interval:?}"
    );
    assert!(t.flush(SECOND).await);
}

/// Dropping the last handle without `shutdown`: what is queued still goes out, at once rather
/// than at the batch's deadline.
#[tokio::test(start_paused = true)]
async fn the_last_handle_dropped_sends_what_is_queued_without_waiting_for_the_interval() {
    let d = Scripted::new([]);
    let t = with_destination(
        d.clone(),
        DeliveryConfig::default().with_flush_interval(Duration::from_secs(3600)),
    );
    let start = tokio::time::Instant::now();
    for i in 0..3 {
        track!(&t => "user.x", i = i);
    }
    drop(t);
    d.wait_calls(1).await;
    let calls = d.calls();
    assert_eq!((calls[0].0 - start, calls[0].1.len()), (Duration::ZERO, 3));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let d = Scripted::new([Answer::Fail(
        DeliveryError::retryable("429").with_retry_after(Duration::from_secs(2)),
    )]);
    let t = with_destination(d.clone(), fast());
    track!(&t => "user.x");
    assert!(t.flush(SECOND * 10).await);
    let calls = d.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1].0 - calls[0].0 >= Duration::from_secs(2),
        "{:?}",
        calls[1].0 - calls[0].0
    );
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_and_permanent_failures_are_counted() {
    let d = Scripted::new([
        Answer::Fail(DeliveryError::permanent("400")),
        Answer::Fail(DeliveryError::retryable("500")),
        Answer::Fail(DeliveryError::retryable("500")),
        Answer::Fail(DeliveryError::retryable("500")),
    ]);
    let t = with_destination(
        d.clone(),
        fast()
            .with_batch_size(1)
            .with_retry(RetryConfig::default().with_max_attempts(3)),
    );
    track!(&t => "user.a");
    assert!(t.flush(SECOND).await);
    track!(&t => "user.b");
    let report = t.shutdown(SECOND * 60).await;
    let s = report.destination("d").unwrap();
    assert_eq!(
        (s.delivered, s.failed, s.retries, s.undelivered),
        (0, 2, 2, 0)
    );
    assert_eq!(d.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn partial_failures_retry_only_the_failed_items() {
    let d = Scripted::new([Answer::Fail(DeliveryError::partial([
        (1, DeliveryError::retryable("500")),
        (2, DeliveryError::permanent("400")),
        (3, DeliveryError::discarded("bot")),
    ]))]);
    let t = with_destination(d.clone(), fast().with_batch_size(10));
    for i in 0..5 {
        track!(&t => "user.x", i = i);
    }
    let report = t.shutdown(SECOND * 10).await;
    let s = report.destination("d").unwrap();
    assert_eq!((s.delivered, s.failed, s.discarded), (3, 1, 1));
    let calls = d.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1.len(), 1, "only the retryable item is sent again");
    assert_eq!(calls[1].1[0].id(), calls[0].1[1].id());
    let delivered: HashSet<_> = d.delivered().iter().map(|e| e.id()).collect();
    assert_eq!(delivered.len(), 3);
}

#[tokio::test]
async fn full_queue_counts_drops_exactly() {
    let d = Scripted::gated();
    let t = with_destination(d.clone(), fast().with_queue_capacity(10).with_batch_size(1));
    track!(&t => "user.first");
    // The worker holds the first event in delivery; it still takes one of the 10 places.
    d.wait_calls(1).await;
    for i in 0..25 {
        track!(&t => "user.x", i = i);
    }
    let s = t.stats();
    let d_stats = s.destination("d").unwrap();
    assert_eq!(d_stats.queued, 9);
    assert_eq!(d_stats.enqueued, 10);
    assert_eq!(d_stats.dropped_queue_full, 16);
    d.release(100);
    let report = t.shutdown(SECOND * 10).await;
    let r = report.destination("d").unwrap();
    assert_eq!(
        (r.delivered, r.dropped_queue_full, r.undelivered),
        (10, 16, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_everything_to_a_slow_destination() {
    let d = Scripted::slow(Duration::from_millis(300));
    let t = with_destination(d.clone(), fast().with_batch_size(4));
    for i in 0..20 {
        track!(&t => "user.x", i = i);
    }
    let report = t.shutdown(SECOND * 60).await;
    assert!(!report.timed_out);
    assert_eq!(report.delivered(), 20);
    assert_eq!(d.delivered().len(), 20);
    // After shutdown: counted, not queued.
    track!(&t => "user.late");
    assert_eq!(t.stats().after_shutdown, 1);
    assert_eq!(t.stats().destination("d").unwrap().enqueued, 20);
    // A second shutdown is harmless and reports the same.
    let again = t.shutdown(SECOND).await;
    assert_eq!(again.delivered(), 20);
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_a_short_deadline_returns_on_time_with_exact_counts() {
    let d = Scripted::gated(); // never answers
    let t = with_destination(d.clone(), fast().with_batch_size(2));
    for i in 0..7 {
        track!(&t => "user.x", i = i);
    }
    d.wait_calls(1).await;
    let start = tokio::time::Instant::now();
    let report = t.shutdown(Duration::from_millis(500)).await;
    let took = start.elapsed();
    assert!(report.timed_out);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(600),
        "{took:?}"
    );
    let s = report.destination("d").unwrap();
    assert_eq!((s.enqueued, s.delivered, s.undelivered), (7, 0, 7));
}

#[test]
fn works_from_plain_threads_without_a_runtime() {
    let memory = MemoryDestination::new();
    let t = Telemetry::builder()
        .destination("m", memory.clone())
        .build()
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                for j in 0..100 {
                    track!(&t => "user.thread", i = i, j = j);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(t.shutdown(SECOND * 10));
    assert_eq!(report.delivered(), 400);
    assert_eq!(memory.len(), 400);
}

#[tokio::test]
async fn disabled_tracks_nothing() {
    let memory = MemoryDestination::new();
    let t = Telemetry::builder()
        .config(Config::default().with_enabled(false))
        .destination("m", memory.clone())
        .build()
        .unwrap();
    track!(&t => "user.x");
    assert!(t.flush(SECOND).await);
    assert!(memory.is_empty());
    assert!(!t.is_enabled());
}

#[tokio::test]
async fn building_checks_what_each_destination_needs() {
    let err =
        Telemetry::from_yaml_str("telemetry:\n  destinations:\n    kafka:\n      events: [x.*]\n")
            .unwrap_err();
    let e = &err.errors()[0];
    assert_eq!(e.path(), "telemetry.destinations.kafka");
    assert!(e.message().contains("unknown destination `kafka`"), "{e}");
    let err =
        Telemetry::from_yaml_str("telemetry:\n  destinations:\n    audit:\n      type: nope\n")
            .unwrap_err();
    assert_eq!(err.errors()[0].path(), "telemetry.destinations.audit.type");
    // Umami without its website id.
    let err = Telemetry::from_yaml_str(
        "telemetry:\n  destinations:\n    umami:\n      url: http://127.0.0.1:3000\n",
    )
    .unwrap_err();
    assert!(
        err.errors()
            .iter()
            .any(|e| e.path() == "telemetry.destinations.umami.website_id"),
        "{err}"
    );
    // Supplying the implementation in code skips the kind's own checks.
    let config = Config::from_yaml_str("telemetry:\n  destinations:\n    kafka: {}\n").unwrap();
    assert!(
        Telemetry::builder()
            .config(config)
            .destination("kafka", MemoryDestination::new())
            .build()
            .is_ok()
    );
}

/// Literal values take `track!`'s conversion without `serde` (a string literal is not copied);
/// a literal that starts a longer expression is still the expression's value, and every kind
/// of literal serializes as `serde_json` would serialize it.
#[tokio::test]
async fn literal_values_and_expressions_starting_with_a_literal() {
    let telemetry = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    let n = 3;
    track!(&telemetry => "user.literals",
        s = "flux-dev",
        len = "abc".len(),
        neg = -1,
        sum = 1 + n,
        big = 18_446_744_073_709_551_615u64,
        f = 0.5,
        t = true,
        c = 'x',
        bytes = b"ab",
        raw = r#"q"uote"#,
        last = "end".to_uppercase()
    );
    // Values that are not literals: borrowed and owned strings, numbers, options, structs.
    #[derive(serde::Serialize)]
    struct Plan {
        seats: u8,
    }
    let owned = String::from("owned");
    let borrowed: &str = &owned[1..3];
    let (small, big, ratio) = (7u8, u64::MAX, 0.25f32);
    track!(&telemetry => "user.values",
        owned = owned,
        by_ref = &owned,
        borrowed = borrowed,
        small = small,
        big = big,
        ratio = ratio,
        some = Some(3),
        none = None::<i32>,
        plan = Plan { seats: 2 },
        list = vec![1, 2]
    );
    assert!(telemetry.flush(SECOND).await);
    let e = telemetry
        .memory("m")
        .unwrap()
        .named("user.literals")
        .pop()
        .unwrap();
    assert_eq!(
        serde_json::to_value(e.properties()).unwrap(),
        serde_json::json!({
            "s": "flux-dev", "len": 3, "neg": -1, "sum": 4, "big": u64::MAX, "f": 0.5,
            "t": true, "c": "x", "bytes": [97, 98], "raw": "q\"uote", "last": "END"
        })
    );
    let values = telemetry
        .memory("m")
        .unwrap()
        .named("user.values")
        .pop()
        .unwrap();
    assert_eq!(
        serde_json::to_value(values.properties()).unwrap(),
        serde_json::json!({
            "owned": "owned", "by_ref": "owned", "borrowed": "wn", "small": 7, "big": u64::MAX,
            "ratio": 0.25, "some": 3, "none": null, "plan": {"seats": 2}, "list": [1, 2]
        })
    );
    let p = e.properties();
    assert_eq!(p.get("s").unwrap().as_str(), Some("flux-dev"));
    assert_eq!(p.get("big").unwrap().as_u64(), Some(u64::MAX));
    assert_eq!(p.get("neg").unwrap().as_i64(), Some(-1));
}
