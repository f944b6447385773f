//! The `logging` destination: one `tracing` event per telemetry event.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, DeliveryConfig, Settings};
use crate::event::Event;

/// Writes each event to the `tracing` log, target `tower_telemetry`, at a configured level.
///
/// Each log record has the fields `event` (name), `category`, `event_id`, `properties` (JSON),
/// and `user_id`, `session_id`, `request_id`, `path` when the context has them. Control
/// characters in names and values are escaped, so an event cannot forge log lines.
///
/// ```yaml
/// logging:
///   enabled: true
///   level: INFO        # TRACE, DEBUG, INFO, WARN or ERROR
///   events: [error.*, system.*]
/// ```
#[derive(Clone, Debug)]
pub struct LoggingDestination {
    level: tracing::Level,
}

impl Default for LoggingDestination {
    fn default() -> Self {
        LoggingDestination {
            level: tracing::Level::INFO,
        }
    }
}

impl LoggingDestination {
    /// Logs at `level`.
    pub fn new(level: tracing::Level) -> Self {
        LoggingDestination { level }
    }

    /// The level it logs at.
    pub fn level(&self) -> tracing::Level {
        self.level
    }

    /// Builds one from its configuration (`level`, default `INFO`).
    pub fn from_settings(settings: &Settings) -> Result<Self, Vec<ConfigError>> {
        let mut errors = settings.unknown_keys(&["level"]);
        let level = match settings.str("level") {
            Ok(None) => tracing::Level::INFO,
            Ok(Some(s)) => {
                match parse_level(s) {
                    Some(l) => l,
                    None => {
                        errors.push(settings.error(
                        "level",
                        format!("unknown level `{s}`; expected one of TRACE, DEBUG, INFO, WARN, ERROR"),
                    ));
                        tracing::Level::INFO
                    }
                }
            }
            Err(e) => {
                errors.push(e);
                tracing::Level::INFO
            }
        };
        if errors.is_empty() {
            Ok(LoggingDestination { level })
        } else {
            Err(errors)
        }
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

/// Displays a string with control characters (newlines, ANSI escapes, C1 controls such as the
/// one-character CSI), Unicode line separators and bidirectional overrides escaped, so it can
/// neither forge a log line nor drive a terminal.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of safe text in one write (a write per character cost more than the rest of
        // a log record); printable ASCII, nearly all of it, is decided without decoding.
        let s = self.0;
        let bytes = s.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let b = bytes[i];
            if (0x20..0x7f).contains(&b) {
                i += 1;
                continue;
            }
            // A control byte, or the first byte of a multi-byte character: decode it.
            let Some(c) = s[i..].chars().next() else {
                break;
            };
            let next = i + c.len_utf8();
            if needs_escape(c) {
                f.write_str(&s[start..i])?;
                write!(f, "{}", c.escape_default())?;
                start = next;
            }
            i = next;
        }
        f.write_str(&s[start..])
    }
}

/// An optional context field: absent fields are left out of the log record.
fn opt(s: Option<&str>) -> Option<tracing::field::DisplayValue<Escaped<'_>>> {
    s.map(|s| tracing::field::display(Escaped(s)))
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
        let properties = Escaped(std::str::from_utf8(json).unwrap_or_default());
        let ctx = e.context();
        log_at!(
            self.level,
            target: "tower_telemetry",
            event = %Escaped(e.name()),
            category = %Escaped(e.category().as_str()),
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
        // One buffer for the batch's property JSON.
        let mut json = Vec::with_capacity(256);
        for e in batch {
            self.log(e, &mut json);
        }
        Box::pin(async { Ok(()) })
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        // Logging is cheap; a short linger only to keep wake-ups rare under load.
        DeliveryConfig::default().flush_interval(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters() {
        assert_eq!(Escaped("a\nb\u{1b}[31m").to_string(), "a\\nb\\u{1b}[31m");
        assert_eq!(Escaped("plain é").to_string(), "plain é");
        assert_eq!(
            Escaped("a\u{9b}31m\u{7f}\u{2028}\u{202e}").to_string(),
            "a\\u{9b}31m\\u{7f}\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn escaping_in_runs_matches_escaping_each_character() {
        let naive = |s: &str| {
            s.chars()
                .map(|c| {
                    if needs_escape(c) {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>()
        };
        let pieces = [
            "a", "é", "\n", "\u{7f}", "\u{9b}", "\u{2028}", "日本", "\u{202e}", " ", "~",
        ];
        // Every string of up to three pieces.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let s = format!("{a}{b}{c}");
                    assert_eq!(Escaped(&s).to_string(), naive(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("info"), Some(tracing::Level::INFO));
        assert_eq!(parse_level("WARNING"), Some(tracing::Level::WARN));
        assert_eq!(parse_level("LOUD"), None);
    }
}
