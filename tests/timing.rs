//! Duration, function and error tracking: the future combinators, the closure wrappers and
//! `TrackDurationLayer` behind a real axum server.

mod support;

use std::backtrace::{Backtrace, BacktraceStatus};
use std::convert::Infallible;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use serde_json::json;
use support::timing::*;
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_telemetry::{
    Properties,
    layer::TelemetryLayer,
    props,
    timing::{TrackDurationExt, TrackDurationLayer, track_duration, track_error, track_function},
};

fn assert_send<T: Send>(_: &T) {}

// ----- track_duration on futures --------------------------------------------------------------

#[tokio::test]
async fn duration_completed_carries_context() {
    let (telemetry, memory) = handle();
    let out = telemetry
        .scope(ctx(), async { Ok::<_, io::Error>(7) }.track_duration("job"))
        .await;
    assert_eq!(out.unwrap(), 7);
    assert_eq!(
        names(&telemetry, &memory).await,
        ["job.started", "job.completed"]
    );
    let completed = only(&telemetry, &memory, "job.completed").await;
    has_duration(&completed);
    assert_eq!(completed.properties().len(), 1);
    for event in memory.events() {
        assert_eq!(event.context().user_id(), Some("user_123"));
    }
}

#[tokio::test]
async fn duration_failed_on_err() {
    let (telemetry, memory) = handle();
    let out = telemetry
        .scope(
            ctx(),
            async { Err::<(), _>(io::Error::other("disk full")) }.track_duration("job"),
        )
        .await;
    assert_eq!(out.unwrap_err().to_string(), "disk full");
    assert_eq!(
        names(&telemetry, &memory).await,
        ["job.started", "job.failed"]
    );
    let failed = only(&telemetry, &memory, "job.failed").await;
    has_duration(&failed);
    assert_eq!(prop(&failed, "error"), "disk full");
    assert_eq!(prop(&failed, "error_type"), "Error");
    assert_eq!(prop(&failed, "panic"), json!(null));
}

#[tokio::test]
async fn duration_failed_on_panic_then_panic_continues() {
    let (telemetry, memory) = handle();
    let task = tokio::spawn(
        telemetry.scope(
            ctx(),
            async {
                tokio::task::yield_now().await;
                if true {
                    panic!("kaboom");
                }
                Ok::<(), io::Error>(())
            }
            .track_duration("job"),
        ),
    );
    let err = task.await.unwrap_err();
    assert!(
        err.is_panic(),
        "the panic must continue after it is reported"
    );
    assert_eq!(
        names(&telemetry, &memory).await,
        ["job.started", "job.failed"]
    );
    let failed = only(&telemetry, &memory, "job.failed").await;
    has_duration(&failed);
    assert_eq!(prop(&failed, "panic"), true);
    assert_eq!(prop(&failed, "error"), "kaboom");
    assert_eq!(prop(&failed, "error_type"), "panic");
    assert_eq!(failed.context().user_id(), Some("user_123"));
}

#[tokio::test]
async fn duration_cancelled_when_dropped_after_first_poll() {
    let (telemetry, memory) = handle();
    let (started_tx, started_rx) = oneshot::channel();
    let (_never_tx, never_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(
        telemetry.scope(
            ctx(),
            async move {
                started_tx.send(()).unwrap();
                never_rx.await.ok();
            }
            .track_duration("job"),
        ),
    );
    started_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(
        names(&telemetry, &memory).await,
        ["job.started", "job.cancelled"]
    );
    let cancelled = only(&telemetry, &memory, "job.cancelled").await;
    has_duration(&cancelled);
    assert_eq!(
        cancelled.context().user_id(),
        Some("user_123"),
        "cancellation happens inside the scope"
    );
}

#[tokio::test]
async fn duration_cancelled_by_select() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            let slow = std::future::pending::<()>().track_duration("job");
            tokio::select! {
                biased;
                _ = slow => unreachable!(),
                _ = std::future::ready(()) => {}
            }
        })
        .await;
    assert_eq!(
        names(&telemetry, &memory).await,
        ["job.started", "job.cancelled"]
    );
}

#[tokio::test]
async fn never_polled_emits_nothing() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            drop(async {}.track_duration("job"));
        })
        .await;
    assert!(names(&telemetry, &memory).await.is_empty());
}

