//! Trace correlation (issue #25, item 2): an event tracked in a handler behind
//! `TelemetryLayer` while an OpenTelemetry span is current carries the span's ids in its
//! context; outside a span it carries none.
#![cfg(feature = "opentelemetry")]

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use support::http::{Server, client, get as request, send};
use tower_telemetry::layer::TelemetryLayer;
use tower_telemetry::otel::{SPAN_ID, TRACE_ID};
use tower_telemetry::{Telemetry, track};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn span(id: &str) -> SpanContext {
    SpanContext::new(
        TraceId::from_hex(TRACE).unwrap(),
        SpanId::from_hex(id).unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

#[tokio::test]
async fn events_in_a_span_carry_its_ids_and_others_none() {
    let telemetry = Telemetry::builder()
        .memory_destination("memory")
        .build()
        .unwrap();
    let memory = telemetry.memory("memory").unwrap();
    let app = Router::new()
        .route(
            "/work",
            get(|| async {
                track!("job.outside");
                {
                    let _outer = opentelemetry::Context::current()
                        .with_remote_span_context(span("00f067aa0ba902b7"))
                        .attach();
                    track!("job.in_outer");
                    track!("job.in_outer_again");
                    let _inner = opentelemetry::Context::current()
                        .with_remote_span_context(span("53995c3f42cd8ad8"))
                        .attach();
                    track!("job.in_inner");
                }
                track!("job.after");
                "ok"
            }),
        )
        .layer(TelemetryLayer::new(telemetry.clone()));
    let server = Server::start(app).await;
    let req = request(&server.url("/work"))
        .header("x-request-id", "req-1")
        .body(Default::default())
        .unwrap();
    let (res, _) = send(&client(), req).await;
    assert_eq!(res.status(), 200);
    let report = telemetry.shutdown(Duration::from_secs(10)).await;
    let d = report.destination("memory").unwrap();
    assert_eq!(d.delivered, 5, "{d:?}");
    assert_eq!(d.enqueued, d.delivered + d.undelivered + d.failed, "{d:?}");
    let ids = |name: &str| {
        let events = memory.events();
        let e = events.iter().find(|e| e.name() == name).unwrap();
        assert_eq!(
            e.context().request_id(),
            Some("req-1"),
            "the request's context stays"
        );
        let field = |k| {
            e.context()
                .field(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        (field(TRACE_ID), field(SPAN_ID))
    };
    assert_eq!(ids("job.outside"), (None, None));
    let outer = (Some(TRACE.to_owned()), Some("00f067aa0ba902b7".to_owned()));
    assert_eq!(ids("job.in_outer"), outer);
    assert_eq!(ids("job.in_outer_again"), outer);
    assert_eq!(
        ids("job.in_inner"),
        (Some(TRACE.to_owned()), Some("53995c3f42cd8ad8".to_owned()))
    );
    assert_eq!(ids("job.after"), (None, None));
}
