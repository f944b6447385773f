//! A contract-faithful Umami collection server for tests: an axum app on 127.0.0.1.
//!
//! It implements `POST /api/send` and `POST /api/batch` as /work/shared/UMAMI.md describes
//! Umami 3.x: the validation limits and their status codes, the bot check (`200
//! {"beep":"boop"}`, nothing stored), unknown website → 400, and the batch answer with per-item
//! `details`. It records what it *stored* (and every request it answered), so tests assert on
//! stored events, never on calls into our code.
//!
//! # API
//!
//! ```ignore
//! mod support;
//! use support::umami_server::{UmamiServer, WEBSITE_ID};
//!
//! let server = UmamiServer::start().await;          // a free port
//! server.url();                                     // "http://127.0.0.1:PORT"
//! // ... point an `umami` destination at server.url(), website_id WEBSITE_ID ...
//! assert!(server.wait_for_events(10, Duration::from_secs(5)).await);
//! let stored = server.events();                     // Vec<StoredEvent>
//! server.requests();                                // Vec<RequestRecord>: every request answered
//! ```
//!
//! Fault injection (each counts HTTP requests to either endpoint, in arrival order):
//! - [`fail_next(n)`](UmamiServer::fail_next): the next `n` requests → 500, nothing stored.
//! - [`throttle_next(n, secs)`](UmamiServer::throttle_next): → 429 with `Retry-After: secs`.
//! - [`delay_next(n, d)`](UmamiServer::delay_next): wait `d`, then 504 without storing (a
//!   server that stored after the client gave up could not be de-duplicated by any client:
//!   Umami has no idempotency key).
//! - [`without_batch()`](UmamiServer::without_batch): `/api/batch` → 404, like Umami < 2.17.
//! - [`reject_in_batch(name)`](UmamiServer::reject_in_batch): batch items with that event
//!   name fail with a per-item 400 in `details`.
//! - Connection refused: [`reserve_addr()`] binds a free port and releases it; start the
//!   server later with [`UmamiServer::start_on`] on that address.
//! - [`stop()`](UmamiServer::stop) ends the server (then connections are refused).
//! - [`pace(p)`](UmamiServer::pace): answer at a real server's pace ([`Pace`], e.g.
//!   [`Pace::UMAMI_3_1`]): every request takes the time the model gives it before it is
//!   answered (and its events stored).
//! - [`refuse()`](UmamiServer::refuse) / [`listen()`](UmamiServer::listen): stop listening
//!   (connections refused) and listen again on the same port, keeping what was stored.
//! - [`script(f)`](UmamiServer::script): `f(n)` decides what request `n` (from 0, to either
//!   endpoint, counted from when the script was set) gets, as a [`Behaviour`]: answered as
//!   Umami does, a status with headers, a hang, a half body; e.g.
//!   [`fail_every_other()`](UmamiServer::fail_every_other). The counted faults above come first.
//!
//! Bot check (User-Agent = `payload.userAgent`, else the request header): empty → not a bot;
//! a bare `name/version`, `curl/`, `reqwest/`, `hyper/`, or containing `bot`, `crawler`,
//! `spider` → bot.
//!
//! Sessions, as Umami 3.1's `src/app/api/send/route.ts` resolves them for `type: "event"` and
//! `type: "identify"` alike: `uuid(website, id)` when the payload has an `id`, else
//! `uuid(website, ip, userAgent, monthly salt)` (IP = `payload.ip`, else the first client-IP
//! header; User-Agent = `payload.userAgent`, else the header). A session is created by the
//! first request that resolves to it (`distinct_id` = that request's `id`), never twice.
//! [`sessions()`](UmamiServer::sessions) lists them; each [`StoredEvent`] has its
//! `session_id`. An identify stores its `data` as *session data* of its session
//! ([`session_data(id)`](UmamiServer::session_data)): flattened with `.`, typed like event data
//! ([`DataType`]), one row per key (a later identify replaces a key's value); an identify
//! without `data` stores nothing. [`user_session(id)`](user_session) is the session of a user
//! id. Our `uuid` is a SHA-512 of the joined parts and a fixed secret, as a version-5 UUID:
//! the same inputs always give the same session, as in Umami (whose secret differs).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};
use tokio::sync::Notify;

