//! What the attribute macros expand to. Not public API: everything here may change in any
//! release.

use std::fmt::{self, Debug};
use std::future::Future;
use std::marker::PhantomData;

use super::future::{TrackDuration, TrackError, TrackFunction};
use super::names::{DurationNames, ErrorName, ExtraProperties};
use super::outcome::{Failure, Outcome};
use super::tracked::{DurationReport, ErrorReport, by_outcome, function_report, run_sync};
use crate::event::Properties;
use crate::text::Text;

/// Carries an output type so that method resolution can pick the best classification
/// available for it: [`Outcome`], else `Err` with `Debug`, else any `Err`, else success.
pub struct Probe<T>(PhantomData<fn() -> T>);

impl<T> Clone for Probe<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Probe<T> {}

impl<T> Debug for Probe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

/// A probe for the output of `future`.
pub fn probe_future<F: Future>(_: &F) -> Probe<F::Output> {
    Probe(PhantomData)
}

/// A probe for the result of `f`.
pub fn probe_fn<O, F: FnOnce() -> O>(_: &F) -> Probe<O> {
    Probe(PhantomData)
}

/// How a tracked call's output is classified, chosen where its type is known: call
/// `(&&&probe).__classifier()` with the four `Via*` traits in scope.
pub type Classifier<O> = for<'a> fn(&'a O) -> Option<Failure<'a>>;

/// Tier 1: the output is an [`Outcome`].
pub trait ViaOutcome {
    /// The output type.
    type Output;
    /// Its classifier.
    fn __classifier(self) -> Classifier<Self::Output>;
}
impl<T: Outcome> ViaOutcome for &&&Probe<T> {
    type Output = T;
    fn __classifier(self) -> Classifier<T> {
        by_outcome::<T>()
    }
}

/// Tier 2: a `Result` whose error has `Debug`.
pub trait ViaDebug {
    /// The output type.
    type Output;
    /// Its classifier.
    fn __classifier(self) -> Classifier<Self::Output>;
}
impl<T, E: Debug> ViaDebug for &&Probe<Result<T, E>> {
    type Output = Result<T, E>;
    fn __classifier(self) -> Classifier<Result<T, E>> {
        |output| output.as_ref().err().map(Failure::from_debug)
    }
}

/// Tier 3: any `Result`.
pub trait ViaResult {
    /// The output type.
    type Output;
    /// Its classifier.
    fn __classifier(self) -> Classifier<Self::Output>;
}
impl<T, E> ViaResult for &Probe<Result<T, E>> {
    type Output = Result<T, E>;
    fn __classifier(self) -> Classifier<Result<T, E>> {
        |output| output.is_err().then(Failure::of_type::<E>)
    }
}

/// Tier 4: anything else always succeeds.
pub trait ViaAny {
    /// The output type.
    type Output;
    /// Its classifier.
    fn __classifier(self) -> Classifier<Self::Output>;
}
impl<T> ViaAny for Probe<T> {
    type Output = T;
    fn __classifier(self) -> Classifier<T> {
        |_| None
    }
}

/// Adds one `#[track_function]` extra property (by reference, so a `static` can be used).
pub fn insert<T: serde::Serialize + ?Sized>(
    properties: &mut Properties,
    key: &'static str,
    value: &T,
) {
    properties.insert(key, value);
}

/// `error.{name}` given in full.
#[derive(Clone)]
pub struct ErrorEvent(ErrorName);

impl Debug for ErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrorEvent").field(&self.0.get()).finish()
    }
}

impl ErrorEvent {
    /// The full event name, e.g. `error.critical_function`.
    pub const fn new(full: &'static str) -> Self {
        ErrorEvent(ErrorName::Full(full))
    }
}

/// Gives an `async` block the function's return type, so that `?` and `return` in the body
/// infer as they did in the function.
pub fn typed_future<T, F: Future<Output = T>>(future: F) -> F {
    future
}

/// `#[track_duration]` on an `async fn`.
pub fn duration_future<F: Future>(
    future: F,
    names: DurationNames,
    classify: Classifier<F::Output>,
) -> TrackDuration<F> {
    super::future::duration_future(future, names, classify)
}

/// `#[track_function]` on an `async fn`.
pub fn function_future<F: Future, X: ExtraProperties>(
    future: F,
    name: &'static str,
    extra: X,
    classify: Classifier<F::Output>,
) -> TrackFunction<F, X> {
    super::future::function_future(future, Text::from_static(name), extra, classify)
}

/// `#[track_error]` on an `async fn`.
pub fn error_future<F: Future>(
    future: F,
    name: ErrorEvent,
    classify: Classifier<F::Output>,
) -> TrackError<F> {
    super::future::error_future(future, name.0, classify)
}

/// `#[track_duration]` on a plain `fn`.
pub fn duration_sync<O>(names: DurationNames, classify: Classifier<O>, f: impl FnOnce() -> O) -> O {
    run_sync(DurationReport { names, classify }, f)
}

/// `#[track_function]` on a plain `fn`.
pub fn function_sync<O>(
    name: &'static str,
    extra: impl ExtraProperties,
    classify: Classifier<O>,
    f: impl FnOnce() -> O,
) -> O {
    run_sync(function_report(Text::from_static(name), extra, classify), f)
}

/// `#[track_error]` on a plain `fn`.
pub fn error_sync<O>(name: ErrorEvent, classify: Classifier<O>, f: impl FnOnce() -> O) -> O {
    run_sync(
        ErrorReport {
            name: name.0,
            classify,
        },
        f,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The borrows are the point: each level of reference selects a tier.
    #[allow(clippy::needless_borrow)]
    fn probes_pick_the_best_classifier() {
        #[derive(Debug)]
        struct OnlyDebug;
        struct Opaque;
        fn classify<T>(c: Classifier<T>, v: &T) -> Option<String> {
            c(v).map(|f| format!("{f} / {}", f.error_type()))
        }
        let p = Probe::<Result<(), std::io::Error>>(PhantomData);
        let c = (&&&p).__classifier();
        assert_eq!(
            classify(c, &Err(std::io::Error::other("x"))).unwrap(),
            "x / Error"
        );
        let p = Probe::<Result<(), OnlyDebug>>(PhantomData);
        let c = (&&&p).__classifier();
        assert_eq!(
            classify(c, &Err(OnlyDebug)).unwrap(),
            "OnlyDebug / OnlyDebug"
        );
        let p = Probe::<Result<(), Opaque>>(PhantomData);
        let c = (&&&p).__classifier();
        assert_eq!(classify(c, &Err(Opaque)).unwrap(), "Opaque / Opaque");
        let p = Probe::<&str>(PhantomData);
        let c = (&&&p).__classifier();
        assert_eq!(classify(c, &"fine"), None);
    }
}
