//! The hub: ordering of the stream's messages, the snapshot, and a stalled stream losing
//! messages without holding anything up.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::TryRecvError;

use super::hub::{BROADCAST_CAPACITY, Explainer, Hub, Message};
use super::tap::{Note, Outcome};
use crate::event::{Event, Properties};
use crate::{Telemetry, props};

fn handle() -> Telemetry {
    Telemetry::from_yaml_str(
        "telemetry:\n  destinations:\n    a:\n      type: memory\n      events: [user.*]\n    b:\n      type: memory\n      events: [user.*, page.*]\n      sample_rate: 0.5\n",
    )
    .unwrap()
}

fn event(name: &str) -> Arc<Event> {
    Arc::new(Event::new(name.to_owned(), props! { "n" => 1 }))
}

fn tracked(event: &Arc<Event>, routed: u32, kept: u32) -> Note {
    Note::Tracked {
        event: event.clone(),
        routed,
        unsupported: 0,
        kept,
    }
}

fn outcome(event: &Arc<Event>, lane: usize, outcome: Outcome, message: Option<&str>) -> Note {
    Note::Outcome {
        id: event.id(),
        lane,
        outcome,
        message: message.map(str::to_owned),
    }
}

fn json(m: &Message) -> Value {
    serde_json::from_str(&m.data).unwrap()
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Arc<Message>>) -> Vec<Arc<Message>> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn messages_come_in_order_and_the_snapshot_holds_what_came_before() {
    let t = handle();
    let hub = Hub::new(vec!["a".into(), "b".into()], 10, Default::default());
    let mut explain = Explainer::new(t.downgrade());
    let mut early = hub.subscribe();
    assert_eq!(early.seq, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&early.snapshot).unwrap()["events"],
        serde_json::json!([])
    );
    let hello: Value = serde_json::from_str(&early.hello).unwrap();
    assert_eq!(hello["destinations"], serde_json::json!(["a", "b"]));
    assert_eq!(hello["capacity"], 10);

    let signup = event("user.signup");
    let view = event("page.view");
    hub.apply(tracked(&signup, 0b11, 0b01), &mut explain);
    hub.apply(outcome(&signup, 0, Outcome::Delivered, None), &mut explain);
    hub.apply(tracked(&view, 0b10, 0), &mut explain);

    // The early stream: every message, numbered in order, each an event or an outcome.
    let got = drain(&mut early.rx);
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let kinds: Vec<&str> = got.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, ["tracked", "outcome", "tracked"]);
    let first = json(&got[0]);
    assert_eq!(first["name"], "user.signup");
    assert_eq!(first["id"], signup.id().to_string());
    assert_eq!(first["properties"]["n"], 1);
    assert_eq!(first["destinations"]["a"]["outcome"], "queued");
    assert_eq!(first["destinations"]["b"]["outcome"], "sampled_out");
    assert_eq!(
        first["destinations"]["b"]["message"],
        "kept at a rate of 0.5"
    );
    let delivered = json(&got[1]);
    assert_eq!(delivered["destination"], "a");
    assert_eq!(delivered["outcome"], "delivered");
    let third = json(&got[2]);
    assert_eq!(third["destinations"]["a"]["outcome"], "not_routed");
    assert_eq!(
        third["destinations"]["a"]["message"],
        "matches none of its `events` patterns"
    );

    // A stream opened now: both events in its snapshot, with the outcome applied; only what
    // comes after it arrives live.
    let mut late = hub.subscribe();
    assert_eq!(late.seq, 3);
    let snapshot: Value = serde_json::from_str(&late.snapshot).unwrap();
    let events = snapshot["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["name"], "user.signup");
    assert_eq!(events[0]["destinations"]["a"]["outcome"], "delivered");
    assert_eq!(events[1]["name"], "page.view");
    hub.apply(
        outcome(&view, 1, Outcome::Failed, Some("HTTP 400: no such site")),
        &mut explain,
    );
    let live = drain(&mut late.rx);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].seq, 4);
    assert_eq!(json(&live[0])["message"], "HTTP 400: no such site");
    assert_eq!(drain(&mut early.rx).len(), 1);

    // A final outcome stays; an outcome of an unknown event is no message.
    hub.apply(
        outcome(&view, 1, Outcome::Retrying, Some("late")),
        &mut explain,
    );
    hub.apply(
        outcome(&event("user.unknown"), 0, Outcome::Delivered, None),
        &mut explain,
    );
    assert!(drain(&mut early.rx).is_empty());
    let snapshot: Value = serde_json::from_str(&hub.subscribe().snapshot).unwrap();
    assert_eq!(
        snapshot["events"][1]["destinations"]["b"]["outcome"],
        "failed"
    );
}

