//! Redaction: sensitive values are replaced before any destination sees an event.
//!
//! The rules are documented on [`RedactConfig`].
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
//! track!(&telemetry => "oauth.done", accessToken = "ya29", max_tokens = 512);
//! telemetry.flush(Duration::from_secs(1)).await;
//!
//! let events = telemetry.memory("memory").unwrap().events();
//! assert_eq!(events[0].properties().get("email").unwrap(), "[REDACTED]");
//! assert_eq!(events[0].properties().get("Password").unwrap(), "[REDACTED]");
//! assert_eq!(events[0].properties().get("plan").unwrap(), "pro");
//! assert_eq!(events[1].properties().get("accessToken").unwrap(), "[REDACTED]");
//! assert_eq!(events[1].properties().get("max_tokens").unwrap(), 512);
//! # }
//! ```
//!
//! In YAML:
//!
//! ```yaml
//! telemetry:
//!   redact:
//!     enabled: true                 # default true
//!     keys: [email, "*iban*"]       # added: an exact name, a pattern (whole words)
//!     remove: [pin]                 # taken out of the defaults (name or pattern)
//!     defaults: true                # false: only `keys` are redacted
//!     replacement: "[REDACTED]"
//! ```

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::Context;
use crate::text::Text;
use crate::value::PropertyValue;

/// The patterns redacted by default: a name holding one of them as whole words (after
/// normalisation) is redacted, wherever it is in the name (see [`RedactConfig`]).
pub const DEFAULT_REDACT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "session_key",
    "signing_key",
    "credential",
    "credentials",
    "authorization",
    "auth_code",
    "cookie",
    "credit_card",
    "card_number",
];

/// The exact names redacted by default (the whole normalised name must equal one): short
/// words that are too common inside other names to be patterns.
pub const DEFAULT_REDACT_NAMES: &[&str] = &["otp", "pin", "cvv", "cvc", "ssn", "auth"];

/// Exact names redacted in the parameters of stored URLs only (query string, referrer), on top
/// of the names and patterns above: OAuth codes and signed-URL parts.
pub const DEFAULT_URL_PARAMS: &[&str] = &["code", "sig", "signature", "key", "ticket"];

/// Words that, when they are all that follows a pattern, mark a name as describing a secret
/// rather than holding it (`token_count`, `password_length`, `token_type`, `expires_at`).
pub const METADATA_WORDS: &[&str] = &[
    "count",
    "counts",
    "used",
    "limit",
    "limits",
    "length",
    "len",
    "size",
    "type",
    "kind",
    "id",
    "ids",
    "ttl",
    "expiry",
    "expires",
    "expired",
    "expiration",
    "exp",
    "at",
    "in",
    "set",
    "present",
    "provided",
    "required",
    "enabled",
    "valid",
    "name",
    "names",
    "hint",
    "policy",
    "strength",
    "changed",
    "updated",
    "created",
    "version",
];

/// The default replacement of a redacted value.
pub const DEFAULT_REDACTION: &str = "[REDACTED]";