use super::http::Server;

/// The one website the server knows.
pub const WEBSITE_ID: &str = "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60";

/// An event the server stored.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// `/api/send` or `/api/batch`.
    pub endpoint: &'static str,
    /// The whole payload as received.
    pub payload: Value,
    /// `payload.name`; `None` for a page view.
    pub name: Option<String>,
    /// `payload.data`, if any.
    pub data: Option<Map<String, Value>>,
    /// The User-Agent the bot check saw (payload's, else the header's).
    pub user_agent: String,
    /// The request's User-Agent header.
    pub header_user_agent: String,
    /// The session it was stored in.
    pub session_id: String,
    /// When the request arrived.
    pub at: Instant,
    /// When it was stored (later than `at` by the time a [`Pace`] gives the request).
    pub stored: Instant,
}

impl StoredEvent {
    /// `data` as Umami stores it: flattened, typed rows.
    pub fn data_rows(&self) -> Vec<DataRow> {
        self.data.as_ref().map(flatten).unwrap_or_default()
    }

    /// A string field of the payload.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.payload.get(key).and_then(Value::as_str)
    }

    /// A value of `data`.
    pub fn datum(&self, key: &str) -> Option<&Value> {
        self.data.as_ref().and_then(|d| d.get(key))
    }
}

/// A session the server created (table `session`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    /// The `id` of the request that created it.
    pub distinct_id: Option<String>,
    /// `event` or `identify`: the type of the request that created it.
    pub created_by: String,
}

/// The type of a stored datum, Umami's `DATA_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    String = 1,
    Number = 2,
    Boolean = 3,
    Date = 4,
    /// Arrays and `null`, stored as their JSON text.
    Array = 5,
}

/// One row of event or session data (tables `event_data`, `session_data`).
#[derive(Clone, Debug, PartialEq)]
pub struct DataRow {
    /// The flattened key: `nested.a`, `$groups.company`.
    pub key: String,
    pub data_type: DataType,
    /// The value as text: numbers with four decimals (`3.0000`), booleans `true`/`false`,
    /// arrays as JSON, dates and strings as sent.
    pub string_value: String,
    pub number_value: Option<f64>,
    /// For session data: the `id` of the identify that stored it.
    pub distinct_id: Option<String>,
}

/// Umami's `flattenJSON` with its types (`src/lib/data.ts`): nested objects become
/// `parent.key` rows; numbers, dates (`DATETIME_REGEX`), booleans, strings; arrays and null
/// as JSON text.
pub fn flatten(data: &Map<String, Value>) -> Vec<DataRow> {
    fn walk(data: &Map<String, Value>, parent: &str, rows: &mut Vec<DataRow>) {
        for (k, v) in data {
            let key = if parent.is_empty() {
                k.clone()
            } else {
                format!("{parent}.{k}")
            };
            let (data_type, string_value, number_value) = match v {
                Value::Object(m) => {
                    walk(m, &key, rows);
                    continue;
                }
                Value::Number(n) => {
                    let f = n.as_f64().unwrap_or_default();
                    (DataType::Number, format!("{f:.4}"), Some(f))
                }
                Value::String(s) if is_date(s) => (DataType::Date, s.clone(), None),
                Value::String(s) => (DataType::String, s.clone(), None),
                Value::Bool(b) => (DataType::Boolean, b.to_string(), None),
                other => (DataType::Array, other.to_string(), None),
            };
            rows.push(DataRow {
                key,
                data_type,
                string_value,
                number_value,
                distinct_id: None,
            });
        }
    }
    let mut rows = Vec::new();
    walk(data, "", &mut rows);
    rows
}

