//! Identity operations: identify, alias and group, on the current request's scope (see
//! [`crate::identity`]).

use std::sync::Arc;

use super::Telemetry;
use super::scope::{Scope, current_scope};
use crate::context::Context;
use crate::event::{EventKind, Properties};
use crate::identity::{
    ALIAS, ANON_DISTINCT_ID, Consent, GROUP, GROUP_KEY, GROUP_TYPE, IDENTIFY, Identify,
    PREVIOUS_ID, SET_ONCE, is_reserved,
};
use crate::text::Text;

impl Telemetry {
    /// Identifies the user of the current request: every later event of the request carries
    /// `user_id`, and the destinations learn the user's `traits` (PostHog `$identify` with
    /// `$set`, a Segment `identify`, Umami session data; see [`crate::identity`]). When the
    /// request had no user before, its anonymous id (session id, else request id) goes along
    /// as [`ANON_DISTINCT_ID`], so the anonymous events and the user's are linked.
    ///
    /// Only the current request's scope changes (outside one, the operation is sent with the
    /// handle's base context and `user_id`, and nothing changes). Traits are redacted and
    /// limited like properties. Under [`Consent::Anonymous`] or [`Consent::Denied`] nothing
    /// is sent or changed, and the call is counted in
    /// [`Stats::consent_denied`](crate::Stats::consent_denied). A blank `user_id` is rejected
    /// and counted in [`Stats::rejected`](crate::Stats::rejected).
    ///
    /// ```
    /// use tower_telemetry::{Context, Telemetry, props, track};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
    /// let memory = telemetry.memory("memory").unwrap();
    /// let t = telemetry.clone();
    /// telemetry.scope(Context::new().with_request_id("req_1"), async move {
    ///     track!("user.landed");
    ///     t.identify("user_42", props! { "plan" => "pro" });
    ///     track!("user.upgraded");
    /// }).await;
    ///
    /// telemetry.flush(std::time::Duration::from_secs(1)).await;
    /// let events = memory.events();
    /// assert_eq!(events[0].context().user_id(), None);
    /// assert_eq!(events[1].name(), "$identify");
    /// assert_eq!(events[1].properties().get("plan").unwrap(), "pro");
    /// assert_eq!(events[1].properties().get("$anon_distinct_id").unwrap(), "req_1");
    /// assert_eq!(events[2].context().user_id(), Some("user_42"));
    /// # }
    /// ```
    pub fn identify(&self, user_id: impl Into<Text>, traits: Properties) {
        let scope = current_scope();
        self.identify_in(scope.as_deref(), Identify::new(user_id).set(traits));
    }

    /// [`identify`](Self::identify) with traits to set once as well (see [`Identify`]).
    pub fn identify_with(&self, identify: Identify) {
        let scope = current_scope();
        self.identify_in(scope.as_deref(), identify);
    }

    /// Says that `previous_id` (an earlier user id, or an anonymous id) and `user_id` are the
    /// same person (PostHog `$create_alias`, a Segment `alias`; Umami has none: counted
    /// `unsupported`). The request's scope does not change. Under [`Consent::Anonymous`] or
    /// [`Consent::Denied`] nothing is sent, and the call is counted in
    /// [`Stats::consent_denied`](crate::Stats::consent_denied).
    pub fn alias(&self, previous_id: impl Into<Text>, user_id: impl Into<Text>) {
        let scope = current_scope();
        self.alias_in(scope.as_deref(), previous_id.into(), user_id.into());
    }

    /// Describes the group `group_key` of type `group_type` (a company, a team) with
    /// `traits`, and adds it to the current request's context: every later event of the
    /// request carries it ([`Context::groups`]; PostHog `$groups`, Segment
    /// `context.groupId`). Sent as PostHog `$groupidentify` or a Segment `group`; Umami has
    /// no such call (counted `unsupported`) but gets the groups on events. Under
    /// [`Consent::Denied`] nothing is sent (counted in
    /// [`Stats::consent_denied`](crate::Stats::consent_denied)); a group is not personal, so
    /// an anonymous request may send it.
    pub fn group(
        &self,
        group_type: impl Into<Text>,
        group_key: impl Into<Text>,
        traits: Properties,
    ) {
        let scope = current_scope();
        self.group_in(
            scope.as_deref(),
            group_type.into(),
            group_key.into(),
            traits,
        );
    }

