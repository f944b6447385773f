//! Events and their categories; their ids ([`id`]) and timestamps ([`time`]).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use uuid::Uuid;

mod id;
#[cfg(any(feature = "nats", feature = "spool"))]
pub(crate) mod schema;
mod time;

pub(crate) use id::{hyphenated, new_event_id, new_event_id_at};
pub use time::Rfc3339;
#[cfg(any(feature = "nats", feature = "spool"))]
pub(crate) use time::parse_rfc3339;
pub(crate) use time::unix_millis;

use crate::context::Context;
// Also reachable here, where the crate has always imported them from.
pub(crate) use crate::properties::INLINE_PROPERTIES;
pub use crate::properties::Properties;
use crate::text::Text;
use crate::value::ALLOC_OVERHEAD;

/// The longest event name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// What an event is about, derived from the first segment of its name.
///
/// `generation.started` is [`EventCategory::Generation`]; `checkout.completed` is
/// `Custom("checkout")`. The six named categories are the common product-analytics ones.
///
/// ```
/// use tower_telemetry::EventCategory;
///
/// assert_eq!(EventCategory::of("user.signup"), EventCategory::User);
/// assert_eq!(EventCategory::of("checkout.completed").as_str(), "checkout");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventCategory {
    /// User actions (clicks, navigation, sign-ups): `user.*`.
    User,
    /// AI generations: `generation.*`.
    Generation,
    /// Payments: `payment.*`.
    Payment,
    /// Errors: `error.*`.
    Error,
    /// Timing and performance: `performance.*`.
    Performance,
    /// The system itself (boot, shutdown, dropped events): `system.*`.
    System,
    /// Any other first segment.
    Custom(Text),
}

impl EventCategory {
    /// The category of an event name.
    pub fn of(name: &str) -> EventCategory {
        Self::of_text(&Text::copy_from(name))
    }

    pub(crate) fn of_text(name: &Text) -> EventCategory {
        // Names are short: a plain scan beats `split`'s searcher set-up on every event.
        let s = name.as_str();
        let end = s.bytes().position(|b| b == b'.').unwrap_or(s.len());
        match &s[..end] {
            "user" => EventCategory::User,
            "generation" => EventCategory::Generation,
            "payment" => EventCategory::Payment,
            "error" => EventCategory::Error,
            "performance" => EventCategory::Performance,
            "system" => EventCategory::System,
            _ => EventCategory::Custom(name.first_segment()),
        }
    }

    /// A small code for the categories other than `Custom` (6 for `Custom`), for caches.
    pub(crate) fn code(&self) -> u8 {
        match self {
            EventCategory::User => 0,
            EventCategory::Generation => 1,
            EventCategory::Payment => 2,
            EventCategory::Error => 3,
            EventCategory::Performance => 4,
            EventCategory::System => 5,
            EventCategory::Custom(_) => 6,
        }
    }

    /// The category of [`code`](Self::code), unless it is `Custom`'s.
    pub(crate) fn from_code(code: u8) -> Option<EventCategory> {
        Some(match code {
            0 => EventCategory::User,
            1 => EventCategory::Generation,
            2 => EventCategory::Payment,
            3 => EventCategory::Error,
            4 => EventCategory::Performance,
            5 => EventCategory::System,
            _ => return None,
        })
    }

    /// The category's name, as it appears in event names.
    pub fn as_str(&self) -> &str {
        match self {
            EventCategory::User => "user",
            EventCategory::Generation => "generation",
            EventCategory::Payment => "payment",
            EventCategory::Error => "error",
            EventCategory::Performance => "performance",
            EventCategory::System => "system",
            EventCategory::Custom(s) => s,
        }
    }
}

impl fmt::Display for EventCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventCategory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether an event is a tracked action, an automatic page view, or an identity operation.
///
/// Identity operations ([`Telemetry::identify`](crate::Telemetry::identify),
/// [`alias`](crate::Telemetry::alias), [`group`](crate::Telemetry::group)) travel through the
/// pipeline as events of their own kind, named [`IDENTIFY`](crate::identity::IDENTIFY),
/// [`ALIAS`](crate::identity::ALIAS) and [`GROUP`](crate::identity::GROUP); their properties
/// are laid out as [`identity`](crate::identity) describes. A destination with no counterpart
/// for a kind says so with [`Destination::supports`](crate::destination::Destination::supports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// An event tracked by name (`track!`, `Tracker::track`, ...).
    #[default]
    Custom,
    /// The automatic per-request event of [`TelemetryLayer`](crate::layer::TelemetryLayer)
    /// (`telemetry.requests`): destinations such as Umami record it as a page view.
    PageView,
    /// The context's user is identified: the properties are the user's traits.
    Identify,
    /// A previous id and the context's user are the same person.
    Alias,
    /// A group (company, team, ...) is described: the properties are its traits.
    Group,
}

