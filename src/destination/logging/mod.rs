//! The `logging` destination: each event as a `tracing` record, or as a JSON line written
//! straight to stdout, stderr or a writer of your own.
//!
//! ```
//! use tower_telemetry::{Telemetry, destination::LoggingDestination};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Runtime::new()?;
//! # let _guard = rt.enter();
//! // `tracing` records at WARN, for a subscriber to format:
//! let to_tracing = LoggingDestination::new(tracing::Level::WARN);
//! // one JSON object per line on stdout, for a log shipper:
//! let to_stdout = LoggingDestination::default().with_writer(std::io::stdout());
//!
//! let telemetry = Telemetry::builder()
//!     .destination("logging", to_tracing)
//!     .destination("events", to_stdout)
//!     .build()?;
//! # drop(telemetry);
//! # Ok(())
//! # }
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{
    BuiltinKinds, CheckSettings, ConfigError, DeliveryConfig, Settings, describe_value,
};
use crate::diag::Quoted;
use crate::event::{Event, EventKind};

mod lines;

use lines::JsonLines;

/// Writes each event to the `tracing` log (the default) or as a JSON line to stdout, stderr or
/// any [`Write`]r.
///
/// # `tracing` output
///
/// One record per event, target `tower_telemetry`, at the configured level, with the fields
/// `event` (name), `category`, `kind` (only for an event that is not a plain tracked one:
/// `page_view`, `identify`, `alias` or `group`, see [`EventKind`]), `event_id`, `properties`
/// (JSON), and `user_id`, `session_id`, `request_id`, `path` when the context has them. A
/// subscriber (e.g. `tracing-subscriber`'s fmt layer) decides whether and how it is written.
///
/// # JSON-lines output
///
/// One JSON object per line, written directly (no subscriber, no level filter), for log
/// shippers that read JSON lines from a container's stdout or stderr:
///
/// ```json
/// {"timestamp":"2026-11-25T12:50:35.123Z","level":"INFO","target":"tower_telemetry","event":"user.signup","category":"user","event_id":"0199…","properties":{"plan":"pro"},"user_id":"u1","request_id":"…","path":"/signup"}
/// ```
///
/// The keys come in that order: `timestamp` (RFC 3339, UTC, milliseconds), `level` (the
/// configured level, so a line says what it is without a subscriber), `target`, `event`,
/// `category`, `kind` (as in `tracing` records: only when not `custom`, e.g.
/// `"kind":"identify"` for an [identify](crate::identity)),
/// `event_id`, `properties`, then `user_id`, `session_id`, `request_id` and `path` when the
/// context has them. A batch is formatted into one reused buffer and written with one
/// `write_all` and one `flush`.
///
/// The writes are blocking I/O on the destination's delivery worker (a tokio task), as with
/// `tracing-subscriber`'s fmt writer; a slow pipe or disk holds that worker thread. For
/// non-blocking writes pass a writer that hands the bytes to a thread of its own, such as
/// `tracing_appender::non_blocking`'s.
///
/// A failed write is a delivery failure: events whose lines were written in full are
/// delivered, the others fail. A closed reader (`BrokenPipe`, a reset connection) or a writer
/// that takes no more bytes fails them for good, counted in
/// [`DestinationStats::failed`](crate::DestinationStats::failed), instead of being retried;
/// other errors (a full disk) are retried. A line cut short by an error is ended before the
/// next batch, so the fragment is one unparsable line rather than a spoiled one; after a failed
/// `flush` the batch is retried whole, so a buffering writer may repeat lines (at least once).
///
/// # Delivery
///
/// Events are written in batches of up to 100, at the latest 10 ms after the first of a batch
/// (`flush_interval: 10ms`, set in the destination's `delivery` to change it); `flush` and
/// `shutdown` write what is queued at once.
///
/// # Escaping
///
/// Either way an event cannot forge log lines or drive a terminal: control characters (C0,
/// DEL, C1 such as the one-byte CSI), Unicode line separators and bidirectional overrides in
/// names and values are escaped (`\u2028` in JSON lines). In `tracing` records a value that is
/// empty or holds a blank, `=` or a quote (the properties' JSON, always) is written in double
/// quotes with `"` and `\` escaped, so `session_id = "s1 user_id=admin"` reads as one field
/// to logfmt readers: `session_id="s1 user_id=admin"`.
///
/// # Configuration
///
/// ```yaml
/// logging:
///   enabled: true
///   level: INFO        # TRACE, DEBUG, INFO, WARN or ERROR
///   output: stdout     # tracing (default), stdout or stderr; case-insensitive
///   events: [error.*, system.*]
/// ```
///
/// Clones share the writer.
#[derive(Clone, Debug)]
pub struct LoggingDestination {
    level: tracing::Level,
    lines: Option<Arc<JsonLines>>,
}

