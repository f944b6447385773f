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
//! - `kind`: `custom` (tracked by name), `page_view` (the layer's request events), or an
//!   identity operation: `identify`, `alias`, `group` (see [`identity`](crate::identity));
//!   a kind the reader does not know is read as `custom`.
//! - `timestamp`: RFC 3339, UTC, milliseconds.
//! - `context`: the known context fields that were set, then free-form fields, flat.
//!
//! New optional fields may be added within a version; readers ignore fields they do not know.
//!
//! The reader distrusts its input ([`decode_event_with_limits`]): a payload longer than
//! `max_event_size` plus 1 KiB is refused unread; what it decodes is checked *while* it is
//! decoded, before it is allocated — properties by the same [limits](crate::limits) a tracked
//! event gets (`max_properties` per object or array, `max_string_length`, `max_depth`, refused
//! rather than cut), context fields no deeper than 64, and the whole event's in-memory size
//! at most 16 × `max_event_size` (1 MiB by default) — and every field is validated: the
//! version, the id (a UUID), the name (the rules of tracked names), the timestamp (RFC 3339).
//! JSON objects are unordered: a decoded event's properties and free-form context fields come
//! back sorted by key.

pub(crate) use crate::event::schema::SCHEMA_HEADER;
pub use crate::event::schema::{
    EVENT_SCHEMA, EVENT_SCHEMA_VERSION, EventSchemaError, decode_event, decode_event_with_limits,
    encode_event,
};
