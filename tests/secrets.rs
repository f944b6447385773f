//! Secrets are never printed: a catalogue of bad and failing configurations, each with a
//! distinctive secret from `${VAR}` or in a URL's userinfo. Every error string, every `Debug`
//! and every log line (captured at TRACE, every target) is searched for it.
#![cfg(all(feature = "umami", feature = "nats"))]

mod support;

use std::time::Duration;

use support::accounted;
use support::logs::Logs;
use tower_telemetry::config::{
    Config, ConfigErrors, DeliveryConfig, DestinationConfig, RetryConfig,
};
use tower_telemetry::destination::nats::{NatsConfig, NatsDestination};
use tower_telemetry::destination::umami::{UmamiConfig, UmamiDestination};
use tower_telemetry::relay::RelayConfig;
use tower_telemetry::{Telemetry, track};

const SECRET: &str = "tok_live_Qx7Secret9";
const WEBSITE: &str = "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60";

fn env(name: &str) -> Option<String> {
    match name {
        "SECRET" => Some(SECRET.to_owned()),
        // A whole URL with the password in it.
        "NATS_URL" => Some(format!("nats://telemetry:{SECRET}@127.0.0.1:notaport")),
        "UMAMI_URL" => Some(format!("https://user:{SECRET}@/")),
        _ => None,
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    assert!(
        !text.contains("Qx7Secret"),
        "{what} shows part of the secret: {text}"
    );
}

fn all(errors: &ConfigErrors) -> String {
    // Display, Debug and each message on its own.
    let mut text = format!("{errors}\n{errors:?}\n");
    for e in errors.errors() {
        text.push_str(e.message());
        text.push('\n');
    }
    text
}

/// Parses `yaml` with the test's environment and, if it parses, builds a handle from it.
fn config_errors(yaml: &str) -> String {
    match Config::from_yaml_str_with_env(yaml, env) {
        Err(errors) => all(&errors),
        Ok(config) => {
            let debug = format!("{config:?}");
            match Telemetry::builder().config(config).build() {
                Err(errors) => format!("{debug}\n{}", all(&errors)),
                Ok(_) => panic!("expected an error from {yaml}"),
            }
        }
    }
}

const CONFIGS: &[(&str, &str)] = &[
    ("a boolean", "telemetry:\n  enabled: ${SECRET}\n"),
    ("debug", "telemetry:\n  debug: ${SECRET}\n"),
    ("a rate", "telemetry:\n  sampling:\n    rate: ${SECRET}\n"),
    ("a mapping", "telemetry:\n  sampling: ${SECRET}\n"),
    (
        "a limit",
        "telemetry:\n  limits:\n    max_event_size: x${SECRET}\n",
    ),
    (
        "logging level",
        "telemetry:\n  destinations:\n    logging:\n      level: ${SECRET}\n",
    ),
    (
        "logging output",
        "telemetry:\n  destinations:\n    logging:\n      output: \"pre-${SECRET}\"\n",
    ),
    (
        "umami website_id",
        "telemetry:\n  destinations:\n    umami:\n      url: https://umami.example\n      website_id: ${SECRET}\n",
    ),
    (
        "umami url without a host",
        "telemetry:\n  destinations:\n    umami:\n      url: ${UMAMI_URL}\n      website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60\n",
    ),
    (
        "umami url, not http",
        "telemetry:\n  destinations:\n    umami:\n      url: ftp://user:${SECRET}@umami.example\n      website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60\n",
    ),
    (
        "umami url with a query",
        "telemetry:\n  destinations:\n    umami:\n      url: \"https://umami.example/?key=${SECRET}\"\n      website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60\n",
    ),
    (
        "umami url, the secret alone",
        "telemetry:\n  destinations:\n    umami:\n      url: ${SECRET}\n      website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60\n      user_agent: 3\n",
    ),
    (
        "nats servers",
        "telemetry:\n  destinations:\n    nats:\n      servers: [\"${NATS_URL}\"]\n",
    ),
    (
        "nats servers, a password in a literal URL",
        "telemetry:\n  destinations:\n    nats:\n      servers: [\"nats://u:tok_live_Qx7Secret9@127.0.0.1:notaport\"]\n",
    ),
    (
        "nats token of the wrong type",
        "telemetry:\n  destinations:\n    nats:\n      token: [\"${SECRET}\"]\n      user: ${SECRET}\n",
    ),
    (
        "nats subject",
        "telemetry:\n  destinations:\n    nats:\n      subject: \"a b ${SECRET}\"\n",
    ),
    (
        "a kind's own key",
        "telemetry:\n  destinations:\n    mine:\n      type: ${SECRET}\n",
    ),
    (
        "an unknown key's value",
        "telemetry:\n  destinations:\n    logging:\n      lvl: ${SECRET}\n      level: 7\n",
    ),
];

#[test]
fn config_errors_show_the_reference_never_the_value() {
    for (what, yaml) in CONFIGS {
        let text = config_errors(yaml);
        assert_clean(what, &text);
    }
    // The reference is what they show instead.
    let text = config_errors(CONFIGS[0].1);
    assert!(
        text.contains("expected true or false, found a string from `${SECRET}`"),
        "{text}"
    );
    let text = config_errors(CONFIGS[7].1);
    assert!(text.contains("`${SECRET}` is not a UUID"), "{text}");
    let text = config_errors(CONFIGS[12].1);
    assert!(text.contains("telemetry:***@127.0.0.1"), "{text}");
}

#[test]
fn relay_config_errors_and_debug_hide_the_secret() {
    let yaml = "telemetry: {}\nrelay:\n  servers: [\"${NATS_URL}\"]\n  stream: ${SECRET}\n  ack_wait: ${SECRET}\n";
    match RelayConfig::from_yaml_str_with_env(yaml, env) {
        Err(errors) => assert_clean("relay errors", &all(&errors)),
        Ok(config) => panic!("expected errors, got {config:?}"),
    }
    let yaml = "telemetry: {}\nrelay:\n  servers: [\"nats://telemetry:${SECRET}@127.0.0.1:4222\"]\n  token: ${SECRET}\n";
    match RelayConfig::from_yaml_str_with_env(yaml, env) {
        Err(errors) => assert_clean("relay errors", &all(&errors)),
        Ok((relay, config)) => {
            let debug = format!("{relay:?} {config:?}");
            assert_clean("RelayConfig's Debug", &debug);
            assert!(debug.contains("telemetry:***@127.0.0.1"), "{debug}");
        }
    }
}

#[test]
fn debug_of_every_config_and_destination_type_masks_passwords() {
    let url = format!("https://user:{SECRET}@umami.example");
    let umami = UmamiConfig::new(url.clone(), WEBSITE);
    let debug = format!("{umami:?}");
    assert_clean("UmamiConfig", &debug);
    assert!(debug.contains("user:***@umami.example"), "{debug}");
    let destination = UmamiDestination::new(umami).unwrap();
    assert_clean("UmamiDestination", &format!("{destination:?}"));

    let servers = [format!("nats://telemetry:{SECRET}@127.0.0.1:4222")];
    let nats = NatsConfig::new(servers.clone());
    let debug = format!("{nats:?}");
    assert_clean("NatsConfig", &debug);
    assert!(
        debug.contains("nats://telemetry:***@127.0.0.1:4222"),
        "{debug}"
    );
    let token = NatsConfig::new([format!("nats://{SECRET}@127.0.0.1:4222")]);
    assert_clean("NatsConfig with a token URL", &format!("{token:?}"));
    let destination = NatsDestination::new(nats).unwrap();
    assert_clean("NatsDestination", &format!("{destination:?}"));
    let relay = RelayConfig::new(servers);
    assert_clean("RelayConfig", &format!("{relay:?}"));

    // Settings, DestinationConfig and Config read from a file with `${VAR}`s.
    let yaml = "telemetry:\n  destinations:\n    umami:\n      url: https://user:${SECRET}@umami.example\n      website_id: 5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60\n    mine:\n      type: custom\n      token: ${SECRET}\n      nested:\n        key: ${SECRET}\n";
    let config = Config::from_yaml_str_with_env(yaml, env).unwrap();
    assert_clean("Config", &format!("{config:?}"));
    let mine = config.destination("mine").unwrap();
    assert_clean("DestinationConfig", &format!("{mine:?}"));
    assert_clean("Settings", &format!("{:?}", mine.settings()));
    // A kind's own error that quotes the value it read.
    let token = mine.settings().str("token").unwrap().unwrap();
    assert_eq!(token, SECRET, "the value itself is there to use");
    let e = mine
        .settings()
        .error("token", format!("`{token}` is revoked"));
    assert_eq!(e.message(), "`${SECRET}` is revoked");
    let nested = mine.settings().section("nested").unwrap().unwrap();
    let e = nested.error("key", format!("`{SECRET}` is revoked"));
    assert_clean("a nested section's error", &e.to_string());
}

#[test]
fn programmatic_configs_mask_url_passwords_in_errors() {
    let bad = [
        format!("https://user:{SECRET}@/"),
        format!("ftp://user:{SECRET}@umami.example"),
        format!("https://user:{SECRET}@umami.example/?q=1"),
        format!("https://user:{SECRET}@exa mple"),
    ];
    for url in bad {
        let errors = UmamiDestination::new(UmamiConfig::new(url.clone(), WEBSITE)).unwrap_err();
        assert_clean(&url, &all(&errors));
    }
    let errors = NatsDestination::new(NatsConfig::new([format!(
        "nats://telemetry:{SECRET}@127.0.0.1:notaport"
    )]))
    .unwrap_err();
    let text = all(&errors);
    assert_clean("NatsDestination::new", &text);
    assert!(text.contains("telemetry:***@"), "{text}");
}

fn fast() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_flush_interval(Duration::ZERO)
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
}

