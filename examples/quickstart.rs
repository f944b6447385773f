//! The quick-start demo: a real axum server on 127.0.0.1 with `TelemetryLayer`, a user
//! resolver, handlers using `Tracker`, duration and error tracking; it sends itself a few real
//! HTTP requests (success, failure, a client that gives up early), prints every event through
//! the logging destination, shuts down gracefully and exits 0.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It reads `config.yaml`. Unless `UMAMI_URL` is set, the `umami` destination is replaced by a
//! logging one, so you can see what would be sent.

use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tower_telemetry::{
    Context, Telemetry, Tracker,
    config::Config,
    destination::LoggingDestination,
    layer::TelemetryLayer,
    props,
    timing::{TrackDurationExt, track_error},
    track,
};

/// What the (pretend) auth layer found: the signed-in user.
#[derive(Clone)]
struct UserId(String);

/// A stand-in for real authentication: `authorization: Bearer <user>`.
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

#[derive(Deserialize)]
struct GenerateParams {
    model: Option<String>,
}

#[derive(Debug)]
struct GenerationError(&'static str);

impl std::fmt::Display for GenerationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl IntoResponse for GenerationError {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

async fn do_generation(model: &str) -> Result<Json<serde_json::Value>, GenerationError> {
    tokio::task::yield_now().await;
    if model == "broken-model" {
        return Err(GenerationError("model failed to load"));
    }
    Ok(Json(
        serde_json::json!({ "image": format!("https://cdn.example.com/{model}.png") }),
    ))
}

/// `generation.started`, then `generation.completed` (with `duration_ms`) or
/// `generation.failed`; plus `error.generate` when it fails.
async fn generate(
    tracker: Tracker,
    Query(params): Query<GenerateParams>,
) -> Result<Json<serde_json::Value>, GenerationError> {
    let model = params.model.unwrap_or_else(|| "flux-dev".into());
    tracker.track(
        "generation.params",
        props! { "model" => &model, "credits_cost" => 10 },
    );
    let result = do_generation(&model).track_duration("generation").await;
    track_error("generate", || result)
}

/// A slow handler: the demo's client gives up before it answers, which shows up as
/// `generation.upscale.cancelled`.
async fn slow() -> &'static str {
    async {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    .track_duration("generation.upscale")
    .await;
    "finally"
}

async fn checkout(tracker: Tracker) -> &'static str {
    track!(
        "payment.checkout_completed",
        package_id = "creator",
        amount = 9.99
    );
    tracker.track("user.clicked", props! { "button" => "buy" });
    // Who the buyer is, for every destination in its own terms (Umami: session data).
    let user = tracker
        .context()
        .user_id()
        .unwrap_or("anonymous")
        .to_owned();
    tracker.identify(user, props! { "plan" => "creator" });
    "thanks"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_target(false)
        // Colours for a terminal only: piped into a file or `grep`, plain text.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".parse().expect("a valid filter")),
        )
        .init();

    let mut config = Config::from_yaml_file("config.yaml")?;
    config.apply_env_overrides(|k| std::env::var(k).ok())?;
    let mut builder = Telemetry::builder().config(config).context(
        Context::new()
            .with_field("service", "quickstart")
            .with_field("version", env!("CARGO_PKG_VERSION")),
    );
    if std::env::var_os("UMAMI_URL").is_none() {
        println!("UMAMI_URL is not set: events routed to `umami` are logged instead of sent.\n");
        builder = builder.destination("umami", LoggingDestination::new(tracing::Level::INFO));
    }
    let telemetry = builder.build()?;
    telemetry.install_global();
    track!("system.boot", version = env!("CARGO_PKG_VERSION"));

    let app = Router::new()
        .route("/api/generate", get(generate))
        .route("/api/slow", get(slow))
        .route("/api/checkout", get(checkout))
        .layer(
            TelemetryLayer::new(telemetry.clone()).user_id(|parts: &http::request::Parts| {
                parts.extensions.get::<UserId>().map(|u| u.0.clone())
            }),
        )
        .layer(middleware::from_fn(auth));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}\n");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let call = |path: &str, user: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {user}"))
            .body(Empty::new())
            .expect("a valid request")
    };
    for (path, user) in [
        ("/api/generate?model=flux-schnell", "user_123"),
        ("/api/checkout", "user_123"),
        ("/api/generate?model=broken-model", "user_456"),
    ] {
        let res = client.request(call(path, user)).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!(
            "GET {path} as {user} -> {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // A client that gives up early: the server drops the handler's future.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        client.request(call("/api/slow", "user_789")),
    )
    .await;
    println!(
        "GET /api/slow as user_789 -> client gave up: {}",
        gave_up.is_err()
    );
    drop(client);

    let _ = stop.send(());
    server.await??;
    track!("system.shutdown");
    let report = telemetry.shutdown(Duration::from_secs(5)).await;
    println!("\n{report}");
    Ok(())
}