/// Which names are redacted, and with what (`telemetry.redact`).
///
/// Defaults to enabled, with [`DEFAULT_REDACT_KEYS`] (patterns), [`DEFAULT_REDACT_NAMES`]
/// (exact names), [`DEFAULT_URL_PARAMS`] and [`DEFAULT_REDACTION`]. A key you add is an exact
/// name, or a pattern when written `*word*`.
///
/// **Names are normalised** before they are compared: ASCII case is folded, `-`, `_`, `.` and
/// spaces all separate words, and camelCase is split (`accessToken`, `Access-Token` and
/// `ACCESS_TOKEN` all read `access_token`; `APIKey` reads `api_key`).
///
/// A normalised name is sensitive when:
/// - it equals one of the **exact names** ([`DEFAULT_REDACT_NAMES`], and the `keys` you add
///   that have no `*`), e.g. `otp`, `pin`, `cvv`, `ssn`; or
/// - it contains one of the **patterns** ([`DEFAULT_REDACT_KEYS`], and the `*word*` keys you
///   add) as *whole words*: `token` matches `access_token`, `id_token`, `token`;
///   `api_key` matches `x_api_key`; but `max_tokens` (the word is `tokens`) and `tokenizer`
///   are not matched. A word that merely ends in a pattern of 5 or more letters is matched too
///   (`accesstoken`, `clientsecret`, `xapikey`);
/// - unless every word *after* the match is a metadata word ([`METADATA_WORDS`]: `count`,
///   `used`, `type`, `expires`, `at`, `id`, ...): `token_count`, `token_type`,
///   `refresh_token_expires_at` and `password_length` describe a secret without holding it.
///
/// Matching applies at any depth: top-level properties, keys of nested objects (inside arrays
/// too), and the free-form fields of the event's context; a nested value deeper than the
/// depth limit is dropped, never kept unredacted. The **parameters of the URLs the crate
/// stores** (the context's query string and the referrer, its query and its `#fragment`) are
/// matched the same way, with [`DEFAULT_URL_PARAMS`] on top (`code`, `sig`, ...): a sensitive
/// parameter keeps its name and loses its value (`?code=[REDACTED]&page=2`).
///
/// ```
/// use tower_telemetry::config::RedactConfig;
///
/// let r = RedactConfig::default().with_keys(["email"]).with_replacement("***");
/// assert!(r.effective_keys().any(|k| k == "password"));
/// assert!(r.effective_keys().any(|k| k == "email"));
/// let only = RedactConfig::default().without_defaults().with_keys(["email"]);
/// assert_eq!(only.effective_keys().collect::<Vec<_>>(), ["email"]);
/// // `pin` is no secret in this app (a map pin): taken out of the defaults.
/// let r = RedactConfig::default().with_removed(["pin"]);
/// assert!(!r.effective_keys().any(|k| k == "pin"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactConfig {
    pub(crate) enabled: bool,
    pub(crate) defaults: bool,
    pub(crate) keys: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) replacement: String,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            defaults: true,
            keys: Vec::new(),
            removed: Vec::new(),
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

    /// Adds names to redact (to the defaults, unless [`without_defaults`](Self::without_defaults)):
    /// exact names, or patterns written `*word*` (whole words, see the
    /// rules on [`RedactConfig`]). Defaults to none beyond the defaults.
    pub fn with_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Takes names or patterns out of what is redacted (compared after normalisation, with or
    /// without the `*`s): `with_removed(["pin"])` when `pin` is not a secret in your app.
    /// Defaults to none.
    pub fn with_removed<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.removed.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Redacts only the keys given with [`with_keys`](Self::with_keys), not the defaults
    /// ([`DEFAULT_REDACT_KEYS`], [`DEFAULT_REDACT_NAMES`], [`DEFAULT_URL_PARAMS`]).
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

    /// The names and patterns taken out with [`with_removed`](Self::with_removed).
    pub fn removed(&self) -> &[String] {
        &self.removed
    }

    /// Whether the defaults are redacted (unless [`without_defaults`](Self::without_defaults)).
    pub fn uses_defaults(&self) -> bool {
        self.defaults
    }

    /// Every pattern and name that is redacted in names (defaults first, then the added keys;
    /// without the removed ones), as written (patterns of the defaults without their `*`s).
    pub fn effective_keys(&self) -> impl Iterator<Item = &str> {
        let (patterns, names): (&[&str], &[&str]) = if self.defaults {
            (DEFAULT_REDACT_KEYS, DEFAULT_REDACT_NAMES)
        } else {
            (&[], &[])
        };
        patterns
            .iter()
            .chain(names)
            .copied()
            .chain(self.keys.iter().map(String::as_str))
            .filter(|k| !self.is_removed(k))
    }

    fn is_removed(&self, key: &str) -> bool {
        let norm = |k: &str| normalise(k.trim_matches('*')).into_owned();
        let key = norm(key);
        self.removed.iter().any(|r| norm(r) == key)
    }

    /// The replacement text.
    pub fn replacement(&self) -> &str {
        &self.replacement
    }
}

/// A pattern: whole words of a normalised name, and the same words run together.
#[derive(Debug)]
struct Pattern {
    /// The normalised pattern (`api_key`).
    words: Box<[u8]>,
    /// The words run together (`apikey`), matched as the end of a longer word when at least
    /// 5 bytes long.
    glued: Box<[u8]>,
}

