//! Reading a request's context from its parts.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use http::header::{ACCEPT_LANGUAGE, Entry, HOST, REFERER, USER_AGENT};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

use super::telemetry_layer::{ClientIp, LayerConfig};
use crate::context::Context;
use crate::identity::Consent;
use crate::text::Text;

/// The longest header value copied into a context; longer ones are dropped.
pub(crate) const MAX_HEADER_LEN: usize = 512;
/// The longest request path kept in a context, in bytes: a longer one is cut back to a
/// character boundary and ends in [`PATH_TRUNCATED`], so no request line can make its events
/// oversized (a 33 KB path of `"` doubles when JSON-escaped).
pub const MAX_PATH_LEN: usize = 2048;
/// What ends a path cut to [`MAX_PATH_LEN`] (its bytes count within the cap).
pub const PATH_TRUNCATED: &str = "…";
/// The longest accepted inbound request id.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether an inbound request id is sane: 1–128 visible ASCII characters, no spaces.
pub(crate) fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// A fresh UUIDv7 request id, as a header value and as text sharing its bytes.
pub(crate) fn new_request_id() -> (Text, HeaderValue) {
    let buf = crate::event::hyphenated(crate::event::new_event_id());
    // The header value is reference-counted from the start: it is cloned into the request
    // headers, the extensions and the response. The context's copy is stored in place (a UUID
    // fits), so it allocates nothing.
    let text = crate::text::request_bytes(&buf).unwrap_or_default();
    // A hyphenated UUID is always a valid header value.
    let value = HeaderValue::from_maybe_shared(id_bytes(&buf))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    (text, value)
}

/// Request ids per block of memory (2 304 bytes).
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    /// The rest of this thread's current block of request ids.
    static ID_BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `id` in shared memory: a slice of this thread's current block, which 64 ids share, so a
/// request id costs an allocation and a free once per 64 requests instead of every time. A
/// block is freed when the last of its ids is dropped (they live as long as a request's
/// headers, unless a handler keeps one).
fn id_bytes(id: &[u8; 36]) -> Bytes {
    ID_BLOCK
        .try_with(|block| {
            let mut block = block.try_borrow_mut().ok()?;
            if block.capacity() < id.len() {
                *block = BytesMut::with_capacity(id.len() * IDS_PER_BLOCK);
            }
            block.extend_from_slice(id);
            Some(block.split_to(id.len()).freeze())
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Bytes::copy_from_slice(id))
}

/// What the layer reads of a request, borrowed from the request itself: the request is not
/// taken apart (and put back together) unless a user or session id resolver needs its `Parts`.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
}

impl<'a> Head<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>) -> Self {
        Head {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

/// The request id to use, set in the request's `header` if it is not there: tower-http's
/// extension, else a sane inbound header, else a new one (replacing an insane one). The header
/// is looked up once.
pub(crate) fn request_id<B>(req: &mut Request<B>, header: &HeaderName) -> (Text, HeaderValue) {
    if let Some(id) = req.extensions().get::<tower_http::request_id::RequestId>() {
        let v = id.header_value();
        if valid_request_id(v) {
            if let Some(text) = Text::from_header(v) {
                let v = v.clone();
                if !req.headers().contains_key(header) {
                    req.headers_mut().insert(header.clone(), v.clone());
                }
                return (text, v);
            }
        }
    }
    let entry = req.headers_mut().entry(header);
    if let Entry::Occupied(slot) = &entry {
        let v = slot.get();
        if valid_request_id(v) {
            if let Some(text) = Text::from_header(v) {
                return (text, v.clone());
            }
        }
    }
    let (text, value) = new_request_id();
    match entry {
        Entry::Occupied(mut slot) => {
            slot.insert(value.clone());
        }
        Entry::Vacant(slot) => {
            slot.insert(value.clone());
        }
    }
    (text, value)
}

/// The first value of each header the context takes.
#[derive(Default)]
struct Captured<'a> {
    host: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    language: Option<&'a HeaderValue>,
    referrer: Option<&'a HeaderValue>,
}

