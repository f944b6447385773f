//! Context: who, where and in which request an event happened.
//!
//! A [`Telemetry`] handle has a *base* context (hostname, app version, ...). A request adds a
//! *scope*: a context that is current while the request's future runs (set on the thread each
//! time the future is polled, as `tokio::task_local!` does).
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

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskCx, Poll};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::properties::Properties;
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

/// The request id's and user id's sampling hashes (0: not set).
fn sampling_hashes(ctx: &Context) -> (u64, u64) {
    let h = |v: Option<&str>| v.map_or(0, |s| stable_hash(s).max(1));
    (h(ctx.request_id()), h(ctx.user_id()))
}

impl Drop for Scope {
    fn drop(&mut self) {
        let ctx = self.ctx.get_mut().unwrap_or_else(|e| e.into_inner());
        crate::dispatch::recycle::recycle_context(ctx);
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
        let hashes = telemetry.samples_by_key();
        // Hashed before the context moves into the scope (no reference count taken for it).
        let (request_hash, user_hash) = if hashes {
            sampling_hashes(&ctx)
        } else {
            (0, 0)
        };
        Arc::new(Scope {
            hashes,
            telemetry,
            ctx: Mutex::new(ctx),
            request_hash: AtomicU64::new(request_hash),
            user_hash: AtomicU64::new(user_hash),
        })
    }

    fn rehash(&self, ctx: &Context) {
        if !self.hashes {
            return;
        }
        let (request_hash, user_hash) = sampling_hashes(ctx);
        self.request_hash.store(request_hash, Ordering::Relaxed);
        self.user_hash.store(user_hash, Ordering::Relaxed);
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

thread_local! {
    /// The scope of the future being polled on this thread, if any. Set only while a
    /// [`WithContext`] polls (or drops) its future, or while [`enter_sync`] runs: what
    /// `tokio::task_local!` does, without its closure-based `scope`, which moves the request
    /// and the inner future through a closure and back (four copies of a few hundred bytes
    /// per request in the layer's profile).
    static CURRENT: Cell<Option<Arc<Scope>>> = const { Cell::new(None) };
}

/// The current task's scope, if any (a reference count bump). Never panics.
pub(crate) fn current_scope() -> Option<Arc<Scope>> {
    CURRENT
        .try_with(|current| {
            let scope = current.take();
            let copy = scope.clone();
            current.set(scope);
            copy
        })
        .ok()
        .flatten()
}

/// Makes `*slot` the current scope until dropped, then puts it back in `slot` and restores
/// the one it replaced, also when unwinding. If the thread-local is gone (thread exit),
/// nothing changes.
struct Entered<'a> {
    slot: &'a mut Option<Arc<Scope>>,
    entered: bool,
}

impl<'a> Entered<'a> {
    #[inline]
    fn new(slot: &'a mut Option<Arc<Scope>>) -> Self {
        let entered = exchange(slot);
        Entered { slot, entered }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.entered {
            exchange(self.slot);
        }
    }
}

/// Swaps `slot` with the current scope; `false` if the thread-local is gone.
#[inline]
fn exchange(slot: &mut Option<Arc<Scope>>) -> bool {
    CURRENT
        .try_with(|current| {
            let previous = current.replace(slot.take());
            *slot = previous;
        })
        .is_ok()
}

#[inline]
pub(crate) fn enter<F: Future>(scope: Arc<Scope>, fut: F) -> WithContext<F> {
    WithContext {
        scope: Some(scope),
        fut,
        restore: Restore::default(),
    }
}

/// Runs `f` with `scope` current.
#[inline]
pub(crate) fn enter_sync<R>(scope: Arc<Scope>, f: impl FnOnce() -> R) -> R {
    let mut slot = Some(scope);
    let _entered = Entered::new(&mut slot);
    f()
}

/// Makes a future with `scope` current (a service's `call` may do work and track events before
/// it returns its future), then wraps the future in the same scope: one scope, no clone.
#[inline]
pub(crate) fn call_in<F: Future>(scope: Arc<Scope>, make: impl FnOnce() -> F) -> WithContext<F> {
    let mut slot = Some(scope);
    let fut = {
        let _entered = Entered::new(&mut slot);
        make()
    };
    WithContext {
        scope: slot,
        fut,
        restore: Restore::default(),
    }
}

pin_project_lite::pin_project! {
    /// A future that runs inside a telemetry context scope.
    ///
    /// Returned by [`Telemetry::scope`] and [`WithContextExt::in_current_context`]. The scope is
    /// entered on every poll and left after it, and entered again while the future is dropped
    /// (so code in its `Drop`, like a cancelled duration, still sees it). It ends exactly when
    /// the future completes or is dropped.
    pub struct WithContext<F> {
        // `None`: no scope was current when it was made; polled as it is.
        scope: Option<Arc<Scope>>,
        #[pin]
        fut: F,
        // Fields are dropped in order after `drop` below: `drop` makes the scope current and
        // keeps the one it replaced here, `fut` is dropped inside the scope, and then this
        // puts the previous one back (also when `fut`'s drop panics).
        restore: Restore,
    }

    impl<F> PinnedDrop for WithContext<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut slot = this.scope.take();
            if slot.is_some() && exchange(&mut slot) {
                // `slot` now holds the scope that was current.
                this.restore.0 = Some(slot);
            }
        }
    }
}

