//! The HTTP delivery machinery every HTTP destination kind shares: one client setup (rustls
//! on ring, a user agent, timeouts, pooled keep-alive connections, no redirects), optional
//! gzip request bodies, the classification of answers into [`DeliveryError`]s, the splitting
//! of a batch into requests that fit a kind's byte limits, and the per-event verdicts.
//!
//! A kind maps its events to JSON (or protobuf), [`split`]s them, posts each request with
//! [`Client::post`] and records what became of each event in [`Outcomes`]:
//!
//! - 2xx: delivered;
//! - 408, 429, 5xx (or the statuses the kind's protocol names: OTLP's 429, 502, 503, 504),
//!   timeouts and connection errors: retryable, after the server's `Retry-After` (seconds or
//!   an HTTP date) when it gives one;
//! - any other status: permanent, with the server's message (escaped and cut to 300 bytes);
//!   the first one of a destination is logged (a warning), later ones only counted;
//! - an event over the kind's per-event limit: failed on its own, the others still sent.
//!
//! Secrets (API keys, write keys, signing keys) are sent in headers or bodies built by the
//! kind; nothing here prints a request, its headers or its URL's userinfo.

#[cfg(any(
    feature = "posthog",
    feature = "segment",
    feature = "webhook",
    feature = "otlp"
))]
pub(crate) mod common;
mod outcome;
#[cfg_attr(
    not(any(
        feature = "posthog",
        feature = "segment",
        feature = "webhook",
        feature = "otlp"
    )),
    allow(dead_code)
)]
mod split;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER,
};
use reqwest::{StatusCode, Url};

pub(crate) use outcome::Outcomes;
#[cfg_attr(
    not(any(
        feature = "posthog",
        feature = "segment",
        feature = "webhook",
        feature = "otlp"
    )),
    allow(unused_imports)
)]
pub(crate) use split::{Limits, split};

use crate::config::DEFAULT_TIMEOUT;
use crate::destination::DeliveryError;
use crate::diag::Escaped;

/// The longest server message quoted in an error.
const MAX_QUOTED: usize = 300;

/// A failed request: the HTTP status when there was one, and the classified error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: Option<StatusCode>,
    pub(crate) error: DeliveryError,
}

impl Failure {
    /// 404/405: the endpoint does not exist on this server.
    #[cfg_attr(not(feature = "umami"), allow(dead_code))]
    pub(crate) fn is_no_route(&self) -> bool {
        matches!(
            self.status,
            Some(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
        )
    }

    /// A 500.
    #[cfg_attr(not(feature = "umami"), allow(dead_code))]
    pub(crate) fn is_server_error(&self) -> bool {
        self.status == Some(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A request body, its media type, and whether to send it gzip-compressed.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    pub(crate) content_type: &'static str,
    pub(crate) gzip: bool,
}

impl Body {
    /// A JSON body sent as is.
    pub(crate) fn json(json: Vec<u8>) -> Body {
        Body {
            bytes: json,
            content_type: "application/json",
            gzip: false,
        }
    }

    /// The same body, gzip-compressed on the wire when `on`.
    #[cfg_attr(not(any(feature = "posthog", feature = "otlp")), allow(dead_code))]
    pub(crate) fn with_gzip(mut self, on: bool) -> Body {
        self.gzip = on;
        self
    }

    /// The same bytes sent as `content_type`.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn with_content_type(mut self, content_type: &'static str) -> Body {
        self.content_type = content_type;
        self
    }
}

/// Which failed statuses are worth retrying: 408, 429 and 5xx, the default of [`Client`].
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// A keep-alive HTTP client for one destination.
///
/// Its `Debug` names only the destination kind: requests carry secrets in their headers and
/// bodies, never in anything this type shows.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    kind: &'static str,
    show_path: bool,
    log_rejection: bool,
    rejection_logged: AtomicBool,
    /// Which statuses are retryable (a kind's protocol may say which: OTLP's are 429, 502,
    /// 503 and 504).
    retryable: fn(StatusCode) -> bool,
    /// The server's message in a refusal's body, when the kind knows its format (OTLP's
    /// `google.rpc.Status`); else the body is quoted as text.
    error_text: fn(&HeaderMap, &[u8]) -> Option<String>,
}

impl Client {
    /// A client sending `user_agent`, for the destination kind `kind` (in log records).
    #[cfg_attr(
        not(any(
            feature = "umami",
            feature = "posthog",
            feature = "segment",
            feature = "webhook"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new(kind: &'static str, user_agent: HeaderValue) -> Result<Client, String> {
        Self::with_request_timeout(kind, user_agent, DEFAULT_TIMEOUT)
    }

    /// [`new`](Self::new), with `timeout` as the longest a single request may take (at least
    /// the default 10 s).
    pub(crate) fn with_request_timeout(
        kind: &'static str,
        user_agent: HeaderValue,
        timeout: Duration,
    ) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            // The worker bounds each delivery with the configured timeout; this one only stops a
            // single hung request from holding a connection forever.
            .timeout(timeout.max(DEFAULT_TIMEOUT))
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
            kind,
            show_path: true,
            log_rejection: true,
            rejection_logged: AtomicBool::new(false),
            retryable: retryable_status,
            error_text: |_, _| None,
        })
    }

