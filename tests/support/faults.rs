//! What every vendor contract server shares (PostHog, Segment, webhooks): the store with
//! dedupe counted by the vendor's id, the request log, scriptable faults, refusing and
//! listening again on the same port. Each vendor module supplies only its contract (routes,
//! auth, shapes, limits, answers) as a [`Vendor`].
//!
//! Faults (checked before the contract, in arrival order, across all routes):
//! - [`push_faults(n, f)`](ContractServer::push_faults): the next `n` requests get `f`;
//! - [`script(f)`](ContractServer::script): then `f(n)` decides request `n` (from 0, counted
//!   from when the script was set);
//! - a [`Fault`] is: serve as the vendor does, a status with headers (e.g. 503 +
//!   `Retry-After`) storing nothing, a hang (the request is taken, never answered until the
//!   server stops listening), a delay then serve, or store-then-hang (the batch is stored,
//!   the answer never comes: the client times out and resends what the server already has);
//! - [`refuse()`](ContractServer::refuse) / [`listen()`](ContractServer::listen): connections
//!   refused, then accepted again on the same port with what was stored kept;
//!   [`reserve_addr`] gives a port nobody listens on yet for
//!   [`start_on`](ContractServer::start_on).

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;

use super::http::Server;

/// A free loopback address, not listened on (connections to it are refused until a server is
/// started there).
pub fn reserve_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// What a contract server does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve as the vendor does.
    Serve,
    /// Answer this status with these headers (and a small JSON error body); store nothing.
    Status(StatusCode, Vec<(HeaderName, HeaderValue)>),
    /// Take the request and never answer it (until the server stops listening); store nothing.
    Hang,
    /// Wait this long, then serve.
    Delay(Duration),
    /// Serve (store what the vendor would), then never answer: the client's time-out after
    /// the server stored the batch.
    StoreThenHang,
}

impl Fault {
    /// Answer `status` (no headers yet).
    pub fn status(status: u16) -> Fault {
        Fault::Status(StatusCode::from_u16(status).unwrap(), Vec::new())
    }

    /// Adds a header to a [`Fault::Status`] answer.
    pub fn header(mut self, name: &'static str, value: &str) -> Fault {
        if let Fault::Status(_, headers) = &mut self {
            headers.push((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            ));
        }
        self
    }
}

/// An event a server stored.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The vendor's dedupe key: PostHog `uuid`, Segment `messageId`, the webhook event's id.
    pub id: String,
    /// The event as received.
    pub item: Value,
    /// When its request arrived.
    pub at: Instant,
}

impl Stored {
    /// A string at a JSON pointer into the event (`"/properties/path"`).
    pub fn str(&self, pointer: &str) -> Option<&str> {
        self.item.pointer(pointer).and_then(Value::as_str)
    }
}

/// A request a server answered.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub path: String,
    pub status: u16,
    /// Events in the body (0 when it could not be read).
    pub items: usize,
    /// The vendor's ids of the events in the body, in order (`""` for an event without one).
    pub ids: Vec<String>,
    /// Events stored from it (new ids).
    pub stored: usize,
    /// Events in it whose id was stored before.
    pub duplicates: usize,
    /// Events in it the vendor accepts and drops (too large, malformed where the vendor
    /// answers 200 anyway).
    pub discarded: usize,
    /// Whether the body came gzip-encoded.
    pub gzip: bool,
    pub user_agent: String,
    pub at: Instant,
}

/// What a vendor's contract made of a request.
pub enum Verdict {
    /// Accepted: store `events` (id, if the event has one, and the event), count `discarded`,
    /// answer `reply` with status 200.
    Accept {
        events: Vec<(Option<String>, Value)>,
        discarded: usize,
        reply: Value,
    },
    /// Accepted, but every event is a duplicate of this many stored ones (a webhook
    /// redelivery by `webhook-id`).
    Redelivered { ids: Vec<String>, reply: Value },
    /// Refused with this status and body; nothing stored.
    Refuse { status: StatusCode, body: Value },
}

impl Verdict {
    pub fn refuse(status: u16, body: Value) -> Verdict {
        Verdict::Refuse {
            status: StatusCode::from_u16(status).unwrap(),
            body,
        }
    }
}

type Script = Arc<dyn Fn(u64) -> Fault + Send + Sync>;

