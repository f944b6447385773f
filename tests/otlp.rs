//! Issue #25's acceptance for the `otlp` kind: a real axum app behind `TelemetryLayer`, driven
//! by a real HTTP client, delivering through the kind (configured from YAML, with the `OTEL_*`
//! variables injected through the configuration's environment) to an OTLP/HTTP receiver
//! written in Python that decodes with OpenTelemetry's official `opentelemetry-proto` package
//! (`tests/support/otlp_receiver.py`) — not with our encoder.
//!
//! | test | what |
//! |---|---|
//! | `a_*` | protobuf: `event_name`, typed attributes of every type, semantic-convention context attributes, resource from YAML and variables, trace/span ids from context fields, headers from a variable |
//! | `b_*` | gzip, and `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` used as the full URL |
//! | `c_*` | `protocol: http/json`: OTLP's JSON mapping as sent, decoded to the same values |
//! | `d_*` | 503 + `Retry-After: 1` → the same records again no sooner than 1 s later |
//! | `e_*` | 429 / 502 / 504 retried; 500 / 400 / 408 failed without a retry |
//! | `f_*` | a partial success: its rejected records counted failed, its message logged once, escaped |
//!
//! Every test checks `enqueued = delivered + failed + discarded + dropped + undelivered`.
//! Real sockets and a child process need the real clock.
#![cfg(feature = "otlp")]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::get;
use bytes::Bytes;
use http::HeaderName;
use http_body_util::Empty;
use serde_json::{Value, json};
use support::http::{HttpClient, Server, client, get as req, send};
use support::otlp_receiver::{OtlpReceiver, attr};
use tower_telemetry::config::Config;
use tower_telemetry::layer::{ClientIp, TelemetryLayer};
use tower_telemetry::{Context, DestinationStats, Telemetry, Tracker, track};

/// The longest wait for something that should happen within a second or two.
const WAIT: Duration = Duration::from_secs(30);

/// The destination's name in every config.
const DEST: &str = "otel";

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) otlp-acceptance";
const LANGUAGE: &str = "fr-FR,fr;q=0.9";
const REFERRER: &str = "https://example.com/from";

// ----- the app ---------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Work {
    seq: u64,
    count: u64,
    #[serde(default)]
    traced: bool,
}

