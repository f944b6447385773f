//! Configuration: the YAML file, environment overrides, and the same settings in code.
//!
//! A [`Config`] is built in code with its builder methods, or parsed from YAML with
//! [`Config::from_yaml_str`], [`Config::from_yaml_str_with_env`] or [`Config::from_yaml_file`].
//! [`Config::apply_env_overrides`] then applies `TELEMETRY_ENABLED` / `TELEMETRY_DEBUG`.
//!
//! ```
//! use std::time::Duration;
//! use tower_telemetry::{Config, DeliveryConfig};
//!
//! let yaml = r#"
//! telemetry:
//!   enabled: true
//!   destinations:
//!     umami:
//!       url: ${UMAMI_URL:-http://127.0.0.1:3000}
//!       website_id: ${UMAMI_WEBSITE_ID}
//!       events: [user.*, generation.*, payment.*]
//!       flush_interval: 250ms
//!     logging:
//!       level: INFO
//!       events: [error.*, system.*]
//!   sampling:
//!     enabled: false
//!     rate: 1.0
//! "#;
//! // `from_yaml_str` reads the process environment; here the variables come from a closure.
//! let env = |name: &str| (name == "UMAMI_WEBSITE_ID").then(|| "b0c5f2a4-0000-4000-8000-000000000000".to_owned());
//! let config = Config::from_yaml_str_with_env(yaml, env).unwrap();
//!
//! let names: Vec<_> = config.destinations().iter().map(|d| d.name()).collect();
//! assert_eq!(names, ["umami", "logging"]);
//! let umami = config.destination_config("umami").unwrap();
//! assert_eq!(umami.settings().get("url").unwrap(), "http://127.0.0.1:3000");
//! assert_eq!(umami.delivery_config(), &DeliveryConfig::default().flush_interval(Duration::from_millis(250)));
//!
//! // Every problem is reported, each with its key path and line.
//! let errors = Config::from_yaml_str_with_env("telemetry:\n  enabled: maybe\n  sampling:\n    rate: 2\n", |_| None)
//!     .unwrap_err();
//! let found: Vec<_> = errors.errors().iter().map(|e| (e.path(), e.line())).collect();
//! assert_eq!(found, [("telemetry.enabled", Some(2)), ("telemetry.sampling.rate", Some(4))]);
//! ```
//!
//! # The file
//!
//! ```yaml
//! telemetry:
//!   enabled: true            # default true; TELEMETRY_ENABLED overrides it
//!   debug: false             # default false; TELEMETRY_DEBUG overrides it
//!   destinations:            # name -> settings, kept in file order
//!     umami:
//!       enabled: true        # default true
//!       type: umami          # the kind; defaults to the name
//!       events: [user.*]     # event globs; absent: every event
//!       sample_rate: 0.5     # 0 to 1, default 1
//!       queue_capacity: 10000
//!       batch_size: 100
//!       flush_interval: 1s   # "250ms", "1s", "1.5s", "2m", "1h", or a number of seconds
//!       concurrency: 4
//!       timeout: 10s
//!       retry: { max_attempts: 5, initial_backoff: 200ms, max_backoff: 30s }
//!       url: https://umami.example.com   # any other key is the kind's own setting
//!   sampling:
//!     enabled: false
//!     rate: 1.0              # 0 to 1
//!     key: request           # event | request | user
//!     always: [error.*]      # never sampled out
//!   requests:                # one event per HTTP request
//!     enabled: false
//!     name: http.request
//!     exclude: [/health]     # path globs
//!   redact:                  # see the `redact` docs (RedactConfig)
//!     enabled: true
//!     keys: [email]          # added to the default list (password, token, cookie, ...)
//!     defaults: true         # false: only `keys`
//!     replacement: "[REDACTED]"
//!   limits:                  # see the `limits` docs (LimitsConfig)
//!     max_properties: 64
//!     max_string_length: 8KiB # a number of bytes, or with B, KB, KiB, MB, MiB
//!     max_depth: 8
//!     max_event_size: 64KiB
//! ```
//!
//! A destination also takes `allow_properties` and `drop_properties`: lists of property name
//! globs that narrow what that destination receives (allow first, then drop).
//!
//! - Values may use `${VAR}` and `${VAR:-default}` (the default is used when `VAR` is unset
//!   or empty; `$${` is a literal `${`). A plain (unquoted) value is typed after substitution,
//!   so `enabled: ${ON:-true}` is a boolean; a quoted one stays a string. Keys are not
//!   substituted.
//! - Unknown keys are errors everywhere except directly inside a destination, where they are
//!   the kind's own settings (checked when the destination is built).
//! - Anchors, aliases and `<<` merge keys work. Plain scalars follow the YAML 1.2 core
//!   schema: `yes`/`no` are strings, not booleans.
//! - An empty section (`sampling:` with nothing after it, or a destination with no keys)
//!   means all defaults.
//! - Limits keep hostile input cheap: at most 1 MiB of YAML, 32 levels of nesting and
//!   100 000 values counting alias expansions; a single document.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, ScanError, Span, StrInput};

use crate::limits::{LimitsConfig, MAX_DEPTH_LIMIT};
use crate::redact::RedactConfig;
use crate::text::Text;

/// Default capacity of a destination's queue, in events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default largest batch handed to a destination.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Default longest wait for a batch to fill before it is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of batches a destination may have in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 1;
/// Default timeout of one delivery attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of delivery attempts, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default first backoff ceiling (full jitter: the wait is uniform in `[0, ceiling]`).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Default largest backoff ceiling.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest server-given `Retry-After` that is honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The whole configuration of a [`Telemetry`](crate::Telemetry) handle.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) enabled: bool,
    pub(crate) debug: bool,
    pub(crate) destinations: Vec<DestinationConfig>,
    pub(crate) sampling: SamplingConfig,
    pub(crate) requests: RequestsConfig,
    pub(crate) redact: RedactConfig,
    pub(crate) limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            debug: false,
            destinations: Vec::new(),
            sampling: SamplingConfig::default(),
            requests: RequestsConfig::default(),
            redact: RedactConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Config {
    /// Enables or disables all tracking. Defaults to `true`; `TELEMETRY_ENABLED` overrides it.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Logs every event with the destinations it was routed to. Defaults to `false`;
    /// `TELEMETRY_DEBUG` overrides it.
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// Adds a destination (or replaces the one of the same name).
    pub fn destination(mut self, destination: DestinationConfig) -> Self {
        self.destinations.retain(|d| d.name != destination.name);
        self.destinations.push(destination);
        self
    }

    /// Sets the global sampling.
    pub fn sampling(mut self, sampling: SamplingConfig) -> Self {
        self.sampling = sampling;
        self
    }

    /// Sets the automatic per-request events.
    pub fn requests(mut self, requests: RequestsConfig) -> Self {
        self.requests = requests;
        self
    }

    /// Sets which property keys are redacted. Defaults to [`RedactConfig::default`]: the
    /// default sensitive keys.
    pub fn redact(mut self, redact: RedactConfig) -> Self {
        self.redact = redact;
        self
    }

    /// Sets what one event may carry. Defaults to [`LimitsConfig::default`].
    pub fn limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// The redaction settings.
    pub fn redact_config(&self) -> &RedactConfig {
        &self.redact
    }

    /// The limits.
    pub fn limits_config(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Whether tracking is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether debug logging is on.
    pub fn is_debug(&self) -> bool {
        self.debug
    }

    /// The destinations, in file order.
    pub fn destinations(&self) -> &[DestinationConfig] {
        &self.destinations
    }

    /// The destination named `name`.
    pub fn destination_config(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// The global sampling settings.
    pub fn sampling_config(&self) -> &SamplingConfig {
        &self.sampling
    }

    /// The automatic request events settings.
    pub fn requests_config(&self) -> &RequestsConfig {
        &self.requests
    }
}

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
    pub fn rate(rate: f64) -> Self {
        SamplingConfig {
            enabled: true,
            rate: rate.clamp(0.0, 1.0),
            ..Self::default()
        }
    }

    /// What decisions are keyed on. Defaults to [`SampleKey::Request`].
    pub fn key(mut self, key: SampleKey) -> Self {
        self.key = key;
        self
    }

    /// Globs of event names that are never sampled out (e.g. `error.*`). Defaults to none.
    pub fn always<I, S>(mut self, globs: I) -> Self
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
    pub fn sample_rate(&self) -> f64 {
        self.rate
    }

    /// The sampling key.
    pub fn sample_key(&self) -> SampleKey {
        self.key
    }

    /// The globs of event names that are never sampled out.
    pub fn always_globs(&self) -> &[String] {
        &self.always
    }
}

/// Automatic per-request events (`telemetry.requests`), emitted by
/// [`TelemetryLayer`](crate::TelemetryLayer).
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
    pub fn name(mut self, name: impl Into<Text>) -> Self {
        self.name = name.into();
        self
    }

    /// Path globs that get no request event (e.g. `/health`). Defaults to none.
    pub fn exclude<I, S>(mut self, globs: I) -> Self
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
    pub fn event_name(&self) -> &str {
        &self.name
    }

    /// The excluded path globs.
    pub fn excluded(&self) -> &[String] {
        &self.exclude
    }
}

