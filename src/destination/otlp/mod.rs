//! The `otlp` destination: events as OpenTelemetry log records, posted over OTLP/HTTP to a
//! Collector or any backend that ingests OTLP.
//!
//! OpenTelemetry's events are log records with an `event_name`; each of ours becomes one.
//! A batch is one `POST {endpoint}/v1/logs` (or more, to stay under 4 MiB each) of an
//! `ExportLogsServiceRequest` — one resource, one scope (`tower-telemetry`), the records —
//! encoded with the [`opentelemetry-proto`](https://docs.rs/opentelemetry-proto) crate's
//! generated types: protobuf (`application/x-protobuf`) by default, OTLP's JSON mapping
//! (`application/json`) with `protocol: http/json`.
//!
//! ```yaml
//! telemetry:
//!   destinations:
//!     otel:
//!       type: otlp
//!       endpoint: https://otlp.example.com   # default: the variables below, else http://localhost:4318
//!       protocol: http/protobuf              # or http/json
//!       compression: gzip                    # or none (the default)
//!       headers:                             # sent with every request; never shown
//!         authorization: Bearer ${OTLP_TOKEN}
//!       severity: INFO                       # TRACE, DEBUG, INFO, WARN, ERROR, FATAL
//!       resource:
//!         service.name: checkout
//!         deployment.environment.name: production
//!       forward: { ip: false, user_agent: true, language: true, referrer: true }
//!       timeout: 10s                         # the export timeout (a core key)
//! ```
//!
//! | our event | `LogRecord` |
//! |---|---|
//! | name | `event_name`, and the `body` (a string: log views that do not read `event_name` show the body) |
//! | timestamp | `time_unix_nano` |
//! | — | `observed_time_unix_nano`: when the request is made |
//! | — | `severity_number` 9, `severity_text` `INFO` (`severity:`) |
//! | properties | attributes under their own names, typed: string, int, double, bool, `array_value`, `kvlist_value` (nested), `null` as the empty value; an integer above `i64::MAX` as its decimal string |
//! | id | `log.record.uid` (the semantic conventions' unique id of a record, by which a receiver may drop a resent duplicate) |
//! | kind, unless `custom` (a tracked event) | `telemetry.kind`: `page_view`, `identify`, `alias` or `group` |
//! | user id | `user.id` |
//! | session id | `session.id` |
//! | request id | `telemetry.request_id` |
//! | hostname | `server.address` |
//! | path | `url.path` |
//! | route | `http.route` |
//! | method | `http.request.method` |
//! | User-Agent (`forward.user_agent`) | `user_agent.original` |
//! | language (`forward.language`) | `http.request.header.accept-language` (a list of one string) |
//! | referrer (`forward.referrer`) | `http.request.header.referer` (a list of one string) |
//! | client IP (`forward.ip`, off by default) | `client.address` |
//! | query string | never sent (it often carries tokens and e-mail addresses) |
//! | context field `trace_id` (32 hex digits) and `span_id` (16, with a valid trace id) | `trace_id` and `span_id` (bytes); a malformed one stays an attribute |
//! | the context's groups | `telemetry.groups` (a kvlist: group type → key) |
//! | any other context field | `telemetry.<field>`, typed |
//!
//! A property named like a context attribute replaces it; one named `log.record.uid` or
//! `telemetry.kind` is dropped; both are counted in `dropped_attributes_count`.
//!
//! The resource has `service.name` (default `unknown_service:<executable>`) and whatever
//! `resource:` and the variables add; the scope is `tower-telemetry` and its version.
//!
//! # The environment
//!
//! The variables OpenTelemetry's SDKs read are honoured *below* the configuration: a YAML key
//! (or a setter in code) wins, then the `LOGS_` variable, then the generic one, then the
//! default. From YAML they are read through the same environment as `${VAR}`
//! ([`Config::from_yaml_str_with_env`](crate::config::Config::from_yaml_str_with_env) injects
//! both); in code, through [`OtlpConfig::from_env`]. A `DestinationConfig` made in code (not
//! parsed) carries no variables: like [`Telemetry::from_config`](crate::Telemetry::from_config),
//! it is taken as it is.
//!
//! | setting | variables, first wins | default |
//! |---|---|---|
//! | `endpoint` | `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` (the full URL, used as it is), `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/logs` appended) | `http://localhost:4318` |
//! | `headers` | `OTEL_EXPORTER_OTLP_LOGS_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values percent-decoded; merged by name) | none |
//! | `compression` | `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION`, `OTEL_EXPORTER_OTLP_COMPRESSION` | `none` |
//! | `protocol` | `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` is an error) | `http/protobuf` |
//! | `timeout` (core key) | `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds) | 10 s |
//! | `resource` | `OTEL_SERVICE_NAME` (`service.name`), then `OTEL_RESOURCE_ATTRIBUTES` (`k=v,...`; merged by key) | `service.name: unknown_service:<executable>` |
//!
//! A variable with a bad value is a configuration error naming the variable (never quoting a
//! header's value), but only when it would be used.
//!
//! # Answers
//!
//! As OTLP/HTTP prescribes: 2xx delivered; 429, 502, 503 and 504 (and timeouts and connection
//! errors) retried, after the server's `Retry-After` when it gives one; every other status —
//! 500 and 408 included — failed without a retry, with the server's `google.rpc.Status`
//! message. A 200 with `partial_success.rejected_log_records = N` counts N of that request's
//! events failed (never retried, as the specification says); OTLP does not say which, so the
//! request's last N are the ones counted failed. Its `error_message` is logged once, escaped.
//! An event over 1 MiB encoded fails alone.

