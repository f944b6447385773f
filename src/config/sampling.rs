//! Global sampling and the automatic per-request events.

use std::fmt;
use std::hash::Hasher;

use crate::text::Text;

/// What a sampling decision is keyed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SampleKey {
    /// Each event on its own.
    Event,
    /// The request id: all events of a request are kept or dropped together. Outside a request,
    /// falls back to `Event`.
    #[default]
    Request,
    /// The user id: all events of a user are kept or dropped together. Without a user id, falls
    /// back to `Request`, then `Event`.
    User,
}

/// Global sampling (`telemetry.sampling`).
///
/// Request- and user-keyed decisions hash the request id or user id with **SipHash-1-3 under a
/// secret key**, so a client that picks its own `x-request-id` cannot pick ids that are always
/// kept or always dropped. The key is drawn at random once per process (the handles of one
/// process agree) unless a fleet that must agree on decisions (a request seen by several
/// services) sets the same [`hash_key`](Self::with_hash_key) everywhere, e.g. from
/// `${TELEMETRY_SAMPLING_KEY}`.
///
/// ```
/// use tower_telemetry::config::{SampleKey, SamplingConfig};
///
/// let s = SamplingConfig::new(0.1)
///     .with_key(SampleKey::Request)
///     .with_hash_key("at least 16 random characters, from a secret store");
/// assert!(s.has_hash_key());
/// assert!(!format!("{s:?}").contains("random characters"));
/// ```
#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub(crate) enabled: bool,
    pub(crate) rate: f64,
    pub(crate) key: SampleKey,
    pub(crate) always: Vec<String>,
    pub(crate) hash_key: Option<HashKey>,
}

/// A configured sampling hash key: the two 64-bit SipHash keys derived from the configured
/// text. Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct HashKey(pub(crate) u64, pub(crate) u64);

impl HashKey {
    /// The key for `text`: its 128-bit SipHash-1-3 under a fixed key (a derivation, not a
    /// secret: the secret is `text`).
    pub(crate) fn derive(text: &[u8]) -> HashKey {
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(
            0x7477_722d_7361_6d70, // "twr-samp"
            0x6c69_6e67_2d6b_6579, // "ling-key"
        );
        h.write(text);
        let k = siphasher::sip128::Hasher128::finish128(&h);
        HashKey(k.h1, k.h2)
    }

    /// The default key: random, drawn once per process, so the handles of one process (a
    /// configuration reload, per-tenant handles) agree, and other processes do not.
    pub(crate) fn process() -> HashKey {
        static KEY: std::sync::OnceLock<HashKey> = std::sync::OnceLock::new();
        *KEY.get_or_init(|| HashKey(rand::random(), rand::random()))
    }

    /// The keyed hash of `s`.
    #[inline]
    pub(crate) fn hash(&self, s: &str) -> u64 {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.0, self.1);
        h.write(s.as_bytes());
        h.finish()
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(***)")
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            enabled: false,
            rate: 1.0,
            key: SampleKey::Request,
            always: Vec::new(),
            hash_key: None,
        }
    }
}

impl SamplingConfig {
    /// Sampling at `rate` (0.0 to 1.0, clamped), enabled.
    pub fn new(rate: f64) -> Self {
        SamplingConfig {
            enabled: true,
            rate: rate.clamp(0.0, 1.0),
            ..Self::default()
        }
    }

    /// What decisions are keyed on. Defaults to [`SampleKey::Request`].
    pub fn with_key(mut self, key: SampleKey) -> Self {
        self.key = key;
        self
    }

    /// Globs of event names that are never sampled out (e.g. `error.*`). Defaults to none.
    pub fn with_always<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.always = globs.into_iter().map(Into::into).collect();
        self
    }

    /// The secret the request- and user-keyed sampling hash is keyed with, for a fleet whose
    /// services must take the same decision for the same id: the same text everywhere (at
    /// least 16 random characters; from `${ENV}` in YAML, `sampling.hash_key`). Defaults to
    /// none: a random key per process, so a client cannot choose ids that are kept or dropped.
    pub fn with_hash_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.hash_key = Some(HashKey::derive(key.as_ref()));
        self
    }

    /// Whether a hash key is configured ([`with_hash_key`](Self::with_hash_key)); it is never
    /// shown.
    pub fn has_hash_key(&self) -> bool {
        self.hash_key.is_some()
    }

    /// Whether sampling is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The fraction of events kept.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The sampling key.
    pub fn key(&self) -> SampleKey {
        self.key
    }

    /// The globs of event names that are never sampled out.
    pub fn always(&self) -> &[String] {
        &self.always
    }
}

/// Automatic per-request events (`telemetry.requests`), emitted by
/// [`TelemetryLayer`](crate::layer::TelemetryLayer).
#[derive(Clone, Debug)]
pub struct RequestsConfig {
    pub(crate) enabled: bool,
    pub(crate) name: Text,
    pub(crate) exclude: Vec<String>,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        RequestsConfig {
            enabled: false,
            name: Text::from_static("http.request"),
            exclude: Vec::new(),
        }
    }
}

impl RequestsConfig {
    /// Request events on, named `http.request`.
    pub fn enabled() -> Self {
        RequestsConfig {
            enabled: true,
            ..Self::default()
        }
    }

    /// The event name. Defaults to `http.request`.
    pub fn with_name(mut self, name: impl Into<Text>) -> Self {
        self.name = name.into();
        self
    }

    /// Path globs that get no request event (e.g. `/health`). Defaults to none.
    pub fn with_exclude<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude = globs.into_iter().map(Into::into).collect();
        self
    }

    /// Whether request events are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The excluded path globs.
    pub fn exclude(&self) -> &[String] {
        &self.exclude
    }
}
