//! A PostHog capture server (API v0) for tests, enforcing the contract of issue #22.
//!
//! - `POST /batch/` (what the official SDK posts to, checked in `tests/sdk_crosscheck.rs`)
//!   and `POST /i/v0/e/`, `POST /e/` (a single event, or a `batch`): body `{"api_key",
//!   "historical_migration", "batch": [{"event", "distinct_id", "properties", "timestamp",
//!   "uuid"}], "sent_at"}`; `Content-Encoding: gzip` decoded.
//! - `api_key` (or `token`) missing or not [`API_KEY`] → 401 `authentication_error`.
//! - A body over 20 MB (as sent or gunzipped) → 413.
//! - Not JSON, no events, an event without a non-empty `event` or `distinct_id`, a
//!   `properties` that is not an object, a `timestamp` that is not RFC 3339, a `uuid` that is
//!   not a UUID → 400 `invalid_payload` for the whole request, nothing stored.
//! - An event over 1 MB (its JSON) → discarded alone ("Discarded event exceeding 1MB"),
//!   the rest stored, 200.
//! - Stored by `uuid`: an event whose uuid was stored before counts as a duplicate (PostHog
//!   dedupes by it); an event without one gets a fresh id.
//! - Person and group events PostHog's ingestion cannot apply → accepted (200, as capture
//!   answers) but not stored, counted [`discarded`](super::faults::ContractServer::discarded)
//!   (PostHog keeps such an event and logs an ingestion warning; the person or group is not
//!   changed): an `$identify`, `$create_alias` or `$anon_distinct_id` with an id ingestion
//!   refuses to merge (blank, `anonymous`, `null`, `0`, ... as its `isDistinctIdIllegal`); a
//!   `$create_alias` without `properties.alias`; a `$groupidentify` without `$group_type` and
//!   `$group_key`; a `$set` / `$set_once` event without its object; `$set`, `$set_once`,
//!   `$group_set` (top level or in the properties) or `$groups` that are not objects, or
//!   `$groups` whose keys are not strings.
//!   [`events_named`](ContractServer::events_named) reads the stored ones by name.
//!
//! Faults, refusing and the store: see [`super::faults`].
//!
//! ```ignore
//! let server = PostHogServer::start().await;
//! // point a `posthog` destination at server.url(), api_key API_KEY
//! assert!(server.wait_for_events(10, Duration::from_secs(5)).await);
//! server.events()[0].str("/distinct_id");
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::faults::{ContractServer, Core, Stored, Vendor, Verdict, is_rfc3339, is_uuid, serve};

/// The project API key the server accepts.
pub const API_KEY: &str = "phc_contractTestProjectKey0123456789abcdef";

/// The largest request body (as sent, and gunzipped).
pub const MAX_REQUEST: usize = 20 * 1024 * 1024;

/// The largest event (its JSON text).
pub const MAX_EVENT: usize = 1024 * 1024;

/// The PostHog contract.
#[derive(Default)]
pub struct PostHog {
    core: Core,
}

pub type PostHogServer = ContractServer<PostHog>;

impl ContractServer<PostHog> {
    /// Starts on a free port.
    pub async fn start() -> PostHogServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> PostHogServer {
        Self::start_vendor(addr, PostHog::default()).await
    }

    /// The stored events named `name` (`$identify`, `$create_alias`, ...), in arrival order.
    pub fn events_named(&self, name: &str) -> Vec<Stored> {
        self.events()
            .into_iter()
            .filter(|e| e.str("/event") == Some(name))
            .collect()
    }
}

impl Vendor for PostHog {
    fn core(&self) -> &Core {
        &self.core
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let id = |e: &Value| {
            e.get("uuid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(b)) => match b.get("batch").and_then(Value::as_array) {
                Some(batch) => batch.iter().map(id).collect(),
                None => vec![id(&Value::Object(b))],
            },
            _ => Vec::new(),
        }
    }

    fn app(this: Arc<Self>) -> Router {
        Router::new()
            .route("/batch/", post(capture))
            .route("/i/v0/e/", post(capture))
            .route("/e/", post(capture))
            .with_state(this)
    }
}

async fn capture(
    State(this): State<Arc<PostHog>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        &*this,
        uri.path(),
        &headers,
        body,
        MAX_REQUEST,
        || {
            Verdict::refuse(
                413,
                error("validation_error", "payload_too_large", "Payload too large"),
            )
        },
        check,
    )
    .await
}

fn error(kind: &str, code: &str, detail: &str) -> Value {
    json!({ "type": kind, "code": code, "detail": detail, "attr": null })
}

fn invalid(detail: &str) -> Verdict {
    Verdict::refuse(400, error("validation_error", "invalid_payload", detail))
}