#[tokio::test]
async fn nats_down_with_a_password_url_logs_no_password() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    // Nothing listens on the port: every connection is refused.
    let port = support::nats_server::free_port();
    let nats = NatsDestination::new(
        NatsConfig::new([format!("nats://telemetry:{SECRET}@127.0.0.1:{port}")])
            .with_connect_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("nats").with_delivery(fast())),
        )
        .destination("nats", nats.clone())
        .build()
        .unwrap();
    for seq in 0..3u64 {
        track!(&t => "user.clicked", seq = seq);
    }
    let report = t.shutdown(Duration::from_secs(20)).await;
    let d = report.destination("nats").unwrap();
    assert_eq!(d.failed, 3, "{d:?}");
    assert!(d.retries >= 1, "{d:?}");
    accounted(d);
    let text = logs.text();
    assert!(text.contains("giving up"), "{text}");
    assert!(text.contains("retrying"), "{text}");
    assert!(text.contains("telemetry:***@127.0.0.1"), "{text}");
    assert_clean("the logs", &text);
    assert_clean("the report", &format!("{report} {report:?} {nats:?}"));
}

#[tokio::test]
async fn umami_down_with_userinfo_logs_no_password() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    let addr = support::umami_server::reserve_addr();
    let url = format!("http://user:{SECRET}@{addr}");
    let umami = UmamiDestination::new(UmamiConfig::new(url, WEBSITE)).unwrap();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("umami").with_delivery(fast())),
        )
        .destination("umami", umami.clone())
        .build()
        .unwrap();
    for seq in 0..3u64 {
        track!(&t => "user.clicked", seq = seq);
    }
    let report = t.shutdown(Duration::from_secs(20)).await;
    let d = report.destination("umami").unwrap();
    assert_eq!(d.failed, 3, "{d:?}");
    accounted(d);
    let text = logs.text();
    assert!(text.contains("giving up"), "{text}");
    assert_clean("the logs", &text);
    assert_clean("the report", &format!("{report} {report:?} {umami:?}"));
}

