//! The relay's loop: pull a batch, route it, deliver it, record it, acknowledge it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Lane, RelayError, Shared};
use crate::config::SampleKey;
use crate::destination::nats::schema::decode_event_with_limits;
use crate::diag::Escaped;
use crate::dispatch::PropertyView;
use crate::dispatch::attempt::{Attempt, Items, Settle, Verdict, backoff};
use crate::event::Event;
use crate::routing::{ALWAYS_BIT, DEST_MASK};
use fetch::{Fetched, Fetcher, Held, keep, seq_of};

mod fetch;

/// How long a batch waits to fill once its first message arrived.
const LINGER: Duration = Duration::from_millis(20);

pub(crate) struct Bound {
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    markers: Option<Markers>,
}

/// The shared record of delivered (destination, event id) pairs: a key-value bucket.
struct Markers {
    kv: jetstream::kv::Store,
    prefix: String,
}

pub(crate) async fn bind(shared: &Shared) -> Result<Bound, RelayError> {
    let c = &shared.config;
    let addrs = c
        .connect
        .validate(&|k, m| crate::config::ConfigError::new(k, None, m))
        .map_err(|e| RelayError::Connect(format!("{e:?}")))?;
    let client = c
        .connect
        .connect(&addrs)
        .await
        .map_err(RelayError::Connect)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .backpressure_on_inflight(true)
        .build(client);
    let stream_err = |message: String| RelayError::Stream {
        stream: c.stream.clone(),
        message,
    };
    let mut stream = js.get_stream(&c.stream).await.map_err(|e| {
        stream_err(format!(
            "{e} (the apps' `nats` destination creates it at its first delivery, or create it \
             with `nats stream add`)"
        ))
    })?;
    let replicas = stream
        .info()
        .await
        .map_err(|e| stream_err(e.to_string()))?
        .config
        .num_replicas
        .max(1);
    let consumer_config = pull::Config {
        durable_name: Some(c.durable.clone()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: c.ack_wait,
        max_deliver: c.max_deliver,
        max_ack_pending: c.ack_pending(),
        filter_subject: c.filter_subject.clone().unwrap_or_default(),
        description: Some("tower-telemetry relay".to_owned()),
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&c.durable, consumer_config)
        .await
        .map_err(|e| RelayError::Consumer {
            durable: c.durable.clone(),
            message: e.to_string(),
        })?;
    let markers = if c.shared_dedupe {
        let bucket = format!("{}_{}_delivered", c.stream, c.durable).replace(['.', '>', '*'], "_");
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(jetstream::kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    max_age: c.dedupe_window,
                    num_replicas: replicas,
                    description: "tower-telemetry relay: delivered (destination, event id)".into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| RelayError::Consumer {
                    durable: c.durable.clone(),
                    message: format!("cannot create the dedupe bucket `{bucket}`: {e}"),
                })?,
        };
        Some(Markers {
            kv,
            prefix: format!("$KV.{bucket}."),
        })
    } else {
        None
    };
    Ok(Bound {
        js,
        consumer,
        markers,
    })
}

/// Remembers which (destination, event id) pairs were settled, for `window`.
struct Dedupe {
    window: Duration,
    seen: HashSet<(usize, Uuid)>,
    order: VecDeque<(Instant, usize, Uuid)>,
}

impl Dedupe {
    fn contains(&self, lane: usize, id: Uuid) -> bool {
        self.seen.contains(&(lane, id))
    }

