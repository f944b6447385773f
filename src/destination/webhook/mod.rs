//! The `webhook` destination: events posted as JSON to any URL, signed as
//! [Standard Webhooks](https://www.standardwebhooks.com) prescribes.
//!
//! Each batch is one `POST` of
//!
//! ```json
//! {"type": "telemetry.events", "timestamp": "2026-01-01T12:00:00.000Z",
//!  "data": {"events": [{"id", "name", "kind", "timestamp", "properties", "context"}]}}
//! ```
//!
//! with the headers `webhook-id` (`msg_` and 32 hex digits of a SHA-256 of the batch's event
//! ids: the same for every retry of the same events), `webhook-timestamp` (Unix seconds, at
//! sending) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//! keyed with the base64-decoded part of the secret after `whsec_`. Receivers verify it with
//! any Standard Webhooks library, reject more than 5 minutes of clock skew, and should
//! dedupe by `webhook-id`: a batch whose answer was lost is sent again with the same id.
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     hooks:
//!       type: webhook
//!       url: https://hooks.example.com/t     # required; may carry credentials
//!       secret: ${WEBHOOK_SECRET}            # required: whsec_<base64>
//!       forward: { ip: false, user_agent: true, language: true, referrer: true }
//! ```
//!
//! | our event | webhook event |
//! |---|---|
//! | id | `id` |
//! | name | `name` |
//! | kind, unless `custom` (a tracked event) | `kind`: `page_view`, `identify`, `alias` or `group` ([`EventKind::as_str`]) |
//! | timestamp | `timestamp` (RFC 3339) |
//! | properties | `properties`; for an identity operation the traits and its reserved keys (`$set_once`, `$anon_distinct_id`, `$previous_id`, `$group_type`, `$group_key`: see [`identity`](crate::identity)) |
//! | user, session and request ids, hostname, path, route, method | `context.user_id`, ... (same names) |
//! | User-Agent, language, referrer, client IP | `context.user_agent`, `context.language`, `context.referrer`, `context.client_ip`, each only if forwarded (`forward`; the IP is off by default) |
//! | the context's own fields | `context.<field>` |
//! | the context's groups | `context.$groups`: `{"company": "acme"}` |
//! | query string | never sent |
//!
//! Answers: 2xx delivered; 408, 429, 5xx retried (after `Retry-After`); other statuses
//! failed. Requests stay under 1 MiB; an event over 256 KiB fails alone.

mod config;

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use crate::destination::http::common::Forward;
pub use config::WebhookConfig;

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, ConfigErrors, DeliveryConfig, Settings};
use crate::destination::http::common;
use crate::destination::http::{Body, Client, Limits};
use crate::event::{Event, EventKind, Rfc3339};

/// 1 MiB per request, 256 KiB per event.
pub(crate) const LIMITS: Limits = Limits {
    per_request: 1024 * 1024,
    per_event: 256 * 1024,
};

/// The envelope around the events, an upper bound.
const OVERHEAD: usize = 96;

/// Delivers signed events to a webhook. See the [module docs](self).
///
/// Clones share the same connections.
#[derive(Clone)]
pub struct WebhookDestination {
    inner: Arc<Inner>,
}

struct Inner {
    config: WebhookConfig,
    url: Url,
    auth: Option<HeaderValue>,
    key: Vec<u8>,
    client: Client,
}

impl WebhookDestination {
    /// A destination posting to the URL of `config`; fails if the URL is unusable or the
    /// secret is not `whsec_` and base64. Makes no request.
    pub fn new(config: WebhookConfig) -> Result<WebhookDestination, ConfigErrors> {
        Self::build(config, &|key, msg| {
            ConfigError::new(format!("webhook.{key}"), None, msg)
        })
        .map_err(ConfigErrors::from)
    }

    /// Builds one from the settings of a configured destination (the keys of the
    /// [module docs](self)); each error names the key path and line.
    pub fn from_settings(settings: &Settings) -> Result<WebhookDestination, Vec<ConfigError>> {
        settings.build_with(WebhookConfig::from_settings(settings), Self::build)
    }

