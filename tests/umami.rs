//! The `umami` destination against a contract-faithful Umami server (tests/support), over real
//! HTTP on 127.0.0.1.
#![cfg(feature = "umami")]

mod support;

use support::logs::Logs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::umami_server::{UmamiServer, WEBSITE_ID, reserve_addr};
use tower_telemetry::{
    Context, Event, EventKind, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, RetryConfig},
    destination::Destination,
    destination::umami::{Forward, UmamiConfig, UmamiDestination, UmamiMode},
    props, track,
};

const WAIT: Duration = Duration::from_secs(10);

/// Quick retries and a short linger, so faults resolve in milliseconds.
fn fast() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_batch_size(100)
        .with_concurrency(4)
        .with_timeout(Duration::from_secs(5))
        .with_flush_interval(Duration::from_millis(5))
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(20)
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(100)),
        )
}

fn handle(config: UmamiConfig, delivery: DeliveryConfig) -> (Telemetry, UmamiDestination) {
    let umami = UmamiDestination::new(config).unwrap();
    let telemetry = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("umami").with_delivery(delivery)),
        )
        .destination("umami", umami.clone())
        .build()
        .unwrap();
    (telemetry, umami)
}

fn config(server: &UmamiServer) -> UmamiConfig {
    UmamiConfig::new(server.url(), WEBSITE_ID)
}

/// Each stored event's `seq` datum, with how often it was stored.
fn seqs(server: &UmamiServer) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for e in server.events() {
        if let Some(s) = e.datum("seq").and_then(Value::as_u64) {
            *seen.entry(s).or_default() += 1;
        }
    }
    seen
}

fn assert_each_once(server: &UmamiServer, n: u64) {
    let seen = seqs(server);
    for s in 0..n {
        assert_eq!(
            seen.get(&s),
            Some(&1),
            "event {s} stored {:?} times",
            seen.get(&s)
        );
    }
    assert_eq!(seen.len() as u64, n);
}

/// Waits (polling a condition, not sleeping in its place) until `done` holds.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn events_arrive_once_with_names_data_url_hostname_and_id() {
    let server = UmamiServer::start().await;
    let (telemetry, umami) = handle(
        config(&server)
            .with_include_query(true)
            .with_context_data(["request_id"]),
        fast(),
    );
    const N: u64 = 60;
    for seq in 0..N {
        let user = format!("user_{}", seq % 3);
        let ctx = Context::new()
            .with_user_id(user)
            .with_path("/api/generate")
            .with_query("plan=pro")
            .with_hostname("app.example.com")
            .with_request_id(format!("req_{seq}"))
            .with_language("de-DE,de;q=0.9")
            .with_user_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36");
        telemetry
            .scope(ctx, async {
                track!(&telemetry => "generation.started",
                    seq = seq, model = "flux-dev", credits = 10, ratio = 0.5, paid = true,
                    params = json!({ "steps": 4, "size": { "w": 1024 } }),
                    at = "2025-01-02T03:04:05Z");
            })
            .await;
    }
    let report = telemetry.shutdown(WAIT).await;
    assert_eq!(report.destination("umami").unwrap().delivered, N);
    assert_each_once(&server, N);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for e in server.events() {
        let seq = e.datum("seq").unwrap().as_u64().unwrap();
        assert_eq!(e.name.as_deref(), Some("generation.started"));
        assert_eq!(e.field("url"), Some("/api/generate?plan=pro"));
        assert_eq!(e.field("hostname"), Some("app.example.com"));
        assert_eq!(e.field("language"), Some("de-DE"));
        assert_eq!(e.field("id"), Some(format!("user_{}", seq % 3).as_str()));
        assert_eq!(e.field("website"), Some(WEBSITE_ID));
        let ts = e.payload["timestamp"].as_u64().unwrap();
        assert!(
            ts <= now && now - ts < 60,
            "timestamp {ts} is not in seconds"
        );
        assert_eq!(e.datum("model"), Some(&json!("flux-dev")));
        assert_eq!(e.datum("credits"), Some(&json!(10)));
        assert_eq!(e.datum("ratio"), Some(&json!(0.5)));
        assert_eq!(e.datum("paid"), Some(&json!(true)));
        assert_eq!(
            e.datum("params"),
            Some(&json!({ "steps": 4, "size": { "w": 1024 } }))
        );
        assert_eq!(e.datum("at"), Some(&json!("2025-01-02T03:04:05.000Z")));
        assert_eq!(e.datum("request_id"), Some(&json!(format!("req_{seq}"))));
        assert!(
            e.user_agent.contains("Chrome/126.0"),
            "the end user's agent is forwarded"
        );
        assert_eq!(e.header_user_agent, UmamiConfig::DEFAULT_USER_AGENT);
        assert!(e.payload.get("ip").is_none());
    }
    // Batched: far fewer requests than events.
    assert!(umami.stats().requests < N / 5, "{:?}", umami.stats());
    assert!(server.events().iter().all(|e| e.endpoint == "/api/batch"));
}

