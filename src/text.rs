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
    /// A short string read from a request, stored in place: no allocation. Request ids, hosts,
    /// most paths and short header values fit. (Only for those: `as_str` re-checks its UTF-8,
    /// a few nanoseconds that names and values looked at on every event should not pay.)
    Inline(Inline),
}

/// The longest string stored in place (a hyphenated UUID is 36 bytes); it keeps a [`Text`] at
/// 40 bytes.
pub(crate) const INLINE_CAP: usize = 38;

/// Up to [`INLINE_CAP`] bytes of UTF-8, checked when built.
#[derive(Clone, Copy)]
struct Inline {
    len: u8,
    bytes: [u8; INLINE_CAP],
}

impl Inline {
    fn new(s: &str) -> Option<Inline> {
        Self::from_utf8_bytes(s.as_bytes())
    }

    /// `bytes` must be UTF-8 (as `as_str` reads it back); at most [`INLINE_CAP`] of them.
    fn from_utf8_bytes(b: &[u8]) -> Option<Inline> {
        if b.len() > INLINE_CAP {
            return None;
        }
        let mut bytes = [0; INLINE_CAP];
        bytes[..b.len()].copy_from_slice(b);
        Some(Inline {
            len: b.len() as u8,
            bytes,
        })
    }

    #[inline]
    fn as_str(&self) -> &str {
        // Copied from a `str` (`new`), so this never falls back; std checks ASCII a word at a
        // time, a few nanoseconds for a string this short.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
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
            Repr::Inline(s) => s.as_str(),
        }
    }

    /// The UTF-8 bytes, without re-checking an inline string's UTF-8 (as `as_str` does), for
    /// code that writes them out as they are.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Static(s) => s.as_bytes(),
            Repr::Shared(s) => s.as_bytes(),
            Repr::Inline(s) => &s.bytes[..s.len as usize],
        }
    }

    /// The length in bytes, without re-checking an inline string's UTF-8 (as `len()` through
    /// `as_str` does).
    #[inline]
    pub(crate) fn byte_len(&self) -> usize {
        match &self.0 {
            Repr::Static(s) => s.len(),
            Repr::Shared(s) => s.len(),
            Repr::Inline(s) => s.len as usize,
        }
    }

    // The parts of a request are copied, never shared: hyper parses a request's URI and
    // header values as slices of the connection's read buffer, so a context holding one of
    // them (for as long as its events wait in a queue) keeps that whole buffer (8 KB or more)
    // alive, and hyper allocates a new one for the connection's next request.

    /// A header value's text, copied (see [`request_str`]); `None` if it is not UTF-8.
    pub(crate) fn from_header(value: &http::HeaderValue) -> Option<Text> {
        request_bytes(value.as_bytes())
    }

    /// The path of a request target, copied (see [`request_str`]).
    pub(crate) fn from_path(pq: &http::uri::PathAndQuery) -> Text {
        request_str(pq.path())
    }

    /// The query of a request target, copied (see [`request_str`]); `None` if it has none.
    pub(crate) fn from_query(pq: &http::uri::PathAndQuery) -> Option<Text> {
        pq.query().map(request_str)
    }

    /// A request's matched route template: in place when short, else shared with the copy
    /// this thread made of it before. An application has a few routes, asked for on every
    /// request, so they are remembered apart from other request strings (see [`ROUTES`]).
    #[inline]
    pub(crate) fn from_route(route: &str) -> Text {
        if let Some(inline) = Inline::new(route) {
            return Text(Repr::Inline(inline));
        }
        shared_bytes(&ROUTES, route.as_bytes(), || Some(route)).unwrap_or_default()
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

/// The longest request string [`request_str`] remembers.
const RECENT_MAX_LEN: usize = 512;

/// How many request strings [`request_str`] remembers per thread.
const RECENT_SLOTS: usize = 8;

/// Strings copied on one thread, with a cursor for the next slot to replace.
type Remembered = std::cell::RefCell<([Option<Arc<str>>; RECENT_SLOTS], usize)>;

thread_local! {
    /// The last few long request strings copied on this thread: user agents, hosts and paths
    /// repeat from request to request.
    static RECENT: Remembered =
        const { std::cell::RefCell::new(([const { None }; RECENT_SLOTS], 0)) };
    /// The last few long route templates copied on this thread, apart from [`RECENT`] so that
    /// requests for ever new paths do not push them out.
    static ROUTES: Remembered =
        const { std::cell::RefCell::new(([const { None }; RECENT_SLOTS], 0)) };
}

/// A string read from a request, copied: in place when short, else shared with the same string
/// copied recently on this thread (a reference count bump), else into a new allocation that
/// later requests can share. At most [`RECENT_SLOTS`] strings of up to [`RECENT_MAX_LEN`]
/// bytes are remembered per thread, replaced in turn.
pub(crate) fn request_str(s: &str) -> Text {
    if let Some(inline) = Inline::new(s) {
        return Text(Repr::Inline(inline));
    }
    shared_bytes(&RECENT, s.as_bytes(), || Some(s)).unwrap_or_default()
}

/// [`request_str`] of bytes that should be UTF-8 (a header value); `None` if they are not.
///
/// Header values are almost always ASCII, which is UTF-8: that is checked a word at a time
/// (`<[u8]>::is_ascii`) and stored without a full UTF-8 validation, which std does byte by byte
/// for strings this short (~100 instructions for a user agent). A string remembered in
/// [`RECENT`] is compared as bytes, so only a new one is validated.
pub(crate) fn request_bytes(b: &[u8]) -> Option<Text> {
    if b.len() <= INLINE_CAP && b.is_ascii() {
        return Inline::from_utf8_bytes(b).map(|i| Text(Repr::Inline(i)));
    }
    if b.len() <= INLINE_CAP {
        let s = std::str::from_utf8(b).ok()?;
        return Inline::new(s).map(|i| Text(Repr::Inline(i)));
    }
    shared_bytes(&RECENT, b, || std::str::from_utf8(b).ok())
}

/// A longer request string: shared with a copy of the same bytes `recent` remembers, or
/// copied from `utf8()` (`None`: not UTF-8).
///
/// Out of line: inlined, its thread-local access and its loop made the short-string path of
/// [`request_bytes`] (every request id) twice as long (75 → 151 instructions, callgrind).
#[inline(never)]
fn shared_bytes<'a>(
    recent: &'static std::thread::LocalKey<Remembered>,
    b: &[u8],
    utf8: impl FnOnce() -> Option<&'a str>,
) -> Option<Text> {
    if b.len() > RECENT_MAX_LEN {
        return utf8().map(|s| Text(Repr::Shared(Arc::from(s))));
    }
    let mut utf8 = Some(utf8);
    let remembered = recent.try_with(|recent| {
        let mut recent = recent.try_borrow_mut().ok()?;
        let (slots, next) = &mut *recent;
        if let Some(hit) = slots.iter().flatten().find(|r| r.as_bytes() == b) {
            return Some(Some(hit.clone()));
        }
        let Some(s) = utf8.take().and_then(|f| f()) else {
            return Some(None);
        };
        let copy: Arc<str> = Arc::from(s);
        slots[*next] = Some(copy.clone());
        *next = (*next + 1) % RECENT_SLOTS;
        Some(Some(copy))
    });
    let shared = match remembered {
        Ok(Some(found)) => found?,
        // No thread-local (thread teardown) or it is borrowed: a copy of its own.
        _ => Arc::from(utf8.take().and_then(|f| f())?),
    };
    Some(Text(Repr::Shared(shared)))
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

/// A property key: a literal or a shared string, 24 bytes where a [`Text`] takes 40 (an event
/// keeps its first properties inline, so this shrinks what is moved per property).
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
    fn request_parts_are_copied_so_no_read_buffer_is_kept_alive() {
        // As hyper parses a request: the URI and header values are slices of the connection's
        // read buffer.
        let buffer = bytes::Bytes::from(
            b"/users/42?tab=1 Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101".to_vec(),
        );
        let pq = http::uri::PathAndQuery::from_maybe_shared(buffer.slice(0..15)).unwrap();
        let ua = http::HeaderValue::from_maybe_shared(buffer.slice(16..)).unwrap();
        let texts = [
            Text::from_path(&pq),
            Text::from_query(&pq).unwrap(),
            Text::from_header(&ua).unwrap(),
        ];
        assert!(!buffer.is_unique());
        drop((pq, ua));
        assert!(
            buffer.is_unique(),
            "a context would keep the read buffer alive"
        );
        assert_eq!(texts[0], "/users/42");
        assert_eq!(texts[1], "tab=1");
        assert_eq!(
            texts[2],
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101"
        );
    }

    #[test]
    fn request_strings_are_checked_and_long_ones_shared_when_repeated() {
        assert!(Text::from_query(&"/x".parse().unwrap()).is_none());
        assert!(Text::from_header(&http::HeaderValue::from_bytes(b"caf\xe9").unwrap()).is_none());
        assert_eq!(
            Text::from_header(&http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).unwrap(),
            "caf\u{e9}"
        );
        let ua = http::HeaderValue::from_static(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0",
        );
        let (first, second) = (
            Text::from_header(&ua).unwrap(),
            Text::from_header(&ua).unwrap(),
        );
        assert_eq!(first, second);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "a repeated user agent is shared"
        );
        assert_eq!(first.truncated(7), "Mozilla");
        // Enough other strings push it out; it is copied again, equal all the same.
        for i in 0..RECENT_SLOTS {
            let _ = request_str(&format!("{}{i}", "x".repeat(INLINE_CAP)));
        }
        let third = Text::from_header(&ua).unwrap();
        assert_eq!(third, first);
        assert_ne!(third.as_ptr(), first.as_ptr());
        // Over the size remembered: copied every time.
        let long = "y".repeat(RECENT_MAX_LEN + 1);
        assert_ne!(request_str(&long).as_ptr(), request_str(&long).as_ptr());
    }

    #[test]
    fn routes_are_stored_in_place_or_shared_apart_from_other_request_strings() {
        let short = Text::from_route("/users/{id}");
        assert_eq!(short, "/users/{id}");
        assert_ne!(short.clone().as_ptr(), short.as_ptr(), "in place");
        let template = "/organizations/{org_id}/projects/{project_id}/events";
        let first = Text::from_route(template);
        // Requests for ever new paths and user agents do not push a route out.
        for i in 0..2 * RECENT_SLOTS {
            let _ = request_str(&format!("/organizations/{i}/projects/{}", "x".repeat(40)));
        }
        let again = Text::from_route(template);
        assert_eq!(again, template);
        assert_eq!(again.as_ptr(), first.as_ptr(), "shared with the first copy");
    }

    #[test]
    fn short_request_strings_are_stored_in_place_and_long_ones_shared() {
        assert!(std::mem::size_of::<Text>() <= 40);
        let short = "a".repeat(INLINE_CAP);
        let t = request_str(&short);
        assert_eq!(t, short.as_str());
        assert_eq!(t.byte_len(), INLINE_CAP);
        // In place: a clone has its own bytes.
        assert_ne!(t.clone().as_ptr(), t.as_ptr());
        let long = Text::from("b".repeat(INLINE_CAP + 1));
        assert_eq!(long.byte_len(), INLINE_CAP + 1);
        assert_eq!(long.clone().as_ptr(), long.as_ptr());
        assert_eq!(Text::from("h\u{e9}llo".to_string()).truncated(2), "h");
    }

    #[test]
    fn first_segment() {
        assert_eq!(Text::from("user.signup").first_segment(), "user");
        assert_eq!(Text::from("plain".to_string()).first_segment(), "plain");
        assert_eq!(Text::from(".x").first_segment(), "");
    }
}
