//! The [`Telemetry`] handle.
//!
//! - `builder`: [`TelemetryBuilder`] and the `from_*` constructors, through [`crate::pipeline`];
//! - `emit`: the tracking path (route, sample, build in place, policy, dispatch);
//! - `scope`: request scopes and the context operations;
//! - `lifecycle`: flush, shutdown, the drop monitor, the last handle's drop;
//! - `stats`: [`Stats`] and [`ShutdownReport`].
//!
//! This file: the handle, its shared state (built in one place, [`Telemetry::start`]) and the
//! global handle.

mod builder;
mod emit;
mod identity;
mod lifecycle;
mod prometheus;
mod scope;
mod stats;
mod trim;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

pub use builder::TelemetryBuilder;
pub(crate) use emit::object_properties;
pub use prometheus::PrometheusStats;
pub(crate) use scope::{Scope, call_in, current_scope, enter};
pub use scope::{WithContext, WithContextExt};
pub use stats::{ShutdownReport, Stats};

use crate::config::{Config, RequestsConfig};
use crate::context::Context;
use crate::destination::MemoryDestination;
use crate::diag::RateLimitedWarning;
use crate::dispatch::{DEFAULT_DROP_REPORT_INTERVAL, DROPPED_EVENT, Dispatcher, DropReport};
use crate::glob::Glob;
use crate::limits::Policy;
use crate::pipeline::{self, Compiled};
use crate::redact::{RedactConfig, Redactor};
use crate::routing::{DEST_MASK, Explanation, Router};

/// The telemetry handle: cheap to clone, safe to share, usable from any thread.
///
/// Build one from a YAML file ([`from_yaml_file`](Self::from_yaml_file)), a string, the
/// environment ([`from_env`](Self::from_env)) or in code ([`builder`](Self::builder)); track
/// events with [`track!`](macro@crate::track), [`Telemetry::track`] or the free functions; shut it
/// down with [`shutdown`](Self::shutdown) so queued events are delivered.
///
/// Dropping the last clone without `shutdown` closes the queues: the workers deliver what is
/// queued at once, without waiting for fuller batches, as long as their runtime keeps running,
/// and a warning gives the count of events not yet delivered at that moment.
///
/// Tracking never blocks, never awaits and never panics: an event is routed and sampled by name
/// first (cached), built only if some destination keeps it, and offered to each destination's
/// bounded queue; a full queue drops it and counts the drop.
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::{Telemetry, props};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::from_yaml_str(r#"
/// telemetry:
///   destinations:
///     memory:
///       events: [user.*]
/// "#).unwrap();
///
/// telemetry.track("user.signup", props! { "plan" => "pro" });
/// telemetry.track("system.boot", props! {});      // routed nowhere: costs almost nothing
///
/// let report = telemetry.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.delivered(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    id: u32,
    enabled: bool,
    debug: bool,
    base: RwLock<Arc<Context>>,
    /// Whether `base` has any field: requests and events read the lock only then (the lock
    /// and the base's reference count are shared by every thread).
    base_set: AtomicBool,
    router: Router,
    dispatch: Dispatcher,
    closed: AtomicBool,
    rejected: AtomicU64,
    after_shutdown: AtomicU64,
    rejections: RateLimitedWarning,
    requests: RequestsConfig,
    request_excludes: Vec<Glob>,
    memories: HashMap<String, MemoryDestination>,
    shutdown_started: AtomicBool,
    /// A shutdown hit its deadline and abandoned what was left.
    aborted: AtomicBool,
    policy: Policy,
    truncated: AtomicU64,
    oversized: AtomicU64,
    redacted: AtomicU64,
    consent_denied: AtomicU64,
    /// Properties merged into every event (the event's own win); `None` when there are none.
    super_properties: Option<Box<crate::event::Properties>>,
    limit_warnings: RateLimitedWarning,
    on_drop: Option<OnDrop>,
    /// The destinations whose globs match [`DROPPED_EVENT`].
    report_route: u32,
    /// Stops the drop monitor (when the last handle goes, or at shutdown).
    monitor_stop: Arc<Notify>,
    /// The inspector's tap (shared with the lanes): see [`crate::inspector`].
    #[cfg(feature = "inspector")]
    tap: Arc<crate::inspector::tap::Tap>,
}

