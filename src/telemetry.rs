//! The [`Telemetry`] handle: building, tracking, context, flushing and shutting down.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::{
    Config, ConfigError, ConfigErrors, DeliveryConfig, DestinationConfig, RequestsConfig,
};
use crate::context::{self, Context, Scope, WithContext};
use crate::destination::{Destination, LoggingDestination, MemoryDestination};
use crate::dispatch::{
    self, Counters, DEFAULT_DROP_REPORT_INTERVAL, DROPPED_EVENT, DropReport, DropSignal,
    DropTracker, Lane, PropertyView, Push, RateLimitedWarning, recycle,
};
use crate::event::{
    Event, EventCategory, EventKind, INLINE_PROPERTIES, Properties, new_event_id_at, validate_name,
};
use crate::limits::{LimitsConfig, Outcome, Policy};
use crate::redact::{RedactConfig, Redactor};
use crate::routing::{
    ALWAYS_BIT, Callsite, DEST_MASK, Explanation, Filter, Glob, INVALID_BIT, MAX_DESTINATIONS,
    RouteTarget, Router, cached_route, threshold,
};
use crate::text::Text;

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
    lanes: Box<[Lane]>,
    progress: Arc<Notify>,
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
    limit_warnings: RateLimitedWarning,
    drops: DropTracker,
    on_drop: Option<OnDrop>,
    /// The destinations whose globs match [`DROPPED_EVENT`].
    report_route: u32,
    /// Stops the drop monitor (when the last handle goes, or at shutdown).
    monitor_stop: Arc<Notify>,
}