/// `GET /checkout/{id}?seq=N&count=C[&traced=true]`: tracks `checkout.completed` C times with
/// `seq` N, N+1, ... and a property of every type; with `traced`, the request's context gets
/// `trace_id` and `span_id` fields first (as trace correlation will put them there).
fn app(telemetry: &Telemetry) -> Router {
    let session = HeaderName::from_static("x-session-id");
    Router::new()
        .route(
            "/checkout/{id}",
            get(
                |Path(id): Path<String>, Query(q): Query<Work>, tracker: Tracker| async move {
                    if q.traced {
                        tracker.set_context(
                            Context::new()
                                .with_field("trace_id", TRACE)
                                .with_field("span_id", SPAN),
                        );
                    }
                    tracker.set_context(Context::new().with_field("tenant", "acme"));
                    for seq in q.seq..q.seq + q.count {
                        track!(
                            "checkout.completed",
                            seq = seq,
                            order = id.clone(),
                            amount = 9.5,
                            paid = true,
                            items = json!(["sku-1", 2, 0.5, false, null, {"gift": true}]),
                            cart = json!({"sku": "sku-1", "qty": 2, "meta": {"tags": ["a"]}}),
                            coupon = Value::Null
                        );
                    }
                    "ok"
                },
            ),
        )
        .layer(
            TelemetryLayer::new(telemetry.clone())
                .user_id_from_header(HeaderName::from_static("x-user-id"))
                .session_id(move |p: &http::request::Parts| {
                    p.headers
                        .get(&session)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .hostname("shop.example.com")
                .client_ip(ClientIp::Header(HeaderName::from_static("x-forwarded-for")))
                .capture_query(true),
        )
}

/// The user of a request: one of 10.
fn user_of(seq: u64) -> u64 {
    (seq / 10) % 10
}

/// Whether the request of `seq` carries trace ids: every other one.
fn traced(seq: u64) -> bool {
    (seq / 10).is_multiple_of(2)
}

/// One request tracking `count` events from `seq` on.
async fn hit(client: &HttpClient, app: &str, seq: u64, count: u64, traced: bool) {
    let user = user_of(seq);
    let r = req(&format!(
        "{app}/checkout/order-{seq}?seq={seq}&count={count}&traced={traced}&token=secret"
    ))
    .header("user-agent", USER_AGENT)
    .header("accept-language", LANGUAGE)
    .header("referer", REFERRER)
    .header("x-request-id", format!("req-{seq}"))
    .header("x-forwarded-for", "203.0.113.7")
    .header("x-session-id", format!("session-{user}"))
    .header("x-user-id", format!("user-{user}"));
    let (res, body) = send(client, r.body(Empty::<Bytes>::new()).unwrap()).await;
    assert_eq!((res.status().as_u16(), body.as_str()), (200, "ok"));
}

/// The app under test: a telemetry handle from `yaml` with `env` as the environment (for
/// `${VAR}` and the `OTEL_*` variables), the app serving on loopback.
struct Side {
    telemetry: Telemetry,
    app: Server,
}

impl Side {
    async fn new(yaml: &str, env: &[(&str, &str)]) -> Side {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = Config::from_yaml_str_with_env(yaml, |name| env.get(name).cloned())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let telemetry = Telemetry::from_config(config).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let app = Server::start(app(&telemetry)).await;
        Side { telemetry, app }
    }

    fn stats(&self) -> DestinationStats {
        self.telemetry.stats().destination(DEST).unwrap().clone()
    }

    /// Tracks `seqs` through the app, 10 a request, 8 requests at a time; every other
    /// request traced.
    async fn drive(&self, seqs: std::ops::Range<u64>) {
        let client = Arc::new(client());
        let base = self.app.url("");
        let mut tasks = tokio::task::JoinSet::new();
        const LANES: u64 = 8;
        for lane in 0..LANES {
            let (client, base) = (client.clone(), base.clone());
            let seqs = seqs.clone();
            tasks.spawn(async move {
                let mut seq = seqs.start + lane * 10;
                while seq < seqs.end {
                    let count = 10.min(seqs.end - seq);
                    hit(&client, &base, seq, count, traced(seq)).await;
                    seq += LANES * 10;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
}

/// The destination's YAML: `own` (the kind's keys, indented for the destination) and quick
/// delivery (batches of `batch`, retries within 200 ms).
fn yaml(own: &str, batch: usize) -> String {
    format!(
        "telemetry:\n  destinations:\n    {DEST}:\n      type: otlp\n{own}      \
         batch_size: {batch}\n      flush_interval: 20ms\n      concurrency: 2\n      \
         timeout: 5s\n      retry: {{ initial_backoff: 20ms, max_backoff: 200ms }}\n"
    )
}

/// [`yaml`] whose batches leave only when full or flushed: the events of a test's requests
/// make one batch, one request.
fn one_batch_yaml(own: &str) -> String {
    yaml(own, 1000).replace("flush_interval: 20ms", "flush_interval: 1m")
}

/// Every tracked event is accounted for; nothing dropped or left over.
fn assert_accounted(d: &DestinationStats, tracked: u64) {
    assert_eq!(d.enqueued + d.dropped_queue_full, tracked, "{d:?}");
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{d:?}"
    );
    assert_eq!(
        (
            d.dropped_queue_full,
            d.dropped_oldest,
            d.discarded,
            d.undelivered
        ),
        (0, 0, 0, 0),
        "{d:?}"
    );
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Checks one stored record as the app tracked it; returns its `seq`.
fn check_record(r: &Value, window: (u64, u64)) -> u64 {
    assert_eq!(r["event_name"], "checkout.completed", "{r:#}");
    assert_eq!(r["body"], json!({"string": "checkout.completed"}), "{r:#}");
    assert_eq!(r["severity_number"], 9);
    assert_eq!(r["severity_text"], "INFO");
    let t = r["time_unix_nano"].as_u64().unwrap();
    let observed = r["observed_time_unix_nano"].as_u64().unwrap();
    assert!(window.0 <= t && t <= window.1, "{t} not in {window:?}");
    assert!(t <= observed && observed <= window.1, "{t} {observed}");
    let a = &r["attributes"];
    assert!(a.get("__duplicates__").is_none(), "{a:#}");
    let seq = attr(a, "seq")["int"].as_u64().unwrap();
    let user = user_of(seq);
    // Properties, typed.
    assert_eq!(
        attr(a, "order")["string"],
        format!("order-{}", seq - seq % 10)
    );
    assert_eq!(attr(a, "amount"), &json!({"double": 9.5}));
    assert_eq!(attr(a, "paid"), &json!({"bool": true}));
    assert_eq!(attr(a, "coupon"), &json!({"empty": true}));
    assert_eq!(
        attr(a, "items"),
        &json!({"array": [{"string": "sku-1"}, {"int": 2}, {"double": 0.5}, {"bool": false},
                          {"empty": true}, {"kvlist": {"gift": {"bool": true}}}]})
    );
    assert_eq!(
        attr(a, "cart"),
        &json!({"kvlist": {"sku": {"string": "sku-1"}, "qty": {"int": 2},
                           "meta": {"kvlist": {"tags": {"array": [{"string": "a"}]}}}}})
    );
    // The context, under semantic-convention names.
    assert_eq!(attr(a, "user.id")["string"], format!("user-{user}"));
    assert_eq!(attr(a, "session.id")["string"], format!("session-{user}"));
    assert_eq!(
        attr(a, "telemetry.request_id")["string"],
        format!("req-{}", seq - seq % 10)
    );
    assert_eq!(attr(a, "server.address")["string"], "shop.example.com");
    assert_eq!(
        attr(a, "url.path")["string"],
        format!("/checkout/order-{}", seq - seq % 10)
    );
    assert_eq!(attr(a, "http.route")["string"], "/checkout/{id}");
    assert_eq!(attr(a, "http.request.method")["string"], "GET");
    assert_eq!(attr(a, "user_agent.original")["string"], USER_AGENT);
    assert_eq!(
        attr(a, "http.request.header.accept-language"),
        &json!({"array": [{"string": LANGUAGE}]})
    );
    assert_eq!(
        attr(a, "http.request.header.referer"),
        &json!({"array": [{"string": REFERRER}]})
    );
    assert_eq!(attr(a, "client.address")["string"], "203.0.113.7");
    assert_eq!(attr(a, "telemetry.tenant")["string"], "acme");
    assert!(a.get("url.query").is_none(), "never the query: {a:#}");
    assert!(!r.to_string().contains("token=secret"), "{r:#}");
    assert!(
        a.get("telemetry.kind").is_none(),
        "a tracked event has no kind"
    );
    // Trace correlation: every other request carried the ids.
    if traced(seq) {
        assert_eq!(r["trace_id"], TRACE, "{r:#}");
        assert_eq!(r["span_id"], SPAN, "{r:#}");
        assert!(a.get("telemetry.trace_id").is_none());
        assert!(a.get("telemetry.span_id").is_none());
    } else {
        assert_eq!(
            (r["trace_id"].as_str(), r["span_id"].as_str()),
            (Some(""), Some(""))
        );
    }
    seq
}

/// Every seq of `seqs` stored exactly once, each record as tracked; the uids unique.
fn assert_stored_once(rx: &OtlpReceiver, seqs: std::ops::Range<u64>, window: (u64, u64)) {
    let stored = rx.stored();
    let mut seen = HashSet::new();
    let mut uids = HashSet::new();
    for r in &stored {
        let seq = check_record(r, window);
        assert!(seen.insert(seq), "seq {seq} stored twice");
        let uid = attr(&r["attributes"], "log.record.uid")["string"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");
        assert!(uids.insert(uid));
    }
    assert_eq!(seen, seqs.collect::<HashSet<_>>());
}

/// A request's resource attributes (one resource per request).
fn resource(request: &Value) -> &Value {
    let resources = request["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1, "{request:#}");
    assert_eq!(
        request["scopes"],
        json!([{"name": "tower-telemetry", "version": env!("CARGO_PKG_VERSION")}])
    );
    &resources[0]
}

// ----- a. protobuf: names, typed attributes, context, resource, trace ids ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_records_carry_names_typed_attributes_context_resource_and_trace_ids() {
    const N: u64 = 200;
    let rx = OtlpReceiver::start(json!([])).await;
    let url = rx.url();
    let env = [
        // No `endpoint:` in the YAML: the generic variable, `/v1/logs` appended.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20tok_test,x-team=shop",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,service.version=1.2.3,host.name=web-1",
        ),
        ("OTEL_SERVICE_NAME", "from-service-name"),
        ("DEPLOYMENT", "test"),
    ];
    let own = "      forward: { ip: true }\n      resource:\n        service.name: checkout\n        \
               deployment.environment.name: ${DEPLOYMENT}\n        replicas: 3\n";
    let side = Side::new(&yaml(own, 64), &env).await;
    let started = now_nanos();
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    assert!(
        rx.wait_for_stored(N as usize, WAIT).await,
        "{:?}",
        rx.requests()
    );
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed, d.retries), (N, 0, 0), "{d:?}");
    assert_stored_once(&rx, 0..N, (started, now_nanos()));
    for request in rx.requests() {
        assert_eq!(request["path"], "/v1/logs");
        assert_eq!(request["status"], 200);
        assert_eq!(request["content_type"], "application/x-protobuf");
        assert_eq!(request["gzip"], false);
        let h = &request["headers"];
        assert_eq!(h["authorization"], "Bearer tok_test");
        assert_eq!(h["x-team"], "shop");
        assert!(
            h["user-agent"]
                .as_str()
                .unwrap()
                .starts_with("tower-telemetry/"),
            "{h:#}"
        );
        let res = resource(&request);
        // The YAML over OTEL_SERVICE_NAME over OTEL_RESOURCE_ATTRIBUTES.
        assert_eq!(attr(res, "service.name"), &json!({"string": "checkout"}));
        assert_eq!(attr(res, "service.version"), &json!({"string": "1.2.3"}));
        assert_eq!(attr(res, "host.name"), &json!({"string": "web-1"}));
        assert_eq!(
            attr(res, "deployment.environment.name"),
            &json!({"string": "test"})
        );
        assert_eq!(attr(res, "replicas"), &json!({"int": 3}));
    }
}

// ----- b. gzip, and the logs endpoint variable -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_gzip_bodies_and_the_logs_endpoint_variable_as_the_full_url() {
    const N: u64 = 300;
    let rx = OtlpReceiver::start(json!([])).await;
    let logs_url = format!("{}/custom/otlp/logs", rx.url());
    let env = [
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", logs_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/never"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "4000"),
    ];
    let side = Side::new(&yaml("      forward: { ip: true }\n", 100), &env).await;
    let started = now_nanos();
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    assert!(rx.wait_for_stored(N as usize, WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed, d.retries), (N, 0, 0), "{d:?}");
    assert_stored_once(&rx, 0..N, (started, now_nanos()));
    let requests = rx.requests();
    assert!(requests.len() >= 3, "batches of 100: {}", requests.len());
    for request in &requests {
        assert_eq!(request["path"], "/custom/otlp/logs");
        assert_eq!(request["gzip"], true);
        assert_eq!(request["headers"]["content-encoding"], "gzip");
        assert_eq!(request["content_type"], "application/x-protobuf");
    }
}

// ----- c. OTLP/JSON ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_json_protocol_sends_otlps_json_mapping() {
    const N: u64 = 100;
    let rx = OtlpReceiver::start(json!([])).await;
    let own = format!(
        "      endpoint: {}\n      protocol: http/json\n      compression: gzip\n      \
         forward: {{ ip: true }}\n",
        rx.url()
    );
    let side = Side::new(&yaml(&own, 50), &[]).await;
    let started = now_nanos();
    // The first request alone (seq 0..10 is traced): the receiver reports each request's first
    // record, so one of them is known to carry trace ids however the rest interleave.
    side.drive(0..10).await;
    assert!(side.telemetry.flush(WAIT).await);
    side.drive(10..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    assert!(rx.wait_for_stored(N as usize, WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed), (N, 0), "{d:?}");
    // Decoded by the official classes to the same values as protobuf.
    assert_stored_once(&rx, 0..N, (started, now_nanos()));
    let requests = rx.requests();
    let mut traced_seen = false;
    for request in &requests {
        assert_eq!(request["content_type"], "application/json");
        assert_eq!(request["gzip"], true);
        // As sent: lowerCamelCase keys, 64-bit integers as strings, hex ids.
        let raw = &request["raw_first_record"];
        for key in raw.as_object().unwrap().keys() {
            assert!(!key.contains('_'), "{key} is not lowerCamelCase: {raw:#}");
        }
        assert!(
            raw["timeUnixNano"].as_str().unwrap().parse::<u64>().is_ok(),
            "{raw:#}"
        );
        assert!(raw["observedTimeUnixNano"].is_string(), "{raw:#}");
        assert_eq!(raw["eventName"], "checkout.completed");
        assert_eq!(raw["severityNumber"], 9, "enums as integers");
        let attrs = raw["attributes"].as_array().unwrap();
        let seq = attrs.iter().find(|a| a["key"] == "seq").unwrap();
        assert!(seq["value"]["intValue"].is_string(), "{seq}");
        let trace = raw["traceId"].as_str().unwrap();
        if !trace.is_empty() {
            traced_seen = true;
            assert_eq!(trace, TRACE, "hex, not base64");
            assert_eq!(raw["spanId"], SPAN);
        }
    }
    assert!(traced_seen, "some request began with a traced record");
}

// ----- d. 503 + Retry-After ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_503_with_retry_after_is_honoured() {
    const N: u64 = 50;
    let rx = OtlpReceiver::start(json!([{"status": 503, "headers": {"Retry-After": "1"}}])).await;
    let own = format!("      endpoint: {}\n", rx.url());
    // One batch: all N events in one request.
    let side = Side::new(&one_batch_yaml(&own), &[]).await;
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    assert!(rx.wait_for_stored(N as usize, WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed, d.retries), (N, 0, 1), "{d:?}");
    let requests = rx.requests();
    let refused = requests.iter().find(|r| r["status"] == 503).expect("a 503");
    let again = requests
        .iter()
        .find(|r| r["status"] == 200 && r["uids"] == refused["uids"])
        .expect("the refused records sent again");
    let gap = again["at"].as_f64().unwrap() - refused["at"].as_f64().unwrap();
    assert!(
        gap >= 0.95,
        "the retry came {gap:.3} s after a 503 with Retry-After: 1"
    );
    assert_eq!(rx.stored().len() as u64, N);
}

// ----- e. which statuses are retried -----------------------------------------------------------

/// The first request answered `status`: retried (then delivered) or failed for good.
async fn first_answer(status: u16, retried: bool) {
    const N: u64 = 30;
    let rx = OtlpReceiver::start(json!([{"status": status, "message": "scripted refusal"}])).await;
    let own = format!("      endpoint: {}\n", rx.url());
    let side = Side::new(&one_batch_yaml(&own), &[]).await;
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    let expected = if retried { 2 } else { 1 };
    assert!(rx.wait_for_requests(expected, WAIT).await, "{status}");
    if retried {
        assert!(rx.wait_for_stored(N as usize, WAIT).await);
    }
    let requests = rx.requests();
    if retried {
        assert_eq!(
            (d.delivered, d.failed, d.retries),
            (N, 0, 1),
            "{status}: {d:?}"
        );
        assert_eq!(requests.len(), 2, "{status}");
    } else {
        assert_eq!(
            (d.delivered, d.failed, d.retries),
            (0, N, 0),
            "{status}: {d:?}"
        );
        assert_eq!(requests.len(), 1, "{status}: never retried");
        assert!(rx.stored().is_empty());
    }
    assert_eq!(requests[0]["status"], status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_429_502_504_are_retried_500_400_408_are_not() {
    for status in [429, 502, 504] {
        first_answer(status, true).await;
    }
    for status in [500, 400, 408] {
        first_answer(status, false).await;
    }
}

// ----- f. a partial success --------------------------------------------------------------------

async fn partial_success(protocol: &str) {
    const N: u64 = 20;
    let message = "3 records too old\n\u{1b}[31mFORGED log line";
    let rx = OtlpReceiver::start(json!([
        {"status": 200, "partial": {"rejected": 3, "message": message}},
        {"status": 200, "partial": {"rejected": 2, "message": "second"}},
    ]))
    .await;
    let logs = support::logs::Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::INFO));
    let own = format!("      endpoint: {}\n      protocol: {protocol}\n", rx.url());
    let side = Side::new(&one_batch_yaml(&own), &[]).await;
    for round in 0..2 {
        hit(&client(), &side.app.url(""), round * 10, 10, false).await;
        assert!(side.telemetry.flush(WAIT).await);
    }
    assert!(rx.wait_for_stored(N as usize, WAIT).await);
    assert!(rx.wait_for_requests(2, WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    // 3 + 2 rejected, counted failed, never retried; the rest delivered.
    assert_eq!(
        (d.delivered, d.failed, d.retries),
        (N - 5, 5, 0),
        "{protocol}: {d:?}"
    );
    assert_eq!(rx.requests().len(), 2, "{protocol}: nothing was resent");
    let text = logs.text();
    assert_eq!(
        text.matches("accepted a request only in part").count(),
        1,
        "{protocol}: logged once: {text}"
    );
    assert!(text.contains("3 records too old"), "{text}");
    assert!(!text.contains('\u{1b}'), "escaped: {text:?}");
    assert!(
        !text.lines().any(|l| l.starts_with("\u{1b}[31mFORGED")),
        "no forged line: {text}"
    );
}

#[tokio::test]
async fn f_a_partial_success_counts_its_rejected_records_failed() {
    partial_success("http/protobuf").await;
    partial_success("http/json").await;
}

// ----- throughput (release build, ignored by default) ------------------------------------------

/// Tracks `n` events from 100 users, as fast as one task can, into `telemetry`.
async fn track_many(telemetry: &Telemetry, n: u64) {
    for user in 0..100u64 {
        let ctx = Context::new()
            .with_user_id(format!("user-{user}"))
            .with_session_id(format!("session-{user}"))
            .with_path("/work")
            .with_route("/work")
            .with_method("POST");
        telemetry
            .scope(ctx, async {
                for seq in (user..n).step_by(100) {
                    track!("work.done", seq = seq, plan = "pro", amount = 9.5);
                }
            })
            .await;
    }
}

fn throughput_yaml(endpoint: &str, extra: &str) -> String {
    format!(
        "telemetry:\n  destinations:\n    {DEST}:\n      type: otlp\n      endpoint: {endpoint}\n\
         {extra}      batch_size: 1000\n      concurrency: 4\n      flush_interval: 20ms\n      \
         timeout: 10s\n      queue_capacity: 400000\n      queue_max_bytes: 536870912\n"
    )
}

/// Events/s from `track!` through the kind into the Python receiver (decoding every request
/// with the official package, reporting only per-request summaries), and into an in-process
/// Rust server that counts requests and decodes nothing. See BENCHMARKS.md:
///
/// ```text
/// cargo test --release --features otlp --test otlp -- --ignored --nocapture throughput
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in a release build, see BENCHMARKS.md"]
async fn throughput_into_the_python_receiver_and_a_counting_server() {
    // OTLP_THROUGHPUT_EVENTS=n for a shorter run.
    let n: u64 = std::env::var("OTLP_THROUGHPUT_EVENTS").map_or(200_000, |v| v.parse().unwrap());
    for (label, extra) in [
        ("protobuf", ""),
        ("protobuf+gzip", "      compression: gzip\n"),
        ("json", "      protocol: http/json\n"),
    ] {
        // The Python receiver.
        let rx = OtlpReceiver::start_summary().await;
        let telemetry = Telemetry::from_config(
            Config::from_yaml_str_with_env(&throughput_yaml(&rx.url(), extra), |_| None).unwrap(),
        )
        .unwrap();
        let started = Instant::now();
        track_many(&telemetry, n).await;
        let tracked = started.elapsed();
        if !rx
            .wait_for_stored(n as usize, Duration::from_secs(300))
            .await
        {
            let statuses = rx.requests().iter().fold(HashMap::new(), |mut m, r| {
                *m.entry(format!("{} {}", r["status"], r["error"]))
                    .or_insert(0usize) += 1;
                m
            });
            panic!(
                "{label}: {} of {n} stored; requests by status: {statuses:?}; {:?}",
                rx.stored_count(),
                telemetry.stats().destination(DEST)
            );
        }
        let took = started.elapsed();
        assert!(telemetry.flush(WAIT).await);
        let d = telemetry.stats().destination(DEST).unwrap().clone();
        assert_accounted(&d, n);
        assert_eq!(d.delivered, n);
        let bytes: u64 = rx
            .requests()
            .iter()
            .map(|r| r["bytes"].as_u64().unwrap())
            .sum();
        println!(
            "throughput: python receiver, {label}: {n} events in {took:.2?} = {:.0} events/s \
             ({} requests, {:.0} bytes/event on the wire; tracking alone {tracked:.2?})",
            n as f64 / took.as_secs_f64(),
            rx.requests().len(),
            bytes as f64 / n as f64,
        );
        drop(telemetry);

        // The counting server.
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = counter.clone();
        let server = Server::start(Router::new().route(
            "/v1/logs",
            axum::routing::post(move |body: Bytes| {
                let c = c.clone();
                async move {
                    c.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    ""
                }
            }),
        ))
        .await;
        let telemetry = Telemetry::from_config(
            Config::from_yaml_str_with_env(&throughput_yaml(&server.url(""), extra), |_| None)
                .unwrap(),
        )
        .unwrap();
        let started = Instant::now();
        track_many(&telemetry, n).await;
        assert!(telemetry.flush(Duration::from_secs(300)).await);
        let took = started.elapsed();
        let d = telemetry.stats().destination(DEST).unwrap().clone();
        assert_accounted(&d, n);
        assert_eq!(d.delivered, n);
        println!(
            "throughput: counting server, {label}: {n} events in {took:.2?} = {:.0} events/s \
             ({:.0} bytes/event)",
            n as f64 / took.as_secs_f64(),
            counter.load(std::sync::atomic::Ordering::Relaxed) as f64 / n as f64
        );
    }
}
