//! `#[track_duration]`, `#[track_function]` and `#[track_error]` on sync and async functions,
//! methods, generic functions and axum handlers served on 127.0.0.1.
#![cfg(feature = "macros")]

mod support;

use std::fmt::Display;
use std::io;
use std::num::ParseIntError;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use support::timing::*;
use tokio::sync::oneshot;
use tower_telemetry::{
    Tracker, layer::TelemetryLayer, track_duration, track_error, track_function,
};

// ----- plain functions --------------------------------------------------------------------------

#[track_duration("config.parse")]
fn parse_port(s: &str) -> Result<u16, ParseIntError> {
    let port = s.trim().parse::<u16>()?;
    if port == 0 {
        return Ok(8080);
    }
    Ok(port)
}

#[track_duration("config.nothing")]
fn nothing() {}

const MODEL: &str = "flux";

#[track_function("generate_image", model = MODEL, "steps.count" = 2 * 2, tags = ["a", "b"])]
fn generate(prompt: &str) -> Result<usize, String> {
    if prompt.is_empty() {
        Err("empty prompt".to_owned())
    } else {
        Ok(prompt.len())
    }
}

#[track_error("critical_function")]
fn might_fail(s: &str) -> Result<i64, ParseIntError> {
    s.parse()
}

#[derive(Debug)]
#[allow(dead_code)]
enum OnlyDebug {
    Broken(u8),
}

#[track_error("debug_only")]
fn debug_only() -> std::result::Result<(), OnlyDebug> {
    Err(OnlyDebug::Broken(7))
}

#[track_duration("generic.parse")]
fn parse_any<T: FromStr>(s: &str) -> Result<T, T::Err>
where
    T::Err: Display,
{
    s.parse()
}

#[track_function("sum")]
fn sum(items: impl IntoIterator<Item = u32>) -> u32 {
    items.into_iter().sum()
}

#[track_duration("evens")]
fn evens(limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(|n| n % 2 == 0)
}

#[track_error("panicky")]
fn panicky() -> Result<(), io::Error> {
    panic!("sync panic")
}

#[tokio::test]
async fn sync_functions() {
    let (telemetry, memory) = handle();
    telemetry.scope_sync(ctx(), || {
        assert_eq!(parse_port(" 443 "), Ok(443));
        assert_eq!(parse_port("0"), Ok(8080));
        assert!(parse_port("http").is_err());
        nothing();
        assert_eq!(generate("a cat"), Ok(5));
        assert!(generate("").is_err());
        assert_eq!(might_fail("12"), Ok(12));
        assert!(might_fail("twelve").is_err());
        assert!(debug_only().is_err());
        assert_eq!(parse_any::<f64>("1.5"), Ok(1.5));
        assert!(parse_any::<u8>("300").is_err());
        assert_eq!(sum([1, 2, 3]), 6);
        assert_eq!(evens(5).count(), 3);
    });

    assert_eq!(
        names(&telemetry, &memory).await,
        [
            "config.parse.started",
            "config.parse.completed",
            "config.parse.started",
            "config.parse.completed",
            "config.parse.started",
            "config.parse.failed",
            "config.nothing.started",
            "config.nothing.completed",
            "generate_image",
            "generate_image",
            "error.critical_function",
            "error.debug_only",
            "generic.parse.started",
            "generic.parse.completed",
            "generic.parse.started",
            "generic.parse.failed",
            "sum",
            "evens.started",
            "evens.completed",
        ]
    );
    let failed = &memory.named("config.parse.failed")[0];
    assert_eq!(prop(failed, "error"), "invalid digit found in string");
    assert_eq!(prop(failed, "error_type"), "ParseIntError");
    has_duration(failed);
    let generated = memory.named("generate_image");
    assert_eq!(prop(&generated[0], "success"), true);
    assert_eq!(prop(&generated[0], "model"), "flux");
    assert_eq!(prop(&generated[0], "steps.count"), 4);
    assert_eq!(prop(&generated[0], "tags"), json!(["a", "b"]));
    has_duration(&generated[0]);
    assert_eq!(prop(&generated[1], "success"), false);
    assert_eq!(prop(&generated[1], "error"), "empty prompt");
    let critical = &memory.named("error.critical_function")[0];
    assert_eq!(prop(critical, "error_type"), "ParseIntError");
    assert_eq!(critical.context().user_id(), Some("user_123"));
    let debug = &memory.named("error.debug_only")[0];
    assert_eq!(prop(debug, "error"), "Broken(7)");
    assert_eq!(prop(debug, "error_type"), "OnlyDebug");
    assert_eq!(prop(&memory.named("sum")[0], "success"), true);
}

