//! The tracking path: route and sample by name, build the event in place, apply the policy,
//! and hand it to the dispatcher. Never blocks, never awaits, never panics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use super::Telemetry;
use super::scope::{Scope, current_scope};
use crate::config::SampleKey;
use crate::context::Context;
use crate::dispatch::{Push, recycle};
use crate::event::{
    Event, EventCategory, EventKind, INLINE_PROPERTIES, Properties, new_event_id_at, validate_name,
};
use crate::identity::Consent;
use crate::limits::Outcome;
use crate::routing::{ALWAYS_BIT, Callsite, DEST_MASK, INVALID_BIT, cached_route};
use crate::text::Text;

impl Telemetry {
    /// Tracks `name` with `properties`, in the current context.
    ///
    /// Prefer [`track!`](macro@crate::track) on hot paths: it decides routing and sampling before
    /// evaluating the properties.
    pub fn track(&self, name: impl Into<Text>, properties: Properties) {
        let scope = current_scope();
        self.emit_dynamic(scope.as_deref(), name.into(), move |p| {
            *p = properties;
            Ok(())
        });
    }

    /// Tracks `name` with the fields of `properties` (anything that serializes to a JSON
    /// object: a struct, a map, `json!({...})`). Anything else is rejected, counted in
    /// [`Stats::rejected`](crate::Stats::rejected) and logged.
    pub fn track_event(&self, name: impl Into<Text>, properties: impl Serialize) {
        let scope = current_scope();
        self.emit_dynamic(scope.as_deref(), name.into(), move |p| {
            object_properties(&properties, p)
        });
    }

    pub(crate) fn emit_dynamic(
        &self,
        scope: Option<&Scope>,
        name: Text,
        fill: impl FnOnce(&mut Properties) -> Result<(), String>,
    ) {
        if !self.inner.enabled {
            return;
        }
        let route = cached_route(self.inner.id, &name, || self.inner.router.compute(&name));
        self.emit_routed(scope, name, None, route, EventKind::Custom, 0, None, |p| {
            fill(p).map(|()| false)
        });
    }

    /// Like `emit_dynamic`, for an event of another kind (the layer's page views, identity
    /// operations); `context`: the context to send instead of the scope's.
    pub(crate) fn emit_kind_in(
        &self,
        scope: Option<&Scope>,
        name: Text,
        kind: EventKind,
        context: Option<Arc<Context>>,
        fill: impl FnOnce(&mut Properties) -> Result<(), String>,
    ) {
        if !self.inner.enabled {
            return;
        }
        let route = cached_route(self.inner.id, &name, || self.inner.router.compute(&name));
        self.emit_routed(scope, name, None, route, kind, 4, context, |p| {
            fill(p).map(|()| false)
        });
    }

    /// Whether a `track!` at `callsite` can produce anything (cheap: the call-site cache), so
    /// the request scope is looked up only then.
    #[inline]
    pub(crate) fn may_emit_static(&self, callsite: &Callsite, name: &'static str) -> bool {
        let inner = &*self.inner;
        inner.enabled
            && (self.static_route(callsite, name) & (DEST_MASK | INVALID_BIT) != 0
                || self.observed())
    }

    /// Whether events routed nowhere are looked at anyway: `debug` logs them, an open
    /// inspector page shows them.
    #[inline]
    fn observed(&self) -> bool {
        self.inner.debug || self.inspected()
    }

    /// The route of a literal name, from the call-site cache (computed on first use).
    #[inline]
    fn static_route(&self, callsite: &Callsite, name: &'static str) -> u32 {
        let inner = &*self.inner;
        match callsite.get(inner.id) {
            Some(route) => route,
            None => self.first_route(callsite, name),
        }
    }

    /// A call site's first event for this handle: the route is computed and cached. Out of
    /// line, so the code of every later event stays compact (the instruction cache is cold
    /// between requests).
    #[cold]
    #[inline(never)]
    fn first_route(&self, callsite: &Callsite, name: &'static str) -> u32 {
        let inner = &*self.inner;
        let route = inner.router.compute(name);
        callsite.set(inner.id, route);
        route
    }

    pub(crate) fn emit_static(
        &self,
        scope: Option<&Scope>,
        callsite: &Callsite,
        name: &'static str,
        capacity: usize,
        fill: impl FnOnce(&mut Properties) -> bool,
    ) {
        if !self.inner.enabled {
            return;
        }
        let route = self.static_route(callsite, name);
        self.emit_routed(
            scope,
            Text::from_static(name),
            Some((callsite, name)),
            route,
            EventKind::Custom,
            capacity,
            None,
            |p| Ok(fill(p)),
        );
    }

