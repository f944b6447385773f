//! Identity and consent through a real axum app (issue #23): identify after an anonymous
//! start, request-scoped traits under 1 000 concurrent requests, groups, super properties,
//! `Consent::Denied` and `Consent::Anonymous` field by field, and identity operations a
//! destination does not support, counted.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::request::Parts;
use support::accounted;
use support::http::{Server, client, get as request, send};
use tower_telemetry::destination::{BoxFuture, DeliveryError, Destination};
use tower_telemetry::identity::{self, Consent};
use tower_telemetry::layer::{ClientIp, TelemetryLayer};
use tower_telemetry::{Event, EventKind, Telemetry, Tracker, config::Config, props, track};

const WAIT: Duration = Duration::from_secs(20);

fn header(parts: &Parts, name: &str) -> Option<String> {
    Some(parts.headers.get(name)?.to_str().ok()?.to_owned())
}

/// The app: `x-session` is the session, `x-login` the user who signs in during the request,
/// `x-org` the request's company, `x-consent` its consent (`denied`, `anonymous`, else
/// granted).
fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/login",
            get(|tracker: Tracker, parts: Parts| async move {
                track!("user.landed", step = 1);
                if let Some(user) = header(&parts, "x-login") {
                    tracker.identify(
                        user.clone(),
                        props! { "plan" => format!("plan-of-{user}"), "email" => format!("{user}@example.com") },
                    );
                }
                track!("user.logged_in", step = 2);
                "ok"
            }),
        )
        .route(
            "/alias",
            get(|tracker: Tracker| async move {
                tracker.alias("anon-1", "user-1");
                tracker.group("company", "acme", props! { "seats" => 12 });
                track!("user.after_group");
                "ok"
            }),
        )
        .layer(
            TelemetryLayer::new(telemetry.clone())
                .session_id(|p: &Parts| header(p, "x-session"))
                .client_ip(ClientIp::Header(http::HeaderName::from_static(
                    "x-forwarded-for",
                )))
                .groups(|p: &Parts| header(p, "x-org").map(|org| ("company", org)))
                .consent(|p: &Parts| match header(p, "x-consent").as_deref() {
                    Some("denied") => Consent::Denied,
                    Some("anonymous") => Consent::Anonymous,
                    _ => Consent::Granted,
                })
                .request_events(true),
        )
}

fn handle() -> Telemetry {
    Telemetry::builder()
        .config(Config::default().with_properties(props! { "app" => "studio", "step" => 0 }))
        .memory_destination("memory")
        .build()
        .unwrap()
}

