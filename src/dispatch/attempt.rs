//! The attempt loop: how one batch is driven to a final verdict for each of its events.
//!
//! Both the handle's workers ([`worker`](super::worker)) and the relay deliver through
//! [`Attempt::run`]: the destination is called under the policy's `timeout`; its answer is a
//! verdict for the whole batch or, for a [partial](DeliveryError::partial) error, per item;
//! what is retryable is sent again (only that) after a full-jitter backoff that honours the
//! destination's `Retry-After`; what is still retryable when the retry policy runs out is
//! given up ([`Verdict::GaveUp`]). The caller decides what each verdict means (the workers
//! count a given-up event as failed; the relay hands its message back to the stream) through
//! the [`Settle`] it passes.
//!
//! The rules, the same for both callers:
//!
//! - A timeout is a retryable failure of the whole attempt ("timed out after …").
//! - In a partial error, an index listed twice counts once, as first listed; an index out of
//!   the batch is ignored; an event not listed was delivered.
//! - A `Retry-After` is a floor for the wait, capped at [`MAX_RETRY_AFTER`].
//! - Permanent and discarded events settle at once; they are never retried.
//! - Retries end when either limit of the [`RetryConfig`] runs out: `max_attempts`, or the
//!   time budget `max_elapsed` (measured from the batch's first attempt: an attempt that would
//!   begin past it is not made). What is still retryable then is given up.
//! - A panic in the destination's `send` or in its future is caught and is a permanent
//!   failure of the attempt ("the destination panicked: …"): the caller's task goes on.
//!
//! Room to grow without touching the callers: the policy is the destination's whole
//! [`DeliveryConfig`] (a new retry setting is read here), every call
//! of the destination goes through one method (`Attempt::send`), and giving up is one
//! [`Settle::settled`] call with [`Verdict::GaveUp`].

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{DeliveryConfig, MAX_RETRY_AFTER, RetryConfig};
use crate::destination::{DeliveryError, DeliveryErrorKind, Destination};
use crate::event::Event;

/// What became of one event of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The destination took it.
    Delivered,
    /// The destination refused it for good ([`DeliveryErrorKind::Permanent`]).
    Failed,
    /// The destination dropped it on purpose ([`DeliveryErrorKind::Discarded`]).
    Discarded,
    /// It was still failing retryably when the retry policy ran out.
    GaveUp,
}

impl Verdict {
    /// The verdict of an error of this kind that is not retried.
    fn of(kind: DeliveryErrorKind) -> Verdict {
        match kind {
            DeliveryErrorKind::Discarded => Verdict::Discarded,
            _ => Verdict::Failed,
        }
    }
}

/// How many events of a batch ended with each verdict, and how many retries it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) delivered: usize,
    pub(crate) failed: usize,
    pub(crate) discarded: usize,
    pub(crate) gave_up: usize,
    /// Attempts after the first.
    pub(crate) retries: u32,
}

impl Tally {
    fn add(&mut self, verdict: Verdict, n: usize) {
        match verdict {
            Verdict::Delivered => self.delivered += n,
            Verdict::Failed => self.failed += n,
            Verdict::Discarded => self.discarded += n,
            Verdict::GaveUp => self.gave_up += n,
        }
    }
}

/// Some events of a batch, by their index in it.
#[derive(Clone, Copy)]
pub(crate) struct Items<'a> {
    batch: &'a [Arc<Event>],
    /// `None`: all of them.
    which: Option<&'a [usize]>,
}

impl<'a> Items<'a> {
    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.which.map_or(self.batch.len(), <[usize]>::len)
    }

    /// Each with its index in the batch.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &'a Arc<Event>)> + 'a {
        let batch = self.batch;
        let (all, some) = match self.which {
            None => (Some(0..batch.len()), None),
            Some(which) => (None, Some(which.iter().copied())),
        };
        all.into_iter()
            .flatten()
            .chain(some.into_iter().flatten())
            .map(move |i| (i, &batch[i]))
    }

    /// The events.
    pub(crate) fn events(&self) -> impl Iterator<Item = &'a Arc<Event>> + 'a {
        self.iter().map(|(_, e)| e)
    }
}

/// What the caller of [`Attempt::run`] is told as the loop goes. Every event of the batch is
/// [settled](Settle::settled) exactly once.
pub(crate) trait Settle {
    /// The destination answered an attempt (a timeout is a retryable error). Called before the
    /// events it settles are.
    fn answered(&mut self, result: Result<(), &DeliveryError>) {
        let _ = result;
    }

    /// `items` ended with `verdict`; `error` says why (for all but [`Verdict::Delivered`]).
    /// `attempts`: how many attempts the batch took so far.
    fn settled(
        &mut self,
        verdict: Verdict,
        items: Items<'_>,
        error: Option<&DeliveryError>,
        attempts: u32,
    );

    /// `items` failed attempt `attempt` retryably and are sent again after `wait`.
    fn retrying(&mut self, attempt: u32, items: Items<'_>, wait: Duration, error: &DeliveryError) {
        let _ = (attempt, items, wait, error);
    }
}

/// One destination's delivery policy (timeout and retries) applied to batches.
pub(crate) struct Attempt<'a> {
    destination: &'a dyn Destination,
    policy: &'a DeliveryConfig,
}