/// The `on_drop` callback.
type OnDrop = Arc<dyn Fn(&DropReport) + Send + Sync>;

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.enabled)
            .field(
                "destinations",
                &self
                    .inner
                    .lanes
                    .iter()
                    .map(|l| &l.shared.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Builds a [`Telemetry`] handle: configuration plus destinations supplied in code.
///
/// ```
/// use tower_telemetry::{Config, Context, DestinationConfig, MemoryDestination, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let memory = MemoryDestination::new();
/// let telemetry = Telemetry::builder()
///     .config(Config::default().destination(DestinationConfig::new("audit").events(["payment.*"])))
///     .destination("audit", memory.clone())
///     .context(Context::new().with_hostname("api.example.com").with_field("version", "1.4.2"))
///     .build()
///     .unwrap();
/// # }
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct TelemetryBuilder {
    config: Config,
    supplied: Vec<(String, Arc<dyn Destination>)>,
    base: Context,
    on_drop: Option<OnDrop>,
    drop_report_interval: Duration,
}

impl fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("config", &self.config)
            .field(
                "supplied",
                &self.supplied.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("base", &self.base)
            .field("on_drop", &self.on_drop.is_some())
            .field("drop_report_interval", &self.drop_report_interval)
            .finish()
    }
}

impl TelemetryBuilder {
    /// The configuration. Defaults to [`Config::default`]: enabled, no destinations.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Supplies the implementation of destination `name`.
    ///
    /// If the configuration has a destination of that name, this implementation replaces the
    /// one its kind would build (its routing, sampling and delivery settings still apply, and
    /// its kind-specific settings are not checked); otherwise it is added and receives every
    /// event. Supplying the same name twice keeps the last.
    pub fn destination(mut self, name: impl Into<String>, destination: impl Destination) -> Self {
        let name = name.into();
        self.supplied.retain(|(n, _)| *n != name);
        self.supplied.push((name, Arc::new(destination)));
        self
    }

    /// Supplies a new [`MemoryDestination`] as destination `name`; get it back with
    /// [`Telemetry::memory`].
    pub fn memory_destination(self, name: impl Into<String>) -> Self {
        self.destination(name, MemoryDestination::new())
    }

    /// The base context every event carries (host name, app version, ...). Defaults to empty.
    pub fn context(mut self, context: Context) -> Self {
        self.base = context;
        self
    }

    /// Which property keys are redacted (replaces the configuration's `redact` section).
    /// Defaults to [`RedactConfig::default`]: the [default keys](crate::DEFAULT_REDACT_KEYS).
    /// Call it after [`config`](Self::config), which replaces everything.
    ///
    /// ```
    /// use tower_telemetry::{RedactConfig, Telemetry};
    ///
    /// let telemetry = Telemetry::builder()
    ///     .redact(RedactConfig::default().keys(["email", "phone"]).replacement("***"))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn redact(mut self, redact: RedactConfig) -> Self {
        self.config.redact = redact;
        self
    }

    /// What one event may carry (replaces the configuration's `limits` section). Defaults to
    /// [`LimitsConfig::default`]. Call it after [`config`](Self::config).
    pub fn limits(mut self, limits: LimitsConfig) -> Self {
        self.config.limits = limits;
        self
    }

    /// Called with each [`DropReport`]: at most once per
    /// [`drop_report_interval`](Self::drop_report_interval) while events are being dropped,
    /// and once more at shutdown with what is left. Defaults to none.
    ///
    /// It runs on the drop monitor task (or in `shutdown`, or where the last handle is
    /// dropped), never on the tracking path; keep it short and non-blocking. A panic in it is
    /// caught and logged.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use tower_telemetry::Telemetry;
    ///
    /// let lost = Arc::new(AtomicU64::new(0));
    /// let counter = lost.clone();
    /// let telemetry = Telemetry::builder()
    ///     .on_drop(move |report| { counter.fetch_add(report.total(), Ordering::Relaxed); })
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn on_drop(mut self, callback: impl Fn(&DropReport) + Send + Sync + 'static) -> Self {
        self.on_drop = Some(Arc::new(callback));
        self
    }

    /// The least time between two drop reports (warning, callback and
    /// [`DROPPED_EVENT`](crate::DROPPED_EVENT) event). Defaults to
    /// [`DEFAULT_DROP_REPORT_INTERVAL`](crate::DEFAULT_DROP_REPORT_INTERVAL) (10 s).
    pub fn drop_report_interval(mut self, interval: Duration) -> Self {
        self.drop_report_interval = interval;
        self
    }

    /// Builds the handle and starts one worker per enabled destination, on the current tokio
    /// runtime if there is one, else on a background thread.
    ///
    /// Fails with every problem found: an unknown destination kind, a destination kind's
    /// missing or invalid settings, a bad glob, too many destinations.
    pub fn build(self) -> Result<Telemetry, ConfigErrors> {
        let TelemetryBuilder {
            config,
            mut supplied,
            base,
            on_drop,
            drop_report_interval,
        } = self;
        let mut errors = Vec::new();
        let mut entries: Vec<(DestinationConfig, Arc<dyn Destination>)> = Vec::new();
        let mut memories = HashMap::new();

        let mut configs = config.destinations.clone();
        for (name, _) in &supplied {
            if !configs.iter().any(|d| d.name == *name) {
                configs.push(DestinationConfig::new(name.clone()));
            }
        }
        for dc in configs {
            if !dc.enabled {
                continue;
            }
            let given = supplied
                .iter()
                .position(|(n, _)| *n == dc.name)
                .map(|i| supplied.swap_remove(i).1);
            let destination = match given {
                Some(d) => d,
                None => match build_kind(&dc) {
                    Ok(d) => d,
                    Err(mut e) => {
                        errors.append(&mut e);
                        continue;
                    }
                },
            };
            if let Some(mem) = memory_of(&*destination) {
                memories.insert(dc.name.clone(), mem);
            }
            entries.push((dc, destination));
        }
        if entries.len() > MAX_DESTINATIONS {
            errors.push(ConfigError::new(
                "telemetry.destinations",
                None,
                format!(
                    "{} destinations are enabled; at most {MAX_DESTINATIONS} are supported",
                    entries.len()
                ),
            ));
        }

        let mut views = Vec::with_capacity(entries.len());
        for (dc, _) in &entries {
            match PropertyView::new(dc.allow_properties.as_deref(), &dc.drop_properties) {
                Ok(v) => views.push(v),
                Err((list, i, msg)) => {
                    views.push(None);
                    errors.push(ConfigError::new(
                        format!("{}.{list}[{i}]", dc.settings.path),
                        None,
                        msg,
                    ))
                }
            }
        }
        let mut targets = Vec::with_capacity(entries.len());
        for (dc, _) in &entries {
            match Filter::new(dc.events.as_deref()) {
                Ok(filter) => targets.push(RouteTarget {
                    name: dc.name.clone(),
                    filter,
                    threshold: threshold(dc.sample_rate),
                    sample_rate: dc.sample_rate,
                }),
                Err((i, msg)) => errors.push(ConfigError::new(
                    format!("{}.events[{i}]", dc.settings.path),
                    None,
                    msg,
                )),
            }
        }
        let router = Router::configured(targets, &config.sampling, &mut errors);
        if !errors.is_empty() {
            return Err(errors.into());
        }

        let progress = Arc::new(Notify::new());
        let drop_signal = Arc::new(DropSignal::default());
        let mut lanes = Vec::with_capacity(entries.len());
        let mut workers = Vec::with_capacity(entries.len());
        if config.enabled {
            for ((dc, destination), view) in entries.into_iter().zip(views) {
                let delivery = effective_delivery(&dc, &*destination);
                let (lane, parts) = dispatch::lane(
                    dc.name.clone(),
                    destination,
                    delivery,
                    progress.clone(),
                    view,
                    drop_signal.clone(),
                );
                lanes.push(lane);
                workers.push(parts);
            }
        }
        let report_route = router.compute(DROPPED_EVENT) & DEST_MASK;
        let lane_count = lanes.len();

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
            lanes: lanes.into_boxed_slice(),
            progress,
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
            limit_warnings: RateLimitedWarning::default(),
            drops: DropTracker::new(lane_count, drop_report_interval),
            on_drop,
            report_route,
            monitor_stop: monitor_stop.clone(),
        });
        let monitor = Box::pin(drop_monitor(
            Arc::downgrade(&inner),
            monitor_stop,
            drop_signal,
        ));
        dispatch::spawn_workers(workers, Some(monitor));
        Ok(Telemetry { inner })
    }
}

fn memory_of(destination: &dyn Destination) -> Option<MemoryDestination> {
    let any: &dyn std::any::Any = destination;
    any.downcast_ref::<MemoryDestination>().cloned()
}