#[tokio::test]
async fn sync_panic_is_reported_and_resumed() {
    let (telemetry, memory) = handle();
    telemetry.scope_sync(ctx(), || {
        let caught = catch_unwind(panicky);
        assert_eq!(
            *caught.unwrap_err().downcast::<&str>().unwrap(),
            "sync panic"
        );
    });
    let event = only(&telemetry, &memory, "error.panicky").await;
    assert_eq!(prop(&event, "panic"), true);
    assert_eq!(prop(&event, "error"), "sync panic");
}

// ----- methods ------------------------------------------------------------------------------------

struct Counter {
    hits: u32,
}

impl Counter {
    #[track_duration("counter.get")]
    fn get(&self) -> u32 {
        self.hits
    }

    #[track_function("counter.bump", by = 1)]
    fn bump(&mut self) -> Result<u32, String> {
        self.hits += 1;
        Ok(self.hits)
    }

    #[track_error("counter.into_hits")]
    fn into_hits(self) -> Result<u32, String> {
        if self.hits > 1 {
            Err(format!("too many hits: {}", self.hits))
        } else {
            Ok(self.hits)
        }
    }

    #[track_duration("counter.wait")]
    async fn wait(&self, rx: oneshot::Receiver<u32>) -> Result<u32, oneshot::error::RecvError> {
        let n = rx.await?;
        Ok(self.hits + n)
    }
}

#[tokio::test]
async fn methods_with_self() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            let mut counter = Counter { hits: 0 };
            assert_eq!(counter.bump(), Ok(1));
            assert_eq!(counter.bump(), Ok(2));
            assert_eq!(counter.get(), 2);
            let (tx, rx) = oneshot::channel();
            tx.send(40).unwrap();
            assert_eq!(counter.wait(rx).await, Ok(42));
            assert!(counter.into_hits().is_err());
        })
        .await;
    assert_eq!(
        names(&telemetry, &memory).await,
        [
            "counter.bump",
            "counter.bump",
            "counter.get.started",
            "counter.get.completed",
            "counter.wait.started",
            "counter.wait.completed",
            "error.counter.into_hits",
        ]
    );
    assert_eq!(prop(&memory.named("counter.bump")[1], "by"), 1);
    assert_eq!(
        prop(&memory.named("error.counter.into_hits")[0], "error"),
        "too many hits: 2"
    );
}

// ----- async functions ------------------------------------------------------------------------

#[track_duration("job.run")]
async fn run_job(fail: bool) -> Result<&'static str, io::Error> {
    tokio::task::yield_now().await;
    if fail {
        return Err(io::Error::other("job failed"));
    }
    Ok("done")
}

#[track_function("job.generic", kind = "generic")]
async fn generic_job<T: Send + Display>(value: T) -> String {
    value.to_string()
}

#[track_error("job.async_error")]
async fn async_error(input: &str) -> Result<u8, ParseIntError> {
    let n: u8 = input.parse()?;
    Ok(n * 2)
}

#[track_duration("job.blocked")]
async fn blocked(started: oneshot::Sender<()>, never: oneshot::Receiver<()>) {
    started.send(()).unwrap();
    never.await.ok();
}

#[track_duration("job.panics")]
async fn panics() -> Result<(), io::Error> {
    tokio::task::yield_now().await;
    panic!("async panic")
}

