//! The document's schema: the `telemetry:` tree validated into a [`Config`].

use super::check::{Check, GlobKind, unknown_key_message};
use super::kinds::{BuiltinKinds, CheckSettings};
use super::settings::to_json;
#[cfg(feature = "spool")]
use super::yaml::Typed;
use super::yaml::{Entry, Node, NodeValue, describe, join, shown};
use super::{
    Config, ConfigError, ConfigErrorKind, DestinationConfig, Overflow, RequestsConfig, RetryConfig,
    SampleKey, SamplingConfig,
};
use crate::limits::{LimitsConfig, MAX_DEPTH_LIMIT};
use crate::redact::RedactConfig;
use crate::text::Text;
#[cfg(feature = "spool")]
use std::time::Duration;

pub(super) const TELEMETRY_KEYS: &[&str] = &[
    "enabled",
    "debug",
    "destinations",
    "sampling",
    "requests",
    "redact",
    "limits",
    "properties",
];
const REDACT_KEYS: &[&str] = &["enabled", "keys", "remove", "defaults", "replacement"];
const LIMITS_KEYS: &[&str] = &[
    "max_properties",
    "max_string_length",
    "max_depth",
    "max_event_size",
];
const SAMPLING_KEYS: &[&str] = &["enabled", "rate", "key", "always", "hash_key"];
const REQUESTS_KEYS: &[&str] = &["enabled", "name", "exclude"];
#[cfg(feature = "spool")]
const SPOOL_KEYS: &[&str] = &["path", "max_bytes", "sync", "sync_interval"];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "max_elapsed",
    "initial_backoff",
    "max_backoff",
];

impl Check {
    /// The document: a `telemetry:` mapping, and beside it only the `sections` another
    /// reader takes (the relay's `relay:`).
    pub(super) fn root(&mut self, root: Option<&Node>, sections: &[&str]) -> Config {
        let mut config = Config::default();
        let Some(root) = root else {
            self.errors.push(
                ConfigError::new(
                    "telemetry",
                    None,
                    "the configuration is empty; expected a top-level `telemetry:` mapping",
                )
                .with_kind(ConfigErrorKind::Missing),
            );
            return config;
        };
        let NodeValue::Map(entries) = &root.value else {
            self.error(
                "telemetry",
                root.line,
                format!(
                    "expected a mapping with a top-level `telemetry:` key, found {}",
                    describe(root)
                ),
            );
            return config;
        };
        if !entries.iter().any(|e| e.key == "telemetry") {
            // One error rather than one per key: the keys are most likely not indented under it.
            let keys: Vec<String> = entries
                .iter()
                .take(5)
                .map(|e| format!("`{}`", shown(&e.key)))
                .collect();
            self.error_of(
                ConfigErrorKind::Missing,
                "telemetry",
                root.line,
                format!(
                    "missing the top-level `telemetry:` key (the configuration goes under it); found {}",
                    keys.join(", ")
                ),
            );
            return config;
        }
        for e in entries {
            if e.key == "telemetry" {
                self.telemetry(e, &mut config);
            } else if !sections.contains(&e.key.as_str()) {
                let mut known = vec!["telemetry"];
                known.extend_from_slice(sections);
                let message = unknown_key_message(&e.key, &known);
                self.error_of(ConfigErrorKind::UnknownKey, &e.key, e.line, message);
            }
        }
        config
    }

