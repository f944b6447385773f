//! The one implementation behind every kind of tracking: what each kind reports
//! ([`Report`]), the tracked future, and the same for closures.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskCx, Poll};

use tokio::time::Instant;

use super::macro_support::Classifier;
use super::names::{DurationNames, ErrorName, ExtraProperties, Stage};
use super::outcome::{Failure, Outcome};
use crate::event::Properties;
use crate::telemetry::with_current;
use crate::text::Text;

/// Decides whether an output is a failure. Implemented by the plain function pointer the
/// futures and macros use, and by the layer's status classifier.
pub(super) trait Classify<O> {
    fn failure<'a>(&self, output: &'a O) -> Option<Failure<'a>>;
}

impl<O> Classify<O> for Classifier<O> {
    fn failure<'a>(&self, output: &'a O) -> Option<Failure<'a>> {
        self(output)
    }
}

pub(super) fn by_outcome<O: Outcome>() -> Classifier<O> {
    |output| output.failure()
}

/// What one kind of tracking emits at each point of a call's life.
pub(super) trait Report<O> {
    fn started(&mut self) {}
    fn finished(&mut self, millis: f64, output: &O);
    fn panicked(&mut self, millis: f64, payload: &(dyn Any + Send));
    fn cancelled(&mut self, millis: f64);
}

fn emit(name: Text, fill: impl FnOnce(&mut Properties)) {
    with_current(|t, scope| {
        t.emit_dynamic(scope, name, |p| {
            fill(p);
            Ok(())
        })
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic"
    }
}

fn fill_panic(p: &mut Properties, payload: &(dyn Any + Send)) {
    p.insert("error", panic_message(payload));
    p.insert("error_type", "panic");
    p.insert("panic", true);
}

/// Milliseconds since `start`, rounded to microseconds.
fn millis_since(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub(super) struct DurationReport<K> {
    pub(super) names: DurationNames,
    pub(super) classify: K,
}

impl<O, K: Classify<O>> Report<O> for DurationReport<K> {
    fn started(&mut self) {
        emit(self.names.get(Stage::Started), |_| {});
    }

    fn finished(&mut self, millis: f64, output: &O) {
        match self.classify.failure(output) {
            None => emit(self.names.get(Stage::Completed), |p| {
                p.insert("duration_ms", millis);
            }),
            Some(failure) => emit(self.names.get(Stage::Failed), |p| {
                p.insert("duration_ms", millis);
                failure.fill(p);
            }),
        }
    }

    fn panicked(&mut self, millis: f64, payload: &(dyn Any + Send)) {
        emit(self.names.get(Stage::Failed), |p| {
            p.insert("duration_ms", millis);
            fill_panic(p, payload);
        });
    }

    fn cancelled(&mut self, millis: f64) {
        emit(self.names.get(Stage::Cancelled), |p| {
            p.insert("duration_ms", millis);
        });
    }
}

pub(super) struct FunctionReport<X> {
    pub(super) name: Text,
    extra: Option<X>,
}

impl<X: ExtraProperties> FunctionReport<X> {
    fn emit(&mut self, millis: f64, success: bool, rest: impl FnOnce(&mut Properties)) {
        let extra = self.extra.take();
        emit(self.name.clone(), |p| {
            // Extras first: into an empty event a ready `Properties` is moved, not copied; and
            // what the call reports itself wins over an extra of the same name.
            if let Some(extra) = extra {
                extra.add_to(p);
            }
            p.insert("duration_ms", millis);
            p.insert("success", success);
            rest(p);
        });
    }
}

pub(super) struct FunctionReportWith<X, K> {
    pub(super) report: FunctionReport<X>,
    classify: K,
}

impl<O, X: ExtraProperties, K: Classify<O>> Report<O> for FunctionReportWith<X, K> {
    fn finished(&mut self, millis: f64, output: &O) {
        match self.classify.failure(output) {
            None => self.report.emit(millis, true, |_| {}),
            Some(failure) => self.report.emit(millis, false, |p| failure.fill(p)),
        }
    }

    fn panicked(&mut self, millis: f64, payload: &(dyn Any + Send)) {
        self.report.emit(millis, false, |p| fill_panic(p, payload));
    }

    fn cancelled(&mut self, millis: f64) {
        self.report.emit(millis, false, |p| {
            p.insert("cancelled", true);
        });
    }
}

pub(super) struct ErrorReport<K> {
    pub(super) name: ErrorName,
    pub(super) classify: K,
}

fn fill_backtrace(p: &mut Properties) {
    // `capture` is a cheap check when backtraces are off (the usual case in production).
    let backtrace = Backtrace::capture();
    if backtrace.status() == BacktraceStatus::Captured {
        let text = backtrace.to_string();
        p.insert("backtrace", fit(skip_own_frames(&text)));
    }
}

/// At most the default `max_string_length`, cut after a whole line: the innermost frames are
/// the ones that matter, and a backtrace the crate attached by itself should not make an
/// ordinary error event "truncated" (a debug build's async stack easily passes 8 KiB).
fn fit(backtrace: &str) -> &str {
    let max = crate::limits::DEFAULT_MAX_STRING_LENGTH;
    if backtrace.len() <= max {
        return backtrace;
    }
    match backtrace.as_bytes()[..max]
        .iter()
        .rposition(|&b| b == b'\n')
    {
        Some(end) => &backtrace[..=end],
        None => &backtrace[..crate::text::floor_char_boundary(backtrace, max)],
    }
}

/// The backtrace from the first frame that is neither this crate's tracking machinery nor the
/// standard library's, so it starts at the tracked function (and fits the size limits better).
///
/// A frame is known by its symbol (`tower_telemetry::…`, `std::…`, …) or, when it is named
/// without its path (a build that keeps line tables only, `debug = "line-tables-only"`, names
/// inlined frames so: `emit_routed<…>`, `{async_fn#0}`), by where its code is: this crate's
/// `src/` or the standard library's sources (`/rustc/…`).
fn skip_own_frames(backtrace: &str) -> &str {
    let here = std::env::current_dir().ok();
    let mut offset = 0;
    // The frame being read: where it starts, whether it is ours so far, and whether its
    // symbol has said so (then its location does not matter).
    let mut frame: Option<(usize, bool, bool)> = None;
    for line in backtrace.split_inclusive('\n') {
        let text = line.trim();
        let header = text
            .split_once(": ")
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, symbol)| symbol);
        if let Some(symbol) = header {
            if let Some((start, false, _)) = frame {
                return &backtrace[start..];
            }
            let path = symbol.trim_start_matches('<').split('<').next();
            let qualified = path.is_some_and(|p| p.contains("::"));
            frame = Some((offset, qualified && own_symbol(symbol), qualified));
        } else if let (Some((_, ours, false)), Some(at)) = (&mut frame, text.strip_prefix("at ")) {
            *ours |= own_location(at, here.as_deref());
        }
        offset += line.len();
    }
    match frame {
        Some((start, false, _)) => &backtrace[start..],
        _ => backtrace,
    }
}

