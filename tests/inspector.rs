//! The inspector's routes through a real axum app and a real HTTP client (issue #26): the
//! event stream shows each event after redaction with every destination's outcome, in order;
//! a stalled page slows neither tracking nor delivery and is told what it missed; the token
//! guards every data route; explain and the configuration answer.

#![cfg(feature = "inspector")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use support::accounted;
use support::http::{Server, client, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_telemetry::config::{Config, DestinationConfig};
use tower_telemetry::destination::{BoxFuture, DeliveryError, Destination};
use tower_telemetry::inspector::Inspector;
use tower_telemetry::layer::TelemetryLayer;
use tower_telemetry::{Event, Telemetry, props, track};

const TOKEN: &str = "t0ken-for-tests";
const WAIT: Duration = Duration::from_secs(10);

/// Refuses every batch for good, as a server would a wrong website id.
struct Refusing;

impl Destination for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    fn send<'a>(&'a self, _: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async { Err(DeliveryError::permanent("HTTP 400: website not found")) })
    }
}

fn handle() -> Telemetry {
    let config = Config::default()
        .with_destination(
            DestinationConfig::new("mem")
                .with_kind("memory")
                .with_events(["ok.*"]),
        )
        .with_destination(
            DestinationConfig::new("sampled")
                .with_kind("memory")
                .with_events(["sample.*"])
                .with_sample_rate(0.0),
        )
        .with_destination(DestinationConfig::new("refusing").with_events(["fail.*"]));
    Telemetry::builder()
        .config(config)
        .destination("refusing", Refusing)
        .build()
        .unwrap()
}

fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/ok",
            get(|| async {
                track!("ok.clicked", plan = "pro", password = "hunter2");
                "ok"
            }),
        )
        .route(
            "/sample",
            get(|| async {
                track!("sample.seen", n = 1);
                "ok"
            }),
        )
        .route(
            "/fail",
            get(|| async {
                track!("fail.sent", n = 2);
                "ok"
            }),
        )
        .route(
            "/nowhere",
            get(|| async {
                track!("other.thing", n = 3);
                "ok"
            }),
        )
        .layer(TelemetryLayer::new(telemetry.clone()))
        .nest(
            "/_telemetry",
            Inspector::new(telemetry.clone()).token(TOKEN).router(),
        )
        // The docs' recipe for the trailing slash `nest` does not answer.
        .route(
            "/_telemetry/",
            get(|| async { axum::response::Redirect::permanent("/_telemetry") }),
        )
}

/// One Server-Sent Events message.
#[derive(Debug)]
struct Sse {
    event: String,
    data: Value,
}

/// Reads a `text/event-stream` body message by message.
struct SseReader {
    body: hyper::body::Incoming,
    buf: String,
}

impl SseReader {
    async fn open(server: &Server, token: &str) -> SseReader {
        let req = Request::get(server.url("/_telemetry/api/stream"))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        SseReader {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped); `None` when the stream ended. Fails
    /// past `WAIT`.
    async fn next(&mut self) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a comment
                }
                let data = serde_json::from_str(&data).unwrap();
                return Some(Sse { event, data });
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("no message within the wait")?
                .unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// Messages until `done` says so (each given to it), failing past `WAIT`.
    async fn until(&mut self, mut done: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let Some(m) = self.next().await else {
                panic!("the stream ended; got {seen:#?}");
            };
            let stop = done(&m);
            seen.push(m);
            if stop {
                return seen;
            }
        }
    }
}

