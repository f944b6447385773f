//! Load harness: what `TelemetryLayer` + `track!` cost a real axum server, next to bare axum and
//! tower-http's layers, in one run.
//!
//! ```sh
//! cargo bench --bench loadbench                                # 4 rounds, 6 pairs each, 5 s per run
//! cargo bench --bench loadbench -- --duration 3 --rounds 3 --variants a,d
//! cargo bench --bench loadbench -- --rounds 0 --side-rounds 6 --variants a,c,d
//! ```
//!
//! A `[[bench]]` with `harness = false`: its own `main`, which ignores the `--bench` flag cargo
//! passes. `cargo bench --bench loadbench --no-run` prints the binary's path (for `--base-exe`).
//!
//! Each variant runs in a child process of this binary pinned to core 0 (`taskset`), a tokio
//! multi-thread runtime with one worker; the load generator (a built-in HTTP/1.1 keep-alive
//! client, `--connections` connections, each sending its next request when the previous
//! answer is read) runs here, pinned to core 1.
//!
//! The machine this was written on drifts by ±20 % between minutes, so every variant's run is
//! paired with a run of bare axum (a) just before it, and its ratio is taken within the pair:
//! drift slower than a pair's ~11 s cancels out. Each round runs every pair once, in a rotated
//! order. The report gives medians over rounds: requests/s, p50 and p99 latency, the ratio to
//! bare axum (with its range over rounds) and the server's CPU time per request (from
//! `/proc/<pid>/stat`). It writes
//! `target/bench-report/loadbench.md` and `target/bench-report/loadbench.svg`, and checks that
//! no event was lost in d–g and j–m (delivered + counted drops + undelivered at shutdown = emitted).
//! The counting destination (d, j–m) also reports the batches it was sent: the side-by-side log
//! lines show them (`batches`), so delivered ÷ batches is the mean batch size at full speed.
//!
//! A second measurement follows (`--side-rounds`, default as many as `--rounds`): every variant
//! runs *side by side* with bare axum, both servers pinned to core 0 at the same time and each
//! driven by its own connections. The scheduler gives each half of the core, so the throughput
//! ratio is the ratio of CPU cost per request, and whatever the machine does in those seconds
//! hits both. On the development machine a server beside an identical one measures 0.96–1.03, where
//! runs one after the other move by 0.2–0.4 between rounds. The report gives core 0's idle
//! share too: the ratio means CPU cost only while it is near zero.
//!
//! The same mode compares two builds (A/B): copy the old build's binary aside, then
//! `cargo bench --bench loadbench -- --variants a,d --rounds 0 --side-rounds 10 --base-exe OLD
//! --base d` runs the old d beside the new d ten times. The old binary may be a build of this
//! harness from before it moved here (`target/release/examples/loadbench`): the child-process
//! protocol (`--serve VARIANT [UMAMI_URL]`, `PORT n` on stdout, `stop` on stdin) is unchanged.
//!
//! Variants: a) bare axum; b) + tower-http `TraceLayer` (span and response at INFO into a
//! `tracing-subscriber` fmt layer writing to a sink); c) + tower-http `SetRequestId` +
//! `PropagateRequestId`; d) + `TelemetryLayer` and one `track!` with 3 properties per request,
//! routed to a counting destination; e) as d, routed to the `logging` destination writing JSON
//! lines straight to a sink; f) as d, routed to the `umami` destination pointed at the Umami
//! contract test server (which runs in this process, sharing core 1 with the load generator:
//! reported, not judged); g) as d, routed to the `logging` destination's `tracing` output,
//! formatted by a `tracing-subscriber` fmt layer writing to a sink (what e was before JSON
//! lines); h) `TelemetryLayer` alone, with a handler that tracks nothing (the layer's share of
//! d).
//!
//! Two more, run only when named in `--variants`: i) c's two layers in one `ServiceBuilder`
//! (one `Router::layer` call, so axum wraps each route once instead of twice); j) d with
//! `TelemetryLayer` wrapped around the whole `Router` instead of each route (no per-request
//! boxing by axum, but no matched route in the context); k) d with the counting destination's
//! `flush_interval` at 0, so its worker never lingers for a fuller batch: each wake-up delivers
//! what one `recv_many` took (issue #27's experiment); l) d with the handle built before the
//! server's runtime, so its worker runs on the crate's own thread (pinned to the same core as
//! the server: every wake-up of the worker crosses threads, the case batching is for); m) d with
//! batches of 16 instead of 100 (what holding a batch's events and contexts until delivery
//! costs in cache).

