//! Configuration: the YAML file, environment overrides, and the same settings in code.
//!
//! A [`Config`] is built in code with its builder methods, or parsed from YAML with
//! [`Config::from_yaml_str`], [`Config::from_yaml_str_with_env`] or [`Config::from_yaml_file`].
//! [`Config::apply_env_overrides`] then applies `TELEMETRY_ENABLED` / `TELEMETRY_DEBUG`.
//!
//! Every configuration type in this crate ([`Config`], [`DestinationConfig`],
//! [`DeliveryConfig`], [`LimitsConfig`], the destinations' own
//! `UmamiConfig`, `NatsConfig`, ...) works the same way: it starts from `Default` (or `new`),
//! each `with_<field>` method returns it with that field set, and the getter is named after the
//! field (`is_<field>` for a flag): `DeliveryConfig::default().with_batch_size(50).batch_size()`.
//!
//! ```
//! use std::time::Duration;
//! use tower_telemetry::{config::{Config, DeliveryConfig}};
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
//! let umami = config.destination("umami").unwrap();
//! assert_eq!(umami.settings().get("url").unwrap(), "http://127.0.0.1:3000");
//! assert_eq!(umami.delivery(), &DeliveryConfig::default().with_flush_interval(Duration::from_millis(250)));
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
//!       overflow: drop_newest  # or drop_oldest: what a full queue drops
//!       batch_size: 100
//!       flush_interval: 1s   # "250ms", "1s", "1.5s", "2m", "1h", or a number of seconds
//!       concurrency: 4
//!       timeout: 10s
//!       retry: { max_elapsed: 10m, initial_backoff: 200ms, max_backoff: 30s }  # max_attempts: unset
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
//! globs that narrow what that destination receives (allow first, then drop), and `spool:`
//! (feature `spool`): a durable queue on disk, see `SpoolConfig`.
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
//!   100 000 values counting alias expansions; a single document. The work is linear in
//!   the size: a mapping of many keys costs no more than the same keys in small mappings.
//!
//! # Errors
//!
//! Every problem is reported, not only the first, in source order: a [`ConfigErrors`] of
//! [`ConfigError`]s, each with its key path, its line (every error about a key the file
//! gives, or encloses, has one: `telemetry.destinations.umami.url (line 3): missing ...`)
//! and a [`ConfigErrorKind`] to match on. A destination kind's own settings are checked by
//! the kind, through [`Settings`], with the same key paths and lines.

mod check;
mod delivery;
mod destination;
mod document;
mod error;
mod interpolate;
mod kinds;
mod parse;
mod sampling;
mod schema;
mod settings;
#[cfg(feature = "spool")]
mod spool;
mod yaml;

pub use delivery::{
    DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_FLUSH_INTERVAL, DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_ELAPSED, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_QUEUE_MAX_BYTES, DEFAULT_TIMEOUT, DeliveryConfig, MAX_RETRY_AFTER, Overflow,
    RetryConfig,
};
pub use destination::DestinationConfig;
pub(crate) use document::Document;
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors};
#[cfg(feature = "otlp")]
pub(crate) use kinds::EnvSnapshot;
pub(crate) use kinds::{BuiltinKinds, CheckSettings, KindEnv};
pub(crate) use sampling::HashKey;
pub use sampling::{RequestsConfig, SampleKey, SamplingConfig};
pub use settings::Settings;
#[cfg(feature = "spool")]
pub use spool::{DEFAULT_SPOOL_MAX_BYTES, DEFAULT_SPOOL_SYNC_INTERVAL, SpoolConfig, SpoolSync};

pub use crate::glob::validate_glob;
pub use crate::redact::{
    DEFAULT_REDACT_KEYS, DEFAULT_REDACT_NAMES, DEFAULT_REDACTION, DEFAULT_URL_PARAMS,
    METADATA_WORDS, RedactConfig,
};
pub use crate::routing::MAX_DESTINATIONS;
pub(crate) use settings::{describe_value, kind_of};

use crate::limits::LimitsConfig;
use yaml::{MAX_YAML_BYTES, shown};

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
    pub(crate) properties: crate::event::Properties,
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
            properties: crate::event::Properties::new(),
        }
    }
}

impl Config {
    /// Enables or disables all tracking. Defaults to `true`; `TELEMETRY_ENABLED` overrides it.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Logs every event with the destinations it was routed to. Defaults to `false`;
    /// `TELEMETRY_DEBUG` overrides it.
    pub fn with_debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// Adds a destination (or replaces the one of the same name).
    pub fn with_destination(mut self, destination: DestinationConfig) -> Self {
        self.destinations.retain(|d| d.name != destination.name);
        self.destinations.push(destination);
        self
    }

