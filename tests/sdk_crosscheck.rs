//! Issue #22's cross-checks: the vendors' official Python SDKs (pinned in
//! `tests/support/python.rs`, installed by `.ci/run` or on first use) against our contract
//! servers. What an SDK sends is accepted and stored as sent; what it should be refused is
//! refused with the vendor's answer; Standard Webhooks signatures made by the official
//! `standardwebhooks` library verify with our receiver, and wrong ones do not. For the
//! identity calls (identify, alias, group, events in groups; issue #23) the SDKs' messages are
//! stored as sent, and ours for the same operations are stored with the same meaning, field
//! by field.
//!
//! The SDKs run as child processes on a real-time runtime (the servers answer on loopback
//! while the snippet runs), each bounded by [`LIMIT`].

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::faults::{ContractServer, Vendor};
use support::posthog_server::{self, PostHogServer};
use support::python;
use support::segment_server::{self, SegmentServer};
use support::webhook_receiver::{self, WebhookReceiver};

/// The longest a snippet may run.
const LIMIT: Duration = Duration::from_secs(60);

/// The snippet's last line, as JSON.
fn report(out: &python::Output) -> Value {
    let line = out.lines().last().copied().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "the snippet's last line is not JSON ({e}):\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        )
    })
}

/// Every `sent` event of the report is stored once under `id_key`, with the same values at
/// `fields`, and `properties` holding at least what was sent.
fn assert_stored_as_sent<V: Vendor>(
    server: &ContractServer<V>,
    sent: &[Value],
    id_key: &str,
    fields: &[&str],
) {
    let stored: HashMap<String, Value> = server
        .events()
        .into_iter()
        .map(|e| (e.id, e.item))
        .collect();
    assert_eq!(stored.len(), sent.len(), "stored: {stored:#?}");
    for s in sent {
        let id = s[id_key].as_str().unwrap();
        let got = stored
            .get(id)
            .unwrap_or_else(|| panic!("{id_key} {id} not stored"));
        assert_eq!(got[id_key], s[id_key]);
        for f in fields {
            assert_eq!(got[*f], s[*f], "{f} of {id}: {got:#}");
        }
        let props = got["properties"].as_object().unwrap();
        for (k, v) in s["properties"].as_object().unwrap() {
            assert_eq!(props.get(k), Some(v), "property {k} of {id}");
        }
    }
    assert_eq!(server.duplicates(), 0);
    assert_eq!(server.discarded(), 0);
}

const POSTHOG_CAPTURE: &str = r#"
import json, os, uuid
from posthog import Posthog
errors = []
ph = Posthog(os.environ["KEY"], host=os.environ["URL"], gzip=os.environ["GZIP"] == "1",
             max_retries=0, flush_at=10, on_error=lambda e, batch: errors.append(repr(e)),
             enable_local_evaluation=False)
sent = []
for i in range(25):
    u = str(uuid.uuid4())
    props = {"path": "/p/%d" % i, "n": i, "nested": {"a": [1, 2]}, "text": "caf\u00e9 \"q\""}
    ph.capture("signed_up", distinct_id="user-%d" % (i % 3), properties=props, uuid=u)
    sent.append({"uuid": u, "distinct_id": "user-%d" % (i % 3), "event": "signed_up",
                 "properties": props})
ph.flush()
ph.shutdown()
print(json.dumps({"sent": sent, "errors": errors}))
"#;

async fn posthog_sdk_capture(gzip: bool) {
    let server = PostHogServer::start().await;
    let url = server.url();
    let out = python::run(
        POSTHOG_CAPTURE,
        &[
            ("KEY", posthog_server::API_KEY),
            ("URL", &url),
            ("GZIP", if gzip { "1" } else { "0" }),
        ],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["errors"], json!([]), "{}", out.stderr);
    let sent = r["sent"].as_array().unwrap();
    assert_stored_as_sent(&server, sent, "uuid", &["event", "distinct_id"]);
    let requests = server.requests();
    assert!(!requests.is_empty());
    for req in &requests {
        // What the SDK really posts to, and how.
        assert_eq!(req.path, "/batch/", "{req:?}");
        assert_eq!(req.status, 200);
        assert_eq!(req.gzip, gzip);
        assert!(req.user_agent.starts_with("posthog-python/"), "{req:?}");
    }
    for e in server.events() {
        assert!(e.str("/timestamp").is_some(), "the SDK sends a timestamp");
        assert_eq!(e.str("/properties/$lib"), Some("posthog-python"));
    }
}

