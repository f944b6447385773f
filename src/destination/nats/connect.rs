//! How to reach a NATS server: addresses, authentication, TLS. Shared by the `nats`
//! destination and the relay.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};

use crate::config::{ConfigError, Settings, kind_of};
use crate::diag::{Masked, mask_userinfo};

/// The server used when none is configured.
pub(crate) const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";
/// How long connecting may take before it counts as a failure.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to authenticate to NATS (`token:`, `user:` + `password:`, or `credentials:`).
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No authentication. The default.
    #[default]
    None,
    /// A token (`token:`).
    Token(String),
    /// A user name and password (`user:`, `password:`).
    UserPassword(String, String),
    /// A `.creds` file with a user JWT and NKey seed (`credentials:`), as `nsc` writes them.
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and panics.
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Token(_) => f.write_str("Token(<redacted>)"),
            NatsAuth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, <redacted>)"),
            NatsAuth::CredentialsFile(p) => f.debug_tuple("CredentialsFile").field(p).finish(),
        }
    }
}

/// TLS to the NATS servers (`tls:`). Without it, TLS is used when a server asks for it or the
/// address is `tls://`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub(crate) required: bool,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

impl NatsTls {
    /// Refuse to connect without TLS (`required:`). Defaults to `false`.
    pub fn with_required(mut self, on: bool) -> Self {
        self.required = on;
        self
    }

    /// Trust the CA certificates in this PEM file (`ca_file:`), besides the system's.
    /// Defaults to none.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Present this client certificate and key (PEM files; `cert_file:`, `key_file:`) for
    /// mutual TLS. Defaults to none.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }
}

/// Connection settings common to the destination and the relay. Its `Debug` masks the
/// servers' passwords (`nats://telemetry:***@host`); [`NatsAuth`]'s keeps its secrets out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ConnectSettings {
    pub(crate) servers: Vec<String>,
    pub(crate) auth: NatsAuth,
    pub(crate) tls: NatsTls,
    pub(crate) connect_timeout: Duration,
    pub(crate) client_name: Option<String>,
}

impl std::fmt::Debug for ConnectSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("servers", &MaskedList(&self.servers))
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// Server addresses with their passwords masked, as a `Debug` list or a `, `-separated
/// `Display`.
pub(crate) struct MaskedList<'a>(pub(crate) &'a [String]);

impl std::fmt::Debug for MaskedList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| Masked(s)))
            .finish()
    }
}

impl std::fmt::Display for MaskedList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Masked(s))?;
        }
        Ok(())
    }
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            servers: vec![DEFAULT_SERVER.to_owned()],
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            client_name: None,
        }
    }
}

/// The keys [`connect_settings_from`] reads.
pub(crate) const CONNECT_KEYS: &[&str] = &[
    "servers",
    "token",
    "user",
    "password",
    "credentials",
    "tls",
    "connect_timeout",
    "client_name",
];

const TLS_KEYS: &[&str] = &["required", "ca_file", "cert_file", "key_file"];

impl ConnectSettings {
    /// Checks what can be checked without connecting; `error(key, message)` builds an error.
    pub(crate) fn validate(
        &self,
        error: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Vec<ServerAddr>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut addrs = Vec::new();
        if self.servers.is_empty() {
            errors.push(error(
                "servers",
                "is empty; give at least one server, e.g. nats://127.0.0.1:4222".into(),
            ));
        }
        let mut url_auth = None;
        for (i, s) in self.servers.iter().enumerate() {
            match ServerAddr::from_str(s.trim()).map(without_userinfo) {
                Ok(Ok((a, auth))) => {
                    addrs.push(a);
                    match (auth, &url_auth) {
                        (None, _) => {}
                        (Some(auth), None) => url_auth = Some(auth),
                        (Some(auth), Some(first)) if auth == *first => {}
                        (Some(_), Some(_)) => errors.push(error(
                            "servers",
                            format!(
                                "item {i} `{}` has other credentials than an earlier one; \
                                 one set is used for every server",
                                Masked(s)
                            ),
                        )),
                    }
                }
                Ok(Err(e)) => {
                    errors.push(error("servers", format!("item {i} `{}` {e}", Masked(s))))
                }
                Err(e) => errors.push(error(
                    "servers",
                    format!(
                        "item {i} `{}` is not a NATS server address: {}",
                        Masked(s),
                        Masked(&e.to_string())
                    ),
                )),
            }
        }
        if url_auth.is_some() && self.auth != NatsAuth::None {
            errors.push(error(
                "servers",
                "carry credentials (`user:password@`) and so do `token`, `user` or \
                 `credentials`; give them once"
                    .into(),
            ));
        }
        match &self.auth {
            NatsAuth::Token(t) if t.is_empty() => errors.push(error(
                "token",
                "is empty (is the environment variable set?)".into(),
            )),
            NatsAuth::UserPassword(u, _) if u.is_empty() => {
                errors.push(error("user", "is empty".into()))
            }
            _ => {}
        }
        if self.connect_timeout.is_zero() {
            errors.push(error("connect_timeout", "must be more than zero".into()));
        }
        if errors.is_empty() {
            Ok(addrs)
        } else {
            Err(errors)
        }
    }

