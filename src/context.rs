//! Context: who, where and in which request an event happened.
//!
//! A [`Telemetry`](crate::Telemetry) handle has a *base* context (hostname, app version, ...).
//! A request adds a *scope*: a context that is current while the request's future runs (set on
//! the thread each time the future is polled, as `tokio::task_local!` does).
//! [`TelemetryLayer`](crate::layer::TelemetryLayer) enters one for every request; you can enter one
//! yourself with [`Telemetry::scope`](crate::Telemetry::scope). Every event snapshots
//! `base ⊕ scope` when it is tracked.
//!
//! ```
//! use tower_telemetry::{Context, Telemetry, WithContextExt, track};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
//! let memory = telemetry.memory("memory").unwrap();
//!
//! telemetry.scope(Context::new().with_user_id("user_123"), async {
//!     track!("generation.started", model = "flux-dev");
//!     // A spawned task does not inherit the scope unless you carry it along:
//!     tokio::spawn(async { track!("generation.completed") }.in_current_context()).await.unwrap();
//! }).await;
//!
//! telemetry.flush(std::time::Duration::from_secs(1)).await;
//! assert!(memory.events().iter().all(|e| e.context().user_id() == Some("user_123")));
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::identity::GROUPS_FIELD;
use crate::properties::Properties;
use crate::text::Text;

macro_rules! context_fields {
    ($( $field:ident, $with:ident, $set:ident, $doc:literal; )*) => {
        /// The context of an event: user, session, request, host and any extra fields.
        ///
        /// Build one with the `with_*` methods, read it with the getters of the same names.
        /// Merging (see [`Context::merge`]) lets a later value override an earlier one field
        /// by field.
        ///
        /// ```
        /// use tower_telemetry::Context;
        ///
        /// let ctx = Context::new()
        ///     .with_user_id("user_123")
        ///     .with_session_id("sess_456")
        ///     .with_field("plan", "pro");
        /// assert_eq!(ctx.user_id(), Some("user_123"));
        /// assert_eq!(ctx.field("plan").unwrap(), "pro");
        /// ```
        #[derive(Clone, Default, PartialEq)]
        pub struct Context {
            $( $field: Option<Text>, )*
            // Boxed: most contexts have no extra fields, and a context is moved and cloned per
            // request; inline properties would make it four times larger.
            extra: Option<Box<Properties>>,
            checked: CheckCache,
        }

        impl Context {
            $(
                #[doc = concat!("Sets ", $doc, ".")]
                pub fn $with(mut self, value: impl Into<Text>) -> Self {
                    self.checked.reset();
                    self.$field = Some(value.into());
                    self
                }

                #[doc = concat!("Sets or clears ", $doc, ".")]
                pub fn $set(&mut self, value: Option<Text>) -> &mut Self {
                    self.checked.reset();
                    self.$field = value;
                    self
                }

                #[doc = concat!($doc, ", if known.")]
                pub fn $field(&self) -> Option<&str> {
                    self.$field.as_deref()
                }
            )*

            /// Copies every field that `other` sets over this one's, and merges the extra fields.
            pub fn merge(&mut self, other: &Context) {
                self.checked.reset();
                $( if other.$field.is_some() { self.$field.clone_from(&other.$field); } )*
                for (k, v) in other.fields().iter() {
                    self.extra_mut().insert_value(Text::copy_from(k), v.clone());
                }
            }

            /// Whether no field is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )* && self.fields().is_empty()
            }

            /// How many well-known fields are set, and their values' total length in bytes.
            pub(crate) fn known_lengths(&self) -> (usize, usize) {
                let (mut n, mut bytes) = (0usize, 0usize);
                $(
                    if let Some(t) = &self.$field {
                        n += 1;
                        bytes = bytes.saturating_add(t.byte_len());
                    }
                )*
                (n, bytes)
            }

            /// The well-known fields that are set, as `(name, value)` pairs.
            pub fn known_fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
                [$( (stringify!($field), self.$field.as_deref()), )*]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
            }
        }
    };
}

