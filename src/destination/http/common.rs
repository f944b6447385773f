//! What the PostHog, Segment and webhook kinds share besides the wire: the `forward` settings,
//! who an event is about, secrets kept out of `Debug`, target URLs, the settings readers, and
//! one delivery attempt over split requests.

// Each kind uses its part; a build with only some of the kinds leaves the rest unused.
#![cfg_attr(
    not(all(feature = "posthog", feature = "segment", feature = "webhook")),
    allow(dead_code)
)]

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde_json::{Map, Value};

use super::{Failure, Limits, Outcomes, split};
use crate::config::{ConfigError, ConfigErrorKind, Settings};
use crate::context::Context;
use crate::destination::DeliveryError;
use crate::event::Event;

/// Requests (batches) in flight at once, unless `concurrency` is configured.
pub(crate) const REQUESTS_IN_FLIGHT: usize = 4;

/// Which facts about the end user are forwarded (`forward:`), for the PostHog, Segment and
/// webhook destinations.
///
/// The defaults are the privacy-preserving ones: the User-Agent, language and referrer are
/// sent, the IP address is not.
///
/// ```
/// use tower_telemetry::destination::posthog::Forward;
///
/// let forward = Forward::default().with_ip(true).with_referrer(false);
/// assert!(forward.ip() && forward.user_agent() && !forward.referrer());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    pub(crate) ip: bool,
    pub(crate) user_agent: bool,
    pub(crate) language: bool,
    pub(crate) referrer: bool,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            ip: false,
            user_agent: true,
            language: true,
            referrer: true,
        }
    }
}

impl Forward {
    /// The end user's IP address. Defaults to `false`: an IP address is personal data, and
    /// the context only has one if the layer was told how to read it.
    pub fn with_ip(mut self, on: bool) -> Self {
        self.ip = on;
        self
    }

    /// The end user's User-Agent. Defaults to `true`.
    pub fn with_user_agent(mut self, on: bool) -> Self {
        self.user_agent = on;
        self
    }

    /// The first tag of the end user's `Accept-Language`. Defaults to `true`.
    pub fn with_language(mut self, on: bool) -> Self {
        self.language = on;
        self
    }

    /// The request's `Referer`. Defaults to `true`.
    pub fn with_referrer(mut self, on: bool) -> Self {
        self.referrer = on;
        self
    }

    /// Whether the IP address is forwarded.
    pub fn ip(&self) -> bool {
        self.ip
    }

    /// Whether the User-Agent is forwarded.
    pub fn user_agent(&self) -> bool {
        self.user_agent
    }

    /// Whether the language is forwarded.
    pub fn language(&self) -> bool {
        self.language
    }

    /// Whether the referrer is forwarded.
    pub fn referrer(&self) -> bool {
        self.referrer
    }

    /// The forwarded IP address of `ctx`, if forwarding is on and it is one.
    pub(crate) fn client_ip(&self, ctx: &Context) -> Option<String> {
        if !self.ip {
            return None;
        }
        let ip = ctx.client_ip()?.trim().parse::<std::net::IpAddr>().ok()?;
        Some(ip.to_string())
    }

    /// The forwarded User-Agent of `ctx`.
    pub(crate) fn user_agent_of<'a>(&self, ctx: &'a Context) -> Option<&'a str> {
        self.user_agent
            .then(|| ctx.user_agent())
            .flatten()
            .filter(|s| !s.is_empty())
    }

    /// The forwarded language of `ctx`: `en-US` from `en-US,en;q=0.9`.
    pub(crate) fn language_of<'a>(&self, ctx: &'a Context) -> Option<&'a str> {
        let header = self.language.then(|| ctx.language()).flatten()?;
        let first = header.split(',').next()?.split(';').next()?.trim();
        (!first.is_empty() && first != "*").then_some(first)
    }

    /// The forwarded referrer of `ctx`.
    pub(crate) fn referrer_of<'a>(&self, ctx: &'a Context) -> Option<&'a str> {
        self.referrer
            .then(|| ctx.referrer())
            .flatten()
            .filter(|s| !s.is_empty())
    }

    /// Reads `forward:` into `self`, adding every problem to `errors`.
    pub(crate) fn read(&mut self, settings: &Settings, errors: &mut Vec<ConfigError>) {
        match settings.section("forward") {
            Ok(None) => {}
            Ok(Some(forward)) => {
                errors.extend(forward.unknown_keys(&["ip", "user_agent", "language", "referrer"]));
                let mut flag = |key: &str, slot: &mut bool| match forward.bool(key) {
                    Ok(Some(v)) => *slot = v,
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                };
                flag("ip", &mut self.ip);
                flag("user_agent", &mut self.user_agent);
                flag("language", &mut self.language);
                flag("referrer", &mut self.referrer);
            }
            Err(e) => errors.push(e),
        }
    }
}