/// The state every contract server keeps.
#[derive(Default)]
pub struct Core {
    events: Mutex<Vec<Stored>>,
    ids: Mutex<HashMap<String, u32>>,
    duplicates: AtomicU64,
    discarded: AtomicU64,
    generated: AtomicU64,
    requests: Mutex<Vec<RequestRecord>>,
    queue: Mutex<VecDeque<Fault>>,
    script: Mutex<Option<Script>>,
    scripted: AtomicU64,
    hung: AtomicU64,
    /// Nanoseconds spent reading, checking and storing requests (not waiting on faults).
    busy: AtomicU64,
    changed: Notify,
    closing: Notify,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    fn next_fault(&self) -> Fault {
        if let Some(f) = lock(&self.queue).pop_front() {
            return f;
        }
        let Some(script) = lock(&self.script).clone() else {
            return Fault::Serve;
        };
        script(self.scripted.fetch_add(1, Ordering::SeqCst))
    }

    /// Whether `id` was stored before (then counted a duplicate).
    pub fn seen(&self, id: &str) -> bool {
        lock(&self.ids).contains_key(id)
    }

    async fn hang(&self) -> Response {
        let closing = self.closing.notified();
        self.hung.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        closing.await;
        // Only reached when the server stops listening: nobody reads this any more.
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}

/// A vendor's contract: its routes call [`serve`] with a check of the decoded body.
pub trait Vendor: Send + Sync + 'static {
    /// The shared state.
    fn core(&self) -> &Core;
    /// The routes (the state is the vendor).
    fn app(this: Arc<Self>) -> Router;
    /// The ids of the events in a (gunzipped) body, as far as it can be read: for the request
    /// log of refused requests.
    fn ids(body: &[u8]) -> Vec<String>;
}

/// The largest body the servers read at all (vendors' own limits are checked below it).
pub const READ_LIMIT: usize = 64 << 20;

