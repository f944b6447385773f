use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::config::Config;
use crate::{Context, Properties, identity};

pub(crate) fn event(ctx: Context) -> Event {
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
        .with_request_id("req_1")
        .with_hostname("app.example.com")
        .with_path("/checkout")
        .with_query("token=secret")
        .with_user_agent("Mozilla/5.0 (X11)")
        .with_language("de-CH,de;q=0.9")
        .with_referrer("https://news.example.org/")
        .with_client_ip("203.0.113.7")
}

#[test]
fn an_event_maps_to_a_batch_item() {
    let e = event(full_context());
    let v = item(&e, &Forward::default());
    assert_eq!(v["event"], "payment.completed");
    assert_eq!(v["distinct_id"], "user_42");
    assert_eq!(v["uuid"], e.id().to_string());
    assert_eq!(v["timestamp"], "2025-11-24T16:00:00.123Z");
    let p = &v["properties"];
    assert_eq!(p["plan"], "pro");
    assert_eq!(p["$lib"], "tower-telemetry");
    assert_eq!(p["$lib_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["$current_url"], "https://app.example.com/checkout");
    assert_eq!(p["$pathname"], "/checkout");
    assert_eq!(p["$session_id"], "sess_1");
    assert_eq!(p["$raw_user_agent"], "Mozilla/5.0 (X11)");
    assert_eq!(p["$browser_language"], "de-CH");
    assert_eq!(p["$referrer"], "https://news.example.org/");
    // Privacy defaults: no IP, no geolocation, no query string.
    assert!(p.get("$ip").is_none());
    assert_eq!(p["$geoip_disable"], true);
    assert!(!v.to_string().contains("token=secret"));
    assert!(p.get("$process_person_profile").is_none());
    // The same event maps to the same item: a retry sends the same uuid and timestamp.
    assert_eq!(item(&e, &Forward::default()), v);
}

#[test]
fn a_forwarded_ip_replaces_geoip_disable() {
    let v = item(&event(full_context()), &Forward::default().with_ip(true));
    assert_eq!(v["properties"]["$ip"], "203.0.113.7");
    assert!(v["properties"].get("$geoip_disable").is_none());
    let off = Forward::default()
        .with_user_agent(false)
        .with_language(false)
        .with_referrer(false);
    let v = item(&event(full_context()), &off);
    for key in ["$raw_user_agent", "$browser_language", "$referrer", "$ip"] {
        assert!(v["properties"].get(key).is_none(), "{key}");
    }
}

#[test]
fn events_without_a_user_are_anonymous_and_make_no_person_profile() {
    let v = item(
        &event(
            Context::new()
                .with_session_id("sess_9")
                .with_request_id("req_9"),
        ),
        &Forward::default(),
    );
    assert_eq!(v["distinct_id"], "sess_9");
    assert_eq!(v["properties"]["$process_person_profile"], false);
    let v = item(
        &event(Context::new().with_request_id("req_9")),
        &Forward::default(),
    );
    assert_eq!(v["distinct_id"], "req_9");
    let e = event(Context::new());
    let v = item(&e, &Forward::default());
    assert_eq!(v["distinct_id"], e.id().to_string());
    assert_eq!(v["properties"]["$process_person_profile"], false);
}

#[test]
fn request_events_are_pageviews() {
    let e = Event::new("telemetry.requests", Properties::new()).with_kind(EventKind::PageView);
    assert_eq!(item(&e, &Forward::default())["event"], "$pageview");
}

fn identify(ctx: Context, traits: Properties) -> Event {
    Event::new(identity::IDENTIFY, traits)
        .with_kind(EventKind::Identify)
        .with_context(ctx)
}

#[test]
fn an_identify_sets_the_traits_links_the_anonymous_id_and_makes_a_profile() {
    let mut props = Properties::new();
    props.insert("plan", "pro");
    props.insert("seats", 3);
    props.insert_json(
        identity::SET_ONCE,
        serde_json::json!({"first_plan": "free"}),
    );
    props.insert(identity::ANON_DISTINCT_ID, "sess_1");
    let e = identify(full_context(), props);
    let v = item(&e, &Forward::default());
    assert_eq!(v["event"], "$identify");
    assert_eq!(v["distinct_id"], "user_42");
    assert_eq!(v["uuid"], e.id().to_string());
    let p = &v["properties"];
    assert_eq!(p["$set"], serde_json::json!({"plan": "pro", "seats": 3}));
    assert_eq!(p["$set_once"], serde_json::json!({"first_plan": "free"}));
    assert_eq!(p["$anon_distinct_id"], "sess_1");
    // The traits are the person's, not the event's; identifying makes a person profile.
    assert!(p.get("plan").is_none());
    assert!(p.get("$process_person_profile").is_none());
    assert_eq!(p["$lib"], "tower-telemetry");
    assert_eq!(p["$session_id"], "sess_1");

    // Without set-once traits or an anonymous id: an empty `$set`, nothing else.
    let v = item(
        &identify(Context::new().with_user_id("u"), Properties::new()),
        &Forward::default(),
    );
    assert_eq!(v["properties"]["$set"], serde_json::json!({}));
    for key in ["$set_once", "$anon_distinct_id", "$process_person_profile"] {
        assert!(v["properties"].get(key).is_none(), "{key}");
    }
}

#[test]
fn an_alias_is_a_create_alias_sent_as_the_previous_id() {
    let mut props = Properties::new();
    props.insert(identity::PREVIOUS_ID, "legacy_7");
    let e = Event::new(identity::ALIAS, props)
        .with_kind(EventKind::Alias)
        .with_context(Context::new().with_user_id("user_42"));
    let v = item(&e, &Forward::default());
    assert_eq!(v["event"], "$create_alias");
    assert_eq!(v["distinct_id"], "legacy_7");
    assert_eq!(v["properties"]["distinct_id"], "legacy_7");
    assert_eq!(v["properties"]["alias"], "user_42");
    assert!(v["properties"].get("$previous_id").is_none());
    assert!(v["properties"].get("$process_person_profile").is_none());

    // Without a previous id, never an empty distinct_id (PostHog would refuse the batch).
    let e = Event::new(identity::ALIAS, Properties::new())
        .with_kind(EventKind::Alias)
        .with_context(Context::new().with_user_id("user_42"));
    let v = item(&e, &Forward::default());
    assert_eq!(v["distinct_id"], "user_42");
    assert_eq!(v["properties"]["alias"], "user_42");
}

#[test]
fn a_group_is_a_groupidentify_with_its_traits_in_group_set() {
    let mut props = Properties::new();
    props.insert(identity::GROUP_TYPE, "company");
    props.insert(identity::GROUP_KEY, "acme");
    props.insert("seats", 12);
    let ctx = Context::new()
        .with_session_id("sess_9")
        .with_group("company", "acme");
    let e = Event::new(identity::GROUP, props)
        .with_kind(EventKind::Group)
        .with_context(ctx);
    let v = item(&e, &Forward::default());
    assert_eq!(v["event"], "$groupidentify");
    // Anonymous, yet personful as posthog-python's group_identify.
    assert_eq!(v["distinct_id"], "sess_9");
    let p = &v["properties"];
    assert_eq!(p["$group_type"], "company");
    assert_eq!(p["$group_key"], "acme");
    assert_eq!(p["$group_set"], serde_json::json!({"seats": 12}));
    assert!(p.get("seats").is_none());
    assert!(p.get("$process_person_profile").is_none());
    assert_eq!(p["$groups"], serde_json::json!({"company": "acme"}));
}

#[test]
fn every_event_in_groups_carries_them() {
    let ctx = full_context()
        .with_group("team", "ml")
        .with_group("company", "acme");
    let v = item(&event(ctx), &Forward::default());
    assert_eq!(
        v["properties"]["$groups"],
        serde_json::json!({"company": "acme", "team": "ml"})
    );
    assert_eq!(v["properties"]["plan"], "pro");
    // Anonymous events too, still without a person profile.
    let v = item(
        &event(
            Context::new()
                .with_request_id("r")
                .with_group("company", "acme"),
        ),
        &Forward::default(),
    );
    assert_eq!(v["properties"]["$groups"]["company"], "acme");
    assert_eq!(v["properties"]["$process_person_profile"], false);
    // No groups, no `$groups`.
    let v = item(&event(full_context()), &Forward::default());
    assert!(v["properties"].get("$groups").is_none());
}

fn settings(yaml: &str) -> Settings {
    let config = Config::from_yaml_str(yaml).unwrap();
    config.destination("product").unwrap().settings.clone()
}

#[test]
fn yaml_keys_are_read_and_their_errors_name_key_and_line() {
    let s = settings(
        "telemetry:\n  destinations:\n    product:\n      type: posthog\n      api_key: phc_abc\n      host: https://eu.i.posthog.com\n      gzip: false\n      forward: { ip: true, referrer: false }\n",
    );
    let d = PostHogDestination::from_settings(&s).unwrap();
    assert_eq!(d.config().host(), "https://eu.i.posthog.com");
    assert!(!d.config().gzip());
    assert!(d.config().forward().ip() && !d.config().forward().referrer());
    assert_eq!(d.inner.url.as_str(), "https://eu.i.posthog.com/batch/");
    assert!(!format!("{d:?}{:?}", d.config()).contains("phc_abc"));

    let s = settings(
        "telemetry:\n  destinations:\n    product:\n      type: posthog\n      host: ftp://x\n      gzip: maybe\n      colour: blue\n      forward: { ipv6: true }\n",
    );
    let errors = PostHogDestination::from_settings(&s).unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.path().to_owned(), e.line()))
        .collect();
    for (path, line) in [
        ("telemetry.destinations.product.api_key", Some(3)),
        ("telemetry.destinations.product.host", Some(5)),
        ("telemetry.destinations.product.gzip", Some(6)),
        ("telemetry.destinations.product.colour", Some(7)),
        ("telemetry.destinations.product.forward.ipv6", Some(8)),
    ] {
        assert!(
            found.iter().any(|(p, l)| p == path && *l == line),
            "{path} line {line:?} in {found:?}"
        );
    }
}

