//! One delivery attempt of a batch: which endpoint, the fallback, and per-event outcomes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use uuid::Uuid;

use super::Inner;
use super::bot::looks_like_bot;
use super::client::SendReply;
use super::config::UmamiMode;
use super::payload::{Changes, effective_user_agent, has_counterpart};
use crate::destination::DeliveryError;
use crate::destination::http::Outcomes;
use crate::event::{Event, EventKind};

/// After this many batches in a row whose `/api/batch` 500 was not reproduced by `/api/send`,
/// the server is taken for one with the batch bug (before 3.0.2) and batching stops for good.
pub(super) const UNREPRODUCED_500_LIMIT: u32 = 3;

/// The most ids of events delivered by attempts the worker gave up waiting for (a timeout)
/// that are remembered, so the retry does not deliver them again.
const MAX_UNREPORTED: usize = 100_000;

/// Remembers what this attempt delivered. If the attempt is dropped before it reports (the
/// worker's timeout fired mid-way), the delivered ids are kept so that the retry of the same
/// events skips them: per-event sending never delivers an event twice.
struct Progress<'a> {
    inner: &'a Inner,
    delivered: Vec<Uuid>,
    reported: bool,
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if self.reported || self.delivered.is_empty() {
            return;
        }
        let mut set = self.inner.lock_unreported();
        if set.len() + self.delivered.len() > MAX_UNREPORTED {
            set.clear();
        }
        set.extend(self.delivered.drain(..));
    }
}

pub(super) async fn deliver(inner: &Inner, batch: &[Arc<Event>]) -> Result<(), DeliveryError> {
    let n = batch.len();
    let mut outcomes = Outcomes::new(n);
    {
        let mut set = inner.lock_unreported();
        if !set.is_empty() {
            for (i, e) in batch.iter().enumerate() {
                if set.remove(&e.id()) {
                    outcomes.delivered(i);
                }
            }
        }
    }
    let mut progress = Progress {
        inner,
        delivered: Vec::new(),
        reported: false,
    };
    let mut bodies: Vec<Option<(Value, Changes)>> = Vec::with_capacity(n);
    for (i, e) in batch.iter().enumerate() {
        if outcomes.is_pending(i) && !has_counterpart(e.kind()) {
            // `supports` keeps these from the queue; one that comes anyway (a destination
            // called directly) must not reach Umami as an event named `$alias`.
            outcomes.failed(i, unsupported(e.kind()));
        }
        bodies.push(outcomes.is_pending(i).then(|| inner.mapping.body(e)));
    }

    // Events that may meet the bot check go through /api/send, where a discard is visible.
    let batching = match inner.mode {
        UmamiMode::Send => false,
        UmamiMode::Batch => true,
        UmamiMode::Auto => !inner.fallen_back.load(Ordering::Relaxed),
    };
    let (mut batched, mut single): (Vec<usize>, Vec<usize>) =
        (0..n).filter(|i| bodies[*i].is_some()).partition(|i| {
            batching
                && !looks_like_bot(effective_user_agent(
                    &body(&bodies, *i).0,
                    &inner.user_agent,
                ))
        });
    if batched.len() == 1 && inner.mode == UmamiMode::Auto {
        // One event: /api/send is the same work for the server and tells us more.
        single.append(&mut batched);
        single.sort_unstable();
    }

    let mut probing = false;
    if !batched.is_empty() {
        let items: Vec<&Value> = batched.iter().map(|i| &body(&bodies, *i).0).collect();
        inner.count_request();
        match inner.client.batch(&items).await {
            Ok(failed) => {
                inner.unreproduced_500.store(0, Ordering::Relaxed);
                for (j, error) in failed {
                    if let Some(&i) = batched.get(j) {
                        outcomes.failed(i, error);
                    }
                }
                for &i in &batched {
                    if outcomes.is_pending(i) {
                        outcomes.delivered(i);
                        progress.delivered.push(batch[i].id());
                    }
                }
            }
            Err(f) if inner.mode == UmamiMode::Auto && f.is_no_route() => {
                inner.fall_back(&f.error);
                single.append(&mut batched);
                single.sort_unstable();
            }
            Err(f) if inner.mode == UmamiMode::Auto && f.is_server_error() => {
                // An old server's bug or a real failure: /api/send tells them apart.
                probing = true;
                batched.append(&mut single);
                single = batched;
            }
            Err(f) => {
                for &i in &batched {
                    outcomes.failed(i, f.error.clone());
                }
            }
        }
    }

    // One request per event; after a retryable failure the rest wait for the retry too.
    let mut stop: Option<DeliveryError> = None;
    for i in single {
        if let Some(e) = &stop {
            outcomes.failed(i, e.clone());
            continue;
        }
        inner.count_request();
        match inner.client.send(&body(&bodies, i).0).await {
            Ok(reply) => {
                if std::mem::take(&mut probing) {
                    inner.unreproduced_500_seen();
                }
                match reply {
                    SendReply::Stored => {
                        progress.delivered.push(batch[i].id());
                        outcomes.delivered(i);
                    }
                    SendReply::Discarded => {
                        let ua = effective_user_agent(&body(&bodies, i).0, &inner.user_agent);
                        outcomes.failed(i, inner.discarded(ua));
                    }
                }
            }
            Err(f) => {
                probing = false;
                if f.error.is_retryable() {
                    stop = Some(f.error.clone());
                }
                outcomes.failed(i, f.error);
            }
        }
    }
    progress.reported = true;

    // Changes are counted once per event: when it is settled, not on every attempt.
    for (i, body) in bodies.iter().enumerate() {
        if let (true, Some((_, changes))) = (outcomes.is_settled(i), body) {
            inner.count_changes(changes);
        }
    }
    outcomes.into_result()
}

/// The verdict on an event of a kind Umami has no call for: it can never be delivered.
fn unsupported(kind: EventKind) -> DeliveryError {
    DeliveryError::permanent(format!(
        "Umami has no counterpart for {kind} events (UmamiDestination::supports says so); not sent"
    ))
}

fn body(bodies: &[Option<(Value, Changes)>], i: usize) -> &(Value, Changes) {
    bodies[i]
        .as_ref()
        .expect("only pending events are sent, and they all have a body")
}
