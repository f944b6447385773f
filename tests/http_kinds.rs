//! Issue #22's acceptance for the `posthog`, `segment` (Segment and RudderStack flavors) and
//! `webhook` kinds: a real axum app behind `TelemetryLayer`, driven by a real HTTP client,
//! delivering through each kind (configured from YAML, as a user would) to its contract server
//! in `tests/support`.
//!
//! | test | what |
//! |---|---|
//! | `a_*` | 10 000 events from 100 users reach the server exactly once by id, mapped right |
//! | `b_*` | connection refused, then listening again → exactly once |
//! | `c_*` | 503 + `Retry-After: 1` → the batch is tried again no sooner than 1 s later |
//! | `d_*` | 400 / 401 / 413 → the batch counted failed, never retried |
//! | `e_*` | one event over the vendor's per-event limit → it alone fails, the rest arrive |
//! | `f_*` | the server stores a batch and never answers → the resend is counted a duplicate |
//!
//! Every test checks `enqueued = delivered + failed + discarded + dropped + undelivered`.
//! Real sockets need the real clock (see `tests/faults.rs`); the faults are short.
#![cfg(all(feature = "posthog", feature = "segment", feature = "webhook"))]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use bytes::Bytes;
use http::HeaderName;
use http_body_util::Empty;
use serde_json::Value;
use support::faults::{Fault, RequestRecord, Stored, is_rfc3339};
use support::http::{HttpClient, Server, client, get as req, send};
use support::posthog_server::{self, PostHogServer};
use support::segment_server::{self, SegmentServer};
use support::webhook_receiver::{self, WebhookReceiver};
use tower_telemetry::{DestinationStats, Telemetry, layer::TelemetryLayer, track};

/// The longest wait for something that should happen within a second or two.
const WAIT: Duration = Duration::from_secs(20);

/// The destination's name in every config.
const DEST: &str = "dest";

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) acceptance";
const LANGUAGE: &str = "fr-FR";
const REFERRER: &str = "https://example.com/from";

// ----- the kinds -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    PostHog,
    Segment,
    RudderStack,
    Webhook,
}

/// A kind's contract server.
enum Srv {
    P(PostHogServer),
    S(SegmentServer),
    W(WebhookReceiver),
}

macro_rules! each {
    ($srv:expr, $s:ident => $body:expr) => {
        match $srv {
            Srv::P($s) => $body,
            Srv::S($s) => $body,
            Srv::W($s) => $body,
        }
    };
}

impl Srv {
    async fn start(kind: Kind) -> Srv {
        match kind {
            Kind::PostHog => Srv::P(PostHogServer::start().await),
            Kind::Segment => Srv::S(SegmentServer::start().await),
            Kind::RudderStack => Srv::S(SegmentServer::start_rudderstack().await),
            Kind::Webhook => Srv::W(WebhookReceiver::start().await),
        }
    }
    fn url(&self) -> String {
        each!(self, s => s.url())
    }
    fn events(&self) -> Vec<Stored> {
        each!(self, s => s.events())
    }
    fn duplicates(&self) -> u64 {
        each!(self, s => s.duplicates())
    }
    fn requests(&self) -> Vec<RequestRecord> {
        each!(self, s => s.requests())
    }
    fn arrivals(&self) -> HashMap<String, u32> {
        each!(self, s => s.arrivals())
    }
    fn statuses(&self) -> Vec<(u16, usize, Instant)> {
        each!(self, s => s.requests().iter().map(|r| (r.status, r.items, r.at)).collect())
    }
    fn gzip(&self) -> Vec<bool> {
        each!(self, s => s.requests().iter().map(|r| r.gzip).collect())
    }
    fn push_faults(&self, n: usize, f: Fault) {
        each!(self, s => s.push_faults(n, f))
    }
    async fn refuse(&self) {
        each!(self, s => s.refuse().await)
    }
    async fn listen(&self) {
        each!(self, s => s.listen().await)
    }
    async fn wait_for_events(&self, n: usize) -> bool {
        each!(self, s => s.wait_for_events(n, WAIT).await)
    }
    fn busy(&self) -> Duration {
        each!(self, s => s.busy())
    }
    fn hung(&self) -> u64 {
        each!(self, s => s.hung())
    }
}

