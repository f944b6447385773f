//! Configuration cost is linear in its size: a hostile file of many keys is rejected about as
//! fast as a file of the same size whose keys are spread over small mappings.
//!
//! Bounded work, not a tight timing: the one-mapping file must take at most ten times as long
//! as the spread-out file of the same size (quadratic duplicate detection made it hundreds of
//! times slower: 36 000 keys took seconds).

use std::time::{Duration, Instant};

use tower_telemetry::config::{Config, ConfigErrorKind};

const KEYS: usize = 36_000;

/// `KEYS` distinct keys in one destination's mapping, then a duplicate of the first.
fn one_mapping() -> String {
    let mut yaml = String::from("telemetry:\n  destinations:\n    bulk:\n      type: memory\n");
    for i in 0..KEYS {
        yaml.push_str(&format!("      key_{i:06}: v{i:06}\n"));
    }
    yaml.push_str("      key_000000: again\n");
    yaml
}

/// The same number of keys, 36 to a destination, and the same duplicate in the last one.
fn spread() -> String {
    let mut yaml = String::from("telemetry:\n  destinations:\n");
    for i in 0..KEYS {
        if i % 36 == 0 {
            yaml.push_str(&format!("    d{:04}:\n      type: memory\n", i / 36));
        }
        yaml.push_str(&format!("      key_{i:06}: v{i:06}\n"));
    }
    yaml.push_str(&format!("      key_{:06}: again\n", KEYS - 1));
    yaml
}

/// The quickest of three runs; each must reject the file for its one duplicate key.
fn time_rejection(yaml: &str) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let errors = Config::from_yaml_str_with_env(yaml, |_| None).unwrap_err();
            let elapsed = start.elapsed();
            let [e] = errors.errors() else {
                panic!("expected one error, got {}", errors.errors().len());
            };
            assert_eq!(e.kind(), ConfigErrorKind::Duplicate, "{e}");
            assert_eq!(e.line(), Some(yaml.lines().count()), "{e}");
            elapsed
        })
        .min()
        .unwrap()
}

#[test]
fn many_keys_in_one_mapping_cost_what_the_same_keys_spread_out_cost() {
    let (one, spread) = (one_mapping(), spread());
    assert!(one.len() > 900_000 && one.len() <= 1 << 20, "{}", one.len());
    let baseline = time_rejection(&spread);
    let hostile = time_rejection(&one);
    println!("36 000 keys: one mapping {hostile:?}, spread over 1 000 mappings {baseline:?}");
    assert!(
        hostile <= baseline * 10,
        "one mapping of {KEYS} keys took {hostile:?}, more than 10 × the {baseline:?} of the same keys spread out: not linear"
    );
}
