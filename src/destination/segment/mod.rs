//! The `segment` destination: events to the Segment tracking API's `/v1/batch`, which
//! [Segment](https://segment.com), [RudderStack](https://www.rudderstack.com) and
//! [Jitsu](https://jitsu.com) all serve.
//!
//! Each batch is one `POST {url}/v1/batch`, authenticated with HTTP Basic (the write key as
//! the user, an empty password), with `{"batch": [...], "sentAt"}`; each event becomes a
//! `track` message (an [identity operation](crate::identity) an `identify`, `alias` or `group`
//! one) whose `messageId` is the event id, so a batch sent again after a timeout is stored once
//! (the API dedupes by `messageId`; RudderStack within 7 days).
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     cdp:
//!       type: segment
//!       flavor: segment                      # segment | rudderstack | jitsu (limits differ)
//!       url: https://api.segment.io          # default for segment; required for the others
//!       write_key: ${SEGMENT_WRITE_KEY}      # required
//!       forward: { ip: false, user_agent: true, language: true, referrer: true }
//! ```
//!
//! | our event | Segment message |
//! |---|---|
//! | — | `type: "track"` |
//! | name | `event` |
//! | id | `messageId` |
//! | timestamp | `timestamp` (RFC 3339) |
//! | context user id | `userId` |
//! | no user id | `anonymousId` = session id, else request id, else event id |
//! | properties | `properties` |
//! | path, `https://{hostname}{path}` | `context.page.path`, `context.page.url` (no query) |
//! | referrer (`forward.referrer`) | `context.page.referrer` |
//! | client IP (`forward.ip`) | `context.ip` |
//! | User-Agent (`forward.user_agent`) | `context.userAgent` |
//! | language (`forward.language`) | `context.locale` |
//! | — | `context.library: {name: "tower-telemetry", version}` |
//! | context groups ([`Context::with_group`](crate::Context::with_group)) | `context.groupId` = the key of the group whose type sorts first (byte order: `company` before `team`), on every message |
//!
//! Identity operations, as Segment's spec (and segment-analytics-python) has them; each keeps
//! the `context`, `timestamp` and `messageId` above:
//!
//! | operation | Segment message |
//! |---|---|
//! | identify | `type: "identify"`, `userId`, `anonymousId` = the `$anon_distinct_id` (if any), `traits` = the set-once traits, then the traits (which win); flavor `rudderstack`: the traits in `context.traits` too, where rudder-sdk-python puts them |
//! | alias | `type: "alias"`, `previousId`, `userId` |
//! | group | `type: "group"`, `groupId` = the group key, `traits` = the traits plus `group_type`, `userId` (else `anonymousId`) |
//!
//! Limits: 32 KiB per message for every flavor (an event over it fails alone); requests stay
//! under 475 000 bytes for Segment and Jitsu (Segment's limit is 500 KB), 4 MB for
//! RudderStack. Segment answers 200 even for messages it later drops, so a 2xx is counted
//! delivered.

mod config;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Map, Value};

pub use crate::destination::http::common::Forward;
pub use config::{SEGMENT_URL, SegmentConfig};

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, ConfigErrors, DeliveryConfig, Settings};
use crate::destination::http::common::{self, Identity, basic_auth, identity, page_url};
use crate::destination::http::{Body, Client, Limits};
use crate::event::{Event, EventKind, Rfc3339};
use crate::identity;

/// Which implementation of the Segment tracking API the URL serves (`flavor:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentFlavor {
    /// Segment: 500 KB per request, 32 KB per message. The default.
    #[default]
    Segment,
    /// RudderStack's data plane: 4 MB per request, 32 KB per message.
    RudderStack,
    /// Jitsu's Segment-compatible endpoint: Segment's limits.
    Jitsu,
}

