//! The wire form of an event on the stream: versioned JSON.
//!
//! Version 1 is one JSON object:
//!
//! ```json
//! {
//!   "v": 1,
//!   "id": "0190b6d2-6f0a-7c3e-9a52-0b7d2f1e4c11",
//!   "name": "generation.started",
//!   "category": "generation",
//!   "kind": "custom",
//!   "timestamp": "2026-11-25T12:50:35.123Z",
//!   "properties": { "model": "flux-dev" },
//!   "context": { "user_id": "user_123", "request_id": "req_789" }
//! }
//! ```
//!
//! - `v`: the schema version. Readers refuse versions they do not know.
//! - `id`: the event's UUIDv7, also sent as the `Nats-Msg-Id` header (JetStream's
//!   deduplication key) and kept by [`decode_event`], so every hop can deduplicate on it.
//! - `category`: derived from `name` (its first segment); informational.
//! - `kind`: `custom` (tracked by name) or `page_view` (the layer's request events).
//! - `timestamp`: RFC 3339, UTC, milliseconds.
//! - `context`: the known context fields that were set, then free-form fields, flat.
//!
//! New optional fields may be added within a version; readers ignore fields they do not know.
//! JSON objects are unordered: a decoded event's properties and free-form context fields come
//! back sorted by key.

use serde::Serialize;
use serde::ser::SerializeStruct;
use uuid::Uuid;

use crate::context::Context;
use crate::event::{Event, EventKind, Rfc3339};
use crate::properties::Properties;
use crate::text::Text;

/// The schema version [`encode_event`] writes and [`decode_event`] reads.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// The value of the `Telemetry-Schema` header on every message: what the payload is.
pub const EVENT_SCHEMA: &str = "tower-telemetry.event.v1";

/// The header that names the payload's schema.
pub(crate) const SCHEMA_HEADER: &str = "Telemetry-Schema";

/// Why a payload could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventSchemaError {
    /// Not a JSON object.
    #[error("not a JSON event object: {0}")]
    NotJson(String),
    /// The `v` field is missing or names a version this build does not read.
    #[error("unsupported schema version {0:?}; this build reads version 1")]
    Version(Option<u64>),
    /// A required field is missing or has the wrong type.
    #[error("field `{field}` {problem}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

struct Wire<'a>(&'a Event);

impl Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut st = s.serialize_struct("Event", 8)?;
        st.serialize_field("v", &EVENT_SCHEMA_VERSION)?;
        st.serialize_field("id", &e.id())?;
        st.serialize_field("name", e.name())?;
        st.serialize_field("category", e.category())?;
        st.serialize_field("kind", kind_name(e.kind()))?;
        st.serialize_field("timestamp", &Rfc3339(e.timestamp()))?;
        st.serialize_field("properties", e.properties())?;
        st.serialize_field("context", e.context())?;
        st.end()
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::PageView => "page_view",
        _ => "custom",
    }
}

/// The event as a version 1 JSON payload (see the [`schema` module docs](crate::destination::nats::schema)).
///
/// ```
/// use tower_telemetry::{Event, props, destination::nats::schema::{decode_event, encode_event}};
///
/// let event = Event::new("user.signup", props! { "plan" => "pro" });
/// let back = decode_event(&encode_event(&event)).unwrap();
/// assert_eq!(back.id(), event.id());
/// assert_eq!(back.properties(), event.properties());
/// ```
pub fn encode_event(event: &Event) -> Vec<u8> {
    // Properties and context hold JSON values with string keys only: this cannot fail.
    serde_json::to_vec(&Wire(event)).unwrap_or_default()
}