/// The destination's YAML: the kind's own keys (`secret_ok: false` → a wrong key or secret),
/// then `delivery` (core keys, indented for the destination's mapping).
fn destination_yaml(kind: Kind, url: &str, secret_ok: bool, delivery: &str) -> String {
    let own = match kind {
        Kind::PostHog => format!(
            "type: posthog\n      host: {url}\n      api_key: {}\n      gzip: true\n",
            if secret_ok {
                posthog_server::API_KEY
            } else {
                "phc_wrong"
            }
        ),
        Kind::Segment | Kind::RudderStack => format!(
            "type: segment\n      flavor: {}\n      url: {url}\n      write_key: {}\n",
            if kind == Kind::Segment {
                "segment"
            } else {
                "rudderstack"
            },
            if secret_ok {
                segment_server::WRITE_KEY
            } else {
                "wrong-key"
            }
        ),
        Kind::Webhook => format!(
            "type: webhook\n      url: {url}/hook\n      secret: \"{}\"\n",
            if secret_ok {
                webhook_receiver::SECRET
            } else {
                webhook_receiver::WRONG_SECRET
            }
        ),
    };
    format!(
        "telemetry:\n  limits:\n    max_string_length: 4MB\n    max_event_size: 8MB\n  \
         destinations:\n    {DEST}:\n      {own}      events: [\"*\"]\n{delivery}"
    )
}

/// Quick delivery: batches of `batch`, retries within 200 ms while a fault lasts.
fn delivery(batch: usize, timeout: &str) -> String {
    format!(
        "      batch_size: {batch}\n      concurrency: 4\n      flush_interval: 20ms\n      \
         timeout: {timeout}\n      queue_capacity: 20000\n      \
         retry: {{ initial_backoff: 20ms, max_backoff: 200ms }}\n"
    )
}

/// What one stored event says: its `seq`, the user (or anonymous id) it is for, whether it is
/// anonymous.
#[derive(Debug)]
struct Seen {
    seq: u64,
    user: String,
    anonymous: bool,
}

/// Reads a stored event, checking the kind's mapping of everything the app sent.
fn read(kind: Kind, e: &Stored) -> Seen {
    let item = &e.item;
    let props = match kind {
        Kind::Webhook => item.get("properties"),
        _ => item.get("properties"),
    }
    .and_then(Value::as_object)
    .unwrap_or_else(|| panic!("no properties: {item:#}"));
    let seq = props["seq"].as_u64().unwrap();
    assert_eq!(props["plan"], "pro", "{item:#}");
    let ts = match kind {
        Kind::Webhook => item["timestamp"].as_str(),
        _ => item["timestamp"].as_str(),
    }
    .unwrap_or_else(|| panic!("no timestamp: {item:#}"));
    assert!(is_rfc3339(ts), "{ts}");
    match kind {
        Kind::PostHog => {
            assert_eq!(item["event"], "work.done");
            assert_eq!(e.id, item["uuid"].as_str().unwrap());
            let anonymous = props.get("$process_person_profile") == Some(&Value::Bool(false));
            assert_eq!(props["$geoip_disable"], true, "no IP forwarded: {item:#}");
            assert!(props.get("$ip").is_none(), "{item:#}");
            let (user, _) = user_of(seq);
            assert_eq!(props["$session_id"], format!("session-{user}"), "{item:#}");
            assert_eq!(props["$pathname"], "/work", "{item:#}");
            assert!(
                props["$current_url"].as_str().unwrap().ends_with("/work"),
                "{item:#}"
            );
            assert_eq!(props["$raw_user_agent"], USER_AGENT, "{item:#}");
            assert_eq!(props["$browser_language"], LANGUAGE, "{item:#}");
            assert_eq!(props["$referrer"], REFERRER, "{item:#}");
            assert_eq!(props["$lib"], "tower-telemetry", "{item:#}");
            Seen {
                seq,
                user: item["distinct_id"].as_str().unwrap().to_owned(),
                anonymous,
            }
        }
        Kind::Segment | Kind::RudderStack => {
            assert_eq!(item["type"], "track");
            assert_eq!(item["event"], "work.done");
            assert_eq!(e.id, item["messageId"].as_str().unwrap());
            let ctx = &item["context"];
            assert_eq!(ctx["userAgent"], USER_AGENT, "{item:#}");
            assert_eq!(ctx["locale"], LANGUAGE, "{item:#}");
            assert_eq!(ctx["page"]["path"], "/work", "{item:#}");
            assert_eq!(ctx["page"]["referrer"], REFERRER, "{item:#}");
            assert!(ctx["library"]["name"].is_string(), "{item:#}");
            assert!(ctx.get("ip").is_none(), "no IP forwarded: {item:#}");
            match item.get("userId").and_then(Value::as_str) {
                Some(u) => Seen {
                    seq,
                    user: u.to_owned(),
                    anonymous: false,
                },
                None => Seen {
                    seq,
                    user: item["anonymousId"].as_str().unwrap().to_owned(),
                    anonymous: true,
                },
            }
        }
        Kind::Webhook => {
            assert_eq!(item["name"], "work.done", "{item:#}");
            assert_eq!(e.id, item["id"].as_str().unwrap());
            let ctx = &item["context"];
            assert_eq!(ctx["user_agent"], USER_AGENT, "{item:#}");
            assert_eq!(ctx["language"], LANGUAGE, "{item:#}");
            assert_eq!(ctx["referrer"], REFERRER, "{item:#}");
            assert_eq!(ctx["path"], "/work", "{item:#}");
            assert!(ctx.get("client_ip").is_none(), "no IP forwarded: {item:#}");
            let user = item.pointer("/context/user_id").and_then(Value::as_str);
            Seen {
                seq,
                user: user
                    .or_else(|| item.pointer("/context/session_id").and_then(Value::as_str))
                    .unwrap()
                    .to_owned(),
                anonymous: user.is_none(),
            }
        }
    }
}