    /// Whether an identity operation in `scope` may go: counts it when the consent says no.
    fn consents(&self, scope: Option<&Scope>, personal: bool) -> bool {
        let allowed = match scope.map_or(Consent::Granted, Scope::consent) {
            Consent::Granted => true,
            Consent::Anonymous => !personal,
            _ => false,
        };
        if !allowed && self.inner.enabled {
            self.count_consent_denied();
        }
        allowed
    }

    /// A context for an operation outside any scope: the base context, changed by `f`.
    fn one_off(&self, f: impl FnOnce(&mut Context)) -> Arc<Context> {
        let mut ctx = (*self.base_context()).clone();
        f(&mut ctx);
        Arc::new(ctx)
    }

    pub(crate) fn identify_in(&self, scope: Option<&Scope>, identify: Identify) {
        if !self.inner.enabled || !self.consents(scope, true) {
            return;
        }
        let Identify {
            user_id,
            set,
            set_once,
        } = identify;
        if user_id.trim().is_empty() {
            return self.reject(
                scope,
                EventKind::Identify,
                IDENTIFY,
                "identify needs a user id; this one is blank",
            );
        }
        let set_user = |c: &mut Context| {
            c.set_user_id(Some(user_id.clone()));
        };
        let (before, context) = match scope {
            Some(s) => (s.update_and_get(set_user), None),
            None => (self.base_context(), Some(self.one_off(set_user))),
        };
        let anonymous = before
            .user_id()
            .is_none_or(|u| u.trim().is_empty())
            .then(|| before.anonymous_id().map(str::to_owned))
            .flatten();
        self.emit_operation(scope, IDENTIFY, EventKind::Identify, context, move |p| {
            *p = set;
            p.retain(|k, _| !is_reserved(k));
            if !set_once.is_empty() {
                let once = serde_json::Value::Object(set_once.to_json_map());
                p.insert_json(Text::from_static(SET_ONCE), once);
            }
            if let Some(anonymous) = anonymous {
                p.insert_value(Text::from_static(ANON_DISTINCT_ID), anonymous);
            }
        });
    }

    pub(crate) fn alias_in(&self, scope: Option<&Scope>, previous_id: Text, user_id: Text) {
        if !self.inner.enabled || !self.consents(scope, true) {
            return;
        }
        if user_id.trim().is_empty() || previous_id.trim().is_empty() {
            return self.reject(
                scope,
                EventKind::Alias,
                ALIAS,
                "alias needs a previous id and a user id; one is blank",
            );
        }
        let set_user = |c: &mut Context| {
            c.set_user_id(Some(user_id.clone()));
        };
        let context = match scope {
            Some(s) => {
                let mut ctx = (*s.snapshot()).clone();
                set_user(&mut ctx);
                Arc::new(ctx)
            }
            None => self.one_off(set_user),
        };
        self.emit_operation(scope, ALIAS, EventKind::Alias, Some(context), move |p| {
            p.insert_value(Text::from_static(PREVIOUS_ID), previous_id.to_string());
        });
    }

    pub(crate) fn group_in(
        &self,
        scope: Option<&Scope>,
        group_type: Text,
        group_key: Text,
        traits: Properties,
    ) {
        if !self.inner.enabled || !self.consents(scope, false) {
            return;
        }
        if group_type.trim().is_empty() || group_key.trim().is_empty() {
            return self.reject(
                scope,
                EventKind::Group,
                GROUP,
                "group needs a type and a key; one is blank",
            );
        }
        let add = |c: &mut Context| {
            c.set_group(group_type.clone(), group_key.clone());
        };
        let context = match scope {
            Some(s) => {
                s.update(add);
                None
            }
            None => Some(self.one_off(add)),
        };
        self.emit_operation(scope, GROUP, EventKind::Group, context, move |p| {
            *p = traits;
            p.retain(|k, _| !is_reserved(k));
            p.insert_value(Text::from_static(GROUP_TYPE), group_type.to_string());
            p.insert_value(Text::from_static(GROUP_KEY), group_key.to_string());
        });
    }

    fn emit_operation(
        &self,
        scope: Option<&Scope>,
        name: &'static str,
        kind: EventKind,
        context: Option<Arc<Context>>,
        fill: impl FnOnce(&mut Properties),
    ) {
        self.emit_kind_in(scope, Text::from_static(name), kind, context, |p| {
            fill(p);
            Ok(())
        });
    }
}