// The Umami contract test server (variant f) and the HTTP harness it serves through.
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use support::umami_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_telemetry::{
    Event, Telemetry,
    config::{Config, DestinationConfig},
    destination::{BoxFuture, DeliveryError, Destination, LoggingDestination},
    layer::TelemetryLayer,
    track,
};

const VARIANTS: &[(&str, &str)] = &[
    ("a", "bare axum"),
    ("b", "tower-http TraceLayer (INFO, fmt to sink)"),
    ("c", "tower-http SetRequestId + PropagateRequestId"),
    ("d", "TelemetryLayer + track! -> counting destination"),
    (
        "e",
        "TelemetryLayer + track! -> logging destination, JSON lines (sink)",
    ),
    (
        "f",
        "TelemetryLayer + track! -> umami (contract test server)",
    ),
    (
        "g",
        "TelemetryLayer + track! -> logging destination via tracing fmt (sink)",
    ),
    ("h", "TelemetryLayer alone (no event)"),
    (
        "i",
        "tower-http SetRequestId + PropagateRequestId in one ServiceBuilder",
    ),
    (
        "j",
        "as d, TelemetryLayer around the Router (no route captured)",
    ),
    ("k", "as d, the destination's flush_interval 0 (no linger)"),
    ("l", "as d, the worker on its own thread (same core)"),
    ("m", "as d, batches of 16 instead of 100"),
];

fn main() {
    // `cargo bench` appends `--bench`; it selects nothing here.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        serve(&args[2], args.get(3).cloned());
        return;
    }
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let duration = Duration::from_secs_f64(
        opt("--duration", "5")
            .parse()
            .expect("--duration in seconds"),
    );
    let rounds: usize = opt("--rounds", "4").parse().expect("--rounds");
    let side_rounds: usize = opt("--side-rounds", &rounds.to_string())
        .parse()
        .expect("--side-rounds");
    let connections: usize = opt("--connections", "64").parse().expect("--connections");
    let wanted = opt("--variants", "a,b,c,d,e,f,g,h");
    let variants: Vec<&str> = wanted.split(',').map(str::trim).collect();
    // For A/B runs of two builds: the side-by-side base taken from another binary or variant.
    let base_exe = opt("--base-exe", "");
    let base = opt("--base", "a");
    let base = Base {
        exe: (!base_exe.is_empty()).then(|| std::path::PathBuf::from(base_exe)),
        variant: base,
    };
    orchestrate(
        duration,
        (rounds, side_rounds),
        connections,
        &variants,
        &base,
    );
}

// ----- the server side (child process) ------------------------------------------------------

/// Counts and forgets: delivery as cheap as it gets.
#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl Destination for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        BATCHES.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Batches the counting destinations were sent (d, j–m): with `delivered`, the mean batch size
/// at full speed.
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// [`Count`] with batches of 16 (m): what a batch's working set costs (100 events and their
/// contexts outgrow the L1 cache before they are delivered; 16 do not).
#[derive(Clone, Default)]
struct CountSmall(Count);

impl Destination for CountSmall {
    fn name(&self) -> &str {
        "count"
    }
    fn preferred_batch_size(&self) -> usize {
        16
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.send(batch)
    }
}

/// [`Count`] with a `flush_interval` of 0: the worker delivers what it took at once (k).
#[derive(Clone, Default)]
struct CountNoLinger(Count);

impl Destination for CountNoLinger {
    fn name(&self) -> &str {
        "count"
    }
    fn delivery_defaults(&self) -> tower_telemetry::config::DeliveryConfig {
        tower_telemetry::config::DeliveryConfig::default().with_flush_interval(Duration::ZERO)
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.send(batch)
    }
}

