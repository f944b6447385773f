//! The tower middleware: a request scope per request, so every event carries its context.
//!
//! [`TelemetryLayer`] does the work of a before-request / after-request hook pair, as a
//! tower layer. For each request it builds a [`Context`](crate::Context) — request id, path, matched
//! route, method, host, user agent, language, referrer, the user and session from your
//! resolvers, the client IP only if you ask — and runs the inner service inside a task-local
//! scope holding it. The scope ends with the request's future (completed, failed, panicked or
//! cancelled), so nothing leaks into the next request on the same task or thread. The request
//! id is echoed on the response.
//!
//! What the context takes from the request is copied, not shared: hyper's header values and
//! URI are slices of the connection's read buffer, and an event waiting in a queue must not
//! keep that buffer alive. Strings up to 38 bytes (ids, hosts, most paths) are stored in place;
//! longer ones (user agents) are shared with the same string taken from a recent request on
//! the same thread, so a request usually allocates nothing for them.
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::request::Parts;
//! use tower_telemetry::{Telemetry, Tracker, track, layer::TelemetryLayer};
//!
//! async fn generate(tracker: Tracker) -> &'static str {
//!     track!("generation.started", model = "flux-dev");          // carries the request's context
//!     tracker.track("generation.params", tower_telemetry::props! { "steps" => 4 });
//!     "ok"
//! }
//!
//! # fn user_of(parts: &Parts) -> Option<String> { parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(String::from) }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
//! let app: Router = Router::new()
//!     .route("/api/generate", get(generate))
//!     .layer(TelemetryLayer::new(telemetry.clone()).user_id(user_of));
//! # }
//! ```
//!
//! # Layer order with tower-http's request-id layers
//!
//! Both orders work and agree on the id: outside `TelemetryLayer`, `SetRequestIdLayer` sets the
//! `x-request-id` header that this layer then keeps; inside it, this layer has already set the
//! header, which `SetRequestIdLayer` keeps (and turns into tower-http's
//! [`RequestId`](tower_http::request_id::RequestId) extension). Without tower-http, ask for
//! the extension with [`TelemetryLayer::request_id_extension`].

mod future;
mod request;
mod service;
mod telemetry_layer;

pub use future::ResponseFuture;
pub use request::{MAX_PATH_LEN, PATH_TRUNCATED};
pub use service::TelemetryService;
pub use telemetry_layer::{ClientIp, TelemetryLayer};