impl SegmentFlavor {
    /// Its name in YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            SegmentFlavor::Segment => "segment",
            SegmentFlavor::RudderStack => "rudderstack",
            SegmentFlavor::Jitsu => "jitsu",
        }
    }

    /// Its byte limits.
    pub(crate) fn limits(&self) -> Limits {
        let per_event = 32 * 1024;
        match self {
            SegmentFlavor::RudderStack => Limits {
                per_request: 4_000_000,
                per_event,
            },
            SegmentFlavor::Segment | SegmentFlavor::Jitsu => Limits {
                per_request: 475_000,
                per_event,
            },
        }
    }
}

/// The envelope around the messages, an upper bound: `{"batch":`, `,"sentAt":"<24>"}`.
const OVERHEAD: usize = 64;

/// Delivers events to a Segment tracking API. See the [module docs](self).
///
/// Clones share the same connections.
#[derive(Clone)]
pub struct SegmentDestination {
    inner: Arc<Inner>,
}

struct Inner {
    config: SegmentConfig,
    url: Url,
    auth: HeaderValue,
    client: Client,
}

impl SegmentDestination {
    /// A destination for the write key and endpoint of `config`; fails if the write key is
    /// empty or the URL unusable (or missing for RudderStack and Jitsu). Makes no request.
    pub fn new(config: SegmentConfig) -> Result<SegmentDestination, ConfigErrors> {
        Self::build(config, &|key, msg| {
            ConfigError::new(format!("segment.{key}"), None, msg)
        })
        .map_err(ConfigErrors::from)
    }

    /// Builds one from the settings of a configured destination (the keys of the
    /// [module docs](self)); each error names the key path and line.
    pub fn from_settings(settings: &Settings) -> Result<SegmentDestination, Vec<ConfigError>> {
        settings.build_with(SegmentConfig::from_settings(settings), Self::build)
    }