/// Retry policy for a destination: attempts and full-jitter exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryConfig {
    /// Attempts in all, the first included (1 = no retry). Defaults to 5.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The first backoff ceiling. Defaults to 200 ms.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// The largest backoff ceiling. Defaults to 30 s.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
}

/// How events are queued and delivered to one destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeliveryConfig {
    pub(crate) queue_capacity: usize,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) concurrency: usize,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryConfig::default(),
        }
    }
}

impl DeliveryConfig {
    /// Events the queue holds before new ones are dropped (and counted). Defaults to 10 000.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// The largest batch. Defaults to 100.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How long a partial batch waits for more events. Defaults to 1 s.
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Batches in flight at once. Defaults to 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Timeout of one delivery attempt. Defaults to 10 s.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The retry policy. Defaults to [`RetryConfig::default`].
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }
}

/// One destination's configuration (`telemetry.destinations.<name>`).
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    pub(crate) name: String,
    pub(crate) kind: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) events: Option<Vec<String>>,
    pub(crate) sample_rate: f64,
    pub(crate) delivery: DeliveryConfig,
    /// Set when `delivery` keys were given explicitly (so kind defaults do not override them).
    pub(crate) delivery_explicit: DeliveryExplicit,
    pub(crate) settings: Settings,
    pub(crate) allow_properties: Option<Vec<String>>,
    pub(crate) drop_properties: Vec<String>,
}

/// Which delivery keys a config gave explicitly.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeliveryExplicit {
    pub(crate) batch_size: bool,
    pub(crate) flush_interval: bool,
    pub(crate) concurrency: bool,
    pub(crate) timeout: bool,
}

impl DestinationConfig {
    /// A destination named `name`, enabled, receiving every event, with default delivery.
    /// Its kind is `name` unless [`kind`](Self::kind) says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        DestinationConfig {
            settings: Settings::new(format!("telemetry.destinations.{name}")),
            name,
            kind: None,
            enabled: true,
            events: None,
            sample_rate: 1.0,
            delivery: DeliveryConfig::default(),
            delivery_explicit: DeliveryExplicit::default(),
            allow_properties: None,
            drop_properties: Vec::new(),
        }
    }

    /// The kind (`logging`, `memory`, `umami`, ...). Defaults to the name.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Enables or disables it. Defaults to `true`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The event globs it receives (`user.*`, `!user.debug.*`). Defaults to every event.
    pub fn events<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events = Some(globs.into_iter().map(Into::into).collect());
        self
    }

    /// The fraction of its events it keeps, on top of global sampling. Defaults to 1.0.
    pub fn sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// Queueing and delivery. Defaults to [`DeliveryConfig::default`] (a kind may choose other
    /// defaults for the keys not given).
    pub fn delivery(mut self, delivery: DeliveryConfig) -> Self {
        self.delivery = delivery;
        self.delivery_explicit = DeliveryExplicit {
            batch_size: true,
            flush_interval: true,
            concurrency: true,
            timeout: true,
        };
        self
    }

    /// Only the top-level properties whose names match one of these globs reach this
    /// destination (exact case; `*` and `?` wildcards). Defaults to every property.
    ///
    /// Applied by the destination's worker just before delivery; other destinations still see
    /// the whole event. Redaction applies before, to every destination.
    ///
    /// ```
    /// use tower_telemetry::DestinationConfig;
    ///
    /// let umami = DestinationConfig::new("umami")
    ///     .allow_properties(["model", "plan", "utm_*"])
    ///     .drop_properties(["utm_id"]);
    /// assert_eq!(umami.allowed_properties().unwrap().len(), 3);
    /// ```
    pub fn allow_properties<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_properties = Some(globs.into_iter().map(Into::into).collect());
        self
    }

    /// Top-level properties whose names match one of these globs never reach this destination
    /// (exact case). Defaults to none. Applied after [`allow_properties`](Self::allow_properties).
    pub fn drop_properties<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.drop_properties = globs.into_iter().map(Into::into).collect();
        self
    }

    /// Its `allow_properties` globs (`None`: every property).
    pub fn allowed_properties(&self) -> Option<&[String]> {
        self.allow_properties.as_deref()
    }

    /// Its `drop_properties` globs.
    pub fn dropped_properties(&self) -> &[String] {
        &self.drop_properties
    }

    /// A kind-specific setting (`level` for logging, `url` for umami, ...).
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.settings.values.insert(key.into(), value.into());
        self
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The destination's kind.
    pub fn kind_name(&self) -> &str {
        self.kind.as_deref().unwrap_or(&self.name)
    }

    /// Whether it is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Its event globs (`None`: every event).
    pub fn event_globs(&self) -> Option<&[String]> {
        self.events.as_deref()
    }

    /// The fraction of its events it keeps, on top of global sampling.
    pub fn sampling_rate(&self) -> f64 {
        self.sample_rate
    }

    /// Its delivery settings.
    pub fn delivery_config(&self) -> &DeliveryConfig {
        &self.delivery
    }

    /// Its kind-specific settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// A destination kind's own settings, with the key path and line of each for error messages.
///
/// Destination kinds read their keys with the typed getters, which fail with a
/// [`ConfigError`] that names the key path and the line.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub(crate) path: String,
    pub(crate) values: serde_json::Map<String, serde_json::Value>,
    pub(crate) lines: HashMap<String, usize>,
}

