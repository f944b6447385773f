//! The YAML configuration: parsing, validation errors (key path and line), `${VAR}`
//! substitution and the `TELEMETRY_*` overrides, through the public API only.

use std::collections::HashMap;
use std::time::Duration;

use tower_telemetry::config::{Config, ConfigErrors, DeliveryConfig, RetryConfig, SampleKey};

/// An environment made of `pairs`; never the process environment.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn parse(yaml: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_str_with_env(yaml, env(&[]))
}

fn errors_of(yaml: &str) -> Vec<(String, Option<usize>, String)> {
    match parse(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e
            .errors()
            .iter()
            .map(|e| (e.path().to_owned(), e.line(), e.message().to_owned()))
            .collect(),
    }
}

/// The seed module's `config.yaml`, exactly.
const SEED: &str = include_str!("fixtures/seed.yaml");

#[test]
fn the_seed_config_parses() {
    let config = parse(SEED).unwrap();
    assert!(config.is_enabled());
    assert!(!config.is_debug());
    let names: Vec<_> = config.destinations().iter().map(|d| d.name()).collect();
    assert_eq!(names, ["umami", "logging"]);

    let umami = config.destination("umami").unwrap();
    assert!(umami.is_enabled());
    assert_eq!(umami.kind(), "umami");
    assert_eq!(
        umami.events().unwrap(),
        ["user.*", "generation.*", "payment.*"]
    );
    assert_eq!(umami.settings().keys().count(), 0);
    assert_eq!(umami.delivery(), &DeliveryConfig::default());

    let logging = config.destination("logging").unwrap();
    assert_eq!(logging.events().unwrap(), ["error.*", "system.*"]);
    assert_eq!(logging.settings().get("level").unwrap(), "INFO");
    assert_eq!(logging.settings().path(), "telemetry.destinations.logging");

    assert!(!config.sampling().is_enabled());
    assert_eq!(config.sampling().rate(), 1.0);
}

#[test]
fn the_seed_config_parses_with_block_lists() {
    let yaml = "\
telemetry:
  enabled: true
  debug: false
  destinations:
    umami:
      enabled: true
      events:
        - user.*
        - generation.*
        - payment.*
    logging:
      enabled: true
      level: INFO
      events:
        - error.*
        - system.*
  sampling:
    enabled: false
    rate: 1.0
";
    let config = parse(yaml).unwrap();
    let names: Vec<_> = config.destinations().iter().map(|d| d.name()).collect();
    assert_eq!(names, ["umami", "logging"]);
    assert_eq!(
        config.destination("umami").unwrap().events().unwrap(),
        ["user.*", "generation.*", "payment.*"]
    );
    assert_eq!(
        config
            .destination("logging")
            .unwrap()
            .settings()
            .get("level")
            .unwrap(),
        "INFO"
    );
}

#[test]
fn the_shipped_config_yaml_parses() {
    let yaml = include_str!("../config.yaml");
    let config = parse(yaml).unwrap();
    let names: Vec<_> = config.destinations().iter().map(|d| d.name()).collect();
    assert_eq!(names, ["umami", "logging"]);
    let umami = config.destination("umami").unwrap();
    assert_eq!(
        umami.settings().get("url").unwrap(),
        "http://127.0.0.1:3000"
    );
}

#[test]
fn destination_order_is_the_file_order() {
    let yaml = "telemetry:\n  destinations:\n    zeta: {}\n    alpha: {}\n    memory:\n    mid: {type: memory}\n";
    let config = parse(yaml).unwrap();
    let names: Vec<_> = config.destinations().iter().map(|d| d.name()).collect();
    assert_eq!(names, ["zeta", "alpha", "memory", "mid"]);
    assert_eq!(config.destination("mid").unwrap().kind(), "memory");
}

