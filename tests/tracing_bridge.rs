//! The bridge from `tracing` (issue #25, item 3): `tracing` events that opt in arrive at a
//! destination as telemetry events with typed properties and the request's context, through a
//! real axum app behind `TelemetryLayer`; events that do not opt in, and the crate's own
//! records, never do.
#![cfg(feature = "tracing-bridge")]

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::request::Parts;
use support::accounted;
use support::http::{Server, client, get as request, send};
use tower_telemetry::Telemetry;
use tower_telemetry::bridge::TracingBridge;
use tower_telemetry::layer::TelemetryLayer;
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Plan {
    #[allow(dead_code)]
    seats: u32,
}

fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/signup",
            get(|| async {
                tracing::info!(
                    telemetry.event = "user.signup",
                    plan = "pro",
                    seats = 3,
                    negative = -4,
                    ratio = 0.5,
                    admin = false,
                    huge = u128::MAX,
                    detail = ?Plan { seats: 3 },
                    "signed up"
                );
                tracing::info!(plan = "pro", "an ordinary log line");
                tracing::warn!(target: "analytics::billing", "billing.card_added");
                // The crate warns about this rejected name in its own records: never bridged.
                tracing::info!(telemetry.event = "bad\u{1b}name");
                "ok"
            }),
        )
        .layer(
            TelemetryLayer::new(telemetry.clone())
                .user_id(|p: &Parts| p.headers.get("x-user")?.to_str().ok().map(str::to_owned)),
        )
}

#[tokio::test]
async fn opted_in_tracing_events_arrive_with_the_requests_context() {
    let telemetry = Telemetry::builder()
        .memory_destination("memory")
        .build()
        .unwrap();
    let memory = telemetry.memory("memory").unwrap();
    let seen = support::logs::Logs::default();
    let writer = seen.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false),
        )
        .with(
            TracingBridge::new(telemetry.clone())
                .target("analytics")
                .target("tower_telemetry")
                .into_layer(),
        );
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = Server::start(app(&telemetry)).await;
    let req = request(&server.url("/signup"))
        .header("x-user", "user-1")
        .header("x-request-id", "req-1")
        .body(Default::default())
        .unwrap();
    let (res, _) = send(&client(), req).await;
    assert_eq!(res.status(), 200);
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("memory").unwrap();
    accounted(d);
    assert_eq!(report.stats.rejected, 1, "the bad name: {:?}", report.stats);

    let events = memory.events();
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["user.signup", "billing.card_added"]);
    let signup = &events[0];
    let p = signup.properties();
    assert_eq!(p.get("plan").unwrap(), "pro");
    assert_eq!(p.get("seats").unwrap().as_i64(), Some(3));
    assert_eq!(p.get("negative").unwrap().as_i64(), Some(-4));
    assert_eq!(p.get("ratio").unwrap().as_f64(), Some(0.5));
    assert_eq!(p.get("admin").unwrap().as_bool(), Some(false));
    assert_eq!(p.get("huge").unwrap(), u128::MAX.to_string().as_str());
    assert_eq!(p.get("detail").unwrap(), "Plan { seats: 3 }");
    assert_eq!(p.get("message").unwrap(), "signed up");
    assert!(p.get("telemetry.event").is_none());
    for e in &events {
        assert_eq!(e.context().user_id(), Some("user-1"), "{}", e.name());
        assert_eq!(e.context().request_id(), Some("req-1"));
        assert_eq!(e.context().path(), Some("/signup"));
    }
    // The other layers saw every record. (The crate's warning about the rejected name is made
    // while `tracing` dispatches the bridged record, and `tracing` drops records made during a
    // dispatch: it is counted above, not logged.)
    let text = seen.text();
    assert!(text.contains("an ordinary log line"), "{text}");
    assert!(text.contains("billing.card_added"), "{text}");
}

#[test]
fn outside_any_request_the_base_context_is_used() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let telemetry = rt.block_on(async {
        Telemetry::builder()
            .memory_destination("memory")
            .context(tower_telemetry::Context::new().with_hostname("worker-1"))
            .build()
            .unwrap()
    });
    let subscriber =
        tracing_subscriber::registry().with(TracingBridge::new(telemetry.clone()).into_layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(telemetry.event = "system.job_done", jobs = 7u64);
    });
    let report = rt.block_on(telemetry.shutdown(WAIT));
    accounted(report.destination("memory").unwrap());
    let events = telemetry.memory("memory").unwrap().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].context().hostname(), Some("worker-1"));
    assert_eq!(
        events[0].properties().get("jobs").unwrap().as_u64(),
        Some(7)
    );
}
