//! The `segment` destination's settings: the YAML keys, their defaults and their validation.

use reqwest::Url;

use super::SegmentFlavor;
use crate::config::{ConfigError, Settings};
use crate::destination::http::common::{
    Forward, Secret, masked_url, optional, required, target_url,
};

/// Segment's tracking API, the default `url` of `flavor: segment`.
pub const SEGMENT_URL: &str = "https://api.segment.io";

/// The keys a `segment` destination accepts besides the core's (`events`, delivery keys).
const KEYS: &[&str] = &["flavor", "url", "write_key", "forward"];

/// The settings of a [`SegmentDestination`](super::SegmentDestination), in code.
///
/// ```
/// use tower_telemetry::destination::segment::{SegmentConfig, SegmentDestination, SegmentFlavor};
///
/// let config = SegmentConfig::new("write_key_abc")
///     .with_flavor(SegmentFlavor::RudderStack)
///     .with_url("https://acme.dataplane.rudderstack.com");
/// assert!(!format!("{config:?}").contains("write_key_abc"));
/// let cdp = SegmentDestination::new(config).unwrap();
/// ```
#[derive(Clone)]
pub struct SegmentConfig {
    pub(crate) write_key: Secret,
    pub(crate) flavor: SegmentFlavor,
    pub(crate) url: Option<String>,
    pub(crate) forward: Forward,
}

impl SegmentConfig {
    /// Events for the source of `write_key`, to Segment ([`SEGMENT_URL`]) unless a flavor or
    /// URL is given.
    pub fn new(write_key: impl Into<String>) -> Self {
        SegmentConfig {
            write_key: Secret(write_key.into()),
            flavor: SegmentFlavor::default(),
            url: None,
            forward: Forward::default(),
        }
    }

    /// Which implementation of the API the URL serves: its limits differ. Defaults to
    /// [`SegmentFlavor::Segment`].
    pub fn with_flavor(mut self, flavor: SegmentFlavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The API's base URL; events are posted to `{url}/v1/batch`. Required for RudderStack
    /// (the data plane URL) and Jitsu; defaults to [`SEGMENT_URL`] for Segment.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// What is forwarded about the end user. Defaults to [`Forward::default`]: no IP address.
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = forward;
        self
    }

    /// The flavor.
    pub fn flavor(&self) -> SegmentFlavor {
        self.flavor
    }

    /// The configured base URL (`None`: the flavor's default).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// What is forwarded about the end user.
    pub fn forward(&self) -> Forward {
        self.forward
    }

    /// Reads the settings of a `segment` destination, with every problem found.
    pub(crate) fn from_settings(settings: &Settings) -> (SegmentConfig, Vec<ConfigError>) {
        let mut errors = settings.unknown_keys(KEYS);
        let write_key = required(
            settings,
            "write_key",
            "the source's write key, e.g. ${SEGMENT_WRITE_KEY}",
            &mut errors,
        );
        let mut config = SegmentConfig::new(write_key.unwrap_or_default());
        config.url = optional(settings, "url", &mut errors);
        match optional(settings, "flavor", &mut errors).as_deref() {
            None | Some("segment") => {}
            Some("rudderstack") => config.flavor = SegmentFlavor::RudderStack,
            Some("jitsu") => config.flavor = SegmentFlavor::Jitsu,
            Some(other) => errors.push(settings.error(
                "flavor",
                format!(
                    "unknown flavor `{}`; expected segment, rudderstack or jitsu",
                    crate::diag::Escaped(other)
                ),
            )),
        }
        config.forward.read(settings, &mut errors);
        (config, errors)
    }

    /// Checks every value; `error(key, message)` builds the error for a key. The endpoint.
    pub(crate) fn validate(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Url, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.write_key.0.trim().is_empty() {
            errors.push(error(
                "write_key",
                "is empty; expected the source's write key (is the environment variable set?)"
                    .into(),
            ));
        }
        let raw = match (&self.url, self.flavor) {
            (Some(url), _) => Some(url.as_str()),
            (None, SegmentFlavor::Segment) => Some(SEGMENT_URL),
            (None, flavor) => {
                errors.push(error(
                    "url",
                    format!(
                        "missing: flavor {} has no default URL; give your {} endpoint",
                        flavor.as_str(),
                        match flavor {
                            SegmentFlavor::RudderStack => "data plane",
                            _ => "Jitsu ingest",
                        }
                    ),
                ));
                None
            }
        };
        let url = raw.and_then(|raw| match target_url(raw) {
            Ok((_, Some(_))) => {
                errors.push(error(
                    "url",
                    "must not carry a user or password; the write key is the credential".into(),
                ));
                None
            }
            Ok((url, None)) if url.query().is_some() => {
                errors.push(error("url", "must not have a query".into()));
                None
            }
            Ok((mut url, None)) => {
                let path = url.path().trim_end_matches('/').to_owned();
                let path = path.strip_suffix("/v1/batch").unwrap_or(&path).to_owned();
                url.set_path(&format!("{path}/v1/batch"));
                Some(url)
            }
            Err(msg) => {
                errors.push(error("url", msg));
                None
            }
        });
        match url {
            Some(url) if errors.is_empty() => Ok(url),
            _ => Err(errors),
        }
    }
}

impl std::fmt::Debug for SegmentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentConfig")
            .field("write_key", &self.write_key)
            .field("flavor", &self.flavor)
            .field("url", &self.url.as_deref().map(|u| masked_url(u, false)))
            .field("forward", &self.forward)
            .finish()
    }
}
