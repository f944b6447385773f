//! `${VAR}` and `${VAR:-default}` substitution in scalar values.

use super::yaml::{Node, NodeValue, join, or_root, shown};
use super::{ConfigError, ConfigErrorKind};

pub(super) fn interpolate_tree(
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
}