static EMITTED: AtomicU64 = AtomicU64::new(0);

async fn ok() -> &'static str {
    "ok"
}

async fn tracked() -> &'static str {
    EMITTED.fetch_add(1, Ordering::Relaxed);
    track!(
        "generation.started",
        model = "flux-dev",
        steps = 4,
        credits_cost = 10
    );
    "ok"
}

fn serve(variant: &str, umami_url: Option<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // l: built before the runtime is entered, so the handle starts its worker on a thread of
    // its own.
    let own_thread = (variant == "l").then(|| {
        Telemetry::builder()
            .destination("sink", Count::default())
            .build()
            .expect("telemetry")
    });
    rt.block_on(async move {
        let mut telemetry = None;
        // j: the layer wraps the whole router instead of each route.
        let mut outer: Option<TelemetryLayer> = None;
        let app = match variant {
            "a" => Router::new().route("/", get(ok)),
            // The layer's own share of d: the same layer and handle, a handler that tracks
            // nothing.
            "h" => {
                let t = Telemetry::builder()
                    .destination("sink", Count::default())
                    .build()
                    .expect("telemetry");
                Router::new().route("/", get(ok)).layer(TelemetryLayer::new(t))
            }
            "b" => {
                let subscriber = tracing_subscriber::fmt()
                    .with_writer(std::io::sink)
                    .with_max_level(tracing::Level::INFO)
                    .finish();
                tracing::subscriber::set_global_default(subscriber).expect("subscriber");
                Router::new().route("/", get(ok)).layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO))
                        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
            }
            "c" => Router::new()
                .route("/", get(ok))
                .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
                .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                    tower_http::request_id::MakeRequestUuid,
                )),
            // c as axum's docs suggest for more than one layer: one `Router::layer` call, so
            // axum wraps (and boxes, per request) each route once instead of twice.
            "i" => Router::new().route("/", get(ok)).layer(
                tower::ServiceBuilder::new()
                    .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                        tower_http::request_id::MakeRequestUuid,
                    ))
                    .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id()),
            ),
            "d" | "e" | "f" | "g" | "j" | "k" | "l" | "m" => {
                let builder = Telemetry::builder();
                let builder = match variant {
                    "d" | "j" | "l" => builder.destination("sink", Count::default()),
                    "k" => builder.destination("sink", CountNoLinger::default()),
                    "m" => builder.destination("sink", CountSmall::default()),
                    "e" => builder.destination(
                        "logging",
                        LoggingDestination::default().with_writer(std::io::sink()),
                    ),
                    "g" => {
                        let subscriber = tracing_subscriber::fmt()
                            .with_writer(std::io::sink)
                            .with_max_level(tracing::Level::INFO)
                            .finish();
                        tracing::subscriber::set_global_default(subscriber).expect("subscriber");
                        builder.config(Config::default().with_destination(DestinationConfig::new("logging")))
                    }
                    _ => builder.config(
                        Config::default().with_destination(
                            DestinationConfig::new("umami")
                                .with_setting("url", umami_url.clone().expect("umami url"))
                                .with_setting("website_id", umami_server::WEBSITE_ID),
                        ),
                    ),
                };
                let t = match own_thread {
                    Some(t) => t,
                    None => builder.build().expect("telemetry"),
                };
                telemetry = Some(t.clone());
                if variant == "j" {
                    outer = Some(TelemetryLayer::new(t));
                    Router::new().route("/", get(tracked))
                } else {
                    Router::new().route("/", get(tracked)).layer(TelemetryLayer::new(t))
                }
            }
            other => panic!("unknown variant {other}"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("PORT {}", listener.local_addr().expect("addr").port());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The parent writes a line (or closes stdin) to stop us.
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = stop_tx.send(());
        });
        let stopped = async {
            let _ = stop_rx.await;
        };
        match outer {
            Some(layer) => {
                use tower::Layer as _;
                let svc = layer.layer(app);
                axum::serve(
                    listener,
                    axum::ServiceExt::<axum::extract::Request>::into_make_service(svc),
                )
                .with_graceful_shutdown(stopped)
                .await
                .expect("serve");
            }
            None => axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
                .expect("serve"),
        }
        match telemetry {
            Some(t) => {
                let r = t.shutdown(Duration::from_secs(60)).await;
                let s = &r.stats;
                let sum = |f: fn(&tower_telemetry::DestinationStats) -> u64| -> u64 {
                    s.destinations.iter().map(f).sum()
                };
                println!(
                    "EVENTS emitted={} delivered={} dropped={} failed={} discarded={} undelivered={} batches={}",
                    EMITTED.load(Ordering::Relaxed),
                    sum(|d| d.delivered),
                    sum(|d| d.dropped_queue_full),
                    sum(|d| d.failed),
                    sum(|d| d.discarded),
                    sum(|d| d.undelivered),
                    BATCHES.load(Ordering::Relaxed),
                );
            }
            None => println!("EVENTS none"),
        }
    });
}

