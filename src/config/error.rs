//! What went wrong in a configuration, and where.

use std::fmt;

/// One problem in a configuration: where (key path, line), what kind of problem, and what.
///
/// ```
/// use tower_telemetry::{config::{Config, ConfigErrorKind}};
///
/// let errors = Config::from_yaml_str_with_env("telemetry:\n  sampling:\n    ratio: 0.5\n", |_| None)
///     .unwrap_err();
/// let e = &errors.errors()[0];
/// assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
/// assert_eq!((e.path(), e.line()), ("telemetry.sampling.ratio", Some(3)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) kind: ConfigErrorKind,
    pub(crate) path: String,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

/// What kind of problem a [`ConfigError`] reports, for callers that act on it rather than
/// print it.
///
/// New kinds may be added in minor releases: match with a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file cannot be read: missing, unreadable, not UTF-8, or larger than 1 MiB.
    Io,
    /// Not valid YAML, or a YAML feature the configuration does not support: a second
    /// document, a custom tag, a mapping as a key, a `<<` merge of something not a mapping.
    Syntax,
    /// A limit that keeps hostile input cheap was exceeded: size, nesting depth, or values
    /// counting alias expansions.
    TooLarge,
    /// A key the schema (or the destination kind) does not know.
    UnknownKey,
    /// The same key twice in one mapping.
    Duplicate,
    /// A required key or section is absent (an empty file, no `telemetry:`, no `relay:`, a
    /// setting another one needs).
    Missing,
    /// A value of the wrong type, out of range, or otherwise unusable. The default of
    /// [`ConfigError::new`] and [`Settings::error`](crate::config::Settings::error).
    Invalid,
    /// The environment: a `${VAR}` without a value or default, a malformed `${...}`, or a
    /// `TELEMETRY_*` override with a value that is not a boolean.
    Environment,
    /// A destination whose name is not a kind and that gives no `type:`.
    UnknownDestination,
    /// A `type:` that names no destination kind.
    UnknownType,
}

impl ConfigError {
    /// An error at `path` (e.g. `telemetry.destinations.logging.level`), of kind
    /// [`ConfigErrorKind::Invalid`]; see [`with_kind`](Self::with_kind).
    pub fn new(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// The same error, of kind `kind`.
    #[must_use]
    pub fn with_kind(mut self, kind: ConfigErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
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
