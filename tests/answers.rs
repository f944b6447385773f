//! Property tests of what hostile or broken peers answer, end to end through the destinations
//! (bounded case counts): arbitrary Umami answers (status, headers with any `Retry-After`,
//! body) from a raw HTTP peer, and arbitrary NATS publish acknowledgements and error payloads
//! from a fake NATS server. No panic, and every event gets a verdict that is counted.
#![cfg(all(feature = "umami", feature = "nats"))]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use proptest::prelude::*;
use support::logs::Logs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_telemetry::config::{Config, DeliveryConfig, DestinationConfig, RetryConfig};
use tower_telemetry::destination::Destination;
use tower_telemetry::destination::nats::{NatsConfig, NatsDestination};
use tower_telemetry::destination::umami::{UmamiConfig, UmamiDestination, UmamiMode};
use tower_telemetry::{Context, DestinationStats, Telemetry, track};

const WEBSITE: &str = "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60";
const EVENTS: u64 = 4;

/// Panics anywhere in the process (a delivery task's included), counted.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One attempt per batch, bounded in time: every event ends delivered, failed or discarded.
fn once() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_flush_interval(Duration::ZERO)
        .with_batch_size(EVENTS as usize)
        .with_timeout(Duration::from_secs(3))
        .with_retry(RetryConfig::default().with_max_attempts(1))
}

/// Tracks [`EVENTS`] events (one with a bot-like User-Agent) into `destination` and checks
/// each was settled and counted, with no panic.
async fn settle(destination: impl Destination) -> Result<DestinationStats, TestCaseError> {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let panics = PANICS.load(Ordering::SeqCst);
    let t = Telemetry::builder()
        .config(
            Config::default().with_destination(DestinationConfig::new("d").with_delivery(once())),
        )
        .destination("d", destination)
        .build()
        .unwrap();
    for seq in 0..EVENTS {
        let ua = if seq == 1 {
            "curl/8.5.0"
        } else {
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
        };
        t.scope(Context::new().with_user_agent(ua), async {
            track!(&t => "user.clicked", seq = seq);
        })
        .await;
    }
    let report = t.shutdown(Duration::from_secs(20)).await;
    let d = report.destination("d").unwrap().clone();
    prop_assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics,
        "a panic: {}",
        logs.text()
    );
    prop_assert!(!report.timed_out, "{:?}", d);
    prop_assert_eq!(d.enqueued, EVENTS, "{:?}", d);
    prop_assert_eq!(d.undelivered, 0, "{:?}", d);
    prop_assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{:?}",
        d
    );
    Ok(d)
}

// ----- Umami --------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn retry_after() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,30}",
        any::<u64>().prop_map(|y| format!("Sun, 06 Nov {y} 08:49:37 GMT")),
        any::<i64>().prop_map(|y| format!("Sunday, 06-Nov-{y} 08:49:37 GMT")),
        any::<u64>().prop_map(|y| format!("Sun Nov  6 08:49:37 {y}")),
        "[ -~]{0,40}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let item = (any::<u64>(), prop::option::of(any::<u16>()), "\\PC{0,20}").prop_map(
        |(index, status, message)| match status {
            Some(s) => format!(
                r#"{{"index":{index},"response":{{"error":{{"status":{s},"message":{message:?}}}}}}}"#
            ),
            None => format!(r#"{{"index":{index},"response":{message:?}}}"#),
        },
    );
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        Just(br#"{"beep":"boop"}"#.to_vec()),
        prop::collection::vec(item, 0..6).prop_map(|items| {
            format!(
                r#"{{"size":{},"details":[{}]}}"#,
                items.len(),
                items.join(",")
            )
            .into_bytes()
        }),
        "\\PC{0,100}".prop_map(String::into_bytes),
    ]
}

fn http_answer() -> impl Strategy<Value = HttpAnswer> {
    let header = prop_oneof![
        retry_after().prop_map(|v| ("retry-after".to_owned(), v)),
        "[ -~]{0,40}".prop_map(|v| ("location".to_owned(), v)),
        "[ -~]{0,40}".prop_map(|v| ("content-type".to_owned(), v)),
    ];
    let status = prop_oneof![
        Just(200u16),
        Just(400),
        Just(404),
        Just(408),
        Just(429),
        Just(500),
        Just(503),
        200u16..600,
    ];
    (status, prop::collection::vec(header, 0..3), body()).prop_map(|(status, headers, body)| {
        HttpAnswer {
            status,
            headers,
            body,
        }
    })
}

