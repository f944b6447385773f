//! The `nats` destination's settings: keys, defaults, validation.

use std::time::Duration;

use super::connect::{
    CONNECT_KEYS, ConnectSettings, NatsAuth, NatsTls, connect_settings_from, duration,
};
use crate::config::{ConfigError, Settings, kind_of};
use crate::diag::Escaped;
use crate::event::Event;

/// The default subject template.
pub(crate) const DEFAULT_SUBJECT: &str = "telemetry.events.{category}";
/// The default stream name.
pub(crate) const DEFAULT_STREAM: &str = "TELEMETRY";
/// Default wait for a publish acknowledgement.
pub(crate) const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default publishes awaiting their acknowledgement at once.
pub(crate) const DEFAULT_IN_FLIGHT: usize = 1024;
/// Default time one delivery attempt keeps republishing through a leader election.
pub(crate) const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(10);
/// Default JetStream duplicate window.
pub(crate) const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

const KEYS: &[&str] = &[
    "subject",
    "stream",
    "publish_timeout",
    "in_flight",
    "failover_wait",
];
const STREAM_KEYS: &[&str] = &[
    "name",
    "create",
    "replicas",
    "subjects",
    "duplicate_window",
    "max_age",
    "max_bytes",
    "storage",
];

/// Where the stream keeps messages (`storage:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatsStorage {
    /// On disk (`file`). The default.
    #[default]
    File,
    /// In memory (`memory`): lost when a server restarts.
    Memory,
}

/// The JetStream stream events are published to (`stream:`).
///
/// At the first delivery (or [`NatsDestination::setup`](super::NatsDestination::setup)) the
/// stream is created if it is missing and `create` is on, else checked: a stream whose
/// subjects do not cover the events' subjects, whose replicas differ, or that has no duplicate
/// window is a configuration error, reported and not retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsStreamConfig {
    pub(crate) name: String,
    pub(crate) create: bool,
    pub(crate) replicas: usize,
    pub(crate) subjects: Option<Vec<String>>,
    pub(crate) duplicate_window: Duration,
    pub(crate) max_age: Duration,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) storage: NatsStorage,
}

impl Default for NatsStreamConfig {
    fn default() -> Self {
        NatsStreamConfig {
            name: DEFAULT_STREAM.to_owned(),
            create: true,
            replicas: 1,
            subjects: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: Duration::ZERO,
            max_bytes: None,
            storage: NatsStorage::File,
        }
    }
}

impl NatsStreamConfig {
    /// The stream's name (`name:`). Defaults to `TELEMETRY`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Create the stream when it is missing (`create:`). Defaults to `true`; turn it off when
    /// operators manage streams and the app's credentials may not create them.
    pub fn with_create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Copies kept by the cluster, 1 to 5 (`replicas:`). Defaults to 1; use 3 in a cluster
    /// so an acknowledged event survives the loss of a server.
    pub fn with_replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// The subjects the stream captures (`subjects:`). Defaults to the subject template up to
    /// its first placeholder, then `>`: `telemetry.events.>`.
    pub fn with_subjects<I, S>(mut self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subjects = Some(subjects.into_iter().map(Into::into).collect());
        self
    }

    /// How long JetStream remembers event ids to drop re-sent events (`duplicate_window:`).
    /// Defaults to 2 minutes; it must cover the longest time an event may be retried.
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Events older than this are removed (`max_age:`). Defaults to zero: kept until
    /// `max_bytes` is reached.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// The stream's size limit; the oldest events are removed beyond it (`max_bytes:`).
    /// Defaults to unlimited.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Where messages are stored (`storage:`). Defaults to [`NatsStorage::File`].
    pub fn with_storage(mut self, storage: NatsStorage) -> Self {
        self.storage = storage;
        self
    }

    /// The subjects the stream captures, for a subject template.
    pub(crate) fn effective_subjects(&self, template: &str) -> Vec<String> {
        match &self.subjects {
            Some(s) => s.clone(),
            None => vec![default_stream_subject(template)],
        }
    }

    pub(crate) fn to_jetstream(&self, template: &str) -> async_nats::jetstream::stream::Config {
        use async_nats::jetstream::stream::{Config, StorageType};
        Config {
            name: self.name.clone(),
            subjects: self.effective_subjects(template),
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: self.max_bytes.map_or(-1, |b| b.min(i64::MAX as u64) as i64),
            storage: match self.storage {
                NatsStorage::Memory => StorageType::Memory,
                NatsStorage::File => StorageType::File,
            },
            description: Some("tower-telemetry events".to_owned()),
            ..Default::default()
        }
    }
}

