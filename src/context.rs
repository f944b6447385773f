//! Context: who, where and in which request an event happened.
//!
//! A [`Telemetry`] handle has a *base* context (hostname, app version, ...). A request adds a
//! *scope*: a context held in a `tokio::task_local!` for as long as the request's future runs.
//! [`TelemetryLayer`](crate::TelemetryLayer) enters one for every request; you can enter one
//! yourself with [`Telemetry::scope`]. Every event snapshots `base ⊕ scope` when it is tracked.
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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskCx, Poll};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::event::Properties;
use crate::routing::stable_hash;
use crate::telemetry::Telemetry;
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

            /// The sum over the well-known fields that are set of `f(value's length in bytes)`.
            pub(crate) fn known_lengths(&self, f: impl Fn(usize) -> usize) -> usize {
                0 $( + self.$field.as_ref().map_or(0, |t| f(t.byte_len())) )*
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
/// a clone starts empty. Packed: `[policy id: 16][needs redaction: 1][size bound: 47]`,
/// 0 = not examined.
#[derive(Default)]
pub(crate) struct CheckCache(AtomicU64);

impl CheckCache {
    fn reset(&mut self) {
        *self.0.get_mut() = 0;
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
        policy: u16,
        examine: impl FnOnce(&Context) -> (usize, bool),
    ) -> (usize, bool) {
        const BOUND: u64 = (1 << 47) - 1;
        let v = self.checked.0.load(Ordering::Relaxed);
        if v != 0 && (v >> 48) as u16 == policy {
            return ((v & BOUND) as usize, v & (1 << 47) != 0);
        }
        let (bound, redact) = examine(self);
        let packed =
            (u64::from(policy) << 48) | (u64::from(redact) << 47) | (bound as u64).min(BOUND);
        self.checked.0.store(packed, Ordering::Relaxed);
        (bound, redact)
    }
}

/// A request scope: the handle it belongs to and its (mutable) context.
pub(crate) struct Scope {
    pub(crate) telemetry: Telemetry,
    ctx: Mutex<Arc<Context>>,
    /// Sampling hashes of the request id and user id (0: none), kept in step with `ctx` so
    /// sampling never takes the lock.
    request_hash: AtomicU64,
    user_hash: AtomicU64,
    /// Whether the handle samples by request or user at all (else the hashes are never read).
    hashes: bool,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("context", &self.snapshot())
            .finish()
    }
}

impl Scope {
    /// A scope of `telemetry` whose context is its base merged with `request`.
    ///
    /// The layer passes a context it built in its `Arc` (a context is ~600 bytes: no moves).
    pub(crate) fn new(telemetry: Telemetry, request: impl Into<Arc<Context>>) -> Arc<Scope> {
        let request = request.into();
        let ctx = match telemetry.base_context_if_set() {
            None => request,
            Some(base) if request.is_empty() => base,
            Some(base) => {
                let mut merged = (*base).clone();
                merged.merge(&request);
                Arc::new(merged)
            }
        };
        let scope = Scope {
            hashes: telemetry.samples_by_key(),
            telemetry,
            ctx: Mutex::new(ctx.clone()),
            request_hash: AtomicU64::new(0),
            user_hash: AtomicU64::new(0),
        };
        scope.rehash(&ctx);
        Arc::new(scope)
    }

    fn rehash(&self, ctx: &Context) {
        if !self.hashes {
            return;
        }
        let h = |v: Option<&str>| v.map_or(0, |s| stable_hash(s).max(1));
        self.request_hash
            .store(h(ctx.request_id()), Ordering::Relaxed);
        self.user_hash.store(h(ctx.user_id()), Ordering::Relaxed);
    }

    pub(crate) fn request_hash(&self) -> Option<u64> {
        Some(self.request_hash.load(Ordering::Relaxed)).filter(|h| *h != 0)
    }

    pub(crate) fn user_hash(&self) -> Option<u64> {
        Some(self.user_hash.load(Ordering::Relaxed)).filter(|h| *h != 0)
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Context>> {
        // A panic while holding this lock cannot leave a half-written context behind (we only
        // ever swap whole `Arc`s), so a poisoned lock is still good to use.
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The context now; a reference count bump.
    pub(crate) fn snapshot(&self) -> Arc<Context> {
        self.lock().clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Context)) {
        let mut guard = self.lock();
        f(Arc::make_mut(&mut guard));
        self.rehash(&guard);
    }

    pub(crate) fn replace(&self, ctx: Context) {
        let mut guard = self.lock();
        *guard = Arc::new(ctx);
        self.rehash(&guard);
    }
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// The current task's scope, if any (a reference count bump). Never panics.
pub(crate) fn current_scope() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

pub(crate) fn enter<F: Future>(scope: Arc<Scope>, fut: F) -> WithContext<F> {
    WithContext {
        inner: Inner::Scoped {
            fut: SCOPE.scope(scope, fut),
        },
    }
}

pub(crate) fn enter_sync<R>(scope: Arc<Scope>, f: impl FnOnce() -> R) -> R {
    SCOPE.sync_scope(scope, f)
}

pin_project_lite::pin_project! {
    /// A future that runs inside a telemetry context scope.
    ///
    /// Returned by [`Telemetry::scope`] and [`WithContextExt::in_current_context`]. The scope is
    /// entered on every poll and left after it, so it ends exactly when the future completes or
    /// is dropped.
    pub struct WithContext<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Scoped { #[pin] fut: tokio::task::futures::TaskLocalFuture<Arc<Scope>, F> },
        Plain { #[pin] fut: F },
    }
}

impl<F> fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithContext").finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        match self.project().inner.project() {
            InnerProj::Scoped { fut } => fut.poll(cx),
            InnerProj::Plain { fut } => fut.poll(cx),
        }
    }
}

/// Carries the current telemetry context into a future that will run elsewhere.
///
/// Task-locals do not follow `tokio::spawn`; this does. The spawned future shares the request's
/// scope, so a `set_context` there is seen by the request too. Outside any scope it is a no-op.
pub trait WithContextExt: Future + Sized {
    /// Wraps `self` so that it runs inside the scope that is current *now*.
    fn in_current_context(self) -> WithContext<Self> {
        match current_scope() {
            Some(scope) => enter(scope, self),
            None => WithContext {
                inner: Inner::Plain { fut: self },
            },
        }
    }
}

impl<F: Future> WithContextExt for F {}

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
}