// ----- the load generator (this process) ----------------------------------------------------

struct Round {
    variant: String,
    /// The requests/s of the run of bare axum just before this one (pairs), if any.
    base_rps: Option<f64>,
    requests: u64,
    errors: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
    events: Option<EventCounts>,
}

#[derive(Clone, Copy, Debug, Default)]
struct EventCounts {
    emitted: u64,
    delivered: u64,
    dropped: u64,
    failed: u64,
    discarded: u64,
    undelivered: u64,
    /// Batches a counting destination was sent (0 for the others, and from older builds).
    batches: u64,
}

impl EventCounts {
    fn lost(&self) -> i64 {
        self.emitted as i64
            - (self.delivered + self.dropped + self.failed + self.discarded + self.undelivered)
                as i64
    }
}

fn pin(pid: u32, core: u32) -> bool {
    Command::new("taskset")
        .args(["-a", "-cp", &core.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn orchestrate(
    duration: Duration,
    (rounds, side_rounds): (usize, usize),
    connections: usize,
    variants: &[&str],
    base: &Base,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let me = std::process::id();
    let pinned = pin(me, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let umami = variants
        .contains(&"f")
        .then(|| rt.block_on(umami_server::UmamiServer::start()));
    let exe = std::env::current_exe().expect("current exe");
    // Each variant other than bare axum is run right after a run of bare axum (when `a` is
    // among the variants), in an order rotated each round.
    let others: Vec<&str> = variants.iter().copied().filter(|v| *v != "a").collect();
    let paired = variants.contains(&"a");
    let schedule = |round: usize| -> Vec<&str> {
        let mut order = others.clone();
        if !order.is_empty() {
            let n = order.len();
            order.rotate_left(round % n);
        }
        if !paired {
            return order;
        }
        if order.is_empty() {
            return vec!["a"];
        }
        order.into_iter().flat_map(|v| ["a", v]).collect()
    };
    println!(
        "loadbench: {} round(s) x {} run(s) x {:?}{}, {connections} connections, server on core 0 / load on core 1 ({})",
        rounds,
        schedule(0).len(),
        duration,
        if paired {
            " (each variant paired with a run of bare axum just before it)"
        } else {
            ""
        },
        if pinned {
            "pinned with taskset"
        } else {
            "NOT pinned: taskset unavailable"
        },
    );
    let mut results: Vec<Round> = Vec::new();
    for round in 0..rounds {
        let mut base_rps = None;
        for v in schedule(round) {
            let v = &v;
            let mut child = spawn_server(&exe, v, umami.as_ref().map(|u| u.url()));
            let port = read_port(&mut child);
            let pid = child.id();
            pin(pid, 0);
            // Warm up, then measure.
            rt.block_on(load(port, connections, Duration::from_millis(500)));
            let cpu0 = cpu_seconds(pid);
            let (requests, errors, secs, mut lat) = rt.block_on(load(port, connections, duration));
            let cpu = cpu_seconds(pid) - cpu0;
            let events = stop_server(&mut child);
            lat.sort_unstable();
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0) as f64
            };
            let rps = requests as f64 / secs;
            let r = Round {
                variant: v.to_string(),
                base_rps: if *v == "a" { None } else { base_rps },
                requests,
                errors,
                secs,
                p50_us: pct(0.50),
                p99_us: pct(0.99),
                cpu_us_per_req: cpu * 1e6 / requests.max(1) as f64,
                events,
            };
            println!(
                "round {} {v}: {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  cpu {:>5.2} µs/req  errors {}{}",
                round + 1,
                r.requests as f64 / r.secs,
                r.p50_us,
                r.p99_us,
                r.cpu_us_per_req,
                r.errors,
                r.events
                    .map(|e| format!("  events {e:?}"))
                    .unwrap_or_default(),
            );
            if *v == "a" {
                base_rps = Some(rps);
            }
            results.push(r);
        }
    }
    let side = if paired && !others.is_empty() && side_rounds > 0 {
        side_by_side(
            &rt,
            (base.exe.as_deref().unwrap_or(&exe), &base.variant),
            &exe,
            &others,
            umami.as_ref().map(|u| u.url()),
            (duration, side_rounds, connections),
        )
    } else {
        Vec::new()
    };
    report(
        &results,
        &side,
        variants,
        (duration, rounds, side_rounds, connections, cores),
        pinned,
    );
}

/// What the variants run beside: bare axum of this binary unless `--base` / `--base-exe` say
/// otherwise (an A/B of two builds: `--base-exe OLD --base d --variants a,d --rounds 0`).
struct Base {
    exe: Option<std::path::PathBuf>,
    variant: String,
}

/// One side-by-side run: bare axum and one variant on core 0 at the same time, each driven by
/// its own connections from this process.
struct SideBySide {
    variant: String,
    /// Requests/s of bare axum and of the variant, in the same seconds.
    rps: (f64, f64),
    /// Server CPU µs per request of bare axum and of the variant.
    cpu_us_per_req: (f64, f64),
    /// Share of those seconds that core 0 was idle (0 when the servers were the bottleneck).
    idle: f64,
    events: Option<EventCounts>,
}

/// Idle and total jiffies of one core, from `/proc/stat`.
fn core_times(core: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{core} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are idle.
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (idle, f.iter().take(8).sum())
}

/// The second measurement: every variant runs next to bare axum, both servers pinned to core 0
/// at once, so the scheduler gives each half of the core and any drift of the machine hits both
/// in the same seconds. The throughput ratio is then the ratio of CPU cost per request, with
/// far less noise than runs one after the other (a server beside an identical one: 0.96–1.03).
fn side_by_side(
    rt: &tokio::runtime::Runtime,
    (base_exe, base_variant): (&std::path::Path, &str),
    exe: &std::path::Path,
    others: &[&str],
    umami: Option<String>,
    (duration, rounds, connections): (Duration, usize, usize),
) -> Vec<SideBySide> {
    println!(
        "\nside by side: {rounds} round(s) x {} run(s) x {duration:?}, bare axum and the variant on core 0 at once, {connections} connections each",
        others.len()
    );
    let mut out = Vec::new();
    for round in 0..rounds {
        let mut order = others.to_vec();
        let n = order.len();
        order.rotate_left(round % n);
        for v in order {
            let mut base = spawn_server(base_exe, base_variant, umami.clone());
            let mut child = spawn_server(exe, v, umami.clone());
            let (base_port, port) = (read_port(&mut base), read_port(&mut child));
            let (base_pid, pid) = (base.id(), child.id());
            pin(base_pid, 0);
            pin(pid, 0);
            let both = |d: Duration| async move {
                tokio::join!(load(base_port, connections, d), load(port, connections, d))
            };
            rt.block_on(both(Duration::from_millis(500)));
            let (cpu_a0, cpu_v0, core0) = (cpu_seconds(base_pid), cpu_seconds(pid), core_times(0));
            let ((ra, _, secs_a, _), (rv, errors, secs_v, _)) = rt.block_on(both(duration));
            let (cpu_a, cpu_v, core1) = (
                cpu_seconds(base_pid) - cpu_a0,
                cpu_seconds(pid) - cpu_v0,
                core_times(0),
            );
            stop_server(&mut base);
            let events = stop_server(&mut child);
            let total = core1.1.saturating_sub(core0.1).max(1) as f64;
            let r = SideBySide {
                variant: v.to_string(),
                rps: (ra as f64 / secs_a, rv as f64 / secs_v),
                cpu_us_per_req: (
                    cpu_a * 1e6 / ra.max(1) as f64,
                    cpu_v * 1e6 / rv.max(1) as f64,
                ),
                idle: core1.0.saturating_sub(core0.0) as f64 / total,
                events,
            };
            println!(
                "side by side {} {base_variant}|{v}: {:>8.0} | {:>8.0} req/s  ratio {:.3}  cpu {:>5.2} | {:>5.2} µs/req  core 0 idle {:.1} %  errors {errors}{}",
                round + 1,
                r.rps.0,
                r.rps.1,
                r.rps.1 / r.rps.0,
                r.cpu_us_per_req.0,
                r.cpu_us_per_req.1,
                r.idle * 100.0,
                r.events
                    .map(|e| format!("  events {e:?}"))
                    .unwrap_or_default(),
            );
            out.push(r);
        }
    }
    out
}

fn spawn_server(exe: &std::path::Path, variant: &str, umami: Option<String>) -> Child {
    let mut cmd = Command::new(exe);
    cmd.arg("--serve").arg(variant);
    if let Some(u) = umami {
        cmd.arg(u);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server")
}

fn read_port(child: &mut Child) -> u16 {
    let out = child.stdout.as_mut().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("port line");
    line.trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .expect("PORT n")
}

fn stop_server(child: &mut Child) -> Option<EventCounts> {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "stop");
    }
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let _ = child.wait();
    let line = out.lines().find(|l| l.starts_with("EVENTS "))?;
    if line == "EVENTS none" {
        return None;
    }
    let mut e = EventCounts::default();
    for kv in line["EVENTS ".len()..].split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "emitted" => e.emitted = v,
            "delivered" => e.delivered = v,
            "dropped" => e.dropped = v,
            "failed" => e.failed = v,
            "discarded" => e.discarded = v,
            "undelivered" => e.undelivered = v,
            "batches" => e.batches = v,
            _ => {}
        }
    }
    Some(e)
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) loadbench\r\n\r\n";

