//! [`TelemetryService`]: the middleware's service.

use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::{RequestEvent, ResponseFuture};
use super::request::{request_context, request_id};
use super::telemetry_layer::LayerConfig;
use crate::context::{self, Scope};
use crate::telemetry::Telemetry;

/// The service [`TelemetryLayer`](super::TelemetryLayer) wraps around yours.
#[derive(Clone, Debug)]
pub struct TelemetryService<S> {
    inner: S,
    config: Arc<LayerConfig>,
}

impl<S> TelemetryService<S> {
    pub(crate) fn new(inner: S, config: Arc<LayerConfig>) -> Self {
        TelemetryService { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TelemetryService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskCx<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let telemetry = match &self.config.telemetry {
            Some(t) => t.clone(),
            None => Telemetry::global().clone(),
        };
        let (mut parts, body) = req.into_parts();
        let header = &self.config.request_id_header;
        let (id, id_value, generated) = request_id(&parts, header);
        if generated || !parts.headers.contains_key(header) {
            parts.headers.insert(header.clone(), id_value.clone());
        }
        if self.config.request_id_extension
            && parts
                .extensions
                .get::<tower_http::request_id::RequestId>()
                .is_none()
        {
            parts
                .extensions
                .insert(tower_http::request_id::RequestId::new(id_value.clone()));
        }
        let ctx = request_context(&parts, &self.config, id);
        let request_event = RequestEvent::start(&telemetry, &self.config, &parts);
        let scope = Scope::new(telemetry, ctx);
        let req = Request::from_parts(parts, body);

        // The inner service's `call` may do work (and track events) before returning its
        // future, so it runs in the scope too.
        let inner = &mut self.inner;
        let future = context::enter_sync(scope.clone(), || inner.call(req));
        let for_event = request_event.is_some().then(|| scope.clone());
        ResponseFuture::new(
            context::enter(scope, future),
            for_event,
            header.clone(),
            id_value,
            request_event,
        )
    }
}