impl Settings {
    pub(crate) fn new(path: String) -> Self {
        Settings {
            path,
            ..Settings::default()
        }
    }

    /// The key path of the destination, e.g. `telemetry.destinations.umami`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.get(key)
    }

    /// The keys present.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// An error about `key`: its full path, its line when known, and `message`.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: if key.is_empty() {
                self.path.clone()
            } else {
                format!("{}.{key}", self.path)
            },
            line: self.lines.get(key).copied(),
            message: message.into(),
        }
    }

    /// An error for every key not in `allowed`.
    pub fn unknown_keys(&self, allowed: &[&str]) -> Vec<ConfigError> {
        self.values
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                self.error(
                    k,
                    format!("unknown key `{k}`; expected one of: {}", allowed.join(", ")),
                )
            })
            .collect()
    }

    /// `key` as a string, if present.
    pub fn str(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.values.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.error(key, format!("expected a string, found {}", kind_of(other))))
            }
        }
    }

    /// `key` as a boolean, if present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.values.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                key,
                format!("expected true or false, found {}", kind_of(other)),
            )),
        }
    }

    /// `key` as an unsigned integer, if present.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.values.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(self.error(
                key,
                format!("expected a non-negative integer, found {}", kind_of(other)),
            )),
        }
    }

    /// `key` as a nested map of settings, if present.
    pub fn section(&self, key: &str) -> Result<Option<Settings>, ConfigError> {
        match self.values.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Object(map)) => {
                let prefix = format!("{key}.");
                Ok(Some(Settings {
                    path: format!("{}.{key}", self.path),
                    values: map.clone(),
                    lines: self
                        .lines
                        .iter()
                        .filter_map(|(k, l)| k.strip_prefix(&prefix).map(|k| (k.to_owned(), *l)))
                        .collect(),
                }))
            }
            Some(other) => {
                Err(self.error(key, format!("expected a mapping, found {}", kind_of(other))))
            }
        }
    }
}

/// "a string", "a number", ... for error messages.
pub(crate) fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// One problem in a configuration: where (key path, line) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) path: String,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl ConfigError {
    /// An error at `path` (e.g. `telemetry.destinations.logging.level`).
    pub fn new(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// The key path, e.g. `telemetry.sampling.rate`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The 1-based line in the YAML source, when the error came from one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {line}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, in source order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub(crate) errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors { errors: vec![e] }
    }
}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(errors: Vec<ConfigError>) -> Self {
        ConfigErrors { errors }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "invalid telemetry configuration: {one}"),
            many => {
                write!(
                    f,
                    "invalid telemetry configuration ({} errors):",
                    many.len()
                )?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// The largest YAML source accepted, in bytes.
const MAX_YAML_BYTES: usize = 1 << 20;
/// The deepest nesting of lists and mappings accepted.
const MAX_DEPTH: usize = 32;
/// The most values (scalars, lists, mappings) in a document, alias expansions included.
const MAX_NODES: usize = 100_000;

const TELEMETRY_KEYS: &[&str] = &[
    "enabled",
    "debug",
    "destinations",
    "sampling",
    "requests",
    "redact",
    "limits",
];
const REDACT_KEYS: &[&str] = &["enabled", "keys", "defaults", "replacement"];
const LIMITS_KEYS: &[&str] = &[
    "max_properties",
    "max_string_length",
    "max_depth",
    "max_event_size",
];
/// The largest `max_event_size` / `max_string_length` accepted: 16 MiB.
const MAX_SIZE_LIMIT: u64 = 16 << 20;
const SAMPLING_KEYS: &[&str] = &["enabled", "rate", "key", "always"];
const REQUESTS_KEYS: &[&str] = &["enabled", "name", "exclude"];
const RETRY_KEYS: &[&str] = &["max_attempts", "initial_backoff", "max_backoff"];
const LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR"];

impl Config {
    /// Parses YAML; `${VAR}` / `${VAR:-default}` read the process environment.
    ///
    /// Fails with every problem found, in source order, each naming its key path and line.
    /// See the [module documentation](self) for the format.
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigErrors> {
        Self::from_yaml_str_with_env(yaml, |name| std::env::var(name).ok())
    }

    /// Parses YAML, reading `${VAR}` / `${VAR:-default}` through `env` instead of the process
    /// environment (`env` returns `None` for an unset variable).
    ///
    /// ```
    /// use tower_telemetry::Config;
    ///
    /// let yaml = "telemetry:\n  enabled: ${ON:-false}\n";
    /// assert!(!Config::from_yaml_str_with_env(yaml, |_| None).unwrap().is_enabled());
    /// let on = |name: &str| (name == "ON").then(|| "true".to_owned());
    /// assert!(Config::from_yaml_str_with_env(yaml, on).unwrap().is_enabled());
    /// ```
    pub fn from_yaml_str_with_env(
        yaml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let (mut root, mut errors) = load(yaml)?;
        if let Some(root) = &mut root {
            interpolate_tree(root, "", &env, &mut errors);
        }
        let mut check = Check { errors };
        let config = check.root(root.as_ref());
        let mut errors = check.errors;
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| e.line.unwrap_or(0));
            Err(ConfigErrors { errors })
        }
    }

    /// Reads and parses a YAML file, reading `${VAR}` from the process environment.
    ///
    /// A file that cannot be read (missing, unreadable, not UTF-8, larger than 1 MiB) is an
    /// error whose path is the file name.
    pub fn from_yaml_file(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigErrors> {
        use std::io::Read;

        let path = path.as_ref();
        let file_error =
            |message: String| ConfigError::new(path.display().to_string(), None, message);
        let file = std::fs::File::open(path)
            .map_err(|e| file_error(format!("cannot open the file: {e}")))?;
        let mut yaml = String::new();
        file.take(MAX_YAML_BYTES as u64 + 1)
            .read_to_string(&mut yaml)
            .map_err(|e| file_error(format!("cannot read the file: {e}")))?;
        if yaml.len() > MAX_YAML_BYTES {
            return Err(file_error(format!(
                "the file is larger than {MAX_YAML_BYTES} bytes, the most a configuration may be"
            ))
            .into());
        }
        Self::from_yaml_str(&yaml)
    }

    /// Applies `TELEMETRY_ENABLED` and `TELEMETRY_DEBUG`, read through `env`, over `enabled`
    /// and `debug`.
    ///
    /// Accepted values are `true`, `false`, `1`, `0`, `yes` and `no`, in any case, surrounding
    /// blanks ignored; an unset or empty variable changes nothing. Any other value is an error
    /// whose path is the variable's name, and then nothing is changed.
    ///
    /// ```
    /// use tower_telemetry::Config;
    ///
    /// let mut config = Config::default();
    /// config.apply_env_overrides(|name| (name == "TELEMETRY_ENABLED").then(|| "no".to_owned())).unwrap();
    /// assert!(!config.is_enabled());
    ///
    /// let err = config.apply_env_overrides(|_| Some("maybe".to_owned())).unwrap_err();
    /// assert_eq!(err.errors()[0].path(), "TELEMETRY_ENABLED");
    /// ```
    pub fn apply_env_overrides(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut read = |name: &str| {
            let raw = env(name)?;
            let value = raw.trim();
            match value.to_ascii_lowercase().as_str() {
                "" => None,
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => {
                    errors.push(ConfigError::new(
                        name,
                        None,
                        format!(
                            "expected one of true, false, 1, 0, yes, no; found `{}`",
                            shown(value)
                        ),
                    ));
                    None
                }
            }
        };
        let enabled = read("TELEMETRY_ENABLED");
        let debug = read("TELEMETRY_DEBUG");
        if !errors.is_empty() {
            return Err(errors.into());
        }
        if let Some(enabled) = enabled {
            self.enabled = enabled;
        }
        if let Some(debug) = debug {
            self.debug = debug;
        }
        Ok(())
    }
}

