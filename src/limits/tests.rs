//! The limits pass: what it cuts, what it keeps, what it counts.

use super::*;
use crate::redact::RedactConfig;
use serde_json::json;

fn policy(limits: LimitsConfig) -> Policy {
    Policy::new(Redactor::new(&RedactConfig::default()), limits)
}

#[test]
fn context_checks_are_cached_and_reset_by_any_change() {
    let p = policy(LimitsConfig::default());
    let mut ctx = Arc::new(Context::new().with_user_id("u").with_field("plan", "pro"));
    let mut none = Properties::new();
    assert_eq!(p.apply("x", &mut none, &mut ctx, false).redacted, 0);
    // Changed in place (the Arc is unique, so no clone resets it): the change must count.
    Arc::make_mut(&mut ctx).set_field("api_key", "s3cret");
    let out = p.apply("x", &mut none, &mut ctx, false);
    assert_eq!(out.redacted, 1);
    assert_eq!(
        ctx.field("api_key").unwrap(),
        crate::redact::DEFAULT_REDACTION
    );
    let mut other = Arc::new(Context::new().with_field("token", "t"));
    let _ = p.apply("x", &mut none, &mut other, false);
    Arc::make_mut(&mut other).merge(&Context::new().with_field("password", "p"));
    assert_eq!(p.apply("x", &mut none, &mut other, false).redacted, 2);
    // Another policy (another handle) does not trust this one's cache.
    let lax = Policy::new(
        Redactor::new(&RedactConfig::default().with_enabled(false)),
        LimitsConfig::default(),
    );
    let mut ctx2 = Arc::new(Context::new().with_field("token", "t"));
    assert_eq!(lax.apply("x", &mut none, &mut ctx2, false).redacted, 0);
    assert_eq!(p.apply("x", &mut none, &mut ctx2, false).redacted, 1);
}

fn props(v: Value) -> Properties {
    match v {
        Value::Object(m) => Properties::from_json_map(m),
        _ => unreachable!(),
    }
}

#[test]
fn a_normal_event_is_untouched() {
    let p = policy(LimitsConfig::default());
    let mut pr = props(json!({"model": "flux-dev", "steps": 4, "tags": ["a", {"b": null}]}));
    let before = pr.clone();
    let mut ctx = Arc::new(Context::new().with_user_id("u1"));
    assert_eq!(
        p.apply("user.x", &mut pr, &mut ctx, false),
        Outcome::default()
    );
    assert!(pr == before);
}

#[test]
fn warnings_name_the_limits_as_a_user_sets_them() {
    let limits = LimitsConfig::default()
        .with_max_string_length(5)
        .with_max_depth(2);
    let p = policy(limits);
    let mut pr = props(json!({"a": "too long", "b": {"c": {"d": {"e": 1}}}}));
    let mut ctx = Arc::new(Context::new());
    let out = p.apply("user.x", &mut pr, &mut ctx, false);
    assert_eq!(
        out.limits_hit(&limits).to_string(),
        "max_string_length: 5, max_depth: 2"
    );
    let mut pr = props(json!({"a": 1, "b": 2}));
    let out = policy(limits.with_max_properties(1)).apply("user.x", &mut pr, &mut ctx, false);
    assert_eq!(
        out.limits_hit(&limits.with_max_properties(1)).to_string(),
        "max_properties: 1"
    );
    let oversized = Outcome {
        oversized: Some(DEFAULT_MAX_EVENT_SIZE + 1),
        ..Outcome::default()
    };
    assert_eq!(
        oversized.limits_hit(&LimitsConfig::default()).to_string(),
        format!("max_event_size: {DEFAULT_MAX_EVENT_SIZE}")
    );
}

#[test]
fn every_limit_cuts() {
    let p = policy(
        LimitsConfig::default()
            .with_max_properties(3)
            .with_max_string_length(5)
            .with_max_depth(2),
    );
    // Keys in sorted order, so the result does not depend on serde_json's map order.
    let mut pr = props(json!({
        "a": "0123456789",
        "b": {"x": {"y": {"z": 1}}},
        "c": [1, 2, 3, 4, 5],
        "d": 1
    }));
    pr.insert("too_long_key", 1);
    let mut ctx = Arc::new(Context::new());
    let out = p.apply("user.x", &mut pr, &mut ctx, false);
    assert!(out.truncated());
    // Two levels of containers are kept; the third is replaced.
    assert_eq!(
        serde_json::to_value(&pr).unwrap(),
        json!({"a": "01234", "b": {"x": {"y": "[TRUNCATED]"}}, "c": [1, 2, 3]})
    );
    let mut pr = props(json!({"k": 1}));
    pr.insert("too_long_key", 1);
    assert!(p.apply("user.x", &mut pr, &mut ctx, false).truncated());
    assert_eq!(pr.len(), 1, "a key over the string limit is left out");
}

