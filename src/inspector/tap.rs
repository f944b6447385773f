//! What the tracking path and the workers tell the inspector: the only part of it they touch.
//!
//! While no page is open, [`Tap::active`] is one relaxed load that says no, and nothing else
//! happens. While one is, the tracking path hands each event (a reference, not a copy) and the
//! destinations' verdicts to a bounded channel with `try_send`: never blocking, never a lock;
//! when the hub task falls behind, notes are lost and counted, tracking goes on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::hub::Hub;
use crate::event::{Event, EventKind};

/// Notes waiting for the hub task before new ones are lost.
const NOTE_CAPACITY: usize = 4096;

/// The longest name or reason of a refused event the page is shown, in characters.
const SHOWN_CHARS: usize = 256;

/// Errors kept per destination for the page.
pub(crate) const LAST_ERRORS: usize = 10;

/// What became of an event at one destination, as the page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Queued,
    Retrying,
    Delivered,
    Failed,
    Discarded,
    Dropped,
    SampledOut,
    NotRouted,
    Unsupported,
    /// Refused before it was routed (an invalid name or properties, larger than
    /// `max_event_size`, a blank identity): no destination got it.
    Rejected,
    /// Still queued or retrying when the last page closed: what became of it was not
    /// recorded (nothing is while no page is open).
    Unknown,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Retrying => "retrying",
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Discarded => "discarded",
            Outcome::Dropped => "dropped",
            Outcome::SampledOut => "sampled_out",
            Outcome::NotRouted => "not_routed",
            Outcome::Unsupported => "unsupported",
            Outcome::Rejected => "rejected",
            Outcome::Unknown => "unknown",
        }
    }

    /// Whether nothing more will happen to the event there.
    pub(crate) fn is_final(self) -> bool {
        !matches!(self, Outcome::Queued | Outcome::Retrying | Outcome::Unknown)
    }
}

/// One thing that happened, on its way to the hub task.
pub(crate) enum Note {
    /// An event was tracked: after redaction and limits, with the destinations it was routed
    /// to (`routed`), those of them without a counterpart for its kind (`unsupported`) and
    /// those that kept it after sampling and got it (`kept`), as lane bit masks.
    Tracked {
        event: Arc<Event>,
        routed: u32,
        unsupported: u32,
        kept: u32,
    },
    /// An event refused before it was routed: its name (shortened), its kind, and why.
    Rejected {
        name: String,
        kind: EventKind,
        reason: String,
        time: SystemTime,
    },
    /// What became of event `id` at destination `lane`.
    Outcome {
        id: Uuid,
        lane: usize,
        outcome: Outcome,
        message: Option<String>,
    },
}

/// `text`, cut to [`SHOWN_CHARS`] characters (a refused event's name can be anything).
pub(crate) fn shortened(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A delivery error as the page lists it.
#[derive(Clone, Debug)]
pub(crate) struct LastError {
    pub(crate) time: SystemTime,
    pub(crate) outcome: Outcome,
    pub(crate) message: String,
    pub(crate) events: usize,
}

/// The inspector's side of one handle: made with it, shared with its lanes.
pub(crate) struct Tap {
    /// Open streams: the tracking path reports only while there is one.
    subscribers: AtomicUsize,
    /// Counts the times the last stream closed: what the hub recorded in an earlier epoch
    /// and had not settled then never will be.
    pub(crate) epoch: Arc<AtomicU64>,
    /// Notes the hub task could not take in time.
    lost: AtomicU64,
    tx: mpsc::Sender<Note>,
    /// Taken by the hub task when the first page opens.
    rx: Mutex<Option<mpsc::Receiver<Note>>>,
    pub(crate) hub: OnceLock<Arc<Hub>>,
    /// The destinations' names, in lane order.
    pub(crate) names: Vec<String>,
    /// The configuration as the page shows it (secrets masked), made when the handle was.
    pub(crate) config: serde_json::Value,
    /// The last delivery errors per lane, kept whether a page is open or not (they are rare).
    errors: Box<[Mutex<VecDeque<LastError>>]>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("subscribers", &self.subscribers.load(Ordering::Relaxed))
            .field("lost", &self.lost.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Tap {
    pub(crate) fn new(names: Vec<String>, config: serde_json::Value) -> Tap {
        let (tx, rx) = mpsc::channel(NOTE_CAPACITY);
        let errors = names.iter().map(|_| Mutex::default()).collect();
        Tap {
            subscribers: AtomicUsize::new(0),
            epoch: Arc::new(AtomicU64::new(0)),
            lost: AtomicU64::new(0),
            tx,
            rx: Mutex::new(Some(rx)),
            hub: OnceLock::new(),
            names,
            config,
            errors,
        }
    }

    /// Whether a page is open (one relaxed load: what the tracking path pays without one).
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) != 0
    }

    /// Hands `note` to the hub task, or counts it lost.
    #[cold]
    pub(crate) fn send(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reports what became of `events` at `lane` (while a page is open).
    #[cold]
    pub(crate) fn outcomes<'a>(
        &self,
        lane: usize,
        events: impl Iterator<Item = &'a Arc<Event>>,
        outcome: Outcome,
        message: Option<&str>,
    ) {
        for e in events {
            let id = e.id();
            if !id.is_nil() {
                self.send(Note::Outcome {
                    id,
                    lane,
                    outcome,
                    message: message.map(str::to_owned),
                });
            }
        }
    }

    /// Keeps a delivery error of `lane` for the page.
    #[cold]
    pub(crate) fn error(&self, lane: usize, outcome: Outcome, message: String, events: usize) {
        let Some(errors) = self.errors.get(lane) else {
            return;
        };
        let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() == LAST_ERRORS {
            errors.pop_front();
        }
        errors.push_back(LastError {
            time: SystemTime::now(),
            outcome,
            message,
            events,
        });
    }

    /// The last errors of `lane`, oldest first.
    pub(crate) fn errors(&self, lane: usize) -> Vec<LastError> {
        self.errors.get(lane).map_or_else(Vec::new, |e| {
            e.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect()
        })
    }

    /// Notes lost because the hub task fell behind.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Open streams.
    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// The receiving end of the notes, once (for the hub task).
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<Note>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Counts an open stream until the guard is dropped.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscribed {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscribed(self.clone())
    }
}

/// An open stream, counted in [`Tap::active`] while it lives.
#[derive(Debug)]
pub(crate) struct Subscribed(Arc<Tap>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        if self.0.subscribers.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.epoch.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A lane's link to its handle's tap.
#[derive(Clone, Debug)]
pub(crate) struct LaneTap {
    pub(crate) tap: Arc<Tap>,
    pub(crate) lane: usize,
}
