//! Property tests (bounded case counts, so CI stays fast): configuration parsing never panics,
//! events stay within the limits whatever they carry, glob routing agrees with a naive
//! matcher, and the per-request sampling decision is stable.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;
use tower_telemetry::{
    Context, Event, Properties, Telemetry,
    config::{Config, DestinationConfig, SampleKey, SamplingConfig},
    limits::LimitsConfig,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ----- configuration ------------------------------------------------------------------------

/// YAML-ish text made of the format's own keys and values, so many cases get deep into
/// validation, plus arbitrary characters.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("telemetry:".to_owned()),
        Just("destinations:".to_owned()),
        Just("logging:".to_owned()),
        Just("umami:".to_owned()),
        Just("memory:".to_owned()),
        Just("sampling:".to_owned()),
        Just("redact:".to_owned()),
        Just("limits:".to_owned()),
        Just("keys: [a, b]".to_owned()),
        Just("max_event_size: 64KiB".to_owned()),
        Just("max_depth: 0".to_owned()),
        Just("events: [user.*, '!x']".to_owned()),
        Just("rate: 0.5".to_owned()),
        Just("enabled: true".to_owned()),
        Just("level: INFO".to_owned()),
        Just("allow_properties: [a*]".to_owned()),
        Just("retry: {max_attempts: 3}".to_owned()),
        Just("flush_interval: 1.5s".to_owned()),
        Just("${VAR:-x}".to_owned()),
        Just("&a".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *a".to_owned()),
        Just("- ".to_owned()),
        Just("{".to_owned()),
        Just("]".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("#".to_owned()),
        Just("!!str".to_owned()),
        Just("\t".to_owned()),
        Just("\n".to_owned()),
        Just("\n  ".to_owned()),
        Just("\n    ".to_owned()),
        Just("\n      ".to_owned()),
        "[ -~]{0,6}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_parsing_never_panics_and_errors_say_where(yaml in prop_oneof![yamlish(), any::<String>()]) {
        match Config::from_yaml_str_with_env(&yaml, |_| None) {
            Ok(_) => {}
            Err(errors) => {
                prop_assert!(!errors.errors().is_empty());
                for e in errors.errors() {
                    prop_assert!(!e.path().is_empty() || e.line().is_some(), "{e}");
                    prop_assert!(!e.message().is_empty());
                }
            }
        }
    }
}

// ----- events under the limits --------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[a-z]{0,300}".prop_map(Value::String),
    ];
    leaf.prop_recursive(12, 200, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..12)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,12}",
        Just("password".to_owned()),
        Just("Api-Key".to_owned()),
        Just("TOKEN".to_owned()),
        ".{0,20}",
    ]
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check(v: &Value, limits: &LimitsConfig, sensitive: &dyn Fn(&str) -> bool) -> Result<(), String> {
    match v {
        // The depth marker, like the redaction replacement, is the library's text, not input.
        Value::String(s) if s == "[TRUNCATED]" => Ok(()),
        Value::String(s) if s.len() > limits.max_string_length() => {
            Err(format!("string of {}", s.len()))
        }
        Value::Array(a) if a.len() > limits.max_properties() => {
            Err(format!("array of {}", a.len()))
        }
        Value::Array(a) => a.iter().try_for_each(|v| check(v, limits, sensitive)),
        Value::Object(m) if m.len() > limits.max_properties() => {
            Err(format!("object of {}", m.len()))
        }
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            // The replacement is configuration, not input: it need not fit the string limit.
            if sensitive(k) {
                return if v == "[REDACTED]" {
                    Ok(())
                } else {
                    Err(format!("`{k}` not redacted"))
                };
            }
            check(v, limits, sensitive)
        }),
        _ => Ok(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn events_always_fit_the_limits(
        entries in prop::collection::vec((key(), json_value()), 0..40),
        max_properties in 1usize..16,
        max_string_length in 1usize..200,
        max_depth in 0usize..6,
        max_event_size in 256usize..8192,
    ) {
        let limits = LimitsConfig::default()
            .with_max_properties(max_properties)
            .with_max_string_length(max_string_length)
            .with_max_depth(max_depth)
            .with_max_event_size(max_event_size);
        let rt = rt();
        let (events, stats) = rt.block_on(async {
            let t = Telemetry::builder().memory_destination("m").limits(limits).build().unwrap();
            let mut p = Properties::new();
            for (k, v) in entries {
                p.insert_json(k, v);
            }
            t.track("user.fuzz", p);
            t.shutdown(Duration::from_secs(5)).await;
            (t.memory("m").unwrap().events(), t.stats())
        });
        prop_assert_eq!(events.len() as u64 + stats.oversized, 1);
        let sensitive = |k: &str| {
            let k = k.to_ascii_lowercase().replace('-', "_");
            ["password", "api_key", "token"].contains(&k.as_str())
        };
        for e in &events {
            let e: &Arc<Event> = e;
            prop_assert!(e.properties().len() <= max_properties);
            let v = serde_json::to_value(e.properties()).unwrap();
            prop_assert!(serde_json::to_string(&**e).unwrap().len() <= max_event_size);
            for (_, pv) in e.properties().iter() {
                let pv = pv.to_json();
                prop_assert!(depth(&pv) <= max_depth, "depth {} > {max_depth}", depth(&pv));
            }
            if let Err(why) = check(&v, &limits, &sensitive) {
                prop_assert!(false, "{why}");
            }
        }
    }
}

