//! TelemetryLayer and Tracker through a real axum server on 127.0.0.1 and a real HTTP client.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Empty;
use support::http::{Server, client, get as req, send};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_telemetry::{
    EventKind, Telemetry, Tracker, WithContextExt,
    config::{Config, DestinationConfig, RequestsConfig},
    destination::MemoryDestination,
    layer::TelemetryLayer,
    props,
    timing::TrackDurationExt,
    track,
};

const SECOND: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct UserId(String);

/// A stand-in for an auth layer: `authorization: Bearer <user>` becomes a `UserId` extension.
async fn auth(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|u| UserId(u.to_owned()));
    if let Some(u) = user {
        req.extensions_mut().insert(u);
    }
    next.run(req).await
}

fn telemetry() -> (Telemetry, MemoryDestination) {
    let t = Telemetry::builder()
        .config(
            Config::default().with_destination(DestinationConfig::new("memory").with_delivery(
                tower_telemetry::config::DeliveryConfig::default().with_queue_capacity(100_000),
            )),
        )
        .build()
        .unwrap();
    let m = t.memory("memory").unwrap();
    (t, m)
}

fn layer(t: &Telemetry) -> TelemetryLayer {
    TelemetryLayer::new(t.clone())
        .user_id(|p: &http::request::Parts| p.extensions.get::<UserId>().map(|u| u.0.clone()))
}

async fn work(tracker: Tracker) -> String {
    track!("generation.started", model = "flux-dev");
    tokio::task::yield_now().await;
    tracker.track("generation.params", props! { "steps" => 4 });
    tokio::task::yield_now().await;
    track!("generation.completed");
    tracker
        .context()
        .request_id()
        .unwrap_or_default()
        .to_owned()
}

fn app(t: &Telemetry) -> Router {
    Router::new()
        .route("/users/{id}/work", get(work))
        .layer(layer(t))
        .layer(middleware::from_fn(auth))
}

