//! The `nats` destination and the relay against real `nats-server` processes (tests/support):
//! exactly-once publishing by event id, a leader killed while publishing, two relays sharing a
//! durable consumer with one killed mid-way or stopped gracefully mid-way, each destination's
//! property filters applied by the relay, a relay outliving a server restart, and a quorum
//! lost then restored.
//!
//! Each test starts its own servers on free loopback ports and finishes within 30 s. The
//! measured rates are printed (`cargo test --all-features --test nats -- --nocapture`).
#![cfg(feature = "nats")]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use support::nats_server::{self, NatsCluster, NatsServer};
#[cfg(feature = "umami")]
use support::umami_server;
use tower_telemetry::relay::{Relay, RelayConfig};
use tower_telemetry::{
    Event, Telemetry,
    config::{Config, DeliveryConfig, DestinationConfig, RetryConfig},
    destination::nats::{NatsConfig, NatsDestination, NatsStreamConfig},
    destination::{BoxFuture, DeliveryError, Destination, MemoryDestination},
    props,
};

/// The longest any single wait in these tests may take.
const BOUND: Duration = Duration::from_secs(25);

fn stream(name: &str, replicas: usize) -> NatsStreamConfig {
    NatsStreamConfig::default()
        .with_name(name)
        .with_replicas(replicas)
        .with_subjects([format!("{}.>", name.to_lowercase())])
}

fn nats_config(urls: Vec<String>, stream_name: &str, replicas: usize) -> NatsConfig {
    NatsConfig::new(urls)
        .with_subject(format!("{}.{{category}}", stream_name.to_lowercase()))
        .with_stream(stream(stream_name, replicas))
        .with_publish_timeout(Duration::from_secs(1))
        .with_connect_timeout(Duration::from_secs(2))
}

/// Delivery settings that ride out an outage of up to ~20 s without giving up.
fn patient(queue: usize) -> DeliveryConfig {
    DeliveryConfig::default()
        .with_queue_capacity(queue)
        .with_batch_size(256)
        .with_concurrency(4)
        .with_flush_interval(Duration::from_millis(5))
        .with_timeout(Duration::from_secs(20))
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(200)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_millis(500)),
        )
}

fn app(nats: NatsDestination, delivery: DeliveryConfig) -> (Telemetry, MemoryDestination) {
    let memory = MemoryDestination::new();
    let telemetry = Telemetry::builder()
        .config(
            Config::default()
                .with_destination(DestinationConfig::new("nats").with_delivery(delivery))
                .with_destination(DestinationConfig::new("emitted")),
        )
        .destination("nats", nats)
        .destination("emitted", memory.clone())
        .build()
        .unwrap();
    (telemetry, memory)
}

async fn js(urls: &[String]) -> jetstream::Context {
    let client = async_nats::connect(urls).await.unwrap();
    jetstream::new(client)
}

/// Messages in the stream, read until the cluster answers.
async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(mut s) = js.get_stream(name).await {
            if let Ok(info) = s.info().await {
                return info.state.messages;
            }
        }
        assert!(Instant::now() < deadline, "stream {name} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `Nats-Msg-Id` of every message in the stream.
async fn stream_ids(js: &jetstream::Context, name: &str) -> Vec<String> {
    let stream = js.get_stream(name).await.unwrap();
    let last = stream.cached_info().state.last_sequence;
    let mut ids = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        ids.push(id);
    }
    ids
}

/// Calls `setup` until the stream is usable (a fresh cluster elects its leaders first).
async fn setup(nats: &NatsDestination) {
    let deadline = Instant::now() + BOUND;
    loop {
        match nats.setup().await {
            Ok(()) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("stream setup failed: {e}"),
        }
    }
}

fn events(n: usize, name: &str) -> Vec<Arc<Event>> {
    (0..n)
        .map(|i| Arc::new(Event::new(name.to_owned(), props! { "seq" => i })))
        .collect()
}