/// A raw HTTP/1.1 peer answering request `i` with `answers[i % len]`.
async fn http_peer(answers: Vec<HttpAnswer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answers = answers.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    if !read_request(&mut socket).await {
                        return;
                    }
                    let a = &answers[next.fetch_add(1, Ordering::SeqCst) % answers.len()];
                    let mut out = format!("HTTP/1.1 {} X\r\n", a.status);
                    for (k, v) in &a.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str(&format!("content-length: {}\r\n\r\n", a.body.len()));
                    let mut out = out.into_bytes();
                    out.extend_from_slice(&a.body);
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Reads one request (headers and `Content-Length` body); false at the end of the stream.
async fn read_request(socket: &mut tokio::net::TcpStream) -> bool {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => request.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&request);
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    socket.read_exact(&mut body).await.is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_umami_answer_is_a_counted_verdict(
        answers in prop::collection::vec(http_answer(), 1..4),
        mode in prop_oneof![Just(UmamiMode::Batch), Just(UmamiMode::Send), Just(UmamiMode::Auto)],
    ) {
        count_panics();
        rt().block_on(async {
            let url = http_peer(answers).await;
            let umami = UmamiDestination::new(UmamiConfig::new(url, WEBSITE).with_mode(mode)).unwrap();
            settle(umami).await
        })?;
    }
}

// ----- NATS ---------------------------------------------------------------------------------

/// What the fake server answers a publish (or, with `garbage_api`, a JetStream API request).
#[derive(Clone, Debug)]
enum NatsAnswer {
    Bytes(Vec<u8>),
    Ack {
        stream: String,
        seq: i128,
        duplicate: bool,
    },
    Error {
        code: i64,
        err_code: u64,
        description: String,
    },
    /// A status-only message (`NATS/1.0 503`: no responders).
    Status(u16),
    Silent,
}

fn nats_answer() -> impl Strategy<Value = NatsAnswer> {
    prop_oneof![
        3 => ("[A-Z]{0,12}", any::<i128>(), any::<bool>()).prop_map(|(stream, seq, duplicate)| {
            NatsAnswer::Ack { stream, seq, duplicate }
        }),
        2 => (any::<i64>(), any::<u64>(), "\\PC{0,30}").prop_map(|(code, err_code, description)| {
            NatsAnswer::Error { code, err_code, description }
        }),
        2 => prop::collection::vec(any::<u8>(), 0..120).prop_map(NatsAnswer::Bytes),
        1 => prop_oneof![Just(503u16), Just(408), Just(404), 100u16..1000].prop_map(NatsAnswer::Status),
        1 => Just(NatsAnswer::Silent),
    ]
}

impl NatsAnswer {
    /// The frame to `reply` on subscription `sid`, if any.
    fn frame(&self, reply: &str, sid: &str) -> Option<Vec<u8>> {
        let payload = match self {
            NatsAnswer::Silent => return None,
            NatsAnswer::Status(code) => {
                let headers = format!("NATS/1.0 {code}\r\n\r\n");
                return Some(
                    format!(
                        "HMSG {reply} {sid} {} {}\r\n{headers}\r\n",
                        headers.len(),
                        headers.len()
                    )
                    .into_bytes(),
                );
            }
            NatsAnswer::Bytes(b) => b.clone(),
            NatsAnswer::Ack {
                stream,
                seq,
                duplicate,
            } => format!(r#"{{"stream":"{stream}","seq":{seq},"duplicate":{duplicate}}}"#)
                .into_bytes(),
            NatsAnswer::Error {
                code,
                err_code,
                description,
            } => serde_json::json!({
                "error": {"code": code, "err_code": err_code, "description": description}
            })
            .to_string()
            .into_bytes(),
        };
        let mut frame = format!("MSG {reply} {sid} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n");
        Some(frame)
    }
}

/// A stream that suits the destination's defaults, for `$JS.API.STREAM.INFO`.
fn stream_info() -> Vec<u8> {
    let config = async_nats::jetstream::stream::Config {
        name: "TELEMETRY".into(),
        subjects: vec!["telemetry.>".into()],
        duplicate_window: Duration::from_secs(120),
        num_replicas: 1,
        ..Default::default()
    };
    serde_json::json!({
        "type": "io.nats.jetstream.api.v1.stream_info_response",
        "config": config,
        "created": "2026-01-01T00:00:00Z",
        "state": {
            "messages": 0, "bytes": 0, "first_seq": 0, "first_ts": "0001-01-01T00:00:00Z",
            "last_seq": 0, "last_ts": "0001-01-01T00:00:00Z", "consumer_count": 0
        }
    })
    .to_string()
    .into_bytes()
}

/// A fake NATS server: publishes get `answers` in turn; JetStream API requests get a usable
/// stream, or (with `garbage_api`) `answers` too.
async fn nats_peer(answers: Vec<NatsAnswer>, garbage_api: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_nats(
                socket,
                answers.clone(),
                next.clone(),
                garbage_api,
            ));
        }
    });
    format!("nats://{addr}")
}

