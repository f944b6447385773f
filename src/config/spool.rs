//! A destination's durable spool: where, how large, how often it is synced (feature `spool`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default most bytes of records a spool keeps (1 GiB).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

/// Default time between two syncs of a spool under [`SpoolSync::Interval`] (1 s).
pub const DEFAULT_SPOOL_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// When a spool's writes are forced to the disk (`fsync`).
///
/// Every write reaches the operating system before the worker goes on, so a crash of the
/// process loses nothing the spool took, whatever the mode. What the mode decides is what a
/// power loss (or a crash of the operating system) may take: see the README's "Surviving
/// crashes and restarts".
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::config::SpoolSync;
///
/// assert_eq!(SpoolSync::default(), SpoolSync::Interval(Duration::from_secs(1)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolSync {
    /// Every write is synced before the worker goes on: a power loss loses nothing the spool
    /// took. The slowest (one `fsync` per batch taken, and one per batch settled).
    Always,
    /// Synced at most this often (and this long after the last write at the latest): a power
    /// loss may lose the writes of the last interval. The default, every second.
    Interval(Duration),
    /// Never synced by the crate: the operating system writes the pages back when it likes
    /// (Linux: within ≈ 30 s).
    Never,
}

impl Default for SpoolSync {
    fn default() -> Self {
        SpoolSync::Interval(DEFAULT_SPOOL_SYNC_INTERVAL)
    }
}

/// A destination's durable spool: the events its worker took from the memory queue, kept on
/// disk until the destination's verdict, so they survive a crash, a restart and an outage
/// longer than the memory queue holds (see [`DestinationConfig::with_spool`]).
///
/// `path` is a folder, made if missing, used by one process at a time (a second process
/// gets an error when its handle is built).
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::config::{DestinationConfig, SpoolConfig, SpoolSync};
///
/// let umami = DestinationConfig::new("umami").with_spool(
///     SpoolConfig::new("/var/lib/app/spool/umami")
///         .with_max_bytes(256 << 20)
///         .with_sync(SpoolSync::Interval(Duration::from_millis(500))),
/// );
/// assert_eq!(umami.spool().unwrap().max_bytes(), 256 << 20);
/// ```
///
/// In YAML, per destination:
///
/// ```yaml
/// spool:
///   path: /var/lib/app/spool/umami   # a folder; relative to the working directory
///   max_bytes: 256MiB                # default 1GiB; B, KB, KiB, MB, MiB, GB, GiB
///   sync: interval                   # always | interval | never
///   sync_interval: 500ms             # default 1s (with `sync: interval`)
/// ```
///
/// or `spool: /var/lib/app/spool/umami` for the defaults.
///
/// [`DestinationConfig::with_spool`]: crate::config::DestinationConfig::with_spool
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    pub(crate) path: PathBuf,
    pub(crate) max_bytes: u64,
    pub(crate) sync: SpoolSync,
}

impl SpoolConfig {
    /// A spool in folder `path`, with the default size bound and sync.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            path: path.into(),
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            sync: SpoolSync::default(),
        }
    }

    /// The most bytes of records the spool keeps (each event's JSON and a 20-byte frame);
    /// beyond it, the destination's [`Overflow`](crate::config::Overflow) policy applies.
    /// The store's file is larger than its records: see the README. Defaults to 1 GiB
    /// ([`DEFAULT_SPOOL_MAX_BYTES`]); at least 64 KiB.
    pub fn with_max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n.max(MIN_SPOOL_MAX_BYTES);
        self
    }

    /// When writes are synced. Defaults to [`SpoolSync::Interval`] of 1 s.
    pub fn with_sync(mut self, sync: SpoolSync) -> Self {
        self.sync = sync;
        self
    }

    /// The spool's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The most bytes of records it keeps.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// When writes are synced.
    pub fn sync(&self) -> SpoolSync {
        self.sync
    }
}

/// The smallest `max_bytes` (64 KiB): a few batches.
pub(crate) const MIN_SPOOL_MAX_BYTES: u64 = 64 << 10;
