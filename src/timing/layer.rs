//! [`TrackDurationLayer`]: duration tracking for a route or a whole service.

use std::fmt::{self, Debug, Display};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskCx, Poll};

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::names::DurationNames;
use super::outcome::Failure;
use super::tracked::{Classify, DurationReport, Tracked};
use crate::text::Text;

/// Decides which response statuses count as failures for [`TrackDurationLayer`].
///
/// The default, [`ServerErrors`], fails on 5xx. Any `Fn(StatusCode) -> bool + Clone` works:
///
/// ```
/// use tower_telemetry::timing::TrackDurationLayer;
/// let layer = TrackDurationLayer::new("api.generate")
///     .failure_if(|status: http::StatusCode| status.is_server_error() || status.as_u16() == 429);
/// ```
pub trait ClassifyStatus {
    /// Whether a response with `status` is a failure.
    fn is_failure(&self, status: StatusCode) -> bool;
}

/// The default [`ClassifyStatus`]: 5xx responses are failures.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerErrors;

impl ClassifyStatus for ServerErrors {
    fn is_failure(&self, status: StatusCode) -> bool {
        status.is_server_error()
    }
}

impl<C: Fn(StatusCode) -> bool> ClassifyStatus for C {
    fn is_failure(&self, status: StatusCode) -> bool {
        self(status)
    }
}

struct ByStatus<C>(C);

impl<B, E: Display, C: ClassifyStatus> Classify<Result<Response<B>, E>> for ByStatus<C> {
    fn failure<'a>(&self, output: &'a Result<Response<B>, E>) -> Option<Failure<'a>> {
        match output {
            Ok(response) => {
                let status = response.status();
                self.0.is_failure(status).then(|| Failure::status(status))
            }
            Err(e) => Some(Failure::new(e)),
        }
    }
}

/// Duration tracking for a route or a whole service: `{prefix}.started`, then
/// `{prefix}.completed`, `{prefix}.failed` (a service error, a 5xx response, or a panic) or
/// `{prefix}.cancelled` (the client went away), each with `duration_ms`.
///
/// Events go through the current handle, so put [`TelemetryLayer`](crate::layer::TelemetryLayer)
/// outside this layer for them to carry the request's context.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_telemetry::{Telemetry, layer::TelemetryLayer, timing::TrackDurationLayer};
///
/// async fn generate() -> &'static str { "ok" }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
/// let app: Router = Router::new()
///     .route("/api/generate", post(generate).layer(TrackDurationLayer::new("api.generate")))
///     .layer(TelemetryLayer::new(telemetry));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TrackDurationLayer<C = ServerErrors> {
    names: DurationNames,
    classify: C,
}

impl TrackDurationLayer {
    /// Tracks every request under `prefix`.
    pub fn new(prefix: impl Into<Text>) -> Self {
        TrackDurationLayer {
            names: DurationNames::new(prefix),
            classify: ServerErrors,
        }
    }
}

impl<C> TrackDurationLayer<C> {
    /// Which statuses are failures. Defaults to [`ServerErrors`] (5xx). Service errors are
    /// always failures.
    pub fn failure_if<C2: ClassifyStatus>(self, classify: C2) -> TrackDurationLayer<C2> {
        TrackDurationLayer {
            names: self.names,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for TrackDurationLayer<C> {
    type Service = TrackDurationService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackDurationService {
            inner,
            names: self.names.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`TrackDurationLayer`].
#[derive(Clone, Debug)]
pub struct TrackDurationService<S, C = ServerErrors> {
    inner: S,
    names: DurationNames,
    classify: C,
}

impl<S, C> TrackDurationService<S, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for TrackDurationService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Display,
    C: ClassifyStatus + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut TaskCx<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let report = DurationReport {
            names: self.names.clone(),
            classify: ByStatus(self.classify.clone()),
        };
        ResponseFuture {
            inner: Tracked::new(self.inner.call(request), report),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`TrackDurationService`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Tracked<F, DurationReport<ByStatus<C>>>,
    }
}

impl<F, C> Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("names", &self.inner.report.names)
            .finish_non_exhaustive()
    }
}

impl<F, B, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Display,
    C: ClassifyStatus,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}