/// The settings of a [`NatsDestination`](super::NatsDestination), in code. The YAML keys
/// have the same names; see the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use tower_telemetry::{destination::nats::{NatsConfig, NatsDestination, NatsStreamConfig}};
///
/// let nats = NatsDestination::new(
///     NatsConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"])
///         .with_stream(NatsStreamConfig::default().with_replicas(3).with_max_age(Duration::from_secs(7 * 86_400)))
///         .with_publish_timeout(Duration::from_secs(2)),
/// )
/// .unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    pub(crate) connect: ConnectSettings,
    pub(crate) subject: String,
    pub(crate) stream: NatsStreamConfig,
    pub(crate) publish_timeout: Duration,
    pub(crate) in_flight: usize,
    pub(crate) failover_wait: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            connect: ConnectSettings::default(),
            subject: DEFAULT_SUBJECT.to_owned(),
            stream: NatsStreamConfig::default(),
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            in_flight: DEFAULT_IN_FLIGHT,
            failover_wait: DEFAULT_FAILOVER_WAIT,
        }
    }
}

impl NatsConfig {
    /// Events to the servers at `servers` (`nats://host:port`; the client also learns the
    /// other servers of a cluster from the first one it reaches).
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut c = NatsConfig::default();
        c.connect.servers = servers.into_iter().map(Into::into).collect();
        c
    }

    /// The subject of each event (`subject:`): a template where `{category}` is the event's
    /// category and `{name}` its name (dot-separated, so several tokens). Characters a subject
    /// cannot hold become `_`. Defaults to `telemetry.events.{category}`.
    pub fn with_subject(mut self, template: impl Into<String>) -> Self {
        self.subject = template.into();
        self
    }

    /// The stream (`stream:`). Defaults to [`NatsStreamConfig::default`].
    pub fn with_stream(mut self, stream: NatsStreamConfig) -> Self {
        self.stream = stream;
        self
    }

    /// How to authenticate (`token:`, `user:` + `password:`, `credentials:`). Defaults to
    /// none.
    pub fn with_auth(mut self, auth: NatsAuth) -> Self {
        self.connect.auth = auth;
        self
    }

    /// TLS settings (`tls:`). Defaults to [`NatsTls::default`].
    pub fn with_tls(mut self, tls: NatsTls) -> Self {
        self.connect.tls = tls;
        self
    }

    /// The longest wait for a connection (`connect_timeout:`). Defaults to 5 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect.connect_timeout = timeout;
        self
    }

    /// The client name the servers show in their monitoring (`client_name:`). Defaults to
    /// none.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.connect.client_name = Some(name.into());
        self
    }

    /// The longest wait for a publish acknowledgement, and for stream requests
    /// (`publish_timeout:`). Defaults to 5 s.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Publishes awaiting their acknowledgement at once (`in_flight:`); more wait. Defaults to
    /// 1024.
    pub fn with_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n;
        self
    }

    /// How long one delivery attempt keeps republishing the events that failed with "no
    /// responders", a timeout or a lost connection — with the same ids, so nothing is
    /// duplicated — before it reports a retryable failure to the core (`failover_wait:`).
    /// Defaults to 10 s: a stream leader election takes about 5.
    pub fn with_failover_wait(mut self, wait: Duration) -> Self {
        self.failover_wait = wait;
        self
    }

    /// Reads a destination's settings, with every error found; values in error keep their
    /// defaults so validation goes on.
    pub(crate) fn from_settings(settings: &Settings) -> (NatsConfig, Vec<ConfigError>) {
        let mut allowed: Vec<&str> = KEYS.to_vec();
        allowed.extend_from_slice(CONNECT_KEYS);
        let mut errors = settings.unknown_keys(&allowed);
        let mut c = NatsConfig {
            connect: connect_settings_from(settings, &mut errors),
            ..NatsConfig::default()
        };
        match settings.str("subject") {
            Ok(Some(s)) => c.subject = s.to_owned(),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        if let Some(d) = duration(settings, "publish_timeout", &mut errors) {
            c.publish_timeout = d;
        }
        if let Some(d) = duration(settings, "failover_wait", &mut errors) {
            c.failover_wait = d;
        }
        match settings.u64("in_flight") {
            Ok(Some(n)) => c.in_flight = usize::try_from(n).unwrap_or(usize::MAX),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        match settings.get("stream") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(name)) => c.stream.name = name.clone(),
            Some(_) => match settings.section("stream") {
                Ok(Some(s)) => c.stream = stream_from_settings(&s, &mut errors),
                Ok(None) => {}
                Err(_) => errors.push(settings.error(
                    "stream",
                    "expected a stream name or a mapping (name, create, replicas, subjects, \
                     duplicate_window, max_age, max_bytes, storage)",
                )),
            },
        }
        (c, errors)
    }

    /// Checks every value; `error(key, message)` builds the error for a key.
    pub(crate) fn validate(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Vec<async_nats::ServerAddr>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let addrs = match self.connect.validate(error) {
            Ok(a) => a,
            Err(mut e) => {
                errors.append(&mut e);
                Vec::new()
            }
        };
        if let Err(msg) = check_template(&self.subject) {
            errors.push(error("subject", msg));
        }
        let s = &self.stream;
        if s.name.is_empty()
            || s.name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            errors.push(error(
                "stream.name",
                format!(
                    "`{}` is not a stream name (no spaces, `.`, `*`, `>`, `/` or `\\`)",
                    Escaped(&s.name)
                ),
            ));
        }
        if !(1..=5).contains(&s.replicas) {
            errors.push(error(
                "stream.replicas",
                format!("is {}; JetStream supports 1 to 5", s.replicas),
            ));
        }
        if s.duplicate_window.is_zero() {
            errors.push(error(
                "stream.duplicate_window",
                "must be more than zero: it is what makes re-sent events not count twice".into(),
            ));
        }
        if !s.max_age.is_zero() && s.max_age < s.duplicate_window {
            errors.push(error(
                "stream.duplicate_window",
                "must not be longer than `max_age`".into(),
            ));
        }
        if let Some(subjects) = &s.subjects {
            if subjects.is_empty() {
                errors.push(error("stream.subjects", "is empty".into()));
            }
            let probe = render_with(&self.subject, "category", "category.name");
            if !subjects.iter().any(|f| subject_matches(f, &probe)) {
                errors.push(error(
                    "stream.subjects",
                    format!(
                        "none of {subjects:?} captures the events' subjects (`{}`)",
                        self.subject
                    ),
                ));
            }
        }
        if self.publish_timeout.is_zero() {
            errors.push(error("publish_timeout", "must be more than zero".into()));
        }
        if self.in_flight == 0 {
            errors.push(error("in_flight", "must be at least 1".into()));
        }
        if errors.is_empty() {
            Ok(addrs)
        } else {
            Err(errors)
        }
    }
}

