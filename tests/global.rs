//! The process-wide handle: free functions before and after `install_global`.
//! (One test, because the global is process-wide and tests in a binary run in parallel.)

use std::time::Duration;

use tower_telemetry::{Context, Telemetry, props, track};

#[tokio::test]
async fn free_functions_use_the_global_handle() {
    // Nothing installed: every call is a no-op, never a panic.
    assert!(Telemetry::try_global().is_none());
    track!("user.ignored", n = 1);
    tower_telemetry::track("user.ignored", props! {});
    tower_telemetry::track_event("user.ignored", serde_json::json!({ "a": 1 }));
    tower_telemetry::set_context(Context::new().with_user_id("nobody"));
    tower_telemetry::clear_context();
    assert!(!Telemetry::global().is_enabled());

    let telemetry = Telemetry::builder()
        .memory_destination("m")
        .build()
        .unwrap();
    assert!(telemetry.install_global());
    let other = Telemetry::builder().build().unwrap();
    assert!(!other.install_global(), "the first install wins");

    // The seed's get_instance().set_context(...) pattern.
    Telemetry::global().set_context(
        Context::new()
            .with_user_id("user_123")
            .with_session_id("sess_456"),
    );
    track!("generation.started", model = "flux-dev", credits_cost = 10);
    tower_telemetry::track("checkout.completed", props! { "amount" => 9.99 });
    tower_telemetry::track_event(
        "button_click",
        serde_json::json!({ "button": "submit", "page": "/signup" }),
    );
    tower_telemetry::track_event("user.bad", [1, 2, 3]);
    Telemetry::global().clear_context();
    track!("user.after_clear");

    assert!(telemetry.flush(Duration::from_secs(1)).await);
    let m = telemetry.memory("m").unwrap();
    let names: Vec<_> = m.events().iter().map(|e| e.name().to_owned()).collect();
    assert_eq!(
        names,
        [
            "generation.started",
            "checkout.completed",
            "button_click",
            "user.after_clear"
        ]
    );
    assert!(
        m.events()[..3]
            .iter()
            .all(|e| e.context().user_id() == Some("user_123"))
    );
    assert_eq!(m.events()[3].context().user_id(), None);
    assert_eq!(telemetry.stats().rejected, 1);
    tower_telemetry::assert_tracked!(m, "button_click", button = "submit", page = "/signup");
}