/// `connections` keep-alive connections for `duration`: (requests, errors, seconds, latencies µs).
async fn load(port: u16, connections: usize, duration: Duration) -> (u64, u64, f64, Vec<u32>) {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut stream = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => s,
                Err(_) => return (lat, 1),
            };
            let _ = stream.set_nodelay(true);
            let mut buf = vec![0u8; 4096];
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if stream.write_all(REQUEST).await.is_err()
                    || !read_response(&mut stream, &mut buf).await
                {
                    errors += 1;
                    break;
                }
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (all.len() as u64, errors, secs, all)
}

/// Reads one HTTP/1.1 response with a Content-Length body; false on any error.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut [u8]) -> bool {
    let mut len = 0;
    loop {
        let n = match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        len += n;
        let data = &buf[..len];
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]);
            if !head.starts_with("HTTP/1.1 200") {
                return false;
            }
            let body = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if len >= end + 4 + body {
                return true;
            }
        }
        if len == buf.len() {
            return false;
        }
    }
}

/// The median (the mean of the middle two of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn report(
    results: &[Round],
    side: &[SideBySide],
    variants: &[&str],
    (duration, rounds, side_rounds, connections, cores): (Duration, usize, usize, usize, usize),
    pinned: bool,
) {
    let by = |v: &str, f: &dyn Fn(&Round) -> f64| {
        median(results.iter().filter(|r| r.variant == v).map(f).collect())
    };
    // The ratio of each run to the run of bare axum paired with it; bare axum's own is 1.
    let ratios = |v: &str| -> Vec<f64> {
        results
            .iter()
            .filter(|r| r.variant == v)
            .filter_map(|r| {
                if v == "a" {
                    return Some(1.0);
                }
                r.base_rps
                    .filter(|b| *b > 0.0)
                    .map(|b| r.requests as f64 / r.secs / b)
            })
            .collect()
    };
    let mut md = String::new();
    // With `--rounds 0` (side by side only) there is no table of runs one after the other.
    let sequential = !results.is_empty();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Machine: {} cores; server pinned to core 0, load generator to core 1 ({}); tokio multi-thread runtime with 1 worker on each side; {rounds} interleaved rounds of {:?}; {connections} keep-alive connections; built-in HTTP/1.1 load generator. Each variant's run follows a run of bare axum (a), and its ratio is taken within that pair. Medians over rounds; the ratio's range over rounds in brackets.\n",
        cores,
        if pinned { "taskset" } else { "not pinned" },
        duration,
    );
    table.push_str("| variant | req/s | ratio to (a) [range] | p50 µs | p99 µs | server CPU µs/req | events: emitted / delivered / dropped / undelivered / lost |\n");
    table.push_str("|---|---:|---:|---:|---:|---:|---|\n");
    let mut bars: Vec<(String, f64, Option<f64>)> = Vec::new();
    let mut all_kept = true;
    for v in variants {
        let label = VARIANTS.iter().find(|(k, _)| k == v).map_or(*v, |(_, l)| l);
        let rps = by(v, &|r| r.requests as f64 / r.secs);
        let rs = ratios(v);
        let ratio = median(rs.clone());
        let (lo, hi) = rs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
            (lo.min(*r), hi.max(*r))
        });
        let range = if rs.len() > 1 {
            format!(" [{lo:.2}–{hi:.2}]")
        } else {
            String::new()
        };
        let events: Vec<EventCounts> = results
            .iter()
            .filter(|r| r.variant == *v)
            .filter_map(|r| r.events)
            .collect();
        let ev = if events.is_empty() {
            "–".to_owned()
        } else {
            let sum = events
                .iter()
                .fold(EventCounts::default(), |a, e| EventCounts {
                    emitted: a.emitted + e.emitted,
                    delivered: a.delivered + e.delivered,
                    dropped: a.dropped + e.dropped,
                    failed: a.failed + e.failed,
                    discarded: a.discarded + e.discarded,
                    undelivered: a.undelivered + e.undelivered,
                    batches: a.batches + e.batches,
                });
            if events.iter().any(|e| e.lost() != 0) {
                all_kept = false;
            }
            format!(
                "{} / {} / {} / {} / {}",
                sum.emitted,
                sum.delivered,
                sum.dropped,
                sum.undelivered,
                events.iter().map(EventCounts::lost).sum::<i64>()
            )
        };
        let _ = writeln!(
            table,
            "| {v}) {label} | {rps:.0} | {ratio:.3}{range} | {:.0} | {:.0} | {:.2} | {ev} |",
            by(v, &|r| r.p50_us),
            by(v, &|r| r.p99_us),
            by(v, &|r| r.cpu_us_per_req),
        );
        bars.push((format!("{v}) {label}"), ratio, side_ratio(side, v)));
    }
    if sequential {
        md.push_str(&table);
    }
    if !side.is_empty() {
        let _ = writeln!(
            md,
            "\n**Side by side** ({side_rounds} rounds of {duration:?}): bare axum and the variant pinned to core 0 at the same time, each driven by its own {connections} connections, so both get half the core and every drift of the machine hits both in the same seconds; the throughput ratio is then the ratio of CPU cost per request. Medians over rounds; ranges in brackets.\n"
        );
        md.push_str("| variant | req/s beside bare axum | bare axum's req/s | ratio to (a) [range] | server CPU µs/req: variant / bare axum | core 0 idle |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|\n");
        for v in variants.iter().filter(|v| **v != "a") {
            let runs: Vec<&SideBySide> = side.iter().filter(|r| r.variant == *v).collect();
            if runs.is_empty() {
                continue;
            }
            let label = VARIANTS.iter().find(|(k, _)| k == v).map_or(*v, |(_, l)| l);
            let med = |f: &dyn Fn(&SideBySide) -> f64| median(runs.iter().map(|r| f(r)).collect());
            let rs: Vec<f64> = runs.iter().map(|r| r.rps.1 / r.rps.0).collect();
            let (lo, hi) = rs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
                (lo.min(*r), hi.max(*r))
            });
            let _ = writeln!(
                md,
                "| {v}) {label} | {:.0} | {:.0} | {:.3} [{lo:.2}–{hi:.2}] | {:.2} / {:.2} | {:.1} % |",
                med(&|r| r.rps.1),
                med(&|r| r.rps.0),
                median(rs.clone()),
                med(&|r| r.cpu_us_per_req.1),
                med(&|r| r.cpu_us_per_req.0),
                med(&|r| r.idle * 100.0),
            );
            if runs.iter().filter_map(|r| r.events).any(|e| e.lost() != 0) {
                all_kept = false;
            }
        }
    }
    let _ = writeln!(
        md,
        "\nNo event lost in the variants that track (d–g, j–m), in either measurement (delivered + dropped + failed + discarded + undelivered = emitted): {}",
        if all_kept { "yes" } else { "NO" }
    );
    let dir = std::path::Path::new("target/bench-report");
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(dir.join("loadbench.md"), &md);
    let _ = std::fs::write(dir.join("loadbench.svg"), svg(&bars));
    println!("\n{md}");
    println!("wrote target/bench-report/loadbench.md and target/bench-report/loadbench.svg");
    if !all_kept {
        std::process::exit(1);
    }
}

