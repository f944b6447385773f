//! The versioned JSON form of an event: what the `nats` destination publishes, the relay reads,
//! and the spool keeps on disk. One codec for all three; its public face and the wire format's
//! description are [`destination::nats::schema`](crate::destination::nats::schema) (feature
//! `nats`).

// Public for the nats destination's re-exports; a build with the spool alone uses part of it.
#![cfg_attr(not(feature = "nats"), allow(unreachable_pub, dead_code))]

use std::cell::Cell;

use serde::Serialize;
use serde::de::DeserializeSeed;
use serde::ser::SerializeStruct;
use serde_json::Value;
use uuid::Uuid;

use crate::context::Context;
use crate::diag::Escaped;
use crate::event::{Event, EventKind, Rfc3339, validate_name};
use crate::limits::LimitsConfig;
use crate::properties::Properties;
use crate::text::Text;

mod bounded;
use bounded::{Budget, Root};

/// The schema version [`encode_event`] writes and [`decode_event`] reads.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// The value of the `Telemetry-Schema` header on every message: what the payload is.
#[cfg_attr(not(feature = "nats"), allow(dead_code))] // the stream's header only
pub const EVENT_SCHEMA: &str = "tower-telemetry.event.v1";

/// The header that names the payload's schema.
#[cfg_attr(not(feature = "nats"), allow(dead_code))] // the stream's header only
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
    /// The payload is over the reader's limits (its length, or what it would decode to): it
    /// was refused before being decoded further.
    #[error("over the limits: {0}")]
    Limit(String),
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
        st.serialize_field("kind", e.kind().as_str())?;
        st.serialize_field("timestamp", &Rfc3339(e.timestamp()))?;
        st.serialize_field("properties", e.properties())?;
        st.serialize_field("context", e.context())?;
        st.end()
    }
}

/// The event as a version 1 JSON payload (see the `schema` module docs: `tower_telemetry::destination::nats::schema`).
///
/// ```
/// # #[cfg(feature = "nats")] {
/// use tower_telemetry::{Event, props, destination::nats::schema::{decode_event, encode_event}};
///
/// let event = Event::new("user.signup", props! { "plan" => "pro" });
/// let back = decode_event(&encode_event(&event)).unwrap();
/// assert_eq!(back.id(), event.id());
/// assert_eq!(back.properties(), event.properties());
/// # }
/// ```
pub fn encode_event(event: &Event) -> Vec<u8> {
    // Properties and context hold JSON values with string keys only: this cannot fail.
    serde_json::to_vec(&Wire(event)).unwrap_or_default()
}

/// Reads a payload written by [`encode_event`] back into an [`Event`], with its original id,
/// timestamp, kind, properties and context, within the default [limits](crate::limits) (see
/// [`decode_event_with_limits`]).
pub fn decode_event(payload: &[u8]) -> Result<Event, EventSchemaError> {
    decode_event_with_limits(payload, &LimitsConfig::default())
}

/// Bytes a payload may have beyond `max_event_size`: the wire's own fields.
const WIRE_OVERHEAD: usize = 1024;
/// A decoded event may hold this many times `max_event_size` in memory.
const DECODED_FACTOR: usize = 16;