async fn serve_nats(
    mut socket: tokio::net::TcpStream,
    answers: Vec<NatsAnswer>,
    next: Arc<AtomicUsize>,
    garbage_api: bool,
) {
    let info = r#"INFO {"server_id":"FAKE","server_name":"fake","version":"2.11.0","go":"go1.24","host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"proto":1,"jetstream":true}"#;
    if socket
        .write_all(format!("{info}\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let sids = Mutex::new(Vec::<(String, String)>::new());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Every complete operation in the buffer.
        while let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            let words: Vec<&str> = line.split_whitespace().collect();
            let op = words
                .first()
                .map(|w| w.to_ascii_uppercase())
                .unwrap_or_default();
            let (subject, reply, size) = match (op.as_str(), words.len()) {
                ("PUB", 3) => (words[1], None, words[2]),
                ("PUB", 4) => (words[1], Some(words[2]), words[3]),
                ("HPUB", 4) => (words[1], None, words[3]),
                ("HPUB", 5) => (words[1], Some(words[2]), words[4]),
                _ => {
                    match op.as_str() {
                        "PING" if socket.write_all(b"PONG\r\n").await.is_err() => return,
                        "SUB" if words.len() >= 3 => {
                            let sid = words[words.len() - 1].to_owned();
                            sids.lock().unwrap().push((words[1].to_owned(), sid));
                        }
                        _ => {}
                    }
                    buf.drain(..end + 2);
                    continue;
                }
            };
            let size: usize = size.parse().unwrap_or(0);
            if buf.len() < end + 2 + size + 2 {
                break; // the payload is still coming
            }
            let (subject, reply) = (subject.to_owned(), reply.map(str::to_owned));
            buf.drain(..end + 2 + size + 2);
            let Some(reply) = reply else { continue };
            let sid = sids
                .lock()
                .unwrap()
                .iter()
                .find(|(pattern, _)| {
                    pattern == &reply
                        || pattern
                            .strip_suffix('*')
                            .is_some_and(|prefix| reply.starts_with(prefix))
                })
                .map(|(_, sid)| sid.clone())
                .unwrap_or_else(|| "1".into());
            let frame = if subject.starts_with("$JS.API.") && !garbage_api {
                let payload = stream_info();
                let mut frame = format!("MSG {reply} {sid} {}\r\n", payload.len()).into_bytes();
                frame.extend_from_slice(&payload);
                frame.extend_from_slice(b"\r\n");
                Some(frame)
            } else {
                let i = next.fetch_add(1, Ordering::SeqCst);
                answers[i % answers.len()].frame(&reply, &sid)
            };
            if let Some(frame) = frame
                && socket.write_all(&frame).await.is_err()
            {
                return;
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_nats_answer_is_a_counted_verdict(
        answers in prop::collection::vec(nats_answer(), 1..6),
        garbage_api in prop::bool::weighted(0.2),
    ) {
        count_panics();
        rt().block_on(async {
            let url = nats_peer(answers, garbage_api).await;
            let nats = NatsDestination::new(
                NatsConfig::new([url])
                    .with_publish_timeout(Duration::from_millis(300))
                    .with_failover_wait(Duration::ZERO)
                    .with_connect_timeout(Duration::from_secs(2)),
            )
            .unwrap();
            settle(nats).await
        })?;
    }
}

/// The fake server speaks enough NATS for a delivery: with well-formed acks every event is
/// delivered (so the property tests above do reach the acknowledgement code).
#[test]
fn the_fake_nats_server_acknowledges() {
    count_panics();
    rt().block_on(async {
        let ack = NatsAnswer::Ack {
            stream: "TELEMETRY".into(),
            seq: 1,
            duplicate: false,
        };
        let url = nats_peer(vec![ack], false).await;
        let nats = NatsDestination::new(
            NatsConfig::new([url]).with_publish_timeout(Duration::from_secs(2)),
        )
        .unwrap();
        let d = settle(nats.clone()).await.unwrap();
        assert_eq!(d.delivered, EVENTS, "{d:?}");
        assert_eq!(nats.stats().published, EVENTS);
    });
}
