//! JSON-lines output of the logging destination: one JSON object per event, a batch written
//! with one `write` (as far as the writer accepts it) and one `flush`.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use crate::destination::DeliveryError;
use crate::diag::needs_escape;
use crate::event::{Event, EventKind, Rfc3339};

/// Buffers above this are given back after a batch, so one huge batch does not pin its memory.
const KEPT_CAPACITY: usize = 1 << 20;

/// A writer and the buffers reused for every batch. One worker per destination, so the lock is
/// uncontended (with `concurrency` above 1, batches take turns).
pub(super) struct JsonLines {
    label: &'static str,
    state: Mutex<State>,
}

struct State {
    writer: Box<dyn Write + Send>,
    /// The batch's lines.
    buf: Vec<u8>,
    /// A string being escaped (only strings with DEL or non-ASCII text).
    scratch: Vec<u8>,
    /// (index in the batch, end of its line in `buf`), for the events that have a line.
    ends: Vec<(usize, usize)>,
    /// The last write stopped inside a line: the next batch starts with a newline, so the
    /// fragment stays a line of its own instead of spoiling the next one.
    torn: bool,
}

impl fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label)
    }
}

impl JsonLines {
    /// `label` names the writer in errors and `Debug` (`stdout`, `stderr`, `writer`).
    pub(super) fn new(label: &'static str, writer: Box<dyn Write + Send>) -> Arc<Self> {
        Arc::new(JsonLines {
            label,
            state: Mutex::new(State {
                writer,
                buf: Vec::new(),
                scratch: Vec::new(),
                ends: Vec::new(),
                torn: false,
            }),
        })
    }

    /// Formats `batch` into one buffer and writes it. Events whose lines were written in full
    /// are delivered; the others fail with the write's error (see [`classify`]).
    pub(super) fn write_batch(
        &self,
        level: tracing::Level,
        batch: &[Arc<Event>],
    ) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        // A writer that panicked left nothing here that the next batch relies on.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State {
            writer,
            buf,
            scratch,
            ends,
            torn,
        } = &mut *state;
        buf.clear();
        ends.clear();
        if *torn {
            buf.push(b'\n');
        }
        let prefix = buf.len();
        let mut failed = Vec::new();
        let mut clock = Clock::default();
        for (i, e) in batch.iter().enumerate() {
            let start = buf.len();
            match line(buf, scratch, &mut clock, level, e) {
                Ok(()) => ends.push((i, buf.len())),
                Err(why) => {
                    buf.truncate(start);
                    failed.push((i, DeliveryError::permanent(why)));
                }
            }
        }
        let (written, result) = write_all(&mut **writer, buf);
        let result = result.and_then(|()| writer.flush());
        if written >= prefix {
            let boundary = ends
                .iter()
                .rev()
                .map(|&(_, end)| end)
                .find(|&end| end <= written)
                .unwrap_or(prefix);
            *torn = written > boundary;
        }
        let outcome = match result {
            Ok(()) => {
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(DeliveryError::partial(failed))
                }
            }
            Err(e) => {
                // After a complete write only the flush failed: the lines are in the writer's
                // hands, but not known to be out, so they count as not delivered.
                let unwritten: Vec<usize> = ends
                    .iter()
                    .filter(|&&(_, end)| end > written || written == buf.len())
                    .map(|&(i, _)| i)
                    .collect();
                if failed.is_empty() && unwritten.len() == batch.len() {
                    Err(classify(&e, self.label))
                } else {
                    failed.extend(unwritten.into_iter().map(|i| (i, classify(&e, self.label))));
                    failed.sort_unstable_by_key(|&(i, _)| i);
                    Err(DeliveryError::partial(failed))
                }
            }
        };
        buf.shrink_to(KEPT_CAPACITY);
        scratch.shrink_to(KEPT_CAPACITY);
        outcome
    }
}

/// Appends one event's line to `buf`.
fn line(
    buf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    clock: &mut Clock,
    level: tracing::Level,
    e: &Event,
) -> Result<(), String> {
    object(buf, scratch, clock, level, e)
        .map_err(|err| format!("cannot format the event as JSON: {err}"))?;
    buf.push(b'\n');
    Ok(())
}

