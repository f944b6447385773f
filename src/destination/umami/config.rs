//! The `umami` destination's settings: what the YAML keys mean, their defaults, and their
//! validation.

use std::fmt;

use reqwest::Url;
use uuid::Uuid;

use super::payload::{MAX_HOSTNAME, js_len};
use crate::config::{ConfigError, ConfigErrorKind, Settings};
use crate::diag::Masked;

/// The User-Agent sent when none is configured: browser-like, so Umami's bot check (the
/// `isbot` library) keeps the events, and honest about what sends them.
pub(crate) const DEFAULT_USER_AGENT: &str = concat!(
    "Mozilla/5.0 (X11; Linux x86_64) tower-telemetry/",
    env!("CARGO_PKG_VERSION")
);

/// The keys an `umami` destination accepts besides the core's (`events`, `enabled`, queue,
/// batching, retry and timeout keys, which the configuration module handles).
pub(crate) const KEYS: &[&str] = &[
    "url",
    "website_id",
    "hostname",
    "user_agent",
    "forward",
    "distinct_id",
    "mode",
    "include_query",
    "context_data",
];

const FORWARD_KEYS: &[&str] = &["user_agent", "language", "referrer", "ip"];

/// Context fields that [`UmamiConfig::with_context_data`] may name, besides free-form fields.
const CONTEXT_FIELDS: &[&str] = &[
    "user_id",
    "session_id",
    "request_id",
    "hostname",
    "path",
    "query",
    "route",
    "method",
    "user_agent",
    "language",
    "referrer",
    "client_ip",
];

/// Which endpoint events are posted to (`mode:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UmamiMode {
    /// `/api/batch`, falling back to `/api/send` for servers without it (before 2.17, or the
    /// 500 bug before 3.0.2); the fallback is remembered. The default.
    #[default]
    Auto,
    /// Always `/api/batch`: one request per batch. A server without it fails permanently.
    Batch,
    /// Always `/api/send`: one request per event, as Umami's own clients do.
    Send,
}

/// What Umami's `id` (its distinct id: one session per id) is taken from (`distinct_id:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DistinctId {
    /// The context's `user_id`, when known and at most 50 characters. The default.
    #[default]
    UserId,
    /// Never send `id`: sessions come from the forwarded IP and User-Agent only.
    None,
}

/// Which facts about the end user are forwarded to Umami (`forward:`).
///
/// Umami keys sessions on (website, IP, User-Agent) unless an `id` is sent; a server-side sender
/// that forwards nothing puts every anonymous user into one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    pub(crate) user_agent: bool,
    pub(crate) language: bool,
    pub(crate) referrer: bool,
    pub(crate) ip: bool,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            user_agent: true,
            language: true,
            referrer: true,
            ip: false,
        }
    }
}

impl Forward {
    /// The end user's User-Agent as `userAgent`. Defaults to `true`.
    ///
    /// Umami runs its bot check on it, so requests from API clients with bare `name/version`
    /// agents (`okhttp/4.12`, `python-requests/2.32`) are discarded; turn this off if your
    /// users are such clients.
    pub fn with_user_agent(mut self, on: bool) -> Self {
        self.user_agent = on;
        self
    }

    /// The first tag of the end user's `Accept-Language` as `language`. Defaults to `true`.
    pub fn with_language(mut self, on: bool) -> Self {
        self.language = on;
        self
    }

    /// The request's `Referer` as `referrer`. Defaults to `true`.
    pub fn with_referrer(mut self, on: bool) -> Self {
        self.referrer = on;
        self
    }

    /// The end user's IP address as `ip`. Defaults to `false`: an IP address is personal data
    /// (GDPR), Umami uses it for geolocation and session hashing, and the context only has
    /// one if the layer was told how to read it. Turn it on when your privacy policy covers it.
    pub fn with_ip(mut self, on: bool) -> Self {
        self.ip = on;
        self
    }
}

