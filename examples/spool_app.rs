//! An axum service whose destinations have a durable spool: what `tests/spool.rs` starts as a
//! child process, kills and restarts (feature `spool`).
//!
//! ```sh
//! cargo run --features spool --example spool_app -- --config spool.yaml --listen 127.0.0.1:8080
//! curl -X POST 'http://127.0.0.1:8080/track?from=0&n=1000'   # tracks user.action, seq 0..999
//! curl http://127.0.0.1:8080/stats                           # every destination's counters, JSON
//! curl -X POST http://127.0.0.1:8080/stop                    # graceful: shutdown, then exit
//! ```
//!
//! with a configuration such as
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     umami:
//!       url: http://127.0.0.1:3000
//!       website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60
//!       spool: { path: ./spool/umami, sync: interval }
//! ```
//!
//! It prints `listening on http://ADDR` once it serves (`--listen 127.0.0.1:0` picks a free
//! port), and the shutdown report when it stops (`/stop`, SIGTERM or Ctrl-C; the delivery of
//! what is queued is bounded by `--shutdown-timeout`, default 2 s: what is not delivered by
//! then stays in the spool for the next start).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::Notify;
use tower_telemetry::{DestinationStats, Telemetry, props};

#[derive(Deserialize)]
struct Track {
    from: u64,
    n: u64,
}

#[derive(Clone)]
struct App {
    telemetry: Telemetry,
    stop: std::sync::Arc<Notify>,
}

/// Tracks `n` events `user.action` with `seq` = `from`, `from + 1`, ...
async fn track(State(app): State<App>, Query(q): Query<Track>) -> &'static str {
    for seq in q.from..q.from + q.n {
        app.telemetry.track(
            "user.action",
            props! { "seq" => seq, "marker" => format!("seq-{seq:08}") },
        );
    }
    "ok"
}

/// Every destination's counters.
async fn stats(State(app): State<App>) -> Json<Vec<DestinationStats>> {
    Json(app.telemetry.stats().destinations)
}

async fn stop(State(app): State<App>) -> &'static str {
    app.stop.notify_one();
    "stopping"
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_telemetry=info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let config = arg(&args, "--config").ok_or("usage: spool_app --config PATH [--listen ADDR]")?;
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let timeout = arg(&args, "--shutdown-timeout")
        .map(|s| s.parse::<f64>())
        .transpose()?
        .map_or(Duration::from_secs(2), Duration::from_secs_f64);

    let telemetry = Telemetry::from_yaml_file(&config)?;
    let app = App {
        telemetry: telemetry.clone(),
        stop: Default::default(),
    };
    let router = Router::new()
        .route("/track", post(track))
        .route("/stats", get(stats))
        .route("/stop", post(stop))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let stop = app.stop.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = stop.notified() => {}
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    let report = telemetry.shutdown(timeout).await;
    println!("{report}");
    Ok(())
}