/// The `on_drop` callback.
type OnDrop = Arc<dyn Fn(&DropReport) + Send + Sync>;

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.enabled)
            .field(
                "destinations",
                &self.inner.dispatch.names().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);
static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
static DISABLED: OnceLock<Telemetry> = OnceLock::new();
static NO_GLOBAL_WARNED: AtomicBool = AtomicBool::new(false);

impl Telemetry {
    /// The one place a handle's state is made: from a checked configuration and its compiled
    /// form. Starts the workers and the drop monitor (a configuration that is not `enabled`
    /// gets no lanes, so no tasks).
    fn start(
        config: Config,
        compiled: Compiled,
        base: Context,
        on_drop: Option<OnDrop>,
        drop_report_interval: Duration,
    ) -> Telemetry {
        let Compiled {
            router,
            lanes,
            memories,
        } = compiled;
        let lanes = if config.enabled { lanes } else { Vec::new() };
        #[cfg(feature = "inspector")]
        let tap = Arc::new(crate::inspector::tap::Tap::new(
            lanes.iter().map(|l| l.name.clone()).collect(),
            crate::inspector::masked_config(&config),
        ));
        #[cfg(feature = "inspector")]
        let (dispatch, workers) =
            Dispatcher::tapped(lanes, drop_report_interval, Some(tap.clone()));
        #[cfg(not(feature = "inspector"))]
        let (dispatch, workers) = Dispatcher::new(lanes, drop_report_interval);
        let drop_signal = dispatch.drop_signal();
        let report_route = router.compute(DROPPED_EVENT) & DEST_MASK;
        let request_excludes = config
            .requests
            .exclude
            .iter()
            .map(|g| Glob::compile(g))
            .collect();
        let monitor_stop = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            enabled: config.enabled,
            debug: config.debug,
            base_set: AtomicBool::new(!base.is_empty()),
            base: RwLock::new(Arc::new(base)),
            router,
            dispatch,
            closed: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            after_shutdown: AtomicU64::new(0),
            rejections: RateLimitedWarning::default(),
            requests: config.requests,
            request_excludes,
            memories,
            shutdown_started: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            policy: Policy::new(Redactor::new(&config.redact), config.limits),
            truncated: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            redacted: AtomicU64::new(0),
            consent_denied: AtomicU64::new(0),
            super_properties: (!config.properties.is_empty())
                .then(|| Box::new(config.properties.clone())),
            limit_warnings: RateLimitedWarning::default(),
            on_drop,
            report_route,
            monitor_stop: monitor_stop.clone(),
            #[cfg(feature = "inspector")]
            tap,
        });
        let monitor = lifecycle::drop_monitor(Arc::downgrade(&inner), monitor_stop, drop_signal);
        workers.spawn(Some(Box::pin(monitor)));
        Telemetry { inner }
    }

    /// A handle that tracks nothing (what free functions use when nothing is installed).
    pub fn disabled() -> Telemetry {
        let mut config = Config::default().with_enabled(false);
        config.redact = RedactConfig::default().with_enabled(false);
        let mut errors = Vec::new();
        let compiled = pipeline::compile(&config, Default::default(), &mut errors);
        debug_assert!(errors.is_empty(), "{errors:?}");
        Telemetry::start(
            config,
            compiled,
            Context::new(),
            None,
            DEFAULT_DROP_REPORT_INTERVAL,
        )
    }

    /// Makes this handle the process-wide default used by [`track!`](macro@crate::track), the free
    /// functions and [`Tracker`](crate::Tracker) outside a request. The first call wins: it
    /// returns `false` (and logs a warning) if a handle was already installed.
    pub fn install_global(&self) -> bool {
        let installed = GLOBAL.set(self.clone()).is_ok();
        if !installed {
            tracing::warn!(target: "tower_telemetry", "a global telemetry handle is already installed; keeping the first");
        }
        installed
    }

    /// The global handle, installed with [`install_global`](Self::install_global); a disabled
    /// one, with one warning, if none was installed.
    pub fn global() -> &'static Telemetry {
        match GLOBAL.get() {
            Some(t) => t,
            None => no_global(),
        }
    }

    /// The installed global handle, if any.
    pub fn try_global() -> Option<&'static Telemetry> {
        GLOBAL.get()
    }

    /// Whether tracking is on.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Which destinations an event named `name` would reach, and why.
    ///
    /// ```
    /// # use tower_telemetry::Telemetry;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let t = Telemetry::from_yaml_str("telemetry:\n  destinations:\n    memory:\n      events: [user.*]\n").unwrap();
    /// let why = t.explain("user.signup");
    /// assert_eq!(why.routed_to(), ["memory"]);
    /// println!("{why}"); // user.signup:\n  -> memory: matches `user.*`
    /// # }
    /// ```
    pub fn explain(&self, name: &str) -> Explanation {
        self.inner.router.explain(name)
    }

    /// The [`MemoryDestination`] registered as `name`, if that destination is one.
    pub fn memory(&self, name: &str) -> Option<MemoryDestination> {
        self.inner.memories.get(name).cloned()
    }

    /// The automatic request events settings (used by the layer).
    pub(crate) fn requests(&self) -> &RequestsConfig {
        &self.inner.requests
    }

    /// The inspector's tap.
    #[cfg(feature = "inspector")]
    pub(crate) fn tap(&self) -> &Arc<crate::inspector::tap::Tap> {
        &self.inner.tap
    }

    /// A reference to this handle that does not keep it alive.
    #[cfg(feature = "inspector")]
    pub(crate) fn downgrade(&self) -> WeakTelemetry {
        WeakTelemetry(Arc::downgrade(&self.inner))
    }

    /// Whether request events are suppressed for `path`.
    pub(crate) fn request_excluded(&self, path: &str) -> bool {
        self.inner.request_excludes.iter().any(|g| g.matches(path))
    }
}