/// The settings of an [`UmamiDestination`](super::UmamiDestination), in code.
///
/// The YAML keys have the same names as the setters; see the [module docs](super) for a full
/// example. Validation happens in [`UmamiDestination::new`](super::UmamiDestination::new).
///
/// ```
/// use tower_telemetry::{destination::umami::{UmamiConfig, UmamiDestination, UmamiMode}};
///
/// let config = UmamiConfig::new("https://umami.example.com", "5a1d0c5e-8c6e-4a3b-9f0a-1b2c3d4e5f60")
///     .with_hostname("app.example.com")
///     .with_mode(UmamiMode::Auto);
/// let umami = UmamiDestination::new(config).unwrap();
/// ```
///
/// Its `Debug` masks the URL's password (`https://user:***@umami.example`).
#[derive(Clone)]
pub struct UmamiConfig {
    pub(crate) url: String,
    pub(crate) website_id: String,
    pub(crate) hostname: Option<String>,
    pub(crate) user_agent: String,
    pub(crate) forward: Forward,
    pub(crate) distinct_id: DistinctId,
    pub(crate) mode: UmamiMode,
    pub(crate) include_query: bool,
    pub(crate) context_data: Vec<String>,
}

impl fmt::Debug for UmamiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UmamiConfig")
            .field("url", &Masked(&self.url))
            .field("website_id", &Masked(&self.website_id))
            .field("hostname", &self.hostname)
            .field("user_agent", &self.user_agent)
            .field("forward", &self.forward)
            .field("distinct_id", &self.distinct_id)
            .field("mode", &self.mode)
            .field("include_query", &self.include_query)
            .field("context_data", &self.context_data)
            .finish()
    }
}

impl UmamiConfig {
    /// The User-Agent sent when none is configured:
    /// `Mozilla/5.0 (X11; Linux x86_64) tower-telemetry/<version>`. Browser-like, so Umami's
    /// bot check keeps the events, and honest about what sends them.
    pub const DEFAULT_USER_AGENT: &'static str = DEFAULT_USER_AGENT;

    /// Events for website `website_id` (a UUID) of the Umami server at `url` (its base URL,
    /// e.g. `https://umami.example.com`; a trailing `/api/send` is accepted too).
    pub fn new(url: impl Into<String>, website_id: impl Into<String>) -> Self {
        UmamiConfig {
            url: url.into(),
            website_id: website_id.into(),
            hostname: None,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            forward: Forward::default(),
            distinct_id: DistinctId::default(),
            mode: UmamiMode::default(),
            include_query: false,
            context_data: Vec::new(),
        }
    }