impl Default for LoggingDestination {
    fn default() -> Self {
        LoggingDestination::new(tracing::Level::INFO)
    }
}

/// Where a configured logging destination writes (`output:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Tracing,
    Stdout,
    Stderr,
}

/// An `output:` value, case-insensitive.
pub(crate) fn parse_output(s: &str) -> Option<Output> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tracing" => Some(Output::Tracing),
        "stdout" => Some(Output::Stdout),
        "stderr" => Some(Output::Stderr),
        _ => None,
    }
}

impl LoggingDestination {
    /// `tracing` records at `level`. (`Default` is `INFO`.)
    pub fn new(level: tracing::Level) -> Self {
        LoggingDestination { level, lines: None }
    }

    /// Writes JSON lines to `writer` instead of `tracing` records, one `write_all` and one
    /// `flush` per batch. Defaults to `tracing` records. Pass `std::io::stdout()` or
    /// `std::io::stderr()` for the process's streams.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use tower_telemetry::{Telemetry, track, destination::LoggingDestination};
    ///
    /// /// Collects what is written, to look at it below.
    /// #[derive(Clone, Default)]
    /// struct Captured(Arc<Mutex<Vec<u8>>>);
    ///
    /// impl Write for Captured {
    ///     fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
    ///         self.0.lock().unwrap().extend_from_slice(buf);
    ///         Ok(buf.len())
    ///     }
    ///     fn flush(&mut self) -> std::io::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let captured = Captured::default();
    /// let telemetry = Telemetry::builder()
    ///     .destination("logging", LoggingDestination::default().with_writer(captured.clone()))
    ///     .build()
    ///     .unwrap();
    /// track!(&telemetry => "user.signup", plan = "pro");
    /// telemetry.flush(Duration::from_secs(5)).await;
    ///
    /// let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    /// let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    /// assert_eq!(line["event"], "user.signup");
    /// assert_eq!(line["level"], "INFO");
    /// assert_eq!(line["properties"]["plan"], "pro");
    /// # }
    /// ```
    pub fn with_writer(self, writer: impl Write + Send + 'static) -> Self {
        self.lines_to("writer", Box::new(writer))
    }

    fn lines_to(mut self, label: &'static str, writer: Box<dyn Write + Send>) -> Self {
        self.lines = Some(JsonLines::new(label, writer));
        self
    }

    /// The level it logs at (and names in JSON lines).
    pub fn level(&self) -> tracing::Level {
        self.level
    }

    /// Whether it writes JSON lines (to a writer) rather than `tracing` records.
    pub fn writes_json_lines(&self) -> bool {
        self.lines.is_some()
    }

    /// Builds one from its configuration: `level` (default `INFO`) and `output` (`tracing`,
    /// `stdout` or `stderr`, default `tracing`).
    pub fn from_settings(settings: &Settings) -> Result<Self, Vec<ConfigError>> {
        let mut errors = settings.unknown_keys(&["level", "output"]);
        let (level, output) = read_settings(settings, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let d = LoggingDestination::new(level);
        Ok(match output {
            Output::Tracing => d,
            Output::Stdout => d.lines_to("stdout", Box::new(std::io::stdout())),
            Output::Stderr => d.lines_to("stderr", Box::new(std::io::stderr())),
        })
    }
}

/// The one copy of the `level` and `output` rules: what [`LoggingDestination::from_settings`]
/// builds from, and what a parsed file is checked with (through [`CheckSettings`]).
fn read_settings(settings: &Settings, errors: &mut Vec<ConfigError>) -> (tracing::Level, Output) {
    const LEVEL: &str = "a log level (one of TRACE, DEBUG, INFO, WARN, WARNING, ERROR)";
    const OUTPUT: &str = "a log output (one of tracing, stdout, stderr)";
    let level = read(settings, "level", LEVEL, parse_level, errors);
    let output = read(settings, "output", OUTPUT, parse_output, errors);
    (
        level.unwrap_or(tracing::Level::INFO),
        output.unwrap_or(Output::Tracing),
    )
}

/// `key` parsed by `parse`, if present; `expected` says what it should be when it is not.
fn read<T>(
    settings: &Settings,
    key: &str,
    expected: &str,
    parse: fn(&str) -> Option<T>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = settings.get(key)?;
    if let Some(parsed) = value.as_str().and_then(parse) {
        return Some(parsed);
    }
    let unknown = value.as_str().map_or(String::new(), |s| {
        format!("unknown {key} `{}`; ", crate::diag::Escaped(s))
    });
    errors.push(settings.error(
        key,
        format!(
            "{unknown}expected {expected}, found {}",
            describe_value(value)
        ),
    ));
    None
}

impl CheckSettings for BuiltinKinds {
    fn check(kind: &str, settings: &Settings) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        // The only built-in kind whose values are checked before it is built. (The other
        // kinds' checks need the whole set of their settings, and run when they are built.)
        if kind == "logging" {
            read_settings(settings, &mut errors);
        }
        errors
    }
}