#[tokio::test]
async fn posthog_sdk_events_are_stored_as_sent() {
    posthog_sdk_capture(false).await;
}

#[tokio::test]
async fn posthog_sdk_gzip_events_are_stored_as_sent() {
    posthog_sdk_capture(true).await;
}

const POSTHOG_REFUSED: &str = r#"
import json, os, uuid
from posthog.request import batch_post, APIError
def ev(size=0):
    return {"event": "e", "distinct_id": "u", "uuid": str(uuid.uuid4()),
            "properties": {"blob": "x" * size}}
def status(**kw):
    try:
        batch_post(host=os.environ["URL"], timeout=30, **kw)
        return 200
    except APIError as e:
        return e.status
small = ev()
report = {
    "bad_key": status(api_key="phc_wrong", batch=[ev()]),
    "bad_key_gzip": status(api_key="phc_wrong", gzip=True, batch=[ev()]),
    # One event over 1 MB beside a small one: the big one is discarded, the request succeeds.
    "one_oversized": status(api_key=os.environ["KEY"], batch=[ev(1100 * 1024), small]),
    # 21 MB in one request.
    "request_too_large": status(api_key=os.environ["KEY"], batch=[ev(700 * 1024) for _ in range(30)]),
    "request_too_large_gzip": status(api_key=os.environ["KEY"], gzip=True,
                                     batch=[ev(700 * 1024) for _ in range(30)]),
    "small_uuid": small["uuid"],
}
print(json.dumps(report))
"#;

#[tokio::test]
async fn posthog_refuses_what_posthog_refuses() {
    let server = PostHogServer::start().await;
    let url = server.url();
    let out = python::run(
        POSTHOG_REFUSED,
        &[("KEY", posthog_server::API_KEY), ("URL", &url)],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["bad_key"], 401);
    assert_eq!(r["bad_key_gzip"], 401);
    assert_eq!(r["one_oversized"], 200);
    assert_eq!(r["request_too_large"], 413);
    // Compressed it is small on the wire: the limit is on the event data.
    assert_eq!(r["request_too_large_gzip"], 413);
    let stored = server.events();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, r["small_uuid"].as_str().unwrap());
    assert_eq!(server.discarded(), 1);
}

const SEGMENT_TRACK: &str = r#"
import json, os, uuid
if os.environ["SDK"] == "segment":
    from segment.analytics import Client
else:
    from rudderstack.analytics import Client
errors = []
c = Client(os.environ["KEY"], host=os.environ["URL"], max_retries=0, gzip=os.environ["GZIP"] == "1",
           on_error=lambda e, batch: errors.append(repr(e)))
sent = []
for i in range(25):
    props = {"path": "/p/%d" % i, "n": i, "nested": {"a": [1, 2]}, "text": "caf\u00e9"}
    ctx = {"ip": "203.0.113.%d" % i, "userAgent": "Mozilla/5.0", "locale": "fr-FR",
           "page": {"path": "/p/%d" % i, "url": "https://example.com/p/%d" % i, "referrer": ""}}
    mid = str(uuid.uuid4())
    if i % 5 == 0:
        c.track(anonymous_id="anon-%d" % i, event="viewed", properties=props, context=ctx,
                message_id=mid)
        sent.append({"messageId": mid, "anonymousId": "anon-%d" % i, "userId": None,
                     "event": "viewed", "properties": props, "context": ctx})
    else:
        c.track(user_id="user-%d" % (i % 3), event="signed_up", properties=props, context=ctx,
                message_id=mid)
        sent.append({"messageId": mid, "userId": "user-%d" % (i % 3), "event": "signed_up",
                     "properties": props, "context": ctx})
c.flush()
c.join()
print(json.dumps({"sent": sent, "errors": errors}))
"#;

