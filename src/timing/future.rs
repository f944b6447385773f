//! [`TrackDurationExt`] for futures, its futures, and the closure wrappers.

use std::fmt::{self, Debug};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskCx, Poll};

use super::macro_support::Classifier;
use super::names::{DurationNames, ErrorName, ExtraProperties};
use super::outcome::Outcome;
use super::tracked::{
    DurationReport, ErrorReport, FunctionReportWith, Tracked, by_outcome, function_report, run_sync,
};
use crate::event::Properties;
use crate::text::Text;

pin_project_lite::pin_project! {
    /// A future that emits `{prefix}.started`, then `.completed`, `.failed` or `.cancelled`.
    /// Returned by [`TrackDurationExt::track_duration`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct TrackDuration<F>
    where
        F: Future,
    {
        #[pin]
        inner: Tracked<F, DurationReport<Classifier<F::Output>>>,
    }
}

pin_project_lite::pin_project! {
    /// A future that emits one `{name}` event with `duration_ms`, `success` and extra
    /// properties when it finishes (or is dropped early). Returned by
    /// [`TrackDurationExt::track_function`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct TrackFunction<F, X = Properties>
    where
        F: Future,
    {
        #[pin]
        inner: Tracked<F, FunctionReportWith<X, Classifier<F::Output>>>,
    }
}

pin_project_lite::pin_project! {
    /// A future that emits `error.{name}` when it fails, and passes its output through.
    /// Returned by [`TrackDurationExt::track_error`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct TrackError<F>
    where
        F: Future,
    {
        #[pin]
        inner: Tracked<F, ErrorReport<Classifier<F::Output>>>,
    }
}

impl<F: Future> Future for TrackDuration<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F: Future, X: ExtraProperties> Future for TrackFunction<F, X> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F: Future> Future for TrackError<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F: Future> Debug for TrackDuration<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackDuration")
            .field("names", &self.inner.report.names)
            .finish_non_exhaustive()
    }
}

impl<F: Future, X> Debug for TrackFunction<F, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackFunction")
            .field("name", &self.inner.report.report.name)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Debug for TrackError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackError")
            .field("name", &self.inner.report.name.get())
            .finish_non_exhaustive()
    }
}

pub(super) fn duration_future<F: Future>(
    future: F,
    names: DurationNames,
    classify: Classifier<F::Output>,
) -> TrackDuration<F> {
    TrackDuration {
        inner: Tracked::new(future, DurationReport { names, classify }),
    }
}

pub(super) fn function_future<F: Future, X: ExtraProperties>(
    future: F,
    name: Text,
    extra: X,
    classify: Classifier<F::Output>,
) -> TrackFunction<F, X> {
    TrackFunction {
        inner: Tracked::new(future, function_report(name, extra, classify)),
    }
}

pub(super) fn error_future<F: Future>(
    future: F,
    name: ErrorName,
    classify: Classifier<F::Output>,
) -> TrackError<F> {
    TrackError {
        inner: Tracked::new(future, ErrorReport { name, classify }),
    }
}

/// Duration, function and error tracking for any future: the combinator form of
/// `#[track_duration]`, `#[track_function]` and `#[track_error]`, for `async` code.
///
/// Each wrapper is `Send` when the future is, allocates nothing of its own (event names
/// aside, see [`DurationNames`]), and builds an event's properties only when some destination
/// keeps it. Events carry the context of the request scope the future is polled in.
///
/// ```
/// use tower_telemetry::{props, timing::TrackDurationExt};
///
/// # async fn charge() -> Result<(), std::io::Error> { Ok(()) }
/// # async fn run() -> Result<(), std::io::Error> {
/// charge().track_duration("payment.charge").await?;
/// charge().track_function("charge", props! { "provider" => "stripe" }).await?;
/// charge().track_error("charge").await?;
/// # Ok(()) }
/// ```
pub trait TrackDurationExt: Future + Sized {
    /// Emits `{prefix}.started` when first polled, then exactly one of:
    ///
    /// - `{prefix}.completed` with `duration_ms`, when the output is a success;
    /// - `{prefix}.failed` with `duration_ms`, `error`, `error_type` (and `status` for a
    ///   response) when the output is a failure per [`Outcome`];
    /// - `{prefix}.failed` with `duration_ms`, `error` (the panic message),
    ///   `error_type: "panic"` and `panic: true` when a poll panics — the panic then continues;
    /// - `{prefix}.cancelled` with `duration_ms` when dropped after its first poll but before
    ///   it finished (a client that went away, a `select!` that lost, a timeout).
    fn track_duration(self, prefix: impl Into<DurationNames>) -> TrackDuration<Self>
    where
        Self::Output: Outcome,
    {
        duration_future(self, prefix.into(), by_outcome())
    }

