//! The `posthog` destination: events to [PostHog](https://posthog.com)'s batch API.
//!
//! Each batch is one `POST {host}/batch/` (gzip-compressed unless `gzip: false`) with
//! `{"api_key", "historical_migration": false, "batch": [...]}`; each event becomes
//! `{"event", "distinct_id", "properties", "timestamp", "uuid"}` with the event id as `uuid`,
//! so a batch sent again after a timeout is stored once (PostHog dedupes by `uuid`).
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     product:
//!       type: posthog
//!       api_key: ${POSTHOG_API_KEY}          # required: the project API key
//!       host: https://eu.i.posthog.com       # default https://us.i.posthog.com; self-hosted ok
//!       gzip: true                           # default true
//!       forward: { ip: false, user_agent: true, language: true, referrer: true }
//!       events: ["*"]
//! ```
//!
//! | our event | PostHog |
//! |---|---|
//! | name | `event` (`$pageview` for the layer's request events) |
//! | id | `uuid` |
//! | timestamp | `timestamp` (RFC 3339) |
//! | context user id | `distinct_id` |
//! | no user id | `distinct_id` = session id, else request id, else event id; `$process_person_profile: false` |
//! | properties | `properties` (they win over the ones below) |
//! | hostname + path | `$current_url` (`https://{hostname}{path}`, no query), `$host`, `$pathname` |
//! | session id | `$session_id` |
//! | client IP (`forward.ip`) | `$ip`; without it `$geoip_disable: true` |
//! | User-Agent (`forward.user_agent`) | `$raw_user_agent` |
//! | language (`forward.language`) | `$browser_language` |
//! | referrer (`forward.referrer`) | `$referrer` |
//! | — | `$lib: "tower-telemetry"`, `$lib_version` |
//! | context groups ([`Context::with_group`](crate::Context::with_group)) | `$groups` (object: group type → key), on every event |
//!
//! [Identity operations](crate::identity) become PostHog's own events, shaped as
//! posthog-python sends them (and, for `$identify`, which posthog-python 7 no longer sends, as
//! PostHog's capture API documents it); none has `$process_person_profile: false`:
//!
//! | operation | PostHog event | `distinct_id` | properties (besides the ones above) |
//! |---|---|---|---|
//! | identify | `$identify` | the user | `$set` (the traits), `$set_once` (if any), `$anon_distinct_id` (if any) |
//! | alias | `$create_alias` | the previous id | `distinct_id` (the previous id), `alias` (the user) |
//! | group | `$groupidentify` | the user, else the anonymous id | `$group_type`, `$group_key`, `$group_set` (the traits) |
//!
//! Answers: 2xx delivered; 408, 429 and 5xx retried (after `Retry-After`); 400, 401, 403, 413
//! failed without a retry. An event over 900 KiB of JSON fails alone; requests stay under
//! 5 MiB.

mod config;

use std::fmt;
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Map, Value};

pub use crate::destination::http::common::Forward;
pub use config::{DEFAULT_HOST, PostHogConfig};

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, ConfigErrors, DeliveryConfig, Settings};
use crate::destination::http::common::{self, Identity, identity, page_url};
use crate::destination::http::{Body, Client, Limits};
use crate::event::{Event, EventKind, Rfc3339};
use crate::identity;

/// PostHog's Python SDK's limits: 900 KiB per event, 5 MiB per request (PostHog discards
/// events over 1 MB and rejects bodies over 20 MB).
pub(crate) const LIMITS: Limits = Limits {
    per_request: 5 * 1024 * 1024,
    per_event: 900 * 1024,
};

/// Delivers events to PostHog. See the [module docs](self).
///
/// Clones share the same connections.
#[derive(Clone)]
pub struct PostHogDestination {
    inner: Arc<Inner>,
}

struct Inner {
    config: PostHogConfig,
    url: Url,
    auth: Option<HeaderValue>,
    client: Client,
    /// `{"api_key":"...","historical_migration":false,"batch":`
    prefix: Vec<u8>,
}

impl PostHogDestination {
    /// A destination for the project and host of `config`; fails if the API key is empty or
    /// the host unusable. Makes no request.
    pub fn new(config: PostHogConfig) -> Result<PostHogDestination, ConfigErrors> {
        Self::build(config, &|key, msg| {
            ConfigError::new(format!("posthog.{key}"), None, msg)
        })
        .map_err(ConfigErrors::from)
    }

    /// Builds one from the settings of a configured destination (the keys of the
    /// [module docs](self)); each error names the key path and line.
    pub fn from_settings(settings: &Settings) -> Result<PostHogDestination, Vec<ConfigError>> {
        settings.build_with(PostHogConfig::from_settings(settings), Self::build)
    }

