//! [`TelemetryLayer`] and its settings.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use tower_layer::Layer;

use super::service::TelemetryService;
use crate::identity::Consent;
use crate::telemetry::Telemetry;
use crate::text::Text;

pub(crate) type Resolver = Arc<dyn Fn(&Parts) -> Option<Text> + Send + Sync>;
pub(crate) type GroupsResolver = Arc<dyn Fn(&Parts) -> Vec<(Text, Text)> + Send + Sync>;
pub(crate) type ConsentResolver = Arc<dyn Fn(&Parts) -> Consent + Send + Sync>;

/// Where the end user's IP address comes from. Off unless you say so: an IP address is
/// personal data, and behind a proxy the socket peer is the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIp {
    /// Not captured (the default).
    #[default]
    Off,
    /// The socket peer, from axum's `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`).
    ConnectInfo,
    /// The first address in this header (e.g. `x-forwarded-for`), which only a proxy you
    /// trust may set.
    Header(HeaderName),
}

#[derive(Clone)]
pub(crate) struct LayerConfig {
    /// `None`: [`Telemetry::global`], looked up per request. Kept here rather than next to the
    /// `Arc` in the service: axum clones a route's service for every request, and one
    /// reference count is cheaper to bump and drop than two.
    pub(crate) telemetry: Option<Telemetry>,
    pub(crate) request_id_header: HeaderName,
    pub(crate) request_id_extension: bool,
    pub(crate) hostname: Option<Text>,
    pub(crate) client_ip: ClientIp,
    pub(crate) capture_headers: bool,
    pub(crate) capture_query: bool,
    pub(crate) user_id: Option<Resolver>,
    pub(crate) session_id: Option<Resolver>,
    pub(crate) groups: Option<GroupsResolver>,
    pub(crate) consent: Option<ConsentResolver>,
    /// `None`: as the handle's `telemetry.requests` says.
    pub(crate) request_events: Option<bool>,
}

impl fmt::Debug for LayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerConfig")
            .field("telemetry", &self.telemetry)
            .field("request_id_header", &self.request_id_header)
            .field("request_id_extension", &self.request_id_extension)
            .field("hostname", &self.hostname)
            .field("client_ip", &self.client_ip)
            .field("capture_headers", &self.capture_headers)
            .field("capture_query", &self.capture_query)
            .field("user_id", &self.user_id.is_some())
            .field("session_id", &self.session_id.is_some())
            .field("groups", &self.groups.is_some())
            .field("consent", &self.consent.is_some())
            .field("request_events", &self.request_events)
            .finish()
    }
}

