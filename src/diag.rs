//! Diagnostics shared across the crate: text made safe to log, and warnings that repeat at
//! most every few seconds.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Displays a string with control characters (newlines, ANSI escapes, C1 controls such as the
/// one-character CSI), Unicode line separators and bidirectional overrides escaped, so it can
/// neither forge a log line nor drive a terminal.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

/// Whether `c` is shown escaped by [`Escaped`].
pub(crate) fn needs_escape(c: char) -> bool {
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

/// A warning that is logged at once the first time, then at most every 10 s with the count
/// since the last one.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedWarning {
    warned: AtomicBool,
    last_ms: AtomicU64,
    since: AtomicU64,
}

const WARN_EVERY_MS: u64 = 10_000;

fn coarse_now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl RateLimitedWarning {
    /// Records one occurrence; returns the count to report when a warning is due.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.hit_at(coarse_now_ms())
    }

    fn hit_at(&self, now: u64) -> Option<u64> {
        let since = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.warned.swap(true, Ordering::Relaxed) {
            self.last_ms.store(now, Ordering::Relaxed);
            self.since.fetch_sub(since, Ordering::Relaxed);
            return Some(since);
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.since.swap(0, Ordering::Relaxed));
        }
        None
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
    fn warns_first_then_rate_limits() {
        let w = RateLimitedWarning::default();
        assert_eq!(w.hit_at(1_000), Some(1));
        assert_eq!(w.hit_at(1_001), None);
        assert_eq!(w.hit_at(10_999), None);
        // Ten seconds after the last warning: one summary with the count since.
        assert_eq!(w.hit_at(11_000), Some(3));
        assert_eq!(w.hit_at(11_001), None);
        assert_eq!(w.hit_at(21_001), Some(2));
    }
}
