//! `track!` that goes nowhere (not routed, sampled out, disabled) allocates nothing.
//!
//! The one place with `unsafe`: a counting global allocator, in this test binary only.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tower_telemetry::{
    Context, Telemetry,
    config::{Config, DestinationConfig, SampleKey, SamplingConfig},
    track,
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
            Config::default().with_destination(
                DestinationConfig::new("m")
                    .with_kind("memory")
                    .with_events(["user.*"]),
            ),
        )
        .build()
        .unwrap();
    let sampled = Telemetry::builder()
        .config(
            Config::default()
                .with_sampling(SamplingConfig::new(0.0).with_key(SampleKey::Request))
                .with_destination(DestinationConfig::new("m").with_kind("memory")),
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

/// What one request costs in allocations: through `TelemetryLayer`, with and without one routed
/// `track!` with 3 properties, next to the same service bare. Allocation counts are exact, so
/// this pins the per-request budget: a change that adds an allocation to the request path
/// fails here and has to justify itself.
#[test]
fn a_request_through_the_layer_allocates_within_its_budget() {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context as TaskCx, Poll, Waker};
    use tower::{Layer, Service};

    /// A request as hyper hands it over: the URI and header values are slices of one buffer
    /// (static bytes stand in for the connection's read buffer), and a browser's user agent,
    /// too long to be stored in place.
    fn request() -> http::Request<()> {
        let shared = |s: &'static str| {
            http::HeaderValue::from_maybe_shared(bytes::Bytes::from_static(s.as_bytes())).unwrap()
        };
        let uri =
            http::Uri::from_maybe_shared(bytes::Bytes::from_static(b"/api/generate?model=flux"))
                .unwrap();
        http::Request::get(uri)
            .header("host", shared("api.example.com"))
            .header(
                "user-agent",
                shared(
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                     (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
                ),
            )
            .body(())
            .unwrap()
    }
    /// A response as a handler returning text makes it: with a `content-type` header.
    fn response() -> http::Response<()> {
        let mut res = http::Response::new(());
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
    /// Allocations made while one request is handled (building the request not counted).
    fn per_request<S>(svc: &mut S) -> usize
    where
        S: Service<http::Request<()>, Response = http::Response<()>, Error = Infallible>,
    {
        let req = request();
        allocations(|| {
            let mut fut = pin!(svc.call(req));
            match fut.as_mut().poll(&mut TaskCx::from_waker(Waker::noop())) {
                Poll::Ready(Ok(res)) => drop(res),
                _ => unreachable!("the inner service answers at once"),
            }
        })
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // A destination that keeps nothing (the memory destination keeps every event).
    let telemetry = Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("m")
                    .with_kind("logging")
                    .with_events(["generation.*"]),
            ),
        )
        .build()
        .unwrap();
    let ok = tower::service_fn(|_req: http::Request<()>| async { Ok::<_, Infallible>(response()) });
    let tracked = tower::service_fn(|_req: http::Request<()>| async {
        track!(
            "generation.started",
            model = "flux-dev",
            steps = 4,
            credits_cost = 10
        );
        Ok::<_, Infallible>(response())
    });
    let mut bare = ok;
    let mut layered = tower_telemetry::layer::TelemetryLayer::new(telemetry.clone()).layer(ok);
    let mut layered_track =
        tower_telemetry::layer::TelemetryLayer::new(telemetry.clone()).layer(tracked);
    // Warm-up: call-site route caches, thread-local generators.
    for _ in 0..2 {
        per_request(&mut bare);
        per_request(&mut layered);
        per_request(&mut layered_track);
    }
    // Delivered events (and the contexts of finished requests) come back to this thread's free
    // lists (the worker runs on this thread, as with one runtime worker per core), so the next
    // request and `track!` reuse them.
    assert!(rt.block_on(telemetry.flush(std::time::Duration::from_secs(5))));
    // Sums over many requests in a row: request ids are written into blocks of memory shared
    // by 64 ids, so one request in 64 allocates a new block (two allocations) and the others
    // none for their id.
    const N: usize = 128;
    let bare = per_request(&mut bare);
    let total = |svc: &mut dyn FnMut() -> usize| (0..N).map(|_| svc()).sum::<usize>() - N * bare;
    // Requests that track nothing: each gives its context back when it ends (the free list
    // holds only the few the warm-up's events brought back).
    let layer = total(&mut || per_request(&mut layered));
    // Each request's event delivered before the next request (not counted), as the worker
    // would between requests, so that events and contexts come back to be reused.
    let with_track = total(&mut || {
        let n = per_request(&mut layered_track);
        assert!(rt.block_on(telemetry.flush(std::time::Duration::from_secs(5))));
        n
    });
    println!(
        "allocations in {N} requests beyond the bare service's: layer +{layer}, layer and track! +{with_track}"
    );
    // The layer: the scope, and the request ids' blocks (at most three blocks in 128 ids: the
    // id is shared by the request and response headers; the context's copy is stored in
    // place). The context is a recycled one (an earlier request's, given back when it ended, or
    // when its last event was delivered); the path and host are stored in place, and the user
    // agent, copied out of the request's buffer, is shared with the copy an earlier request
    // made on this thread.
    assert!(
        (N..=N + 6).contains(&layer),
        "the layer allocates {layer} times in {N} requests"
    );
    // track! with literal values: nothing. The event is a recycled one and the string literal
    // is stored as it is, not copied. (The runs may start at different places in an id block:
    // one block more or less.)
    assert!(
        with_track <= layer + 2,
        "track! allocates {} times in {N} requests",
        with_track.saturating_sub(layer)
    );
}

