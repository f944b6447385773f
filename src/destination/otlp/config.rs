//! The `otlp` destination's settings: the YAML keys, the standard `OTEL_*` variables read below
//! them, their defaults and their validation.
//!
//! Each setting is resolved once, when the destination is built, in this order (the first
//! that gives it wins):
//!
//! 1. the YAML key (or the `with_*` setter in code);
//! 2. the signal-specific variable (`OTEL_EXPORTER_OTLP_LOGS_*`);
//! 3. the generic variable (`OTEL_EXPORTER_OTLP_*`);
//! 4. the default.
//!
//! Headers merge by name in the same order; resource attributes too, with `OTEL_SERVICE_NAME`
//! above `OTEL_RESOURCE_ATTRIBUTES`.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{ConfigError, ConfigErrorKind, EnvSnapshot, Settings};
use crate::destination::http::common::{
    Forward, Secret, masked_url, optional, percent_decode, target_url,
};
use crate::diag::Escaped;

/// The endpoint when neither the configuration nor the environment gives one: a Collector on
/// the same host, as OpenTelemetry's SDKs assume. Logs go to `{endpoint}/v1/logs`.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

/// The path appended to a base endpoint.
pub const LOGS_PATH: &str = "/v1/logs";

/// The longest one request may take, unless configured: OpenTelemetry's default export
/// timeout (10 s, the crate's default delivery timeout too).
pub const DEFAULT_TIMEOUT: Duration = crate::config::DEFAULT_TIMEOUT;

const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const LOGS_HEADERS: &str = "OTEL_EXPORTER_OTLP_LOGS_HEADERS";
const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
const LOGS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const LOGS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const LOGS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL";

/// Every variable the kind reads (the configuration snapshots these when a file is parsed).
pub(crate) const ENV_NAMES: &[&str] = &[
    SERVICE_NAME,
    RESOURCE_ATTRIBUTES,
    ENDPOINT,
    LOGS_ENDPOINT,
    HEADERS,
    LOGS_HEADERS,
    COMPRESSION,
    LOGS_COMPRESSION,
    TIMEOUT,
    LOGS_TIMEOUT,
    PROTOCOL,
    LOGS_PROTOCOL,
];

/// The keys an `otlp` destination accepts besides the core's (`events`, delivery keys; the
/// core's `timeout` is the export timeout).
const KEYS: &[&str] = &[
    "endpoint",
    "protocol",
    "compression",
    "headers",
    "severity",
    "resource",
    "forward",
];

/// Headers the kind sets itself; configuring one would send it twice.
const OWN_HEADERS: &[&str] = &["content-type", "content-encoding", "content-length", "host"];

/// The OTLP/HTTP encoding of the requests (`protocol:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// `http/protobuf`: binary protobuf, `Content-Type: application/x-protobuf`. The default.
    #[default]
    HttpProtobuf,
    /// `http/json`: OTLP's JSON mapping (hex trace ids, lowerCamelCase keys, 64-bit integers
    /// as strings), `Content-Type: application/json`.
    HttpJson,
}

impl Protocol {
    /// Its name in configuration and in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    ///
    /// ```
    /// use tower_telemetry::destination::otlp::Protocol;
    ///
    /// assert_eq!(Protocol::default().as_str(), "http/protobuf");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }

    /// The request's (and the answer's) media type.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "application/x-protobuf",
            Protocol::HttpJson => "application/json",
        }
    }

    fn parse(s: &str) -> Result<Protocol, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            "grpc" => Err(
                "grpc is not supported: the otlp kind speaks OTLP/HTTP; use \
                           http/protobuf (a Collector's port 4318) or http/json"
                    .into(),
            ),
            other => Err(format!(
                "unknown protocol `{}`; expected http/protobuf or http/json",
                Escaped(other)
            )),
        }
    }
}

/// Whether request bodies are compressed (`compression:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Sent as they are. The default, as in OpenTelemetry's SDKs.
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

impl Compression {
    /// Its name in configuration and in `OTEL_EXPORTER_OTLP_COMPRESSION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }

    fn parse(s: &str) -> Result<Compression, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!(
                "unknown compression `{}`; expected gzip or none",
                Escaped(other)
            )),
        }
    }
}

