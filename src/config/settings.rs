//! A destination kind's own settings, read with typed getters that fail with the key's path
//! and line.

use std::collections::HashMap;
use std::time::Duration;

use super::interpolate::Substitutions;
use super::kinds::EnvSnapshot;
use super::parse::parse_long_duration;
use super::yaml::{Node, NodeValue, Typed};
use super::{ConfigError, ConfigErrorKind};

/// A destination kind's own settings, with the key path and line of each for error messages.
///
/// Destination kinds read their keys with the typed getters, which fail with a
/// [`ConfigError`] that names the key path and the line.
///
/// A value that came from `${VAR}` is never shown: errors built with
/// [`error`](Self::error) and the `Debug` output show the reference (`${NATS_TOKEN}`)
/// instead, and URL passwords are masked in `Debug`.
///
/// ```
/// use tower_telemetry::config::Config;
///
/// let yaml = "telemetry:\n  destinations:\n    mine:\n      type: custom\n      token: ${TOKEN}\n";
/// let config = Config::from_yaml_str_with_env(yaml, |_| Some("tok_live_1234".into())).unwrap();
/// let settings = config.destination("mine").unwrap().settings();
/// assert_eq!(settings.str("token").unwrap(), Some("tok_live_1234"));
/// let e = settings.error("token", "`tok_live_1234` is revoked");
/// assert_eq!(e.message(), "`${TOKEN}` is revoked");
/// assert!(!format!("{settings:?}").contains("tok_live"));
/// ```
#[derive(Clone, Default)]
pub struct Settings {
    pub(crate) path: String,
    /// The line of the entry itself (`umami:`), for errors about the whole destination.
    pub(crate) line: Option<usize>,
    pub(crate) values: serde_json::Map<String, serde_json::Value>,
    /// The line of each key read from YAML, nested keys as `a.b`; also `type`, which is not
    /// a setting but is what an unknown kind's error points at.
    pub(crate) lines: HashMap<String, usize>,
    /// The document's `${VAR}` values, taken out of errors and `Debug`.
    pub(crate) substitutions: Substitutions,
    /// The environment variables kinds read below their settings (`OTEL_*`), as the
    /// document's environment had them; empty for settings made in code.
    pub(crate) env: EnvSnapshot,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values as JSON with `${VAR}` values and URL passwords taken out.
        let values = serde_json::to_string(&self.values).unwrap_or_default();
        let values = self.substitutions.scrub(&values);
        f.debug_struct("Settings")
            .field("path", &self.path)
            .field("line", &self.line)
            .field("values", &crate::diag::Masked(&values))
            .finish_non_exhaustive()
    }
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

    /// Builds a destination from these settings: `read` is what reading them into a kind's
    /// configuration gave (the configuration and the errors found), `build` validates it and
    /// makes the destination, naming keys through [`error`](Self::error). Every error of both
    /// comes back, one per key (a value that failed to parse is not reported again as invalid).
    #[cfg(any(
        feature = "umami",
        feature = "posthog",
        feature = "segment",
        feature = "webhook",
        feature = "otlp",
        feature = "nats"
    ))]
    pub(crate) fn build_with<C, D>(
        &self,
        read: (C, Vec<ConfigError>),
        build: impl FnOnce(C, &dyn Fn(&str, String) -> ConfigError) -> Result<D, Vec<ConfigError>>,
    ) -> Result<D, Vec<ConfigError>> {
        let (config, mut errors) = read;
        match build(config, &|key, msg| self.error(key, msg)) {
            Ok(d) if errors.is_empty() => Ok(d),
            Ok(_) => Err(errors),
            Err(more) => {
                for e in more {
                    if !errors.iter().any(|x| x.path() == e.path()) {
                        errors.push(e);
                    }
                }
                Err(errors)
            }
        }
    }

    /// An error about `key`: its full path, its line when known, and `message`, of kind
    /// [`ConfigErrorKind::Invalid`] (see [`ConfigError::with_kind`]).
    ///
    /// An empty `key` means the destination itself (its name's line); `type` has its line
    /// too, though it is not among the [`keys`](Self::keys). A key the file does not give (a
    /// required one, say) gets the line of the nearest enclosing key it does give (`tls` for
    /// `tls.ca_file`), else the destination's.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let path = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        let message = message.into();
        let message = match self.substitutions.scrub(&message) {
            std::borrow::Cow::Owned(scrubbed) => scrubbed,
            std::borrow::Cow::Borrowed(_) => message,
        };
        ConfigError::new(path, self.line_of(key), message)
    }

    /// The line of `key`, of its nearest enclosing key, or of the entry itself.
    fn line_of(&self, mut key: &str) -> Option<usize> {
        loop {
            if key.is_empty() {
                return self.line;
            }
            if let Some(&line) = self.lines.get(key) {
                return Some(line);
            }
            key = key.rsplit_once('.').map_or("", |(parent, _)| parent);
        }
    }

    /// An [`UnknownKey`](ConfigErrorKind::UnknownKey) error for every key not in `allowed`.
    pub fn unknown_keys(&self, allowed: &[&str]) -> Vec<ConfigError> {
        self.values
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                self.error(
                    k,
                    format!(
                        "unknown key `{}`; expected one of: {}",
                        super::yaml::shown(k),
                        allowed.join(", ")
                    ),
                )
                .with_kind(ConfigErrorKind::UnknownKey)
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

    /// `key` as a duration, if present: a number of seconds, or a string such as `250ms`,
    /// `1.5s`, `2m`, `1h` or `7d` (the units of the core's durations, plus days).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_telemetry::config::DestinationConfig;
    ///
    /// let d = DestinationConfig::new("mine").with_setting("max_age", "7d").with_setting("wait", 1.5);
    /// let s = d.settings();
    /// assert_eq!(s.duration("max_age").unwrap(), Some(Duration::from_secs(7 * 86_400)));
    /// assert_eq!(s.duration("wait").unwrap(), Some(Duration::from_millis(1500)));
    /// assert!(s.duration("missing").unwrap().is_none());
    /// ```
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let parsed = match self.values.get(key) {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::Number(n)) => n
                .as_f64()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| n.to_string()),
            Some(serde_json::Value::String(s)) => {
                parse_long_duration(s).ok_or_else(|| format!("`{}`", super::yaml::shown(s)))
            }
            Some(other) => Err(kind_of(other).to_owned()),
        };
        parsed.map(Some).map_err(|found| {
            self.error(
                key,
                format!("expected a duration such as 250ms, 5s, 2m or 7d, found {found}"),
            )
        })
    }

    /// `key` as a nested map of settings, if present.
    pub fn section(&self, key: &str) -> Result<Option<Settings>, ConfigError> {
        match self.values.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Object(map)) => {
                let prefix = format!("{key}.");
                Ok(Some(Settings {
                    substitutions: self.substitutions.clone(),
                    env: self.env.clone(),
                    path: format!("{}.{key}", self.path),
                    line: self.lines.get(key).copied(),
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

/// What a value is, for "found ..." in messages: `the string `x``, `the number `3``, ...
pub(crate) fn describe_value(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `{}`", super::yaml::shown(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
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

/// A destination setting as JSON; records the lines of nested keys as `a.b`.
pub(super) fn to_json(
    node: &Node,
    prefix: &str,
    lines: &mut HashMap<String, usize>,
) -> serde_json::Value {
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