/// The destination a configured kind builds.
pub(crate) fn build_kind(dc: &DestinationConfig) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    match dc.kind_name() {
        "logging" => Ok(Arc::new(LoggingDestination::from_settings(&dc.settings)?)),
        #[cfg(feature = "umami")]
        "umami" => Ok(Arc::new(
            crate::destination::UmamiDestination::from_settings(&dc.settings)?,
        )),
        #[cfg(feature = "nats")]
        "nats" => Ok(Arc::new(
            crate::destination::NatsDestination::from_settings(&dc.settings)?,
        )),
        "memory" => {
            let errors = dc.settings.unknown_keys(&[]);
            if errors.is_empty() {
                Ok(Arc::new(MemoryDestination::new()))
            } else {
                Err(errors)
            }
        }
        other => {
            let (key, what) = if dc.kind.is_some() {
                ("type", format!("unknown destination type `{other}`"))
            } else {
                (
                    "",
                    format!("unknown destination `{other}` (and no `type:` given)"),
                )
            };
            Err(vec![dc.settings.error(
                key,
                format!(
                    "{what}; built-in kinds are {}; or supply an implementation with TelemetryBuilder::destination(\"{}\", ...)",
                    BUILTIN_KINDS.join(", "),
                    dc.name
                ),
            )])
        }
    }
}

const BUILTIN_KINDS: &[&str] = &[
    "logging",
    "memory",
    #[cfg(feature = "umami")]
    "umami",
    #[cfg(feature = "nats")]
    "nats",
];

/// The destination's own defaults, overridden by what the configuration gave explicitly.
pub(crate) fn effective_delivery(
    dc: &DestinationConfig,
    destination: &dyn Destination,
) -> DeliveryConfig {
    let defaults = destination.delivery_defaults();
    let given = &dc.delivery;
    let explicit = dc.delivery_explicit;
    DeliveryConfig {
        queue_capacity: given.queue_capacity,
        retry: given.retry,
        batch_size: if explicit.batch_size {
            given.batch_size
        } else {
            defaults.batch_size
        },
        flush_interval: if explicit.flush_interval {
            given.flush_interval
        } else {
            defaults.flush_interval
        },
        concurrency: if explicit.concurrency {
            given.concurrency
        } else {
            defaults.concurrency
        },
        timeout: if explicit.timeout {
            given.timeout
        } else {
            defaults.timeout
        },
    }
}

static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
static DISABLED: OnceLock<Telemetry> = OnceLock::new();
static NO_GLOBAL_WARNED: AtomicBool = AtomicBool::new(false);