/// [`decode_event`] within `limits`, checked before anything much is allocated (see the
/// [module docs](crate::destination::nats::schema)): a payload longer than `max_event_size` + 1 KiB is refused unread;
/// while it is decoded, properties over `max_properties` (per object or array),
/// `max_string_length` or `max_depth`, context fields nested deeper than 64, and an event that
/// would hold more than 16 × `max_event_size` bytes in memory are refused
/// ([`EventSchemaError::Limit`]); the name must pass the rules of tracked names and the
/// timestamp be RFC 3339.
///
/// ```
/// # #[cfg(feature = "nats")] {
/// use tower_telemetry::{Event, props, limits::LimitsConfig};
/// use tower_telemetry::destination::nats::schema::{EventSchemaError, decode_event_with_limits, encode_event};
///
/// let event = Event::new("user.signup", props! { "tags" => ["a", "b", "c"] });
/// let payload = encode_event(&event);
/// assert!(decode_event_with_limits(&payload, &LimitsConfig::default()).is_ok());
/// let strict = LimitsConfig::default().with_max_properties(2);
/// assert!(matches!(
///     decode_event_with_limits(&payload, &strict),
///     Err(EventSchemaError::Limit(_))
/// ));
/// # }
/// ```
pub fn decode_event_with_limits(
    payload: &[u8],
    limits: &LimitsConfig,
) -> Result<Event, EventSchemaError> {
    let max_message = limits.max_event_size().saturating_add(WIRE_OVERHEAD);
    if payload.len() > max_message {
        return Err(EventSchemaError::Limit(format!(
            "the message is {} bytes; at most {max_message} are read (max_event_size: {})",
            payload.len(),
            limits.max_event_size()
        )));
    }
    let budget = Budget {
        left: Cell::new(limits.max_event_size().saturating_mul(DECODED_FACTOR)),
        max: limits.max_event_size().saturating_mul(DECODED_FACTOR),
        violation: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = Root {
        limits,
        budget: &budget,
    }
    .deserialize(&mut de)
    .and_then(|obj| de.end().map(|()| obj));
    let mut obj = match parsed {
        Ok(obj) => obj,
        Err(e) => {
            return Err(match budget.violation.take() {
                Some(why) => EventSchemaError::Limit(why),
                None => EventSchemaError::NotJson(e.to_string()),
            });
        }
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
            Uuid::parse_str(s).map_err(|_| field("id", &format!("`{}` is not a UUID", shown(s))))
        })?;
    let name = match obj.remove("name") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(field("name", "is missing, empty or not a string")),
    };
    // The rules a tracked name passes (no control characters, at most 200 bytes).
    validate_name(&name).map_err(|e| field("name", &e.to_string()))?;
    let timestamp = obj
        .get("timestamp")
        .and_then(Value::as_str)
        .ok_or_else(|| field("timestamp", "is missing or not a string"))
        .and_then(|s| {
            crate::event::parse_rfc3339(s)
                .ok_or_else(|| field("timestamp", &format!("`{}` is not RFC 3339", shown(s))))
        })?;
    // A kind this version does not know (from a newer producer) is read as `custom`.
    let kind = (obj.get("kind").and_then(Value::as_str))
        .and_then(EventKind::from_name)
        .unwrap_or_default();
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

