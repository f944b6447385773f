//! The hub: one task per handle that turns the tap's notes into the page's messages, keeps the
//! ring of recent events with their outcomes, and broadcasts every message to the open streams.
//!
//! The broadcast is lossy: a stream that falls more than [`BROADCAST_CAPACITY`] messages behind
//! is told how many it missed and goes on from the newest, so a stalled browser holds no more
//! than that and never slows the hub (nor, through it, tracking or delivery).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::tap::{Note, Outcome};
use crate::event::{Event, EventCategory, Rfc3339};
use crate::routing::Explanation;
use crate::telemetry::WeakTelemetry;

/// Messages a stream may fall behind before it loses some.
pub(crate) const BROADCAST_CAPACITY: usize = 1024;

/// Explanations cached per event name (for the "not routed" and "sampled out" reasons).
const EXPLAINED_CAPACITY: usize = 1024;

/// One message of the stream: an SSE event named `kind` with `data`.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) seq: u64,
    pub(crate) kind: &'static str,
    pub(crate) data: String,
}

/// One destination's outcome of an event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Status {
    pub(crate) outcome: Outcome,
    pub(crate) message: Option<String>,
}

/// An event as the page shows it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) category: String,
    pub(crate) time: String,
    pub(crate) user: Option<String>,
    pub(crate) properties: serde_json::Value,
    pub(crate) context: serde_json::Value,
    /// Per lane.
    pub(crate) destinations: Vec<Status>,
    /// The tap's epoch when it was recorded.
    pub(crate) epoch: u64,
}

/// An entry with its destinations' names, serialized as the page reads it.
struct Shown<'a> {
    entry: &'a Entry,
    names: &'a [String],
}

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Dests<'a>(&'a [String], &'a [Status]);
        impl Serialize for Dests<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.1.len()))?;
                for (name, status) in self.0.iter().zip(self.1) {
                    map.serialize_entry(
                        name,
                        &serde_json::json!({
                            "outcome": status.outcome.as_str(),
                            "message": status.message,
                        }),
                    )?;
                }
                map.end()
            }
        }
        let e = self.entry;
        let mut map = s.serialize_map(Some(11))?;
        map.serialize_entry("seq", &e.seq)?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("name", &e.name)?;
        map.serialize_entry("kind", e.kind)?;
        map.serialize_entry("category", &e.category)?;
        map.serialize_entry("time", &e.time)?;
        map.serialize_entry("user", &e.user)?;
        map.serialize_entry("properties", &e.properties)?;
        map.serialize_entry("context", &e.context)?;
        map.serialize_entry("destinations", &Dests(self.names, &e.destinations))?;
        map.end()
    }
}

/// The recent events, oldest first, and the sequence of messages so far.
#[derive(Debug)]
struct Ring {
    /// The last message's sequence number.
    seq: u64,
    entries: VecDeque<Entry>,
    /// Entry number (see `first`) by event id.
    index: HashMap<Uuid, u64>,
    /// The number of `entries[0]`: entries are numbered in the order they came.
    first: u64,
    capacity: usize,
}

impl Ring {
    fn get_mut(&mut self, id: &Uuid) -> Option<&mut Entry> {
        let n = *self.index.get(id)?;
        let at = usize::try_from(n.checked_sub(self.first)?).ok()?;
        self.entries.get_mut(at)
    }

    fn push(&mut self, entry: Entry) {
        if self.entries.len() >= self.capacity {
            if let Some(old) = self.entries.pop_front() {
                if self.index.get(&old.id) == Some(&self.first) {
                    self.index.remove(&old.id);
                }
            }
            self.first += 1;
        }
        let n = self.first + self.entries.len() as u64;
        self.index.insert(entry.id, n);
        self.entries.push_back(entry);
    }
}

/// The ring and the broadcast of one handle's inspector.
#[derive(Debug)]
pub(crate) struct Hub {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Message>>,
    names: Vec<String>,
    /// The tap's epoch (see `Tap::epoch`).
    epoch: Arc<AtomicU64>,
}

