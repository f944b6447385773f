//! Identity operations through the `umami` destination, against the contract server
//! (tests/support/umami_server.rs), over real HTTP on 127.0.0.1: identify as session data of
//! the user's session, events in that same session, alias and group never sent, groups as
//! event data. The identity events are built by hand, as the core lays them out
//! (`tower_telemetry::identity`).
#![cfg(feature = "umami")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::umami_server::{DataType, UmamiServer, WEBSITE_ID, user_session};
use tower_telemetry::{
    Context, Event, EventKind, Properties, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, RetryConfig},
    destination::umami::{DistinctId, Forward, UmamiConfig, UmamiDestination, UmamiMode},
    destination::{DeliveryErrorKind, Destination},
    identity, props, track,
};

const WAIT: Duration = Duration::from_secs(10);
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn umami(server: &UmamiServer, mode: UmamiMode) -> UmamiDestination {
    UmamiDestination::new(UmamiConfig::new(server.url(), WEBSITE_ID).with_mode(mode)).unwrap()
}

/// The context of one request of `user` (none: not known yet).
fn request(user: Option<&str>) -> Context {
    let ctx = Context::new()
        .with_session_id("sess_1")
        .with_path("/account")
        .with_hostname("app.example.com")
        .with_language("de-DE,de;q=0.9")
        .with_user_agent(BROWSER);
    match user {
        Some(u) => ctx.with_user_id(u.to_owned()),
        None => ctx,
    }
}

fn identify(ctx: Context, traits: Properties) -> Arc<Event> {
    Arc::new(
        Event::new(identity::IDENTIFY, traits)
            .with_kind(EventKind::Identify)
            .with_context(ctx),
    )
}

fn event(name: &str, ctx: Context, seq: u64) -> Arc<Event> {
    Arc::new(Event::new(name.to_owned(), props! { "seq" => seq }).with_context(ctx))
}

#[tokio::test]
async fn an_identify_is_session_data_of_the_users_session_and_events_share_it() {
    for mode in [UmamiMode::Send, UmamiMode::Batch] {
        let server = UmamiServer::start().await;
        let umami = umami(&server, mode);
        let user = Some("user_42");
        let batch = [
            event("user.clicked", request(user), 0),
            identify(
                request(user),
                props! {
                    "plan" => "pro",
                    "seats" => 12,
                    "trial" => false,
                    "address" => json!({"city": "Berlin"}),
                    "since" => "2025-01-02T03:04:05Z",
                    identity::SET_ONCE => json!({"first_plan": "free", "plan": "trial"}),
                    identity::ANON_DISTINCT_ID => "sess_1",
                },
            ),
            event("user.upgraded", request(user), 1),
        ];
        umami.send(&batch).await.unwrap();
        let path = match mode {
            UmamiMode::Send => "/api/send",
            _ => "/api/batch",
        };
        assert!(server.requests().iter().all(|r| r.path == path), "{mode:?}");

        let session = user_session("user_42");
        let sessions = server.sessions();
        assert_eq!(sessions.len(), 1, "one session for the user: {sessions:?}");
        assert_eq!(sessions[0].id, session);
        assert_eq!(sessions[0].distinct_id.as_deref(), Some("user_42"));
        let events = server.events();
        assert_eq!(events.len(), 2, "the identify is no event");
        assert!(events.iter().all(|e| e.session_id == session));

        let data = server.session_data(&session);
        let mut keys: Vec<&str> = data.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "address.city",
                "first_plan",
                "plan",
                "seats",
                "since",
                "trial"
            ],
            "traits and set-once traits, no reserved keys"
        );
        let datum = |key| server.session_datum(&session, key).unwrap();
        assert_eq!(datum("plan").string_value, "pro", "the trait wins");
        assert_eq!(datum("first_plan").string_value, "free");
        assert_eq!(
            (datum("seats").data_type, datum("seats").string_value),
            (DataType::Number, "12.0000".into())
        );
        assert_eq!(datum("trial").data_type, DataType::Boolean);
        assert_eq!(datum("address.city").string_value, "Berlin");
        assert_eq!(
            datum("since").data_type,
            DataType::Date,
            "sent with milliseconds: {:?}",
            datum("since")
        );
        assert!(
            data.iter()
                .all(|r| r.distinct_id.as_deref() == Some("user_42"))
        );
    }
}

#[tokio::test]
async fn a_later_identify_updates_the_session_and_one_without_traits_stores_nothing() {
    let server = UmamiServer::start().await;
    let umami = umami(&server, UmamiMode::Auto);
    let ctx = request(Some("user_7"));
    umami
        .send(&[identify(ctx.clone(), Properties::new())])
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 1, "sent all the same");
    assert!(server.session_data(&user_session("user_7")).is_empty());

    umami
        .send(&[identify(ctx.clone(), props! { "plan" => "free" })])
        .await
        .unwrap();
    umami
        .send(&[identify(ctx, props! { "plan" => "pro", "seats" => 2 })])
        .await
        .unwrap();
    let data = server.session_data(&user_session("user_7"));
    assert_eq!(data.len(), 2, "{data:?}");
    assert_eq!(data[0].key, "plan");
    assert_eq!(data[0].string_value, "pro");
    assert_eq!(server.sessions().len(), 1);
}