    fn insert(&mut self, lane: usize, id: Uuid, now: Instant) {
        if self.seen.insert((lane, id)) {
            self.order.push_back((now, lane, id));
        }
        while let Some(&(t, l, i)) = self.order.front() {
            if now.duration_since(t) < self.window {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&(l, i));
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, bound: Bound) {
    let c = &shared.config;
    let mut dedupe = Dedupe {
        window: c.dedupe_window,
        seen: HashSet::new(),
        order: VecDeque::new(),
    };
    let held = Arc::new(Held::default());
    let _keeper = AbortOnDrop(tokio::spawn(keep(
        bound.js.clone(),
        held.clone(),
        c.ack_wait / 3,
    )));
    let mut fetcher = Fetcher::start(shared.clone(), &bound, held.clone());
    // The batch being delivered. The next one is collected and prepared meanwhile, and started
    // once this one is settled: a destination is handed one batch at a time, in order.
    let mut in_flight: Option<InFlight> = None;
    loop {
        let collected = collect(
            &shared,
            &fetcher.fetched,
            &mut in_flight,
            &mut dedupe,
            &held,
        );
        let batch = match collected.await {
            Ok(batch) => batch,
            Err(mut taken) => {
                // Stopping: no more pulls; what was taken and not started goes back at once
                // (for any relay), what was started is finished, recorded and acknowledged.
                taken.extend(fetcher.close().await);
                shared
                    .counters
                    .received
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                hand_back(&shared, &held, taken).await;
                break;
            }
        };
        let prepared = prepare(&shared, &bound, &dedupe, &held, batch).await;
        let mut settled = Vec::new();
        if let Some(mut done) = in_flight.take() {
            done.settle().await;
            settled = account(&shared, &mut dedupe, done);
        }
        if shared.stopping.load(Ordering::Acquire) {
            acknowledge(&shared, &held, settled).await;
            let ready = fetcher.close().await;
            shared
                .counters
                .received
                .fetch_add(ready.len() as u64, Ordering::Relaxed);
            let taken = prepared.items.into_iter().map(|it| it.msg);
            hand_back(&shared, &held, taken.chain(ready)).await;
            break;
        }
        // The destinations go on with the next batch while this one is acknowledged.
        in_flight = Some(start(&shared, &bound, &mut dedupe, prepared));
        acknowledge(&shared, &held, settled).await;
    }
    if let Some(mut done) = in_flight.take() {
        done.settle().await;
        finish(&shared, &mut dedupe, &held, done).await;
    }
    // Acknowledgements are only queued to the connection: see them written before it is
    // dropped, or they are lost and the messages redelivered after `ack_wait`.
    if let Err(e) = bound.js.client().flush().await {
        tracing::debug!(target: "tower_telemetry", error = %crate::diag::Escaped(&e.to_string()), "relay: cannot flush the acknowledgements");
    }
}

/// Waits until the batch in flight, if any, is settled (cancel-safe); never returns without one.
async fn settled(in_flight: &mut Option<InFlight>) {
    match in_flight {
        Some(f) => f.settle().await,
        None => std::future::pending().await,
    }
}

/// Takes the next batch: up to `batch_size` messages, waiting at most [`LINGER`] once the
/// first one arrived. Meanwhile finishes the batch in flight as soon as it is settled. `Err`
/// with the messages taken so far when the relay is stopping.
async fn collect(
    shared: &Shared,
    fetched: &Fetched,
    in_flight: &mut Option<InFlight>,
    dedupe: &mut Dedupe,
    held: &Held,
) -> Result<Vec<jetstream::Message>, Vec<jetstream::Message>> {
    let size = shared.config.batch_size;
    let mut batch = Vec::with_capacity(size);
    let mut linger: Option<Instant> = None;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return Err(batch);
        }
        let lacking = size - batch.len();
        if fetched.take(&mut batch, lacking) > 0 && linger.is_none() {
            linger = Some(Instant::now() + LINGER);
        }
        if batch.len() >= size {
            return Ok(batch);
        }
        tokio::select! {
            biased;
            _ = shared.stop.notified() => return Err(batch),
            _ = settled(in_flight) => {
                let done = in_flight.take().expect("a batch in flight");
                finish(shared, dedupe, held, done).await;
            }
            _ = fetched.added.notified() => {}
            _ = tokio::time::sleep_until(linger.unwrap_or_else(Instant::now)), if linger.is_some() => {
                return Ok(batch);
            }
        }
    }
}