impl EventKind {
    /// The kind's name in serialized events: `custom`, `page_view`, `identify`, `alias`,
    /// `group`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Custom => "custom",
            EventKind::PageView => "page_view",
            EventKind::Identify => "identify",
            EventKind::Alias => "alias",
            EventKind::Group => "group",
        }
    }

    /// The kind of [`as_str`](Self::as_str)'s name.
    pub fn from_name(name: &str) -> Option<EventKind> {
        Some(match name {
            "custom" => EventKind::Custom,
            "page_view" => EventKind::PageView,
            "identify" => EventKind::Identify,
            "alias" => EventKind::Alias,
            "group" => EventKind::Group,
            _ => return None,
        })
    }

    /// Whether it is an identity operation (identify, alias, group).
    pub fn is_identity(self) -> bool {
        matches!(
            self,
            EventKind::Identify | EventKind::Alias | EventKind::Group
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// The name is empty.
    #[error("event name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("event name is {0} bytes long; the limit is 200")]
    TooLong(usize),
    /// The name contains a control character (newline, escape, ...).
    #[error("event name contains a control character")]
    ControlCharacter,
}

/// Checks an event name: not empty, at most [`MAX_NAME_LEN`] bytes, no control characters.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidName::ControlCharacter);
    }
    Ok(())
}

/// One tracked event: what happened, when, with which properties, in which context.
///
/// Events are built by the pipeline ([`track!`](macro@crate::track), [`Telemetry::track`](crate::Telemetry::track), ...)
/// and shared with every destination they are routed to as an `Arc<Event>`. Destinations read
/// them through the accessors; [`Event::new`] builds one directly, for testing a destination.
///
/// Serialized (for a log line or an HTTP body) it is
/// `{"id", "name", "category", "timestamp" (RFC 3339, milliseconds, UTC), "properties", "context"}`,
/// with a `"kind"` (see [`EventKind::as_str`]) after the category for any kind but `custom`.
#[derive(Clone)]
pub struct Event {
    pub(crate) id: Uuid,
    /// The id is still to be drawn (from `timestamp`): `track!` leaves that to the worker
    /// that takes the event from its queue, off the request path ([`Event::draw_id`]).
    pub(crate) id_pending: bool,
    pub(crate) name: Text,
    pub(crate) category: EventCategory,
    pub(crate) kind: EventKind,
    pub(crate) timestamp: SystemTime,
    pub(crate) properties: Properties,
    pub(crate) context: Arc<Context>,
    /// An upper bound of the bytes the event holds in memory ([`held_size`]), computed once
    /// when it is built: what a destination's `queue_max_bytes` counts.
    pub(crate) held: usize,
}

impl Event {
    /// An event named `name`, now, with a fresh id and an empty context.
    ///
    /// The name is not validated here; the pipeline validates names it is given.
    pub fn new(name: impl Into<Text>, properties: Properties) -> Self {
        let name = name.into();
        Event {
            id: new_event_id(),
            id_pending: false,
            category: EventCategory::of_text(&name),
            kind: EventKind::Custom,
            name,
            timestamp: SystemTime::now(),
            properties,
            context: Arc::default(),
            held: 0,
        }
        .measured()
    }

    /// The same event with its [`held`](Self::held) size computed again.
    pub(crate) fn measured(mut self) -> Self {
        self.held = held_size(&self.properties, &self.context);
        self
    }

    /// An upper bound of the bytes the event holds in memory (see [`held_size`]).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The same event as another kind (e.g. a page view).
    pub fn with_kind(mut self, kind: EventKind) -> Self {
        self.kind = kind;
        self
    }

    /// Whether it is a tracked action, an automatic page view or an identity operation.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The same event with another context.
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = Arc::new(context);
        self.measured()
    }

    /// The same event with another timestamp.
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The same event with the id it was first given (rebuilding an event that crossed a
    /// process boundary, so deduplication by id keeps working).
    #[cfg(any(feature = "nats", feature = "spool", test))]
    pub(crate) fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// A unique id (UUIDv7, whose millisecond is the event's [`timestamp`](Self::timestamp)),
    /// stable across retries and the same at every destination, for deduplication.
    ///
    /// Within one millisecond, ids are not necessarily in the order events were tracked: an
    /// event sent to one destination gets its id from that destination's worker, off the
    /// request path.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Draws the id of an event whose id is still to be drawn (a no-op for any other), with
    /// the event's timestamp as its millisecond, as if drawn when the event was tracked. Only
    /// for an event nothing else holds yet.
    pub(crate) fn draw_id(&mut self) {
        if self.id_pending {
            self.id = new_event_id_at(self.timestamp);
            self.id_pending = false;
        }
    }

    /// The event's name, e.g. `generation.started`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The category derived from the name.
    pub fn category(&self) -> &EventCategory {
        &self.category
    }

    /// When it was tracked.
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// Milliseconds since the UNIX epoch.
    pub fn timestamp_millis(&self) -> u64 {
        unix_millis(self.timestamp)
    }

    /// The properties it was tracked with.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// The context (request, user, host) it was tracked in.
    pub fn context(&self) -> &Context {
        &self.context
    }
}