/// The logging destination's JSON lines go into one buffer reused from batch to batch: once
/// it has grown, formatting and writing a batch allocates nothing per event (the one
/// allocation is the boxed future `send` returns), escaped text included.
#[test]
fn json_lines_allocate_nothing_per_event() {
    use std::sync::Arc;
    use tower_telemetry::{
        Event,
        destination::{Destination, LoggingDestination},
        props,
    };

    let d = LoggingDestination::default().with_writer(std::io::sink());
    let batch: Vec<Arc<Event>> = (0..100)
        .map(|i| {
            let e = Event::new(
                "generation.started",
                props! { "model" => "flux-dev", "steps" => i, "note" => "bidi \u{202e} and \u{2028}" },
            )
            .with_context(
                Context::new()
                    .with_user_id("user-1")
                    .with_request_id("0199a7c2-5b1e-7d3f-9a40-1c2d3e4f5a6b")
                    .with_path("/api/generate"),
            );
            Arc::new(e)
        })
        .collect();
    let send = || {
        let mut fut = d.send(&batch);
        let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            fut.as_mut().poll(cx),
            std::task::Poll::Ready(Ok(()))
        ));
    };
    send();
    let n = allocations(send);
    assert!(n <= 1, "a batch of 100 allocates {n} times");
}

/// With the telemetry worker on another thread (a multi-thread runtime), delivered events come
/// back to the tracking thread in whole batches, so after a warm-up `track!` allocates no event
/// there (without that, every event is allocated here and freed on the worker's thread).
#[test]
fn events_delivered_on_another_thread_come_back_to_the_tracking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let telemetry = {
        let _guard = rt.enter(); // the worker runs on the runtime's thread, not this one
        Telemetry::builder()
            .config(
                Config::default().with_destination(
                    DestinationConfig::new("log")
                        .with_kind("logging")
                        .with_events(["generation.*"]),
                ),
            )
            .build()
            .unwrap()
    };
    let track_100 = || {
        telemetry.scope_sync(Context::new().with_request_id("r1"), || {
            for _ in 0..100 {
                track!(&telemetry => "generation.started", model = "flux-dev", steps = 4);
            }
        })
    };
    for _ in 0..3 {
        track_100();
        assert!(rt.block_on(telemetry.flush(std::time::Duration::from_secs(5))));
    }
    let n = allocations(track_100);
    println!("allocations on the tracking thread for 100 routed events: {n}");
    assert!(n < 10, "{n} allocations for 100 events");
}
