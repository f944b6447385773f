//! The seam through which destination kinds check their own settings while a file is parsed.
//!
//! `config` knows no destination kind: the kinds depend on it (for [`Settings`] and
//! [`ConfigError`]), never the other way round. A kind whose values can be checked without
//! building it (the logging destination's `level` and `output`) implements the check next to
//! its own code, where its one copy of the rules lives; the parser calls it through this trait
//! so that `Config::from_yaml_str` reports those errors with the others, key path and line
//! included.

use std::sync::Arc;

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

/// The environment variables the built-in kinds read below their own settings (the `otlp`
/// kind's `OTEL_*`). Implemented for [`BuiltinKinds`] by `destination`, so this module names
/// no variable of any kind.
pub(crate) trait KindEnv {
    /// Every variable some built-in kind reads.
    fn env_names() -> &'static [&'static str];
}

/// The values of the [`KindEnv`] variables, read once through the same `env` as the
/// document's `${VAR}`s (so a test injects them as it injects those, without touching the
/// process environment). Settings made in code have none.
///
/// Its `Debug` names the variables that are set, never their values (headers carry tokens).
#[derive(Clone, Default)]
pub(crate) struct EnvSnapshot(Option<Arc<[(&'static str, String)]>>);

impl EnvSnapshot {
    /// The variables of `names` that `env` has (an empty value counts as unset).
    pub(crate) fn read(names: &[&'static str], env: &dyn Fn(&str) -> Option<String>) -> Self {
        let set: Vec<(&'static str, String)> = names
            .iter()
            .filter_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
            .collect();
        EnvSnapshot(Some(set.into()))
    }

    /// The built-in kinds' variables, read through `env`.
    pub(crate) fn for_builtin_kinds(env: &dyn Fn(&str) -> Option<String>) -> Self {
        Self::read(<BuiltinKinds as KindEnv>::env_names(), env)
    }

    /// The value of `name`, if it was set.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .as_deref()?
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for EnvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.0.as_deref().unwrap_or_default().iter().map(|(n, _)| n);
        f.debug_list().entries(names).finish()
    }
}