mod config;
mod record;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{StatusCode, Url};

pub use crate::destination::http::common::Forward;
pub(crate) use config::ENV_NAMES;
pub use config::{
    Compression, DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, LOGS_PATH, OtlpConfig, Protocol, Severity,
};

use super::{BoxFuture, DeliveryError, Destination};
use crate::config::{ConfigError, ConfigErrors, DeliveryConfig, Settings};
use crate::destination::http::common;
use crate::destination::http::{Body, Client, Limits, Outcomes, quote, split};
use crate::event::Event;
use record::Mapping;

/// 4 MiB per request (a Collector's gRPC default, which proxies in front of OTLP/HTTP
/// receivers often keep), 1 MiB per record; measured before compression.
pub(crate) const LIMITS: Limits = Limits {
    per_request: 4 * 1024 * 1024,
    per_event: 1024 * 1024,
};

/// Records per batch unless configured: OpenTelemetry's batch processor's default.
pub const DEFAULT_BATCH_SIZE: usize = 512;

/// Delivers events as OpenTelemetry log records over OTLP/HTTP. See the [module docs](self).
///
/// Clones share the same connections.
///
/// ```
/// use tower_telemetry::Telemetry;
/// use tower_telemetry::destination::otlp::{OtlpConfig, OtlpDestination};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let otlp = OtlpDestination::new(OtlpConfig::new().with_service_name("checkout")).unwrap();
/// assert_eq!(otlp.url(), "http://localhost:4318/v1/logs");
/// let telemetry = Telemetry::builder().destination("otel", otlp).build().unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct OtlpDestination {
    inner: Arc<Inner>,
}

struct Inner {
    config: OtlpConfig,
    url: Url,
    headers: HeaderMap,
    protocol: Protocol,
    gzip: bool,
    timeout: std::time::Duration,
    mapping: Mapping,
    resource: Resource,
    scope: InstrumentationScope,
    /// The encoded size of a request with no records, plus room for its length prefixes.
    overhead: usize,
    client: Client,
    /// Whether a partial success's message was logged (only the first is).
    partial_logged: AtomicBool,
}

impl OtlpDestination {
    /// A destination for `config`; fails if a setting (or a variable it reads) is unusable.
    /// Makes no request.
    pub fn new(config: OtlpConfig) -> Result<OtlpDestination, ConfigErrors> {
        Self::build(config, &|key, msg| {
            ConfigError::new(format!("otlp.{key}"), None, msg)
        })
        .map_err(ConfigErrors::from)
    }

    /// Builds one from the settings of a configured destination (the keys of the
    /// [module docs](self)); each error names the key path and line, or the variable.
    pub fn from_settings(settings: &Settings) -> Result<OtlpDestination, Vec<ConfigError>> {
        settings.build_with(OtlpConfig::from_settings(settings), Self::build)
    }