async fn segment_sdk_track(sdk: &str, server: SegmentServer, gzip: bool) {
    let url = server.url();
    let out = python::run(
        SEGMENT_TRACK,
        &[
            ("SDK", sdk),
            ("KEY", segment_server::WRITE_KEY),
            ("URL", &url),
            ("GZIP", if gzip { "1" } else { "0" }),
        ],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["errors"], json!([]), "{}", out.stderr);
    let sent = r["sent"].as_array().unwrap();
    assert_stored_as_sent(&server, sent, "messageId", &["event"]);
    let stored: HashMap<String, Value> = server
        .events()
        .into_iter()
        .map(|e| (e.id, e.item))
        .collect();
    for s in sent {
        let got = &stored[s["messageId"].as_str().unwrap()];
        assert_eq!(got["type"], "track");
        match s["userId"].as_str() {
            Some(user) => assert_eq!(got["userId"], user),
            None => assert_eq!(got["anonymousId"], s["anonymousId"]),
        }
        // The context as sent, plus what the SDK adds (library).
        let ctx = got["context"].as_object().unwrap();
        for (k, v) in s["context"].as_object().unwrap() {
            assert_eq!(ctx.get(k), Some(v), "context.{k}");
        }
        assert!(ctx["library"]["name"].is_string(), "{got:#}");
        assert!(got["timestamp"].is_string());
    }
    for req in server.requests() {
        assert_eq!(req.path, "/v1/batch");
        assert_eq!(req.status, 200);
        assert_eq!(req.gzip, gzip);
    }
}

#[tokio::test]
async fn segment_sdk_events_are_stored_as_sent() {
    segment_sdk_track("segment", SegmentServer::start().await, false).await;
}

#[tokio::test]
async fn segment_sdk_gzip_events_are_stored_as_sent() {
    segment_sdk_track("segment", SegmentServer::start().await, true).await;
}

#[tokio::test]
async fn rudderstack_sdk_events_are_stored_as_sent() {
    // RudderStack's SDK gzips by default.
    segment_sdk_track(
        "rudderstack",
        SegmentServer::start_rudderstack().await,
        true,
    )
    .await;
}

const SEGMENT_REFUSED: &str = r#"
import json, os, uuid
if os.environ["SDK"] == "segment":
    from segment.analytics.request import post, APIError
else:
    from rudderstack.analytics.request import post, APIError
def msg(size=0):
    return {"type": "track", "event": "e", "userId": "u", "messageId": str(uuid.uuid4()),
            "properties": {"blob": "x" * size}}
def status(key, batch, **kw):
    try:
        post(key, host=os.environ["URL"], timeout=30, gzip=False, batch=batch, **kw)
        return 200
    except APIError as e:
        return e.status
    except Exception as e:
        return repr(e)
key = os.environ["KEY"]
print(json.dumps({
    "bad_key": status("wrong-key", [msg()]),
    "message_too_large": status(key, [msg(int(os.environ["BIG_MESSAGE"]))]),
    "batch_too_large": status(key, [msg(int(os.environ["BATCH_PART"])) for _ in range(25)]),
    "accepted": status(key, [msg()]),
}))
"#;

/// `big_message`: one message over the per-message limit; 25 of `batch_part` are over the
/// per-batch limit, each under the per-message one.
async fn segment_refused(sdk: &str, server: SegmentServer, big_message: usize, batch_part: usize) {
    let url = server.url();
    let big = big_message.to_string();
    let part = batch_part.to_string();
    let out = python::run(
        SEGMENT_REFUSED,
        &[
            ("SDK", sdk),
            ("KEY", segment_server::WRITE_KEY),
            ("URL", &url),
            ("BIG_MESSAGE", &big),
            ("BATCH_PART", &part),
        ],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["bad_key"], 401, "{r}");
    assert_eq!(r["message_too_large"], 400, "{r}");
    assert_eq!(r["batch_too_large"], 400, "{r}");
    assert_eq!(r["accepted"], 200, "{r}");
    assert_eq!(server.stored(), 1);
}

#[tokio::test]
async fn segment_refuses_what_segment_refuses() {
    // 33 KB is over Segment's 32 KB per message; 25 × 24 KB over its 500 KB per batch.
    segment_refused(
        "segment",
        SegmentServer::start().await,
        33 * 1024,
        24 * 1024,
    )
    .await;
}

