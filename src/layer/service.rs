//! [`TelemetryService`]: the middleware's service.

use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::{PendingEvent, RequestEvent, ResponseFuture};
use super::request::{Head, request_context, request_id, resolve_ids};
use super::telemetry_layer::LayerConfig;
use crate::identity::Consent;
use crate::telemetry::Telemetry;
use crate::telemetry::{self, Scope};

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

    // Inlined into the caller, which moves the returned future (a few hundred bytes) into its
    // own: out of line, it is built here and copied there.
    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let telemetry = match &config.telemetry {
            Some(t) => t.clone(),
            None => Telemetry::global().clone(),
        };
        let header = &config.request_id_header;
        let (id, id_value) = request_id(&mut req, header);
        if config.request_id_extension
            && req
                .extensions()
                .get::<tower_http::request_id::RequestId>()
                .is_none()
        {
            req.extensions_mut()
                .insert(tower_http::request_id::RequestId::new(id_value.clone()));
        }
        let mut ctx = request_context(Head::of(&req), config, id);
        let mut consent = Consent::Granted;
        if config.user_id.is_some()
            || config.session_id.is_some()
            || config.groups.is_some()
            || config.consent.is_some()
        {
            // Resolvers take `&Parts`: only then is the request taken apart.
            let (parts, body) = req.into_parts();
            consent = resolve_ids(&parts, config, &mut ctx);
            req = Request::from_parts(parts, body);
        }
        let request_event = RequestEvent::start(&telemetry, config, req.uri().path());
        let scope = Scope::with_consent(telemetry, ctx, consent);
        let for_event = request_event.is_some().then(|| scope.clone());

        // The inner service's `call` may do work (and track events) before returning its
        // future, so it runs in the scope too.
        let inner = &mut self.inner;
        ResponseFuture {
            header: header.clone(),
            request_id: Some(id_value),
            request_event: PendingEvent::new(request_event, for_event),
            inner: telemetry::call_in(scope, || inner.call(req)),
        }
    }
}