#[tokio::test]
async fn async_functions() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            assert_eq!(run_job(false).await.unwrap(), "done");
            assert!(run_job(true).await.is_err());
            assert_eq!(generic_job(7).await, "7");
            assert_eq!(async_error("4").await, Ok(8));
            assert!(async_error("four").await.is_err());
        })
        .await;
    assert_eq!(
        names(&telemetry, &memory).await,
        [
            "job.run.started",
            "job.run.completed",
            "job.run.started",
            "job.run.failed",
            "job.generic",
            "error.job.async_error",
        ]
    );
    assert_eq!(
        prop(&memory.named("job.run.failed")[0], "error"),
        "job failed"
    );
    let generic = &memory.named("job.generic")[0];
    assert_eq!(prop(generic, "kind"), "generic");
    assert_eq!(prop(generic, "success"), true);
    assert_eq!(
        prop(&memory.named("error.job.async_error")[0], "error_type"),
        "ParseIntError"
    );
}

#[tokio::test]
async fn async_cancellation_and_panic() {
    let (telemetry, memory) = handle();
    let (started_tx, started_rx) = oneshot::channel();
    let (_never_tx, never_rx) = oneshot::channel();
    let task = tokio::spawn(telemetry.scope(ctx(), blocked(started_tx, never_rx)));
    started_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let cancelled = only(&telemetry, &memory, "job.blocked.cancelled").await;
    has_duration(&cancelled);
    assert_eq!(cancelled.context().user_id(), Some("user_123"));

    let task = tokio::spawn(telemetry.scope(ctx(), panics()));
    assert!(task.await.unwrap_err().is_panic());
    let failed = only(&telemetry, &memory, "job.panics.failed").await;
    assert_eq!(prop(&failed, "panic"), true);
    assert_eq!(prop(&failed, "error"), "async panic");
}

#[test]
fn async_fns_stay_send() {
    fn assert_send<T: Send>(_: T) {}
    assert_send(run_job(false));
    assert_send(generic_job(1u8));
    let counter = Counter { hits: 0 };
    assert_send(counter.wait(oneshot::channel().1));
}

// ----- axum handlers ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct GenerateRequest {
    model: String,
}

/// An application error with `IntoResponse` and `Debug`, but no `Display`.
#[derive(Debug)]
enum AppError {
    UnknownModel(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::UnknownModel(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unknown model {m}"),
            )
                .into_response(),
        }
    }
}

#[track_duration("api.generate")]
async fn generate_handler(
    tracker: Tracker,
    Json(req): Json<GenerateRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    tracker.track(
        "generation.params",
        tower_telemetry::props! { "model" => req.model.clone() },
    );
    if req.model != "flux" {
        return Err(AppError::UnknownModel(req.model));
    }
    Ok(Json(json!({ "image": "cat.png" })))
}

#[derive(Deserialize)]
struct Page {
    n: u32,
}

#[track_function("api.item", source = "db")]
async fn item_handler(Path(id): Path<u32>, Query(page): Query<Page>) -> impl IntoResponse {
    format!("item {id} page {}", page.n)
}

