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
//!
//! Room to grow without touching the callers: the policy is the destination's whole
//! [`DeliveryConfig`] (a new retry setting, such as a time budget, is read here), every call
//! of the destination goes through one method (`Attempt::send`), and giving up is one
//! [`Settle::settled`] call with [`Verdict::GaveUp`].

use std::sync::Arc;
use std::time::Duration;

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

    /// `events` events failed attempt `attempt` retryably and are sent again after `wait`.
    fn retrying(&mut self, attempt: u32, events: usize, wait: Duration, error: &DeliveryError) {
        let _ = (attempt, events, wait, error);
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
            if attempt >= self.policy.retry.max_attempts {
                settle_as(Verdict::GaveUp, left, Some(&error), &mut tally);
                return tally;
            }
            let wait = backoff(attempt, &self.policy.retry, error.retry_after());
            let events = left.map_or(batch.len(), <[usize]>::len);
            settle.retrying(attempt, events, wait, &error);
            tally.retries += 1;
            tokio::time::sleep(wait).await;
            pending = retry;
            attempt += 1;
        }
    }

    /// One call of the destination, bounded by the policy's timeout.
    async fn send(&self, events: &[Arc<Event>]) -> Result<(), DeliveryError> {
        let timeout = self.policy.timeout;
        match tokio::time::timeout(timeout, self.destination.send(events)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::retryable(format!(
                "timed out after {timeout:?}"
            ))),
        }
    }
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
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;
    use crate::destination::BoxFuture;
    use crate::event::Properties;

    /// One answer of the scripted destination.
    enum Step {
        Answer(Result<(), DeliveryError>),
        /// Never answers (the timeout does).
        Hang,
    }

    /// A destination answering from a script (delivered once it runs out), recording the
    /// names of the events of each call and when it came.
    struct Script {
        steps: Mutex<VecDeque<Step>>,
        calls: Mutex<Vec<(Duration, Vec<String>)>>,
        start: Instant,
    }

    impl Script {
        fn new(steps: impl IntoIterator<Item = Step>) -> Script {
            Script {
                steps: Mutex::new(steps.into_iter().collect()),
                calls: Mutex::new(Vec::new()),
                start: Instant::now(),
            }
        }

        fn calls(&self) -> Vec<Vec<String>> {
            let calls = self.calls.lock().unwrap();
            calls.iter().map(|(_, names)| names.clone()).collect()
        }

        fn call_times(&self) -> Vec<Duration> {
            self.calls.lock().unwrap().iter().map(|(t, _)| *t).collect()
        }
    }

    impl Destination for Script {
        fn name(&self) -> &str {
            "script"
        }

        fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
            let names = batch.iter().map(|e| e.name().to_owned()).collect();
            self.calls
                .lock()
                .unwrap()
                .push((self.start.elapsed(), names));
            let step = self.steps.lock().unwrap().pop_front();
            Box::pin(async move {
                match step {
                    None => Ok(()),
                    Some(Step::Answer(result)) => result,
                    Some(Step::Hang) => std::future::pending().await,
                }
            })
        }
    }

    use Step::Answer;

    /// Everything the loop told its caller.
    #[derive(Default)]
    struct Log {
        answers: Vec<Result<(), String>>,
        /// (verdict, indices, error message, attempts)
        settled: Vec<(Verdict, Vec<usize>, Option<String>, u32)>,
        /// (attempt, events, wait, error message)
        retrying: Vec<(u32, usize, Duration, String)>,
    }

    impl Settle for Log {
        fn answered(&mut self, result: Result<(), &DeliveryError>) {
            self.answers
                .push(result.map_err(|e| e.message().to_owned()));
        }

        fn settled(
            &mut self,
            verdict: Verdict,
            items: Items<'_>,
            error: Option<&DeliveryError>,
            attempts: u32,
        ) {
            let indices: Vec<usize> = items.iter().map(|(i, _)| i).collect();
            assert_eq!(indices.len(), items.len());
            for (i, e) in items.iter() {
                assert_eq!(e.name(), format!("e{i}"), "an index names its event");
            }
            let error = error.map(|e| e.message().to_owned());
            self.settled.push((verdict, indices, error, attempts));
        }

        fn retrying(&mut self, attempt: u32, events: usize, wait: Duration, error: &DeliveryError) {
            self.retrying
                .push((attempt, events, wait, error.message().to_owned()));
        }
    }

    impl Log {
        /// The verdict of each event of a batch of `n`, checking each was settled once.
        fn verdicts(&self, n: usize) -> Vec<Verdict> {
            let mut out = vec![None; n];
            for (verdict, indices, ..) in &self.settled {
                for &i in indices {
                    assert!(out[i].is_none(), "event {i} settled twice");
                    out[i] = Some(*verdict);
                }
            }
            out.into_iter()
                .enumerate()
                .map(|(i, v)| v.unwrap_or_else(|| panic!("event {i} never settled")))
                .collect()
        }
    }

    fn batch(n: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|i| Arc::new(Event::new(format!("e{i}"), Properties::new())))
            .collect()
    }

    fn names(indices: &[usize]) -> Vec<String> {
        indices.iter().map(|i| format!("e{i}")).collect()
    }

    fn policy(max_attempts: u32) -> DeliveryConfig {
        DeliveryConfig::default()
            .with_timeout(Duration::from_secs(1))
            .with_retry(
                RetryConfig::default()
                    .with_max_attempts(max_attempts)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(1)),
            )
    }

    async fn run(script: &Script, policy: &DeliveryConfig, n: usize) -> (Tally, Log) {
        let mut log = Log::default();
        let tally = Attempt::new(script, policy).run(&batch(n), &mut log).await;
        assert_eq!(
            tally.delivered + tally.failed + tally.discarded + tally.gave_up,
            n,
            "every event counted once"
        );
        (tally, log)
    }

    use Verdict::{Delivered, Discarded, Failed, GaveUp};

    #[tokio::test(start_paused = true)]
    async fn a_batch_taken_whole_is_sent_once() {
        let script = Script::new([]);
        let (tally, log) = run(&script, &policy(5), 3).await;
        assert_eq!(script.calls(), [names(&[0, 1, 2])]);
        assert_eq!(log.verdicts(3), [Delivered; 3]);
        assert_eq!(log.answers, [Ok(())]);
        assert_eq!(tally.retries, 0);
        assert!(log.retrying.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_and_discarded_batches_settle_at_once() {
        let script = Script::new([Answer(Err(DeliveryError::permanent("no")))]);
        let (tally, log) = run(&script, &policy(5), 2).await;
        assert_eq!(script.calls().len(), 1, "never retried");
        assert_eq!(log.verdicts(2), [Failed; 2]);
        assert_eq!(log.settled[0].2.as_deref(), Some("no"));
        assert_eq!((tally.failed, tally.retries), (2, 0));

        let script = Script::new([Answer(Err(DeliveryError::discarded("filtered")))]);
        let (tally, log) = run(&script, &policy(5), 2).await;
        assert_eq!(script.calls().len(), 1, "never retried");
        assert_eq!(log.verdicts(2), [Discarded; 2]);
        assert_eq!(tally.discarded, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_batch_is_sent_again_whole_until_taken() {
        let script = Script::new([
            Answer(Err(DeliveryError::retryable("busy"))),
            Answer(Err(DeliveryError::retryable("busy"))),
        ]);
        let (tally, log) = run(&script, &policy(5), 2).await;
        assert_eq!(script.calls(), vec![names(&[0, 1]); 3]);
        assert_eq!(log.verdicts(2), [Delivered; 2]);
        assert_eq!(log.settled[0].3, 3, "taken at the third attempt");
        assert_eq!(tally.retries, 2);
        let attempts: Vec<u32> = log.retrying.iter().map(|r| r.0).collect();
        assert_eq!(attempts, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts_and_give_up_with_the_last_error() {
        let script = Script::new(
            (1..=5).map(|i| Answer(Err(DeliveryError::retryable(format!("down {i}"))))),
        );
        let (tally, log) = run(&script, &policy(3), 2).await;
        assert_eq!(script.calls().len(), 3);
        assert_eq!(log.verdicts(2), [GaveUp; 2]);
        assert_eq!(
            log.settled,
            [(GaveUp, vec![0, 1], Some("down 3".into()), 3)]
        );
        assert_eq!((tally.gave_up, tally.retries), (2, 2));

        // One attempt: no retry at all.
        let script = Script::new([Answer(Err(DeliveryError::retryable("down")))]);
        let (tally, _) = run(&script, &policy(1), 2).await;
        assert_eq!(script.calls().len(), 1);
        assert_eq!((tally.gave_up, tally.retries), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_error_settles_each_item_and_retries_only_the_retryable() {
        let script = Script::new([Answer(Err(DeliveryError::partial([
            (1, DeliveryError::permanent("bad 1")),
            (2, DeliveryError::retryable("busy 2")),
            (3, DeliveryError::discarded("dup 3")),
            (4, DeliveryError::retryable("busy 4")),
        ])))]);
        let (tally, log) = run(&script, &policy(5), 5).await;
        assert_eq!(script.calls(), [names(&[0, 1, 2, 3, 4]), names(&[2, 4])]);
        assert_eq!(
            log.verdicts(5),
            [Delivered, Failed, Delivered, Discarded, Delivered]
        );
        assert_eq!(
            log.settled[0].2.as_deref(),
            Some("bad 1"),
            "the item's own error"
        );
        assert_eq!(
            tally,
            Tally {
                delivered: 3,
                failed: 1,
                discarded: 1,
                gave_up: 0,
                retries: 1
            }
        );
        assert_eq!(log.retrying[0].1, 2, "two events retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_error_on_a_retry_indexes_the_events_sent_then() {
        let script = Script::new([
            Answer(Err(DeliveryError::partial([
                (1, DeliveryError::retryable("busy")),
                (3, DeliveryError::retryable("busy")),
            ]))),
            // Sent: [e1, e3]; index 1 is e3.
            Answer(Err(DeliveryError::partial([(
                1,
                DeliveryError::permanent("bad"),
            )]))),
        ]);
        let (_, log) = run(&script, &policy(5), 4).await;
        assert_eq!(script.calls()[1], names(&[1, 3]));
        assert_eq!(log.verdicts(4), [Delivered, Delivered, Delivered, Failed]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_listed_twice_counts_once_as_first_listed() {
        let script = Script::new([Answer(Err(DeliveryError::partial([
            (1, DeliveryError::retryable("busy")),
            (1, DeliveryError::retryable("busy again")),
            (1, DeliveryError::permanent("bad")),
            (2, DeliveryError::permanent("bad")),
            (2, DeliveryError::retryable("busy")),
        ])))]);
        let (tally, log) = run(&script, &policy(5), 3).await;
        // e1 is sent again once (not once per listing); e2 is not retried.
        assert_eq!(script.calls(), [names(&[0, 1, 2]), names(&[1])]);
        assert_eq!(log.verdicts(3), [Delivered, Delivered, Failed]);
        assert_eq!((tally.delivered, tally.failed), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_out_of_the_batch_is_ignored() {
        let script = Script::new([Answer(Err(DeliveryError::partial([
            (3, DeliveryError::permanent("bad")),
            (usize::MAX, DeliveryError::retryable("busy")),
            (0, DeliveryError::permanent("bad 0")),
        ])))]);
        let (tally, log) = run(&script, &policy(5), 3).await;
        assert_eq!(script.calls().len(), 1, "nothing to retry");
        assert_eq!(log.verdicts(3), [Failed, Delivered, Delivered]);
        assert_eq!(tally.retries, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_a_retryable_failure_of_the_whole_attempt() {
        let script = Script::new([Step::Hang, Step::Hang]);
        let (tally, log) = run(&script, &policy(2), 2).await;
        assert_eq!(log.answers, vec![Err("timed out after 1s".to_owned()); 2]);
        assert_eq!(
            log.settled,
            [(GaveUp, vec![0, 1], Some("timed out after 1s".into()), 2)]
        );
        assert_eq!(tally.gave_up, 2);
        // The second attempt began once the first timed out and the backoff passed.
        let times = script.call_times();
        assert!(times[1] >= Duration::from_secs(1), "{times:?}");
        assert!(times[1] <= Duration::from_millis(1100), "{times:?}");

        // A destination that hangs once, then answers.
        let script = Script::new([Step::Hang]);
        let (tally, log) = run(&script, &policy(5), 2).await;
        assert_eq!(log.verdicts(2), [Delivered; 2]);
        assert_eq!(tally.retries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_for_the_wait() {
        let busy =
            || DeliveryError::retryable("slow down").with_retry_after(Duration::from_secs(5));
        let script = Script::new([Answer(Err(busy()))]);
        let (_, log) = run(&script, &policy(5), 1).await;
        let wait = log.retrying[0].2;
        // The backoff alone waits at most 100 ms here.
        assert!(wait >= Duration::from_secs(5), "{wait:?}");
        assert!(script.call_times()[1] >= Duration::from_secs(5));

        // In a partial error, the longest of its items'.
        let script = Script::new([Answer(Err(DeliveryError::partial([
            (0, busy()),
            (
                1,
                DeliveryError::retryable("x").with_retry_after(Duration::from_secs(7)),
            ),
        ])))]);
        let (_, log) = run(&script, &policy(5), 2).await;
        assert!(log.retrying[0].2 >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let script = Script::new([Answer(Err(DeliveryError::retryable("come back tomorrow")
            .with_retry_after(Duration::from_secs(86_400))))]);
        let (_, log) = run(&script, &policy(5), 1).await;
        assert_eq!(log.retrying[0].2, MAX_RETRY_AFTER);
        let t = script.call_times()[1];
        assert!(t >= MAX_RETRY_AFTER && t < MAX_RETRY_AFTER + Duration::from_secs(1));
    }

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryConfig::default();
        for _ in 0..200 {
            assert!(backoff(1, &p, None) <= Duration::from_millis(200));
            assert!(backoff(3, &p, None) <= Duration::from_millis(800));
            assert!(backoff(30, &p, None) <= Duration::from_secs(30));
        }
        // Jitter actually varies.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| backoff(5, &p, None)).collect();
        assert!(samples.len() > 40);
    }

    #[test]
    fn retry_after_is_a_capped_floor() {
        let p = RetryConfig::default();
        for _ in 0..100 {
            assert!(backoff(1, &p, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
            assert_eq!(
                backoff(1, &p, Some(Duration::from_secs(3600))),
                Duration::from_secs(60)
            );
        }
    }
}