impl<'a> Captured<'a> {
    /// One pass over the request's headers instead of a hash lookup per header: comparing a
    /// name with a standard one is a byte compare, and a browser sends a dozen headers or so.
    fn scan(headers: &'a HeaderMap, config: &LayerConfig) -> Self {
        let mut c = Captured::default();
        let want_host = config.hostname.is_none();
        let want_rest = config.capture_headers;
        if !want_host && !want_rest {
            return c;
        }
        for (name, value) in headers {
            let slot = if *name == HOST {
                &mut c.host
            } else if *name == USER_AGENT {
                &mut c.user_agent
            } else if *name == ACCEPT_LANGUAGE {
                &mut c.language
            } else if *name == REFERER {
                &mut c.referrer
            } else {
                continue;
            };
            // The first value, as `HeaderMap::get` gives (the others follow it).
            slot.get_or_insert(value);
        }
        c
    }
}

/// A header value's text, unless it is empty or longer than [`MAX_HEADER_LEN`].
fn value_text(v: &HeaderValue) -> Option<Text> {
    if v.is_empty() || v.len() > MAX_HEADER_LEN {
        return None;
    }
    Text::from_header(v)
}

fn method_text(m: &Method) -> Text {
    Text::from_static(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Text::copy_from(m.as_str()),
    })
}

fn client_ip(head: Head<'_>, how: &ClientIp) -> Option<Text> {
    match how {
        ClientIp::Off => None,
        ClientIp::ConnectInfo => head
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|ci| Text::from(ci.0.ip().to_string())),
        ClientIp::Header(name) => {
            let v = head.headers.get(name)?.to_str().ok()?;
            // X-Forwarded-For: the first entry is the client as the trusted proxy saw it.
            let first = v.split(',').next()?.trim();
            first
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| Text::from(ip.to_string()))
        }
    }
}

/// The context of a request, as the layer is configured to read it (all but the user and
/// session ids of resolvers: [`resolve_ids`]).
///
/// Built in place in its `Arc`: a context is ~600 bytes, and moving it into the `Arc` afterwards
/// was a visible share of the layer's cost.
pub(crate) fn request_context(
    head: Head<'_>,
    config: &LayerConfig,
    request_id: Text,
) -> Arc<Context> {
    // An emptied context of an earlier request, or a new one (see `dispatch::recycle`).
    let mut arc = crate::dispatch::recycle::take_context();
    let ctx = Arc::make_mut(&mut arc); // never shared: never cloned here
    ctx.set_request_id(Some(request_id));
    match head.uri.path_and_query() {
        Some(pq) => {
            ctx.set_path(Some(if pq.path().len() <= MAX_PATH_LEN {
                Text::from_path(pq)
            } else {
                capped_path(pq.path())
            }));
            if config.capture_query && pq.query().is_some_and(|q| q.len() <= MAX_HEADER_LEN * 4) {
                ctx.set_query(Text::from_query(pq));
            }
        }
        None => {
            ctx.set_path(Some(Text::from_static("/")));
        }
    }
    ctx.set_method(Some(method_text(head.method)));
    if let Some(route) = head.extensions.get::<axum::extract::MatchedPath>() {
        ctx.set_route(Some(Text::from_route(route.as_str())));
    }
    let captured = Captured::scan(head.headers, config);
    let host = match &config.hostname {
        Some(h) => Some(h.clone()),
        None => captured
            .host
            .and_then(value_text)
            .or_else(|| head.uri.host().map(Text::copy_from)),
    };
    ctx.set_hostname(host);
    if config.capture_headers {
        ctx.set_user_agent(captured.user_agent.and_then(value_text));
        ctx.set_language(captured.language.and_then(value_text));
        ctx.set_referrer(captured.referrer.and_then(value_text));
    }
    ctx.set_client_ip(client_ip(head, &config.client_ip));
    arc
}

/// `path` cut to [`MAX_PATH_LEN`] bytes, [`PATH_TRUNCATED`] included.
#[cold]
#[inline(never)]
fn capped_path(path: &str) -> Text {
    let mut end = MAX_PATH_LEN - PATH_TRUNCATED.len();
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    Text::from(format!("{}{PATH_TRUNCATED}", &path[..end]))
}

