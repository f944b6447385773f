//! Identity and consent: who the events of a request are about, and whether they may say so.
//!
//! Product analytics is about people and accounts. Within a request scope (the
//! [`TelemetryLayer`](crate::layer::TelemetryLayer)'s, or [`Telemetry::scope`](crate::Telemetry::scope)),
//! [`identify`](crate::Telemetry::identify) sets the user of every later event of that request
//! and describes the user to the destinations; [`alias`](crate::Telemetry::alias) says that a
//! previous id is the same person; [`group`](crate::Telemetry::group) describes a group (a
//! company, a team) and adds it to the request's context, so every later event carries it.
//! All three change the current request's scope only: nothing is kept in a process-wide
//! singleton, so one user's traits never reach another request's events.
//!
//! ```
//! use tower_telemetry::{Context, Telemetry, props, track};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
//! let memory = telemetry.memory("memory").unwrap();
//!
//! telemetry.scope(Context::new().with_session_id("sess_1"), async {
//!     track!("user.landed");                       // anonymous: no user id yet
//!     tower_telemetry::identify("user_42", props! { "plan" => "pro" });
//!     tower_telemetry::group("company", "acme", props! { "seats" => 12 });
//!     track!("user.upgraded");                     // user_42, in the group company:acme
//! }).await;
//!
//! telemetry.flush(std::time::Duration::from_secs(1)).await;
//! let events = memory.events();
//! let names: Vec<_> = events.iter().map(|e| e.name()).collect();
//! assert_eq!(names, ["user.landed", "$identify", "$group", "user.upgraded"]);
//! assert_eq!(events[1].properties().get("$anon_distinct_id").unwrap(), "sess_1");
//! assert_eq!(events[3].context().user_id(), Some("user_42"));
//! assert_eq!(events[3].context().groups().collect::<Vec<_>>(), [("company", "acme")]);
//! # }
//! ```
//!
//! # How an identity operation travels
//!
//! Each operation is an [`Event`](crate::Event) of its own [`EventKind`](crate::EventKind),
//! routed by its name like any event ([`IDENTIFY`], [`ALIAS`], [`GROUP`]: a destination whose
//! `events` patterns match the name gets it; `*` does), never sampled out, and redacted and
//! limited like properties. Its properties are the traits, plus these reserved keys:
//!
//! | kind | name | context | reserved properties | other properties |
//! |---|---|---|---|---|
//! | `identify` | `$identify` | the user id set | [`SET_ONCE`] (object, optional), [`ANON_DISTINCT_ID`] (the request's anonymous id, when it had no user before) | the user's traits |
//! | `alias` | `$alias` | the user id set | [`PREVIOUS_ID`] | — |
//! | `group` | `$group` | as it was, plus the group | [`GROUP_TYPE`], [`GROUP_KEY`] | the group's traits |
//!
//! A destination with no counterpart for an operation (Umami has no alias) declares it with
//! [`Destination::supports`](crate::destination::Destination::supports): it never gets the
//! event, which is counted in its [`unsupported`](crate::DestinationStats::unsupported).
//!
//! # Consent
//!
//! A request's [`Consent`] is decided once, when its scope is entered
//! ([`TelemetryLayer::consent`](crate::layer::TelemetryLayer::consent),
//! [`Telemetry::scope_with_consent`](crate::Telemetry::scope_with_consent)):
//!
//! - [`Consent::Granted`] (the default): everything as configured.
//! - [`Consent::Anonymous`]: events keep their names and properties, but the context loses
//!   every personal field — user id, session id, client IP, User-Agent, referrer, the query
//!   string — and the
//!   request id is replaced by a random one, so destinations get a per-request anonymous id
//!   that cannot be linked to the user; `identify` and `alias` are dropped. Free-form
//!   context fields you set yourself (app version, tenant) are kept. Counted in
//!   [`Stats::consent_denied`](crate::Stats::consent_denied) (the dropped operations).
//! - [`Consent::Denied`]: nothing of the request leaves the process — its events, the
//!   layer's request event and identity operations alike are counted in
//!   [`Stats::consent_denied`](crate::Stats::consent_denied) and dropped before routing.

use crate::event::Properties;
use crate::text::Text;

/// The name of an [`identify`](crate::Telemetry::identify) operation's event.
pub const IDENTIFY: &str = "$identify";
/// The name of an [`alias`](crate::Telemetry::alias) operation's event.
pub const ALIAS: &str = "$alias";
/// The name of a [`group`](crate::Telemetry::group) operation's event.
pub const GROUP: &str = "$group";

/// In an identify: traits set only if the user does not have them yet (an object).
pub const SET_ONCE: &str = "$set_once";
/// In an identify: the anonymous id the request's events had before the user was known (its
/// session id, else its request id), so destinations can link the two.
pub const ANON_DISTINCT_ID: &str = "$anon_distinct_id";
/// In an alias: the previous id of the context's user.
pub const PREVIOUS_ID: &str = "$previous_id";
/// In a group operation: the group's type (`company`, `team`, ...).
pub const GROUP_TYPE: &str = "$group_type";
/// In a group operation: the group's key (its id).
pub const GROUP_KEY: &str = "$group_key";

/// The free-form context field that holds the request's groups: an object from group type to
/// group key. Read it with [`Context::groups`](crate::Context::groups).
pub const GROUPS_FIELD: &str = "$groups";

/// Whether `key` is one of the reserved keys of an identity operation's properties (not a
/// trait).
pub fn is_reserved(key: &str) -> bool {
    matches!(
        key,
        SET_ONCE | ANON_DISTINCT_ID | PREVIOUS_ID | GROUP_TYPE | GROUP_KEY
    )
}

/// What a request may tell the destinations about the person behind it.
///
/// Decided once per request scope; see the [module docs](self#consent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Consent {
    /// Everything, as configured (the default).
    #[default]
    Granted,
    /// Events without anything personal: no user, session, IP, User-Agent, referrer or query
    /// string, a random request id, no identify or alias. The free-form context fields you
    /// set yourself are kept: keep personal data out of them.
    Anonymous,
    /// Nothing: no event of the request leaves the process.
    Denied,
}

/// An identify operation with traits to set always and traits to set once: what
/// [`Telemetry::identify_with`](crate::Telemetry::identify_with) takes.
///
/// ```
/// use tower_telemetry::{identity::Identify, props};
///
/// let identify = Identify::new("user_42")
///     .set(props! { "plan" => "pro" })
///     .set_once(props! { "first_plan" => "free" });
/// assert_eq!(identify.user_id(), "user_42");
/// ```
#[derive(Clone, Debug)]
pub struct Identify {
    pub(crate) user_id: Text,
    pub(crate) set: Properties,
    pub(crate) set_once: Properties,
}

impl Identify {
    /// Identifies the user `user_id`, with no traits yet.
    pub fn new(user_id: impl Into<Text>) -> Self {
        Identify {
            user_id: user_id.into(),
            set: Properties::new(),
            set_once: Properties::new(),
        }
    }

    /// Traits to set (replacing what the destination had).
    pub fn set(mut self, traits: Properties) -> Self {
        self.set = traits;
        self
    }

    /// Traits to set only if the user has none of that name yet (PostHog's `$set_once`;
    /// destinations without the notion set them like the others).
    pub fn set_once(mut self, traits: Properties) -> Self {
        self.set_once = traits;
        self
    }

    /// The user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}