// --- The YAML tree -----------------------------------------------------------------------------

/// A YAML value with the (1-based) line it starts on.
#[derive(Clone, Debug)]
struct Node {
    line: usize,
    value: NodeValue,
}

#[derive(Clone, Debug)]
enum NodeValue {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
struct Scalar {
    text: String,
    /// Unquoted (or tagged with a non-string core tag): typed by the YAML 1.2 core schema.
    plain: bool,
    /// Its `${...}` substitution failed (already reported); the value is unusable.
    broken: bool,
}

/// A mapping entry with the line of its key.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    line: usize,
    value: Node,
}

/// A scalar typed by the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug)]
enum Typed<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    fn typed(&self) -> Typed<'_> {
        let t = self.text.as_str();
        if !self.plain {
            return Typed::Str(t);
        }
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Typed::Null,
            "true" | "True" | "TRUE" => return Typed::Bool(true),
            "false" | "False" | "FALSE" => return Typed::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Typed::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Typed::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Typed::Float(f64::NAN),
            _ => {}
        }
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return match t.parse::<i128>() {
                Ok(i) => Typed::Int(i),
                Err(_) => t.parse().map_or(Typed::Str(t), Typed::Float),
            };
        }
        for (prefix, radix) in [("0x", 16), ("0o", 8)] {
            if let Some(n) = t.strip_prefix(prefix)
                && let Ok(i) = u64::from_str_radix(n, radix)
                && !n.starts_with(['+', '-'])
            {
                return Typed::Int(i.into());
            }
        }
        if is_core_float(t) {
            if let Ok(f) = t.parse() {
                return Typed::Float(f);
            }
        }
        Typed::Str(t)
    }
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(t: &str) -> bool {
    fn digits(s: &str) -> (usize, &str) {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n, &s[n..])
    }
    let s = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (int, s) = digits(s);
    let s = match s.strip_prefix('.') {
        Some(rest) => {
            let (frac, rest) = digits(rest);
            if int == 0 && frac == 0 {
                return false;
            }
            rest
        }
        None if int == 0 => return false,
        None => s,
    };
    match s.strip_prefix(['e', 'E']) {
        None => s.is_empty(),
        Some(exp) => {
            let (n, rest) = digits(exp.strip_prefix(['-', '+']).unwrap_or(exp));
            n > 0 && rest.is_empty()
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn or_root(path: &str) -> String {
    if path.is_empty() {
        "telemetry".to_owned()
    } else {
        path.to_owned()
    }
}

/// A value for a message: at most 60 characters, control characters escaped.
fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 60 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a node is, for "found ..." in messages.
fn describe(node: &Node) -> String {
    match &node.value {
        NodeValue::Seq(_) => "a list".to_owned(),
        NodeValue::Map(_) => "a mapping".to_owned(),
        NodeValue::Scalar(s) => match s.typed() {
            Typed::Null => "nothing".to_owned(),
            Typed::Bool(_) => format!("the boolean `{}`", s.text),
            Typed::Int(_) | Typed::Float(_) => format!("the number `{}`", s.text),
            Typed::Str(t) => format!("the string `{}`", shown(t)),
        },
    }
}

// --- Loading: YAML events to a tree --------------------------------------------------------------

fn syntax_error(path: &str, e: &ScanError) -> ConfigError {
    let marker = e.marker();
    ConfigError::new(
        or_root(path),
        Some(marker.line().max(1)),
        format!("invalid YAML at column {}: {}", marker.col() + 1, e.info()),
    )
}

struct Anchored {
    node: Node,
    size: usize,
    height: usize,
}

struct Loader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Anchored>,
    /// Values loaded so far, alias expansions included.
    nodes: usize,
    /// Values copied into `anchors`.
    stored: usize,
    /// Problems that do not stop loading (duplicate keys, ...).
    errors: Vec<ConfigError>,
}

/// Parses `yaml` into a tree. A syntax error (or a limit exceeded) is the only error returned;
/// other problems found while loading are returned with the tree.
fn load(yaml: &str) -> Result<(Option<Node>, Vec<ConfigError>), ConfigError> {
    if yaml.len() > MAX_YAML_BYTES {
        return Err(ConfigError::new(
            "telemetry",
            None,
            format!(
                "the configuration is {} bytes; at most {MAX_YAML_BYTES} are accepted",
                yaml.len()
            ),
        ));
    }
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH + 1;
    options.block_nesting_limit = MAX_DEPTH + 1;
    options.emit_comments = false;
    options.emit_anchor_events = false;
    options.emit_unresolved_aliases = false;
    let mut loader = Loader {
        parser: Parser::new_from_str_with_options(yaml, options),
        anchors: HashMap::new(),
        nodes: 0,
        stored: 0,
        errors: Vec::new(),
    };
    let root = loader.document()?;
    Ok((root, loader.errors))
}

impl<'a> Loader<'a> {
    fn next(&mut self, path: &str) -> Result<(Event<'a>, Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(syntax_error(path, &e)),
            None => Err(ConfigError::new(
                or_root(path),
                None,
                "the YAML ends unexpectedly",
            )),
        }
    }

    fn unexpected(path: &str, span: &Span, what: &str) -> ConfigError {
        ConfigError::new(
            or_root(path),
            Some(span.start.line()),
            format!("invalid YAML: unexpected {what}"),
        )
    }

    fn document(&mut self) -> Result<Option<Node>, ConfigError> {
        let (event, span) = self.next("")?;
        if !matches!(event, Event::StreamStart) {
            return Err(Self::unexpected(
                "",
                &span,
                "content before the stream start",
            ));
        }
        let (event, span) = self.next("")?;
        match event {
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(..) => {}
            _ => {
                return Err(Self::unexpected(
                    "",
                    &span,
                    "content before the document start",
                ));
            }
        }
        let (event, span) = self.next("")?;
        let root = match event {
            Event::DocumentEnd => None,
            event => {
                let root = self.node(event, span, "", 0)?.0;
                let (event, span) = self.next("")?;
                if !matches!(event, Event::DocumentEnd) {
                    return Err(Self::unexpected("", &span, "content after the document"));
                }
                Some(root)
            }
        };
        let (event, span) = self.next("")?;
        match event {
            Event::StreamEnd => Ok(root),
            Event::DocumentStart(..) => Err(ConfigError::new(
                "telemetry",
                Some(span.start.line()),
                "a second YAML document; the configuration must be a single document",
            )),
            _ => Err(Self::unexpected("", &span, "content after the document")),
        }
    }

    fn charge(&mut self, n: usize, path: &str, line: usize) -> Result<(), ConfigError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(ConfigError::new(
                or_root(path),
                Some(line),
                format!(
                    "the configuration has more than {MAX_NODES} values (aliases expanded); it is too large"
                ),
            ));
        }
        Ok(())
    }

    fn check_depth(path: &str, line: usize, depth: usize) -> Result<(), ConfigError> {
        if depth > MAX_DEPTH {
            return Err(ConfigError::new(
                or_root(path),
                Some(line),
                format!(
                    "the configuration nests lists and mappings more than {MAX_DEPTH} levels deep"
                ),
            ));
        }
        Ok(())
    }

    /// Checks a node's YAML tag against its kind (`scalar`, `seq` or `map`): only the core
    /// schema's tags are supported. For a scalar, returns whether it is typed as plain
    /// (`!!str` makes it a string; `!!int` and the other core scalar tags keep the typing).
    fn check_tag(
        &mut self,
        tag: Option<&serde_saphyr::granit_parser::Tag>,
        kind: &str,
        path: &str,
        line: usize,
    ) -> Option<bool> {
        let tag = tag?;
        match (kind, tag.core_suffix()) {
            ("scalar", Some("str")) => Some(false),
            ("scalar", Some("null" | "bool" | "int" | "float")) => Some(true),
            ("seq", Some("seq")) | ("map", Some("map")) => None,
            _ => {
                self.errors.push(ConfigError::new(
                    or_root(path),
                    Some(line),
                    format!("unsupported YAML tag `{}`", shown(&tag.original())),
                ));
                None
            }
        }
    }

    /// Loads the node starting with `event`; returns it and its height.
    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        path: &str,
        depth: usize,
    ) -> Result<(Node, usize), ConfigError> {
        let line = span.start.line();
        Self::check_depth(path, line, depth)?;
        let start = self.nodes;
        self.charge(1, path, line)?;
        let (node, height, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = self
                    .check_tag(tag.as_deref(), "scalar", path, line)
                    .unwrap_or(style == ScalarStyle::Plain);
                let scalar = Scalar {
                    text: text.into_owned(),
                    plain,
                    broken: false,
                };
                (
                    Node {
                        line,
                        value: NodeValue::Scalar(scalar),
                    },
                    0,
                    anchor,
                )
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.check_tag(tag.as_deref(), "seq", path, line);
                let mut items = Vec::new();
                let mut height = 0;
                loop {
                    let (event, span) = self.next(path)?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let item_path = format!("{}[{}]", or_root(path), items.len());
                    let (item, h) = self.node(event, span, &item_path, depth + 1)?;
                    height = height.max(h + 1);
                    items.push(item);
                }
                (
                    Node {
                        line,
                        value: NodeValue::Seq(items),
                    },
                    height,
                    anchor,
                )
            }
            Event::MappingStart(_, anchor, tag) => {
                self.check_tag(tag.as_deref(), "map", path, line);
                let (entries, height) = self.mapping(path, depth)?;
                (
                    Node {
                        line,
                        value: NodeValue::Map(entries),
                    },
                    height,
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(ConfigError::new(
                        or_root(path),
                        Some(line),
                        "invalid YAML: unknown alias",
                    ));
                };
                let (size, height) = (anchored.size, anchored.height);
                Self::check_depth(path, line, depth + height)?;
                self.charge(size, path, line)?;
                let node = self.anchors[&id].node.clone();
                (node, height, 0)
            }
            _ => return Err(Self::unexpected(path, &span, "YAML event")),
        };
        if anchor != 0 {
            // The copy kept for aliases counts too, so nested anchors cannot multiply memory.
            let size = self.nodes - start;
            self.stored = self.stored.saturating_add(size);
            if self.stored > MAX_NODES {
                return Err(ConfigError::new(
                    or_root(path),
                    Some(line),
                    format!(
                        "the configuration's anchors hold more than {MAX_NODES} values; it is too large"
                    ),
                ));
            }
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size,
                    height,
                },
            );
        }
        Ok((node, height))
    }

    /// Loads a mapping's entries (after its start event), resolving `<<` merge keys.
    fn mapping(&mut self, path: &str, depth: usize) -> Result<(Vec<Entry>, usize), ConfigError> {
        let mut entries: Vec<Entry> = Vec::new();
        // (position in `entries`, merged entries)
        let mut merges: Vec<(usize, Vec<Entry>)> = Vec::new();
        let mut height = 0;
        loop {
            let (event, span) = self.next(path)?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let key_line = span.start.line();
            let (key, h) = self.node(event, span, path, depth + 1)?;
            height = height.max(h + 1);
            let key = match key.value {
                NodeValue::Scalar(s) => Some(s),
                _ => {
                    self.errors.push(ConfigError::new(
                        or_root(path),
                        Some(key_line),
                        format!(
                            "a mapping key must be a plain value, found {}",
                            describe(&key)
                        ),
                    ));
                    None
                }
            };
            let key_text = key.as_ref().map_or("?", |k| k.text.as_str());
            let child_path = join(path, key_text);
            let (event, span) = self.next(&child_path)?;
            let (value, h) = self.node(event, span, &child_path, depth + 1)?;
            height = height.max(h + 1);
            let Some(key) = key else { continue };
            if key.plain && key.text == "<<" {
                let maps = match value.value {
                    NodeValue::Map(es) => vec![es],
                    NodeValue::Seq(items)
                        if items.iter().all(|i| matches!(i.value, NodeValue::Map(_))) =>
                    {
                        items
                            .into_iter()
                            .filter_map(|i| match i.value {
                                NodeValue::Map(es) => Some(es),
                                _ => None,
                            })
                            .collect()
                    }
                    _ => {
                        self.errors.push(ConfigError::new(
                            child_path,
                            Some(key_line),
                            "a `<<` merge key needs a mapping or a list of mappings (usually an alias)",
                        ));
                        continue;
                    }
                };
                merges.push((entries.len(), maps.into_iter().flatten().collect()));
                continue;
            }
            if let Some(first) = entries.iter().find(|e| e.key == key.text) {
                self.errors.push(ConfigError::new(
                    child_path,
                    Some(key_line),
                    format!(
                        "duplicate key `{}`; it is already given on line {}",
                        shown(&key.text),
                        first.line
                    ),
                ));
                continue;
            }
            entries.push(Entry {
                key: key.text,
                line: key_line,
                value,
            });
        }
        if !merges.is_empty() {
            // Explicit keys win over merged ones; among merged ones, the first wins.
            let explicit: std::collections::HashSet<String> =
                entries.iter().map(|e| e.key.clone()).collect();
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(entries.len());
            let mut rest = entries.into_iter().enumerate().peekable();
            for (pos, group) in merges {
                while let Some((_, e)) = rest.next_if(|(i, _)| *i < pos) {
                    out.push(e);
                }
                for e in group {
                    if !explicit.contains(&e.key) && seen.insert(e.key.clone()) {
                        out.push(e);
                    }
                }
            }
            out.extend(rest.map(|(_, e)| e));
            entries = out;
        }
        Ok((entries, height))
    }
}

