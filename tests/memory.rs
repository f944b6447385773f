//! Memory stays bounded when a destination is blocked: 1 000 000 events, a queue that never
//! drains. Its own test binary, so the peak RSS it prints (VmHWM) is this scenario's alone.

mod support;

use std::time::Duration;

use support::Scripted;
use tower_telemetry::{
    Telemetry,
    config::{Config, DEFAULT_QUEUE_CAPACITY, DeliveryConfig, DestinationConfig},
    track,
};

fn status(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_million_events_into_a_blocked_destination_stay_within_the_queue_capacity() {
    let stuck = Scripted::gated();
    let t = Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("stuck")
                    .with_delivery(DeliveryConfig::default().with_flush_interval(Duration::ZERO)),
            ),
        )
        .destination("stuck", stuck.clone())
        .build()
        .unwrap();
    track!(&t => "user.first");
    stuck.wait_calls(1).await;
    let rss_before = status("VmRSS:");
    const N: u64 = 1_000_000;
    let mut max_queued = 0;
    for i in 0..N {
        track!(&t => "generation.started", model = "flux-dev", steps = 4, i = i);
        if i % 10_000 == 0 {
            let q = t.stats().destination("stuck").unwrap().queued;
            max_queued = max_queued.max(q);
            assert!(q <= DEFAULT_QUEUE_CAPACITY, "queue at {q}");
        }
    }
    // The event in delivery takes one of the places: the destination holds the capacity in all.
    let d = t.stats().destination("stuck").unwrap().clone();
    assert_eq!(d.queued, DEFAULT_QUEUE_CAPACITY - 1);
    assert_eq!(max_queued, DEFAULT_QUEUE_CAPACITY - 1);
    assert_eq!(d.enqueued + d.dropped_queue_full, N + 1);
    assert_eq!(d.enqueued, DEFAULT_QUEUE_CAPACITY as u64);

    let peak_kib = status("VmHWM:");
    let now_kib = status("VmRSS:");
    println!(
        "1 000 000 events into a blocked destination (queue capacity {DEFAULT_QUEUE_CAPACITY}): \
         VmRSS before {rss_before:?} KiB, after {now_kib:?} KiB, peak (VmHWM) {peak_kib:?} KiB"
    );
    if let (Some(before), Some(peak)) = (rss_before, peak_kib) {
        // The queue holds 10 000 events of a few hundred bytes: a few MiB, never the million.
        assert!(
            peak - before < 64 * 1024,
            "peak grew by {} KiB",
            peak - before
        );
    }
    let report = t.shutdown(Duration::from_millis(100)).await;
    assert!(report.timed_out);
}
