//! The `posthog` destination's settings: the YAML keys, their defaults and their validation.

use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::config::{ConfigError, Settings};
use crate::destination::http::common::{
    Forward, Secret, masked_url, optional, required, target_url,
};

/// PostHog Cloud's US ingestion host, the default `host`.
pub const DEFAULT_HOST: &str = "https://us.i.posthog.com";

/// The keys a `posthog` destination accepts besides the core's (`events`, delivery keys).
const KEYS: &[&str] = &["api_key", "host", "gzip", "forward"];

/// The settings of a [`PostHogDestination`](super::PostHogDestination), in code.
///
/// ```
/// use tower_telemetry::destination::posthog::{Forward, PostHogConfig, PostHogDestination};
///
/// let config = PostHogConfig::new("phc_project_api_key")
///     .with_host("https://eu.i.posthog.com")
///     .with_gzip(true)
///     .with_forward(Forward::default().with_ip(false));
/// assert!(!format!("{config:?}").contains("phc_project_api_key"));
/// let posthog = PostHogDestination::new(config).unwrap();
/// ```
#[derive(Clone)]
pub struct PostHogConfig {
    pub(crate) api_key: Secret,
    pub(crate) host: String,
    pub(crate) gzip: bool,
    pub(crate) forward: Forward,
}

impl PostHogConfig {
    /// Events for the project of `api_key` (the project API key, `phc_...`), sent to
    /// [`DEFAULT_HOST`] with gzip-compressed bodies.
    pub fn new(api_key: impl Into<String>) -> Self {
        PostHogConfig {
            api_key: Secret(api_key.into()),
            host: DEFAULT_HOST.to_owned(),
            gzip: true,
            forward: Forward::default(),
        }
    }

    /// The PostHog host: `https://us.i.posthog.com` (the default), `https://eu.i.posthog.com`,
    /// or a self-hosted instance's base URL. Events are posted to `{host}/batch/`.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Whether request bodies are gzip-compressed. Defaults to `true`.
    pub fn with_gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// What is forwarded about the end user. Defaults to [`Forward::default`]: no IP
    /// address (and `$geoip_disable: true`).
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = forward;
        self
    }

    /// The host events are sent to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether bodies are gzip-compressed.
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// What is forwarded about the end user.
    pub fn forward(&self) -> Forward {
        self.forward
    }

    /// Reads the settings of a `posthog` destination, with every problem found.
    pub(crate) fn from_settings(settings: &Settings) -> (PostHogConfig, Vec<ConfigError>) {
        let mut errors = settings.unknown_keys(KEYS);
        let api_key = required(
            settings,
            "api_key",
            "the project API key (phc_...), e.g. ${POSTHOG_API_KEY}",
            &mut errors,
        );
        let mut config = PostHogConfig::new(api_key.unwrap_or_default());
        if let Some(host) = optional(settings, "host", &mut errors) {
            config.host = host;
        }
        match settings.bool("gzip") {
            Ok(v) => config.gzip = v.unwrap_or(true),
            Err(e) => errors.push(e),
        }
        config.forward.read(settings, &mut errors);
        (config, errors)
    }

    /// Checks every value; `error(key, message)` builds the error for a key.
    pub(crate) fn validate(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(Url, Option<HeaderValue>), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.api_key.0.trim().is_empty() {
            errors.push(error(
                "api_key",
                "is empty; expected the project API key (is the environment variable set?)".into(),
            ));
        } else if self.api_key.0.trim().starts_with("phx_") {
            // A personal API key can read and change the whole organisation: it must not be
            // shipped with every event batch.
            errors.push(error(
                "api_key",
                "is a personal API key (phx_...); use the project API key (phc_...) from the \
                 project's settings"
                    .into(),
            ));
        }
        let target = match target_url(&self.host) {
            Ok((mut url, auth)) if url.query().is_none() => {
                let path = url.path().trim_end_matches('/').to_owned();
                let path = path.strip_suffix("/batch").unwrap_or(&path).to_owned();
                url.set_path(&format!("{path}/batch/"));
                Some((url, auth))
            }
            Ok(_) => {
                errors.push(error("host", "must not have a query".into()));
                None
            }
            Err(msg) => {
                errors.push(error("host", msg));
                None
            }
        };
        match target {
            Some(t) if errors.is_empty() => Ok(t),
            _ => Err(errors),
        }
    }
}

impl std::fmt::Debug for PostHogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostHogConfig")
            .field("api_key", &self.api_key)
            .field("host", &masked_url(&self.host, false))
            .field("gzip", &self.gzip)
            .field("forward", &self.forward)
            .finish()
    }
}
