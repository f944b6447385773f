//! The relay's own settings, in code and in the `relay:` section of a YAML file.

use std::time::Duration;

use crate::config::{Config, ConfigError, ConfigErrorKind, ConfigErrors, Document, Settings};
use crate::destination::nats::{
    ConnectSettings, NatsAuth, NatsTls, connect_settings_from, duration,
};

/// Default durable consumer name.
pub(crate) const DEFAULT_DURABLE: &str = "telemetry-relay";
/// Default time a message may stay unacknowledged before JetStream redelivers it.
pub(crate) const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default deliveries of one message before JetStream gives up on it.
pub(crate) const DEFAULT_MAX_DELIVER: i64 = 20;
/// Default messages handled together.
pub(crate) const DEFAULT_BATCH: usize = 256;
/// Default time event ids are remembered to skip redeliveries.
pub(crate) const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(600);

const KEYS: &[&str] = &[
    "stream",
    "durable",
    "filter_subject",
    "ack_wait",
    "max_deliver",
    "batch_size",
    "max_ack_pending",
    "dedupe_window",
    "shared_dedupe",
];

/// Where a [`Relay`](super::Relay) reads events from and how it acknowledges them.
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::relay::RelayConfig;
///
/// let config = RelayConfig::new(["nats://127.0.0.1:4222"])
///     .with_stream("TELEMETRY")
///     .with_durable("telemetry-relay")
///     .with_ack_wait(Duration::from_secs(30))
///     .with_max_deliver(20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    pub(crate) connect: ConnectSettings,
    pub(crate) stream: String,
    pub(crate) durable: String,
    pub(crate) filter_subject: Option<String>,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) batch_size: usize,
    pub(crate) max_ack_pending: Option<i64>,
    pub(crate) dedupe_window: Duration,
    pub(crate) shared_dedupe: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            connect: ConnectSettings::default(),
            stream: crate::destination::nats::DEFAULT_STREAM.to_owned(),
            durable: DEFAULT_DURABLE.to_owned(),
            filter_subject: None,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
            batch_size: DEFAULT_BATCH,
            max_ack_pending: None,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            shared_dedupe: true,
        }
    }
}

