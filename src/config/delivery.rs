//! How events are queued and delivered to one destination.

use std::time::Duration;

/// Default capacity of a destination's queue, in events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default largest batch handed to a destination.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Default longest wait for a batch to fill before it is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of batches a destination may have in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 1;
/// Default timeout of one delivery attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of delivery attempts, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default first backoff ceiling (full jitter: the wait is uniform in `[0, ceiling]`).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Default largest backoff ceiling.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest server-given `Retry-After` that is honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Retry policy for a destination: attempts and full-jitter exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryConfig {
    /// Attempts in all, the first included (1 = no retry). Defaults to 5.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
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

    /// The first backoff ceiling.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The largest backoff ceiling.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }
}

/// How events are queued and delivered to one destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeliveryConfig {
    pub(crate) queue_capacity: usize,
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
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryConfig::default(),
        }
    }
}

impl DeliveryConfig {
    /// Events the queue holds before new ones are dropped (and counted). Defaults to 10 000.
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
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
