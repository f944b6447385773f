use super::config::signing_key;
use super::*;
use crate::config::Config;
use crate::{Context, Properties};

/// The example of the Standard Webhooks specification, checked by hand with Python:
/// `base64.b64encode(hmac.new(base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
/// b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}', hashlib.sha256).digest())`.
#[test]
fn the_signature_matches_the_specifications_vector() {
    let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    // A second vector, also from Python's hmac module; the prefix is optional.
    let key = signing_key("c2VjcmV0LWtleS1vZi10b3dlci10ZWxlbWV0cnk=").unwrap();
    assert_eq!(key, b"secret-key-of-tower-telemetry");
    assert_eq!(
        signature(
            &key,
            "msg_0123",
            1_700_000_000,
            br#"{"type":"telemetry.events"}"#
        ),
        "v1,lPbpDjvr8/D9LxNA06CrK1ZoXUuv4Kkk7NVv0sYlRlg="
    );
}

#[test]
fn bad_secrets_are_refused_without_being_quoted() {
    for bad in ["", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ="] {
        let e =
            WebhookDestination::new(WebhookConfig::new("https://h.example.com/", bad)).unwrap_err();
        assert!(e.to_string().contains("webhook.secret"), "{e}");
        if !bad.is_empty() && bad != "whsec_" {
            assert!(!e.to_string().contains(&bad[6..]), "{e}");
        }
    }
}

fn event(ctx: Context) -> Event {
    let mut props = Properties::new();
    props.insert_json("plan", "pro".into());
    Event::new("payment.completed", props).with_context(ctx)
}

#[test]
fn an_event_maps_to_the_envelopes_item_with_privacy_defaults() {
    let ctx = Context::new()
        .with_user_id("u1")
        .with_path("/checkout")
        .with_query("token=secret")
        .with_user_agent("Mozilla/5.0")
        .with_client_ip("203.0.113.7")
        .with_field("tenant", "acme");
    let e = event(ctx);
    let v = event_json(&e, &Forward::default());
    assert_eq!(v["id"], e.id().to_string());
    assert_eq!(v["name"], "payment.completed");
    assert_eq!(v["properties"]["plan"], "pro");
    assert_eq!(v["context"]["user_id"], "u1");
    assert_eq!(v["context"]["path"], "/checkout");
    assert_eq!(v["context"]["user_agent"], "Mozilla/5.0");
    assert_eq!(v["context"]["tenant"], "acme");
    assert!(v["context"].get("client_ip").is_none());
    assert!(!v.to_string().contains("token=secret"));
    let v = event_json(&e, &Forward::default().with_ip(true).with_user_agent(false));
    assert_eq!(v["context"]["client_ip"], "203.0.113.7");
    assert!(v["context"].get("user_agent").is_none());
}

#[test]
fn identity_operations_and_page_views_carry_their_kind() {
    use crate::EventKind;
    let v = event_json(&event(Context::new()), &Forward::default());
    assert!(v.get("kind").is_none(), "a tracked event has none: {v}");
    for kind in [
        EventKind::PageView,
        EventKind::Identify,
        EventKind::Alias,
        EventKind::Group,
    ] {
        let e = event(
            Context::new()
                .with_user_id("u1")
                .with_group("company", "acme"),
        )
        .with_kind(kind);
        let v = event_json(&e, &Forward::default());
        assert_eq!(v["kind"], kind.as_str());
        assert_eq!(v["context"]["$groups"]["company"], "acme");
    }
}

#[test]
fn the_message_id_is_stable_for_the_same_events() {
    let a = event(Context::new());
    let b = event(Context::new());
    let id = message_id([&a, &b]);
    assert_eq!(id.len(), 36);
    assert!(id.starts_with("msg_"));
    assert_eq!(message_id([&a, &b]), id);
    assert_ne!(message_id([&a]), id);
}

#[test]
fn yaml_errors_name_key_and_line() {
    let config = Config::from_yaml_str(
        "telemetry:\n  destinations:\n    hooks:\n      type: webhook\n      url: mailto:x@y\n      forward: [ip]\n",
    )
    .unwrap();
    let s = &config.destination("hooks").unwrap().settings;
    let errors = WebhookDestination::from_settings(s).unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.path().to_owned(), e.line()))
        .collect();
    for (path, line) in [
        ("telemetry.destinations.hooks.url", Some(5)),
        ("telemetry.destinations.hooks.secret", Some(3)),
        ("telemetry.destinations.hooks.forward", Some(6)),
    ] {
        assert!(
            found.iter().any(|(p, l)| p == path && *l == line),
            "{path} line {line:?} in {found:?}"
        );
    }
}

/// Over the wire: the receiver recomputes the signature from the headers and the raw body,
/// the query token and userinfo never show in `Debug`, and the id repeats on a retry.
#[tokio::test]
async fn requests_are_signed_and_a_retry_keeps_the_webhook_id() {
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap as Headers, StatusCode};
    use axum::routing::post;

    let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = seen.clone();
    let verify_key = key.clone();
    let app = Router::new().route(
        "/t",
        post(move |headers: Headers, body: Bytes| async move {
            let h = |n: &str| headers[n].to_str().unwrap().to_owned();
            let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
            let expected = signature(&verify_key, &id, ts.parse().unwrap(), &body);
            assert_eq!(h("webhook-signature"), expected);
            assert_eq!(h("authorization"), "Basic dTpw");
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            assert!(now.as_secs().abs_diff(ts.parse().unwrap()) < 300);
            let mut seen = record.lock().unwrap();
            seen.push((id, serde_json::from_slice(&body).unwrap()));
            // The first delivery is "lost": the sender must retry with the same id.
            if seen.len() == 1 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let d = WebhookDestination::new(WebhookConfig::new(
        format!("http://u:p@{addr}/t?token=abc"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ))
    .unwrap();
    let shown = format!("{d:?}{:?}", d.config());
    assert!(
        !shown.contains("token=abc") && !shown.contains("u:p"),
        "{shown}"
    );
    assert!(!shown.contains("/t"), "the path may be the secret: {shown}");
    let batch = vec![
        Arc::new(event(Context::new().with_user_id("u1"))),
        Arc::new(event(Context::new())),
    ];
    let first = d.send(&batch).await.unwrap_err();
    assert!(first.is_retryable());
    assert!(!first.message().contains("/t"), "{first}");
    d.send(&batch).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, seen[1].0, "the same webhook-id on the retry");
    let body = &seen[1].1;
    assert_eq!(body["type"], "telemetry.events");
    assert_eq!(body["data"]["events"][0]["id"], batch[0].id().to_string());
    assert_eq!(body["data"]["events"].as_array().unwrap().len(), 2);
    server.abort();
}
