//! The durable spool (issue #24).
//!
//! In this process: events pass through the spool and leave it after their verdict; an outage
//! fills the spool beyond the memory queue; a restart delivers what an earlier handle left,
//! with the original ids and timestamps; the `max_bytes` bound drops by the overflow policy
//! and counts every drop; a folder in use is an error; an unusable path falls back to memory.
//!
//! With real processes (`examples/spool_app.rs`, spawned from `target/<profile>/examples`,
//! driven over HTTP): 20 000 events tracked while the Umami contract server is down, the
//! child killed (SIGKILL) or stopped gracefully, restarted, killed again mid-delivery, and
//! restarted: every event arrives, each once after a graceful stop and with at most one batch
//! again after a kill; the same into a real NATS JetStream stream, exactly 20 000 there; a
//! spool with a flipped byte and one truncated mid-record: the child starts, counts the
//! damage and delivers the rest, within a bounded time.
//!
//! Every wait is bounded and fails loudly.
#![cfg(feature = "spool")]

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tower_telemetry::config::{
    Config, DeliveryConfig, DestinationConfig, Overflow, RetryConfig, SpoolConfig, SpoolSync,
};
use tower_telemetry::destination::{BoxFuture, DeliveryError, Destination, MemoryDestination};
use tower_telemetry::{DestinationStats, Event, Telemetry, props};

/// The longest any single wait may take.
const BOUND: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh folder under the system's temporary directory, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(tag: &str) -> Folder {
        let dir = std::env::temp_dir().join(format!(
            "tower-telemetry-spool-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Folder(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A destination that is down (every send a retryable failure) until told otherwise, and
/// keeps what it was delivered.
#[derive(Clone, Default)]
struct Flaky {
    down: Arc<AtomicBool>,
    delivered: MemoryDestination,
}

impl Flaky {
    fn down() -> Flaky {
        let f = Flaky::default();
        f.down.store(true, Ordering::SeqCst);
        f
    }

    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Destination for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(DeliveryError::retryable("down"));
            }
            self.delivered.send(batch).await
        })
    }
}

fn patient() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_batch_size(100)
        .with_flush_interval(Duration::from_millis(20))
        .with_retry(
            RetryConfig::default()
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(50)),
        )
}

fn handle(
    destination: impl Destination,
    delivery: DeliveryConfig,
    spool: SpoolConfig,
) -> Telemetry {
    Telemetry::builder()
        .config(
            Config::default().with_destination(
                DestinationConfig::new("d")
                    .with_delivery(delivery)
                    .with_spool(spool),
            ),
        )
        .destination("d", destination)
        .build()
        .expect("the handle builds")
}

fn track(t: &Telemetry, from: u64, n: u64) {
    for i in from..from + n {
        t.track(
            "user.action",
            props! { "seq" => i, "pad" => "x".repeat(40) },
        );
    }
}