#[tokio::test]
async fn rudderstack_refuses_over_its_4_mb() {
    segment_refused(
        "rudderstack",
        SegmentServer::start_rudderstack().await,
        4 * 1024 * 1024 + 1024,
        170 * 1024,
    )
    .await;
}

const WEBHOOK_SIGN: &str = r#"
import json, os, time, urllib.request, urllib.error
from datetime import datetime, timezone, timedelta
from standardwebhooks.webhooks import Webhook
def post(secret, msg_id, when, body):
    sig = Webhook(secret).sign(msg_id, when, body)
    req = urllib.request.Request(os.environ["URL"], data=body.encode(), method="POST", headers={
        "content-type": "application/json", "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": sig})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
now = datetime.now(tz=timezone.utc)
body = json.dumps({"type": "telemetry.events", "data": {"events": [
    {"id": "evt-1", "name": "signed_up"}, {"id": "evt-2", "name": "paid"}]}})
print(json.dumps({
    "signed": post(os.environ["SECRET"], "msg_1", now, body),
    "redelivered": post(os.environ["SECRET"], "msg_1", now, body),
    "wrong_secret": post(os.environ["WRONG"], "msg_2", now, body),
    "too_old": post(os.environ["SECRET"], "msg_3", now - timedelta(minutes=6), body),
    "too_new": post(os.environ["SECRET"], "msg_4", now + timedelta(minutes=6), body),
}))
"#;

#[tokio::test]
async fn standardwebhooks_signatures_verify_with_our_receiver() {
    let server = WebhookReceiver::start().await;
    let url = server.hook_url();
    let out = python::run(
        WEBHOOK_SIGN,
        &[
            ("URL", &url),
            ("SECRET", webhook_receiver::SECRET),
            ("WRONG", webhook_receiver::WRONG_SECRET),
        ],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["signed"], 200, "{r}");
    assert_eq!(r["redelivered"], 200, "{r}");
    assert_eq!(r["wrong_secret"], 401, "{r}");
    assert_eq!(r["too_old"], 400, "{r}");
    assert_eq!(r["too_new"], 400, "{r}");
    let ids: Vec<String> = server.events().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["evt-1", "evt-2"]);
    assert_eq!(
        server.duplicates(),
        2,
        "the redelivery, deduped by webhook-id"
    );
}

const WEBHOOK_VERIFY: &str = r#"
import json, os
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
cases = json.loads(os.environ["CASES"])
out = []
for c in cases:
    try:
        Webhook(c["secret"]).verify(c["body"], c["headers"])
        out.append("verified")
    except WebhookVerificationError as e:
        out.append("rejected: %s" % e)
print(json.dumps(out))
"#;

/// Our signing helper (the receiver's) agrees with `standardwebhooks` both ways: its
/// signatures verify there, and one with the wrong secret does not.
#[tokio::test]
async fn our_signatures_verify_with_standardwebhooks() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = r#"{"type":"telemetry.events","data":{"events":[{"id":"e1"}]}}"#;
    let case = |secret: &str, signed_with: &str| {
        json!({
            "secret": secret,
            "body": body,
            "headers": {
                "webhook-id": "msg_x",
                "webhook-timestamp": now.to_string(),
                "webhook-signature": webhook_receiver::sign(signed_with, "msg_x", now, body.as_bytes()),
            },
        })
    };
    let cases = json!([
        case(webhook_receiver::SECRET, webhook_receiver::SECRET),
        case(webhook_receiver::SECRET, webhook_receiver::WRONG_SECRET),
    ])
    .to_string();
    let out = python::run(WEBHOOK_VERIFY, &[("CASES", &cases)], LIMIT).await;
    out.success();
    let r = report(&out);
    assert_eq!(r[0], "verified", "{r}");
    assert!(r[1].as_str().unwrap().starts_with("rejected"), "{r}");
}

/// Each delivery checked by `standardwebhooks` with `secret`: "verified" or "rejected: ...".
#[cfg(feature = "webhook")]
async fn verify_with_standardwebhooks(
    deliveries: &[webhook_receiver::Delivery],
    secret: &str,
) -> Vec<String> {
    let cases: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "secret": secret,
                "body": std::str::from_utf8(&d.body).unwrap(),
                "headers": {
                    "webhook-id": d.id,
                    "webhook-timestamp": d.timestamp,
                    "webhook-signature": d.signature,
                },
            })
        })
        .collect();
    let cases = Value::Array(cases).to_string();
    let out = python::run(WEBHOOK_VERIFY, &[("CASES", &cases)], LIMIT).await;
    out.success();
    serde_json::from_value(report(&out)).unwrap()
}