/// Reads a payload written by [`encode_event`] back into an [`Event`], with its original id,
/// timestamp, kind, properties and context.
pub fn decode_event(payload: &[u8]) -> Result<Event, EventSchemaError> {
    use serde_json::Value;
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| EventSchemaError::NotJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(EventSchemaError::NotJson(
            "the payload is not an object".into(),
        ));
    };
    let version = obj.get("v").and_then(Value::as_u64);
    if version != Some(u64::from(EVENT_SCHEMA_VERSION)) {
        return Err(EventSchemaError::Version(version));
    }
    let field = |field: &'static str, problem: &str| EventSchemaError::Field {
        field,
        problem: problem.to_owned(),
    };
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| field("id", "is missing or not a string"))
        .and_then(|s| {
            Uuid::parse_str(s).map_err(|e| field("id", &format!("is not a UUID: {e}")))
        })?;
    let name = match obj.remove("name") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(field("name", "is missing, empty or not a string")),
    };
    let timestamp = obj
        .get("timestamp")
        .and_then(Value::as_str)
        .ok_or_else(|| field("timestamp", "is missing or not a string"))
        .and_then(|s| {
            crate::event::parse_rfc3339(s)
                .ok_or_else(|| field("timestamp", &format!("`{s}` is not RFC 3339")))
        })?;
    let kind = match obj.get("kind").and_then(Value::as_str) {
        Some("page_view") => EventKind::PageView,
        _ => EventKind::Custom,
    };
    let properties = match obj.remove("properties") {
        None | Some(Value::Null) => Properties::new(),
        Some(Value::Object(map)) => Properties::from_json_map(map),
        Some(_) => return Err(field("properties", "is not an object")),
    };
    let context = match obj.remove("context") {
        None | Some(Value::Null) => Context::new(),
        Some(Value::Object(map)) => context_from_json(map),
        Some(_) => return Err(field("context", "is not an object")),
    };
    Ok(Event::new(name, properties)
        .with_kind(kind)
        .with_timestamp(timestamp)
        .with_context(context)
        .with_id(id))
}

/// The flat context object back into a [`Context`]: known fields by name (when strings),
/// everything else as free-form fields.
fn context_from_json(map: serde_json::Map<String, serde_json::Value>) -> Context {
    let mut c = Context::new();
    for (k, v) in map {
        let text = match &v {
            serde_json::Value::String(s) => Some(Text::from(s.clone())),
            _ => None,
        };
        let slot: Option<fn(&mut Context, Option<Text>) -> &mut Context> = match k.as_str() {
            "user_id" => Some(Context::set_user_id),
            "session_id" => Some(Context::set_session_id),
            "request_id" => Some(Context::set_request_id),
            "hostname" => Some(Context::set_hostname),
            "path" => Some(Context::set_path),
            "query" => Some(Context::set_query),
            "route" => Some(Context::set_route),
            "method" => Some(Context::set_method),
            "user_agent" => Some(Context::set_user_agent),
            "language" => Some(Context::set_language),
            "referrer" => Some(Context::set_referrer),
            "client_ip" => Some(Context::set_client_ip),
            _ => None,
        };
        match (slot, text) {
            (Some(set), Some(t)) => {
                set(&mut c, Some(t));
            }
            _ => {
                c.set_field(k, v);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::props;

    #[test]
    fn round_trip_keeps_everything() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_075_035_123);
        let ctx = Context::new()
            .with_user_id("user_123")
            .with_request_id("req_9")
            .with_path("/x")
            // JSON objects are unordered: free-form fields come back sorted by key.
            .with_field("shard", 7)
            .with_field("version", "1.4.2");
        let e = Event::new("generation.started", props! { "model" => "flux", "n" => 2 })
            .with_context(ctx.clone())
            .with_timestamp(t)
            .with_kind(EventKind::PageView);
        let back = decode_event(&encode_event(&e)).unwrap();
        assert_eq!(back.id(), e.id());
        assert_eq!(back.name(), "generation.started");
        assert_eq!(back.category().as_str(), "generation");
        assert_eq!(back.kind(), EventKind::PageView);
        assert_eq!(back.timestamp(), t);
        assert_eq!(back.properties(), e.properties());
        assert_eq!(back.context(), &ctx);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(
            decode_event(b"nope"),
            Err(EventSchemaError::NotJson(_))
        ));
        assert_eq!(
            decode_event(br#"{"v":2,"id":"x"}"#).err(),
            Some(EventSchemaError::Version(Some(2)))
        );
        let e =
            decode_event(br#"{"v":1,"id":"nope","name":"a","timestamp":"2026-01-01T00:00:00Z"}"#);
        assert!(matches!(
            e,
            Err(EventSchemaError::Field { field: "id", .. })
        ));
    }
}
