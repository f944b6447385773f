//! The relay's fetcher: pull requests to the durable consumer, read as messages arrive, and
//! the record of the messages the relay holds until it acknowledges them.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream::{self, consumer::pull};
use futures_core::Stream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{AbortOnDrop, Bound, Shared};

/// How long a pull request waits on the server for messages before it expires.
const EXPIRES: Duration = Duration::from_secs(5);
/// How often the server tells that a waiting pull request is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// When stopping, a pull request whose messages stopped coming for this long is taken as
/// having brought all it will before it is cancelled.
const QUIET: Duration = Duration::from_millis(50);

/// The messages the relay holds, from fetched to acknowledged, by stream sequence, with the
/// subject that tells JetStream one is still being worked on. One task tells it for all of
/// them every third of `ack_wait` ([`keep`]), so none is redelivered while the relay has it;
/// a copy JetStream redelivers anyway (the relay stalled that long) is recognised and
/// dropped: the message in hand is acknowledged for both.
#[derive(Default)]
pub(super) struct Held(Mutex<HashMap<u64, async_nats::Subject>>);

impl Held {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, async_nats::Subject>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `msg`; `false` if a message with its stream sequence is held already.
    fn hold(&self, msg: &jetstream::Message) -> bool {
        let (Some(seq), Some(reply)) = (seq_of(msg), msg.reply.clone()) else {
            return true;
        };
        match self.map().entry(seq) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(reply);
                true
            }
        }
    }

    pub(super) fn release(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.map().remove(&seq);
        }
    }
}

/// A message's stream sequence.
pub(super) fn seq_of(msg: &jetstream::Message) -> Option<u64> {
    msg.info().ok().map(|i| i.stream_sequence)
}

/// Tells JetStream, every `every`, that the messages held are being worked on.
pub(super) async fn keep(js: jetstream::Context, held: Arc<Held>, every: Duration) {
    let client = js.client();
    loop {
        tokio::time::sleep(every).await;
        let replies: Vec<_> = held.map().values().cloned().collect();
        for reply in replies {
            // A plain publish: a JetStream publish would wait for an acknowledgement that
            // never comes, holding one of the context's in-flight permits meanwhile.
            let _ = client.publish(reply, "+WPI".into()).await;
        }
    }
}

/// Messages fetched ahead of the relay's batches, between the fetcher task and the relay.
#[derive(Default)]
pub(super) struct Fetched {
    queue: Mutex<VecDeque<jetstream::Message>>,
    /// Messages were added.
    pub(super) added: Notify,
    /// Messages were taken.
    taken: Notify,
    /// The fetcher is to stop.
    closing: Notify,
}

impl Fetched {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<jetstream::Message>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, msg: jetstream::Message) {
        self.queue().push_back(msg);
        self.added.notify_one();
    }

    /// Moves up to `n` messages into `into`; how many.
    pub(super) fn take(&self, into: &mut Vec<jetstream::Message>, n: usize) -> usize {
        let mut queue = self.queue();
        let n = n.min(queue.len());
        into.extend(queue.drain(..n));
        drop(queue);
        if n > 0 {
            self.taken.notify_one();
        }
        n
    }
}

/// The relay's fetcher: a task that pulls about one batch and a half ahead of the relay, each
/// pull request on its own inbox, all read as soon as messages arrive, each message [`Held`]
/// from then on.
pub(super) struct Fetcher {
    pub(super) fetched: Arc<Fetched>,
    task: Option<AbortOnDrop>,
}

impl Fetcher {
    pub(super) fn start(shared: Arc<Shared>, bound: &Bound, held: Arc<Held>) -> Fetcher {
        let fetched = Arc::new(Fetched::default());
        let task = tokio::spawn(fetch(
            shared,
            bound.js.clone(),
            bound.consumer.clone(),
            held,
            fetched.clone(),
        ));
        Fetcher {
            fetched,
            task: Some(AbortOnDrop(task)),
        }
    }

    /// Stops fetching; every message fetched and not taken, to hand back.
    pub(super) async fn close(&mut self) -> Vec<jetstream::Message> {
        if let Some(mut task) = self.task.take() {
            self.fetched.closing.notify_one();
            let _ = (&mut task.0).await;
        }
        self.fetched.queue().drain(..).collect()
    }
}

