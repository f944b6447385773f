//! Loading: YAML events to a tree of nodes that remember their lines, within limits that
//! keep hostile input cheap.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, ScanError, Span, StrInput};

use super::{ConfigError, ConfigErrorKind};

/// The largest YAML source accepted, in bytes.
pub(super) const MAX_YAML_BYTES: usize = 1 << 20;
/// The deepest nesting of lists and mappings accepted.
const MAX_DEPTH: usize = 32;
/// The most values (scalars, lists, mappings) in a document, alias expansions included.
const MAX_NODES: usize = 100_000;

/// A YAML value with the (1-based) line it starts on.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) line: usize,
    pub(super) value: NodeValue,
}

#[derive(Clone, Debug)]
pub(super) enum NodeValue {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
pub(super) struct Scalar {
    pub(super) text: String,
    /// Unquoted (or tagged with a non-string core tag): typed by the YAML 1.2 core schema.
    pub(super) plain: bool,
    /// Its `${...}` substitution failed (already reported); the value is unusable.
    pub(super) broken: bool,
    /// The text as written when it held a `${VAR}` reference: messages show this, never
    /// the value substituted.
    pub(super) reference: Option<Box<str>>,
}

/// A mapping entry with the line of its key.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) line: usize,
    pub(super) value: Node,
}

/// A scalar typed by the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug)]
pub(super) enum Typed<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    pub(super) fn typed(&self) -> Typed<'_> {
        let t = self.text.as_str();
        if !self.plain {
            return Typed::Str(t);
        }
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Typed::Null,
            "true" | "True" | "TRUE" => return Typed::Bool(true),
            "false" | "False" | "FALSE" => return Typed::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Typed::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Typed::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Typed::Float(f64::NAN),
            _ => {}
        }
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return match t.parse::<i128>() {
                Ok(i) => Typed::Int(i),
                Err(_) => t.parse().map_or(Typed::Str(t), Typed::Float),
            };
        }
        for (prefix, radix) in [("0x", 16), ("0o", 8)] {
            if let Some(n) = t.strip_prefix(prefix)
                && let Ok(i) = u64::from_str_radix(n, radix)
                && !n.starts_with(['+', '-'])
            {
                return Typed::Int(i.into());
            }
        }
        if is_core_float(t) {
            if let Ok(f) = t.parse() {
                return Typed::Float(f);
            }
        }
        Typed::Str(t)
    }
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(t: &str) -> bool {
    fn digits(s: &str) -> (usize, &str) {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n, &s[n..])
    }
    let s = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (int, s) = digits(s);
    let s = match s.strip_prefix('.') {
        Some(rest) => {
            let (frac, rest) = digits(rest);
            if int == 0 && frac == 0 {
                return false;
            }
            rest
        }
        None if int == 0 => return false,
        None => s,
    };
    match s.strip_prefix(['e', 'E']) {
        None => s.is_empty(),
        Some(exp) => {
            let (n, rest) = digits(exp.strip_prefix(['-', '+']).unwrap_or(exp));
            n > 0 && rest.is_empty()
        }
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn or_root(path: &str) -> String {
    if path.is_empty() {
        "telemetry".to_owned()
    } else {
        path.to_owned()
    }
}

/// A value for a message: at most 60 characters, escaped as log records are
/// ([`Escaped`](crate::diag::Escaped): controls, line separators, bidi overrides).
pub(super) fn shown(s: &str) -> String {
    let cut = s.char_indices().nth(60).map_or(s.len(), |(i, _)| i);
    let mut out = crate::diag::Escaped(&s[..cut]).to_string();
    if cut < s.len() {
        out.push('…');
    }
    out
}

/// What a node is, for "found ..." in messages. A value that came from `${VAR}` is shown as
/// the reference, never as its value: "a string from `${TOKEN}`".
pub(super) fn describe(node: &Node) -> String {
    match &node.value {
        NodeValue::Seq(_) => "a list".to_owned(),
        NodeValue::Map(_) => "a mapping".to_owned(),
        NodeValue::Scalar(s) if s.reference.is_some() => {
            let what = match s.typed() {
                Typed::Null => "nothing",
                Typed::Bool(_) => "a boolean",
                Typed::Int(_) | Typed::Float(_) => "a number",
                Typed::Str(_) => "a string",
            };
            format!(
                "{what} from `{}`",
                shown(s.reference.as_deref().unwrap_or_default())
            )
        }
        NodeValue::Scalar(s) => match s.typed() {
            Typed::Null => "nothing".to_owned(),
            Typed::Bool(_) => format!("the boolean `{}`", s.text),
            Typed::Int(_) | Typed::Float(_) => format!("the number `{}`", s.text),
            Typed::Str(t) => format!("the string `{}`", shown(t)),
        },
    }
}

// --- Loading: YAML events to a tree --------------------------------------------------------------

fn syntax_error(path: &str, e: &ScanError) -> ConfigError {
    let marker = e.marker();
    ConfigError::new(
        or_root(path),
        Some(marker.line().max(1)),
        format!("invalid YAML at column {}: {}", marker.col() + 1, e.info()),
    )
    .with_kind(ConfigErrorKind::Syntax)
}

struct Anchored {
    node: Node,
    size: usize,
    height: usize,
}

struct Loader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Anchored>,
    /// Values loaded so far, alias expansions included.
    nodes: usize,
    /// Values copied into `anchors`.
    stored: usize,
    /// Problems that do not stop loading (duplicate keys, ...).
    errors: Vec<ConfigError>,
}

