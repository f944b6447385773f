//! The HTTP side: posting to `/api/send` and `/api/batch`, and classifying the answers as
//! UMAMI.md describes them.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::config::Validated;
use crate::config::DEFAULT_TIMEOUT;
use crate::destination::DeliveryError;

/// The longest server message quoted in an error.
const MAX_QUOTED: usize = 300;

/// What `/api/send` said about a stored-or-not event.
#[derive(Debug)]
pub(crate) enum SendReply {
    /// 2xx: stored.
    Stored,
    /// `200 {"beep":"boop"}`: accepted and thrown away by the bot check.
    Discarded,
}

/// A failed request: the HTTP status when there was one, and the classified error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: Option<StatusCode>,
    pub(crate) error: DeliveryError,
}

impl Failure {
    /// 404/405: the endpoint does not exist on this server.
    pub(crate) fn is_no_route(&self) -> bool {
        matches!(
            self.status,
            Some(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
        )
    }

    /// A 500 (which `/api/batch` answers on servers before 3.0.2).
    pub(crate) fn is_server_error(&self) -> bool {
        self.status == Some(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A keep-alive HTTP client for one Umami server.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    send_url: Url,
    batch_url: Url,
}

impl Client {
    pub(crate) fn new(v: &Validated) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .user_agent(v.user_agent.clone())
            // The worker bounds each delivery with the configured timeout; this one only stops a
            // single hung request from holding a connection forever.
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // A redirected POST turns into a GET and loses its body: report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls_config()?)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client {
            http,
            send_url: v.send_url.clone(),
            batch_url: v.batch_url.clone(),
        })
    }

    /// Posts one send body to `/api/send`.
    pub(crate) async fn send(&self, body: &Value) -> Result<SendReply, Failure> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let text = self.post(&self.send_url, bytes).await?;
        let beep = serde_json::from_slice::<Value>(&text)
            .ok()
            .is_some_and(|v| v.get("beep").is_some());
        Ok(if beep {
            SendReply::Discarded
        } else {
            SendReply::Stored
        })
    }

    /// Posts send bodies to `/api/batch`; returns the per-item failures (`index`, error).
    pub(crate) async fn batch(
        &self,
        bodies: &[&Value],
    ) -> Result<Vec<(usize, DeliveryError)>, Failure> {
        let bytes = serde_json::to_vec(bodies).unwrap_or_default();
        let text = self.post(&self.batch_url, bytes).await?;
        let reply: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        let mut failed = Vec::new();
        for detail in reply
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(index) = detail.get("index").and_then(Value::as_u64) else {
                continue;
            };
            let response = detail.get("response").unwrap_or(&Value::Null);
            let status = response
                .pointer("/error/status")
                .and_then(Value::as_u64)
                .and_then(|s| StatusCode::from_u16(s as u16).ok());
            let message = quote(response.to_string().as_bytes());
            let error = match status {
                Some(s) => classify(s, &HeaderMap::new(), "/api/batch item", &message),
                // No status: the item failed in a way the server did not describe; retrying is
                // the only way it can still arrive.
                None => DeliveryError::retryable(format!("/api/batch item failed: {message}")),
            };
            failed.push((index as usize, error));
        }
        Ok(failed)
    }

    /// Posts JSON; a 2xx answer's body, or the classified failure.
    async fn post(&self, url: &Url, body: Vec<u8>) -> Result<bytes::Bytes, Failure> {
        let endpoint = url.path().to_owned();
        let response = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&endpoint, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .bytes()
            .await
            .map_err(|e| transport(&endpoint, e))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(Failure {
            status: Some(status),
            error: classify(status, &headers, &endpoint, &quote(&text)),
        })
    }
}

/// Timeouts and connection failures are retryable: nothing (or not everything) arrived.
/// The crate's ring-based rustls configuration ([`crate::tls`]) with reqwest's ALPN for an
/// HTTP/1.1-only client (reqwest's `rustls-no-provider` feature: no aws-lc).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut config = crate::tls::client_config()?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn transport(endpoint: &str, e: reqwest::Error) -> Failure {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    Failure {
        status: None,
        error: DeliveryError::retryable(format!("{endpoint}: {what}: {e}")),
    }
}

/// A non-2xx answer as a delivery error: 408, 429 and 5xx are worth retrying (after the
/// server's Retry-After, if any); every other status will not change by itself.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    endpoint: &str,
    message: &str,
) -> DeliveryError {
    let retryable = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if retryable {
        let e = DeliveryError::retryable(format!("{endpoint}: {status}: {message}"));
        return match headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()))
        {
            Some(after) => e.with_retry_after(after),
            None => e,
        };
    }
    if status.is_redirection() {
        let to = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return DeliveryError::permanent(format!(
            "{endpoint}: {status}: the server redirects to {to}; set `url` to the final address"
        ));
    }
    DeliveryError::permanent(format!("{endpoint}: {status}: {message}"))
}

/// The server's answer, cut for a log line.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let cut = crate::text::floor_char_boundary(text, MAX_QUOTED);
    if cut < text.len() {
        format!("{}…", &text[..cut])
    } else {
        text.to_owned()
    }
}

/// A `Retry-After` value: delay-seconds, or an HTTP date relative to `now` (a date in the past
/// is "now"). Dates are read by `httpdate`: IMF-fixdate and the two obsolete forms RFC 9110
/// asks recipients to accept, years 1970–9999; anything else, however large or malformed, is
/// `None`, never a panic.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
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
        assert!(!classify(StatusCode::BAD_REQUEST, &none, "/api/send", "x").is_retryable());
        assert!(!classify(StatusCode::FORBIDDEN, &none, "/api/send", "x").is_retryable());
        assert!(!classify(StatusCode::NOT_FOUND, &none, "/api/send", "x").is_retryable());
        assert!(classify(StatusCode::REQUEST_TIMEOUT, &none, "/api/send", "x").is_retryable());
        assert!(classify(StatusCode::BAD_GATEWAY, &none, "/api/send", "x").is_retryable());
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, "/api/send", "x");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }
}
