//! Request scopes: the context that is current while a request's future runs.
//!
//! A scope belongs to one handle and holds the request's (mutable) context. It is current on
//! a thread while a [`WithContext`] polls its future (as `tokio::task_local!` does), and
//! `track!`, the free functions and [`Tracker`](crate::Tracker) find it there.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskCx, Poll};

use super::Telemetry;
use crate::context::Context;
use crate::identity::Consent;
use crate::text::Text;

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
    /// What the request may tell the destinations (decided once, when the scope is made).
    consent: Consent,
    /// Under [`Consent::Anonymous`]: the random request id that stands for the request's.
    anonymous_id: Option<Box<Text>>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("context", &self.snapshot())
            .finish()
    }
}

/// A random request id (a UUIDv4) for an anonymous request: nothing links it to the request's
/// own id or to the user.
fn random_request_id() -> Text {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    Text::from(id.hyphenated().to_string())
}

/// The request id's and user id's sampling hashes (0: not set), keyed by the handle's secret.
fn sampling_hashes(telemetry: &Telemetry, ctx: &Context) -> (u64, u64) {
    let router = &telemetry.inner.router;
    let h = |v: Option<&str>| v.map_or(0, |s| router.key_hash(s).max(1));
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
        Self::with_consent(telemetry, request, Consent::Granted)
    }

    /// A scope whose events follow `consent` (see [`Consent`]).
    #[inline]
    pub(crate) fn with_consent(
        telemetry: Telemetry,
        request: impl Into<Arc<Context>>,
        consent: Consent,
    ) -> Arc<Scope> {
        let request = request.into();
        let mut ctx = match telemetry.base_context_if_set() {
            None => request,
            Some(base) if request.is_empty() => base,
            Some(base) => {
                let mut merged = (*base).clone();
                merged.merge(&request);
                Arc::new(merged)
            }
        };
        let anonymous_id = (consent == Consent::Anonymous).then(|| {
            let id = Box::new(random_request_id());
            Arc::make_mut(&mut ctx).anonymize(&id);
            id
        });
        let hashes = telemetry.samples_by_key();
        // Hashed before the context moves into the scope (no reference count taken for it).
        let (request_hash, user_hash) = if hashes {
            sampling_hashes(&telemetry, &ctx)
        } else {
            (0, 0)
        };
        Arc::new(Scope {
            hashes,
            telemetry,
            ctx: Mutex::new(ctx),
            request_hash: AtomicU64::new(request_hash),
            user_hash: AtomicU64::new(user_hash),
            consent,
            anonymous_id,
        })
    }

    /// What the request may tell the destinations.
    #[inline]
    pub(crate) fn consent(&self) -> Consent {
        self.consent
    }

    /// Keeps an anonymous scope's context anonymous after a change.
    fn keep_anonymous(&self, ctx: &mut Arc<Context>) {
        if let Some(id) = &self.anonymous_id
            && !ctx.is_anonymous(id)
        {
            Arc::make_mut(ctx).anonymize(id);
        }
    }

    fn rehash(&self, ctx: &Context) {
        if !self.hashes {
            return;
        }
        let (request_hash, user_hash) = sampling_hashes(&self.telemetry, ctx);
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
        self.keep_anonymous(&mut guard);
        self.rehash(&guard);
    }

    /// Like [`update`](Self::update); returns the context before the change.
    pub(crate) fn update_and_get(&self, f: impl FnOnce(&mut Context)) -> Arc<Context> {
        let mut guard = self.lock();
        let before = guard.clone();
        f(Arc::make_mut(&mut guard));
        self.keep_anonymous(&mut guard);
        self.rehash(&guard);
        before
    }

    pub(crate) fn replace(&self, ctx: Context) {
        let mut guard = self.lock();
        *guard = Arc::new(ctx);
        self.keep_anonymous(&mut guard);
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

/// Context operations: the base context, and the current request scope's.
impl Telemetry {
    /// The base context if it has any field, without touching its lock otherwise.
    #[inline]
    pub(crate) fn base_context_if_set(&self) -> Option<Arc<Context>> {
        self.inner
            .base_set
            .load(Ordering::Acquire)
            .then(|| self.base_context())
    }

    pub(crate) fn base_context(&self) -> Arc<Context> {
        self.inner
            .base
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Merges `context` into the current request's scope when called inside one, else into
    /// this handle's base context (seen by every later event outside requests, and by requests
    /// that start later).
    pub fn set_context(&self, context: Context) {
        match current_scope() {
            Some(scope) => scope.update(|c| c.merge(&context)),
            None => {
                let mut base = self.inner.base.write().unwrap_or_else(|e| e.into_inner());
                Arc::make_mut(&mut base).merge(&context);
                self.inner
                    .base_set
                    .store(!base.is_empty(), Ordering::Release);
            }
        }
    }

    /// Inside a request scope: resets the request's context to the base context. Outside:
    /// clears the base context.
    pub fn clear_context(&self) {
        match current_scope() {
            Some(scope) => scope.replace((*self.base_context()).clone()),
            None => {
                *self.inner.base.write().unwrap_or_else(|e| e.into_inner()) = Arc::default();
                self.inner.base_set.store(false, Ordering::Release);
            }
        }
    }

    /// The context an event tracked here and now would carry.
    pub fn current_context(&self) -> Arc<Context> {
        match current_scope() {
            Some(scope) => scope.snapshot(),
            None => self.base_context(),
        }
    }

    /// Runs `future` in a new request scope: events tracked inside carry this handle's base
    /// context merged with `context`, and [`track!`](macro@crate::track) inside uses this handle.
    pub fn scope<F: Future>(&self, context: Context, future: F) -> WithContext<F> {
        enter(Scope::new(self.clone(), context), future)
    }

    /// Like [`scope`](Self::scope), for a request whose user gave (or refused) consent: see
    /// [`Consent`]. Under [`Consent::Denied`] no event of the scope leaves the process; under
    /// [`Consent::Anonymous`] events lose every personal context field.
    ///
    /// ```
    /// use tower_telemetry::{Context, Telemetry, identity::Consent, track};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
    /// let memory = telemetry.memory("memory").unwrap();
    /// let ctx = || Context::new().with_user_id("user_42").with_request_id("req_1");
    ///
    /// telemetry.scope_with_consent(ctx(), Consent::Denied, async { track!("user.clicked") }).await;
    /// telemetry.scope_with_consent(ctx(), Consent::Anonymous, async { track!("user.clicked") }).await;
    ///
    /// telemetry.flush(std::time::Duration::from_secs(1)).await;
    /// let events = memory.events();
    /// assert_eq!(events.len(), 1);
    /// assert_eq!(events[0].context().user_id(), None);
    /// assert_ne!(events[0].context().request_id(), Some("req_1"));
    /// assert_eq!(telemetry.stats().consent_denied, 1);
    /// # }
    /// ```
    pub fn scope_with_consent<F: Future>(
        &self,
        context: Context,
        consent: Consent,
        future: F,
    ) -> WithContext<F> {
        enter(Scope::with_consent(self.clone(), context, consent), future)
    }

    /// Runs `f` in a new request scope, synchronously (for code outside async tasks).
    pub fn scope_sync<R>(&self, context: Context, f: impl FnOnce() -> R) -> R {
        enter_sync(Scope::new(self.clone(), context), f)
    }
}

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
}
