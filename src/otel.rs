//! Trace correlation (feature `opentelemetry`): an event tracked while an OpenTelemetry
//! context with a valid span is current carries the span's ids in its context.
//!
//! The ids go into the context as the free-form fields [`TRACE_ID`] and [`SPAN_ID`]
//! (lowercase hex, 32 and 16 digits), so every destination has them: the logging destination
//! and the NATS stream as context fields, PostHog, Segment and webhooks with the context, and
//! the `otlp` kind in the `LogRecord`'s own `trace_id` and `span_id`. A context is current
//! where your code made it so (`opentelemetry::Context::attach`, a tracer's `in_span`) or where
//! `tracing-opentelemetry` activates a span's context. Without the feature nothing is read and
//! nothing is compiled.
//!
//! ```
//! use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
//! use tower_telemetry::{Context, Telemetry, track};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
//! let span = SpanContext::new(
//!     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
//!     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
//!     TraceFlags::SAMPLED,
//!     true,
//!     TraceState::default(),
//! );
//! let _current = opentelemetry::Context::current().with_remote_span_context(span).attach();
//! telemetry.scope_sync(Context::new(), || track!("user.clicked"));
//!
//! telemetry.flush(std::time::Duration::from_secs(1)).await;
//! let event = &telemetry.memory("memory").unwrap().events()[0];
//! assert_eq!(event.context().field("trace_id").unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(event.context().field("span_id").unwrap(), "00f067aa0ba902b7");
//! # }
//! ```

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt;

use crate::context::Context;

/// The context field that holds the current span's trace id (32 lowercase hex digits).
pub const TRACE_ID: &str = "trace_id";
/// The context field that holds the current span's id (16 lowercase hex digits).
pub const SPAN_ID: &str = "span_id";

/// `ctx`, with the current OpenTelemetry span's ids when there is a valid one (a copy of the
/// context then, unless it already carries those ids).
pub(crate) fn with_current_span(ctx: Arc<Context>) -> Arc<Context> {
    let current = opentelemetry::Context::current();
    if !current.has_active_span() {
        return ctx;
    }
    let span = current.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return ctx;
    }
    let (trace_id, span_id) = (sc.trace_id().to_string(), sc.span_id().to_string());
    let same = |key: &str, id: &str| ctx.field(key).and_then(|v| v.as_str()) == Some(id);
    if same(TRACE_ID, &trace_id) && same(SPAN_ID, &span_id) {
        return ctx;
    }
    let mut traced = (*ctx).clone();
    traced.set_field(TRACE_ID, trace_id);
    traced.set_field(SPAN_ID, span_id);
    Arc::new(traced)
}