fn stream_from_settings(s: &Settings, errors: &mut Vec<ConfigError>) -> NatsStreamConfig {
    errors.extend(s.unknown_keys(STREAM_KEYS));
    let mut c = NatsStreamConfig::default();
    match s.str("name") {
        Ok(Some(n)) => c.name = n.to_owned(),
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    match s.bool("create") {
        Ok(Some(b)) => c.create = b,
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    match s.u64("replicas") {
        Ok(Some(n)) => c.replicas = usize::try_from(n).unwrap_or(usize::MAX),
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    match s.u64("max_bytes") {
        Ok(v) => c.max_bytes = v,
        Err(e) => errors.push(e),
    }
    if let Some(d) = duration(s, "duplicate_window", errors) {
        c.duplicate_window = d;
    }
    if let Some(d) = duration(s, "max_age", errors) {
        c.max_age = d;
    }
    match s.str("storage") {
        Ok(None) | Ok(Some("file")) => {}
        Ok(Some("memory")) => c.storage = NatsStorage::Memory,
        Ok(Some(other)) => errors.push(s.error(
            "storage",
            format!(
                "unknown storage `{}`; expected file or memory",
                Escaped(other)
            ),
        )),
        Err(e) => errors.push(e),
    }
    match s.get("subjects") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(items)) => {
            let mut subjects = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(v) => subjects.push(v.to_owned()),
                    None => errors.push(s.error(
                        "subjects",
                        format!("item {i} is {}; expected a subject", kind_of(item)),
                    )),
                }
            }
            c.subjects = Some(subjects);
        }
        Some(other) => errors.push(s.error(
            "subjects",
            format!("expected a list of subjects, found {}", kind_of(other)),
        )),
    }
    c
}