context_fields! {
    user_id, with_user_id, set_user_id, "the id of the signed-in user";
    session_id, with_session_id, set_session_id, "the session id";
    request_id, with_request_id, set_request_id, "the request id";
    hostname, with_hostname, set_hostname, "the host name the request was sent to (or the service's own)";
    path, with_path, set_path, "the request path, as sent";
    query, with_query, set_query, "the request's query string, without `?`";
    route, with_route, set_route, "the matched route template, e.g. `/users/{id}`";
    method, with_method, set_method, "the HTTP method";
    user_agent, with_user_agent, set_user_agent, "the end user's User-Agent";
    language, with_language, set_language, "the end user's Accept-Language";
    referrer, with_referrer, set_referrer, "the Referer of the request";
    client_ip, with_client_ip, set_client_ip, "the end user's IP address (only when configured)";
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a free-form field (app version, environment, tenant...).
    pub fn with_field(mut self, key: impl Into<Text>, value: impl Serialize) -> Self {
        self.checked.reset();
        self.extra_mut().insert(key, value);
        self
    }

    /// Sets a free-form field in place.
    pub fn set_field(&mut self, key: impl Into<Text>, value: impl Serialize) -> &mut Self {
        self.checked.reset();
        self.extra_mut().insert(key, value);
        self
    }

    /// A free-form field's value.
    pub fn field(&self, key: &str) -> Option<&crate::PropertyValue> {
        self.fields().get(key)
    }

    /// Adds the group `key` of type `group_type` (`company`, `team`, ...): every event in
    /// this context carries it, and destinations with groups (PostHog `$groups`, Segment
    /// `context.groupId`) see it. One group per type; a later one replaces it. Kept in the
    /// free-form field [`GROUPS_FIELD`](crate::identity::GROUPS_FIELD).
    ///
    /// ```
    /// use tower_telemetry::Context;
    ///
    /// let ctx = Context::new().with_group("company", "acme").with_group("team", "ml");
    /// assert_eq!(ctx.groups().collect::<Vec<_>>(), [("company", "acme"), ("team", "ml")]);
    /// ```
    pub fn with_group(mut self, group_type: impl Into<Text>, key: impl Into<Text>) -> Self {
        self.set_group(group_type, key);
        self
    }

    /// Adds a group in place (see [`with_group`](Self::with_group)).
    pub fn set_group(&mut self, group_type: impl Into<Text>, key: impl Into<Text>) -> &mut Self {
        let group_type: Text = group_type.into();
        let key: Text = key.into();
        self.checked.reset();
        let fields = self.extra_mut();
        let mut groups = match fields.get(GROUPS_FIELD).map(|v| v.to_json()) {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        groups.insert(group_type.to_string(), key.as_str().into());
        fields.insert_json(
            Text::from_static(GROUPS_FIELD),
            serde_json::Value::Object(groups),
        );
        self
    }

    /// The groups of this context, as `(group type, group key)` pairs (see
    /// [`with_group`](Self::with_group)); keys that are not strings are skipped.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &str)> {
        let map = match self.field(GROUPS_FIELD).and_then(|v| v.as_json()) {
            Some(serde_json::Value::Object(map)) => Some(map),
            _ => None,
        };
        map.into_iter()
            .flatten()
            .filter_map(|(t, k)| Some((t.as_str(), k.as_str()?)))
    }

    /// The id its events go by while no user is known: the session id, else the request id
    /// (blank ones skipped). Destinations with anonymous ids (PostHog's `distinct_id`,
    /// Segment's `anonymousId`) use it, and [`identify`](crate::Telemetry::identify) reports it
    /// as [`ANON_DISTINCT_ID`](crate::identity::ANON_DISTINCT_ID).
    pub fn anonymous_id(&self) -> Option<&str> {
        fn present(s: Option<&Text>) -> Option<&str> {
            s.map(Text::as_str).filter(|s| !s.trim().is_empty())
        }
        present(self.session_id.as_ref()).or_else(|| present(self.request_id.as_ref()))
    }

    /// Strips every personal field (user, session, client IP, User-Agent, referrer, and the
    /// query string, which often carries ids or e-mail addresses) and
    /// replaces the request id with a random one: the context of a request with
    /// [`Consent::Anonymous`](crate::identity::Consent::Anonymous).
    pub(crate) fn anonymize(&mut self, anonymous_request_id: &Text) {
        self.checked.reset();
        self.user_id = None;
        self.session_id = None;
        self.client_ip = None;
        self.user_agent = None;
        self.referrer = None;
        self.query = None;
        if self.request_id.as_ref() != Some(anonymous_request_id) {
            self.request_id = Some(anonymous_request_id.clone());
        }
    }

    /// Whether it has none of the fields [`anonymize`](Self::anonymize) strips.
    pub(crate) fn is_anonymous(&self, anonymous_request_id: &Text) -> bool {
        self.user_id.is_none()
            && self.session_id.is_none()
            && self.client_ip.is_none()
            && self.user_agent.is_none()
            && self.referrer.is_none()
            && self.query.is_none()
            && self.request_id.as_ref() == Some(anonymous_request_id)
    }

    fn extra_mut(&mut self) -> &mut Properties {
        self.extra.get_or_insert_with(Box::default)
    }

    /// All free-form fields.
    pub fn fields(&self) -> &Properties {
        static NONE: Properties = Properties::new();
        self.extra.as_deref().unwrap_or(&NONE)
    }

    /// The free-form fields, to redact them in place.
    pub(crate) fn fields_mut(&mut self) -> &mut Properties {
        self.checked.reset();
        self.extra_mut()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.known_fields() {
            m.entry(&k, &v);
        }
        for (k, v) in self.fields().iter() {
            m.entry(&k, v);
        }
        m.finish()
    }
}

