//! Every value the crate writes into its own log records is escaped, whoever supplied it:
//! the end user's User-Agent (Umami's bot-check warning), a server's answer (Umami failure
//! warnings and retries), an event's properties (`debug: true` dumps), a configuration's
//! values (errors). And the logging destination's `tracing` records quote values a logfmt
//! reader would split.
#![cfg(feature = "umami")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::accounted;
use support::logs::Logs;
use support::umami_server::UmamiServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_telemetry::config::{Config, DeliveryConfig, DestinationConfig, RetryConfig};
use tower_telemetry::destination::LoggingDestination;
use tower_telemetry::destination::umami::{UmamiConfig, UmamiDestination};
use tower_telemetry::{Context, Telemetry, track};

const WEBSITE: &str = "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60";
const WAIT: Duration = Duration::from_secs(20);

/// Characters that must never reach a log record raw.
const RAW: &[char] = &[
    '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{9b}', '\u{9f}', '\u{2028}', '\u{2029}', '\u{202a}',
    '\u{202e}', '\u{2066}', '\u{2069}',
];

/// A hostile text: a forged line, a terminal escape, C1, line separators, bidi overrides.
fn hostile(prefix: &str) -> String {
    format!(
        "{prefix}\n2026-01-01T00:00:00Z ERROR FORGED line\r\u{1b}[31m\u{7f}\u{80}\u{9b}2J\u{9f}\u{2028}\u{2029}\u{202a}\u{202e}\u{2066}\u{2069}"
    )
}

fn assert_escaped(text: &str) {
    for c in RAW {
        assert!(!text.contains(*c), "raw {c:?} in {text:?}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line in {text}"
    );
}

fn fast() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_flush_interval(Duration::ZERO)
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
}

fn umami_handle(url: String) -> (Telemetry, UmamiDestination) {
    let umami = UmamiDestination::new(UmamiConfig::new(url, WEBSITE)).unwrap();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("umami").with_delivery(fast())),
        )
        .destination("umami", umami.clone())
        .build()
        .unwrap();
    (t, umami)
}

#[tokio::test]
async fn the_bot_check_warning_escapes_the_end_users_user_agent() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    let server = UmamiServer::start().await;
    let (t, umami) = umami_handle(server.url());
    let ua = hostile("Googlebot/2.1");
    t.scope(Context::new().with_user_agent(ua), async {
        track!(&t => "user.clicked");
    })
    .await;
    let report = t.shutdown(WAIT).await;
    let d = report.destination("umami").unwrap();
    assert_eq!(d.discarded, 1, "{d:?}");
    accounted(d);
    assert_eq!(umami.stats().discarded, 1);
    let text = logs.text();
    assert!(
        text.contains("Umami discarded events as bot traffic"),
        "{text}"
    );
    assert!(text.contains("Googlebot/2.1\\n2026"), "{text}");
    assert_escaped(&text);
}

