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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
            parse_rfc3339(s).ok_or_else(|| field("timestamp", &format!("`{s}` is not RFC 3339")))
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

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to a time.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac[..digits].bytes().take(9).enumerate() {
            nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn rfc3339_forms() {
        let ms = |s| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis());
        assert_eq!(ms("2025-11-25T12:50:35.123Z"), Some(1_764_075_035_123));
        assert_eq!(ms("2025-11-25T13:50:35.123+01:00"), Some(1_764_075_035_123));
        assert_eq!(ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(ms("2000-02-29T00:00:00.000Z"), Some(951_782_400_000));
        assert_eq!(ms("2025-13-01T00:00:00Z"), None);
        assert_eq!(ms("yesterday"), None);
    }
}
