//! [`Tracker`]: the axum extractor.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::Serialize;

use crate::__private::{Callsite, Emit};
use crate::context::Context;
use crate::event::Properties;
use crate::telemetry::{self, Scope, WithContext};
use crate::telemetry::{Telemetry, object_properties};
use crate::text::Text;
use crate::timing::{DurationNames, Outcome, TrackDuration, TrackDurationExt};

/// The telemetry handle plus the current request's context, as an axum extractor.
///
/// `Clone + Send + 'static`: move it into a spawned task and its events still carry the
/// request's context. Extraction never fails: without [`TelemetryLayer`](crate::layer::TelemetryLayer)
/// it uses the global handle (or, with none installed, tracks nothing) with its base context.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_telemetry::{Tracker, props};
///
/// async fn checkout(tracker: Tracker) -> &'static str {
///     tracker.set_user_id("user_123");                 // later events (and the request event) see it
///     tracker.track("checkout.started", props! { "package_id" => "creator" });
///     let t = tracker.clone();
///     tokio::spawn(async move {
///         t.track("checkout.receipt_sent", props! {}); // same request context
///     });
///     "ok"
/// }
/// let app: Router = Router::new().route("/checkout", post(checkout));
/// ```
#[derive(Clone, Debug)]
pub struct Tracker {
    scope: Arc<Scope>,
}

impl Tracker {
    /// A tracker for `telemetry` with a fresh scope holding `context` (outside axum).
    pub fn new(telemetry: Telemetry, context: Context) -> Self {
        Tracker {
            scope: Scope::new(telemetry, context),
        }
    }

    /// The tracker of the current request scope, if code runs inside one.
    pub fn current() -> Option<Self> {
        telemetry::current_scope().map(|scope| Tracker { scope })
    }

    /// The handle it tracks through.
    pub fn telemetry(&self) -> &Telemetry {
        &self.scope.telemetry
    }

    /// Tracks `name` with `properties` in this request's context.
    pub fn track(&self, name: impl Into<Text>, properties: Properties) {
        self.scope
            .telemetry
            .emit_dynamic(Some(&self.scope), name.into(), move |p| {
                *p = properties;
                Ok(())
            });
    }

    /// Tracks `name` with the fields of `properties` (must serialize to a JSON object).
    pub fn track_event(&self, name: impl Into<Text>, properties: impl Serialize) {
        self.scope
            .telemetry
            .emit_dynamic(Some(&self.scope), name.into(), move |p| {
                object_properties(&properties, p)
            });
    }

    /// Merges `context` into this request's context, for every later event of the request.
    pub fn set_context(&self, context: Context) {
        self.scope.update(|c| c.merge(&context));
    }

    /// Sets the user id for every later event of the request (e.g. right after sign-in).
    pub fn set_user_id(&self, user_id: impl Into<Text>) {
        let id = user_id.into();
        self.scope.update(|c| {
            c.set_user_id(Some(id));
        });
    }

    /// Identifies the request's user: [`Telemetry::identify`] in this request's scope.
    pub fn identify(&self, user_id: impl Into<Text>, traits: Properties) {
        let op = crate::identity::Identify::new(user_id).set(traits);
        self.scope.telemetry.identify_in(Some(&self.scope), op);
    }

    /// [`Telemetry::identify_with`] in this request's scope.
    pub fn identify_with(&self, identify: crate::identity::Identify) {
        self.scope
            .telemetry
            .identify_in(Some(&self.scope), identify);
    }

    /// [`Telemetry::alias`] in this request's scope.
    pub fn alias(&self, previous_id: impl Into<Text>, user_id: impl Into<Text>) {
        (self.scope.telemetry).alias_in(Some(&self.scope), previous_id.into(), user_id.into());
    }

    /// [`Telemetry::group`] in this request's scope: describes the group and adds it to every
    /// later event of the request.
    pub fn group(
        &self,
        group_type: impl Into<Text>,
        group_key: impl Into<Text>,
        traits: Properties,
    ) {
        let (t, k) = (group_type.into(), group_key.into());
        self.scope
            .telemetry
            .group_in(Some(&self.scope), t, k, traits);
    }

    /// The request's context now.
    pub fn context(&self) -> Arc<Context> {
        self.scope.snapshot()
    }

    /// Tracks the duration of `future` in this request's context:
    /// `{prefix}.started`, then `.completed` / `.failed` / `.cancelled`
    /// with `duration_ms`. See [`TrackDurationExt::track_duration`].
    ///
    /// ```
    /// # use tower_telemetry::Tracker;
    /// async fn handler(tracker: Tracker) -> Result<String, std::io::Error> {
    ///     tracker.time("generation", async { Ok("image".to_owned()) }).await
    /// }
    /// ```
    pub fn time<F>(
        &self,
        prefix: impl Into<DurationNames>,
        future: F,
    ) -> WithContext<TrackDuration<F>>
    where
        F: Future,
        F::Output: Outcome,
    {
        telemetry::enter(self.scope.clone(), future.track_duration(prefix))
    }

    /// Runs `future` inside this request's scope (e.g. a future you will spawn), so
    /// `track!` and the free functions in it see the request's context.
    pub fn in_scope<F: Future>(&self, future: F) -> WithContext<F> {
        telemetry::enter(self.scope.clone(), future)
    }
}

impl Emit for Tracker {
    fn __emit_static(
        &self,
        callsite: &'static Callsite,
        name: &'static str,
        capacity: usize,
        fill: impl FnOnce(&mut Properties) -> bool,
    ) {
        self.scope
            .telemetry
            .emit_static(Some(&self.scope), callsite, name, capacity, fill)
    }

    fn __emit_dynamic(&self, name: impl Into<Text>, fill: impl FnOnce(&mut Properties)) {
        self.scope
            .telemetry
            .emit_dynamic(Some(&self.scope), name.into(), |p| {
                fill(p);
                Ok(())
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tracker {
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Handlers are extracted inside the layer's scope, so it is current here.
        Ok(match telemetry::current_scope() {
            Some(scope) => Tracker { scope },
            None => Tracker::new(Telemetry::global().clone(), Context::new()),
        })
    }
}
