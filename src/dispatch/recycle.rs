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
//! telemetry worker runs on the same threads as the handlers) every event is recycled; on a
//! thread that only delivers, the list fills up to its cap and the rest are freed as before.

use std::cell::RefCell;
use std::sync::Arc;

use crate::context::Context;
use crate::event::{Event, EventCategory, EventKind, INLINE_PROPERTIES, Properties};
use crate::text::Text;

/// Events kept per thread: ~100 KB at most.
const CAP: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Arc<Event>>> = const { RefCell::new(Vec::new()) };
    static FREE_CONTEXTS: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
    /// The context parked events hold, so they keep no request's context alive.
    static EMPTY: Arc<Context> = Arc::default();
}

/// An empty event to fill: one from this thread's free list, else a new one.
#[inline]
pub(crate) fn take() -> Arc<Event> {
    FREE.try_with(|free| free.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Arc::new(empty(Arc::default())))
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
        name: Text::from_static(""),
        category: EventCategory::System,
        kind: EventKind::Custom,
        timestamp: std::time::UNIX_EPOCH,
        properties: Properties::new(),
        context,
    }
}

/// Parks the events of a delivered batch that nobody else holds (and their contexts, when no
/// request holds them any more); drops the others.
pub(crate) fn give(events: Vec<Arc<Event>>) {
    let _ = FREE.try_with(|free| {
        let _ = FREE_CONTEXTS.try_with(|contexts| {
            let _ = EMPTY.try_with(|empty_context| {
                let (Ok(mut free), Ok(mut contexts)) =
                    (free.try_borrow_mut(), contexts.try_borrow_mut())
                else {
                    return;
                };
                for mut event in events {
                    if free.len() >= CAP {
                        break; // the rest are dropped
                    }
                    let Some(e) = Arc::get_mut(&mut event) else {
                        continue; // a destination kept it (the memory destination, a retry...)
                    };
                    if e.properties.capacity() > INLINE_PROPERTIES {
                        e.properties = Properties::new(); // give its heap storage back
                    } else {
                        e.properties.clear();
                    }
                    e.name = Text::from_static("");
                    e.category = EventCategory::System;
                    let mut ctx = std::mem::replace(&mut e.context, empty_context.clone());
                    if contexts.len() < CAP {
                        if let Some(c) = Arc::get_mut(&mut ctx) {
                            *c = Context::default();
                            contexts.push(ctx);
                        }
                    }
                    free.push(event);
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ctx: &Arc<Context>) -> Arc<Event> {
        let mut p = Properties::new();
        p.insert("model", "flux-dev");
        let mut e = Event::new(Text::from(String::from("generation.started")), p);
        e.context = ctx.clone();
        Arc::new(e)
    }

    #[test]
    fn a_delivered_event_is_emptied_and_reused_on_the_same_thread() {
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
        let ctx = Arc::new(Context::new());
        let e = event(&ctx);
        let kept = e.clone();
        give(vec![e]);
        let fresh = take();
        assert_ne!(Arc::as_ptr(&fresh), Arc::as_ptr(&kept));
        assert_eq!(kept.properties().len(), 1, "untouched");
    }

    #[test]
    fn the_free_list_is_bounded() {
        let ctx = Arc::new(Context::new());
        give((0..CAP + 50).map(|_| event(&ctx)).collect());
        let n = FREE.with(|f| f.borrow().len());
        assert!(n <= CAP, "{n} parked");
        assert_eq!(Arc::strong_count(&ctx), 1, "no context kept alive");
        FREE.with(|f| f.borrow_mut().clear());
    }
}