/// Umami's `DATETIME_REGEX`:
/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}(Z|\+\d{2}:\d{2})?)?$`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 19
        || !(digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19))
    {
        return false;
    }
    let rest = &b[19..];
    match rest {
        [] => true,
        [b'.', ms @ ..] if ms.len() >= 3 && ms[..3].iter().all(u8::is_ascii_digit) => {
            match &ms[3..] {
                [] | [b'Z'] => true,
                [b'+', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Umami's `uuid(...parts)`: a hash of the joined parts and the server's secret, as a UUID.
fn umami_uuid(parts: &[&str]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    h.update(b"contract-server-secret");
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The session of user `id` on [`WEBSITE_ID`]: `uuid(website, id)`.
pub fn user_session(id: &str) -> String {
    umami_uuid(&[WEBSITE_ID, id])
}

/// Umami's monthly session salt: the month of `unix_secs` (UTC).
fn month_salt(unix_secs: u64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}")
}

/// The client IP as Umami takes it: `payload.ip`, else the first of its client-IP headers
/// (`src/lib/ip.ts`), else none.
fn client_ip(p: &Map<String, Value>, headers: &HeaderMap) -> String {
    if let Some(ip) = p
        .get("ip")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return ip.to_owned();
    }
    const HEADERS: [&str; 12] = [
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-nf-client-connection-ip",
        "do-connecting-ip",
        "x-real-ip",
        "x-appengine-user-ip",
        "x-forwarded-for",
        "forwarded",
        "x-client-ip",
        "x-cluster-client-ip",
        "x-forwarded",
    ];
    let Some((name, value)) = HEADERS.iter().find_map(|h| {
        let v = headers.get(*h)?.to_str().ok()?;
        (!v.is_empty()).then_some((*h, v))
    }) else {
        return String::new();
    };
    match name {
        "x-forwarded-for" => value.split(',').next().unwrap_or("").trim().to_owned(),
        "forwarded" => value
            .split(';')
            .flat_map(|part| part.split(','))
            .find_map(|kv| kv.trim().strip_prefix("for="))
            .unwrap_or(value)
            .trim_matches(['"', '[', ']'])
            .to_owned(),
        _ => value.trim().to_owned(),
    }
}

/// A request the server answered.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub path: &'static str,
    pub status: u16,
    pub header_user_agent: String,
    /// Items in the body (1 for /api/send).
    pub items: usize,
    pub at: Instant,
}

#[derive(Default)]
struct Faults {
    fail: usize,
    throttle: usize,
    throttle_secs: u64,
    delay: usize,
    delay_for: Duration,
    no_batch: bool,
    reject_in_batch: Option<String>,
}

/// What the server does with one request (see [`UmamiServer::script`]).
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer as Umami does.
    Umami,
    /// Answer this status with these headers and an Umami-style error body; store nothing.
    Status(StatusCode, Vec<(HeaderName, HeaderValue)>),
    /// Take the request and never answer it (until the server stops listening); store nothing.
    /// Counted by [`UmamiServer::hung`]; in [`UmamiServer::requests`] (as a 503 nobody reads)
    /// only once the server stops listening and lets it go.
    Hang,
    /// Answer 200 with the `Content-Length` of a whole reply, send half of it and close the
    /// connection; store nothing (the reply breaks off before anything was committed, so a
    /// client must not take the status alone for a delivery).
    HalfBody,
}

impl Behaviour {
    /// Answer `status` (no headers yet).
    pub fn status(status: u16) -> Behaviour {
        Behaviour::Status(StatusCode::from_u16(status).unwrap(), Vec::new())
    }

    /// Adds a header to a [`Behaviour::Status`] answer.
    pub fn header(mut self, name: &'static str, value: &str) -> Behaviour {
        if let Behaviour::Status(_, headers) = &mut self {
            headers.push((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            ));
        }
        self
    }
}

type Script = Arc<dyn Fn(u64) -> Behaviour + Send + Sync>;

#[derive(Default)]
struct Inner {
    events: Mutex<Vec<StoredEvent>>,
    sessions: Mutex<Vec<Session>>,
    /// Session id → its data rows, one per key.
    session_data: Mutex<std::collections::HashMap<String, Vec<DataRow>>>,
    requests: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Faults>,
    script: Mutex<Option<Script>>,
    /// Requests seen by the script so far.
    scripted: AtomicU64,
    /// Requests taken and never answered.
    hung: AtomicU64,
    changed: Notify,
    /// Wakes hung requests when the server stops listening.
    closing: Notify,
    /// The pace requests are answered at, if any.
    pacer: Mutex<Option<Arc<Pacer>>>,
}

/// The pace of a real Umami server, as a model of where its time goes (issue #27).
///
/// The server is one shared processor (Node's event loop and PostgreSQL on the same cores)
/// plus waits that overlap across requests (database round trips). A request first takes
/// `per_request` of processor time (parsing, routing), then handles its items **one after
/// the other**, as Umami's `/api/batch` does: item `i` (from 0) takes `per_item + i ×
/// per_item_growth` of processor time, then `per_item_wait` of waiting that holds no
/// processor. The processor serves one piece of work at a time, in order of arrival, so
/// concurrent requests share it; at most `max_in_flight` requests are processed at once
/// (later ones wait for a place before they start).
///
/// So one connection sends at `n / (per_request + Σ cpu_i + n × per_item_wait)` events/s,
/// and enough connections at `n / (per_request + Σ cpu_i)` (processor-bound).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub per_request: Duration,
    pub per_item: Duration,
    pub per_item_growth: Duration,
    pub per_item_wait: Duration,
    pub max_in_flight: usize,
}