/// Our `webhook` kind's signatures verify with the official `standardwebhooks` library (and
/// with our receiver); with the wrong secret they verify with neither.
#[cfg(feature = "webhook")]
#[tokio::test]
async fn our_webhook_kind_signatures_verify_with_standardwebhooks() {
    use tower_telemetry::{Telemetry, track};
    const N: u64 = 25;
    async fn deliver(server: &WebhookReceiver, secret: &str) -> tower_telemetry::DestinationStats {
        let yaml = format!(
            "telemetry:\n  destinations:\n    hooks:\n      type: webhook\n      url: {}\n      \
             secret: \"{secret}\"\n      batch_size: 10\n      flush_interval: 20ms\n      \
             retry: {{ initial_backoff: 20ms, max_backoff: 100ms }}\n",
            server.hook_url()
        );
        let telemetry = Telemetry::from_yaml_str(&yaml).unwrap();
        for n in 0..N {
            track!(&telemetry => "user.signed_up", n = n);
        }
        assert!(telemetry.flush(Duration::from_secs(20)).await);
        telemetry.stats().destination("hooks").unwrap().clone()
    }

    let right = WebhookReceiver::start().await;
    let d = deliver(&right, webhook_receiver::SECRET).await;
    assert_eq!((d.delivered, d.failed), (N, 0), "{d:?}");
    assert_eq!(right.stored(), N as usize);
    let deliveries = right.deliveries();
    assert!(deliveries.len() >= 3, "batches of 10: {deliveries:?}");
    let verdicts = verify_with_standardwebhooks(&deliveries, webhook_receiver::SECRET).await;
    assert!(verdicts.iter().all(|v| v == "verified"), "{verdicts:?}");
    let verdicts = verify_with_standardwebhooks(&deliveries, webhook_receiver::WRONG_SECRET).await;
    assert!(
        verdicts.iter().all(|v| v.starts_with("rejected")),
        "{verdicts:?}"
    );

    // Signed with the wrong secret: our receiver refuses (401, never retried), and so does
    // standardwebhooks.
    let wrong = WebhookReceiver::start().await;
    let d = deliver(&wrong, webhook_receiver::WRONG_SECRET).await;
    assert_eq!((d.delivered, d.failed, d.retries), (0, N, 0), "{d:?}");
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered
    );
    assert_eq!(wrong.stored(), 0);
    let verdicts =
        verify_with_standardwebhooks(&wrong.deliveries(), webhook_receiver::SECRET).await;
    assert!(!verdicts.is_empty());
    assert!(
        verdicts.iter().all(|v| v.starts_with("rejected")),
        "{verdicts:?}"
    );
}

/// Every stored event, by the vendor's id.
#[cfg(any(feature = "posthog", feature = "segment"))]
fn stored_by_id<V: Vendor>(server: &ContractServer<V>) -> HashMap<String, Value> {
    server
        .events()
        .into_iter()
        .map(|e| (e.id, e.item))
        .collect()
}

/// Asserts that `ours` and `theirs` hold the same value at each JSON pointer (and that the
/// SDK's is there at all, so a pointer into nothing cannot pass).
#[cfg(any(feature = "posthog", feature = "segment"))]
fn assert_same_at(what: &str, ours: &Value, theirs: &Value, pointers: &[&str]) {
    for p in pointers {
        let t = theirs
            .pointer(p)
            .unwrap_or_else(|| panic!("{what}: the SDK sent nothing at {p}: {theirs:#}"));
        assert_eq!(ours.pointer(p), Some(t), "{what} at {p}: ours {ours:#}");
    }
}

