//! `track!` that goes nowhere (not routed, sampled out, disabled) allocates nothing.
//!
//! The one place with `unsafe`: a counting global allocator, in this test binary only.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tower_telemetry::{
    Config, Context, DestinationConfig, SampleKey, SamplingConfig, Telemetry, track,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn not_routed_sampled_out_and_disabled_do_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let routed = Telemetry::builder()
        .config(
            Config::default().destination(
                DestinationConfig::new("m")
                    .kind("memory")
                    .events(["user.*"]),
            ),
        )
        .build()
        .unwrap();
    let sampled = Telemetry::builder()
        .config(
            Config::default()
                .sampling(SamplingConfig::rate(0.0).key(SampleKey::Request))
                .destination(DestinationConfig::new("m").kind("memory")),
        )
        .build()
        .unwrap();
    let disabled = Telemetry::disabled();
    let model = "flux-dev";

    routed.scope_sync(Context::new().with_request_id("r1"), || {
        // Warm the call-site caches first.
        for _ in 0..2 {
            track!(&routed => "system.boot", model = model, steps = 4);
        }
        let n = allocations(|| {
            for _ in 0..1000 {
                track!(&routed => "system.boot", model = model, steps = 4);
                track!("system.boot", model = model, steps = 4);
            }
        });
        assert_eq!(n, 0, "not routed");
        // The control: a routed event does allocate (so the counter works).
        assert!(allocations(|| track!(&routed => "user.signup", model = model)) > 0);
    });
    sampled.scope_sync(Context::new().with_request_id("r2"), || {
        track!(&sampled => "user.signup", model = model);
        let n = allocations(|| {
            for _ in 0..1000 {
                track!(&sampled => "user.signup", model = model, steps = 4);
            }
        });
        assert_eq!(n, 0, "sampled out");
    });
    let n = allocations(|| {
        for _ in 0..1000 {
            track!(&disabled => "user.signup", model = model);
        }
    });
    assert_eq!(n, 0, "disabled");
}
