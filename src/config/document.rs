//! A YAML document read once and then taken apart: its `telemetry:` section into a
//! [`Config`], other named top-level sections (the relay's `relay:`) into [`Settings`] with
//! their real line numbers.

use super::check::Check;
use super::interpolate::{Substitutions, interpolate_document};
use super::kinds::EnvSnapshot;
use super::settings::to_json;
use super::yaml::{Node, NodeValue, Typed, describe, load};
use super::{Config, ConfigError, ConfigErrors, Settings};

/// A loaded and `${VAR}`-substituted document.
#[derive(Debug)]
pub(crate) struct Document {
    root: Option<Node>,
    /// Problems found while loading and substituting (duplicate keys, unset variables, ...).
    errors: Vec<ConfigError>,
    /// What `${VAR}` put in, taken back out of every message.
    substitutions: Substitutions,
    /// The variables the kinds read below their settings, from the same `env`.
    env: EnvSnapshot,
}

impl Document {
    /// Loads `yaml` and substitutes `${VAR}` through `env`. Fails only when the YAML cannot
    /// be read at all (a syntax error, a limit exceeded); other problems are kept for
    /// [`config`](Self::config).
    pub(crate) fn parse(
        yaml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Document, ConfigErrors> {
        let (mut root, mut errors) = load(yaml)?;
        let substitutions = match &mut root {
            Some(root) => interpolate_document(root, &env, &mut errors),
            None => Substitutions::default(),
        };
        let env = EnvSnapshot::for_builtin_kinds(&env);
        Ok(Document {
            root,
            errors,
            substitutions,
            env,
        })
    }

    /// The top-level section `name` as settings whose path is `name` and whose lines are the
    /// document's; `None` when the document has no such key. A section that is not a mapping
    /// is an error (nothing, `name:` alone, is an empty mapping).
    // Only the relay (feature `nats`) has a section of its own so far.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn section(&self, name: &str) -> Result<Option<Settings>, ConfigError> {
        let Some(Node {
            value: NodeValue::Map(entries),
            ..
        }) = &self.root
        else {
            return Ok(None);
        };
        let Some(entry) = entries.iter().find(|e| e.key == name) else {
            return Ok(None);
        };
        let mut settings = Settings::new(name.to_owned());
        settings.line = Some(entry.line);
        settings.substitutions = self.substitutions.clone();
        settings.env = self.env.clone();
        match &entry.value.value {
            NodeValue::Map(entries) => {
                for e in entries {
                    settings.lines.insert(e.key.clone(), e.line);
                    let value = to_json(&e.value, &e.key, &mut settings.lines);
                    settings.values.insert(e.key.clone(), value);
                }
            }
            // Its `${...}` failed: already reported.
            NodeValue::Scalar(s) if s.broken => {}
            NodeValue::Scalar(s) if matches!(s.typed(), Typed::Null) => {}
            _ => {
                return Err(settings.error(
                    "",
                    format!("expected a mapping, found {}", describe(&entry.value)),
                ));
            }
        }
        Ok(Some(settings))
    }

    /// The `telemetry:` section validated into a [`Config`], and every problem of the document
    /// (sorted by line), those found while loading included. `sections` are the other
    /// top-level keys allowed (read with [`section`](Self::section)); any other is an error.
    pub(crate) fn config(self, sections: &[&str]) -> (Config, Vec<ConfigError>) {
        let mut check = Check {
            errors: self.errors,
        };
        let mut config = check.root(self.root.as_ref(), sections);
        let mut errors = check.errors;
        self.substitutions.scrub_all(&mut errors);
        for d in &mut config.destinations {
            d.settings.substitutions = self.substitutions.clone();
            d.settings.env = self.env.clone();
        }
        errors.sort_by_key(|e| e.line.unwrap_or(0));
        (config, errors)
    }
}