fn seq_of(e: &Event) -> u64 {
    e.properties().get("seq").and_then(|v| v.as_u64()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_stores_each_event_once_and_relays_fast() {
    let bin = nats_server::binary();
    let node = NatsServer::start(&bin).await;
    let urls = vec![node.url()];

    // 1 000 events, then 100 of them again with the same ids: stored once.
    let nats = NatsDestination::new(nats_config(urls.clone(), "ONCE", 1)).unwrap();
    setup(&nats).await;
    let batch = events(1000, "user.click");
    for chunk in batch.chunks(250) {
        nats.send(chunk).await.unwrap();
    }
    nats.send(&batch[..100]).await.unwrap();
    let js = js(&urls).await;
    assert_eq!(stream_messages(&js, "ONCE").await, 1000);
    let stats = nats.stats();
    assert_eq!((stats.published, stats.duplicates), (1000, 100));

    // A misconfigured existing stream is a clear, permanent error.
    let wrong = NatsDestination::new(nats_config(urls.clone(), "ONCE", 3)).unwrap();
    let err = wrong.setup().await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message().contains("1 replica(s)"), "{err}");

    // Sustained rate, app → JetStream (R1): track as fast as possible, then flush.
    const N: usize = 20_000;
    let nats = NatsDestination::new(nats_config(urls.clone(), "RATE", 1)).unwrap();
    setup(&nats).await;
    let (telemetry, _) = app(nats, patient(N));
    let started = Instant::now();
    for i in 0..N {
        telemetry.track("generation.step", props! { "seq" => i });
    }
    assert!(telemetry.flush(BOUND).await, "flush timed out");
    let took = started.elapsed();
    assert_eq!(stream_messages(&js, "RATE").await, N as u64);
    println!(
        "RATE app -> JetStream R1: {N} events in {took:?} = {:.0} events/s",
        N as f64 / took.as_secs_f64()
    );
    telemetry.shutdown(Duration::from_secs(5)).await;

    // Sustained rate, JetStream → relay → memory destination.
    let memory = MemoryDestination::new();
    let relay = Relay::builder(
        RelayConfig::new(urls.clone())
            .with_stream("RATE")
            .with_durable("bench")
            .with_batch_size(500),
    )
    .destination("memory", memory.clone())
    .build()
    .unwrap();
    let started = Instant::now();
    let running = relay.start().await.unwrap();
    wait_for(BOUND, || memory.len() >= N).await;
    let took = started.elapsed();
    println!(
        "RATE JetStream -> relay -> memory: {N} events in {took:?} = {:.0} events/s",
        N as f64 / took.as_secs_f64()
    );
    let stats = running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(memory.len(), N);
    assert_eq!(stats.acked, N as u64);
}

async fn wait_for(timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server name of the stream's leader.
async fn leader(js: &jetstream::Context, name: &str) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(mut s) = js.get_stream(name).await {
            if let Ok(info) = s.info().await {
                if let Some(l) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    return l;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader for {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_leader_killed_while_publishing() {
    let bin = nats_server::binary();
    let mut cluster = NatsCluster::start(&bin, 3).await;
    let urls = cluster.urls();
    let nats = NatsDestination::new(nats_config(urls.clone(), "FAILOVER", 3)).unwrap();
    setup(&nats).await;
    let watcher = js(&urls).await;
    let old_leader = leader(&watcher, "FAILOVER").await;

    let (telemetry, emitted) = app(nats.clone(), patient(10_000));
    // 2 000 events at a steady 1 000/s; the leader is killed after 500.
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..2000u64 {
        if i == 500 {
            cluster.kill(&old_leader);
        }
        let t = Instant::now();
        telemetry.track("payment.completed", props! { "seq" => i });
        slowest = slowest.max(t.elapsed());
        let due = started + Duration::from_millis(i + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    assert!(
        telemetry.flush(BOUND).await,
        "not all events were acknowledged"
    );
    let report = telemetry.shutdown(Duration::from_secs(5)).await;
    let d = report.destination("nats").unwrap();
    assert_eq!((d.delivered, d.dropped_queue_full, d.failed), (2000, 0, 0));

    let survivors: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(NatsServer::url)
        .collect();
    let js = js(&survivors).await;
    assert_eq!(stream_messages(&js, "FAILOVER").await, 2000);
    let stored: Vec<String> = stream_ids(&js, "FAILOVER").await;
    let unique: HashSet<&String> = stored.iter().collect();
    let sent: HashSet<String> = emitted
        .events()
        .iter()
        .map(|e| e.id().to_string())
        .collect();
    assert_eq!(unique.len(), 2000, "duplicates in the stream");
    assert_eq!(unique.into_iter().cloned().collect::<HashSet<_>>(), sent);
    // Tracking is a queue push: it never waited on NATS, not even during the election.
    assert!(
        slowest < Duration::from_millis(20),
        "track() took {slowest:?}"
    );
    let new_leader = leader(&js, "FAILOVER").await;
    println!(
        "FAILOVER leader {old_leader} killed, {new_leader} took over; republished {} events (acked as duplicates: {}); slowest track() {slowest:?}",
        nats.stats().republished,
        nats.stats().duplicates
    );
}

/// Waits until the consumer `durable` has nothing pending or unacknowledged.
async fn all_acknowledged(
    urls: &[String],
    stream: &str,
    durable: &str,
    relays: &[&tower_telemetry::relay::RunningRelay],
) {
    let js = js(urls).await;
    let deadline = Instant::now() + BOUND;
    loop {
        let mut c: jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_consumer(durable)
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not everything was acknowledged: {info:?}\nrelays: {:?}",
            relays.iter().map(|r| r.stats()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two relays on one durable consumer, fed from one stream of numbered events, delivering to
/// one memory destination and one Umami server.
#[cfg(feature = "umami")]
struct SharedWork {
    _node: NatsServer,
    urls: Vec<String>,
    stream: &'static str,
    umami: umami_server::UmamiServer,
    memory: MemoryDestination,
}

/// The relay takes 500 messages at a time; each destination takes them 100 at a time.
#[cfg(feature = "umami")]
const RELAY_BATCH: usize = 500;
#[cfg(feature = "umami")]
const DEST_BATCH: usize = 100;

#[cfg(feature = "umami")]
impl SharedWork {
    /// A node with `n` events `user.action` numbered by `seq` in stream `stream`.
    async fn start(bin: &std::path::Path, stream: &'static str, n: usize) -> SharedWork {
        let node = NatsServer::start(bin).await;
        let urls = vec![node.url()];
        let nats = NatsDestination::new(nats_config(urls.clone(), stream, 1)).unwrap();
        setup(&nats).await;
        let batch = events(n, "user.action");
        for chunk in batch.chunks(500) {
            nats.send(chunk).await.unwrap();
        }
        SharedWork {
            _node: node,
            urls,
            stream,
            umami: umami_server::UmamiServer::start().await,
            memory: MemoryDestination::new(),
        }
    }

    /// A relay of the durable consumer `relays`, started.
    async fn relay(&self) -> tower_telemetry::relay::RunningRelay {
        use tower_telemetry::destination::umami::{UmamiConfig, UmamiDestination};
        let umami =
            UmamiDestination::new(UmamiConfig::new(self.umami.url(), umami_server::WEBSITE_ID))
                .unwrap();
        Relay::builder(
            RelayConfig::new(self.urls.clone())
                .with_stream(self.stream)
                .with_durable("relays")
                .with_ack_wait(Duration::from_secs(2))
                .with_batch_size(RELAY_BATCH),
        )
        .config(
            Config::default()
                .with_destination(
                    DestinationConfig::new("memory")
                        .with_delivery(DeliveryConfig::default().with_batch_size(DEST_BATCH)),
                )
                .with_destination(
                    DestinationConfig::new("umami").with_delivery(
                        DeliveryConfig::default()
                            .with_batch_size(DEST_BATCH)
                            .with_timeout(Duration::from_secs(5)),
                    ),
                ),
        )
        .destination("memory", self.memory.clone())
        .destination("umami", umami)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
    }

    /// Waits until the consumer has nothing pending or unacknowledged.
    async fn all_acknowledged(&self, survivor: &tower_telemetry::relay::RunningRelay) {
        all_acknowledged(&self.urls, self.stream, "relays", &[survivor]).await;
    }

    /// How many times each `seq` reached the memory destination and the Umami server.
    fn received(&self, n: usize) -> (Vec<usize>, Vec<usize>) {
        let mut memory = vec![0; n];
        for e in self.memory.events() {
            memory[seq_of(&e) as usize] += 1;
        }
        let mut umami = vec![0; n];
        for e in self.umami.events() {
            let seq = e.datum("seq").and_then(|v| v.as_u64()).unwrap();
            umami[seq as usize] += 1;
        }
        (memory, umami)
    }
}

/// Per destination, the events not sent again because it already had them.
fn skipped(stats: &tower_telemetry::relay::RelayStats) -> Vec<(String, u64)> {
    stats
        .destinations
        .iter()
        .map(|d| (d.name.clone(), d.skipped_duplicates))
        .collect()
}

#[cfg(feature = "umami")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_and_one_dies() {
    let bin = nats_server::binary();
    const N: usize = 5000;
    let work = SharedWork::start(&bin, "SHARED", N).await;
    let a = work.relay().await;
    let b = work.relay().await;
    // Kill `a` at a moment unrelated to its own deliveries: when `b` has done a share.
    wait_for(BOUND, || b.stats().acked >= (N / 5) as u64).await;
    let a_stats = a.abort();
    println!(
        "SHARED relay a killed after acking {} messages",
        a_stats.acked
    );
    // Every message acknowledged (by b, for a's unacknowledged ones after ack_wait).
    work.all_acknowledged(&b).await;
    let b_stats = b.shutdown(Duration::from_secs(5)).await;

    let (memory, umami) = work.received(N);
    assert!(memory.iter().all(|&c| c > 0), "lost events in memory");
    assert!(umami.iter().all(|&c| c > 0), "lost events in Umami");
    // Redeliveries never duplicate: only the batch `a` was in the middle of handing over to a
    // destination when it died (sent, not yet recorded) can arrive twice — no relay can know
    // whether the destination took it. Each batch is recorded before the next is sent, so that
    // is at most one destination batch (`batch_size`, 100) per destination, not the relay's 500.
    let memory_dups = memory.iter().sum::<usize>() - N;
    assert!(
        memory_dups <= DEST_BATCH,
        "{memory_dups} duplicates in memory: more than the one batch of {DEST_BATCH} in flight"
    );
    let umami_dups = umami.iter().sum::<usize>() - N;
    assert!(
        umami_dups <= DEST_BATCH,
        "{umami_dups} duplicates in Umami: more than the one batch of {DEST_BATCH} in flight"
    );
    assert!(a_stats.acked > 0 && b_stats.acked > 0, "both relays worked");
    println!(
        "SHARED relay a acked {}, relay b acked {}; duplicates from the kill: memory {memory_dups}, umami {umami_dups} (redelivered to b: {}, skipped as already delivered: {:?})",
        a_stats.acked,
        b_stats.acked,
        b_stats.redelivered,
        skipped(&b_stats)
    );
}

#[cfg(feature = "umami")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_and_one_stops_gracefully() {
    let bin = nats_server::binary();
    const N: usize = 4000;
    let started = Instant::now();
    let work = SharedWork::start(&bin, "HANDOVER", N).await;
    let a = work.relay().await;
    let b = work.relay().await;
    // Stop `a` in the middle of the work: when `b` has done a share.
    wait_for(BOUND, || b.stats().acked >= (N / 5) as u64).await;
    let in_hand = a.stats();
    let stopping = Instant::now();
    let a_stats = a.shutdown(Duration::from_secs(10)).await;
    let stop_took = stopping.elapsed();
    assert!(
        stop_took < Duration::from_secs(10),
        "relay a did not stop within its timeout: it was aborted, not stopped"
    );
    work.all_acknowledged(&b).await;
    let b_stats = b.shutdown(Duration::from_secs(5)).await;

    // A graceful stop finishes what it started and hands back the rest: every event reaches
    // every destination exactly once.
    let (memory, umami) = work.received(N);
    let once = vec![1; N];
    let wrong = |counts: &[usize]| {
        counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 1)
            .map(|(seq, c)| (seq, *c))
            .take(10)
            .collect::<Vec<_>>()
    };
    assert!(
        memory == once,
        "memory: (seq, times) not exactly once: {:?}",
        wrong(&memory)
    );
    assert!(
        umami == once,
        "Umami: (seq, times) not exactly once: {:?}",
        wrong(&umami)
    );
    // And without the shared record's help: every message `a` finished was acknowledged
    // (none came back to `b` as already delivered).
    assert!(
        b_stats
            .destinations
            .iter()
            .all(|d| d.skipped_duplicates == 0),
        "relay a's acknowledgements were lost: {:?}",
        skipped(&b_stats)
    );
    // What `a` took and did not start was handed back at once: `b` got it as a redelivery
    // then, none of it after `ack_wait`.
    assert_eq!(
        b_stats.redelivered, a_stats.nacked,
        "relay b got redeliveries relay a did not hand back: left to ack_wait"
    );
    assert!(a_stats.acked > 0 && b_stats.acked > 0, "both relays worked");
    println!(
        "HANDOVER relay a stopped in {stop_took:?} after acking {} messages ({} when told to stop), handing back {}; relay b acked {} (redelivered to b: {}, skipped as already delivered: {:?}); {:?} in all",
        a_stats.acked,
        in_hand.acked,
        a_stats.nacked,
        b_stats.acked,
        b_stats.redelivered,
        skipped(&b_stats),
        started.elapsed()
    );
}

/// A memory destination that takes `delay` to accept each batch.
struct Slow {
    memory: MemoryDestination,
    delay: Duration,
}

impl Destination for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.memory.send(batch).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_slower_than_ack_wait_are_not_redelivered_meanwhile() {
    let bin = nats_server::binary();
    // Each relay batch takes 5 destination batches of 500 ms: longer than `ack_wait`. What
    // a relay has fetched and not started yet waits that long too, and must not be
    // redelivered to the other relay meanwhile.
    const N: usize = 2000;
    let node = NatsServer::start(&bin).await;
    let urls = vec![node.url()];
    let nats = NatsDestination::new(nats_config(urls.clone(), "SLOW", 1)).unwrap();
    setup(&nats).await;
    let sent = events(N, "user.action");
    for chunk in sent.chunks(500) {
        nats.send(chunk).await.unwrap();
    }
    let memory = MemoryDestination::new();
    let relay = || {
        Relay::builder(
            RelayConfig::new(urls.clone())
                .with_stream("SLOW")
                .with_durable("slow")
                .with_ack_wait(Duration::from_secs(2))
                .with_batch_size(500),
        )
        .config(
            Config::default().with_destination(
                DestinationConfig::new("slow")
                    .with_delivery(DeliveryConfig::default().with_batch_size(100)),
            ),
        )
        .destination(
            "slow",
            Slow {
                memory: memory.clone(),
                delay: Duration::from_millis(500),
            },
        )
        .build()
        .unwrap()
        .start()
    };
    let a = relay().await.unwrap();
    let b = relay().await.unwrap();
    all_acknowledged(&urls, "SLOW", "slow", &[&a, &b]).await;
    let (a, b) = (
        a.shutdown(Duration::from_secs(5)).await,
        b.shutdown(Duration::from_secs(5)).await,
    );
    let mut times = vec![0; N];
    for e in memory.events() {
        times[seq_of(&e) as usize] += 1;
    }
    let wrong: Vec<(usize, usize)> = times
        .iter()
        .enumerate()
        .filter(|(_, t)| **t != 1)
        .map(|(seq, t)| (seq, *t))
        .take(10)
        .collect();
    assert!(wrong.is_empty(), "(seq, times) not exactly once: {wrong:?}");
    assert_eq!(
        (a.redelivered, b.redelivered),
        (0, 0),
        "messages redelivered while a relay held them"
    );
    println!(
        "SLOW relay a acked {}, relay b acked {}, none redelivered",
        a.acked, b.acked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_gives_each_destination_its_own_view_of_the_properties() {
    // A bad glob is a configuration error with its path, as it is for a `Telemetry` handle.
    let err = Relay::builder(RelayConfig::new(["nats://127.0.0.1:4222"]))
        .config(
            Config::default().with_destination(
                DestinationConfig::new("trimmed")
                    .with_kind("memory")
                    .with_drop_properties(["email", "a b"]),
            ),
        )
        .build()
        .unwrap_err();
    assert!(
        err.errors()
            .iter()
            .any(|e| e.path() == "telemetry.destinations.trimmed.drop_properties[1]"),
        "{err:?}"
    );

    let bin = nats_server::binary();
    let node = NatsServer::start(&bin).await;
    let urls = vec![node.url()];
    let nats = NatsDestination::new(nats_config(urls.clone(), "VIEW", 1)).unwrap();
    setup(&nats).await;
    const N: usize = 20;
    let sent: Vec<Arc<Event>> = (0..N)
        .map(|i| {
            Arc::new(Event::new(
                "user.signup",
                props! { "seq" => i, "email" => "ada@example.com", "plan" => "pro" },
            ))
        })
        .collect();
    nats.send(&sent).await.unwrap();

    let relay = Relay::builder(
        RelayConfig::new(urls)
            .with_stream("VIEW")
            .with_durable("view"),
    )
    .config(
        Config::default()
            .with_destination(DestinationConfig::new("everything").with_kind("memory"))
            .with_destination(
                DestinationConfig::new("trimmed")
                    .with_kind("memory")
                    .with_drop_properties(["email"]),
            )
            .with_destination(
                DestinationConfig::new("narrow")
                    .with_kind("memory")
                    .with_allow_properties(["pl*"]),
            ),
    )
    .build()
    .unwrap();
    let memory = |name: &str| relay.memory(name).unwrap();
    let (everything, trimmed, narrow) = (memory("everything"), memory("trimmed"), memory("narrow"));
    let running = relay.start().await.unwrap();
    wait_for(BOUND, || {
        everything.len() >= N && trimmed.len() >= N && narrow.len() >= N
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;

    let ids: HashSet<String> = sent.iter().map(|e| e.id().to_string()).collect();
    let check = |m: &MemoryDestination, expected: &[&str]| {
        let events = m.events();
        assert_eq!(events.len(), N);
        for e in &events {
            let mut keys: Vec<String> = e.properties().iter().map(|(k, _)| k.to_string()).collect();
            keys.sort();
            assert_eq!(keys, expected, "{e:?}");
        }
        let got: HashSet<String> = events.iter().map(|e| e.id().to_string()).collect();
        assert_eq!(got, ids, "the same events, by id");
    };
    check(&everything, &["email", "plan", "seq"]);
    check(&trimmed, &["plan", "seq"]);
    check(&narrow, &["plan"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pulls_again_after_the_server_restarts() {
    let bin = nats_server::binary();
    let mut node = NatsServer::start(&bin).await;
    let urls = vec![node.url()];
    let nats = NatsDestination::new(nats_config(urls.clone(), "RESTART", 1)).unwrap();
    setup(&nats).await;
    let batch = events(200, "user.action");
    nats.send(&batch[..100]).await.unwrap();
    let memory = MemoryDestination::new();
    let relay = Relay::builder(
        RelayConfig::new(urls)
            .with_stream("RESTART")
            .with_durable("restart"),
    )
    .destination("memory", memory.clone())
    .build()
    .unwrap()
    .start()
    .await
    .unwrap();
    wait_for(BOUND, || memory.len() >= 100).await;

    // A restarted server forgets the relay's waiting pull requests; the relay asks again.
    // (Stopped with SIGTERM, so that it writes its state out: killed with SIGKILL right after
    // the relay's consumer was created, it can come back without the last acknowledgements
    // and messages, which no relay can make up for. A killed server ends no request: the
    // relay then notices them silent, after 3 heartbeats.)
    let restarted = Instant::now();
    node.restart_gracefully().await;
    setup(&nats).await;
    let deadline = Instant::now() + BOUND;
    while let Err(e) = nats.send(&batch[100..]).await {
        assert!(
            Instant::now() < deadline,
            "cannot publish after the restart: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(BOUND, || memory.len() >= 200).await;
    let took = restarted.elapsed();
    let stats = relay.shutdown(Duration::from_secs(5)).await;
    // Nothing lost. (Acknowledgements and markers on their way when the server stopped are
    // lost with the connection: the batch in flight may come again, so duplicates are not
    // asserted here.)
    let seqs: HashSet<u64> = memory.events().iter().map(|e| seq_of(e)).collect();
    assert_eq!(seqs.len(), 200, "lost events");
    println!(
        "RESTART relay delivered again {took:?} after the server restart began (received {} for 200 events, skipped as already delivered {:?}, duplicates {})",
        stats.received,
        skipped(&stats),
        memory.len() - 200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_then_restored() {
    let bin = nats_server::binary();
    let mut cluster = NatsCluster::start(&bin, 3).await;
    let urls = cluster.urls();
    let nats = NatsDestination::new(
        nats_config(urls[..1].to_vec(), "QUORUM", 3).with_failover_wait(Duration::from_millis(500)),
    )
    .unwrap();
    setup(&nats).await;

    // Sustained rate, app → JetStream (R3), while all is well.
    const N: usize = 10_000;
    {
        let rate = NatsDestination::new(nats_config(urls.clone(), "RATE3", 3)).unwrap();
        setup(&rate).await;
        let (telemetry, _) = app(rate, patient(N));
        let started = Instant::now();
        for i in 0..N {
            telemetry.track("generation.step", props! { "seq" => i });
        }
        assert!(telemetry.flush(BOUND).await);
        let took = started.elapsed();
        println!(
            "RATE app -> JetStream R3: {N} events in {took:?} = {:.0} events/s",
            N as f64 / took.as_secs_f64()
        );
        telemetry.shutdown(Duration::from_secs(2)).await;
    }

    // Two of three nodes gone: no quorum, no acknowledgements.
    const CAPACITY: usize = 300;
    let (telemetry, _) = app(
        nats,
        patient(CAPACITY).with_concurrency(1).with_batch_size(50),
    );
    cluster.kill("n2");
    cluster.kill("n3");
    for i in 0..1000u64 {
        telemetry.track("error.raised", props! { "seq" => i });
    }
    let during = telemetry.stats();
    let d = during.destination("nats").unwrap();
    assert!(d.dropped_queue_full > 0, "{d:?}");
    assert_eq!(d.enqueued + d.dropped_queue_full, 1000);
    assert_eq!(d.delivered, 0);

    cluster.restart("n2").await;
    cluster.restart("n3").await;
    assert!(
        telemetry.flush(BOUND).await,
        "queued events not delivered after recovery"
    );
    let report = telemetry.shutdown(Duration::from_secs(5)).await;
    let d = report.destination("nats").unwrap();
    assert_eq!(d.failed, 0);
    assert_eq!(d.delivered, d.enqueued);
    assert!(d.delivered as usize >= CAPACITY, "{d:?}");
    let js = js(&urls).await;
    assert_eq!(stream_messages(&js, "QUORUM").await, d.delivered);
    println!(
        "QUORUM lost: {} delivered after recovery, {} dropped (queue capacity {CAPACITY})",
        d.delivered, d.dropped_queue_full
    );
}

/// The relay distrusts its stream (issue #21, item 4): a 1 MB message of tiny objects (87 MB
/// once decoded, before), a timestamp with a newline and an ESC (a forged log line, before)
/// and a deep nesting are refused and terminated, the one warning escaped (and the others
/// rate-limited); the sound event after them is delivered.
#[tokio::test]
async fn relay_refuses_hostile_messages_and_warns_escaped() {
    let logs = support::logs::Logs::default();
    let _logs = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let bin = nats_server::binary();
    let node = NatsServer::start(&bin).await;
    let urls = vec![node.url()];
    let nats = NatsDestination::new(nats_config(urls.clone(), "HOSTILE", 1)).unwrap();
    setup(&nats).await;

    let event = |timestamp: &str, properties: &str| {
        format!(
            r#"{{"v":1,"id":"0190b6d2-6f0a-7c3e-9a52-0b7d2f1e4c11","name":"user.x","timestamp":"{timestamp}","properties":{properties},"context":{{}}}}"#
        )
    };
    let forged = event(r"2026-01-01T00:00:00Z\n\u001b[31mWARN forged line", "{}");
    let tiny = vec![r#"{"a":0}"#; 124_000].join(",");
    let megabyte = event("2026-01-01T00:00:00Z", &format!(r#"{{"p":[{tiny}]}}"#));
    assert!(megabyte.len() > 990_000 && megabyte.len() < 1_000_000);
    let deep = event(
        "2026-01-01T00:00:00Z",
        &format!(r#"{{"d":{}1{}}}"#, "[".repeat(100), "]".repeat(100)),
    );
    let js = js(&urls).await;
    for payload in [forged, megabyte, deep] {
        js.publish("hostile.user", payload.into_bytes().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    nats.send(&events(1, "user.ok")).await.unwrap();

    let relay = Relay::builder(
        RelayConfig::new(urls)
            .with_stream("HOSTILE")
            .with_durable("hostile"),
    )
    .config(
        Config::default().with_destination(DestinationConfig::new("memory").with_kind("memory")),
    )
    .build()
    .unwrap();
    let memory = relay.memory("memory").unwrap();
    let running = relay.start().await.unwrap();
    wait_for(BOUND, || {
        !memory.is_empty() && running.stats().rejected >= 3
    })
    .await;
    let stats = running.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.rejected, stats.acked), (3, 1), "{stats:?}");
    assert_eq!(memory.events()[0].name(), "user.ok");

    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not a telemetry event"))
        .collect();
    assert_eq!(warnings.len(), 1, "rate-limited to one: {text}");
    assert!(
        warnings[0].contains(r"\n\u{1b}[31mWARN forged line"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        !text.lines().any(|l| l.starts_with("WARN forged")),
        "{text}"
    );
}