#[tokio::test]
async fn a_stalled_stream_loses_messages_and_holds_nothing_up() {
    let t = handle();
    let hub = Hub::new(vec!["a".into(), "b".into()], 100, Default::default());
    let mut explain = Explainer::new(t.downgrade());
    let mut stalled = hub.subscribe();
    let total = 3 * BROADCAST_CAPACITY;
    let mut last = None;
    for i in 0..total {
        let e = Arc::new(Event::new(format!("user.e{i}"), Properties::new()));
        hub.apply(tracked(&e, 0b01, 0b01), &mut explain);
        last = Some(e);
    }
    // The stalled stream is told how much it missed, then goes on from what the broadcast
    // still holds: the newest.
    match stalled.rx.try_recv() {
        Err(TryRecvError::Lagged(missed)) => {
            assert_eq!(missed as usize, total - BROADCAST_CAPACITY)
        }
        other => panic!("expected a lag, got {other:?}"),
    }
    let rest = drain(&mut stalled.rx);
    assert_eq!(rest.len(), BROADCAST_CAPACITY);
    assert_eq!(rest.last().unwrap().seq, total as u64);
    // The ring keeps only the newest events, and outcomes still find them.
    let snapshot: Value = serde_json::from_str(&hub.subscribe().snapshot).unwrap();
    let events = snapshot["events"].as_array().unwrap();
    assert_eq!(events.len(), 100);
    assert_eq!(events[99]["name"], format!("user.e{}", total - 1));
    let last = last.unwrap();
    hub.apply(outcome(&last, 0, Outcome::Delivered, None), &mut explain);
    let snapshot: Value = serde_json::from_str(&hub.subscribe().snapshot).unwrap();
    assert_eq!(
        snapshot["events"][99]["destinations"]["a"]["outcome"],
        "delivered"
    );
}

#[test]
fn the_tap_is_quiet_without_a_page_and_counts_what_it_cannot_take() {
    let tap = Arc::new(super::tap::Tap::new(vec!["a".into()], Value::Null));
    assert!(!tap.active());
    let guard = tap.subscribe();
    assert!(tap.active());
    // Nobody takes the notes: past the channel's room they are lost and counted.
    let e = event("user.x");
    for _ in 0..5000 {
        tap.send(tracked(&e, 1, 1));
    }
    assert_eq!(tap.lost(), 5000 - 4096);
    drop(guard);
    assert!(!tap.active());
}

#[tokio::test]
async fn what_was_on_its_way_when_the_last_page_closed_is_shown_unknown_not_queued() {
    let t = handle();
    let tap = Arc::new(super::tap::Tap::new(
        vec!["a".into(), "b".into()],
        Value::Null,
    ));
    let hub = Hub::new(vec!["a".into(), "b".into()], 10, tap.epoch.clone());
    let mut explain = Explainer::new(t.downgrade());
    let page = tap.subscribe();
    let _ = hub.subscribe();
    let done = event("user.done");
    let pending = event("user.pending");
    hub.apply(tracked(&done, 0b01, 0b01), &mut explain);
    hub.apply(outcome(&done, 0, Outcome::Delivered, None), &mut explain);
    hub.apply(tracked(&pending, 0b01, 0b01), &mut explain);
    drop(page); // the last page closes; `pending` is settled meanwhile, unrecorded
    let _page = tap.subscribe();
    let snapshot: Value = serde_json::from_str(&hub.subscribe().snapshot).unwrap();
    let events = snapshot["events"].as_array().unwrap();
    assert_eq!(events[0]["destinations"]["a"]["outcome"], "delivered");
    assert_eq!(events[1]["destinations"]["a"]["outcome"], "unknown");
    assert_eq!(events[1]["destinations"]["b"]["outcome"], "not_routed");
    // A verdict that still comes (a batch retried across the gap) replaces it.
    hub.apply(
        outcome(&pending, 0, Outcome::Failed, Some("gave up")),
        &mut explain,
    );
    let snapshot: Value = serde_json::from_str(&hub.subscribe().snapshot).unwrap();
    assert_eq!(
        snapshot["events"][1]["destinations"]["a"]["outcome"],
        "failed"
    );
}

#[tokio::test]
async fn a_refused_event_is_rejected_everywhere_with_its_reason_and_its_name_shortened() {
    use super::tap::shortened;
    use crate::event::EventKind;

    let t = handle();
    let hub = Hub::new(vec!["a".into(), "b".into()], 10, Default::default());
    let mut explain = Explainer::new(t.downgrade());
    let mut page = hub.subscribe();
    // A name of any length (and any characters) is cut to 256 characters, at a character.
    let long = "é".repeat(300);
    let name = shortened(&long);
    assert_eq!(name.chars().count(), 257);
    assert!(name.ends_with("é…"));
    assert_eq!(shortened("ok.name"), "ok.name");
    hub.apply(
        Note::Rejected {
            name,
            kind: EventKind::Identify,
            reason: "identify needs a user id; this one is blank".into(),
            time: std::time::SystemTime::now(),
        },
        &mut explain,
    );
    let got = drain(&mut page.rx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, "tracked");
    let e = json(&got[0]);
    assert_eq!(e["kind"], "identify");
    assert_eq!(e["name"].as_str().unwrap().chars().count(), 257);
    for d in ["a", "b"] {
        assert_eq!(e["destinations"][d]["outcome"], "rejected");
        assert_eq!(
            e["destinations"][d]["message"],
            "identify needs a user id; this one is blank"
        );
    }
    // Final: nothing after replaces it, and a new page gets it in its snapshot.
    assert!(Outcome::Rejected.is_final());
    let id: uuid::Uuid = e["id"].as_str().unwrap().parse().unwrap();
    hub.apply(
        Note::Outcome {
            id,
            lane: 0,
            outcome: Outcome::Retrying,
            message: None,
        },
        &mut explain,
    );
    assert!(drain(&mut page.rx).is_empty());
    let late = hub.subscribe();
    let snapshot: Value = serde_json::from_str(&late.snapshot).unwrap();
    assert_eq!(
        snapshot["events"][0]["destinations"]["a"]["outcome"],
        "rejected"
    );
}