async fn fetch(
    shared: Arc<Shared>,
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    held: Arc<Held>,
    fetched: Arc<Fetched>,
) {
    let size = shared.config.batch_size;
    let take = |msg: jetstream::Message| {
        if held.hold(&msg) {
            fetched.push(msg);
        } else {
            shared.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "tower_telemetry", seq = seq_of(&msg), "relay: a copy of a message in hand; dropped");
        }
    };
    // Every request is read as soon as its messages come: JetStream may send to any of them
    // (a redelivery to a later one, say), and a message not read is not held.
    let mut requests: Vec<Request> = Vec::new();
    let mut pause = Duration::from_millis(100);
    'fetch: loop {
        let queued = fetched.queue().len();
        let asked: usize = requests.iter().map(|r| r.left).sum();
        if queued + asked <= size / 2 {
            match Request::send(&js, &consumer, size).await {
                Ok(r) => requests.push(r),
                Err(e) => {
                    tracing::warn!(target: "tower_telemetry", error = %crate::diag::Escaped(&e.to_string()), "relay: cannot pull from the consumer; retrying");
                    tokio::select! {
                        biased;
                        _ = fetched.closing.notified() => break 'fetch,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        tokio::select! {
            biased;
            _ = fetched.closing.notified() => break 'fetch,
            (i, got) = poll_fn(|cx| poll_any(&mut requests, cx, &js)) => match got {
                Ok(msg) => {
                    if requests[i].left == 0 {
                        requests.swap_remove(i);
                    }
                    pause = Duration::from_millis(100);
                    take(msg);
                }
                Err(why) => {
                    requests.swap_remove(i);
                    if let Some(why) = why {
                        tracing::debug!(target: "tower_telemetry", reason = %crate::diag::Escaped(&why.to_string()), "relay: pull request ended");
                        tokio::select! {
                            biased;
                            _ = fetched.closing.notified() => break 'fetch,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            },
            _ = fetched.taken.notified() => {}
        }
    }
    // What the requests bring (the server sends a backlog at once) is taken in while it keeps
    // coming; then they are cancelled.
    while !requests.is_empty() {
        let got = poll_fn(|cx| poll_any(&mut requests, cx, &js));
        match tokio::time::timeout(QUIET, got).await {
            Ok((i, Ok(msg))) => {
                if requests[i].left == 0 {
                    requests.swap_remove(i);
                }
                take(msg);
            }
            Ok((i, Err(_))) => {
                requests.swap_remove(i);
            }
            Err(_) => break,
        }
    }
    for mut r in requests {
        let _ = r.sub.unsubscribe().await;
    }
}

/// The next message of any request, with the request's index, or the end of one. Pending
/// forever without requests.
fn poll_any(
    requests: &mut [Request],
    cx: &mut std::task::Context<'_>,
    js: &jetstream::Context,
) -> Poll<(usize, Result<jetstream::Message, Option<String>>)> {
    for (i, r) in requests.iter_mut().enumerate() {
        if let Poll::Ready(got) = r.poll_next(cx, js) {
            return Poll::Ready((i, got));
        }
    }
    Poll::Pending
}

/// A pull request and the inbox its messages come to.
struct Request {
    sub: async_nats::Subscriber,
    /// Messages the server may still send for it.
    left: usize,
    /// Nothing came by then, not even a heartbeat: the request is presumed lost (the server
    /// restarted, the connection was re-established...).
    silence: Pin<Box<tokio::time::Sleep>>,
}

impl Request {
    async fn send(
        js: &jetstream::Context,
        consumer: &jetstream::consumer::Consumer<pull::Config>,
        n: usize,
    ) -> Result<Request, String> {
        let client = js.client();
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        let config = pull::BatchConfig {
            batch: n,
            expires: Some(EXPIRES),
            idle_heartbeat: HEARTBEAT,
            ..Default::default()
        };
        consumer
            .request_batch(config, inbox.into())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Request {
            sub,
            left: n,
            silence: Box::pin(tokio::time::sleep(3 * HEARTBEAT)),
        })
    }

    /// The next message, or `Err` when the request is over: everything sent or expired
    /// (`None`), or ended for the reason given.
    fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
        js: &jetstream::Context,
    ) -> Poll<Result<jetstream::Message, Option<String>>> {
        while let Poll::Ready(got) = Pin::new(&mut self.sub).poll_next(cx) {
            let Some(message) = got else {
                return Poll::Ready(Err(Some("the subscription closed".into())));
            };
            self.silence.as_mut().reset(Instant::now() + 3 * HEARTBEAT);
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.left = self.left.saturating_sub(1);
                    return Poll::Ready(Ok(jetstream::Message {
                        message,
                        context: js.clone(),
                    }));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                Some(StatusCode::TIMEOUT) => return Poll::Ready(Err(None)),
                Some(status) => {
                    return Poll::Ready(Err(Some(format!(
                        "{status} {}",
                        message.description.as_deref().unwrap_or_default()
                    ))));
                }
            }
        }
        match self.silence.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Some("the pull request went silent".into()))),
            Poll::Pending => Poll::Pending,
        }
    }
}