/// Sets the user and session ids and the groups the configured resolvers find in `parts`;
/// the request's consent.
pub(crate) fn resolve_ids(parts: &Parts, config: &LayerConfig, ctx: &mut Arc<Context>) -> Consent {
    let ctx = Arc::make_mut(ctx); // not shared yet: no copy
    if let Some(resolve) = &config.user_id {
        ctx.set_user_id(resolve(parts));
    }
    if let Some(resolve) = &config.session_id {
        ctx.set_session_id(resolve(parts));
    }
    if let Some(resolve) = &config.groups {
        for (group_type, key) in resolve(parts) {
            ctx.set_group(group_type, key);
        }
    }
    config
        .consent
        .as_ref()
        .map_or(Consent::Granted, |decide| decide(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_validation() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_XYZ")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("has space")));
        assert!(!valid_request_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
        assert!(valid_request_id(
            &HeaderValue::from_str(&"a".repeat(128)).unwrap()
        ));
        assert!(!valid_request_id(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
        ));
        assert!(!valid_request_id(
            &HeaderValue::from_bytes(b"a\tb").unwrap()
        ));
    }

    #[test]
    fn the_context_takes_the_first_value_of_each_header_it_captures() {
        use super::super::TelemetryLayer;
        let req = Request::get("http://fallback.example/a?q=1")
            .header("accept", "*/*")
            .header("user-agent", "first-agent")
            .header("host", "api.example.com")
            .header("referer", "https://example.com/from")
            .header("user-agent", "second-agent")
            .header("accept-language", "de-CH")
            .header("host", "other.example.com")
            .header("x-long", "x".repeat(MAX_HEADER_LEN + 1))
            .body(())
            .unwrap();
        let id = Text::from_static("r1");
        let layer = TelemetryLayer::global();
        let ctx = request_context(Head::of(&req), layer.config(), id.clone());
        assert_eq!(ctx.hostname(), Some("api.example.com"));
        assert_eq!(ctx.user_agent(), Some("first-agent"));
        assert_eq!(ctx.language(), Some("de-CH"));
        assert_eq!(ctx.referrer(), Some("https://example.com/from"));

        // A fixed host name; headers not captured.
        let layer = TelemetryLayer::global()
            .hostname("svc-1")
            .capture_headers(false);
        let ctx = request_context(Head::of(&req), layer.config(), id.clone());
        assert_eq!(ctx.hostname(), Some("svc-1"));
        assert_eq!(
            (ctx.user_agent(), ctx.language(), ctx.referrer()),
            (None, None, None)
        );

        // No Host header: the URI's host. Empty and over-long values are left out.
        let req = Request::get("http://fallback.example/a")
            .header("user-agent", "")
            .header("referer", "r".repeat(MAX_HEADER_LEN + 1))
            .body(())
            .unwrap();
        let ctx = request_context(Head::of(&req), TelemetryLayer::global().config(), id);
        assert_eq!(ctx.hostname(), Some("fallback.example"));
        assert_eq!((ctx.user_agent(), ctx.referrer()), (None, None));
    }

    #[test]
    fn new_ids_are_uuids() {
        // Across blocks: every id keeps its own bytes while later ones are written.
        let ids: Vec<_> = (0..3 * IDS_PER_BLOCK + 5)
            .map(|_| new_request_id())
            .collect();
        for (t, v) in &ids {
            assert_eq!(t.len(), 36);
            assert_eq!(v.to_str().unwrap(), t.as_str());
            assert_eq!(uuid::Uuid::parse_str(t).unwrap().get_version_num(), 7);
        }
        let distinct: std::collections::HashSet<_> = ids.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_long_path_is_capped_and_marked() {
        use super::super::TelemetryLayer;
        let long = format!("/{}", "%22".repeat(11_000));
        let req = Request::get(long.as_str()).body(()).unwrap();
        let ctx = request_context(
            Head::of(&req),
            TelemetryLayer::global().config(),
            Text::from_static("r1"),
        );
        let path = ctx.path().unwrap();
        assert_eq!(path.len(), MAX_PATH_LEN);
        assert!(path.ends_with(PATH_TRUNCATED));
        assert!(long.starts_with(path.trim_end_matches(PATH_TRUNCATED)));
        // At the cap exactly: kept as sent.
        let exact = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        let req = Request::get(exact.as_str()).body(()).unwrap();
        let ctx = request_context(
            Head::of(&req),
            TelemetryLayer::global().config(),
            Text::from_static("r1"),
        );
        assert_eq!(ctx.path(), Some(exact.as_str()));
        assert_eq!(capped_path(&format!("/x{}", "é".repeat(2000))).len(), 2047);
    }
}