fn own_symbol(symbol: &str) -> bool {
    let symbol = symbol.trim_start_matches('<');
    [
        "tower_telemetry::",
        "std::",
        "core::",
        "alloc::",
        "__rustc::",
    ]
    .iter()
    .any(|prefix| symbol.starts_with(prefix))
}

/// Whether `at` (`PATH:LINE:COLUMN`, the path relative to the current directory `here` when
/// it starts with `./`) is in this crate's `src/` or the standard library's sources.
fn own_location(at: &str, here: Option<&std::path::Path>) -> bool {
    if at.starts_with("/rustc/") {
        return true;
    }
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    match (at.strip_prefix("./"), here) {
        (Some(relative), Some(here)) => here.join(relative).starts_with(src),
        _ => std::path::Path::new(at).starts_with(src),
    }
}

impl<O, K: Classify<O>> Report<O> for ErrorReport<K> {
    fn finished(&mut self, _millis: f64, output: &O) {
        if let Some(failure) = self.classify.failure(output) {
            emit(self.name.get(), |p| {
                failure.fill(p);
                fill_backtrace(p);
            });
        }
    }

    fn panicked(&mut self, _millis: f64, payload: &(dyn Any + Send)) {
        emit(self.name.get(), |p| {
            fill_panic(p, payload);
            fill_backtrace(p);
        });
    }

    fn cancelled(&mut self, _millis: f64) {}
}

// ----- the tracked future ----------------------------------------------------------------------

pin_project_lite::pin_project! {
    #[project = SlotProj]
    enum Slot<F> {
        Running { #[pin] future: F },
        Done,
    }
}

#[derive(Clone, Copy)]
enum State {
    Idle,
    Running(Instant),
    Finished,
}

pin_project_lite::pin_project! {
    /// The one implementation behind every tracking future: times the inner future from its
    /// first poll, catches a panicking poll, and reports a drop before completion.
    pub(super) struct Tracked<F, R> {
        #[pin]
        slot: Slot<F>,
        pub(super) report: R,
        state: State,
        // Set where `R: Report<F::Output>` is known, so the drop hook needs no bounds.
        on_cancel: fn(&mut R, f64),
    }

    impl<F, R> PinnedDrop for Tracked<F, R> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if let State::Running(start) = *this.state {
                *this.state = State::Finished;
                // The inner future goes first, so its own events (nested tracking) precede ours.
                this.slot.set(Slot::Done);
                (this.on_cancel)(this.report, millis_since(start));
            }
        }
    }
}

