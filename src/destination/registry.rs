//! Destination kinds: what a configured destination's `type:` (or its key) builds.
//!
//! Every built-in kind (`logging`, `memory`, and with their features `umami`, `nats`,
//! `posthog`, `segment`, `webhook` and `otlp`)
//! registers a builder here that reads and checks its own keys. Register a kind of your own
//! with [`TelemetryBuilder::destination_kind`](crate::TelemetryBuilder::destination_kind) (or
//! [`RelayBuilder::destination_kind`](crate::relay::RelayBuilder::destination_kind)) and YAML
//! can name it, with the same error reporting as the built-in kinds: each error names its key
//! path and, from YAML, its line.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::{Destination, LoggingDestination, MemoryDestination};
use crate::config::{ConfigError, ConfigErrorKind, DestinationConfig, Settings};

/// Builds a destination of one kind from its kind-specific [`Settings`].
///
/// Implemented by every `Fn(&Settings) -> Result<D, Vec<ConfigError>>` where `D` is a
/// [`Destination`], so a closure or a `from_settings` function is a kind. Report each bad or
/// missing key with [`Settings::error`] (it adds the key path and the line) and each unknown
/// key with [`Settings::unknown_keys`]; report every problem found, not only the first.
///
/// ```
/// use std::sync::Arc;
/// use tower_telemetry::config::{ConfigError, Settings};
/// use tower_telemetry::{Event, Telemetry, destination::{BoxFuture, DeliveryError, Destination}};
///
/// struct Webhook {
///     url: String,
/// }
///
/// impl Webhook {
///     fn from_settings(settings: &Settings) -> Result<Webhook, Vec<ConfigError>> {
///         let mut errors = settings.unknown_keys(&["url"]);
///         let url = match settings.str("url") {
///             Ok(Some(url)) => url.to_owned(),
///             Ok(None) => {
///                 errors.push(settings.error("url", "missing: the URL to post events to"));
///                 String::new()
///             }
///             Err(e) => {
///                 errors.push(e);
///                 String::new()
///             }
///         };
///         if errors.is_empty() { Ok(Webhook { url }) } else { Err(errors) }
///     }
/// }
///
/// impl Destination for Webhook {
///     fn name(&self) -> &str {
///         "webhook"
///     }
///
///     fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
///         Box::pin(async move {
///             let _ = (&self.url, batch); // post them
///             Ok(())
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = tower_telemetry::config::Config::from_yaml_str(r#"
/// telemetry:
///   destinations:
///     hooks:
///       type: webhook
///       url: https://hooks.example.com/telemetry
///       events: [payment.*]
/// "#).unwrap();
/// let telemetry = Telemetry::builder()
///     .destination_kind("webhook", Webhook::from_settings)
///     .config(config)
///     .build()
///     .unwrap();
/// # }
/// ```
pub trait DestinationKind: Send + Sync + 'static {
    /// The destination it builds.
    type Destination: Destination;

    /// Builds a destination from `settings`, the keys of its configuration entry that are not
    /// common to every destination (`events`, `sample_rate`, the delivery keys, ... are taken
    /// out first). Fails with every problem found.
    fn build(&self, settings: &Settings) -> Result<Self::Destination, Vec<ConfigError>>;
}

impl<F, D> DestinationKind for F
where
    F: Fn(&Settings) -> Result<D, Vec<ConfigError>> + Send + Sync + 'static,
    D: Destination,
{
    type Destination = D;

    fn build(&self, settings: &Settings) -> Result<D, Vec<ConfigError>> {
        self(settings)
    }
}

/// A destination ready for a lane, with its [`MemoryDestination`] handle when it is one.
pub(crate) struct Built {
    pub(crate) destination: Arc<dyn Destination>,
    pub(crate) memory: Option<MemoryDestination>,
}

impl Built {
    /// Erases `destination`, noting while its type is still known whether it is a
    /// [`MemoryDestination`] (for [`Telemetry::memory`](crate::Telemetry::memory)).
    pub(crate) fn new<D: Destination>(destination: D) -> Self {
        let memory = (&destination as &dyn Any)
            .downcast_ref::<MemoryDestination>()
            .cloned();
        Built {
            destination: Arc::new(destination),
            memory,
        }
    }
}

/// [`DestinationKind`] with its destination type erased.
trait ErasedKind: Send + Sync {
    fn build(&self, settings: &Settings) -> Result<Built, Vec<ConfigError>>;
}

impl<K: DestinationKind> ErasedKind for K {
    fn build(&self, settings: &Settings) -> Result<Built, Vec<ConfigError>> {
        DestinationKind::build(self, settings).map(Built::new)
    }
}

