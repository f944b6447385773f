//! The contract servers of `tests/support` (issue #22) hold their vendors' contracts, checked
//! here with hand-made requests (the official SDKs' view is `tests/sdk_crosscheck.rs`): the
//! shapes and limits each refuses, gzip, dedupe by id, and the scriptable faults every
//! server shares.

mod support;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use support::faults::{Fault, is_rfc3339};
use support::posthog_server::{self, PostHogServer};
use support::segment_server::{self, SegmentServer};
use support::webhook_receiver::{self, WebhookReceiver};

type C = Client<HttpConnector, Full<Bytes>>;

fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post(c: &C, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (Response<()>, Value) {
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = c
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, ()),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn ph_event(uuid: &str) -> Value {
    json!({
        "event": "e", "distinct_id": "u1", "properties": {"a": 1},
        "timestamp": "2026-12-05T15:18:43.123Z", "uuid": uuid,
    })
}

const U1: &str = "0192f9c4-7d1e-7a3b-9c2d-1e2f3a4b5c6d";
const U2: &str = "0192f9c4-7d1e-7a3b-9c2d-1e2f3a4b5c6e";

#[tokio::test]
async fn posthog_contract() {
    let s = PostHogServer::start().await;
    let c = client();
    let url = s.url() + "/batch/";
    let body = |batch: Value| {
        json!({"api_key": posthog_server::API_KEY, "historical_migration": false, "batch": batch})
            .to_string()
            .into_bytes()
    };
    // Stored, gzip decoded, deduped by uuid.
    let (r, _) = post(&c, &url, &[], body(json!([ph_event(U1)]))).await;
    assert_eq!(r.status(), 200);
    let (r, _) = post(
        &c,
        &url,
        &[("content-encoding", "gzip")],
        gzip(&body(json!([ph_event(U1), ph_event(U2)]))),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!((s.stored(), s.duplicates()), (2, 1));
    // A wrong key.
    let wrong = json!({"api_key": "phc_nope", "batch": [ph_event(U1)]}).to_string();
    let (r, b) = post(&c, &url, &[], wrong.into_bytes()).await;
    assert_eq!(
        (r.status().as_u16(), b["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    // Shapes: each of these refuses the whole request.
    let mut bad_ts = ph_event(U1);
    bad_ts["timestamp"] = json!("05/12/2026 15:18");
    let mut bad_uuid = ph_event(U1);
    bad_uuid["uuid"] = json!("not-a-uuid");
    let mut no_distinct = ph_event(U1);
    no_distinct.as_object_mut().unwrap().remove("distinct_id");
    for batch in [
        json!([bad_ts]),
        json!([bad_uuid]),
        json!([no_distinct]),
        json!([]),
    ] {
        let (r, _) = post(&c, &url, &[], body(batch.clone())).await;
        assert_eq!(r.status(), 400, "{batch}");
    }
    let (r, _) = post(&c, &url, &[], b"{not json".to_vec()).await;
    assert_eq!(r.status(), 400);
    // Over 1 MB: that event alone is discarded.
    let mut big = ph_event("0192f9c4-7d1e-7a3b-9c2d-1e2f3a4b5c6f");
    big["properties"]["blob"] = json!("x".repeat(posthog_server::MAX_EVENT));
    let (r, _) = post(&c, &url, &[], body(json!([big]))).await;
    assert_eq!(r.status(), 200);
    assert_eq!((s.stored(), s.discarded()), (2, 1));
    // Over 20 MB: 413, as sent or gunzipped.
    let huge = vec![b' '; posthog_server::MAX_REQUEST + 1];
    assert_eq!(post(&c, &url, &[], huge.clone()).await.0.status(), 413);
    let (r, _) = post(&c, &url, &[("content-encoding", "gzip")], gzip(&huge)).await;
    assert_eq!(r.status(), 413);
    // The single-event endpoint.
    let mut single = ph_event("0192f9c4-7d1e-7a3b-9c2d-1e2f3a4b5c70");
    single["api_key"] = json!(posthog_server::API_KEY);
    let (r, _) = post(
        &c,
        &(s.url() + "/i/v0/e/"),
        &[],
        single.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.stored(), 3);
}

/// PostHog's person and group events: stored when ingestion can apply them, else answered
/// 200 and discarded one by one.
#[tokio::test]
async fn posthog_identity_contract() {
    let s = PostHogServer::start().await;
    let c = client();
    let url = s.url() + "/batch/";
    let mut n = 0;
    let mut ev = |event: &str, distinct_id: &str, properties: Value| {
        n += 1;
        json!({"event": event, "distinct_id": distinct_id, "properties": properties,
               "timestamp": "2026-12-05T15:18:43.123Z",
               "uuid": format!("0192f9c4-7d1e-7a3b-9c2d-{n:012x}")})
    };
    let good = [
        ev(
            "$identify",
            "user_42",
            json!({"$set": {"plan": "pro"}, "$set_once": {"first": "free"}, "$anon_distinct_id": "sess_1"}),
        ),
        ev(
            "$create_alias",
            "legacy_7",
            json!({"distinct_id": "legacy_7", "alias": "user_42"}),
        ),
        ev(
            "$groupidentify",
            "user_42",
            json!({"$group_type": "company", "$group_key": "acme", "$group_set": {"seats": 12}}),
        ),
        ev(
            "paid",
            "user_42",
            json!({"$groups": {"company": "acme", "team": 7}}),
        ),
    ];
    let mut set = ev("$set", "user_42", json!({}));
    set["$set"] = json!({"plan": "pro"});
    let bad = [
        ev("$identify", "null", json!({"$set": {}})),
        ev(
            "$identify",
            "user_42",
            json!({"$anon_distinct_id": "Anonymous"}),
        ),
        ev(
            "$identify",
            "user_42",
            json!({"$anon_distinct_id": "'undefined'"}),
        ),
        ev("$identify", "user_42", json!({"$set": ["plan"]})),
        ev(
            "$create_alias",
            "legacy_7",
            json!({"distinct_id": "legacy_7"}),
        ),
        ev("$create_alias", "legacy_7", json!({"alias": "0"})),
        ev("$groupidentify", "user_42", json!({"$group_key": "acme"})),
        ev(
            "$groupidentify",
            "user_42",
            json!({"$group_type": "company", "$group_key": "acme", "$group_set": "x"}),
        ),
        ev("$set", "user_42", json!({})),
        ev("paid", "user_42", json!({"$groups": ["acme"]})),
        ev(
            "paid",
            "user_42",
            json!({"$groups": {"company": {"id": 1}}}),
        ),
    ];
    let mut batch: Vec<Value> = good.to_vec();
    batch.push(set.clone());
    batch.extend(bad.iter().cloned());
    let body = json!({"api_key": posthog_server::API_KEY, "batch": batch}).to_string();
    let (r, _) = post(&c, &url, &[], body.into_bytes()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        (s.stored(), s.discarded()),
        (good.len() + 1, bad.len() as u64)
    );
    let identify = s.events_named("$identify");
    assert_eq!(identify.len(), 1);
    assert_eq!(identify[0].item, good[0], "stored as sent");
    assert_eq!(s.events_named("$create_alias")[0].item, good[1]);
    assert_eq!(s.events_named("$groupidentify")[0].item, good[2]);
    assert_eq!(s.events_named("$set")[0].item, set);
    // Ingestion's refusal is per event; a missing distinct_id still refuses the request.
    let mut no_distinct = ev("$identify", "u", json!({}));
    no_distinct.as_object_mut().unwrap().remove("distinct_id");
    let body = json!({"api_key": posthog_server::API_KEY, "batch": [no_distinct]}).to_string();
    assert_eq!(post(&c, &url, &[], body.into_bytes()).await.0.status(), 400);
}

fn basic(user: &str, password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b}")
}

#[tokio::test]
async fn segment_contract() {
    let s = SegmentServer::start().await;
    let c = client();
    let url = s.url() + "/v1/batch";
    let msg = |id: &str| {
        json!({"type": "track", "event": "e", "userId": "u1", "messageId": id,
               "properties": {"a": 1}, "context": {"locale": "en-US"},
               "timestamp": "2026-12-05T15:18:43+01:00"})
    };
    let body = |batch: Value| {
        json!({"batch": batch, "sentAt": "2026-12-05T15:18:44Z"})
            .to_string()
            .into_bytes()
    };
    let auth = basic(segment_server::WRITE_KEY, "");
    let (r, b) = post(
        &c,
        &url,
        &[("authorization", &auth)],
        body(json!([msg("m1"), msg("m1"), msg("m2")])),
    )
    .await;
    assert_eq!((r.status().as_u16(), &b), (200, &json!({"success": true})));
    assert_eq!((s.stored(), s.duplicates()), (2, 1));
    // Auth: a password, a wrong key, no auth at all → 401.
    for a in [
        basic(segment_server::WRITE_KEY, "x"),
        basic("nope", ""),
        "Bearer x".into(),
    ] {
        let (r, _) = post(&c, &url, &[("authorization", &a)], body(json!([msg("m3")]))).await;
        assert_eq!(r.status(), 401, "{a}");
    }
    assert_eq!(
        post(&c, &url, &[], body(json!([msg("m3")])))
            .await
            .0
            .status(),
        401
    );
    // Without the header, the body's writeKey.
    let mut with_key: Value = serde_json::from_slice(&body(json!([msg("m3")]))).unwrap();
    with_key["writeKey"] = json!(segment_server::WRITE_KEY);
    let (r, _) = post(
        &c,
        &url,
        &[("content-encoding", "gzip")],
        gzip(with_key.to_string().as_bytes()),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.stored(), 3);
    // What Segment would not take is answered 200 and dropped.
    let mut anonymous = msg("m4");
    anonymous.as_object_mut().unwrap().remove("userId");
    let mut unnamed = msg("m5");
    unnamed.as_object_mut().unwrap().remove("event");
    let (r, _) = post(
        &c,
        &url,
        &[("authorization", &auth)],
        body(json!([anonymous, unnamed])),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!((s.stored(), s.discarded()), (3, 2));
    // 32 KB per message, 500 KB per batch.
    let mut big = msg("m6");
    big["properties"]["blob"] = json!("x".repeat(segment_server::SEGMENT_MAX_MESSAGE));
    let (r, _) = post(&c, &url, &[("authorization", &auth)], body(json!([big]))).await;
    assert_eq!(r.status(), 400);
    let parts: Vec<Value> = (0..20)
        .map(|i| {
            let mut m = msg(&format!("p{i}"));
            m["properties"]["blob"] = json!("x".repeat(30 * 1024));
            m
        })
        .collect();
    let (r, _) = post(&c, &url, &[("authorization", &auth)], body(json!(parts))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(s.stored(), 3);
    // RudderStack takes both.
    let rs = SegmentServer::start_rudderstack().await;
    let (r, _) = post(
        &c,
        &(rs.url() + "/v1/batch"),
        &[("authorization", &auth)],
        body(json!(parts)),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(rs.stored(), 20);
}

/// Segment's identify, alias and group calls: stored when they have what the spec requires,
/// else answered 200 and dropped.
#[tokio::test]
async fn segment_identity_contract() {
    let s = SegmentServer::start().await;
    let c = client();
    let url = s.url() + "/v1/batch";
    let auth = basic(segment_server::WRITE_KEY, "");
    let mut n = 0;
    let mut msg = |fields: Value| {
        n += 1;
        let mut m = json!({"messageId": format!("id{n}"), "context": {"library": {"name": "t"}},
                           "timestamp": "2026-12-05T15:18:43.123Z"});
        m.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        m
    };
    let good = [
        msg(json!({"type": "identify", "userId": "user_42", "traits": {"plan": "pro"}})),
        msg(json!({"type": "identify", "anonymousId": "sess_1", "traits": {}})),
        msg(
            json!({"type": "identify", "userId": "user_42", "anonymousId": "sess_1",
                   "context": {"traits": {"plan": "pro"}}}),
        ),
        msg(json!({"type": "alias", "previousId": "legacy_7", "userId": "user_42"})),
        msg(
            json!({"type": "group", "groupId": "acme", "userId": "user_42",
                   "traits": {"group_type": "company"}}),
        ),
        msg(json!({"type": "group", "groupId": 7, "anonymousId": "sess_1"})),
        msg(
            json!({"type": "track", "event": "paid", "userId": "user_42",
                   "context": {"groupId": "acme"}}),
        ),
    ];
    let bad = [
        msg(json!({"type": "identify", "traits": {"plan": "pro"}})),
        msg(json!({"type": "identify", "userId": "u", "traits": ["plan"]})),
        msg(json!({"type": "identify", "userId": "u", "context": {"traits": "pro"}})),
        msg(json!({"type": "alias", "userId": "user_42"})),
        msg(json!({"type": "alias", "previousId": "legacy_7", "anonymousId": "sess_1"})),
        msg(json!({"type": "group", "userId": "user_42", "traits": {}})),
        msg(json!({"type": "group", "groupId": "", "userId": "user_42"})),
        msg(json!({"type": "group", "groupId": "acme"})),
        msg(json!({"type": "group", "groupId": "acme", "userId": "u", "traits": "x"})),
    ];
    let batch: Vec<Value> = good.iter().chain(bad.iter()).cloned().collect();
    let body = json!({"batch": batch, "sentAt": "2026-12-05T15:18:44Z"}).to_string();
    let (r, b) = post(&c, &url, &[("authorization", &auth)], body.into_bytes()).await;
    assert_eq!((r.status().as_u16(), &b), (200, &json!({"success": true})));
    assert_eq!((s.stored(), s.discarded()), (good.len(), bad.len() as u64));
    let identify = s.messages_of_type("identify");
    assert_eq!(identify.len(), 3);
    assert_eq!(identify[0].item, good[0], "stored as sent");
    assert_eq!(s.messages_of_type("alias")[0].item, good[3]);
    let groups = s.messages_of_type("group");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].item, good[4]);
    assert_eq!(s.messages_of_type("track")[0].item, good[6]);
}

#[tokio::test]
async fn webhook_contract() {
    let s = WebhookReceiver::start().await;
    let c = client();
    let url = s.hook_url();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = br#"{"type":"telemetry.events","data":{"events":[{"id":"e1"},{"id":"e2"}]}}"#;
    let signed = |secret: &str, id: &str, ts: i64| {
        (
            id.to_owned(),
            ts.to_string(),
            webhook_receiver::sign(secret, id, ts, body),
        )
    };
    let send = |(id, ts, sig): (String, String, String)| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let h = [
                ("webhook-id", id.as_str()),
                ("webhook-timestamp", ts.as_str()),
                ("webhook-signature", sig.as_str()),
            ];
            post(&c, &url, &h, body.to_vec()).await.0.status().as_u16()
        }
    };
    assert_eq!(
        send(signed(webhook_receiver::SECRET, "msg_1", now)).await,
        200
    );
    assert_eq!(
        send(signed(webhook_receiver::SECRET, "msg_1", now)).await,
        200
    );
    assert_eq!((s.stored(), s.duplicates()), (2, 2));
    // Several signatures: one matching is enough.
    let (id, ts, sig) = signed(webhook_receiver::SECRET, "msg_2", now);
    let other = webhook_receiver::sign(webhook_receiver::WRONG_SECRET, "msg_2", now, body);
    assert_eq!(send((id, ts, format!("{other} {sig}"))).await, 200);
    assert_eq!(
        send(signed(webhook_receiver::WRONG_SECRET, "msg_3", now)).await,
        401
    );
    assert_eq!(
        send(signed(webhook_receiver::SECRET, "msg_4", now - 301)).await,
        400
    );
    assert_eq!(
        send(signed(webhook_receiver::SECRET, "msg_5", now + 301)).await,
        400
    );
    assert_eq!(
        send(signed(webhook_receiver::SECRET, "msg_6", now - 290)).await,
        200
    );
    let (r, _) = post(&c, &url, &[], body.to_vec()).await;
    assert_eq!(r.status(), 400, "no headers");
    // The signature covers the body: a changed body fails.
    let (id, ts, sig) = signed(webhook_receiver::SECRET, "msg_7", now);
    let h = [
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let (r, _) = post(&c, &url, &h, br#"{"data":{"events":[]}}"#.to_vec()).await;
    assert_eq!(r.status(), 401);
}

/// The fault machinery every server shares (shown on PostHog's).
#[tokio::test]
async fn faults_answer_hang_store_then_hang_and_refuse() {
    let s = PostHogServer::start().await;
    let c = client();
    let url = s.url() + "/batch/";
    let body = |u: &str| {
        json!({"api_key": posthog_server::API_KEY, "batch": [ph_event(u)]})
            .to_string()
            .into_bytes()
    };
    // A status with headers, nothing stored; the request logged with its event.
    s.push_faults(1, Fault::status(503).header("retry-after", "7"));
    let (r, _) = post(&c, &url, &[], body(U1)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(s.stored(), 0);
    assert_eq!(s.requests()[0].items, 1);
    // Store, then never answer: the client gives up; the event is stored.
    s.push_faults(1, Fault::StoreThenHang);
    let hung =
        tokio::time::timeout(Duration::from_millis(300), post(&c, &url, &[], body(U1))).await;
    assert!(hung.is_err());
    assert_eq!((s.stored(), s.hung()), (1, 1));
    // A hang stores nothing.
    s.push_faults(1, Fault::Hang);
    let hung =
        tokio::time::timeout(Duration::from_millis(300), post(&c, &url, &[], body(U2))).await;
    assert!(hung.is_err());
    assert_eq!((s.stored(), s.hung()), (1, 2));
    // The resend of what was stored: a duplicate.
    assert_eq!(post(&c, &url, &[], body(U1)).await.0.status(), 200);
    assert_eq!((s.stored(), s.duplicates()), (1, 1));
    // Refused, then listening again on the same port, the store kept.
    s.refuse().await;
    let req = Request::post(&url)
        .body(Full::new(Bytes::from(body(U2))))
        .unwrap();
    assert!(c.request(req).await.is_err());
    s.listen().await;
    assert_eq!(post(&c, &url, &[], body(U2)).await.0.status(), 200);
    assert_eq!(s.stored(), 2);
    // A script.
    s.script(|n| {
        if n % 2 == 0 {
            Fault::status(500)
        } else {
            Fault::Serve
        }
    });
    let mut codes = Vec::new();
    for u in [U1, U2, U1, U2] {
        codes.push(post(&c, &url, &[], body(u)).await.0.status().as_u16());
    }
    assert_eq!(codes, [500, 200, 500, 200]);
}

#[test]
fn rfc3339_is_checked() {
    for ok in [
        "2026-12-05T15:18:43Z",
        "2026-12-05T15:18:43.123456+00:00",
        "2026-12-05T15:18:43-07:30",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2026-12-05",
        "2026-12-05T15:18:43",
        "2026-13-05T15:18:43Z",
        "1733411923",
        "2026-12-05T15:18:43.Z",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}
