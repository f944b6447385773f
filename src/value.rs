//! Property values: numbers, booleans and strings stored as they are, JSON only for containers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;

/// The value of one property (or one free-form context field).
///
/// Numbers, booleans, `null` and strings are stored as they are: a string literal is not
/// even copied, so `track!("x", model = "flux-dev")` allocates nothing for its value. Arrays
/// and objects are kept as JSON. Nothing is converted to JSON until a destination serializes
/// the event, and what a destination writes is exactly what `serde_json` would have written for
/// the original value.
///
/// It compares with JSON values, strings, numbers and booleans the way [`serde_json::Value`]
/// does, so assertions read naturally:
///
/// ```
/// use serde_json::json;
/// use tower_telemetry::{props, PropertyValue};
///
/// let p = props! { "model" => "flux-dev", "steps" => 4, "ratio" => 0.5, "tags" => ["a", "b"] };
/// assert_eq!(p.get("model").unwrap(), "flux-dev");
/// assert_eq!(p.get("steps").unwrap(), 4);
/// assert_eq!(p.get("ratio").unwrap().as_f64(), Some(0.5));
/// assert_eq!(*p.get("tags").unwrap(), json!(["a", "b"]));
/// assert_eq!(PropertyValue::from("flux-dev").as_str(), Some("flux-dev"));
/// ```
#[derive(Clone, Default)]
pub struct PropertyValue(Repr);

#[derive(Clone, Default)]
enum Repr {
    #[default]
    Null,
    Bool(bool),
    /// Every integer that fits `i64`: one representation per number, so equality is simple.
    I64(i64),
    /// Only integers above `i64::MAX`.
    U64(u64),
    /// A finite float (non-finite ones are `Null`, as in `serde_json`).
    F64(f64),
    Static(&'static str),
    Owned(Box<str>),
    /// Arrays and objects (never a scalar: those are normalized to the variants above).
    Json(Box<Json>),
}

impl PropertyValue {
    /// `null`.
    pub const NULL: PropertyValue = PropertyValue(Repr::Null);

    /// A string literal (or any `'static` string), not copied.
    pub const fn from_static(s: &'static str) -> PropertyValue {
        PropertyValue(Repr::Static(s))
    }

    /// Any `Serialize` value, as `serde_json` would serialize it. A value whose `Serialize`
    /// implementation fails (a map with non-string keys, say) becomes a string describing the
    /// error, so an event is never lost for one property.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> PropertyValue {
        match serde_json::to_value(value) {
            Ok(v) => PropertyValue::from(v),
            Err(e) => PropertyValue::from(format!("<unserializable: {e}>")),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Repr::Static(s) => Some(s),
            Repr::Owned(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Repr::I64(n) => Some(n),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            Repr::I64(n) => u64::try_from(n).ok(),
            Repr::U64(n) => Some(n),
            _ => None,
        }
    }

    /// The number as a float, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self.0 {
            Repr::I64(n) => Some(n as f64),
            Repr::U64(n) => Some(n as f64),
            Repr::F64(n) => Some(n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            Repr::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.0, Repr::Null)
    }

    /// The array or object, if this is one (scalars are not stored as JSON).
    pub fn as_json(&self) -> Option<&Json> {
        match &self.0 {
            Repr::Json(v) => Some(v),
            _ => None,
        }
    }

    /// An array's element or an object's value, like [`serde_json::Value::get`].
    pub fn get<I: serde_json::value::Index>(&self, index: I) -> Option<&Json> {
        self.as_json().and_then(|v| v.get(index))
    }

    /// A JSON copy of the value.
    pub fn to_json(&self) -> Json {
        match &self.0 {
            Repr::Null => Json::Null,
            Repr::Bool(b) => Json::Bool(*b),
            Repr::I64(n) => Json::from(*n),
            Repr::U64(n) => Json::from(*n),
            Repr::F64(n) => Json::from(*n),
            Repr::Static(s) => Json::String((*s).to_owned()),
            Repr::Owned(s) => Json::String(s.to_string()),
            Repr::Json(v) => (**v).clone(),
        }
    }

    /// The value as JSON.
    pub fn into_json(self) -> Json {
        match self.0 {
            Repr::Json(v) => *v,
            Repr::Owned(s) => Json::String(s.into_string()),
            _ => self.to_json(),
        }
    }

    /// The array or object, to change it in place (redaction, limits).
    pub(crate) fn json_mut(&mut self) -> Option<&mut Json> {
        match &mut self.0 {
            Repr::Json(v) => Some(v),
            _ => None,
        }
    }