/// The compiled form: normalised exact names and patterns.
#[derive(Debug)]
pub(crate) struct Redactor {
    /// Normalised exact names.
    names: Vec<Box<[u8]>>,
    patterns: Vec<Pattern>,
    /// Normalised exact names for URL parameters only.
    url_names: Vec<Box<[u8]>>,
    replacement: serde_json::Value,
    replacement_value: PropertyValue,
}

impl Redactor {
    pub(crate) fn new(config: &RedactConfig) -> Redactor {
        let mut names: Vec<Box<[u8]>> = Vec::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut url_names: Vec<Box<[u8]>> = Vec::new();
        let mut add_pattern = |p: &str| {
            let words: Box<[u8]> = normalise(p).as_bytes().into();
            if !words.is_empty() && !patterns.iter().any(|q| q.words == words) {
                let glued = words.iter().copied().filter(|b| *b != b'_').collect();
                patterns.push(Pattern { words, glued });
            }
        };
        let add_name = |names: &mut Vec<Box<[u8]>>, n: &str| {
            let n: Box<[u8]> = normalise(n).as_bytes().into();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        };
        if config.enabled {
            if config.defaults {
                for p in DEFAULT_REDACT_KEYS.iter().filter(|k| !config.is_removed(k)) {
                    add_pattern(p);
                }
                for n in DEFAULT_REDACT_NAMES
                    .iter()
                    .filter(|k| !config.is_removed(k))
                {
                    add_name(&mut names, n);
                }
                for n in DEFAULT_URL_PARAMS.iter().filter(|k| !config.is_removed(k)) {
                    add_name(&mut url_names, n);
                }
            }
            for k in config.keys.iter().filter(|k| !config.is_removed(k)) {
                match k.strip_prefix('*').and_then(|k| k.strip_suffix('*')) {
                    Some(p) => add_pattern(p),
                    None => add_name(&mut names, k),
                }
            }
        }
        Redactor {
            names,
            patterns,
            url_names,
            replacement: serde_json::Value::String(config.replacement.clone()),
            replacement_value: PropertyValue::from(config.replacement.clone()),
        }
    }

