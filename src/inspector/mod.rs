//! A live page for developers: events as they are tracked, what became of each at every
//! destination, the destinations' counters and last errors, `explain` and the configuration
//! (feature `inspector`).
//!
//! [`Inspector::router`] is an axum [`Router`] the application mounts where it wants; nothing
//! is served unless it is mounted:
//!
//! ```
//! use axum::{Router, response::Redirect, routing::get};
//! use tower_telemetry::{Telemetry, inspector::Inspector};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::from_yaml_str("telemetry:\n  destinations:\n    memory: {}\n").unwrap();
//! let token = std::env::var("TELEMETRY_INSPECTOR_TOKEN").unwrap_or_else(|_| "change-me".into());
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .nest("/_telemetry", Inspector::new(telemetry.clone()).token(token).router())
//!     // `nest` answers `/_telemetry` only; this takes the trailing slash too (browsers keep
//!     // the `#token=` fragment across a redirect).
//!     .route("/_telemetry/", get(|| async { Redirect::permanent("/_telemetry") }));
//! // Open http://HOST/_telemetry#token=change-me
//! # let _ = app;
//! # }
//! ```
//!
//! # Do not expose it publicly
//!
//! The page shows your events' properties and context (after redaction: the same values your
//! destinations get), user ids, delivery errors and the configuration (with `${VAR}` values,
//! URL passwords and sensitive keys masked). Mount it only where your own access control
//! applies (an admin listener, an internal network, your auth middleware), and set a
//! [`token`](Inspector::token): then every data route asks for `Authorization: Bearer <token>`
//! (the page itself holds no data; it reads the token from its URL's `#token=` fragment, which
//! browsers never send to servers, or asks for it).
//!
//! # The routes
//!
//! Relative to where it is mounted:
//!
//! - `GET /`: the page (HTML, CSS and JavaScript inline; it loads nothing from anywhere, and
//!   its `Content-Security-Policy` lets it talk only to its own origin);
//! - `GET /api/stream`: the events, as Server-Sent Events: `hello` (the destinations, in
//!   configuration order), `snapshot` (the recent events, oldest first, with their outcomes),
//!   then `tracked` (an event, with each destination's outcome), `outcome` (an event's new
//!   outcome at one destination) and `lagged` (how many messages this stream missed);
//! - `GET /api/stats`: the destinations' counters and last errors;
//! - `GET /api/explain?name=NAME`: which destinations an event named NAME reaches, and why;
//! - `GET /api/config`: the configuration, secrets masked.
//!
//! An event's outcome at a destination is one of `queued`, `retrying` (with the error),
//! `delivered`, `failed` (with the destination's or server's message), `discarded` (the
//! receiver threw it away on purpose, e.g. Umami's bot check), `dropped` (its queue was full),
//! `sampled_out`, `not_routed` (with the reason), `unsupported` (an identity operation the
//! destination has no counterpart for), `rejected` (refused before routing, at every
//! destination, with the reason: an invalid name or properties, over `max_event_size`, a blank
//! identity) and `unknown` (still on its way when the last page closed: nothing is recorded
//! while no page is open).
//!
//! # What it costs
//!
//! While no page is open: one relaxed atomic load per tracked event, and none per request. While
//! pages are open, each event is also handed (by reference) to a bounded channel with
//! `try_send`, and serialized off the request path by one task per handle, which keeps the last
//! [`history`](Inspector::history) events and broadcasts to the open pages. Events tracked
//! while no page is open are not recorded. A slow or stalled page never slows tracking or
//! delivery: the broadcast drops what a page has not read in time and tells the page how much
//! it missed; if the task itself falls behind, what it could not take is dropped and counted
//! (`inspector.lost` in `/api/stats`). Events a request's consent denies are never shown.

mod config_view;
mod http;
pub(crate) mod hub;
pub(crate) mod tap;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;

use crate::Telemetry;
pub(crate) use config_view::masked as masked_config;

/// The events a page gets on opening, by default: the most recent ones, with their outcomes.
pub const DEFAULT_HISTORY: usize = 500;

/// The inspector of one [`Telemetry`] handle: configure it, then mount its
/// [`router`](Self::router). See the [module docs](self) (and do not expose it publicly).
#[derive(Clone)]
pub struct Inspector {
    telemetry: Telemetry,
    token: Option<String>,
    history: usize,
    signal: Option<Arc<Mutex<Option<Signal>>>>,
}

/// A shutdown signal, boxed.
type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// The inspector of `telemetry`, without a token and with [`DEFAULT_HISTORY`].
    pub fn new(telemetry: Telemetry) -> Inspector {
        Inspector {
            telemetry,
            token: None,
            history: DEFAULT_HISTORY,
            signal: None,
        }
    }

    /// Requires `Authorization: Bearer <token>` on every data route (compared in constant
    /// time). Strongly advised: see [Do not expose it publicly](self#do-not-expose-it-publicly).
    pub fn token(mut self, token: impl Into<String>) -> Inspector {
        self.token = Some(token.into());
        self
    }

    /// How many recent events a page gets when it opens (default [`DEFAULT_HISTORY`], at least
    /// 1). The first page opened for a handle decides it.
    pub fn history(mut self, events: usize) -> Inspector {
        self.history = events.max(1);
        self
    }

    /// Ends every open event stream when `signal` completes, and refuses new ones (503):
    /// give it your server's shutdown signal, or an open page keeps a graceful shutdown
    /// waiting for its never-ending response.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tower_telemetry::{Telemetry, inspector::Inspector};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let telemetry = Telemetry::builder().build().unwrap();
    /// let stop = Arc::new(tokio::sync::Notify::new());
    /// let inspector = Inspector::new(telemetry).token("s3cret").shutdown_signal({
    ///     let stop = stop.clone();
    ///     async move { stop.notified().await }
    /// });
    /// let app: axum::Router = axum::Router::new().nest("/_telemetry", inspector.router());
    /// // axum::serve(listener, app).with_graceful_shutdown(async move {
    /// //     let _ = tokio::signal::ctrl_c().await;
    /// //     stop.notify_one();
    /// // })
    /// # let _ = (app, stop);
    /// # }
    /// ```
    pub fn shutdown_signal(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Inspector {
        self.signal = Some(Arc::new(Mutex::new(Some(Box::pin(signal)))));
        self
    }

    /// The routes, to [`nest`](Router::nest) where the application wants them.
    ///
    /// ```
    /// # use tower_telemetry::{Telemetry, inspector::Inspector};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let telemetry = Telemetry::builder().build().unwrap();
    /// let admin: axum::Router = axum::Router::new()
    ///     .nest("/_telemetry", Inspector::new(telemetry).token("s3cret").router());
    /// # let _ = admin;
    /// # }
    /// ```
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        // The signal goes to the first router made (a clone of the inspector shares it).
        let signal = self
            .signal
            .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
        http::router(http::Shared {
            telemetry: self.telemetry,
            token: self.token.map(|t| t.into_bytes().into_boxed_slice()),
            history: self.history,
            closed: tokio::sync::watch::Sender::new(false),
            signal: Mutex::new(signal),
        })
    }
}

/// [`Inspector::new(telemetry).router()`](Inspector::router): the inspector without a token.
/// Prefer [`Inspector::token`] unless the routes are behind your own access control.
pub fn router<S: Clone + Send + Sync + 'static>(telemetry: Telemetry) -> Router<S> {
    Inspector::new(telemetry).router()
}

#[cfg(test)]
mod tests;