    /// Sets the global sampling.
    pub fn with_sampling(mut self, sampling: SamplingConfig) -> Self {
        self.sampling = sampling;
        self
    }

    /// Sets the automatic per-request events.
    pub fn with_requests(mut self, requests: RequestsConfig) -> Self {
        self.requests = requests;
        self
    }

    /// Sets which property keys are redacted. Defaults to [`RedactConfig::default`]: the
    /// default sensitive keys.
    pub fn with_redact(mut self, redact: RedactConfig) -> Self {
        self.redact = redact;
        self
    }

    /// Sets what one event may carry. Defaults to [`LimitsConfig::default`].
    pub fn with_limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Super properties: merged into every event (an event's own property of the same name
    /// wins), redacted and limited like its own. YAML: `telemetry.properties`.
    ///
    /// ```
    /// use tower_telemetry::{config::Config, props};
    ///
    /// let config = Config::default().with_properties(props! { "app" => "studio", "region" => "eu" });
    /// assert_eq!(config.properties().len(), 2);
    /// ```
    pub fn with_properties(mut self, properties: crate::event::Properties) -> Self {
        self.properties = properties;
        self
    }

    /// The super properties (see [`with_properties`](Self::with_properties)).
    pub fn properties(&self) -> &crate::event::Properties {
        &self.properties
    }

    /// The redaction settings.
    pub fn redact(&self) -> &RedactConfig {
        &self.redact
    }

    /// The limits.
    pub fn limits(&self) -> &LimitsConfig {
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
    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// The global sampling settings.
    pub fn sampling(&self) -> &SamplingConfig {
        &self.sampling
    }

    /// The automatic request events settings.
    pub fn requests(&self) -> &RequestsConfig {
        &self.requests
    }
}

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
    /// use tower_telemetry::config::Config;
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
        let (config, errors) = Document::parse(yaml, env)?.config(&[]);
        if errors.is_empty() {
            Ok(config)
        } else {
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
        let file_error = |message: String| {
            ConfigError::new(path.display().to_string(), None, message)
                .with_kind(ConfigErrorKind::Io)
        };
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
    /// use tower_telemetry::config::Config;
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
                    errors.push(
                        ConfigError::new(
                            name,
                            None,
                            format!(
                                "expected one of true, false, 1, 0, yes, no; found `{}`",
                                shown(value)
                            ),
                        )
                        .with_kind(ConfigErrorKind::Environment),
                    );
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(yaml: &str) -> Config {
        Config::from_yaml_str_with_env(yaml, |_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn explicit_delivery_keys_are_flagged() {
        let config = parse(
            "telemetry:\n  destinations:\n    a:\n      batch_size: 5\n      timeout: 2s\n    b:\n      flush_interval: 1s\n      concurrency: 2\n      queue_capacity: 9\n    c: {}\n",
        );
        let flags = |name: &str| {
            let e = config.destination(name).unwrap().delivery_explicit;
            (e.batch_size, e.flush_interval, e.concurrency, e.timeout)
        };
        assert_eq!(flags("a"), (true, false, false, true));
        assert_eq!(flags("b"), (false, true, true, false));
        assert_eq!(flags("c"), (false, false, false, false));
        assert_eq!(config.destination("b").unwrap().delivery.queue_capacity, 9);
        assert_eq!(config.destination("c").unwrap().kind, None);
    }

    #[test]
    fn keys_are_not_interpolated_and_quoted_values_stay_strings() {
        let config = Config::from_yaml_str_with_env(
            "telemetry:\n  destinations:\n    m:\n      ${K}: ${V}\n      q: '${V}'\n",
            |name| (name == "V").then(|| "12".to_owned()),
        )
        .unwrap();
        let s = config.destination("m").unwrap().settings();
        assert_eq!(s.get("${K}").unwrap(), 12);
        assert_eq!(s.get("q").unwrap(), "12");
    }

    #[test]
    fn merge_keys_give_way_to_explicit_keys() {
        let yaml = "telemetry:\n  destinations:\n    m:\n      batch_size: 5\n      <<: [{ batch_size: 3, concurrency: 2, extra: 1 }, { concurrency: 4, timeout: 9s }]\n      after: 2\n";
        let config = parse(yaml);
        let d = config.destination("m").unwrap();
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
        let s = config.destination("umami").unwrap().settings();
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
        let s = config.destination("m").unwrap().settings();
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
}