/// Who an event is about: the signed-in user, else an anonymous id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Identity<'a> {
    /// The context's user id.
    User(&'a str),
    /// No user: the session id, else the request id, else the event id.
    Anonymous(&'a str),
}

/// The identity of `event`; `event_id` is the event id's text, the last fallback.
pub(crate) fn identity<'a>(event: &'a Event, event_id: &'a str) -> Identity<'a> {
    let ctx = event.context();
    match ctx.user_id().filter(|s| !s.trim().is_empty()) {
        Some(user) => Identity::User(user),
        None => Identity::Anonymous(ctx.anonymous_id().unwrap_or(event_id)),
    }
}

/// The page the event happened on: `https://{hostname}{path}` when the host is known (the
/// scheme is assumed: the context does not have it), else the path. No query string: it often
/// holds tokens and personal data.
pub(crate) fn page_url(ctx: &Context) -> Option<String> {
    let path = ctx.path().filter(|p| !p.is_empty());
    match (ctx.hostname().filter(|h| !h.is_empty()), path) {
        (Some(host), path) => Some(format!("https://{host}{}", path.unwrap_or("/"))),
        (None, Some(path)) => Some(path.to_owned()),
        (None, None) => None,
    }
}

/// The event's properties as a JSON object.
pub(crate) fn properties(event: &Event) -> Map<String, Value> {
    event.properties().to_json_map()
}

/// An identity operation's traits: its properties without the
/// [reserved keys](crate::identity::is_reserved).
pub(crate) fn traits(event: &Event) -> Map<String, Value> {
    event
        .properties()
        .iter()
        .filter(|(k, _)| !crate::identity::is_reserved(k))
        .map(|(k, v)| (k.to_owned(), v.to_json()))
        .collect()
}

/// A reserved id property of an identity operation (`$previous_id`, `$group_key`,
/// `$anon_distinct_id`, ...) as text: a string as it is, a number in decimal; blank or any other
/// JSON is none, so a malformed operation never sends an empty id.
pub(crate) fn reserved_id(event: &Event, key: &str) -> Option<String> {
    let value = event.properties().get(key)?;
    let id = match value.as_str() {
        Some(s) => s.to_owned(),
        None => match value.to_json() {
            Value::Number(n) => n.to_string(),
            _ => return None,
        },
    };
    (!id.trim().is_empty()).then_some(id)
}

/// A reserved object property of an identity operation (`$set_once`), if it is a non-empty
/// object.
pub(crate) fn reserved_object(event: &Event, key: &str) -> Option<Map<String, Value>> {
    match event.properties().get(key)?.to_json() {
        Value::Object(map) if !map.is_empty() => Some(map),
        _ => None,
    }
}

/// A secret (API key, write key, signing key): its `Debug` shows only that it is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

/// `raw` fit to show: a user and password replaced by `***`, a query by `?***` (both may
/// hold credentials), with `hide_path` the path too (a webhook's path is often its secret);
/// an unparsable one is not shown at all.
pub(crate) fn masked_url(raw: &str, hide_path: bool) -> String {
    let Ok(mut url) = Url::parse(raw.trim()) else {
        return "(not a URL)".into();
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_password(None);
        let _ = url.set_username("***");
    }
    if url.query().is_some() {
        url.set_query(Some("***"));
    }
    url.set_fragment(None);
    if hide_path && url.path() != "/" {
        url.set_path("/***");
    }
    url.to_string()
}

/// An endpoint URL: http(s), a host, no query or fragment; userinfo (`https://user:pass@host`)
/// is taken out and returned as a Basic `Authorization` header, so it never appears in an
/// error or a log record. Errors never quote the URL (it may hold a secret).
pub(crate) fn target_url(raw: &str) -> Result<(Url, Option<HeaderValue>), String> {
    let raw = raw.trim();
    let mut url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let user = percent_decode(url.username());
        let pass = url.password().map(percent_decode).unwrap_or_default();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some(basic_auth(&user, &pass)?)
    };
    Ok((url, auth))
}