/// The severity every log record carries (`severity:`): OpenTelemetry's severity number for
/// the level's first step, and the level's name as `severity_text`.
///
/// ```
/// use tower_telemetry::destination::otlp::Severity;
///
/// assert_eq!(Severity::default(), Severity::Info);
/// assert_eq!((Severity::Info.number(), Severity::Info.text()), (9, "INFO"));
/// assert_eq!(Severity::Fatal.number(), 21);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// `TRACE`, 1.
    Trace,
    /// `DEBUG`, 5.
    Debug,
    /// `INFO`, 9. The default: an analytics event is neither a problem nor noise.
    #[default]
    Info,
    /// `WARN`, 13.
    Warn,
    /// `ERROR`, 17.
    Error,
    /// `FATAL`, 21.
    Fatal,
}

impl Severity {
    /// The `severity_number` (`SeverityNumber` of the log data model).
    pub fn number(self) -> i32 {
        match self {
            Severity::Trace => 1,
            Severity::Debug => 5,
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
            Severity::Fatal => 21,
        }
    }

    /// The `severity_text`.
    pub fn text(self) -> &'static str {
        match self {
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "TRACE" => Severity::Trace,
            "DEBUG" => Severity::Debug,
            "INFO" => Severity::Info,
            "WARN" | "WARNING" => Severity::Warn,
            "ERROR" => Severity::Error,
            "FATAL" => Severity::Fatal,
            _ => return None,
        })
    }
}

/// The settings of an [`OtlpDestination`](super::OtlpDestination), in code.
///
/// What a setter does not set comes from the standard `OTEL_*` variables when the
/// configuration was made with [`from_env`](Self::from_env) (or read from YAML), else from
/// the defaults; see the [module docs](super) for the order.
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::destination::otlp::{Compression, OtlpConfig, OtlpDestination, Protocol};
///
/// let config = OtlpConfig::new()
///     .with_endpoint("https://otlp.example.com")
///     .with_protocol(Protocol::HttpJson)
///     .with_compression(Compression::Gzip)
///     .with_header("authorization", "Bearer tok_live_123")
///     .with_service_name("checkout")
///     .with_resource_attribute("deployment.environment.name", "production")
///     .with_timeout(Duration::from_secs(5));
/// assert!(!format!("{config:?}").contains("tok_live_123"));
/// let otlp = OtlpDestination::new(config).unwrap();
/// assert_eq!(otlp.url(), "https://otlp.example.com/v1/logs");
///
/// // The variables an OpenTelemetry SDK reads, below what the setters set.
/// let env = |name: &str| match name {
///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_owned()),
///     "OTEL_SERVICE_NAME" => Some("checkout".to_owned()),
///     _ => None,
/// };
/// let otlp = OtlpDestination::new(OtlpConfig::from_env_with(env)).unwrap();
/// assert_eq!(otlp.url(), "http://collector:4318/v1/logs");
/// ```
#[derive(Clone, Default)]
pub struct OtlpConfig {
    pub(crate) endpoint: Option<Secret>,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) compression: Option<Compression>,
    pub(crate) headers: Vec<(String, Secret)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) severity: Severity,
    pub(crate) resource: Vec<(String, Value)>,
    pub(crate) forward: Forward,
    pub(crate) env: EnvSnapshot,
}

impl OtlpConfig {
    /// Everything at its default, nothing read from the environment: logs to
    /// [`DEFAULT_ENDPOINT`]`/v1/logs` as protobuf, uncompressed, severity INFO.
    pub fn new() -> Self {
        OtlpConfig::default()
    }

