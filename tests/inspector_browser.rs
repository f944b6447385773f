//! The inspector page (issue #26) checked in a real browser: a headless Chromium, driven over
//! WebDriver by chromedriver, opens the page of a real axum app on loopback, watches events
//! tracked by real HTTP requests arrive with each destination's outcome (every one: queued,
//! retrying, delivered, failed with the server's message, discarded, dropped, sampled out, not
//! routed, unsupported, and unknown after all pages closed), the password redacted, the
//! counters, the explain box, the filters and Pause, a reconnect after the network drops its
//! connections (through a TCP relay the test cuts), and an unauthorized state for a wrong
//! token, then the right one entered at the prompt; the token is also checked over plain HTTP.
//! It saves a screenshot to `target/inspector.png`, or to the README's `docs/inspector.png`
//! with `UPDATE_SCREENSHOT=1`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `$CHROME` / `$CHROMEDRIVER` override): without them it fails, saying so.

#![cfg(feature = "inspector")]

mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use fantoccini::Locator;
use http::{Request, StatusCode};
use http_body_util::Empty;
use serde_json::Value;
use support::http::{HttpClient, Server, client, send};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinHandle};
use tower_telemetry::{
    Event, EventKind, Telemetry, Tracker,
    config::{Config, DeliveryConfig, DestinationConfig, RetryConfig},
    destination::{BoxFuture, DeliveryError, Destination},
    inspector::Inspector,
    layer::TelemetryLayer,
    props, track,
};
use webdriver::{Browser, poll};

const TOKEN: &str = "inspector-test-token-0123456789";
/// A property value that must never reach the page (its key is `password`).
const SECRET: &str = "hunter2-never-shown";
/// What the failing destination's "server" answers.
const SERVER_ERROR: &str = "HTTP 400: website not found";
/// Why it throws `bot.*` events away.
const BOT_CHECK: &str = "bot check: the User-Agent is a crawler";
/// What the slow destination's server answers first.
const UNAVAILABLE: &str = "HTTP 503: upstream unavailable";
/// Every wait on the page.
const WAIT: Duration = Duration::from_secs(10);

/// A destination whose server rejects everything for good, like a collection server that does
/// not know the website, and throws bots' events away; it has no counterpart for `identify`.
struct Upstream;

impl Destination for Upstream {
    fn name(&self) -> &str {
        "upstream"
    }
    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let verdicts = batch.iter().enumerate().map(|(i, e)| {
            if e.name().starts_with("bot.") {
                (i, DeliveryError::discarded(BOT_CHECK))
            } else {
                (i, DeliveryError::permanent(SERVER_ERROR))
            }
        });
        let error = DeliveryError::partial(verdicts.collect::<Vec<_>>());
        Box::pin(async move { Err(error) })
    }
    fn supports(&self, kind: EventKind) -> bool {
        kind != EventKind::Identify
    }
}

/// A destination whose server is down at first (a retryable 503), then answers only once the
/// test opens `gate`: with room for two events, its events show `retrying`, `queued` and
/// `dropped` until then.
struct Slow {
    gate: Arc<Semaphore>,
    attempts: AtomicUsize,
}

impl Destination for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn send<'a>(&'a self, _: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(DeliveryError::retryable(UNAVAILABLE));
            }
            let _open = self.gate.acquire().await;
            Ok(())
        })
    }
}