    /// For the limits pass, in one look at the value: a string is cut to `max` bytes (at a
    /// character boundary); a container's JSON is handed over to be walked.
    #[inline]
    pub(crate) fn limit(&mut self, max: usize) -> Limit<'_> {
        let cut = |s: &str| crate::text::floor_char_boundary(s, max);
        match &mut self.0 {
            Repr::Static(s) => {
                let long = s.len() > max;
                if long {
                    *s = &s[..cut(s)];
                }
                Limit::Str {
                    len: s.len(),
                    cut: long,
                }
            }
            Repr::Owned(s) => {
                let long = s.len() > max;
                if long {
                    *s = Box::from(&s[..cut(s)]);
                }
                Limit::Str {
                    len: s.len(),
                    cut: long,
                }
            }
            Repr::Json(v) => Limit::Json(v),
            Repr::I64(_) | Repr::U64(_) | Repr::F64(_) => Limit::Number,
            Repr::Bool(_) | Repr::Null => Limit::Other,
        }
    }
}

impl PropertyValue {
    /// An upper bound of the heap bytes this value holds (see [`crate::event::Event::held`]):
    /// an owned string's bytes, a container's [`json_heap`] plus its box; nothing for
    /// literals, numbers, booleans and `null`.
    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Owned(s) if !s.is_empty() => s.len() + ALLOC_OVERHEAD,
            Repr::Json(v) => (size_of::<Json>() + ALLOC_OVERHEAD).saturating_add(json_heap(v)),
            _ => 0,
        }
    }
}

/// What one heap allocation may cost besides the bytes asked for (the allocator's header and
/// rounding up): counted per allocation, so that many tiny ones are not under-estimated.
pub(crate) const ALLOC_OVERHEAD: usize = 16;

/// A `BTreeMap` node: 11 keys, 11 values, 12 child pointers and a header, generously.
pub(crate) const MAP_NODE: usize =
    11 * (size_of::<String>() + size_of::<Json>()) + 12 * size_of::<usize>() + 16 + ALLOC_OVERHEAD;

/// An upper bound of the heap bytes a JSON value holds besides its own slot: strings'
/// capacities, arrays' capacities times the slot size, objects' nodes (every node but the root
/// is at least half full, 5 entries), nested. Linear in the value's size.
pub(crate) fn json_heap(v: &Json) -> usize {
    match v {
        Json::String(s) if s.capacity() > 0 => s.capacity() + ALLOC_OVERHEAD,
        Json::Array(items) if items.capacity() > 0 => items.iter().fold(
            items.capacity() * size_of::<Json>() + ALLOC_OVERHEAD,
            |n, i| n.saturating_add(json_heap(i)),
        ),
        Json::Object(map) if !map.is_empty() => {
            map.iter()
                .fold((map.len() / 5 + 1) * MAP_NODE, |n, (k, v)| {
                    n.saturating_add(k.capacity() + ALLOC_OVERHEAD)
                        .saturating_add(json_heap(v))
                })
        }
        _ => 0,
    }
}

/// Indexes into an array or object like [`serde_json::Value`] does: `value["key"]`,
/// `value[0]`; anything missing (or a scalar) gives `null`.
impl<I: serde_json::value::Index> std::ops::Index<I> for PropertyValue {
    type Output = Json;

    fn index(&self, index: I) -> &Json {
        static NULL: Json = Json::Null;
        match &self.0 {
            Repr::Json(v) => &v[index],
            _ => &NULL,
        }
    }
}

/// What [`PropertyValue::limit`] found.
pub(crate) enum Limit<'a> {
    /// A string of `len` bytes (after the cut), and whether it was cut.
    Str { len: usize, cut: bool },
    /// An array or object.
    Json(&'a mut Json),
    /// A number.
    Number,
    /// A boolean or `null`.
    Other,
}

impl Serialize for PropertyValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Null => s.serialize_unit(),
            Repr::Bool(b) => s.serialize_bool(*b),
            Repr::I64(n) => s.serialize_i64(*n),
            Repr::U64(n) => s.serialize_u64(*n),
            Repr::F64(n) => s.serialize_f64(*n),
            Repr::Static(v) => s.serialize_str(v),
            Repr::Owned(v) => s.serialize_str(v),
            Repr::Json(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Json::deserialize(d).map(PropertyValue::from)
    }
}

