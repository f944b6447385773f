//! The compile step both builders share: configuration + supplied destinations + destination
//! kinds → a router, one lane per enabled destination, and the memory handles.
//!
//! [`TelemetryBuilder::build`](crate::TelemetryBuilder::build) turns the lanes into queues and
//! workers; [`RelayBuilder::build`](crate::relay::RelayBuilder::build) into its delivery
//! targets. Either way a destination is built, checked and routed the same.

use std::collections::HashMap;
use std::fmt;

use crate::config::{Config, ConfigError, DeliveryConfig, DestinationConfig};
use crate::destination::registry::{Built, Registry};
use crate::destination::{Destination, DestinationKind, MemoryDestination};
use crate::dispatch::{LaneSpec, PropertyView};
use crate::routing::{Filter, MAX_DESTINATIONS, RouteTarget, Router, threshold};

/// A compiled configuration. Lane `i` is bit `i` of the router's routes.
pub(crate) struct Compiled {
    pub(crate) router: Router,
    pub(crate) lanes: Vec<LaneSpec>,
    /// The [`MemoryDestination`]s among the lanes, by destination name.
    pub(crate) memories: HashMap<String, MemoryDestination>,
}

/// What a builder gathers in code besides the configuration: destinations supplied by name and
/// the destination kinds registered. The same for the handle's builder and the relay's.
#[derive(Default)]
pub(crate) struct Sources {
    supplied: Vec<(String, Built)>,
    kinds: Registry,
}

impl Sources {
    /// Supplies destination `name`; supplying a name again keeps the last.
    pub(crate) fn supply(&mut self, name: String, destination: impl Destination) {
        self.supplied.retain(|(n, _)| *n != name);
        self.supplied.push((name, Built::new(destination)));
    }