#[test]
fn an_empty_key_is_refused_without_quoting_secrets() {
    let e = PostHogDestination::new(PostHogConfig::new("  ")).unwrap_err();
    assert!(e.to_string().contains("posthog.api_key"), "{e}");
    let e = PostHogDestination::new(PostHogConfig::new("phx_personal_secret")).unwrap_err();
    assert!(e.to_string().contains("personal API key"), "{e}");
    assert!(!e.to_string().contains("phx_personal_secret"), "{e}");
    let e = PostHogDestination::new(
        PostHogConfig::new("phc_abc").with_host("https://user:hunter2@ph.example.com/?x=1"),
    )
    .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // A self-hosted instance under a path, userinfo taken out as Basic auth.
    let d = PostHogDestination::new(PostHogConfig::new("phc").with_host("https://u:p@x.io/ph/"))
        .unwrap();
    assert_eq!(d.inner.url.as_str(), "https://x.io/ph/batch/");
    assert!(d.inner.auth.as_ref().unwrap().is_sensitive());
    let shown = format!("{d:?}{:?}", d.config());
    assert!(!shown.contains("u:p"), "{shown}");
}

/// Over the wire: a gzip body the server can read, the oversized event failed alone and the
/// others delivered in one request.
#[tokio::test]
async fn a_batch_is_posted_gzipped_and_an_oversized_event_fails_alone() {
    use std::io::Read;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::HeaderMap as Headers;
    use axum::routing::post;

    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().route(
        "/batch/",
        post(move |headers: Headers, body: Bytes| async move {
            assert_eq!(headers["content-encoding"], "gzip");
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut json)
                .unwrap();
            record
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&json).unwrap());
            r#"{"status":1}"#
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let d =
        PostHogDestination::new(PostHogConfig::new("phc_k").with_host(format!("http://{addr}")))
            .unwrap();
    let mut big = Properties::new();
    big.insert_json("blob", "x".repeat(LIMITS.per_event).into());
    let batch: Vec<Arc<Event>> = vec![
        Arc::new(event(full_context())),
        Arc::new(Event::new("big", big)),
        Arc::new(event(Context::new())),
    ];
    let err = d.send(&batch).await.unwrap_err();
    let items = err.items().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].0, 1);
    assert!(!items[0].1.is_retryable(), "{}", items[0].1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one request");
    assert_eq!(seen[0]["api_key"], "phc_k");
    assert_eq!(seen[0]["historical_migration"], false);
    let uuids: Vec<_> = seen[0]["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        uuids,
        [batch[0].id().to_string(), batch[2].id().to_string()]
    );
    server.abort();
}
