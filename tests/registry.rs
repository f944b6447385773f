//! Destination kinds registered by the user: built from YAML `type:`, checked like the
//! built-in kinds, listed when a kind is unknown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_telemetry::config::{ConfigError, Settings};
use tower_telemetry::{
    Event, Telemetry,
    config::{Config, ConfigErrors},
    destination::{BoxFuture, DeliveryError, Destination},
    props,
};

/// A destination of the user's own kind: keeps `<tag>:<event name>` per delivered event.
#[derive(Clone)]
struct Collect {
    tag: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Destination for Collect {
    fn name(&self) -> &str {
        "collect"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut seen = self.seen.lock().unwrap();
            seen.extend(batch.iter().map(|e| format!("{}:{}", self.tag, e.name())));
            Ok(())
        })
    }
}

/// The `collect` kind: `tag` (a string, required) and nothing else.
fn collect_kind(
    seen: Arc<Mutex<Vec<String>>>,
) -> impl Fn(&Settings) -> Result<Collect, Vec<ConfigError>> + Send + Sync + 'static {
    move |settings: &Settings| {
        let mut errors = settings.unknown_keys(&["tag"]);
        let tag = match settings.str("tag") {
            Ok(Some(tag)) => tag.to_owned(),
            Ok(None) => {
                errors.push(settings.error("tag", "missing: a tag for the collected events"));
                String::new()
            }
            Err(e) => {
                errors.push(e);
                String::new()
            }
        };
        if errors.is_empty() {
            Ok(Collect {
                tag,
                seen: seen.clone(),
            })
        } else {
            Err(errors)
        }
    }
}

fn build(yaml: &str, seen: &Arc<Mutex<Vec<String>>>) -> Result<Telemetry, ConfigErrors> {
    Telemetry::builder()
        .destination_kind("collect", collect_kind(seen.clone()))
        .config(Config::from_yaml_str(yaml)?)
        .build()
}

#[tokio::test]
async fn a_user_kind_is_built_from_yaml_and_receives_its_events() {
    let seen = Arc::default();
    let telemetry = build(
        "telemetry:
  destinations:
    audit:
      type: collect
      tag: audit
      events: [payment.*]
    memory:
      events: [user.*]
",
        &seen,
    )
    .unwrap();
    telemetry.track("payment.completed", props! { "amount" => 9.99 });
    telemetry.track("user.signup", props! {});
    let report = telemetry.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.destination("audit").unwrap().delivered, 1);
    assert_eq!(*seen.lock().unwrap(), ["audit:payment.completed"]);
    assert!(
        telemetry.memory("audit").is_none(),
        "a user kind's destination is not a memory destination"
    );
}

#[test]
fn a_user_kinds_settings_errors_carry_the_key_path_and_line() {
    let seen = Arc::default();
    let err = build(
        "telemetry:
  destinations:
    audit:
      type: collect
      tag: 42
      colour: blue
",
        &seen,
    )
    .unwrap_err();
    let errors = err.errors();
    assert_eq!(errors.len(), 2, "{err}");
    let unknown = errors
        .iter()
        .find(|e| e.path() == "telemetry.destinations.audit.colour")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(unknown.line(), Some(6));
    let tag = errors
        .iter()
        .find(|e| e.path() == "telemetry.destinations.audit.tag")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(tag.line(), Some(5));
    assert!(
        tag.to_string()
            .starts_with("telemetry.destinations.audit.tag (line 5): expected a string"),
        "{tag}"
    );
}

#[test]
fn an_unknown_kind_lists_the_registered_ones() {
    let seen = Arc::default();
    let err = build(
        "telemetry:\n  destinations:\n    audit:\n      type: colect\n",
        &seen,
    )
    .unwrap_err();
    let e = &err.errors()[0];
    assert_eq!(e.path(), "telemetry.destinations.audit.type");
    assert!(
        e.message().contains("unknown destination type `colect`"),
        "{e}"
    );
    assert!(e.message().contains("logging, memory"), "{e}");
    assert!(e.message().contains(", collect;"), "{e}");
}

#[tokio::test]
async fn a_user_kind_may_replace_a_built_in_one() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let telemetry = Telemetry::builder()
        .destination_kind("logging", collect_kind(Arc::clone(&seen)))
        .config(
            Config::from_yaml_str("telemetry:\n  destinations:\n    logging:\n      tag: log\n")
                .unwrap(),
        )
        .build()
        .unwrap();
    telemetry.track("user.signup", props! {});
    telemetry.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*seen.lock().unwrap(), ["log:user.signup"]);
}

#[cfg(feature = "nats")]
mod relay {
    use super::*;
    use tower_telemetry::relay::{Relay, RelayConfig};

    const RELAY: &str = "relay:
  servers: [nats://127.0.0.1:4222]
telemetry:
  destinations:
    audit:
      type: collect
";

    #[test]
    fn the_relay_builds_user_kinds_with_the_same_checks() {
        let seen = Arc::default();
        let (relay, telemetry) =
            RelayConfig::from_yaml_str(&format!("{RELAY}      tag: relayed\n")).unwrap();
        Relay::builder(relay)
            .destination_kind("collect", collect_kind(Arc::clone(&seen)))
            .config(telemetry)
            .build()
            .unwrap();

        let (relay, telemetry) = RelayConfig::from_yaml_str(RELAY).unwrap();
        let err = Relay::builder(relay)
            .destination_kind("collect", collect_kind(seen))
            .config(telemetry)
            .build()
            .unwrap_err();
        assert_eq!(err.errors()[0].path(), "telemetry.destinations.audit.tag");

        let (relay, telemetry) = RelayConfig::from_yaml_str(RELAY).unwrap();
        let err = Relay::builder(relay).config(telemetry).build().unwrap_err();
        assert!(
            err.errors()[0]
                .message()
                .contains("unknown destination type `collect`"),
            "{err}"
        );
    }
}