/// A template is dot-separated tokens; placeholders are `{category}` and `{name}`.
fn check_template(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("is empty".into());
    }
    let rendered = render_with(t, "c", "n");
    for token in rendered.split('.') {
        if token.is_empty() {
            return Err(format!(
                "`{}` has an empty token (`..` or a `.` at an end)",
                Escaped(t)
            ));
        }
        if token.contains(['*', '>']) || token.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{}` must not contain wildcards or spaces",
                Escaped(t)
            ));
        }
        if token.contains(['{', '}']) {
            return Err(format!(
                "`{}` has an unknown placeholder; use {{category}} or {{name}}",
                Escaped(t)
            ));
        }
    }
    Ok(())
}

fn render_with(t: &str, category: &str, name: &str) -> String {
    t.replace("{category}", category).replace("{name}", name)
}

/// The event's subject under template `t`.
pub(crate) fn render_subject(t: &str, event: &Event) -> String {
    let category = token(event.category().as_str());
    if !t.contains("{name}") {
        return t.replace("{category}", &category);
    }
    let name: Vec<String> = event.name().split('.').map(token).collect();
    render_with(t, &category, &name.join("."))
}

fn token(s: &str) -> String {
    if s.is_empty() {
        return "_".to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// `telemetry.events.{category}` → `telemetry.events.>`.
fn default_stream_subject(t: &str) -> String {
    match t.find('{') {
        Some(i) => format!("{}>", &t[..i]),
        None => t.to_owned(),
    }
}

/// Whether subject filter `filter` (with `*` and `>`) matches subject `subject`.
pub(crate) fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `ours` may produce is captured by one of `theirs`.
pub(crate) fn subjects_covered(theirs: &[String], ours: &[String]) -> bool {
    ours.iter().all(|o| {
        theirs
            .iter()
            .any(|t| t == o || t == ">" || (t.ends_with(".>") && subject_matches(t, o)))
    })
}

/// Getters, named after the fields the `with_*` methods set.
impl NatsStreamConfig {
    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a missing stream is created.
    pub fn create(&self) -> bool {
        self.create
    }

    /// The replica count.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The stream's subjects (`None`: the subject template up to its first placeholder, then `>`).
    pub fn subjects(&self) -> Option<&[String]> {
        self.subjects.as_deref()
    }

    /// The duplicate window.
    pub fn duplicate_window(&self) -> Duration {
        self.duplicate_window
    }

    /// The longest a message is kept.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The most bytes the stream keeps.
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// The storage kind.
    pub fn storage(&self) -> NatsStorage {
        self.storage
    }
}

/// Getters, named after the fields the `with_*` methods set.
impl NatsConfig {
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

    /// The subject template.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The stream settings.
    pub fn stream(&self) -> &NatsStreamConfig {
        &self.stream
    }

    /// The timeout of one acknowledged publish.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    /// Publishes awaiting acknowledgement at once.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How long one delivery attempt keeps republishing what failed before it reports a
    /// retryable failure.
    pub fn failover_wait(&self) -> Duration {
        self.failover_wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props;

    #[test]
    fn subjects() {
        let e = Event::new("checkout.completed now", props! {});
        assert_eq!(
            render_subject(DEFAULT_SUBJECT, &e),
            "telemetry.events.checkout"
        );
        assert_eq!(render_subject("t.{name}", &e), "t.checkout.completed_now");
        assert_eq!(
            default_stream_subject(DEFAULT_SUBJECT),
            "telemetry.events.>"
        );
        assert!(subject_matches(
            "telemetry.events.>",
            "telemetry.events.user"
        ));
        assert!(subject_matches("telemetry.*.user", "telemetry.events.user"));
        assert!(!subject_matches(
            "telemetry.events.*",
            "telemetry.events.a.b"
        ));
        assert!(check_template("a.{category}").is_ok());
        assert!(check_template("a.{bogus}").is_err());
        assert!(check_template("a..b").is_err());
        assert!(subjects_covered(
            &["telemetry.>".to_owned()],
            &["telemetry.events.>".to_owned()]
        ));
        assert!(!subjects_covered(
            &["other.>".to_owned()],
            &["telemetry.events.>".to_owned()]
        ));
    }
}