impl<F: Future, R: Report<F::Output>> Tracked<F, R> {
    pub(super) fn new(future: F, report: R) -> Self {
        Tracked {
            slot: Slot::Running { future },
            report,
            state: State::Idle,
            on_cancel: <R as Report<F::Output>>::cancelled,
        }
    }
}

impl<F: Future, R: Report<F::Output>> Future for Tracked<F, R> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let start = match *this.state {
            State::Running(start) => start,
            State::Idle => {
                this.report.started();
                let start = Instant::now();
                *this.state = State::Running(start);
                start
            }
            State::Finished => panic!("a tracked future was polled after it completed"),
        };
        let SlotProj::Running { future } = this.slot.as_mut().project() else {
            unreachable!("a running tracked future always holds its inner future");
        };
        // Unwind safety: the panic is re-raised right after it is reported, and the inner
        // future is never polled again (the state says Finished).
        match panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                *this.state = State::Finished;
                this.slot.set(Slot::Done);
                this.report.finished(millis_since(start), &output);
                Poll::Ready(output)
            }
            Err(payload) => {
                *this.state = State::Finished;
                this.report.panicked(millis_since(start), &*payload);
                panic::resume_unwind(payload)
            }
        }
    }
}

pub(super) fn run_sync<O, R: Report<O>>(mut report: R, f: impl FnOnce() -> O) -> O {
    report.started();
    let start = Instant::now();
    // Unwind safety: the panic is re-raised right after it is reported.
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(output) => {
            report.finished(millis_since(start), &output);
            output
        }
        Err(payload) => {
            report.panicked(millis_since(start), &*payload);
            panic::resume_unwind(payload)
        }
    }
}

pub(super) fn function_report<X, K>(name: Text, extra: X, classify: K) -> FunctionReportWith<X, K> {
    FunctionReportWith {
        report: FunctionReport {
            name,
            extra: Some(extra),
        },
        classify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_backtraces_are_cut_after_a_line_within_the_string_limit() {
        let max = crate::limits::DEFAULT_MAX_STRING_LENGTH;
        let frame = "  12: my_app::handler::{{closure}}\n             at ./src/main.rs:3:5\n";
        let long = frame.repeat(max / frame.len() + 10);
        let cut = fit(&long);
        assert!(cut.len() <= max && cut.len() > max - frame.len());
        assert!(cut.ends_with('\n') && long.starts_with(cut));
        assert_eq!(fit(frame), frame);
    }

    #[test]
    fn backtraces_start_at_the_tracked_function() {
        let bt = "   0: tower_telemetry::timing::tracked::fill_backtrace\n             at ./src/timing/tracked.rs:162:25\n   1: <core::ops::function::FnOnce>::call_once\n   2: my_app::might_fail\n             at ./src/main.rs:3:5\n   3: main\n";
        assert!(skip_own_frames(bt).starts_with("   2: my_app::might_fail\n"));
        assert_eq!(skip_own_frames("not a backtrace"), "not a backtrace");
    }

    #[test]
    fn with_line_tables_only_own_frames_are_known_by_their_location() {
        // As a build with `debug = "line-tables-only"` prints them: inlined frames are named
        // without their path; where they are tells.
        let own = concat!(env!("CARGO_MANIFEST_DIR"), "/src/telemetry/emit.rs");
        let bt = format!(
            "   0: std::backtrace::Backtrace::capture\n             at /rustc/abc/library/std/src/backtrace.rs:296:9\n   1: fill_backtrace\n             at {own}:162:25\n   2: emit_routed<tower_telemetry::telemetry::emit::X>\n             at {own}:230:27\n   3: poll<F>\n             at /rustc/abc/library/core/src/future/future.rs:133:9\n   4: {{async_fn#0}}\n             at ./examples/quickstart.rs:99:5\n   5: main\n"
        );
        assert!(
            skip_own_frames(&bt).starts_with("   4: {async_fn#0}\n"),
            "{}",
            skip_own_frames(&bt)
        );
        // A path relative to the current directory is resolved against it.
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(own_location("./src/timing/tracked.rs:1:1", Some(here)));
        assert!(!own_location("./examples/quickstart.rs:1:1", Some(here)));
        assert!(!own_location("/home/me/app/src/main.rs:1:1", Some(here)));
        // Every frame ours: the whole backtrace, not nothing.
        let all_ours = "   0: tower_telemetry::x\n   1: std::rt::lang_start\n";
        assert_eq!(skip_own_frames(all_ours), all_ours);
    }
}