#[test]
fn every_key_of_the_format() {
    let yaml = "\
telemetry:
  enabled: false
  debug: true
  destinations:
    audit:
      type: memory
      enabled: false
      events: [payment.*, '!payment.debug.*']
      sample_rate: 0.25
      queue_capacity: 500
      batch_size: 50
      flush_interval: 250ms
      concurrency: 4
      timeout: 1.5s
      retry: { max_attempts: 3, initial_backoff: 100ms, max_backoff: 2m }
      custom: { nested: { deep: 1 }, list: [1, two] }
  sampling:
    enabled: true
    rate: 0.5
    key: user
    always: [error.*, payment.*]
  requests:
    enabled: true
    name: http.served
    exclude: [/health, /metrics/*]
";
    let config = parse(yaml).unwrap();
    assert!(!config.is_enabled());
    assert!(config.is_debug());

    let audit = config.destination("audit").unwrap();
    assert_eq!(audit.kind(), "memory");
    assert!(!audit.is_enabled());
    assert_eq!(audit.events().unwrap(), ["payment.*", "!payment.debug.*"]);
    assert_eq!(audit.sample_rate(), 0.25);
    let expected = DeliveryConfig::default()
        .with_queue_capacity(500)
        .with_batch_size(50)
        .with_flush_interval(Duration::from_millis(250))
        .with_concurrency(4)
        .with_timeout(Duration::from_millis(1500))
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(120)),
        );
    assert_eq!(audit.delivery(), &expected);
    let settings = audit.settings();
    assert_eq!(settings.keys().collect::<Vec<_>>(), ["custom"]);
    assert_eq!(
        settings.get("custom").unwrap(),
        &serde_json::json!({ "nested": { "deep": 1 }, "list": [1, "two"] })
    );
    let deep = settings
        .section("custom")
        .unwrap()
        .unwrap()
        .section("nested")
        .unwrap()
        .unwrap();
    let err = deep.error("deep", "too deep");
    assert_eq!(
        err.path(),
        "telemetry.destinations.audit.custom.nested.deep"
    );
    assert_eq!(err.line(), Some(16));

    let sampling = config.sampling();
    assert!(sampling.is_enabled());
    assert_eq!(sampling.rate(), 0.5);
    assert_eq!(sampling.key(), SampleKey::User);
    assert_eq!(sampling.always(), ["error.*", "payment.*"]);

    let requests = config.requests();
    assert!(requests.is_enabled());
    assert_eq!(requests.name(), "http.served");
    assert_eq!(requests.exclude(), ["/health", "/metrics/*"]);
}

#[test]
fn redact_limits_and_property_views() {
    let config = parse(
        "\
telemetry:
  redact:
    enabled: true
    keys: [email, phone]
    defaults: false
    replacement: '***'
  limits:
    max_properties: 16
    max_string_length: 1KiB
    max_depth: 4
    max_event_size: 16000
  destinations:
    umami:
      allow_properties: [model, utm_*]
      drop_properties: [utm_id]
",
    )
    .unwrap();
    let redact = config.redact();
    assert!(redact.is_enabled());
    assert_eq!(
        redact.effective_keys().collect::<Vec<_>>(),
        ["email", "phone"]
    );
    assert_eq!(redact.replacement(), "***");
    assert_eq!(
        config.limits(),
        &tower_telemetry::limits::LimitsConfig::default()
            .with_max_properties(16)
            .with_max_string_length(1024)
            .with_max_depth(4)
            .with_max_event_size(16_000)
    );
    let umami = config.destination("umami").unwrap();
    assert_eq!(umami.allow_properties().unwrap(), ["model", "utm_*"]);
    assert_eq!(umami.drop_properties(), ["utm_id"]);
    // The new keys are not passed to the kind as its own settings.
    assert_eq!(umami.settings().keys().count(), 0);
    // Defaults: the default sensitive keys, the default limits.
    let config = parse("telemetry: {}\n").unwrap();
    assert!(config.redact().effective_keys().any(|k| k == "password"));
    assert_eq!(
        config.limits(),
        &tower_telemetry::limits::LimitsConfig::default()
    );
    for (size, bytes) in [
        ("64KB", 64_000),
        ("64KiB", 65_536),
        ("1MiB", 1 << 20),
        ("512 B", 512),
    ] {
        let c = parse(&format!(
            "telemetry:\n  limits:\n    max_event_size: {size}\n"
        ))
        .unwrap();
        assert_eq!(c.limits().max_event_size(), bytes, "{size}");
    }
}

#[test]
fn settings_keep_their_lines_for_kind_errors() {
    let yaml =
        "telemetry:\n  destinations:\n    umami:\n      url: not a url\n      website_id: abc\n";
    let config = parse(yaml).unwrap();
    let settings = config.destination("umami").unwrap().settings();
    let err = settings.error("website_id", "not a UUID");
    assert_eq!(err.path(), "telemetry.destinations.umami.website_id");
    assert_eq!(err.line(), Some(5));
    assert_eq!(settings.str("url").unwrap(), Some("not a url"));
}

#[test]
fn malformed_configs_name_the_key_path_and_line() {
    // (yaml, key path, line, a fragment of the message)
    let cases: &[(&str, &str, usize, &str)] = &[
        // 1. unknown key at the top of `telemetry`
        (
            "telemetry:\n  enabled: true\n  destinatons: {}\n",
            "telemetry.destinatons",
            3,
            "did you mean `destinations`",
        ),
        // 2. unknown top-level key
        (
            "telemetry: {}\nextra: 1\n",
            "extra",
            2,
            "unknown key `extra`",
        ),
        // 3. wrong type: a string where a boolean is expected
        (
            "telemetry:\n  enabled: maybe\n",
            "telemetry.enabled",
            2,
            "expected true or false, found the string `maybe`",
        ),
        // 4. wrong type: a number where a boolean is expected
        (
            "telemetry:\n  debug: 1\n",
            "telemetry.debug",
            2,
            "found the number `1`",
        ),
        // 5. a rate above 1
        (
            "telemetry:\n  sampling:\n    enabled: true\n    rate: 1.5\n",
            "telemetry.sampling.rate",
            4,
            "from 0 to 1",
        ),
        // 6. a negative rate
        (
            "telemetry:\n  sampling:\n    rate: -0.1\n",
            "telemetry.sampling.rate",
            3,
            "from 0 to 1",
        ),
        // 7. an unknown logging level
        (
            "telemetry:\n  destinations:\n    logging:\n      enabled: true\n      level: LOUD\n",
            "telemetry.destinations.logging.level",
            5,
            "found the string `LOUD`",
        ),
        // 8. a bad glob in a flow list, reported with its index
        (
            "telemetry:\n  destinations:\n    umami:\n      events: [user.*, 'bad glob']\n",
            "telemetry.destinations.umami.events[1]",
            4,
            "invalid glob `bad glob`",
        ),
        // 9. a bad glob in a block list, on its own line
        (
            "telemetry:\n  destinations:\n    umami:\n      events:\n        - user.*\n        - user.[x]\n",
            "telemetry.destinations.umami.events[1]",
            6,
            "invalid glob",
        ),
        // 10. a missing variable without a default
        (
            "telemetry:\n  destinations:\n    umami:\n      url: http://x\n      website_id: ${UMAMI_WEBSITE_ID}\n",
            "telemetry.destinations.umami.website_id",
            5,
            "`UMAMI_WEBSITE_ID` is not set",
        ),
        // 11. YAML syntax error: an unclosed flow list
        (
            "telemetry:\n  destinations:\n    umami:\n      events: [user.*, generation.*\n    logging: {}\n",
            "telemetry.destinations.umami.events",
            5,
            "invalid YAML",
        ),
        // 12. no `telemetry:` key
        (
            "destinations:\n  umami: {}\n",
            "telemetry",
            1,
            "missing the top-level `telemetry:` key",
        ),
        // 13. a list where a mapping is expected
        (
            "telemetry:\n  sampling: [1, 2]\n",
            "telemetry.sampling",
            2,
            "expected a mapping, found a list",
        ),
        // 14. a bad duration
        (
            "telemetry:\n  destinations:\n    umami:\n      flush_interval: soon\n",
            "telemetry.destinations.umami.flush_interval",
            4,
            "expected a duration",
        ),
        // 15. a destination that is not a mapping
        (
            "telemetry:\n  destinations:\n    umami: yes\n",
            "telemetry.destinations.umami",
            3,
            "found the string `yes`",
        ),
        // 16. unknown key inside retry
        (
            "telemetry:\n  destinations:\n    umami:\n      retry:\n        max_attempts: 3\n        jitter: full\n",
            "telemetry.destinations.umami.retry.jitter",
            6,
            "unknown key `jitter`",
        ),
        // 17. retry.max_attempts below 1
        (
            "telemetry:\n  destinations:\n    umami:\n      retry: {max_attempts: 0}\n",
            "telemetry.destinations.umami.retry.max_attempts",
            4,
            "of at least 1",
        ),
        // 18. batch_size below 1
        (
            "telemetry:\n  destinations:\n    m:\n      batch_size: 0\n",
            "telemetry.destinations.m.batch_size",
            4,
            "of at least 1",
        ),
        // 19. unknown key inside sampling
        (
            "telemetry:\n  sampling:\n    ratio: 0.5\n",
            "telemetry.sampling.ratio",
            3,
            "unknown key `ratio`",
        ),
        // 20. unknown key inside requests
        (
            "telemetry:\n  requests:\n    enabled: true\n    include: [/x]\n",
            "telemetry.requests.include",
            4,
            "unknown key",
        ),
        // 21. an unknown sampling key
        (
            "telemetry:\n  sampling:\n    key: session\n",
            "telemetry.sampling.key",
            3,
            "a sampling key (one of event, request, user)",
        ),
        // 22. `destinations` is a list
        (
            "telemetry:\n  destinations:\n    - umami\n",
            "telemetry.destinations",
            2,
            "found a list",
        ),
        // 23. `telemetry` is a scalar
        ("telemetry: on\n", "telemetry", 1, "expected a mapping"),
        // 24. a duplicate key
        (
            "telemetry:\n  enabled: true\n  enabled: false\n",
            "telemetry.enabled",
            3,
            "duplicate key `enabled`; it is already given on line 2",
        ),
        // 25. a negative duration
        (
            "telemetry:\n  destinations:\n    m:\n      timeout: -1\n",
            "telemetry.destinations.m.timeout",
            4,
            "expected a duration",
        ),
        // 26. events is a single string, not a list
        (
            "telemetry:\n  destinations:\n    m:\n      events: user.*\n",
            "telemetry.destinations.m.events",
            4,
            "expected a list",
        ),
        // 27. a malformed variable reference
        (
            "telemetry:\n  destinations:\n    m:\n      url: ${not valid}\n",
            "telemetry.destinations.m.url",
            4,
            "not a variable reference",
        ),
        // 28. an empty file
        ("", "telemetry", 0, "empty"),
        // 28b. a file of comments only
        ("# nothing here\n", "telemetry", 0, "empty"),
        // 29. a syntax error at the top: bad indentation
        (
            "telemetry:\n  enabled: true\n debug: false\n",
            "telemetry",
            3,
            "invalid YAML",
        ),
        // 30. sample_rate out of range
        (
            "telemetry:\n  destinations:\n    m:\n      sample_rate: 2\n",
            "telemetry.destinations.m.sample_rate",
            4,
            "from 0 to 1",
        ),
        // 31. a quoted boolean is a string
        (
            "telemetry:\n  enabled: \"true\"\n",
            "telemetry.enabled",
            2,
            "found the string `true`",
        ),
        // 32. a bad level type
        (
            "telemetry:\n  destinations:\n    logging:\n      level: 3\n",
            "telemetry.destinations.logging.level",
            4,
            "a log level",
        ),
        // 33. level checked by the kind, not the name
        (
            "telemetry:\n  destinations:\n    audit_log:\n      type: logging\n      level: verbose\n",
            "telemetry.destinations.audit_log.level",
            5,
            "a log level",
        ),
        // 34. a bad request exclusion glob
        (
            "telemetry:\n  requests:\n    exclude: ['/a b']\n",
            "telemetry.requests.exclude[0]",
            3,
            "invalid glob",
        ),
        // 35. a bad `always` glob
        (
            "telemetry:\n  sampling:\n    always: ['[x]']\n",
            "telemetry.sampling.always[0]",
            3,
            "invalid glob",
        ),
        // 36. a second document
        (
            "telemetry: {}\n---\ntelemetry: {}\n",
            "telemetry",
            2,
            "second YAML document",
        ),
        // 38. an unknown key under `redact`
        (
            "telemetry:\n  redact:\n    key: [email]\n",
            "telemetry.redact.key",
            3,
            "did you mean `keys`",
        ),
        // 39. redact keys that are not a list
        (
            "telemetry:\n  redact:\n    keys: email\n",
            "telemetry.redact.keys",
            3,
            "expected a list of property keys",
        ),
        // 40. an empty redact key, reported with its index
        (
            "telemetry:\n  redact:\n    keys: [email, '']\n",
            "telemetry.redact.keys[1]",
            3,
            "found an empty string",
        ),
        // 41. a redact key that is a mapping
        (
            "telemetry:\n  redact:\n    keys:\n      - email\n      - {a: 1}\n",
            "telemetry.redact.keys[1]",
            5,
            "expected a property key",
        ),
        // 42. a non-boolean `defaults`
        (
            "telemetry:\n  redact:\n    defaults: no\n",
            "telemetry.redact.defaults",
            3,
            "expected true or false",
        ),
        // 43. a replacement that is not a string
        (
            "telemetry:\n  redact:\n    replacement: [x]\n",
            "telemetry.redact.replacement",
            3,
            "expected a replacement text",
        ),
        // 44. an unknown limit
        (
            "telemetry:\n  limits:\n    max_props: 10\n",
            "telemetry.limits.max_props",
            3,
            "unknown key `max_props`",
        ),
        // 45. zero properties
        (
            "telemetry:\n  limits:\n    max_properties: 0\n",
            "telemetry.limits.max_properties",
            3,
            "at least 1",
        ),
        // 46. a depth over the supported maximum
        (
            "telemetry:\n  limits:\n    max_depth: 65\n",
            "telemetry.limits.max_depth",
            3,
            "at most 64",
        ),
        // 47. a size with an unknown unit
        (
            "telemetry:\n  limits:\n    max_event_size: 64 parsecs\n",
            "telemetry.limits.max_event_size",
            3,
            "a size such as",
        ),
        // 48. a size over 16 MiB
        (
            "telemetry:\n  limits:\n    max_string_length: 1GiB\n",
            "telemetry.limits.max_string_length",
            3,
            "at most 16 MiB",
        ),
        // 49. a negative size
        (
            "telemetry:\n  limits:\n    max_event_size: -1\n",
            "telemetry.limits.max_event_size",
            3,
            "a size such as",
        ),
        // 50. `limits` that is not a mapping
        (
            "telemetry:\n  limits: 100\n",
            "telemetry.limits",
            2,
            "expected a mapping",
        ),
        // 51. a bad allow_properties glob, reported with its index
        (
            "telemetry:\n  destinations:\n    umami:\n      allow_properties: [model, 'a b']\n",
            "telemetry.destinations.umami.allow_properties[1]",
            4,
            "invalid glob",
        ),
        // 52. drop_properties that is not a list
        (
            "telemetry:\n  destinations:\n    memory:\n      drop_properties: email\n",
            "telemetry.destinations.memory.drop_properties",
            4,
            "a list of property name globs",
        ),
        // 53. an unknown logging output
        (
            "telemetry:\n  destinations:\n    logging:\n      level: INFO\n      output: file\n",
            "telemetry.destinations.logging.output",
            5,
            "expected a log output (one of tracing, stdout, stderr), found the string `file`",
        ),
        // 54. output checked by the kind, not the name
        (
            "telemetry:\n  destinations:\n    events:\n      type: logging\n      output: 1\n",
            "telemetry.destinations.events.output",
            5,
            "a log output",
        ),
        // 37. a tab-indented line (invalid YAML)
        (
            "telemetry:\n\tenabled: true\n",
            "telemetry",
            2,
            "invalid YAML",
        ),
    ];
    for (yaml, path, line, fragment) in cases {
        let errors = errors_of(yaml);
        let first = &errors[0];
        let line = (*line > 0).then_some(*line);
        assert_eq!(
            (first.0.as_str(), first.1),
            (*path, line),
            "wrong place for:\n{yaml}\nerrors: {errors:#?}"
        );
        assert!(
            first.2.contains(fragment),
            "message {:?} lacks {fragment:?} for:\n{yaml}",
            first.2
        );
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one error for:\n{yaml}\nerrors: {errors:#?}"
        );
    }
}

#[test]
fn every_error_in_a_file_is_reported_in_source_order() {
    let yaml = "\
telemetry:
  enabled: maybe
  destinations:
    umami:
      events: [user.*, 'no good']
      website_id: ${UMAMI_WEBSITE_ID}
      retry:
        max_attempts: 0
    logging:
      level: LOUD
    broken: 3
  sampling:
    rate: 7
    colour: blue
  requests:
    enabled: yes
";
    let errors = errors_of(yaml);
    let places: Vec<_> = errors
        .iter()
        .map(|(p, l, _)| (p.as_str(), l.unwrap()))
        .collect();
    assert_eq!(
        places,
        [
            ("telemetry.enabled", 2),
            ("telemetry.destinations.umami.events[1]", 5),
            ("telemetry.destinations.umami.website_id", 6),
            ("telemetry.destinations.umami.retry.max_attempts", 8),
            ("telemetry.destinations.logging.level", 10),
            ("telemetry.destinations.broken", 11),
            ("telemetry.sampling.rate", 13),
            ("telemetry.sampling.colour", 14),
            ("telemetry.requests.enabled", 16),
        ]
    );
}

#[test]
fn interpolation_uses_defaults_and_present_values() {
    let yaml = "\
telemetry:
  enabled: ${ON:-true}
  destinations:
    umami:
      enabled: ${UMAMI_ENABLED:-false}
      url: ${UMAMI_URL:-http://127.0.0.1:3000}
      website_id: ${UMAMI_WEBSITE_ID}
      hostname: \"${HOST:-app}.${DOMAIN:-example.com}\"
      literal: cost $5 and $${NOT_A_VAR}
      batch_size: ${BATCH:-20}
";
    let config = Config::from_yaml_str_with_env(
        yaml,
        env(&[
            ("UMAMI_WEBSITE_ID", "b0c5f2a4"),
            ("UMAMI_ENABLED", "true"),
            ("DOMAIN", "test.org"),
            ("ON", ""),
        ]),
    )
    .unwrap();
    assert!(config.is_enabled(), "an empty variable takes the default");
    let umami = config.destination("umami").unwrap();
    assert!(umami.is_enabled());
    let s = umami.settings();
    assert_eq!(s.get("url").unwrap(), "http://127.0.0.1:3000");
    assert_eq!(s.get("website_id").unwrap(), "b0c5f2a4");
    assert_eq!(s.get("hostname").unwrap(), "app.test.org");
    assert_eq!(s.get("literal").unwrap(), "cost $5 and ${NOT_A_VAR}");
    assert_eq!(
        umami.delivery(),
        &DeliveryConfig::default().with_batch_size(20)
    );
}

#[test]
fn interpolation_of_a_missing_variable_names_the_key_and_the_variable() {
    let yaml = "telemetry:\n  destinations:\n    umami:\n      url: ${UMAMI_URL:-http://x}\n      website_id: ${UMAMI_WEBSITE_ID}\n";
    let err = parse(yaml).unwrap_err();
    assert_eq!(err.errors().len(), 1);
    let e = &err.errors()[0];
    assert_eq!(e.path(), "telemetry.destinations.umami.website_id");
    assert_eq!(e.line(), Some(5));
    assert!(e.message().contains("UMAMI_WEBSITE_ID"), "{}", e.message());

    // A present variable, even empty, satisfies `${VAR}`; an empty plain value is null, as in YAML.
    let config = Config::from_yaml_str_with_env(yaml, env(&[("UMAMI_WEBSITE_ID", "")])).unwrap();
    let settings = config.destination("umami").unwrap().settings();
    assert_eq!(
        settings.get("website_id").unwrap(),
        &serde_json::Value::Null
    );
    assert_eq!(settings.str("website_id").unwrap(), None);
}

#[test]
fn an_interpolated_value_is_typed_after_substitution() {
    let yaml = "telemetry:\n  enabled: ${ON}\n";
    assert!(
        !Config::from_yaml_str_with_env(yaml, env(&[("ON", "false")]))
            .unwrap()
            .is_enabled()
    );
    let err = Config::from_yaml_str_with_env(yaml, env(&[("ON", "sometimes")])).unwrap_err();
    assert_eq!(err.errors()[0].path(), "telemetry.enabled");
    // The value came from the environment: the message shows the reference, never the value
    // (issue #21: `${VAR}`s carry secrets).
    let message = err.errors()[0].message();
    assert!(message.contains("a string from `${ON}`"), "{message}");
    assert!(!message.contains("sometimes"), "{message}");
}

#[test]
fn env_overrides_accept_the_documented_values() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        (" 1 ", true),
        ("Yes", true),
        ("false", false),
        ("0", false),
        ("NO", false),
        ("\tfalse\n", false),
    ] {
        let mut config = Config::default()
            .with_enabled(!expected)
            .with_debug(!expected);
        config
            .apply_env_overrides(env(&[
                ("TELEMETRY_ENABLED", value),
                ("TELEMETRY_DEBUG", value),
            ]))
            .unwrap();
        assert_eq!(config.is_enabled(), expected, "{value:?}");
        assert_eq!(config.is_debug(), expected, "{value:?}");
    }
    // Unset or empty: no change.
    let mut config = Config::default().with_enabled(false);
    config
        .apply_env_overrides(env(&[("TELEMETRY_ENABLED", "")]))
        .unwrap();
    assert!(!config.is_enabled());
    config.apply_env_overrides(env(&[])).unwrap();
    assert!(!config.is_enabled());
}

#[test]
fn an_invalid_env_override_names_the_variable() {
    let mut config = parse(SEED).unwrap();
    let err = config
        .apply_env_overrides(env(&[
            ("TELEMETRY_ENABLED", "maybe"),
            ("TELEMETRY_DEBUG", "2"),
        ]))
        .unwrap_err();
    let errors = err.errors();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].path(), "TELEMETRY_ENABLED");
    assert_eq!(errors[0].line(), None);
    assert_eq!(
        errors[0].to_string(),
        "TELEMETRY_ENABLED: expected one of true, false, 1, 0, yes, no; found `maybe`"
    );
    assert_eq!(errors[1].path(), "TELEMETRY_DEBUG");
    assert!(config.is_enabled(), "nothing changes on error");
}

#[test]
fn durations() {
    let cases = [
        ("250ms", Duration::from_millis(250)),
        ("1s", Duration::from_secs(1)),
        ("1.5s", Duration::from_millis(1500)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("3", Duration::from_secs(3)),
        ("0.25", Duration::from_millis(250)),
        ("0", Duration::ZERO),
        ("'5'", Duration::from_secs(5)),
        ("500us", Duration::from_micros(500)),
    ];
    for (text, expected) in cases {
        let yaml = format!("telemetry:\n  destinations:\n    m:\n      flush_interval: {text}\n");
        let config = parse(&yaml).unwrap_or_else(|e| panic!("{text}: {e}"));
        let d = config.destination("m").unwrap().delivery();
        assert_eq!(
            d,
            &DeliveryConfig::default().with_flush_interval(expected),
            "{text}"
        );
    }
    for bad in [
        "1x",
        "fast",
        "-1s",
        "1.2.3s",
        "s",
        "[1]",
        "true",
        "99999999999999999999h",
        ".inf",
        "1e400",
    ] {
        let yaml = format!("telemetry:\n  destinations:\n    m:\n      flush_interval: {bad}\n");
        let errors = errors_of(&yaml);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert_eq!(
            errors[0].0, "telemetry.destinations.m.flush_interval",
            "{bad}"
        );
        assert_eq!(errors[0].1, Some(4), "{bad}");
    }
    // A zero timeout is an error; a zero flush interval is not.
    let errors = errors_of("telemetry:\n  destinations:\n    m:\n      timeout: 0s\n");
    assert_eq!(errors[0].0, "telemetry.destinations.m.timeout");
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let yaml = "\
telemetry:
  destinations:
    first:
      type: memory
      retry: &retry { max_attempts: 2, initial_backoff: 1s, max_backoff: 5s }
      batch_size: 7
      events: &ev [user.*]
    second:
      <<: &base { type: memory, batch_size: 9 }
      retry: *retry
      events: *ev
";
    let config = parse(yaml).unwrap();
    let first = config.destination("first").unwrap();
    let second = config.destination("second").unwrap();
    assert_eq!(second.kind(), "memory");
    assert_eq!(second.events().unwrap(), ["user.*"]);
    assert_eq!(second.delivery(), &first.delivery().with_batch_size(9));
}

#[test]
fn pathological_input_fails_fast() {
    // Billion laughs.
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    yaml.push_str("telemetry: {}\n");
    let errors = errors_of(&yaml);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].2.contains("too large"), "{errors:?}");

    // Deep nesting, flow and block.
    let deep = format!(
        "telemetry: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(errors_of(&deep).len(), 1);
    let mut block = String::from("telemetry:\n");
    for i in 0..200 {
        block.push_str(&" ".repeat(i + 2));
        block.push_str("k:\n");
    }
    assert_eq!(errors_of(&block).len(), 1);
    let deep_seq = format!(
        "telemetry:\n{}",
        (0..200)
            .map(|i| format!("{}-\n", " ".repeat(i * 2 + 2)))
            .collect::<String>()
    );
    assert_eq!(errors_of(&deep_seq).len(), 1);

    // Nested anchors around a wide list: the copies kept for aliases are bounded too.
    let wide = vec!["1"; 60_000].join(",");
    let mut nested = format!("&a0 [{wide}]");
    for i in 1..20 {
        nested = format!("&a{i} [{nested}]");
    }
    let errors = errors_of(&format!(
        "telemetry:\n  destinations:\n    m:\n      x: {nested}\n"
    ));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].2.contains("too large"), "{errors:?}");

    // A huge document.
    let huge = format!(
        "telemetry:\n  destinations:\n    m:\n      blob: '{}'\n",
        "x".repeat(2 << 20)
    );
    let errors = errors_of(&huge);
    assert_eq!(errors[0].0, "telemetry");
    assert!(errors[0].2.contains("bytes"));

    // Many keys, within the size limit but over the value limit.
    let many: String = (0..150_000).map(|i| format!("- {i}\n")).collect::<String>();
    let many = format!("telemetry:\n  destinations:\n    m:\n      list:\n{many}");
    if many.len() <= 1 << 20 {
        assert_eq!(errors_of(&many).len(), 1);
    }

    // Unknown alias, odd tags, binary junk: errors, not panics.
    for junk in [
        "telemetry: *nope\n",
        "telemetry: !custom {}\n",
        "\u{0}\u{1}\u{2}",
        "telemetry: [\n",
        "? [a]\n: b\n",
        "telemetry:\n  ? [a]\n  : b\n",
    ] {
        assert!(parse(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn from_yaml_file_reads_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("tower-telemetry-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, SEED).unwrap();
    let config = Config::from_yaml_file(&file).unwrap();
    assert_eq!(config.destinations().len(), 2);

    let missing = dir.join("missing.yaml");
    let err = Config::from_yaml_file(&missing).unwrap_err();
    assert_eq!(err.errors()[0].path(), missing.display().to_string());
    assert_eq!(err.errors()[0].line(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn display_is_readable() {
    let one = parse("telemetry:\n  sampling:\n    rate: 2\n").unwrap_err();
    assert_eq!(
        one.to_string(),
        "invalid telemetry configuration: telemetry.sampling.rate (line 3): expected a number from 0 to 1, found the number `2`"
    );
    let many = parse("telemetry:\n  enabled: maybe\n  sampling:\n    rate: 2\n").unwrap_err();
    assert_eq!(
        many.to_string(),
        "invalid telemetry configuration (2 errors):\n  \
         - telemetry.enabled (line 2): expected true or false, found the string `maybe`\n  \
         - telemetry.sampling.rate (line 4): expected a number from 0 to 1, found the number `2`"
    );
}
