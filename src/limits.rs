//! Limits on what one event may carry, and the pass that enforces them (with redaction).
//!
//! | limit | default | over the limit |
//! |---|---|---|
//! | `max_properties` | 64 | later properties are left out; also the most entries kept per nested object or array |
//! | `max_string_length` | 8 KiB | the string is cut at a character boundary; a longer key is left out |
//! | `max_depth` | 8 | a container nested deeper is replaced by `"[TRUNCATED]"` |
//! | `max_event_size` | 64 KiB | the event is rejected (serialized size of name, properties and context) |
//!
//! Each event that is cut is counted in [`Stats::truncated`](crate::Stats::truncated); each
//! rejected one in [`Stats::oversized`](crate::Stats::oversized); both are logged at most every
//! 10 s. Nothing panics, and what is kept is bounded whatever the input.
//!
//! The pass walks the properties once, after the routing and sampling decision (an event that
//! goes nowhere is never looked at) and before the event is shared with destinations. The size
//! is not measured by serializing: the walk adds up an upper bound (a string counts six bytes
//! per byte, the worst case of JSON escaping), and only an event whose bound exceeds
//! `max_event_size` is serialized — into a byte counter, without allocating — to measure it
//! exactly. A normal event costs one pass over its few properties.
//!
//! ```
//! use std::time::Duration;
//! use tower_telemetry::{Telemetry, track, limits::LimitsConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder()
//!     .memory_destination("memory")
//!     .limits(LimitsConfig::default().with_max_string_length(4))
//!     .build()
//!     .unwrap();
//! track!(&telemetry => "user.note", text = "abcdefgh");
//! telemetry.flush(Duration::from_secs(1)).await;
//!
//! assert_eq!(telemetry.memory("memory").unwrap().events()[0].properties().get("text").unwrap(), "abcd");
//! assert_eq!(telemetry.stats().truncated, 1);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::context::Context;
use crate::event::Properties;
use crate::redact::Redactor;
use crate::text::floor_char_boundary;
use crate::value::{Limit, PropertyValue};

pub use crate::event::MAX_NAME_LEN;

/// Default most properties per event (and entries per nested object or array).
pub const DEFAULT_MAX_PROPERTIES: usize = 64;
/// Default longest string value, in bytes.
pub const DEFAULT_MAX_STRING_LENGTH: usize = 8 * 1024;
/// Default deepest nesting of objects and arrays inside a property value.
pub const DEFAULT_MAX_DEPTH: usize = 8;
/// Default largest serialized event, in bytes.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 64 * 1024;
/// The largest `max_depth` accepted (the pass recurses that deep).
pub const MAX_DEPTH_LIMIT: usize = 64;

/// What replaces a value nested deeper than `max_depth`.
pub(crate) const TOO_DEEP: &str = "[TRUNCATED]";

/// What one event may carry (`telemetry.limits`). See the [module docs](self).
///
/// ```
/// use tower_telemetry::limits::LimitsConfig;
///
/// let limits = LimitsConfig::default().with_max_properties(16).with_max_event_size(16 * 1024);
/// assert_eq!(limits.max_properties(), 16);
/// assert_eq!(limits.max_depth(), 8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub(crate) max_properties: usize,
    pub(crate) max_string_length: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_event_size: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_properties: DEFAULT_MAX_PROPERTIES,
            max_string_length: DEFAULT_MAX_STRING_LENGTH,
            max_depth: DEFAULT_MAX_DEPTH,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
        }
    }
}

impl LimitsConfig {
    /// Most properties per event, and entries per nested object or array. Defaults to
    /// [`DEFAULT_MAX_PROPERTIES`].
    pub fn with_max_properties(mut self, n: usize) -> Self {
        self.max_properties = n;
        self
    }

    /// Longest string value (and key), in bytes. Defaults to [`DEFAULT_MAX_STRING_LENGTH`].
    pub fn with_max_string_length(mut self, n: usize) -> Self {
        self.max_string_length = n;
        self
    }

    /// Deepest nesting of objects and arrays in a property value (0: none allowed), at most
    /// [`MAX_DEPTH_LIMIT`]. Defaults to [`DEFAULT_MAX_DEPTH`].
    pub fn with_max_depth(mut self, n: usize) -> Self {
        self.max_depth = n.min(MAX_DEPTH_LIMIT);
        self
    }

    /// Largest serialized event, in bytes. Defaults to [`DEFAULT_MAX_EVENT_SIZE`].
    pub fn with_max_event_size(mut self, n: usize) -> Self {
        self.max_event_size = n;
        self
    }