/// One request through the fault machinery and the vendor's `check` of the (gunzipped) body.
/// `max_decoded` bounds the gunzipped body: beyond it, `too_large` answers.
pub async fn serve<V: Vendor>(
    vendor: &V,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    max_decoded: usize,
    too_large: impl FnOnce() -> Verdict,
    check: impl FnOnce(&[u8]) -> Verdict,
) -> Response {
    let core = vendor.core();
    let at = Instant::now();
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut rec = RequestRecord {
        path: path.to_owned(),
        status: 0,
        items: 0,
        ids: Vec::new(),
        stored: 0,
        duplicates: 0,
        discarded: 0,
        gzip,
        user_agent,
        at,
    };
    let fault = core.next_fault();
    match &fault {
        Fault::Serve | Fault::StoreThenHang => {}
        Fault::Delay(d) => tokio::time::sleep(*d).await,
        Fault::Hang => return core.hang().await,
        Fault::Status(..) => {}
    }
    let work = Instant::now();
    let decoded: Result<std::borrow::Cow<'_, [u8]>, Verdict> = if body.len() > max_decoded {
        Err(too_large())
    } else if gzip {
        let mut decoded = Vec::new();
        let read = flate2::read::GzDecoder::new(&body[..])
            .take(max_decoded as u64 + 1)
            .read_to_end(&mut decoded);
        match read {
            Err(_) => Err(Verdict::refuse(
                400,
                serde_json::json!({ "error": "body is not valid gzip" }),
            )),
            Ok(n) if n > max_decoded => Err(too_large()),
            Ok(_) => Ok(decoded.into()),
        }
    } else {
        Ok(body[..].into())
    };
    if let Fault::Status(status, extra) = &fault {
        let body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
        });
        let mut r = (*status, axum::Json(body)).into_response();
        r.headers_mut().extend(extra.clone());
        rec.status = status.as_u16();
        rec.ids = decoded
            .as_deref()
            .map_or_else(|_| Vec::new(), |b| V::ids(b));
        rec.items = rec.ids.len();
        finish(core, rec);
        return r;
    }
    let (verdict, decoded) = match decoded {
        Ok(body) => (check(&body), Some(body)),
        Err(refusal) => (refusal, None),
    };
    let response = match verdict {
        Verdict::Refuse { status, body } => {
            rec.status = status.as_u16();
            rec.ids = decoded.as_deref().map_or_else(Vec::new, |b| V::ids(b));
            rec.items = rec.ids.len();
            (status, axum::Json(body)).into_response()
        }
        Verdict::Redelivered { ids, reply } => {
            rec.status = 200;
            rec.items = ids.len();
            rec.duplicates = ids.len();
            {
                let mut arrivals = lock(&core.ids);
                for id in &ids {
                    *arrivals.entry(id.clone()).or_insert(0) += 1;
                }
            }
            rec.ids = ids;
            core.duplicates
                .fetch_add(rec.items as u64, Ordering::SeqCst);
            (StatusCode::OK, axum::Json(reply)).into_response()
        }
        Verdict::Accept {
            events,
            discarded,
            reply,
        } => {
            rec.status = 200;
            rec.items = events.len() + discarded;
            rec.discarded = discarded;
            core.discarded.fetch_add(discarded as u64, Ordering::SeqCst);
            {
                let mut ids = lock(&core.ids);
                let mut stored = lock(&core.events);
                for (id, item) in events {
                    let id = id.unwrap_or_else(|| {
                        format!("server-{}", core.generated.fetch_add(1, Ordering::SeqCst))
                    });
                    rec.ids.push(id.clone());
                    let n = ids.entry(id.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        rec.stored += 1;
                        stored.push(Stored { id, item, at });
                    } else {
                        rec.duplicates += 1;
                        core.duplicates.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            (StatusCode::OK, axum::Json(reply)).into_response()
        }
    };
    finish(core, rec);
    core.busy
        .fetch_add(work.elapsed().as_nanos() as u64, Ordering::Relaxed);
    if matches!(fault, Fault::StoreThenHang) {
        return core.hang().await;
    }
    response
}

fn finish(core: &Core, rec: RequestRecord) {
    lock(&core.requests).push(rec);
    core.changed.notify_waiters();
}

/// A running contract server. Dropping it stops it.
pub struct ContractServer<V: Vendor> {
    addr: SocketAddr,
    vendor: Arc<V>,
    /// `None` while refusing connections.
    server: Mutex<Option<Server>>,
}

impl<V: Vendor> ContractServer<V> {
    /// Starts `vendor` on `addr` (`127.0.0.1:0` for a free port, or from [`reserve_addr`]).
    pub async fn start_vendor(addr: SocketAddr, vendor: V) -> Self {
        let vendor = Arc::new(vendor);
        let server = Server::start_on(addr, app(&vendor)).await;
        ContractServer {
            addr: server.addr,
            vendor,
            server: Mutex::new(Some(server)),
        }
    }

    /// The vendor's state (its settings).
    pub fn vendor(&self) -> &V {
        &self.vendor
    }

    /// The base URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn core(&self) -> &Core {
        self.vendor.core()
    }

    /// Every stored event (one per id), in arrival order.
    pub fn events(&self) -> Vec<Stored> {
        lock(&self.core().events).clone()
    }

    /// Stored events so far.
    pub fn stored(&self) -> usize {
        lock(&self.core().events).len()
    }

    /// How often each id arrived (stored once, the rest counted duplicates).
    pub fn arrivals(&self) -> HashMap<String, u32> {
        lock(&self.core().ids).clone()
    }

    /// Events that arrived again under an id already stored.
    pub fn duplicates(&self) -> u64 {
        self.core().duplicates.load(Ordering::SeqCst)
    }

    /// Events accepted and dropped (over the per-event limit; malformed where the vendor
    /// answers 200 anyway).
    pub fn discarded(&self) -> u64 {
        self.core().discarded.load(Ordering::SeqCst)
    }

    /// Every answered request, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.core().requests).clone()
    }

    /// Time the server spent reading, checking and storing requests (its handlers' work).
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.core().busy.load(Ordering::Relaxed))
    }

    /// Requests taken and never answered so far.
    pub fn hung(&self) -> u64 {
        self.core().hung.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` events are stored, at most `timeout`.
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.stored() >= n).await
    }

    /// Waits until `done` holds (checked whenever the server answers or takes a request).
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.core().changed.notified();
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

    /// The next `n` requests get `fault` (before any script).
    pub fn push_faults(&self, n: usize, fault: Fault) {
        lock(&self.core().queue).extend(std::iter::repeat_n(fault, n));
    }

    /// From now on, after the pushed faults, `f(n)` decides what request `n` gets.
    pub fn script(&self, f: impl Fn(u64) -> Fault + Send + Sync + 'static) {
        *lock(&self.core().script) = Some(Arc::new(f));
        self.core().scripted.store(0, Ordering::SeqCst);
    }

    /// Stops listening: open connections end (hung requests too), new ones are refused until
    /// [`listen`](Self::listen). What was stored stays.
    pub async fn refuse(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            self.core().closing.notify_waiters();
            server.stop().await;
        }
    }

    /// Listens again on the same address.
    pub async fn listen(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let server = Server::start_on(self.addr, app(&self.vendor)).await;
        *lock(&self.server) = Some(server);
    }

    /// Stops listening and ends open connections.
    pub async fn stop(self) {
        self.refuse().await;
    }
}

fn app<V: Vendor>(vendor: &Arc<V>) -> Router {
    V::app(vendor.clone()).layer(DefaultBodyLimit::max(READ_LIMIT))
}

/// Whether `s` is an RFC 3339 date-time (`2026-12-05T15:18:43.123456+00:00`, `...Z`).
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    let (month, day, hour, min, sec) =
        (num(5..7), num(8..10), num(11..13), num(14..16), num(17..19));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// Whether `s` is a UUID in its hyphenated text form.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