// ----- glob routing against a naive matcher -------------------------------------------------

/// `*` any run (dots included), `?` one character: the obvious recursive definition.
fn naive(p: &[char], s: &[char]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some('*'), _) => naive(&p[1..], s) || (!s.is_empty() && naive(p, &s[1..])),
        (Some('?'), Some(_)) => naive(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => naive(&p[1..], &s[1..]),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn glob_routing_agrees_with_a_naive_matcher(
        glob in "[ab.*?é]{1,8}",
        name in "[ab.é]{1,10}",
        exclude in proptest::option::of("[ab.*?]{1,6}"),
    ) {
        let mut globs = vec![glob.clone()];
        if let Some(x) = &exclude {
            globs.push(format!("!{x}"));
        }
        // Disabled: routing is compiled and explained, no worker is started.
        let t = Telemetry::builder()
            .config(Config::default().with_enabled(false).with_destination(
                DestinationConfig::new("d").with_kind("memory").with_events(globs),
            ))
            .build()
            .unwrap();
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        let included = naive(&chars(&glob), &chars(&name));
        let excluded = exclude.as_deref().is_some_and(|x| naive(&chars(x), &chars(&name)));
        let expected = included && !excluded;
        let routed = t.explain(&name).routed_to() == ["d"];
        prop_assert_eq!(routed, expected, "{} vs {:?} excluding {:?}", name, glob, exclude);
    }
}

// ----- sampling is stable per request -------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_request_sampling_decision_is_stable_across_calls_and_handles(
        request_ids in prop::collection::vec("[a-zA-Z0-9-]{1,36}", 1..8),
        rate in 0.0f64..=1.0,
    ) {
        let rt = rt();
        let kept = rt.block_on(async {
            let mut per_handle = Vec::new();
            for _ in 0..2 {
                let t = Telemetry::builder()
                    .config(
                        Config::default()
                            .with_sampling(SamplingConfig::new(rate).with_key(SampleKey::Request))
                            .with_destination(DestinationConfig::new("m").with_kind("memory")),
                    )
                    .build()
                    .unwrap();
                for (i, id) in request_ids.iter().enumerate() {
                    t.scope_sync(Context::new().with_request_id(id.clone()), || {
                        for n in 0..3 {
                            t.track("user.step", tower_telemetry::props! { "r" => i, "n" => n });
                        }
                    });
                }
                t.shutdown(Duration::from_secs(5)).await;
                let mut per_request = vec![0; request_ids.len()];
                for e in t.memory("m").unwrap().events() {
                    per_request[e.properties().get("r").unwrap().as_u64().unwrap() as usize] += 1;
                }
                per_handle.push(per_request);
            }
            per_handle
        });
        for (i, id) in request_ids.iter().enumerate() {
            // All of a request's events, or none; the same in both handles.
            prop_assert!(kept[0][i] == 0 || kept[0][i] == 3, "request {id}: {}", kept[0][i]);
            // Two requests with the same id may appear twice: compare per position.
            prop_assert_eq!(kept[0][i], kept[1][i], "request {} decided differently", id);
        }
    }
}