/// The median side-by-side ratio of `v`, if it ran side by side.
fn side_ratio(side: &[SideBySide], v: &str) -> Option<f64> {
    let rs: Vec<f64> = side
        .iter()
        .filter(|r| r.variant == v)
        .map(|r| r.rps.1 / r.rps.0)
        .collect();
    (!rs.is_empty()).then(|| median(rs))
}

/// A horizontal bar chart of the ratios to bare axum: runs one after the other, and side by
/// side (a second, lighter bar) where measured.
fn svg(bars: &[(String, f64, Option<f64>)]) -> String {
    let (w, left, top, bar) = (1000.0, 530.0, 56.0, 22.0);
    let row = |b: &(String, f64, Option<f64>)| {
        if b.2.is_some() {
            2.0 * bar + 12.0
        } else {
            bar + 12.0
        }
    };
    let h = top + bars.iter().map(row).sum::<f64>() + 40.0;
    let max = bars
        .iter()
        .map(|b| b.1.max(b.2.unwrap_or(0.0)))
        .fold(1.0, f64::max);
    let scale = (w - left - 60.0) / max;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"24\" font-size=\"16\">Throughput relative to bare axum (higher is better)</text>\n<rect x=\"10\" y=\"34\" width=\"12\" height=\"10\" fill=\"#2b7bb9\"/><text x=\"28\" y=\"44\">runs one after the other (paired)</text>\n<rect x=\"280\" y=\"34\" width=\"12\" height=\"10\" fill=\"#8cc0e6\"/><text x=\"298\" y=\"44\">side by side on one core</text>\n"
    );
    let mut y = top;
    for b in bars {
        let (label, ratio, side) = b;
        let ours = label.starts_with(['d', 'e', 'f', 'g']);
        let (solid, light) = if ours {
            ("#2b7bb9", "#8cc0e6")
        } else {
            ("#6b7785", "#c3cad2")
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 16.0,
            label
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
        );
        for (i, (value, color)) in [(Some(*ratio), solid), (*side, light)]
            .into_iter()
            .enumerate()
        {
            let Some(value) = value else { continue };
            let by = y + i as f64 * bar;
            let _ = write!(
                s,
                "<rect x=\"{left}\" y=\"{by}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{}\">{value:.3}</text>\n",
                value * scale,
                bar - 4.0,
                left + value * scale + 6.0,
                by + 14.0,
            );
        }
        y += row(b);
    }
    let x1 = left + scale;
    let _ = write!(
        s,
        "<line x1=\"{x1:.1}\" y1=\"{}\" x2=\"{x1:.1}\" y2=\"{}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\n</svg>\n",
        top - 6.0,
        h - 30.0
    );
    s
}