/// Parses `yaml` into a tree. A syntax error (or a limit exceeded) is the only error returned;
/// other problems found while loading are returned with the tree.
pub(super) fn load(yaml: &str) -> Result<(Option<Node>, Vec<ConfigError>), ConfigError> {
    if yaml.len() > MAX_YAML_BYTES {
        return Err(ConfigError::new(
            "telemetry",
            None,
            format!(
                "the configuration is {} bytes; at most {MAX_YAML_BYTES} are accepted",
                yaml.len()
            ),
        )
        .with_kind(ConfigErrorKind::TooLarge));
    }
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH + 1;
    options.block_nesting_limit = MAX_DEPTH + 1;
    options.emit_comments = false;
    options.emit_anchor_events = false;
    options.emit_unresolved_aliases = false;
    let mut loader = Loader {
        parser: Parser::new_from_str_with_options(yaml, options),
        anchors: HashMap::new(),
        nodes: 0,
        stored: 0,
        errors: Vec::new(),
    };
    let root = loader.document()?;
    Ok((root, loader.errors))
}

impl<'a> Loader<'a> {
    fn next(&mut self, path: &str) -> Result<(Event<'a>, Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(syntax_error(path, &e)),
            None => Err(
                ConfigError::new(or_root(path), None, "the YAML ends unexpectedly")
                    .with_kind(ConfigErrorKind::Syntax),
            ),
        }
    }

    fn unexpected(path: &str, span: &Span, what: &str) -> ConfigError {
        ConfigError::new(
            or_root(path),
            Some(span.start.line()),
            format!("invalid YAML: unexpected {what}"),
        )
        .with_kind(ConfigErrorKind::Syntax)
    }

    fn document(&mut self) -> Result<Option<Node>, ConfigError> {
        let (event, span) = self.next("")?;
        if !matches!(event, Event::StreamStart) {
            return Err(Self::unexpected(
                "",
                &span,
                "content before the stream start",
            ));
        }
        let (event, span) = self.next("")?;
        match event {
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(..) => {}
            _ => {
                return Err(Self::unexpected(
                    "",
                    &span,
                    "content before the document start",
                ));
            }
        }
        let (event, span) = self.next("")?;
        let root = match event {
            Event::DocumentEnd => None,
            event => {
                let root = self.node(event, span, "", 0)?.0;
                let (event, span) = self.next("")?;
                if !matches!(event, Event::DocumentEnd) {
                    return Err(Self::unexpected("", &span, "content after the document"));
                }
                Some(root)
            }
        };
        let (event, span) = self.next("")?;
        match event {
            Event::StreamEnd => Ok(root),
            Event::DocumentStart(..) => Err(ConfigError::new(
                "telemetry",
                Some(span.start.line()),
                "a second YAML document; the configuration must be a single document",
            )
            .with_kind(ConfigErrorKind::Syntax)),
            _ => Err(Self::unexpected("", &span, "content after the document")),
        }
    }

    fn charge(&mut self, n: usize, path: &str, line: usize) -> Result<(), ConfigError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(ConfigError::new(
                or_root(path),
                Some(line),
                format!(
                    "the configuration has more than {MAX_NODES} values (aliases expanded); it is too large"
                ),
            )
.with_kind(ConfigErrorKind::TooLarge));
        }
        Ok(())
    }

    fn check_depth(path: &str, line: usize, depth: usize) -> Result<(), ConfigError> {
        if depth > MAX_DEPTH {
            return Err(ConfigError::new(
                or_root(path),
                Some(line),
                format!(
                    "the configuration nests lists and mappings more than {MAX_DEPTH} levels deep"
                ),
            )
            .with_kind(ConfigErrorKind::TooLarge));
        }
        Ok(())
    }

    /// Checks a node's YAML tag against its kind (`scalar`, `seq` or `map`): only the core
    /// schema's tags are supported. For a scalar, returns whether it is typed as plain
    /// (`!!str` makes it a string; `!!int` and the other core scalar tags keep the typing).
    fn check_tag(
        &mut self,
        tag: Option<&serde_saphyr::granit_parser::Tag>,
        kind: &str,
        path: &str,
        line: usize,
    ) -> Option<bool> {
        let tag = tag?;
        match (kind, tag.core_suffix()) {
            ("scalar", Some("str")) => Some(false),
            ("scalar", Some("null" | "bool" | "int" | "float")) => Some(true),
            ("seq", Some("seq")) | ("map", Some("map")) => None,
            _ => {
                self.errors.push(
                    ConfigError::new(
                        or_root(path),
                        Some(line),
                        format!("unsupported YAML tag `{}`", shown(&tag.original())),
                    )
                    .with_kind(ConfigErrorKind::Syntax),
                );
                None
            }
        }
    }

    /// Loads the node starting with `event`; returns it and its height.
    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        path: &str,
        depth: usize,
    ) -> Result<(Node, usize), ConfigError> {
        let line = span.start.line();
        Self::check_depth(path, line, depth)?;
        let start = self.nodes;
        self.charge(1, path, line)?;
        let (node, height, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = self
                    .check_tag(tag.as_deref(), "scalar", path, line)
                    .unwrap_or(style == ScalarStyle::Plain);
                let scalar = Scalar {
                    text: text.into_owned(),
                    plain,
                    broken: false,
                    reference: None,
                };
                (
                    Node {
                        line,
                        value: NodeValue::Scalar(scalar),
                    },
                    0,
                    anchor,
                )
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.check_tag(tag.as_deref(), "seq", path, line);
                let mut items = Vec::new();
                let mut height = 0;
                loop {
                    let (event, span) = self.next(path)?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let item_path = format!("{}[{}]", or_root(path), items.len());
                    let (item, h) = self.node(event, span, &item_path, depth + 1)?;
                    height = height.max(h + 1);
                    items.push(item);
                }
                (
                    Node {
                        line,
                        value: NodeValue::Seq(items),
                    },
                    height,
                    anchor,
                )
            }
            Event::MappingStart(_, anchor, tag) => {
                self.check_tag(tag.as_deref(), "map", path, line);
                let (entries, height) = self.mapping(path, depth)?;
                (
                    Node {
                        line,
                        value: NodeValue::Map(entries),
                    },
                    height,
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(ConfigError::new(
                        or_root(path),
                        Some(line),
                        "invalid YAML: unknown alias",
                    )
                    .with_kind(ConfigErrorKind::Syntax));
                };
                let (size, height) = (anchored.size, anchored.height);
                Self::check_depth(path, line, depth + height)?;
                self.charge(size, path, line)?;
                let node = self.anchors[&id].node.clone();
                (node, height, 0)
            }
            _ => return Err(Self::unexpected(path, &span, "YAML event")),
        };
        if anchor != 0 {
            // The copy kept for aliases counts too, so nested anchors cannot multiply memory.
            let size = self.nodes - start;
            self.stored = self.stored.saturating_add(size);
            if self.stored > MAX_NODES {
                return Err(ConfigError::new(
                    or_root(path),
                    Some(line),
                    format!(
                        "the configuration's anchors hold more than {MAX_NODES} values; it is too large"
                    ),
                )
.with_kind(ConfigErrorKind::TooLarge));
            }
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size,
                    height,
                },
            );
        }
        Ok((node, height))
    }

    /// Loads a mapping's entries (after its start event), resolving `<<` merge keys.
    fn mapping(&mut self, path: &str, depth: usize) -> Result<(Vec<Entry>, usize), ConfigError> {
        let mut entries: Vec<Entry> = Vec::new();
        // Each explicit key's line: a duplicate is found in constant time, so a mapping of
        // n keys costs O(n), not O(n²) (36 000 keys took seconds with a scan).
        let mut lines: HashMap<String, usize> = HashMap::new();
        // (position in `entries`, merged entries)
        let mut merges: Vec<(usize, Vec<Entry>)> = Vec::new();
        let mut height = 0;
        loop {
            let (event, span) = self.next(path)?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let key_line = span.start.line();
            let (key, h) = self.node(event, span, path, depth + 1)?;
            height = height.max(h + 1);
            let key = match key.value {
                NodeValue::Scalar(s) => Some(s),
                _ => {
                    self.errors.push(
                        ConfigError::new(
                            or_root(path),
                            Some(key_line),
                            format!(
                                "a mapping key must be a plain value, found {}",
                                describe(&key)
                            ),
                        )
                        .with_kind(ConfigErrorKind::Syntax),
                    );
                    None
                }
            };
            let key_text = key.as_ref().map_or("?", |k| k.text.as_str());
            let child_path = join(path, key_text);
            let (event, span) = self.next(&child_path)?;
            let (value, h) = self.node(event, span, &child_path, depth + 1)?;
            height = height.max(h + 1);
            let Some(key) = key else { continue };
            if key.plain && key.text == "<<" {
                let maps = match value.value {
                    NodeValue::Map(es) => vec![es],
                    NodeValue::Seq(items)
                        if items.iter().all(|i| matches!(i.value, NodeValue::Map(_))) =>
                    {
                        items
                            .into_iter()
                            .filter_map(|i| match i.value {
                                NodeValue::Map(es) => Some(es),
                                _ => None,
                            })
                            .collect()
                    }
                    _ => {
                        self.errors.push(ConfigError::new(
                            child_path,
                            Some(key_line),
                            "a `<<` merge key needs a mapping or a list of mappings (usually an alias)",
                        )
.with_kind(ConfigErrorKind::Syntax));
                        continue;
                    }
                };
                merges.push((entries.len(), maps.into_iter().flatten().collect()));
                continue;
            }
            if let Some(&first) = lines.get(&key.text) {
                self.errors.push(
                    ConfigError::new(
                        child_path,
                        Some(key_line),
                        format!(
                            "duplicate key `{}`; it is already given on line {}",
                            shown(&key.text),
                            first
                        ),
                    )
                    .with_kind(ConfigErrorKind::Duplicate),
                );
                continue;
            }
            lines.insert(key.text.clone(), key_line);
            entries.push(Entry {
                key: key.text,
                line: key_line,
                value,
            });
        }
        if !merges.is_empty() {
            // Explicit keys win over merged ones; among merged ones, the first wins.
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(entries.len());
            let mut rest = entries.into_iter().enumerate().peekable();
            for (pos, group) in merges {
                while let Some((_, e)) = rest.next_if(|(i, _)| *i < pos) {
                    out.push(e);
                }
                for e in group {
                    if !lines.contains_key(&e.key) && seen.insert(e.key.clone()) {
                        out.push(e);
                    }
                }
            }
            out.extend(rest.map(|(_, e)| e));
            entries = out;
        }
        Ok((entries, height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, plain: bool) -> Scalar {
        Scalar {
            text: text.to_owned(),
            plain,
            broken: false,
            reference: None,
        }
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let cases: &[(&str, &str)] = &[
            ("~", "null"),
            ("", "null"),
            ("NULL", "null"),
            ("True", "bool"),
            ("FALSE", "bool"),
            ("yes", "str"),
            ("on", "str"),
            ("12", "int"),
            ("-7", "int"),
            ("+3", "int"),
            ("0x1F", "int"),
            ("0o17", "int"),
            ("0x", "str"),
            ("0x-1", "str"),
            ("1.5", "float"),
            (".5", "float"),
            ("1.", "float"),
            ("1e3", "float"),
            ("-2.5E-3", "float"),
            (".inf", "float"),
            ("-.Inf", "float"),
            (".NaN", "float"),
            ("1e", "str"),
            (".", "str"),
            ("e3", "str"),
            ("inf", "str"),
            ("nan", "str"),
            ("1_000", "str"),
            ("1.2.3", "str"),
            ("99999999999999999999999999999999999999999", "float"),
        ];
        for (text, kind) in cases {
            let got = match scalar(text, true).typed() {
                Typed::Null => "null",
                Typed::Bool(_) => "bool",
                Typed::Int(_) => "int",
                Typed::Float(_) => "float",
                Typed::Str(_) => "str",
            };
            assert_eq!(got, *kind, "{text:?}");
        }
        assert!(matches!(scalar("0x1F", true).typed(), Typed::Int(31)));
        assert!(matches!(scalar("true", false).typed(), Typed::Str("true")));
    }
}
