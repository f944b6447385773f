//! Redaction: sensitive property values are replaced before any destination sees an event.
//!
//! A key is sensitive when it equals one of the configured keys, ignoring ASCII case and
//! treating `-` and `_` alike (`API-Key` matches `api_key`). Keys are matched exactly, not as
//! substrings, so `max_tokens` is not mistaken for `token`. Matching applies at any depth:
//! top-level properties, keys of nested objects (inside arrays too), and the free-form fields
//! of the event's context.
//!
//! ```
//! use std::time::Duration;
//! use tower_telemetry::{Telemetry, track, config::RedactConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder()
//!     .memory_destination("memory")
//!     .redact(RedactConfig::default().with_keys(["email"]))   // added to the default list
//!     .build()
//!     .unwrap();
//! track!(&telemetry => "user.signup", email = "a@example.com", Password = "hunter2", plan = "pro");
//! telemetry.flush(Duration::from_secs(1)).await;
//!
//! let event = &telemetry.memory("memory").unwrap().events()[0];
//! assert_eq!(event.properties().get("email").unwrap(), "[REDACTED]");
//! assert_eq!(event.properties().get("Password").unwrap(), "[REDACTED]");
//! assert_eq!(event.properties().get("plan").unwrap(), "pro");
//! # }
//! ```
//!
//! In YAML:
//!
//! ```yaml
//! telemetry:
//!   redact:
//!     enabled: true                 # default true
//!     keys: [email, phone]          # added to the default list
//!     defaults: true                # false: only `keys` are redacted
//!     replacement: "[REDACTED]"
//! ```

use crate::value::PropertyValue;

/// The keys redacted by default.
pub const DEFAULT_REDACT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set-cookie",
    "credit_card",
    "card_number",
    "cvv",
    "ssn",
];

/// The default replacement of a redacted value.
pub const DEFAULT_REDACTION: &str = "[REDACTED]";

/// Which property keys are redacted, and with what (`telemetry.redact`).
///
/// Defaults to enabled, with [`DEFAULT_REDACT_KEYS`] and [`DEFAULT_REDACTION`].
///
/// ```
/// use tower_telemetry::config::RedactConfig;
///
/// let r = RedactConfig::default().with_keys(["email"]).with_replacement("***");
/// assert!(r.effective_keys().any(|k| k == "password"));
/// assert!(r.effective_keys().any(|k| k == "email"));
/// let only = RedactConfig::default().without_defaults().with_keys(["email"]);
/// assert_eq!(only.effective_keys().collect::<Vec<_>>(), ["email"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactConfig {
    pub(crate) enabled: bool,
    pub(crate) defaults: bool,
    pub(crate) keys: Vec<String>,
    pub(crate) replacement: String,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            defaults: true,
            keys: Vec::new(),
            replacement: DEFAULT_REDACTION.to_owned(),
        }
    }
}

impl RedactConfig {
    /// Turns redaction on or off. Defaults to on.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Adds keys to redact (to the default list, unless [`without_defaults`](Self::without_defaults)).
    /// Defaults to none beyond [`DEFAULT_REDACT_KEYS`].
    pub fn with_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Redacts only the keys given with [`with_keys`](Self::with_keys), not [`DEFAULT_REDACT_KEYS`].
    pub fn without_defaults(mut self) -> Self {
        self.defaults = false;
        self
    }

    /// What replaces a redacted value. Defaults to [`DEFAULT_REDACTION`].
    pub fn with_replacement(mut self, replacement: impl Into<String>) -> Self {
        self.replacement = replacement.into();
        self
    }

    /// Whether redaction is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The keys added with [`with_keys`](Self::with_keys) (see
    /// [`effective_keys`](Self::effective_keys) for every key redacted).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Whether [`DEFAULT_REDACT_KEYS`] are redacted (unless
    /// [`without_defaults`](Self::without_defaults)).
    pub fn uses_defaults(&self) -> bool {
        self.defaults
    }

    /// Every key that is redacted (defaults first), before case folding.
    pub fn effective_keys(&self) -> impl Iterator<Item = &str> {
        let defaults: &[&str] = if self.defaults {
            DEFAULT_REDACT_KEYS
        } else {
            &[]
        };
        defaults
            .iter()
            .copied()
            .chain(self.keys.iter().map(String::as_str))
    }

    /// The replacement text.
    pub fn replacement(&self) -> &str {
        &self.replacement
    }
}

/// The compiled form: folded keys, with a bit set per key length so most keys are ruled out
/// by one test.
#[derive(Debug)]
pub(crate) struct Redactor {
    /// Folded keys, ordered by length.
    keys: Vec<Box<[u8]>>,
    /// The keys of length bucket `b` (`n` bytes for `n` < 63; 63 and longer in bucket 63) are
    /// `keys[starts[b]..starts[b + 1]]`: a property's key is compared only with the keys of its
    /// own length, usually none or one.
    starts: [u32; BUCKETS + 1],
    replacement: serde_json::Value,
    replacement_value: PropertyValue,
}

impl Redactor {
    pub(crate) fn new(config: &RedactConfig) -> Redactor {
        let mut keys: Vec<Box<[u8]>> = Vec::new();
        if config.enabled {
            for k in config.effective_keys() {
                let folded: Box<[u8]> = k.bytes().map(fold).collect();
                if !folded.is_empty() && !keys.contains(&folded) {
                    keys.push(folded);
                }
            }
        }
        keys.sort_by_key(|k| k.len());
        // Sorted by length, so a bucket starts where the shorter keys end.
        let starts = std::array::from_fn(|b| {
            u32::try_from(keys.partition_point(|k| bucket(k.len()) < b)).unwrap_or(u32::MAX)
        });
        Redactor {
            keys,
            starts,
            replacement: serde_json::Value::String(config.replacement.clone()),
            replacement_value: PropertyValue::from(config.replacement.clone()),
        }
    }