/// Serializes as one flat JSON object: the known fields that are set, then the extra fields
/// (an extra field named like a known one is left out).
impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut known: [&str; 12] = [""; 12];
        for (i, (k, v)) in self.known_fields().enumerate() {
            map.serialize_entry(k, v)?;
            known[i] = k;
        }
        for (k, v) in self.fields().iter() {
            if !known.contains(&k) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// What the redaction and limits pass found about a context, cached in it: a context is shared
/// by every event of a request, so it is examined once, not per event. Any change resets it;
/// a clone starts empty.
///
/// `verdict`: the id of the policy that examined it (`redact::next_policy_id`: 62 bits, never
/// reused) and, above it, whether that policy redacts something; 0 = not examined. `bound`: the
/// size bound plus one (0 = not measured), which depends on the context alone, so a policy may
/// use the bound another one measured.
#[derive(Default)]
pub(crate) struct CheckCache {
    verdict: AtomicU64,
    bound: AtomicU64,
}

const REDACT_FLAG: u64 = 1 << 62;

impl CheckCache {
    fn reset(&mut self) {
        *self.verdict.get_mut() = 0;
        *self.bound.get_mut() = 0;
    }
}

impl Clone for CheckCache {
    fn clone(&self) -> Self {
        CheckCache::default()
    }
}

impl PartialEq for CheckCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Context {
    /// `(size bound, needs redaction)` for the policy `policy` (never 0), computed by `examine`
    /// the first time and cached.
    pub(crate) fn examined(
        &self,
        policy: u64,
        examine: impl FnOnce(&Context) -> (usize, bool),
    ) -> (usize, bool) {
        let verdict = self.checked.verdict.load(Ordering::Relaxed);
        let bound = self.checked.bound.load(Ordering::Relaxed);
        if verdict & !REDACT_FLAG == policy && bound != 0 {
            return ((bound - 1) as usize, verdict & REDACT_FLAG != 0);
        }
        let (bound, redact) = examine(self);
        let flag = if redact { REDACT_FLAG } else { 0 };
        let stored = (bound as u64).min(u64::MAX - 1) + 1;
        self.checked.bound.store(stored, Ordering::Relaxed);
        self.checked.verdict.store(policy | flag, Ordering::Relaxed);
        (bound, redact)
    }
}

impl Context {
    /// The user, session and request ids and the path, as stored (for the logging
    /// destination's JSON lines, which copy their bytes).
    pub(crate) fn ids_and_path(&self) -> [Option<&Text>; 4] {
        [
            self.user_id.as_ref(),
            self.session_id.as_ref(),
            self.request_id.as_ref(),
            self.path.as_ref(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_overrides_field_by_field() {
        let mut base = Context::new()
            .with_hostname("api.example.com")
            .with_user_id("a")
            .with_field("env", "prod");
        base.merge(&Context::new().with_user_id("b").with_field("plan", "pro"));
        assert_eq!(base.hostname(), Some("api.example.com"));
        assert_eq!(base.user_id(), Some("b"));
        assert_eq!(base.field("env").unwrap(), "prod");
        assert_eq!(base.field("plan").unwrap(), "pro");
    }

    #[test]
    fn serializes_flat_and_known_fields_win() {
        let ctx = Context::new()
            .with_request_id("r1")
            .with_field("user_id", "spoof")
            .with_field("env", "prod")
            .with_user_id("u1");
        let v = serde_json::to_value(&ctx).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"user_id": "u1", "request_id": "r1", "env": "prod"})
        );
    }

    #[test]
    fn a_cached_verdict_is_never_taken_for_another_policys() {
        let ctx = Context::new().with_field("plan", "pro");
        assert_eq!(ctx.examined(7, |_| (10, false)), (10, false));
        assert_eq!(ctx.examined(7, |_| unreachable!()), (10, false));
        // Ids 16 or 32 bits apart (a 16-bit id wrapped after 65 535 handles) are other policies.
        for other in [7 + (1 << 16), 7 + (1 << 32)] {
            let mut called = false;
            let got = ctx.examined(other, |_| {
                called = true;
                (10, true)
            });
            assert!(called && got == (10, true), "{other}");
        }
        assert_eq!(ctx.examined(7, |_| (10, false)), (10, false));
    }
}