#[tokio::test]
async fn page_views_have_no_name() {
    let server = UmamiServer::start().await;
    let umami = UmamiDestination::new(config(&server)).unwrap();
    let views: Vec<Arc<Event>> = (0..5)
        .map(|i| {
            Arc::new(
                Event::new("http.request", props! { "status" => 200 })
                    .with_kind(EventKind::PageView)
                    .with_context(
                        Context::new()
                            .with_path(format!("/page/{i}"))
                            .with_hostname("app.example.com")
                            .with_user_id("user_1"),
                    ),
            )
        })
        .collect();
    umami.send(&views).await.unwrap();
    let stored = server.events();
    assert_eq!(stored.len(), 5);
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.name, None);
        assert_eq!(e.field("url"), Some(format!("/page/{i}").as_str()));
        assert_eq!(e.field("id"), Some("user_1"));
    }
}

#[tokio::test]
async fn a_bot_like_user_agent_is_counted_as_discarded_and_warned_once() {
    // Captures what is logged on this thread (the worker runs on the same thread).
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));

    let server = UmamiServer::start().await;
    let (telemetry, umami) = handle(config(&server).with_user_agent("curl/8.5.0"), fast());
    for seq in 0..12 {
        track!(&telemetry => "user.clicked", seq = seq);
    }
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.discarded, d.failed), (0, 12, 0));
    assert_eq!(umami.stats().discarded, 12);
    assert!(server.events().is_empty());
    // The server did answer, with beep/boop: nothing was stored.
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.status == 200 && r.header_user_agent == "curl/8.5.0")
    );
    let text = logs.text();
    assert_eq!(
        text.matches("set `user_agent` to a browser-like value")
            .count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn the_default_user_agent_passes_and_forwarded_bots_are_discarded_individually() {
    let server = UmamiServer::start().await;
    let (telemetry, umami) = handle(config(&server), fast());
    for seq in 0..10u64 {
        let ua = if seq == 3 {
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
        } else {
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
        };
        telemetry
            .scope(Context::new().with_user_agent(ua), async {
                track!(&telemetry => "user.clicked", seq = seq);
            })
            .await;
    }
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.discarded), (9, 1));
    assert_eq!(umami.stats().discarded, 1);
    assert_eq!(server.events().len(), 9);
    assert!(!seqs(&server).contains_key(&3));
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header_user_agent == UmamiConfig::DEFAULT_USER_AGENT)
    );
    assert!(!support::umami_server::is_bot(
        UmamiConfig::DEFAULT_USER_AGENT
    ));
}

#[tokio::test]
async fn without_api_batch_every_event_still_arrives_once() {
    let server = UmamiServer::start().await;
    server.without_batch();
    let (telemetry, umami) = handle(config(&server), fast());
    for seq in 0..40 {
        track!(&telemetry => "payment.completed", seq = seq, amount = 9.99);
    }
    let report = telemetry.shutdown(WAIT).await;
    assert_eq!(report.destination("umami").unwrap().delivered, 40);
    assert_each_once(&server, 40);
    assert!(umami.stats().send_fallback);
    // Remembered: /api/batch was tried once, never again.
    let batch_calls = server
        .requests()
        .iter()
        .filter(|r| r.path == "/api/batch")
        .count();
    assert_eq!(batch_calls, 1);
}

