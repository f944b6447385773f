//! Identity and consent at each destination (issue #23), through a real axum app behind
//! `TelemetryLayer`, into the PostHog, Segment and Umami contract servers at once: identify
//! after an anonymous start, traits that stay with their user under 1 000 concurrent
//! requests, `Consent::Denied` (nothing arrives anywhere) and `Consent::Anonymous` (nothing
//! personal arrives anywhere), checked field by field on what each server stored.
#![cfg(all(feature = "posthog", feature = "segment", feature = "umami"))]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::request::Parts;
use serde_json::Value;
use support::http::{Server, client, get as request, send};
use support::posthog_server::{self, PostHogServer};
use support::segment_server::{self, SegmentServer};
use support::umami_server::{self, UmamiServer, WEBSITE_ID};
use tower_telemetry::identity::Consent;
use tower_telemetry::layer::{ClientIp, TelemetryLayer};
use tower_telemetry::{DestinationStats, Telemetry, Tracker, props, track};

const WAIT: Duration = Duration::from_secs(30);
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const DESTINATIONS: [&str; 3] = ["posthog", "segment", "umami"];

struct Servers {
    posthog: PostHogServer,
    segment: SegmentServer,
    umami: UmamiServer,
}

impl Servers {
    async fn start() -> Servers {
        Servers {
            posthog: PostHogServer::start().await,
            segment: SegmentServer::start().await,
            umami: UmamiServer::start().await,
        }
    }

    /// The three destinations, forwarding everything they can (the IP too), so that what
    /// consent strips would show if it were not stripped.
    fn telemetry(&self) -> Telemetry {
        let delivery = "      batch_size: 100\n      flush_interval: 20ms\n      \
                        queue_capacity: 20000\n      forward: { ip: true }\n";
        let yaml = format!(
            "telemetry:\n  properties: {{ app: studio }}\n  destinations:\n    \
             posthog:\n      type: posthog\n      host: {}\n      api_key: {}\n{delivery}    \
             segment:\n      type: segment\n      url: {}\n      write_key: {}\n{delivery}    \
             umami:\n      type: umami\n      url: {}\n      website_id: {WEBSITE_ID}\n{delivery}",
            self.posthog.url(),
            posthog_server::API_KEY,
            self.segment.url(),
            segment_server::WRITE_KEY,
            self.umami.url(),
        );
        Telemetry::from_yaml_str(&yaml).unwrap()
    }
}

fn header(parts: &Parts, name: &str) -> Option<String> {
    Some(parts.headers.get(name)?.to_str().ok()?.to_owned())
}

/// `/login`: an anonymous event, then `identify(x-login)` with traits of that user, then an
/// event of the user carrying the request's number `x-n`. `/alias`: alias, group, an event.
fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/login",
            get(|tracker: Tracker, parts: Parts| async move {
                let n: u64 = header(&parts, "x-n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                track!("user.landed", n = n);
                if let Some(user) = header(&parts, "x-login") {
                    tracker.identify(user.clone(), props! { "plan" => format!("plan-of-{user}") });
                }
                track!("user.logged_in", n = n);
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
                }),
        )
}

async fn get_with(
    http: &support::http::HttpClient,
    server: &Server,
    path: &str,
    headers: &[(&str, String)],
) {
    let mut req = request(&server.url(path)).header("user-agent", BROWSER);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let (res, _) = send(http, req.body(Default::default()).unwrap()).await;
    assert_eq!(res.status(), 200);
}

fn accounted(d: &DestinationStats) {
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{d:?}"
    );
    assert_eq!((d.failed, d.discarded, d.undelivered), (0, 0, 0), "{d:?}");
}

fn n_of(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).expect("the request's number")
}