    /// Whether nothing is ever redacted.
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty() && self.patterns.is_empty() && self.url_names.is_empty()
    }

    /// Whether `key` is sensitive.
    #[inline]
    pub(crate) fn matches(&self, key: &str) -> bool {
        if self.names.is_empty() && self.patterns.is_empty() {
            return false;
        }
        with_normalised(key, |n| self.matches_normalised(n))
    }

    fn matches_normalised(&self, n: &[u8]) -> bool {
        if n.is_empty() {
            return false;
        }
        if self.names.iter().any(|k| **k == *n) {
            return true;
        }
        self.patterns.iter().any(|p| p.matches(n))
    }

    /// Whether a URL parameter named `key` (as written in the URL) is sensitive.
    fn matches_param(&self, key: &str) -> bool {
        let key = percent_decode(key);
        with_normalised(&key, |n| {
            self.matches_normalised(n) || self.url_names.iter().any(|k| **k == *n)
        })
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
    /// most `max_depth` levels of containers; what is nested deeper is dropped (it cannot be
    /// checked). Returns how many values were replaced or dropped.
    pub(crate) fn redact_nested(&self, value: &mut serde_json::Value, max_depth: usize) -> usize {
        if max_depth == 0 {
            return drop_nested(value);
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

    /// Whether `value` holds a sensitive key anywhere within `max_depth` levels, or anything
    /// deeper (which [`redact_nested`](Self::redact_nested) drops). No changes.
    pub(crate) fn finds_nested(&self, value: &serde_json::Value, max_depth: usize) -> bool {
        if max_depth == 0 {
            return is_filled_container(value);
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

    /// `query` (a query string without `?`, or a fragment) with the values of sensitive
    /// parameters replaced; `None` if none is sensitive.
    pub(crate) fn redact_params(&self, query: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let sensitive = |part: &str| {
            let key = part.split_once('=').map_or(part, |(k, _)| k);
            !key.is_empty() && self.matches_param(key)
        };
        if !query.split(['&', ';']).any(sensitive) {
            return None;
        }
        let replacement = self.replacement.as_str().unwrap_or(DEFAULT_REDACTION);
        let mut out = String::with_capacity(query.len());
        let mut rest = query;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let part = &rest[..end];
            match part.split_once('=') {
                Some((k, _)) if sensitive(part) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(replacement);
                }
                _ => out.push_str(part),
            }
            match rest[end..].chars().next() {
                Some(sep) => {
                    out.push(sep);
                    rest = &rest[end + 1..];
                }
                None => break,
            }
        }
        Some(out)
    }

    /// `url` with the sensitive parameters of its query and of its `#fragment` (OAuth's
    /// implicit flow puts tokens there) redacted; `None` if there are none.
    pub(crate) fn redact_url(&self, url: &str) -> Option<String> {
        let (before_fragment, fragment) = match url.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (url, None),
        };
        let (base, query) = match before_fragment.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (before_fragment, None),
        };
        let new_query = query.and_then(|q| self.redact_params(q));
        let new_fragment = fragment.and_then(|f| self.redact_params(f));
        if new_query.is_none() && new_fragment.is_none() {
            return None;
        }
        let mut out = String::with_capacity(url.len() + 16);
        out.push_str(base);
        if let Some(q) = query {
            out.push('?');
            out.push_str(new_query.as_deref().unwrap_or(q));
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(new_fragment.as_deref().unwrap_or(f));
        }
        Some(out)
    }

    /// Whether [`redact_context`](Self::redact_context) would change `ctx`: a sensitive free-form
    /// field (at any depth, or one nested too deep), or a sensitive parameter in the query
    /// string or the referrer.
    pub(crate) fn finds_in_context(&self, ctx: &Context, max_depth: usize) -> bool {
        !self.is_empty()
            && (ctx
                .fields()
                .iter()
                .any(|(k, v)| self.matches(k) || self.finds_value(v, max_depth))
                || ctx.query().is_some_and(|q| self.redact_params(q).is_some())
                || ctx.referrer().is_some_and(|r| self.redact_url(r).is_some()))
    }

    /// Redacts `ctx` in place: its free-form fields, and the parameters of its query string and
    /// referrer. Returns how many values were replaced or dropped.
    pub(crate) fn redact_context(&self, ctx: &mut Context, max_depth: usize) -> usize {
        let mut n = 0;
        if let Some(q) = ctx.query().and_then(|q| self.redact_params(q)) {
            ctx.set_query(Some(Text::from(q)));
            n += 1;
        }
        if let Some(r) = ctx.referrer().and_then(|r| self.redact_url(r)) {
            ctx.set_referrer(Some(Text::from(r)));
            n += 1;
        }
        if ctx.fields().is_empty() {
            return n;
        }
        for (k, v) in ctx.fields_mut().iter_mut() {
            if self.matches(k) {
                *v = self.replacement_value();
                n += 1;
            } else {
                n += self.redact_value(v, max_depth);
            }
        }
        n
    }
}

/// The ids policies tell their cached verdicts apart by (in contexts and `track!` call sites).
static NEXT_POLICY: AtomicU64 = AtomicU64::new(1);

/// The highest policy id: the caches keep a flag above it.
pub(crate) const MAX_POLICY_ID: u64 = (1 << 62) - 1;

/// A fresh policy id: never 0 and never handed out twice. 62 bits take 146 years to run out at
/// a billion handles a second, so the saturation at [`MAX_POLICY_ID`] is never reached (a
/// 16-bit id used to wrap after 65 535 handles and let one handle reuse another's "nothing to
/// redact" verdict).
pub(crate) fn next_policy_id() -> u64 {
    NEXT_POLICY
        .fetch_add(1, Ordering::Relaxed)
        .min(MAX_POLICY_ID)
}

/// Empties a container that is nested too deep to be checked; 1 if there was anything in it.
fn drop_nested(value: &mut serde_json::Value) -> usize {
    if is_filled_container(value) {
        *value = serde_json::Value::Null;
        1
    } else {
        0
    }
}