/// A [`Telemetry`] handle that does not keep it alive (the inspector's hub task holds one).
#[cfg(feature = "inspector")]
#[derive(Clone, Debug)]
pub(crate) struct WeakTelemetry(std::sync::Weak<Inner>);

#[cfg(feature = "inspector")]
impl WeakTelemetry {
    /// The handle, while any clone of it lives.
    pub(crate) fn upgrade(&self) -> Option<Telemetry> {
        self.0.upgrade().map(|inner| Telemetry { inner })
    }
}

#[cold]
fn no_global() -> &'static Telemetry {
    if !NO_GLOBAL_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "tower_telemetry",
            "telemetry event tracked but no Telemetry handle is installed (call install_global() or use TelemetryLayer); events are ignored"
        );
    }
    DISABLED.get_or_init(Telemetry::disabled)
}

/// Runs `f` with the handle and scope that apply here: the current request scope's handle,
/// else the global handle, else a disabled one.
pub(crate) fn with_current<R>(f: impl FnOnce(&Telemetry, Option<&Scope>) -> R) -> R {
    match current_scope() {
        Some(scope) => f(&scope.telemetry, Some(&scope)),
        None => f(Telemetry::global(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disabled_handle_has_no_lanes_and_redacts_nothing() {
        let t = Telemetry::disabled();
        assert!(!t.is_enabled());
        assert!(t.stats().destinations.is_empty());
        assert!(t.explain("user.signup").routed_to().is_empty());
        assert_ne!(
            t.inner.id,
            Telemetry::disabled().inner.id,
            "each handle has its own id"
        );
    }

    #[test]
    fn the_drop_report_route_is_computed_at_start() {
        let t = Telemetry::from_yaml_str(
            "telemetry:\n  destinations:\n    a:\n      type: memory\n      events: [user.*]\n    b:\n      type: memory\n      events: [telemetry.*]\n",
        )
        .unwrap();
        assert_eq!(t.inner.report_route, 0b10);
    }
}