impl RelayConfig {
    /// Reads from the NATS servers at `servers` (`servers:`).
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut c = RelayConfig::default();
        c.connect.servers = servers.into_iter().map(Into::into).collect();
        c
    }

    /// The stream to read (`stream:`); it must exist. Defaults to `TELEMETRY`.
    pub fn with_stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// The durable consumer's name (`durable:`); relays with the same name share the work.
    /// Created if missing. Defaults to `telemetry-relay`.
    pub fn with_durable(mut self, name: impl Into<String>) -> Self {
        self.durable = name.into();
        self
    }

    /// Only events on subjects matching this filter (`filter_subject:`). Defaults to all.
    pub fn with_filter_subject(mut self, filter: impl Into<String>) -> Self {
        self.filter_subject = Some(filter.into());
        self
    }

    /// How long a message may stay unacknowledged before JetStream redelivers it to any
    /// relay (`ack_wait:`). Defaults to 30 s. A relay still working on a message (retrying a
    /// destination) tells JetStream so every third of it, so only a dead relay's messages
    /// are redelivered.
    pub fn with_ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Deliveries of one message before JetStream stops redelivering it (`max_deliver:`).
    /// Defaults to 20.
    pub fn with_max_deliver(mut self, n: i64) -> Self {
        self.max_deliver = n;
        self
    }

    /// Messages handled together (`batch_size:`). Defaults to 256.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Messages delivered to relays and not yet acknowledged, over all relays
    /// (`max_ack_pending:`). Defaults to 16 batches.
    pub fn with_max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = Some(n);
        self
    }

    /// How long event ids are remembered so that a redelivered message does not reach a
    /// destination that already has it (`dedupe_window:`). Defaults to 10 minutes.
    pub fn with_dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    /// Whether relays share what they delivered through a JetStream key-value bucket
    /// (`shared_dedupe:`), so a message redelivered to *another* relay after one died is not
    /// delivered twice either. Defaults to `true`; off, only the relay's own memory is used.
    pub fn with_shared_dedupe(mut self, on: bool) -> Self {
        self.shared_dedupe = on;
        self
    }

    /// How to authenticate. Defaults to none.
    pub fn with_auth(mut self, auth: NatsAuth) -> Self {
        self.connect.auth = auth;
        self
    }

    /// TLS settings. Defaults to [`NatsTls::default`].
    pub fn with_tls(mut self, tls: NatsTls) -> Self {
        self.connect.tls = tls;
        self
    }

    /// Reads a relay file: a `relay:` section (this type's keys, plus `servers`, `token`,
    /// `user`, `password`, `credentials`, `tls`, `connect_timeout`, `client_name` as for the
    /// `nats` destination) and a `telemetry:` section (the destinations to feed, as for
    /// [`Telemetry::from_yaml_str`](crate::Telemetry::from_yaml_str)). `${VAR}` and
    /// `${VAR:-default}` are substituted in both; errors name the key path and line.
    ///
    /// ```
    /// use tower_telemetry::relay::RelayConfig;
    ///
    /// let (relay, telemetry) = RelayConfig::from_yaml_str(r#"
    /// relay:
    ///   servers: [nats://127.0.0.1:4222]
    ///   stream: TELEMETRY
    ///   durable: telemetry-relay
    ///   ack_wait: 30s
    /// telemetry:
    ///   destinations:
    ///     logging:
    ///       level: INFO
    /// "#).unwrap();
    /// assert_eq!(telemetry.destinations().len(), 1);
    /// ```
    pub fn from_yaml_str(yaml: &str) -> Result<(RelayConfig, Config), ConfigErrors> {
        Self::from_yaml_str_with_env(yaml, |k| std::env::var(k).ok())
    }

    /// [`from_yaml_str`](Self::from_yaml_str) with the environment variables from `env`.
    pub fn from_yaml_str_with_env(
        yaml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(RelayConfig, Config), ConfigErrors> {
        let document = Document::parse(yaml, env)?;
        let mut errors = Vec::new();
        let relay = match document.section("relay") {
            Ok(Some(settings)) => {
                let (relay, mut problems) = RelayConfig::from_settings(&settings);
                errors.append(&mut problems);
                // The values' checks name a key; the file says where it is.
                errors.extend(relay.validate().into_iter().map(|mut e| {
                    let key = e.path.strip_prefix("relay.").unwrap_or_default();
                    e.line = settings.lines.get(key).copied().or(settings.line);
                    e
                }));
                relay
            }
            Ok(None) => {
                errors.push(
                    ConfigError::new(
                        "relay",
                        None,
                        "missing the top-level `relay:` section (servers, stream, durable, ...)",
                    )
                    .with_kind(ConfigErrorKind::Missing),
                );
                RelayConfig::default()
            }
            Err(e) => {
                errors.push(e);
                RelayConfig::default()
            }
        };
        let (telemetry, mut problems) = document.config(&["relay"]);
        errors.append(&mut problems);
        if errors.is_empty() {
            Ok((relay, telemetry))
        } else {
            errors.sort_by_key(|e| e.line().unwrap_or(usize::MAX));
            Err(errors.into())
        }
    }

    pub(crate) fn from_settings(settings: &Settings) -> (RelayConfig, Vec<ConfigError>) {
        let mut allowed: Vec<&str> = KEYS.to_vec();
        allowed.extend_from_slice(crate::destination::nats::CONNECT_KEYS);
        let mut errors = settings.unknown_keys(&allowed);
        let mut c = RelayConfig {
            connect: connect_settings_from(settings, &mut errors),
            ..RelayConfig::default()
        };
        let mut string = |key: &str, slot: &mut String| match settings.str(key) {
            Ok(Some(v)) => *slot = v.to_owned(),
            Ok(None) => {}
            Err(e) => errors.push(e),
        };
        string("stream", &mut c.stream);
        string("durable", &mut c.durable);
        let mut filter = String::new();
        string("filter_subject", &mut filter);
        if !filter.is_empty() {
            c.filter_subject = Some(filter);
        }
        if let Some(d) = duration(settings, "ack_wait", &mut errors) {
            c.ack_wait = d;
        }
        if let Some(d) = duration(settings, "dedupe_window", &mut errors) {
            c.dedupe_window = d;
        }
        let mut int = |key: &str| match settings.u64(key) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let Some(n) = int("max_deliver") {
            c.max_deliver = i64::try_from(n).unwrap_or(i64::MAX);
        }
        if let Some(n) = int("batch_size") {
            c.batch_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = int("max_ack_pending") {
            c.max_ack_pending = Some(i64::try_from(n).unwrap_or(i64::MAX));
        }
        match settings.bool("shared_dedupe") {
            Ok(Some(b)) => c.shared_dedupe = b,
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        (c, errors)
    }

    /// Every problem with the values (not the connection).
    pub(crate) fn validate(&self) -> Vec<ConfigError> {
        let err = |key: &str, msg: String| ConfigError::new(format!("relay.{key}"), None, msg);
        let mut errors = match self.connect.validate(&err) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !name_ok(&self.stream) {
            errors.push(err(
                "stream",
                format!("`{}` is not a stream name", self.stream),
            ));
        }
        if !name_ok(&self.durable) {
            errors.push(err(
                "durable",
                format!("`{}` is not a consumer name", self.durable),
            ));
        }
        if self.ack_wait < Duration::from_millis(100) {
            errors.push(err("ack_wait", "must be at least 100ms".into()));
        }
        if self.max_deliver == 0 || self.max_deliver < -1 {
            errors.push(err(
                "max_deliver",
                "must be at least 1 (or -1 for no limit)".into(),
            ));
        }
        if self.batch_size == 0 {
            errors.push(err("batch_size", "must be at least 1".into()));
        }
        errors
    }

    pub(crate) fn ack_pending(&self) -> i64 {
        self.max_ack_pending
            .unwrap_or((self.batch_size as i64).saturating_mul(16))
    }
}

/// Getters, named after the fields the `with_*` methods set.
impl RelayConfig {
    /// The server addresses.
    pub fn servers(&self) -> &[String] {
        &self.connect.servers
    }

    /// How to authenticate.
    pub fn auth(&self) -> &NatsAuth {
        &self.connect.auth
    }

    /// The TLS settings.
    pub fn tls(&self) -> &NatsTls {
        &self.connect.tls
    }

    /// The connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect.connect_timeout
    }

    /// The client name shown by the server.
    pub fn client_name(&self) -> Option<&str> {
        self.connect.client_name.as_deref()
    }

    /// The stream read.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The durable consumer's name.
    pub fn durable(&self) -> &str {
        &self.durable
    }

    /// The consumer's subject filter.
    pub fn filter_subject(&self) -> Option<&str> {
        self.filter_subject.as_deref()
    }

    /// How long the server waits for an acknowledgement.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The most deliveries of one message.
    pub fn max_deliver(&self) -> i64 {
        self.max_deliver
    }

    /// Messages fetched per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The most unacknowledged messages.
    pub fn max_ack_pending(&self) -> Option<i64> {
        self.max_ack_pending
    }

    /// How long event ids are remembered, so a redelivered message is not delivered twice.
    pub fn dedupe_window(&self) -> Duration {
        self.dedupe_window
    }

    /// Whether relays share deduplication through a key-value bucket.
    pub fn shared_dedupe(&self) -> bool {
        self.shared_dedupe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_sections_with_lines() {
        let yaml = "relay:\n  servers: [nats://127.0.0.1:4222]\n  ack_wait: 2s\n  tls:\n    required: yes\ntelemetry:\n  destinations:\n    memory: {}\n";
        let err = RelayConfig::from_yaml_str_with_env(yaml, |_| None).unwrap_err();
        let e = &err.errors()[0];
        assert_eq!((e.path(), e.line()), ("relay.tls.required", Some(5)));

        let yaml = "relay:\n  servers: [\"${NATS:-nats://127.0.0.1:4222}\"]\n  ack_wait: 2s\n  max_deliver: 3\ntelemetry:\n  destinations:\n    memory: {}\n";
        let (r, t) = RelayConfig::from_yaml_str_with_env(yaml, |_| None).unwrap();
        assert_eq!(r.ack_wait, Duration::from_secs(2));
        assert_eq!(r.max_deliver, 3);
        assert_eq!(r.connect.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(t.destinations().len(), 1);

        let yaml = "relay:\n  bogus: 1\ntelemetry:\n  destinations:\n    memory: {}\n  nope: 2\n";
        let err = RelayConfig::from_yaml_str_with_env(yaml, |_| None).unwrap_err();
        let found: Vec<_> = err.errors().iter().map(|e| (e.path(), e.line())).collect();
        assert_eq!(
            found,
            [("relay.bogus", Some(2)), ("telemetry.nope", Some(6))]
        );
    }

    #[test]
    fn the_relay_section_keeps_its_real_lines_wherever_it_is() {
        // After `telemetry:`, in flow style, with a comment and a blank line before it.
        let yaml = "telemetry:\n  destinations:\n    memory: {}\n\n# the relay\nrelay: { servers: [nats://127.0.0.1:4222], ack_wait: 10ms,\n  max_deliver: 0, timeout: 5s }\n";
        let err = RelayConfig::from_yaml_str_with_env(yaml, |_| None).unwrap_err();
        let found: Vec<_> = err
            .errors()
            .iter()
            .map(|e| (e.path(), e.line(), e.kind()))
            .collect();
        assert_eq!(
            found,
            [
                ("relay.ack_wait", Some(6), ConfigErrorKind::Invalid),
                // A destination's delivery key is not a relay key.
                ("relay.timeout", Some(7), ConfigErrorKind::UnknownKey),
                ("relay.max_deliver", Some(7), ConfigErrorKind::Invalid),
            ]
        );
    }

    #[test]
    fn the_relay_section_must_be_a_mapping_and_present() {
        let err = RelayConfig::from_yaml_str_with_env(
            "relay: [nats://127.0.0.1:4222]\ntelemetry: {}\n",
            |_| None,
        )
        .unwrap_err();
        let e = &err.errors()[0];
        assert_eq!((e.path(), e.line()), ("relay", Some(1)));
        assert!(
            e.message().contains("expected a mapping, found a list"),
            "{e}"
        );

        let err = RelayConfig::from_yaml_str_with_env("telemetry: {}\n", |_| None).unwrap_err();
        assert_eq!(err.errors()[0].kind(), ConfigErrorKind::Missing);

        // `relay:` alone is every default; a third section is an unknown key.
        let err =
            RelayConfig::from_yaml_str_with_env("relay:\ntelemetry: {}\nextra: 1\n", |_| None)
                .unwrap_err();
        let e = &err.errors()[0];
        assert_eq!(
            (e.path(), e.line(), e.kind()),
            ("extra", Some(3), ConfigErrorKind::UnknownKey)
        );
        assert!(
            e.message().contains("expected one of: telemetry, relay"),
            "{e}"
        );
    }
}
