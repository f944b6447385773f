//! A relay process: JetStream → routing and sampling → Umami, logging, ...
//!
//! ```text
//! nats-server -js -sd /tmp/nats &                       # or your cluster
//! cargo run --features nats --example relay -- --config examples/relay.yaml
//! ```
//!
//! Run as many as you like with the same `durable`: they share the work. Ctrl-C finishes the
//! batch in hand and exits; a killed relay's messages are redelivered to the others after
//! `ack_wait`.
//!
//! `--metrics 127.0.0.1:9464` also serves the relay's counters at `/metrics`, in Prometheus'
//! text format (`RelayStats::prometheus`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, http::header, routing::get};
use tower_telemetry::PrometheusStats;
use tower_telemetry::relay::{Relay, RelayConfig, RunningRelay};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let usage = || -> ! {
        eprintln!("usage: relay --config relay.yaml [--metrics 127.0.0.1:9464]");
        std::process::exit(2);
    };
    let path = value("--config").unwrap_or_else(|| usage());
    let metrics: Option<SocketAddr> =
        value("--metrics").map(|a| a.parse().unwrap_or_else(|_| usage()));
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(2);
    });
    let (relay_config, telemetry_config) = RelayConfig::from_yaml_str(&yaml).unwrap_or_else(|e| {
        for err in e.errors() {
            eprintln!("{path}: {err}");
        }
        std::process::exit(2);
    });
    let relay = Relay::builder(relay_config)
        .config(telemetry_config)
        .build()
        .unwrap_or_else(|e| {
            for err in e.errors() {
                eprintln!("{path}: {err}");
            }
            std::process::exit(2);
        });
    let running = relay.start().await.unwrap_or_else(|e| {
        eprintln!("relay: {e}");
        std::process::exit(1);
    });
    tracing::info!("relaying; Ctrl-C to stop");
    let running = Arc::new(Mutex::new(running));
    match metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| {
                    eprintln!("relay: cannot listen on {addr}: {e}");
                    std::process::exit(1);
                });
            tracing::info!("metrics at http://{addr}/metrics");
            let relay = running.clone();
            let app = Router::new().route(
                "/metrics",
                get(move || async move {
                    let stats = relay.lock().unwrap().stats();
                    let body = stats.prometheus().to_string();
                    (
                        [(header::CONTENT_TYPE, PrometheusStats::CONTENT_TYPE)],
                        body,
                    )
                }),
            );
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(%e, "the metrics server failed");
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    // The metrics route is gone with its server: the relay is ours again to shut down.
    let running: RunningRelay = Arc::into_inner(running)
        .expect("the metrics server has stopped")
        .into_inner()
        .unwrap();
    let stats = running.shutdown(Duration::from_secs(10)).await;
    tracing::info!(?stats, "relay stopped");
}