    /// [`new`](Self::new), with the process's `OTEL_*` variables below what the setters set.
    pub fn from_env() -> Self {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`new`](Self::new), with the `OTEL_*` variables read through `env` (`None`: unset)
    /// below what the setters set.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Self {
        OtlpConfig {
            env: EnvSnapshot::read(ENV_NAMES, &env),
            ..OtlpConfig::default()
        }
    }

    /// The base URL of the OTLP/HTTP receiver (a Collector's `http://host:4318`, a vendor's
    /// OTLP endpoint); logs are posted to `{endpoint}/v1/logs` (a URL already ending in
    /// `/v1/logs` is taken as it is). May carry credentials as userinfo (sent as Basic
    /// auth, never shown). Defaults to `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` (a full URL), then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, then [`DEFAULT_ENDPOINT`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(Secret(endpoint.into()));
        self
    }

    /// The encoding. Defaults to `OTEL_EXPORTER_OTLP_{LOGS_,}PROTOCOL`, then
    /// [`Protocol::HttpProtobuf`].
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The compression. Defaults to `OTEL_EXPORTER_OTLP_{LOGS_,}COMPRESSION`, then
    /// [`Compression::None`].
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// A header sent with every request (`authorization`, an API key header); its value is
    /// never shown. Adds to, and by name replaces, `OTEL_EXPORTER_OTLP_{,LOGS_}HEADERS`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, Secret(value.into())));
        self
    }

    /// The longest one export may take: the destination's default delivery `timeout`.
    /// Defaults to `OTEL_EXPORTER_OTLP_{LOGS_,}TIMEOUT` (milliseconds), then
    /// [`DEFAULT_TIMEOUT`]. (In YAML, the destination's `timeout:` key.)
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The severity of every record. Defaults to [`Severity::Info`].
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// The resource's `service.name`. Defaults to `OTEL_SERVICE_NAME`, then
    /// `OTEL_RESOURCE_ATTRIBUTES`' `service.name`, then `unknown_service:<executable>`.
    pub fn with_service_name(self, name: impl Into<String>) -> Self {
        self.with_resource_attribute("service.name", name.into())
    }

    /// A resource attribute (`service.version`, `deployment.environment.name`, ...): a string,
    /// number, boolean or list of them. Replaces one of the same key, from the environment
    /// too.
    pub fn with_resource_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Self {
        let key = key.into();
        self.resource.retain(|(k, _)| *k != key);
        self.resource.push((key, value.into()));
        self
    }

    /// What is forwarded about the end user. Defaults to [`Forward::default`]: the
    /// User-Agent, language and referrer, no IP address.
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = forward;
        self
    }

    /// The severity of every record.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// What is forwarded about the end user.
    pub fn forward(&self) -> Forward {
        self.forward
    }

    /// Reads the settings of an `otlp` destination, with every problem found; the variables
    /// come from the document's environment.
    pub(crate) fn from_settings(settings: &Settings) -> (OtlpConfig, Vec<ConfigError>) {
        let mut errors = settings.unknown_keys(KEYS);
        let mut config = OtlpConfig {
            env: settings.env.clone(),
            ..OtlpConfig::default()
        };
        config.endpoint = optional(settings, "endpoint", &mut errors).map(Secret);
        if let Some(p) = optional(settings, "protocol", &mut errors) {
            match Protocol::parse(&p) {
                Ok(p) => config.protocol = Some(p),
                Err(m) => errors.push(settings.error("protocol", m)),
            }
        }
        if let Some(c) = optional(settings, "compression", &mut errors) {
            match Compression::parse(&c) {
                Ok(c) => config.compression = Some(c),
                Err(m) => errors.push(settings.error("compression", m)),
            }
        }
        if let Some(s) = optional(settings, "severity", &mut errors) {
            match Severity::parse(&s) {
                Some(s) => config.severity = s,
                None => errors.push(settings.error(
                    "severity",
                    format!(
                        "unknown severity `{}`; expected one of TRACE, DEBUG, INFO, WARN, \
                         ERROR, FATAL",
                        Escaped(&s)
                    ),
                )),
            }
        }
        match settings.section("headers") {
            Ok(Some(headers)) => {
                for (name, value) in &headers.values {
                    match value {
                        Value::String(v) => config.headers.push((name.clone(), Secret(v.clone()))),
                        // The value is not quoted: it is likely a credential.
                        _ => errors.push(headers.error(name, "expected a string")),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        match settings.section("resource") {
            Ok(Some(resource)) => {
                for (key, value) in &resource.values {
                    if resource_value_ok(value) {
                        config.resource.push((key.clone(), value.clone()));
                    } else {
                        errors.push(resource.error(
                            key,
                            format!(
                                "expected a string, number, boolean or a list of them, found {}",
                                crate::config::describe_value(value)
                            ),
                        ));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        config.forward.read(settings, &mut errors);
        (config, errors)
    }

    /// Every setting resolved (setter or YAML, then the variables, then the defaults);
    /// `error(key, message)` builds the error for a key, a variable's error names the
    /// variable. Errors never quote a URL or a header value.
    pub(crate) fn resolve(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Resolved, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let env_error = |name: &str, message: String| {
            ConfigError::new(name, None, message).with_kind(ConfigErrorKind::Environment)
        };
        let env = |name: &str| self.var(name);
        // The first variable of `names` that is set, and its name.
        let first = |names: [&'static str; 2]| names.into_iter().find_map(|n| Some((n, env(n)?)));

        let url = self.url(&error, &env_error, &mut errors);

        let protocol = match (self.protocol, first([LOGS_PROTOCOL, PROTOCOL])) {
            (Some(p), _) => p,
            (None, Some((name, v))) => Protocol::parse(v).unwrap_or_else(|m| {
                errors.push(env_error(name, m));
                Protocol::default()
            }),
            (None, None) => Protocol::default(),
        };
        let compression = match (self.compression, first([LOGS_COMPRESSION, COMPRESSION])) {
            (Some(c), _) => c,
            (None, Some((name, v))) => Compression::parse(v).unwrap_or_else(|m| {
                errors.push(env_error(name, m));
                Compression::None
            }),
            (None, None) => Compression::None,
        };
        let timeout = match (self.timeout, first([LOGS_TIMEOUT, TIMEOUT])) {
            (Some(t), _) => t,
            (None, Some((name, v))) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    errors.push(env_error(
                        name,
                        format!(
                            "expected a positive whole number of milliseconds, found `{}`",
                            Escaped(v)
                        ),
                    ));
                    DEFAULT_TIMEOUT
                }
            },
            (None, None) => DEFAULT_TIMEOUT,
        };

        let mut headers = HeaderMap::new();
        for name in [HEADERS, LOGS_HEADERS] {
            if let Some(raw) = env(name) {
                match parse_pairs(raw) {
                    Ok(pairs) => {
                        for (k, v) in pairs {
                            if let Err(m) = put_header(&mut headers, &k, &v) {
                                errors.push(env_error(name, m));
                            }
                        }
                    }
                    Err(m) => errors.push(env_error(name, m)),
                }
            }
        }
        for (k, v) in &self.headers {
            if let Err(m) = put_header(&mut headers, k, &v.0) {
                errors.push(error(&format!("headers.{k}"), m));
            }
        }
        if let Some((_, Some(auth))) = &url {
            if !headers.contains_key(AUTHORIZATION) {
                headers.insert(AUTHORIZATION, auth.clone());
            }
        }

        let resource = self.resource_attributes(&env_error, &mut errors);
        match url {
            Some((url, _)) if errors.is_empty() => Ok(Resolved {
                url,
                headers,
                protocol,
                gzip: compression == Compression::Gzip,
                timeout,
                resource,
            }),
            _ => Err(errors),
        }
    }

    /// The variable `name`, trimmed, if it was set.
    fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(str::trim)
    }

    /// The logs URL and the Basic header of its userinfo.
    fn url(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
        env_error: &dyn Fn(&str, String) -> ConfigError,
        errors: &mut Vec<ConfigError>,
    ) -> Option<(Url, Option<HeaderValue>)> {
        // (the value, where it came from, whether `/v1/logs` is appended)
        let (raw, from, append) =
            match (&self.endpoint, self.var(LOGS_ENDPOINT), self.var(ENDPOINT)) {
                (Some(e), _, _) => (e.0.trim(), Some("endpoint"), true),
                (None, Some(v), _) => (v, Some(LOGS_ENDPOINT), false),
                (None, None, Some(v)) => (v, Some(ENDPOINT), true),
                (None, None, None) => (DEFAULT_ENDPOINT, None, true),
            };
        let fail = |message: String| match from {
            Some("endpoint") => error("endpoint", message),
            Some(name) => env_error(name, message),
            None => error("endpoint", message),
        };
        if raw.is_empty() {
            errors.push(fail(
                "is empty; expected the receiver's URL (is the environment variable set?)".into(),
            ));
            return None;
        }
        match target_url(raw) {
            Ok((mut url, auth)) => {
                if append {
                    let path = url.path().trim_end_matches('/').to_owned();
                    if !path.ends_with(LOGS_PATH) {
                        url.set_path(&format!("{path}{LOGS_PATH}"));
                    }
                }
                Some((url, auth))
            }
            Err(m) => {
                errors.push(fail(m));
                None
            }
        }
    }

    /// The resource's attributes: the default `service.name`, then `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_SERVICE_NAME`, and the configured ones, each replacing a key set before.
    fn resource_attributes(
        &self,
        env_error: &dyn Fn(&str, String) -> ConfigError,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<(String, Value)> {
        let mut attrs: Vec<(String, Value)> = vec![("service.name".into(), unknown_service())];
        let mut put = |k: String, v: Value| match attrs.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => attrs.push((k, v)),
        };
        if let Some(raw) = self.var(RESOURCE_ATTRIBUTES) {
            // The specification: a malformed list is discarded whole, with an error.
            match parse_pairs(raw) {
                Ok(pairs) => pairs
                    .into_iter()
                    .for_each(|(k, v)| put(k, Value::String(v))),
                Err(m) => errors.push(env_error(RESOURCE_ATTRIBUTES, m)),
            }
        }
        if let Some(name) = self.var(SERVICE_NAME) {
            put("service.name".into(), Value::String(name.to_owned()));
        }
        for (k, v) in &self.resource {
            put(k.clone(), v.clone());
        }
        attrs
    }
}

/// What an [`OtlpConfig`] resolves to.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) url: Url,
    /// Every value marked sensitive.
    pub(crate) headers: HeaderMap,
    pub(crate) protocol: Protocol,
    pub(crate) gzip: bool,
    pub(crate) timeout: Duration,
    pub(crate) resource: Vec<(String, Value)>,
}

/// OpenTelemetry's default `service.name`: `unknown_service:` and the executable's name.
fn unknown_service() -> Value {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned));
    Value::String(match exe {
        Some(exe) => format!("unknown_service:{exe}"),
        None => "unknown_service".to_owned(),
    })
}

/// A resource value the kind can send: a scalar, or a list of scalars.
fn resource_value_ok(v: &Value) -> bool {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
        Value::Array(items) => items
            .iter()
            .all(|i| matches!(i, Value::String(_) | Value::Number(_) | Value::Bool(_))),
        Value::Null | Value::Object(_) => false,
    }
}

/// The W3C Baggage-like lists of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`:
/// `key1=value1,key2=value2`, blanks around keys and values trimmed, values percent-decoded.
/// Errors name the entry by position, never quote it (header values are credentials).
pub(crate) fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (n, item) in raw.split(',').enumerate() {
        if item.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!(
                "entry {} has no `=`; expected key1=value1,key2=value2",
                n + 1
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("entry {} has an empty key", n + 1));
        }
        pairs.push((k.to_owned(), percent_decode(v.trim())));
    }
    Ok(pairs)
}

/// Sets header `name` to the sensitive `value` (replacing an earlier one of that name).
fn put_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let name = name.trim();
    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{}` is not a valid header name", Escaped(name)))?;
    if OWN_HEADERS.contains(&header.as_str()) {
        return Err(format!(
            "`{header}` is set by the otlp kind itself (from protocol and compression)"
        ));
    }
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
        format!("the value of header `{header}` cannot be sent in a header (a control character?)")
    })?;
    value.set_sensitive(true);
    headers.insert(header, value);
    Ok(())
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = self.endpoint.as_ref().map(|e| masked_url(&e.0, false));
        let headers: Vec<_> = self.headers.iter().map(|(n, v)| (n, v)).collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &endpoint)
            .field("protocol", &self.protocol)
            .field("compression", &self.compression)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("severity", &self.severity)
            .field("resource", &self.resource)
            .field("forward", &self.forward)
            .field("env", &self.env)
            .finish()
    }
}
