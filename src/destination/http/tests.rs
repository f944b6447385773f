use std::time::UNIX_EPOCH;

use super::*;

#[test]
fn retry_after_values() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
    assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
    assert_eq!(
        retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
        Some(Duration::from_secs(7))
    );
    // A date in the past means "now".
    assert_eq!(
        retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after("soon", now), None);
    let epoch = UNIX_EPOCH;
    assert_eq!(
        retry_after("Thu, 01 Jan 1970 00:00:10 GMT", epoch),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        retry_after("Tue, 29 Feb 2000 12:00:00 GMT", epoch),
        Some(Duration::from_secs(951_825_600))
    );
    // The obsolete forms RFC 9110 asks recipients to accept.
    assert_eq!(
        retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        retry_after("Sun Nov  6 08:49:37 1994", now),
        Some(Duration::from_secs(7))
    );
}

/// A hostile server's dates: huge years, huge numbers, garbage. None of them may panic
/// (a panic in the delivery task lost its batch uncounted); an unreadable one is `None`.
#[test]
fn hostile_retry_after_values_never_panic() {
    let now = SystemTime::now();
    for value in [
        "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
        "Sun, 06 Nov -9223372036854775808 08:49:37 GMT",
        "Sun, 06 Nov 99999999999999 08:49:37 GMT",
        "Sun, 31 Dec 9999 23:59:60 GMT",
        "Sun, 99 Nov 1994 99:99:99 GMT",
    ] {
        assert_eq!(retry_after(value, now), None, "{value}");
    }
    assert_eq!(
        retry_after("18446744073709551615", now),
        Some(Duration::from_secs(u64::MAX))
    );
}

proptest::proptest! {
    #[test]
    fn any_retry_after_value_is_read_without_a_panic(value in "\\PC{0,64}", secs in proptest::num::u64::ANY) {
        let _ = retry_after(&value, UNIX_EPOCH + Duration::from_secs(secs % (1 << 40)));
        let date = format!("Sun, 06 Nov {secs} 08:49:37 GMT");
        let _ = retry_after(&date, SystemTime::now());
    }
}

#[test]
fn classification() {
    let none = HeaderMap::new();
    for permanent in [400, 401, 403, 404, 413, 422] {
        let s = StatusCode::from_u16(permanent).unwrap();
        assert!(!classify(s, &none, "/batch/", "x").is_retryable(), "{s}");
    }
    for retryable in [408, 429, 500, 502, 503, 504] {
        let s = StatusCode::from_u16(retryable).unwrap();
        assert!(classify(s, &none, "/batch/", "x").is_retryable(), "{s}");
    }
    let mut h = HeaderMap::new();
    h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
    let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, "/batch/", "x");
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    let e = classify(StatusCode::BAD_REQUEST, &none, "/v1/batch", "bad \"event\"");
    assert_eq!(e.message(), "/v1/batch: 400 Bad Request: bad \"event\"");
}

#[test]
fn a_server_message_is_escaped_and_cut() {
    let forged = "oops\n2026-01-01 INFO forged line \u{1b}[31m";
    let q = quote(forged.as_bytes());
    assert!(!q.contains('\n') && !q.contains('\u{1b}'), "{q}");
    assert!(q.contains("\\n"), "{q}");
    let long = "é".repeat(400);
    let q = quote(long.as_bytes());
    assert!(q.len() <= MAX_QUOTED + '…'.len_utf8(), "{}", q.len());
    assert!(q.ends_with('…'));
    assert_eq!(quote(b"  "), "(empty body)");
}

#[cfg(feature = "posthog")]
#[test]
fn gzip_bodies_decompress_to_the_json() {
    use std::io::Read;
    let json = br#"{"batch":[{"event":"a"},{"event":"a"},{"event":"a"}]}"#.repeat(50);
    let packed = gzip(&json);
    assert!(packed.len() < json.len() / 4);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, json);
}

/// A real exchange with a loopback server: 2xx delivered, 503 + Retry-After retryable with
/// the delay, 400 permanent with the server's message; the client's `Debug` shows no secret.
#[tokio::test]
async fn answers_over_the_wire_are_classified() {
    use axum::Router;
    use axum::http::{HeaderMap as Headers, StatusCode as Status};
    use axum::routing::post;

    let app = Router::new()
        .route("/ok", post(|| async { "{}" }))
        .route(
            "/busy",
            post(|| async { (Status::SERVICE_UNAVAILABLE, [("retry-after", "3")], "busy") }),
        )
        .route(
            "/bad",
            post(|headers: Headers| async move {
                let auth = headers.contains_key("authorization");
                (Status::BAD_REQUEST, format!("invalid payload, auth={auth}"))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::new("test", HeaderValue::from_static("tower-telemetry-test")).unwrap();
    let url = |p: &str| Url::parse(&format!("http://{addr}{p}")).unwrap();
    let mut secret = HeaderMap::new();
    secret.insert(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_static("Basic c2VjcmV0LWtleTo="),
    );
    assert!(
        client
            .post(&url("/ok"), HeaderMap::new(), Body::json(b"{}".to_vec()))
            .await
            .is_ok()
    );
    let busy = client
        .post(&url("/busy"), HeaderMap::new(), Body::json(b"{}".to_vec()))
        .await
        .unwrap_err();
    assert!(busy.error.is_retryable());
    assert_eq!(busy.error.retry_after(), Some(Duration::from_secs(3)));
    let bad = client
        .post(&url("/bad"), secret, Body::json(b"{}".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(bad.status, Some(StatusCode::BAD_REQUEST));
    assert!(!bad.error.is_retryable());
    assert!(
        bad.error.message().contains("invalid payload, auth=true"),
        "{}",
        bad.error
    );
    assert!(!format!("{bad:?}{client:?}").contains("c2VjcmV0"));
    server.abort();
    // Nothing listens any more: connection refused is retryable.
    let refused = client
        .post(&url("/ok"), HeaderMap::new(), Body::json(b"{}".to_vec()))
        .await;
    if let Err(f) = refused {
        assert!(f.error.is_retryable(), "{}", f.error);
    }
}

/// A permanent rejection is logged once (escaped), later ones only returned.
#[tokio::test]
async fn the_first_rejection_is_logged_once() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode as Status;
    use axum::routing::post;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = Router::new().route(
        "/t",
        post(|| async { (Status::UNAUTHORIZED, "bad key\nforged line") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new("test", HeaderValue::from_static("t")).unwrap();
    let url = Url::parse(&format!("http://{addr}/t")).unwrap();
    for _ in 0..3 {
        let f = client
            .post(&url, HeaderMap::new(), Body::json(b"{}".to_vec()))
            .await
            .unwrap_err();
        assert!(!f.error.is_retryable());
    }
    server.abort();
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("rejected a request").count(), 1, "{text}");
    assert!(text.contains("bad key\\nforged line"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[cfg(feature = "posthog")]
#[test]
fn urls_are_shown_without_credentials() {
    use super::common::masked_url;
    assert_eq!(
        masked_url("https://user:hunter2@h.example.com/t?token=abc#x", false),
        "https://***@h.example.com/t?***"
    );
    assert_eq!(
        masked_url("https://h.example.com/t", false),
        "https://h.example.com/t"
    );
    assert_eq!(
        masked_url("https://hooks.example.com/services/T0/B0/XXXX", true),
        "https://hooks.example.com/***"
    );
    assert_eq!(masked_url("not a url hunter2", false), "(not a URL)");
}
