//! Redaction that matches how secrets are named, URL parameters, the path cap and trimming
//! before rejecting (#21 items 3 and 6), through a real axum app on 127.0.0.1.

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use support::http::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_telemetry::config::{Config, DestinationConfig, SamplingConfig};
use tower_telemetry::destination::MemoryDestination;
use tower_telemetry::layer::{MAX_PATH_LEN, PATH_TRUNCATED, TelemetryLayer};
use tower_telemetry::limits::LimitsConfig;
use tower_telemetry::{DestinationStats, Telemetry, track};

const SECOND: Duration = Duration::from_secs(1);

fn telemetry(config: Config) -> (Telemetry, MemoryDestination) {
    let t = Telemetry::builder()
        .config(config.with_destination(DestinationConfig::new("memory")))
        .build()
        .unwrap();
    let m = t.memory("memory").unwrap();
    (t, m)
}

fn assert_accounted(d: &DestinationStats, tracked: u64) {
    assert_eq!(d.enqueued + d.dropped_queue_full, tracked, "{d:?}");
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{d:?}"
    );
    assert_eq!(d.delivered, tracked, "{d:?}");
}

async fn handler() -> &'static str {
    track!("page.viewed", step = 1);
    track!("error.shown", code = "E1");
    "ok"
}

fn app(t: &Telemetry) -> Router {
    Router::new()
        .fallback(get(handler))
        .layer(TelemetryLayer::new(t.clone()))
}

/// One raw HTTP/1.1 request (no client would send this path); the response's status line.
async fn raw(addr: std::net::SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(10 * SECOND, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_33_kb_path_of_quotes_keeps_every_event_of_its_request() {
    let (t, memory) = telemetry(
        Config::default().with_sampling(SamplingConfig::new(1.0).with_always(["error.*"])),
    );
    let server = Server::start(app(&t)).await;
    let path = format!("/{}", "\"".repeat(33 * 1024));
    let status = raw(
        server.addr,
        &format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    server.stop().await;
    assert!(t.flush(5 * SECOND).await);

    let events = memory.events();
    assert_eq!(events.len(), 2, "both events kept");
    for e in &events {
        let p = e.context().path().unwrap();
        assert_eq!(p.len(), MAX_PATH_LEN);
        assert!(
            p.ends_with(PATH_TRUNCATED) && p.starts_with("/\"\"\""),
            "{p:.20}"
        );
    }
    let s = t.stats();
    assert_eq!((s.oversized, s.rejected), (0, 0));
    assert_accounted(s.destination("memory").unwrap(), 2);
}

#[tokio::test]
async fn query_and_referrer_parameters_are_redacted_in_the_context() {
    let (t, memory) = telemetry(Config::default());
    let server = Server::start(app(&t)).await;
    let status = raw(
        server.addr,
        "GET /cb?code=abc123&page=2&accessToken=ya29&max_tokens=5 HTTP/1.1\r\nhost: a\r\n\
         referer: https://app.example/reset?reset_token=t0k&lang=de#id_token=jwt\r\n\
         connection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    server.stop().await;
    assert!(t.flush(5 * SECOND).await);
    let events = memory.events();
    assert_eq!(events.len(), 2);
    for e in &events {
        let c = e.context();
        assert_eq!(
            c.query(),
            Some("code=[REDACTED]&page=2&accessToken=[REDACTED]&max_tokens=5")
        );
        assert_eq!(
            c.referrer(),
            Some("https://app.example/reset?reset_token=[REDACTED]&lang=de#id_token=[REDACTED]")
        );
    }
    // One redaction per URL, counted once per event that carries it.
    assert_accounted(t.stats().destination("memory").unwrap(), 2);
}

#[tokio::test]
async fn the_issues_secret_names_are_redacted_in_properties_and_context_fields() {
    let (t, memory) = telemetry(Config::default());
    let names = [
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "new_password",
        "x_api_key",
        "private_key",
        "accessToken",
        "otp",
        "pin",
    ];
    let mut p = tower_telemetry::Properties::new();
    for n in names {
        p.insert(n, "s3cret");
    }
    p.insert("max_tokens", 512);
    p.insert("token_count", 7);
    p.insert("tokens_used", 9);
    // Nested deeper than the depth limit (64): dropped, not kept unredacted.
    let mut deep = serde_json::json!({"password": "hunter2"});
    for _ in 0..70 {
        deep = serde_json::json!({ "d": deep });
    }
    let ctx = tower_telemetry::Context::new()
        .with_field("clientSecret", "s3cret")
        .with_field("nested", deep);
    t.scope_sync(ctx, || t.track("user.signed_in", p));
    assert!(t.flush(5 * SECOND).await);
    let e = &memory.events()[0];
    for n in names {
        assert_eq!(e.properties().get(n).unwrap(), "[REDACTED]", "{n}");
    }
    assert_eq!(e.properties().get("max_tokens").unwrap(), 512);
    assert_eq!(e.properties().get("token_count").unwrap(), 7);
    assert_eq!(e.properties().get("tokens_used").unwrap(), 9);
    assert_eq!(e.context().field("clientSecret").unwrap(), "[REDACTED]");
    let json = serde_json::to_string(&**e).unwrap();
    assert!(
        !json.contains("s3cret") && !json.contains("hunter2"),
        "{json:.300}"
    );
    assert_accounted(t.stats().destination("memory").unwrap(), 1);
}

#[tokio::test]
async fn an_always_event_with_huge_properties_is_kept_trimmed_and_counted() {
    let (t, memory) = telemetry(
        Config::default()
            .with_sampling(SamplingConfig::new(0.0).with_always(["error.*"]))
            .with_limits(LimitsConfig::default().with_max_event_size(4096)),
    );
    let mut p = tower_telemetry::Properties::new();
    for i in 0..8 {
        p.insert(format!("blob{i}"), "x".repeat(1000));
    }
    p.insert("code", "E42");
    t.track("error.crashed", p.clone());
    t.track("user.big", p);
    assert!(t.flush(5 * SECOND).await);
    let events = memory.events();
    assert_eq!(
        events.len(),
        1,
        "the always event is kept, the other sampled out"
    );
    let e = &events[0];
    assert_eq!(e.name(), "error.crashed");
    assert_eq!(e.properties().get("_trimmed").unwrap(), &true);
    assert_eq!(
        e.properties().get("code").unwrap(),
        "E42",
        "small ones stay"
    );
    assert!(serde_json::to_string(&**e).unwrap().len() <= 4096);
    let s = t.stats();
    assert_eq!((s.truncated, s.oversized), (1, 0));
    let d = s.destination("memory").unwrap();
    assert_eq!(d.sampled_out, 1);
    assert_accounted(d, 1);
}
