use std::time::{Duration, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::json;

use super::record::{self, Mapping, hex_id, log_record};
use super::*;
use crate::config::Config;
use crate::{Context, EventKind, Properties};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn event(ctx: Context) -> Event {
    let mut props = Properties::new();
    props.insert("plan", "pro");
    props.insert("seats", 12);
    props.insert("ratio", 0.25);
    props.insert("trial", false);
    props.insert("tags", json!(["a", 1, 2.5, true, null, ["x"]]));
    props.insert(
        "cart",
        json!({"sku": "A-1", "qty": 2, "meta": {"gift": true}}),
    );
    props.insert("nothing", ());
    props.insert("huge", u64::MAX);
    Event::new("checkout.completed", props)
        .with_context(ctx)
        .with_timestamp(UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789))
}

fn full_context() -> Context {
    Context::new()
        .with_user_id("user_42")
        .with_session_id("sess_1")
        .with_request_id("req_9")
        .with_hostname("app.example.com")
        .with_path("/checkout/7")
        .with_query("token=secret")
        .with_route("/checkout/{id}")
        .with_method("POST")
        .with_user_agent("Mozilla/5.0 (X11)")
        .with_language("de-CH,de;q=0.9")
        .with_referrer("https://news.example.org/")
        .with_client_ip("203.0.113.7")
        .with_field("tenant", "acme")
        .with_field("trace_id", TRACE)
        .with_field("span_id", SPAN)
        .with_group("company", "acme-inc")
}