impl Pace {
    /// Umami 3.1.0 on PostgreSQL 15, app, Umami and database on the same 2 cores, fitted
    /// exactly to the four figures measured there (BENCHMARKS.md, issue #27): `/api/send` 157
    /// events/s on 8 connections; batches of 20: 188 events/s on 1 connection, 270 on 8; one
    /// batch of 500: 7.4 s. `max_in_flight` 5 is Prisma's default pool (2 × cores + 1); the
    /// figures do not pin it (the processor is the bound from 2 connections on).
    pub const UMAMI_3_1: Pace = Pace {
        per_request: Duration::from_micros(3_210),
        per_item: Duration::from_micros(3_162),
        per_item_growth: Duration::from_nanos(40_150),
        per_item_wait: Duration::from_micros(1_615),
        max_in_flight: 5,
    };

    /// Processor time of item `i` of a request.
    pub fn cpu(&self, i: usize) -> Duration {
        self.per_item + self.per_item_growth * i as u32
    }

    /// The time one request of `n` items takes on an idle server.
    pub fn alone(&self, n: usize) -> Duration {
        self.per_request
            + (0..n)
                .map(|i| self.cpu(i) + self.per_item_wait)
                .sum::<Duration>()
    }

    /// The processor time one request of `n` items takes.
    pub fn busy(&self, n: usize) -> Duration {
        self.per_request + (0..n).map(|i| self.cpu(i)).sum::<Duration>()
    }
}

/// Runs [`Pace`]'s model on a virtual timeline: the shared processor is a time it is next free
/// at; each request books its pieces of work on it in turn and sleeps until they are done.
/// Virtual times never take a timer's lateness from `now`, so a request of many items is not
/// slowed by the timer's millisecond granularity.
struct Pacer {
    pace: Pace,
    free_at: Mutex<tokio::time::Instant>,
    places: tokio::sync::Semaphore,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            free_at: Mutex::new(tokio::time::Instant::now()),
            places: tokio::sync::Semaphore::new(pace.max_in_flight.max(1)),
        }
    }

    /// Books `work` of processor time from `ready` on: when it is done.
    fn book(&self, ready: tokio::time::Instant, work: Duration) -> tokio::time::Instant {
        let mut free_at = lock(&self.free_at);
        let start = ready.max(*free_at);
        *free_at = start + work;
        *free_at
    }

    /// Takes the time a request of `n` items takes.
    async fn serve(&self, n: usize) {
        let _place = self.places.acquire().await.unwrap();
        let mut ready = self.book(tokio::time::Instant::now(), self.pace.per_request);
        for i in 0..n {
            tokio::time::sleep_until(ready).await;
            ready = self.book(ready, self.pace.cpu(i)) + self.pace.per_item_wait;
        }
        tokio::time::sleep_until(ready).await;
    }
}