impl Telemetry {
    /// A builder, to configure in code and supply destinations.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder {
            config: Config::default(),
            supplied: Vec::new(),
            base: Context::new(),
            on_drop: None,
            drop_report_interval: DEFAULT_DROP_REPORT_INTERVAL,
        }
    }

    /// A handle built from `config` as it is (no environment overrides).
    pub fn from_config(config: Config) -> Result<Telemetry, ConfigErrors> {
        Self::builder().config(config).build()
    }

    /// Parses YAML, applies `TELEMETRY_ENABLED` / `TELEMETRY_DEBUG`, and builds.
    pub fn from_yaml_str(yaml: &str) -> Result<Telemetry, ConfigErrors> {
        let mut config = Config::from_yaml_str(yaml)?;
        config.apply_env_overrides(|k| std::env::var(k).ok())?;
        Self::from_config(config)
    }

    /// Reads a YAML file, applies `TELEMETRY_ENABLED` / `TELEMETRY_DEBUG`, and builds.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Telemetry, ConfigErrors> {
        let mut config = Config::from_yaml_file(path)?;
        config.apply_env_overrides(|k| std::env::var(k).ok())?;
        Self::from_config(config)
    }

    /// Builds from the file named by `TELEMETRY_CONFIG`, else `./config.yaml` if it exists,
    /// else a default with one `logging` destination for every event; then applies
    /// `TELEMETRY_ENABLED` / `TELEMETRY_DEBUG`.
    pub fn from_env() -> Result<Telemetry, ConfigErrors> {
        let mut config = match std::env::var("TELEMETRY_CONFIG") {
            Ok(path) => Config::from_yaml_file(path)?,
            Err(_) if Path::new("config.yaml").exists() => Config::from_yaml_file("config.yaml")?,
            Err(_) => Config::default().destination(DestinationConfig::new("logging")),
        };
        config.apply_env_overrides(|k| std::env::var(k).ok())?;
        Self::from_config(config)
    }

    /// A handle that tracks nothing (what free functions use when nothing is installed).
    pub fn disabled() -> Telemetry {
        let config = Config::default().enabled(false);
        Telemetry {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                enabled: false,
                debug: false,
                base: RwLock::default(),
                base_set: AtomicBool::new(false),
                router: Router::new(Vec::new(), Vec::new(), None, config.sampling.key),
                lanes: Box::new([]),
                progress: Arc::new(Notify::new()),
                closed: AtomicBool::new(false),
                rejected: AtomicU64::new(0),
                after_shutdown: AtomicU64::new(0),
                rejections: RateLimitedWarning::default(),
                requests: config.requests,
                request_excludes: Vec::new(),
                memories: HashMap::new(),
                shutdown_started: AtomicBool::new(false),
                aborted: AtomicBool::new(false),
                policy: Policy::new(
                    Redactor::new(&RedactConfig::default().enabled(false)),
                    LimitsConfig::default(),
                ),
                truncated: AtomicU64::new(0),
                oversized: AtomicU64::new(0),
                redacted: AtomicU64::new(0),
                limit_warnings: RateLimitedWarning::default(),
                drops: DropTracker::new(0, DEFAULT_DROP_REPORT_INTERVAL),
                on_drop: None,
                report_route: 0,
                monitor_stop: Arc::new(Notify::new()),
            }),
        }
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

    /// The global handle (the seed's `Telemetry.get_instance()`); a disabled one, with one
    /// warning, if none was installed.
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

    // ----- tracking -------------------------------------------------------------------------

    /// Tracks `name` with `properties`, in the current context.
    ///
    /// Prefer [`track!`](macro@crate::track) on hot paths: it decides routing and sampling before
    /// evaluating the properties.
    pub fn track(&self, name: impl Into<Text>, properties: Properties) {
        let scope = context::current_scope();
        self.emit_dynamic(scope.as_deref(), name.into(), move |p| {
            *p = properties;
            Ok(())
        });
    }

    /// Tracks `name` with the fields of `properties` (anything that serializes to a JSON
    /// object: a struct, a map, `json!({...})`). Anything else is rejected, counted in
    /// [`Stats::rejected`] and logged.
    pub fn track_event(&self, name: impl Into<Text>, properties: impl Serialize) {
        let scope = context::current_scope();
        self.emit_dynamic(scope.as_deref(), name.into(), move |p| {
            object_properties(&properties, p)
        });
    }

    pub(crate) fn emit_dynamic(
        &self,
        scope: Option<&Scope>,
        name: Text,
        fill: impl FnOnce(&mut Properties) -> Result<(), String>,
    ) {
        if !self.inner.enabled {
            return;
        }
        let route = cached_route(self.inner.id, &name, || self.inner.router.compute(&name));
        self.emit_routed(scope, name, None, route, EventKind::Custom, 0, |p| {
            fill(p).map(|()| false)
        });
    }

    /// Like `emit_dynamic`, for an event of another kind (the layer's page views).
    pub(crate) fn emit_kind(
        &self,
        scope: Option<&Scope>,
        name: Text,
        kind: EventKind,
        fill: impl FnOnce(&mut Properties) -> Result<(), String>,
    ) {
        if !self.inner.enabled {
            return;
        }
        let route = cached_route(self.inner.id, &name, || self.inner.router.compute(&name));
        self.emit_routed(scope, name, None, route, kind, 4, |p| {
            fill(p).map(|()| false)
        });
    }

    /// Whether a `track!` at `callsite` can produce anything (cheap: the call-site cache), so
    /// the request scope is looked up only then.
    #[inline]
    pub(crate) fn may_emit_static(&self, callsite: &Callsite, name: &'static str) -> bool {
        let inner = &*self.inner;
        inner.enabled
            && (self.static_route(callsite, name) & (DEST_MASK | INVALID_BIT) != 0 || inner.debug)
    }

    /// The route of a literal name, from the call-site cache (computed on first use).
    #[inline]
    fn static_route(&self, callsite: &Callsite, name: &'static str) -> u32 {
        let inner = &*self.inner;
        match callsite.get(inner.id) {
            Some(route) => route,
            None => self.first_route(callsite, name),
        }
    }

    /// A call site's first event for this handle: the route is computed and cached. Out of
    /// line, so the code of every later event stays compact (the instruction cache is cold
    /// between requests).
    #[cold]
    #[inline(never)]
    fn first_route(&self, callsite: &Callsite, name: &'static str) -> u32 {
        let inner = &*self.inner;
        let route = inner.router.compute(name);
        callsite.set(inner.id, route);
        route
    }

    pub(crate) fn emit_static(
        &self,
        scope: Option<&Scope>,
        callsite: &Callsite,
        name: &'static str,
        capacity: usize,
        fill: impl FnOnce(&mut Properties) -> bool,
    ) {
        if !self.inner.enabled {
            return;
        }
        let route = self.static_route(callsite, name);
        self.emit_routed(
            scope,
            Text::from_static(name),
            Some((callsite, name)),
            route,
            EventKind::Custom,
            capacity,
            |p| Ok(fill(p)),
        );
    }

    /// `callsite`: a `track!` call site with a literal name, which caches the category and
    /// what the limits made of its properties. `fill` adds the properties; `Ok(true)` if every
    /// value is a literal, a number or a boolean (so every event of the call site passes the
    /// limits alike).
    #[allow(clippy::too_many_arguments)]
    fn emit_routed(
        &self,
        scope: Option<&Scope>,
        name: Text,
        callsite: Option<(&Callsite, &'static str)>,
        route: u32,
        kind: EventKind,
        capacity: usize,
        fill: impl FnOnce(&mut Properties) -> Result<bool, String>,
    ) {
        let inner = &*self.inner;
        if route & INVALID_BIT != 0 {
            return self.reject_invalid(&name);
        }
        let dests = route & DEST_MASK;
        if dests == 0 {
            if inner.debug {
                debug_nowhere(&name);
            }
            return;
        }
        if inner.closed.load(Ordering::Relaxed) {
            inner.after_shutdown.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let keep = if inner.router.samples && route & ALWAYS_BIT == 0 {
            let keep = inner.router.sample(route, self.sample_hash(scope));
            let mut out = dests & !keep;
            while out != 0 {
                let i = out.trailing_zeros() as usize;
                out &= out - 1;
                Counters::add(&inner.lanes[i].shared.counters.sampled_out, 1);
            }
            keep
        } else {
            dests
        };
        if keep == 0 {
            return;
        }
        let context = match scope {
            Some(s) => s.snapshot(),
            None => self
                .base_context_if_set()
                .unwrap_or_else(recycle::empty_context),
        };
        // Filled in place in an event this thread's worker delivered earlier (or a new one):
        // no allocation and no ~400-byte move per event (see `dispatch::recycle`). The id and
        // time are set last.
        let mut event = recycle::take();
        // A taken event is never shared; the `else` only keeps this free of panics.
        let Some(e) = Arc::get_mut(&mut event) else {
            return;
        };
        e.category = match callsite {
            Some((site, name)) => site.category(name),
            None => EventCategory::of_text(&name),
        };
        e.kind = kind;
        e.name = name;
        e.context = context;
        if capacity > INLINE_PROPERTIES {
            e.properties = Properties::with_capacity(capacity);
        }
        let fixed = match fill(&mut e.properties) {
            Ok(fixed) => fixed,
            Err(why) => {
                self.reject(&e.name, &why);
                return;
            }
        };
        // Redaction and limits: after the routing and sampling decision (an event that goes
        // nowhere is never looked at), before any destination can see the event.
        let policy = &inner.policy;
        let (props_size, out) = match callsite {
            // Literal keys are checked once per policy, not per event; and where the values are
            // literals, numbers or booleans, so is the rest of the properties' pass.
            Some((site, _)) => match site.fixed_bound(policy.id) {
                Some(bound) if fixed => (bound, Outcome::default()),
                _ => {
                    let keys_clean =
                        site.keys_clean(policy.id, || policy.keys_clean(&e.properties));
                    let (size, out) = policy.properties(&mut e.properties, keys_clean);
                    if fixed && keys_clean && out == Outcome::default() {
                        site.set_fixed(policy.id, size);
                    }
                    (size, out)
                }
            },
            None => policy.properties(&mut e.properties, false),
        };
        let outcome = policy.finish(&e.name, &e.properties, &mut e.context, props_size, out);
        if outcome != Outcome::default() && !self.limited(&e.name, &outcome) {
            return;
        }
        e.timestamp = SystemTime::now();
        // An event for one destination gets its id from that destination's worker, which
        // draws the ids of a whole batch at once, off the request path (~150 instructions
        // less here). One shared by several destinations, or printed now, gets it here: they
        // must all see the same id.
        e.id_pending = keep & (keep - 1) == 0 && !inner.debug;
        if !e.id_pending {
            e.id = new_event_id_at(e.timestamp);
        }
        if inner.debug {
            self.debug_event(&event, keep);
        }
        // One reference per destination; the last one gets the handle's own (most events go
        // to one destination: no reference counting at all).
        let mut bits = keep & (keep - 1);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.push(i, event.clone());
        }
        self.push(keep.trailing_zeros() as usize, event);
    }

    #[inline]
    fn push(&self, lane: usize, event: Arc<Event>) {
        let inner = &*self.inner;
        if let Push::Closed = inner.lanes[lane].push(event) {
            inner.after_shutdown.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether sampling can drop anything and is keyed by request or user.
    pub(crate) fn samples_by_key(&self) -> bool {
        self.inner.router.samples && self.inner.router.key != crate::config::SampleKey::Event
    }

    fn sample_hash(&self, scope: Option<&Scope>) -> u64 {
        use crate::config::SampleKey;
        let by_request = || scope.and_then(Scope::request_hash);
        let h = match self.inner.router.key {
            SampleKey::Event => None,
            SampleKey::Request => by_request(),
            SampleKey::User => scope.and_then(Scope::user_hash).or_else(by_request),
        };
        h.unwrap_or_else(rand::random)
    }

    /// Counts what the redaction and limits pass did; whether the event is still sent.
    #[cold]
    fn limited(&self, name: &str, outcome: &Outcome) -> bool {
        let inner = &*self.inner;
        if outcome.redacted > 0 {
            inner
                .redacted
                .fetch_add(outcome.redacted as u64, Ordering::Relaxed);
        }
        let (counter, what) = match outcome.oversized {
            Some(_) => (&inner.oversized, "rejected: larger than max_event_size"),
            None if outcome.truncated() => (&inner.truncated, "truncated to fit the limits"),
            None => return true,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = inner.limit_warnings.hit() {
            let shown: String = name.chars().take(64).collect();
            tracing::warn!(
                target: "tower_telemetry",
                event = %crate::destination::Escaped(&shown),
                size = outcome.oversized,
                limit = %outcome.limits_hit(&inner.policy.limits),
                events_since_last_warning = n,
                "telemetry event {what}"
            );
        }
        outcome.oversized.is_none()
    }

    #[cold]
    #[inline(never)]
    fn reject_invalid(&self, name: &str) {
        let why = validate_name(name)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        self.reject(name, &why);
    }

    #[cold]
    #[inline(never)]
    fn reject(&self, name: &str, why: &str) {
        let inner = &*self.inner;
        inner.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = inner.rejections.hit() {
            let shown: String = name.chars().take(64).collect();
            tracing::warn!(
                target: "tower_telemetry",
                event = %crate::destination::Escaped(&shown),
                reason = %why,
                rejected = n,
                "telemetry event rejected"
            );
        }
    }

    #[cold]
    fn debug_event(&self, event: &Event, keep: u32) {
        let to: Vec<&str> = (0..self.inner.lanes.len())
            .filter(|i| keep & (1 << i) != 0)
            .map(|i| self.inner.lanes[i].shared.name.as_str())
            .collect();
        tracing::info!(
            target: "tower_telemetry::debug",
            event = %crate::destination::Escaped(event.name()),
            properties = %serde_json::to_string(event.properties()).unwrap_or_default(),
            destinations = ?to,
            "telemetry event"
        );
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

    // ----- context --------------------------------------------------------------------------

    /// The base context if it has any field, without touching its lock otherwise.
    pub(crate) fn base_context_if_set(&self) -> Option<Arc<Context>> {
        self.inner
            .base_set
            .load(Ordering::Acquire)
            .then(|| self.base_context())
    }

    pub(crate) fn base_context(&self) -> Arc<Context> {
        self.inner
            .base
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Merges `context` into the current request's scope when called inside one, else into
    /// this handle's base context (seen by every later event outside requests, and by requests
    /// that start later).
    pub fn set_context(&self, context: Context) {
        match context::current_scope() {
            Some(scope) => scope.update(|c| c.merge(&context)),
            None => {
                let mut base = self.inner.base.write().unwrap_or_else(|e| e.into_inner());
                Arc::make_mut(&mut base).merge(&context);
                self.inner
                    .base_set
                    .store(!base.is_empty(), Ordering::Release);
            }
        }
    }

    /// Inside a request scope: resets the request's context to the base context. Outside:
    /// clears the base context.
    pub fn clear_context(&self) {
        match context::current_scope() {
            Some(scope) => scope.replace((*self.base_context()).clone()),
            None => {
                *self.inner.base.write().unwrap_or_else(|e| e.into_inner()) = Arc::default();
                self.inner.base_set.store(false, Ordering::Release);
            }
        }
    }

    /// The context an event tracked here and now would carry.
    pub fn current_context(&self) -> Arc<Context> {
        match context::current_scope() {
            Some(scope) => scope.snapshot(),
            None => self.base_context(),
        }
    }

    /// Runs `future` in a new request scope: events tracked inside carry this handle's base
    /// context merged with `context`, and [`track!`](macro@crate::track) inside uses this handle.
    pub fn scope<F: Future>(&self, context: Context, future: F) -> WithContext<F> {
        context::enter(Scope::new(self.clone(), context), future)
    }

    /// Runs `f` in a new request scope, synchronously (for code outside async tasks).
    pub fn scope_sync<R>(&self, context: Context, f: impl FnOnce() -> R) -> R {
        context::enter_sync(Scope::new(self.clone(), context), f)
    }

    // ----- lifecycle ------------------------------------------------------------------------

    /// Waits until every event queued before this call has been delivered, failed for good or
    /// been discarded — at most `timeout`. Cuts batching delays short. Returns whether
    /// everything settled in time. Safe to call concurrently and from any runtime flavour.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let targets: Vec<u64> = self
            .inner
            .lanes
            .iter()
            .map(|l| Counters::get(&l.shared.counters.enqueued))
            .collect();
        for lane in self.inner.lanes.iter() {
            lane.shared.flush_now.notify_one();
        }
        self.wait_until(timeout, |t| {
            t.inner.lanes.iter().zip(&targets).all(|(l, target)| {
                l.shared.counters.settled() >= *target || l.shared.finished.load(Ordering::Acquire)
            })
        })
        .await
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Telemetry) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let progressed = self.inner.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                return done(self);
            }
        }
    }

    /// Stops accepting events, delivers everything queued (retrying as configured) and stops
    /// the workers — within `timeout`. What is still undelivered then is abandoned and
    /// reported. Events tracked afterwards are counted in [`Stats::after_shutdown`], not
    /// queued. Calling it again (or concurrently) is safe and reports the same end state.
    ///
    /// Drops not yet reported are reported at once (see [`DropReport`]): first those before
    /// shutdown (also as a [`DROPPED_EVENT`](crate::DROPPED_EVENT) event, to healthy
    /// destinations, before their queues close), then those during the drain (warning and
    /// `on_drop` callback only).
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let inner = &*self.inner;
        inner.closed.store(true, Ordering::Relaxed);
        if !inner.shutdown_started.swap(true, Ordering::AcqRel) {
            inner.report_drops(true, true);
        }
        inner.monitor_stop.notify_one();
        for lane in inner.lanes.iter() {
            lane.close();
        }
        let all_finished = |t: &Telemetry| {
            t.inner
                .lanes
                .iter()
                .all(|l| l.shared.finished.load(Ordering::Acquire))
        };
        let finished = self.wait_until(timeout, all_finished).await;
        if !finished {
            // Set before aborting: a concurrent shutdown that sees the workers end because of
            // this abort must report the timeout too.
            inner.aborted.store(true, Ordering::SeqCst);
            for lane in inner.lanes.iter() {
                if let Some(abort) = lane
                    .shared
                    .abort
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    abort.abort();
                }
            }
            // An aborted task is dropped the next time its runtime gets to it; give it that
            // chance without waiting on the clock, so we return by the deadline.
            for _ in 0..ABORT_YIELDS {
                if all_finished(self) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        inner.report_drops(true, false);
        ShutdownReport {
            stats: self.stats(),
            // Whichever call hit the deadline, every call reports the same end state.
            timed_out: !finished || inner.aborted.load(Ordering::SeqCst),
        }
    }

    /// Live counters, per destination and overall.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        Stats {
            destinations: inner
                .lanes
                .iter()
                .map(|l| {
                    let c = &l.shared.counters;
                    let enqueued = Counters::get(&c.enqueued);
                    DestinationStats {
                        name: l.shared.name.clone(),
                        queued: l.queued(),
                        capacity: l.shared.capacity,
                        enqueued,
                        delivered: Counters::get(&c.delivered),
                        dropped_queue_full: Counters::get(&c.dropped_queue_full),
                        sampled_out: Counters::get(&c.sampled_out),
                        failed: Counters::get(&c.failed),
                        discarded: Counters::get(&c.discarded),
                        retries: Counters::get(&c.retries),
                        drop_reports_lost: Counters::get(&c.reports_lost),
                        undelivered: enqueued.saturating_sub(c.settled()),
                    }
                })
                .collect(),
            rejected: inner.rejected.load(Ordering::Relaxed),
            after_shutdown: inner.after_shutdown.load(Ordering::Relaxed),
            truncated: inner.truncated.load(Ordering::Relaxed),
            oversized: inner.oversized.load(Ordering::Relaxed),
            redacted: inner.redacted.load(Ordering::Relaxed),
        }
    }

    /// The [`MemoryDestination`] registered as `name`, if that destination is one.
    pub fn memory(&self, name: &str) -> Option<MemoryDestination> {
        self.inner.memories.get(name).cloned()
    }

    /// The automatic request events settings (used by the layer).
    pub(crate) fn requests(&self) -> &RequestsConfig {
        &self.inner.requests
    }

    /// Whether request events are suppressed for `path`.
    pub(crate) fn request_excluded(&self, path: &str) -> bool {
        self.inner.request_excludes.iter().any(|g| g.matches(path))
    }
}

