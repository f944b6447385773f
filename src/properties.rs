//! [`Properties`]: an event's (and a context's extra) key-value pairs.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use smallvec::SmallVec;

use crate::text::{Key, Text};
use crate::value::{ALLOC_OVERHEAD, PropertyValue};

/// Properties stored in the event itself before they spill to the heap.
pub(crate) const INLINE_PROPERTIES: usize = 4;

/// An event's properties: string keys to [`PropertyValue`]s (numbers, booleans and strings as
/// they are, arrays and objects as JSON), in insertion order.
///
/// Inserting a key that is already present replaces its value in place. Keys given as literals
/// are not copied. Build them with [`props!`](crate::props) or [`track!`](macro@crate::track).
///
/// ```
/// use tower_telemetry::{props, Properties};
///
/// let mut p = props! { "model" => "flux-dev", "credits_cost" => 10 };
/// p.insert("model", "flux-schnell");
/// assert_eq!(p.len(), 2);
/// assert_eq!(p.get("model").unwrap(), "flux-schnell");
/// assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"model":"flux-schnell","credits_cost":10}"#);
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Properties {
    // Inline room for the few properties a typical event has: one allocation fewer per event
    // (and one cross-thread free fewer when a worker on another thread drops it).
    entries: SmallVec<[(Key, PropertyValue); INLINE_PROPERTIES]>,
}

impl Properties {
    /// No properties.
    pub const fn new() -> Self {
        Properties {
            entries: SmallVec::new_const(),
        }
    }

    /// No properties, with room for `n` without reallocating.
    #[inline]
    pub fn with_capacity(n: usize) -> Self {
        Properties {
            entries: SmallVec::with_capacity(n),
        }
    }

    /// Sets `key` to `value` serialized as JSON, replacing an earlier value of that key.
    ///
    /// A value whose `Serialize` implementation fails (a map with non-string keys, say) is
    /// stored as a string describing the error, so the event is never lost for one property.
    pub fn insert(&mut self, key: impl Into<Text>, value: impl Serialize) -> &mut Self {
        self.insert_value(key, PropertyValue::from_serialize(&value))
    }

    /// Sets `key` to `value` (a string literal, number or boolean converts without `serde`),
    /// replacing an earlier value of that key.
    ///
    /// ```
    /// use tower_telemetry::Properties;
    ///
    /// let mut p = Properties::new();
    /// p.insert_value("model", "flux-dev").insert_value("steps", 4);
    /// assert_eq!(p.get("steps").unwrap(), 4);
    /// ```
    pub fn insert_value(
        &mut self,
        key: impl Into<Text>,
        value: impl Into<PropertyValue>,
    ) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        match self
            .entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == key.as_str())
        {
            Some(slot) => slot.1 = value,
            None => self.entries.push((Key::from(key), value)),
        }
        self
    }

    /// `track!`'s insert: with `fresh` (its keys are distinct literals and these properties
    /// were empty) the key cannot be present yet, so it is appended without a search.
    #[doc(hidden)]
    #[inline(always)]
    pub fn __insert_value(
        &mut self,
        fresh: bool,
        key: &'static str,
        value: PropertyValue,
    ) -> &mut Self {
        if fresh {
            self.entries.push((Key::Static(key), value));
            self
        } else {
            self.insert_value(key, value)
        }
    }

    /// Sets `key` to an already built JSON value.
    pub fn insert_json(&mut self, key: impl Into<Text>, value: serde_json::Value) -> &mut Self {
        self.insert_value(key, value)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&PropertyValue> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<PropertyValue> {
        let i = self.entries.iter().position(|(k, _)| k.as_str() == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Adds the entries of `other` whose keys this one does not have (keys shared, not
    /// copied).
    pub(crate) fn merge_missing(&mut self, other: &Properties) {
        for (k, v) in &other.entries {
            if !self.contains_key(k.as_str()) {
                self.entries.push((k.clone(), v.clone()));
            }
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Removes every property (keeping the room they took).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many properties fit before reallocating.
    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Gives back the room of removed properties (after the limits cut some), so a kept
    /// handful never carries the storage of the many dropped.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// The storage of entries that spilled to the heap (none for the first few).
    #[inline]
    pub(crate) fn spilled_bytes(&self) -> usize {
        if self.entries.spilled() {
            self.entries.capacity() * size_of::<(Key, PropertyValue)>() + ALLOC_OVERHEAD
        } else {
            0
        }
    }

    /// An upper bound of the heap bytes these properties hold: spilled entries' storage,
    /// owned keys, and every value's [`PropertyValue::heap_bytes`]. One pass; literal keys and
    /// scalar values add nothing.
    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        let mut n = self.spilled_bytes();
        for (k, v) in &self.entries {
            if let Key::Shared(k) = k {
                // An `Arc<str>`: its counts, its bytes.
                n += k.len() + 16 + ALLOC_OVERHEAD;
            }
            n = n.saturating_add(v.heap_bytes());
        }
        n
    }

    /// The number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The properties in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &PropertyValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Mutable access to the values, in insertion order.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&str, &mut PropertyValue)> {
        self.entries.iter_mut().map(|(k, v)| (k.as_str(), v))
    }

    /// Keeps only the properties for which `f` returns true.
    pub fn retain(&mut self, mut f: impl FnMut(&str, &mut PropertyValue) -> bool) {
        self.entries.retain(|(k, v)| f(k.as_str(), v))
    }

    /// The properties as a JSON object (a copy).
    pub fn to_json_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_json()))
            .collect()
    }

    /// Builds properties from a JSON object's entries, in order.
    pub fn from_json_map(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Properties {
            entries: map
                .into_iter()
                .map(|(k, v)| (Key::from(k), PropertyValue::from(v)))
                .collect(),
        }
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl<K: Into<Text>, V: Serialize> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut p = Properties::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

impl<K: Into<Text>, V: Serialize> Extend<(K, V)> for Properties {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keep_order_and_replace() {
        let mut p = Properties::new();
        p.insert("b", 1).insert("a", "x").insert("b", 2);
        let keys: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(p.get("b").unwrap(), 2);
        assert_eq!(p.remove("b").unwrap(), 2);
        assert!(!p.contains_key("b"));
    }

    #[test]
    fn unserializable_value_is_kept_as_error_text() {
        let mut m = std::collections::HashMap::new();
        m.insert((1, 2), 3);
        let mut p = Properties::new();
        p.insert("bad", &m);
        assert!(
            p.get("bad")
                .unwrap()
                .as_str()
                .unwrap()
                .starts_with("<unserializable")
        );
    }
}
