//! Event allocations reused per thread.
//!
//! An event is ~400 bytes (its first properties live inline), allocated by `track!` and freed
//! by the worker once every destination delivered it. glibc's per-thread cache holds only 7
//! chunks of a size, so the worker freeing a batch of a hundred and the handlers allocating a
//! hundred more fall through to its slower bins (`_int_malloc`, `unlink_chunk`,
//! `malloc_consolidate` in profiles), and building an event on the stack then moving it into
//! its `Arc` copies all 400 bytes. Instead, a delivered event nobody else holds is emptied
//! (properties, name, context: nothing of the request is kept alive) and parked in a small
//! thread-local free list; `track!` on that thread takes it back and fills it in place.
//!
//! A request's context (~600 bytes) goes the same way: when the last event of a request is
//! recycled after its request ended, the context is emptied and parked for the layer to fill
//! for a later request.
//!
//! Thread-local, so no lock and no shared cache line: with one runtime worker per core (the
//! telemetry worker runs on the same threads as the handlers) every event is recycled.
//!
//! A thread that delivers but does not track (the telemetry worker on a runtime thread other
//! than the handlers') hands its emptied events over in whole batches through a small shared
//! pool, and a tracking thread whose free list is empty takes a whole batch. Otherwise every
//! event would be allocated on one thread and freed on another, and glibc makes such a free
//! wait for the allocating thread's arena lock (futex wake-ups in profiles). The pool's lock is
//! only ever tried, never waited for, and is touched once per batch, not per event.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::event::{Event, EventCategory, EventKind};
use crate::properties::{INLINE_PROPERTIES, Properties};
use crate::text::Text;

/// Events kept per thread: ~100 KB at most.
const CAP: usize = 256;

/// Batches in the shared pool: with batches of 100, ~600 KB at most.
const POOL_BATCHES: usize = 16;

/// Batches of emptied events from threads that deliver without tracking.
static POOL: Mutex<Vec<Vec<Arc<Event>>>> = Mutex::new(Vec::new());

thread_local! {
    static FREE: RefCell<Vec<Arc<Event>>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread tracks (has taken events): only then are delivered events parked in
    /// its own free list rather than handed to the pool.
    static TRACKS: Cell<bool> = const { Cell::new(false) };
    static FREE_CONTEXTS: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
    /// The context parked events hold, so they keep no request's context alive.
    static EMPTY: Arc<Context> = Arc::default();
}