#[tokio::test]
async fn nested_tracking_orders_events_inside_out() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            let outer = async { std::future::pending::<()>().track_duration("inner").await }
                .track_duration("outer");
            tokio::select! {
                biased;
                _ = outer => unreachable!(),
                _ = std::future::ready(()) => {}
            }
        })
        .await;
    assert_eq!(
        names(&telemetry, &memory).await,
        [
            "outer.started",
            "inner.started",
            "inner.cancelled",
            "outer.cancelled"
        ]
    );
}

#[tokio::test]
async fn responses_and_status_codes_are_outcomes() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            let res = async { http::Response::builder().status(503).body(()).unwrap() }
                .track_duration("upstream")
                .await;
            assert_eq!(res.status(), 503);
            async { StatusCode::CREATED }.track_duration("create").await;
        })
        .await;
    let failed = only(&telemetry, &memory, "upstream.failed").await;
    assert_eq!(prop(&failed, "status"), 503);
    assert_eq!(prop(&failed, "error"), "503 Service Unavailable");
    only(&telemetry, &memory, "create.completed").await;
}

#[test]
fn futures_stay_send() {
    let fut = async { Ok::<_, io::Error>(()) };
    assert_send(&fut.track_duration("a"));
    let fut = async { Ok::<_, io::Error>(()) };
    assert_send(&fut.track_function("a", props! { "k" => 1 }));
    let fut = async { Ok::<_, io::Error>(()) };
    assert_send(&fut.track_error("a"));
}

// ----- track_function / track_error on futures ------------------------------------------------

#[tokio::test]
async fn function_future_success_failure_and_cancel() {
    let (telemetry, memory) = handle();
    telemetry
        .scope(ctx(), async {
            async { Ok::<_, io::Error>(()) }
                .track_function("generate_image", props! { "model" => "flux" })
                .await
                .unwrap();
            let _ = async { Err::<(), _>(io::Error::other("gpu on fire")) }
                .track_function("generate_image", props! { "model" => "flux" })
                .await;
            let pending =
                std::future::pending::<()>().track_function("generate_image", Properties::new());
            tokio::select! { biased; _ = pending => unreachable!(), _ = async {} => {} }
        })
        .await;
    assert!(telemetry.flush(WAIT).await);
    let events = memory.named("generate_image");
    assert_eq!(
        events.len(),
        3,
        "one event per call: {:?}",
        names_of(&memory)
    );
    let (ok, err, cancelled) = (&events[0], &events[1], &events[2]);
    has_duration(ok);
    assert_eq!(prop(ok, "success"), true);
    assert_eq!(prop(ok, "model"), "flux");
    assert_eq!(prop(ok, "error"), json!(null));
    assert_eq!(prop(err, "success"), false);
    assert_eq!(prop(err, "error"), "gpu on fire");
    assert_eq!(prop(err, "model"), "flux");
    assert_eq!(prop(cancelled, "success"), false);
    assert_eq!(prop(cancelled, "cancelled"), true);
}

#[tokio::test]
async fn error_future_reports_err_and_passes_it_through() {
    let (telemetry, memory) = handle();
    let out = telemetry
        .scope(ctx(), async {
            async { Ok::<u8, io::Error>(1) }
                .track_error("save")
                .await
                .unwrap();
            async { "x".parse::<u8>() }.track_error("save").await
        })
        .await;
    assert_eq!(
        out.unwrap_err().to_string(),
        "invalid digit found in string"
    );
    assert_eq!(names(&telemetry, &memory).await, ["error.save"]);
    let event = only(&telemetry, &memory, "error.save").await;
    assert_eq!(prop(&event, "error"), "invalid digit found in string");
    assert_eq!(prop(&event, "error_type"), "ParseIntError");
    assert_eq!(event.context().request_id(), Some("req_1"));
    let backtraces = Backtrace::capture().status() == BacktraceStatus::Captured;
    assert_eq!(event.properties().contains_key("backtrace"), backtraces);
}

