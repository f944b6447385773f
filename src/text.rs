//! [`Text`]: the cheaply clonable string used for event names and context fields.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// An immutable string that is free to clone.
///
/// Literals are stored as `&'static str` (no allocation at all); owned strings are moved into
/// one shared allocation, so copying a [`Text`] into every event of a request is a reference
/// count bump. It dereferences to `str` and compares equal to `str` and `String`.
///
/// ```
/// use tower_telemetry::Text;
///
/// let a = Text::from("generation.started");          // no allocation
/// let b = Text::from(format!("user_{}", 42));         // one allocation, shared by clones
/// assert_eq!(a, "generation.started");
/// assert_eq!(b.clone().len(), 7);
/// ```
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
    // The parts of a request are kept as the request's own reference-counted buffers: copying
    // them into a context costs a reference count bump, not an allocation.
    /// A header value known to be UTF-8.
    Header(http::HeaderValue),
    /// The path of a request target.
    Path(http::uri::PathAndQuery),
    /// The query of a request target (known to have one).
    Query(http::uri::PathAndQuery),
    /// axum's matched route template.
    Route(axum::extract::MatchedPath),
}

impl Text {
    /// A `Text` borrowing a string literal; usable in `const` items.
    pub const fn from_static(s: &'static str) -> Self {
        Text(Repr::Static(s))
    }

    /// The text as a `str`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
            // Checked when built (`from_header`), so this never falls back.
            // std's UTF-8 check runs a word at a time on ASCII; `HeaderValue::to_str` goes
            // byte by byte.
            Repr::Header(v) => std::str::from_utf8(v.as_bytes()).unwrap_or_default(),
            Repr::Path(pq) => pq.path(),
            Repr::Query(pq) => pq.query().unwrap_or_default(),
            Repr::Route(m) => m.as_str(),
        }
    }

    /// The length in bytes, without re-checking a header value's UTF-8 (as `len()` through
    /// `as_str` does).
    #[inline]
    pub(crate) fn byte_len(&self) -> usize {
        match &self.0 {
            Repr::Static(s) => s.len(),
            Repr::Shared(s) => s.len(),
            Repr::Header(v) => v.len(),
            Repr::Path(pq) => pq.path().len(),
            Repr::Query(pq) => pq.query().map_or(0, str::len),
            Repr::Route(m) => m.as_str().len(),
        }
    }

    /// A header value's text without copying it; `None` if it is not UTF-8.
    pub(crate) fn from_header(value: &http::HeaderValue) -> Option<Text> {
        std::str::from_utf8(value.as_bytes()).ok()?;
        Some(Text(Repr::Header(value.clone())))
    }

    /// The path of a request target, without copying it.
    pub(crate) fn from_path(pq: &http::uri::PathAndQuery) -> Text {
        Text(Repr::Path(pq.clone()))
    }

    /// The query of a request target, without copying it; `None` if it has none.
    pub(crate) fn from_query(pq: &http::uri::PathAndQuery) -> Option<Text> {
        pq.query()?;
        Some(Text(Repr::Query(pq.clone())))
    }

    /// axum's matched route, without copying it.
    pub(crate) fn from_route(route: &axum::extract::MatchedPath) -> Text {
        Text(Repr::Route(route.clone()))
    }

    /// The first `max_bytes` bytes, cut back to a character boundary; `self` if it is short
    /// enough. Cheap for literals (a sub-slice), one allocation otherwise.
    pub fn truncated(&self, max_bytes: usize) -> Text {
        if self.len() <= max_bytes {
            return self.clone();
        }
        let cut = floor_char_boundary(self.as_str(), max_bytes);
        match &self.0 {
            &Repr::Static(s) => Text(Repr::Static(&s[..cut])),
            _ => Text::copy_from(&self.as_str()[..cut]),
        }
    }

    /// The part before the first `.`, sharing the literal when `self` is one.
    pub(crate) fn first_segment(&self) -> Text {
        let end = self.as_str().find('.').unwrap_or(self.len());
        match &self.0 {
            &Repr::Static(s) => Text(Repr::Static(&s[..end])),
            _ if end == self.len() => self.clone(),
            _ => Text::copy_from(&self.as_str()[..end]),
        }
    }
}

/// The largest index `<= max` that is a char boundary of `s`.
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl Default for Text {
    fn default() -> Self {
        Text::from_static("")
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// A property key: a literal or a shared string, 24 bytes where a [`Text`] takes 48 (a key is
/// never a request's header or path, and an event keeps its first properties inline, so this
/// halves what is moved per property).
#[derive(Clone)]
pub(crate) enum Key {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Key {
    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Static(s) => s,
            Key::Shared(s) => s,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_str() == other.as_str()
    }
}

impl From<Text> for Key {
    #[inline]
    fn from(t: Text) -> Key {
        match t.0 {
            Repr::Static(s) => Key::Static(s),
            Repr::Shared(s) => Key::Shared(s),
            _ => Key::Shared(Arc::from(t.as_str())),
        }
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Shared(Arc::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Repr::Static(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Repr::Shared(Arc::from(s)))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text(Repr::Shared(Arc::from(s.as_str())))
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Self {
        Text(Repr::Shared(s))
    }
}

impl From<Box<str>> for Text {
    fn from(s: Box<str>) -> Self {
        Text(Repr::Shared(Arc::from(s)))
    }
}

impl From<std::borrow::Cow<'static, str>> for Text {
    fn from(s: std::borrow::Cow<'static, str>) -> Self {
        match s {
            std::borrow::Cow::Borrowed(s) => Text(Repr::Static(s)),
            std::borrow::Cow::Owned(s) => s.into(),
        }
    }
}

impl From<&Text> for Text {
    fn from(s: &Text) -> Self {
        s.clone()
    }
}

impl Text {
    /// Copies a borrowed string of any lifetime into a shared allocation.
    pub fn copy_from(s: &str) -> Self {
        Text(Repr::Shared(Arc::from(s)))
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}
impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let t = Text::from("héllo".to_string());
        assert_eq!(t.truncated(2), "h");
        assert_eq!(t.truncated(3), "hé");
        assert_eq!(Text::from("abc").truncated(10), "abc");
    }

    #[test]
    fn request_parts_are_shared_not_copied() {
        let uri: http::Uri = "/users/42?tab=1".parse().unwrap();
        let pq = uri.path_and_query().unwrap();
        assert_eq!(Text::from_path(pq), "/users/42");
        assert_eq!(Text::from_query(pq).unwrap(), "tab=1");
        assert!(Text::from_query(&"/x".parse().unwrap()).is_none());
        let ua = http::HeaderValue::from_static("Mozilla/5.0");
        assert_eq!(Text::from_header(&ua).unwrap(), "Mozilla/5.0");
        assert!(Text::from_header(&http::HeaderValue::from_bytes(b"caf\xe9").unwrap()).is_none());
        assert_eq!(
            Text::from_header(&http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).unwrap(),
            "café"
        );
        assert_eq!(Text::from_header(&ua).unwrap().truncated(3), "Moz");
    }

    #[test]
    fn first_segment() {
        assert_eq!(Text::from("user.signup").first_segment(), "user");
        assert_eq!(Text::from("plain".to_string()).first_segment(), "plain");
        assert_eq!(Text::from(".x").first_segment(), "");
    }
}
