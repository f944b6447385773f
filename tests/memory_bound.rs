//! Memory is bounded in bytes, not only in events: hostile-but-allowed events tracked into a
//! dead destination keep the process's live heap under `queue_max_bytes` plus a stated
//! overhead. (Issue #21, item 1.)
//!
//! Measured with a counting global allocator (live bytes: allocated minus freed), in this test
//! binary only, so nothing else runs in it. Print the figures with
//! `cargo test --all-features --test memory_bound -- --nocapture`.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::Scripted;
use tower_telemetry::{
    Properties, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig},
    limits::{DEFAULT_MAX_PROPERTIES, DEFAULT_MAX_STRING_LENGTH},
    track,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The bound the dead destination is given (smaller than the 64 MiB default, to keep the test
/// light on a shared machine; the mechanism is the same).
const MAX_BYTES: usize = 16 << 20;
/// What the process may hold besides the destination's events: the handle, its worker, the
/// runtime, the recycling lists, the allocator's view of this test's own bookkeeping.
const OVERHEAD: usize = 4 << 20;

/// A handle whose only destination never completes a delivery (the first batch hangs).
async fn dead() -> (Telemetry, Scripted) {
    let stuck = Scripted::gated();
    let t = Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("dead").with_delivery(
                    DeliveryConfig::default()
                        .with_flush_interval(Duration::ZERO)
                        .with_queue_max_bytes(MAX_BYTES),
                ),
            ),
        )
        .destination("dead", stuck.clone())
        .build()
        .unwrap();
    track!(&t => "user.first");
    stuck.wait_calls(1).await;
    (t, stuck)
}

/// Tracks `n` events made by `make` into a dead destination; asserts the live heap grew by
/// less than the byte bound plus the overhead, and that every event is accounted for.
/// `full`: whether the events are many enough to reach the bound (then some are dropped).
async fn stays_bounded(what: &str, n: u64, full: bool, make: impl Fn(&Telemetry)) {
    let (t, _stuck) = dead().await;
    let before = live();
    for _ in 0..n {
        make(&t);
    }
    let grown = live() - before;
    let d = t.stats().destination("dead").unwrap().clone();
    println!(
        "{what}: {n} events, live heap +{} KiB (bound {} KiB + {} KiB); held_bytes {} KiB, \
         enqueued {}, dropped_queue_full {}",
        grown / 1024,
        MAX_BYTES / 1024,
        OVERHEAD / 1024,
        d.held_bytes / 1024,
        d.enqueued,
        d.dropped_queue_full,
    );
    // Every event is accounted for: nothing settles while the destination is dead.
    assert_eq!(d.enqueued + d.dropped_queue_full, n + 1, "{what}");
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{what}"
    );
    assert_eq!(d.undelivered, d.enqueued, "{what}");
    assert_eq!(
        d.dropped_queue_full > 0,
        full,
        "{what}: the bytes bound was reached"
    );
    assert!(d.held_bytes <= MAX_BYTES, "{what}: held {}", d.held_bytes);
    assert!(
        grown < (MAX_BYTES + OVERHEAD) as isize,
        "{what}: the live heap grew by {grown} bytes, over {MAX_BYTES} + {OVERHEAD}"
    );
    let report = t.shutdown(Duration::from_millis(50)).await;
    assert!(report.timed_out, "{what}: the destination never completes");
}

/// One test, the scenarios one after the other: the allocator counts the whole process.
#[tokio::test]
async fn hostile_but_allowed_events_into_a_dead_destination_stay_within_the_byte_bound() {
    // Maximal strings: as many 8 KiB strings as fit in a 64 KiB event.
    let big = "x".repeat(DEFAULT_MAX_STRING_LENGTH);
    stays_bounded("maximal strings", 1_000, true, |t| {
        track!(t => "user.note",
            a = big.clone(), b = big.clone(), c = big.clone(), d = big.clone(),
            e = big.clone(), f = big.clone(), g = big.clone());
    })
    .await;

    // ~57 KB of JSON made of many tiny objects: 64 properties of 64 `{"a":{"b":0}}` each.
    let tiny = Value::Array(vec![json!({"a": {"b": 0}}); DEFAULT_MAX_PROPERTIES]);
    let serialized = serde_json::to_string(&tiny).unwrap().len() * DEFAULT_MAX_PROPERTIES;
    assert!(serialized < 60_000, "{serialized}");
    stays_bounded("~57 KB of tiny objects", 40, true, |t| {
        let mut p = Properties::with_capacity(DEFAULT_MAX_PROPERTIES);
        for i in 0..DEFAULT_MAX_PROPERTIES {
            p.insert_json(format!("p{i}"), tiny.clone());
        }
        t.track("user.tree", p);
    })
    .await;

    // A 1 000 000-element list, cut to 64 elements by the limits.
    let list = vec![7u64; 1_000_000];
    stays_bounded("a 1 000 000-element list", 4, false, |t| {
        track!(t => "user.list", list = &list);
    })
    .await;
}