    /// Registers (or replaces) destination kind `kind`.
    pub(crate) fn register(&mut self, kind: String, builder: impl DestinationKind) {
        self.kinds.register(kind, builder);
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field(
                "supplied",
                &self.supplied.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("kinds", &self.kinds)
            .finish()
    }
}

/// Builds every enabled destination of `config` (a supplied one by name, else its kind's
/// from the registered kinds), with its effective delivery settings, property view and route
/// target.
///
/// A supplied destination the configuration does not name is added, receiving every event.
/// Every problem found is appended to `errors`, per destination in configuration order; what
/// is returned then is incomplete and only good for more checks.
pub(crate) fn compile(
    config: &Config,
    sources: Sources,
    errors: &mut Vec<ConfigError>,
) -> Compiled {
    let Sources {
        mut supplied,
        kinds,
    } = sources;
    let mut configs = config.destinations.clone();
    for (name, _) in &supplied {
        if !configs.iter().any(|d| d.name == *name) {
            configs.push(DestinationConfig::new(name.clone()));
        }
    }
    let mut lanes = Vec::new();
    let mut targets = Vec::new();
    let mut memories = HashMap::new();
    for dc in configs.iter().filter(|d| d.enabled) {
        let given = supplied
            .iter()
            .position(|(n, _)| *n == dc.name)
            .map(|i| supplied.swap_remove(i).1);
        let built = match given {
            Some(built) => built,
            None => match kinds.build(dc) {
                Ok(built) => built,
                Err(mut e) => {
                    errors.append(&mut e);
                    continue;
                }
            },
        };
        let view = match PropertyView::new(dc.allow_properties.as_deref(), &dc.drop_properties) {
            Ok(view) => view,
            Err((list, i, msg)) => {
                errors.push(ConfigError::new(
                    format!("{}.{list}[{i}]", dc.settings.path),
                    None,
                    msg,
                ));
                None
            }
        };
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
        if let Some(memory) = built.memory {
            memories.insert(dc.name.clone(), memory);
        }
        lanes.push(LaneSpec {
            name: dc.name.clone(),
            delivery: effective_delivery(dc, &*built.destination),
            destination: built.destination,
            view,
            #[cfg(feature = "spool")]
            spool: dc.spool.clone().map(|config| {
                let line = dc.settings.lines.get("spool").copied();
                crate::spool::Spool::configured(config, format!("{}.spool", dc.settings.path), line)
            }),
        });
    }
    if lanes.len() > MAX_DESTINATIONS {
        errors.push(ConfigError::new(
            "telemetry.destinations",
            None,
            format!(
                "{} destinations are enabled; at most {MAX_DESTINATIONS} are supported",
                lanes.len()
            ),
        ));
    }
    let router = Router::configured(targets, &config.sampling, errors);
    Compiled {
        router,
        lanes,
        memories,
    }
}

/// The destination's own defaults, overridden by what the configuration gave explicitly.
fn effective_delivery(dc: &DestinationConfig, destination: &dyn Destination) -> DeliveryConfig {
    let defaults = destination.delivery_defaults();
    let given = &dc.delivery;
    let explicit = dc.delivery_explicit;
    DeliveryConfig {
        queue_capacity: given.queue_capacity,
        queue_max_bytes: given.queue_max_bytes,
        overflow: given.overflow,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::destination::LoggingDestination;

    fn compiled(config: &Config, supplied: Vec<(String, Built)>) -> (Compiled, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let sources = Sources {
            supplied,
            kinds: Registry::default(),
        };
        let c = compile(config, sources, &mut errors);
        (c, errors)
    }

    #[test]
    fn lanes_follow_the_configuration_then_the_supplied_extras() {
        let config = Config::default()
            .with_destination(DestinationConfig::new("logging"))
            .with_destination(DestinationConfig::new("off").with_enabled(false))
            .with_destination(DestinationConfig::new("audit").with_kind("memory"));
        let supplied = vec![
            ("extra".to_owned(), Built::new(MemoryDestination::new())),
            (
                "logging".to_owned(),
                Built::new(LoggingDestination::default()),
            ),
        ];
        let (c, errors) = compiled(&config, supplied);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<_> = c.lanes.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["logging", "audit", "extra"]);
        let mut memories: Vec<_> = c.memories.keys().map(String::as_str).collect();
        memories.sort_unstable();
        assert_eq!(memories, ["audit", "extra"]);
        assert_eq!(c.router.compute("x.y") & crate::routing::DEST_MASK, 0b111);
    }

    #[test]
    fn explicit_delivery_keys_override_the_destinations_defaults_and_only_those() {
        let given = DeliveryConfig::default()
            .with_batch_size(7)
            .with_flush_interval(Duration::from_secs(9));
        let mut dc = DestinationConfig::new("m").with_delivery(given);
        dc.delivery_explicit.flush_interval = false;
        let memory = MemoryDestination::new();
        let effective = effective_delivery(&dc, &memory);
        assert_eq!(effective.batch_size, 7);
        assert_eq!(
            effective.flush_interval,
            memory.delivery_defaults().flush_interval
        );
    }

    #[test]
    fn errors_come_per_destination_in_configuration_order() {
        let config = Config::default()
            .with_destination(
                DestinationConfig::new("a")
                    .with_kind("memory")
                    .with_events(["["]),
            )
            .with_destination(DestinationConfig::new("b").with_kind("nope"))
            .with_destination(
                DestinationConfig::new("c")
                    .with_kind("memory")
                    .with_events(["x.["]),
            );
        let (c, errors) = compiled(&config, Vec::new());
        let paths: Vec<_> = errors.iter().map(ConfigError::path).collect();
        assert_eq!(
            paths,
            [
                "telemetry.destinations.a.events[0]",
                "telemetry.destinations.b.type",
                "telemetry.destinations.c.events[0]",
            ]
        );
        assert_eq!(
            c.lanes.len(),
            2,
            "a destination that can not be built has no lane"
        );
    }
}