    /// Which failed statuses are retried. Defaults to 408, 429 and 5xx
    /// ([`retryable_status`]).
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn with_retryable(mut self, retryable: fn(StatusCode) -> bool) -> Client {
        self.retryable = retryable;
        self
    }

    /// Reads the server's message out of a refusal's body (given the response headers);
    /// `None` quotes the body as text, the default.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn with_error_text(
        mut self,
        error_text: fn(&HeaderMap, &[u8]) -> Option<String>,
    ) -> Client {
        self.error_text = error_text;
        self
    }

    /// Whether the first permanent rejection is logged here (the default). A kind that reads
    /// some rejections as answers (Umami's 404 for a server without `/api/batch`) logs its own.
    #[cfg_attr(not(feature = "umami"), allow(dead_code))]
    pub(crate) fn with_rejection_log(mut self, on: bool) -> Client {
        self.log_rejection = on;
        self
    }

    /// Whether errors name the URL's path (the default) or only the kind: a webhook URL's
    /// path is often its secret (`/services/T000/B000/XXXX`).
    #[cfg_attr(not(feature = "webhook"), allow(dead_code))]
    pub(crate) fn with_path_shown(mut self, on: bool) -> Client {
        self.show_path = on;
        self
    }

    /// Posts `body` (as its content type) with `headers`; a 2xx answer's body, or the
    /// classified failure.
    /// `url` must not carry userinfo (it would be in the errors); give credentials as headers.
    pub(crate) async fn post(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Body,
    ) -> Result<bytes::Bytes, Failure> {
        let endpoint = if self.show_path {
            url.path()
        } else {
            self.kind
        };
        let mut request = self
            .http
            .post(url.clone())
            .headers(headers)
            .header(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
        request = if body.gzip {
            request
                .header(CONTENT_ENCODING, HeaderValue::from_static("gzip"))
                .body(gzip(&body.bytes))
        } else {
            request.body(body.bytes)
        };
        let response = request.send().await.map_err(|e| transport(endpoint, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.bytes().await.map_err(|e| transport(endpoint, e))?;
        if status.is_success() {
            return Ok(text);
        }
        let message = match (self.error_text)(&headers, &text) {
            Some(m) => quote(m.as_bytes()),
            None => quote(&text),
        };
        let error = classify_as(
            (self.retryable)(status),
            status,
            &headers,
            endpoint,
            &message,
        );
        if self.log_rejection
            && !error.is_retryable()
            && !self.rejection_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                target: "tower_telemetry",
                destination = self.kind,
                status = status.as_u16(),
                error = %crate::diag::Masked(error.message()),
                "the server rejected a request; its events are counted failed and not retried \
                 (logged once; later rejections are only counted)"
            );
        }
        Err(Failure {
            status: Some(status),
            error,
        })
    }
}

/// `bytes` gzip-compressed (fast level: JSON and protobuf with repeated keys and names compress
/// well anyway).
#[cfg(any(feature = "posthog", feature = "otlp"))]
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Without a kind that compresses, no body asks for gzip.
#[cfg(not(any(feature = "posthog", feature = "otlp")))]
fn gzip(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

/// The crate's ring-based rustls configuration ([`crate::tls`]) with reqwest's ALPN for an
/// HTTP/1.1-only client (reqwest's `rustls-no-provider` feature: no aws-lc).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut config = crate::tls::client_config()?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Timeouts and connection failures are retryable: nothing (or not everything) arrived.
fn transport(endpoint: &str, e: reqwest::Error) -> Failure {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's error names the URL; ours never carry userinfo, but strip it to be sure.
    let e = e.without_url();
    Failure {
        status: None,
        error: DeliveryError::retryable(format!("{endpoint}: {what}: {e}")),
    }
}

/// A non-2xx answer as a delivery error: 408, 429 and 5xx are worth retrying (after the
/// server's Retry-After, if any); every other status will not change by itself.
#[cfg_attr(not(feature = "umami"), allow(dead_code))]
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    endpoint: &str,
    message: &str,
) -> DeliveryError {
    classify_as(retryable_status(status), status, headers, endpoint, message)
}

/// A non-2xx answer as a delivery error, `retryable` or not (a redirect never is).
pub(crate) fn classify_as(
    retryable: bool,
    status: StatusCode,
    headers: &HeaderMap,
    endpoint: &str,
    message: &str,
) -> DeliveryError {
    if retryable && !status.is_redirection() {
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
        let to = quote(to.as_bytes());
        return DeliveryError::permanent(format!(
            "{endpoint}: {status}: the server redirects to {to}; set the URL to the final address"
        ));
    }
    DeliveryError::permanent(format!("{endpoint}: {status}: {message}"))
}

/// The server's answer, escaped (no control characters, so it cannot forge a log line) and
/// cut to 300 bytes.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let cut = crate::text::floor_char_boundary(text, MAX_QUOTED);
    if cut < text.len() {
        format!("{}…", Escaped(&text[..cut]))
    } else {
        Escaped(text).to_string()
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
mod tests;
