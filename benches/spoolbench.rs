//! Throughput through a destination's durable spool (issue #24), into a destination that only
//! counts:
//!
//! ```sh
//! cargo bench --features spool --bench spoolbench                 # 400 000 events per run
//! cargo bench --features spool --bench spoolbench -- --events 1000000
//! ```
//!
//! Each run builds a handle whose one destination counts what it is sent, tracks `--events`
//! events (3 properties, ≈ 250 bytes of JSON each) from one thread as fast as the memory queue
//! takes them (it waits while the queue is full, so nothing is dropped), and measures from the
//! first `track` until every event is delivered and its record removed (`shutdown`). Runs:
//! without a spool; with one for each sync mode; and a drain, where the destination is down
//! while the events are tracked (they all go to the spool) and then comes up, timed from then
//! (records read back from the disk, not from memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower_telemetry::config::{Config, DeliveryConfig, DestinationConfig, SpoolConfig, SpoolSync};
use tower_telemetry::destination::{BoxFuture, DeliveryError, Destination};
use tower_telemetry::{Event, Telemetry, props};

#[derive(Clone, Default)]
struct Counting {
    sent: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Destination for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if self.down.load(Ordering::Relaxed) {
                return Err(DeliveryError::retryable("down"));
            }
            self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        })
    }
}

fn handle(counting: &Counting, spool: Option<SpoolConfig>) -> Telemetry {
    let mut d = DestinationConfig::new("counting").with_delivery(
        DeliveryConfig::default()
            .with_queue_capacity(10_000)
            .with_batch_size(100)
            .with_flush_interval(Duration::from_millis(5))
            .with_retry(
                tower_telemetry::config::RetryConfig::default()
                    .with_initial_backoff(Duration::from_millis(5))
                    .with_max_backoff(Duration::from_millis(20)),
            ),
    );
    if let Some(spool) = spool {
        d = d.with_spool(spool);
    }
    Telemetry::builder()
        .config(Config::default().with_destination(d))
        .destination("counting", counting.clone())
        .build()
        .expect("the handle builds")
}

/// Tracks `n` events, waiting whenever the memory queue is full.
async fn track(t: &Telemetry, n: u64) {
    let mut i = 0;
    while i < n {
        // `queued` leaves out what the worker holds (a chunk being written, up to 512): keep
        // to half the queue, so nothing is ever dropped.
        let room = {
            let s = &t.stats().destinations[0];
            (s.capacity / 2).saturating_sub(s.queued) as u64
        };
        if room == 0 {
            tokio::task::yield_now().await;
            continue;
        }
        for _ in 0..room.min(n - i).min(1000) {
            t.track(
                "user.action",
                props! { "seq" => i, "model" => "flux-dev", "page" => "/api/generate" },
            );
            i += 1;
        }
        tokio::task::yield_now().await;
    }
}

async fn run(label: &str, n: u64, spool: Option<SpoolSync>, drain: bool) {
    let dir =
        std::env::temp_dir().join(format!("tower-telemetry-spoolbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let counting = Counting::default();
    counting.down.store(drain, Ordering::Relaxed);
    let t = handle(
        &counting,
        spool.map(|sync| {
            SpoolConfig::new(&dir)
                .with_sync(sync)
                .with_max_bytes(4 << 30)
        }),
    );
    let started = Instant::now();
    track(&t, n).await;
    let mut timed_from = started;
    if drain {
        while t.stats().destinations[0].spooled < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let file = std::fs::metadata(dir.join("spool.redb")).map_or(0, |m| m.len());
        let held = t.stats().destinations[0].spool_bytes;
        println!(
            "  ({label}: {n} events spooled in {:.2} s; records {:.1} MB, file {:.1} MB)",
            started.elapsed().as_secs_f64(),
            held as f64 / 1e6,
            file as f64 / 1e6
        );
        timed_from = Instant::now();
        counting.down.store(false, Ordering::Relaxed);
    }
    let report = t.shutdown(Duration::from_secs(600)).await;
    let elapsed = timed_from.elapsed();
    if drain {
        let file = std::fs::metadata(dir.join("spool.redb")).map_or(0, |m| m.len());
        println!("  (drained: file {:.1} MB)", file as f64 / 1e6);
    }
    let s = report.destination("counting").unwrap();
    assert_eq!(counting.sent.load(Ordering::Relaxed), n, "{report}");
    assert_eq!(
        (s.delivered, s.dropped_queue_full, s.spool_bytes),
        (n, 0, 0),
        "{report}"
    );
    println!(
        "{label:<28} {n:>9} events in {:>6.2} s: {:>9.0} events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("spoolbench: {n} events per run, batches of 100, one counting destination");
        run("no spool", n, None, false).await;
        run(
            "spool, sync: interval (1 s)",
            n,
            Some(SpoolSync::default()),
            false,
        )
        .await;
        run("spool, sync: never", n, Some(SpoolSync::Never), false).await;
        run("spool, sync: always", n / 4, Some(SpoolSync::Always), false).await;
        run("drain after an outage", n, Some(SpoolSync::default()), true).await;
    });
}