    fn telemetry(&mut self, e: &Entry, config: &mut Config) {
        let Some(entries) = self.mapping(&e.value, "telemetry", e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, "telemetry", TELEMETRY_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        config.enabled = b;
                    }
                }
                "debug" => {
                    if let Some(b) = self.bool(e, &path) {
                        config.debug = b;
                    }
                }
                "destinations" => {
                    let expected = "a mapping of destination names to their settings";
                    if let Some(destinations) = self.mapping(&e.value, &path, e.line, expected) {
                        for d in destinations {
                            if let Some(d) = self.destination(d, &path) {
                                config.destinations.push(d);
                            }
                        }
                    }
                }
                "sampling" => self.sampling(e, &path, &mut config.sampling),
                "redact" => self.redact(e, &path, &mut config.redact),
                "limits" => self.limits(e, &path, &mut config.limits),
                "properties" => {
                    let expected = "a mapping of property names to values";
                    if self.mapping(&e.value, &path, e.line, expected).is_some() {
                        let mut lines = std::collections::HashMap::new();
                        if let serde_json::Value::Object(map) = to_json(&e.value, &path, &mut lines)
                        {
                            config.properties = crate::event::Properties::from_json_map(map);
                        }
                    }
                }
                _ => self.requests(e, &path, &mut config.requests),
            }
        }
    }

    fn sampling(&mut self, e: &Entry, path: &str, sampling: &mut SamplingConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, SAMPLING_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        sampling.enabled = b;
                    }
                }
                "rate" => {
                    if let Some(r) = self.fraction(e, &path) {
                        sampling.rate = r;
                    }
                }
                "key" => {
                    const EXPECTED: &str = "a sampling key (one of event, request, user)";
                    if let Some(s) = self.string(e, &path, EXPECTED) {
                        match s.trim().to_ascii_lowercase().as_str() {
                            "event" => sampling.key = SampleKey::Event,
                            "request" => sampling.key = SampleKey::Request,
                            "user" => sampling.key = SampleKey::User,
                            _ => self.mismatch(&e.value, &path, e.line, EXPECTED),
                        }
                    }
                }
                "hash_key" => {
                    if let Some(s) = self.string(e, &path, "a secret text") {
                        *sampling = std::mem::take(sampling).with_hash_key(s);
                    }
                }
                _ => {
                    if let Some(globs) = self.globs(e, &path, GlobKind::Event) {
                        sampling.always = globs;
                    }
                }
            }
        }
    }

    fn requests(&mut self, e: &Entry, path: &str, requests: &mut RequestsConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, REQUESTS_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        requests.enabled = b;
                    }
                }
                "name" => {
                    if let Some(name) = self.string(e, &path, "an event name") {
                        match crate::event::validate_name(name) {
                            Ok(()) => requests.name = Text::from(name.to_owned()),
                            Err(why) => self.error(
                                path,
                                e.line,
                                format!("invalid event name `{}`: {why}", shown(name)),
                            ),
                        }
                    }
                }
                _ => {
                    if let Some(globs) = self.globs(e, &path, GlobKind::Path) {
                        requests.exclude = globs;
                    }
                }
            }
        }
    }

    fn destination(&mut self, e: &Entry, parent: &str) -> Option<DestinationConfig> {
        let path = join(parent, &e.key);
        if e.key.is_empty() {
            self.error(&path, e.line, "a destination name must not be empty");
        }
        let entries = self.mapping(
            &e.value,
            &path,
            e.line,
            "a mapping of the destination's settings",
        )?;
        let mut d = DestinationConfig::new(e.key.clone());
        // An unknown kind is reported when the destination is built, at one of these lines.
        d.settings.line = Some(e.line);
        if let Some(t) = entries.iter().find(|t| t.key == "type") {
            d.settings.lines.insert("type".to_owned(), t.line);
            let type_path = join(&path, "type");
            if let Some(kind) = self.string(
                t,
                &type_path,
                "a destination kind such as `logging` or `umami`",
            ) {
                if kind.trim().is_empty() {
                    self.error(type_path, t.line, "expected a destination kind such as `logging` or `umami`, found an empty string");
                } else {
                    d.kind = Some(kind.trim().to_owned());
                }
            }
        }
        for e in entries {
            let key_path = join(&path, &e.key);
            let path = key_path.as_str();
            let delivery = &mut d.delivery;
            let explicit = &mut d.delivery_explicit;
            match e.key.as_str() {
                "type" => {}
                "enabled" => {
                    if let Some(b) = self.bool(e, path) {
                        d.enabled = b;
                    }
                }
                "events" => d.events = self.globs(e, path, GlobKind::Event),
                "sample_rate" => {
                    if let Some(r) = self.fraction(e, path) {
                        d.sample_rate = r;
                    }
                }
                "queue_capacity" => {
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.queue_capacity = n as usize;
                    }
                }
                "queue_max_bytes" => {
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.queue_max_bytes = n as usize;
                    }
                }
                "overflow" => {
                    const EXPECTED: &str = "`drop_newest` or `drop_oldest`";
                    match self.string(e, path, EXPECTED) {
                        Some("drop_newest") => delivery.overflow = Overflow::DropNewest,
                        Some("drop_oldest") => delivery.overflow = Overflow::DropOldest,
                        Some(other) => self.error(
                            path,
                            e.line,
                            format!("unknown overflow policy `{other}`; expected {EXPECTED}"),
                        ),
                        None => {}
                    }
                }
                "batch_size" => {
                    explicit.batch_size = true;
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.batch_size = n as usize;
                    }
                }
                "concurrency" => {
                    explicit.concurrency = true;
                    if let Some(n) = self.positive(e, path, usize::MAX as u64) {
                        delivery.concurrency = n as usize;
                    }
                }
                "flush_interval" => {
                    explicit.flush_interval = true;
                    if let Some(t) = self.duration(e, path, true) {
                        delivery.flush_interval = t;
                    }
                }
                "timeout" => {
                    explicit.timeout = true;
                    if let Some(t) = self.duration(e, path, false) {
                        delivery.timeout = t;
                    }
                }
                "retry" => self.retry(e, path, &mut delivery.retry),
                "allow_properties" => {
                    d.allow_properties = self.globs(e, path, GlobKind::Property);
                }
                "spool" => {
                    // Kept for the errors found when the spool is opened (a folder in use).
                    d.settings.lines.insert("spool".to_owned(), e.line);
                    #[cfg(feature = "spool")]
                    {
                        d.spool = self.spool(e, path);
                    }
                    #[cfg(not(feature = "spool"))]
                    self.error(
                        path,
                        e.line,
                        "a spool needs tower-telemetry's cargo feature `spool`, which this build lacks",
                    );
                }
                "drop_properties" => {
                    if let Some(globs) = self.globs(e, path, GlobKind::Property) {
                        d.drop_properties = globs;
                    }
                }
                key => {
                    d.settings.lines.insert(key.to_owned(), e.line);
                    let value = to_json(&e.value, key, &mut d.settings.lines);
                    d.settings.values.insert(key.to_owned(), value);
                }
            }
        }
        // The kind checks its own values now, so they are reported with the rest.
        self.errors.extend(<BuiltinKinds as CheckSettings>::check(
            d.kind(),
            &d.settings,
        ));
        Some(d)
    }

    fn redact(&mut self, e: &Entry, path: &str, redact: &mut RedactConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, REDACT_KEYS) {
            match e.key.as_str() {
                "enabled" => {
                    if let Some(b) = self.bool(e, &path) {
                        redact.enabled = b;
                    }
                }
                "defaults" => {
                    if let Some(b) = self.bool(e, &path) {
                        redact.defaults = b;
                    }
                }
                "replacement" => {
                    if let Some(s) = self.string(e, &path, "a replacement text") {
                        redact.replacement = s.to_owned();
                    }
                }
                "remove" => {
                    if let Some(keys) = self.keys(e, &path) {
                        redact.removed = keys;
                    }
                }
                _ => {
                    if let Some(keys) = self.keys(e, &path) {
                        redact.keys = keys;
                    }
                }
            }
        }
    }

    fn limits(&mut self, e: &Entry, path: &str, limits: &mut LimitsConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, LIMITS_KEYS) {
            match e.key.as_str() {
                "max_properties" => {
                    if let Some(n) = self.positive(e, &path, 10_000) {
                        limits.max_properties = n as usize;
                    }
                }
                "max_depth" => {
                    if let Some(n) = self.positive(e, &path, MAX_DEPTH_LIMIT as u64) {
                        limits.max_depth = n as usize;
                    }
                }
                "max_string_length" => {
                    if let Some(n) = self.size(e, &path) {
                        limits.max_string_length = n;
                    }
                }
                _ => {
                    if let Some(n) = self.size(e, &path) {
                        limits.max_event_size = n;
                    }
                }
            }
        }
    }

    fn retry(&mut self, e: &Entry, path: &str, retry: &mut RetryConfig) {
        let Some(entries) = self.mapping(&e.value, path, e.line, "a mapping") else {
            return;
        };
        for (e, path) in self.known(entries, path, RETRY_KEYS) {
            match e.key.as_str() {
                "max_attempts" => {
                    if let Some(n) = self.positive(e, &path, u64::from(u32::MAX)) {
                        retry.max_attempts = n as u32;
                    }
                }
                "max_elapsed" => {
                    if let Some(d) = self.duration(e, &path, true) {
                        retry.max_elapsed = d;
                    }
                }
                "initial_backoff" => {
                    if let Some(d) = self.duration(e, &path, true) {
                        retry.initial_backoff = d;
                    }
                }
                _ => {
                    if let Some(d) = self.duration(e, &path, true) {
                        retry.max_backoff = d;
                    }
                }
            }
        }
    }
}

