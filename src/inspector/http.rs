//! The inspector's routes: the page, the event stream, the counters, `explain` and the
//! configuration.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::hub::{Explainer, Hub, Subscription};
use super::tap::{Subscribed, Tap};
use crate::Telemetry;
use crate::event::Rfc3339;

/// The page: HTML, CSS and JavaScript in one file, nothing loaded from elsewhere.
const PAGE: &str = include_str!("page.html");

/// What the page may load and talk to: itself, nothing else.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub(super) struct Shared {
    pub(super) telemetry: Telemetry,
    pub(super) token: Option<Box<[u8]>>,
    pub(super) history: usize,
    /// Raised when the shutdown signal completed: open streams end, new ones are refused.
    pub(super) closed: watch::Sender<bool>,
    /// The shutdown signal, until the first request spawns a task to wait for it.
    pub(super) signal: Mutex<Option<super::Signal>>,
}

impl Shared {
    /// Starts waiting for the shutdown signal (once, from a request: a runtime is running).
    fn arm(&self) {
        let signal = self.signal.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(signal) = signal {
            let closed = self.closed.clone();
            tokio::spawn(async move {
                signal.await;
                closed.send_replace(true);
            });
        }
    }
}

type St = State<Arc<Shared>>;

pub(super) fn router<S: Clone + Send + Sync + 'static>(shared: Shared) -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/api/stream", get(stream_events))
        .route("/api/stats", get(stats))
        .route("/api/explain", get(explain))
        .route("/api/config", get(config))
        .with_state(Arc::new(shared))
}

async fn page() -> Response {
    let mut res = PAGE.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// The 401 answer, unless the request carries the bearer token (when one is set).
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &shared.token else {
        return None;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(given) if bool::from(given.as_bytes().ct_eq(token)) => None,
        _ => {
            let mut res = json_response(
                StatusCode::UNAUTHORIZED,
                json!({ "error": "a valid `Authorization: Bearer <token>` header is required" }),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tower-telemetry inspector\""),
            );
            Some(res)
        }
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The handle's hub, started (with its task) by the first stream.
fn hub(shared: &Shared) -> Arc<Hub> {
    let tap = shared.telemetry.tap();
    tap.hub
        .get_or_init(|| {
            let hub = Arc::new(Hub::new(
                tap.names.clone(),
                shared.history,
                tap.epoch.clone(),
            ));
            if let Some(rx) = tap.take_receiver() {
                let explain = Explainer::new(shared.telemetry.downgrade());
                tokio::spawn(hub.clone().run(rx, explain));
            }
            hub
        })
        .clone()
}

async fn stream_events(State(shared): St, headers: HeaderMap) -> Response {
    if let Some(res) = unauthorized(&shared, &headers) {
        return res;
    }
    shared.arm();
    let closed = shared.closed.subscribe();
    if *closed.borrow() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "the server is shutting down" }),
        );
    }
    let tap: &Arc<Tap> = shared.telemetry.tap();
    // Counted open first, then snapshotted: nothing tracked after the snapshot is missed.
    let guard = tap.subscribe();
    let subscription = hub(&shared).subscribe();
    let mut res = Sse::new(messages(subscription, guard, closed))
        .keep_alive(KeepAlive::default())
        .into_response();
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

enum Phase {
    Hello,
    Snapshot,
    Live,
}

/// The stream's messages: hello, snapshot, then live until the client goes or `closed` is
/// raised (a lagging client is told, then goes on from the newest).
pub(super) fn messages(
    subscription: Subscription,
    guard: Subscribed,
    closed: watch::Receiver<bool>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let state = (Phase::Hello, subscription, (guard, closed));
    stream::unfold(state, |(phase, mut sub, mut guard)| async move {
        let event = match phase {
            Phase::Hello => {
                let e = SseEvent::default().event("hello").data(&sub.hello);
                return Some((Ok(e), (Phase::Snapshot, sub, guard)));
            }
            Phase::Snapshot => {
                let snapshot = std::mem::take(&mut sub.snapshot);
                let e = SseEvent::default()
                    .event("snapshot")
                    .id(sub.seq.to_string())
                    .data(snapshot);
                return Some((Ok(e), (Phase::Live, sub, guard)));
            }
            Phase::Live => loop {
                let next = {
                    let closing = std::pin::pin!(guard.1.wait_for(|closed| *closed));
                    let recv = std::pin::pin!(sub.rx.recv());
                    match futures_util::future::select(closing, recv).await {
                        futures_util::future::Either::Left(_) => return None,
                        futures_util::future::Either::Right((next, _)) => next,
                    }
                };
                match next {
                    Ok(m) if m.seq <= sub.seq => continue, // already in the snapshot
                    Ok(m) => {
                        break SseEvent::default()
                            .event(m.kind)
                            .id(m.seq.to_string())
                            .data(&m.data);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        break SseEvent::default()
                            .event("lagged")
                            .data(json!({ "missed": missed }).to_string());
                    }
                    Err(RecvError::Closed) => return None,
                }
            },
        };
        Some((Ok(event), (Phase::Live, sub, guard)))
    })
}

async fn stats(State(shared): St, headers: HeaderMap) -> Response {
    if let Some(res) = unauthorized(&shared, &headers) {
        return res;
    }
    let t = &shared.telemetry;
    let tap = t.tap();
    let s = t.stats();
    let destinations: Vec<_> = s
        .destinations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let errors: Vec<_> = tap
                .errors(i)
                .into_iter()
                .rev()
                .map(|e| {
                    json!({
                        "time": Rfc3339(e.time).to_string(),
                        "outcome": e.outcome.as_str(),
                        "message": e.message,
                        "events": e.events,
                    })
                })
                .collect();
            // Every counter as `Stats` serializes it, and what the page adds.
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["in_flight"] = json!(d.undelivered.saturating_sub(d.queued as u64));
            v["last_errors"] = json!(errors);
            v
        })
        .collect();
    let mut body = serde_json::to_value(&s).unwrap_or_default();
    body["destinations"] = json!(destinations);
    body["inspector"] = json!({ "subscribers": tap.subscribers(), "lost": tap.lost() });
    json_response(StatusCode::OK, body)
}

async fn explain(
    State(shared): St,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(res) = unauthorized(&shared, &headers) {
        return res;
    }
    let Some(name) = query.get("name") else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "the `name` query parameter is required" }),
        );
    };
    let why = shared.telemetry.explain(name);
    let destinations: Vec<_> = why
        .destinations
        .iter()
        .map(|d| {
            json!({
                "destination": d.destination,
                "routed": d.routed,
                "reason": d.reason,
                "sample_rate": d.sample_rate,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "name": why.name,
            "valid": crate::event::validate_name(name).is_ok(),
            "always_kept_by": why.always_kept_by,
            "destinations": destinations,
            "text": why.to_string(),
        }),
    )
}

async fn config(State(shared): St, headers: HeaderMap) -> Response {
    if let Some(res) = unauthorized(&shared, &headers) {
        return res;
    }
    let config = &shared.telemetry.tap().config;
    json_response(StatusCode::OK, json!({ "config": config }))
}