    fn build(
        config: WebhookConfig,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Self, Vec<ConfigError>> {
        let (url, auth, key) = config.validate(error)?;
        let client = Client::new("webhook", common::user_agent())
            .map_err(|m| vec![error("url", m)])?
            .with_path_shown(false);
        Ok(WebhookDestination {
            inner: Arc::new(Inner {
                config,
                url,
                auth,
                key,
                client,
            }),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }
}

impl fmt::Debug for WebhookDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Scheme and host only: the userinfo, the query and often the path hold credentials.
        let shown = common::masked_url(self.inner.url.as_str(), true);
        f.debug_struct("WebhookDestination")
            .field("url", &shown)
            .field("forward", &self.inner.config.forward)
            .finish_non_exhaustive()
    }
}

/// The JSON of `event` in the envelope's `data.events`.
pub(crate) fn event_json(event: &Event, forward: &Forward) -> Value {
    let ctx = event.context();
    let mut c = Map::new();
    for (k, v) in ctx.fields().iter() {
        c.insert(k.to_owned(), v.to_json());
    }
    for (k, v) in ctx.known_fields() {
        let keep = match k {
            "query" | "client_ip" | "user_agent" | "language" | "referrer" => false,
            _ => !v.is_empty(),
        };
        if keep {
            c.insert(k.to_owned(), v.into());
        }
    }
    if let Some(ip) = forward.client_ip(ctx) {
        c.insert("client_ip".into(), ip.into());
    }
    fn raw(on: bool, v: Option<&str>) -> Option<&str> {
        v.filter(|v| on && !v.is_empty())
    }
    for (k, v) in [
        ("user_agent", raw(forward.user_agent, ctx.user_agent())),
        ("language", raw(forward.language, ctx.language())),
        ("referrer", raw(forward.referrer, ctx.referrer())),
    ] {
        if let Some(v) = v {
            c.insert(k.into(), v.into());
        }
    }
    let mut e = Map::with_capacity(6);
    e.insert("id".into(), event.id().to_string().into());
    e.insert("name".into(), event.name().into());
    if event.kind() != EventKind::Custom {
        // Page views and identity operations say what they are; a tracked event has no `kind`.
        e.insert("kind".into(), event.kind().as_str().into());
    }
    e.insert(
        "timestamp".into(),
        Rfc3339(event.timestamp()).to_string().into(),
    );
    e.insert(
        "properties".into(),
        Value::Object(common::properties(event)),
    );
    e.insert("context".into(), Value::Object(c));
    Value::Object(e)
}

/// The `webhook-id` of a request carrying `events`: `msg_` and the first 16 bytes, in hex, of
/// a SHA-256 over their ids; the same events always give the same id.
pub(crate) fn message_id<'a>(events: impl IntoIterator<Item = &'a Event>) -> String {
    let mut h = Sha256::new();
    for e in events {
        h.update(e.id().as_bytes());
    }
    let digest = h.finalize();
    let mut id = String::with_capacity(36);
    id.push_str("msg_");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub(crate) fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

impl Inner {
    /// The signed headers of a request.
    fn headers(&self, id: &str, body: &[u8], now: SystemTime) -> HeaderMap {
        let timestamp = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        put(
            "webhook-signature",
            signature(&self.key, id, timestamp, body),
        );
        put("webhook-id", id.to_owned());
        put("webhook-timestamp", timestamp.to_string());
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        headers
    }

    async fn deliver(&self, batch: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let forward = self.config.forward;
        common::deliver(
            "webhook",
            batch,
            LIMITS,
            OVERHEAD,
            |e| serde_json::to_vec(&event_json(e, &forward)).unwrap_or_default(),
            |indexes, array| {
                let now = SystemTime::now();
                let id = message_id(indexes.iter().map(|i| &*batch[*i]));
                let mut json = Vec::with_capacity(array.len() + OVERHEAD);
                json.extend_from_slice(br#"{"type":"telemetry.events","timestamp":""#);
                json.extend_from_slice(Rfc3339(now).to_string().as_bytes());
                json.extend_from_slice(br#"","data":{"events":"#);
                json.extend_from_slice(&array);
                json.extend_from_slice(b"}}");
                let headers = self.headers(&id, &json, now);
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

impl Destination for WebhookDestination {
    fn name(&self) -> &str {
        "webhook"
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