/// What an event holds besides its properties' and its context's heap: the event itself (in
/// its `Arc`) and the allocator's overhead.
pub(crate) const EVENT_HELD: usize = size_of::<Event>() + 16 + ALLOC_OVERHEAD;

/// A cheap upper bound of the bytes an event with `properties` and `context` holds in memory:
/// the event itself, its owned strings, spilled properties and JSON values as
/// [`Properties::heap_bytes`] counts them (capacities, not lengths), plus an allocator's
/// overhead per allocation, and its context ([`context_held`]). The context is counted whole
/// for every event that shares it (an over-estimate). Computed once per event, when it is
/// built, so a destination's queue only adds a number (`queue_max_bytes`); `track!` gets the
/// same sum from the cached context check instead (`Policy::held_size`).
pub(crate) fn held_size(properties: &Properties, context: &Context) -> usize {
    EVENT_HELD
        .saturating_add(properties.heap_bytes())
        .saturating_add(context_held(context))
}

/// An upper bound of the bytes a context holds (in its `Arc`): its known fields' bytes (each
/// possibly in its own allocation) and its free-form fields' [`Properties::heap_bytes`].
pub(crate) fn context_held(context: &Context) -> usize {
    const BASE: usize = size_of::<Context>() + 16 + ALLOC_OVERHEAD;
    let (n, bytes) = context.known_lengths();
    let fields = context.fields();
    let extra = if fields.is_empty() {
        0
    } else {
        size_of::<Properties>() + ALLOC_OVERHEAD + fields.heap_bytes()
    };
    BASE.saturating_add(bytes)
        .saturating_add(n * (16 + ALLOC_OVERHEAD))
        .saturating_add(extra)
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("category", &self.category)
            .field("kind", &self.kind)
            .field("timestamp", &Rfc3339(self.timestamp))
            .field("properties", &self.properties)
            .field("context", &self.context)
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 7)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("category", &self.category)?;
        if self.kind != EventKind::Custom {
            st.serialize_field("kind", self.kind.as_str())?;
        } else {
            st.skip_field("kind")?;
        }
        st.serialize_field("timestamp", &Rfc3339(self.timestamp))?;
        st.serialize_field("properties", &self.properties)?;
        st.serialize_field("context", &*self.context)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn categories() {
        assert_eq!(
            EventCategory::of("generation.started"),
            EventCategory::Generation
        );
        assert_eq!(EventCategory::of("payment"), EventCategory::Payment);
        assert_eq!(
            EventCategory::of("checkout.completed"),
            EventCategory::Custom(Text::from("checkout"))
        );
        // Only the whole first segment counts.
        assert_eq!(EventCategory::of("users.x").as_str(), "users");
    }

    #[test]
    fn names() {
        assert_eq!(validate_name(""), Err(InvalidName::Empty));
        assert_eq!(validate_name("a\nb"), Err(InvalidName::ControlCharacter));
        assert_eq!(
            validate_name("a\u{1b}[31m"),
            Err(InvalidName::ControlCharacter)
        );
        assert_eq!(
            validate_name(&"x".repeat(201)),
            Err(InvalidName::TooLong(201))
        );
        assert_eq!(validate_name(&"x".repeat(200)), Ok(()));
        assert_eq!(validate_name("user.signup"), Ok(()));
    }

    #[test]
    fn the_held_size_counts_memory_not_serialized_bytes() {
        let bare = Event::new("x", Properties::new()).held();
        assert!(bare >= size_of::<Event>() + size_of::<Context>(), "{bare}");
        // Literals and numbers hold nothing besides the event.
        let mut p = Properties::new();
        p.insert_value("model", "flux").insert_value("n", 4);
        assert_eq!(Event::new("x", p).held(), bare);
        // Many tiny objects: a few bytes each serialized, a map node each in memory.
        let tiny: Vec<serde_json::Value> = (0..1000).map(|i| serde_json::json!({"a": i})).collect();
        let serialized = serde_json::to_string(&tiny).unwrap().len();
        let mut p = Properties::new();
        p.insert_json("tiny", serde_json::Value::Array(tiny));
        let held = Event::new("x", p).held() - bare;
        assert!(held > 50 * serialized, "{held} vs {serialized}");
        // Owned strings and the context's fields count by their bytes.
        let mut p = Properties::new();
        p.insert_value("s", "x".repeat(10_000));
        let e = Event::new("x", p).with_context(
            Context::new()
                .with_user_id("u".repeat(5_000))
                .with_field("f", "y".repeat(7_000)),
        );
        assert!(e.held() > bare + 22_000, "{}", e.held());
    }

    #[test]
    fn event_serializes() {
        let e = Event::new("user.signup", Properties::new())
            .with_timestamp(UNIX_EPOCH + Duration::from_millis(1500));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["name"], "user.signup");
        assert_eq!(v["category"], "user");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["id"].as_str().unwrap().len(), 36);
    }
}