// ----- the app and the load --------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Work {
    seq: u64,
    count: u64,
    #[serde(default)]
    big: usize,
}

/// `GET /work?seq=N&count=C[&big=BYTES]`: tracks `work.done` C times, with `seq` N, N+1, ...
/// and `plan` (the first also with a `blob` of `big` bytes); the user from `x-user-id`, the
/// session from `x-session-id`.
fn app(telemetry: &Telemetry) -> Router {
    let session = HeaderName::from_static("x-session-id");
    Router::new()
        .route(
            "/work",
            get(|Query(q): Query<Work>| async move {
                for seq in q.seq..q.seq + q.count {
                    if seq == q.seq && q.big > 0 {
                        track!(
                            "work.done",
                            seq = seq,
                            plan = "pro",
                            blob = "x".repeat(q.big)
                        );
                    } else {
                        track!("work.done", seq = seq, plan = "pro");
                    }
                }
                "ok"
            }),
        )
        .layer(
            TelemetryLayer::new(telemetry.clone())
                .user_id_from_header(HeaderName::from_static("x-user-id"))
                .session_id(move |p: &http::request::Parts| {
                    p.headers
                        .get(&session)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                }),
        )
}

/// Events each request tracks: 10 000 events are 1 000 requests (a debug build serves
/// about a thousand requests a second on two loaded cores).
const PER_REQUEST: u64 = 10;

/// The user of `seq`: the request's; one of 100; every tenth user is anonymous (a session
/// only).
fn user_of(seq: u64) -> (u64, bool) {
    let user = (seq / PER_REQUEST) % 100;
    (user, user % 10 == 9)
}

/// One request tracking `count` events from `seq` on (the first with a `blob` of `big` bytes).
async fn hit(client: &HttpClient, app: &str, seq: u64, count: u64, big: usize) {
    let (user, anonymous) = user_of(seq);
    let mut r = req(&format!("{app}/work?seq={seq}&count={count}&big={big}"))
        .header("user-agent", USER_AGENT)
        .header("accept-language", LANGUAGE)
        .header("referer", REFERRER)
        .header("x-session-id", format!("session-{user}"));
    if !anonymous {
        r = r.header("x-user-id", format!("user-{user}"));
    }
    let (res, body) = send(client, r.body(Empty::<Bytes>::new()).unwrap()).await;
    assert_eq!((res.status().as_u16(), body.as_str()), (200, "ok"));
}

/// The app under test: a telemetry handle from `yaml`, the app serving on loopback.
struct Side {
    telemetry: Telemetry,
    app: Server,
}

impl Side {
    async fn new(yaml: &str) -> Side {
        let telemetry = Telemetry::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let app = Server::start(app(&telemetry)).await;
        Side { telemetry, app }
    }

    fn stats(&self) -> DestinationStats {
        self.telemetry.stats().destination(DEST).unwrap().clone()
    }

