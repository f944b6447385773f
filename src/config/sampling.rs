//! Global sampling and the automatic per-request events.

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
#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub(crate) enabled: bool,
    pub(crate) rate: f64,
    pub(crate) key: SampleKey,
    pub(crate) always: Vec<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            enabled: false,
            rate: 1.0,
            key: SampleKey::Request,
            always: Vec::new(),
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
