//! The attempt loop against a scripted destination, on a paused clock.

use std::collections::VecDeque;
use std::sync::Mutex;

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

    fn retrying(&mut self, attempt: u32, items: Items<'_>, wait: Duration, error: &DeliveryError) {
        self.retrying
            .push((attempt, items.len(), wait, error.message().to_owned()));
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
    let script =
        Script::new((1..=5).map(|i| Answer(Err(DeliveryError::retryable(format!("down {i}"))))));
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
    let busy = || DeliveryError::retryable("slow down").with_retry_after(Duration::from_secs(5));
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

#[tokio::test(start_paused = true)]
async fn by_default_retries_last_the_time_budget_not_a_count() {
    // Down for 5 minutes: far more than the 5 attempts retries used to stop at.
    struct Down(Instant);
    impl Destination for Down {
        fn name(&self) -> &str {
            "down"
        }
        fn send<'a>(&'a self, _: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
            let up = self.0.elapsed() >= Duration::from_secs(300);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err(DeliveryError::retryable("refused"))
                }
            })
        }
    }
    let down = Down(Instant::now());
    let policy = DeliveryConfig::default();
    let mut log = Log::default();
    let tally = Attempt::new(&down, &policy).run(&batch(2), &mut log).await;
    assert_eq!(log.verdicts(2), [Delivered; 2]);
    assert!(tally.retries > 5, "{tally:?}");
    assert!(down.0.elapsed() >= Duration::from_secs(300));
    // Taken within one backoff ceiling (30 s) of recovery.
    assert!(
        down.0.elapsed() <= Duration::from_secs(330),
        "{:?}",
        down.0.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_next_attempt_would_begin_past_the_budget() {
    let script = Script::new((0..1000).map(|_| Answer(Err(DeliveryError::retryable("down")))));
    let policy = DeliveryConfig::default().with_retry(
        RetryConfig::default()
            .with_max_elapsed(Duration::from_secs(10))
            .with_initial_backoff(Duration::from_millis(500))
            .with_max_backoff(Duration::from_secs(2)),
    );
    let start = Instant::now();
    let (tally, log) = run(&script, &policy, 2).await;
    assert_eq!(log.verdicts(2), [GaveUp; 2]);
    let times = script.call_times();
    assert!(times.len() > 5, "{times:?}");
    assert!(
        times.iter().all(|t| *t <= Duration::from_secs(10)),
        "{times:?}"
    );
    // Given up at once, not after a wait that would overrun the budget.
    assert_eq!(start.elapsed(), *times.last().unwrap());
    assert_eq!(tally.retries as usize, times.len() - 1);

    // A zero budget: no retry.
    let script = Script::new([Answer(Err(DeliveryError::retryable("down")))]);
    let policy = DeliveryConfig::default()
        .with_retry(RetryConfig::default().with_max_elapsed(Duration::ZERO));
    let (tally, _) = run(&script, &policy, 1).await;
    assert_eq!((tally.gave_up, tally.retries), (1, 0));
}

/// Panics on its first call, in `send` itself or in the future it returns.
struct Panics {
    in_future: bool,
}

impl Destination for Panics {
    fn name(&self) -> &str {
        "panics"
    }

    fn send<'a>(&'a self, _: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        if !self.in_future {
            panic!("boom in send");
        }
        Box::pin(async {
            tokio::task::yield_now().await;
            std::panic::panic_any(format!("boom in {}", "the future"))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_destination_fails_the_batch_at_once() {
    for (in_future, message) in [(false, "boom in send"), (true, "boom in the future")] {
        let mut log = Log::default();
        let tally = Attempt::new(&Panics { in_future }, &policy(5))
            .run(&batch(3), &mut log)
            .await;
        assert_eq!(log.verdicts(3), [Failed; 3]);
        assert_eq!(
            (tally.failed, tally.retries),
            (3, 0),
            "a panic is not retried"
        );
        let error = log.settled[0].2.clone().unwrap();
        assert_eq!(error, format!("the destination panicked: {message}"));
    }
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