#[tokio::test]
async fn three_500s_then_success_delivers_each_event_once() {
    for mode in [UmamiMode::Batch, UmamiMode::Send, UmamiMode::Auto] {
        let server = UmamiServer::start().await;
        server.fail_next(3);
        let (telemetry, _) = handle(config(&server).with_mode(mode), fast());
        for seq in 0..20 {
            track!(&telemetry => "generation.completed", seq = seq);
        }
        let report = telemetry.shutdown(WAIT).await;
        let d = report.destination("umami").unwrap();
        assert_eq!((d.delivered, d.failed), (20, 0), "{mode:?}");
        assert!(d.retries >= 1, "{mode:?}");
        assert_each_once(&server, 20);
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = UmamiServer::start().await;
    server.throttle_next(1, 2);
    let (telemetry, _) = handle(config(&server), fast());
    for seq in 0..5 {
        track!(&telemetry => "user.signup", seq = seq);
    }
    assert!(server.wait_for_events(5, WAIT).await);
    // Real sockets and a paused tokio clock do not mix (auto-advance fires client timeouts
    // while the runtime waits on I/O), so this measures real time at the server: the retry
    // must arrive at least 2 s after the 429 was answered.
    let requests = server.requests();
    assert_eq!(requests[0].status, 429);
    let retry = requests.iter().find(|r| r.status == 200).unwrap();
    let waited = retry.at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    telemetry.shutdown(WAIT).await;
    assert_each_once(&server, 5);
}

#[tokio::test]
async fn a_timed_out_request_is_retried() {
    let server = UmamiServer::start().await;
    server.delay_next(1, Duration::from_secs(2));
    let (telemetry, _) = handle(
        config(&server),
        fast().with_timeout(Duration::from_millis(300)),
    );
    for seq in 0..8 {
        track!(&telemetry => "user.signup", seq = seq);
    }
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!(d.delivered, 8);
    assert!(d.retries >= 1);
    assert_each_once(&server, 8);
}

#[tokio::test]
async fn one_rejected_item_of_a_batch_fails_alone() {
    let server = UmamiServer::start().await;
    server.reject_in_batch("user.bad");
    let (telemetry, _) = handle(config(&server).with_mode(UmamiMode::Batch), fast());
    for seq in 0..10 {
        let name = if seq == 4 { "user.bad" } else { "user.good" };
        track!(&telemetry => name, seq = seq);
    }
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.failed, d.retries), (9, 1, 0));
    assert_eq!(server.events().len(), 9);
    assert!(
        server
            .events()
            .iter()
            .all(|e| e.name.as_deref() == Some("user.good"))
    );
}

#[tokio::test]
async fn events_queued_while_the_server_is_down_arrive_once_after_recovery() {
    let addr = reserve_addr();
    let (telemetry, _) = handle(
        UmamiConfig::new(format!("http://{addr}"), WEBSITE_ID),
        fast(),
    );
    let started = Instant::now();
    for seq in 0..30 {
        track!(&telemetry => "user.signup", seq = seq);
    }
    // Tracking never waits on Umami.
    assert!(started.elapsed() < Duration::from_millis(200));
    wait_for("a refused connection to be retried", || {
        telemetry.stats().destination("umami").unwrap().retries >= 2
    })
    .await;
    for seq in 30..60 {
        track!(&telemetry => "user.signup", seq = seq);
    }
    let server = UmamiServer::start_on(addr).await;
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.failed, d.undelivered), (60, 0, 0));
    assert_each_once(&server, 60);
}

