//! How events are queued and delivered to one destination.

use std::time::Duration;

/// Default capacity of a destination's queue, in events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default most bytes a destination holds in memory (64 MiB): see
/// [`DeliveryConfig::with_queue_max_bytes`].
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default largest batch handed to a destination.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Default longest wait for a batch to fill before it is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of batches a destination may have in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 1;
/// Default timeout of one delivery attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of delivery attempts, the first included: no count limit (`u32::MAX`), so
/// the time budget ([`DEFAULT_MAX_ELAPSED`]) decides when a failing batch is given up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = u32::MAX;
/// Default time budget for delivering a batch: retryable failures are retried for up to
/// 10 minutes from the batch's first attempt.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(600);
/// Default first backoff ceiling (full jitter: the wait is uniform in `[0, ceiling]`).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Default largest backoff ceiling.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest server-given `Retry-After` that is honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Retry policy for a destination: a time budget, an optional attempt count, and full-jitter
/// exponential backoff.
///
/// A batch that fails retryably is sent again after a wait (uniform in `[0, ceiling]`, the
/// ceiling doubling from `initial_backoff` up to `max_backoff`; a server's `Retry-After` is a
/// floor) until it is taken or **either** limit runs out: `max_elapsed` (the next attempt
/// would start later than that after the first one began) or `max_attempts`. By default only
/// the time budget applies (10 minutes; no attempt count).
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::config::RetryConfig;
///
/// // Keep retrying for up to an hour, however many attempts that takes.
/// let patient = RetryConfig::default().with_max_elapsed(Duration::from_secs(3600));
/// // At most 5 attempts, and never longer than 10 s.
/// let brief = RetryConfig::default()
///     .with_max_attempts(5)
///     .with_max_elapsed(Duration::from_secs(10));
/// # let _ = (patient, brief);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) max_elapsed: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_elapsed: DEFAULT_MAX_ELAPSED,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryConfig {
    /// Attempts in all, the first included (1 = no retry). Defaults to no limit: the time
    /// budget ([`with_max_elapsed`](Self::with_max_elapsed)) rules. Whichever runs out first ends the
    /// retries.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// How long a batch is retried, from the start of its first attempt: no attempt starts
    /// later than this. Defaults to 10 minutes ([`DEFAULT_MAX_ELAPSED`]); zero means no retry.
    pub fn with_max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// The first backoff ceiling. Defaults to 200 ms.
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// The largest backoff ceiling. Defaults to 30 s.
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long a batch is retried, from the start of its first attempt.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// The first backoff ceiling.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The largest backoff ceiling.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }
}

/// What a destination's full queue does with one more event.
///
/// ```
/// use tower_telemetry::config::{DeliveryConfig, Overflow};
///
/// // Keep the most recent events through a long outage.
/// let delivery = DeliveryConfig::default().with_overflow(Overflow::DropOldest);
/// # let _ = delivery;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// The new event is dropped (counted in `dropped_queue_full`). The default.
    #[default]
    DropNewest,
    /// The new event is queued and the oldest queued one is dropped (counted in
    /// `dropped_oldest`). Not the events of a batch being sent or retried: they stay, and
    /// take their places in the capacity until they settle. The destination's worker drops them, off the tracking path; should it be
    /// unable to run (a destination blocking its thread), new events are dropped as under
    /// `DropNewest` once twice the capacity is queued, so memory stays bounded.
    DropOldest,
}

/// How events are queued and delivered to one destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeliveryConfig {
    pub(crate) queue_capacity: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) overflow: Overflow,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) concurrency: usize,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            overflow: Overflow::DropNewest,
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryConfig::default(),
        }
    }
}

impl DeliveryConfig {
    /// Events the destination holds before events are dropped (and counted, as
    /// [`with_overflow`](Self::with_overflow) says): those waiting in its queue plus those its
    /// worker took and has not settled (the batch it fills, batches being sent or waiting for
    /// a retry). Defaults to 10 000.
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Bytes the destination holds in memory before events are dropped, next to
    /// [`with_queue_capacity`](Self::with_queue_capacity) and counted over the same events (queued,
    /// in the batch being filled, in delivery, waiting for a retry). An event's size is what it
    /// holds in memory, a cheap over-estimate computed once when it is built (its strings,
    /// properties, JSON values and context, by capacity), not its serialized size. A full
    /// destination drops as [`with_overflow`](Self::with_overflow) says, counted in
    /// `dropped_queue_full` (or `dropped_oldest`). Defaults to 64 MiB
    /// ([`DEFAULT_QUEUE_MAX_BYTES`]).
    ///
    /// ```
    /// use tower_telemetry::config::DeliveryConfig;
    ///
    /// // At most 16 MiB of events wait for this destination, however many that is.
    /// let delivery = DeliveryConfig::default().with_queue_max_bytes(16 << 20);
    /// assert_eq!(delivery.queue_max_bytes(), 16 << 20);
    /// ```
    pub fn with_queue_max_bytes(mut self, n: usize) -> Self {
        self.queue_max_bytes = n.max(1);
        self
    }

    /// Which event a full queue drops. Defaults to [`Overflow::DropNewest`].
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The largest batch. Defaults to 100.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How long a partial batch waits for more events. Defaults to 1 s.
    pub fn with_flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Batches in flight at once. Defaults to 1.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Timeout of one delivery attempt. Defaults to 10 s.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The retry policy. Defaults to [`RetryConfig::default`].
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Events the queue holds before new ones are dropped.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Bytes the destination holds in memory before events are dropped.
    pub fn queue_max_bytes(&self) -> usize {
        self.queue_max_bytes
    }

    /// Which event a full queue drops.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// The largest batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How long a partial batch waits for more events.
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval
    }

    /// Batches in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Timeout of one delivery attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn queue_max_bytes_is_read_from_yaml_and_reaches_the_destination() {
        let config = Config::from_yaml_str(
            "telemetry:\n  destinations:\n    small:\n      type: memory\n      queue_max_bytes: 1048576\n    default:\n      type: memory\n",
        )
        .unwrap();
        let small = config.destination("small").unwrap().delivery();
        assert_eq!(small.queue_max_bytes(), 1 << 20);
        let default = config.destination("default").unwrap().delivery();
        assert_eq!(default.queue_max_bytes(), DEFAULT_QUEUE_MAX_BYTES);
        let t = crate::Telemetry::builder().config(config).build().unwrap();
        let stats = t.stats();
        assert_eq!(stats.destination("small").unwrap().max_bytes, 1 << 20);
        assert_eq!(
            stats.destination("default").unwrap().max_bytes,
            DEFAULT_QUEUE_MAX_BYTES
        );

        let err = Config::from_yaml_str(
            "telemetry:\n  destinations:\n    m:\n      type: memory\n      queue_max_bytes: 0\n",
        )
        .unwrap_err();
        assert!(
            err.errors()
                .iter()
                .any(|e| e.path() == "telemetry.destinations.m.queue_max_bytes"),
            "{err:?}"
        );
    }
}