/// A log level name, case-insensitive (`WARNING` is `WARN`).
pub(crate) fn parse_level(s: &str) -> Option<tracing::Level> {
    match s.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(tracing::Level::TRACE),
        "DEBUG" => Some(tracing::Level::DEBUG),
        "INFO" => Some(tracing::Level::INFO),
        "WARN" | "WARNING" => Some(tracing::Level::WARN),
        "ERROR" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

/// An optional context field: absent fields are left out of the log record.
fn opt(s: Option<&str>) -> Option<tracing::field::DisplayValue<Quoted<'_>>> {
    s.map(|s| tracing::field::display(Quoted(s)))
}

/// The `kind` field: absent (not recorded) for a plain tracked event. Shown with `Display`
/// (`kind=identify`): the names are plain words.
fn kind(e: &Event) -> Option<tracing::field::DisplayValue<&'static str>> {
    (e.kind() != EventKind::Custom).then(|| tracing::field::display(e.kind().as_str()))
}

macro_rules! log_at {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            tracing::Level::TRACE => tracing::trace!($($rest)*),
            tracing::Level::DEBUG => tracing::debug!($($rest)*),
            tracing::Level::INFO => tracing::info!($($rest)*),
            tracing::Level::WARN => tracing::warn!($($rest)*),
            tracing::Level::ERROR => tracing::error!($($rest)*),
        }
    };
}

impl LoggingDestination {
    fn log(&self, e: &Event, json: &mut Vec<u8>) {
        // serde_json escapes C0 controls inside strings; DEL, C1 controls (a one-byte CSI) and
        // line separators it leaves as they are, so the JSON goes through `Escaped` too.
        json.clear();
        if serde_json::to_writer(&mut *json, e.properties()).is_err() {
            json.clear();
        }
        let properties = Quoted(std::str::from_utf8(json).unwrap_or_default());
        let ctx = e.context();
        log_at!(
            self.level,
            target: "tower_telemetry",
            event = %Quoted(e.name()),
            category = %Quoted(e.category().as_str()),
            kind = kind(e),
            event_id = %e.id(),
            properties = %properties,
            user_id = opt(ctx.user_id()),
            session_id = opt(ctx.session_id()),
            request_id = opt(ctx.request_id()),
            path = opt(ctx.path()),
            "telemetry event"
        );
    }
}

impl Destination for LoggingDestination {
    fn name(&self) -> &str {
        "logging"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let result = match &self.lines {
            Some(lines) => lines.write_batch(self.level, batch),
            None => {
                // One buffer for the batch's property JSON.
                let mut json = Vec::with_capacity(256);
                for e in batch {
                    self.log(e, &mut json);
                }
                Ok(())
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        // Lines are out within 10 ms, and under load a batch fills before its timer fires:
        // with 1 ms, 45 000 events a second made ~1 000 part-filled batches and timer
        // wake-ups a second, about 1 % of a small server's throughput.
        DeliveryConfig::default().with_flush_interval(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs() {
        assert_eq!(parse_output("STDOUT"), Some(Output::Stdout));
        assert_eq!(parse_output(" stderr "), Some(Output::Stderr));
        assert_eq!(parse_output("Tracing"), Some(Output::Tracing));
        assert_eq!(parse_output("file"), None);
    }

    /// What a `tracing` subscriber writes for `event`, as a plain line.
    fn record_of(event: &Event) -> String {
        #[derive(Clone, Default)]
        struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            LoggingDestination::default().log(event, &mut Vec::new());
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_record_has_a_kind_field_unless_the_event_is_custom() {
        use crate::event::EventKind;
        let custom = record_of(&Event::new("user.signup", Default::default()));
        assert!(custom.contains("category=user event_id="), "{custom}");
        assert!(!custom.contains("kind="), "{custom}");
        for kind in [
            EventKind::PageView,
            EventKind::Identify,
            EventKind::Alias,
            EventKind::Group,
        ] {
            let line = record_of(&Event::new("user.signup", Default::default()).with_kind(kind));
            let expected = format!("category=user kind={kind} event_id=");
            assert!(line.contains(&expected), "{line}");
        }
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("info"), Some(tracing::Level::INFO));
        assert_eq!(parse_level("WARNING"), Some(tracing::Level::WARN));
        assert_eq!(parse_level("LOUD"), None);
    }
}
