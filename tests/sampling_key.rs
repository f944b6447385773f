//! Sampling a client cannot steer (#21 item 5): request- and user-keyed sampling hashes the id
//! with a secret key, so ids chosen offline against the old unkeyed hash no longer decide.

use std::collections::BTreeSet;
use std::time::Duration;

use tower_telemetry::config::{Config, DestinationConfig, SampleKey, SamplingConfig};
use tower_telemetry::{Context, Telemetry, track};

/// The crate's old sampling hash (FNV-1a, then the splitmix64 finaliser): public knowledge, so
/// anyone could search ids offline.
fn old_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn threshold(rate: f64) -> u64 {
    (rate * u64::MAX as f64) as u64
}

/// `n` request ids the old hash kept (`keep`) or dropped at `rate`, found as an attacker would.
fn chosen_ids(rate: f64, keep: bool, n: usize) -> Vec<String> {
    let t = threshold(rate);
    (0u64..)
        .map(|i| format!("attacker-{i:08x}"))
        .filter(|id| (old_hash(id) < t) == keep)
        .take(n)
        .collect()
}

fn sampled(rate: f64, key: Option<&str>) -> Telemetry {
    let mut sampling = SamplingConfig::new(rate).with_key(SampleKey::Request);
    if let Some(k) = key {
        sampling = sampling.with_hash_key(k);
    }
    Telemetry::builder()
        .config(
            Config::default()
                .with_sampling(sampling)
                .with_destination(DestinationConfig::new("memory")),
        )
        .build()
        .unwrap()
}

/// The request ids whose event was kept; every event accounted for.
async fn kept(telemetry: &Telemetry, ids: &[String]) -> BTreeSet<String> {
    for id in ids {
        telemetry.scope_sync(Context::new().with_request_id(id.clone()), || {
            track!(telemetry => "page.viewed", step = 1);
        });
    }
    assert!(telemetry.flush(Duration::from_secs(10)).await);
    let stats = telemetry.stats();
    let d = stats.destination("memory").unwrap();
    assert_eq!(d.enqueued + d.sampled_out, ids.len() as u64, "{d:?}");
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{d:?}"
    );
    telemetry
        .memory("memory")
        .unwrap()
        .events()
        .iter()
        .map(|e| e.context().request_id().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn ids_chosen_against_the_old_hash_no_longer_decide() {
    // At 1 %: 300 ids the old hash always kept (the issue kept all 300).
    let ids = chosen_ids(0.01, true, 300);
    let n = kept(&sampled(0.01, None), &ids).await.len();
    // Expected 3; all 300 has probability 1e-600, more than 20 about 1e-10.
    assert!(n <= 20, "kept {n} of 300 chosen ids");

    // At 99 %: ids the old hash always dropped (the issue kept 0) are mostly kept.
    let ids = chosen_ids(0.99, false, 300);
    let n = kept(&sampled(0.99, None), &ids).await.len();
    assert!(n >= 280, "kept {n} of 300 chosen ids");
}

#[tokio::test]
async fn handles_agree_with_a_configured_key_and_differ_without() {
    let ids: Vec<String> = (0..200).map(|i| format!("req-{i}")).collect();
    let secret = "a fleet-wide secret of some length";
    let a = kept(&sampled(0.5, Some(secret)), &ids).await;
    let b = kept(&sampled(0.5, Some(secret)), &ids).await;
    assert_eq!(a, b, "one key, one decision per id");
    assert!((60..=140).contains(&a.len()), "kept {}", a.len());
    let other = kept(&sampled(0.5, Some("another secret")), &ids).await;
    assert_ne!(a, other);

    // Without one, the handles of a process agree (a reload keeps its decisions)...
    let c = kept(&sampled(0.5, None), &ids).await;
    let d = kept(&sampled(0.5, None), &ids).await;
    assert_eq!(c, d);
}

const CHILD: &str = "TOWER_TELEMETRY_SAMPLING_CHILD";

/// ...and another process decides differently: its key is drawn at random (the chance of 200
/// equal decisions is 2^-200).
#[tokio::test]
async fn another_process_decides_differently_without_a_configured_key() {
    let ids: Vec<String> = (0..200).map(|i| format!("req-{i}")).collect();
    if std::env::var_os(CHILD).is_some() {
        let kept = kept(&sampled(0.5, None), &ids).await;
        println!("KEPT {}", kept.into_iter().collect::<Vec<_>>().join(","));
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "another_process_decides_differently_without_a_configured_key",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("KEPT ").map(|(_, kept)| kept))
        .unwrap();
    let child: BTreeSet<String> = line
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let ours = kept(&sampled(0.5, None), &ids).await;
    assert!(
        (60..=140).contains(&child.len()),
        "child kept {}",
        child.len()
    );
    assert_ne!(ours, child);
}

#[test]
fn the_key_comes_from_yaml_and_is_never_shown() {
    let yaml = "telemetry:\n  sampling:\n    rate: 0.5\n    hash_key: s3cr3t-sampling-key\n";
    let config = Config::from_yaml_str(yaml).unwrap();
    assert!(config.sampling().has_hash_key());
    assert!(!format!("{config:?}").contains("s3cr3t"));
}