/// What a new stream starts with: the hello and snapshot messages, and the live messages
/// after them.
pub(crate) struct Subscription {
    pub(crate) hello: String,
    pub(crate) snapshot: String,
    /// Messages up to this one are in the snapshot.
    pub(crate) seq: u64,
    pub(crate) rx: broadcast::Receiver<Arc<Message>>,
}

impl Hub {
    /// A hub keeping the last `capacity` events of lanes `names`; `epoch`: the tap's.
    pub(crate) fn new(names: Vec<String>, capacity: usize, epoch: Arc<AtomicU64>) -> Hub {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Hub {
            ring: Mutex::new(Ring {
                seq: 0,
                entries: VecDeque::new(),
                index: HashMap::new(),
                first: 0,
                capacity: capacity.max(1),
            }),
            tx,
            names,
            epoch,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream: subscribed and snapshotted under the ring's lock, so every message is
    /// either in the snapshot or comes live, never both, never neither (until it lags).
    pub(crate) fn subscribe(&self) -> Subscription {
        let mut ring = self.ring();
        // What was still on its way when the last page closed: its end was not recorded.
        let now = self.epoch.load(Ordering::Relaxed);
        for entry in ring.entries.iter_mut().filter(|e| e.epoch < now) {
            for status in &mut entry.destinations {
                if matches!(status.outcome, Outcome::Queued | Outcome::Retrying) {
                    *status = Status {
                        outcome: Outcome::Unknown,
                        message: Some(
                            "not recorded: no inspector page was open when it was settled".into(),
                        ),
                    };
                }
            }
        }
        let rx = self.tx.subscribe();
        let events: Vec<Shown<'_>> = ring
            .entries
            .iter()
            .map(|entry| Shown {
                entry,
                names: &self.names,
            })
            .collect();
        let snapshot = serde_json::json!({ "events": events }).to_string();
        let hello = serde_json::json!({
            "destinations": self.names,
            "capacity": ring.capacity,
        })
        .to_string();
        Subscription {
            hello,
            snapshot,
            seq: ring.seq,
            rx,
        }
    }

    /// Applies one note: a new entry, or an outcome of a known one; broadcasts the message.
    pub(crate) fn apply(&self, note: Note, explain: &mut Explainer) {
        let mut ring = self.ring();
        let message = match note {
            Note::Tracked {
                event,
                routed,
                unsupported,
                kept,
            } => {
                let destinations = (0..self.names.len())
                    .map(|i| status_at(i, &event, routed, unsupported, kept, explain))
                    .collect();
                ring.seq += 1;
                let epoch = self.epoch.load(Ordering::Relaxed);
                let entry = entry(ring.seq, epoch, &event, destinations);
                self.tracked(&mut ring, entry)
            }
            Note::Rejected {
                name,
                kind,
                reason,
                time,
            } => {
                let status = Status {
                    outcome: Outcome::Rejected,
                    message: Some(reason),
                };
                ring.seq += 1;
                let entry = Entry {
                    seq: ring.seq,
                    // Never delivered, so never given an id: one for the page to know it by.
                    id: crate::event::new_event_id_at(time),
                    category: EventCategory::of(&name).as_str().to_owned(),
                    name,
                    kind: kind.as_str(),
                    time: Rfc3339(time).to_string(),
                    user: None,
                    properties: serde_json::Value::Object(Default::default()),
                    context: serde_json::Value::Object(Default::default()),
                    destinations: vec![status; self.names.len()],
                    epoch: self.epoch.load(Ordering::Relaxed),
                };
                self.tracked(&mut ring, entry)
            }
            Note::Outcome {
                id,
                lane,
                outcome,
                message,
            } => {
                let Some(name) = self.names.get(lane) else {
                    return;
                };
                let Some(entry) = ring.get_mut(&id) else {
                    return; // tracked before the page opened, or already out of the ring
                };
                let Some(status) = entry.destinations.get_mut(lane) else {
                    return;
                };
                // A final outcome stays (a late `retrying` never hides a `failed`).
                if status.outcome.is_final() && !outcome.is_final() {
                    return;
                }
                *status = Status {
                    outcome,
                    message: message.clone(),
                };
                ring.seq += 1;
                let data = serde_json::json!({
                    "seq": ring.seq,
                    "id": id,
                    "destination": name,
                    "outcome": outcome.as_str(),
                    "message": message,
                })
                .to_string();
                Message {
                    seq: ring.seq,
                    kind: "outcome",
                    data,
                }
            }
        };
        // Sent under the ring's lock (see `subscribe`); no stream open is no error.
        let _ = self.tx.send(Arc::new(message));
    }

    /// Keeps a new entry (numbered `ring.seq`) and makes its `tracked` message.
    fn tracked(&self, ring: &mut Ring, entry: Entry) -> Message {
        let data = serde_json::to_string(&Shown {
            entry: &entry,
            names: &self.names,
        })
        .unwrap_or_default();
        ring.push(entry);
        Message {
            seq: ring.seq,
            kind: "tracked",
            data,
        }
    }

    /// Runs the hub: applies notes until the handle and its lanes are gone.
    pub(crate) async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Note>, mut explain: Explainer) {
        while let Some(note) = rx.recv().await {
            self.apply(note, &mut explain);
        }
    }
}

fn entry(seq: u64, epoch: u64, event: &Event, destinations: Vec<Status>) -> Entry {
    Entry {
        seq,
        id: event.id(),
        name: event.name().to_owned(),
        kind: event.kind().as_str(),
        category: event.category().as_str().to_owned(),
        time: Rfc3339(event.timestamp()).to_string(),
        user: event.context().user_id().map(str::to_owned),
        properties: serde_json::to_value(event.properties()).unwrap_or_default(),
        context: serde_json::to_value(event.context()).unwrap_or_default(),
        destinations,
        epoch,
    }
}

/// Lane `i`'s outcome of a newly tracked event.
fn status_at(
    i: usize,
    event: &Event,
    routed: u32,
    unsupported: u32,
    kept: u32,
    explain: &mut Explainer,
) -> Status {
    let bit = 1u32 << i;
    if kept & bit != 0 {
        return Status {
            outcome: Outcome::Queued,
            message: None,
        };
    }
    if unsupported & bit != 0 {
        return Status {
            outcome: Outcome::Unsupported,
            message: Some(format!(
                "the destination has no counterpart for `{}`",
                event.kind().as_str()
            )),
        };
    }
    let why = explain.explain(event.name());
    let route = why.as_ref().and_then(|w| w.destinations.get(i));
    if routed & bit != 0 {
        let message = route.map(|r| format!("kept at a rate of {}", r.sample_rate));
        return Status {
            outcome: Outcome::SampledOut,
            message,
        };
    }
    Status {
        outcome: Outcome::NotRouted,
        message: route.map(|r| r.reason.clone()),
    }
}

/// Explains event names through the handle (while it lives), caching the answers.
pub(crate) struct Explainer {
    telemetry: WeakTelemetry,
    cache: HashMap<String, Arc<Explanation>>,
}

impl Explainer {
    pub(crate) fn new(telemetry: WeakTelemetry) -> Explainer {
        Explainer {
            telemetry,
            cache: HashMap::new(),
        }
    }

    fn explain(&mut self, name: &str) -> Option<Arc<Explanation>> {
        if let Some(e) = self.cache.get(name) {
            return Some(e.clone());
        }
        let why = Arc::new(self.telemetry.upgrade()?.explain(name));
        if self.cache.len() >= EXPLAINED_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(name.to_owned(), why.clone());
        Some(why)
    }
}