    /// The property limit.
    pub fn max_properties(&self) -> usize {
        self.max_properties
    }

    /// The string length limit.
    pub fn max_string_length(&self) -> usize {
        self.max_string_length
    }

    /// The depth limit.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The serialized size limit.
    pub fn max_event_size(&self) -> usize {
        self.max_event_size
    }
}

/// What the pass did to one event.
/// Which limits cut an event: bits of [`Outcome::cut`].
pub(crate) mod cut {
    /// `max_string_length` (bit 0, so a `bool` ORs in unchanged).
    pub(crate) const STRING_LENGTH: u8 = 1;
    /// `max_properties`, of the event or of a nested array or object.
    pub(crate) const PROPERTIES: u8 = 2;
    /// `max_depth`.
    pub(crate) const DEPTH: u8 = 4;
    /// `max_event_size`: the event was trimmed to fit (`telemetry::trim`).
    pub(crate) const SIZE: u8 = 8;
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// What was cut (a property, a string, a nested value): [`cut`] bits, 0 for nothing.
    pub(crate) cut: u8,
    /// Values replaced by redaction.
    pub(crate) redacted: usize,
    /// The event is too large even so: its serialized size.
    pub(crate) oversized: Option<usize>,
}

/// Redaction and limits, compiled once per handle.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) redactor: Redactor,
    pub(crate) limits: LimitsConfig,
    /// Tells this policy's cached context checks from another handle's (never 0, never
    /// reused: see `redact::next_policy_id`).
    pub(crate) id: u64,
}

impl Outcome {
    /// Something was cut.
    #[inline]
    pub(crate) fn truncated(&self) -> bool {
        self.cut != 0
    }

    /// The limits this outcome ran into, written as a user sets them in `telemetry.limits`
    /// (`max_string_length: 8192`), for warnings.
    pub(crate) fn limits_hit<'a>(&'a self, limits: &'a LimitsConfig) -> LimitsHit<'a> {
        LimitsHit {
            outcome: self,
            limits,
        }
    }
}

/// [`Outcome::limits_hit`]: `max_event_size: 65536` for a rejected event, else the limits
/// that cut it, comma-separated.
pub(crate) struct LimitsHit<'a> {
    outcome: &'a Outcome,
    limits: &'a LimitsConfig,
}

