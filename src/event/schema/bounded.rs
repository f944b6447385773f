//! Decoding within limits: a JSON value built only as far as its limits allow, what it
//! holds in memory charged to a budget before it is allocated (see
//! [`decode_event_with_limits`](super::decode_event_with_limits)).

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::limits::{LimitsConfig, MAX_DEPTH_LIMIT};

/// What a payload may still decode to, and the first limit it ran into.
pub(super) struct Budget {
    pub(super) left: Cell<usize>,
    pub(super) max: usize,
    pub(super) violation: Cell<Option<String>>,
}

impl Budget {
    /// Takes `n` bytes from the budget, or records why not.
    fn charge<E: serde::de::Error>(&self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(self.refuse(format!(
                "the event would hold more than {} bytes in memory",
                self.max
            ))),
        }
    }

    /// Records the first limit hit; the error that ends the decoding.
    fn refuse<E: serde::de::Error>(&self, why: String) -> E {
        let err = E::custom(&why);
        let first = self.violation.take();
        self.violation.set(first.or(Some(why)));
        err
    }
}

/// The top-level object: known fields read within their limits, others skipped unread.
pub(super) struct Root<'a> {
    pub(super) limits: &'a LimitsConfig,
    pub(super) budget: &'a Budget,
}

/// Entries of the top-level object (the known fields and some room for future ones).
const MAX_ROOT_FIELDS: usize = 64;

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let limits = self.limits;
        let mut obj = Map::new();
        let mut entries = 0;
        while let Some(key) = map.next_key::<Box<str>>()? {
            entries += 1;
            if entries > MAX_ROOT_FIELDS {
                return Err(self.budget.refuse(format!(
                    "the event object has more than {MAX_ROOT_FIELDS} fields"
                )));
            }
            let seed = match &*key {
                "properties" => Bounded {
                    budget: self.budget,
                    depth: limits.max_depth().saturating_add(1),
                    entries: limits.max_properties(),
                    string: limits.max_string_length(),
                    what: "a property",
                },
                // Flat: the known fields and the free-form ones, as deep as redaction looks.
                "context" => Bounded {
                    budget: self.budget,
                    depth: MAX_DEPTH_LIMIT + 1,
                    entries: limits.max_properties().saturating_add(16),
                    string: usize::MAX,
                    what: "a context field",
                },
                "v" | "id" | "name" | "kind" | "timestamp" => Bounded {
                    budget: self.budget,
                    depth: 0,
                    entries: 0,
                    string: usize::MAX,
                    what: "an event field",
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            self.budget.charge(key.len() + MAP_ENTRY)?;
            let value = map.next_value_seed(seed)?;
            obj.insert(key.into_string(), value);
        }
        Ok(obj)
    }
}

/// A map entry's share of a `BTreeMap` node (nodes but the root are at least half full).
const MAP_ENTRY: usize = crate::value::MAP_NODE / 5 + crate::value::ALLOC_OVERHEAD;

/// One JSON value, built only within its limits: `depth` container levels at most (0: a
/// scalar), `entries` per object or array, strings (and keys) of `string` bytes, and what it
/// holds in memory charged to the budget before it is allocated.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Budget,
    depth: usize,
    entries: usize,
    string: usize,
    /// What the value is, for the error.
    what: &'static str,
}

impl Bounded<'_> {
    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        match self.depth.checked_sub(1) {
            Some(depth) => Ok(Bounded { depth, ..self }),
            None => Err(self
                .budget
                .refuse(format!("{} is nested too deep", self.what))),
        }
    }

    fn string<E: serde::de::Error>(self, len: usize) -> Result<(), E> {
        if len > self.string {
            return Err(self.budget.refuse(format!(
                "{} has a string of {len} bytes; max_string_length is {}",
                self.what, self.string
            )));
        }
        self.budget.charge(len + crate::value::ALLOC_OVERHEAD)
    }

    fn count<E: serde::de::Error>(self, n: usize) -> Result<(), E> {
        if n > self.entries {
            return Err(self.budget.refuse(format!(
                "{} has more than {} entries in one object or array",
                self.what, self.entries
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.string(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.string(s.len())?;
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        // A vector's room may be twice its length while it grows.
        let slot = 2 * size_of::<Value>();
        self.budget.charge(crate::value::ALLOC_OVERHEAD)?;
        while let Some(item) = seq.next_element_seed(inner)? {
            self.count(items.len() + 1)?;
            self.budget.charge(slot)?;
            items.push(item);
        }
        items.shrink_to_fit();
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut obj = Map::new();
        // The first entry takes a whole node.
        let mut charge = crate::value::MAP_NODE;
        while let Some(key) = map.next_key::<String>()? {
            self.count(obj.len() + 1)?;
            self.string(key.len())?;
            self.budget.charge(charge)?;
            charge = MAP_ENTRY;
            let value = map.next_value_seed(inner)?;
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}
