//! [`ResponseFuture`]: the middleware's response future (no boxing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll, ready};

use http::{HeaderName, HeaderValue, Response};
use tokio::time::Instant;

use super::telemetry_layer::LayerConfig;
use crate::event::EventKind;
use crate::telemetry::Telemetry;
use crate::telemetry::{Scope, WithContext};

/// The automatic request event, if this request gets one.
#[derive(Debug)]
pub(crate) struct RequestEvent {
    start: Instant,
}

/// What the automatic request event needs once the response is ready.
#[derive(Debug)]
pub(crate) struct PendingEvent {
    event: RequestEvent,
    scope: Arc<Scope>,
}

impl RequestEvent {
    pub(crate) fn start(telemetry: &Telemetry, config: &LayerConfig, path: &str) -> Option<Self> {
        let on = config
            .request_events
            .unwrap_or_else(|| telemetry.requests().is_enabled());
        (on && telemetry.is_enabled() && !telemetry.request_excluded(path)).then(|| RequestEvent {
            start: Instant::now(),
        })
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`TelemetryService`](super::TelemetryService): polls the inner
    /// future inside the request's scope, echoes the request id, and emits the automatic
    /// request event when configured.
    pub struct ResponseFuture<F> {
        // Set first and last in `TelemetryService::call`'s struct literal, so that the inner
        // future (a few hundred bytes) is built in place instead of being copied in.
        pub(super) header: HeaderName,
        pub(super) request_id: Option<HeaderValue>,
        // Only with a request event: otherwise the inner future's scope is the only one kept,
        // and a request costs one reference count fewer.
        pub(super) request_event: Option<PendingEvent>,
        #[pin]
        pub(super) inner: WithContext<F>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl PendingEvent {
    /// The pending request event, if this request gets one (and so holds its scope).
    #[inline]
    pub(crate) fn new(event: Option<RequestEvent>, scope: Option<Arc<Scope>>) -> Option<Self> {
        event
            .zip(scope)
            .map(|(event, scope)| PendingEvent { event, scope })
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let status = match &result {
            Ok(res) => Some(res.status()),
            Err(_) => None,
        };
        let mut result = result;
        if let (Ok(res), Some(id)) = (&mut result, this.request_id.take()) {
            // One lookup: a handler's own id wins.
            if let Ok(http::header::Entry::Vacant(slot)) =
                res.headers_mut().try_entry(this.header.clone())
            {
                slot.insert(id);
            }
        }
        if let Some(pending) = this.request_event.take() {
            emit_request_event(&pending.scope, pending.event, status);
        }
        Poll::Ready(result)
    }
}

fn emit_request_event(scope: &Scope, ev: RequestEvent, status: Option<http::StatusCode>) {
    let telemetry = &scope.telemetry;
    let name = telemetry.requests().name.clone();
    let ctx = scope.snapshot();
    let duration_ms = ev.start.elapsed().as_secs_f64() * 1000.0;
    telemetry.emit_kind_in(Some(scope), name, EventKind::PageView, None, |p| {
        p.insert("method", ctx.method().unwrap_or(""));
        if let Some(route) = ctx.route() {
            p.insert("route", route);
        }
        match status {
            Some(s) => p.insert("status", s.as_u16()),
            None => p.insert("error", true),
        };
        p.insert("duration_ms", (duration_ms * 1000.0).round() / 1000.0);
        Ok(())
    });
}
