//! Validation primitives: typed readers over the YAML tree that report what was expected,
//! where, and what was found.

use std::time::Duration;

use super::parse::{parse_duration, parse_size};
use super::yaml::{Entry, Node, NodeValue, Typed, describe, join, shown};
use super::{ConfigError, ConfigErrorKind};

/// The largest `max_event_size` / `max_string_length` accepted: 16 MiB.
const MAX_SIZE_LIMIT: u64 = 16 << 20;

/// What a list of globs matches, for validation.
#[derive(Clone, Copy)]
pub(super) enum GlobKind {
    Event,
    Path,
    Property,
}

pub(super) struct Check {
    pub(super) errors: Vec<ConfigError>,
}

/// "unknown key `x`; expected one of: ..." with a suggestion when one is close.
pub(super) fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let mut message = format!(
        "unknown key `{}`; expected one of: {}",
        shown(key),
        known.join(", ")
    );
    if let Some(close) = known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
    {
        message.push_str(&format!(" (did you mean `{}`?)", close.1));
    }
    message
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate().take(64) {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Check {
    /// An [`Invalid`](ConfigErrorKind::Invalid) value at `path`.
    pub(super) fn error(
        &mut self,
        path: impl Into<String>,
        line: usize,
        message: impl Into<String>,
    ) {
        self.error_of(ConfigErrorKind::Invalid, path, line, message);
    }

    pub(super) fn error_of(
        &mut self,
        kind: ConfigErrorKind,
        path: impl Into<String>,
        line: usize,
        message: impl Into<String>,
    ) {
        self.errors
            .push(ConfigError::new(path, Some(line), message).with_kind(kind));
    }

    /// The scalar of a node; `None` (with an error unless the value is broken) otherwise.
    pub(super) fn scalar<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        line: usize,
        expected: &str,
    ) -> Option<Typed<'n>> {
        match &node.value {
            NodeValue::Scalar(s) if s.broken => None,
            NodeValue::Scalar(s) => match s.typed() {
                Typed::Null => {
                    self.error(path, line, format!("expected {expected}, found nothing"));
                    None
                }
                typed => Some(typed),
            },
            _ => {
                self.error(
                    path,
                    line,
                    format!("expected {expected}, found {}", describe(node)),
                );
                None
            }
        }
    }

    pub(super) fn mismatch(&mut self, node: &Node, path: &str, line: usize, expected: &str) {
        self.error(
            path,
            line,
            format!("expected {expected}, found {}", describe(node)),
        );
    }

    /// A mapping's entries; nothing (`key:` alone) is an empty mapping.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        line: usize,
        expected: &str,
    ) -> Option<&'n [Entry]> {
        match &node.value {
            NodeValue::Map(entries) => Some(entries),
            NodeValue::Scalar(s) if s.broken => None,
            NodeValue::Scalar(s) if matches!(s.typed(), Typed::Null) => Some(&[]),
            _ => {
                self.mismatch(node, path, line, expected);
                None
            }
        }
    }

    pub(super) fn bool(&mut self, e: &Entry, path: &str) -> Option<bool> {
        const EXPECTED: &str = "true or false";
        match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Bool(b) => Some(b),
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                None
            }
        }
    }

    pub(super) fn fraction(&mut self, e: &Entry, path: &str) -> Option<f64> {
        const EXPECTED: &str = "a number from 0 to 1";
        let value = match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Int(i) => i as f64,
            Typed::Float(f) => f,
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                return None;
            }
        };
        if (0.0..=1.0).contains(&value) {
            Some(value)
        } else {
            self.mismatch(&e.value, path, e.line, EXPECTED);
            None
        }
    }

    /// An integer from 1 to `max`.
    pub(super) fn positive(&mut self, e: &Entry, path: &str, max: u64) -> Option<u64> {
        const EXPECTED: &str = "a whole number of at least 1";
        match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Int(i) if (1..=i128::from(max)).contains(&i) => Some(i as u64),
            Typed::Int(i) if i > 0 => {
                self.mismatch(
                    &e.value,
                    path,
                    e.line,
                    &format!("a whole number of at most {max}"),
                );
                None
            }
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                None
            }
        }
    }

    pub(super) fn duration(&mut self, e: &Entry, path: &str, allow_zero: bool) -> Option<Duration> {
        const EXPECTED: &str =
            "a duration such as `250ms`, `1s`, `1.5s`, `2m` or a number of seconds";
        let parsed = match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Int(i) => u64::try_from(i).map(Duration::from_secs).map_err(|_| ()),
            Typed::Float(f) if f >= 0.0 => Duration::try_from_secs_f64(f).map_err(|_| ()),
            Typed::Str(s) => parse_duration(s).ok_or(()),
            _ => Err(()),
        };
        match parsed {
            Ok(d) if allow_zero || !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(
                    path,
                    e.line,
                    "expected a duration greater than zero, found zero",
                );
                None
            }
            Err(()) => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                None
            }
        }
    }

    pub(super) fn string<'n>(
        &mut self,
        e: &'n Entry,
        path: &str,
        expected: &str,
    ) -> Option<&'n str> {
        match self.scalar(&e.value, path, e.line, expected)? {
            Typed::Str(s) => Some(s),
            _ => {
                self.mismatch(&e.value, path, e.line, expected);
                None
            }
        }
    }

    pub(super) fn globs(&mut self, e: &Entry, path: &str, kind: GlobKind) -> Option<Vec<String>> {
        let (expected, item_expected) = match kind {
            GlobKind::Event => ("a list of event name globs", "an event name glob"),
            GlobKind::Path => ("a list of path globs", "a path glob"),
            GlobKind::Property => ("a list of property name globs", "a property name glob"),
        };
        let items = match &e.value.value {
            NodeValue::Seq(items) => items,
            NodeValue::Scalar(s) if s.broken => return None,
            _ => {
                self.mismatch(&e.value, path, e.line, expected);
                return None;
            }
        };
        let mut globs = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let pattern = match &item.value {
                NodeValue::Scalar(s) if s.broken => None,
                NodeValue::Scalar(s) => match s.typed() {
                    Typed::Str(t) => Some(t),
                    _ => {
                        self.mismatch(item, &item_path, item.line, item_expected);
                        None
                    }
                },
                _ => {
                    self.mismatch(item, &item_path, item.line, item_expected);
                    None
                }
            };
            let Some(pattern) = pattern else {
                ok = false;
                continue;
            };
            let valid = match kind {
                GlobKind::Event | GlobKind::Property => crate::glob::validate_glob(pattern),
                GlobKind::Path => validate_path_glob(pattern),
            };
            match valid {
                Ok(()) => globs.push(pattern.to_owned()),
                Err(why) => {
                    ok = false;
                    self.error(
                        item_path,
                        item.line,
                        format!("invalid glob `{}`: {why}", shown(pattern)),
                    );
                }
            }
        }
        ok.then_some(globs)
    }

    /// Entries of a section whose keys are all known; unknown keys are reported.
    pub(super) fn known<'n>(
        &mut self,
        entries: &'n [Entry],
        path: &str,
        known: &[&str],
    ) -> Vec<(&'n Entry, String)> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let key_path = join(path, &e.key);
            if known.contains(&e.key.as_str()) {
                out.push((e, key_path));
            } else {
                self.error_of(
                    ConfigErrorKind::UnknownKey,
                    key_path,
                    e.line,
                    unknown_key_message(&e.key, known),
                );
            }
        }
        out
    }

    /// A list of property keys: non-empty strings.
    pub(super) fn keys(&mut self, e: &Entry, path: &str) -> Option<Vec<String>> {
        const EXPECTED: &str = "a list of property keys";
        let items = match &e.value.value {
            NodeValue::Seq(items) => items,
            NodeValue::Scalar(s) if s.broken => return None,
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                return None;
            }
        };
        let mut keys = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match &item.value {
                NodeValue::Scalar(s) if s.broken => ok = false,
                NodeValue::Scalar(s) => match s.typed() {
                    Typed::Str(k) if !k.trim().is_empty() => keys.push(k.trim().to_owned()),
                    Typed::Str(_) => {
                        ok = false;
                        self.error(
                            item_path,
                            item.line,
                            "expected a property key, found an empty string",
                        );
                    }
                    _ => {
                        ok = false;
                        self.mismatch(item, &item_path, item.line, "a property key");
                    }
                },
                _ => {
                    ok = false;
                    self.mismatch(item, &item_path, item.line, "a property key");
                }
            }
        }
        ok.then_some(keys)
    }

    /// A size in bytes: a whole number, or with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`); at
    /// least 1 byte and at most 16 MiB.
    pub(super) fn size(&mut self, e: &Entry, path: &str) -> Option<usize> {
        const EXPECTED: &str =
            "a size such as `8192`, `8KiB` or `1MiB` (at least 1 byte, at most 16 MiB)";
        let n = match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Int(i) => u64::try_from(i).ok(),
            Typed::Str(s) => parse_size(s),
            _ => None,
        };
        match n {
            Some(n) if (1..=MAX_SIZE_LIMIT).contains(&n) => Some(n as usize),
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                None
            }
        }
    }
}

/// A path glob: not empty, no blanks or control characters.
fn validate_path_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty pattern".to_owned());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "unsupported character {c:?}; path globs use `*` and `?`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::schema::TELEMETRY_KEYS;
    use super::*;

    #[test]
    fn edit_distance_suggests_close_keys() {
        assert_eq!(edit_distance("rate", "rate"), 0);
        assert_eq!(edit_distance("ratio", "rate"), 2);
        assert!(unknown_key_message("enabeld", TELEMETRY_KEYS).contains("did you mean `enabled`"));
        assert!(!unknown_key_message("zzzzzz", TELEMETRY_KEYS).contains("did you mean"));
    }
}