impl fmt::Debug for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Null => f.write_str("null"),
            Repr::Bool(b) => fmt::Debug::fmt(b, f),
            Repr::I64(n) => fmt::Debug::fmt(n, f),
            Repr::U64(n) => fmt::Debug::fmt(n, f),
            Repr::F64(n) => fmt::Debug::fmt(n, f),
            Repr::Static(s) => fmt::Debug::fmt(s, f),
            Repr::Owned(s) => fmt::Debug::fmt(s, f),
            Repr::Json(v) => fmt::Debug::fmt(v, f),
        }
    }
}

impl From<Json> for PropertyValue {
    fn from(v: Json) -> Self {
        PropertyValue(match v {
            Json::Null => Repr::Null,
            Json::Bool(b) => Repr::Bool(b),
            Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Repr::I64(i),
                (None, Some(u), _) => Repr::U64(u),
                (None, None, Some(f)) => Repr::F64(f),
                // Only with serde_json's `arbitrary_precision`: keep the number as it is.
                (None, None, None) => Repr::Json(Box::new(Json::Number(n))),
            },
            Json::String(s) => Repr::Owned(s.into_boxed_str()),
            other => Repr::Json(Box::new(other)),
        })
    }
}

impl From<PropertyValue> for Json {
    fn from(v: PropertyValue) -> Json {
        v.into_json()
    }
}

impl From<&'static str> for PropertyValue {
    fn from(s: &'static str) -> Self {
        PropertyValue(Repr::Static(s))
    }
}

impl From<String> for PropertyValue {
    fn from(s: String) -> Self {
        PropertyValue(Repr::Owned(s.into_boxed_str()))
    }
}

impl From<Box<str>> for PropertyValue {
    fn from(s: Box<str>) -> Self {
        PropertyValue(Repr::Owned(s))
    }
}

impl From<bool> for PropertyValue {
    fn from(b: bool) -> Self {
        PropertyValue(Repr::Bool(b))
    }
}

impl From<()> for PropertyValue {
    fn from(_: ()) -> Self {
        PropertyValue::NULL
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for PropertyValue {
            fn from(n: $t) -> Self {
                PropertyValue(Repr::I64(n as i64))
            }
        }
    )*};
}
from_signed!(i8, i16, i32, i64, isize, u8, u16, u32);

macro_rules! from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for PropertyValue {
            fn from(n: $t) -> Self {
                let n = n as u64;
                PropertyValue(match i64::try_from(n) {
                    Ok(i) => Repr::I64(i),
                    Err(_) => Repr::U64(n),
                })
            }
        }
    )*};
}
from_unsigned!(u64, usize);

impl From<f64> for PropertyValue {
    fn from(n: f64) -> Self {
        PropertyValue(if n.is_finite() {
            Repr::F64(n)
        } else {
            Repr::Null
        })
    }
}

impl From<f32> for PropertyValue {
    fn from(n: f32) -> Self {
        PropertyValue::from(f64::from(n))
    }
}

impl<T: Into<PropertyValue>> From<Option<T>> for PropertyValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(PropertyValue::NULL, Into::into)
    }
}