/// A server that answers every request with `status` and `body` (raw bytes), then closes.
async fn answering(status: &'static str, body: Vec<u8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                // The request: headers, then Content-Length bytes of body.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let mut answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                answer.extend_from_slice(&body);
                let _ = socket.write_all(&answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn umami_failure_warnings_escape_the_servers_answer() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    for status in ["400 Bad Request", "503 Service Unavailable"] {
        let addr = answering(status, hostile("no").into_bytes()).await;
        let (t, _umami) = umami_handle(format!("http://{addr}"));
        track!(&t => "user.clicked");
        let report = t.shutdown(WAIT).await;
        let d = report.destination("umami").unwrap();
        assert_eq!(d.failed, 1, "{status}: {d:?}");
        accounted(d);
    }
    let text = logs.text();
    assert!(
        text.contains("telemetry delivery failed; retrying"),
        "{text}"
    );
    assert!(
        text.contains("not delivered") || text.contains("giving up"),
        "{text}"
    );
    assert!(text.contains("no\\n2026"), "{text}");
    assert_escaped(&text);
}

/// The shared HTTP module's once-logged rejection warning (PostHog, Segment, webhooks) quotes
/// the server's answer escaped too.
#[cfg(feature = "webhook")]
#[tokio::test]
async fn http_rejection_warnings_escape_the_servers_answer() {
    use tower_telemetry::destination::webhook::{WebhookConfig, WebhookDestination};
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    let addr = answering("400 Bad Request", hostile("refused").into_bytes()).await;
    let hooks = WebhookDestination::new(WebhookConfig::new(
        format!("http://{addr}/hook"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ))
    .unwrap();
    let t = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("hooks").with_delivery(fast())),
        )
        .destination("hooks", hooks)
        .build()
        .unwrap();
    track!(&t => "user.clicked");
    let report = t.shutdown(WAIT).await;
    let d = report.destination("hooks").unwrap();
    assert_eq!(d.failed, 1, "{d:?}");
    accounted(d);
    let text = logs.text();
    assert!(text.contains("the server rejected a request"), "{text}");
    assert!(text.contains("refused\\n2026"), "{text}");
    assert_escaped(&text);
}

#[tokio::test]
async fn debug_dumps_escape_the_events_properties() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    let t =
        Telemetry::from_yaml_str("telemetry:\n  debug: true\n  destinations:\n    memory: {}\n")
            .unwrap();
    let evil = hostile("value");
    track!(&t => "user.clicked", note = evil.as_str());
    let report = t.shutdown(WAIT).await;
    accounted(report.destination("memory").unwrap());
    let text = logs.text();
    assert!(text.contains("tower_telemetry::debug"), "{text}");
    assert!(text.contains("value\\n2026"), "{text}");
    assert_escaped(&text);
}

/// `key=value` pairs of a logfmt line, values in double quotes unquoted.
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ').is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ' ')).collect();
        if key.is_empty() && chars.peek().is_none() {
            return pairs;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ' ')));
        }
        pairs.push((key, value));
    }
}

#[tokio::test]
async fn tracing_records_quote_values_a_logfmt_reader_would_split() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::INFO));
    let t = Telemetry::builder()
        .destination("logging", LoggingDestination::new(tracing::Level::INFO))
        .build()
        .unwrap();
    t.scope(
        Context::new()
            .with_user_id("u1")
            .with_session_id("s1 user_id=admin")
            .with_request_id("say \"hi\"")
            .with_path(hostile("/p")),
        async {
            track!(&t => "user.clicked", note = "a b=c");
        },
    )
    .await;
    let report = t.shutdown(WAIT).await;
    accounted(report.destination("logging").unwrap());
    let text = logs.text();
    assert_escaped(&text);
    let line = text
        .lines()
        .find(|l| l.contains("telemetry event"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("session_id=\"s1 user_id=admin\""), "{line}");
    let pairs = logfmt(line);
    let get = |k: &str| {
        let found: Vec<&str> = pairs
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect();
        found
    };
    assert_eq!(get("user_id"), ["u1"], "{line}");
    assert_eq!(get("session_id"), ["s1 user_id=admin"], "{line}");
    assert_eq!(get("request_id"), ["say \"hi\""], "{line}");
    assert_eq!(get("properties"), ["{\"note\":\"a b=c\"}"], "{line}");
}

/// `s` as a YAML double-quoted scalar.
fn yaml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || RAW.contains(&c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn config_errors_escape_the_values_they_show() {
    let evil = hostile("x");
    let yaml = format!(
        "telemetry:\n  enabled: {}\n  destinations:\n    umami:\n      url: {}\n      website_id: {}\n",
        yaml_quoted(&evil),
        yaml_quoted(&format!("https://{evil}")),
        yaml_quoted(&evil)
    );
    let text = match Config::from_yaml_str(&yaml) {
        Err(errors) => errors.to_string(),
        Ok(config) => Telemetry::builder()
            .config(config)
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    };
    assert!(text.contains("x\\n2026"), "{text}");
    assert_escaped(&text);
}