async fn get_ok(server: &Server, path: &str) {
    let req = Request::get(server.url(path)).body(Empty::new()).unwrap();
    let (res, _) = send(&client(), req).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_shows_each_event_redacted_with_every_destinations_outcome_in_order() {
    let telemetry = handle();
    let server = Server::start(app(&telemetry)).await;
    let mut page = SseReader::open(&server, TOKEN).await;
    let hello = page.next().await.unwrap();
    assert_eq!(hello.event, "hello");
    assert_eq!(
        hello.data["destinations"],
        serde_json::json!(["mem", "sampled", "refusing"])
    );
    let snapshot = page.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["events"], serde_json::json!([]));

    for path in ["/ok", "/sample", "/fail", "/nowhere"] {
        get_ok(&server, path).await;
    }
    let (mut delivered, mut failed, mut nowhere) = (false, false, false);
    let seen = page
        .until(|m| {
            if m.event == "outcome" {
                delivered |= m.data["destination"] == "mem" && m.data["outcome"] == "delivered";
                failed |= m.data["destination"] == "refusing" && m.data["outcome"] == "failed";
            }
            nowhere |= m.event == "tracked" && m.data["name"] == "other.thing";
            delivered && failed && nowhere
        })
        .await;

    let tracked: Vec<&Sse> = seen.iter().filter(|m| m.event == "tracked").collect();
    let names: Vec<&str> = tracked
        .iter()
        .map(|m| m.data["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..3], ["ok.clicked", "sample.seen", "fail.sent"]);
    let by_name = |n: &str| {
        tracked
            .iter()
            .find(|m| m.data["name"] == n)
            .unwrap_or_else(|| panic!("{n} not shown"))
            .data
            .clone()
    };

    // After redaction, with the request's context.
    let ok = by_name("ok.clicked");
    assert_eq!(ok["properties"]["plan"], "pro");
    assert_ne!(ok["properties"]["password"], "hunter2");
    assert!(
        !serde_json::to_string(&seen.iter().map(|m| &m.data).collect::<Vec<_>>())
            .unwrap()
            .contains("hunter2")
    );
    assert_eq!(ok["context"]["path"], "/ok");
    assert!(ok["context"]["request_id"].is_string(), "{ok}");
    assert_eq!(ok["category"], "ok");
    assert_eq!(ok["kind"], "custom");
    let outcome = |e: &Value, d: &str| e["destinations"][d]["outcome"].as_str().unwrap().to_owned();
    assert_eq!(outcome(&ok, "mem"), "queued");
    assert_eq!(outcome(&ok, "sampled"), "not_routed");
    assert_eq!(
        ok["destinations"]["sampled"]["message"],
        "matches none of its `events` patterns"
    );
    let sample = by_name("sample.seen");
    assert_eq!(outcome(&sample, "sampled"), "sampled_out");
    assert_eq!(outcome(&sample, "mem"), "not_routed");
    let fail = by_name("fail.sent");
    assert_eq!(outcome(&fail, "refusing"), "queued");

    // The refusal, with the server's message, after the event it is about.
    let refusal = seen
        .iter()
        .position(|m| m.event == "outcome" && m.data["outcome"] == "failed")
        .unwrap();
    assert_eq!(seen[refusal].data["id"], fail["id"]);
    let message = seen[refusal].data["message"].as_str().unwrap();
    assert!(message.contains("HTTP 400: website not found"), "{message}");
    let fail_at = seen
        .iter()
        .position(|m| m.event == "tracked" && m.data["name"] == "fail.sent")
        .unwrap();
    assert!(fail_at < refusal);
    // Numbered in order.
    let seqs: Vec<u64> = seen
        .iter()
        .map(|m| m.data["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // An event routed nowhere is shown too, reaching no one.
    let nowhere = by_name("other.thing");
    for d in ["mem", "sampled", "refusing"] {
        assert_eq!(outcome(&nowhere, d), "not_routed");
    }

    // A page opened now gets the same events in its snapshot, outcomes applied.
    let mut late = SseReader::open(&server, TOKEN).await;
    late.next().await.unwrap();
    let snapshot = late.next().await.unwrap();
    let events = snapshot.data["events"].as_array().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["ok.clicked", "sample.seen", "fail.sent", "other.thing"]
    );
    assert_eq!(outcome(&events[0], "mem"), "delivered");
    assert_eq!(outcome(&events[2], "refusing"), "failed");

    // The counters and the last error.
    let req = Request::get(server.url("/_telemetry/api/stats"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status(), 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    let refusing = &stats["destinations"][2];
    assert_eq!(refusing["name"], "refusing");
    assert_eq!(refusing["failed"], 1);
    let last = &refusing["last_errors"][0];
    assert_eq!(last["outcome"], "failed");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("website not found")
    );
    assert_eq!(stats["destinations"][1]["sampled_out"], 1);
    assert_eq!(stats["inspector"]["subscribers"], 2);

    let report = telemetry.shutdown(WAIT).await;
    for d in &report.stats.destinations {
        accounted(d);
    }
    assert_eq!(report.destination("mem").unwrap().delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_page_slows_neither_tracking_nor_delivery_and_is_told_what_it_missed() {
    const N: usize = 20_000;
    let telemetry = handle();
    let memory = telemetry.memory("mem").unwrap();
    let server = Server::start(app(&telemetry)).await;
    // A page that asks for the stream and then never reads it.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /_telemetry/api/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Open once the counters say so.
    let stats = || telemetry.stats();
    let opened = tokio::time::Instant::now() + WAIT;
    let stats_url = server.url("/_telemetry/api/stats");
    loop {
        let req = Request::get(&stats_url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap();
        let (_, body) = send(&client(), req).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["inspector"]["subscribers"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < opened,
            "the stream never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A page that keeps up, read chunk by chunk as the events are tracked.
    let mut live = SseReader::open(&server, TOKEN).await;
    assert_eq!(live.next().await.unwrap().event, "hello");
    assert_eq!(live.next().await.unwrap().event, "snapshot");

    // Tracking goes on; every event is delivered; the page that reads sees every one.
    // A chunk and its outcomes, twice over, stay within the broadcast's 1 024 messages even if
    // the connection took none of them meanwhile: the page that reads never lags.
    const CHUNK: usize = 200;
    let pad = "x".repeat(2000);
    let mut shown = 0;
    for chunk in 0..N / CHUNK {
        for i in chunk * CHUNK..(chunk + 1) * CHUNK {
            telemetry.track("ok.load", props! { "i" => i as i64, "pad" => pad.clone() });
        }
        let last = ((chunk + 1) * CHUNK - 1) as i64;
        let seen = live
            .until(|m| m.event == "tracked" && m.data["properties"]["i"] == last)
            .await;
        shown += seen.iter().filter(|m| m.event == "tracked").count();
        assert!(
            seen.iter().all(|m| m.event != "lagged"),
            "the live page lagged"
        );
    }
    assert_eq!(shown, N, "the page that keeps up sees every event");
    assert!(telemetry.flush(WAIT).await, "flush timed out");
    assert_eq!(memory.len(), N);
    assert_eq!(stats().destination("mem").unwrap().delivered, N as u64);

    // The stalled page, read at last: what its connection still holds, then word of what it
    // missed (it held up nothing meanwhile).
    let mut buf = vec![0u8; 1 << 16];
    let mut text = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, stalled.read(&mut buf))
            .await
            .expect("no `lagged` message within the wait")
            .unwrap();
        assert!(n > 0, "the stream ended");
        text.extend_from_slice(&buf[..n]);
        if text.windows(13).any(|w| w == b"event: lagged") {
            break;
        }
    }
    let report = telemetry.shutdown(WAIT).await;
    for d in &report.stats.destinations {
        accounted(d);
    }
}

#[tokio::test]
async fn the_token_guards_every_data_route_and_the_page_loads_nothing_from_elsewhere() {
    let telemetry = handle();
    let server = Server::start(app(&telemetry)).await;
    for path in [
        "/api/stream",
        "/api/stats",
        "/api/config",
        "/api/explain?name=ok.x",
    ] {
        let url = server.url(&format!("/_telemetry{path}"));
        for auth in [None, Some("Bearer wrong"), Some("Basic dDB rZW4=")] {
            let mut req = Request::get(&url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let (res, body) = send(&client(), req.body(Empty::new()).unwrap()).await;
            assert_eq!(res.status(), 401, "{path} with {auth:?}");
            assert!(
                res.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
            assert!(body.contains("Bearer"), "{body}");
        }
        if path == "/api/stream" {
            continue; // opened with the token in the other tests
        }
        let req = Request::get(&url)
            .header("authorization", format!("bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap();
        let (res, _) = send(&client(), req).await;
        assert_eq!(res.status(), 200, "{path}");
    }
    // The page holds no data: no token needed; it may talk to its own origin only.
    let req = Request::get(server.url("/_telemetry"))
        .body(Empty::new())
        .unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(body.contains("<html"), "{body}");
    for remote in ["http://", "https://", "//cdn"] {
        assert!(!body.contains(remote), "the page refers to {remote}");
    }
    // With the docs' recipe, the trailing slash is sent to the page.
    let req = Request::get(server.url("/_telemetry/"))
        .body(Empty::new())
        .unwrap();
    let (res, _) = send(&client(), req).await;
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/_telemetry");
}

#[tokio::test]
async fn explain_and_the_configuration_answer() {
    let telemetry = handle();
    let server = Server::start(app(&telemetry)).await;
    let ask = |path: &str| {
        Request::get(server.url(&format!("/_telemetry{path}")))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap()
    };
    let (res, body) = send(&client(), ask("/api/explain?name=fail.sent")).await;
    assert_eq!(res.status(), 200);
    let why: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(why["name"], "fail.sent");
    assert_eq!(why["valid"], true);
    let routed: Vec<(&str, bool)> = why["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination"].as_str().unwrap(),
                d["routed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routed,
        [("mem", false), ("sampled", false), ("refusing", true)]
    );
    assert_eq!(why["destinations"][2]["reason"], "matches `fail.*`");
    assert!(why["text"].as_str().unwrap().contains("-> refusing"));
    let (_, body) = send(&client(), ask("/api/explain?name=bad%0Aname")).await;
    let why: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(why["valid"], false);
    let (res, _) = send(&client(), ask("/api/explain")).await;
    assert_eq!(res.status(), 400);

    let (res, body) = send(&client(), ask("/api/config")).await;
    assert_eq!(res.status(), 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = config["config"]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mem", "sampled", "refusing"]);
    assert_eq!(config["config"]["destinations"][1]["sample_rate"], 0.0);
}

#[tokio::test]
async fn the_shutdown_signal_ends_open_streams_so_a_graceful_shutdown_completes() {
    let telemetry = handle();
    let stop = Arc::new(tokio::sync::Notify::new());
    let inspector = Inspector::new(telemetry.clone())
        .token(TOKEN)
        .shutdown_signal({
            let stop = stop.clone();
            async move { stop.notified().await }
        });
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .nest("/_telemetry", inspector.router());
    let server = Server::start(app).await;
    let mut page = SseReader::open(&server, TOKEN).await;
    assert_eq!(page.next().await.unwrap().event, "hello");
    assert_eq!(page.next().await.unwrap().event, "snapshot");

    stop.notify_one();
    assert!(page.next().await.is_none(), "the stream ended");
    let req = Request::get(server.url("/_telemetry/api/stream"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status(), 503, "{body}");
    tokio::time::timeout(WAIT, server.stop())
        .await
        .expect("the graceful shutdown completes with the page open");
    telemetry.shutdown(WAIT).await;
}

/// `routes` behind the layer, with the request's consent from its `x-consent` header
/// (`denied` or granted), and the inspector.
fn with_consent(routes: Router, telemetry: &Telemetry) -> Router {
    use tower_telemetry::identity::Consent;
    routes
        .layer(
            TelemetryLayer::new(telemetry.clone()).consent(|p: &http::request::Parts| {
                match p.headers.get("x-consent").map(|v| v.as_bytes()) {
                    Some(b"denied") => Consent::Denied,
                    _ => Consent::Granted,
                }
            }),
        )
        .nest(
            "/_telemetry",
            Inspector::new(telemetry.clone()).token(TOKEN).router(),
        )
}

/// Serves `routes` (see [`with_consent`]), opens a page (past its hello and snapshot), then
/// requests `path` once with consent denied and once granted.
async fn denied_then_granted(
    routes: Router,
    telemetry: &Telemetry,
    path: &str,
) -> (Server, SseReader) {
    let server = Server::start(with_consent(routes, telemetry)).await;
    let mut page = SseReader::open(&server, TOKEN).await;
    page.next().await.unwrap();
    page.next().await.unwrap();
    for consent in ["denied", "granted"] {
        let req = Request::get(server.url(path))
            .header("x-consent", consent)
            .body(Empty::new())
            .unwrap();
        let (res, _) = send(&client(), req).await;
        assert_eq!(res.status(), 200);
    }
    (server, page)
}

#[tokio::test]
async fn events_a_request_denies_consent_for_are_never_shown() {
    let telemetry = handle();
    let routes = Router::new().route(
        "/ok",
        get(|headers: http::HeaderMap| async move {
            let who = headers["x-consent"].to_str().unwrap().to_owned();
            track!("ok.clicked", who = who);
            "ok"
        }),
    );
    let (_server, mut page) = denied_then_granted(routes, &telemetry, "/ok").await;
    // The granted request's event comes; the denied one's never came before it.
    let seen = page
        .until(|m| m.event == "tracked" && m.data["name"] == "ok.clicked")
        .await;
    let tracked: Vec<&Sse> = seen.iter().filter(|m| m.event == "tracked").collect();
    assert_eq!(tracked.len(), 1, "{seen:#?}");
    assert_eq!(tracked[0].data["properties"]["who"], "granted");
    let report = telemetry.shutdown(WAIT).await;
    assert_eq!(report.stats.consent_denied, 1);
    assert_eq!(report.destination("mem").unwrap().delivered, 1);
    for d in &report.stats.destinations {
        accounted(d);
    }
}

#[tokio::test]
async fn events_refused_before_routing_are_shown_with_the_reason() {
    use tower_telemetry::limits::LimitsConfig;
    let config = Config::default()
        .with_destination(
            DestinationConfig::new("mem")
                .with_kind("memory")
                .with_events(["ok.*"]),
        )
        .with_destination(DestinationConfig::new("all").with_kind("memory"))
        .with_limits(LimitsConfig::default().with_max_event_size(1024));
    let telemetry = Telemetry::builder().config(config).build().unwrap();
    let t = telemetry.clone();
    let routes = Router::new().route(
        "/refused",
        get(move || async move {
            t.track("ok.line\nbreak", props! { "n" => 1 });
            t.track_event("ok.not_an_object", 42);
            let mut big = props! {};
            for i in 0..20 {
                big.insert(format!("k{i}"), "x".repeat(100));
            }
            t.track("ok.too_big", big);
            t.identify(" ", props! {});
            track!("ok.fine", n = 2);
            "ok"
        }),
    );
    // A request whose consent is denied shows nothing, refused events included.
    let (_server, mut page) = denied_then_granted(routes, &telemetry, "/refused").await;
    let seen = page
        .until(|m| m.event == "tracked" && m.data["name"] == "ok.fine")
        .await;
    let tracked: Vec<&Value> = seen
        .iter()
        .filter(|m| m.event == "tracked")
        .map(|m| &m.data)
        .collect();
    let names: Vec<&str> = tracked
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ok.line\nbreak",
            "ok.not_an_object",
            "ok.too_big",
            "$identify",
            "ok.fine"
        ],
        "{seen:#?}"
    );
    // Every destination: `rejected`, with why; nothing of the refused properties is shown.
    let reason = |e: &Value| {
        for d in ["mem", "all"] {
            assert_eq!(e["destinations"][d]["outcome"], "rejected", "{e}");
        }
        assert_eq!(
            e["destinations"]["mem"]["message"],
            e["destinations"]["all"]["message"]
        );
        assert_eq!(e["properties"], serde_json::json!({}), "{e}");
        e["destinations"]["mem"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason(tracked[0]).contains("control"), "{}", tracked[0]);
    assert!(!reason(tracked[1]).is_empty());
    let size = reason(tracked[2]);
    assert!(
        size.contains("max_event_size") && size.contains("the limit is 1024"),
        "{size}"
    );
    assert!(reason(tracked[3]).contains("blank"));
    assert_eq!(tracked[3]["kind"], "identify");
    assert_eq!(tracked[4]["destinations"]["mem"]["outcome"], "queued");
    // Distinct ids, so a page can tell them apart.
    let mut ids: Vec<&str> = tracked.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5);

    let report = telemetry.shutdown(WAIT).await;
    // Counted as before: the invalid name in both requests (a name is checked before the
    // consent), the rest only in the granted one; the too big one as oversized.
    let s = &report.stats;
    assert_eq!(
        (s.rejected, s.oversized, s.consent_denied),
        (4, 1, 4),
        "{s:?}"
    );
    for d in &report.stats.destinations {
        accounted(d);
    }
    assert_eq!(report.destination("mem").unwrap().delivered, 1);
    assert_eq!(report.destination("all").unwrap().delivered, 1);
}