/// Waits as long as the pace (if any) says a request of `n` items takes.
async fn pace(inner: &Inner, n: usize) {
    let pacer = lock(&inner.pacer).clone();
    if let Some(p) = pacer {
        p.serve(n).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running server. Dropping it stops it.
pub struct UmamiServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// `None` while refusing connections.
    server: Mutex<Option<Server>>,
}

/// A free loopback address, not listened on (connections to it are refused until a server
/// is started there with [`UmamiServer::start_on`]).
pub fn reserve_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl UmamiServer {
    /// Starts on a free port.
    pub async fn start() -> UmamiServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (e.g. from [`reserve_addr`]).
    pub async fn start_on(addr: SocketAddr) -> UmamiServer {
        Self::start_with(addr, Arc::default()).await
    }

    async fn start_with(addr: SocketAddr, inner: Arc<Inner>) -> UmamiServer {
        let server = Server::start_on(addr, app(&inner)).await;
        UmamiServer {
            addr: server.addr,
            inner,
            server: Mutex::new(Some(server)),
        }
    }

    /// The base URL to configure: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every stored event, in arrival order.
    pub fn events(&self) -> Vec<StoredEvent> {
        lock(&self.inner.events).clone()
    }

    /// Every session created, in order of creation.
    pub fn sessions(&self) -> Vec<Session> {
        lock(&self.inner.sessions).clone()
    }

    /// The data identify requests stored for session `session_id`, one row per key, in the
    /// order the keys were first stored.
    pub fn session_data(&self, session_id: &str) -> Vec<DataRow> {
        lock(&self.inner.session_data)
            .get(session_id)
            .cloned()
            .unwrap_or_default()
    }

    /// One key of a session's data.
    pub fn session_datum(&self, session_id: &str, key: &str) -> Option<DataRow> {
        self.session_data(session_id)
            .into_iter()
            .find(|r| r.key == key)
    }

    /// Every answered request, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.requests).clone()
    }

    /// Waits until at least `n` events are stored, at most `timeout`; returns whether they were.
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.events().len() >= n).await
    }

    /// Waits until at least `n` requests were answered, at most `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.requests().len() >= n).await
    }

    /// Waits until `done` holds (checked whenever the server answers a request).
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&UmamiServer) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self);
            }
        }
    }

    /// The next `n` requests answer 500 and store nothing.
    pub fn fail_next(&self, n: usize) {
        lock(&self.inner.faults).fail = n;
    }

    /// The next `n` requests answer 429 with `Retry-After: secs`.
    pub fn throttle_next(&self, n: usize, secs: u64) {
        let mut f = lock(&self.inner.faults);
        f.throttle = n;
        f.throttle_secs = secs;
    }

    /// The next `n` requests wait `d`, then answer 504 without storing.
    pub fn delay_next(&self, n: usize, d: Duration) {
        let mut f = lock(&self.inner.faults);
        f.delay = n;
        f.delay_for = d;
    }

    /// `/api/batch` answers 404, as on Umami before 2.17.
    pub fn without_batch(&self) {
        lock(&self.inner.faults).no_batch = true;
    }

    /// Batch items whose `name` is `name` fail with a per-item 400.
    pub fn reject_in_batch(&self, name: &str) {
        lock(&self.inner.faults).reject_in_batch = Some(name.to_owned());
    }

    /// From now on, `f(n)` decides what the `n`th request (from 0, to either endpoint) gets.
    /// The counted faults ([`fail_next`](Self::fail_next), ...) come first.
    pub fn script(&self, f: impl Fn(u64) -> Behaviour + Send + Sync + 'static) {
        *lock(&self.inner.script) = Some(Arc::new(f));
        self.inner.scripted.store(0, Ordering::SeqCst);
    }

    /// From now on, requests are answered at `pace` (see [`Pace`]): each takes the time the
    /// model gives it, then is handled (and its events stored) as before.
    pub fn pace(&self, pace: Pace) {
        *lock(&self.inner.pacer) = Some(Arc::new(Pacer::new(pace)));
    }

    /// Every other request answers 500, from the next one on; the others as Umami does.
    pub fn fail_every_other(&self) {
        self.script(|n| {
            if n % 2 == 0 {
                Behaviour::status(500)
            } else {
                Behaviour::Umami
            }
        });
    }

    /// Requests taken and never answered ([`Behaviour::Hang`]) so far.
    pub fn hung(&self) -> u64 {
        self.inner.hung.load(Ordering::SeqCst)
    }

    /// Stops listening: open connections end (hung requests too), new ones are refused until
    /// [`listen`](Self::listen). What was stored stays.
    pub async fn refuse(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            self.inner.closing.notify_waiters();
            server.stop().await;
        }
    }

    /// Listens again on the same address, after [`refuse`](Self::refuse).
    pub async fn listen(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let server = Server::start_on(self.addr, app(&self.inner)).await;
        *lock(&self.server) = Some(server);
    }

    /// Stops listening and ends open connections (gracefully).
    pub async fn stop(self) {
        self.refuse().await;
    }
}

