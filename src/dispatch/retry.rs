//! Retry timing: full-jitter exponential backoff, with a server's Retry-After as a floor.

use std::time::Duration;

use crate::config::{MAX_RETRY_AFTER, RetryConfig};

/// The wait before attempt `attempt + 1` (`attempt` ≥ 1 failed attempts so far).
///
/// Full jitter (uniform in `[0, ceiling]`, the ceiling doubling from `initial_backoff` up to
/// `max_backoff`) spreads the retries of many clients; a server-given `retry_after` is honoured
/// as a floor, capped at [`MAX_RETRY_AFTER`].
pub(crate) fn backoff(
    attempt: u32,
    policy: &RetryConfig,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = attempt.saturating_sub(1).min(31);
    let ceiling = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    match retry_after {
        Some(floor) => jittered.max(floor.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryConfig::default();
        for _ in 0..200 {
            assert!(backoff(1, &p, None) <= Duration::from_millis(200));
            assert!(backoff(3, &p, None) <= Duration::from_millis(800));
            assert!(backoff(30, &p, None) <= Duration::from_secs(30));
        }
        // Jitter actually varies.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| backoff(5, &p, None)).collect();
        assert!(samples.len() > 40);
    }

    #[test]
    fn retry_after_is_a_capped_floor() {
        let p = RetryConfig::default();
        for _ in 0..100 {
            assert!(backoff(1, &p, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
            assert_eq!(
                backoff(1, &p, Some(Duration::from_secs(3600))),
                Duration::from_secs(60)
            );
        }
    }
}
