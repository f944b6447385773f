//! A Standard Webhooks receiver (standardwebhooks.com) for tests.
//!
//! - `POST` to any path, JSON body, headers `webhook-id`, `webhook-timestamp` (unix seconds),
//!   `webhook-signature` (space-separated `v1,<base64>` entries; one must match).
//! - A signature is the base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"`, keyed with the
//!   base64-decoded secret after its `whsec_` prefix ([`SECRET`] unless started with
//!   [`WebhookReceiver::start_with_secret`]); checked with the `hmac`/`sha2` crates, compared
//!   in constant time.
//! - Missing headers, a timestamp more than 5 minutes from now either way, or a body that is
//!   not JSON → 400; no matching signature → 401; nothing stored.
//! - Dedupe by `webhook-id`: a message whose id was seen before → 200, its events counted
//!   duplicates, nothing stored again.
//! - Events: the envelope's `data.events[]` (each stored by its `id`), else `events[]` or a
//!   top-level array; any other JSON body is stored as one event with the `webhook-id`.
//!
//! Faults, refusing and the store: see [`super::faults`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::faults::{ContractServer, Core, READ_LIMIT, Vendor, Verdict, lock, serve};

/// The secret the receiver verifies with (32 bytes, base64, `whsec_` prefix).
pub const SECRET: &str = "whsec_dG93ZXItdGVsZW1ldHJ5IGNvbnRyYWN0IHNlY3JldCE=";

/// Another well-formed secret, for the wrong-secret checks.
pub const WRONG_SECRET: &str = "whsec_YSBkaWZmZXJlbnQsIHdyb25nIHNlY3JldCBrZXkhISE=";

/// The largest skew between `webhook-timestamp` and the receiver's clock, in seconds.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The receiver's contract.
pub struct Webhook {
    core: Core,
    key: Vec<u8>,
    seen: Mutex<HashSet<String>>,
    raw: Mutex<Vec<Delivery>>,
}

/// A request as it arrived (before any check): its Standard Webhooks headers and body, for
/// checking a sender's signatures with another verifier.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub body: Bytes,
}

pub type WebhookReceiver = ContractServer<Webhook>;

/// The HMAC key of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Vec<u8> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("a base64 secret")
}

/// `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>` with `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret_key(secret)).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

impl ContractServer<Webhook> {
    /// Verifies with [`SECRET`], on a free port.
    pub async fn start() -> WebhookReceiver {
        Self::start_with_secret("127.0.0.1:0".parse().unwrap(), SECRET).await
    }

    /// Verifies with `secret`, on `addr`.
    pub async fn start_with_secret(addr: SocketAddr, secret: &str) -> WebhookReceiver {
        let vendor = Webhook {
            core: Core::default(),
            key: secret_key(secret),
            seen: Mutex::default(),
            raw: Mutex::default(),
        };
        Self::start_vendor(addr, vendor).await
    }

    /// Every request as it arrived, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.vendor().raw).clone()
    }

    /// The URL to post to.
    pub fn hook_url(&self) -> String {
        format!("{}/hook", self.url())
    }
}

impl Vendor for Webhook {
    fn core(&self) -> &Core {
        &self.core
    }

    fn ids(body: &[u8]) -> Vec<String> {
        serde_json::from_slice::<Value>(body).map_or_else(
            |_| Vec::new(),
            |p| {
                events_of(&p)
                    .iter()
                    .map(|e| e.get("id").and_then(Value::as_str).unwrap_or("").to_owned())
                    .collect()
            },
        )
    }

    fn app(this: Arc<Self>) -> Router {
        Router::new().fallback(post(receive)).with_state(this)
    }
}

async fn receive(
    State(this): State<Arc<Webhook>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (id, ts, sigs) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let raw = body.clone();
    lock(&this.raw).push(Delivery {
        id: id.clone(),
        timestamp: ts.clone(),
        signature: sigs.clone(),
        body: body.clone(),
    });
    let this2 = this.clone();
    serve(
        &*this,
        uri.path(),
        &headers,
        body,
        READ_LIMIT,
        || Verdict::refuse(413, json!({ "error": "too large" })),
        move |decoded| check(&this2, id, ts, sigs, &raw, decoded),
    )
    .await
}

/// The events of a message: `data.events[]`, else `events[]`, else a top-level array, else
/// the body itself.
fn events_of(payload: &Value) -> Vec<Value> {
    match payload
        .pointer("/data/events")
        .or_else(|| payload.get("events"))
        .or(Some(payload).filter(|p| p.is_array()))
    {
        Some(Value::Array(items)) => items.clone(),
        _ => vec![payload.clone()],
    }
}

fn bad(status: u16, why: &str) -> Verdict {
    Verdict::refuse(status, json!({ "error": why }))
}

fn check(
    this: &Webhook,
    id: Option<String>,
    ts: Option<String>,
    sigs: Option<String>,
    raw: &[u8],
    body: &[u8],
) -> Verdict {
    let (Some(id), Some(ts), Some(sigs)) = (id, ts, sigs) else {
        return bad(400, "Missing required headers");
    };
    let Ok(ts_num) = ts.trim().parse::<i64>() else {
        return bad(400, "Invalid Signature Headers");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if now - ts_num > TOLERANCE_SECS {
        return bad(400, "Message timestamp too old");
    }
    if ts_num - now > TOLERANCE_SECS {
        return bad(400, "Message timestamp too new");
    }
    // The signature covers the body as sent.
    let matches = sigs.split(' ').any(|entry| {
        let Some(sig) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&this.key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(raw);
        mac.verify_slice(&sig).is_ok()
    });
    if !matches {
        return bad(401, "No matching signature found");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return bad(400, "body is not JSON");
    };
    let items = events_of(&payload);
    if !lock(&this.seen).insert(id.clone()) {
        return Verdict::Redelivered {
            ids: items
                .iter()
                .map(|e| e.get("id").and_then(Value::as_str).unwrap_or("").to_owned())
                .collect(),
            reply: json!({ "ok": true, "duplicate": true }),
        };
    }
    let single = items.len() == 1;
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let own = item.get("id").and_then(Value::as_str).map(str::to_owned);
            let key = own.unwrap_or_else(|| {
                if single {
                    id.clone()
                } else {
                    format!("{id}#{i}")
                }
            });
            (Some(key), item)
        })
        .collect();
    Verdict::Accept {
        events,
        discarded: 0,
        reply: json!({ "ok": true }),
    }
}