/// A sensitive `Authorization: Basic base64(user:password)` header value.
pub(crate) fn basic_auth(user: &str, password: &str) -> Result<HeaderValue, String> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| "cannot be sent as a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// `s` with `%XX` escapes decoded (a malformed one kept as it is; invalid UTF-8 replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a string `key`; a missing one is an error saying `what` it should be.
pub(crate) fn required(
    settings: &Settings,
    key: &str,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match settings.str(key) {
        Ok(Some(v)) => Some(v.to_owned()),
        Ok(None) => {
            errors.push(
                settings
                    .error(key, format!("missing: {what}"))
                    .with_kind(ConfigErrorKind::Missing),
            );
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Reads an optional string `key`.
pub(crate) fn optional(
    settings: &Settings,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match settings.str(key) {
        Ok(v) => v.map(str::to_owned),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// The delivery defaults of the batch APIs (PostHog, Segment, webhooks): the core's batch size
/// and timeout, [`REQUESTS_IN_FLIGHT`] requests at once.
pub(crate) fn delivery_defaults() -> crate::config::DeliveryConfig {
    crate::config::DeliveryConfig::default()
        .with_batch_size(crate::config::DEFAULT_BATCH_SIZE)
        .with_concurrency(REQUESTS_IN_FLIGHT)
        .with_timeout(crate::config::DEFAULT_TIMEOUT)
}

/// The User-Agent of the requests: honest about what sends them.
pub(crate) fn user_agent() -> HeaderValue {
    HeaderValue::from_static(concat!("tower-telemetry/", env!("CARGO_PKG_VERSION")))
}

/// One delivery attempt of `batch`: each event encoded by `encode` (its JSON item bytes),
/// split to fit `limits` around an envelope of `overhead` bytes, and each request's items —
/// the batch indexes and the JSON array `[item,item,...]` — handed to `post`. An event over
/// the limits fails alone; after a retryable failure the requests not yet made wait for the
/// retry too.
pub(crate) async fn deliver<E, P, F>(
    kind: &str,
    batch: &[Arc<Event>],
    limits: Limits,
    overhead: usize,
    encode: E,
    mut post: P,
) -> Result<(), DeliveryError>
where
    E: Fn(&Event) -> Vec<u8>,
    P: FnMut(Vec<usize>, Vec<u8>) -> F,
    F: Future<Output = Result<(), Failure>>,
{
    let encoded: Vec<Vec<u8>> = batch.iter().map(|e| encode(e)).collect();
    let mut outcomes = Outcomes::new(batch.len());
    let plan = split(encoded.iter().map(Vec::len).enumerate(), overhead, limits);
    for i in plan.oversized {
        let size = encoded[i].len();
        outcomes.failed(
            i,
            DeliveryError::permanent(format!(
                "{kind}: the event is {size} bytes encoded, over the limit of {} bytes per \
                 event (or per request)",
                limits
                    .per_event
                    .min(limits.per_request.saturating_sub(overhead))
            )),
        );
    }
    let mut stop: Option<DeliveryError> = None;
    for indexes in plan.requests {
        if let Some(e) = &stop {
            for i in indexes {
                outcomes.failed(i, e.clone());
            }
            continue;
        }
        let len = indexes.iter().map(|i| encoded[*i].len() + 1).sum::<usize>() + 1;
        let mut array = Vec::with_capacity(len);
        array.push(b'[');
        for (n, i) in indexes.iter().enumerate() {
            if n > 0 {
                array.push(b',');
            }
            array.extend_from_slice(&encoded[*i]);
        }
        array.push(b']');
        match post(indexes.clone(), array).await {
            Ok(()) => indexes.iter().for_each(|i| outcomes.delivered(*i)),
            Err(f) => {
                if f.error.is_retryable() {
                    stop = Some(f.error.clone());
                }
                for i in indexes {
                    outcomes.failed(i, f.error.clone());
                }
            }
        }
    }
    outcomes.into_result()
}
