//! Events and their categories.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use crate::context::Context;
// Also reachable here, where the crate has always imported them from.
pub(crate) use crate::properties::INLINE_PROPERTIES;
pub use crate::properties::Properties;
use crate::text::Text;

/// The longest event name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// What an event is about, derived from the first segment of its name.
///
/// `generation.started` is [`EventCategory::Generation`]; `checkout.completed` is
/// `Custom("checkout")`. The six named categories are the seed module's.
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

/// Whether an event is a tracked action or an automatic page view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// An event tracked by name (`track!`, `Tracker::track`, ...).
    #[default]
    Custom,
    /// The automatic per-request event of [`TelemetryLayer`](crate::TelemetryLayer)
    /// (`telemetry.requests`): destinations such as Umami record it as a page view.
    PageView,
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
/// `{"id", "name", "category", "timestamp" (RFC 3339, milliseconds, UTC), "properties", "context"}`.
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
        }
    }

    /// The same event as another kind (e.g. a page view).
    pub fn with_kind(mut self, kind: EventKind) -> Self {
        self.kind = kind;
        self
    }

    /// Whether it is a tracked action or an automatic page view.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The same event with another context.
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = Arc::new(context);
        self
    }

    /// The same event with another timestamp.
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The same event with the id it was first given (rebuilding an event that crossed a
    /// process boundary, so deduplication by id keeps working).
    #[cfg(feature = "nats")]
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

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("category", &self.category)
            .field("timestamp", &Rfc3339(self.timestamp))
            .field("properties", &self.properties)
            .field("context", &self.context)
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 6)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("category", &self.category)?;
        st.serialize_field("timestamp", &Rfc3339(self.timestamp))?;
        st.serialize_field("properties", &self.properties)?;
        st.serialize_field("context", &*self.context)?;
        st.end()
    }
}

/// A fresh UUIDv7: the current millisecond and 74 bits that are random at each new millisecond
/// and then count up by a random step (RFC 9562, §6.2 method 2, "monotonic random").
///
/// Not `Uuid::now_v7()`: that keeps its counter behind one process-wide mutex, a contended lock
/// when every worker thread tracks events. Here each thread keeps its own: at the first id of a
/// millisecond it draws 73 bits from the thread-local CSPRNG (the top bit of the 74 stays clear,
/// room to count), and each further id in that millisecond adds a step of 1 to 2^24 from a
/// splitmix64 sequence seeded from the same draw. Ids one thread draws are strictly increasing
/// while the millisecond does not go back (a worker drawing ids for its events' own
/// timestamps, which may go back, starts afresh then); ids from different threads in one
/// millisecond start 73 random bits apart, so they collide with negligible probability. One
/// CSPRNG draw per thread and millisecond instead of one per id.
pub(crate) fn new_event_id() -> Uuid {
    new_event_id_at(SystemTime::now())
}

/// `id` as a lowercase hyphenated string (`8-4-4-4-12` hex digits), as
/// `id.hyphenated().encode_lower(..)` writes it, eight digits at a time: uuid's encoder goes a
/// byte at a time through a table and then validates its output as UTF-8, three times the
/// instructions for the one id every request and every logged event gets.
#[inline]
pub(crate) fn hyphenated(id: Uuid) -> [u8; 36] {
    let v = id.as_u128();
    let a = hex8((v >> 96) as u32);
    let b = hex8((v >> 64) as u32);
    let c = hex8((v >> 32) as u32);
    let d = hex8(v as u32);
    let mut out = [b'-'; 36];
    out[0..8].copy_from_slice(&a);
    out[9..13].copy_from_slice(&b[..4]);
    out[14..18].copy_from_slice(&b[4..]);
    out[19..23].copy_from_slice(&c[..4]);
    out[24..28].copy_from_slice(&c[4..]);
    out[28..36].copy_from_slice(&d);
    out
}