/// The handle, and the gate of its `slow` destination.
fn telemetry() -> (Telemetry, Arc<Semaphore>) {
    let fast = DeliveryConfig::default().with_flush_interval(Duration::ZERO);
    // One event at a time, room for two, retried quickly, never timed out while the gate is
    // shut.
    let slow = fast
        .with_batch_size(1)
        .with_concurrency(1)
        .with_queue_capacity(2)
        .with_timeout(Duration::from_secs(60))
        .with_retry(
            RetryConfig::default()
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(100)),
        );
    let gate = Arc::new(Semaphore::new(0));
    let telemetry = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(
                    DestinationConfig::new("mem")
                        .with_events(["ok.*", "$*"])
                        .with_delivery(fast),
                )
                .with_destination(
                    DestinationConfig::new("sampled")
                        .with_events(["sample.*"])
                        .with_sample_rate(0.0)
                        .with_delivery(fast),
                )
                .with_destination(
                    DestinationConfig::new("upstream")
                        .with_events(["fail.*", "bot.*", "$identify"])
                        .with_delivery(fast),
                )
                .with_destination(
                    DestinationConfig::new("slow")
                        .with_events(["slow.*"])
                        .with_delivery(slow),
                ),
        )
        .memory_destination("mem")
        .memory_destination("sampled")
        .destination("upstream", Upstream)
        .destination(
            "slow",
            Slow {
                gate: gate.clone(),
                attempts: AtomicUsize::new(0),
            },
        )
        .build()
        .unwrap();
    (telemetry, gate)
}

fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/ok",
            get(|| async {
                track!("ok.clicked", button = "buy", password = SECRET);
                "ok"
            }),
        )
        .route(
            "/sample",
            get(|| async {
                track!("sample.seen", page = 2);
                "ok"
            }),
        )
        .route(
            "/fail",
            get(|| async {
                track!("fail.sent", amount = 3, password = SECRET);
                "ok"
            }),
        )
        .route(
            "/bot",
            get(|| async {
                track!("bot.visit", page = "/pricing");
                "ok"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                for job in 1..=3 {
                    track!("slow.job", job = job);
                }
                "ok"
            }),
        )
        .route(
            "/bad",
            get(|tracker: Tracker| async move {
                // A control character: refused before routing.
                tracker.track(BAD_NAME, props! { "n" => 1 });
                "ok"
            }),
        )
        .route(
            "/login",
            get(|tracker: Tracker| async move {
                tracker.identify("user_3", props! { "plan" => "pro" });
                "ok"
            }),
        )
        .layer(
            TelemetryLayer::new(telemetry.clone()).user_id(|parts: &http::request::Parts| {
                parts
                    .headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            }),
        )
        // Outside the layer: the inspector's own requests are not the app's traffic.
        .nest(
            "/_telemetry",
            Inspector::new(telemetry.clone()).token(TOKEN).router(),
        )
}

/// A TCP relay in front of the app: the browser talks through it, so the test can cut every
/// open connection (the page's stream included), as a network drop would.
struct Relay {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let open = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open.lock().unwrap().push(relay.abort_handle());
            }
        });
        Relay {
            addr,
            connections,
            accept,
        }
    }

    /// Closes every connection open through the relay (both ends).
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// GETs `url` with an optional bearer token: the status and the body (the body only when
/// `read_body`: a stream never ends).
async fn get_with(
    http: &HttpClient,
    url: &str,
    token: Option<&str>,
    read_body: bool,
) -> (StatusCode, String) {
    let mut req = Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    if read_body {
        let (res, body) = send(http, req).await;
        (res.status(), body)
    } else {
        let res = tokio::time::timeout(WAIT, http.request(req))
            .await
            .expect("an answer in time")
            .unwrap();
        (res.status(), String::new())
    }
}

/// A request to the app as `user`.
async fn hit(http: &HttpClient, server: &Server, path: &str, user: &str) {
    let req = Request::get(server.url(path))
        .header("x-user", user)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (res, _) = send(http, req).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
}

/// An event name the pipeline refuses (a control character).
const BAD_NAME: &str = "bad\tname";

/// The event rows as the page shows them, newest first.
const ROWS: &str = r#"
return [...document.querySelectorAll('[data-testid=event-row]')].map(r => ({
  name: r.dataset.name,
  id: r.dataset.id,
  user: r.querySelector('[data-testid=event-user]').textContent,
  outcomes: Object.fromEntries([...r.querySelectorAll('tr.main [data-testid=badge]')]
    .map(b => [b.dataset.destination, b.dataset.outcome])),
  messages: (r.querySelector('[data-testid=messages]') || {}).textContent || '',
}));"#;