/// A field's text as an error shows it: escaped (a newline or an escape sequence can forge
/// no log line) and cut to 64 characters.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("{}{more}", Escaped(&cut))
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
    use crate::limits::{DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_STRING_LENGTH};
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
    fn identity_operations_cross_the_stream_as_their_own_kind() {
        use crate::identity::{self, GROUP_KEY, GROUP_TYPE, SET_ONCE};
        let ctx = Context::new()
            .with_user_id("user_42")
            .with_group("company", "acme");
        for (name, kind) in [
            (identity::IDENTIFY, EventKind::Identify),
            (identity::ALIAS, EventKind::Alias),
            (identity::GROUP, EventKind::Group),
        ] {
            let mut p = props! { "plan" => "pro", GROUP_TYPE => "company", GROUP_KEY => "acme" };
            p.insert_json(SET_ONCE, serde_json::json!({"first_plan": "free"}));
            let e = Event::new(name, p)
                .with_kind(kind)
                .with_context(ctx.clone());
            let wire: Value = serde_json::from_slice(&encode_event(&e)).unwrap();
            assert_eq!(wire["kind"], kind.as_str());
            let back = decode_event(&encode_event(&e)).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.name(), name);
            // Decoded properties come back sorted by key.
            assert_eq!(
                back.properties().to_json_map(),
                e.properties().to_json_map()
            );
            assert_eq!(
                back.context().groups().collect::<Vec<_>>(),
                [("company", "acme")]
            );
        }
        // A kind from a newer producer is read as `custom`.
        let mut wire: Value =
            serde_json::from_slice(&encode_event(&Event::new("user.x", Properties::new())))
                .unwrap();
        wire["kind"] = "hologram".into();
        let back = decode_event(&serde_json::to_vec(&wire).unwrap()).unwrap();
        assert_eq!(back.kind(), EventKind::Custom);
    }

    /// A version 1 payload with these `properties` and `context` (raw JSON).
    fn payload(name: &str, timestamp: &str, properties: &str, context: &str) -> Vec<u8> {
        format!(
            r#"{{"v":1,"id":"0190b6d2-6f0a-7c3e-9a52-0b7d2f1e4c11","name":{},"timestamp":{},"properties":{properties},"context":{context}}}"#,
            serde_json::to_string(name).unwrap(),
            serde_json::to_string(timestamp).unwrap(),
        )
        .into_bytes()
    }

    const T: &str = "2026-01-01T00:00:00.000Z";

    fn limit(payload: &[u8]) -> String {
        match decode_event(payload) {
            Err(EventSchemaError::Limit(why)) => why,
            other => panic!("not refused for a limit: {other:?}"),
        }
    }

    #[test]
    fn a_hostile_megabyte_is_refused_unread() {
        // The issue's message: 1 MB of tiny objects, 87 MB once decoded.
        let tiny = vec![r#"{"a":0}"#; 131_000].join(",");
        let p = payload("user.x", T, &format!(r#"{{"p":[{tiny}]}}"#), "{}");
        assert!(p.len() > 1_000_000);
        assert!(limit(&p).contains("the message is"), "{}", limit(&p));
    }

    #[test]
    fn what_would_hold_too_much_is_refused_while_decoding() {
        // Under the message size (~57 KB) and every per-value limit, but 64 × 64 tiny objects
        // hold megabytes: refused once the decoded budget (16 × max_event_size) runs out.
        let tiny = vec![r#"{"a":{"b":0}}"#; 64].join(",");
        let props: Vec<String> = (0..64).map(|i| format!(r#""p{i}":[{tiny}]"#)).collect();
        let p = payload("user.x", T, &format!("{{{}}}", props.join(",")), "{}");
        assert!(p.len() < DEFAULT_MAX_EVENT_SIZE, "{}", p.len());
        assert!(limit(&p).contains("would hold more than"), "{}", limit(&p));
    }

    #[test]
    fn properties_over_the_limits_are_refused_not_cut() {
        let many = (0..65).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let p = payload("user.x", T, &format!(r#"{{"list":[{many}]}}"#), "{}");
        assert!(limit(&p).contains("more than 64 entries"), "{}", limit(&p));
        let long = "x".repeat(DEFAULT_MAX_STRING_LENGTH + 1);
        let p = payload("user.x", T, &format!(r#"{{"s":"{long}"}}"#), "{}");
        assert!(limit(&p).contains("max_string_length"), "{}", limit(&p));
        // max_depth (8) levels of containers in a value are kept; a ninth is refused.
        let deep = |n: usize| format!(r#"{{"d":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(decode_event(&payload("user.x", T, &deep(8), "{}")).is_ok());
        assert!(limit(&payload("user.x", T, &deep(9), "{}")).contains("nested too deep"));
        // A context field nests at most 64 deep.
        let ctx = |n: usize| format!(r#"{{"f":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(decode_event(&payload("user.x", T, "{}", &ctx(64))).is_ok());
        assert!(limit(&payload("user.x", T, "{}", &ctx(65))).contains("nested too deep"));
        // Deeper than serde_json's own recursion limit: refused all the same.
        let p = payload("user.x", T, &deep(10_000), "{}");
        assert!(decode_event(&p).is_err());
    }

    #[test]
    fn fields_are_validated_and_shown_escaped() {
        // A timestamp with a newline and an ESC must not forge a log line.
        let forged = r"2026-01-01T00:00:00Z\n\u001b[31mWARN forged line";
        let raw = String::from_utf8(payload("user.x", "X", "{}", "{}"))
            .unwrap()
            .replace(r#""timestamp":"X""#, &format!(r#""timestamp":"{forged}""#));
        let err = decode_event(raw.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("timestamp"), "{err}");
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err:?}");
        assert!(err.contains("\\n") && err.contains("\\u{1b}"), "{err}");
        // The name follows the rules of tracked names.
        let err = decode_event(&payload("user.x\nINFO forged", T, "{}", "{}")).unwrap_err();
        assert!(
            matches!(err, EventSchemaError::Field { field: "name", .. }),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'));
        let long = "x".repeat(201);
        assert!(decode_event(&payload(&long, T, "{}", "{}")).is_err());
        // The id is a UUID, quoted escaped.
        let raw = String::from_utf8(payload("user.x", T, "{}", "{}"))
            .unwrap()
            .replace(
                "0190b6d2-6f0a-7c3e-9a52-0b7d2f1e4c11",
                "\\u001b]0;pwned\\u0007",
            );
        let err = decode_event(raw.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("is not a UUID") && !err.contains('\u{1b}'),
            "{err:?}"
        );
        // Unknown top-level fields are skipped unread; a sound event decodes.
        let raw = String::from_utf8(payload(
            "user.x",
            T,
            r#"{"a":[1,{"b":"c"}]}"#,
            r#"{"user_id":"u"}"#,
        ))
        .unwrap()
        .replace(r#""v":1,"#, r#""v":1,"future":{"x":[1,2,3]},"#);
        let e = decode_event(raw.as_bytes()).unwrap();
        assert_eq!(e.properties().get("a").unwrap()[1]["b"], "c");
        assert_eq!(e.context().user_id(), Some("u"));
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