/// Our identity operations, as `Telemetry::identify_with` / `alias` / `group` make them (see
/// `tower_telemetry::identity`), for the user `user_42` of a request whose session was
/// `sess_1`; the last one a tracked event in the groups `company: acme` and `team: ml`.
#[cfg(any(feature = "posthog", feature = "segment"))]
fn our_identity_events() -> Vec<std::sync::Arc<tower_telemetry::Event>> {
    use tower_telemetry::{Context, Event, EventKind, Properties, identity};
    let ctx = Context::new()
        .with_user_id("user_42")
        .with_session_id("sess_1")
        .with_request_id("req_1");
    let mut traits = Properties::new();
    traits.insert("plan", "pro");
    traits.insert("seats", 3);
    traits.insert_json(identity::SET_ONCE, json!({"first_plan": "free"}));
    traits.insert(identity::ANON_DISTINCT_ID, "sess_1");
    let identify = Event::new(identity::IDENTIFY, traits)
        .with_kind(EventKind::Identify)
        .with_context(ctx.clone());
    let mut previous = Properties::new();
    previous.insert(identity::PREVIOUS_ID, "legacy_7");
    let alias = Event::new(identity::ALIAS, previous)
        .with_kind(EventKind::Alias)
        .with_context(ctx.clone());
    let in_groups = ctx.with_group("team", "ml").with_group("company", "acme");
    let mut group = Properties::new();
    group.insert(identity::GROUP_TYPE, "company");
    group.insert(identity::GROUP_KEY, "acme");
    group.insert("seats", 12);
    group.insert("name", "Acme");
    let group = Event::new(identity::GROUP, group)
        .with_kind(EventKind::Group)
        .with_context(in_groups.clone());
    let mut paid = Properties::new();
    paid.insert("plan", "pro");
    let paid = Event::new("paid", paid).with_context(in_groups);
    [identify, alias, group, paid]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect()
}

/// The same operations through posthog-python. It has no `identify()` since 7.0: an
/// `$identify` goes through `capture()` shaped as PostHog's capture API documents it, and
/// `set()` / `set_once()` are its person calls (with `$set` / `$set_once` at the top level).
#[cfg(feature = "posthog")]
const POSTHOG_IDENTITY: &str = r#"
import json, os, uuid
from posthog import Posthog
errors = []
ph = Posthog(os.environ["KEY"], host=os.environ["URL"], max_retries=0, flush_at=10,
             on_error=lambda e, batch: errors.append(repr(e)), enable_local_evaluation=False)
ids = {k: str(uuid.uuid4()) for k in ["identify", "set", "set_once", "alias", "group", "paid"]}
ph.capture("$identify", distinct_id="user_42", uuid=ids["identify"], properties={
    "$set": {"plan": "pro", "seats": 3}, "$set_once": {"first_plan": "free"},
    "$anon_distinct_id": "sess_1"})
ph.set(distinct_id="user_42", properties={"plan": "pro"}, uuid=ids["set"])
ph.set_once(distinct_id="user_42", properties={"first_plan": "free"}, uuid=ids["set_once"])
ph.alias(previous_id="legacy_7", distinct_id="user_42", uuid=ids["alias"])
ph.group_identify("company", "acme", {"seats": 12, "name": "Acme"}, distinct_id="user_42",
                  uuid=ids["group"])
ph.capture("paid", distinct_id="user_42", properties={"plan": "pro"},
           groups={"company": "acme", "team": "ml"}, uuid=ids["paid"])
ph.flush()
ph.shutdown()
print(json.dumps({"ids": ids, "errors": errors}))
"#;