fn app(inner: &Arc<Inner>) -> Router {
    Router::new()
        .route("/api/send", post(send))
        .route("/api/batch", post(batch))
        .with_state(inner.clone())
}

enum Fault {
    Fail,
    Throttle(u64),
    Delay(Duration),
    Scripted(Behaviour),
}

fn take_fault(inner: &Inner) -> Option<Fault> {
    let mut f = lock(&inner.faults);
    if f.delay > 0 {
        f.delay -= 1;
        return Some(Fault::Delay(f.delay_for));
    }
    if f.fail > 0 {
        f.fail -= 1;
        return Some(Fault::Fail);
    }
    if f.throttle > 0 {
        f.throttle -= 1;
        return Some(Fault::Throttle(f.throttle_secs));
    }
    drop(f);
    let script = lock(&inner.script).clone()?;
    match script(inner.scripted.fetch_add(1, Ordering::SeqCst)) {
        Behaviour::Umami => None,
        other => Some(Fault::Scripted(other)),
    }
}

fn error_body(status: StatusCode, message: &str, code: &str) -> Value {
    json!({ "error": { "message": message, "code": code, "status": status.as_u16() } })
}

fn bad_request(message: &str) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        error_body(StatusCode::BAD_REQUEST, message, "bad-request"),
    )
}

fn server_error(message: &str) -> (StatusCode, Value) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body(StatusCode::INTERNAL_SERVER_ERROR, message, "server-error"),
    )
}

fn record(
    inner: &Inner,
    path: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    items: usize,
    at: Instant,
) {
    lock(&inner.requests).push(RequestRecord {
        path,
        status: status.as_u16(),
        header_user_agent: header_ua(headers),
        items,
        at,
    });
    inner.changed.notify_waiters();
}

fn header_ua(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Applies an injected fault, if one is due: the response to send instead.
async fn fault(inner: &Inner) -> Option<Response> {
    match take_fault(inner)? {
        Fault::Fail => {
            let (s, b) = server_error("Server error");
            Some((s, axum::Json(b)).into_response())
        }
        Fault::Throttle(secs) => {
            let b = error_body(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "too-many-requests",
            );
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs.to_string())],
                    axum::Json(b),
                )
                    .into_response(),
            )
        }
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Fault::Scripted(Behaviour::Umami) => None,
        Fault::Scripted(Behaviour::Status(status, headers)) => {
            let code = if status.is_server_error() {
                "server-error"
            } else {
                "client-error"
            };
            let b = error_body(status, status.canonical_reason().unwrap_or(""), code);
            let mut r = (status, axum::Json(b)).into_response();
            r.headers_mut().extend(headers);
            Some(r)
        }
        Fault::Scripted(Behaviour::Hang) => {
            let closing = inner.closing.notified();
            inner.hung.fetch_add(1, Ordering::SeqCst);
            inner.changed.notify_waiters();
            closing.await;
            // Only reached when the server stops listening: nobody reads this any more.
            Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
        }
        Fault::Scripted(Behaviour::HalfBody) => {
            let whole = json!({ "size": 1, "processed": 1, "errors": 0, "details": [] })
                .to_string()
                .into_bytes();
            let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
            let mut r = Body::new(HalfBody(Some(half))).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(whole.len()));
            Some(r)
        }
    }
}