#[tokio::test]
async fn over_long_names_and_values_are_truncated_and_counted_never_rejected() {
    let server = UmamiServer::start().await;
    let (telemetry, umami) = handle(config(&server).with_hostname("app.example.com"), fast());
    let long_name = format!("generation.{}", "x".repeat(70));
    track!(&telemetry => long_name.clone(),
        seq = 0u64,
        prompt = "é".repeat(700),
        nested = json!({ "text": "y".repeat(501) }),
        tags = vec!["tag-value"; 80]);
    telemetry
        .scope(Context::new().with_user_id("u".repeat(80)), async {
            track!(&telemetry => "user.clicked", seq = 1u64);
        })
        .await;
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.failed), (2, 0));
    assert_each_once(&server, 2);
    let stored = server.events();
    let long = stored
        .iter()
        .find(|e| e.datum("seq") == Some(&json!(0)))
        .unwrap();
    assert_eq!(long.name.as_deref(), Some(&long_name[..50]));
    assert_eq!(
        long.datum("prompt")
            .unwrap()
            .as_str()
            .unwrap()
            .chars()
            .count(),
        500
    );
    assert_eq!(
        long.datum("nested").unwrap()["text"]
            .as_str()
            .unwrap()
            .len(),
        500
    );
    assert_eq!(
        long.datum("tags")
            .unwrap()
            .as_str()
            .unwrap()
            .chars()
            .count(),
        500
    );
    let no_id = stored
        .iter()
        .find(|e| e.datum("seq") == Some(&json!(1)))
        .unwrap();
    assert!(no_id.payload.get("id").is_none());
    let s = umami.stats();
    assert_eq!(
        (s.names_truncated, s.values_truncated, s.fields_omitted),
        (1, 3, 1)
    );
}

#[tokio::test]
async fn shutdown_delivers_everything_queued() {
    let server = UmamiServer::start().await;
    // A long linger: nothing would leave before shutdown by itself.
    let (telemetry, _) = handle(
        config(&server),
        fast().with_flush_interval(Duration::from_secs(30)),
    );
    for seq in 0..250 {
        track!(&telemetry => "generation.started", seq = seq);
    }
    let report = telemetry.shutdown(WAIT).await;
    assert!(!report.timed_out);
    assert_eq!(report.destination("umami").unwrap().delivered, 250);
    assert_each_once(&server, 250);
}

#[tokio::test]
async fn forwarding_the_ip_is_opt_in() {
    let server = UmamiServer::start().await;
    let (telemetry, _) = handle(
        config(&server).with_forward(Forward::default().with_ip(true)),
        fast(),
    );
    telemetry
        .scope(Context::new().with_client_ip("203.0.113.7"), async {
            track!(&telemetry => "user.clicked", seq = 0u64);
        })
        .await;
    telemetry.shutdown(WAIT).await;
    assert_eq!(server.events()[0].field("ip"), Some("203.0.113.7"));
}

#[tokio::test]
async fn configured_destinations_validate_their_keys() {
    let dc = DestinationConfig::new("umami")
        .with_setting("url", "not a url")
        .with_setting("website_id", "not-a-uuid")
        .with_setting("mode", "fast")
        .with_setting("colour", "blue");
    let err = Telemetry::from_config(Config::default().with_destination(dc)).unwrap_err();
    let paths: Vec<&str> = err.errors().iter().map(|e| e.path()).collect();
    for key in ["url", "website_id", "mode", "colour"] {
        let path = format!("telemetry.destinations.umami.{key}");
        assert!(paths.contains(&path.as_str()), "{path} not in {paths:?}");
    }

    let server = UmamiServer::start().await;
    let dc = DestinationConfig::new("analytics")
        .with_kind("umami")
        .with_setting("url", format!("{}/api/send", server.url()))
        .with_setting("website_id", WEBSITE_ID)
        .with_setting("forward", json!({ "language": false }))
        .with_setting("distinct_id", "none");
    let telemetry = Telemetry::from_config(Config::default().with_destination(dc)).unwrap();
    telemetry
        .scope(
            Context::new().with_user_id("u1").with_language("en"),
            async {
                track!(&telemetry => "user.clicked", seq = 0u64);
            },
        )
        .await;
    telemetry.shutdown(WAIT).await;
    let e = &server.events()[0];
    assert!(e.payload.get("id").is_none() && e.payload.get("language").is_none());
}