    fn build(
        config: SegmentConfig,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Self, Vec<ConfigError>> {
        let url = config.validate(error)?;
        let auth = basic_auth(&config.write_key.0, "").map_err(|m| vec![error("write_key", m)])?;
        let client =
            Client::new("segment", common::user_agent()).map_err(|m| vec![error("url", m)])?;
        Ok(SegmentDestination {
            inner: Arc::new(Inner {
                config,
                url,
                auth,
                client,
            }),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &SegmentConfig {
        &self.inner.config
    }
}

impl fmt::Debug for SegmentDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentDestination")
            .field("url", &self.inner.url.as_str())
            .field("flavor", &self.inner.config.flavor)
            .field("forward", &self.inner.config.forward)
            .finish_non_exhaustive()
    }
}

/// The message of `event`: `identify`, `alias` or `group` for identity operations, else
/// `track`.
pub(crate) fn message(event: &Event, forward: &Forward, flavor: SegmentFlavor) -> Value {
    let ctx = event.context();
    let id = event.id().to_string();
    let mut m = Map::with_capacity(8);
    let who = identity(event, &id);
    let put_who = |m: &mut Map<String, Value>| match who {
        Identity::User(user) => m.insert("userId".into(), user.into()),
        Identity::Anonymous(anon) => m.insert("anonymousId".into(), anon.into()),
    };
    let mut context_traits = None;
    match event.kind() {
        // The anonymous id the request had before links it to the user, as analytics.js
        // sends both. Traits set once go in first so the ones set always win: Segment has
        // no set-once.
        EventKind::Identify => {
            m.insert("type".into(), "identify".into());
            put_who(&mut m);
            if let Some(anon) = common::reserved_id(event, identity::ANON_DISTINCT_ID) {
                m.insert("anonymousId".into(), anon.into());
            }
            let mut traits = common::reserved_object(event, identity::SET_ONCE).unwrap_or_default();
            traits.extend(common::traits(event));
            // rudder-sdk-python sends them in `context.traits` only; RudderStack reads both.
            if flavor == SegmentFlavor::RudderStack {
                context_traits = Some(traits.clone());
            }
            m.insert("traits".into(), Value::Object(traits));
        }
        EventKind::Alias => {
            m.insert("type".into(), "alias".into());
            if let Some(previous) = common::reserved_id(event, identity::PREVIOUS_ID) {
                m.insert("previousId".into(), previous.into());
            }
            put_who(&mut m);
        }
        // Segment's group call has no group type: it goes in the traits, as `group_type`
        // (over a trait of that name).
        EventKind::Group => {
            m.insert("type".into(), "group".into());
            if let Some(key) = common::reserved_id(event, identity::GROUP_KEY) {
                m.insert("groupId".into(), key.into());
            }
            put_who(&mut m);
            let mut traits = common::traits(event);
            if let Some(t) = common::reserved_id(event, identity::GROUP_TYPE) {
                traits.insert("group_type".into(), t.into());
            }
            m.insert("traits".into(), Value::Object(traits));
        }
        _ => {
            m.insert("type".into(), "track".into());
            m.insert("event".into(), event.name().into());
            put_who(&mut m);
            m.insert(
                "properties".into(),
                Value::Object(common::properties(event)),
            );
        }
    }
    let mut c = Map::new();
    let mut library = Map::with_capacity(2);
    library.insert("name".into(), "tower-telemetry".into());
    library.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    c.insert("library".into(), Value::Object(library));
    if let Some(ip) = forward.client_ip(ctx) {
        c.insert("ip".into(), ip.into());
    }
    if let Some(ua) = forward.user_agent_of(ctx) {
        c.insert("userAgent".into(), ua.into());
    }
    if let Some(lang) = forward.language_of(ctx) {
        c.insert("locale".into(), lang.into());
    }
    let mut page = Map::new();
    if let Some(path) = ctx.path().filter(|p| !p.is_empty()) {
        page.insert("path".into(), path.into());
    }
    if let Some(url) = page_url(ctx) {
        page.insert("url".into(), url.into());
    }
    if let Some(r) = forward.referrer_of(ctx) {
        page.insert("referrer".into(), r.into());
    }
    if !page.is_empty() {
        c.insert("page".into(), Value::Object(page));
    }
    // Segment's context has one group: the one whose type sorts first (byte order), so the
    // choice does not depend on the order the groups were added in.
    if let Some((_, key)) = ctx.groups().min_by_key(|(t, _)| *t) {
        c.insert("groupId".into(), key.into());
    }
    if let Some(traits) = context_traits {
        c.insert("traits".into(), Value::Object(traits));
    }
    m.insert("context".into(), Value::Object(c));
    m.insert(
        "timestamp".into(),
        Rfc3339(event.timestamp()).to_string().into(),
    );
    m.insert("messageId".into(), id.into());
    Value::Object(m)
}

impl Inner {
    async fn deliver(&self, batch: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let forward = self.config.forward;
        let flavor = self.config.flavor;
        common::deliver(
            "segment",
            batch,
            self.config.flavor.limits(),
            OVERHEAD,
            |e| serde_json::to_vec(&message(e, &forward, flavor)).unwrap_or_default(),
            |_, array| {
                let mut json = Vec::with_capacity(array.len() + OVERHEAD);
                json.extend_from_slice(br#"{"batch":"#);
                json.extend_from_slice(&array);
                json.extend_from_slice(br#","sentAt":""#);
                json.extend_from_slice(Rfc3339(SystemTime::now()).to_string().as_bytes());
                json.extend_from_slice(br#""}"#);
                let mut headers = HeaderMap::new();
                headers.insert(AUTHORIZATION, self.auth.clone());
                async move {
                    self.client
                        .post(&self.url, headers, Body::json(json))
                        .await
                        .map(drop)
                }
            },
        )
        .await
    }
}

impl Destination for SegmentDestination {
    fn name(&self) -> &str {
        "segment"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.inner.deliver(batch))
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        common::delivery_defaults()
    }
}

#[cfg(test)]
mod tests;
