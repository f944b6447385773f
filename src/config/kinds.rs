//! The seam through which destination kinds check their own settings while a file is parsed.
//!
//! `config` knows no destination kind: the kinds depend on it (for [`Settings`] and
//! [`ConfigError`]), never the other way round. A kind whose values can be checked without
//! building it (the logging destination's `level` and `output`) implements the check next to
//! its own code, where its one copy of the rules lives; the parser calls it through this trait
//! so that `Config::from_yaml_str` reports those errors with the others, key path and line
//! included.

use super::{ConfigError, Settings};

/// A kind's checks of its own settings' values, run when a configuration is parsed.
///
/// Unknown keys are not reported here (a kind reports them when it is built), only values
/// the kind would refuse.
pub(crate) trait CheckSettings {
    /// The problems with `settings` for a destination of kind `kind`; none for a kind it does
    /// not know.
    fn check(kind: &str, settings: &Settings) -> Vec<ConfigError>;
}

/// The built-in destination kinds. `CheckSettings` is implemented for it by the kinds
/// (`destination::logging`).
#[derive(Debug)]
pub(crate) struct BuiltinKinds;