#[cfg(feature = "spool")]
impl Check {
    /// `spool: PATH`, or `spool: { path, max_bytes, sync, sync_interval }`.
    fn spool(&mut self, e: &Entry, path: &str) -> Option<super::SpoolConfig> {
        use super::{DEFAULT_SPOOL_SYNC_INTERVAL, SpoolConfig, SpoolSync};
        const PATH_EXPECTED: &str = "a folder path";
        if let NodeValue::Scalar(_) = &e.value.value {
            let folder = self.string(e, path, "a folder path, or a mapping with `path:`")?;
            return self.spool_path(folder, path, e.line).map(SpoolConfig::new);
        }
        let entries = self.mapping(&e.value, path, e.line, "a mapping with `path:`")?;
        let mut folder = None;
        let mut max_bytes = None;
        let mut sync = None;
        let mut interval = None;
        let mut ok = true;
        for (e, key_path) in self.known(entries, path, SPOOL_KEYS) {
            match e.key.as_str() {
                "path" => match self.string(e, &key_path, PATH_EXPECTED) {
                    Some(p) => folder = self.spool_path(p, &key_path, e.line),
                    None => ok = false,
                },
                "max_bytes" => {
                    max_bytes = self.spool_size(e, &key_path);
                    ok &= max_bytes.is_some();
                }
                "sync" => {
                    const EXPECTED: &str = "`always`, `interval` or `never`";
                    match self.string(e, &key_path, EXPECTED) {
                        Some("always") => sync = Some(SpoolSync::Always),
                        Some("interval") => sync = Some(SpoolSync::Interval(Duration::ZERO)),
                        Some("never") => sync = Some(SpoolSync::Never),
                        Some(other) => {
                            ok = false;
                            self.error(
                                key_path,
                                e.line,
                                format!(
                                    "unknown sync mode `{}`; expected {EXPECTED}",
                                    shown(other)
                                ),
                            );
                        }
                        None => ok = false,
                    }
                }
                _ => {
                    interval = self.duration(e, &key_path, false);
                    ok &= interval.is_some();
                }
            }
        }
        let Some(folder) = folder else {
            if ok && !entries.iter().any(|e| e.key == "path") {
                self.error_of(
                    ConfigErrorKind::Missing,
                    join(path, "path"),
                    e.line,
                    "a spool needs `path:`, the folder it keeps its files in",
                );
            }
            return None;
        };
        let interval = interval.unwrap_or(DEFAULT_SPOOL_SYNC_INTERVAL);
        let sync = match sync {
            None | Some(SpoolSync::Interval(_)) => SpoolSync::Interval(interval),
            Some(other) => other,
        };
        let mut spool = SpoolConfig::new(folder).with_sync(sync);
        if let Some(n) = max_bytes {
            spool = spool.with_max_bytes(n);
        }
        ok.then_some(spool)
    }

    fn spool_path(&mut self, folder: &str, path: &str, line: usize) -> Option<std::path::PathBuf> {
        if folder.trim().is_empty() {
            self.error(path, line, "expected a folder path, found an empty string");
            return None;
        }
        Some(std::path::PathBuf::from(folder))
    }

    /// A spool's size: at least 64 KiB.
    fn spool_size(&mut self, e: &Entry, path: &str) -> Option<u64> {
        const EXPECTED: &str = "a size such as `268435456`, `256MiB` or `1GiB` (at least 64 KiB)";
        let n = match self.scalar(&e.value, path, e.line, EXPECTED)? {
            Typed::Int(i) => u64::try_from(i).ok(),
            Typed::Str(s) => super::parse::parse_size(s),
            _ => None,
        };
        match n {
            Some(n) if n >= super::spool::MIN_SPOOL_MAX_BYTES => Some(n),
            _ => {
                self.mismatch(&e.value, path, e.line, EXPECTED);
                None
            }
        }
    }
}