/// The scope to make current again once a [`WithContext`]'s future is dropped.
#[derive(Default)]
struct Restore(Option<Option<Arc<Scope>>>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(mut previous) = self.0.take() {
            exchange(&mut previous); // drops the scope it takes back out
        }
    }
}

impl<F> fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithContext").finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.scope.is_none() {
            return this.fut.poll(cx);
        }
        let _entered = Entered::new(this.scope);
        this.fut.poll(cx)
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
                scope: None,
                fut: self,
                restore: Restore::default(),
            },
        }
    }
}

impl<F: Future> WithContextExt for F {}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_of(user: &str) -> Arc<Scope> {
        Scope::new(
            Telemetry::disabled(),
            Context::new().with_user_id(user.to_string()),
        )
    }

    fn current_user() -> Option<String> {
        current_scope().map(|s| s.snapshot().user_id().unwrap_or_default().to_string())
    }

    #[test]
    fn scopes_nest_and_restore_the_outer_one_even_when_unwinding() {
        assert_eq!(current_user(), None);
        enter_sync(scope_of("outer"), || {
            assert_eq!(current_user().as_deref(), Some("outer"));
            enter_sync(scope_of("inner"), || {
                assert_eq!(current_user().as_deref(), Some("inner"));
            });
            assert_eq!(current_user().as_deref(), Some("outer"));
            let panicked = std::panic::catch_unwind(|| {
                enter_sync(scope_of("panics"), || panic!("boom"));
            });
            assert!(panicked.is_err());
            assert_eq!(current_user().as_deref(), Some("outer"));
        });
        assert_eq!(current_user(), None);
    }

    #[test]
    fn a_future_sees_its_scope_only_while_it_is_polled() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut polls = 0;
        let fut = std::future::poll_fn(move |cx| {
            log.lock().unwrap().push(current_user());
            polls += 1;
            if polls < 2 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        let mut fut = Box::pin(enter(scope_of("u1"), fut));
        let mut cx = TaskCx::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(current_user(), None, "left after the poll");
        enter_sync(scope_of("other"), || {
            assert!(fut.as_mut().poll(&mut cx).is_ready());
            assert_eq!(current_user().as_deref(), Some("other"), "restored");
        });
        assert_eq!(
            *seen.lock().unwrap(),
            [Some("u1".to_string()), Some("u1".to_string())]
        );
        // Made outside any scope: polled in whatever scope is current.
        let plain = async { current_user() }.in_current_context();
        let mut plain = Box::pin(plain);
        enter_sync(scope_of("ambient"), || {
            assert_eq!(
                plain.as_mut().poll(&mut cx),
                Poll::Ready(Some("ambient".to_string()))
            );
        });
    }

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
