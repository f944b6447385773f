//! The one place for the integration tests' helpers: `mod support;` at the top of a test file,
//! then the module it needs.
//!
//! - [`http`]: a real axum server on 127.0.0.1 and a real HTTP/1.1 client (the one HTTP
//!   harness; the Umami server and the timing helpers serve through it).
//! - [`logs`]: log lines captured from a `tracing` subscriber scoped to a test.
//! - [`scripted`]: [`Scripted`], a destination answering from a script.
//! - [`timing`]: a memory-only handle and event accessors for the timing and macro tests.
//! - [`umami_server`]: a contract-faithful Umami collection server, with scriptable faults
//!   (refuse/listen, a status with headers, a hang, half a reply, every other request failing).
//! - [`nats_server`]: real `nats-server` nodes and clusters (provisioned on first use).
//! - [`faults`]: what the vendor contract servers share: the store deduped by the vendor's
//!   id, the request log, scriptable faults (status + headers, hang, store-then-hang, delay),
//!   refuse/listen.
//! - [`posthog_server`], [`segment_server`] (and RudderStack's limits), [`webhook_receiver`]
//!   (Standard Webhooks signatures): contract servers for the `posthog`, `segment` and
//!   `webhook` kinds (issue #22).
//! - [`otlp_receiver`]: an OTLP/HTTP logs receiver in Python decoding with OpenTelemetry's
//!   official `opentelemetry-proto` package, scriptable answers (issue #25).
//! - [`python`]: the vendors' official Python SDKs in a pinned venv, snippets run bounded in
//!   time (provisioned on first use).
//!
//! Each test binary uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod faults;
pub mod http;
pub mod logs;
pub mod nats_server;
pub mod otlp_receiver;
pub mod posthog_server;
pub mod python;
pub mod scripted;
pub mod segment_server;
pub mod timing;
pub mod umami_server;
pub mod webhook_receiver;

pub use scripted::{Answer, Scripted};

use tower_telemetry::DestinationStats;

/// Every event of a destination is accounted for:
/// `enqueued = delivered + failed + discarded + dropped_oldest + undelivered`.
pub fn accounted(d: &DestinationStats) {
    assert_eq!(
        d.enqueued,
        d.delivered + d.failed + d.discarded + d.dropped_oldest + d.undelivered,
        "{}: {d:?}",
        d.name
    );
}