    fn build(
        config: OtlpConfig,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Self, Vec<ConfigError>> {
        let resolved = config.resolve(error)?;
        let client = Client::with_request_timeout("otlp", common::user_agent(), resolved.timeout)
            .map_err(|m| vec![error("endpoint", m)])?
            .with_retryable(retryable)
            .with_error_text(status_message);
        let mapping = Mapping {
            severity: config.severity,
            forward: config.forward,
        };
        let mut inner = Inner {
            url: resolved.url,
            headers: resolved.headers,
            protocol: resolved.protocol,
            gzip: resolved.gzip,
            timeout: resolved.timeout,
            mapping,
            resource: record::resource(&resolved.resource),
            scope: record::scope(),
            overhead: 0,
            client,
            partial_logged: AtomicBool::new(false),
            config,
        };
        // Two nested messages' length prefixes may grow by up to 4 bytes each once the
        // records are in.
        inner.overhead = inner.size_of_request(Vec::new()) + 16;
        Ok(OtlpDestination {
            inner: Arc::new(inner),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &OtlpConfig {
        &self.inner.config
    }

    /// The URL logs are posted to (userinfo taken out).
    pub fn url(&self) -> &str {
        self.inner.url.as_str()
    }

    /// The resolved encoding.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// Whether request bodies are gzip-compressed (resolved).
    pub fn is_gzip(&self) -> bool {
        self.inner.gzip
    }
}

impl fmt::Debug for OtlpDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.inner.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("OtlpDestination")
            .field("url", &common::masked_url(self.inner.url.as_str(), false))
            .field("protocol", &self.inner.protocol)
            .field("gzip", &self.inner.gzip)
            .field("headers", &headers)
            .field("timeout", &self.inner.timeout)
            .field("severity", &self.inner.mapping.severity)
            .finish_non_exhaustive()
    }
}

/// OTLP/HTTP's retryable statuses: 429, 502, 503, 504. Every other 4xx and 5xx "MUST NOT be
/// retried".
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `google.rpc.Status`, the body of an OTLP/HTTP refusal (the fields a client reads; prost
/// skips `details`).
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The message of a refusal's `google.rpc.Status` (protobuf or JSON, as its content type
/// says); `None` to quote the body as text.
fn status_message(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let message = if content_type.starts_with("application/x-protobuf") {
        Status::decode(body).ok()?.message
    } else if content_type.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.get("message")?.as_str()?.to_owned()
    } else {
        return None;
    };
    (!message.trim().is_empty()).then_some(message)
}

/// A 200's `partial_success`: the records the receiver rejected (negative ones read as 0) and
/// its message. An empty or unreadable body is a full success.
fn partial_success(protocol: Protocol, body: &[u8]) -> (u64, String) {
    if body.is_empty() {
        return (0, String::new());
    }
    match protocol {
        Protocol::HttpProtobuf => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or((0, String::new()), |p| {
                (
                    u64::try_from(p.rejected_log_records).unwrap_or(0),
                    p.error_message,
                )
            }),
        // Read by hand: OTLP/JSON writes the int64 as a string, which the generated type's
        // serde does not read back.
        Protocol::HttpJson => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return (0, String::new());
            };
            let p = &v["partialSuccess"];
            let rejected = match &p["rejectedLogRecords"] {
                serde_json::Value::String(s) => s.trim().parse::<u64>().unwrap_or(0),
                n => n.as_u64().unwrap_or(0),
            };
            let message = p["errorMessage"].as_str().unwrap_or_default().to_owned();
            (rejected, message)
        }
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Inner {
    /// The request carrying `records`.
    fn request(&self, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(self.scope.clone()),
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn size_of_request(&self, records: Vec<LogRecord>) -> usize {
        let request = self.request(records);
        match self.protocol {
            Protocol::HttpProtobuf => request.encoded_len(),
            Protocol::HttpJson => json_len(&request),
        }
    }

    /// A record's share of a request: its encoding, and in protobuf its field tag and length
    /// prefix (in JSON the separating comma is the splitter's).
    fn size_of_record(&self, record: &LogRecord) -> usize {
        match self.protocol {
            Protocol::HttpProtobuf => {
                let len = record.encoded_len();
                1 + prost::encoding::encoded_len_varint(len as u64) + len
            }
            Protocol::HttpJson => json_len(record),
        }
    }

    fn body(&self, request: &ExportLogsServiceRequest) -> Body {
        let bytes = match self.protocol {
            Protocol::HttpProtobuf => request.encode_to_vec(),
            // Serializing generated types with plain fields cannot fail.
            Protocol::HttpJson => serde_json::to_vec(request).unwrap_or_default(),
        };
        Body::json(bytes)
            .with_content_type(self.protocol.content_type())
            .with_gzip(self.gzip)
    }

    async fn deliver(&self, batch: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let observed = record::unix_nanos(SystemTime::now());
        let mut records: Vec<Option<LogRecord>> = batch
            .iter()
            .map(|e| Some(record::log_record(e, &self.mapping, observed)))
            .collect();
        let sizes: Vec<usize> = records
            .iter()
            .map(|r| r.as_ref().map_or(0, |r| self.size_of_record(r)))
            .collect();
        let plan = split(sizes.iter().copied().enumerate(), self.overhead, LIMITS);
        let mut outcomes = Outcomes::new(batch.len());
        for i in plan.oversized {
            outcomes.failed(
                i,
                DeliveryError::permanent(format!(
                    "otlp: the event is {} bytes encoded, over the limit of {} bytes per record",
                    sizes[i], LIMITS.per_event
                )),
            );
        }
        let mut stop: Option<DeliveryError> = None;
        for indexes in plan.requests {
            if let Some(e) = &stop {
                indexes.iter().for_each(|i| outcomes.failed(*i, e.clone()));
                continue;
            }
            let chunk = indexes.iter().filter_map(|i| records[*i].take()).collect();
            let body = self.body(&self.request(chunk));
            match self
                .client
                .post(&self.url, self.headers.clone(), body)
                .await
            {
                Ok(answer) => self.settle(&indexes, &answer, &mut outcomes),
                Err(f) => {
                    if f.error.is_retryable() {
                        stop = Some(f.error.clone());
                    }
                    indexes
                        .iter()
                        .for_each(|i| outcomes.failed(*i, f.error.clone()));
                }
            }
        }
        outcomes.into_result()
    }

    /// The verdicts of a request's events from a 2xx answer: delivered, but for a partial
    /// success's rejected ones.
    fn settle(&self, indexes: &[usize], answer: &[u8], outcomes: &mut Outcomes) {
        let (rejected, message) = partial_success(self.protocol, answer);
        let n = usize::try_from(rejected)
            .unwrap_or(usize::MAX)
            .min(indexes.len());
        if (n > 0 || !message.trim().is_empty())
            && !self.partial_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                target: "tower_telemetry",
                destination = "otlp",
                rejected = n,
                error = %quote(message.as_bytes()),
                "the OTLP receiver accepted a request only in part; its rejected records are \
                 counted failed and not retried (logged once; later partial successes are only \
                 counted)"
            );
        }
        let (delivered, failed) = indexes.split_at(indexes.len() - n);
        delivered.iter().for_each(|i| outcomes.delivered(*i));
        if failed.is_empty() {
            return;
        }
        let why = if message.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", quote(message.as_bytes()))
        };
        let error = DeliveryError::permanent(format!(
            "otlp: {path}: the receiver rejected {n} of the {len} log records of a request \
             (a partial success; OTLP does not say which, the request's last {n} are counted \
             failed){why}",
            path = self.url.path(),
            len = indexes.len(),
        ));
        failed
            .iter()
            .for_each(|i| outcomes.failed(*i, error.clone()));
    }
}

/// The length of `value` in JSON, without building it.
fn json_len<T: serde::Serialize>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

impl Destination for OtlpDestination {
    fn name(&self) -> &str {
        "otlp"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.inner.deliver(batch))
    }

    fn delivery_defaults(&self) -> DeliveryConfig {
        DeliveryConfig::default()
            .with_batch_size(DEFAULT_BATCH_SIZE)
            .with_concurrency(common::REQUESTS_IN_FLIGHT)
            .with_timeout(self.inner.timeout)
    }
}

#[cfg(test)]
mod tests;
