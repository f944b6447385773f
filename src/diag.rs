//! Diagnostics shared across the crate: text made safe to log ([`Escaped`], the one escape
//! helper for every value the crate writes into its own log records; [`Quoted`] for the
//! logging destination's `tracing` fields), URL passwords kept out of logs, errors and `Debug`
//! ([`mask_userinfo`], [`Masked`]), and warnings that repeat at most every few seconds.

use std::borrow::Cow;
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

/// Displays a string as [`Escaped`] does, in double quotes (`"` and `\\` inside escaped
/// with a backslash) when it is empty or contains a blank, `=` or a quote, so a logfmt reader
/// cannot read part of a value as another field (`session_id="s1 user_id=admin"`).
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let plain = !s.is_empty()
            && !s
                .bytes()
                .any(|b| matches!(b, b' ' | b'=' | b'"' | b'\'' | b'\\' | b'\t'));
        if plain {
            return Escaped(s).fmt(f);
        }
        f.write_str("\"")?;
        let mut rest = s;
        while let Some(i) = rest.find(['"', '\\']) {
            Escaped(&rest[..i]).fmt(f)?;
            f.write_str("\\")?;
            f.write_str(&rest[i..=i])?;
            rest = &rest[i + 1..];
        }
        Escaped(rest).fmt(f)?;
        f.write_str("\"")
    }
}

/// `text` with the userinfo of every URL in it masked: the password of `scheme://user:pass@`
/// becomes `***` (`nats://telemetry:***@host`), and a userinfo without a password (a token,
/// `nats://tok@host`) becomes `***` whole. A string without `://` that looks like one address
/// (`user:pass@host:4222`, which NATS accepts) is masked the same way. Borrowed when nothing
/// is masked.
pub(crate) fn mask_userinfo(text: &str) -> Cow<'_, str> {
    // Where a URL written in text ends: a blank, a quote, or the next URL.
    fn token_end(s: &str) -> usize {
        let end = s
            .find(|c: char| matches!(c, '`' | '"' | '\'' | '<' | '>') || c.is_whitespace())
            .unwrap_or(s.len());
        s[..end].find("://").map_or(end, |next| {
            // Back to the start of the next URL's scheme.
            s[..next]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                .map_or(0, |i| i + 1)
        })
    }
    // Pushes `token` to `out` with its userinfo masked; whether it had one. The userinfo
    // runs to the token's last `@`: a password with an unencoded `/`, `?`, `#` or `@` is
    // masked whole, at the price of masking a path's `@` too.
    fn masked(token: &str, out: &mut String) -> bool {
        let Some(at) = token.rfind('@') else {
            out.push_str(token);
            return false;
        };
        match token[..at].split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            None => out.push_str("***"),
        }
        out.push_str(&token[at..]);
        true
    }
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    if !text.contains("://") && !text.contains(char::is_whitespace) {
        // One address without a scheme (`user:pass@host:4222`).
        changed |= masked(text, &mut out);
        rest = "";
    }
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        let end = start + token_end(&rest[start..]);
        changed |= masked(&rest[start..end], &mut out);
        rest = &rest[end..];
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Displays a string with URL userinfo masked ([`mask_userinfo`]) and then [`Escaped`]: for
/// addresses and for error messages that may quote one.
pub(crate) struct Masked<'a>(pub(crate) &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&mask_userinfo(self.0)).fmt(f)
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
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
    fn quotes_values_a_logfmt_reader_would_split() {
        assert_eq!(Quoted("s1").to_string(), "s1");
        assert_eq!(
            Quoted("s1 user_id=admin").to_string(),
            "\"s1 user_id=admin\""
        );
        assert_eq!(Quoted("a=b").to_string(), "\"a=b\"");
        assert_eq!(Quoted("").to_string(), "\"\"");
        assert_eq!(
            Quoted("say \"hi\" \\ \n").to_string(),
            "\"say \\\"hi\\\" \\\\ \\n\""
        );
        assert_eq!(Quoted("x\u{1b}[2J").to_string(), "x\\u{1b}[2J");
    }

    #[test]
    fn masks_url_userinfo() {
        let m = |s: &str| mask_userinfo(s).into_owned();
        assert_eq!(
            m("nats://telemetry:pw@host:4222"),
            "nats://telemetry:***@host:4222"
        );
        assert_eq!(
            m("https://user:p%40ss@umami.example/x"),
            "https://user:***@umami.example/x"
        );
        // Unencoded `/`, `#` and `@` in a password are masked with it.
        assert_eq!(m("nats://u:a/b#c@d@host"), "nats://u:***@host");
        assert_eq!(m("nats://tok@host"), "nats://***@host");
        assert_eq!(m("telemetry:pw@host:4222"), "telemetry:***@host:4222");
        assert_eq!(m("nats://h1:4222"), "nats://h1:4222");
        assert_eq!(
            m("cannot connect to NATS (nats://a:s1@h1, tls://b:s2@h2): timed out"),
            "cannot connect to NATS (nats://a:***@h1, tls://b:***@h2): timed out"
        );
        assert_eq!(
            m("cannot connect to NATS (nats://a:s1@h1,nats://b:s2@h2)"),
            "cannot connect to NATS (nats://a:***@h1,nats://b:***@h2)"
        );
        assert_eq!(m("user@example.com wrote"), "user@example.com wrote");
        assert!(matches!(mask_userinfo("https://h/a"), Cow::Borrowed(_)));
        assert_eq!(Masked("nats://u:p@h\n").to_string(), "nats://u:***@h\\n");
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