/// Without `id` (`distinct_id: none`) Umami derives the session from the IP and User-Agent:
/// an identify goes with the same ones as the user's events, so it still lands in theirs.
#[tokio::test]
async fn without_ids_an_identify_lands_in_the_session_its_events_resolve_to() {
    let server = UmamiServer::start().await;
    let umami = UmamiDestination::new(
        UmamiConfig::new(server.url(), WEBSITE_ID)
            .with_mode(UmamiMode::Batch)
            .with_distinct_id(DistinctId::None)
            .with_forward(Forward::default().with_ip(true)),
    )
    .unwrap();
    let of = |user: &str, ip: &str| request(Some(user)).with_client_ip(ip.to_owned());
    let batch = [
        event("user.clicked", of("ann", "203.0.113.1"), 0),
        identify(of("ann", "203.0.113.1"), props! { "name" => "Ann" }),
        event("user.clicked", of("bob", "203.0.113.2"), 1),
        identify(of("bob", "203.0.113.2"), props! { "name" => "Bob" }),
        event("user.upgraded", of("ann", "203.0.113.1"), 2),
    ];
    umami.send(&batch).await.unwrap();
    let sessions = server.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions.iter().all(|s| s.distinct_id.is_none()));
    for e in server.events() {
        let name = if e.field("ip") == Some("203.0.113.1") {
            "Ann"
        } else {
            "Bob"
        };
        let datum = server.session_datum(&e.session_id, "name").unwrap();
        assert_eq!(datum.string_value, name);
    }
}

/// What Umami cannot do (umami#3663): a visitor's events from before the identify (no user
/// id, so no `id`) are in the session of their IP and User-Agent, and stay there.
#[tokio::test]
async fn anonymous_events_before_an_identify_stay_in_their_own_session() {
    let server = UmamiServer::start().await;
    let umami = umami(&server, UmamiMode::Batch);
    let batch = [
        event("user.landed", request(None), 0),
        identify(request(Some("user_42")), props! { "plan" => "pro" }),
        event("user.upgraded", request(Some("user_42")), 1),
    ];
    umami.send(&batch).await.unwrap();
    let sessions = server.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let events = server.events();
    assert_ne!(events[0].session_id, user_session("user_42"));
    assert_eq!(events[1].session_id, user_session("user_42"));
    assert!(server.session_data(&events[0].session_id).is_empty());
    assert_eq!(server.session_data(&events[1].session_id).len(), 1);
}

#[tokio::test]
async fn alias_and_group_are_not_supported_and_never_sent() {
    let server = UmamiServer::start().await;
    let umami = umami(&server, UmamiMode::Auto);
    assert!(!umami.supports(EventKind::Alias));
    assert!(!umami.supports(EventKind::Group));
    assert!(umami.supports(EventKind::Identify));
    assert!(umami.supports(EventKind::PageView));
    assert!(umami.supports(EventKind::Custom));

    // Given them anyway (the core never does), it fails them for good without a request.
    let alias = Event::new(
        identity::ALIAS,
        props! { identity::PREVIOUS_ID => "sess_1" },
    )
    .with_kind(EventKind::Alias)
    .with_context(request(Some("user_42")));
    let group = Event::new(
        identity::GROUP,
        props! { identity::GROUP_TYPE => "company", identity::GROUP_KEY => "acme", "seats" => 12 },
    )
    .with_kind(EventKind::Group)
    .with_context(request(Some("user_42")));
    let err = umami
        .send(&[Arc::new(alias), Arc::new(group)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DeliveryErrorKind::Permanent);
    assert!(server.requests().is_empty());
    assert!(server.sessions().is_empty());
    assert_eq!(umami.stats().requests, 0);
}

/// Through a handle: events of a scope with groups carry them as data (stored as
/// `$groups.<type>`), a property of the same name wins, and every event is accounted for.
#[tokio::test]
async fn groups_are_event_data_and_every_event_is_accounted_for() {
    let server = UmamiServer::start().await;
    // `batch`: a failed request is retried by the worker (`auto` would first probe it with
    // `/api/send`).
    let umami = umami(&server, UmamiMode::Batch);
    let delivery = DeliveryConfig::default()
        .with_flush_interval(Duration::from_millis(5))
        .with_retry(
            RetryConfig::default()
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(50)),
        );
    let telemetry = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("umami").with_delivery(delivery)),
        )
        .destination("umami", umami.clone())
        .build()
        .unwrap();
    // The first request fails: its events are retried, not lost or doubled.
    server.fail_next(1);
    let ctx = request(Some("user_42"))
        .with_group("company", "acme")
        .with_group("team", "ml");
    telemetry
        .scope(ctx.clone(), async {
            track!(&telemetry => "user.upgraded", seq = 0u64, plan = "pro");
            track!(&telemetry => "user.moved", seq = 1u64, "$groups.team" = "infra");
        })
        .await;
    telemetry
        .scope(ctx.with_user_agent("curl/8.0"), async {
            track!(&telemetry => "user.scripted", seq = 2u64);
        })
        .await;
    let report = telemetry.shutdown(WAIT).await;

    let d = report.destination("umami").unwrap();
    assert_eq!((d.delivered, d.discarded, d.failed), (2, 1, 0), "{d:?}");
    assert_eq!(d.unsupported, 0);
    assert!(d.retries >= 1, "{d:?}");
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{d:?}"
    );

    let events = server.events();
    assert_eq!(events.len(), 2);
    let session = user_session("user_42");
    for e in &events {
        assert_eq!(e.session_id, session);
        let rows = e.data_rows();
        let value = |key: &str| {
            rows.iter()
                .find(|r| r.key == key)
                .map(|r| r.string_value.clone())
        };
        assert_eq!(value("$groups.company").as_deref(), Some("acme"));
        let team = if e.name.as_deref() == Some("user.moved") {
            "infra"
        } else {
            "ml"
        };
        assert_eq!(value("$groups.team").as_deref(), Some(team), "{rows:?}");
        assert_eq!(
            rows.iter().filter(|r| r.key == "$groups.team").count(),
            1,
            "the property wins, no second row: {rows:?}"
        );
    }
}