fn mapping() -> Mapping {
    Mapping {
        severity: Severity::Info,
        forward: Forward::default(),
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    let found: Vec<_> = attrs.iter().filter(|a| a.key == key).collect();
    assert!(found.len() <= 1, "{key} twice: {attrs:?}");
    found.first()?.value.as_ref()?.value.as_ref()
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

fn any(v: V) -> AnyValue {
    AnyValue { value: Some(v) }
}

#[test]
fn an_event_is_one_log_record_with_its_name_times_and_severity() {
    let e = event(full_context());
    let r = log_record(&e, &mapping(), 42);
    assert_eq!(r.event_name, "checkout.completed");
    assert_eq!(r.body, Some(any(s("checkout.completed"))));
    assert_eq!(r.time_unix_nano, 1_764_000_000_123_456_789);
    assert_eq!(r.observed_time_unix_nano, 42);
    assert_eq!((r.severity_number, r.severity_text.as_str()), (9, "INFO"));
    let warn = Mapping {
        severity: Severity::Warn,
        ..mapping()
    };
    let r = log_record(&e, &warn, 42);
    assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
    assert_eq!(
        attr(&r.attributes, "log.record.uid"),
        Some(&s(&e.id().to_string()))
    );
    assert!(attr(&r.attributes, "telemetry.kind").is_none(), "custom");
    let page = event(Context::new()).with_kind(EventKind::PageView);
    let r = log_record(&page, &mapping(), 0);
    assert_eq!(attr(&r.attributes, "telemetry.kind"), Some(&s("page_view")));
}

#[test]
fn properties_are_typed_attributes() {
    let r = log_record(&event(Context::new()), &mapping(), 0);
    let a = &r.attributes;
    assert_eq!(attr(a, "plan"), Some(&s("pro")));
    assert_eq!(attr(a, "seats"), Some(&V::IntValue(12)));
    assert_eq!(attr(a, "ratio"), Some(&V::DoubleValue(0.25)));
    assert_eq!(attr(a, "trial"), Some(&V::BoolValue(false)));
    assert_eq!(attr(a, "huge"), Some(&s("18446744073709551615")));
    assert!(
        a.iter()
            .any(|kv| kv.key == "nothing" && kv.value == Some(AnyValue { value: None })),
        "null is the empty AnyValue"
    );
    let Some(V::ArrayValue(tags)) = attr(a, "tags") else {
        panic!("{a:?}")
    };
    let tags: Vec<_> = tags.values.iter().map(|v| v.value.clone()).collect();
    assert_eq!(tags[0], Some(s("a")));
    assert_eq!(tags[1], Some(V::IntValue(1)));
    assert_eq!(tags[2], Some(V::DoubleValue(2.5)));
    assert_eq!(tags[3], Some(V::BoolValue(true)));
    assert_eq!(tags[4], None);
    assert!(matches!(&tags[5], Some(V::ArrayValue(x)) if x.values.len() == 1));
    let Some(V::KvlistValue(cart)) = attr(a, "cart") else {
        panic!("{a:?}")
    };
    assert_eq!(attr(&cart.values, "sku"), Some(&s("A-1")));
    assert_eq!(attr(&cart.values, "qty"), Some(&V::IntValue(2)));
    let Some(V::KvlistValue(meta)) = attr(&cart.values, "meta") else {
        panic!("{cart:?}")
    };
    assert_eq!(attr(&meta.values, "gift"), Some(&V::BoolValue(true)));
}

#[test]
fn context_fields_take_semantic_convention_names() {
    let r = log_record(&event(full_context()), &mapping(), 0);
    let a = &r.attributes;
    assert_eq!(attr(a, "user.id"), Some(&s("user_42")));
    assert_eq!(attr(a, "session.id"), Some(&s("sess_1")));
    assert_eq!(attr(a, "telemetry.request_id"), Some(&s("req_9")));
    assert_eq!(attr(a, "server.address"), Some(&s("app.example.com")));
    assert_eq!(attr(a, "url.path"), Some(&s("/checkout/7")));
    assert_eq!(attr(a, "http.route"), Some(&s("/checkout/{id}")));
    assert_eq!(attr(a, "http.request.method"), Some(&s("POST")));
    assert_eq!(
        attr(a, "user_agent.original"),
        Some(&s("Mozilla/5.0 (X11)"))
    );
    let Some(V::ArrayValue(lang)) = attr(a, "http.request.header.accept-language") else {
        panic!("{a:?}")
    };
    assert_eq!(lang.values, vec![any(s("de-CH,de;q=0.9"))]);
    assert!(attr(a, "http.request.header.referer").is_some());
    assert_eq!(attr(a, "telemetry.tenant"), Some(&s("acme")));
    let Some(V::KvlistValue(groups)) = attr(a, "telemetry.groups") else {
        panic!("{a:?}")
    };
    assert_eq!(attr(&groups.values, "company"), Some(&s("acme-inc")));
    // No IP unless forwarded; never the query string.
    assert!(attr(a, "client.address").is_none());
    assert!(!format!("{r:?}").contains("token=secret"));
    let forward = Mapping {
        forward: Forward::default()
            .with_ip(true)
            .with_user_agent(false)
            .with_language(false)
            .with_referrer(false),
        ..mapping()
    };
    let r = log_record(&event(full_context()), &forward, 0);
    let a = &r.attributes;
    assert_eq!(attr(a, "client.address"), Some(&s("203.0.113.7")));
    assert!(attr(a, "user_agent.original").is_none());
    assert!(attr(a, "http.request.header.accept-language").is_none());
    assert!(attr(a, "http.request.header.referer").is_none());
}

#[test]
fn trace_and_span_ids_from_the_context_go_into_the_record() {
    let r = log_record(&event(full_context()), &mapping(), 0);
    assert_eq!(r.trace_id, hex_id::<16>(TRACE).unwrap());
    assert_eq!(r.trace_id.len(), 16);
    assert_eq!(r.span_id, hex_id::<8>(SPAN).unwrap());
    assert!(attr(&r.attributes, "telemetry.trace_id").is_none());
    assert!(attr(&r.attributes, "telemetry.span_id").is_none());

    // Malformed: kept as attributes, the record's ids left empty.
    let ctx = Context::new()
        .with_field("trace_id", "not-a-trace")
        .with_field("span_id", SPAN);
    let r = log_record(&event(ctx), &mapping(), 0);
    assert!(r.trace_id.is_empty() && r.span_id.is_empty());
    assert_eq!(
        attr(&r.attributes, "telemetry.trace_id"),
        Some(&s("not-a-trace"))
    );
    assert_eq!(attr(&r.attributes, "telemetry.span_id"), Some(&s(SPAN)));

    // A trace id alone is enough; uppercase hex is read too.
    let ctx = Context::new().with_field("trace_id", TRACE.to_uppercase());
    let r = log_record(&event(ctx), &mapping(), 0);
    assert_eq!(r.trace_id, hex_id::<16>(TRACE).unwrap());
    assert!(r.span_id.is_empty());
}

#[test]
fn hex_ids_are_exact_length_and_not_all_zero() {
    assert_eq!(
        hex_id::<8>(SPAN).unwrap(),
        [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    assert!(hex_id::<8>("0000000000000000").is_none());
    assert!(hex_id::<8>("00f067aa0ba902b").is_none());
    assert!(hex_id::<8>("00f067aa0ba902b7a").is_none());
    assert!(hex_id::<8>("00f067aa0ba902bz").is_none());
    assert!(hex_id::<8>("é0f067aa0ba902b").is_none());
}

#[test]
fn properties_win_over_context_attributes_and_give_way_to_the_records_own() {
    let mut props = Properties::new();
    props.insert("user.id", "from-property");
    props.insert("log.record.uid", "forged");
    props.insert("telemetry.kind", "forged");
    let e = Event::new("x", props)
        .with_context(Context::new().with_user_id("u"))
        .with_kind(EventKind::PageView);
    let r = log_record(&e, &mapping(), 0);
    assert_eq!(attr(&r.attributes, "user.id"), Some(&s("from-property")));
    assert_eq!(
        attr(&r.attributes, "log.record.uid"),
        Some(&s(&e.id().to_string()))
    );
    assert_eq!(attr(&r.attributes, "telemetry.kind"), Some(&s("page_view")));
    assert_eq!(r.dropped_attributes_count, 3);
}

// ----- settings and the environment ---------------------------------------------------------

fn yaml(own: &str) -> String {
    format!("telemetry:\n  destinations:\n    otel:\n      type: otlp\n{own}")
}

fn build(
    own: &str,
    env: &[(&str, &str)],
) -> Result<OtlpDestination, Vec<crate::config::ConfigError>> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = Config::from_yaml_str_with_env(&yaml(own), |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    OtlpDestination::from_settings(config.destination("otel").unwrap().settings())
}

fn resource_of(d: &OtlpDestination) -> Vec<(String, Option<V>)> {
    d.inner
        .resource
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value)))
        .collect()
}

#[test]
fn defaults_without_settings_or_variables() {
    let d = build("", &[]).unwrap();
    assert_eq!(d.url(), "http://localhost:4318/v1/logs");
    assert_eq!(d.protocol(), Protocol::HttpProtobuf);
    assert!(!d.is_gzip());
    assert_eq!(d.delivery_defaults().timeout, Duration::from_secs(10));
    assert_eq!(d.delivery_defaults().batch_size, DEFAULT_BATCH_SIZE);
    let resource = resource_of(&d);
    assert_eq!(resource.len(), 1);
    let Some(V::StringValue(name)) = &resource[0].1 else {
        panic!("{resource:?}")
    };
    assert!(name.starts_with("unknown_service"), "{name}");
}

#[test]
fn the_yaml_wins_over_the_logs_variables_which_win_over_the_generic_ones() {
    let all = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318/base/"),
        (
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "http://logs:9999/custom/path",
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "20000"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "3000"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=generic,x-b=generic"),
        (
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            "x-b=logs%20value, x-c = logs ",
        ),
    ];
    // The LOGS_ variables over the generic ones; the LOGS_ endpoint as it is.
    let d = build("", &all).unwrap();
    assert_eq!(d.url(), "http://logs:9999/custom/path");
    assert!(d.is_gzip());
    assert_eq!(d.protocol(), Protocol::HttpJson);
    assert_eq!(d.delivery_defaults().timeout, Duration::from_secs(3));
    let h = &d.inner.headers;
    assert_eq!(h["x-a"], "generic");
    assert_eq!(h["x-b"], "logs value");
    assert_eq!(h["x-c"], "logs");
    assert!(h.values().all(HeaderValue::is_sensitive));

    // The generic ones alone: `/v1/logs` appended to the endpoint's path.
    let d = build("", &all[..1]).unwrap();
    assert_eq!(d.url(), "http://generic:4318/base/v1/logs");

    // The YAML over both.
    let d = build(
        "      endpoint: https://yaml.example.com/v1/logs\n      compression: none\n      \
         protocol: http/protobuf\n      headers:\n        x-b: yaml\n",
        &all,
    )
    .unwrap();
    assert_eq!(
        d.url(),
        "https://yaml.example.com/v1/logs",
        "not appended twice"
    );
    assert!(!d.is_gzip());
    assert_eq!(d.protocol(), Protocol::HttpProtobuf);
    assert_eq!(d.inner.headers["x-b"], "yaml");
    assert_eq!(d.inner.headers["x-a"], "generic");
}

#[test]
fn resource_attributes_yaml_over_service_name_over_resource_attributes() {
    let env = [
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,service.version=1.2.3,team=a%2Cb",
        ),
        ("OTEL_SERVICE_NAME", "from-service-name"),
    ];
    let d = build("", &env).unwrap();
    let r = resource_of(&d);
    assert_eq!(r[0], ("service.name".into(), Some(s("from-service-name"))));
    assert!(r.contains(&("service.version".into(), Some(s("1.2.3")))));
    assert!(r.contains(&("team".into(), Some(s("a,b")))));

    let d = build(
        "      resource:\n        service.name: checkout\n        replicas: 3\n        \
         canary: true\n        zones: [a, b]\n",
        &env,
    )
    .unwrap();
    let r = resource_of(&d);
    assert_eq!(r[0], ("service.name".into(), Some(s("checkout"))));
    assert!(r.contains(&("service.version".into(), Some(s("1.2.3")))));
    assert!(r.contains(&("replicas".into(), Some(V::IntValue(3)))));
    assert!(r.contains(&("canary".into(), Some(V::BoolValue(true)))));
    assert!(
        r.iter()
            .any(|(k, v)| k == "zones" && matches!(v, Some(V::ArrayValue(_))))
    );
    assert_eq!(r.iter().filter(|(k, _)| k == "service.name").count(), 1);
}