/// An empty event to fill: one from this thread's free list, else from a batch in the shared
/// pool, else a new one.
#[inline]
pub(crate) fn take() -> Arc<Event> {
    FREE.try_with(|free| {
        let mut free = free.try_borrow_mut().ok()?;
        free.pop().or_else(|| refill(&mut free))
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| Arc::new(empty(empty_context())))
}

/// This thread's free list is empty: it tracks, so from now on it keeps what its own worker
/// delivers; and it takes a batch from the pool if one is there and the lock is free.
#[cold]
fn refill(free: &mut Vec<Arc<Event>>) -> Option<Arc<Event>> {
    let _ = TRACKS.try_with(|t| t.set(true));
    refill_from(&POOL, free)
}

fn refill_from(
    pool: &Mutex<Vec<Vec<Arc<Event>>>>,
    free: &mut Vec<Arc<Event>>,
) -> Option<Arc<Event>> {
    let mut batch = pool.try_lock().ok()?.pop()?;
    let event = batch.pop();
    batch.truncate(CAP);
    free.append(&mut batch);
    event
}

/// An empty context to fill, never shared: one from this thread's free list, else a new one.
#[inline]
pub(crate) fn take_context() -> Arc<Context> {
    FREE_CONTEXTS
        .try_with(|free| free.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// This thread's shared empty context (no allocation, no shared reference count).
pub(crate) fn empty_context() -> Arc<Context> {
    EMPTY.try_with(Arc::clone).unwrap_or_default()
}

fn empty(context: Arc<Context>) -> Event {
    Event {
        id: uuid::Uuid::nil(),
        id_pending: false,
        name: Text::from_static(""),
        category: EventCategory::System,
        kind: EventKind::Custom,
        timestamp: std::time::UNIX_EPOCH,
        properties: Properties::new(),
        context,
        held: 0,
    }
}

/// Parks the events of a delivered batch that nobody else holds (and their contexts, when no
/// request holds them any more); drops the others. On a thread that does not track, the
/// emptied events go to the shared pool as one batch.
pub(crate) fn give(events: Vec<Arc<Event>>) {
    if !TRACKS.try_with(Cell::get).unwrap_or(false) {
        return give_to_pool(&POOL, events);
    }
    let mut events = events.into_iter();
    let _ = FREE.try_with(|free| {
        let _ = FREE_CONTEXTS.try_with(|contexts| {
            let _ = EMPTY.try_with(|empty_context| {
                let (Ok(mut free), Ok(mut contexts)) =
                    (free.try_borrow_mut(), contexts.try_borrow_mut())
                else {
                    return;
                };
                while free.len() < CAP {
                    let Some(mut event) = events.next() else {
                        break;
                    };
                    let Some(e) = Arc::get_mut(&mut event) else {
                        continue; // a destination kept it (the memory destination, a retry...)
                    };
                    let ctx = clear(e, empty_context.clone());
                    park_context(&mut contexts, ctx);
                    free.push(event);
                }
            });
        });
    });
    // What this thread's list has no room for.
    let rest: Vec<Arc<Event>> = events.collect();
    if !rest.is_empty() {
        give_to_pool(&POOL, rest);
    }
}

/// Empties an event nobody else holds, giving it `context`; returns its old context.
fn clear(e: &mut Event, context: Arc<Context>) -> Arc<Context> {
    if e.properties.capacity() > INLINE_PROPERTIES {
        e.properties = Properties::new(); // give its heap storage back
    } else {
        e.properties.clear();
    }
    e.name = Text::from_static("");
    e.category = EventCategory::System;
    std::mem::replace(&mut e.context, context)
}

/// Parks `ctx` in this thread's free list if nothing else holds it (a request that tracked
/// nothing, or whose events were all delivered): the next request on this thread fills it
/// instead of allocating one.
pub(crate) fn recycle_context(ctx: &mut Arc<Context>) {
    if Arc::get_mut(ctx).is_none() {
        return; // events still hold it: the worker parks it when it delivers the last one
    }
    let _ = FREE_CONTEXTS.try_with(|contexts| {
        let Ok(mut contexts) = contexts.try_borrow_mut() else {
            return;
        };
        if contexts.len() < CAP {
            let ctx = std::mem::replace(ctx, empty_context());
            park_context(&mut contexts, ctx);
        }
    });
}

/// Parks a context no request holds any more, if there is room.
fn park_context(contexts: &mut Vec<Arc<Context>>, mut ctx: Arc<Context>) {
    if contexts.len() < CAP {
        if let Some(c) = Arc::get_mut(&mut ctx) {
            *c = Context::default();
            contexts.push(ctx);
        }
    }
}

/// [`give`] on a thread that does not track: the emptied events, as one batch, to the pool.
/// They share one empty context made for the batch, so the thread that takes them touches no
/// reference count of this one's.
fn give_to_pool(pool: &Mutex<Vec<Vec<Arc<Event>>>>, mut events: Vec<Arc<Event>>) {
    let shared: Arc<Context> = Arc::default();
    let _ = FREE_CONTEXTS.try_with(|contexts| {
        let mut contexts = contexts.try_borrow_mut().ok();
        events.retain_mut(|event| {
            let Some(e) = Arc::get_mut(event) else {
                return false; // a destination kept it: dropped here
            };
            let ctx = clear(e, shared.clone());
            if let Some(contexts) = contexts.as_mut() {
                park_context(contexts, ctx);
            }
            true
        });
    });
    if events.is_empty() {
        return;
    }
    if let Ok(mut pool) = pool.try_lock() {
        if pool.len() < POOL_BATCHES {
            pool.push(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test's thread tracks, so delivered events stay in its own list.
    fn tracking() {
        TRACKS.with(|t| t.set(true));
    }

    fn event(ctx: &Arc<Context>) -> Arc<Event> {
        let mut p = Properties::new();
        p.insert("model", "flux-dev");
        let mut e = Event::new(Text::from(String::from("generation.started")), p);
        e.context = ctx.clone();
        Arc::new(e)
    }

    #[test]
    fn a_delivered_event_is_emptied_and_reused_on_the_same_thread() {
        tracking();
        let ctx = Arc::new(Context::new().with_user_id("u1"));
        let e = event(&ctx);
        let addr = Arc::as_ptr(&e);
        assert_eq!(Arc::strong_count(&ctx), 2);
        give(vec![e]);
        // Parked without the request's context.
        assert_eq!(Arc::strong_count(&ctx), 1);
        let again = take();
        assert_eq!(Arc::as_ptr(&again), addr, "the same allocation");
        assert!(again.properties().is_empty());
        assert_eq!(again.name(), "");
        assert!(again.context().user_id().is_none());
    }

    #[test]
    fn a_context_no_request_holds_any_more_is_emptied_and_reused() {
        tracking();
        let e = event(&Arc::new(Context::new().with_user_id("u2")));
        let ctx_addr = Arc::as_ptr(&e.context);
        give(vec![e]);
        let ctx = take_context();
        assert_eq!(Arc::as_ptr(&ctx), ctx_addr, "the same allocation");
        assert!(ctx.is_empty());
        // A context the request still holds stays with it.
        let held = Arc::new(Context::new().with_user_id("u3"));
        give(vec![event(&held)]);
        assert_eq!(held.user_id(), Some("u3"));
        assert_ne!(Arc::as_ptr(&take_context()), Arc::as_ptr(&held));
    }

    #[test]
    fn events_still_held_elsewhere_are_not_reused() {
        tracking();
        let ctx = Arc::new(Context::new());
        let e = event(&ctx);
        let kept = e.clone();
        give(vec![e]);
        let fresh = take();
        assert_ne!(Arc::as_ptr(&fresh), Arc::as_ptr(&kept));
        assert_eq!(kept.properties().len(), 1, "untouched");
    }

    #[test]
    fn the_free_list_and_the_pool_are_bounded() {
        tracking();
        let ctx = Arc::new(Context::new());
        give((0..CAP + 50).map(|_| event(&ctx)).collect());
        let n = FREE.with(|f| f.borrow().len());
        assert!(n <= CAP, "{n} parked");
        assert_eq!(Arc::strong_count(&ctx), 1, "no context kept alive");
        FREE.with(|f| f.borrow_mut().clear());

        let pool = Mutex::new(Vec::new());
        for _ in 0..POOL_BATCHES + 3 {
            give_to_pool(&pool, (0..10).map(|_| event(&ctx)).collect());
        }
        assert_eq!(pool.lock().unwrap().len(), POOL_BATCHES);
        assert_eq!(Arc::strong_count(&ctx), 1, "no context kept alive");
    }

    #[test]
    fn a_thread_that_does_not_track_hands_whole_batches_to_one_that_does() {
        let pool = Mutex::new(Vec::new());
        let ctx = Arc::new(Context::new().with_user_id("u9"));
        let events: Vec<Arc<Event>> = (0..10).map(|_| event(&ctx)).collect();
        let kept = events[3].clone(); // a destination still holds this one
        let addrs: Vec<*const Event> = events.iter().map(Arc::as_ptr).collect();
        // Delivered on another thread, which never tracked.
        std::thread::scope(|s| {
            s.spawn(|| give_to_pool(&pool, events));
        });
        assert_eq!(
            Arc::strong_count(&ctx),
            2,
            "only the held event keeps the context"
        );
        assert_eq!(
            kept.context().user_id(),
            Some("u9"),
            "a held event is untouched"
        );
        let mut taken = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut free = Vec::new();
                let first = refill_from(&pool, &mut free).expect("a batch from the pool");
                taken.push(first);
                taken.append(&mut free);
            });
        });
        assert!(pool.lock().unwrap().is_empty(), "one batch, taken whole");
        assert_eq!(taken.len(), 9);
        for e in &taken {
            assert!(addrs.contains(&Arc::as_ptr(e)), "the same allocations");
            assert!(e.properties().is_empty());
            assert_eq!(e.name(), "");
            assert!(e.context().is_empty());
        }
        assert_eq!(refill_from(&pool, &mut Vec::new()).map(|_| ()), None);
    }
}
