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

use std::cell::RefCell;
use std::sync::Arc;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};

use crate::context::Context;

/// The context field that holds the current span's trace id (32 lowercase hex digits).
pub const TRACE_ID: &str = "trace_id";
/// The context field that holds the current span's id (16 lowercase hex digits).
pub const SPAN_ID: &str = "span_id";

/// The last context this thread traced: the context it came from, the span's ids, and the
/// traced copy. Events of one request inside one span share the copy (and so the policy's
/// cached verdict on it) instead of each making their own.
struct Traced {
    from: Arc<Context>,
    ids: ([u8; 16], [u8; 8]),
    traced: Arc<Context>,
}

thread_local! {
    static LAST: RefCell<Option<Traced>> = const { RefCell::new(None) };
}

/// `ctx`, with the current OpenTelemetry span's ids when there is a valid one (a copy of the
/// context then, shared by the events of the same context and span on this thread).
pub(crate) fn with_current_span(ctx: Arc<Context>) -> Arc<Context> {
    // Read in place: no copy of the current context.
    let ids = opentelemetry::Context::map_current(|current| {
        if !current.has_active_span() {
            return None;
        }
        let span = current.span();
        let sc = span.span_context();
        sc.is_valid()
            .then(|| (sc.trace_id().to_bytes(), sc.span_id().to_bytes()))
    });
    let Some(ids) = ids else {
        return ctx;
    };
    let hit = LAST
        .try_with(|last| {
            let last = last.try_borrow().ok()?;
            let t = last.as_ref()?;
            (Arc::ptr_eq(&t.from, &ctx) && t.ids == ids).then(|| t.traced.clone())
        })
        .ok()
        .flatten();
    if let Some(traced) = hit {
        return traced;
    }
    let mut copy = (*ctx).clone();
    copy.set_field(TRACE_ID, TraceId::from_bytes(ids.0).to_string());
    copy.set_field(SPAN_ID, SpanId::from_bytes(ids.1).to_string());
    let traced = Arc::new(copy);
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = Some(Traced {
                from: ctx,
                ids,
                traced: traced.clone(),
            });
        }
    });
    traced
}