impl PartialEq for PropertyValue {
    fn eq(&self, other: &PropertyValue) -> bool {
        match (&self.0, &other.0) {
            (Repr::Null, Repr::Null) => true,
            (Repr::Bool(a), Repr::Bool(b)) => a == b,
            (Repr::I64(a), Repr::I64(b)) => a == b,
            (Repr::U64(a), Repr::U64(b)) => a == b,
            (Repr::F64(a), Repr::F64(b)) => a == b,
            (Repr::Json(a), Repr::Json(b)) => a == b,
            _ => match (self.as_str(), other.as_str()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

impl PartialEq<Json> for PropertyValue {
    fn eq(&self, other: &Json) -> bool {
        match (&self.0, other) {
            (Repr::Null, Json::Null) => true,
            (Repr::Bool(a), Json::Bool(b)) => a == b,
            (Repr::I64(a), Json::Number(b)) => b.as_i64() == Some(*a),
            (Repr::U64(a), Json::Number(b)) => b.as_u64() == Some(*a),
            (Repr::F64(a), Json::Number(b)) => b.is_f64() && b.as_f64() == Some(*a),
            (Repr::Json(a), b) => **a == *b,
            (_, Json::String(b)) => self.as_str() == Some(b.as_str()),
            _ => false,
        }
    }
}

impl PartialEq<PropertyValue> for Json {
    fn eq(&self, other: &PropertyValue) -> bool {
        other == self
    }
}

impl PartialEq<str> for PropertyValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for PropertyValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<String> for PropertyValue {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == Some(other.as_str())
    }
}

impl PartialEq<bool> for PropertyValue {
    fn eq(&self, other: &bool) -> bool {
        self.as_bool() == Some(*other)
    }
}

impl PartialEq<f64> for PropertyValue {
    fn eq(&self, other: &f64) -> bool {
        self.as_f64() == Some(*other)
    }
}

macro_rules! eq_int {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for PropertyValue {
            fn eq(&self, other: &$t) -> bool {
                match self.0 {
                    Repr::I64(n) => i128::from(n) == *other as i128,
                    Repr::U64(n) => i128::from(n) == *other as i128,
                    _ => false,
                }
            }
        }
        impl PartialEq<$t> for &PropertyValue {
            fn eq(&self, other: &$t) -> bool {
                **self == *other
            }
        }
    )*};
}
eq_int!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl PartialEq<bool> for &PropertyValue {
    fn eq(&self, other: &bool) -> bool {
        **self == *other
    }
}

impl PartialEq<f64> for &PropertyValue {
    fn eq(&self, other: &f64) -> bool {
        **self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every kind of value serializes exactly as `serde_json` serializes the original.
    #[test]
    fn serializes_as_serde_json_does() {
        let samples = [
            json!(null),
            json!(true),
            json!(-3),
            json!(u64::MAX),
            json!(1.5),
            json!("tab\there \u{7f} é"),
            json!([1, "a", {"b": null}]),
            json!({"k": [1.25, false]}),
        ];
        for j in samples {
            let v = PropertyValue::from(j.clone());
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                serde_json::to_string(&j).unwrap()
            );
            assert_eq!(v, j, "{j}");
            assert_eq!(j, v, "{j}");
            assert_eq!(v.to_json(), j);
            assert_eq!(v.clone().into_json(), j);
            let back: PropertyValue = serde_json::from_str(&j.to_string()).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn from_serialize_matches_the_typed_conversions() {
        assert_eq!(PropertyValue::from_serialize(&4u8), PropertyValue::from(4));
        assert_eq!(PropertyValue::from_serialize("x"), PropertyValue::from("x"));
        assert_eq!(
            PropertyValue::from_serialize(&u64::MAX),
            PropertyValue::from(u64::MAX)
        );
        assert_eq!(
            PropertyValue::from_serialize(&f64::NAN),
            PropertyValue::NULL
        );
        assert_eq!(PropertyValue::from(f64::INFINITY), PropertyValue::NULL);
        assert_eq!(
            PropertyValue::from_serialize(&Some(2.5)),
            PropertyValue::from(2.5)
        );
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        let v = PropertyValue::from_serialize(&bad);
        assert!(v.as_str().unwrap().starts_with("<unserializable"), "{v:?}");
    }

    #[test]
    fn numbers_compare_like_serde_json_numbers() {
        assert_eq!(PropertyValue::from(4u64), 4);
        assert_eq!(PropertyValue::from(4i8), PropertyValue::from(4usize));
        assert_ne!(
            PropertyValue::from(4),
            json!(4.0),
            "an integer is not a float"
        );
        assert_ne!(PropertyValue::from(4.0), json!(4));
        assert_eq!(PropertyValue::from(u64::MAX), u64::MAX);
        assert_ne!(PropertyValue::from(-1), u64::MAX);
        assert_eq!(PropertyValue::from(-1).as_u64(), None);
        assert_eq!(PropertyValue::from("1"), "1");
        assert_ne!(PropertyValue::from("1"), 1);
        assert_eq!(
            PropertyValue::from("s"),
            PropertyValue::from(String::from("s"))
        );
    }

    #[test]
    fn strings_are_cut_at_character_boundaries() {
        let cut = |v: &mut PropertyValue, max| match v.limit(max) {
            Limit::Str { len, cut } => Some((len, cut)),
            _ => None,
        };
        let mut s = PropertyValue::from("ééé");
        assert_eq!(cut(&mut s, 3), Some((2, true)));
        assert_eq!(s, "é");
        let mut o = PropertyValue::from(String::from("ééé"));
        assert_eq!(cut(&mut o, 5), Some((4, true)));
        assert_eq!(o, "éé");
        assert_eq!(cut(&mut o, 100), Some((4, false)));
        let mut n = PropertyValue::from(12345);
        assert_eq!(cut(&mut n, 1), None, "only strings are cut");
        assert_eq!(n, 12345);
    }

    #[test]
    fn is_no_larger_than_a_json_value() {
        assert!(std::mem::size_of::<PropertyValue>() <= std::mem::size_of::<Json>());
    }
}