/// A body that yields its first half, then fails: hyper then closes the connection short of
/// the announced `Content-Length`.
struct HalfBody(Option<Bytes>);

impl axum::body::HttpBody for HalfBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(match self.0.take() {
            Some(half) => Ok(hyper::body::Frame::data(half)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the reply breaks off here",
            )),
        }))
    }
}

async fn send(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let at = Instant::now();
    if let Some(r) = fault(&inner).await {
        record(&inner, "/api/send", r.status(), &headers, 1, at);
        return r;
    }
    pace(&inner, 1).await;
    let (status, reply) = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => process(&inner, "/api/send", &v, &headers, at),
        Err(_) => bad_request("Bad request"),
    };
    record(&inner, "/api/send", status, &headers, 1, at);
    (status, axum::Json(reply)).into_response()
}

async fn batch(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let at = Instant::now();
    let no_batch = lock(&inner.faults).no_batch;
    if no_batch {
        let b = error_body(StatusCode::NOT_FOUND, "Not found", "not-found");
        record(&inner, "/api/batch", StatusCode::NOT_FOUND, &headers, 0, at);
        return (StatusCode::NOT_FOUND, axum::Json(b)).into_response();
    }
    let items = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => items,
        _ => {
            let (s, b) = bad_request("Bad request");
            record(&inner, "/api/batch", s, &headers, 0, at);
            return (s, axum::Json(b)).into_response();
        }
    };
    if let Some(r) = fault(&inner).await {
        record(&inner, "/api/batch", r.status(), &headers, items.len(), at);
        return r;
    }
    pace(&inner, items.len()).await;
    let reject = lock(&inner.faults).reject_in_batch.clone();
    let mut details = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let rejected = reject
            .as_deref()
            .is_some_and(|n| item.pointer("/payload/name").and_then(Value::as_str) == Some(n));
        let (status, reply) = if rejected {
            bad_request("Bad request")
        } else {
            process(&inner, "/api/batch", item, &headers, at)
        };
        if !status.is_success() {
            details.push(json!({ "index": index, "response": reply }));
        }
    }
    let reply = json!({
        "size": items.len(),
        "processed": items.len() - details.len(),
        "errors": details.len(),
        "details": details,
    });
    record(
        &inner,
        "/api/batch",
        StatusCode::OK,
        &headers,
        items.len(),
        at,
    );
    (StatusCode::OK, axum::Json(reply)).into_response()
}

/// JavaScript's string length (UTF-16 units), as Umami's validation counts.
fn js_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Umami's `isbot`, as far as the contract needs it.
pub fn is_bot(ua: &str) -> bool {
    let ua = ua.trim();
    if ua.is_empty() {
        return false;
    }
    let lower = ua.to_ascii_lowercase();
    if ["bot", "crawler", "spider", "curl/", "reqwest/", "hyper/"]
        .iter()
        .any(|m| lower.contains(m))
    {
        return true;
    }
    // A bare `name/version`.
    match ua.split_once('/') {
        Some((name, version)) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !version.is_empty()
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        }
        None => false,
    }
}