#[test]
fn bad_settings_name_their_key_and_line_and_bad_variables_their_name() {
    let errors = build(
        "      protocol: grpc\n      compression: zstd\n      severity: LOUD\n      \
         headers:\n        x-n: 3\n        content-type: text/plain\n      resource:\n        \
         nested: { a: 1 }\n      endpoint: ftp://x\n      colour: red\n",
        &[],
    )
    .unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.path().to_owned(), e.line()))
        .collect();
    let path = |k: &str| format!("telemetry.destinations.otel.{k}");
    for (key, line) in [
        ("protocol", 5),
        ("compression", 6),
        ("severity", 7),
        ("headers.x-n", 9),
        ("headers.content-type", 10),
        ("resource.nested", 12),
        ("endpoint", 13),
        ("colour", 14),
    ] {
        assert!(
            found.contains(&(path(key), Some(line))),
            "{key}: {found:?}\n{errors:#?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|e| e.message().contains("grpc is not supported"))
    );

    let errors = build(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer tok_live_1,broken",
            ),
            ("OTEL_RESOURCE_ATTRIBUTES", "=nokey"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
        ],
    )
    .unwrap_err();
    let paths: Vec<_> = errors.iter().map(|e| e.path()).collect();
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(paths.contains(&name), "{name}: {errors:#?}");
    }
    assert!(!format!("{errors:?}").contains("tok_live_1"));

    // A variable the YAML overrides is not read, so its value cannot fail the build.
    build(
        "      protocol: http/json\n",
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    )
    .unwrap();
}