fn rows_named<'a>(rows: &'a Value, name: &str) -> Vec<&'a Value> {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == name)
        .collect()
}

/// The configured destinations, in order.
const DESTINATIONS: [&str; 4] = ["mem", "sampled", "upstream", "slow"];

/// Whether a row named `name` (in `rows`, or `rows` itself) shows the outcomes `routed` for
/// those destinations and `not_routed` for every other one.
fn has_row(rows: &Value, name: &str, routed: &[(&str, &str)]) -> bool {
    let candidates = match rows {
        Value::Array(_) => rows_named(rows, name),
        row => vec![row],
    };
    candidates.iter().any(|r| {
        r["name"] == name
            && r["outcomes"].as_object().map(|m| m.len()) == Some(DESTINATIONS.len())
            && DESTINATIONS.iter().all(|d| {
                let want = routed
                    .iter()
                    .find(|(name, _)| name == d)
                    .map_or("not_routed", |(_, o)| o);
                r["outcomes"][*d] == want
            })
    })
}

/// Destination `dest`'s outcomes of the rows named `name`, newest first.
fn outcomes_of(rows: &Value, name: &str, dest: &str) -> Vec<String> {
    rows_named(rows, name)
        .iter()
        .map(|r| r["outcomes"][dest].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn state(browser: &Browser) -> String {
    browser
        .js("return document.querySelector('[data-testid=connection]').dataset.state")
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_state(browser: &Browser, want: &str) {
    poll(WAIT, &format!("the page to be {want}"), || async {
        let s = state(browser).await;
        if s == want { Ok(()) } else { Err(s) }
    })
    .await;
}

/// The page's counter `field` of destination `dest`.
async fn counter(browser: &Browser, dest: &str, field: &str) -> u64 {
    let v = browser
        .js(&format!(
            "const e = document.querySelector('[data-testid=counters][data-destination={dest}] \
             [data-counter={field}]'); return e ? Number(e.textContent) : -1"
        ))
        .await;
    v.as_i64().map_or(0, |n| n.max(0) as u64)
}

async fn type_into(browser: &Browser, testid: &str, text: &str) {
    let input = browser
        .find(Locator::Css(&format!("[data-testid={testid}]")))
        .await
        .unwrap();
    input.clear().await.unwrap();
    if !text.is_empty() {
        input.send_keys(text).await.unwrap();
    }
}

async fn click(browser: &Browser, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_page_in_a_real_browser() {
    tokio::time::timeout(Duration::from_secs(55), scenario())
        .await
        .expect("the browser test took over 55 s");
}

async fn scenario() {
    let (telemetry, gate) = telemetry();
    let server = Server::start(app(&telemetry)).await;
    let http = client();

    // ----- over plain HTTP: the page needs no token, the API does ----------------------------
    // The page is at the mount point, with or without its trailing slash (axum's `nest`).
    let mut page = None;
    for candidate in ["/_telemetry", "/_telemetry/"] {
        let (status, body) = get_with(&http, &server.url(candidate), None, true).await;
        if status == StatusCode::OK {
            assert!(body.contains("tower-telemetry inspector"), "{candidate}");
            page.get_or_insert_with(|| server.url(candidate));
        }
    }
    let page = page.expect("the page at /_telemetry or /_telemetry/");
    for api in ["/_telemetry/api/stream", "/_telemetry/api/stats"] {
        let url = server.url(api);
        for token in [None, Some("wrong-token")] {
            let (status, body) = get_with(&http, &url, token, true).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{api} with {token:?}");
            let v: Value = serde_json::from_str(&body).expect("a JSON error");
            assert!(v["error"].is_string(), "{body}");
        }
        // (With the token, the stream's body never ends: only its status is read.)
        let (status, _) = get_with(&http, &url, Some(TOKEN), false).await;
        assert_eq!(status, StatusCode::OK, "{api} with the token");
    }

    // ----- the page, with the token in its fragment ------------------------------------------
    // The browser talks to the app through a relay, which can cut its connections.
    let relay = Relay::start(server.addr).await;
    let origin = format!("http://{}", relay.addr);
    let page = page.replace(&format!("http://{}", server.addr), &origin);
    let browser = Browser::launch().await;
    browser
        .goto(&format!("{page}#token={TOKEN}"))
        .await
        .unwrap();
    wait_state(&browser, "connected").await;
    // The token left the address bar.
    let url = browser.current_url().await.unwrap();
    assert!(url.fragment().is_none(), "{url}");

    hit(&http, &server, "/ok", "user_1").await;
    hit(&http, &server, "/sample", "user_2").await;
    hit(&http, &server, "/fail", "user_1").await;
    hit(&http, &server, "/login", "anon").await;
    hit(&http, &server, "/bot", "user_5").await;
    hit(&http, &server, "/slow", "user_6").await;
    hit(&http, &server, "/bad", "user_7").await;

    let rows = poll(WAIT, "every event with its outcomes", || async {
        let rows = browser.js(ROWS).await;
        let done = has_row(&rows, "ok.clicked", &[("mem", "delivered")])
            && has_row(&rows, "sample.seen", &[("sampled", "sampled_out")])
            && has_row(&rows, "fail.sent", &[("upstream", "failed")])
            && has_row(&rows, "bot.visit", &[("upstream", "discarded")])
            && has_row(&rows, BAD_NAME, &DESTINATIONS.map(|d| (d, "rejected")))
            && has_row(
                &rows,
                "$identify",
                &[("upstream", "unsupported"), ("mem", "delivered")],
            )
            // The slow destination (newest first): the third job dropped (no room), the second
            // waiting, the first being retried.
            && outcomes_of(&rows, "slow.job", "slow") == ["dropped", "queued", "retrying"]
            && rows_named(&rows, "slow.job")
                .iter()
                .all(|r| has_row(r, "slow.job", &[("slow", r["outcomes"]["slow"].as_str().unwrap())]));
        if done {
            Ok(rows)
        } else {
            Err(rows.to_string())
        }
    })
    .await;
    // Newest on top.
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            BAD_NAME,
            "slow.job",
            "slow.job",
            "slow.job",
            "bot.visit",
            "$identify",
            "fail.sent",
            "sample.seen",
            "ok.clicked"
        ],
        "{rows}"
    );
    assert_eq!(rows_named(&rows, "ok.clicked")[0]["user"], "user_1");
    // Why: the retry's last error, the drop's reason, the discard's.
    let message = |name: &str, i: usize| rows_named(&rows, name)[i]["messages"].to_string();
    assert!(message("slow.job", 2).contains(UNAVAILABLE), "{rows}");
    assert!(message("slow.job", 0).contains("slow: "), "{rows}");
    assert!(message("bot.visit", 0).contains(BOT_CHECK), "{rows}");
    // A refused event's reason, said once for all its destinations.
    let refused = message(BAD_NAME, 0);
    assert_eq!(refused.matches("rejected: ").count(), 1, "{rows}");
    assert!(refused.contains("control character"), "{rows}");
    // The server's message is in the row itself...
    let failed = rows_named(&rows, "fail.sent")[0];
    assert!(
        failed["messages"].as_str().unwrap().contains(SERVER_ERROR),
        "{failed}"
    );

    // ...and in its details, with the properties (the password redacted) and the context.
    click(
        &browser,
        "[data-testid=event-row][data-name='fail.sent'] td.name",
    )
    .await;
    let details = poll(WAIT, "the details of fail.sent", || async {
        let v = browser
            .js(
                "const d = document.querySelector(\"[data-name='fail.sent'] [data-testid=event-details]\");\
                 return d && d.offsetParent ? d.innerText : null",
            )
            .await;
        v.as_str().map(str::to_owned).ok_or_else(|| v.to_string())
    })
    .await;
    assert!(details.contains(SERVER_ERROR), "{details}");
    assert!(details.contains(r#""password": "[REDACTED]""#), "{details}");
    assert!(details.contains(r#""amount": 3"#), "{details}");
    assert!(details.contains(r#""route": "/fail""#), "{details}");
    let html = browser
        .js("return document.documentElement.outerHTML")
        .await;
    assert!(
        !html.as_str().unwrap().contains(SECRET),
        "the password reached the page"
    );

    // ----- counters and last errors, from /api/stats --------------------------------------------
    poll(WAIT, "the counters", || async {
        let seen = [
            counter(&browser, "mem", "delivered").await,
            counter(&browser, "upstream", "failed").await,
            counter(&browser, "upstream", "discarded").await,
            counter(&browser, "upstream", "unsupported").await,
            counter(&browser, "sampled", "sampled_out").await,
            counter(&browser, "slow", "dropped_queue_full").await,
            counter(&browser, "slow", "retries").await,
        ];
        if seen[0] >= 2 && seen[1..].iter().all(|n| *n >= 1) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    poll(WAIT, "upstream's last error", || async {
        let v = browser
            .js("return document.querySelector('[data-testid=counters][data-destination=upstream] [data-testid=last-errors]').textContent")
            .await;
        let text = v.as_str().unwrap_or_default().to_owned();
        if text.contains(SERVER_ERROR) { Ok(()) } else { Err(text) }
    })
    .await;

    // ----- explain ------------------------------------------------------------------------------
    type_into(&browser, "explain-input", "fail.sent").await;
    click(&browser, "[data-testid=explain-button]").await;
    poll(WAIT, "the explanation of fail.sent", || async {
        let v = browser
            .js("return Object.fromEntries([...document.querySelectorAll('[data-testid=explain-destination]')]\
                 .map(e => [e.dataset.destination, e.dataset.routed]))")
            .await;
        if v["upstream"] == "true" && v["mem"] == "false" && v["sampled"] == "false" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    // ----- filters ------------------------------------------------------------------------------
    type_into(&browser, "filter-name", "ok.*").await;
    poll(WAIT, "only ok.* rows", || async {
        let rows = browser.js(ROWS).await;
        let names: Vec<String> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        if names == ["ok.clicked"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    type_into(&browser, "filter-name", "").await;
    type_into(&browser, "filter-user", "user_2").await;
    poll(WAIT, "only user_2's rows", || async {
        let rows = browser.js(ROWS).await;
        let n = rows.as_array().map_or(0, Vec::len);
        if n == 1 && rows[0]["name"] == "sample.seen" {
            Ok(())
        } else {
            Err(rows.to_string())
        }
    })
    .await;
    type_into(&browser, "filter-user", "").await;

    // ----- Pause: a new event is counted, not shown, until resumed ------------------------------
    let before = browser.js(ROWS).await.as_array().map_or(0, Vec::len);
    assert_eq!(before, 9);
    click(&browser, "[data-testid=pause]").await;
    hit(&http, &server, "/ok", "user_4").await;
    poll(WAIT, "one event arrived while paused", || async {
        let v = browser
            .js("return document.querySelector('[data-testid=paused-count]').dataset.count")
            .await;
        if v == "1" { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    assert_eq!(
        browser.js(ROWS).await.as_array().map_or(0, Vec::len),
        before
    );
    click(&browser, "[data-testid=pause]").await;
    poll(WAIT, "the paused event shown after Resume", || async {
        let rows = browser.js(ROWS).await;
        if rows[0]["user"] == "user_4" && rows[0]["outcomes"]["mem"] == "delivered" {
            Ok(())
        } else {
            Err(rows.to_string())
        }
    })
    .await;

    // ----- the screenshot for the README: events of every outcome, counters, an explanation ----
    browser.js("window.scrollTo(0, 0); return null").await;
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // Into target/ on every run; over the README's docs/inspector.png when asked
    // (`UPDATE_SCREENSHOT=1`), so an ordinary test run leaves the working tree clean.
    let dir = if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs")
    } else {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target")
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/inspector.png"), &png).unwrap();

    // No script error, no failed load, no Content-Security-Policy violation so far.
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the console: {errors:#?}");
    // Nothing but this server was asked for anything (no CDN, fonts or images).
    let urls = browser
        .js("return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name)")
        .await;
    let urls: Vec<&str> = urls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!urls.is_empty());
    for u in &urls {
        assert!(u.starts_with(&format!("{origin}/")), "the page loaded {u}");
    }

    // ----- the network drops the page's connections: it reconnects, the list is replaced ------
    relay.cut();
    wait_state(&browser, "reconnecting").await;
    wait_state(&browser, "connected").await;
    poll(
        WAIT,
        "the recent events once, from the new snapshot",
        || async {
            let n = browser.js(ROWS).await.as_array().map_or(0, Vec::len);
            if n == 10 { Ok(()) } else { Err(n.to_string()) }
        },
    )
    .await;

    // ----- a wrong token: the page says unauthorized --------------------------------------------
    browser.goto("about:blank").await.unwrap();
    // The server has seen the page go (the last one: so what is still on its way is not
    // recorded from now on) before the next page opens.
    let stats_url = server.url("/_telemetry/api/stats");
    poll(WAIT, "no page open", || async {
        let (_, body) = get_with(&http, &stats_url, Some(TOKEN), true).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        match v["inspector"]["subscribers"].as_u64() {
            Some(0) => Ok(()),
            n => Err(format!("{n:?} open")),
        }
    })
    .await;
    browser
        .goto(&format!("{page}#token=wrong-token"))
        .await
        .unwrap();
    wait_state(&browser, "unauthorized").await;
    let auth = browser
        .find(Locator::Css("[data-testid=auth-error]"))
        .await
        .unwrap();
    assert!(
        auth.is_displayed().await.unwrap(),
        "the auth error is shown"
    );
    let text = auth.text().await.unwrap();
    assert!(text.contains("Unauthorized"), "{text}");
    // The page asks for the token; given the right one, it connects and shows the events.
    type_into(&browser, "token-input", TOKEN).await;
    click(&browser, "[data-testid=token-submit]").await;
    wait_state(&browser, "connected").await;
    assert!(
        !auth.is_displayed().await.unwrap(),
        "the auth error is gone"
    );
    poll(WAIT, "the recent events again", || async {
        let n = browser.js(ROWS).await.as_array().map_or(0, Vec::len);
        if n == 10 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;

    // The slow jobs were on their way when the last page closed (about:blank): nothing was
    // recorded since, so the new page is told `unknown`...
    poll(WAIT, "the pending slow jobs unknown", || async {
        let seen = outcomes_of(&browser.js(ROWS).await, "slow.job", "slow");
        if seen == ["dropped", "unknown", "unknown"] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    // ...until the slow destination's server answers at last: its jobs are delivered.
    gate.add_permits(1000);
    poll(WAIT, "the slow jobs delivered", || async {
        let seen = outcomes_of(&browser.js(ROWS).await, "slow.job", "slow");
        if seen == ["dropped", "delivered", "delivered"] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;

    browser.close().await;
    drop(relay);

    // ----- the accounting, after shutdown -----------------------------------------------------
    server.stop().await;
    let report = telemetry.shutdown(Duration::from_secs(5)).await;
    for d in &report.stats.destinations {
        assert_eq!(
            d.enqueued,
            d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
            "{}: {d:?}",
            d.name
        );
    }
    let stat = |name: &str| report.destination(name).unwrap().clone();
    assert_eq!(stat("mem").delivered, 3, "{report}");
    assert_eq!(stat("upstream").failed, 1, "{report}");
    assert_eq!(stat("upstream").unsupported, 1, "{report}");
    assert_eq!(stat("sampled").sampled_out, 1, "{report}");
    assert_eq!(stat("sampled").enqueued, 0, "{report}");
    assert_eq!(stat("upstream").discarded, 1, "{report}");
    let slow = stat("slow");
    assert_eq!(
        (slow.enqueued, slow.delivered, slow.dropped_queue_full),
        (2, 2, 1),
        "{report}"
    );
    assert!(slow.retries >= 1, "{report}");
}