/// The eight lowercase hex digits of `x`, most significant first.
#[inline]
fn hex8(x: u32) -> [u8; 8] {
    // Spread the nibbles into bytes: 0xabcdef12 -> 0x0a0b0c0d0e0f0102.
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 0-9 -> '0'-'9', 10-15 -> 'a'-'f' ('a' is 39 after '0' + 10); no byte carries into the next.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// The 74 bits below the timestamp and version that a UUIDv7 leaves to the generator.
const COUNTER_BITS: u32 = 74;

/// Per-thread state of [`new_event_id_at`]: the millisecond of the last id, its 74-bit
/// counter and the step generator's state.
#[derive(Clone, Copy)]
struct IdState {
    ms: u64,
    counter: u128,
    step: u64,
}

thread_local! {
    static IDS: std::cell::Cell<IdState> = const {
        std::cell::Cell::new(IdState { ms: u64::MAX, counter: 0, step: 0 })
    };
}

/// [`new_event_id`] for a time already read.
pub(crate) fn new_event_id_at(now: SystemTime) -> Uuid {
    let ms = unix_millis(now) & ((1 << 48) - 1);
    let counter = IDS
        .try_with(|cell| {
            let mut s = cell.get();
            s.counter = if s.ms == ms {
                next_counter(s.counter, &mut s.step)
            } else {
                None
            }
            .unwrap_or_else(|| fresh_counter(&mut s.step));
            s.ms = ms;
            cell.set(s);
            s.counter
        })
        // The thread is exiting (thread-locals torn down): a one-off random id.
        .unwrap_or_else(|_| fresh_counter(&mut 0));
    Uuid::from_u128(compose_v7(ms, counter))
}

/// A counter for a new millisecond: 73 random bits (the top one of 74 clear), and a new seed.
fn fresh_counter(step: &mut u64) -> u128 {
    let r: u128 = rand::random();
    *step = (r >> COUNTER_BITS) as u64;
    r & ((1 << (COUNTER_BITS - 1)) - 1)
}

/// The next counter in the same millisecond, or `None` if it would overflow its 74 bits.
fn next_counter(counter: u128, step: &mut u64) -> Option<u128> {
    *step = step.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *step;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let next = counter + u128::from(z >> 40) + 1;
    (next >> COUNTER_BITS == 0).then_some(next)
}

/// A UUIDv7 from a 48-bit millisecond and a 74-bit counter: `ms | 7 | 12 bits | 0b10 | 62 bits`.
fn compose_v7(ms: u64, counter: u128) -> u128 {
    (u128::from(ms) << 80)
        | (0x7 << 76)
        | ((counter >> 62) << 64)
        | (0b10 << 62)
        | (counter & ((1 << 62) - 1))
}

pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    // Not `as_millis`: its u128 arithmetic costs more than the id it is for.
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// Formats a time as RFC 3339 in UTC with milliseconds: `2026-11-25T12:50:35.123Z`.
#[derive(Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl Rfc3339 {
    /// The text as 24 ASCII bytes, for the years 0 to 9999 (else `None`): digits written
    /// straight into an array, without `fmt`, for the destinations that format every event.
    pub(crate) fn ascii(&self) -> Option<[u8; 24]> {
        let [y, mo, d, h, mi, s, ms] = self.fields();
        let y = u64::try_from(y).ok().filter(|y| *y <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        for (at, width, value) in [
            (0, 4, y),
            (5, 2, mo as u64),
            (8, 2, d as u64),
            (11, 2, h as u64),
            (14, 2, mi as u64),
            (17, 2, s as u64),
            (20, 3, ms as u64),
        ] {
            let mut v = value;
            for digit in out[at..at + width].iter_mut().rev() {
                *digit = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Some(out)
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ascii() {
            // Digits and separators: always UTF-8.
            Some(text) => f.write_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => self.write_fields(f),
        }
    }
}

impl Rfc3339 {
    /// Year, month, day, hour, minute, second and millisecond, in UTC.
    fn fields(&self) -> [i64; 7] {
        let ms = unix_millis(self.0);
        let secs = ms / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let rem = rem as i64;
        [
            y,
            m.into(),
            d.into(),
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            (ms % 1000) as i64,
        ]
    }

    /// The text through `fmt`, for any year.
    fn write_fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [y, mo, d, h, mi, s, ms] = self.fields();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyphenated_ids_match_uuids_own_encoding() {
        let fixed = [
            0u128,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            0xa0a0_a0a0_0909_9a9a_f0f0_0f0f_1234_5678,
        ];
        let drawn = (0..2000).map(|_| new_event_id().as_u128());
        let bits = (0..128).map(|i| 1u128 << i);
        for v in fixed.into_iter().chain(drawn).chain(bits) {
            let id = Uuid::from_u128(v);
            assert_eq!(
                std::str::from_utf8(&hyphenated(id)).unwrap(),
                id.hyphenated().to_string(),
                "{v:#x}"
            );
        }
    }

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
    fn event_ids_are_v7_unique_and_time_ordered() {
        let ids: Vec<Uuid> = (0..10_000).map(|_| new_event_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            ids.len()
        );
        let ms = |id: &Uuid| id.get_timestamp().unwrap().to_unix();
        assert!(ms(&ids[0]) <= ms(&ids[ids.len() - 1]));
    }

    #[test]
    fn ids_of_one_millisecond_count_up_by_random_steps() {
        let now = UNIX_EPOCH + Duration::from_millis(1_764_075_035_123);
        let ids: Vec<Uuid> = (0..10_000).map(|_| new_event_id_at(now)).collect();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((secs, nanos), (1_764_075_035, 123_000_000));
        }
        // Strictly increasing within the millisecond (method 2), by steps that vary.
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let steps: std::collections::HashSet<u128> = ids
            .windows(2)
            .map(|w| w[1].as_u128() - w[0].as_u128())
            .collect();
        assert!(steps.len() > 9_000, "steps repeat: {}", steps.len());
        // A new millisecond starts from fresh random bits, not from the old counter.
        let later = new_event_id_at(now + Duration::from_millis(1));
        let again = new_event_id_at(now + Duration::from_millis(2));
        let low = |id: Uuid| id.as_u128() & ((1 << 76) - 1);
        assert_ne!(low(later), low(again));
        assert!(later > ids[ids.len() - 1] && again > later);
    }

    #[test]
    fn a_counter_about_to_overflow_starts_afresh() {
        let mut step = 1;
        let top = (1u128 << COUNTER_BITS) - 1;
        assert_eq!(next_counter(top, &mut step), None);
        assert!(next_counter(0, &mut step).is_some_and(|c| (1..=1 << 24).contains(&c)));
        let fresh = fresh_counter(&mut step);
        assert_eq!(fresh >> (COUNTER_BITS - 1), 0, "room left to count");
    }

    #[test]
    fn ids_from_many_threads_never_collide() {
        let now = SystemTime::now();
        let per_thread: Vec<Vec<Uuid>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..20_000).map(|_| new_event_id_at(now)).collect()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<Uuid> = per_thread.iter().flatten().copied().collect();
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_075_035_123);
        assert_eq!(Rfc3339(t).to_string(), "2025-11-25T12:50:35.123Z");
        assert_eq!(Rfc3339(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Rfc3339(leap).to_string(), "2000-02-29T00:00:00.000Z");
        // Past the year 9999 there is no 24-byte form; `Display` still writes the time.
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800); // 10000-01-01
        assert_eq!(Rfc3339(far).ascii(), None);
        assert_eq!(Rfc3339(far).to_string(), "10000-01-01T00:00:00.000Z");
        let last = far - Duration::from_millis(1);
        assert_eq!(Rfc3339(last).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_digits_agree_with_formatting() {
        // The same time through `fmt`, as years past 9999 are written.
        struct ThroughFmt(Rfc3339);
        impl fmt::Display for ThroughFmt {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_fields(f)
            }
        }
        let formatted = |t: SystemTime| ThroughFmt(Rfc3339(t)).to_string();
        // Every 37 hours, 7 minutes, 13.579 s from 1970 into the year 2400.
        let step = Duration::from_millis(((37 * 60 + 7) * 60 + 13) * 1000 + 579);
        let mut t = UNIX_EPOCH;
        while t < UNIX_EPOCH + Duration::from_secs(13_569_465_600) {
            let ascii = Rfc3339(t).ascii().unwrap();
            assert_eq!(std::str::from_utf8(&ascii).unwrap(), formatted(t));
            t += step;
        }
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
