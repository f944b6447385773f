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

use std::time::Duration;

use tower_telemetry::relay::{Relay, RelayConfig};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(path)) => path,
        _ => {
            eprintln!("usage: relay --config relay.yaml");
            std::process::exit(2);
        }
    };
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
    let _ = tokio::signal::ctrl_c().await;
    let stats = running.shutdown(Duration::from_secs(10)).await;
    tracing::info!(?stats, "relay stopped");
}