/// Hands messages taken and not started back to the stream, to be redelivered at once.
async fn hand_back(
    shared: &Shared,
    held: &Held,
    messages: impl IntoIterator<Item = jetstream::Message>,
) {
    for msg in messages {
        held.release(seq_of(&msg));
        shared.counters.nacked.fetch_add(1, Ordering::Relaxed);
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
}

struct Item {
    msg: jetstream::Message,
    /// Its stream sequence.
    seq: Option<u64>,
    event: Arc<Event>,
    /// Destinations still to settle.
    pending: u32,
}

/// A batch decoded and routed, its redeliveries checked against the shared record.
struct Prepared {
    items: Vec<Item>,
}

/// A batch whose destinations are being delivered to, each by its own task.
struct InFlight {
    items: Vec<Item>,
    work: JoinSet<LaneDone>,
    done: Vec<LaneDone>,
}

/// One destination's part of a batch and how it settled.
type LaneDone = (usize, Vec<(usize, Arc<Event>)>, Outcome);

impl InFlight {
    /// Waits until every destination settled its part. Cancel-safe.
    async fn settle(&mut self) {
        while let Some(done) = self.work.join_next().await {
            if let Ok(done) = done {
                self.done.push(done);
            }
        }
    }
}

async fn prepare(
    shared: &Shared,
    bound: &Bound,
    dedupe: &Dedupe,
    held: &Held,
    batch: Vec<jetstream::Message>,
) -> Prepared {
    let counters = &shared.counters;
    counters
        .received
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let mut items: Vec<Item> = Vec::with_capacity(batch.len());
    for msg in batch {
        let info = msg.info().ok().map(|i| (i.delivered, i.stream_sequence));
        let redelivered = info.is_some_and(|(delivered, _)| delivered > 1);
        if redelivered {
            counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let seq = info.map(|(_, seq)| seq);
        let event = match decode_event_with_limits(&msg.payload, &shared.limits) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = shared.decode_warnings.hit() {
                    // The error may quote the message (cut and escaped); the subject is the
                    // publisher's: both escaped.
                    tracing::warn!(
                        target: "tower_telemetry",
                        subject = %Escaped(msg.subject.as_str()),
                        error = %Escaped(&e.to_string()),
                        refused_since_last_warning = n,
                        "relay: not a telemetry event within the limits; terminated"
                    );
                }
                let _ = msg.ack_with(AckKind::Term).await;
                held.release(seq);
                continue;
            }
        };
        let mut pending = route(shared, &event);
        let mut bits = pending;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut seen = dedupe.contains(i, event.id());
            if !seen && redelivered {
                if let Some(m) = &bound.markers {
                    seen = matches!(
                        m.kv.get(marker_key(&shared.lanes[i], event.id())).await,
                        Ok(Some(_))
                    );
                }
            }
            if seen {
                pending &= !(1 << i);
                shared.lanes[i]
                    .counters
                    .skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        items.push(Item {
            msg,
            seq,
            event,
            pending,
        });
    }
    Prepared { items }
}

/// Hands each destination its part of the batch.
fn start(shared: &Shared, bound: &Bound, dedupe: &mut Dedupe, prepared: Prepared) -> InFlight {
    let Prepared { mut items } = prepared;
    // The batch before this one settled after this one was prepared.
    for it in &mut items {
        let mut bits = it.pending;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if dedupe.contains(i, it.event.id()) {
                it.pending &= !(1 << i);
                shared.lanes[i]
                    .counters
                    .skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut work = JoinSet::new();
    for (i, lane) in shared.lanes.iter().enumerate() {
        let events: Vec<(usize, Arc<Event>)> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.pending & (1 << i) != 0)
            .map(|(k, it)| (k, it.event.clone()))
            .collect();
        if events.is_empty() {
            continue;
        }
        let destination = lane.destination.clone();
        let delivery = lane.delivery;
        let view = lane.view.clone();
        let recorder = bound.markers.as_ref().map(|m| Recorder {
            js: bound.js.clone(),
            prefix: format!("{}{}.", m.prefix, token(&lane.name)),
        });
        work.spawn(async move {
            let settled = deliver(
                &*destination,
                &events,
                &delivery,
                view.as_deref(),
                recorder.as_ref(),
            )
            .await;
            (i, events, settled)
        });
    }
    InFlight {
        items,
        work,
        done: Vec::new(),
    }
}

/// Counts a settled batch, remembers what was delivered, and acknowledges it.
async fn finish(shared: &Shared, dedupe: &mut Dedupe, held: &Held, in_flight: InFlight) {
    let items = account(shared, dedupe, in_flight);
    acknowledge(shared, held, items).await;
}

/// Counts a settled batch and remembers what was delivered; its messages, to acknowledge.
fn account(shared: &Shared, dedupe: &mut Dedupe, in_flight: InFlight) -> Vec<Item> {
    let InFlight {
        mut items, done, ..
    } = in_flight;
    let now = Instant::now();
    for (i, events, outcome) in done {
        let lane = &shared.lanes[i];
        lane.counters
            .retries
            .fetch_add(u64::from(outcome.retries), Ordering::Relaxed);
        for (j, (k, event)) in events.iter().enumerate() {
            let counter = match outcome.kinds[j] {
                Verdict::Delivered => &lane.counters.delivered,
                Verdict::Failed => &lane.counters.failed,
                Verdict::Discarded => &lane.counters.discarded,
                Verdict::GaveUp => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            items[*k].pending &= !(1 << i);
            dedupe.insert(i, event.id(), now);
        }
    }
    items
}

/// Acknowledges the messages whose every destination settled; hands the others back for a
/// later retry.
async fn acknowledge(shared: &Shared, held: &Held, items: Vec<Item>) {
    let counters = &shared.counters;
    let retry_in =
        backoff(2, &shared.lanes[0].delivery.retry, None).max(Duration::from_millis(500));
    for it in items {
        held.release(it.seq);
        if it.pending == 0 {
            if it.msg.ack().await.is_ok() {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            counters.nacked.fetch_add(1, Ordering::Relaxed);
            let _ = it.msg.ack_with(AckKind::Nak(Some(retry_in))).await;
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The destinations that keep `event`, after routing and sampling.
fn route(shared: &Shared, event: &Event) -> u32 {
    let router = &shared.router;
    let route = router.compute(event.name());
    let mut dests = route & DEST_MASK;
    // Identity operations: only where the destination has a counterpart; never sampled out.
    let identity = event.kind().is_identity();
    if identity {
        let mut unsupported = 0;
        for (i, lane) in shared.lanes.iter().enumerate() {
            if dests & (1 << i) != 0 && !lane.destination.supports(event.kind()) {
                unsupported |= 1 << i;
                lane.counters.unsupported.fetch_add(1, Ordering::Relaxed);
            }
        }
        dests &= !unsupported;
    }
    if dests == 0 || !router.samples || route & ALWAYS_BIT != 0 || identity {
        return dests;
    }
    let ctx = event.context();
    let h = |v: Option<&str>| v.map(|s| router.key_hash(s).max(1));
    let hash = match router.key {
        SampleKey::Event => None,
        SampleKey::Request => h(ctx.request_id()),
        SampleKey::User => h(ctx.user_id()).or_else(|| h(ctx.request_id())),
    }
    // No key: the event id is as random as the core's choice, and stable across redeliveries
    // (across relay restarts too when `sampling.hash_key` is set).
    .unwrap_or_else(|| router.key_hash(&event.id().to_string()));
    let keep = router.sample(route, hash);
    let mut out = dests & !keep;
    while out != 0 {
        let i = out.trailing_zeros() as usize;
        out &= out - 1;
        shared.lanes[i]
            .counters
            .sampled_out
            .fetch_add(1, Ordering::Relaxed);
    }
    keep
}

struct Outcome {
    /// Each event's verdict; [`Verdict::GaveUp`]: its message goes back for redelivery.
    kinds: Vec<Verdict>,
    retries: u32,
}

/// Delivers `events` in batches with the destination's timeout and retry policy, each event
/// as the destination's property view shows it, and records each batch's settled events in
/// the shared bucket before the next batch is sent: a relay that dies leaves at most the batch
/// in flight unrecorded.
async fn deliver(
    destination: &dyn crate::destination::Destination,
    events: &[(usize, Arc<Event>)],
    delivery: &crate::config::DeliveryConfig,
    view: Option<&PropertyView>,
    recorder: Option<&Recorder>,
) -> Outcome {
    let mut kinds = vec![Verdict::GaveUp; events.len()];
    let mut retries = 0;
    let size = delivery.batch_size.max(1);
    let attempt = Attempt::new(destination, delivery);
    for (chunk, kinds) in events.chunks(size).zip(kinds.chunks_mut(size)) {
        // The chunk as the destination sees it.
        let batch: Vec<Arc<Event>> = chunk.iter().map(|(_, e)| e.clone()).collect();
        let batch = match view {
            Some(v) => v.apply(batch),
            None => batch,
        };
        retries += attempt.run(&batch, &mut Verdicts(kinds)).await.retries;
        if let Some(r) = recorder {
            r.record(chunk, kinds).await;
        }
    }
    Outcome { kinds, retries }
}

/// Writes each event's verdict into its slot.
struct Verdicts<'a>(&'a mut [Verdict]);

impl Settle for Verdicts<'_> {
    fn settled(
        &mut self,
        verdict: Verdict,
        items: Items<'_>,
        _: Option<&crate::destination::DeliveryError>,
        _: u32,
    ) {
        for (i, _) in items.iter() {
            self.0[i] = verdict;
        }
    }
}

/// Where one destination's delivered event ids are recorded: the subject prefix of its keys
/// in the shared bucket.
struct Recorder {
    js: jetstream::Context,
    prefix: String,
}

impl Recorder {
    /// Records the settled events of one batch (publishes pipelined, then awaited).
    async fn record(&self, events: &[(usize, Arc<Event>)], kinds: &[Verdict]) {
        let mut acks = Vec::with_capacity(events.len());
        for ((_, e), kind) in events.iter().zip(kinds) {
            if *kind == Verdict::GaveUp {
                continue;
            }
            match self
                .js
                .publish(format!("{}{}", self.prefix, e.id()), bytes::Bytes::new())
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(err) => {
                    tracing::debug!(target: "tower_telemetry", error = %crate::diag::Escaped(&err.to_string()), "relay: cannot record a delivery");
                }
            }
        }
        for ack in acks {
            if let Err(err) = ack.await {
                tracing::debug!(target: "tower_telemetry", error = %crate::diag::Escaped(&err.to_string()), "relay: cannot record a delivery");
            }
        }
    }
}

fn marker_key(lane: &Lane, id: Uuid) -> String {
    format!("{}.{id}", token(&lane.name))
}

/// A destination name as one key token.
fn token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