/// The backtrace an error event carries starts at the tracked code, not in this crate or the
/// standard library, with the line tables the dev profile keeps (`debug = "line-tables-only"`
/// names inlined frames without their path). The standard library reads `RUST_LIB_BACKTRACE`
/// once per process, so the event is made in a child run of this test with it set.
#[tokio::test]
async fn a_captured_backtrace_starts_at_the_tracked_code() {
    const CHILD: &str = "TOWER_TELEMETRY_BACKTRACE_CHILD";
    const NAME: &str = "a_captured_backtrace_starts_at_the_tracked_code";
    if std::env::var_os(CHILD).is_some() {
        let (telemetry, memory) = handle();
        telemetry.scope_sync(ctx(), || {
            let failed = track_error("load", || Err::<(), _>(io::Error::other("boom")));
            assert!(failed.is_err());
        });
        let event = only(&telemetry, &memory, "error.load").await;
        let backtrace = prop(&event, "backtrace");
        println!("BACKTRACE<<{}>>", backtrace.as_str().unwrap_or("(none)"));
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backtrace = stdout
        .split_once("BACKTRACE<<")
        .and_then(|(_, rest)| rest.split_once(">>"))
        .map(|(bt, _)| bt)
        .unwrap_or_else(|| panic!("the child printed no backtrace: {stdout}"));
    // The first frame (its header and its locations): this file's closure.
    let first: String = backtrace
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.trim_start().starts_with("at "))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let header = first.trim_start().split_once(": ").map(|(n, _)| n);
    assert!(
        header.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "not a frame: {backtrace}"
    );
    assert!(
        first.contains("tests/timing.rs"),
        "first frame: {first}\nall: {backtrace}"
    );
    assert!(!first.contains("tower_telemetry::"), "{first}");
}

// ----- closures -------------------------------------------------------------------------------

#[tokio::test]
async fn closures() {
    let (telemetry, memory) = handle();
    telemetry.scope_sync(ctx(), || {
        let n: Result<u32, _> = track_duration("config.parse", || "42".parse());
        assert_eq!(n.unwrap(), 42);
        track_duration("config.reload", || ());
        let r = track_function("resize", props! { "width" => 512 }, || "x".parse::<u8>());
        assert!(r.is_err());
        let lazy = track_function(
            "resize",
            |p: &mut Properties| {
                p.insert("width", 1024);
            },
            || Ok::<_, Infallible>(()),
        );
        assert!(lazy.is_ok());
        assert_eq!(track_error("fine", || Ok::<_, io::Error>(3)).unwrap(), 3);
        let err = track_error("critical_function", || {
            Err::<(), _>(io::Error::other("nope"))
        });
        assert!(err.is_err());
    });
    assert_eq!(
        names(&telemetry, &memory).await,
        [
            "config.parse.started",
            "config.parse.completed",
            "config.reload.started",
            "config.reload.completed",
            "resize",
            "resize",
            "error.critical_function",
        ]
    );
    let resizes = memory.named("resize");
    assert_eq!(prop(&resizes[0], "success"), false);
    assert_eq!(prop(&resizes[0], "error_type"), "ParseIntError");
    assert_eq!(prop(&resizes[0], "width"), 512);
    assert_eq!(prop(&resizes[1], "success"), true);
    assert_eq!(prop(&resizes[1], "width"), 1024);
    let error = only(&telemetry, &memory, "error.critical_function").await;
    assert_eq!(prop(&error, "error"), "nope");
    assert_eq!(error.context().user_id(), Some("user_123"));
}

#[tokio::test]
async fn closure_panics_are_reported_then_resumed() {
    let (telemetry, memory) = handle();
    telemetry.scope_sync(ctx(), || {
        let caught = catch_unwind(AssertUnwindSafe(|| {
            track_duration("job", || -> () {
                panic!("boom {}", std::hint::black_box(1))
            })
        }));
        assert_eq!(*caught.unwrap_err().downcast::<String>().unwrap(), "boom 1");
        let caught =
            catch_unwind(|| track_function("fn", Properties::new(), || -> () { panic!("static") }));
        assert!(caught.is_err());
        let caught =
            catch_unwind(|| track_error("fn", || -> Result<(), io::Error> { panic!("in error") }));
        assert!(caught.is_err());
    });
    assert_eq!(
        names(&telemetry, &memory).await,
        ["job.started", "job.failed", "fn", "error.fn"]
    );
    let failed = only(&telemetry, &memory, "job.failed").await;
    assert_eq!(prop(&failed, "error"), "boom 1");
    assert_eq!(prop(&failed, "panic"), true);
    let f = only(&telemetry, &memory, "fn").await;
    assert_eq!(prop(&f, "success"), false);
    assert_eq!(prop(&f, "panic"), true);
    assert_eq!(prop(&f, "error"), "static");
    let e = only(&telemetry, &memory, "error.fn").await;
    assert_eq!(prop(&e, "panic"), true);
    assert_eq!(prop(&e, "error"), "in error");
}

