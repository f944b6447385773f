//! `#[track_duration]`, `#[track_function]` and `#[track_error]` on axum handlers and plain
//! functions. Serves a tiny app on 127.0.0.1 (an OS-chosen port), sends itself a few requests,
//! prints every event through the logging destination, and exits.
//!
//! ```sh
//! cargo run --example attributes
//! ```

#[cfg(feature = "macros")]
mod app {
    use std::error::Error;
    use std::fmt;
    use std::time::Duration;

    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde::Deserialize;
    use tower_telemetry::{
        Telemetry, destination::LoggingDestination, layer::TelemetryLayer, track_duration,
        track_error, track_function,
    };

    // ----- plain functions ---------------------------------------------------------------------

    /// `image.resize.started`, then `image.resize.completed { duration_ms }`.
    #[track_duration("image.resize")]
    fn resize(width: u32, height: u32) -> (u32, u32) {
        (width / 2, height / 2)
    }

    /// One `generate_image { duration_ms, success, model: "flux", steps: 4 }` per call.
    #[track_function("generate_image", model = "flux", steps = 4)]
    fn generate_image(prompt: &str) -> Result<Vec<u8>, GenerationError> {
        if prompt.is_empty() {
            return Err(GenerationError("empty prompt"));
        }
        Ok(prompt.bytes().rev().collect())
    }

    /// `error.critical_function { error, error_type }` when it fails; the result passes through.
    #[track_error("critical_function")]
    fn might_fail(input: &str) -> Result<u64, std::num::ParseIntError> {
        input.parse()
    }

    #[derive(Debug)]
    pub(crate) struct GenerationError(&'static str);

    impl fmt::Display for GenerationError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for GenerationError {}

    impl IntoResponse for GenerationError {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
        }
    }

    // ----- axum handlers: the attributes keep the signature, so these are still Handlers ------

    #[derive(Deserialize)]
    struct GenerateRequest {
        prompt: String,
    }

    /// `api.generate.started`, then `api.generate.completed` or `api.generate.failed`
    /// `{ duration_ms, error, error_type }`; a client that goes away gives `api.generate.cancelled`.
    #[track_duration("api.generate")]
    async fn generate(Json(req): Json<GenerateRequest>) -> Result<String, GenerationError> {
        let image = generate_image(&req.prompt)?;
        let (w, h) = resize(1024, 768);
        Ok(format!("{} bytes at {w}x{h}", image.len()))
    }

    /// `api.status { duration_ms, success: true, version }` per request.
    #[track_function("api.status", version = env!("CARGO_PKG_VERSION"))]
    async fn status() -> impl IntoResponse {
        "ok"
    }

    /// `error.api.parse { error, error_type }` for input that is not a number.
    #[track_error("api.parse")]
    async fn parse(Path(raw): Path<String>) -> Result<String, (StatusCode, String)> {
        might_fail(&raw)
            .map(|n| (n * 2).to_string())
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
    }

    pub(crate) async fn run() -> Result<(), Box<dyn Error>> {
        tracing_subscriber::fmt().with_target(false).init();

        // No configuration: the supplied destination receives every event.
        let telemetry = Telemetry::builder()
            .destination("log", LoggingDestination::new(tracing::Level::INFO))
            .build()?;

        let app = Router::new()
            .route("/api/generate", post(generate))
            .route("/api/status", get(status))
            .route("/api/parse/{raw}", get(parse))
            .layer(TelemetryLayer::new(telemetry.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .await
        });
        println!("serving on http://{addr}");

        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let requests = [
            ("POST", "/api/generate", r#"{"prompt":"a cat"}"#),
            ("POST", "/api/generate", r#"{"prompt":""}"#),
            ("GET", "/api/status", ""),
            ("GET", "/api/parse/21", ""),
            ("GET", "/api/parse/twenty-one", ""),
        ];
        for (method, path, body) in requests {
            let req = http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let res = client.request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            println!(
                "{method} {path} -> {status} {}",
                String::from_utf8_lossy(&body)
            );
        }

        // Outside any request: the events go through the global handle.
        telemetry.install_global();
        let _ = might_fail("not a number");

        stop.send(()).ok();
        server.await??;
        let report = telemetry.shutdown(Duration::from_secs(5)).await;
        println!("{report}");
        Ok(())
    }
}

#[cfg(feature = "macros")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    app::run().await
}

#[cfg(not(feature = "macros"))]
fn main() {
    eprintln!("this example needs the `macros` feature (on by default)");
}