/// One send body, as Umami's /api/send handles it: validate, bot check, store.
fn process(
    inner: &Inner,
    endpoint: &'static str,
    body: &Value,
    headers: &HeaderMap,
    at: Instant,
) -> (StatusCode, Value) {
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return bad_request("Bad request");
    };
    if !matches!(kind, "event" | "identify") {
        return bad_request("Bad request");
    }
    let Some(p) = body.get("payload").and_then(Value::as_object) else {
        return bad_request("Bad request");
    };
    // Schema (zod) checks: 400.
    let str_max = |key: &str, max: usize| -> Result<(), ()> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if js_len(s) <= max => Ok(()),
            _ => Err(()),
        }
    };
    let checks = [
        str_max("name", 50),
        str_max("hostname", 100),
        str_max("language", 35),
        str_max("screen", 11),
        str_max("tag", 50),
        str_max("url", usize::MAX),
        str_max("referrer", usize::MAX),
        str_max("title", usize::MAX),
        str_max("userAgent", usize::MAX),
        str_max("id", usize::MAX),
    ];
    if checks.iter().any(Result::is_err) {
        return bad_request("Bad request");
    }
    if let Some(d) = p.get("data") {
        if !d.is_object() && !d.is_null() {
            return bad_request("Bad request");
        }
    }
    if let Some(ip) = p.get("ip") {
        if ip
            .as_str()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .is_none()
        {
            return bad_request("Bad request");
        }
    }
    if let Some(ts) = p.get("timestamp") {
        // UNIX seconds; a millisecond value would be a date tens of thousands of years ahead.
        match ts.as_u64() {
            Some(t) if t < 10_000_000_000 => {}
            _ => return bad_request("Bad request"),
        }
    }
    let Some(website) = p.get("website").and_then(Value::as_str) else {
        return bad_request("Bad request");
    };
    if website != WEBSITE_ID {
        return bad_request("Website not found.");
    }
    let header_user_agent = header_ua(headers);
    let user_agent = p
        .get("userAgent")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| header_user_agent.clone());
    if is_bot(&user_agent) {
        return (StatusCode::OK, json!({ "beep": "boop" }));
    }
    // Database limits: 500.
    let id = p
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    if id.is_some_and(|id| js_len(id) > 50) {
        return server_error("Server error");
    }
    // The session: the user's when there is an `id`, else the visitor's (IP, User-Agent,
    // month), created by the first request that resolves to it.
    let created = match p.get("timestamp").and_then(Value::as_u64) {
        Some(t) if t > 0 => t,
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let session_id = match id {
        Some(id) => umami_uuid(&[website, id]),
        None => umami_uuid(&[
            website,
            &client_ip(p, headers),
            &user_agent,
            &month_salt(created),
        ]),
    };
    {
        let mut sessions = lock(&inner.sessions);
        if !sessions.iter().any(|s| s.id == session_id) {
            sessions.push(Session {
                id: session_id.clone(),
                distinct_id: id.map(str::to_owned),
                created_by: kind.to_owned(),
            });
        }
    }
    let data = p.get("data").and_then(Value::as_object).cloned();
    if let Some(d) = &data {
        if too_long_value(&Value::Object(d.clone())) {
            return server_error("Server error");
        }
    }
    if kind == "identify" {
        // `saveSessionData`: one row per flattened key, an existing key's row updated.
        if let Some(d) = &data {
            let mut all = lock(&inner.session_data);
            let rows = all.entry(session_id.clone()).or_default();
            for mut row in flatten(d) {
                row.distinct_id = id.map(str::to_owned);
                match rows.iter_mut().find(|r| r.key == row.key) {
                    Some(old) => *old = row,
                    None => rows.push(row),
                }
            }
        }
    } else {
        lock(&inner.events).push(StoredEvent {
            endpoint,
            payload: Value::Object(p.clone()),
            name: p.get("name").and_then(Value::as_str).map(str::to_owned),
            data,
            user_agent,
            header_user_agent,
            session_id: session_id.clone(),
            at,
            stored: Instant::now(),
        });
    }
    inner.changed.notify_waiters();
    let visit_id = umami_uuid(&[&session_id, &(created / 3600).to_string()]);
    (
        StatusCode::OK,
        json!({ "cache": "token", "sessionId": session_id, "visitId": visit_id }),
    )
}

/// Whether a data value (flattened as Umami does) holds a string over 500 characters; arrays
/// are stored as their JSON text.
fn too_long_value(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().count() > 500,
        Value::Object(m) => m.values().any(too_long_value),
        Value::Array(_) => v.to_string().chars().count() > 500,
        _ => false,
    }
}