fn is_filled_container(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(m) => !m.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

impl Pattern {
    /// Whether the normalised name `n` holds this pattern as whole words (or glued at the end of
    /// a longer word), not followed by metadata words only.
    fn matches(&self, n: &[u8]) -> bool {
        let p = &*self.words;
        if n.len() < p.len().min(self.glued.len()) {
            return false;
        }
        let mut from = 0;
        while from + p.len() <= n.len() {
            let Some(at) = n[from..].windows(p.len()).position(|w| w == p) else {
                break;
            };
            let (s, e) = (from + at, from + at + p.len());
            let starts_word = s == 0 || n[s - 1] == b'_';
            let ends_word = e == n.len() || n[e] == b'_';
            if starts_word && ends_word && !metadata_tail(&n[e..]) {
                return true;
            }
            // A glued occurrence: the end of a longer word.
            if !starts_word && ends_word && p == &*self.glued && p.len() >= 5 {
                if !metadata_tail(&n[e..]) {
                    return true;
                }
            }
            from = s + 1;
        }
        // A multi-word pattern glued into one word (`xapikey` for `api_key`).
        if self.glued.len() >= 5 && self.glued.len() != p.len() {
            let g = &*self.glued;
            let mut start = 0;
            for word in n.split(|b| *b == b'_') {
                let end = start + word.len();
                if word.len() >= g.len() && word.ends_with(g) && !metadata_tail(&n[end..]) {
                    return true;
                }
                start = end + 1;
            }
        }
        false
    }
}

/// Whether `tail` (what follows a match: empty, or `_word_word`) is only metadata words.
fn metadata_tail(tail: &[u8]) -> bool {
    !tail.is_empty()
        && tail[1..]
            .split(|b| *b == b'_')
            .all(|w| METADATA_WORDS.iter().any(|m| m.as_bytes() == w))
}

/// Calls `f` with `key` normalised, on the stack for keys up to 96 bytes.
#[inline]
fn with_normalised<R>(key: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    if key.len() <= 96 {
        let mut buf = [0u8; 192];
        let n = normalise_into(key.as_bytes(), &mut buf);
        f(&buf[..n])
    } else {
        f(normalise(key).as_bytes())
    }
}

/// `key` normalised (see [`RedactConfig`]).
pub(crate) fn normalise(key: &str) -> Cow<'_, str> {
    let mut buf = vec![0u8; key.len() * 2];
    let n = normalise_into(key.as_bytes(), &mut buf);
    buf.truncate(n);
    // Only ASCII bytes are changed or inserted, so the text stays UTF-8.
    Cow::Owned(String::from_utf8(buf).unwrap_or_default())
}

/// Writes `key` normalised into `out` (at least twice as long); returns its length.
fn normalise_into(key: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    let mut pending_sep = false;
    for (i, &b) in key.iter().enumerate() {
        if matches!(b, b'-' | b'_' | b'.' | b' ') {
            pending_sep = n > 0;
            continue;
        }
        if b.is_ascii_uppercase() && n > 0 {
            let prev = key[i - 1];
            let next_lower = key.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                pending_sep = true;
            }
        }
        if pending_sep {
            out[n] = b'_';
            n += 1;
            pending_sep = false;
        }
        out[n] = b.to_ascii_lowercase();
        n += 1;
    }
    n
}

