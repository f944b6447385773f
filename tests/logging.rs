//! The logging destination's JSON-lines output: one parsable line per event, fields in order,
//! hostile text escaped, configuration, and write errors counted as delivery failures.

mod support;

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::logs::Logs;
use tower_telemetry::{
    Context, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, RetryConfig},
    destination::LoggingDestination,
    track,
};

const SECOND: Duration = Duration::from_secs(1);

/// A telemetry handle whose only destination, `logging`, writes JSON lines to `writer`.
fn lines_to(writer: impl Write + Send + 'static, delivery: DeliveryConfig) -> Telemetry {
    Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("logging").with_delivery(delivery)),
        )
        .destination("logging", LoggingDestination::default().with_writer(writer))
        .build()
        .unwrap()
}

fn parse_lines(text: &str) -> Vec<Value> {
    assert!(text.ends_with('\n'), "the last line is not ended: {text:?}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[tokio::test]
async fn each_event_is_one_json_line_with_its_fields_in_order() {
    let out = Logs::default();
    // Catches any `tracing` record: JSON-lines output replaces them.
    let records = Logs::default();
    let _guard = tracing::subscriber::set_default(records.subscriber(tracing::Level::TRACE));
    let t = lines_to(out.clone(), DeliveryConfig::default());
    t.scope(
        Context::new()
            .with_user_id("u1")
            .with_session_id("s1")
            .with_request_id("r1")
            .with_path("/signup"),
        async {
            track!(&t => "user.signup", plan = "pro", seats = 3);
        },
    )
    .await;
    track!(&t => "system.boot");
    track!(&t => "error.db", detail = json!({ "code": 7, "tags": ["a", "b"] }));
    assert!(t.flush(SECOND * 5).await);

    let text = out.text();
    let lines = parse_lines(&text);
    assert_eq!(lines.len(), 3, "{text}");

    let first = text.lines().next().unwrap();
    let keys = [
        "timestamp",
        "level",
        "target",
        "event",
        "category",
        "event_id",
        "properties",
        "user_id",
        "session_id",
        "request_id",
        "path",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| first.find(&format!("\"{k}\":")).expect(k))
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "keys out of order: {first}"
    );
    assert_eq!(lines[0].as_object().unwrap().len(), keys.len(), "{first}");

    let l = &lines[0];
    assert_eq!(l["level"], "INFO");
    assert_eq!(l["target"], "tower_telemetry");
    assert_eq!(l["event"], "user.signup");
    assert_eq!(l["category"], "user");
    assert_eq!(l["properties"], json!({ "plan": "pro", "seats": 3 }));
    assert_eq!(
        (
            &l["user_id"],
            &l["session_id"],
            &l["request_id"],
            &l["path"]
        ),
        (&json!("u1"), &json!("s1"), &json!("r1"), &json!("/signup"))
    );
    assert_eq!(l["event_id"].as_str().unwrap().len(), 36);
    // RFC 3339, UTC, milliseconds: 2026-11-25T12:50:35.123Z
    let ts = l["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "{ts}");
    assert_eq!(
        (&ts[4..5], &ts[10..11], &ts[19..20], &ts[23..]),
        ("-", "T", ".", "Z")
    );

    // No context: no context fields.
    let boot = lines[1].as_object().unwrap();
    assert_eq!(boot["event"], "system.boot");
    assert_eq!(boot["properties"], json!({}));
    for k in ["user_id", "session_id", "request_id", "path"] {
        assert!(!boot.contains_key(k), "{k} in {boot:?}");
    }
    assert_eq!(
        lines[2]["properties"]["detail"],
        json!({ "code": 7, "tags": ["a", "b"] })
    );

    let ids: std::collections::HashSet<_> = lines.iter().map(|l| l["event_id"].clone()).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        !records.text().contains("telemetry event"),
        "a tracing record was emitted too: {}",
        records.text()
    );
    assert_eq!(t.stats().destination("logging").unwrap().delivered, 3);
}

#[tokio::test]
async fn hostile_text_is_escaped_and_round_trips() {
    let out = Logs::default();
    let t = lines_to(out.clone(), DeliveryConfig::default());
    let raw = [
        '\n', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{9b}', '\u{9f}', '\u{2028}', '\u{2029}',
        '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
    ];
    let evil =
        "line\nFAKE {\"event\":\"forged\"}\r\u{1b}[31mred\u{9b}2J\u{7f}\u{80}\u{9f}\u{2028}\u{2029}\u{202a}\u{202e}\u{2066}\u{2069} é 日本 \"q\" \\".to_owned();
    t.scope(
        Context::new()
            .with_user_id(evil.clone())
            .with_session_id(evil.clone())
            .with_request_id(evil.clone())
            .with_path(evil.clone()),
        async {
            let nested: serde_json::Map<String, Value> =
                [(evil.clone(), json!([evil, { "k": evil }]))]
                    .into_iter()
                    .collect();
            track!(&t => "user.evil", value = evil.as_str(), nested = nested);
        },
    )
    .await;
    assert!(t.flush(SECOND * 5).await);

    let text = out.text();
    for c in raw.iter().skip(1) {
        assert!(!text.contains(*c), "raw {c:?} in {text:?}");
    }
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    let lines = parse_lines(&text);
    let l = &lines[0];
    for k in ["user_id", "session_id", "request_id", "path"] {
        assert_eq!(l[k], evil.as_str(), "{k}");
    }
    assert_eq!(l["properties"]["value"], evil.as_str());
    assert_eq!(
        l["properties"]["nested"][evil.as_str()],
        json!([evil, { "k": evil }])
    );
    // Plain non-ASCII text stays as it is.
    assert!(text.contains(" é 日本 "), "{text}");
    assert!(
        text.contains("\\u2028") && text.contains("\\u009b"),
        "{text}"
    );
}

#[tokio::test]
async fn the_configured_level_names_each_line() {
    let out = Logs::default();
    let t = Telemetry::builder()
        .destination(
            "logging",
            LoggingDestination::new(tracing::Level::WARN).with_writer(out.clone()),
        )
        .build()
        .unwrap();
    for i in 0..250 {
        track!(&t => "system.tick", i = i);
    }
    assert!(t.flush(SECOND * 5).await);
    let lines = parse_lines(&out.text());
    assert_eq!(lines.len(), 250);
    assert!(lines.iter().all(|l| l["level"] == "WARN"));
    let order: Vec<i64> = lines
        .iter()
        .map(|l| l["properties"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(order, (0..250).collect::<Vec<_>>());
}

#[test]
fn output_is_configured_case_insensitively() {
    let yaml = "telemetry:\n  destinations:\n    logging:\n      level: debug\n      output: StdErr\n    audit:\n      type: logging\n      output: tracing\n    plain:\n      type: logging\n";
    let config = Config::from_yaml_str_with_env(yaml, |_| None).unwrap();
    let of = |name: &str| {
        LoggingDestination::from_settings(config.destination(name).unwrap().settings()).unwrap()
    };
    let stderr = of("logging");
    assert!(stderr.writes_json_lines());
    assert_eq!(stderr.level(), tracing::Level::DEBUG);
    assert!(format!("{stderr:?}").contains("stderr"), "{stderr:?}");
    assert!(!of("audit").writes_json_lines());
    assert!(!of("plain").writes_json_lines());
    assert!(Telemetry::from_yaml_str(yaml).is_ok());
}

#[test]
fn an_unknown_output_is_an_error_naming_the_key() {
    // From YAML: path and line.
    let errors = Config::from_yaml_str_with_env(
        "telemetry:\n  destinations:\n    logging:\n      enabled: true\n      output: file\n",
        |_| None,
    )
    .unwrap_err();
    let e = &errors.errors()[0];
    assert_eq!(
        (e.path(), e.line()),
        ("telemetry.destinations.logging.output", Some(5))
    );
    assert!(e.to_string().contains("found the string `file`"), "{e}");

    // Built in code: checked when the destination is built.
    let err = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("logging").with_setting("output", "file")),
        )
        .build()
        .unwrap_err();
    let e = &err.errors()[0];
    assert!(e.path().ends_with("logging.output"), "{e}");
    assert!(e.to_string().contains("unknown output `file`"), "{e}");
}

/// Fails every write with `kind`, counting the attempts; or, with `fail_first`, only the first
/// that many writes, then captures.
#[derive(Clone)]
struct Failing {
    kind: io::ErrorKind,
    fail_first: Option<usize>,
    calls: Arc<Mutex<usize>>,
    out: Logs,
}

impl Failing {
    fn new(kind: io::ErrorKind, fail_first: Option<usize>) -> Self {
        Failing {
            kind,
            fail_first,
            calls: Arc::default(),
            out: Logs::default(),
        }
    }
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        if self.fail_first.is_none_or(|n| *calls <= n) {
            return Err(self.kind.into());
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_closed_pipe_fails_the_events_at_once() {
    let w = Failing::new(io::ErrorKind::BrokenPipe, None);
    let t = lines_to(w.clone(), DeliveryConfig::default());
    for _ in 0..3 {
        track!(&t => "user.click");
    }
    assert!(t.flush(SECOND * 5).await);
    let stats = t.stats();
    let s = stats.destination("logging").unwrap();
    assert_eq!((s.delivered, s.failed, s.retries), (0, 3, 0), "{s:?}");
    assert_eq!(
        *w.calls.lock().unwrap(),
        1,
        "one write per batch, never retried"
    );
}

#[tokio::test]
async fn other_write_errors_are_retried() {
    let w = Failing::new(io::ErrorKind::Other, Some(1));
    let retry = RetryConfig::default().with_initial_backoff(Duration::from_millis(1));
    let t = lines_to(w.clone(), DeliveryConfig::default().with_retry(retry));
    for _ in 0..3 {
        track!(&t => "user.click");
    }
    assert!(t.flush(SECOND * 5).await);
    let stats = t.stats();
    let s = stats.destination("logging").unwrap();
    assert_eq!((s.delivered, s.failed), (3, 0), "{s:?}");
    assert!(s.retries >= 1, "{s:?}");
    assert_eq!(parse_lines(&w.out.text()).len(), 3);
}

/// Keeps each `write` call's bytes apart, to tell batches apart.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// With the destination's own delivery defaults, a batch waits up to 10 ms for more events:
/// events 5 ms apart share one write, which happens by itself 10 ms after the first, with no
/// `flush`.
#[tokio::test(start_paused = true)]
async fn a_batch_lingers_ten_milliseconds_by_default() {
    let writes = Writes::default();
    let t = Telemetry::builder()
        .destination(
            "logging",
            LoggingDestination::default().with_writer(writes.clone()),
        )
        .build()
        .unwrap();
    let count = || writes.0.lock().unwrap().len();
    track!(&t => "system.first");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(count(), 0, "written before the linger ran out");
    track!(&t => "system.second");
    tokio::time::sleep(Duration::from_millis(6)).await;
    let writes = writes.0.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "one batch, written once");
    let text = String::from_utf8(writes[0].clone()).unwrap();
    let names: Vec<Value> = parse_lines(&text)
        .iter()
        .map(|l| l["event"].clone())
        .collect();
    assert_eq!(names, [json!("system.first"), json!("system.second")]);
}