/// posthog-python's identity calls are stored as sent; ours for the same operations are stored
/// too, with the same event names, distinct ids and person / group properties.
#[cfg(feature = "posthog")]
#[tokio::test]
async fn posthog_sdk_identity_calls_are_stored_and_ours_mean_the_same() {
    use tower_telemetry::destination::Destination;
    use tower_telemetry::destination::posthog::{PostHogConfig, PostHogDestination};

    let server = PostHogServer::start().await;
    let url = server.url();
    let out = python::run(
        POSTHOG_IDENTITY,
        &[("KEY", posthog_server::API_KEY), ("URL", &url)],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["errors"], json!([]), "{}", out.stderr);
    let stored = stored_by_id(&server);
    assert_eq!(stored.len(), 6, "{stored:#?}");
    assert_eq!((server.duplicates(), server.discarded()), (0, 0));
    let sdk = |op: &str| stored[r["ids"][op].as_str().unwrap()].clone();
    // Stored as sent: what each call puts where.
    let identify = sdk("identify");
    assert_eq!(identify["event"], "$identify");
    assert_eq!(identify["distinct_id"], "user_42");
    assert_eq!(
        identify["properties"]["$set"],
        json!({"plan": "pro", "seats": 3})
    );
    assert_eq!(identify["properties"]["$anon_distinct_id"], "sess_1");
    assert_eq!(sdk("set")["$set"], json!({"plan": "pro"}));
    assert_eq!(sdk("set_once")["$set_once"], json!({"first_plan": "free"}));
    let alias = sdk("alias");
    assert_eq!(alias["event"], "$create_alias");
    assert_eq!(alias["distinct_id"], "legacy_7");
    assert_eq!(
        (
            &alias["properties"]["distinct_id"],
            &alias["properties"]["alias"]
        ),
        (&json!("legacy_7"), &json!("user_42"))
    );
    let group = sdk("group");
    assert_eq!(group["event"], "$groupidentify");
    assert_eq!(
        group["properties"]["$group_set"],
        json!({"seats": 12, "name": "Acme"})
    );
    let paid = sdk("paid");
    assert_eq!(
        paid["properties"]["$groups"],
        json!({"company": "acme", "team": "ml"})
    );
    for op in ["identify", "alias", "group"] {
        assert!(
            sdk(op)["properties"]
                .get("$process_person_profile")
                .is_none()
        );
    }

    // Ours, through the posthog kind, into a server of their own.
    let ours_server = PostHogServer::start().await;
    let d = PostHogDestination::new(
        PostHogConfig::new(posthog_server::API_KEY).with_host(ours_server.url()),
    )
    .unwrap();
    let events = our_identity_events();
    d.send(&events).await.unwrap();
    let ours = stored_by_id(&ours_server);
    assert_eq!(ours.len(), events.len(), "{ours:#?}");
    assert_eq!((ours_server.duplicates(), ours_server.discarded()), (0, 0));
    let ours = |i: usize| ours[&events[i].id().to_string()].clone();
    assert_same_at(
        "identify",
        &ours(0),
        &identify,
        &[
            "/event",
            "/distinct_id",
            "/properties/$set",
            "/properties/$set_once",
            "/properties/$anon_distinct_id",
        ],
    );
    assert_same_at(
        "alias",
        &ours(1),
        &alias,
        &[
            "/event",
            "/distinct_id",
            "/properties/distinct_id",
            "/properties/alias",
        ],
    );
    assert_same_at(
        "group",
        &ours(2),
        &group,
        &[
            "/event",
            "/distinct_id",
            "/properties/$group_type",
            "/properties/$group_key",
            "/properties/$group_set",
        ],
    );
    assert_same_at(
        "paid",
        &ours(3),
        &paid,
        &[
            "/event",
            "/distinct_id",
            "/properties/plan",
            "/properties/$groups",
        ],
    );
    for i in 0..3 {
        let p = &ours(i)["properties"];
        assert!(p.get("$process_person_profile").is_none(), "{p:#}");
    }
}

/// The same operations through segment-analytics-python or rudder-sdk-python.
#[cfg(feature = "segment")]
const SEGMENT_IDENTITY: &str = r#"
import json, os, uuid
if os.environ["SDK"] == "segment":
    from segment.analytics import Client
else:
    from rudderstack.analytics import Client
errors = []
c = Client(os.environ["KEY"], host=os.environ["URL"], max_retries=0, gzip=False,
           on_error=lambda e, batch: errors.append(repr(e)))
ids = {k: str(uuid.uuid4()) for k in ["identify", "alias", "group", "paid"]}
c.identify(user_id="user_42", anonymous_id="sess_1", message_id=ids["identify"],
           traits={"first_plan": "free", "plan": "pro", "seats": 3})
c.alias(previous_id="legacy_7", user_id="user_42", message_id=ids["alias"])
c.group(user_id="user_42", group_id="acme", message_id=ids["group"],
        traits={"seats": 12, "name": "Acme", "group_type": "company"})
c.track(user_id="user_42", event="paid", properties={"plan": "pro"},
        context={"groupId": "acme"}, message_id=ids["paid"])
c.flush()
c.join()
print(json.dumps({"ids": ids, "errors": errors}))
"#;