impl<'a> Attempt<'a> {
    /// Delivers to `destination` with `policy`'s `timeout` and `retry`.
    pub(crate) fn new(destination: &'a dyn Destination, policy: &'a DeliveryConfig) -> Self {
        Attempt {
            destination,
            policy,
        }
    }

    /// Drives `batch` to a final verdict for each event, telling `settle` as it goes.
    pub(crate) async fn run(&self, batch: &[Arc<Event>], settle: &mut impl Settle) -> Tally {
        let mut tally = Tally::default();
        // The events to send, by index; `None`: the whole batch.
        let mut pending: Option<Vec<usize>> = None;
        let mut attempt = 1u32;
        let started = Instant::now();
        loop {
            let sent = pending.as_deref();
            let result = match sent {
                None => self.send(batch).await,
                Some(which) => {
                    let events: Vec<Arc<Event>> = which.iter().map(|&i| batch[i].clone()).collect();
                    self.send(&events).await
                }
            };
            settle.answered(result.as_ref().map(|_| ()));
            let mut settle_as = |verdict, which: Option<&[usize]>, error, tally: &mut Tally| {
                let items = Items { batch, which };
                tally.add(verdict, items.len());
                settle.settled(verdict, items, error, attempt);
            };
            let error = match result {
                Ok(()) => {
                    settle_as(Verdict::Delivered, sent, None, &mut tally);
                    return tally;
                }
                Err(e) => e,
            };
            let retry = match error.items() {
                // The whole attempt failed and is made again as it was.
                None if error.is_retryable() => pending,
                None => {
                    settle_as(Verdict::of(error.kind()), sent, Some(&error), &mut tally);
                    return tally;
                }
                Some(listed) => {
                    let len = sent.map_or(batch.len(), <[usize]>::len);
                    // `listed` indexes the events sent; `at` maps them back into `batch`.
                    let at = |k: usize| sent.map_or(k, |which| which[k]);
                    let mut seen = vec![false; len];
                    let mut retry = Vec::new();
                    for (k, item) in listed {
                        let Some(slot) = seen.get_mut(*k) else {
                            continue; // not in the batch
                        };
                        if std::mem::replace(slot, true) {
                            continue; // an index listed twice counts once, as first listed
                        }
                        if item.is_retryable() {
                            retry.push(at(*k));
                        } else {
                            let verdict = Verdict::of(item.kind());
                            settle_as(verdict, Some(&[at(*k)]), Some(item), &mut tally);
                        }
                    }
                    let delivered: Vec<usize> = (0..len).filter(|&k| !seen[k]).map(at).collect();
                    if !delivered.is_empty() {
                        settle_as(Verdict::Delivered, Some(&delivered), None, &mut tally);
                    }
                    if retry.is_empty() {
                        return tally;
                    }
                    Some(retry)
                }
            };
            let left = retry.as_deref();
            let policy = &self.policy.retry;
            let wait = backoff(attempt, policy, error.retry_after());
            // Either limit ends the retries: the attempt count, or the time budget (the next
            // attempt would begin past it).
            let over_budget = started.elapsed().saturating_add(wait) > policy.max_elapsed;
            if attempt >= policy.max_attempts || over_budget {
                settle_as(Verdict::GaveUp, left, Some(&error), &mut tally);
                return tally;
            }
            let items = Items { batch, which: left };
            settle.retrying(attempt, items, wait, &error);
            tally.retries += 1;
            tokio::time::sleep(wait).await;
            pending = retry;
            attempt += 1;
        }
    }

    /// One call of the destination, bounded by the policy's timeout. A panic in `send` or in
    /// its future is caught and answered as a permanent error: the batch fails for this
    /// destination alone, and its worker (or the relay) goes on.
    async fn send(&self, events: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let timeout = self.policy.timeout;
        let call = panic::catch_unwind(AssertUnwindSafe(|| self.destination.send(events)));
        let future = match call {
            Ok(future) => future,
            Err(payload) => return Err(panicked(&*payload)),
        };
        match tokio::time::timeout(timeout, CatchUnwind(future)).await {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) => Err(panicked(&*payload)),
            Err(_) => Err(DeliveryError::retryable(format!(
                "timed out after {timeout:?}"
            ))),
        }
    }
}

/// A future whose panics are caught: `Err` with the panic's payload.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The error a panicking destination is answered with, carrying the panic's message.
fn panicked(payload: &(dyn Any + Send)) -> DeliveryError {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    DeliveryError::permanent(format!("the destination panicked: {message}"))
}

/// The wait before attempt `attempt + 1` (`attempt` ≥ 1 failed attempts so far).
///
/// Full jitter (uniform in `[0, ceiling]`, the ceiling doubling from `initial_backoff` up to
/// `max_backoff`) spreads the retries of many clients; a server-given `retry_after` is honoured
/// as a floor, capped at [`MAX_RETRY_AFTER`].
pub(crate) fn backoff(
    attempt: u32,
    policy: &RetryConfig,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = attempt.saturating_sub(1).min(31);
    let ceiling = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    match retry_after {
        Some(floor) => jittered.max(floor.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests;
