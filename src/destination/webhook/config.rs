//! The `webhook` destination's settings: the YAML keys, their defaults and their validation.

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::config::{ConfigError, Settings};
use crate::destination::http::common::{Forward, Secret, masked_url, required, target_url};

/// The keys a `webhook` destination accepts besides the core's (`events`, delivery keys).
const KEYS: &[&str] = &["url", "secret", "forward"];

/// The settings of a [`WebhookDestination`](super::WebhookDestination), in code.
///
/// ```
/// use tower_telemetry::destination::webhook::{WebhookConfig, WebhookDestination};
///
/// let config = WebhookConfig::new(
///     "https://hooks.example.com/telemetry",
///     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
/// );
/// assert!(!format!("{config:?}").contains("MfKQ9r8G"));
/// let hooks = WebhookDestination::new(config).unwrap();
/// ```
#[derive(Clone)]
pub struct WebhookConfig {
    pub(crate) url: Secret,
    pub(crate) secret: Secret,
    pub(crate) forward: Forward,
}

impl WebhookConfig {
    /// Events posted to `url`, signed with `secret` (`whsec_` and the base64 of the key, as
    /// Standard Webhooks libraries generate it). The URL may carry credentials (userinfo,
    /// a token in the query); it is never shown.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        WebhookConfig {
            url: Secret(url.into()),
            secret: Secret(secret.into()),
            forward: Forward::default(),
        }
    }

    /// What is forwarded about the end user. Defaults to [`Forward::default`]: no IP address.
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = forward;
        self
    }

    /// What is forwarded about the end user.
    pub fn forward(&self) -> Forward {
        self.forward
    }

    /// Reads the settings of a `webhook` destination, with every problem found.
    pub(crate) fn from_settings(settings: &Settings) -> (WebhookConfig, Vec<ConfigError>) {
        let mut errors = settings.unknown_keys(KEYS);
        let url = required(settings, "url", "the URL to post events to", &mut errors);
        let secret = required(
            settings,
            "secret",
            "the signing secret (whsec_...), e.g. ${WEBHOOK_SECRET}",
            &mut errors,
        );
        let mut config = WebhookConfig::new(url.unwrap_or_default(), secret.unwrap_or_default());
        config.forward.read(settings, &mut errors);
        (config, errors)
    }

    /// Checks every value; `error(key, message)` builds the error for a key. The endpoint, its
    /// userinfo as a Basic header, and the signing key.
    pub(crate) fn validate(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(Url, Option<HeaderValue>, Vec<u8>), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let target = if self.url.0.trim().is_empty() {
            errors.push(error(
                "url",
                "is empty; expected the URL to post events to (is the environment variable set?)"
                    .into(),
            ));
            None
        } else {
            match target_url(&self.url.0) {
                Ok(t) => Some(t),
                Err(msg) => {
                    errors.push(error("url", msg));
                    None
                }
            }
        };
        let key = match signing_key(&self.secret.0) {
            Ok(key) => Some(key),
            Err(msg) => {
                errors.push(error("secret", msg.into()));
                None
            }
        };
        match (target, key) {
            (Some((url, auth)), Some(key)) if errors.is_empty() => Ok((url, auth, key)),
            _ => Err(errors),
        }
    }
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_` (the prefix is
/// optional, as in the reference libraries). Errors never quote the secret.
pub(crate) fn signing_key(secret: &str) -> Result<Vec<u8>, &'static str> {
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(
            "is empty; expected whsec_ and the base64 of the key (is the environment \
                    variable set?)",
        );
    }
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(key) if key.len() >= 16 => Ok(key),
        Ok(_) => Err(
            "is too short; the key after whsec_ should be at least 16 bytes (24 \
                      base64 characters)",
        ),
        Err(_) => Err(
            "is not whsec_ followed by base64; generate one with a Standard \
                       Webhooks library or `openssl rand -base64 32`",
        ),
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &masked_url(&self.url.0, true))
            .field("secret", &self.secret)
            .field("forward", &self.forward)
            .finish()
    }
}
