//! The counters as a Prometheus `/metrics` route, as the docs mount it, scraped over HTTP from
//! a real axum server: Prometheus' own linter (`promtool check metrics`, from Debian's
//! `prometheus` package, which `.ci/run` installs) finds nothing wrong with it, and the values
//! are the handle's, with the accounting holding across them for every destination.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use http::Request;
use http_body_util::Empty;
use support::http::{Server, client, send};
use support::{Answer, Scripted, accounted};
use tower_telemetry::config::{Config, DestinationConfig};
use tower_telemetry::destination::DeliveryError;
use tower_telemetry::layer::TelemetryLayer;
use tower_telemetry::{PrometheusStats, Telemetry, track};

const WAIT: Duration = Duration::from_secs(10);

/// `promtool`: `$PROMTOOL`, else where `.ci/run` unpacks it (`target/promtool/usr/bin`), else
/// on the `PATH`; or a failure that says how to get it.
fn promtool() -> PathBuf {
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/promtool/usr/bin/promtool");
    let candidates = [
        std::env::var_os("PROMTOOL").map(PathBuf::from),
        Some(unpacked),
        Some(PathBuf::from("promtool")),
    ];
    let mut tried = Vec::new();
    for candidate in candidates.into_iter().flatten() {
        match Command::new(&candidate).arg("--version").output() {
            Ok(out) if out.status.success() => return candidate,
            other => tried.push(format!("{}: {other:?}", candidate.display())),
        }
    }
    panic!(
        "this test lints the /metrics output with Prometheus' own `promtool check metrics`, \
         which was not found (tried {tried:?}). .ci/run unpacks it from Debian's `prometheus` \
         package: `mkdir -p target/promtool && cd target/promtool && apt-get download \
         prometheus && dpkg-deb -x prometheus_*.deb .` (or install the package, or set PROMTOOL)"
    )
}

/// `name{labels}` → value, for every sample of `text`.
fn samples(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Prometheus' own parser and linter on `text`: no error, no lint problem.
fn lint(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n{text}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_over_http_pass_promtool_and_add_up() {
    // Fails at once, saying how to get it, when promtool is missing.
    promtool();
    let config = Config::default()
        .with_destination(
            DestinationConfig::new("mem")
                .with_kind("memory")
                .with_events(["ok.*"]),
        )
        .with_destination(
            DestinationConfig::new("sampled")
                .with_kind("memory")
                .with_events(["ok.*"])
                .with_sample_rate(0.0),
        )
        .with_destination(DestinationConfig::new("refusing").with_events(["fail.*"]));
    let telemetry = Telemetry::builder()
        .config(config)
        // Its two events fail for good (in one batch or two).
        .destination(
            "refusing",
            Scripted::new([0, 1].map(|_| Answer::Fail(DeliveryError::permanent("HTTP 400: no")))),
        )
        .build()
        .unwrap();
    let t = telemetry.clone();
    let app = Router::new()
        .route(
            "/ok",
            get(|| async {
                track!("ok.clicked", password = "hunter2");
                "ok"
            }),
        )
        .route(
            "/fail",
            get(|| async {
                track!("fail.sent", n = 1);
                "ok"
            }),
        )
        .layer(TelemetryLayer::new(telemetry.clone()))
        // As the docs mount it.
        .route(
            "/metrics",
            get(move || async move {
                let body = t.stats().prometheus().to_string();
                (
                    [(header::CONTENT_TYPE, PrometheusStats::CONTENT_TYPE)],
                    body,
                )
            }),
        );
    let server = Server::start(app).await;
    for path in ["/ok", "/ok", "/ok", "/fail", "/fail"] {
        let req = Request::get(server.url(path)).body(Empty::new()).unwrap();
        let (res, _) = send(&client(), req).await;
        assert_eq!(res.status(), 200);
    }
    telemetry.track("Bad\nName", tower_telemetry::props! {});
    assert!(telemetry.flush(WAIT).await);

    let req = Request::get(server.url("/metrics"))
        .body(Empty::new())
        .unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    lint(&body);

    // The values are the handle's.
    let scraped = samples(&body);
    let value = |metric: &str, dest: &str| {
        let key = format!("tower_telemetry_{metric}{{destination=\"{dest}\"}}");
        *scraped
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing:\n{body}"))
    };
    assert_eq!(value("events_delivered_total", "mem"), 3);
    assert_eq!(value("events_sampled_out_total", "sampled"), 3);
    assert_eq!(value("events_failed_total", "refusing"), 2);
    assert_eq!(scraped["tower_telemetry_events_rejected_total"], 1);
    assert_eq!(scraped["tower_telemetry_values_redacted_total"], 3);
    // For every destination, the accounting holds across the scraped metrics.
    let stats = telemetry.stats();
    for d in &stats.destinations {
        let dest = d.name.as_str();
        let oldest = scraped[&format!(
            "tower_telemetry_events_dropped_total{{destination=\"{dest}\",reason=\"oldest\"}}"
        )];
        assert_eq!(
            value("events_enqueued_total", dest),
            value("events_delivered_total", dest)
                + value("events_failed_total", dest)
                + value("events_discarded_total", dest)
                + oldest
                + value("events_undelivered", dest),
            "{dest}:\n{body}"
        );
        assert_eq!(value("events_enqueued_total", dest), d.enqueued);
        assert_eq!(value("queue_capacity_events", dest), d.capacity as u64);
    }

    server.stop().await;
    let report = telemetry.shutdown(WAIT).await;
    for d in &report.stats.destinations {
        accounted(d);
    }
}

/// A relay's counters, as `RunningRelay::stats` reports them, in the same format.
#[cfg(feature = "nats")]
#[test]
fn a_relays_counters_pass_promtool_too() {
    use tower_telemetry::relay::{RelayDestinationStats, RelayStats};
    let mut stats = RelayStats::default();
    stats.received = 12;
    stats.acked = 10;
    stats.redelivered = 2;
    for (name, delivered) in [("umami", 9), ("log \"all\"", 10)] {
        let mut d = RelayDestinationStats::default();
        d.name = name.to_owned();
        d.delivered = delivered;
        d.skipped_duplicates = 1;
        stats.destinations.push(d);
    }
    let text = stats.prometheus().to_string();
    lint(&text);
    let scraped = samples(&text);
    assert_eq!(scraped["tower_telemetry_relay_messages_received_total"], 12);
    assert_eq!(
        scraped["tower_telemetry_relay_events_delivered_total{destination=\"umami\"}"],
        9
    );
    assert_eq!(
        scraped["tower_telemetry_relay_events_skipped_duplicates_total{destination=\"log \\\"all\\\"\"}"],
        1
    );
}
