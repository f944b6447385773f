//! Helpers shared by `tests/timing.rs` and `tests/macros.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::http::{Server, client, send};
use http_body_util::Empty;
use tower_telemetry::{Context, Event, Telemetry, destination::MemoryDestination};

pub const WAIT: Duration = Duration::from_secs(5);

/// A handle whose only destination is a memory store that receives every event.
pub fn handle() -> (Telemetry, MemoryDestination) {
    let telemetry = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    let memory = telemetry.memory("m").unwrap();
    (telemetry, memory)
}

/// The context the tests run their code in.
pub fn ctx() -> Context {
    Context::new()
        .with_user_id("user_123")
        .with_request_id("req_1")
}

/// Every event delivered so far, after a flush, as names.
pub async fn names(telemetry: &Telemetry, memory: &MemoryDestination) -> Vec<String> {
    assert!(telemetry.flush(WAIT).await, "telemetry did not flush");
    memory
        .events()
        .iter()
        .map(|e| e.name().to_owned())
        .collect()
}

/// The one event named `name` (after a flush).
pub async fn only(telemetry: &Telemetry, memory: &MemoryDestination, name: &str) -> Arc<Event> {
    assert!(telemetry.flush(WAIT).await, "telemetry did not flush");
    let found = memory.named(name);
    assert_eq!(
        found.len(),
        1,
        "expected one `{name}`, got {:?}",
        names_of(memory)
    );
    found[0].clone()
}

pub fn names_of(memory: &MemoryDestination) -> Vec<String> {
    memory
        .events()
        .iter()
        .map(|e| e.name().to_owned())
        .collect()
}

/// A property as JSON (`Null` when absent).
pub fn prop(event: &Event, key: &str) -> serde_json::Value {
    event
        .properties()
        .get(key)
        .map(tower_telemetry::PropertyValue::to_json)
        .unwrap_or(serde_json::Value::Null)
}

/// Asserts `duration_ms` is a non-negative number.
pub fn has_duration(event: &Event) {
    let ms = prop(event, "duration_ms");
    assert!(
        ms.as_f64().is_some_and(|ms| ms >= 0.0),
        "duration_ms = {ms} in {}",
        event.name()
    );
}

/// Serves `app` on 127.0.0.1 (an OS-chosen port) until the test ends.
pub async fn serve(app: axum::Router) -> SocketAddr {
    Server::start(app).await.detach()
}

/// A real HTTP GET; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, http::Method::GET, path).await
}

/// A real HTTP request without a body; returns the status and body.
pub async fn request(addr: SocketAddr, method: http::Method, path: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let (res, body) = send(&client(), req).await;
    (res.status().as_u16(), body)
}