    /// The `hostname` of every event (at most 100 characters). Defaults to the request's host
    /// from the event's context.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// The User-Agent header of the requests to Umami. Defaults to [`UmamiConfig::DEFAULT_USER_AGENT`].
    /// Umami silently discards events whose agent looks like a bot: keep it browser-like.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// What is forwarded about the end user. Defaults to [`Forward::default`]: User-Agent,
    /// language and referrer, not the IP address.
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = forward;
        self
    }

    /// Where Umami's `id` comes from. Defaults to [`DistinctId::UserId`].
    pub fn with_distinct_id(mut self, distinct_id: DistinctId) -> Self {
        self.distinct_id = distinct_id;
        self
    }

    /// Which endpoint events are posted to. Defaults to [`UmamiMode::Auto`].
    pub fn with_mode(mut self, mode: UmamiMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether `url` carries the request's query string (`/search?q=shoes`). Defaults to
    /// `false`: query strings often hold tokens and personal data.
    pub fn with_include_query(mut self, on: bool) -> Self {
        self.include_query = on;
        self
    }

    /// Context fields Umami has no field for (`session_id`, `request_id`, `route`, a free-form
    /// field, ...) to add to each event's `data`. A property of the same name wins. Defaults
    /// to none.
    pub fn with_context_data<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.context_data = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Reads the settings of an `umami` destination, with the errors found (each naming the
    /// key and line); values in error keep their defaults, so validation can go on.
    pub(crate) fn from_settings(settings: &Settings) -> (UmamiConfig, Vec<ConfigError>) {
        let mut errors = settings.unknown_keys(KEYS);
        let mut take = |r: Result<Option<&str>, ConfigError>| match r {
            Ok(v) => v.map(str::to_owned),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let url = take(settings.str("url"));
        let website_id = take(settings.str("website_id"));
        let hostname = take(settings.str("hostname"));
        let user_agent = take(settings.str("user_agent"));
        let distinct_id = take(settings.str("distinct_id"));
        let mode = take(settings.str("mode"));
        if url.is_none() && !errors.iter().any(|e| e.path().ends_with(".url")) {
            errors.push(
                settings
                    .error(
                        "url",
                        "missing: the Umami server's base URL, e.g. https://umami.example.com",
                    )
                    .with_kind(ConfigErrorKind::Missing),
            );
        }
        if website_id.is_none() && !errors.iter().any(|e| e.path().ends_with(".website_id")) {
            errors.push(
                settings
                    .error(
                        "website_id",
                        "missing: the website's UUID from Umami's settings",
                    )
                    .with_kind(ConfigErrorKind::Missing),
            );
        }
        let mut config = UmamiConfig::new(url.unwrap_or_default(), website_id.unwrap_or_default());
        config.hostname = hostname;
        if let Some(ua) = user_agent {
            config.user_agent = ua;
        }
        match distinct_id.as_deref() {
            None | Some("user_id") => {}
            Some("none") => config.distinct_id = DistinctId::None,
            Some(other) => errors.push(settings.error(
                "distinct_id",
                format!(
                    "unknown value `{}`; expected user_id or none",
                    Masked(other)
                ),
            )),
        }
        match mode.as_deref() {
            None | Some("auto") => {}
            Some("batch") => config.mode = UmamiMode::Batch,
            Some("send") => config.mode = UmamiMode::Send,
            Some(other) => errors.push(settings.error(
                "mode",
                format!(
                    "unknown mode `{}`; expected auto, batch or send",
                    Masked(other)
                ),
            )),
        }
        match settings.bool("include_query") {
            Ok(v) => config.include_query = v.unwrap_or(false),
            Err(e) => errors.push(e),
        }
        match settings.get("context_data") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => config.context_data.push(s.to_owned()),
                        None => errors.push(settings.error(
                            "context_data",
                            format!(
                                "item {i} is {}; expected a context field name",
                                crate::config::kind_of(item)
                            ),
                        )),
                    }
                }
            }
            Some(other) => errors.push(settings.error(
                "context_data",
                format!(
                    "expected a list of context field names, found {}",
                    crate::config::kind_of(other)
                ),
            )),
        }
        match settings.section("forward") {
            Ok(None) => {}
            Ok(Some(forward)) => {
                errors.extend(forward.unknown_keys(FORWARD_KEYS));
                let mut flag = |key: &str, slot: &mut bool| match forward.bool(key) {
                    Ok(Some(v)) => *slot = v,
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                };
                let f = &mut config.forward;
                flag("user_agent", &mut f.user_agent);
                flag("language", &mut f.language);
                flag("referrer", &mut f.referrer);
                flag("ip", &mut f.ip);
            }
            Err(e) => errors.push(e),
        }
        (config, errors)
    }
}

/// A validated configuration: what the destination runs with.
#[derive(Clone)]
pub(crate) struct Validated {
    pub(crate) send_url: Url,
    pub(crate) batch_url: Url,
    pub(crate) website_id: Uuid,
    pub(crate) user_agent: reqwest::header::HeaderValue,
}

