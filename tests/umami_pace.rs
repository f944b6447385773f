//! The Umami contract server at a real server's pace (issue #27): the model's mechanics (in
//! `cargo test`, lower bounds only), and two measurements, ignored by default, run in a release
//! build (BENCHMARKS.md, "Umami at the real server's pace"):
//!
//! ```text
//! cargo test --release --all-features --test umami_pace -- --ignored --nocapture --test-threads 1
//! ```
#![cfg(feature = "umami")]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use support::umami_server::{Pace, UmamiServer, WEBSITE_ID};
use tower_telemetry::{
    Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig},
    destination::Destination,
    destination::umami::{UmamiConfig, UmamiDestination},
    track,
};

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) pace-test";

type C = Client<HttpConnector, Full<Bytes>>;

fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

fn item(seq: usize) -> Value {
    json!({ "type": "event", "payload": {
        "website": WEBSITE_ID, "url": "/pace", "name": "pace.item", "data": { "seq": seq }
    }})
}

/// One POST, as a plain load generator sends it: `/api/send` with one item, or `/api/batch`.
async fn post(c: &C, base: &str, n: usize) {
    let (path, body) = if n == 1 {
        ("/api/send", item(0))
    } else {
        ("/api/batch", Value::Array((0..n).map(item).collect()))
    };
    let req = hyper::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    res.into_body().collect().await.unwrap();
}

/// `connections` clients each posting requests of `n` items back to back for `window`:
/// events answered per second.
async fn load(server: &UmamiServer, n: usize, connections: usize, window: Duration) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let c = client();
            let url = server.url();
            tokio::spawn(async move {
                let mut done = 0usize;
                while started.elapsed() < window {
                    post(&c, &url, n).await;
                    done += n;
                }
                done
            })
        })
        .collect();
    let mut events = 0;
    for t in tasks {
        events += t.await.unwrap();
    }
    events as f64 / started.elapsed().as_secs_f64()
}

// ----- the model's mechanics (no timing goal: lower bounds the model implies) -------------------

/// The arithmetic of the fitted pace gives back the four figures it was fitted to, and the
/// crate's figure it was not fitted to within 15 %.
#[test]
fn umami_3_1_pace_reproduces_the_measured_figures_on_paper() {
    let p = Pace::UMAMI_3_1;
    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let within = |got: f64, want: f64, tol: f64| (got / want - 1.0).abs() <= tol;
    // Enough connections: processor-bound.
    assert!(within(per_s(1, p.busy(1)), 157.0, 0.01));
    assert!(within(per_s(20, p.busy(20)), 270.0, 0.01));
    // One connection: every wait in sequence.
    assert!(within(per_s(20, p.alone(20)), 188.0, 0.01));
    assert!(within(p.alone(500).as_secs_f64(), 7.4, 0.01));
    // Not fitted: the crate's defaults (batch 100, 4 requests in flight), 176 events/s end
    // to end.
    assert!(within(per_s(100, p.busy(100)), 176.0, 0.15));
}

/// The defaults the grid chose (BENCHMARKS.md, "Umami at the real server's pace"): batches of
/// 20, 4 requests in flight.
#[test]
fn umami_delivery_defaults_are_the_ones_the_pace_grid_chose() {
    let d = UmamiDestination::new(UmamiConfig::new("http://127.0.0.1:1", WEBSITE_ID)).unwrap();
    let defaults = d.delivery_defaults();
    assert_eq!(defaults.batch_size(), 20);
    assert_eq!(defaults.concurrency(), 4);
    assert_eq!(d.preferred_batch_size(), 20);
}

/// A request's items are handled one after the other; concurrent requests share the one
/// processor; at most `max_in_flight` requests are processed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_server_serialises_items_shares_the_processor_and_bounds_requests() {
    let server = UmamiServer::start().await;
    server.pace(Pace {
        per_request: Duration::ZERO,
        per_item: Duration::from_millis(10),
        per_item_growth: Duration::from_millis(1),
        per_item_wait: Duration::from_millis(5),
        max_in_flight: 2,
    });
    let c = client();
    let url = server.url();

    // One request of 10 items: Σ (10 + i) ms of processor + 10 × 5 ms of waits.
    let t = Instant::now();
    post(&c, &url, 10).await;
    assert!(
        t.elapsed() >= Duration::from_millis(145 + 50),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.events().len(), 10);

    // Two requests of 10 at once: the processor serves 2 × 145 ms.
    let t = Instant::now();
    let c2 = client();
    tokio::join!(post(&c, &url, 10), post(&c2, &url, 10));
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.events().len(), 30);

    // Waits overlap, but only for `max_in_flight` requests: 4 sends of pure waiting (50 ms)
    // with 2 places take two rounds.
    server.pace(Pace {
        per_request: Duration::ZERO,
        per_item: Duration::ZERO,
        per_item_growth: Duration::ZERO,
        per_item_wait: Duration::from_millis(50),
        max_in_flight: 2,
    });
    let t = Instant::now();
    let sends: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&client(), &url, 1).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.events().len(), 34);
}

// ----- measurements (release build, ignored by default) ----------------------------------------

