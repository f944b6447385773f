//! [`TelemetryBuilder`] and the ways to build a handle from configuration.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{OnDrop, Telemetry};
use crate::config::{Config, ConfigErrors, DestinationConfig};
use crate::context::Context;
use crate::destination::registry::DestinationKind;
use crate::destination::{Destination, MemoryDestination};
use crate::dispatch::{DEFAULT_DROP_REPORT_INTERVAL, DropReport};
use crate::limits::LimitsConfig;
use crate::pipeline::{self, Sources};
use crate::redact::RedactConfig;

/// Builds a [`Telemetry`] handle: configuration plus destinations supplied in code.
///
/// ```
/// use tower_telemetry::{Context, Telemetry, config::{Config, DestinationConfig}, destination::MemoryDestination};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let memory = MemoryDestination::new();
/// let telemetry = Telemetry::builder()
///     .config(Config::default().with_destination(DestinationConfig::new("audit").with_events(["payment.*"])))
///     .destination("audit", memory.clone())
///     .context(Context::new().with_hostname("api.example.com").with_field("version", "1.4.2"))
///     .build()
///     .unwrap();
/// # }
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct TelemetryBuilder {
    config: Config,
    sources: Sources,
    base: Context,
    on_drop: Option<OnDrop>,
    drop_report_interval: Duration,
}

impl fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("config", &self.config)
            .field("sources", &self.sources)
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
        self.sources.supply(name.into(), destination);
        self
    }

    /// Registers a destination kind: a configured destination whose `type:` (or, without one,
    /// whose key) is `kind` is built by `builder` from its settings, and its errors are
    /// reported like a built-in kind's (key path and line). A kind of the same name, a
    /// built-in one too, is replaced. See [`DestinationKind`] for an example.
    ///
    /// ```
    /// use tower_telemetry::config::{ConfigError, Settings};
    /// use tower_telemetry::{Telemetry, destination::MemoryDestination};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let telemetry = Telemetry::builder()
    ///     .destination_kind("capture", |settings: &Settings| -> Result<_, Vec<ConfigError>> {
    ///         let errors = settings.unknown_keys(&[]);
    ///         if errors.is_empty() { Ok(MemoryDestination::new()) } else { Err(errors) }
    ///     })
    ///     .config(tower_telemetry::config::Config::from_yaml_str(
    ///         "telemetry:\n  destinations:\n    audit:\n      type: capture\n",
    ///     ).unwrap())
    ///     .build()
    ///     .unwrap();
    /// assert!(telemetry.memory("audit").is_some());
    /// # }
    /// ```
    pub fn destination_kind(
        mut self,
        kind: impl Into<String>,
        builder: impl DestinationKind,
    ) -> Self {
        self.sources.register(kind.into(), builder);
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
    /// Defaults to [`RedactConfig::default`]: the [default keys](crate::config::DEFAULT_REDACT_KEYS).
    /// Call it after [`config`](Self::config), which replaces everything.
    ///
    /// ```
    /// use tower_telemetry::{Telemetry, config::RedactConfig};
    ///
    /// let telemetry = Telemetry::builder()
    ///     .redact(RedactConfig::default().with_keys(["email", "phone"]).with_replacement("***"))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn redact(mut self, redact: RedactConfig) -> Self {
        self.config.redact = redact;
        self
    }

    /// Super properties: merged into every event, the event's own properties winning over
    /// them (replaces the configuration's `properties` section). Redacted and limited like
    /// the event's own. Call it after [`config`](Self::config).
    ///
    /// ```
    /// use tower_telemetry::{Telemetry, props};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let telemetry = Telemetry::builder()
    ///     .memory_destination("memory")
    ///     .properties(props! { "app" => "studio", "plan" => "free" })
    ///     .build()
    ///     .unwrap();
    /// telemetry.track("user.upgraded", props! { "plan" => "pro" });
    /// telemetry.flush(std::time::Duration::from_secs(1)).await;
    /// let event = &telemetry.memory("memory").unwrap().events()[0];
    /// assert_eq!(event.properties().get("app").unwrap(), "studio");
    /// assert_eq!(event.properties().get("plan").unwrap(), "pro");
    /// # }
    /// ```
    pub fn properties(mut self, properties: crate::event::Properties) -> Self {
        self.config.properties = properties;
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
    /// [`DropReport::EVENT_NAME`](crate::DropReport::EVENT_NAME) event). Defaults to
    /// [`DropReport::DEFAULT_INTERVAL`](crate::DropReport::DEFAULT_INTERVAL) (10 s).
    pub fn drop_report_interval(mut self, interval: Duration) -> Self {
        self.drop_report_interval = interval;
        self
    }

    /// Builds the handle and starts one worker per enabled destination, on the current tokio
    /// runtime if there is one, else on a background thread.
    ///
    /// Fails with every problem found: an unknown destination kind, a destination kind's
    /// missing or invalid settings, a bad glob, too many destinations, a spool folder another
    /// process uses (feature `spool`; the spools are opened here, their contents delivered
    /// first by the workers).
    pub fn build(self) -> Result<Telemetry, ConfigErrors> {
        let TelemetryBuilder {
            config,
            sources,
            base,
            on_drop,
            drop_report_interval,
        } = self;
        let mut errors = Vec::new();
        #[allow(unused_mut)] // mutated with the `spool` feature
        let mut compiled = pipeline::compile(&config, sources, &mut errors);
        // Spools are opened (and their folders locked) only for a handle that will run.
        #[cfg(feature = "spool")]
        if errors.is_empty() && config.enabled {
            crate::spool::open_lanes(&mut compiled.lanes, &mut errors);
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        Ok(Telemetry::start(
            config,
            compiled,
            base,
            on_drop,
            drop_report_interval,
        ))
    }
}

impl Telemetry {
    /// A builder, to configure in code and supply destinations.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder {
            config: Config::default(),
            sources: Sources::default(),
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
            Err(_) => Config::default().with_destination(DestinationConfig::new("logging")),
        };
        config.apply_env_overrides(|k| std::env::var(k).ok())?;
        Self::from_config(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::LoggingDestination;

    #[test]
    fn supplying_a_name_again_keeps_the_last() {
        let memory = MemoryDestination::new();
        let t = Telemetry::builder()
            .destination("a", LoggingDestination::default())
            .destination("a", memory.clone())
            .build()
            .unwrap();
        assert_eq!(t.stats().destinations.len(), 1);
        assert!(
            t.memory("a").is_some(),
            "the second one is the memory destination"
        );
    }

    #[test]
    fn a_disabled_configuration_is_still_checked_but_starts_no_lane() {
        let err = Telemetry::builder()
            .config(
                Config::default()
                    .with_enabled(false)
                    .with_destination(DestinationConfig::new("kafka")),
            )
            .build()
            .unwrap_err();
        assert_eq!(err.errors()[0].path(), "telemetry.destinations.kafka");
        let t = Telemetry::builder()
            .config(Config::default().with_enabled(false))
            .memory_destination("m")
            .build()
            .unwrap();
        assert!(t.stats().destinations.is_empty());
        assert!(t.memory("m").is_some());
    }
}
