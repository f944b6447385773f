//! Every configuration error says where: the whole catalogue of errors the parser, the
//! validator and the built-in destination kinds produce, each asserted to print `(line N)`
//! with the right N. Not a sample: a new error site belongs in one of these tables.
//!
//! The only errors without a line are about no key at all, and are listed as such at the end:
//! a file that cannot be read, a source over the size limit, an empty document, the
//! `TELEMETRY_*` overrides (they come from the environment, not the file).

use tower_telemetry::{
    Telemetry,
    config::{Config, ConfigError, ConfigErrorKind},
};

/// Every error `yaml` gives: from parsing, or (when it parses) from building the handle,
/// where the destination kinds check their own settings.
fn errors_for(yaml: &str) -> Vec<ConfigError> {
    let env = |name: &str| (name == "SET").then(|| "set".to_owned());
    let config = match Config::from_yaml_str_with_env(yaml, env) {
        Ok(config) => config,
        Err(e) => return e.errors().to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    match Telemetry::builder().config(config).build() {
        Ok(_) => Vec::new(),
        Err(e) => e.errors().to_vec(),
    }
}

/// (YAML, the key path of the error expected, its line)
type Case = (&'static str, &'static str, usize);

/// Checks every case, then reports every failure at once.
fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for (i, (yaml, path, line)) in cases.iter().enumerate() {
        let errors = errors_for(yaml);
        let Some(e) = errors.iter().find(|e| e.path() == *path) else {
            failures.push(format!(
                "case {i}: no error at `{path}`; got {errors:#?}\n{yaml}"
            ));
            continue;
        };
        let shown = e.to_string();
        if e.line() != Some(*line) || !shown.contains(&format!("(line {line})")) {
            failures.push(format!("case {i}: expected line {line}: {shown}\n{yaml}"));
        }
        for other in &errors {
            if other.line().is_none() {
                failures.push(format!(
                    "case {i}: an error without a line: {other}\n{yaml}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn loading_and_substitution_errors_have_lines() {
    check(&[
        // Invalid YAML.
        ("telemetry:\n\tenabled: true\n", "telemetry", 2),
        // A second document.
        ("telemetry: {}\n---\ntelemetry: {}\n", "telemetry", 2),
        // An unsupported tag.
        ("telemetry:\n  debug: !flag true\n", "telemetry.debug", 2),
        // An unknown alias.
        ("telemetry:\n  debug: *nope\n", "telemetry.debug", 2),
        // A mapping as a key.
        ("telemetry:\n  ? [a]\n  : b\n", "telemetry", 2),
        // A `<<` of something not a mapping.
        ("telemetry:\n  <<: 1\n", "telemetry.<<", 2),
        // A duplicate key.
        (
            "telemetry:\n  enabled: true\n  enabled: false\n",
            "telemetry.enabled",
            3,
        ),
        // Nested too deeply.
        (
            "telemetry:\n  destinations:\n    m:\n      x: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
            "telemetry.destinations.m.x",
            4,
        ),
        // `${VAR}` unset without a default, unclosed, not a name.
        ("telemetry:\n  enabled: ${UNSET}\n", "telemetry.enabled", 2),
        ("telemetry:\n  enabled: ${SET\n", "telemetry.enabled", 2),
        ("telemetry:\n  enabled: ${1A}\n", "telemetry.enabled", 2),
    ]);
}

#[test]
fn size_limit_errors_have_lines() {
    // Billion laughs: too many values once aliases are expanded.
    let mut laughs = String::from("telemetry:\n  destinations:\n    m:\n");
    laughs.push_str("      a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..7 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("      a{i}: &a{i} [{refs}]\n"));
    }
    let errors = errors_for(&laughs);
    assert_eq!(errors[0].kind(), ConfigErrorKind::TooLarge, "{errors:?}");
    assert!(
        errors[0].line().is_some_and(|l| (4..=10).contains(&l)),
        "{errors:?}"
    );

    // The anchors' copies.
    let wide = vec!["1"; 60_000].join(",");
    let mut nested = format!("&a0 [{wide}]");
    for i in 1..20 {
        nested = format!("&a{i} [{nested}]");
    }
    let found = errors_for(&format!(
        "telemetry:\n  destinations:\n    m:\n      x: {nested}\n"
    ));
    assert_eq!(found[0].kind(), ConfigErrorKind::TooLarge, "{found:?}");
    assert_eq!(found[0].line(), Some(4), "{found:?}");
}

#[test]
fn schema_errors_have_lines() {
    check(&[
        // The document.
        ("- a\n- b\n", "telemetry", 1),
        ("telemtry:\n  enabled: true\n", "telemetry", 1),
        ("telemetry: {}\nextra: 1\n", "extra", 2),
        ("telemetry: 3\n", "telemetry", 1),
        ("telemetry:\n  enabeld: true\n", "telemetry.enabeld", 2),
        ("telemetry:\n  debug: maybe\n", "telemetry.debug", 2),
        ("telemetry:\n  enabled:\n", "telemetry.enabled", 2),
        (
            "telemetry:\n  destinations: [a]\n",
            "telemetry.destinations",
            2,
        ),
        // Sampling.
        ("telemetry:\n  sampling: 1\n", "telemetry.sampling", 2),
        (
            "telemetry:\n  sampling:\n    rate: 2\n",
            "telemetry.sampling.rate",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    rate: x\n",
            "telemetry.sampling.rate",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    key: nobody\n",
            "telemetry.sampling.key",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    key: 1\n",
            "telemetry.sampling.key",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    always: error.*\n",
            "telemetry.sampling.always",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    always: [1]\n",
            "telemetry.sampling.always[0]",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    always: [[a]]\n",
            "telemetry.sampling.always[0]",
            3,
        ),
        (
            "telemetry:\n  sampling:\n    always:\n      - ok.*\n      - 'a b'\n",
            "telemetry.sampling.always[1]",
            5,
        ),
        (
            "telemetry:\n  sampling:\n    often: 1\n",
            "telemetry.sampling.often",
            3,
        ),
        // Requests.
        (
            "telemetry:\n  requests:\n    name: ''\n",
            "telemetry.requests.name",
            3,
        ),
        (
            "telemetry:\n  requests:\n    name: 3\n",
            "telemetry.requests.name",
            3,
        ),
        (
            "telemetry:\n  requests:\n    exclude: ['/a b']\n",
            "telemetry.requests.exclude[0]",
            3,
        ),
        (
            "telemetry:\n  requests:\n    exclude: ['']\n",
            "telemetry.requests.exclude[0]",
            3,
        ),
        // Redaction.
        (
            "telemetry:\n  redact:\n    replacement: [x]\n",
            "telemetry.redact.replacement",
            3,
        ),
        (
            "telemetry:\n  redact:\n    keys: email\n",
            "telemetry.redact.keys",
            3,
        ),
        (
            "telemetry:\n  redact:\n    keys: ['']\n",
            "telemetry.redact.keys[0]",
            3,
        ),
        (
            "telemetry:\n  redact:\n    keys: [1]\n",
            "telemetry.redact.keys[0]",
            3,
        ),
        (
            "telemetry:\n  redact:\n    keys: [{a: 1}]\n",
            "telemetry.redact.keys[0]",
            3,
        ),
        // Limits.
        (
            "telemetry:\n  limits:\n    max_properties: 0\n",
            "telemetry.limits.max_properties",
            3,
        ),
        (
            "telemetry:\n  limits:\n    max_properties: 10001\n",
            "telemetry.limits.max_properties",
            3,
        ),
        (
            "telemetry:\n  limits:\n    max_depth: 1000\n",
            "telemetry.limits.max_depth",
            3,
        ),
        (
            "telemetry:\n  limits:\n    max_string_length: 8XB\n",
            "telemetry.limits.max_string_length",
            3,
        ),
        (
            "telemetry:\n  limits:\n    max_event_size: 1GiB\n",
            "telemetry.limits.max_event_size",
            3,
        ),
    ]);
}

#[test]
fn destination_errors_have_lines() {
    check(&[
        (
            "telemetry:\n  destinations:\n    '': {}\n",
            "telemetry.destinations.",
            3,
        ),
        (
            "telemetry:\n  destinations:\n    memory: 3\n",
            "telemetry.destinations.memory",
            3,
        ),
        (
            "telemetry:\n  destinations:\n    a:\n      type: 3\n",
            "telemetry.destinations.a.type",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    a:\n      type: ''\n",
            "telemetry.destinations.a.type",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      enabled: 1\n",
            "telemetry.destinations.memory.enabled",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      sample_rate: 2\n",
            "telemetry.destinations.memory.sample_rate",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      queue_capacity: 0\n",
            "telemetry.destinations.memory.queue_capacity",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      batch_size: -1\n",
            "telemetry.destinations.memory.batch_size",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      concurrency: many\n",
            "telemetry.destinations.memory.concurrency",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      flush_interval: soon\n",
            "telemetry.destinations.memory.flush_interval",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      timeout: 0\n",
            "telemetry.destinations.memory.timeout",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      retry: 3\n",
            "telemetry.destinations.memory.retry",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      retry:\n        max_attempts: 0\n",
            "telemetry.destinations.memory.retry.max_attempts",
            5,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      retry:\n        initial_backoff: x\n",
            "telemetry.destinations.memory.retry.initial_backoff",
            5,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      retry:\n        max_backoff: -1s\n",
            "telemetry.destinations.memory.retry.max_backoff",
            5,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      retry:\n        tries: 3\n",
            "telemetry.destinations.memory.retry.tries",
            5,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      events: ['a b']\n",
            "telemetry.destinations.memory.events[0]",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      allow_properties: x\n",
            "telemetry.destinations.memory.allow_properties",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    memory:\n      drop_properties: ['!']\n",
            "telemetry.destinations.memory.drop_properties[0]",
            4,
        ),
        // Unknown destinations and kinds: reported when the handle is built.
        (
            "telemetry:\n  destinations:\n    mystery:\n      enabled: true\n",
            "telemetry.destinations.mystery",
            3,
        ),
        (
            "telemetry:\n  destinations:\n    mystery: {}\n",
            "telemetry.destinations.mystery",
            3,
        ),
        (
            "telemetry:\n  destinations:\n    a:\n      enabled: true\n      type: nope\n",
            "telemetry.destinations.a.type",
            5,
        ),
        // The memory kind has no settings.
        (
            "telemetry:\n  destinations:\n    memory:\n      size: 1\n",
            "telemetry.destinations.memory.size",
            4,
        ),
    ]);
}

#[test]
fn logging_errors_have_lines() {
    check(&[
        (
            "telemetry:\n  destinations:\n    logging:\n      level: verbose\n",
            "telemetry.destinations.logging.level",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    logging:\n      level: 3\n",
            "telemetry.destinations.logging.level",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    logging:\n      output: file\n",
            "telemetry.destinations.logging.output",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    audit:\n      type: logging\n      output: [a]\n",
            "telemetry.destinations.audit.output",
            5,
        ),
        (
            "telemetry:\n  destinations:\n    logging:\n      colour: red\n",
            "telemetry.destinations.logging.colour",
            4,
        ),
    ]);
}

#[cfg(feature = "umami")]
#[test]
fn umami_errors_have_lines() {
    const OK: &str = "      url: http://127.0.0.1:3000\n      website_id: b0c5f2a4-0000-4000-8000-000000000000\n";
    let with = |extra: &str| -> &'static str {
        Box::leak(format!("telemetry:\n  destinations:\n    umami:\n{OK}{extra}").into_boxed_str())
    };
    check(&[
        // Missing keys point at the destination.
        (
            "telemetry:\n  destinations:\n    umami:\n      website_id: b0c5f2a4-0000-4000-8000-000000000000\n",
            "telemetry.destinations.umami.url",
            3,
        ),
        (
            "telemetry:\n  destinations:\n    umami:\n      url: http://127.0.0.1:3000\n",
            "telemetry.destinations.umami.website_id",
            3,
        ),
        (
            "telemetry:\n  destinations:\n    umami:\n      url: 3\n      website_id: b0c5f2a4-0000-4000-8000-000000000000\n",
            "telemetry.destinations.umami.url",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    umami:\n      url: not a url\n      website_id: b0c5f2a4-0000-4000-8000-000000000000\n",
            "telemetry.destinations.umami.url",
            4,
        ),
        (
            "telemetry:\n  destinations:\n    umami:\n      url: http://127.0.0.1:3000\n      website_id: abc\n",
            "telemetry.destinations.umami.website_id",
            5,
        ),
        (
            "telemetry:\n  destinations:\n    umami:\n      url: http://127.0.0.1:3000\n      website_id: ''\n",
            "telemetry.destinations.umami.website_id",
            5,
        ),
        (
            with("      hostname: ''\n"),
            "telemetry.destinations.umami.hostname",
            6,
        ),
        (
            with("      user_agent: \"a\\x01b\"\n"),
            "telemetry.destinations.umami.user_agent",
            6,
        ),
        (
            with("      distinct_id: email\n"),
            "telemetry.destinations.umami.distinct_id",
            6,
        ),
        (
            with("      mode: fast\n"),
            "telemetry.destinations.umami.mode",
            6,
        ),
        (
            with("      include_query: 1\n"),
            "telemetry.destinations.umami.include_query",
            6,
        ),
        (
            with("      context_data: path\n"),
            "telemetry.destinations.umami.context_data",
            6,
        ),
        (
            with("      context_data: [1]\n"),
            "telemetry.destinations.umami.context_data",
            6,
        ),
        (
            with("      context_data: ['']\n"),
            "telemetry.destinations.umami.context_data",
            6,
        ),
        (
            with("      forward: 1\n"),
            "telemetry.destinations.umami.forward",
            6,
        ),
        (
            with("      forward:\n        cookies: true\n"),
            "telemetry.destinations.umami.forward.cookies",
            7,
        ),
        (
            with("      forward:\n        ip: maybe\n"),
            "telemetry.destinations.umami.forward.ip",
            7,
        ),
        (
            with("      token: x\n"),
            "telemetry.destinations.umami.token",
            6,
        ),
    ]);
}

#[cfg(feature = "nats")]
#[test]
fn nats_errors_have_lines() {
    let with = |extra: &str| -> &'static str {
        Box::leak(format!("telemetry:\n  destinations:\n    nats:\n{extra}").into_boxed_str())
    };
    const N: &str = "telemetry.destinations.nats";
    let p = |key: &str| -> &'static str { Box::leak(format!("{N}.{key}").into_boxed_str()) };
    check(&[
        (with("      servers: 3\n"), p("servers"), 4),
        (with("      servers: [1]\n"), p("servers"), 4),
        (with("      servers: []\n"), p("servers"), 4),
        (with("      servers: ['http://[::1']\n"), p("servers"), 4),
        (with("      token: ''\n"), p("token"), 4),
        (with("      user: ''\n      password: x\n"), p("user"), 4),
        (with("      token: t\n      user: u\n"), N, 3),
        (with("      password: x\n"), p("password"), 4),
        (with("      credentials: 3\n"), p("credentials"), 4),
        (with("      connect_timeout: 0\n"), p("connect_timeout"), 4),
        (
            with("      connect_timeout: soon\n"),
            p("connect_timeout"),
            4,
        ),
        (with("      tls: 1\n"), p("tls"), 4),
        (
            with("      tls:\n        verify: false\n"),
            p("tls.verify"),
            5,
        ),
        (
            with("      tls:\n        required: maybe\n"),
            p("tls.required"),
            5,
        ),
        (
            with("      tls:\n        cert_file: c.pem\n"),
            p("tls.key_file"),
            4,
        ),
        (
            with("      tls:\n        key_file: k.pem\n"),
            p("tls.cert_file"),
            4,
        ),
        (with("      subject: 3\n"), p("subject"), 4),
        (with("      subject: 'a b'\n"), p("subject"), 4),
        (with("      publish_timeout: 0\n"), p("publish_timeout"), 4),
        (with("      failover_wait: later\n"), p("failover_wait"), 4),
        (with("      in_flight: 0\n"), p("in_flight"), 4),
        (with("      in_flight: -1\n"), p("in_flight"), 4),
        (with("      stream: 3\n"), p("stream"), 4),
        (with("      stream: 'a b'\n"), p("stream.name"), 4),
        (
            with("      stream:\n        name: 3\n"),
            p("stream.name"),
            5,
        ),
        (
            with("      stream:\n        shards: 3\n"),
            p("stream.shards"),
            5,
        ),
        (
            with("      stream:\n        create: maybe\n"),
            p("stream.create"),
            5,
        ),
        (
            with("      stream:\n        replicas: 9\n"),
            p("stream.replicas"),
            5,
        ),
        (
            with("      stream:\n        max_bytes: -1\n"),
            p("stream.max_bytes"),
            5,
        ),
        (
            with("      stream:\n        duplicate_window: 0\n"),
            p("stream.duplicate_window"),
            5,
        ),
        (
            with("      stream:\n        duplicate_window: 2h\n        max_age: 1h\n"),
            p("stream.duplicate_window"),
            5,
        ),
        (
            with("      stream:\n        max_age: forever\n"),
            p("stream.max_age"),
            5,
        ),
        (
            with("      stream:\n        storage: disk\n"),
            p("stream.storage"),
            5,
        ),
        (
            with("      stream:\n        subjects: x\n"),
            p("stream.subjects"),
            5,
        ),
        (
            with("      stream:\n        subjects: [1]\n"),
            p("stream.subjects"),
            5,
        ),
        (
            with("      stream:\n        subjects: []\n"),
            p("stream.subjects"),
            5,
        ),
        (
            with("      stream:\n        subjects: [other.>]\n"),
            p("stream.subjects"),
            5,
        ),
        (with("      retention: 1d\n"), p("retention"), 4),
    ]);
}

#[test]
fn the_errors_without_a_line_are_about_no_key() {
    // An empty document.
    let e = &errors_for("")[0];
    assert_eq!(
        (e.path(), e.line(), e.kind()),
        ("telemetry", None, ConfigErrorKind::Missing)
    );
    // A source over the size limit.
    let huge = format!("telemetry:\n  x: '{}'\n", "x".repeat(2 << 20));
    let e = &errors_for(&huge)[0];
    assert_eq!((e.line(), e.kind()), (None, ConfigErrorKind::TooLarge));
    // A file that cannot be read.
    let err = Config::from_yaml_file("/nonexistent/telemetry.yaml").unwrap_err();
    let e = &err.errors()[0];
    assert_eq!((e.line(), e.kind()), (None, ConfigErrorKind::Io));
    // An override from the environment.
    let err = Config::default()
        .apply_env_overrides(|_| Some("maybe".to_owned()))
        .unwrap_err();
    let e = &err.errors()[0];
    assert_eq!((e.line(), e.kind()), (None, ConfigErrorKind::Environment));
}

#[test]
fn each_error_has_its_kind() {
    let kind = |yaml: &str| errors_for(yaml)[0].kind();
    assert_eq!(
        kind("telemetry:\n\tenabled: true\n"),
        ConfigErrorKind::Syntax
    );
    assert_eq!(
        kind("telemetry:\n  a: 1\n  a: 2\n"),
        ConfigErrorKind::UnknownKey
    );
    assert_eq!(
        kind("telemetry:\n  debug: true\n  debug: true\n"),
        ConfigErrorKind::Duplicate
    );
    assert_eq!(
        kind("telemetry:\n  debug: ${UNSET}\n"),
        ConfigErrorKind::Environment
    );
    assert_eq!(kind("telemetry:\n  debug: 3\n"), ConfigErrorKind::Invalid);
    assert_eq!(kind("other: 1\n"), ConfigErrorKind::Missing);
    assert_eq!(
        kind("telemetry:\n  destinations:\n    logging:\n      colour: red\n"),
        ConfigErrorKind::UnknownKey
    );
    #[cfg(feature = "umami")]
    assert_eq!(
        kind("telemetry:\n  destinations:\n    umami:\n      url: http://127.0.0.1:3000\n"),
        ConfigErrorKind::Missing
    );
    assert_eq!(
        kind("telemetry:\n  destinations:\n    mystery:\n      enabled: true\n"),
        ConfigErrorKind::UnknownDestination
    );
    assert_eq!(
        kind("telemetry:\n  destinations:\n    audit:\n      type: nope\n"),
        ConfigErrorKind::UnknownType
    );
}