    /// `callsite`: a `track!` call site with a literal name, which caches the category and
    /// what the limits made of its properties. `fill` adds the properties; `Ok(true)` if every
    /// value is a literal, a number or a boolean (so every event of the call site passes the
    /// limits alike).
    #[allow(clippy::too_many_arguments)]
    fn emit_routed(
        &self,
        scope: Option<&Scope>,
        name: Text,
        callsite: Option<(&Callsite, &'static str)>,
        route: u32,
        kind: EventKind,
        capacity: usize,
        context: Option<Arc<Context>>,
        fill: impl FnOnce(&mut Properties) -> Result<bool, String>,
    ) {
        let inner = &*self.inner;
        if route & INVALID_BIT != 0 {
            return self.reject_invalid(scope, kind, &name);
        }
        let routed = route & DEST_MASK;
        let mut dests = routed;
        // An open inspector page sees every event, whether it goes anywhere or not (the page
        // is looked for only on the paths that would end here, and once the event is built).
        if dests == 0 {
            if inner.debug {
                debug_nowhere(&name);
            }
            if !self.inspected() {
                return;
            }
        }
        if inner.closed.load(Ordering::Relaxed) {
            inner.after_shutdown.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(s) = scope
            && s.consent() == Consent::Denied
        {
            return self.count_consent_denied();
        }
        // Identity operations: only to the destinations that have a counterpart, never
        // sampled out (a lost identify splits a person in two).
        let identity = kind.is_identity();
        if identity {
            dests = inner.dispatch.supported(kind, dests);
            if dests == 0 && !self.inspected() {
                return;
            }
        }
        let keep = if inner.router.samples && route & ALWAYS_BIT == 0 && !identity {
            let keep = inner.router.sample(route, self.sample_hash(scope));
            inner.dispatch.count_sampled_out(dests & !keep);
            keep
        } else {
            dests
        };
        if keep == 0 && !self.inspected() {
            return;
        }
        let context = match (context, scope) {
            (Some(context), _) => context,
            (None, Some(s)) => s.snapshot(),
            (None, None) => self
                .base_context_if_set()
                .unwrap_or_else(recycle::empty_context),
        };
        #[cfg(feature = "opentelemetry")]
        let context = crate::otel::with_current_span(context);
        // Filled in place in an event this thread's worker delivered earlier (or a new one):
        // no allocation and no ~400-byte move per event (see `dispatch::recycle`). The id and
        // time are set last.
        let mut event = recycle::take();
        // A taken event is never shared; the `else` only keeps this free of panics.
        let Some(e) = Arc::get_mut(&mut event) else {
            return;
        };
        e.category = match callsite {
            Some((site, name)) => site.category(name),
            None => EventCategory::of_text(&name),
        };
        e.kind = kind;
        e.name = name;
        e.context = context;
        if capacity > INLINE_PROPERTIES {
            e.properties = Properties::with_capacity(capacity);
        }
        let fixed = match fill(&mut e.properties) {
            Ok(fixed) => fixed,
            Err(why) => {
                self.reject(scope, kind, &e.name, &why);
                return;
            }
        };
        if let Some(supers) = &inner.super_properties
            && !identity
        {
            merge_super_properties(&mut e.properties, supers);
        }
        // Redaction and limits: after the routing and sampling decision (an event that goes
        // nowhere is never looked at), before any destination can see the event.
        let policy = &inner.policy;
        let (props_size, out) = match callsite {
            // Literal keys are checked once per policy, not per event; and where the values are
            // literals, numbers or booleans, so is the rest of the properties' pass.
            Some((site, _)) => match site.fixed_bound(policy.id) {
                Some(bound) if fixed => (bound, Outcome::default()),
                _ => {
                    let keys_clean =
                        site.keys_clean(policy.id, || policy.keys_clean(&e.properties));
                    let (size, out) = policy.properties(&mut e.properties, keys_clean);
                    if fixed && keys_clean && out == Outcome::default() {
                        site.set_fixed(policy.id, size);
                    }
                    (size, out)
                }
            },
            None => policy.properties(&mut e.properties, false),
        };
        let mut outcome = policy.finish(&e.name, &e.properties, &mut e.context, props_size, out);
        if outcome.oversized.is_some() {
            // Trimmed before it is ever rejected; an `always` event is never rejected.
            let max = policy.limits.max_event_size;
            let always = route & ALWAYS_BIT != 0;
            let (name, props, ctx) = (&e.name, &mut e.properties, &mut e.context);
            super::trim::trim(name, props, ctx, max, always, &mut outcome);
        }
        if outcome != Outcome::default() && !self.limited(scope, e, &outcome) {
            return;
        }
        e.held = policy.held_size(&e.properties, &e.context, fixed);
        e.timestamp = SystemTime::now();
        // An event for one destination gets its id from that destination's worker, which
        // draws the ids of a whole batch at once, off the request path (~150 instructions
        // less here). One shared by several destinations, or printed now, gets it here: they
        // must all see the same id.
        e.id_pending = keep & keep.wrapping_sub(1) == 0 && !inner.debug;
        if !e.id_pending {
            e.id = new_event_id_at(e.timestamp);
        }
        if inner.debug {
            self.debug_event(&event, keep);
        }
        // Shown before it is queued: whatever a worker reports of it comes after.
        #[cfg(feature = "inspector")]
        {
            if inner.tap.active() {
                self.inspect(&mut event, routed, routed & !dests, keep);
            }
            if keep == 0 {
                return; // routed nowhere or sampled out: built for the page only
            }
        }
        // One reference per destination; the last one gets the handle's own (most events go
        // to one destination: no reference counting at all).
        let mut bits = keep & (keep - 1);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.push(i, event.clone());
        }
        self.push(keep.trailing_zeros() as usize, event);
    }

    /// Hands a tracked event to the open inspector pages.
    #[cfg(feature = "inspector")]
    #[cold]
    #[inline(never)]
    fn inspect(&self, event: &mut Arc<Event>, routed: u32, unsupported: u32, kept: u32) {
        // The page follows the event by its id: drawn now if its worker was to draw it.
        if let Some(e) = Arc::get_mut(event) {
            e.draw_id();
        }
        self.inner.tap.send(crate::inspector::tap::Note::Tracked {
            event: event.clone(),
            routed,
            unsupported,
            kept,
        });
    }

    /// Shows the open inspector pages an event refused before it was routed, unless its
    /// request's consent keeps it in the process.
    #[cfg(feature = "inspector")]
    #[cold]
    #[inline(never)]
    fn inspect_refused(&self, scope: Option<&Scope>, kind: EventKind, name: &str, why: &str) {
        let tap = &self.inner.tap;
        if !tap.active() || scope.is_some_and(|s| s.consent() == Consent::Denied) {
            return;
        }
        tap.send(crate::inspector::tap::Note::Rejected {
            name: crate::inspector::tap::shortened(name),
            kind,
            reason: crate::inspector::tap::shortened(why),
            time: SystemTime::now(),
        });
    }

    /// Counts an event a request's [`Consent::Denied`] keeps in the process.
    #[cold]
    #[inline(never)]
    pub(crate) fn count_consent_denied(&self) {
        self.inner.consent_denied.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether an inspector page is open (with the feature).
    #[inline]
    fn inspected(&self) -> bool {
        #[cfg(feature = "inspector")]
        return self.inner.tap.active();
        #[cfg(not(feature = "inspector"))]
        false
    }

    #[inline]
    fn push(&self, lane: usize, event: Arc<Event>) {
        let inner = &*self.inner;
        match inner.dispatch.push(lane, event) {
            Push::Queued => {}
            Push::Closed => {
                inner.after_shutdown.fetch_add(1, Ordering::Relaxed);
            }
            #[cfg(feature = "inspector")]
            Push::Full(event) => self.inspect_dropped(lane, &event),
            #[cfg(not(feature = "inspector"))]
            Push::Full(_) => {}
        }
    }

    /// Tells the open inspector pages that `lane`'s full queue dropped `event`.
    #[cfg(feature = "inspector")]
    #[cold]
    #[inline(never)]
    fn inspect_dropped(&self, lane: usize, event: &Event) {
        if !self.inner.tap.active() {
            return;
        }
        self.inner.tap.send(crate::inspector::tap::Note::Outcome {
            id: event.id(),
            lane,
            outcome: crate::inspector::tap::Outcome::Dropped,
            message: Some("dropped: the queue was full".into()),
        });
    }

    /// Whether sampling can drop anything and is keyed by request or user.
    pub(crate) fn samples_by_key(&self) -> bool {
        self.inner.router.samples && self.inner.router.key != SampleKey::Event
    }

    fn sample_hash(&self, scope: Option<&Scope>) -> u64 {
        let by_request = || scope.and_then(Scope::request_hash);
        let h = match self.inner.router.key {
            SampleKey::Event => None,
            SampleKey::Request => by_request(),
            SampleKey::User => scope.and_then(Scope::user_hash).or_else(by_request),
        };
        h.unwrap_or_else(rand::random)
    }

    /// Counts what the redaction and limits pass did; whether the event is still sent.
    #[cold]
    fn limited(&self, scope: Option<&Scope>, event: &Event, outcome: &Outcome) -> bool {
        let inner = &*self.inner;
        let name = event.name();
        if outcome.redacted > 0 {
            inner
                .redacted
                .fetch_add(outcome.redacted as u64, Ordering::Relaxed);
        }
        let (counter, what) = match outcome.oversized {
            Some(_) => (&inner.oversized, "rejected: larger than max_event_size"),
            None if outcome.truncated() => (&inner.truncated, "truncated to fit the limits"),
            None => return true,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = inner.limit_warnings.hit() {
            let shown: String = name.chars().take(64).collect();
            tracing::warn!(
                target: "tower_telemetry",
                event = %crate::diag::Escaped(&shown),
                size = outcome.oversized,
                limit = %outcome.limits_hit(&inner.policy.limits),
                events_since_last_warning = n,
                "telemetry event {what}"
            );
        }
        #[cfg(feature = "inspector")]
        if let Some(size) = outcome.oversized {
            let why = format!(
                "larger than max_event_size ({size} bytes; the limit is {})",
                inner.policy.limits.max_event_size
            );
            self.inspect_refused(scope, event.kind(), name, &why);
        }
        #[cfg(not(feature = "inspector"))]
        let _ = scope;
        outcome.oversized.is_none()
    }

    #[cold]
    #[inline(never)]
    fn reject_invalid(&self, scope: Option<&Scope>, kind: EventKind, name: &str) {
        let why = validate_name(name)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        self.reject(scope, kind, name, &why);
    }

    /// Counts and logs an event refused before it was routed (`why`), and shows it to the
    /// open inspector pages. `scope`: the request it was tracked in, if any.
    #[cold]
    #[inline(never)]
    pub(crate) fn reject(&self, scope: Option<&Scope>, kind: EventKind, name: &str, why: &str) {
        #[cfg(feature = "inspector")]
        self.inspect_refused(scope, kind, name, why);
        #[cfg(not(feature = "inspector"))]
        let _ = (scope, kind);
        let inner = &*self.inner;
        inner.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = inner.rejections.hit() {
            let shown: String = name.chars().take(64).collect();
            tracing::warn!(
                target: "tower_telemetry",
                event = %crate::diag::Escaped(&shown),
                reason = %crate::diag::Escaped(why),
                rejected = n,
                "telemetry event rejected"
            );
        }
    }

    #[cold]
    fn debug_event(&self, event: &Event, keep: u32) {
        let to: Vec<&str> = (self.inner.dispatch.names().enumerate())
            .filter(|(i, _)| keep & (1 << i) != 0)
            .map(|(_, name)| name)
            .collect();
        tracing::info!(
            target: "tower_telemetry::debug",
            event = %crate::diag::Escaped(event.name()),
            properties = %crate::diag::Escaped(&serde_json::to_string(event.properties()).unwrap_or_default()),
            destinations = ?to,
            "telemetry event"
        );
    }
}

/// Adds the super properties an event does not have itself.
#[cold]
#[inline(never)]
fn merge_super_properties(props: &mut Properties, supers: &Properties) {
    props.merge_missing(supers);
}

/// Fills `out` with the fields of `value`, which must serialize to a JSON object.
pub(crate) fn object_properties(
    value: &impl Serialize,
    out: &mut Properties,
) -> Result<(), String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => {
            *out = Properties::from_json_map(map);
            Ok(())
        }
        Ok(other) => Err(format!(
            "properties must serialize to a JSON object, not {}",
            crate::config::kind_of(&other)
        )),
        Err(e) => Err(format!("properties failed to serialize: {e}")),
    }
}

#[cold]
#[inline(never)]
fn debug_nowhere(name: &str) {
    tracing::info!(target: "tower_telemetry::debug", event = %crate::diag::Escaped(name), "telemetry event routed nowhere");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_make_properties() {
        let mut p = Properties::new();
        object_properties(&serde_json::json!({"plan": "pro", "n": 2}), &mut p).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.get("plan").unwrap(), "pro");
        let err = object_properties(&[1, 2], &mut p).unwrap_err();
        assert_eq!(
            err,
            "properties must serialize to a JSON object, not a list"
        );
        let err = object_properties(&"plain", &mut p).unwrap_err();
        assert!(err.ends_with("not a string"), "{err}");
    }
}