// --- `${VAR}` substitution -----------------------------------------------------------------------

fn interpolate_tree(
    node: &mut Node,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match &mut node.value {
        NodeValue::Scalar(s) => {
            if s.text.contains('$') {
                match interpolate(&s.text, env) {
                    Ok(text) => s.text = text,
                    Err(messages) => {
                        s.broken = true;
                        errors.extend(
                            messages
                                .into_iter()
                                .map(|m| ConfigError::new(or_root(path), Some(node.line), m)),
                        );
                    }
                }
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{}[{i}]", or_root(path)), env, errors);
            }
        }
        NodeValue::Map(entries) => {
            for e in entries {
                interpolate_tree(&mut e.value, &join(path, &e.key), env, errors);
            }
        }
    }
}

/// Substitutes `${VAR}` and `${VAR:-default}` in `text`; `$${` is a literal `${`.
fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            errors.push(format!(
                "unclosed `${{` in `{}`; expected `${{NAME}}` or `${{NAME:-default}}`",
                shown(text)
            ));
            break;
        };
        let body = &body_start[..end];
        rest = &body_start[end + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            errors.push(format!(
                "`${{{}}}` is not a variable reference; expected `${{NAME}}` or `${{NAME:-default}}`, NAME made of letters, digits and `_`",
                shown(body)
            ));
            continue;
        }
        match (env(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => errors.push(format!(
                "environment variable `{name}` is not set and `${{{name}}}` has no default; set it or write `${{{name}:-default}}`"
            )),
        }
    }
    if errors.is_empty() {
        out.push_str(rest);
        Ok(out)
    } else {
        Err(errors)
    }
}