const ABORT_YIELDS: usize = 16;

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
    match context::current_scope() {
        Some(scope) => f(&scope.telemetry, Some(&scope)),
        None => f(Telemetry::global(), None),
    }
}

pub(crate) fn object_properties(
    value: &impl Serialize,
    out: &mut Properties,
) -> Result<(), String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => {
            *out = Properties::from_json_map(map);
            Ok(())
        }
        Ok(other) => Err(format!(
            "properties must serialize to a JSON object, not {}",
            crate::config::kind_of(&other)
        )),
        Err(e) => Err(format!("properties failed to serialize: {e}")),
    }
}

#[cold]
#[inline(never)]
fn debug_nowhere(name: &str) {
    tracing::info!(target: "tower_telemetry::debug", event = %crate::destination::Escaped(name), "telemetry event routed nowhere");
}

/// The drop monitor: reports drops off the tracking path. Sleeps until a drop is counted (no
/// timer while nothing is dropped), then waits until a report is due. Holds the handle weakly,
/// so it never keeps the queues open; ends with the handle or at shutdown.
async fn drop_monitor(inner: Weak<Inner>, stop: Arc<Notify>, signal: Arc<DropSignal>) {
    loop {
        tokio::select! {
            biased;
            _ = stop.notified() => return,
            _ = signal.raised() => {}
        }
        // The handle is not held across the wait.
        let Some(due) = inner.upgrade().map(|inner| inner.drops.next_due()) else {
            return;
        };
        if let Some(due) = due {
            tokio::select! {
                biased;
                _ = stop.notified() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.shutdown_started.load(Ordering::Relaxed) {
            return;
        }
        signal.lower();
        inner.report_drops(false, true);
    }
}

impl Inner {
    /// Reports the drops not reported yet, if a report is due (always when `force`): a
    /// warning, the `on_drop` callback, and when `emit`, a [`DROPPED_EVENT`] to healthy
    /// destinations that route it. Drops of reports themselves are never reported.
    fn report_drops(&self, force: bool, emit: bool) {
        let Some((report, dropping)) = self.drops.take(&self.lanes, force) else {
            return;
        };
        tracing::warn!(target: "tower_telemetry", dropped = report.total(), "{report}");
        if let Some(callback) = &self.on_drop {
            let called =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&report)));
            if called.is_err() {
                tracing::error!(target: "tower_telemetry", "the on_drop callback panicked");
            }
        }
        if !emit {
            return;
        }
        let mut targets = self.report_route & !dropping;
        let mut event: Option<Arc<Event>> = None;
        while targets != 0 {
            let i = targets.trailing_zeros() as usize;
            targets &= targets - 1;
            let lane = &self.lanes[i];
            if !lane.healthy() {
                continue;
            }
            let event = event.get_or_insert_with(|| {
                let base = self.base.read().unwrap_or_else(|e| e.into_inner()).clone();
                let mut e = Event::new(Text::from_static(DROPPED_EVENT), report.to_properties());
                e.context = base;
                Arc::new(e)
            });
            lane.push_report(event.clone());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.monitor_stop.notify_one();
        // The queues close with this handle: each worker delivers what is queued now, without
        // lingering for fuller batches, then ends (as in `shutdown`, without the wait).
        for lane in self.lanes.iter() {
            lane.close();
        }
        if self.shutdown_started.load(Ordering::Relaxed) {
            return;
        }
        self.report_drops(true, false);
        let pending: u64 = self
            .lanes
            .iter()
            .map(|l| {
                Counters::get(&l.shared.counters.enqueued)
                    .saturating_sub(l.shared.counters.settled())
            })
            .sum();
        if pending > 0 {
            tracing::warn!(
                target: "tower_telemetry",
                undelivered = pending,
                "last telemetry handle dropped without shutdown(): {pending} event(s) not yet delivered may be lost"
            );
        }
    }
}