async fn get_with(server: &Server, path: &str, headers: &[(&str, &str)]) {
    let mut req = request(&server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (res, _) = send(&client(), req.body(Default::default()).unwrap()).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn identify_after_an_anonymous_start_links_the_anonymous_id() {
    let telemetry = handle();
    let memory = telemetry.memory("memory").unwrap();
    let server = Server::start(app(&telemetry)).await;
    get_with(
        &server,
        "/login",
        &[
            ("x-session", "sess-7"),
            ("x-login", "user-7"),
            ("x-org", "acme"),
        ],
    )
    .await;
    let report = telemetry.shutdown(WAIT).await;
    accounted(report.destination("memory").unwrap());
    let events = memory.events();
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["user.landed", "$identify", "user.logged_in", "http.request"]
    );
    let [landed, identify, logged_in, request] = &events[..] else {
        unreachable!()
    };
    assert_eq!(landed.context().user_id(), None);
    assert_eq!(landed.context().session_id(), Some("sess-7"));
    // The identify: its own kind, the user set, the traits, the anonymous id it replaces.
    assert_eq!(identify.kind(), EventKind::Identify);
    assert_eq!(identify.context().user_id(), Some("user-7"));
    let p = identify.properties();
    assert_eq!(p.get("plan").unwrap(), "plan-of-user-7");
    assert_eq!(p.get(identity::ANON_DISTINCT_ID).unwrap(), "sess-7");
    // Traits are redacted like properties? `email` is not a secret name: kept.
    assert_eq!(p.get("email").unwrap(), "user-7@example.com");
    // No super properties in an identify: its properties are the user's traits.
    assert!(p.get("app").is_none(), "{p:?}");
    // Every later event of the request is the user's, and carries the request's group.
    for e in [logged_in, request] {
        assert_eq!(e.context().user_id(), Some("user-7"), "{}", e.name());
        assert_eq!(
            e.context().groups().collect::<Vec<_>>(),
            [("company", "acme")]
        );
    }
    // Super properties on events; the event's own win.
    assert_eq!(landed.properties().get("app").unwrap(), "studio");
    assert_eq!(landed.properties().get("step").unwrap().as_i64(), Some(1));
    assert_eq!(
        logged_in.properties().get("step").unwrap().as_i64(),
        Some(2)
    );
    assert_eq!(request.kind(), EventKind::PageView);
    assert_eq!(request.properties().get("app").unwrap(), "studio");
}

/// 1 000 concurrent requests of 100 users, each identifying itself with its own traits: no
/// trait and no user id reaches another request's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traits_never_leak_across_concurrent_requests() {
    let telemetry = handle();
    let memory = telemetry.memory("memory").unwrap();
    let server = Arc::new(Server::start(app(&telemetry)).await);
    let http = client();
    let mut tasks = Vec::new();
    for n in 0..1000u32 {
        let (server, http) = (server.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{}", n % 100);
            let req = request(&server.url("/login"))
                .header("x-request-id", format!("req-{n}"))
                .header("x-session", format!("sess-{n}"))
                .header("x-login", &user)
                .body(Default::default())
                .unwrap();
            let (res, _) = send(&http, req).await;
            assert_eq!(res.status(), 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("memory").unwrap();
    accounted(d);
    assert_eq!(d.delivered, 4000, "{d:?}");
    let mut per_request: HashMap<String, Vec<Arc<Event>>> = HashMap::new();
    for e in memory.events() {
        let id = e.context().request_id().unwrap().to_owned();
        per_request.entry(id).or_default().push(e);
    }
    assert_eq!(per_request.len(), 1000);
    for (id, events) in per_request {
        let n: u32 = id.trim_start_matches("req-").parse().unwrap();
        let user = format!("user-{}", n % 100);
        assert_eq!(events.len(), 4, "{id}");
        for e in &events {
            assert_eq!(e.context().session_id(), Some(format!("sess-{n}").as_str()));
            match e.name() {
                "user.landed" => assert_eq!(e.context().user_id(), None, "{id}"),
                "$identify" => {
                    assert_eq!(e.context().user_id(), Some(user.as_str()), "{id}");
                    let plan = format!("plan-of-{user}");
                    assert_eq!(e.properties().get("plan").unwrap(), plan.as_str(), "{id}");
                    let anon = e.properties().get(identity::ANON_DISTINCT_ID).unwrap();
                    assert_eq!(anon, format!("sess-{n}").as_str(), "{id}");
                }
                _ => {
                    assert_eq!(e.context().user_id(), Some(user.as_str()), "{id}");
                    assert!(e.properties().get("plan").is_none(), "{id}");
                }
            }
        }
    }
}

#[tokio::test]
async fn denied_requests_leave_nothing_and_are_counted() {
    let telemetry = handle();
    let memory = telemetry.memory("memory").unwrap();
    let server = Server::start(app(&telemetry)).await;
    for path in ["/login", "/alias"] {
        get_with(
            &server,
            path,
            &[
                ("x-consent", "denied"),
                ("x-login", "user-1"),
                ("x-session", "s"),
            ],
        )
        .await;
    }
    let report = telemetry.shutdown(WAIT).await;
    assert!(memory.events().is_empty(), "{:?}", memory.events());
    // /login: two events, the identify and the request event; /alias: the alias, the group,
    // one event and the request event.
    assert_eq!(report.stats.consent_denied, 8, "{:?}", report.stats);
    let d = report.destination("memory").unwrap();
    assert_eq!(d.enqueued, 0, "{d:?}");
    accounted(d);
}

#[tokio::test]
async fn anonymous_requests_keep_names_and_properties_and_nothing_personal() {
    let telemetry = handle();
    let memory = telemetry.memory("memory").unwrap();
    let server = Server::start(app(&telemetry)).await;
    let personal = [
        ("x-consent", "anonymous"),
        ("x-login", "user-1"),
        ("x-session", "sess-1"),
        ("x-request-id", "req-known"),
        ("x-forwarded-for", "203.0.113.9"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) personal"),
        ("referer", "https://mail.example.com/inbox?user=me"),
        ("x-org", "acme"),
    ];
    get_with(&server, "/login?email=someone@example.com", &personal).await;
    get_with(&server, "/login", &personal).await;
    get_with(&server, "/alias", &personal).await;
    let report = telemetry.shutdown(WAIT).await;
    accounted(report.destination("memory").unwrap());
    // The two identify calls and the alias are dropped, counted.
    assert_eq!(report.stats.consent_denied, 3, "{:?}", report.stats);
    let events = memory.events();
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "user.landed",
            "user.logged_in",
            "http.request",
            "user.landed",
            "user.logged_in",
            "http.request",
            "$group",
            "user.after_group",
            "http.request",
        ]
    );
    let mut request_ids = Vec::new();
    for e in &events {
        let c = e.context();
        assert_eq!(c.user_id(), None, "{}", e.name());
        assert_eq!(c.session_id(), None, "{}", e.name());
        assert_eq!(c.client_ip(), None, "{}", e.name());
        assert_eq!(c.user_agent(), None, "{}", e.name());
        assert_eq!(c.referrer(), None, "{}", e.name());
        assert_eq!(c.query(), None, "{}", e.name());
        let id = c.request_id().unwrap();
        assert_ne!(id, "req-known");
        assert_eq!(id.len(), 36, "a random UUID: {id}");
        request_ids.push(id.to_owned());
        // What is not personal stays: the path, the groups, the properties.
        assert_eq!(c.groups().count(), 1, "{}", e.name());
        assert!(c.path().is_some());
        let json = serde_json::to_string(&**e).unwrap();
        for secret in [
            "user-1",
            "sess-1",
            "203.0.113.9",
            "personal",
            "mail.example.com",
        ] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
    }
    assert_eq!(
        events[0].properties().get("step").unwrap().as_i64(),
        Some(1)
    );
    // One anonymous id per request, a new one for each request.
    request_ids.dedup();
    assert_eq!(request_ids.len(), 3, "{request_ids:?}");
}

/// A destination that takes everything but aliases and groups (as Umami does).
#[derive(Clone, Default)]
struct NoAliases(tower_telemetry::destination::MemoryDestination);

impl Destination for NoAliases {
    fn name(&self) -> &str {
        "no-aliases"
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.send(batch)
    }
    fn supports(&self, kind: EventKind) -> bool {
        !matches!(kind, EventKind::Alias | EventKind::Group)
    }
}

#[tokio::test]
async fn unsupported_operations_are_counted_never_sent_and_others_still_get_them() {
    let partial = NoAliases::default();
    let telemetry = Telemetry::builder()
        .memory_destination("memory")
        .destination("partial", partial.clone())
        .build()
        .unwrap();
    let memory = telemetry.memory("memory").unwrap();
    let server = Server::start(app(&telemetry)).await;
    get_with(&server, "/alias", &[("x-session", "s-1")]).await;
    get_with(&server, "/login", &[("x-login", "user-2")]).await;
    let report = telemetry.shutdown(WAIT).await;
    let full = report.destination("memory").unwrap();
    let part = report.destination("partial").unwrap();
    accounted(full);
    accounted(part);
    assert_eq!((full.unsupported, part.unsupported), (0, 2), "{part:?}");
    assert_eq!(full.delivered, part.delivered + 2);
    let kinds =
        |events: Vec<Arc<Event>>| -> Vec<EventKind> { events.iter().map(|e| e.kind()).collect() };
    let full_kinds = kinds(memory.events());
    assert!(full_kinds.contains(&EventKind::Alias) && full_kinds.contains(&EventKind::Group));
    let alias = memory
        .events()
        .into_iter()
        .find(|e| e.kind() == EventKind::Alias)
        .unwrap();
    assert_eq!(alias.name(), identity::ALIAS);
    assert_eq!(alias.context().user_id(), Some("user-1"));
    assert_eq!(
        alias.properties().get(identity::PREVIOUS_ID).unwrap(),
        "anon-1"
    );
    let group = memory
        .events()
        .into_iter()
        .find(|e| e.kind() == EventKind::Group)
        .unwrap();
    assert_eq!(
        group.properties().get(identity::GROUP_TYPE).unwrap(),
        "company"
    );
    assert_eq!(group.properties().get(identity::GROUP_KEY).unwrap(), "acme");
    assert_eq!(group.properties().get("seats").unwrap().as_i64(), Some(12));
    let partial_kinds = kinds(partial.0.events());
    assert!(
        partial_kinds.contains(&EventKind::Identify),
        "{partial_kinds:?}"
    );
    assert!(
        !partial_kinds.contains(&EventKind::Alias) && !partial_kinds.contains(&EventKind::Group)
    );
}

#[tokio::test]
async fn identity_operations_are_never_sampled_out_and_traits_are_redacted() {
    let telemetry = Telemetry::from_yaml_str(
        r#"
telemetry:
  sampling: { enabled: true, rate: 0.0 }
  properties: { app: studio, api_key: sk_live_1 }
  destinations:
    memory:
      type: memory
"#,
    )
    .unwrap();
    let memory = telemetry.memory("memory").unwrap();
    let t = telemetry.clone();
    telemetry
        .scope(
            tower_telemetry::Context::new().with_request_id("r-1"),
            async move {
                track!("user.sampled_away");
                t.identify(
                    "user-3",
                    props! { "plan" => "pro", "access_token" => "tok_secret" },
                );
                t.group("team", "ml", props! {});
            },
        )
        .await;
    let report = telemetry.shutdown(WAIT).await;
    let d = report.destination("memory").unwrap();
    accounted(d);
    assert_eq!(d.sampled_out, 1, "{d:?}");
    let events = memory.events();
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["$identify", "$group"]);
    assert_eq!(
        events[0].properties().get("access_token").unwrap(),
        "[REDACTED]"
    );
    assert_eq!(events[0].properties().get("plan").unwrap(), "pro");
    assert!(report.stats.redacted >= 1);
}