/// A plain load generator against the paced server: the four figures measured on the real
/// Umami 3.1.0, reproduced within 15 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in a release build, see BENCHMARKS.md"]
async fn paced_server_reproduces_umami_3_1_under_a_load_generator() {
    let server = UmamiServer::start().await;
    server.pace(Pace::UMAMI_3_1);
    let window = Duration::from_secs(4);
    let send8 = load(&server, 1, 8, window).await;
    let b20x1 = load(&server, 20, 1, window).await;
    let b20x8 = load(&server, 20, 8, window).await;
    let t = Instant::now();
    post(&client(), &server.url(), 500).await;
    let b500 = t.elapsed().as_secs_f64();
    println!(
        "pace: /api/send x 8 connections {send8:.0} events/s (real 157); batch 20 x 1 \
         {b20x1:.0} (real 188); batch 20 x 8 {b20x8:.0} (real 270); one batch of 500 \
         {b500:.2} s (real 7.4)"
    );
    for (got, want) in [(send8, 157.0), (b20x1, 188.0), (b20x8, 270.0), (b500, 7.4)] {
        assert!((got / want - 1.0).abs() <= 0.15, "{got} vs {want}");
    }
}

struct Run {
    per_s: f64,
    p50: Duration,
    p99: Duration,
    requests: usize,
}

/// `n` events tracked through a `Telemetry` handle into the `umami` kind (batch `batch`,
/// `concurrency` requests in flight), `rate` events/s from one task (`None`: as fast as it
/// can); timed from the first tracked to the last stored, latency per event from its
/// `track!` to its storing.
async fn run(
    server: &UmamiServer,
    n: usize,
    rate: Option<f64>,
    batch: usize,
    concurrency: usize,
) -> Run {
    let umami = UmamiDestination::new(UmamiConfig::new(server.url(), WEBSITE_ID)).unwrap();
    let delivery = DeliveryConfig::default()
        .with_batch_size(batch)
        .with_concurrency(concurrency)
        .with_timeout(Duration::from_secs(60))
        .with_queue_capacity(n.max(10_000));
    let telemetry = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("umami").with_delivery(delivery)),
        )
        .destination("umami", umami)
        .build()
        .unwrap();
    let before = server.events().len();
    let mut tracked = Vec::with_capacity(n);
    let started = Instant::now();
    for seq in 0..n {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        tracked.push(Instant::now());
        track!(&telemetry => "pace.tracked", seq = seq, plan = "pro");
    }
    assert!(
        server
            .wait_for_events(before + n, Duration::from_secs(120))
            .await
    );
    let events = server.events();
    let last = events.iter().map(|e| e.stored).max().unwrap();
    let by_seq: HashMap<u64, Instant> = events[before..]
        .iter()
        .filter_map(|e| Some((e.datum("seq")?.as_u64()?, e.stored)))
        .collect();
    let mut lat: Vec<Duration> = (0..n)
        .map(|s| by_seq[&(s as u64)].saturating_duration_since(tracked[s]))
        .collect();
    lat.sort();
    telemetry.shutdown(Duration::from_secs(10)).await;
    Run {
        per_s: n as f64 / last.duration_since(started).as_secs_f64(),
        p50: lat[n / 2],
        p99: lat[n * 99 / 100],
        requests: server.requests().len(),
    }
}

/// The `umami` kind's `batch_size` × `concurrency` against the paced server (3 000 events at
/// 400 events/s, more than any setting delivers: the queue grows, delivery is sustained) and
/// against the unpaced server (3 000 events as fast as one task tracks them). `PACE_SERVERS`
/// (`paced,fast`), `PACE_EVENTS`, `PACE_FAST_EVENTS`, `PACE_BATCHES` (`10,20,50,100,200`) and
/// `PACE_CONCURRENCY` (`1,2,4,8`) narrow or lengthen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in a release build, see BENCHMARKS.md"]
async fn umami_delivery_grid_at_the_real_servers_pace() {
    let env = |k: &str| std::env::var(k).ok();
    let paced_events: usize = env("PACE_EVENTS").map_or(3_000, |v| v.parse().unwrap());
    let fast_events: usize = env("PACE_FAST_EVENTS").map_or(3_000, |v| v.parse().unwrap());
    let servers = env("PACE_SERVERS").unwrap_or_else(|| "paced,fast".into());
    let batches: Vec<usize> = std::env::var("PACE_BATCHES")
        .map(|v| v.split(',').map(|b| b.parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![10, 20, 50, 100, 200]);
    let concurrencies: Vec<usize> = std::env::var("PACE_CONCURRENCY")
        .map(|v| v.split(',').map(|b| b.parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![1, 2, 4, 8]);
    for paced in [true, false] {
        if !servers.contains(if paced { "paced" } else { "fast" }) {
            continue;
        }
        let n = if paced { paced_events } else { fast_events };
        for &batch in &batches {
            for &concurrency in &concurrencies {
                // A server per cell: the processor's timeline starts idle.
                let server = UmamiServer::start().await;
                if paced {
                    server.pace(Pace::UMAMI_3_1);
                }
                let rate = paced.then_some(400.0);
                let r = run(&server, n, rate, batch, concurrency).await;
                println!(
                    "grid: {} batch {batch:>3} x concurrency {concurrency}: {:>6.0} events/s, \
                     latency p50 {:>8.1?} p99 {:>8.1?}, {} requests",
                    if paced { "paced" } else { "fast " },
                    r.per_s,
                    r.p50,
                    r.p99,
                    r.requests
                );
                server.stop().await;
            }
        }
    }
}
