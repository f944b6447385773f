use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::config::Config;
use crate::{Context, Properties, identity};

fn event(ctx: Context) -> Event {
    let mut props = Properties::new();
    props.insert_json("plan", "pro".into());
    Event::new("payment.completed", props)
        .with_context(ctx)
        .with_timestamp(UNIX_EPOCH + Duration::from_millis(1_764_000_000_123))
}

fn full_context() -> Context {
    Context::new()
        .with_user_id("user_42")
        .with_session_id("sess_1")
        .with_hostname("app.example.com")
        .with_path("/checkout")
        .with_query("token=secret")
        .with_user_agent("Mozilla/5.0 (X11)")
        .with_language("de-CH,de;q=0.9")
        .with_referrer("https://news.example.org/")
        .with_client_ip("203.0.113.7")
}

#[test]
fn an_event_maps_to_a_track_message() {
    let e = event(full_context());
    let m = message(&e, &Forward::default(), SegmentFlavor::Segment);
    assert_eq!(m["type"], "track");
    assert_eq!(m["event"], "payment.completed");
    assert_eq!(m["userId"], "user_42");
    assert!(m.get("anonymousId").is_none());
    assert_eq!(m["messageId"], e.id().to_string());
    assert_eq!(m["timestamp"], "2025-11-24T16:00:00.123Z");
    assert_eq!(m["properties"]["plan"], "pro");
    let c = &m["context"];
    assert_eq!(c["library"]["name"], "tower-telemetry");
    assert_eq!(c["library"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(c["userAgent"], "Mozilla/5.0 (X11)");
    assert_eq!(c["locale"], "de-CH");
    assert_eq!(c["page"]["path"], "/checkout");
    assert_eq!(c["page"]["url"], "https://app.example.com/checkout");
    assert_eq!(c["page"]["referrer"], "https://news.example.org/");
    assert!(c.get("ip").is_none(), "no IP unless forward.ip");
    assert!(!m.to_string().contains("token=secret"));
    assert_eq!(
        message(&e, &Forward::default(), SegmentFlavor::Segment),
        m,
        "stable across retries"
    );

    let m = message(
        &e,
        &Forward::default().with_ip(true).with_referrer(false),
        SegmentFlavor::Segment,
    );
    assert_eq!(m["context"]["ip"], "203.0.113.7");
    assert!(m["context"]["page"].get("referrer").is_none());
}

#[test]
fn events_without_a_user_carry_an_anonymous_id() {
    let m = message(
        &event(Context::new().with_session_id("s")),
        &Forward::default(),
        SegmentFlavor::Segment,
    );
    assert_eq!(m["anonymousId"], "s");
    assert!(m.get("userId").is_none());
    let e = event(Context::new());
    let m = message(&e, &Forward::default(), SegmentFlavor::Segment);
    assert_eq!(m["anonymousId"], e.id().to_string());
}

fn segment(e: &Event) -> Value {
    message(e, &Forward::default(), SegmentFlavor::Segment)
}

fn identify(ctx: Context, traits: Properties) -> Event {
    Event::new(identity::IDENTIFY, traits)
        .with_kind(EventKind::Identify)
        .with_context(ctx)
        .with_timestamp(UNIX_EPOCH + Duration::from_millis(1_764_000_000_123))
}

#[test]
fn an_identify_links_the_anonymous_id_and_merges_the_traits() {
    let mut props = Properties::new();
    props.insert("plan", "pro");
    props.insert_json(
        identity::SET_ONCE,
        serde_json::json!({"first_plan": "free", "plan": "trial"}),
    );
    props.insert(identity::ANON_DISTINCT_ID, "sess_1");
    let e = identify(full_context(), props);
    let m = segment(&e);
    assert_eq!(m["type"], "identify");
    assert_eq!(m["userId"], "user_42");
    assert_eq!(m["anonymousId"], "sess_1");
    // Set-once first, the traits win.
    assert_eq!(
        m["traits"],
        serde_json::json!({"first_plan": "free", "plan": "pro"})
    );
    assert_eq!(m["messageId"], e.id().to_string());
    assert_eq!(m["timestamp"], "2025-11-24T16:00:00.123Z");
    assert_eq!(m["context"]["library"]["name"], "tower-telemetry");
    assert_eq!(m["context"]["page"]["path"], "/checkout");
    for key in ["event", "properties"] {
        assert!(m.get(key).is_none(), "{key}");
    }
    assert!(
        m["context"].get("traits").is_none(),
        "Segment: root traits only"
    );

    // RudderStack's SDK puts them in context.traits: there too.
    let r = message(&e, &Forward::default(), SegmentFlavor::RudderStack);
    assert_eq!(r["context"]["traits"], m["traits"]);
    assert_eq!(r["traits"], m["traits"]);

    // Without an anonymous id: the user alone.
    let m = segment(&identify(
        Context::new().with_user_id("u"),
        Properties::new(),
    ));
    assert_eq!(m["userId"], "u");
    assert!(m.get("anonymousId").is_none());
    assert_eq!(m["traits"], serde_json::json!({}));
}

#[test]
fn an_alias_names_the_previous_id_and_the_user() {
    let mut props = Properties::new();
    props.insert(identity::PREVIOUS_ID, "legacy_7");
    let e = Event::new(identity::ALIAS, props)
        .with_kind(EventKind::Alias)
        .with_context(full_context());
    let m = segment(&e);
    assert_eq!(m["type"], "alias");
    assert_eq!(m["previousId"], "legacy_7");
    assert_eq!(m["userId"], "user_42");
    for key in ["anonymousId", "traits", "properties", "event"] {
        assert!(m.get(key).is_none(), "{key}");
    }
}

#[test]
fn a_group_carries_its_key_and_its_type_among_the_traits() {
    let mut props = Properties::new();
    props.insert(identity::GROUP_TYPE, "company");
    props.insert(identity::GROUP_KEY, "acme");
    props.insert("seats", 12);
    props.insert("group_type", "spoofed");
    let e = Event::new(identity::GROUP, props)
        .with_kind(EventKind::Group)
        .with_context(full_context().with_group("company", "acme"));
    let m = segment(&e);
    assert_eq!(m["type"], "group");
    assert_eq!(m["groupId"], "acme");
    assert_eq!(m["userId"], "user_42");
    assert_eq!(
        m["traits"],
        serde_json::json!({"seats": 12, "group_type": "company"})
    );

    // In an anonymous request: the anonymous id.
    let mut props = Properties::new();
    props.insert(identity::GROUP_TYPE, "team");
    props.insert(identity::GROUP_KEY, 7);
    let e = Event::new(identity::GROUP, props)
        .with_kind(EventKind::Group)
        .with_context(Context::new().with_session_id("sess_3"));
    let m = segment(&e);
    assert_eq!(m["anonymousId"], "sess_3");
    assert!(m.get("userId").is_none());
    assert_eq!(
        m["groupId"], "7",
        "a numeric key as text, as the spec's groupId"
    );
}

#[test]
fn messages_in_groups_name_the_first_group_by_type_in_the_context() {
    // Added team first: the choice follows the type's order, not the order of adding.
    let ctx = full_context()
        .with_group("team", "ml")
        .with_group("company", "acme");
    let m = segment(&event(ctx));
    assert_eq!(m["type"], "track");
    assert_eq!(m["context"]["groupId"], "acme");
    assert!(m["properties"].get("$groups").is_none());
    let m = segment(&event(Context::new().with_group("team", "ml")));
    assert_eq!(m["context"]["groupId"], "ml");
    assert!(
        segment(&event(full_context()))["context"]
            .get("groupId")
            .is_none()
    );
}

fn settings(yaml: &str) -> Settings {
    let config = Config::from_yaml_str(yaml).unwrap();
    config.destination("cdp").unwrap().settings.clone()
}

#[test]
fn flavors_urls_and_errors_with_key_and_line() {
    let s = settings(
        "telemetry:\n  destinations:\n    cdp:\n      type: segment\n      write_key: wk_1\n",
    );
    let d = SegmentDestination::from_settings(&s).unwrap();
    assert_eq!(d.inner.url.as_str(), "https://api.segment.io/v1/batch");
    // Basic auth: the write key as user, empty password ("wk_1:" in base64).
    assert_eq!(d.inner.auth.to_str().unwrap(), "Basic d2tfMTo=");
    assert!(d.inner.auth.is_sensitive());
    assert!(!format!("{d:?}{:?}", d.config()).contains("wk_1"));

    let s = settings(
        "telemetry:\n  destinations:\n    cdp:\n      type: segment\n      flavor: rudderstack\n      url: https://acme.dataplane.rudderstack.com/v1/batch\n      write_key: wk\n",
    );
    let d = SegmentDestination::from_settings(&s).unwrap();
    assert_eq!(d.config().flavor(), SegmentFlavor::RudderStack);
    assert_eq!(
        d.inner.url.as_str(),
        "https://acme.dataplane.rudderstack.com/v1/batch"
    );
    assert_eq!(d.config().flavor().limits().per_request, 4_000_000);

    let s = settings(
        "telemetry:\n  destinations:\n    cdp:\n      type: segment\n      flavor: jitsu\n      forward: { ip: yes please }\n",
    );
    let errors = SegmentDestination::from_settings(&s).unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.path().to_owned(), e.line()))
        .collect();
    for (path, line) in [
        ("telemetry.destinations.cdp.write_key", Some(3)),
        ("telemetry.destinations.cdp.url", Some(3)),
        ("telemetry.destinations.cdp.forward.ip", Some(6)),
    ] {
        assert!(
            found.iter().any(|(p, l)| p == path && *l == line),
            "{path} line {line:?} in {found:?}"
        );
    }

    let s = settings(
        "telemetry:\n  destinations:\n    cdp:\n      type: segment\n      write_key: wk\n      flavor: mixpanel\n",
    );
    let errors = SegmentDestination::from_settings(&s).unwrap_err();
    assert_eq!(errors[0].path(), "telemetry.destinations.cdp.flavor");
    assert_eq!(errors[0].line(), Some(6));

    let e = SegmentDestination::new(
        SegmentConfig::new("wk").with_url("https://me:hunter2@seg.example.com"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("segment.url"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// Over the wire: Basic auth, `sentAt`, and a message over 32 KiB failed alone.
#[tokio::test]
async fn a_batch_is_posted_with_basic_auth_and_an_oversized_message_fails_alone() {
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::HeaderMap as Headers;
    use axum::routing::post;

    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().route(
        "/v1/batch",
        post(move |headers: Headers, body: Bytes| async move {
            let auth = headers["authorization"].to_str().unwrap().to_owned();
            record
                .lock()
                .unwrap()
                .push((auth, serde_json::from_slice(&body).unwrap()));
            r#"{"success":true}"#
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let d = SegmentDestination::new(SegmentConfig::new("wk_1").with_url(format!("http://{addr}")))
        .unwrap();
    let mut big = Properties::new();
    big.insert_json("blob", "x".repeat(33 * 1024).into());
    let batch: Vec<Arc<Event>> = vec![
        Arc::new(Event::new("big", big)),
        Arc::new(event(full_context())),
    ];
    let err = d.send(&batch).await.unwrap_err();
    let items = err.items().unwrap();
    assert_eq!((items.len(), items[0].0), (1, 0));
    assert!(!items[0].1.is_retryable());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "Basic d2tfMTo=");
    let body = &seen[0].1;
    assert!(body["sentAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["batch"][0]["messageId"], batch[1].id().to_string());
    assert_eq!(body["batch"].as_array().unwrap().len(), 1);
    server.abort();
}