    fn build(
        config: PostHogConfig,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Self, Vec<ConfigError>> {
        let (url, auth) = config.validate(error)?;
        let client =
            Client::new("posthog", common::user_agent()).map_err(|m| vec![error("host", m)])?;
        let mut prefix = br#"{"api_key":"#.to_vec();
        serde_json::to_writer(&mut prefix, &config.api_key.0).unwrap_or_default();
        prefix.extend_from_slice(br#","historical_migration":false,"batch":"#);
        Ok(PostHogDestination {
            inner: Arc::new(Inner {
                config,
                url,
                auth,
                client,
                prefix,
            }),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &PostHogConfig {
        &self.inner.config
    }
}

impl fmt::Debug for PostHogDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostHogDestination")
            .field("url", &self.inner.url.as_str())
            .field("gzip", &self.inner.config.gzip)
            .field("forward", &self.inner.config.forward)
            .finish_non_exhaustive()
    }
}

/// The JSON item of `event` in a PostHog batch.
pub(crate) fn item(event: &Event, forward: &Forward) -> Value {
    let ctx = event.context();
    let id = event.id().to_string();
    let who = identity(event, &id);
    let mut p = Map::new();
    p.insert("$lib".into(), "tower-telemetry".into());
    p.insert("$lib_version".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(url) = page_url(ctx) {
        p.insert("$current_url".into(), url.into());
    }
    if let Some(host) = ctx.hostname().filter(|h| !h.is_empty()) {
        p.insert("$host".into(), host.into());
    }
    if let Some(path) = ctx.path().filter(|p| !p.is_empty()) {
        p.insert("$pathname".into(), path.into());
    }
    if let Some(session) = ctx.session_id().filter(|s| !s.is_empty()) {
        p.insert("$session_id".into(), session.into());
    }
    match forward.client_ip(ctx) {
        Some(ip) => {
            p.insert("$ip".into(), ip.into());
        }
        None => {
            p.insert("$geoip_disable".into(), true.into());
        }
    }
    if let Some(ua) = forward.user_agent_of(ctx) {
        p.insert("$raw_user_agent".into(), ua.into());
    }
    if let Some(lang) = forward.language_of(ctx) {
        p.insert("$browser_language".into(), lang.into());
    }
    if let Some(r) = forward.referrer_of(ctx) {
        p.insert("$referrer".into(), r.into());
    }
    let groups: Map<String, Value> = ctx
        .groups()
        .map(|(t, k)| (t.to_owned(), k.into()))
        .collect();
    if !groups.is_empty() {
        p.insert("$groups".into(), Value::Object(groups));
    }
    let person = match who {
        Identity::User(user) | Identity::Anonymous(user) => user,
    };
    let (name, distinct_id): (&str, Value) = match event.kind() {
        // PostHog's capture API documents `$identify` with `$set`, `$set_once` and
        // `$anon_distinct_id` in the properties (its ingestion also reads a top-level `$set`,
        // where posthog-python's `set()` puts it; 7.x has no `identify()`).
        EventKind::Identify => {
            p.insert("$set".into(), Value::Object(common::traits(event)));
            if let Some(once) = common::reserved_object(event, identity::SET_ONCE) {
                p.insert(identity::SET_ONCE.into(), Value::Object(once));
            }
            if let Some(anon) = common::reserved_id(event, identity::ANON_DISTINCT_ID) {
                p.insert(identity::ANON_DISTINCT_ID.into(), anon.into());
            }
            ("$identify", person.into())
        }
        // As posthog-python's `alias(previous_id, distinct_id)`: sent as the previous id. One
        // without a previous id aliases the user to itself (a no-op) rather than send an empty
        // `distinct_id`, which would make PostHog refuse the whole batch.
        EventKind::Alias => {
            let previous: Value = common::reserved_id(event, identity::PREVIOUS_ID)
                .map_or_else(|| person.into(), Value::from);
            p.extend(common::traits(event));
            p.insert("distinct_id".into(), previous.clone());
            p.insert("alias".into(), person.into());
            ("$create_alias", previous)
        }
        // As posthog-python's `group_identify`, which is always personful.
        EventKind::Group => {
            for key in [identity::GROUP_TYPE, identity::GROUP_KEY] {
                if let Some(v) = common::reserved_id(event, key) {
                    p.insert(key.into(), v.into());
                }
            }
            p.insert("$group_set".into(), Value::Object(common::traits(event)));
            ("$groupidentify", person.into())
        }
        kind => {
            if matches!(who, Identity::Anonymous(_)) {
                p.insert("$process_person_profile".into(), false.into());
            }
            p.extend(common::properties(event));
            let name = match kind {
                EventKind::PageView => "$pageview",
                _ => event.name(),
            };
            (name, person.into())
        }
    };
    let mut item = Map::with_capacity(5);
    item.insert("event".into(), name.into());
    item.insert("distinct_id".into(), distinct_id);
    item.insert("properties".into(), Value::Object(p));
    item.insert(
        "timestamp".into(),
        Rfc3339(event.timestamp()).to_string().into(),
    );
    item.insert("uuid".into(), id.into());
    Value::Object(item)
}

impl Inner {
    async fn deliver(&self, batch: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let forward = self.config.forward;
        common::deliver(
            "posthog",
            batch,
            LIMITS,
            self.prefix.len() + 1,
            |e| serde_json::to_vec(&item(e, &forward)).unwrap_or_default(),
            |_, array| {
                let mut json = Vec::with_capacity(self.prefix.len() + array.len() + 1);
                json.extend_from_slice(&self.prefix);
                json.extend_from_slice(&array);
                json.push(b'}');
                let mut headers = HeaderMap::new();
                if let Some(auth) = &self.auth {
                    headers.insert(AUTHORIZATION, auth.clone());
                }
                let body = Body::json(json).with_gzip(self.config.gzip);
                async move { self.client.post(&self.url, headers, body).await.map(drop) }
            },
        )
        .await
    }
}

impl Destination for PostHogDestination {
    fn name(&self) -> &str {
        "posthog"
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