/// The JSON object, keys in a fixed order, written straight into `buf`: the fixed parts, the
/// time, the id and every string that needs no escaping as bytes, without `fmt` or serde
/// (strings that do need escaping, numbers and nested JSON go through `serde_json`).
///
/// serde_json escapes quotes, backslashes and C0 controls; DEL, C1 controls, line separators
/// and bidi overrides it leaves raw. Those are written as `\uXXXX` too (see [`text`]): all are
/// DEL or non-ASCII, and in JSON they can only be inside strings, where the escape means the
/// same character.
fn object(
    buf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    clock: &mut Clock,
    level: tracing::Level,
    e: &Event,
) -> serde_json::Result<()> {
    buf.extend_from_slice(br#"{"timestamp":"#);
    match clock.rfc3339(e.timestamp()) {
        Some(time) => {
            buf.push(b'"');
            buf.extend_from_slice(&time);
            buf.push(b'"');
        }
        None => serde_json::to_writer(&mut *buf, &Rfc3339(e.timestamp()))?,
    }
    buf.extend_from_slice(br#","level":""#);
    buf.extend_from_slice(level.as_str().as_bytes());
    buf.extend_from_slice(br#"","target":"tower_telemetry","event":"#);
    text(buf, scratch, e.name().as_bytes())?;
    buf.extend_from_slice(br#","category":"#);
    text(buf, scratch, e.category().as_str().as_bytes())?;
    if e.kind() != EventKind::Custom {
        // Page views and identity operations say so; a tracked event, the common case, has
        // no `kind` key. The names are ASCII words: no escaping.
        buf.extend_from_slice(br#","kind":""#);
        buf.extend_from_slice(e.kind().as_str().as_bytes());
        buf.push(b'"');
    }
    buf.extend_from_slice(br#","event_id":""#);
    buf.extend_from_slice(&crate::event::hyphenated(e.id()));
    buf.extend_from_slice(br#"","properties":{"#);
    for (i, (key, value)) in e.properties().iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        text(buf, scratch, key.as_bytes())?;
        buf.push(b':');
        match value.as_str() {
            Some(s) => text(buf, scratch, s.as_bytes())?,
            None => {
                let start = buf.len();
                serde_json::to_writer(&mut *buf, value)?;
                if has_del_or_non_ascii(&buf[start..]) {
                    escape_from(buf, start, scratch)?;
                }
            }
        }
    }
    buf.push(b'}');
    let [user_id, session_id, request_id, path] = e.context().ids_and_path();
    for (key, value) in [
        (&br#","user_id":"#[..], user_id),
        (br#","session_id":"#, session_id),
        (br#","request_id":"#, request_id),
        (br#","path":"#, path),
    ] {
        if let Some(value) = value {
            buf.extend_from_slice(key);
            text(buf, scratch, value.as_bytes())?;
        }
    }
    buf.push(b'}');
    Ok(())
}

/// Writes the UTF-8 string `s` as a JSON string for a line: as [`string`] does, and with the
/// characters [`escape`] escapes written as `\uXXXX`. The usual string, printable ASCII
/// without a quote or backslash, is copied as it is after one pass over its bytes.
fn text(buf: &mut Vec<u8>, scratch: &mut Vec<u8>, s: &[u8]) -> serde_json::Result<()> {
    if is_plain(s) {
        quoted(buf, s);
        return Ok(());
    }
    let start = buf.len();
    string(buf, s)?;
    if has_del_or_non_ascii(s) {
        escape_from(buf, start, scratch)?;
    }
    Ok(())
}

/// Applies [`escape`] to `buf[start..]`, JSON that serde_json wrote.
#[cold]
fn escape_from(buf: &mut Vec<u8>, start: usize, scratch: &mut Vec<u8>) -> serde_json::Result<()> {
    let written = std::str::from_utf8(&buf[start..]).map_err(serde::ser::Error::custom)?;
    scratch.clear();
    escape(written, scratch);
    buf.truncate(start);
    buf.extend_from_slice(scratch);
    Ok(())
}

/// Writes the UTF-8 string `s` as a JSON string, as `serde_json` does: as it is between quotes
/// when nothing in it needs escaping (a quote, a backslash or a C0 control), which is checked
/// eight bytes at a time; else through `serde_json`.
fn string(buf: &mut Vec<u8>, s: &[u8]) -> serde_json::Result<()> {
    if needs_json_escape(s) {
        let text = std::str::from_utf8(s).map_err(serde::ser::Error::custom)?;
        return serde_json::to_writer(&mut *buf, text);
    }
    quoted(buf, s);
    Ok(())
}

/// `s` between quotes, as it is (it needs no escaping).
#[inline]
fn quoted(buf: &mut Vec<u8>, s: &[u8]) {
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(s);
    buf.push(b'"');
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// The high bit of a byte of `w` is set if that byte is `"`, `\\` or below 0x20, and some high
/// bit is set only if some byte is. `(x - ONES * n) & !x & HIGH` is non-zero iff some byte of
/// `x` is below `n` (exact as a yes/no answer for `n` up to 0x80); with `n = 1` on `w ^ c`, iff
/// some byte equals `c`.
#[inline]
fn json_marks(w: u64) -> u64 {
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let (q, b) = (w ^ QUOTES, w ^ BACKSLASHES);
    (w.wrapping_sub(ONES * 0x20) & !w) | (q.wrapping_sub(ONES) & !q) | (b.wrapping_sub(ONES) & !b)
}

/// Whether `marks` sets a high bit in some eight bytes of `bytes` (or, for fewer than eight
/// bytes, whether `byte` holds for one of them): a word at a time, without a branch per word
/// (the strings are short: names, keys, ids).
#[inline]
fn any_marked(bytes: &[u8], marks: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> bool {
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or([b' '; 8]));
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| byte(b));
    }
    let mut words = bytes.chunks_exact(8);
    let mut found = 0;
    for w in words.by_ref() {
        found |= marks(word(w));
    }
    // The last few bytes: the last eight, overlapping words already looked at.
    if !words.remainder().is_empty() {
        found |= marks(word(&bytes[bytes.len() - 8..]));
    }
    found & HIGH != 0
}

/// Whether any byte is `"`, `\\` or below 0x20.
fn needs_json_escape(bytes: &[u8]) -> bool {
    any_marked(bytes, json_marks, |b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Whether every byte is printable ASCII (0x20 to 0x7e) other than `"` and `\\`: neither JSON
/// nor [`escape`] changes such a string. The checks of [`needs_json_escape`] and
/// [`has_del_or_non_ascii`] in one pass.
fn is_plain(bytes: &[u8]) -> bool {
    // Each term is exact as a yes/no answer, so their union is too.
    !any_marked(
        bytes,
        |w| json_marks(w) | w | w.wrapping_add(ONES),
        |b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\',
    )
}

/// The text of the last second formatted, so that a batch's events (mostly within the same
/// second) only write their milliseconds.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    text: [u8; 24],
}

impl Clock {
    /// [`Rfc3339::ascii`] of `t`.
    fn rfc3339(&mut self, t: std::time::SystemTime) -> Option<[u8; 24]> {
        let ms = crate::event::unix_millis(t);
        let second = ms / 1000;
        if self.second != Some(second) {
            self.text = Rfc3339(t).ascii()?;
            self.second = Some(second);
        }
        let ms = ms % 1000;
        let mut out = self.text;
        out[20] = b'0' + (ms / 100) as u8;
        out[21] = b'0' + (ms / 10 % 10) as u8;
        out[22] = b'0' + (ms % 10) as u8;
        Some(out)
    }
}

/// Whether any byte is DEL (0x7f) or not ASCII (0x80 and up): eight bytes at a time (for
/// strings that are not plain, and for nested values serde_json wrote).
fn has_del_or_non_ascii(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    // A byte of 0x7f or more has its high bit set in itself or in itself plus one. A carry out
    // of a byte only comes from 0xff, which is caught by its own high bit, so it can make no
    // false positive.
    let found = words.by_ref().any(|w| {
        let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        (w | w.wrapping_add(ONES)) & HIGH != 0
    });
    found || words.remainder().iter().any(|&b| b >= 0x7f)
}

/// Copies `text` to `out` with every character [`needs_escape`] accepts written as `\uXXXX`
/// (all of them are in the Basic Multilingual Plane, so one escape each).
fn escape(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] < 0x7f {
            i += 1;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let next = i + c.len_utf8();
        if needs_escape(c) {
            out.extend_from_slice(&bytes[start..i]);
            let _ = write!(out, "\\u{:04x}", u32::from(c));
            start = next;
        }
        i = next;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// `Write::write_all`, also telling how many bytes were written before an error.
fn write_all(writer: &mut dyn Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match writer.write(&buf[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// A write error as a delivery error. The reader being gone (a closed pipe: `app | head`, a
/// log shipper that exited) or a writer that cannot take bytes will not get better, so those
/// are permanent: the events are counted as failed at once instead of being retried with
/// backoff while the queue fills. Anything else (a full disk, a would-block writer) is
/// retryable, within the destination's retry policy (`retry.max_elapsed`, `max_attempts`).
fn classify(e: &io::Error, label: &str) -> DeliveryError {
    use io::ErrorKind::*;
    let message = format!("writing JSON lines to {label} failed: {e}");
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | WriteZero
        | PermissionDenied | Unsupported => DeliveryError::permanent(message),
        _ => DeliveryError::retryable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` agrees with `naive` for every byte value at every position of clean strings of
    /// 0 to 19 bytes (words, remainders and overlaps included).
    fn agrees_at_every_position(check: fn(&[u8]) -> bool, naive: fn(&[u8]) -> bool) {
        for len in 0..=19 {
            let clean = vec![b'a'; len];
            assert!(!check(&clean));
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut v = clean.clone();
                    v[at] = byte;
                    assert_eq!(check(&v), naive(&v), "{len} {at} {byte:#x}");
                }
            }
        }
    }

    /// `check` agrees with `naive` for each byte value next to each of `neighbours`, on both
    /// sides, inside a word.
    fn agrees_beside_every_byte(
        check: fn(&[u8]) -> bool,
        naive: fn(&[u8]) -> bool,
        neighbours: &[u8],
    ) {
        for byte in 0..=255u8 {
            for &other in neighbours {
                let mut v = vec![b' '; 16];
                v[6] = other;
                v[7] = byte;
                assert_eq!(check(&v), naive(&v), "{other:#x} {byte:#x}");
                v.swap(6, 7);
                assert_eq!(check(&v), naive(&v), "{byte:#x} {other:#x}");
            }
        }
    }

    #[test]
    fn the_word_check_finds_del_and_non_ascii_at_every_position() {
        let naive = |b: &[u8]| b.iter().any(|&c| c >= 0x7f);
        agrees_at_every_position(has_del_or_non_ascii, naive);
        // The bytes just below and at the edge, and carries between neighbours.
        for pair in [
            [0x7e, 0x7e],
            [0x7e, 0x7f],
            [0xff, 0x00],
            [0xff, 0x7e],
            [0x00, 0xff],
        ] {
            let mut v = vec![b' '; 16];
            v[6..8].copy_from_slice(&pair);
            assert_eq!(has_del_or_non_ascii(&v), naive(&v), "{pair:?}");
        }
    }

    #[test]
    fn the_word_check_finds_what_json_escapes_at_every_position() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        agrees_at_every_position(needs_json_escape, naive);
        // Borrows between neighbours: a low byte next to each byte value.
        agrees_beside_every_byte(needs_json_escape, naive, &[0x00, 0x01, 0x1f, 0x20, 0x21]);
    }

    #[test]
    fn the_plain_check_agrees_with_both_checks_at_every_position() {
        fn naive(b: &[u8]) -> bool {
            b.iter()
                .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
        }
        agrees_at_every_position(|b| !is_plain(b), |b| !naive(b));
        // Borrows and carries between neighbours.
        agrees_beside_every_byte(is_plain, naive, &[0x00, 0x1f, 0x20, 0x7e, 0x7f, 0xff]);
    }

    /// Names, keys and values with what serde_json leaves raw: each is escaped where it is, and
    /// the line still reads back as the event.
    #[test]
    fn every_string_of_a_line_is_escaped_where_it_is() {
        let odd = "a\u{7f}b\u{2028}c\u{202e}d é";
        let event = Event::new(
            "user.\u{2028}signup",
            crate::props! {
                odd => odd,
                "nested" => serde_json::json!({ odd: [odd] }),
                "n" => 1,
            },
        )
        .with_context(crate::Context::new().with_user_id(odd).with_path("/plain"));
        let mut buf = Vec::new();
        let mut clock = Clock::default();
        object(
            &mut buf,
            &mut Vec::new(),
            &mut clock,
            tracing::Level::INFO,
            &event,
        )
        .unwrap();
        let line = String::from_utf8(buf).unwrap();
        for raw in ['\u{7f}', '\u{2028}', '\u{202e}'] {
            assert!(!line.contains(raw), "raw {raw:?} in {line}");
        }
        assert_eq!(line.matches("\\u2028").count(), 6, "{line}");
        assert!(line.contains("d é"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "user.\u{2028}signup");
        assert_eq!(v["properties"][odd], odd);
        assert_eq!(v["properties"]["nested"][odd][0], odd);
        assert_eq!(v["properties"]["n"], 1);
        assert_eq!(v["user_id"], odd);
        assert_eq!(v["path"], "/plain");
    }

    /// Every kind but `custom` is named right after the category; a tracked event's line has
    /// no `kind` key.
    #[test]
    fn a_line_names_the_kind_after_the_category_unless_custom() {
        for kind in [
            EventKind::Custom,
            EventKind::PageView,
            EventKind::Identify,
            EventKind::Alias,
            EventKind::Group,
        ] {
            let event =
                Event::new("user.signup", crate::props! { "plan" => "pro" }).with_kind(kind);
            let mut buf = Vec::new();
            object(
                &mut buf,
                &mut Vec::new(),
                &mut Clock::default(),
                tracing::Level::INFO,
                &event,
            )
            .unwrap();
            let line = String::from_utf8(buf).unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if kind == EventKind::Custom {
                assert!(v.get("kind").is_none(), "{line}");
                assert!(line.contains(r#""category":"user","event_id":"#), "{line}");
            } else {
                assert_eq!(v["kind"], kind.as_str(), "{line}");
                let expected = format!(r#""category":"user","kind":"{kind}","event_id":"#);
                assert!(line.contains(&expected), "{line}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn strings_are_written_exactly_as_serde_json_writes_them(s in "\\PC*|[\"\\\\\\x00-\\x1f\\x7f a-z\u{e9}\u{2028}]{0,40}") {
            let mut buf = Vec::new();
            string(&mut buf, s.as_bytes()).unwrap();
            proptest::prop_assert_eq!(buf, serde_json::to_vec(&s).unwrap());
        }

        #[test]
        fn text_is_serde_json_with_what_it_leaves_raw_escaped(s in "\\PC*|[\"\\\\\\x00-\\x1f\\x7f a-z\u{e9}\u{2028}\u{202e}]{0,40}") {
            let mut buf = Vec::new();
            text(&mut buf, &mut Vec::new(), s.as_bytes()).unwrap();
            let mut expected = Vec::new();
            escape(&serde_json::to_string(&s).unwrap(), &mut expected);
            proptest::prop_assert_eq!(buf, expected);
        }
    }

    #[test]
    fn a_batch_spanning_seconds_gets_each_events_own_time() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut clock = Clock::default();
        let start = 1_764_075_034_000u64;
        // Within a second, across seconds, back in time, the epoch and before it.
        let times = [
            0,
            1,
            999,
            1_000,
            1_001,
            59_999,
            60_000,
            3_599_999,
            86_400_000,
            5,
            123_456_789,
        ]
        .map(|ms| UNIX_EPOCH + Duration::from_millis(start + ms))
        .into_iter()
        .chain([UNIX_EPOCH, UNIX_EPOCH - Duration::from_millis(1500)]);
        for t in times {
            assert_eq!(clock.rfc3339(t), Rfc3339(t).ascii(), "{t:?}");
        }
        // Past the year 9999: no text (the caller writes it through `fmt`).
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(clock.rfc3339(far), None);
    }

    #[test]
    fn escapes_what_serde_json_leaves_raw_and_nothing_else() {
        let mut out = Vec::new();
        escape(
            "a\u{7f}é\u{9b}日\u{2028}\u{2029}\u{202a}\u{202e}\u{2066}\u{2069}\u{a0}",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\u007fé\\u009b日\\u2028\\u2029\\u202a\\u202e\\u2066\\u2069\u{a0}"
        );
    }

    #[test]
    fn a_line_is_exactly_the_event() {
        use std::time::{Duration, UNIX_EPOCH};
        let id = uuid::Uuid::parse_str("0199a7c2-5b1e-7d3f-9a40-1c2d3e4f5a6b").unwrap();
        let event = |at: Duration| {
            Event::new(
                "user.signup",
                crate::props! { "plan" => "pro", "note" => "a \"quote\"" },
            )
            .with_context(
                crate::Context::new()
                    .with_user_id("u1")
                    .with_request_id("r1"),
            )
            .with_timestamp(UNIX_EPOCH + at)
            .with_id(id)
        };
        let line = |level, e: &Event| {
            let mut buf = Vec::new();
            object(&mut buf, &mut Vec::new(), &mut Clock::default(), level, e).unwrap();
            buf
        };
        let at = Duration::from_millis(1_764_075_035_123);
        assert_eq!(
            String::from_utf8(line(tracing::Level::INFO, &event(at))).unwrap(),
            r#"{"timestamp":"2025-11-25T12:50:35.123Z","level":"INFO","target":"tower_telemetry","event":"user.signup","category":"user","event_id":"0199a7c2-5b1e-7d3f-9a40-1c2d3e4f5a6b","properties":{"plan":"pro","note":"a \"quote\""},"user_id":"u1","request_id":"r1"}"#
        );
        // A time past the year 9999 is written all the same.
        let far = Duration::from_secs(253_402_300_800);
        let far: serde_json::Value =
            serde_json::from_slice(&line(tracing::Level::WARN, &event(far))).unwrap();
        assert_eq!(far["timestamp"], "10000-01-01T00:00:00.000Z");
        assert_eq!(far["level"], "WARN");
    }

    #[test]
    fn write_errors_are_classified() {
        let broken = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(!classify(&broken, "stdout").is_retryable());
        assert!(classify(&broken, "stdout").message().contains("stdout"));
        let full = io::Error::other("no space left on device");
        assert!(classify(&full, "writer").is_retryable());
    }

    /// Takes `room` bytes, then fails until given more room.
    #[derive(Clone, Default)]
    struct Cramped(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Cramped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            let (out, room) = &mut *inner;
            if *room == 0 {
                return Err(io::Error::other("full"));
            }
            let n = buf.len().min(*room);
            out.extend_from_slice(&buf[..n]);
            *room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_short_write_delivers_the_whole_lines_and_isolates_the_fragment() {
        let events: Vec<Arc<Event>> = (0..3)
            .map(|i| Arc::new(Event::new(format!("user.e{i}"), Default::default())))
            .collect();
        // Measure one line, then leave room for one and a half.
        let mut one = Vec::new();
        line(
            &mut one,
            &mut Vec::new(),
            &mut Clock::default(),
            tracing::Level::INFO,
            &events[0],
        )
        .unwrap();
        let cramped = Cramped::default();
        cramped.0.lock().unwrap().1 = one.len() + one.len() / 2;
        let lines = JsonLines::new("writer", Box::new(cramped.clone()));
        let err = lines
            .write_batch(tracing::Level::INFO, &events)
            .unwrap_err();
        let items: Vec<usize> = err.items().unwrap().iter().map(|(i, _)| *i).collect();
        assert_eq!(items, [1, 2]);
        assert!(err.is_retryable());

        // The retry of the two unwritten events starts on a fresh line.
        cramped.0.lock().unwrap().1 = usize::MAX;
        lines
            .write_batch(tracing::Level::INFO, &events[1..])
            .unwrap();
        let out = String::from_utf8(cramped.0.lock().unwrap().0.clone()).unwrap();
        let parsed: Vec<Option<String>> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .map(|v| v["event"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(
            parsed,
            [
                Some("user.e0".to_owned()),
                None,
                Some("user.e1".to_owned()),
                Some("user.e2".to_owned())
            ],
            "{out}"
        );
    }
}