#[test]
fn secrets_are_never_shown() {
    let d = build(
        "      endpoint: https://user:pa55word@otlp.example.com\n      headers:\n        \
         authorization: Bearer tok_yaml_1\n",
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=tok_env_2")],
    )
    .unwrap();
    let shown = format!("{d:?} {:?}", d.config());
    for secret in ["pa55word", "tok_yaml_1", "tok_env_2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("authorization") && shown.contains("x-api-key"),
        "{shown}"
    );
    assert_eq!(d.url(), "https://otlp.example.com/v1/logs");
    // The explicit header wins over the URL's userinfo.
    assert_eq!(d.inner.headers[AUTHORIZATION], "Bearer tok_yaml_1");
    let d = build(
        "      endpoint: https://user:pa55word@otlp.example.com\n",
        &[],
    )
    .unwrap();
    assert!(
        d.inner.headers[AUTHORIZATION]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
}

#[test]
fn code_settings_resolve_the_same_way() {
    let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_COMPRESSION").then(|| "gzip".to_owned());
    let d = OtlpDestination::new(OtlpConfig::from_env_with(env)).unwrap();
    assert!(d.is_gzip());
    let d =
        OtlpDestination::new(OtlpConfig::from_env_with(env).with_compression(Compression::None))
            .unwrap();
    assert!(!d.is_gzip());
    let d = OtlpDestination::new(OtlpConfig::new()).unwrap();
    assert!(!d.is_gzip(), "new() reads no variable");
    let e = OtlpDestination::new(OtlpConfig::new().with_endpoint("nope")).unwrap_err();
    assert_eq!(e.errors()[0].path(), "otlp.endpoint");
}

// ----- the wire --------------------------------------------------------------------------------

#[test]
fn json_uses_otlps_mapping() {
    let d = build("      protocol: http/json\n", &[]).unwrap();
    let r = log_record(
        &event(full_context()),
        &mapping(),
        1_764_000_000_999_000_000,
    );
    let request = d.inner.request(vec![r]);
    let body = d.inner.body(&request);
    assert_eq!(body.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
    let rec = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert_eq!(rec["eventName"], "checkout.completed");
    assert_eq!(rec["timeUnixNano"], "1764000000123456789");
    assert_eq!(rec["observedTimeUnixNano"], "1764000000999000000");
    assert_eq!(rec["traceId"], TRACE);
    assert_eq!(rec["spanId"], SPAN);
    assert_eq!(rec["severityNumber"], 9);
    let attrs = rec["attributes"].as_array().unwrap();
    let get = |k: &str| &attrs.iter().find(|a| a["key"] == k).unwrap()["value"];
    assert_eq!(get("seats"), &json!({"intValue": "12"}));
    assert_eq!(get("ratio"), &json!({"doubleValue": 0.25}));
    assert_eq!(get("trial"), &json!({"boolValue": false}));
    assert_eq!(get("plan"), &json!({"stringValue": "pro"}));
    assert_eq!(
        get("tags")["arrayValue"]["values"][1],
        json!({"intValue": "1"})
    );
    let cart = get("cart")["kvlistValue"]["values"].as_array().unwrap();
    assert!(
        cart.contains(&json!({"key": "sku", "value": {"stringValue": "A-1"}})),
        "{cart:?}"
    );
    assert_eq!(
        v["resourceLogs"][0]["scopeLogs"][0]["scope"]["name"],
        "tower-telemetry"
    );
}

#[test]
fn record_sizes_bound_the_encoded_request() {
    for protocol in ["http/protobuf", "http/json"] {
        let d = build(&format!("      protocol: {protocol}\n"), &[]).unwrap();
        let records: Vec<LogRecord> = (0..300)
            .map(|i| {
                let ctx = full_context().with_field("i", "x".repeat(i * 7));
                log_record(&event(ctx), &mapping(), 0)
            })
            .collect();
        let sizes: usize = records.iter().map(|r| d.inner.size_of_record(r)).sum();
        let commas = records.len() - 1;
        let bytes = d.inner.body(&d.inner.request(records)).bytes.len();
        let bound = d.inner.overhead + sizes + commas;
        assert!(bytes <= bound, "{protocol}: {bytes} > {bound}");
        assert!(
            bound - bytes < 400,
            "{protocol}: a tight bound: {bytes} vs {bound}"
        );
    }
}

#[test]
fn partial_success_is_read_from_either_encoding() {
    let proto = ExportLogsServiceResponse {
        partial_success: Some(
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "3 too old".into(),
            },
        ),
    }
    .encode_to_vec();
    assert_eq!(
        partial_success(Protocol::HttpProtobuf, &proto),
        (3, "3 too old".to_owned())
    );
    assert_eq!(
        partial_success(Protocol::HttpProtobuf, b""),
        (0, String::new())
    );
    let json = br#"{"partialSuccess":{"rejectedLogRecords":"4","errorMessage":"m"}}"#;
    assert_eq!(
        partial_success(Protocol::HttpJson, json),
        (4, "m".to_owned())
    );
    let json = br#"{"partialSuccess":{"rejectedLogRecords":2}}"#;
    assert_eq!(
        partial_success(Protocol::HttpJson, json),
        (2, String::new())
    );
    assert_eq!(
        partial_success(Protocol::HttpJson, b"{}"),
        (0, String::new())
    );
    assert_eq!(
        partial_success(Protocol::HttpJson, b"not json"),
        (0, String::new())
    );
}

#[test]
fn refusals_are_read_from_their_status_and_only_otlps_statuses_are_retried() {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    let body = Status {
        code: 3,
        message: "bad record".into(),
    }
    .encode_to_vec();
    assert_eq!(status_message(&h, &body).as_deref(), Some("bad record"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert_eq!(
        status_message(&h, br#"{"code":3,"message":"bad json"}"#).as_deref(),
        Some("bad json")
    );
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    assert_eq!(status_message(&h, b"plain"), None);
    for s in [429, 502, 503, 504] {
        assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
    }
    for s in [400, 401, 403, 404, 408, 413, 500, 501, 505] {
        assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
    }
}

#[test]
fn a_partial_success_fails_the_requests_last_n_events() {
    let d = build("", &[]).unwrap();
    let mut outcomes = Outcomes::new(6);
    let answer = ExportLogsServiceResponse {
        partial_success: Some(
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "two \u{1b}[31mbad".into(),
            },
        ),
    }
    .encode_to_vec();
    d.inner.settle(&[1, 3, 5], &answer, &mut outcomes);
    for i in [0, 2, 4] {
        outcomes.delivered(i);
    }
    let e = outcomes.into_result().unwrap_err();
    let items = e.items().unwrap();
    assert_eq!(items.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [3, 5]);
    assert!(items.iter().all(|(_, e)| !e.is_retryable()));
    assert!(
        items[0].1.message().contains("rejected 2 of the 3"),
        "{e:?}"
    );
    assert!(!items[0].1.message().contains('\u{1b}'), "escaped: {e:?}");
    // More rejected than sent: all of them, no more.
    let mut outcomes = Outcomes::new(2);
    let answer = br#"{"partialSuccess":{"rejectedLogRecords":"9"}}"#;
    let d = build("      protocol: http/json\n", &[]).unwrap();
    d.inner.settle(&[0, 1], answer, &mut outcomes);
    assert_eq!(
        outcomes.into_result().unwrap_err().kind(),
        crate::destination::DeliveryErrorKind::Permanent
    );
}

#[test]
fn resources_and_scope() {
    let r = record::resource(&[("a".into(), json!(1.5)), ("b".into(), json!(["x", 2]))]);
    assert_eq!(r.attributes[0].value, Some(any(V::DoubleValue(1.5))));
    assert_eq!(record::scope().name, "tower-telemetry");
}