    /// Tracks `seqs` through the app, [`PER_REQUEST`] a request, 16 requests at a time.
    async fn drive(&self, seqs: std::ops::Range<u64>) {
        let client = Arc::new(client());
        let base = self.app.url("");
        let mut tasks = tokio::task::JoinSet::new();
        const LANES: u64 = 16;
        for lane in 0..LANES {
            let (client, base) = (client.clone(), base.clone());
            let seqs = seqs.clone();
            tasks.spawn(async move {
                let mut seq = seqs.start + lane * PER_REQUEST;
                while seq < seqs.end {
                    let count = PER_REQUEST.min(seqs.end - seq);
                    hit(&client, &base, seq, count, 0).await;
                    seq += LANES * PER_REQUEST;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
}

/// Every tracked event is accounted for; nothing dropped, discarded or left over.
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

/// The server stored each of `seqs` exactly once (by the vendor's id and by `seq`), mapped
/// right; returns how often each user appeared.
fn assert_exactly_once(kind: Kind, srv: &Srv, seqs: std::ops::Range<u64>) -> HashMap<String, u64> {
    let events = srv.events();
    let mut by_seq: HashMap<u64, u32> = HashMap::new();
    let mut users: HashMap<String, u64> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for e in &events {
        assert!(ids.insert(e.id.clone()), "id {} stored twice", e.id);
        let seen = read(kind, e);
        let (user, anonymous) = user_of(seen.seq);
        assert_eq!(seen.anonymous, anonymous, "{:#}", e.item);
        if anonymous {
            assert!(
                seen.user.contains(&format!("session-{user}")),
                "{:#}",
                e.item
            );
        } else {
            assert_eq!(seen.user, format!("user-{user}"), "{:#}", e.item);
        }
        *by_seq.entry(seen.seq).or_default() += 1;
        *users.entry(seen.user).or_default() += 1;
    }
    for seq in seqs.clone() {
        assert_eq!(by_seq.get(&seq), Some(&1), "seq {seq}");
    }
    assert_eq!(events.len() as u64, seqs.end - seqs.start);
    users
}

// ----- a. 10 000 events from 100 users ---------------------------------------------------------

async fn ten_thousand(kind: Kind) {
    const N: u64 = 10_000;
    let srv = Srv::start(kind).await;
    let side = Side::new(&destination_yaml(
        kind,
        &srv.url(),
        true,
        &delivery(500, "5s"),
    ))
    .await;
    let started = Instant::now();
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    let took = started.elapsed();
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed, d.retries), (N, 0, 0), "{d:?}");
    let users = assert_exactly_once(kind, &srv, 0..N);
    assert_eq!(users.len(), 100);
    assert!(users.values().all(|&n| n == N / 100));
    assert_eq!(srv.duplicates(), 0);
    if kind == Kind::PostHog {
        assert!(srv.gzip().iter().all(|&g| g), "gzip on for PostHog");
    }
    println!(
        "a. {kind:?}: {N} events through the app in {took:?}, {} requests",
        srv.statuses().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posthog_10000_events_from_100_users_exactly_once() {
    ten_thousand(Kind::PostHog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_10000_events_from_100_users_exactly_once() {
    ten_thousand(Kind::Segment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rudderstack_10000_events_from_100_users_exactly_once() {
    ten_thousand(Kind::RudderStack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_10000_events_from_100_users_exactly_once() {
    ten_thousand(Kind::Webhook).await;
}

// ----- b. connection refused, then recovery ----------------------------------------------------

async fn refused_then_recovery(kind: Kind) {
    const N: u64 = 500;
    let srv = Srv::start(kind).await;
    srv.refuse().await;
    let side = Side::new(&destination_yaml(
        kind,
        &srv.url(),
        true,
        &delivery(50, "2s"),
    ))
    .await;
    side.drive(0..N).await;
    // Let the refusals come: a few retries of each batch at the 200 ms ceiling.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(srv.events().is_empty());
    assert!(side.stats().retries > 0, "{:?}", side.stats());
    srv.listen().await;
    assert!(side.telemetry.flush(WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed), (N, 0), "{d:?}");
    assert_exactly_once(kind, &srv, 0..N);
    assert_eq!(srv.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_posthog_refused_then_recovery_exactly_once() {
    refused_then_recovery(Kind::PostHog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_segment_refused_then_recovery_exactly_once() {
    refused_then_recovery(Kind::Segment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_webhook_refused_then_recovery_exactly_once() {
    refused_then_recovery(Kind::Webhook).await;
}

// ----- c. 503 + Retry-After --------------------------------------------------------------------

async fn retry_after_honoured(kind: Kind) {
    const N: u64 = 50;
    let srv = Srv::start(kind).await;
    srv.push_faults(1, Fault::status(503).header("retry-after", "1"));
    // One batch: all N events in one request.
    let side = Side::new(&destination_yaml(
        kind,
        &srv.url(),
        true,
        &delivery(1000, "5s"),
    ))
    .await;
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed), (N, 0), "{d:?}");
    assert_exactly_once(kind, &srv, 0..N);
    // The refused batch came again (the same ids), no sooner than Retry-After said.
    let requests = srv.requests();
    let refused = requests.iter().find(|r| r.status == 503).expect("a 503");
    assert!(!refused.ids.is_empty());
    let again = requests
        .iter()
        .find(|r| r.at > refused.at && r.ids == refused.ids)
        .expect("the refused batch sent again");
    assert_eq!(again.status, 200);
    let gap = again.at - refused.at;
    assert!(
        gap >= Duration::from_millis(950),
        "the retry came {gap:?} after a 503 with Retry-After: 1: {:?}",
        srv.statuses()
    );
    assert_eq!(d.retries, 1, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_posthog_503_retry_after_is_honoured() {
    retry_after_honoured(Kind::PostHog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_segment_503_retry_after_is_honoured() {
    retry_after_honoured(Kind::Segment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_webhook_503_retry_after_is_honoured() {
    retry_after_honoured(Kind::Webhook).await;
}

// ----- d. 400 / 401 / 413: failed, never retried -----------------------------------------------

/// Every request answered `status` (`None`: the real refusal of a wrong key or secret): all
/// N events counted failed, each batch tried once.
async fn permanent(kind: Kind, status: Option<u16>) {
    const N: u64 = 200;
    let srv = Srv::start(kind).await;
    if let Some(status) = status {
        srv.push_faults(1000, Fault::status(status));
    }
    let side = Side::new(&destination_yaml(
        kind,
        &srv.url(),
        status.is_some(),
        &delivery(50, "5s"),
    ))
    .await;
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed, d.retries), (0, N, 0), "{d:?}");
    let statuses = srv.statuses();
    let expected = status.unwrap_or(401);
    assert!(statuses.iter().all(|s| s.0 == expected), "{statuses:?}");
    // Each event was in exactly one request: none was sent twice.
    assert_eq!(
        statuses.iter().map(|s| s.1).sum::<usize>() as u64,
        N,
        "{statuses:?}"
    );
    assert!(srv.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_posthog_400_401_413_fail_without_retry() {
    for status in [Some(400), None, Some(413)] {
        permanent(Kind::PostHog, status).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_segment_400_401_413_fail_without_retry() {
    for status in [Some(400), None, Some(413)] {
        permanent(Kind::Segment, status).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_webhook_400_401_413_fail_without_retry() {
    for status in [Some(400), None, Some(413)] {
        permanent(Kind::Webhook, status).await;
    }
}

// ----- e. one oversized event ------------------------------------------------------------------

/// One event in N over the vendor's per-event limit: it alone fails; the others arrive.
async fn one_oversized(kind: Kind, big: usize) {
    const N: u64 = 100;
    const BIG_SEQ: u64 = 42;
    let srv = Srv::start(kind).await;
    let side = Side::new(&destination_yaml(
        kind,
        &srv.url(),
        true,
        &delivery(1000, "5s"),
    ))
    .await;
    let client = client();
    let base = side.app.url("");
    for seq in 0..N {
        hit(&client, &base, seq, 1, if seq == BIG_SEQ { big } else { 0 }).await;
    }
    assert!(side.telemetry.flush(WAIT).await);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed, d.retries), (N - 1, 1, 0), "{d:?}");
    let seqs: Vec<u64> = srv
        .events()
        .iter()
        .map(|e| e.item["properties"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len() as u64, N - 1);
    assert!(!seqs.contains(&BIG_SEQ));
    assert!(
        srv.statuses().iter().all(|s| s.0 == 200),
        "{:?}",
        srv.statuses()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_posthog_one_event_over_1mb_fails_alone() {
    one_oversized(Kind::PostHog, posthog_server::MAX_EVENT + 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_segment_one_event_over_32kb_fails_alone() {
    one_oversized(Kind::Segment, segment_server::SEGMENT_MAX_MESSAGE + 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_webhook_one_event_over_256kib_fails_alone() {
    one_oversized(Kind::Webhook, 256 * 1024 + 1024).await;
}

// ----- f. a time-out after the server stored the batch -----------------------------------------

/// The server stores the first batch and never answers; the client times out and resends; the
/// server counts the resend as duplicates by id, and stores each event once.
async fn timeout_after_store(kind: Kind) {
    const N: u64 = 50;
    let srv = Srv::start(kind).await;
    srv.push_faults(1, Fault::StoreThenHang);
    let side = Side::new(&destination_yaml(
        kind,
        &srv.url(),
        true,
        &delivery(1000, "500ms"),
    ))
    .await;
    side.drive(0..N).await;
    assert!(side.telemetry.flush(WAIT).await);
    assert_eq!(srv.hung(), 1);
    let d = side.stats();
    assert_accounted(&d, N);
    assert_eq!((d.delivered, d.failed), (N, 0), "{d:?}");
    assert!(d.retries >= 1, "{d:?}");
    assert_exactly_once(kind, &srv, 0..N);
    // The batch the server stored and never answered came again: each of its events
    // arrived twice, the second time counted a duplicate; every other event once.
    let stored_unanswered = &srv.requests()[0];
    assert!(!stored_unanswered.ids.is_empty());
    assert_eq!(srv.duplicates(), stored_unanswered.ids.len() as u64);
    let arrivals = srv.arrivals();
    for id in &stored_unanswered.ids {
        assert_eq!(arrivals[id], 2, "{id}");
    }
    assert_eq!(
        arrivals.values().map(|&n| u64::from(n)).sum::<u64>(),
        N + srv.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_posthog_timeout_after_store_resend_is_a_duplicate() {
    timeout_after_store(Kind::PostHog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_segment_timeout_after_store_resend_is_a_duplicate() {
    timeout_after_store(Kind::Segment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_webhook_timeout_after_store_resend_is_a_duplicate() {
    timeout_after_store(Kind::Webhook).await;
}

// ----- throughput (release build, ignored by default) ------------------------------------------

/// Events/s from `track!` into each contract server, through the kind: 200 000 events from
/// 100 users (tracked from one task as fast as it can), timed until the server stored the last.
/// The contract server runs in the same process, on the same 2 worker threads, parsing every
/// request into `serde_json::Value`s. Run it in a release build:
///
/// ```text
/// cargo test --release --all-features --test http_kinds -- --ignored --nocapture throughput
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in a release build, see BENCHMARKS.md"]
async fn throughput_into_each_contract_server() {
    const N: u64 = 200_000;
    for kind in [
        Kind::PostHog,
        Kind::Segment,
        Kind::RudderStack,
        Kind::Webhook,
    ] {
        let srv = Srv::start(kind).await;
        let batch = if kind == Kind::Segment { 500 } else { 1000 };
        let yaml = destination_yaml(kind, &srv.url(), true, &delivery(batch, "10s"))
            .replace("queue_capacity: 20000", "queue_capacity: 400000");
        let telemetry = Telemetry::from_yaml_str(&yaml).unwrap();
        let started = Instant::now();
        for user in 0..100u64 {
            let ctx = tower_telemetry::Context::new()
                .with_user_id(format!("user-{user}"))
                .with_session_id(format!("session-{user}"))
                .with_path("/work");
            telemetry
                .scope(ctx, async {
                    for seq in (user..N).step_by(100) {
                        track!("work.done", seq = seq, plan = "pro");
                    }
                })
                .await;
        }
        let tracked = started.elapsed();
        assert!(srv.wait_for_events(N as usize).await, "{kind:?}");
        let took = started.elapsed();
        assert!(telemetry.flush(WAIT).await);
        let d = telemetry.stats().destination(DEST).unwrap().clone();
        assert_accounted(&d, N);
        assert_eq!(d.delivered, N);
        let requests = srv.statuses().len();
        println!(
            "throughput: {kind:?}: {N} events in {took:.2?} = {:.0} events/s ({requests} \
             requests; tracking alone {tracked:.2?}; the server's handlers busy {:.2?})",
            N as f64 / took.as_secs_f64(),
            srv.busy()
        );
    }
}