#[test]
fn what_is_cut_gives_its_room_back() {
    let p = policy(LimitsConfig::default());
    let mut pr = Properties::new();
    pr.insert("list", vec![0u8; 1_000_000]);
    for i in 0..1_000 {
        pr.insert(format!("k{i}"), i);
    }
    let mut ctx = Arc::new(Context::new());
    assert!(p.apply("x", &mut pr, &mut ctx, false).truncated());
    assert_eq!(pr.len(), DEFAULT_MAX_PROPERTIES);
    assert!(pr.capacity() <= DEFAULT_MAX_PROPERTIES, "{}", pr.capacity());
    let Value::Array(list) = pr.get("list").unwrap().as_json().unwrap() else {
        unreachable!()
    };
    assert_eq!(list.len(), DEFAULT_MAX_PROPERTIES);
    assert!(
        list.capacity() <= DEFAULT_MAX_PROPERTIES,
        "{}",
        list.capacity()
    );
    // What the event is counted as holding: the kept 64, not the million.
    let held = crate::event::held_size(&pr, &ctx);
    assert!(held < 64 * 1024, "{held}");
}

#[test]
fn the_cached_held_size_covers_the_full_count() {
    let p = policy(LimitsConfig::default());
    let mut pr = props(json!({"s": "x".repeat(100), "tree": [{"a": 1}, {"b": [1, 2]}]}));
    let mut ctx = Arc::new(
        Context::new()
            .with_user_id("u".repeat(300))
            .with_field("f", json!([{"a": 1}, {"b": 2}])),
    );
    let _ = p.apply("x", &mut pr, &mut ctx, false);
    let full = crate::event::held_size(&pr, &ctx);
    assert!(p.held_size(&pr, &ctx, false) >= full);
    // Literals and numbers: the call-site verdict gives the same as the walk.
    let mut lit = Properties::new();
    lit.insert_value("a", "lit").insert_value("n", 1);
    let _ = p.apply("x", &mut lit, &mut ctx, false);
    assert_eq!(
        p.held_size(&lit, &ctx, true),
        p.held_size(&lit, &ctx, false)
    );
}

#[test]
fn strings_are_cut_at_a_character_boundary() {
    let p = policy(LimitsConfig::default().with_max_string_length(4));
    let mut pr = props(json!({"s": "ééé"}));
    p.apply("x", &mut pr, &mut Arc::default(), false);
    assert_eq!(pr.get("s").unwrap(), "éé");
}

#[test]
fn oversized_is_measured_exactly_only_when_the_bound_is_exceeded() {
    let p = policy(LimitsConfig::default().with_max_event_size(4096));
    // 3000 plain bytes: the bound (18 000) is over, the exact size is under.
    let mut pr = props(json!({"s": "x".repeat(3000)}));
    assert_eq!(
        p.apply("x", &mut pr, &mut Arc::default(), false).oversized,
        None
    );
    let mut pr = props(json!({"a": "x".repeat(3000), "b": "y".repeat(3000)}));
    let size = p
        .apply("x", &mut pr, &mut Arc::default(), false)
        .oversized
        .unwrap();
    assert!(size > 6000, "{size}");
}

#[test]
fn context_fields_are_redacted_copy_on_write() {
    let p = policy(LimitsConfig::default());
    let shared = Arc::new(
        Context::new()
            .with_field("token", "t")
            .with_field("nested", json!({"Authorization": "Bearer x"})),
    );
    let mut ctx = shared.clone();
    let out = p.apply("x", &mut Properties::new(), &mut ctx, false);
    assert_eq!(out.redacted, 2);
    assert_eq!(ctx.field("token").unwrap(), "[REDACTED]");
    assert_eq!(ctx.field("nested").unwrap()["Authorization"], "[REDACTED]");
    // The caller's context is not changed.
    assert_eq!(shared.field("token").unwrap(), "t");
}
