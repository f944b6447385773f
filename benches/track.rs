//! The cost of `track!` on the request path.
//!
//! `cargo bench --bench track`. Budgets (issue #2, this 2-core machine): routed ≤ 250 ns,
//! not routed / sampled out ≤ 40 ns without allocating.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_telemetry::{
    Context, Event, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, SampleKey, SamplingConfig},
    destination::{BoxFuture, DeliveryError, Destination},
    track,
};

/// Counts and forgets: delivery as cheap as it gets, so the bench measures `track!`.
#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl Destination for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

fn handle(rt: &tokio::runtime::Runtime, sampling: Option<SamplingConfig>) -> Telemetry {
    let _guard = rt.enter();
    let mut config = Config::default().with_destination(
        DestinationConfig::new("count")
            .with_events(["generation.*"])
            .with_delivery(
                DeliveryConfig::default()
                    .with_queue_capacity(1 << 20)
                    .with_flush_interval(Duration::from_millis(1)),
            ),
    );
    if let Some(s) = sampling {
        config = config.with_sampling(s);
    }
    Telemetry::builder()
        .config(config)
        .destination("count", Count::default())
        .build()
        .unwrap()
}

/// Times `iters` calls of `f` in runs of one batch (100, the default batch size), letting the
/// worker drain each run untimed with `drain`: under load the worker delivers a batch as soon
/// as it is full, and the delivered events come back to this thread for reuse.
fn in_batches(iters: u64, mut f: impl FnMut(), mut drain: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(100);
        let start = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        total += start.elapsed();
        drain();
        left -= n;
    }
    total
}

fn request() -> Context {
    Context::new()
        .with_user_id("user_123")
        .with_request_id("0190f7c4-8d3a-7c1e-9b6a-3f2d1c0b9a87")
        .with_path("/api/generate")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let t = handle(&rt, None);
    t.scope_sync(request(), || {
        c.bench_function("track/routed_3_props_in_scope", |b| {
            b.iter(|| track!(&t => "generation.started", model = "flux-dev", steps = 4, credits_cost = black_box(10)))
        });
        c.bench_function("track/not_routed", |b| {
            b.iter(|| track!(&t => "system.boot", model = "flux-dev", steps = 4, credits_cost = black_box(10)))
        });
    });
    let stats = t.stats();
    eprintln!(
        "routed bench: delivered {} dropped {}",
        stats.delivered(),
        stats.dropped_queue_full()
    );

    // The worker on the same thread as the tracking code, as in a server whose runtime has one
    // worker per core (see `in_batches`).
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t_local = handle(&local, None);
    t_local.scope_sync(request(), || {
        c.bench_function("track/routed_3_props_in_scope_same_thread_worker", |b| {
            b.iter_custom(|iters| {
                in_batches(
                    iters,
                    || track!(&t_local => "generation.started", model = "flux-dev", steps = 4, credits_cost = black_box(10)),
                    || assert!(local.block_on(t_local.flush(Duration::from_secs(10)))),
                )
            })
        });
    });
    // Trace correlation (feature `opentelemetry`): the same, inside an OpenTelemetry span.
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _current = opentelemetry::Context::current()
            .with_remote_span_context(span)
            .attach();
        t_local.scope_sync(request(), || {
            c.bench_function("track/routed_3_props_in_an_opentelemetry_span_same_thread_worker", |b| {
                b.iter_custom(|iters| {
                    in_batches(
                        iters,
                        || track!(&t_local => "generation.started", model = "flux-dev", steps = 4, credits_cost = black_box(10)),
                        || assert!(local.block_on(t_local.flush(Duration::from_secs(10)))),
                    )
                })
            });
        });
    }
    let s = t_local.stats();
    eprintln!(
        "same-thread bench: delivered {} dropped {}",
        s.delivered(),
        s.dropped_queue_full()
    );

    let sampled = handle(
        &rt,
        Some(SamplingConfig::new(0.0).with_key(SampleKey::Request)),
    );
    sampled.scope_sync(request(), || {
        c.bench_function("track/sampled_out", |b| {
            b.iter(|| track!(&sampled => "generation.started", model = "flux-dev", steps = 4, credits_cost = black_box(10)))
        });
    });
}