/// The kinds a builder knows, by name: the built-in ones, then those registered.
#[derive(Clone)]
pub(crate) struct Registry {
    kinds: Vec<(String, Arc<dyn ErasedKind>)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Default for Registry {
    /// The built-in kinds.
    fn default() -> Self {
        let mut kinds = Registry { kinds: Vec::new() };
        kinds.register("logging", LoggingDestination::from_settings);
        kinds.register("memory", memory_from_settings);
        #[cfg(feature = "umami")]
        kinds.register("umami", super::umami::UmamiDestination::from_settings);
        #[cfg(feature = "nats")]
        kinds.register("nats", super::nats::NatsDestination::from_settings);
        #[cfg(feature = "posthog")]
        kinds.register("posthog", super::posthog::PostHogDestination::from_settings);
        #[cfg(feature = "segment")]
        kinds.register("segment", super::segment::SegmentDestination::from_settings);
        #[cfg(feature = "webhook")]
        kinds.register("webhook", super::webhook::WebhookDestination::from_settings);
        #[cfg(feature = "otlp")]
        kinds.register("otlp", super::otlp::OtlpDestination::from_settings);
        kinds
    }
}

/// The `memory` kind: no settings of its own.
fn memory_from_settings(settings: &Settings) -> Result<MemoryDestination, Vec<ConfigError>> {
    let errors = settings.unknown_keys(&[]);
    if errors.is_empty() {
        Ok(MemoryDestination::new())
    } else {
        Err(errors)
    }
}

impl Registry {
    /// Registers `kind` as `name`, replacing a kind of that name (a built-in one too).
    pub(crate) fn register(&mut self, name: impl Into<String>, kind: impl DestinationKind) {
        let name = name.into();
        let kind: Arc<dyn ErasedKind> = Arc::new(kind);
        match self.kinds.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = kind,
            None => self.kinds.push((name, kind)),
        }
    }

    /// The kinds' names, built-in ones first.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().map(|(n, _)| n.as_str())
    }

    /// Builds the destination `dc` configures, from its kind's builder.
    pub(crate) fn build(&self, dc: &DestinationConfig) -> Result<Built, Vec<ConfigError>> {
        let kind = dc.kind();
        if let Some((_, builder)) = self.kinds.iter().find(|(n, _)| n == kind) {
            return builder.build(&dc.settings);
        }
        let (key, what, error_kind) = if dc.kind.is_some() {
            (
                "type",
                format!("unknown destination type `{kind}`"),
                ConfigErrorKind::UnknownType,
            )
        } else {
            (
                "",
                format!("unknown destination `{kind}` (and no `type:` given)"),
                ConfigErrorKind::UnknownDestination,
            )
        };
        Err(vec![
            dc.settings
                .error(
                    key,
                    format!(
                        "{what}; known kinds are {}; register one with destination_kind(\"{kind}\", ...) \
                         or supply an implementation with destination(\"{}\", ...)",
                        self.names().collect::<Vec<_>>().join(", "),
                        dc.name
                    ),
                )
                .with_kind(error_kind),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_kinds_are_registered_and_a_user_kind_can_replace_one() {
        let mut kinds = Registry::default();
        let mut expected = vec!["logging", "memory"];
        if cfg!(feature = "umami") {
            expected.push("umami");
        }
        if cfg!(feature = "nats") {
            expected.push("nats");
        }
        if cfg!(feature = "posthog") {
            expected.push("posthog");
        }
        if cfg!(feature = "segment") {
            expected.push("segment");
        }
        if cfg!(feature = "webhook") {
            expected.push("webhook");
        }
        if cfg!(feature = "otlp") {
            expected.push("otlp");
        }
        assert_eq!(kinds.names().collect::<Vec<_>>(), expected);
        kinds.register("logging", |_: &Settings| Ok(MemoryDestination::new()));
        kinds.register("mine", |_: &Settings| Ok(MemoryDestination::new()));
        assert_eq!(kinds.names().filter(|n| *n == "logging").count(), 1);
        assert_eq!(kinds.names().last(), Some("mine"));
        let built = kinds.build(&DestinationConfig::new("logging")).unwrap();
        assert!(
            built.memory.is_some(),
            "the registered kind replaced the built-in one"
        );
    }

    #[test]
    fn a_memory_destination_is_recognised_only_while_its_type_is_known() {
        assert!(Built::new(MemoryDestination::new()).memory.is_some());
        assert!(Built::new(LoggingDestination::default()).memory.is_none());
    }

    #[test]
    fn an_unknown_kind_names_every_known_one() {
        let mut kinds = Registry::default();
        kinds.register("mykind", |_: &Settings| Ok(MemoryDestination::new()));
        let Err(errors) = kinds.build(&DestinationConfig::new("audit").with_kind("nope")) else {
            panic!("an unknown kind builds nothing");
        };
        assert_eq!(errors[0].path(), "telemetry.destinations.audit.type");
        assert!(
            errors[0].message().contains("logging, memory"),
            "{}",
            errors[0]
        );
        assert!(errors[0].message().contains(", mykind;"), "{}", errors[0]);
    }
}