    /// The credentials the servers' addresses carry (`nats://user:password@host`), if any.
    fn url_auth(&self) -> Option<NatsAuth> {
        self.servers.iter().find_map(|s| {
            let addr = ServerAddr::from_str(s.trim()).ok()?;
            without_userinfo(addr).ok()?.1
        })
    }

    /// Connects (the client then reconnects by itself for as long as it lives) to `addrs`,
    /// from [`validate`](Self::validate): without userinfo, whose credentials go in the
    /// options instead.
    pub(crate) async fn connect(&self, addrs: &[ServerAddr]) -> Result<async_nats::Client, String> {
        let url_auth = match self.auth {
            NatsAuth::None => self.url_auth(),
            _ => None,
        };
        let mut options = match url_auth.as_ref().unwrap_or(&self.auth) {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::Token(t) => ConnectOptions::with_token(t.clone()),
            NatsAuth::UserPassword(u, p) => {
                ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            NatsAuth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?,
        };
        options = options
            .connection_timeout(self.connect_timeout)
            .require_tls(self.tls.required);
        if self.tls.ca_file.is_none() && self.tls.client_cert.is_none() {
            // The crate's ring-based configuration, as the Umami destination's. With a CA or a
            // client certificate, async-nats builds its own from them (on ring too: the
            // only rustls provider compiled in).
            options = options.tls_client_config(crate::tls::client_config()?);
        }
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(name) = &self.client_name {
            options = options.name(name);
        }
        options.connect(addrs).await.map_err(|e| {
            let e = e.to_string();
            format!(
                "cannot connect to NATS ({}): {}",
                MaskedList(&self.servers),
                mask_userinfo(&e)
            )
        })
    }
}

/// `addr` without its userinfo, and the credentials that stood for: a password makes a user
/// and password, a user alone a token. async-nats authenticates with its options only (it
/// would ignore them) and logs addresses whole at DEBUG (it would print the password).
fn without_userinfo(addr: ServerAddr) -> Result<(ServerAddr, Option<NatsAuth>), String> {
    let Some(user) = addr.username().map(percent_decoded) else {
        return Ok((addr, None));
    };
    let auth = match addr.password() {
        Some(password) => NatsAuth::UserPassword(user, percent_decoded(password)),
        None => NatsAuth::Token(user),
    };
    let mut url = addr.into_inner();
    let cleared = url.set_password(None).is_ok() && url.set_username("").is_ok();
    let addr = ServerAddr::from_url(url).ok().filter(|_| cleared);
    addr.map(|a| (a, Some(auth)))
        .ok_or_else(|| "cannot be used without its credentials".to_owned())
}

/// `%XX` escapes decoded (a URL's userinfo comes percent-encoded); a malformed or non-UTF-8
/// escape is kept as written.
fn percent_decoded(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Reads the connection keys of a `nats` destination or a relay, collecting errors.
pub(crate) fn connect_settings_from(
    settings: &Settings,
    errors: &mut Vec<ConfigError>,
) -> ConnectSettings {
    let mut c = ConnectSettings::default();
    match settings.get("servers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => c.servers = vec![s.clone()],
        Some(serde_json::Value::Array(items)) => {
            c.servers.clear();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => c.servers.push(s.to_owned()),
                    None => errors.push(settings.error(
                        "servers",
                        format!("item {i} is {}; expected a server address", kind_of(item)),
                    )),
                }
            }
        }
        Some(other) => errors.push(settings.error(
            "servers",
            format!(
                "expected a list of server addresses, found {}",
                kind_of(other)
            ),
        )),
    }
    let mut string = |key: &str| match settings.str(key) {
        Ok(v) => v.map(str::to_owned),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let token = string("token");
    let user = string("user");
    let password = string("password");
    let credentials = string("credentials");
    c.client_name = string("client_name");
    let given = [token.is_some(), user.is_some(), credentials.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        errors.push(settings.error(
            "",
            "give only one of `token`, `user` + `password` and `credentials`",
        ));
    }
    if password.is_some() && user.is_none() {
        errors.push(settings.error("password", "is given without `user`"));
    }
    c.auth = match (token, user, credentials) {
        (Some(t), _, _) => NatsAuth::Token(t),
        (_, Some(u), _) => NatsAuth::UserPassword(u, password.unwrap_or_default()),
        (_, _, Some(p)) => NatsAuth::CredentialsFile(PathBuf::from(p)),
        _ => NatsAuth::None,
    };
    if let Some(d) = duration(settings, "connect_timeout", errors) {
        c.connect_timeout = d;
    }
    match settings.section("tls") {
        Ok(None) => {}
        Ok(Some(tls)) => {
            errors.extend(tls.unknown_keys(TLS_KEYS));
            match tls.bool("required") {
                Ok(v) => c.tls.required = v.unwrap_or(false),
                Err(e) => errors.push(e),
            }
            let mut path = |key: &str| match tls.str(key) {
                Ok(v) => v.map(PathBuf::from),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
            c.tls.ca_file = path("ca_file");
            let cert = path("cert_file");
            let key = path("key_file");
            match (cert, key) {
                (Some(c2), Some(k)) => c.tls.client_cert = Some((c2, k)),
                (None, None) => {}
                (Some(_), None) => {
                    errors.push(tls.error("key_file", "missing: `cert_file` needs it"))
                }
                (None, Some(_)) => {
                    errors.push(tls.error("cert_file", "missing: `key_file` needs it"))
                }
            }
        }
        Err(e) => errors.push(e),
    }
    c
}

/// `key` as a duration (`"250ms"`, `"2m"`, `"7d"`, a number of seconds), if present; a bad
/// value is pushed to `errors`. The parsing is the configuration's own
/// ([`Settings::duration`]).
pub(crate) fn duration(
    settings: &Settings,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    settings.duration(key).unwrap_or_else(|e| {
        errors.push(e);
        None
    })
}

/// Getters, named after the fields the `with_*` methods set.
impl NatsTls {
    /// Whether TLS is required.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// The client certificate and key files.
    pub fn client_cert(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        self.client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_duration(s: &str) -> Option<Duration> {
        let d = crate::config::DestinationConfig::new("nats").with_setting("d", s);
        let mut errors = Vec::new();
        let parsed = duration(d.settings(), "d", &mut errors);
        assert_eq!(parsed.is_none(), errors.len() == 1, "{errors:?}");
        parsed
    }

    #[test]
    fn userinfo_becomes_the_credentials_and_leaves_the_address() {
        let split = |s: &str| without_userinfo(ServerAddr::from_str(s).unwrap()).unwrap();
        let (addr, auth) = split("nats://telemetry:p%40ss%2Fw@127.0.0.1:4222");
        assert_eq!(addr.into_inner().as_str(), "nats://127.0.0.1:4222");
        assert_eq!(
            auth,
            Some(NatsAuth::UserPassword("telemetry".into(), "p@ss/w".into()))
        );
        let (addr, auth) = split("tls://tok3n@h:4443");
        assert_eq!(addr.into_inner().as_str(), "tls://h:4443");
        assert_eq!(auth, Some(NatsAuth::Token("tok3n".into())));
        assert_eq!(split("nats://h:4222").1, None);
        assert_eq!(percent_decoded("a%2"), "a%2");
        assert_eq!(percent_decoded("%ff"), "%ff");

        let settings = ConnectSettings {
            servers: vec!["nats://u:a@h1".into(), "nats://u:b@h2".into()],
            ..ConnectSettings::default()
        };
        let errors = settings
            .validate(&|k, m| ConfigError::new(k, None, m))
            .unwrap_err();
        assert!(
            errors[0].message().contains("other credentials"),
            "{errors:?}"
        );
        assert!(!errors[0].message().contains(":b@"), "{errors:?}");
        let settings = ConnectSettings {
            servers: vec!["nats://u:a@h1".into()],
            auth: NatsAuth::Token("t".into()),
            ..ConnectSettings::default()
        };
        assert!(
            settings
                .validate(&|k, m| ConfigError::new(k, None, m))
                .is_err()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
    }
}