/// The layer alone: one request through `TelemetryService` around a service that answers at
/// once, next to the same service bare (the difference is the layer's cost per request).
fn layer(c: &mut Criterion) {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context as TaskCx, Poll, Waker};
    use tower::{Layer, Service};

    /// A request with a host and a short user agent.
    fn small() -> http::Request<()> {
        http::Request::get("/api/generate?model=flux")
            .header("host", "api.example.com")
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench")
            .body(())
            .unwrap()
    }
    /// The headers a browser sends with a fetch (Chrome's, cookie and all).
    fn browser() -> http::Request<()> {
        http::Request::get("/api/generate?model=flux")
            .header("host", "api.example.com")
            .header("connection", "keep-alive")
            .header("sec-ch-ua", r#""Chromium";v="126", "Not.A/Brand";v="24""#)
            .header("sec-ch-ua-mobile", "?0")
            .header(
                "user-agent",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
            )
            .header("sec-ch-ua-platform", r#""Windows""#)
            .header("accept", "*/*")
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", "cors")
            .header("sec-fetch-dest", "empty")
            .header("referer", "https://api.example.com/app")
            .header("accept-encoding", "gzip, deflate, br, zstd")
            .header("accept-language", "en-US,en;q=0.9")
            .header("cookie", "session=0123456789abcdef; theme=dark")
            .body(())
            .unwrap()
    }
    /// One request through `svc`, built first (the building is timed too).
    fn run<S>(svc: &mut S, request: fn() -> http::Request<()>) -> http::Response<()>
    where
        S: Service<http::Request<()>, Response = http::Response<()>, Error = Infallible>,
    {
        call(svc, request())
    }
    fn call<S>(svc: &mut S, req: http::Request<()>) -> http::Response<()>
    where
        S: Service<http::Request<()>, Response = http::Response<()>, Error = Infallible>,
    {
        let mut fut = pin!(svc.call(req));
        match fut.as_mut().poll(&mut TaskCx::from_waker(Waker::noop())) {
            Poll::Ready(Ok(res)) => res,
            _ => unreachable!("the inner service answers at once"),
        }
    }
    let ok = tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let tracked = tower::service_fn(|_req: http::Request<()>| async {
        track!(
            "generation.started",
            model = "flux-dev",
            steps = 4,
            credits_cost = 10
        );
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = handle(&rt, None);
    let _guard = rt.enter();
    let mut bare = ok;
    c.bench_function("layer/bare_service", |b| {
        b.iter(|| black_box(run(&mut bare, small)))
    });
    let mut layered = tower_telemetry::layer::TelemetryLayer::new(t.clone()).layer(ok);
    // `iters` requests timed, then whatever they queued delivered (not timed).
    let mut timed = |iters: u64, request: fn() -> http::Request<()>| {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            black_box(run(&mut layered, request));
        }
        let took = start.elapsed();
        rt.block_on(t.flush(Duration::from_secs(10)));
        took
    };
    c.bench_function("layer/telemetry_layer", |b| {
        b.iter_custom(|iters| timed(iters, small))
    });
    c.bench_function("layer/telemetry_layer_browser_request", |b| {
        b.iter_custom(|iters| timed(iters, browser))
    });
    c.bench_function("layer/bare_service_browser_request", |b| {
        b.iter(|| black_box(run(&mut bare, browser)))
    });
    let mut layered_track = tower_telemetry::layer::TelemetryLayer::new(t.clone()).layer(tracked);
    c.bench_function("layer/telemetry_layer_plus_track", |b| {
        b.iter_custom(|iters| {
            in_batches(
                iters,
                || drop(black_box(run(&mut layered_track, small))),
                || assert!(rt.block_on(t.flush(Duration::from_secs(10)))),
            )
        })
    });
}

/// Routing decisions for names built at run time (the thread-local cache), and extracting a
/// `Tracker` in a handler.
fn routing(c: &mut Criterion) {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context as TaskCx, Poll, Waker};
    use tower_telemetry::{Text, Tracker};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = handle(&rt, None);
    // Not routed anywhere: these benches time the routing decision alone.
    let hot: Vec<Text> = (0..64)
        .map(|i| Text::from(format!("system.hot{i}")))
        .collect();
    let mut i = 0;
    c.bench_function("route/cache_hit", |b| {
        b.iter(|| {
            i = (i + 1) % hot.len();
            track!(&t => hot[i].clone(), n = 1)
        })
    });
    // More distinct names than the cache holds: every lookup misses and computes the route.
    let cold: Vec<Text> = (0..50_000)
        .map(|i| Text::from(format!("system.cold{i}")))
        .collect();
    let mut j = 0;
    c.bench_function("route/cache_miss", |b| {
        b.iter(|| {
            j = (j + 1) % cold.len();
            track!(&t => cold[j].clone(), n = 1)
        })
    });

    let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    t.scope_sync(request(), || {
        c.bench_function("extract/tracker", |b| {
            b.iter(|| {
                let mut fut = pin!(
                    <Tracker as axum::extract::FromRequestParts<()>>::from_request_parts(
                        &mut parts,
                        &()
                    )
                );
                match fut.as_mut().poll(&mut TaskCx::from_waker(Waker::noop())) {
                    Poll::Ready(Ok(tracker)) => black_box(tracker),
                    _ => unreachable!("extraction is immediate"),
                }
            })
        });
    });
}

/// The dispatcher's sustained rate: one producer, the worker on another thread, a counting
/// destination; each iteration tracks 100 000 events and waits until all are delivered.
fn dispatch(c: &mut Criterion) {
    const N: u64 = 100_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let t = handle(&rt, None);
    let mut group = c.benchmark_group("dispatch");
    group.throughput(criterion::Throughput::Elements(N));
    group.sample_size(20);
    group.bench_function("one_producer_to_counting_destination", |b| {
        b.iter(|| {
            let before = t.stats();
            for i in 0..N {
                track!(&t => "generation.started", i = i);
            }
            assert!(rt.block_on(t.flush(Duration::from_secs(30))));
            let after = t.stats();
            let settled = after.delivered() - before.delivered() + after.dropped_queue_full()
                - before.dropped_queue_full();
            assert_eq!(settled, N, "every event delivered or counted as dropped");
        })
    });
    group.finish();
    let s = t.stats();
    eprintln!(
        "dispatch bench: delivered {} dropped {}",
        s.delivered(),
        s.dropped_queue_full()
    );
}

/// The `tracing` bridge: what a `tracing` event costs with the bridge's layer in the
/// subscriber, next to a layer that takes every event (standing in for a log writer), for an
/// event that does not opt in and for one that does (tracked, delivered by a same-thread
/// worker as in `track/routed_3_props_in_scope_same_thread_worker`).
#[cfg(feature = "tracing-bridge")]
fn bridge(c: &mut Criterion) {
    use tower_telemetry::bridge::TracingBridge;
    use tracing_subscriber::prelude::*;

    /// Takes every event and counts it: a log writer without the writing.
    struct Every(AtomicU64);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Every {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = handle(&local, None);
    let without = tracing_subscriber::registry().with(Every(AtomicU64::new(0)));
    tracing::subscriber::with_default(without, || {
        c.bench_function("bridge/without_bridge_ordinary_event", |b| {
            b.iter(|| tracing::info!(model = "flux-dev", steps = black_box(4), "generated"))
        });
    });
    // The floor of any per-layer filter: a second layer whose filter refuses everything.
    let floor = tracing_subscriber::registry()
        .with(Every(AtomicU64::new(0)))
        .with(
            Every(AtomicU64::new(0)).with_filter(tracing_subscriber::filter::filter_fn(|_| false)),
        );
    tracing::subscriber::with_default(floor, || {
        c.bench_function("bridge/ignored_by_a_refusing_filtered_layer", |b| {
            b.iter(|| tracing::info!(model = "flux-dev", steps = black_box(4), "generated"))
        });
    });
    let with = tracing_subscriber::registry()
        .with(Every(AtomicU64::new(0)))
        .with(TracingBridge::new(t.clone()).into_layer());
    tracing::subscriber::with_default(with, || {
        c.bench_function("bridge/ignored_event", |b| {
            b.iter(|| tracing::info!(model = "flux-dev", steps = black_box(4), "generated"))
        });
        t.scope_sync(request(), || {
            c.bench_function("bridge/opted_in_event_same_thread_worker", |b| {
                b.iter_custom(|iters| {
                    in_batches(
                        iters,
                        || {
                            tracing::info!(
                                telemetry.event = "generation.started",
                                model = "flux-dev",
                                steps = black_box(4)
                            )
                        },
                        || assert!(local.block_on(t.flush(Duration::from_secs(10)))),
                    )
                })
            });
        });
    });
    let s = t.stats();
    eprintln!(
        "bridge bench: delivered {} dropped {}",
        s.delivered(),
        s.dropped_queue_full()
    );
}

#[cfg(not(feature = "tracing-bridge"))]
fn bridge(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench, routing, layer, dispatch, bridge
}
criterion_main!(benches);