/// Counters of one destination. See [`Telemetry::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestinationStats {
    /// The destination's name.
    pub name: String,
    /// Events in its queue now.
    pub queued: usize,
    /// The queue's capacity.
    pub capacity: usize,
    /// Events accepted into its queue.
    pub enqueued: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Events not sent there because sampling dropped them.
    pub sampled_out: u64,
    /// Events that failed for good (permanent errors, or retries exhausted).
    pub failed: u64,
    /// Events the receiver accepted and threw away (e.g. Umami's bot check).
    pub discarded: u64,
    /// Retried delivery attempts.
    pub retries: u64,
    /// [`DROPPED_EVENT`](crate::DROPPED_EVENT) reports not queued because the queue was
    /// full (not counted as drops: a report's loss is never reported).
    pub drop_reports_lost: u64,
    /// Events accepted but not (yet) delivered, failed or discarded: queued or in flight.
    pub undelivered: u64,
}

/// Live counters of a handle. See [`Telemetry::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Per destination, in configuration order.
    pub destinations: Vec<DestinationStats>,
    /// Events rejected before routing (invalid name, properties not an object).
    pub rejected: u64,
    /// Events tracked after shutdown began (counted, not queued).
    pub after_shutdown: u64,
    /// Events cut to fit the [limits](crate::LimitsConfig) (and still sent).
    pub truncated: u64,
    /// Events rejected for being larger than the `max_event_size` limit.
    pub oversized: u64,
    /// Property values (and context fields) replaced by [redaction](crate::RedactConfig).
    pub redacted: u64,
}