/// Runs every request in a telemetry scope holding its context. See the [module docs](crate::layer).
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_telemetry::{Telemetry, layer::{ClientIp, TelemetryLayer}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let telemetry = Telemetry::builder().build().unwrap();
/// let layer = TelemetryLayer::new(telemetry)
///     .user_id(|parts: &http::request::Parts| {
///         // e.g. what your auth middleware put in the extensions
///         parts.extensions.get::<UserId>().map(|u| u.0.clone())
///     })
///     .client_ip(ClientIp::Header(http::HeaderName::from_static("x-forwarded-for")))
///     .request_events(true);
/// let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(layer);
/// # }
/// #[derive(Clone)] struct UserId(String);
/// ```
#[derive(Clone, Debug)]
pub struct TelemetryLayer {
    config: Arc<LayerConfig>,
}

impl TelemetryLayer {
    /// A layer that tracks through `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        Self::with(Some(telemetry))
    }

    /// A layer that tracks through [`Telemetry::global`], looked up per request (so it may be
    /// installed after the router is built).
    pub fn global() -> Self {
        Self::with(None)
    }

    fn with(telemetry: Option<Telemetry>) -> Self {
        TelemetryLayer {
            config: Arc::new(LayerConfig {
                telemetry,
                request_id_header: HeaderName::from_static("x-request-id"),
                request_id_extension: false,
                hostname: None,
                client_ip: ClientIp::Off,
                capture_headers: true,
                capture_query: true,
                user_id: None,
                session_id: None,
                groups: None,
                consent: None,
                request_events: None,
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &LayerConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut LayerConfig {
        Arc::make_mut(&mut self.config)
    }

    /// Resolves the user id from the request parts (typically an extension your auth layer
    /// set; place this layer inside it). Defaults to none.
    pub fn user_id<F, T>(mut self, resolve: F) -> Self
    where
        F: Fn(&Parts) -> Option<T> + Send + Sync + 'static,
        T: Into<Text>,
    {
        self.config_mut().user_id = Some(Arc::new(move |p| resolve(p).map(Into::into)));
        self
    }

    /// Takes the user id from a request header **as sent by the client**. Only use this when
    /// a proxy you trust sets that header and strips it from client requests: otherwise any
    /// client can claim to be any user.
    pub fn user_id_from_header(self, name: HeaderName) -> Self {
        self.user_id(move |p: &Parts| {
            let v = p.headers.get(&name)?;
            if v.len() > super::request::MAX_REQUEST_ID_LEN {
                return None;
            }
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty())
                .map(Text::copy_from)
        })
    }

    /// Resolves the session id from the request parts. Defaults to none.
    pub fn session_id<F, T>(mut self, resolve: F) -> Self
    where
        F: Fn(&Parts) -> Option<T> + Send + Sync + 'static,
        T: Into<Text>,
    {
        self.config_mut().session_id = Some(Arc::new(move |p| resolve(p).map(Into::into)));
        self
    }

    /// Resolves the request's groups (company, team, ...) from the request parts, as
    /// `(group type, group key)` pairs: every event of the request carries them (see
    /// [`Context::groups`](crate::Context::groups)). Defaults to none.
    ///
    /// ```
    /// use tower_telemetry::{Telemetry, layer::TelemetryLayer};
    ///
    /// # let telemetry = Telemetry::builder().build().unwrap();
    /// let layer = TelemetryLayer::new(telemetry).groups(|parts: &http::request::Parts| {
    ///     let org = parts.headers.get("x-org")?.to_str().ok()?.to_owned();
    ///     Some(("company", org))
    /// });
    /// ```
    pub fn groups<F, I, A, B>(mut self, resolve: F) -> Self
    where
        F: Fn(&Parts) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = (A, B)>,
        A: Into<Text>,
        B: Into<Text>,
    {
        self.config_mut().groups = Some(Arc::new(move |p| {
            resolve(p)
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect()
        }));
        self
    }

    /// Decides each request's [`Consent`] from its parts (a consent cookie, a header your
    /// consent middleware set): `Denied` keeps every event of the request in the process
    /// (counted in [`Stats::consent_denied`](crate::Stats::consent_denied)); `Anonymous`
    /// strips everything personal from its events; `Granted` changes nothing. Defaults to
    /// `Granted` for every request.
    ///
    /// ```
    /// use tower_telemetry::{Telemetry, identity::Consent, layer::TelemetryLayer};
    ///
    /// # let telemetry = Telemetry::builder().build().unwrap();
    /// let layer = TelemetryLayer::new(telemetry).consent(|parts: &http::request::Parts| {
    ///     match parts.headers.get("x-analytics-consent").and_then(|v| v.to_str().ok()) {
    ///         Some("granted") => Consent::Granted,
    ///         Some("anonymous") => Consent::Anonymous,
    ///         _ => Consent::Denied,
    ///     }
    /// });
    /// ```
    pub fn consent<F>(mut self, decide: F) -> Self
    where
        F: Fn(&Parts) -> Consent + Send + Sync + 'static,
    {
        self.config_mut().consent = Some(Arc::new(decide));
        self
    }

    /// The header the request id is read from and echoed in. Defaults to `x-request-id`.
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.config_mut().request_id_header = name;
        self
    }

    /// Whether the layer also inserts tower-http's
    /// [`RequestId`](tower_http::request_id::RequestId) extension into requests that have none,
    /// for handlers that extract `Extension<RequestId>` without tower-http's
    /// `SetRequestIdLayer`. Defaults to `false`: the id is already in the request header, in
    /// the context ([`Tracker::context`](crate::Tracker::context)) and echoed on the response,
    /// and the extension costs up to three allocations per request. With `SetRequestIdLayer`
    /// on either side the extension is there anyway (it reads the header this layer sets).
    pub fn request_id_extension(mut self, on: bool) -> Self {
        self.config_mut().request_id_extension = on;
        self
    }

    /// A fixed host name for every event instead of the request's `Host`. Defaults to none.
    pub fn hostname(mut self, hostname: impl Into<Text>) -> Self {
        self.config_mut().hostname = Some(hostname.into());
        self
    }

    /// Where the client IP comes from. Defaults to [`ClientIp::Off`].
    pub fn client_ip(mut self, source: ClientIp) -> Self {
        self.config_mut().client_ip = source;
        self
    }

    /// Whether User-Agent, Accept-Language and Referer are captured (for destinations that
    /// forward them, like Umami). Defaults to `true`.
    pub fn capture_headers(mut self, on: bool) -> Self {
        self.config_mut().capture_headers = on;
        self
    }

    /// Whether the query string is captured. Defaults to `true`.
    pub fn capture_query(mut self, on: bool) -> Self {
        self.config_mut().capture_query = on;
        self
    }

    /// Emits one event per request (method, route, status, duration_ms), overriding the
    /// handle's `telemetry.requests.enabled`. Defaults to what the configuration says (off).
    pub fn request_events(mut self, on: bool) -> Self {
        self.config_mut().request_events = Some(on);
        self
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;

    fn layer(&self, inner: S) -> TelemetryService<S> {
        TelemetryService::new(inner, self.config.clone())
    }
}
