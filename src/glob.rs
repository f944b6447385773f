//! Wildcard patterns over names: `*` matches any run of characters (dots included), `?` any
//! one character, a leading `!` excludes.
//!
//! A leaf shared by the configuration (which validates globs) and routing, the per-destination
//! property views and request exclusion (which compile and match them).

use std::fmt;

/// A compiled glob: `*` matches any run of characters (dots included), `?` any one character.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Any,
    Star,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Checks that `pattern` is a usable event glob: not empty, no whitespace or control
/// characters, no `[`, `]`, `{`, `}` (classes and alternations are not supported), and a `!`
/// only as the first character (an exclusion).
pub fn validate_glob(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_prefix('!').unwrap_or(pattern);
    if body.is_empty() {
        return Err(if pattern.is_empty() {
            "empty pattern".to_owned()
        } else {
            "`!` must be followed by a pattern".to_owned()
        });
    }
    if let Some(c) = body
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "[]{}!".contains(*c))
    {
        return Err(format!(
            "unsupported character {c:?} in pattern `{pattern}`; patterns use `*` (any run of characters), `?` (one character) and a leading `!` to exclude"
        ));
    }
    Ok(())
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        validate_glob(pattern)?;
        Ok(Glob::compile(pattern))
    }

    /// Compiles without validation (path globs for request exclusion may contain `/`).
    pub(crate) fn compile(pattern: &str) -> Glob {
        let mut parts = Vec::new();
        let mut lit = String::new();
        for c in pattern.chars() {
            match c {
                '*' | '?' => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    let p = if c == '*' { Part::Star } else { Part::Any };
                    if !(p == Part::Star && parts.last() == Some(&Part::Star)) {
                        parts.push(p);
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Glob {
            source: pattern.to_owned(),
            parts,
        }
    }

    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    #[inline]
    pub(crate) fn matches(&self, s: &str) -> bool {
        matches_parts(&self.parts, s)
    }
}

/// Greedy wildcard matching with backtracking to the last star: O(len(s) * parts) at worst.
// Inline: it was in routing, next to its callers; a property view matches per property.
#[inline]
fn matches_parts(parts: &[Part], s: &str) -> bool {
    let mut pi = 0;
    let mut si = 0;
    // (part index after the star, position in s where the star's match ends)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < parts.len() {
            match &parts[pi] {
                Part::Star => {
                    star = Some((pi + 1, si));
                    pi += 1;
                    continue;
                }
                Part::Lit(l) if s[si..].starts_with(l.as_str()) => {
                    si += l.len();
                    pi += 1;
                    continue;
                }
                Part::Any if si < s.len() => {
                    si += s[si..].chars().next().map_or(1, char::len_utf8);
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        } else if si == s.len() {
            return true;
        }
        // Mismatch: let the last star swallow one more character, or fail.
        match star {
            Some((after, end)) if end < s.len() => {
                let next = end + s[end..].chars().next().map_or(1, char::len_utf8);
                star = Some((after, next));
                pi = after;
                si = next;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn star_crosses_dots() {
        assert!(g("user.*").matches("user.profile.updated"));
        assert!(g("user.*").matches("user."));
        assert!(!g("user.*").matches("user"));
        assert!(!g("user.*").matches("users.x"));
        assert!(g("*.failed").matches("api.generate.failed"));
        assert!(g("*").matches(""));
        assert!(g("a*b*c").matches("aXXbYYc"));
        assert!(!g("a*b*c").matches("aXXbYY"));
        assert!(g("a?c").matches("abc"));
        assert!(g("a?c").matches("aéc"));
        assert!(!g("a?c").matches("ac"));
        assert!(g("exact").matches("exact"));
        assert!(!g("exact").matches("exactly"));
    }

    #[test]
    fn invalid_globs() {
        for bad in ["", "!", "a b", "a[0]", "{a,b}", "a!b", "a\nb"] {
            assert!(validate_glob(bad).is_err(), "{bad:?}");
        }
        assert!(validate_glob("!user.debug.*").is_ok());
    }
}