fn check(body: &[u8]) -> Verdict {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return invalid("Failed to decode request body as JSON");
    };
    let key = body
        .get("api_key")
        .or_else(|| body.get("token"))
        .and_then(Value::as_str);
    if key != Some(API_KEY) {
        return Verdict::refuse(
            401,
            error(
                "authentication_error",
                "invalid_api_key",
                "Project API key invalid. You can find your project API key in PostHog project settings.",
            ),
        );
    }
    let items: Vec<Value> = match body.get("batch") {
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return invalid("batch is not an array"),
        // A single event: the body is the event.
        None => vec![Value::Object(body.clone())],
    };
    if items.is_empty() {
        return invalid("No events in the batch");
    }
    let n = items.len();
    let mut events = Vec::with_capacity(n);
    let mut discarded = 0;
    for item in items {
        if let Err(why) = check_event(&item) {
            return invalid(&why);
        }
        if item.to_string().len() > MAX_EVENT || applicable(&item).is_err() {
            // "Discarded event exceeding 1MB", or an identity event ingestion cannot apply:
            // dropped alone, the request still succeeds.
            discarded += 1;
            continue;
        }
        let id = item.get("uuid").and_then(Value::as_str).map(str::to_owned);
        events.push((id, item));
    }
    Verdict::Accept {
        events,
        discarded,
        reply: json!({ "status": "Ok" }),
    }
}

fn check_event(item: &Value) -> Result<(), String> {
    let Some(e) = item.as_object() else {
        return Err("an event is not an object".into());
    };
    match e.get("event") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err("an event has no event name".into()),
    }
    match e.get("distinct_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::Number(_)) => {}
        _ => return Err("an event has no distinct_id".into()),
    }
    match e.get("properties") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        _ => return Err("properties is not an object".into()),
    }
    match e.get("timestamp") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if is_rfc3339(t) => {}
        _ => return Err("timestamp is not an RFC 3339 date-time".into()),
    }
    match e.get("uuid") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) if is_uuid(u) => {}
        _ => return Err("uuid is not a UUID".into()),
    }
    Ok(())
}

/// Ids PostHog's ingestion refuses to merge (its `isDistinctIdIllegal`): blank, these in any
/// case, and these exactly, each also in single or double quotes.
const ILLEGAL_IDS_ANY_CASE: &[&str] = &[
    "anonymous",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
];
const ILLEGAL_IDS_EXACT: &[&str] = &["[object Object]", "NaN", "None", "none", "null", "0"];

/// Whether `id` (a string or a number) is one ingestion would merge.
fn mergeable(id: Option<&Value>) -> bool {
    let id = match id {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return false,
    };
    let bare = id
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| id.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(&id);
    !(bare.trim().is_empty()
        || ILLEGAL_IDS_ANY_CASE.contains(&bare.to_lowercase().as_str())
        || ILLEGAL_IDS_EXACT.contains(&bare))
}

/// Whether ingestion can apply what a person or group event asks (see the module docs).
fn applicable(item: &Value) -> Result<(), &'static str> {
    let props = item.get("properties").and_then(Value::as_object);
    let prop = |key: &str| props.and_then(|p| p.get(key));
    let object_or_absent = |v: Option<&Value>| matches!(v, None | Some(Value::Object(_)));
    for key in ["$set", "$set_once"] {
        if !object_or_absent(item.get(key)) || !object_or_absent(prop(key)) {
            return Err("$set / $set_once is not an object");
        }
    }
    match prop("$groups") {
        None => {}
        Some(Value::Object(groups)) if groups.values().all(|k| k.is_string() || k.is_number()) => {}
        Some(Value::Object(_)) => return Err("a $groups key is not a string"),
        Some(_) => return Err("$groups is not an object"),
    }
    let distinct_id = item.get("distinct_id");
    let present = |k: &str| match prop(k) {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Number(_)) => k == "$group_key",
        _ => false,
    };
    match item.get("event").and_then(Value::as_str).unwrap_or("") {
        "$identify" if !mergeable(distinct_id) => Err("$identify with an illegal distinct_id"),
        "$identify" if prop("$anon_distinct_id").is_some_and(|a| !mergeable(Some(a))) => {
            Err("$identify with an illegal $anon_distinct_id")
        }
        "$create_alias" if !mergeable(distinct_id) || !mergeable(prop("alias")) => {
            Err("$create_alias without two legal ids")
        }
        "$groupidentify" if !present("$group_type") || !present("$group_key") => {
            Err("$groupidentify without $group_type and $group_key")
        }
        "$groupidentify" if !object_or_absent(prop("$group_set")) => {
            Err("$group_set is not an object")
        }
        name @ ("$set" | "$set_once") if item.get(name).or_else(|| prop(name)).is_none() => {
            Err("a $set / $set_once event without its object")
        }
        _ => Ok(()),
    }
}