impl fmt::Display for LimitsHit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.limits;
        if self.outcome.oversized.is_some() {
            return write!(f, "max_event_size: {}", l.max_event_size);
        }
        let mut sep = "";
        for (bit, key, value) in [
            (cut::STRING_LENGTH, "max_string_length", l.max_string_length),
            (cut::PROPERTIES, "max_properties", l.max_properties),
            (cut::DEPTH, "max_depth", l.max_depth),
            (cut::SIZE, "max_event_size", l.max_event_size),
        ] {
            if self.outcome.cut & bit != 0 {
                write!(f, "{sep}{key}: {value}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

impl Policy {
    pub(crate) fn new(redactor: Redactor, limits: LimitsConfig) -> Policy {
        Policy {
            redactor,
            limits,
            id: crate::redact::next_policy_id(),
        }
    }
}

/// Bytes an event takes besides its name, properties and context (id, category, timestamp,
/// field names): a generous constant.
pub(crate) const OVERHEAD: usize = 192;

impl Policy {
    /// Whether no key of `props` is too long or redacted: then [`Policy::apply`] may skip the
    /// keys (`keys_clean`).
    pub(crate) fn keys_clean(&self, props: &Properties) -> bool {
        props
            .iter()
            .all(|(k, _)| k.len() <= self.limits.max_string_length && !self.redactor.matches(k))
    }

    /// Redacts and limits `props` and redacts `ctx` (copy on write), in place.
    ///
    /// `keys_clean`: the caller knows that no key is too long or redacted (a `track!` call
    /// site's literal keys, checked once with [`Policy::keys_clean`]), so only values are looked
    /// at.
    #[cfg(test)]
    pub(crate) fn apply(
        &self,
        name: &str,
        props: &mut Properties,
        ctx: &mut Arc<Context>,
        keys_clean: bool,
    ) -> Outcome {
        let (size, out) = self.properties(props, keys_clean);
        self.finish(name, props, ctx, size, out)
    }

    /// The properties' part of [`Policy::apply`]: redacts and limits `props` in place; returns an
    /// upper bound of their serialized size and what was done to them.
    ///
    /// For a `track!` call site whose values are literals, numbers or booleans, the result is the
    /// same for every event (given the policy), so the call site remembers a clean result and
    /// skips this (see `Callsite::fixed_bound`).
    pub(crate) fn properties(&self, props: &mut Properties, keys_clean: bool) -> (usize, Outcome) {
        let mut w = Walk {
            policy: self,
            out: Outcome::default(),
            size: 0,
        };
        let limits = &self.limits;
        if props.len() > limits.max_properties {
            let mut kept = 0;
            props.retain(|_, _| {
                kept += 1;
                kept <= limits.max_properties
            });
            // The room of the dropped ones goes too: what is kept is what is held.
            props.shrink_to_fit();
            w.out.cut |= cut::PROPERTIES;
        }
        // `entry` drops only entries whose key is too long: without one, no `retain` shuffle.
        if keys_clean {
            for (k, v) in props.iter_mut() {
                w.size += bound_str(k) + 1;
                w.property_value(v);
            }
        } else if props
            .iter()
            .any(|(k, _)| k.len() > limits.max_string_length)
        {
            props.retain(|k, v| w.property(k, v));
            props.shrink_to_fit();
        } else {
            for (k, v) in props.iter_mut() {
                w.property(k, v);
            }
        }
        (w.size, w.out)
    }

    /// The rest of [`Policy::apply`] after [`Policy::properties`] (whose size bound and outcome
    /// are `props_size` and `out`): redacts `ctx` and checks the event's size.
    pub(crate) fn finish(
        &self,
        name: &str,
        props: &Properties,
        ctx: &mut Arc<Context>,
        props_size: usize,
        out: Outcome,
    ) -> Outcome {
        let mut w = Walk {
            policy: self,
            out,
            size: (OVERHEAD + name.len()).saturating_add(props_size),
        };
        let limits = &self.limits;
        let redactor = &self.redactor;
        let (mut ctx_size, redact) = ctx.examined(self.id, |ctx| self.examine(ctx));
        if redact {
            let mut c = (**ctx).clone();
            w.out.redacted += redactor.redact_context(&mut c, MAX_DEPTH_LIMIT);
            // A replacement may be longer than the short secret it replaced.
            ctx_size += (c.fields().len() + 2) * bound_value(&redactor.replacement());
            *ctx = Arc::new(c);
        }
        w.size += ctx_size;
        if w.size > limits.max_event_size {
            // Rare: the bound is pessimistic, so measure exactly (no allocation).
            let exact = OVERHEAD + name.len() + json_len(props) + json_len(&**ctx);
            if exact > limits.max_event_size {
                w.out.oversized = Some(exact);
            }
        }
        w.out
    }
}

impl Policy {
    /// A context's cached check: an upper bound of both its serialized size and the bytes it
    /// holds in memory (the larger of the two: the size check only gets more careful), and
    /// whether it needs redaction.
    fn examine(&self, ctx: &Context) -> (usize, bool) {
        let redactor = &self.redactor;
        // Each set field: its bound plus 16 for its key and punctuation; `bound_len` is
        // linear, so one multiplication covers them all.
        let (n, bytes) = ctx.known_lengths();
        let mut size = bound_len(bytes)
            .saturating_sub(2)
            .saturating_add(n.saturating_mul(2 + 16));
        for (k, v) in ctx.fields().iter() {
            size += bound_str(k) + 1 + bound_property(v);
        }
        let redact = redactor.finds_in_context(ctx, MAX_DEPTH_LIMIT);
        (size.max(crate::event::context_held(ctx)), redact)
    }

    /// [`held_size`](crate::event::held_size) of an event this policy just passed
    /// ([`Policy::finish`]), from the context's cached check (no walk of the context).
    /// `fixed`: every value is a literal, a number or a boolean (`track!`'s call-site verdict),
    /// so the properties hold nothing but their spilled storage.
    #[inline]
    pub(crate) fn held_size(&self, props: &Properties, ctx: &Context, fixed: bool) -> usize {
        let (ctx_held, _) = ctx.examined(self.id, |ctx| self.examine(ctx));
        let props_held = if fixed {
            props.spilled_bytes()
        } else {
            props.heap_bytes()
        };
        crate::event::EVENT_HELD
            .saturating_add(props_held)
            .saturating_add(ctx_held)
    }
}

struct Walk<'a> {
    policy: &'a Policy,
    out: Outcome,
    /// An upper bound of the serialized size so far.
    size: usize,
}

impl Walk<'_> {
    /// Whether to keep an entry with this key (a longer key than a string may be is left
    /// out); counts the key's size.
    fn key(&mut self, key: &str) -> bool {
        if key.len() > self.policy.limits.max_string_length {
            self.out.cut |= cut::STRING_LENGTH;
            return false;
        }
        self.size += bound_str(key) + 1;
        true
    }

    /// One property: whether to keep it (redacting or limiting its value).
    fn property(&mut self, key: &str, value: &mut PropertyValue) -> bool {
        if !self.key(key) {
            return false;
        }
        if self.policy.redactor.matches(key) {
            *value = self.policy.redactor.replacement_value();
            self.out.redacted += 1;
            self.size += bound_property(value);
            return true;
        }
        self.property_value(value);
        true
    }

    /// A property's value (its key passed): limited, and its size counted.
    #[inline]
    fn property_value(&mut self, value: &mut PropertyValue) {
        match value.limit(self.policy.limits.max_string_length) {
            Limit::Str { len, cut } => {
                // `cut::STRING_LENGTH` is bit 0: the same OR as into a `bool`.
                self.out.cut |= u8::from(cut);
                self.size += bound_len(len);
            }
            Limit::Json(json) => self.value(json, 0),
            Limit::Number => self.size += 24,
            Limit::Other => self.size += 5,
        }
    }

    /// One entry of a nested object: whether to keep it (redacting or limiting its value).
    fn entry(&mut self, key: &str, value: &mut Value, level: usize) -> bool {
        if !self.key(key) {
            return false;
        }
        if self.policy.redactor.matches(key) {
            *value = self.policy.redactor.replacement();
            self.out.redacted += 1;
            self.size += bound_value(value);
            return true;
        }
        self.value(value, level);
        true
    }

    fn value(&mut self, value: &mut Value, level: usize) {
        let limits = &self.policy.limits;
        match value {
            Value::String(s) => {
                if s.len() > limits.max_string_length {
                    let cut = floor_char_boundary(s, limits.max_string_length);
                    s.truncate(cut);
                    s.shrink_to_fit();
                    self.out.cut |= cut::STRING_LENGTH;
                }
                self.size += bound_str(s);
            }
            Value::Array(_) | Value::Object(_) if level >= limits.max_depth => {
                *value = Value::String(TOO_DEEP.to_owned());
                self.out.cut |= cut::DEPTH;
                self.size += TOO_DEEP.len() + 2;
            }
            Value::Array(items) => {
                if items.len() > limits.max_properties {
                    items.truncate(limits.max_properties);
                    // A million-element list cut to 64 must not keep the million's room.
                    items.shrink_to_fit();
                    self.out.cut |= cut::PROPERTIES;
                }
                self.size += 2;
                for item in items.iter_mut() {
                    self.size += 1;
                    self.value(item, level + 1);
                }
            }
            Value::Object(map) => {
                if map.len() > limits.max_properties {
                    let mut kept = 0;
                    map.retain(|_, _| {
                        kept += 1;
                        kept <= limits.max_properties
                    });
                    self.out.cut |= cut::PROPERTIES;
                }
                self.size += 2;
                map.retain(|k, v| {
                    self.size += 1;
                    self.entry(k, v, level + 1)
                });
            }
            Value::Number(_) => self.size += 24,
            Value::Bool(_) | Value::Null => self.size += 5,
        }
    }
}

/// An upper bound of a string's JSON length: every byte escaped as `\u00XX`, plus quotes.
#[inline]
fn bound_str(s: &str) -> usize {
    bound_len(s.len())
}

/// [`bound_str`] of a string of `len` bytes.
#[inline]
fn bound_len(len: usize) -> usize {
    len.saturating_mul(6).saturating_add(2)
}

/// An upper bound of a property's JSON length.
fn bound_property(v: &PropertyValue) -> usize {
    if let Some(s) = v.as_str() {
        bound_str(s)
    } else if let Some(json) = v.as_json() {
        bound_value(json)
    } else if v.as_f64().is_some() {
        24
    } else {
        5
    }
}

/// An upper bound of a value's JSON length (not limited: context fields).
fn bound_value(v: &Value) -> usize {
    match v {
        Value::String(s) => bound_str(s),
        Value::Array(items) => items
            .iter()
            .fold(2usize, |n, i| n.saturating_add(1 + bound_value(i))),
        Value::Object(map) => map.iter().fold(2usize, |n, (k, v)| {
            n.saturating_add(bound_str(k) + 2 + bound_value(v))
        }),
        Value::Number(_) => 24,
        Value::Bool(_) | Value::Null => 5,
    }
}

/// The exact serialized length, counted without building the bytes.
pub(crate) fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, value) {
        Ok(()) => c.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests;
