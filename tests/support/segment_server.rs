//! A Segment tracking API server (`/v1/batch`) for tests, enforcing the contract of issue #22,
//! with a RudderStack mode (its larger limits).
//!
//! - `POST /v1/batch`, body `{"batch": [{"type", "event", "userId" | "anonymousId",
//!   "properties", "context", "timestamp", "messageId"}], "sentAt"}`; `Content-Encoding:
//!   gzip` decoded (RudderStack's SDK gzips by default).
//! - Auth: HTTP Basic with [`WRITE_KEY`] as the user and an empty password; without an
//!   `Authorization` header, the body's `writeKey` (Segment accepts either; the official SDKs
//!   send both). Anything else → 401.
//! - Limits, Segment: a batch over 500 KB or a message over 32 KB → 400 for the whole
//!   request; RudderStack ([`SegmentServer::start_rudderstack`]): 4 MB for either.
//! - Not JSON or no `batch` array → 400. An item Segment would not accept → still 200
//!   (Segment answers 200 for events it drops), counted
//!   [`discarded`](super::faults::ContractServer::discarded): an unknown `type`; neither
//!   `userId` nor `anonymousId` (every type but `alias`); a `track` without `event`; an
//!   `alias` without `previousId` and `userId`; a `group` without `groupId`; `traits` of an
//!   `identify` or `group`, `properties`, `context` or `context.traits` that are not objects;
//!   a `timestamp` that is not RFC 3339. Ids are non-empty strings or numbers.
//!   [`messages_of_type`](ContractServer::messages_of_type) reads the stored ones by `type`.
//! - Stored by `messageId`: one stored before counts as a duplicate.
//!
//! Faults, refusing and the store: see [`super::faults`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};

use super::faults::{ContractServer, Core, Stored, Vendor, Verdict, is_rfc3339, serve};

/// The write key the server accepts.
pub const WRITE_KEY: &str = "contractTestWriteKey0123456789";

/// Segment's limits: per batch request, per message (JSON text).
pub const SEGMENT_MAX_BATCH: usize = 500 * 1024;
pub const SEGMENT_MAX_MESSAGE: usize = 32 * 1024;

/// RudderStack's limit, per batch request and per message.
pub const RUDDERSTACK_MAX: usize = 4 * 1024 * 1024;

/// The Segment contract, or RudderStack's.
pub struct Segment {
    core: Core,
    max_batch: usize,
    max_message: usize,
}

pub type SegmentServer = ContractServer<Segment>;

impl ContractServer<Segment> {
    /// Segment's limits, on a free port.
    pub async fn start() -> SegmentServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Segment's limits, on `addr`.
    pub async fn start_on(addr: SocketAddr) -> SegmentServer {
        let vendor = Segment {
            core: Core::default(),
            max_batch: SEGMENT_MAX_BATCH,
            max_message: SEGMENT_MAX_MESSAGE,
        };
        Self::start_vendor(addr, vendor).await
    }

    /// RudderStack's limits, on a free port.
    pub async fn start_rudderstack() -> SegmentServer {
        let vendor = Segment {
            core: Core::default(),
            max_batch: RUDDERSTACK_MAX,
            max_message: RUDDERSTACK_MAX,
        };
        Self::start_vendor("127.0.0.1:0".parse().unwrap(), vendor).await
    }

    /// The stored messages of `type` (`identify`, `alias`, `group`, `track`, ...), in arrival
    /// order.
    pub fn messages_of_type(&self, kind: &str) -> Vec<Stored> {
        self.events()
            .into_iter()
            .filter(|m| m.str("/type") == Some(kind))
            .collect()
    }
}

impl Vendor for Segment {
    fn core(&self) -> &Core {
        &self.core
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return Vec::new();
        };
        let id = |m: &Value| {
            m.get("messageId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        b.get("batch")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |batch| batch.iter().map(id).collect())
    }

    fn app(this: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/batch", post(batch))
            .with_state(this)
    }
}

/// Basic auth `user:password` from the header, if there is one; `Err` when it is not Basic.
fn basic(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Some(b64) = value.to_str().ok().and_then(|v| {
        v.strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
    }) else {
        return Some(Err(()));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(match decoded.as_deref().and_then(|s| s.split_once(':')) {
        Some((user, password)) => Ok((user.to_owned(), password.to_owned())),
        None => Err(()),
    })
}

async fn batch(
    State(this): State<Arc<Segment>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let max_batch = this.max_batch;
    let max_message = this.max_message;
    let auth = basic(&headers);
    serve(
        &*this,
        uri.path(),
        &headers,
        body,
        max_batch,
        || too_large("batch"),
        |body| check(body, auth, max_message),
    )
    .await
}

fn too_large(what: &str) -> Verdict {
    Verdict::refuse(
        400,
        json!({ "success": false, "code": "invalid_request", "message": format!("{what} size exceeds the limit") }),
    )
}

fn unauthorized() -> Verdict {
    Verdict::refuse(
        401,
        json!({ "success": false, "code": "unauthorized", "message": "Invalid write key" }),
    )
}

fn check(body: &[u8], auth: Option<Result<(String, String), ()>>, max_message: usize) -> Verdict {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Verdict::refuse(
            400,
            json!({ "success": false, "code": "invalid_request", "message": "Invalid JSON" }),
        );
    };
    match auth {
        Some(Ok((user, password))) if user == WRITE_KEY && password.is_empty() => {}
        Some(_) => return unauthorized(),
        None if body.get("writeKey").and_then(Value::as_str) == Some(WRITE_KEY) => {}
        None => return unauthorized(),
    }
    let Some(Value::Array(items)) = body.get("batch") else {
        return Verdict::refuse(
            400,
            json!({ "success": false, "code": "invalid_request", "message": "batch is required" }),
        );
    };
    if items.iter().any(|m| m.to_string().len() > max_message) {
        return too_large("message");
    }
    let mut events = Vec::with_capacity(items.len());
    let mut discarded = 0;
    for item in items {
        if acceptable(item) {
            let id = item
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            events.push((id, item.clone()));
        } else {
            discarded += 1;
        }
    }
    Verdict::Accept {
        events,
        discarded,
        reply: json!({ "success": true }),
    }
}

fn acceptable(item: &Value) -> bool {
    let Some(m) = item.as_object() else {
        return false;
    };
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        kind,
        "track" | "identify" | "page" | "screen" | "group" | "alias"
    ) {
        return false;
    }
    let named = m
        .get("event")
        .and_then(Value::as_str)
        .is_some_and(|e| !e.is_empty());
    if kind == "track" && !named {
        return false;
    }
    let present = |key: &str| match m.get(key) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(_)) => true,
        _ => false,
    };
    let identified = match kind {
        // Segment's spec: an alias needs both previousId and userId (an anonymousId does
        // not stand in for the userId).
        "alias" => present("previousId") && present("userId"),
        "group" => present("groupId") && (present("userId") || present("anonymousId")),
        _ => present("userId") || present("anonymousId"),
    };
    if !identified {
        return false;
    }
    let object_or_absent =
        |v: Option<&Value>| matches!(v, None | Some(Value::Null) | Some(Value::Object(_)));
    if !object_or_absent(m.get("properties"))
        || !object_or_absent(m.get("context"))
        || !object_or_absent(m.get("context").and_then(|c| c.get("traits")))
    {
        return false;
    }
    if matches!(kind, "identify" | "group") && !object_or_absent(m.get("traits")) {
        return false;
    }
    match m.get("timestamp") {
        None | Some(Value::Null) => true,
        Some(Value::String(t)) => is_rfc3339(t),
        _ => false,
    }
}