/// Waits until `done` holds for the destination's counters; panics with them past `BOUND`.
async fn wait_stats(t: &Telemetry, what: &str, done: impl Fn(&DestinationStats) -> bool) {
    let deadline = Instant::now() + BOUND;
    loop {
        let stats = t.stats().destinations[0].clone();
        if done(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `enqueued = delivered + failed + discarded + dropped_oldest + undelivered`.
fn balanced(s: &DestinationStats) {
    assert_eq!(
        s.enqueued,
        s.delivered + s.failed + s.discarded + s.dropped_oldest + s.undelivered,
        "{s:?}"
    );
}

fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.properties().get("seq").and_then(|v| v.as_u64()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pass_through_the_spool_and_leave_it_once_delivered() {
    let dir = Folder::new("pass");
    let memory = MemoryDestination::new();
    let t = handle(memory.clone(), patient(), SpoolConfig::new(dir.path()));
    track(&t, 0, 1000);
    assert!(t.flush(BOUND).await);
    let report = t.shutdown(BOUND).await;
    let s = report.destination("d").unwrap();
    assert_eq!(
        (s.delivered, s.spooled, s.replayed),
        (1000, 1000, 0),
        "{s:?}"
    );
    assert_eq!(
        (s.spool_bytes, s.spool_corrupt, s.spool_fallback),
        (0, 0, 0)
    );
    balanced(s);
    let mut got = seqs(&memory.events());
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(
        report.to_string().contains("spool: spooled 1000"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fills_the_spool_beyond_the_memory_queue_then_drains() {
    let dir = Folder::new("outage");
    let flaky = Flaky::down();
    let t = handle(
        flaky.clone(),
        patient().with_queue_capacity(200),
        SpoolConfig::new(dir.path()),
    );
    // 25 times the memory queue, in bursts the worker keeps up with.
    for burst in 0..50 {
        track(&t, burst * 100, 100);
        wait_stats(&t, "the burst spooled", |s| s.spooled >= (burst + 1) * 100).await;
    }
    let s = t.stats().destinations[0].clone();
    assert_eq!((s.enqueued, s.dropped_queue_full), (5000, 0), "{s:?}");
    assert!(s.queued < 200 && s.spool_bytes > 5000 * 40, "{s:?}");
    flaky.up();
    wait_stats(&t, "all delivered", |s| s.delivered == 5000).await;
    let report = t.shutdown(BOUND).await;
    let s = report.destination("d").unwrap();
    assert_eq!((s.spool_bytes, s.undelivered), (0, 0), "{s:?}");
    balanced(s);
    let got: HashSet<u64> = seqs(&flaky.delivered.events()).into_iter().collect();
    assert_eq!(got.len(), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_an_outage_drains_the_spool_gives_its_disk_back() {
    let dir = Folder::new("compact");
    let file = dir.path().join("spool.redb");
    let size = || std::fs::metadata(&file).map_or(0, |m| m.len());
    let flaky = Flaky::down();
    let t = handle(
        flaky.clone(),
        patient().with_queue_capacity(200),
        SpoolConfig::new(dir.path()).with_sync(SpoolSync::Never),
    );
    // ≈ 12 MB of records (1 KB each) held through the outage.
    let pad = "x".repeat(1000);
    for burst in 0..120 {
        for i in burst * 100..(burst + 1) * 100 {
            t.track("user.action", props! { "seq" => i, "pad" => pad });
        }
        wait_stats(&t, "the burst spooled", |s| s.spooled >= (burst + 1) * 100).await;
    }
    let peak = size();
    let held = t.stats().destinations[0].spool_bytes;
    assert!(held > 12_000_000 && peak > held, "{held} bytes in {peak}");
    flaky.up();
    wait_stats(&t, "all delivered and removed", |s| {
        s.delivered == 12_000 && s.spool_bytes == 0
    })
    .await;
    // redb keeps freed pages for reuse: without compaction the file would stay at its peak.
    let after = size();
    assert!(
        after < 8 << 20 && after < peak / 4,
        "the file: {peak} at the peak, {after} once drained"
    );
    let report = t.shutdown(BOUND).await;
    let s = report.destination("d").unwrap();
    assert_eq!(
        (s.delivered, s.undelivered, s.spool_corrupt),
        (12_000, 0, 0),
        "{s:?}"
    );
    balanced(s);
    let got: HashSet<u64> = seqs(&flaky.delivered.events()).into_iter().collect();
    assert_eq!(got.len(), 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_what_the_last_handle_left_first_with_its_ids() {
    let dir = Folder::new("restart");
    let flaky = Flaky::down();
    let t = handle(flaky, patient(), SpoolConfig::new(dir.path()));
    track(&t, 0, 700);
    wait_stats(&t, "spooled", |s| s.spooled == 700).await;
    let report = t.shutdown(Duration::from_millis(200)).await;
    assert!(report.timed_out);
    assert_eq!(report.destination("d").unwrap().undelivered, 700);
    drop(t);

    // The aborted worker releases the folder once its task is dropped (a moment later).
    let memory = MemoryDestination::new();
    let deadline = Instant::now() + BOUND;
    let t = loop {
        let built = Telemetry::builder()
            .config(
                Config::default().with_destination(
                    DestinationConfig::new("d")
                        .with_delivery(patient())
                        .with_spool(SpoolConfig::new(dir.path())),
                ),
            )
            .destination("d", memory.clone())
            .build();
        match built {
            Ok(t) => break t,
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("in use"), "{e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the folder was never released: {e}"),
        }
    };
    wait_stats(&t, "replayed", |s| s.replayed == 700 && s.delivered == 700).await;
    track(&t, 700, 10);
    let report = t.shutdown(BOUND).await;
    let s = report.destination("d").unwrap();
    assert_eq!(
        (s.enqueued, s.replayed, s.delivered),
        (710, 700, 710),
        "{s:?}"
    );
    balanced(s);
    let events = memory.events();
    assert_eq!(
        seqs(&events[..700]),
        (0..700).collect::<Vec<_>>(),
        "replayed first, in order"
    );
    // The same ids and timestamps as when tracked: UUIDv7s whose millisecond is the event's.
    for e in &events {
        let (secs, nanos) = e.id().get_timestamp().unwrap().to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert_eq!(ms, e.timestamp_millis());
    }
    let ids: HashSet<_> = events.iter().map(|e| e.id()).collect();
    assert_eq!(ids.len(), 710);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_bytes_the_overflow_policy_drops_and_counts_everything() {
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let dir = Folder::new("bound");
        let flaky = Flaky::down();
        let t = handle(
            flaky.clone(),
            patient().with_queue_capacity(100).with_overflow(overflow),
            SpoolConfig::new(dir.path()).with_max_bytes(64 << 10),
        );
        // Bursts the worker takes in before the next (so the memory queue never overflows
        // under drop-oldest: whatever is dropped, the spool's bound dropped it).
        for burst in 0..30 {
            track(&t, burst * 100, 100);
            wait_stats(&t, "the burst taken in", |s| s.queued == 0).await;
        }
        let s = t.stats().destinations[0].clone();
        assert!(s.spool_bytes <= 64 << 10, "{s:?}");
        match overflow {
            Overflow::DropNewest => assert!(s.dropped_queue_full > 0, "{s:?}"),
            _ => assert!(s.dropped_oldest > 0 && s.dropped_queue_full == 0, "{s:?}"),
        }
        flaky.up();
        wait_stats(&t, "drained", |s| s.undelivered == 0).await;
        let report = t.shutdown(BOUND).await;
        let s = report.destination("d").unwrap();
        balanced(s);
        assert_eq!(
            s.enqueued + s.dropped_queue_full,
            3000,
            "{overflow:?}: {s:?}"
        );
        assert_eq!(
            flaky.delivered.len() as u64,
            s.delivered,
            "{overflow:?}: delivered once each"
        );
        assert_eq!(s.delivered + s.dropped_oldest + s.dropped_queue_full, 3000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_in_use_is_an_error_when_the_second_handle_is_built() {
    let dir = Folder::new("lock");
    let _first = handle(
        MemoryDestination::new(),
        patient(),
        SpoolConfig::new(dir.path()),
    );
    let err =
        Telemetry::builder()
            .config(Config::default().with_destination(
                DestinationConfig::new("d").with_spool(SpoolConfig::new(dir.path())),
            ))
            .destination("d", MemoryDestination::new())
            .build()
            .expect_err("refused");
    let e = &err.errors()[0];
    assert_eq!(e.path(), "telemetry.destinations.d.spool.path");
    assert!(
        e.to_string().contains("in use by another process (pid "),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_path_falls_back_to_memory_and_counts() {
    // A file where the folder should be: the spool cannot be made.
    let dir = Folder::new("unusable");
    std::fs::write(dir.path(), b"not a folder").unwrap();
    let memory = MemoryDestination::new();
    let t = handle(memory.clone(), patient(), SpoolConfig::new(dir.path()));
    track(&t, 0, 300);
    let report = t.shutdown(BOUND).await;
    let s = report.destination("d").unwrap();
    assert_eq!(
        (s.delivered, s.spooled, s.spool_fallback),
        (300, 0, 300),
        "{s:?}"
    );
    balanced(s);
    let _ = std::fs::remove_file(dir.path());
}

#[test]
fn the_yaml_keys_are_read_and_checked_with_their_lines() {
    let yaml = "telemetry:\n  destinations:\n    m:\n      type: memory\n      spool:\n        path: /tmp/x\n        max_bytes: 256MiB\n        sync: always\n    n:\n      type: memory\n      spool: /tmp/y\n";
    let config = Config::from_yaml_str_with_env(yaml, |_| None).unwrap();
    let m = config.destination("m").unwrap().spool().unwrap();
    assert_eq!(
        (m.path(), m.max_bytes(), m.sync()),
        (Path::new("/tmp/x"), 256 << 20, SpoolSync::Always)
    );
    let n = config.destination("n").unwrap().spool().unwrap();
    assert_eq!(n.sync(), SpoolSync::Interval(Duration::from_secs(1)));
    let yaml = "telemetry:\n  destinations:\n    m:\n      type: memory\n      spool:\n        max_bytes: 1KiB\n        sync: sometimes\n        sync_interval: 0s\n        colour: red\n";
    let errors = Config::from_yaml_str_with_env(yaml, |_| None).unwrap_err();
    let found: Vec<_> = errors
        .errors()
        .iter()
        .map(|e| (e.path().to_owned(), e.line()))
        .collect();
    let p = |k: &str| format!("telemetry.destinations.m.spool.{k}");
    assert_eq!(
        found,
        [
            (p("max_bytes"), Some(6)),
            (p("sync"), Some(7)),
            (p("sync_interval"), Some(8)),
            (p("colour"), Some(9)),
        ],
        "{errors}"
    );
    let yaml = "telemetry:\n  destinations:\n    m:\n      type: memory\n      spool:\n        sync: never\n";
    let errors = Config::from_yaml_str_with_env(yaml, |_| None).unwrap_err();
    assert_eq!(
        errors.errors()[0].path(),
        "telemetry.destinations.m.spool.path"
    );
}

// ---------------------------------------------------------------------------------------------
// Real processes: examples/spool_app.rs as a child, driven over HTTP, killed and restarted.

use support::http::{HttpClient, client, send};

/// The example app next to this test binary (`target/<profile>/examples/spool_app`): `cargo
/// test` builds the examples with the tests.
fn app_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile.join("examples").join("spool_app");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --features spool,full --example spool_app` \
         (a plain `cargo test --all-features` builds it)",
        bin.display()
    );
    // `cargo test --test spool` alone does not rebuild examples: say so when it may be stale.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(app), Some(test)) = (modified(&bin), modified(&exe)) {
        if app < test {
            eprintln!(
                "note: {} is older than this test; if the library changed since, rebuild it \
                 (`cargo build --features spool,full --example spool_app`)",
                bin.display()
            );
        }
    }
    bin
}

/// A running `spool_app`.
struct App {
    child: std::process::Child,
    url: String,
    http: HttpClient,
    output: Arc<std::sync::Mutex<String>>,
}

impl App {
    /// Starts it with `config` and waits until it serves.
    fn start(config: &Path) -> App {
        use std::io::BufRead;
        let mut child = std::process::Command::new(app_binary())
            .args([
                "--config",
                &config.display().to_string(),
                "--shutdown-timeout",
                "1",
            ])
            .env("RUST_LOG", "tower_telemetry=warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spool_app starts");
        let stdout = child.stdout.take().unwrap();
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = output.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let first = rx
            .recv_timeout(BOUND)
            .expect("spool_app said where it listens");
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        App {
            child,
            url,
            http: client(),
            output,
        }
    }

    async fn post(&self, path: &str) -> String {
        let req = http::Request::post(format!("{}{path}", self.url))
            .body(http_body_util::Empty::new())
            .unwrap();
        let (res, body) = send(&self.http, req).await;
        assert!(res.status().is_success(), "{path}: {body}");
        body
    }

    /// Tracks `count` events with `seq` from `from`, over HTTP, in requests of 500 (half the
    /// memory queue), each taken into the spool before the next is sent: a steady load the
    /// queue holds, so that nothing is dropped and the spool holds it all.
    async fn track(&self, from: u64, count: u64) {
        let spooled = n(&self.stats().await, "spooled");
        let mut at = from;
        while at < from + count {
            let k = (from + count - at).min(500);
            self.post(&format!("/track?from={at}&n={k}")).await;
            at += k;
            let want = spooled + (at - from);
            self.wait_stats("the request's events spooled", |s| n(s, "spooled") >= want)
                .await;
        }
        let s = self.stats().await;
        assert_eq!(n(&s, "dropped_queue_full"), 0, "{s}");
    }

    /// The counters of its first destination.
    async fn stats(&self) -> serde_json::Value {
        let req = http::Request::get(format!("{}/stats", self.url))
            .body(http_body_util::Empty::new())
            .unwrap();
        let (_, body) = send(&self.http, req).await;
        let all: serde_json::Value = serde_json::from_str(&body).unwrap();
        all[0].clone()
    }

    async fn wait_stats(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + BOUND;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: never happened; {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and reaped.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A graceful stop: `/stop`, then its exit within the bound. Its shutdown report.
    async fn stop(mut self) -> String {
        self.post("/stop").await;
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "spool_app exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "spool_app did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The reader thread sees the end of its output once the process is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.output.lock().unwrap().clone();
            if out.contains("telemetry shutdown") || Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The spool's part of a destination's configuration, and delivery settings that keep
/// retrying through the outages of these tests.
fn spool_yaml(dir: &Path) -> String {
    format!(
        "      queue_capacity: 1000\n      batch_size: 100\n      concurrency: 1\n      flush_interval: 20ms\n      timeout: 5s\n      retry: {{ initial_backoff: 20ms, max_backoff: 200ms }}\n      spool:\n        path: {}\n        sync: interval\n",
        dir.join("spool").display()
    )
}

#[cfg(feature = "umami")]
fn umami_config(dir: &Path, addr: std::net::SocketAddr) -> PathBuf {
    let yaml = format!(
        "telemetry:\n  destinations:\n    umami:\n      url: http://{addr}\n      website_id: {}\n{}",
        support::umami_server::WEBSITE_ID,
        spool_yaml(dir)
    );
    let path = dir.join("config.yaml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The `seq` of every event the Umami server stored.
#[cfg(feature = "umami")]
fn stored_seqs(server: &support::umami_server::UmamiServer) -> Vec<u64> {
    server
        .events()
        .iter()
        .filter_map(|e| e.datum("seq").and_then(serde_json::Value::as_u64))
        .collect()
}

/// 20 000 events tracked while Umami is down; the child killed (SIGKILL); restarted against
/// a live server and killed again while delivering; restarted: all 20 000 arrive, at most one
/// batch (100) twice, the one in flight at the second kill.
#[cfg(feature = "umami")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umami_killed_twice_delivers_all_with_at_most_one_batch_again() {
    const N: u64 = 20_000;
    let dir = Folder::new("umami-kill");
    let addr = support::umami_server::reserve_addr();
    let config = umami_config(dir.path(), addr);

    let app = App::start(&config);
    app.track(0, N).await;
    app.wait_stats("all spooled", |s| n(s, "spooled") == N)
        .await;
    app.kill();

    let server = support::umami_server::UmamiServer::start_on(addr).await;
    let app = App::start(&config);
    app.wait_stats("replayed", |s| n(s, "replayed") == N).await;
    assert!(
        server.wait_for_events(N as usize / 4, BOUND).await,
        "the restarted child delivers"
    );
    app.kill();
    let before = server.events().len();
    assert!(before < N as usize, "killed mid-delivery ({before} stored)");

    let started = Instant::now();
    let app = App::start(&config);
    let all = server
        .wait_until(BOUND, |s| {
            stored_seqs(s).into_iter().collect::<HashSet<_>>().len() == N as usize
        })
        .await;
    let seqs = stored_seqs(&server);
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert!(all, "{} of {N} arrived", distinct.len());
    assert!(
        seqs.len() as u64 <= N + 100,
        "{} stored: more than one batch again",
        seqs.len()
    );
    app.wait_stats("settled", |s| n(s, "undelivered") == 0)
        .await;
    let report = app.stop().await;
    eprintln!(
        "umami, killed twice: {} stored for {N} ({} again); the last start delivered its share in {:?}\n{report}",
        seqs.len(),
        seqs.len() as u64 - N,
        started.elapsed()
    );
}

/// The same with graceful stops: each event stored exactly once.
#[cfg(feature = "umami")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umami_stopped_gracefully_twice_delivers_each_event_once() {
    const N: u64 = 20_000;
    let dir = Folder::new("umami-stop");
    let addr = support::umami_server::reserve_addr();
    let config = umami_config(dir.path(), addr);

    let app = App::start(&config);
    app.track(0, N).await;
    app.wait_stats("all spooled", |s| n(s, "spooled") == N)
        .await;
    let report = app.stop().await;
    assert!(report.contains("undelivered 20000"), "{report}");

    let server = support::umami_server::UmamiServer::start_on(addr).await;
    let app = App::start(&config);
    assert!(server.wait_for_events(N as usize / 4, BOUND).await);
    app.stop().await;

    let app = App::start(&config);
    assert!(server.wait_for_events(N as usize, BOUND).await);
    app.wait_stats("settled", |s| n(s, "undelivered") == 0)
        .await;
    app.stop().await;
    let seqs = stored_seqs(&server);
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!((seqs.len(), distinct.len()), (N as usize, N as usize));
}

/// Messages in a JetStream stream, read until the server answers.
#[cfg(feature = "nats")]
async fn stream_messages(url: &str, name: &str) -> u64 {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(client) = async_nats::connect(url).await {
            let js = async_nats::jetstream::new(client);
            if let Ok(mut s) = js.get_stream(name).await {
                if let Ok(info) = s.info().await {
                    return info.state.messages;
                }
            }
        }
        assert!(Instant::now() < deadline, "stream {name} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same through the real NATS destination: 20 000 tracked while the server is down, the
/// child killed, restarted against the server and killed mid-delivery, restarted: exactly
/// 20 000 messages in the stream (JetStream drops the resent batch by `Nats-Msg-Id`).
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_twice_holds_exactly_every_event_once() {
    use support::nats_server::{self, NatsServer};
    const N: u64 = 20_000;
    let bin = nats_server::binary();
    let mut server = NatsServer::start(&bin).await;
    let url = server.url();
    server.kill(); // down while the first child tracks
    let dir = Folder::new("nats-kill");
    std::fs::create_dir_all(dir.path()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "telemetry:\n  destinations:\n    nats:\n      servers: [{url}]\n      subject: spooltest.{{category}}\n      stream: {{ name: SPOOLTEST, subjects: [spooltest.>] }}\n      connect_timeout: 1s\n      publish_timeout: 2s\n{}",
            spool_yaml(dir.path())
        ),
    )
    .unwrap();

    let app = App::start(&config);
    app.track(0, N).await;
    app.kill();

    server.restart().await;
    let app = App::start(&config);
    let deadline = Instant::now() + BOUND;
    while stream_messages(&url, "SPOOLTEST").await < N / 4 {
        assert!(Instant::now() < deadline, "the restarted child delivers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill();

    let app = App::start(&config);
    app.wait_stats("settled", |s| {
        n(s, "replayed") > 0 && n(s, "undelivered") == 0
    })
    .await;
    let stats = app.stats().await;
    let report = app.stop().await;
    let stored = stream_messages(&url, "SPOOLTEST").await;
    eprintln!("nats, killed twice: {stored} in the stream for {N}\n{stats}\n{report}");
    assert_eq!(stored, N);
}

/// Tracks `count` events into a spool whose Umami server is down, and stops gracefully:
/// everything is left in the spool.
#[cfg(feature = "umami")]
async fn spool_of(dir: &Path, addr: std::net::SocketAddr, count: u64) -> PathBuf {
    let config = umami_config(dir, addr);
    let app = App::start(&config);
    app.track(0, count).await;
    let report = app.stop().await;
    assert!(report.contains(&format!("undelivered {count}")), "{report}");
    config
}

/// Starts the child on a damaged spool, against a live server: it must answer at once, count
/// the damage and deliver the rest, all within a bounded time. The final counters.
#[cfg(feature = "umami")]
async fn start_damaged(
    config: &Path,
    server: &support::umami_server::UmamiServer,
    count: u64,
) -> serde_json::Value {
    let started = Instant::now();
    let app = App::start(config);
    let up = started.elapsed();
    app.wait_stats("every record delivered or counted damaged", |s| {
        n(s, "undelivered") == 0 && n(s, "delivered") + n(s, "spool_corrupt") == count
    })
    .await;
    let stats = app.stats().await;
    let distinct: HashSet<u64> = stored_seqs(server).into_iter().collect();
    assert_eq!(distinct.len() as u64, n(&stats, "delivered"), "{stats}");
    assert_eq!(stored_seqs(server).len(), distinct.len(), "each once");
    eprintln!(
        "damaged spool: serving after {up:?}, settled after {:?}: {stats}",
        started.elapsed()
    );
    app.stop().await;
    stats
}

#[cfg(feature = "umami")]
fn spool_file(dir: &Path) -> PathBuf {
    dir.join("spool").join("spool.redb")
}

/// The offset of event `seq`'s marker in the spool's file.
#[cfg(feature = "umami")]
fn marker_at(bytes: &[u8], seq: u64) -> usize {
    let marker = format!("seq-{seq:08}");
    bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap_or_else(|| panic!("{marker} is not in the spool"))
}

#[cfg(feature = "umami")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_costs_one_record_and_the_rest_is_delivered() {
    const N: u64 = 2000;
    let dir = Folder::new("flipped");
    let addr = support::umami_server::reserve_addr();
    let config = spool_of(dir.path(), addr, N).await;
    let file = spool_file(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let at = marker_at(&bytes, 1234);
    bytes[at + 6] ^= 0x01; // "seq-00001234" → "seq-01001234": valid JSON, wrong checksum
    std::fs::write(&file, &bytes).unwrap();

    let server = support::umami_server::UmamiServer::start_on(addr).await;
    let stats = start_damaged(&config, &server, N).await;
    assert_eq!(
        (n(&stats, "spool_corrupt"), n(&stats, "failed")),
        (1, 1),
        "{stats}"
    );
    assert!(!stored_seqs(&server).contains(&1234));
}

#[cfg(feature = "umami")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_truncated_mid_record_is_salvaged_and_the_loss_counted() {
    const N: u64 = 2000;
    let dir = Folder::new("truncated");
    let addr = support::umami_server::reserve_addr();
    let config = spool_of(dir.path(), addr, N).await;
    let file = spool_file(dir.path());
    let bytes = std::fs::read(&file).unwrap();
    let at = marker_at(&bytes, 1000);
    std::fs::write(&file, &bytes[..at + 4]).unwrap();

    let server = support::umami_server::UmamiServer::start_on(addr).await;
    let stats = start_damaged(&config, &server, N).await;
    assert!(n(&stats, "spool_corrupt") > 0, "{stats}");
    assert!(n(&stats, "delivered") > 0, "the rest is delivered: {stats}");
    let moved: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(moved.len(), 1, "the damaged file is kept aside");
}

/// A relay keeps what it has not delivered in its stream: a spool there is a configuration
/// error, with its key path and line.
#[cfg(feature = "nats")]
#[test]
fn a_relay_refuses_a_spool() {
    use tower_telemetry::relay::{Relay, RelayConfig};
    let yaml = "relay:\n  servers: [nats://127.0.0.1:4222]\n  stream: T\ntelemetry:\n  destinations:\n    m:\n      type: memory\n      spool: /tmp/never-made\n";
    let (relay, config) = RelayConfig::from_yaml_str_with_env(yaml, |_| None).unwrap();
    let err = Relay::builder(relay)
        .config(config)
        .build()
        .expect_err("refused");
    let e = &err.errors()[0];
    assert_eq!(
        (e.path(), e.line()),
        ("telemetry.destinations.m.spool", Some(8))
    );
    assert!(!Path::new("/tmp/never-made").exists(), "nothing opened");
}