#[tokio::test]
async fn identify_after_an_anonymous_start_at_each_destination() {
    let servers = Servers::start().await;
    let telemetry = servers.telemetry();
    let server = Server::start(app(&telemetry)).await;
    let h = |k: &'static str, v: &str| (k, v.to_owned());
    get_with(
        &client(),
        &server,
        "/login",
        &[
            h("x-session", "sess-7"),
            h("x-login", "user-7"),
            h("x-org", "acme"),
        ],
    )
    .await;
    let report = telemetry.shutdown(WAIT).await;
    for d in DESTINATIONS {
        accounted(report.destination(d).unwrap());
    }

    // PostHog: `$identify` joins the anonymous id to the user; later events are the user's.
    let ph = &servers.posthog;
    let [identify] = &ph.events_named("$identify")[..] else {
        panic!("{:?}", ph.events())
    };
    assert_eq!(identify.str("/distinct_id"), Some("user-7"));
    assert_eq!(
        identify.str("/properties/$set/plan"),
        Some("plan-of-user-7")
    );
    assert_eq!(
        identify.str("/properties/$anon_distinct_id"),
        Some("sess-7")
    );
    let landed = &ph.events_named("user.landed")[0];
    assert_eq!(landed.str("/distinct_id"), Some("sess-7"));
    let logged_in = &ph.events_named("user.logged_in")[0];
    assert_eq!(logged_in.str("/distinct_id"), Some("user-7"));
    assert_eq!(logged_in.str("/properties/$groups/company"), Some("acme"));
    assert_eq!(logged_in.str("/properties/app"), Some("studio"));

    // Segment: an identify message with both ids; the track after it is the user's.
    let sg = &servers.segment;
    let [identify] = &sg.messages_of_type("identify")[..] else {
        panic!("{:?}", sg.events())
    };
    assert_eq!(identify.str("/userId"), Some("user-7"));
    assert_eq!(identify.str("/anonymousId"), Some("sess-7"));
    assert_eq!(identify.str("/traits/plan"), Some("plan-of-user-7"));
    let tracks = sg.messages_of_type("track");
    let logged_in = tracks
        .iter()
        .find(|m| m.str("/event") == Some("user.logged_in"))
        .unwrap();
    assert_eq!(logged_in.str("/userId"), Some("user-7"));
    assert_eq!(logged_in.str("/context/groupId"), Some("acme"));

    // Umami: the traits are the session data of the user's session, the one the user's
    // events are in: the identify makes no session of its own.
    let um = &servers.umami;
    let user_session = umami_server::user_session("user-7");
    let plan = um
        .session_datum(&user_session, "plan")
        .expect("the identify's data");
    assert_eq!(plan.string_value, "plan-of-user-7");
    let events = um.events();
    let logged_in = events
        .iter()
        .find(|e| e.name.as_deref() == Some("user.logged_in"))
        .unwrap();
    assert_eq!(logged_in.session_id, user_session);
    assert_eq!(logged_in.datum("$groups").unwrap()["company"], "acme");
    let sessions: Vec<_> = um.sessions().into_iter().map(|s| s.id).collect();
    assert!(sessions.contains(&user_session));
    // The anonymous start's session (from IP and User-Agent) and the user's: no third one.
    assert_eq!(sessions.len(), 2, "{sessions:?}");
}

/// 1 000 concurrent requests of 100 users, each identifying itself: at every destination,
/// each identify carries its own user's traits and each event its own request's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traits_stay_with_their_user_at_every_destination() {
    let servers = Servers::start().await;
    let telemetry = servers.telemetry();
    let server = Arc::new(Server::start(app(&telemetry)).await);
    let http = client();
    let mut tasks = Vec::new();
    for n in 0..1000u64 {
        let (server, http) = (server.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let headers = [
                ("x-n", n.to_string()),
                ("x-session", format!("sess-{n}")),
                ("x-login", format!("user-{}", n % 100)),
            ];
            get_with(&http, &server, "/login", &headers).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = telemetry.shutdown(WAIT).await;
    for d in DESTINATIONS {
        let d = report.destination(d).unwrap();
        accounted(d);
        assert_eq!(d.enqueued, 3000, "{d:?}");
    }
    let user_of = |n: u64| format!("user-{}", n % 100);

    let ph = &servers.posthog;
    let identifies = ph.events_named("$identify");
    assert_eq!(identifies.len(), 1000);
    for e in &identifies {
        let user = e.str("/distinct_id").unwrap();
        assert_eq!(
            e.str("/properties/$set/plan"),
            Some(format!("plan-of-{user}").as_str())
        );
    }
    let logged_in = ph.events_named("user.logged_in");
    assert_eq!(logged_in.len(), 1000);
    for e in &logged_in {
        let n = n_of(e.item.pointer("/properties/n"));
        assert_eq!(e.str("/distinct_id"), Some(user_of(n).as_str()), "{n}");
        assert!(e.item.pointer("/properties/plan").is_none());
    }

    let sg = &servers.segment;
    let identifies = sg.messages_of_type("identify");
    assert_eq!(identifies.len(), 1000);
    for m in &identifies {
        let user = m.str("/userId").unwrap();
        assert_eq!(
            m.str("/traits/plan"),
            Some(format!("plan-of-{user}").as_str())
        );
    }
    for m in sg.messages_of_type("track") {
        let n = n_of(m.item.pointer("/properties/n"));
        match m.str("/event") {
            Some("user.logged_in") => assert_eq!(m.str("/userId"), Some(user_of(n).as_str())),
            _ => assert_eq!(m.str("/anonymousId"), Some(format!("sess-{n}").as_str())),
        }
    }

    let um = &servers.umami;
    for u in 0..100 {
        let user = format!("user-{u}");
        let session = umami_server::user_session(&user);
        let plan = um.session_datum(&session, "plan").expect("the user's data");
        assert_eq!(plan.string_value, format!("plan-of-{user}"));
    }
    let events = um.events();
    let logged_in: Vec<_> = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("user.logged_in"))
        .collect();
    assert_eq!(logged_in.len(), 1000);
    for e in logged_in {
        let n = n_of(e.datum("n"));
        assert_eq!(e.session_id, umami_server::user_session(&user_of(n)), "{n}");
    }
}