// --- Validation: the tree to a Config ------------------------------------------------------------

/// What a list of globs matches, for validation.
#[derive(Clone, Copy)]
enum GlobKind {
    Event,
    Path,
    Property,
}

struct Check {
    errors: Vec<ConfigError>,
}

/// "unknown key `x`; expected one of: ..." with a suggestion when one is close.
fn unknown_key_message(key: &str, known: &[&str]) -> String {
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
    fn error(&mut self, path: impl Into<String>, line: usize, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(path, Some(line), message));
    }

    /// The scalar of a node; `None` (with an error unless the value is broken) otherwise.
    fn scalar<'n>(
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

    fn mismatch(&mut self, node: &Node, path: &str, line: usize, expected: &str) {
        self.error(
            path,
            line,
            format!("expected {expected}, found {}", describe(node)),
        );
    }

    /// A mapping's entries; nothing (`key:` alone) is an empty mapping.
    fn mapping<'n>(
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

    fn bool(&mut self, e: &Entry, path: &str) -> Option<bool> {
        const EXPECTED: &str = "true or false";
        match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Bool(b) => Some(b),
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                None
            }
        }
    }

    fn fraction(&mut self, e: &Entry, path: &str) -> Option<f64> {
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
    fn positive(&mut self, e: &Entry, path: &str, max: u64) -> Option<u64> {
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

    fn duration(&mut self, e: &Entry, path: &str, allow_zero: bool) -> Option<Duration> {
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

    fn string<'n>(&mut self, e: &'n Entry, path: &str, expected: &str) -> Option<&'n str> {
        match self.scalar(&e.value, path, e.line, expected)? {
            Typed::Str(s) => Some(s),
            _ => {
                self.mismatch(&e.value, path, e.line, expected);
                None
            }
        }
    }

    fn globs(&mut self, e: &Entry, path: &str, kind: GlobKind) -> Option<Vec<String>> {
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
                GlobKind::Event | GlobKind::Property => crate::routing::validate_glob(pattern),
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
    fn known<'n>(
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
                self.error(key_path, e.line, unknown_key_message(&e.key, known));
            }
        }
        out
    }

    fn root(&mut self, root: Option<&Node>) -> Config {
        let mut config = Config::default();
        let Some(root) = root else {
            self.errors.push(ConfigError::new(
                "telemetry",
                None,
                "the configuration is empty; expected a top-level `telemetry:` mapping",
            ));
            return config;
        };
        let NodeValue::Map(entries) = &root.value else {
            self.error(
                "telemetry",
                root.line,
                format!(
                    "expected a mapping with a top-level `telemetry:` key, found {}",
                    describe(root)
                ),
            );
            return config;
        };
        if !entries.iter().any(|e| e.key == "telemetry") {
            // One error rather than one per key: the keys are most likely not indented under it.
            let keys: Vec<String> = entries
                .iter()
                .take(5)
                .map(|e| format!("`{}`", shown(&e.key)))
                .collect();
            self.error(
                "telemetry",
                root.line,
                format!(
                    "missing the top-level `telemetry:` key (the configuration goes under it); found {}",
                    keys.join(", ")
                ),
            );
            return config;
        }
        for e in entries {
            if e.key == "telemetry" {
                self.telemetry(e, &mut config);
            } else {
                self.error(&e.key, e.line, unknown_key_message(&e.key, &["telemetry"]));
            }
        }
        config
    }

    fn telemetry(&mut self, e: &Entry, config: &mut Config) {
        let Some(entries) = self.mapping(&e.value, "telemetry", e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, "telemetry", TELEMETRY_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        config.enabled = b;
                    }
                }
                "debug" => {
                    if let Some(b) = self.bool(e, &path) {
                        config.debug = b;
                    }
                }
                "destinations" => {
                    let expected = "a mapping of destination names to their settings";
                    if let Some(destinations) = self.mapping(&e.value, &path, e.line, expected) {
                        for d in destinations {
                            if let Some(d) = self.destination(d, &path) {
                                config.destinations.push(d);
                            }
                        }
                    }
                }
                "sampling" => self.sampling(e, &path, &mut config.sampling),
                "redact" => self.redact(e, &path, &mut config.redact),
                "limits" => self.limits(e, &path, &mut config.limits),
                _ => self.requests(e, &path, &mut config.requests),
            }
        }
    }

    fn sampling(&mut self, e: &Entry, path: &str, sampling: &mut SamplingConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, SAMPLING_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        sampling.enabled = b;
                    }
                }
                "rate" => {
                    if let Some(r) = self.fraction(e, &path) {
                        sampling.rate = r;
                    }
                }
                "key" => {
                    const EXPECTED: &str = "a sampling key (one of event, request, user)";
                    if let Some(s) = self.string(e, &path, EXPECTED) {
                        match s.trim().to_ascii_lowercase().as_str() {
                            "event" => sampling.key = SampleKey::Event,
                            "request" => sampling.key = SampleKey::Request,
                            "user" => sampling.key = SampleKey::User,
                            _ => self.mismatch(&e.value, &path, e.line, EXPECTED),
                        }
                    }
                }
                _ => {
                    if let Some(globs) = self.globs(e, &path, GlobKind::Event) {
                        sampling.always = globs;
                    }
                }
            }
        }
    }

    fn requests(&mut self, e: &Entry, path: &str, requests: &mut RequestsConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, REQUESTS_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        requests.enabled = b;
                    }
                }
                "name" => {
                    if let Some(name) = self.string(e, &path, "an event name") {
                        match crate::event::validate_name(name) {
                            Ok(()) => requests.name = Text::from(name.to_owned()),
                            Err(why) => self.error(
                                path,
                                e.line,
                                format!("invalid event name `{}`: {why}", shown(name)),
                            ),
                        }
                    }
                }
                _ => {
                    if let Some(globs) = self.globs(e, &path, GlobKind::Path) {
                        requests.exclude = globs;
                    }
                }
            }
        }
    }

    fn destination(&mut self, e: &Entry, parent: &str) -> Option<DestinationConfig> {
        let path = join(parent, &e.key);
        if e.key.is_empty() {
            self.error(&path, e.line, "a destination name must not be empty");
        }
        let entries = self.mapping(
            &e.value,
            &path,
            e.line,
            "a mapping of the destination's settings",
        )?;
        let mut d = DestinationConfig::new(e.key.clone());
        if let Some(t) = entries.iter().find(|t| t.key == "type") {
            let type_path = join(&path, "type");
            if let Some(kind) = self.string(
                t,
                &type_path,
                "a destination kind such as `logging` or `umami`",
            ) {
                if kind.trim().is_empty() {
                    self.error(type_path, t.line, "expected a destination kind such as `logging` or `umami`, found an empty string");
                } else {
                    d.kind = Some(kind.trim().to_owned());
                }
            }
        }
        let is_logging = d.kind_name() == "logging";
        for e in entries {
            let key_path = join(&path, &e.key);
            let path = key_path.as_str();
            let delivery = &mut d.delivery;
            let explicit = &mut d.delivery_explicit;
            match e.key.as_str() {
                "type" => {}
                "enabled" => {
                    if let Some(b) = self.bool(e, path) {
                        d.enabled = b;
                    }
                }
                "events" => d.events = self.globs(e, path, GlobKind::Event),
                "sample_rate" => {
                    if let Some(r) = self.fraction(e, path) {
                        d.sample_rate = r;
                    }
                }
                "queue_capacity" => {
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.queue_capacity = n as usize;
                    }
                }
                "batch_size" => {
                    explicit.batch_size = true;
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.batch_size = n as usize;
                    }
                }
                "concurrency" => {
                    explicit.concurrency = true;
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.concurrency = n as usize;
                    }
                }
                "flush_interval" => {
                    explicit.flush_interval = true;
                    if let Some(t) = self.duration(e, path, true) {
                        delivery.flush_interval = t;
                    }
                }
                "timeout" => {
                    explicit.timeout = true;
                    if let Some(t) = self.duration(e, path, false) {
                        delivery.timeout = t;
                    }
                }
                "retry" => self.retry(e, path, &mut delivery.retry),
                "allow_properties" => {
                    d.allow_properties = self.globs(e, path, GlobKind::Property);
                }
                "drop_properties" => {
                    if let Some(globs) = self.globs(e, path, GlobKind::Property) {
                        d.drop_properties = globs;
                    }
                }
                key => {
                    if is_logging && key == "level" {
                        self.level(e, path);
                    }
                    if is_logging && key == "output" {
                        self.log_output(e, path);
                    }
                    d.settings.lines.insert(key.to_owned(), e.line);
                    let value = to_json(&e.value, key, &mut d.settings.lines);
                    d.settings.values.insert(key.to_owned(), value);
                }
            }
        }
        Some(d)
    }

    fn redact(&mut self, e: &Entry, path: &str, redact: &mut RedactConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, REDACT_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        redact.enabled = b;
                    }
                }
                "defaults" => {
                    if let Some(b) = self.bool(e, &path) {
                        redact.defaults = b;
                    }
                }
                "replacement" => {
                    if let Some(s) = self.string(e, &path, "a replacement text") {
                        redact.replacement = s.to_owned();
                    }
                }
                _ => {
                    if let Some(keys) = self.keys(e, &path) {
                        redact.keys = keys;
                    }
                }
            }
        }
    }

    /// A list of property keys: non-empty strings.
    fn keys(&mut self, e: &Entry, path: &str) -> Option<Vec<String>> {
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

    fn limits(&mut self, e: &Entry, path: &str, limits: &mut LimitsConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, LIMITS_KEYS) {
            match e.key.as_str() {
                "max_properties" => {
                    if let Some(n) = self.positive(e, &path, 10_000) {
                        limits.max_properties = n as usize;
                    }
                }
                "max_depth" => {
                    if let Some(n) = self.positive(e, &path, MAX_DEPTH_LIMIT as u64) {
                        limits.max_depth = n as usize;
                    }
                }
                "max_string_length" => {
                    if let Some(n) = self.size(e, &path) {
                        limits.max_string_length = n;
                    }
                }
                _ => {
                    if let Some(n) = self.size(e, &path) {
                        limits.max_event_size = n;
                    }
                }
            }
        }
    }

    /// A size in bytes: a whole number, or with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`); at
    /// least 1 byte and at most 16 MiB.
    fn size(&mut self, e: &Entry, path: &str) -> Option<usize> {
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

    fn level(&mut self, e: &Entry, path: &str) {
        const EXPECTED: &str = "a log level (one of TRACE, DEBUG, INFO, WARN, WARNING, ERROR)";
        if let Some(level) = self.string(e, path, EXPECTED)
            && !LEVELS.contains(&level.trim().to_ascii_uppercase().as_str())
        {
            self.mismatch(&e.value, path, e.line, EXPECTED);
        }
    }

    fn log_output(&mut self, e: &Entry, path: &str) {
        const EXPECTED: &str = "a log output (one of tracing, stdout, stderr)";
        if let Some(output) = self.string(e, path, EXPECTED)
            && crate::destination::parse_output(output).is_none()
        {
            self.mismatch(&e.value, path, e.line, EXPECTED);
        }
    }

    fn retry(&mut self, e: &Entry, path: &str, retry: &mut RetryConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, RETRY_KEYS) {
            match e.key.as_str() {
                "max_attempts" => {
                    if let Some(n) = self.positive(e, &path, u64::from(u32::MAX)) {
                        retry.max_attempts = n as u32;
                    }
                }
                "initial_backoff" => {
                    if let Some(d) = self.duration(e, &path, true) {
                        retry.initial_backoff = d;
                    }
                }
                _ => {
                    if let Some(d) = self.duration(e, &path, true) {
                        retry.max_backoff = d;
                    }
                }
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

/// `8192`, `8 KiB`, `64KB`, `1MiB` (KB and MB are powers of 10, KiB and MiB of 2).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `250ms`, `1s`, `1.5s`, `2m`, `1h`, or a number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = (s[..split].trim_end(), &s[split..]);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    if let Ok(n) = number.parse::<u64>() {
        let nanos = u128::from(n) * u128::from(nanos_per_unit);
        let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
        return Some(Duration::new(secs, (nanos % 1_000_000_000) as u32));
    }
    let n: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(n * nanos_per_unit as f64 / 1e9).ok()
}

/// A destination setting as JSON; records the lines of nested keys as `a.b`.
fn to_json(node: &Node, prefix: &str, lines: &mut HashMap<String, usize>) -> serde_json::Value {
    use serde_json::Value;
    match &node.value {
        NodeValue::Scalar(s) if s.broken => Value::Null,
        NodeValue::Scalar(s) => match s.typed() {
            Typed::Null => Value::Null,
            Typed::Bool(b) => Value::Bool(b),
            Typed::Int(i) => i64::try_from(i)
                .map(Value::from)
                .or_else(|_| u64::try_from(i).map(Value::from))
                .unwrap_or_else(|_| {
                    serde_json::Number::from_f64(i as f64).map_or(Value::Null, Value::Number)
                }),
            Typed::Float(f) => serde_json::Number::from_f64(f)
                .map_or_else(|| Value::String(s.text.clone()), Value::Number),
            Typed::Str(t) => Value::String(t.to_owned()),
        },
        NodeValue::Seq(items) => Value::Array(
            items
                .iter()
                .map(|i| to_json(i, prefix, &mut HashMap::new()))
                .collect(),
        ),
        NodeValue::Map(entries) => {
            let mut map = serde_json::Map::new();
            for e in entries {
                let key = format!("{prefix}.{}", e.key);
                lines.insert(key.clone(), e.line);
                map.insert(e.key.clone(), to_json(&e.value, &key, lines));
            }
            Value::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        Config::from_yaml_str_with_env(yaml, |_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn scalar(text: &str, plain: bool) -> Scalar {
        Scalar {
            text: text.to_owned(),
            plain,
            broken: false,
        }
    }

    #[test]
    fn explicit_delivery_keys_are_flagged() {
        let config = parse(
            "telemetry:\n  destinations:\n    a:\n      batch_size: 5\n      timeout: 2s\n    b:\n      flush_interval: 1s\n      concurrency: 2\n      queue_capacity: 9\n    c: {}\n",
        );
        let flags = |name: &str| {
            let e = config.destination_config(name).unwrap().delivery_explicit;
            (e.batch_size, e.flush_interval, e.concurrency, e.timeout)
        };
        assert_eq!(flags("a"), (true, false, false, true));
        assert_eq!(flags("b"), (false, true, true, false));
        assert_eq!(flags("c"), (false, false, false, false));
        assert_eq!(
            config
                .destination_config("b")
                .unwrap()
                .delivery
                .queue_capacity,
            9
        );
        assert_eq!(config.destination_config("c").unwrap().kind, None);
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let cases: &[(&str, &str)] = &[
            ("~", "null"),
            ("", "null"),
            ("NULL", "null"),
            ("True", "bool"),
            ("FALSE", "bool"),
            ("yes", "str"),
            ("on", "str"),
            ("12", "int"),
            ("-7", "int"),
            ("+3", "int"),
            ("0x1F", "int"),
            ("0o17", "int"),
            ("0x", "str"),
            ("0x-1", "str"),
            ("1.5", "float"),
            (".5", "float"),
            ("1.", "float"),
            ("1e3", "float"),
            ("-2.5E-3", "float"),
            (".inf", "float"),
            ("-.Inf", "float"),
            (".NaN", "float"),
            ("1e", "str"),
            (".", "str"),
            ("e3", "str"),
            ("inf", "str"),
            ("nan", "str"),
            ("1_000", "str"),
            ("1.2.3", "str"),
            ("99999999999999999999999999999999999999999", "float"),
        ];
        for (text, kind) in cases {
            let got = match scalar(text, true).typed() {
                Typed::Null => "null",
                Typed::Bool(_) => "bool",
                Typed::Int(_) => "int",
                Typed::Float(_) => "float",
                Typed::Str(_) => "str",
            };
            assert_eq!(got, *kind, "{text:?}");
        }
        assert!(matches!(scalar("0x1F", true).typed(), Typed::Int(31)));
        assert!(matches!(scalar("true", false).typed(), Typed::Str("true")));
    }

    #[test]
    fn durations_are_exact() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 2 m "), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in [
            "",
            "ms",
            "1 2s",
            "1S",
            "1.2.3s",
            "-1s",
            "1e3s",
            "1d",
            "99999999999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn interpolation_forms() {
        let env = |name: &str| match name {
            "A" => Some("1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let ok = |text: &str| interpolate(text, &env).unwrap();
        assert_eq!(ok("${A}"), "1");
        assert_eq!(ok("x${A}y${A}"), "x1y1");
        assert_eq!(ok("${B:-d}"), "d");
        assert_eq!(ok("${B:-}"), "");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("${B:-a:-b}"), "a:-b");
        assert_eq!(ok("$A $ ${A}$"), "$A $ 1$");
        assert_eq!(ok("$${A}"), "${A}");
        assert_eq!(
            ok("${A:-${B}}"),
            "1}",
            "no nesting: the default ends at the first `}}`"
        );
        let err = |text: &str| interpolate(text, &env).unwrap_err();
        assert_eq!(err("${B} ${C}").len(), 2);
        assert!(err("${B}")[0].contains("`B` is not set"));
        assert!(err("${A")[0].contains("unclosed"));
        assert!(err("${}")[0].contains("not a variable reference"));
        assert!(err("${1A}")[0].contains("not a variable reference"));
    }

    #[test]
    fn keys_are_not_interpolated_and_quoted_values_stay_strings() {
        let config = Config::from_yaml_str_with_env(
            "telemetry:\n  destinations:\n    m:\n      ${K}: ${V}\n      q: '${V}'\n",
            |name| (name == "V").then(|| "12".to_owned()),
        )
        .unwrap();
        let s = config.destination_config("m").unwrap().settings();
        assert_eq!(s.get("${K}").unwrap(), 12);
        assert_eq!(s.get("q").unwrap(), "12");
    }

    #[test]
    fn merge_keys_give_way_to_explicit_keys() {
        let yaml = "telemetry:\n  destinations:\n    m:\n      batch_size: 5\n      <<: [{ batch_size: 3, concurrency: 2, extra: 1 }, { concurrency: 4, timeout: 9s }]\n      after: 2\n";
        let config = parse(yaml);
        let d = config.destination_config("m").unwrap();
        assert_eq!(d.delivery.batch_size, 5);
        assert_eq!(d.delivery.concurrency, 2);
        assert_eq!(d.delivery.timeout, Duration::from_secs(9));
        let mut keys: Vec<_> = d.settings.keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["after", "extra"]);
    }

    #[test]
    fn nested_setting_lines_are_recorded() {
        let config = parse(
            "telemetry:\n  destinations:\n    umami:\n      forward:\n        a: 1\n        b:\n          c: x\n",
        );
        let s = config.destination_config("umami").unwrap().settings();
        assert_eq!(s.lines.get("forward"), Some(&4));
        assert_eq!(s.lines.get("forward.a"), Some(&5));
        assert_eq!(s.lines.get("forward.b.c"), Some(&7));
        let forward = s.section("forward").unwrap().unwrap();
        assert_eq!(forward.error("b", "x").line(), Some(6));
    }

    #[test]
    fn core_tags_are_supported_and_others_are_errors() {
        let config = parse(
            "telemetry:\n  destinations:\n    m:\n      a: !!str 12\n      b: !!int 12\n      c: !!map {}\n",
        );
        let s = config.destination_config("m").unwrap().settings();
        assert_eq!(s.get("a").unwrap(), "12");
        assert_eq!(s.get("b").unwrap(), 12);
        let err = Config::from_yaml_str_with_env("telemetry:\n  debug: !flag true\n", |_| None)
            .unwrap_err();
        assert_eq!(err.errors()[0].path(), "telemetry.debug");
        assert_eq!(err.errors()[0].line(), Some(2));
        assert!(
            err.errors()[0]
                .message()
                .contains("unsupported YAML tag `!flag`")
        );
    }

    #[test]
    fn edit_distance_suggests_close_keys() {
        assert_eq!(edit_distance("rate", "rate"), 0);
        assert_eq!(edit_distance("ratio", "rate"), 2);
        assert!(unknown_key_message("enabeld", TELEMETRY_KEYS).contains("did you mean `enabled`"));
        assert!(!unknown_key_message("zzzzzz", TELEMETRY_KEYS).contains("did you mean"));
    }
}