#[tokio::test]
async fn events_carry_the_request_context_and_the_id_is_echoed() {
    let (t, memory) = telemetry();
    let server = Server::start(app(&t)).await;
    let client = client();

    let (res, body) = send(
        &client,
        req(&server.url("/users/42/work?x=1"))
            .header("authorization", "Bearer user_42")
            .header("x-request-id", "abc-123")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    assert_eq!(body, "abc-123");

    assert!(t.flush(SECOND).await);
    let events = memory.take();
    assert_eq!(events.len(), 3);
    for e in &events {
        let c = e.context();
        assert_eq!(c.user_id(), Some("user_42"), "{}", e.name());
        assert_eq!(c.request_id(), Some("abc-123"));
        assert_eq!(c.path(), Some("/users/42/work"));
        assert_eq!(c.query(), Some("x=1"));
        assert_eq!(c.route(), Some("/users/{id}/work"));
        assert_eq!(c.method(), Some("GET"));
        assert_eq!(c.hostname(), Some(server.addr.to_string().as_str()));
        assert_eq!(
            c.client_ip(),
            None,
            "the IP is not captured unless configured"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn hostile_request_ids_are_replaced() {
    let (t, memory) = telemetry();
    let server = Server::start(app(&t)).await;
    let client = client();
    let long = "a".repeat(10 * 1024);
    let hostile: Vec<HeaderValue> = vec![
        HeaderValue::from_str(&long).unwrap(),
        HeaderValue::from_static("has spaces in it"),
        // The only control byte HTTP lets through in a header value.
        HeaderValue::from_bytes(b"tab\there").unwrap(),
        HeaderValue::from_bytes(b"caf\xc3\xa9-\xff").unwrap(),
    ];
    for bad in &hostile {
        let (res, body) = send(
            &client,
            req(&server.url("/users/1/work"))
                .header("x-request-id", bad.clone())
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await;
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed.as_bytes(), bad.as_bytes());
        assert_eq!(uuid::Uuid::parse_str(&echoed).unwrap().get_version_num(), 7);
        assert_eq!(body, echoed);
    }
    assert!(t.flush(SECOND).await);
    for e in memory.events() {
        let id = e.context().request_id().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_have_no_cross_talk() {
    let (t, memory) = telemetry();
    let server = Arc::new(Server::start(app(&t)).await);
    let client = client();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (client, server, limit) = (client.clone(), server.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let user = format!("user_{}", i % 100);
            let (res, body) = send(
                &client,
                req(&server.url(&format!("/users/{}/work", i % 100)))
                    .header("authorization", format!("Bearer {user}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK);
            (user, body)
        }));
    }
    let mut expected = std::collections::HashMap::new();
    for task in tasks {
        let (user, request_id) = task.await.unwrap();
        expected.insert(request_id, user);
    }
    assert_eq!(expected.len(), 1000, "request ids are unique");
    assert!(t.flush(SECOND * 10).await);
    let events = memory.events();
    assert_eq!(events.len(), 3000);
    for e in &events {
        let c = e.context();
        let user = &expected[c.request_id().unwrap()];
        assert_eq!(c.user_id(), Some(user.as_str()));
        assert_eq!(
            c.path().unwrap(),
            format!("/users/{}/work", &user["user_".len()..])
        );
    }
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

async fn boom() -> &'static str {
    track!("user.before_panic");
    async {
        if std::hint::black_box(true) {
            panic!("handler panicked");
        }
    }
    .track_duration("api.boom")
    .await;
    "unreachable"
}

async fn who() -> String {
    let c = tower_telemetry::Telemetry::global().current_context();
    track!("user.who");
    c.user_id().unwrap_or("nobody").to_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_handler_leaves_no_context_behind() {
    let (t, memory) = telemetry();
    let app = Router::new()
        .route("/boom", get(boom))
        .route("/who", get(who))
        .layer(layer(&t))
        .layer(middleware::from_fn(auth))
        .layer(tower_http::catch_panic::CatchPanicLayer::new());
    let server = Server::start(app).await;
    let client = client();
    let (res, _) = send(
        &client,
        req(&server.url("/boom"))
            .header("authorization", "Bearer alice")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Same runtime thread, next request without a user: no trace of alice.
    let (_, body) = send(
        &client,
        req(&server.url("/who"))
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "nobody");
    assert!(t.flush(SECOND).await);
    assert_eq!(
        memory.named("user.before_panic")[0].context().user_id(),
        Some("alice")
    );
    let failed = memory.named("api.boom.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].properties().get("panic").unwrap(), true);
    assert_eq!(failed[0].context().user_id(), Some("alice"));
    assert_eq!(memory.named("user.who")[0].context().user_id(), None);
    server.stop().await;
}

#[tokio::test]
async fn tracker_without_the_layer_answers_normally() {
    async fn handler(tracker: Tracker) -> &'static str {
        tracker.track("user.no_layer", props! {});
        tracker.set_user_id("u");
        "fine"
    }
    let server = Server::start(Router::new().route("/", get(handler))).await;
    let (res, body) = send(
        &client(),
        req(&server.url("/")).body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body, "fine");
    server.stop().await;
}

#[tokio::test]
async fn context_reaches_spawned_tasks_only_when_carried() {
    async fn handler(tracker: Tracker) -> &'static str {
        tokio::spawn(async { track!("user.spawned_plain") })
            .await
            .unwrap();
        tokio::spawn(async { track!("user.spawned_in_context") }.in_current_context())
            .await
            .unwrap();
        let t = tracker.clone();
        tokio::spawn(async move { t.track("user.spawned_tracker", props! {}) })
            .await
            .unwrap();
        let t = tracker.clone();
        tokio::spawn(async move { track!(&t => "user.spawned_tracker_macro") })
            .await
            .unwrap();
        "ok"
    }
    let (t, memory) = telemetry();
    // The plain spawned task has no scope and goes to the global handle; install ours so its
    // event is observable (this test binary installs no other global).
    t.install_global();
    let app = Router::new()
        .route("/", get(handler))
        .layer(layer(&t))
        .layer(middleware::from_fn(auth));
    let server = Server::start(app).await;
    send(
        &client(),
        req(&server.url("/"))
            .header("authorization", "Bearer carol")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert!(t.flush(SECOND).await);
    let user = |n: &str| memory.named(n)[0].context().user_id().map(str::to_owned);
    assert_eq!(user("user.spawned_plain"), None);
    assert_eq!(user("user.spawned_in_context").as_deref(), Some("carol"));
    assert_eq!(user("user.spawned_tracker").as_deref(), Some("carol"));
    assert_eq!(user("user.spawned_tracker_macro").as_deref(), Some("carol"));
    server.stop().await;
}

async fn ids(
    tracker: Tracker,
    id: Option<axum::Extension<tower_http::request_id::RequestId>>,
) -> String {
    let ext = id
        .map(|i| i.0.header_value().to_str().unwrap().to_owned())
        .unwrap_or_default();
    track!("user.ids");
    format!("{}|{ext}", tracker.context().request_id().unwrap())
}

#[tokio::test]
async fn works_with_tower_http_request_id_layers_in_either_order() {
    let (t, memory) = telemetry();
    let header = http::HeaderName::from_static("x-request-id");
    // tower-http outside (runs first), telemetry inside.
    let outside = Router::new()
        .route("/", get(ids))
        .layer(TelemetryLayer::new(t.clone()))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid));
    // telemetry outside, tower-http inside.
    let inside = Router::new()
        .route("/", get(ids))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
        .layer(TelemetryLayer::new(t.clone()));
    for app in [outside, inside] {
        let server = Server::start(app).await;
        let (res, body) = send(
            &client(),
            req(&server.url("/")).body(Empty::<Bytes>::new()).unwrap(),
        )
        .await;
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let (ours, theirs) = body.split_once('|').unwrap();
        assert_eq!(ours, echoed);
        assert_eq!(theirs, echoed);
        server.stop().await;
        assert!(t.flush(SECOND).await);
        assert_eq!(
            memory.take()[0].context().request_id(),
            Some(echoed.as_str())
        );
    }
}

#[tokio::test]
async fn a_request_id_the_handler_set_on_its_response_is_kept() {
    let (t, _memory) = telemetry();
    let app = Router::new()
        .route(
            "/",
            get(|| async { ([("x-request-id", "from-the-handler")], "ok") }),
        )
        .layer(layer(&t));
    let server = Server::start(app).await;
    let (res, _) = send(
        &client(),
        req(&server.url("/")).body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    let ids: Vec<_> = res.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["from-the-handler"]);
    server.stop().await;
}

#[tokio::test]
async fn the_request_id_extension_is_inserted_only_when_asked() {
    let (t, _memory) = telemetry();
    for (on, expect_extension) in [(false, false), (true, true)] {
        let app = Router::new()
            .route("/", get(ids))
            .layer(TelemetryLayer::new(t.clone()).request_id_extension(on));
        let server = Server::start(app).await;
        let (res, body) = send(
            &client(),
            req(&server.url("/")).body(Empty::<Bytes>::new()).unwrap(),
        )
        .await;
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let (ours, theirs) = body.split_once('|').unwrap();
        assert_eq!(ours, echoed);
        if expect_extension {
            assert_eq!(theirs, echoed, "the extension carries the same id");
        } else {
            assert_eq!(theirs, "", "no extension unless asked for");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn automatic_request_events() {
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_requests(RequestsConfig::enabled().with_exclude(["/health"]))
                .with_destination(DestinationConfig::new("memory")),
        )
        .build()
        .unwrap();
    let memory = t.memory("memory").unwrap();
    async fn login(tracker: Tracker) -> (StatusCode, &'static str) {
        tracker.set_user_id("dave");
        (StatusCode::CREATED, "welcome")
    }
    let app = Router::new()
        .route("/login/{provider}", get(login))
        .route("/health", get(|| async { "ok" }))
        .layer(TelemetryLayer::new(t.clone()));
    let server = Server::start(app).await;
    let client = client();
    for path in ["/login/github", "/health", "/missing"] {
        send(
            &client,
            req(&server.url(path)).body(Empty::<Bytes>::new()).unwrap(),
        )
        .await;
    }
    server.stop().await;
    assert!(t.flush(SECOND).await);
    let events = memory.named("http.request");
    let paths: HashSet<_> = events
        .iter()
        .map(|e| e.context().path().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        HashSet::from(["/login/github".to_owned(), "/missing".to_owned()])
    );
    let login = events
        .iter()
        .find(|e| e.context().path() == Some("/login/github"))
        .unwrap();
    assert_eq!(login.kind(), EventKind::PageView);
    assert_eq!(login.properties().get("status").unwrap(), 201);
    assert_eq!(
        login.properties().get("route").unwrap(),
        "/login/{provider}"
    );
    assert_eq!(login.properties().get("method").unwrap(), "GET");
    assert!(
        login
            .properties()
            .get("duration_ms")
            .unwrap()
            .as_f64()
            .unwrap()
            >= 0.0
    );
    assert_eq!(
        login.context().user_id(),
        Some("dave"),
        "set_user_id reaches the request event"
    );
}

#[tokio::test]
async fn client_ip_only_when_configured() {
    let (t, memory) = telemetry();
    let app = Router::new()
        .route(
            "/peer",
            get(|| async {
                track!("user.peer");
                "ok"
            }),
        )
        .layer(
            TelemetryLayer::new(t.clone()).client_ip(tower_telemetry::layer::ClientIp::ConnectInfo),
        );
    let proxied = Router::new()
        .route(
            "/fwd",
            get(|| async {
                track!("user.fwd");
                "ok"
            }),
        )
        .layer(
            TelemetryLayer::new(t.clone()).client_ip(tower_telemetry::layer::ClientIp::Header(
                http::HeaderName::from_static("x-forwarded-for"),
            )),
        );
    let server = Server::start(app.merge(proxied)).await;
    let client = client();
    send(
        &client,
        req(&server.url("/peer"))
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    send(
        &client,
        req(&server.url("/fwd"))
            .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    server.stop().await;
    assert!(t.flush(SECOND).await);
    assert_eq!(
        memory.named("user.peer")[0].context().client_ip(),
        Some("127.0.0.1")
    );
    assert_eq!(
        memory.named("user.fwd")[0].context().client_ip(),
        Some("203.0.113.7")
    );
}