/// A URL parameter's name with `%XX` and `+` decoded (so `access%5Ftoken` is seen too).
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
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

    #[test]
    fn the_issues_secret_names_are_caught() {
        let r = Redactor::new(&RedactConfig::default());
        for k in [
            "access_token",
            "refresh_token",
            "id_token",
            "client_secret",
            "new_password",
            "x_api_key",
            "private_key",
            "accessToken",
            "otp",
            "pin",
            "X-Api-Key",
            "APIKey",
            "clientSecret",
            "password_confirmation",
            "accesstoken",
            "xapikey",
            "HTTP_AUTHORIZATION",
            "user.password",
            "sessionKey",
            "aws_credentials",
        ] {
            assert!(r.matches(k), "{k}");
        }
        for k in [
            "max_tokens",
            "token_count",
            "tokens_used",
            "token_type",
            "refresh_token_expires_at",
            "password_length",
            "tokenizer",
            "spin",
            "pinned",
            "plan",
            "keyboard",
            "code",
        ] {
            assert!(!r.matches(k), "{k}");
        }
    }

    #[test]
    fn names_are_normalised() {
        for (k, n) in [
            ("accessToken", "access_token"),
            ("Access-Token", "access_token"),
            ("ACCESS_TOKEN", "access_token"),
            ("APIKey", "api_key"),
            ("x.api--key", "x_api_key"),
            ("_lead_", "lead"),
            ("oauth2Token", "oauth2_token"),
            ("pässWord", "päss_word"),
        ] {
            assert_eq!(normalise(k), n, "{k}");
        }
    }

    #[test]
    fn names_and_patterns_can_be_added_and_removed() {
        let r = Redactor::new(
            &RedactConfig::default()
                .with_keys(["*iban*", "email"])
                .with_removed(["pin", "*token*"]),
        );
        assert!(r.matches("customer_iban"));
        assert!(r.matches("Email"));
        assert!(!r.matches("work_email"), "an exact name is not a pattern");
        assert!(!r.matches("pin"));
        assert!(!r.matches("access_token"));
        assert!(r.matches("client_secret"));
    }

    #[test]
    fn url_parameters_lose_their_values() {
        let r = Redactor::new(&RedactConfig::default());
        assert_eq!(
            r.redact_params("code=abc&page=2").as_deref(),
            Some("code=[REDACTED]&page=2")
        );
        assert_eq!(
            r.redact_params("a=1;access%5Ftoken=x&flag&accessToken=y")
                .as_deref(),
            Some("a=1;access%5Ftoken=[REDACTED]&flag&accessToken=[REDACTED]")
        );
        assert_eq!(r.redact_params("page=2&sort=asc"), None);
        assert_eq!(
            r.redact_url("https://app.example/reset?token=t0k&lang=de#id_token=j.w.t&x=1")
                .as_deref(),
            Some("https://app.example/reset?token=[REDACTED]&lang=de#id_token=[REDACTED]&x=1")
        );
        assert_eq!(r.redact_url("https://app.example/a?page=2#top"), None);
        let off = Redactor::new(&RedactConfig::default().with_enabled(false));
        assert_eq!(off.redact_params("code=abc"), None);
    }

    #[test]
    fn what_is_nested_beyond_the_depth_is_dropped() {
        let r = Redactor::new(&RedactConfig::default());
        let mut v = serde_json::json!({"a": {"b": {"token": "t"}}, "ok": 1});
        assert!(r.finds_nested(&v, 2));
        assert_eq!(r.redact_nested(&mut v, 2), 1);
        assert_eq!(v, serde_json::json!({"a": {"b": null}, "ok": 1}));
        let mut ctx = Context::new().with_field("deep", serde_json::json!({"x": {"y": 1}}));
        assert!(r.finds_in_context(&ctx, 1));
        assert_eq!(r.redact_context(&mut ctx, 1), 1);
        assert_eq!(
            ctx.field("deep").unwrap(),
            &PropertyValue::from(serde_json::json!({"x": null}))
        );
    }

    #[test]
    fn policy_ids_are_never_reused() {
        let first = next_policy_id();
        let mut last = first;
        for _ in 0..70_000 {
            let id = next_policy_id();
            assert!(id > last && id <= MAX_POLICY_ID);
            last = id;
        }
        assert_ne!(first & 0xffff, 0);
        assert!(last - first >= 70_000);
    }

    /// `cargo test --release --lib redact::tests::matching_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn matching_cost() {
        let r = Redactor::new(&RedactConfig::default());
        let keys = [
            "plan",
            "model",
            "steps",
            "user_id",
            "credits_cost",
            "duration_ms",
            "max_tokens",
            "accessToken",
        ];
        const N: usize = 2_000_000;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let mut hits = 0;
            for i in 0..N {
                hits += usize::from(r.matches(std::hint::black_box(keys[i % keys.len()])));
            }
            let ns = t.elapsed().as_nanos() as f64 / N as f64;
            eprintln!("matches: {ns:.1} ns per key ({hits} hits)");
        }
    }
}