// ----- TrackDurationLayer ---------------------------------------------------------------------

#[tokio::test]
async fn layer_on_routes_of_a_real_server() {
    let (telemetry, memory) = handle();
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { "fine" }).layer(TrackDurationLayer::new("api.ok")),
        )
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") })
                .layer(TrackDurationLayer::new("api.boom")),
        )
        .route(
            "/limited",
            get(|| async { StatusCode::TOO_MANY_REQUESTS }).layer(
                TrackDurationLayer::new("api.limited")
                    .failure_if(|s: StatusCode| s.as_u16() == 429),
            ),
        )
        .layer(TelemetryLayer::new(telemetry.clone()));
    let addr = serve(app).await;

    assert_eq!(http_get(addr, "/ok").await, (200, "fine".to_owned()));
    assert_eq!(http_get(addr, "/boom").await.0, 500);
    assert_eq!(http_get(addr, "/limited").await.0, 429);

    assert!(memory.wait_for("api.limited.failed", WAIT).await.is_some());
    let completed = only(&telemetry, &memory, "api.ok.completed").await;
    has_duration(&completed);
    assert_eq!(completed.context().path(), Some("/ok"));
    assert!(completed.context().request_id().is_some());
    only(&telemetry, &memory, "api.ok.started").await;
    let failed = only(&telemetry, &memory, "api.boom.failed").await;
    has_duration(&failed);
    assert_eq!(prop(&failed, "status"), 500);
    assert_eq!(prop(&failed, "error"), "500 Internal Server Error");
    assert_eq!(
        prop(
            &*only(&telemetry, &memory, "api.limited.failed").await,
            "status"
        ),
        429
    );
}

#[tokio::test]
async fn layer_reports_service_errors_and_cancellation() {
    let (telemetry, memory) = handle();
    let failing = tower::service_fn(|_: http::Request<()>| async {
        Err::<http::Response<()>, _>(io::Error::other("connection reset"))
    });
    let svc = tower::ServiceBuilder::new()
        .layer(TrackDurationLayer::new("svc"))
        .service(failing);
    let out = telemetry
        .scope(ctx(), svc.oneshot(http::Request::new(())))
        .await;
    assert!(out.is_err());
    let failed = only(&telemetry, &memory, "svc.failed").await;
    assert_eq!(prop(&failed, "error"), "connection reset");
    assert_eq!(prop(&failed, "error_type"), "Error");

    let (started_tx, started_rx) = oneshot::channel();
    let (_never_tx, never_rx) = oneshot::channel::<()>();
    let slot = std::sync::Mutex::new(Some((started_tx, never_rx)));
    let slow = tower::service_fn(move |_: http::Request<()>| {
        let (started, never) = slot.lock().unwrap().take().unwrap();
        async move {
            started.send(()).unwrap();
            never.await.ok();
            Ok::<_, Infallible>(http::Response::new(()))
        }
    });
    let svc = TrackDurationLayer::new("slow");
    let svc = tower::Layer::layer(&svc, slow);
    let task = tokio::spawn(telemetry.scope(ctx(), svc.oneshot(http::Request::new(()))));
    started_rx.await.unwrap();
    task.abort();
    let _ = task.await;
    let cancelled = only(&telemetry, &memory, "slow.cancelled").await;
    has_duration(&cancelled);
    assert_eq!(cancelled.context().user_id(), Some("user_123"));
}

#[tokio::test]
async fn layer_reports_a_client_that_disconnects() {
    use tokio::io::AsyncWriteExt;

    let (telemetry, memory) = handle();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started = std::sync::Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let app = Router::new()
        .route(
            "/slow",
            get(move || async move {
                if let Some(tx) = started.lock().unwrap().take() {
                    tx.send(()).ok();
                }
                std::future::pending::<()>().await;
            })
            .layer(TrackDurationLayer::new("api.slow")),
        )
        .layer(TelemetryLayer::new(telemetry.clone()));
    let addr = serve(app).await;

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    started_rx.await.unwrap();
    drop(stream);

    let cancelled = memory.wait_for("api.slow.cancelled", WAIT).await;
    let cancelled = cancelled.expect("a client that goes away cancels the request");
    has_duration(&cancelled);
    assert_eq!(cancelled.context().path(), Some("/slow"));
}