/// Events per second against the test server, mode batch vs mode send (4 requests in flight).
/// `cargo test --release --test umami -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    const N: u64 = 20_000;
    for mode in [UmamiMode::Batch, UmamiMode::Send] {
        let server = UmamiServer::start().await;
        let (telemetry, umami) = handle(
            config(&server).with_mode(mode),
            DeliveryConfig::default()
                .with_queue_capacity(N as usize)
                .with_batch_size(100)
                .with_concurrency(4)
                .with_flush_interval(Duration::from_millis(1)),
        );
        let started = Instant::now();
        for seq in 0..N {
            telemetry.track(
                "generation.started",
                props! { "seq" => seq, "model" => "flux-dev" },
            );
        }
        let report = telemetry.shutdown(Duration::from_secs(120)).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.destination("umami").unwrap().delivered, N);
        assert_eq!(server.events().len() as u64, N);
        println!(
            "{mode:?}: {N} events in {secs:.2} s = {:.0} events/s, {} requests",
            N as f64 / secs,
            umami.stats().requests
        );
    }
}

#[tokio::test]
async fn through_an_axum_app_with_the_layer_each_event_and_page_view_arrives_once() {
    use axum::extract::Query;
    use axum::routing::post;
    use tower_telemetry::{Tracker, layer::TelemetryLayer};

    async fn generate(tracker: Tracker, Query(q): Query<HashMap<String, u64>>) -> &'static str {
        tracker.track(
            "generation.started",
            props! { "seq" => q["seq"], "model" => "flux-dev" },
        );
        "ok"
    }

    let umami = UmamiServer::start().await;
    // The first delivery hangs for 2 s: requests to the app must not notice.
    umami.delay_next(1, Duration::from_secs(2));
    let (telemetry, _) = handle(config(&umami), fast());
    let app = axum::Router::new()
        .route("/api/generate", post(generate))
        .layer(
            TelemetryLayer::new(telemetry.clone())
                .user_id(|p: &http::request::Parts| {
                    p.headers
                        .get("x-user")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                })
                .request_events(true),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app_task = tokio::spawn(async move { axum::serve(listener, app).await });

    const N: u64 = 30;
    const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15";
    // reqwest is built without a crypto provider (the crate hands its own client ring's), so
    // a plain reqwest client needs one installed, as reqwest's panic message says.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for seq in 0..N {
        let started = Instant::now();
        let res = client
            .post(format!("http://{addr}/api/generate?seq={seq}"))
            .header("x-user", format!("user_{}", seq % 3))
            .header("user-agent", BROWSER)
            .header("accept-language", "fr-FR,fr;q=0.8")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "an app request took {slowest:?}"
    );

    let report = telemetry.shutdown(WAIT).await;
    app_task.abort();
    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.failed, d.discarded), (2 * N, 0, 0));
    assert_each_once(&umami, N);
    let stored = umami.events();
    let host = addr.to_string();
    for e in &stored {
        assert_eq!(
            e.field("url"),
            Some("/api/generate"),
            "no query unless include_query"
        );
        assert_eq!(e.field("hostname"), Some(host.as_str()));
        assert_eq!(e.field("language"), Some("fr-FR"));
        assert_eq!(e.user_agent, BROWSER);
        assert!(e.field("id").is_some_and(|id| id.starts_with("user_")));
    }
    let custom: Vec<_> = stored.iter().filter(|e| e.name.is_some()).collect();
    assert_eq!(custom.len() as u64, N);
    for e in custom {
        assert_eq!(e.name.as_deref(), Some("generation.started"));
        let seq = e.datum("seq").unwrap().as_u64().unwrap();
        assert_eq!(e.field("id"), Some(format!("user_{}", seq % 3).as_str()));
        assert_eq!(e.datum("model"), Some(&json!("flux-dev")));
    }
    let views = stored.iter().filter(|e| e.name.is_none()).count() as u64;
    assert_eq!(views, N, "one page view per request");
    for user in ["user_0", "user_1", "user_2"] {
        let per_user = stored
            .iter()
            .filter(|e| e.field("id") == Some(user))
            .count() as u64;
        assert_eq!(per_user, 2 * N / 3);
    }
}
