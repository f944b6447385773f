//! Events waiting in a queue keep only their own data alive, not the requests they came from:
//! a real axum server on 127.0.0.1 behind `TelemetryLayer`, a destination that never answers,
//! and thousands of requests over keep-alive connections. hyper parses each request's URI and
//! header values as slices of the connection's read buffer (8 KiB or more); a context that kept
//! such a slice would keep that whole buffer alive for as long as its event waits. Its own test
//! binary, so the resident memory it measures is this scenario's alone.

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use support::Scripted;
use support::http::{Server, client, send};
use tower_telemetry::{
    Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig},
    layer::TelemetryLayer,
    track,
};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_do_not_keep_the_requests_read_buffers_alive() {
    const REQUESTS: usize = 4_000;
    const CONNECTIONS: usize = 8;
    let stuck = Scripted::gated();
    let t = Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("stuck").with_delivery(
                    DeliveryConfig::default()
                        .with_queue_capacity(REQUESTS + 1)
                        .with_flush_interval(Duration::ZERO),
                ),
            ),
        )
        .destination("stuck", stuck.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/api/generate",
            get(|| async {
                track!("generation.started", model = "flux-dev", steps = 4);
                "ok"
            }),
        )
        .layer(TelemetryLayer::new(t.clone()));
    let server = Server::start(app).await;
    let url = server.url("/api/generate?model=flux-dev");
    let client = client();
    // The first event blocks the destination; every later one waits in the queue.
    let request = || {
        support::http::get(&url)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT_LANGUAGE, "en-US,en;q=0.9")
            .body(Default::default())
            .unwrap()
    };
    send(&client, request()).await;
    stuck.wait_calls(1).await;
    // `n` requests, from `CONNECTIONS` tasks sending one after another.
    let burst = |n: usize| {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let client = client.clone();
                let requests: Vec<_> = (0..n / CONNECTIONS).map(|_| request()).collect();
                tokio::spawn(async move {
                    for r in requests {
                        let (res, _) = send(&client, r).await;
                        assert_eq!(res.status(), 200);
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // Warm the connections and the allocator before the baseline.
    burst(CONNECTIONS * 4).await;
    let before = rss_kib();
    burst(REQUESTS).await;
    let grown = rss_kib().saturating_sub(before);
    let queued = t.stats().destination("stuck").unwrap().queued;
    println!(
        "{queued} events queued from {REQUESTS} requests: resident memory grew by {grown} KiB"
    );
    assert!(queued >= REQUESTS, "only {queued} events queued");
    // The events and their contexts take about 2 KiB each (8 MiB here, in a debug build).
    // When contexts shared the requests' buffers this grew by about 25 MiB.
    assert!(
        grown < 16 * 1024,
        "{queued} queued events hold {grown} KiB: more than their own data"
    );
    stuck.release(usize::MAX >> 4);
    assert!(t.flush(Duration::from_secs(10)).await);
    server.stop().await;
}
