//! `${VAR}` and `${VAR:-default}` substitution in scalar values, and what it substituted,
//! so that no message shows a value that came from the environment.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::yaml::{Node, NodeValue, join, or_root, shown};
use super::{ConfigError, ConfigErrorKind};

/// Values shorter than this are not taken out of messages: `1` or `no` would mangle them, and
/// are no secret.
const MIN_SCRUBBED: usize = 3;

/// What `${VAR}` substitution put into a document, each value with what a message shows
/// instead: the reference as written (`https://u:${PW}@host`, `${TOKEN}`). Shared by the
/// document's [`Settings`](super::Settings), whose errors take the values out too.
#[derive(Clone, Default)]
pub(crate) struct Substitutions(Arc<[(Box<str>, Box<str>)]>);

impl fmt::Debug for Substitutions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Substitutions({})", self.0.len())
    }
}

impl Substitutions {
    fn new(mut pairs: Vec<(Box<str>, Box<str>)>) -> Self {
        // Each value also as `shown` writes it (cut at 60 characters, controls escaped).
        let shown_forms: Vec<_> = pairs
            .iter()
            .filter_map(|(value, instead)| {
                let s = shown(value);
                (*s != **value).then(|| (s.into_boxed_str(), instead.clone()))
            })
            .collect();
        pairs.extend(shown_forms);
        // And as `Debug` and JSON write them inside quotes (`\"` and `\\` escaped), for the
        // `Debug` of values and settings.
        let quoted_forms: Vec<_> = pairs
            .iter()
            .flat_map(|(value, instead)| {
                let debug = format!("{value:?}");
                let json = serde_json::to_string(&**value).unwrap_or_default();
                [debug, json].into_iter().filter_map(move |q| {
                    let inner = q.get(1..q.len().saturating_sub(1)).unwrap_or_default();
                    (inner != &**value && !inner.is_empty())
                        .then(|| (Box::<str>::from(inner), instead.clone()))
                })
            })
            .collect();
        pairs.extend(quoted_forms);
        pairs.retain(|(value, _)| value.chars().count() >= MIN_SCRUBBED);
        // Longest first, so a whole value goes before a variable inside it.
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Substitutions(pairs.into())
    }

    /// `message` with every substituted value replaced by its reference.
    pub(crate) fn scrub<'a>(&self, message: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(message);
        for (value, instead) in self.0.iter() {
            if out.contains(&**value) {
                out = Cow::Owned(out.replace(&**value, instead));
            }
        }
        out
    }

    /// Scrubs the message of each of `errors`.
    pub(crate) fn scrub_all(&self, errors: &mut [ConfigError]) {
        for e in errors {
            if let Cow::Owned(m) = self.scrub(&e.message) {
                e.message = m;
            }
        }
    }
}

/// Substitutes every scalar of `node`; returns what was substituted.
pub(super) fn interpolate_document(
    node: &mut Node,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Substitutions {
    let mut pairs = Vec::new();
    interpolate_tree(node, "", env, errors, &mut pairs);
    Substitutions::new(pairs)
}

fn interpolate_tree(
    node: &mut Node,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
    pairs: &mut Vec<(Box<str>, Box<str>)>,
) {
    match &mut node.value {
        NodeValue::Scalar(s) => {
            if s.text.contains('$') {
                match interpolate(&s.text, env) {
                    Ok((text, vars)) => {
                        if vars.is_empty() {
                            s.text = text;
                        } else {
                            let reference: Box<str> = s.text.as_str().into();
                            pairs.push((text.as_str().into(), reference.clone()));
                            for (name, value) in vars {
                                pairs.push((value.into(), format!("${{{name}}}").into()));
                            }
                            s.text = text;
                            s.reference = Some(reference);
                        }
                    }
                    Err(messages) => {
                        s.broken = true;
                        errors.extend(messages.into_iter().map(|m| {
                            ConfigError::new(or_root(path), Some(node.line), m)
                                .with_kind(ConfigErrorKind::Environment)
                        }));
                    }
                }
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let path = format!("{}[{i}]", or_root(path));
                interpolate_tree(item, &path, env, errors, pairs);
            }
        }
        NodeValue::Map(entries) => {
            for e in entries {
                interpolate_tree(&mut e.value, &join(path, &e.key), env, errors, pairs);
            }
        }
    }
}

/// A text after substitution, with the variables whose values went into it (a default
/// written in the file is no secret and is not among them).
type Substituted = (String, Vec<(String, String)>);

/// Substitutes `${VAR}` and `${VAR:-default}` in `text`; `$${` is a literal `${`.
fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, Vec<String>> {
    let mut vars = Vec::new();
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
            (Some(value), _) => {
                out.push_str(&value);
                vars.push((name.to_owned(), value));
            }
            (None, Some(default)) => out.push_str(default),
            (None, None) => errors.push(format!(
                "environment variable `{name}` is not set and `${{{name}}}` has no default; set it or write `${{{name}:-default}}`"
            )),
        }
    }
    if errors.is_empty() {
        out.push_str(rest);
        Ok((out, vars))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_forms() {
        let env = |name: &str| match name {
            "A" => Some("1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let ok = |text: &str| interpolate(text, &env).unwrap().0;
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
    fn substituted_values_are_scrubbed_longest_first() {
        let subs = Substitutions::new(vec![
            ("https://u:hunter2@h".into(), "https://u:${PW}@h".into()),
            ("hunter2".into(), "${PW}".into()),
            ("1".into(), "${ONE}".into()),
        ]);
        assert_eq!(
            subs.scrub("`https://u:hunter2@h/` and hunter2, 1 of 1"),
            "`https://u:${PW}@h/` and ${PW}, 1 of 1"
        );
        let long = "x".repeat(70);
        let subs = Substitutions::new(vec![(long.as_str().into(), "${LONG}".into())]);
        assert_eq!(subs.scrub(&format!("`{}`", shown(&long))), "`${LONG}`");
    }

    #[test]
    fn values_with_quotes_and_backslashes_are_scrubbed_as_debug_and_json_write_them() {
        let secret = r#"tok"live\9"#;
        let subs = Substitutions::new(vec![(secret.into(), "${TOKEN}".into())]);
        let debug = format!("{secret:?}");
        let json = serde_json::to_string(secret).unwrap();
        assert_eq!(subs.scrub(&debug), "\"${TOKEN}\"");
        assert_eq!(subs.scrub(&json), "\"${TOKEN}\"");
        let mut map = serde_json::Map::new();
        map.insert("token".into(), secret.into());
        assert!(
            !subs
                .scrub(&serde_json::to_string(&map).unwrap())
                .contains("live")
        );
    }
}