impl Stats {
    /// The counters of destination `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationStats> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// Events delivered, over all destinations.
    pub fn delivered(&self) -> u64 {
        self.destinations.iter().map(|d| d.delivered).sum()
    }

    /// Events not delivered (queued or in flight), over all destinations.
    pub fn undelivered(&self) -> u64 {
        self.destinations.iter().map(|d| d.undelivered).sum()
    }

    /// Events dropped because a queue was full, over all destinations.
    pub fn dropped_queue_full(&self) -> u64 {
        self.destinations.iter().map(|d| d.dropped_queue_full).sum()
    }
}

/// What [`Telemetry::shutdown`] achieved: final counters and whether the timeout was hit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The counters when the workers stopped. `undelivered` is what was abandoned.
    pub stats: Stats,
    /// Whether the timeout ran out before every queue was drained.
    pub timed_out: bool,
}

impl ShutdownReport {
    /// Events delivered, over all destinations, since the handle was built.
    pub fn delivered(&self) -> u64 {
        self.stats.delivered()
    }

    /// Events abandoned at shutdown (still queued or in flight), over all destinations.
    pub fn undelivered(&self) -> u64 {
        self.stats.undelivered()
    }

    /// The final counters of destination `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationStats> {
        self.stats.destination(name)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "telemetry shutdown{}:",
            if self.timed_out { " (timed out)" } else { "" }
        )?;
        for d in &self.stats.destinations {
            write!(
                f,
                "\n  {}: delivered {}, undelivered {}, dropped (queue full) {}, sampled out {}, failed {}, discarded {}",
                d.name,
                d.delivered,
                d.undelivered,
                d.dropped_queue_full,
                d.sampled_out,
                d.failed,
                d.discarded
            )?;
        }
        let s = &self.stats;
        if s.rejected > 0 || s.after_shutdown > 0 || s.truncated > 0 || s.oversized > 0 {
            write!(
                f,
                "\n  rejected {}, after shutdown {}, truncated {}, oversized {}",
                s.rejected, s.after_shutdown, s.truncated, s.oversized
            )?;
        }
        Ok(())
    }
}