impl fmt::Debug for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("send_url", &Masked(self.send_url.as_str()))
            .field("batch_url", &Masked(self.batch_url.as_str()))
            .field("website_id", &self.website_id)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl UmamiConfig {
    /// Checks every value; `error(key, message)` builds the error for a key.
    pub(crate) fn validate(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Validated, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let base = match parse_base_url(&self.url) {
            Ok(u) => Some(u),
            Err(msg) => {
                errors.push(error("url", msg));
                None
            }
        };
        let website_id = match Uuid::parse_str(self.website_id.trim()) {
            Ok(id) => Some(id),
            Err(_) if self.website_id.trim().is_empty() => {
                errors.push(error(
                    "website_id",
                    "is empty; expected the website's UUID (is the environment variable set?)"
                        .into(),
                ));
                None
            }
            Err(e) => {
                errors.push(error(
                    "website_id",
                    format!("`{}` is not a UUID: {e}", Masked(&self.website_id)),
                ));
                None
            }
        };
        if let Some(h) = &self.hostname {
            if h.is_empty() || js_len(h) > MAX_HOSTNAME {
                errors.push(error(
                    "hostname",
                    format!("must be 1 to {MAX_HOSTNAME} characters (Umami rejects longer ones)"),
                ));
            }
        }
        let user_agent = match reqwest::header::HeaderValue::from_str(&self.user_agent) {
            Ok(v) => Some(v),
            Err(_) => {
                errors.push(error(
                    "user_agent",
                    "is not a valid header value (control characters?)".into(),
                ));
                None
            }
        };
        for field in &self.context_data {
            if field.is_empty() {
                errors.push(error("context_data", "contains an empty field name".into()));
            }
        }
        match (base, website_id, user_agent) {
            (Some(base), Some(website_id), Some(user_agent)) if errors.is_empty() => {
                Ok(Validated {
                    send_url: endpoint(&base, "api/send"),
                    batch_url: endpoint(&base, "api/batch"),
                    website_id,
                    user_agent,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Whether `field` names a well-known context field (else it is a free-form one).
pub(crate) fn is_known_context_field(field: &str) -> bool {
    CONTEXT_FIELDS.contains(&field)
}

/// The server's base URL: http(s), a host, no query or fragment; a pasted `/api/send` or
/// `/api/batch` endpoint is reduced to its base.
fn parse_base_url(raw: &str) -> Result<Url, String> {
    // Messages show the URL with its password masked.
    let raw = raw.trim();
    let shown = Masked(raw);
    let mut url = Url::parse(raw).map_err(|e| format!("`{shown}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{shown}` must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{shown}` must not have a query or fragment; give the server's base URL"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/api/send")
        .or_else(|| path.strip_suffix("/api/batch"))
        .unwrap_or(path)
        .to_owned();
    url.set_path(&format!("{path}/"));
    Ok(url)
}

fn endpoint(base: &Url, path: &str) -> Url {
    // `base` always ends with `/`, so joining a relative path appends to it.
    base.join(path).unwrap_or_else(|_| base.clone())
}

/// Getters, named after the fields the `with_*` methods set.
impl Forward {
    /// Whether the request's User-Agent is forwarded.
    pub fn user_agent(&self) -> bool {
        self.user_agent
    }

    /// Whether the request's language is forwarded.
    pub fn language(&self) -> bool {
        self.language
    }

    /// Whether the request's referrer is forwarded.
    pub fn referrer(&self) -> bool {
        self.referrer
    }

    /// Whether the client IP is forwarded.
    pub fn ip(&self) -> bool {
        self.ip
    }
}

/// Getters, named after the fields the `with_*` methods set.
impl UmamiConfig {
    /// The Umami server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The website id.
    pub fn website_id(&self) -> &str {
        &self.website_id
    }

    /// The `hostname` of every event (`None`: the request's host from the event's context).
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The User-Agent header of the requests to Umami.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// What is forwarded from the request.
    pub fn forward(&self) -> Forward {
        self.forward
    }

    /// What is sent as Umami's distinct id.
    pub fn distinct_id(&self) -> DistinctId {
        self.distinct_id
    }

    /// The delivery mode.
    pub fn mode(&self) -> UmamiMode {
        self.mode
    }

    /// Whether `url` carries the request's query string.
    pub fn include_query(&self) -> bool {
        self.include_query
    }

    /// The context fields added to each event's `data`.
    pub fn context_data(&self) -> &[String] {
        &self.context_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = |s| parse_base_url(s).map(|u| u.to_string());
        assert_eq!(
            u("https://umami.example.com").unwrap(),
            "https://umami.example.com/"
        );
        assert_eq!(
            u("http://127.0.0.1:3000/api/send").unwrap(),
            "http://127.0.0.1:3000/"
        );
        assert_eq!(u("https://x.io/umami/").unwrap(), "https://x.io/umami/");
        assert!(u("ftp://x.io").is_err());
        assert!(u("umami.example.com").is_err());
        assert!(u("https://x.io/?a=1").is_err());
        let base = parse_base_url("https://x.io/umami").unwrap();
        assert_eq!(
            endpoint(&base, "api/batch").as_str(),
            "https://x.io/umami/api/batch"
        );
    }

    #[test]
    fn default_user_agent_is_browser_like() {
        assert!(DEFAULT_USER_AGENT.starts_with("Mozilla/5.0 ("));
        assert!(!super::super::bot::looks_like_bot(DEFAULT_USER_AGENT));
    }
}