#[tokio::test]
async fn a_password_in_the_server_url_logs_in_and_is_never_logged() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    let bin = support::nats_server::binary();
    let server = support::nats_server::NatsServer::start_with(
        &bin,
        &["--user", "telemetry", "--pass", SECRET],
    )
    .await;
    let url = server
        .url()
        .replace("nats://", &format!("nats://telemetry:{SECRET}@"));
    let nats = NatsDestination::new(NatsConfig::new([url])).unwrap();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("nats").with_delivery(fast())),
        )
        .destination("nats", nats.clone())
        .build()
        .unwrap();
    for seq in 0..3u64 {
        track!(&t => "user.clicked", seq = seq);
    }
    let report = t.shutdown(Duration::from_secs(20)).await;
    let d = report.destination("nats").unwrap();
    assert_eq!(d.delivered, 3, "the URL's credentials logged in: {d:?}");
    accounted(d);
    assert_clean("the logs", &logs.text());
    // The wrong password is refused: the credentials are really used.
    let wrong = server.url().replace("nats://", "nats://telemetry:wrong@");
    let nats =
        NatsDestination::new(NatsConfig::new([wrong]).with_connect_timeout(Duration::from_secs(2)))
            .unwrap();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("nats").with_delivery(fast())),
        )
        .destination("nats", nats)
        .build()
        .unwrap();
    track!(&t => "user.clicked");
    let report = t.shutdown(Duration::from_secs(20)).await;
    let d = report.destination("nats").unwrap();
    assert_eq!((d.delivered, d.failed), (0, 1), "{d:?}");
    assert_clean("the logs", &logs.text());
}
