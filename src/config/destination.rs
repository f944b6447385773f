//! One destination's configuration: routing, delivery and the kind's own settings.

use super::{DeliveryConfig, Settings};

/// One destination's configuration (`telemetry.destinations.<name>`).
///
/// Its `Debug` shows values that came from `${VAR}` as the reference (see [`Settings`]).
#[derive(Clone)]
pub struct DestinationConfig {
    pub(crate) name: String,
    pub(crate) kind: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) events: Option<Vec<String>>,
    pub(crate) sample_rate: f64,
    pub(crate) delivery: DeliveryConfig,
    /// Set when `delivery` keys were given explicitly (so kind defaults do not override them).
    pub(crate) delivery_explicit: DeliveryExplicit,
    pub(crate) settings: Settings,
    pub(crate) allow_properties: Option<Vec<String>>,
    pub(crate) drop_properties: Vec<String>,
    /// Its durable spool, if it has one (feature `spool`).
    #[cfg(feature = "spool")]
    pub(crate) spool: Option<super::SpoolConfig>,
}

impl std::fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `type:` and the globs may come from `${VAR}` too.
        let scrubbed = |v: &dyn std::fmt::Debug| {
            let text = format!("{v:?}");
            self.settings.substitutions.scrub(&text).into_owned()
        };
        let mut f = f.debug_struct("DestinationConfig");
        let f = f
            .field("name", &self.name)
            .field("kind", &format_args!("{}", scrubbed(&self.kind)))
            .field("enabled", &self.enabled)
            .field("events", &format_args!("{}", scrubbed(&self.events)))
            .field("sample_rate", &self.sample_rate)
            .field("delivery", &self.delivery)
            .field("delivery_explicit", &self.delivery_explicit)
            .field("settings", &self.settings)
            .field(
                "allow_properties",
                &format_args!("{}", scrubbed(&self.allow_properties)),
            )
            .field(
                "drop_properties",
                &format_args!("{}", scrubbed(&self.drop_properties)),
            );
        #[cfg(feature = "spool")]
        let f = f.field("spool", &self.spool);
        f.finish()
    }
}

/// Which delivery keys a config gave explicitly.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeliveryExplicit {
    pub(crate) batch_size: bool,
    pub(crate) flush_interval: bool,
    pub(crate) concurrency: bool,
    pub(crate) timeout: bool,
}

impl DestinationConfig {
    /// A destination named `name`, enabled, receiving every event, with default delivery.
    /// Its kind is `name` unless [`with_kind`](Self::with_kind) says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        DestinationConfig {
            settings: Settings::new(format!("telemetry.destinations.{name}")),
            name,
            kind: None,
            enabled: true,
            events: None,
            sample_rate: 1.0,
            delivery: DeliveryConfig::default(),
            delivery_explicit: DeliveryExplicit::default(),
            allow_properties: None,
            drop_properties: Vec::new(),
            #[cfg(feature = "spool")]
            spool: None,
        }
    }

    /// The kind (`logging`, `memory`, `umami`, ...). Defaults to the name.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Enables or disables it. Defaults to `true`.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The event globs it receives (`user.*`, `!user.debug.*`). Defaults to every event.
    pub fn with_events<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events = Some(globs.into_iter().map(Into::into).collect());
        self
    }

    /// The fraction of its events it keeps, on top of global sampling. Defaults to 1.0.
    pub fn with_sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// Queueing and delivery. Defaults to [`DeliveryConfig::default`] (a kind may choose other
    /// defaults for the keys not given).
    pub fn with_delivery(mut self, delivery: DeliveryConfig) -> Self {
        self.delivery = delivery;
        self.delivery_explicit = DeliveryExplicit {
            batch_size: true,
            flush_interval: true,
            concurrency: true,
            timeout: true,
        };
        self
    }

    /// Only the top-level properties whose names match one of these globs reach this
    /// destination (exact case; `*` and `?` wildcards). Defaults to every property.
    ///
    /// Applied by the destination's worker just before delivery; other destinations still see
    /// the whole event. Redaction applies before, to every destination.
    ///
    /// ```
    /// use tower_telemetry::config::DestinationConfig;
    ///
    /// let umami = DestinationConfig::new("umami")
    ///     .with_allow_properties(["model", "plan", "utm_*"])
    ///     .with_drop_properties(["utm_id"]);
    /// assert_eq!(umami.allow_properties().unwrap().len(), 3);
    /// ```
    pub fn with_allow_properties<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_properties = Some(globs.into_iter().map(Into::into).collect());
        self
    }

    /// Top-level properties whose names match one of these globs never reach this destination
    /// (exact case). Defaults to none. Applied after [`with_allow_properties`](Self::with_allow_properties).
    pub fn with_drop_properties<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.drop_properties = globs.into_iter().map(Into::into).collect();
        self
    }

    /// Keeps the events its worker takes in a durable spool on disk until the destination's
    /// verdict, so they survive a crash, a restart, and an outage longer than the memory queue
    /// holds (feature `spool`). Defaults to none: the queue is in memory only.
    ///
    /// The request path is unchanged: `track!` still only pushes into the memory queue; the
    /// destination's worker moves what it takes into the spool before sending and removes it
    /// after the verdict. On start, what a spool holds is delivered first, with the events'
    /// original ids and timestamps. See [`SpoolConfig`](super::SpoolConfig) and the README's
    /// "Surviving crashes and restarts".
    ///
    /// ```
    /// use tower_telemetry::config::{DestinationConfig, SpoolConfig};
    ///
    /// let umami = DestinationConfig::new("umami").with_spool(SpoolConfig::new("spool/umami"));
    /// assert!(umami.spool().is_some());
    /// ```
    #[cfg(feature = "spool")]
    pub fn with_spool(mut self, spool: super::SpoolConfig) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Its durable spool's settings, if it has one.
    #[cfg(feature = "spool")]
    pub fn spool(&self) -> Option<&super::SpoolConfig> {
        self.spool.as_ref()
    }

    /// Its `allow_properties` globs (`None`: every property).
    pub fn allow_properties(&self) -> Option<&[String]> {
        self.allow_properties.as_deref()
    }

    /// Its `drop_properties` globs.
    pub fn drop_properties(&self) -> &[String] {
        &self.drop_properties
    }

    /// A kind-specific setting (`level` for logging, `url` for umami, ...).
    pub fn with_setting(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.settings.values.insert(key.into(), value.into());
        self
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The destination's kind.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(&self.name)
    }

    /// Whether it is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Its event globs (`None`: every event).
    pub fn events(&self) -> Option<&[String]> {
        self.events.as_deref()
    }

    /// The fraction of its events it keeps, on top of global sampling.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// Its delivery settings.
    pub fn delivery(&self) -> &DeliveryConfig {
        &self.delivery
    }

    /// Its kind-specific settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}
