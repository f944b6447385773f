//! A long-running axum service with telemetry: the quick start's app as a server you can poke.
//!
//! ```sh
//! cargo run --example axum_app -- --listen 127.0.0.1:8080
//! curl -H 'authorization: Bearer user_123' 'http://127.0.0.1:8080/api/generate?model=flux-dev'
//! curl -H 'authorization: Bearer user_123' http://127.0.0.1:8080/api/checkout
//! ```
//!
//! Configuration comes from `TELEMETRY_CONFIG` (else `./config.yaml`), with
//! `TELEMETRY_ENABLED` / `TELEMETRY_DEBUG` overrides. Ctrl-C stops accepting requests, waits for
//! the ones in flight, then delivers every queued event before exiting (at most 10 s). Set
//! `telemetry.requests.enabled: true` in the config for one page-view event per request.
//!
//! With the feature `inspector` (`cargo run --example axum_app --features inspector`), the live
//! inspector page is mounted at `/_telemetry` and its URL printed at start, with the token in
//! the fragment: `TELEMETRY_INSPECTOR_TOKEN`, else a random one. This example binds to
//! loopback by default; a real service mounts the inspector behind its own admin auth.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tower_telemetry::{
    Telemetry, Tracker,
    layer::TelemetryLayer,
    props,
    timing::{TrackDurationExt, TrackDurationLayer},
    track,
};

#[derive(Clone)]
struct UserId(String);

/// Stand-in authentication: `authorization: Bearer <user>`.
async fn auth(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|u| UserId(u.to_owned()));
    if let Some(user) = user {
        req.extensions_mut().insert(user);
    }
    next.run(req).await
}

/// The handler's error: a message for the events, a 400 for the client.
#[derive(Debug)]
struct BadRequest(&'static str);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl axum::response::IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

#[derive(Deserialize)]
struct Params {
    model: Option<String>,
}

async fn generate(
    tracker: Tracker,
    Query(p): Query<Params>,
) -> Result<Json<serde_json::Value>, BadRequest> {
    let model = p.model.unwrap_or_else(|| "flux-dev".into());
    tracker.track("generation.params", props! { "model" => &model });
    async {
        if model.is_empty() {
            return Err(BadRequest("empty model"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(Json(
            serde_json::json!({ "image": format!("https://cdn.example.com/{model}.png") }),
        ))
    }
    .track_duration("generation")
    .await
}

async fn checkout() -> &'static str {
    track!(
        "payment.checkout_completed",
        package_id = "creator",
        amount = 9.99
    );
    "thanks"
}

/// The inspector's bearer token: `TELEMETRY_INSPECTOR_TOKEN`, else 128 random bits in hex.
#[cfg(feature = "inspector")]
fn inspector_token() -> String {
    std::env::var("TELEMETRY_INSPECTOR_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".parse().expect("a valid filter")),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:8080", String::as_str)
        .parse()?;

    let telemetry = Telemetry::from_env()?;
    telemetry.install_global();
    track!("system.boot", listen = listen.to_string());

    let app = Router::new()
        .route(
            "/api/generate",
            get(generate).layer(TrackDurationLayer::new("api.generate")),
        )
        .route("/api/checkout", get(checkout))
        .route("/health", get(|| async { "ok" }))
        .layer(
            TelemetryLayer::new(telemetry.clone()).user_id(|parts: &http::request::Parts| {
                parts.extensions.get::<UserId>().map(|u| u.0.clone())
            }),
        )
        .layer(middleware::from_fn(auth));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");

    // Ctrl-C: the server stops accepting, and open inspector pages are let go (their streams
    // never end by themselves, which would keep the graceful shutdown waiting).
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());

    // The live inspector, outside the app's layers (its requests are not the app's traffic).
    #[cfg(feature = "inspector")]
    let app = {
        let token = inspector_token();
        println!("inspector: http://{addr}/_telemetry#token={token}");
        let stop = stop.clone();
        app.nest(
            "/_telemetry",
            tower_telemetry::inspector::Inspector::new(telemetry.clone())
                .token(token)
                .shutdown_signal(async move { stop.notified().await })
                .router(),
        )
        // `nest` answers `/_telemetry` only: the trailing slash too.
        .route(
            "/_telemetry/",
            axum::routing::get(|| async { axum::response::Redirect::permanent("/_telemetry") }),
        )
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.notify_one();
    })
    .await?;

    track!("system.shutdown");
    let report = telemetry.shutdown(Duration::from_secs(10)).await;
    tracing::info!("{report}");
    Ok(())
}