/// The SDK's identify, alias and group calls are stored as sent; ours for the same
/// operations, through the `segment` kind of the same flavor, are stored with the same
/// meaning, field by field.
#[cfg(feature = "segment")]
async fn segment_sdk_identity(sdk: &str) {
    use tower_telemetry::destination::Destination;
    use tower_telemetry::destination::segment::{SegmentConfig, SegmentDestination, SegmentFlavor};

    let rudderstack = sdk == "rudderstack";
    let start = || async {
        if rudderstack {
            SegmentServer::start_rudderstack().await
        } else {
            SegmentServer::start().await
        }
    };
    let server = start().await;
    let url = server.url();
    let out = python::run(
        SEGMENT_IDENTITY,
        &[
            ("SDK", sdk),
            ("KEY", segment_server::WRITE_KEY),
            ("URL", &url),
        ],
        LIMIT,
    )
    .await;
    out.success();
    let r = report(&out);
    assert_eq!(r["errors"], json!([]), "{}", out.stderr);
    let stored = stored_by_id(&server);
    assert_eq!(stored.len(), 4, "{stored:#?}");
    assert_eq!((server.duplicates(), server.discarded()), (0, 0));
    let sdk_msg = |op: &str| stored[r["ids"][op].as_str().unwrap()].clone();
    // Stored as sent. rudder-sdk-python puts the identify traits in context.traits only.
    let traits_at = if rudderstack {
        "/context/traits"
    } else {
        "/traits"
    };
    let identify = sdk_msg("identify");
    assert_eq!(identify["type"], "identify");
    assert_eq!(
        (&identify["userId"], &identify["anonymousId"]),
        (&json!("user_42"), &json!("sess_1"))
    );
    assert_eq!(
        identify.pointer(traits_at),
        Some(&json!({"first_plan": "free", "plan": "pro", "seats": 3}))
    );
    let alias = sdk_msg("alias");
    assert_eq!(
        (&alias["type"], &alias["previousId"], &alias["userId"]),
        (&json!("alias"), &json!("legacy_7"), &json!("user_42"))
    );
    let group = sdk_msg("group");
    assert_eq!(
        (&group["type"], &group["groupId"]),
        (&json!("group"), &json!("acme"))
    );
    assert_eq!(group["traits"]["group_type"], "company");
    let paid = sdk_msg("paid");
    assert_eq!(paid["context"]["groupId"], "acme");
    assert_eq!(server.messages_of_type("identify").len(), 1);

    // Ours.
    let flavor = if rudderstack {
        SegmentFlavor::RudderStack
    } else {
        SegmentFlavor::Segment
    };
    let ours_server = start().await;
    let d = SegmentDestination::new(
        SegmentConfig::new(segment_server::WRITE_KEY)
            .with_flavor(flavor)
            .with_url(ours_server.url()),
    )
    .unwrap();
    let events = our_identity_events();
    d.send(&events).await.unwrap();
    let ours = stored_by_id(&ours_server);
    assert_eq!(ours.len(), events.len(), "{ours:#?}");
    assert_eq!((ours_server.duplicates(), ours_server.discarded()), (0, 0));
    let ours = |i: usize| ours[&events[i].id().to_string()].clone();
    assert_same_at(
        "identify",
        &ours(0),
        &identify,
        &["/type", "/userId", "/anonymousId", traits_at],
    );
    assert_same_at(
        "alias",
        &ours(1),
        &alias,
        &["/type", "/previousId", "/userId"],
    );
    assert_same_at(
        "group",
        &ours(2),
        &group,
        &["/type", "/groupId", "/userId", "/traits"],
    );
    assert_same_at(
        "track",
        &ours(3),
        &paid,
        &[
            "/type",
            "/event",
            "/userId",
            "/properties",
            "/context/groupId",
        ],
    );
    assert!(ours(1).get("anonymousId").is_none());
}

#[cfg(feature = "segment")]
#[tokio::test]
async fn segment_sdk_identity_calls_are_stored_and_ours_mean_the_same() {
    segment_sdk_identity("segment").await;
}

#[cfg(feature = "segment")]
#[tokio::test]
async fn rudderstack_sdk_identity_calls_are_stored_and_ours_mean_the_same() {
    segment_sdk_identity("rudderstack").await;
}