    /// Emits one `name` event when the future finishes, with `duration_ms`, `success`, the
    /// `extra` properties, and on failure `error` and `error_type` (`panic: true` for a panic,
    /// which then continues). Dropped before it finished, it emits the same event with
    /// `success: false` and `cancelled: true`. An extra property named like one the event sets
    /// itself (`success`, `error`, ...) is overwritten.
    fn track_function<X: ExtraProperties>(
        self,
        name: impl Into<Text>,
        extra: X,
    ) -> TrackFunction<Self, X>
    where
        Self::Output: Outcome,
    {
        function_future(self, name.into(), extra, by_outcome())
    }

    /// Emits `error.{name}` with `error`, `error_type` and `backtrace` (when backtraces are
    /// enabled) when the output is a failure per [`Outcome`] or a poll panics (with
    /// `panic: true`; the panic then continues). The output passes through unchanged; success
    /// and cancellation emit nothing.
    fn track_error(self, name: impl Into<Text>) -> TrackError<Self>
    where
        Self::Output: Outcome,
    {
        error_future(self, ErrorName::Base(name.into()), by_outcome())
    }
}

impl<F: Future> TrackDurationExt for F {}

/// Runs `f`, emitting `{prefix}.started`, then `{prefix}.completed` with `duration_ms`, or
/// `{prefix}.failed` with `duration_ms`, `error` and `error_type` when the result is a failure
/// per [`Outcome`] (or with `panic: true` when `f` panics; the panic then continues).
///
/// ```
/// let n: Result<u32, _> = tower_telemetry::timing::track_duration("config.parse", || "42".parse());
/// assert_eq!(n.unwrap(), 42);
/// ```
pub fn track_duration<O: Outcome>(prefix: impl Into<DurationNames>, f: impl FnOnce() -> O) -> O {
    run_sync(
        DurationReport {
            names: prefix.into(),
            classify: by_outcome::<O>(),
        },
        f,
    )
}

/// Runs `f`, then emits one `name` event with `duration_ms`, `success`, the `extra`
/// properties, and on failure `error` and `error_type` (`panic: true` when `f` panics; the
/// panic then continues). The result is returned unchanged. An extra property named like one
/// the event sets itself (`success`, `error`, ...) is overwritten.
///
/// ```
/// use tower_telemetry::props;
/// let image = tower_telemetry::timing::track_function("generate_image", props! { "model" => "flux" }, || {
///     Ok::<_, std::io::Error>(vec![0u8; 4])
/// });
/// assert!(image.is_ok());
/// ```
pub fn track_function<O: Outcome>(
    name: impl Into<Text>,
    extra: impl ExtraProperties,
    f: impl FnOnce() -> O,
) -> O {
    run_sync(function_report(name.into(), extra, by_outcome::<O>()), f)
}

/// Runs `f`; when its result is a failure per [`Outcome`] or it panics, emits `error.{name}`
/// with `error`, `error_type` and `backtrace` (only when backtraces are enabled by
/// `RUST_BACKTRACE` / `RUST_LIB_BACKTRACE`). The result passes through unchanged; a panic
/// continues after it is reported (with `panic: true`).
///
/// ```
/// let r = tower_telemetry::timing::track_error("critical_function", || "x".parse::<i32>());
/// assert!(r.is_err());
/// ```
pub fn track_error<O: Outcome>(name: impl Into<Text>, f: impl FnOnce() -> O) -> O {
    run_sync(
        ErrorReport {
            name: ErrorName::Base(name.into()),
            classify: by_outcome::<O>(),
        },
        f,
    )
}