#[tokio::test]
async fn super_properties_are_redacted_and_limited_like_properties() {
    let telemetry = Telemetry::from_yaml_str(
        r#"
telemetry:
  properties:
    app: studio
    client_secret: abc
  destinations:
    memory:
      type: memory
"#,
    )
    .unwrap();
    let memory = telemetry.memory("memory").unwrap();
    telemetry.track("user.clicked", props! { "app" => "mine" });
    let report = telemetry.shutdown(WAIT).await;
    accounted(report.destination("memory").unwrap());
    let e = &memory.events()[0];
    assert_eq!(e.properties().get("app").unwrap(), "mine");
    assert_eq!(e.properties().get("client_secret").unwrap(), "[REDACTED]");
}

#[test]
fn a_properties_section_that_is_not_a_mapping_names_the_key_and_line() {
    let err = Telemetry::from_yaml_str("telemetry:\n  enabled: true\n  properties: [a, b]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("telemetry.properties"), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[tokio::test]
async fn outside_a_request_operations_use_the_base_context_and_change_nothing() {
    let telemetry = Telemetry::builder()
        .memory_destination("memory")
        .context(tower_telemetry::Context::new().with_hostname("worker-1"))
        .build()
        .unwrap();
    let memory = telemetry.memory("memory").unwrap();
    telemetry.identify("user-9", props! { "plan" => "team" });
    telemetry.identify("  ", props! {});
    telemetry.track("system.tick", props! {});
    let report = telemetry.shutdown(WAIT).await;
    accounted(report.destination("memory").unwrap());
    assert_eq!(report.stats.rejected, 1, "a blank user id");
    let events = memory.events();
    assert_eq!(events[0].context().user_id(), Some("user-9"));
    assert_eq!(events[0].context().hostname(), Some("worker-1"));
    // No anonymous id: there was none before.
    assert!(
        events[0]
            .properties()
            .get(identity::ANON_DISTINCT_ID)
            .is_none()
    );
    assert_eq!(
        events[1].context().user_id(),
        None,
        "the base context is unchanged"
    );
}