#[tokio::test]
async fn a_denied_request_reaches_no_destination() {
    let servers = Servers::start().await;
    let telemetry = servers.telemetry();
    let server = Server::start(app(&telemetry)).await;
    let http = client();
    let h = |k: &'static str, v: &str| (k, v.to_owned());
    for path in ["/login", "/alias"] {
        let headers = [
            h("x-consent", "denied"),
            h("x-login", "user-1"),
            h("x-session", "s-1"),
        ];
        get_with(&http, &server, path, &headers).await;
    }
    // A granted request after them, so the servers are known to be reachable.
    get_with(&http, &server, "/login", &[h("x-n", "1")]).await;
    let report = telemetry.shutdown(WAIT).await;
    // /login: 2 events and the identify; /alias: alias, group and an event.
    assert_eq!(report.stats.consent_denied, 6, "{:?}", report.stats);
    for d in DESTINATIONS {
        let d = report.destination(d).unwrap();
        accounted(d);
        assert_eq!(d.enqueued, 2, "only the granted request's events: {d:?}");
    }
    assert_eq!(servers.posthog.events().len(), 2);
    assert_eq!(servers.segment.events().len(), 2);
    assert_eq!(servers.umami.events().len(), 2);
    for e in servers.posthog.events() {
        assert!(!e.item.to_string().contains("user-1"), "{}", e.item);
    }
}

/// Everything a request with these headers could leak.
const PERSONAL: [&str; 5] = [
    "user-1",
    "sess-1",
    "203.0.113.9",
    "req-known",
    "mail.example.com",
];

#[tokio::test]
async fn an_anonymous_request_sends_nothing_personal_anywhere() {
    let servers = Servers::start().await;
    let telemetry = servers.telemetry();
    let server = Server::start(app(&telemetry)).await;
    let http = client();
    let h = |k: &'static str, v: &str| (k, v.to_owned());
    let headers = [
        h("x-consent", "anonymous"),
        h("x-login", "user-1"),
        h("x-session", "sess-1"),
        h("x-request-id", "req-known"),
        h("x-forwarded-for", "203.0.113.9"),
        h("referer", "https://mail.example.com/inbox?u=1"),
        h("x-org", "acme"),
        h("x-n", "5"),
    ];
    get_with(&http, &server, "/login", &headers).await;
    get_with(&http, &server, "/alias", &headers).await;
    let report = telemetry.shutdown(WAIT).await;
    // The identify and the alias are dropped.
    assert_eq!(report.stats.consent_denied, 2, "{:?}", report.stats);
    for d in DESTINATIONS {
        accounted(report.destination(d).unwrap());
    }
    let no_personal = |what: &str, json: &str| {
        for p in PERSONAL {
            assert!(!json.contains(p), "{what}: {p} in {json}");
        }
    };

    // PostHog: anonymous events (no person profile, GeoIP off), no identity calls but the group.
    let ph = &servers.posthog;
    let names: Vec<_> = ph
        .events()
        .iter()
        .map(|e| e.str("/event").unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "user.landed",
            "user.logged_in",
            "$groupidentify",
            "user.after_group"
        ],
        "{names:?}"
    );
    let mut ids = Vec::new();
    for e in ph.events() {
        no_personal("posthog", &e.item.to_string());
        let p = &e.item["properties"];
        for key in ["$ip", "$raw_user_agent", "$referrer", "$session_id"] {
            assert!(p.get(key).is_none(), "posthog {key}: {}", e.item);
        }
        assert_eq!(p["$geoip_disable"], true, "{}", e.item);
        let id = e.str("/distinct_id").unwrap().to_owned();
        assert_eq!(id.len(), 36, "a random request id: {id}");
        if e.str("/event") != Some("$groupidentify") {
            assert_eq!(p["$process_person_profile"], false, "{}", e.item);
        }
        if e.str("/event").is_some_and(|n| n.starts_with("user.l")) {
            assert_eq!(p["n"], 5, "names and properties are kept: {}", e.item);
        }
        ids.push(id);
    }
    // One anonymous id per request, and not the same for the two requests.
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2]);

    // Segment: anonymousId only, no IP, User-Agent or referrer in the context.
    let sg = &servers.segment;
    assert!(sg.messages_of_type("identify").is_empty() && sg.messages_of_type("alias").is_empty());
    assert_eq!(sg.messages_of_type("group").len(), 1);
    for m in sg.events() {
        no_personal("segment", &m.item.to_string());
        assert!(m.item.get("userId").is_none(), "{}", m.item);
        assert_eq!(m.str("/anonymousId").map(str::len), Some(36), "{}", m.item);
        let c = &m.item["context"];
        for key in ["ip", "userAgent"] {
            assert!(c.get(key).is_none(), "segment context.{key}: {}", m.item);
        }
        assert!(c.pointer("/page/referrer").is_none(), "{}", m.item);
    }

    // Umami: no id, IP, referrer or the end user's User-Agent; no session data.
    let um = &servers.umami;
    assert_eq!(
        um.events().len(),
        3,
        "alias and group have no Umami counterpart"
    );
    for e in um.events() {
        no_personal("umami", &e.payload.to_string());
        for key in ["id", "ip", "referrer"] {
            assert!(e.payload.get(key).is_none(), "umami {key}: {}", e.payload);
        }
        assert_ne!(e.user_agent, BROWSER);
    }
    for s in um.sessions() {
        assert!(um.session_data(&s.id).is_empty());
    }
}
