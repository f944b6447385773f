//! A destination kind's own settings, read with typed getters that fail with the key's path
//! and line.

use std::collections::HashMap;

use super::ConfigError;

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
