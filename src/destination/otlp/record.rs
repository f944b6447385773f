//! One event as one OpenTelemetry `LogRecord`, and the values as typed `AnyValue`s.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;

use super::config::Severity;
use crate::destination::http::common::Forward;
use crate::event::{Event, EventKind};
use crate::identity::GROUPS_FIELD;
use crate::value::PropertyValue;

/// The attribute holding the event id: the semantic conventions' unique id of a log record,
/// by which receivers may drop duplicates (a batch resent after a lost answer).
pub(crate) const EVENT_ID: &str = "log.record.uid";

/// The attribute holding the event's kind, for page views and identity operations.
pub(crate) const KIND: &str = "telemetry.kind";

/// The prefix of context fields without a semantic-convention name.
pub(crate) const PREFIX: &str = "telemetry.";

/// The context fields whose hex values become the record's trace and span ids.
pub(crate) const TRACE_ID_FIELD: &str = "trace_id";
/// See [`TRACE_ID_FIELD`].
pub(crate) const SPAN_ID_FIELD: &str = "span_id";

/// What every record of a destination shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mapping {
    pub(crate) severity: Severity,
    pub(crate) forward: Forward,
}

/// Nanoseconds since the Unix epoch (0 for a time before it: "unknown").
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The record of `event`, observed (sent) at `observed` nanoseconds.
pub(crate) fn log_record(event: &Event, mapping: &Mapping, observed: u64) -> LogRecord {
    let ctx = event.context();
    let forward = &mapping.forward;
    let mut attributes = Vec::with_capacity(12 + event.properties().len());
    let mut put = |key: &str, value: AnyValue| attributes.push(kv(key, value));
    let known = [
        ("user.id", ctx.user_id()),
        ("session.id", ctx.session_id()),
        ("telemetry.request_id", ctx.request_id()),
        ("server.address", ctx.hostname()),
        ("url.path", ctx.path()),
        ("http.route", ctx.route()),
        ("http.request.method", ctx.method()),
        (
            "user_agent.original",
            ctx.user_agent().filter(|_| forward.user_agent),
        ),
    ];
    for (key, value) in known {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            put(key, string(v));
        }
    }
    // Request headers, as the conventions give them: a list of the header's values.
    for (key, on, value) in [
        (
            "http.request.header.accept-language",
            forward.language,
            ctx.language(),
        ),
        (
            "http.request.header.referer",
            forward.referrer,
            ctx.referrer(),
        ),
    ] {
        if let Some(v) = value.filter(|v| on && !v.is_empty()) {
            put(key, array(vec![string(v)]));
        }
    }
    if let Some(ip) = forward.client_ip(ctx) {
        put("client.address", string(&ip));
    }

    // A trace id and a span id (W3C hex) become the record's; a span id without a valid trace
    // id is not (the data model asks for both), and a malformed one stays an attribute.
    let trace_id = ctx
        .field(TRACE_ID_FIELD)
        .and_then(PropertyValue::as_str)
        .and_then(hex_id::<16>);
    let span_id = trace_id.as_ref().and_then(|_| {
        ctx.field(SPAN_ID_FIELD)
            .and_then(PropertyValue::as_str)
            .and_then(hex_id::<8>)
    });
    for (k, v) in ctx.fields().iter() {
        if (k == TRACE_ID_FIELD && trace_id.is_some()) || (k == SPAN_ID_FIELD && span_id.is_some())
        {
            continue;
        }
        let key = if k == GROUPS_FIELD {
            format!("{PREFIX}groups")
        } else {
            format!("{PREFIX}{k}")
        };
        put(&key, any_value(v));
    }

    // Properties win over the context's attributes of the same name; the record's own
    // attributes win over both. What gives way is counted in `dropped_attributes_count`.
    let context_len = attributes.len();
    let mut dropped = 0u32;
    for (k, v) in event.properties().iter() {
        if k == EVENT_ID || k == KIND {
            dropped += 1;
            continue;
        }
        match attributes[..context_len].iter_mut().find(|a| a.key == k) {
            Some(slot) => {
                slot.value = Some(any_value(v));
                dropped += 1;
            }
            None => attributes.push(kv(k, any_value(v))),
        }
    }
    attributes.push(kv(EVENT_ID, string(&event.id().to_string())));
    if event.kind() != EventKind::Custom {
        attributes.push(kv(KIND, string(event.kind().as_str())));
    }

    LogRecord {
        time_unix_nano: unix_nanos(event.timestamp()),
        observed_time_unix_nano: observed,
        severity_number: mapping.severity.number(),
        severity_text: mapping.severity.text().to_owned(),
        // The name again as the body: log views that do not read `event_name` yet show the
        // body as the record's message, and an empty one says nothing.
        body: Some(string(event.name())),
        attributes,
        dropped_attributes_count: dropped,
        flags: 0,
        trace_id: trace_id.unwrap_or_default(),
        span_id: span_id.unwrap_or_default(),
        event_name: event.name().to_owned(),
    }
}

/// The resource of `attributes` (already in order, keys unique).
pub(crate) fn resource(attributes: &[(String, Value)]) -> Resource {
    Resource {
        attributes: attributes
            .iter()
            .map(|(k, v)| kv(k, json_value(v)))
            .collect(),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

/// The instrumentation scope: this library.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "tower-telemetry".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn string(s: &str) -> AnyValue {
    of(any_value::Value::StringValue(s.to_owned()))
}

fn array(values: Vec<AnyValue>) -> AnyValue {
    of(any_value::Value::ArrayValue(ArrayValue { values }))
}

fn of(value: any_value::Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

/// A property's value, typed: strings, 64-bit integers, doubles and booleans as themselves,
/// arrays and objects as `array_value` and `kvlist_value` (recursively), `null` as the empty
/// `AnyValue`. An integer above `i64::MAX` is sent as its decimal string (a double would
/// round it).
pub(crate) fn any_value(v: &PropertyValue) -> AnyValue {
    if let Some(s) = v.as_str() {
        return string(s);
    }
    if let Some(b) = v.as_bool() {
        return of(any_value::Value::BoolValue(b));
    }
    if let Some(n) = v.as_i64() {
        return of(any_value::Value::IntValue(n));
    }
    if let Some(n) = v.as_u64() {
        return string(&n.to_string());
    }
    if let Some(f) = v.as_f64() {
        return of(any_value::Value::DoubleValue(f));
    }
    match v.as_json() {
        Some(json) => json_value(json),
        None => AnyValue { value: None },
    }
}

/// [`any_value`] for JSON.
pub(crate) fn json_value(v: &Value) -> AnyValue {
    match v {
        Value::Null => AnyValue { value: None },
        Value::Bool(b) => of(any_value::Value::BoolValue(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => of(any_value::Value::IntValue(i)),
            (None, Some(u), _) => string(&u.to_string()),
            (None, None, Some(f)) => of(any_value::Value::DoubleValue(f)),
            (None, None, None) => string(&n.to_string()),
        },
        Value::String(s) => string(s),
        Value::Array(items) => array(items.iter().map(json_value).collect()),
        Value::Object(map) => of(any_value::Value::KvlistValue(KeyValueList {
            values: map.iter().map(|(k, v)| kv(k, json_value(v))).collect(),
        })),
    }
}

/// `N` bytes from `2N` hex digits (either case), unless all zero: the W3C trace context's
/// ids (`N` = 16 for a trace id, 8 for a span id).
pub(crate) fn hex_id<const N: usize>(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<Vec<u8>>>()?;
    bytes.iter().any(|b| *b != 0).then_some(bytes)
}