#[track_error("api.parse")]
async fn parse_handler(Path(raw): Path<String>) -> Result<String, (StatusCode, String)> {
    raw.parse::<u32>()
        .map(|n| format!("{}", n + 1))
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

#[track_duration("api.sync_handler")]
fn sync_part(n: u32) -> u32 {
    n * 3
}

#[tokio::test]
async fn axum_handlers_on_a_real_server() {
    let (telemetry, memory) = handle();
    let app = Router::new()
        .route("/generate", post(generate_handler))
        .route("/items/{id}", get(item_handler))
        .route("/parse/{raw}", get(parse_handler))
        .route("/triple", get(|| async { sync_part(3).to_string() }))
        .layer(TelemetryLayer::new(telemetry.clone()));
    let addr = serve(app).await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for model in ["flux", "sdxl"] {
        let req = http::Request::post(format!("http://{addr}/generate"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::from(format!(
                r#"{{"model":"{model}"}}"#
            )))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), if model == "flux" { 200 } else { 500 });
    }
    assert_eq!(
        http_get(addr, "/items/7?n=2").await,
        (200, "item 7 page 2".to_owned())
    );
    assert_eq!(http_get(addr, "/parse/41").await, (200, "42".to_owned()));
    assert_eq!(http_get(addr, "/parse/x").await.0, 400);
    assert_eq!(http_get(addr, "/triple").await, (200, "9".to_owned()));

    assert!(
        memory
            .wait_for("api.sync_handler.completed", WAIT)
            .await
            .is_some()
    );
    assert!(telemetry.flush(WAIT).await);
    assert_eq!(memory.named("api.generate.started").len(), 2);
    let completed = only(&telemetry, &memory, "api.generate.completed").await;
    has_duration(&completed);
    assert_eq!(completed.context().route(), Some("/generate"));
    let failed = only(&telemetry, &memory, "api.generate.failed").await;
    assert_eq!(prop(&failed, "error"), "UnknownModel(\"sdxl\")");
    assert_eq!(prop(&failed, "error_type"), "AppError");
    assert_eq!(failed.context().path(), Some("/generate"));
    let item = only(&telemetry, &memory, "api.item").await;
    assert_eq!(prop(&item, "source"), "db");
    assert_eq!(prop(&item, "success"), true);
    assert_eq!(item.context().route(), Some("/items/{id}"));
    let parse = only(&telemetry, &memory, "error.api.parse").await;
    assert!(
        prop(&parse, "error")
            .as_str()
            .unwrap()
            .contains("invalid digit")
    );
    assert_eq!(parse.context().path(), Some("/parse/x"));
    let params = memory.named("generation.params");
    assert_eq!(params.len(), 2);
    // Events of one request share its request id.
    assert_eq!(
        params[0].context().request_id(),
        memory.named("api.generate.started")[0]
            .context()
            .request_id()
    );
}

#[test]
fn panics_propagate_through_plain_functions_outside_any_scope() {
    // No handle installed and no scope: tracking is a no-op, the function still works.
    assert_eq!(parse_port("80"), Ok(80));
    let caught = catch_unwind(AssertUnwindSafe(panicky));
    assert!(caught.is_err());
}

// ----- signatures that must keep working ---------------------------------------------------------

struct Buffer {
    items: Vec<String>,
}

impl Buffer {
    #[track_duration("buffer.new")]
    fn new() -> Self {
        Buffer { items: Vec::new() }
    }

    #[track_duration("buffer.push")]
    async fn push<'a>(&'a mut self, item: impl Into<String>) -> &'a str {
        self.items.push(item.into());
        self.items.last().unwrap()
    }

    #[track_duration("buffer.first")]
    fn first(&self) -> &str {
        if self.items.is_empty() {
            return "";
        }
        &self.items[0]
    }

    #[track_function("buffer.drain")]
    fn drain(&mut self, mut limit: usize, (skip, _unused): (usize, ())) -> Vec<String> {
        limit += skip;
        self.items.drain(..limit.min(self.items.len())).collect()
    }
}

#[track_error("io")]
fn io_result(fail: bool) -> io::Result<()> {
    if fail {
        Err(io::Error::other("io failed"))
    } else {
        Ok(())
    }
}

#[track_error("boxed")]
async fn boxed_error() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err("boxed failure".into())
}

#[tokio::test]
async fn unusual_signatures() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            let mut buffer = Buffer::new();
            assert_eq!(buffer.push("a").await, "a");
            assert_eq!(buffer.push(String::from("b")).await, "b");
            assert_eq!(buffer.first(), "a");
            assert_eq!(buffer.drain(1, (0, ())), ["a"]);
            assert!(io_result(false).is_ok());
            assert!(io_result(true).is_err());
            assert!(boxed_error().await.is_err());
        })
        .await;
    assert_eq!(
        names(&telemetry, &memory).await,
        [
            "buffer.new.started",
            "buffer.new.completed",
            "buffer.push.started",
            "buffer.push.completed",
            "buffer.push.started",
            "buffer.push.completed",
            "buffer.first.started",
            "buffer.first.completed",
            "buffer.drain",
            "error.io",
            "error.boxed",
        ]
    );
    let boxed = &memory.named("error.boxed")[0];
    assert_eq!(prop(boxed, "error"), "boxed failure");
    assert_eq!(prop(boxed, "error_type"), "Box<dyn Error + Send + Sync>");
}