    /// Whether nothing is ever redacted.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is sensitive.
    #[inline]
    pub(crate) fn matches(&self, key: &str) -> bool {
        let b = bucket(key.len());
        let (start, end) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let key = key.as_bytes();
        self.keys
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .any(|k| k.len() == key.len() && k.iter().zip(key).all(|(a, b)| *a == fold(*b)))
    }

    /// The replacement value.
    pub(crate) fn replacement(&self) -> serde_json::Value {
        self.replacement.clone()
    }

    /// The replacement value, as a property.
    pub(crate) fn replacement_value(&self) -> PropertyValue {
        self.replacement_value.clone()
    }

    /// [`redact_nested`](Self::redact_nested) of a property (only arrays and objects can hold
    /// keys).
    pub(crate) fn redact_value(&self, value: &mut PropertyValue, max_depth: usize) -> usize {
        value
            .json_mut()
            .map_or(0, |v| self.redact_nested(v, max_depth))
    }

    /// [`finds_nested`](Self::finds_nested) of a property.
    pub(crate) fn finds_value(&self, value: &PropertyValue, max_depth: usize) -> bool {
        value
            .as_json()
            .is_some_and(|v| self.finds_nested(v, max_depth))
    }

    /// Replaces sensitive values at any depth of `value` (keys of nested objects), visiting at
    /// most `max_depth` levels of containers. Returns how many values were replaced.
    pub(crate) fn redact_nested(&self, value: &mut serde_json::Value, max_depth: usize) -> usize {
        if max_depth == 0 {
            return 0;
        }
        match value {
            serde_json::Value::Object(map) => {
                let mut n = 0;
                for (k, v) in map.iter_mut() {
                    if self.matches(k) {
                        *v = self.replacement();
                        n += 1;
                    } else {
                        n += self.redact_nested(v, max_depth - 1);
                    }
                }
                n
            }
            serde_json::Value::Array(items) => items
                .iter_mut()
                .map(|v| self.redact_nested(v, max_depth - 1))
                .sum(),
            _ => 0,
        }
    }

    /// Whether `value` holds a sensitive key anywhere within `max_depth` levels (no changes).
    pub(crate) fn finds_nested(&self, value: &serde_json::Value, max_depth: usize) -> bool {
        if max_depth == 0 {
            return false;
        }
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(k, v)| self.matches(k) || self.finds_nested(v, max_depth - 1)),
            serde_json::Value::Array(items) => {
                items.iter().any(|v| self.finds_nested(v, max_depth - 1))
            }
            _ => false,
        }
    }
}

#[inline]
fn fold(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Length buckets of [`Redactor`]'s keys.
const BUCKETS: usize = 64;

#[inline]
fn bucket(len: usize) -> usize {
    len.min(BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_folds_ascii_case_and_dashes_only() {
        let r = Redactor::new(&RedactConfig::default());
        for k in [
            "password",
            "PASSWORD",
            "Api-Key",
            "API_KEY",
            "set_cookie",
            "Set-Cookie",
            "ssn",
        ] {
            assert!(r.matches(k), "{k}");
        }
        for k in ["max_tokens", "tokens", "passwords", "", "pässword", "key"] {
            assert!(!r.matches(k), "{k}");
        }
    }

    #[test]
    fn every_key_matches_whatever_its_length_and_only_keys_do() {
        let long = "k".repeat(63);
        let longer = "q".repeat(90);
        let keys = ["a", "bb", "cc", "dd", "eee", long.as_str(), longer.as_str()];
        let r = Redactor::new(&RedactConfig::default().without_defaults().with_keys(keys));
        for k in keys {
            assert!(r.matches(k), "{k}");
            assert!(r.matches(&k.to_uppercase()), "{k}");
        }
        let misses = [
            String::new(),
            "b".into(),
            "bc".into(),
            "ee".into(),
            "eeee".into(),
            "k".repeat(62),
            "k".repeat(64),
            "q".repeat(89),
            "q".repeat(91),
            "k".repeat(90),
        ];
        for k in &misses {
            assert!(!r.matches(k), "{k}");
        }
        assert!(!Redactor::new(&RedactConfig::default().with_enabled(false)).matches("password"));
    }

    #[test]
    fn nested_keys_are_redacted_within_the_depth() {
        let r = Redactor::new(&RedactConfig::default().with_keys(["email"]));
        let mut v = serde_json::json!({
            "user": { "Email": "a@b", "name": "x", "cards": [{ "cvv": 123 }] },
            "token": "t"
        });
        assert_eq!(r.redact_nested(&mut v, 8), 3);
        assert_eq!(
            v,
            serde_json::json!({
                "user": { "Email": "[REDACTED]", "name": "x", "cards": [{ "cvv": "[REDACTED]" }] },
                "token": "[REDACTED]"
            })
        );
    }

    #[test]
    fn disabled_or_without_defaults() {
        assert!(Redactor::new(&RedactConfig::default().with_enabled(false)).is_empty());
        let r = Redactor::new(
            &RedactConfig::default()
                .without_defaults()
                .with_keys(["pin"]),
        );
        assert!(r.matches("PIN"));
        assert!(!r.matches("password"));
    }

    #[test]
    fn long_keys_are_matched_too() {
        let long = "k".repeat(100);
        let r = Redactor::new(&RedactConfig::default().with_keys([long.clone()]));
        assert!(r.matches(&long.to_uppercase()));
        assert!(!r.matches(&"k".repeat(99)));
    }
}
