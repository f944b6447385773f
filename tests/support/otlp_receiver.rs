//! An OTLP/HTTP logs receiver written in Python (`otlp_receiver.py` beside this file), which
//! decodes requests with OpenTelemetry's official `opentelemetry-proto` package (pinned in
//! [`python::PINS`](super::python::PINS)) — independent of the crate's encoder.
//!
//! It runs as a child process on a free loopback port, is killed when dropped (and exits by
//! itself when its stdin closes or after 10 minutes), and reports what it received as JSON
//! lines, read here into [`requests`](OtlpReceiver::requests) and
//! [`records`](OtlpReceiver::records). Answers are scripted when it starts:
//!
//! ```ignore
//! let rx = OtlpReceiver::start(json!([{"status": 503, "headers": {"Retry-After": "1"}}])).await;
//! // ... post to rx.url() + "/v1/logs"
//! assert!(rx.wait_for_stored(50, WAIT).await);
//! ```

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::Notify;

use super::python;

/// The longest the receiver may take to start (the first start imports protobuf).
const START: Duration = Duration::from_secs(60);

/// A running receiver.
pub struct OtlpReceiver {
    port: u16,
    /// Whether each record is reported (else only requests).
    reports_records: bool,
    lines: Arc<Mutex<Vec<Value>>>,
    changed: Arc<Notify>,
    // Held: the receiver exits when its stdin closes.
    _stdin: ChildStdin,
    _child: Child,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl OtlpReceiver {
    /// Starts one answering `script` (a JSON list of answers, see `otlp_receiver.py`), then 200;
    /// reporting every record.
    pub async fn start(script: Value) -> OtlpReceiver {
        Self::spawn(script, true).await
    }

    /// Starts one reporting only requests (their record counts and ids), for throughput runs.
    pub async fn start_summary() -> OtlpReceiver {
        Self::spawn(Value::Array(Vec::new()), false).await
    }

    async fn spawn(script: Value, records: bool) -> OtlpReceiver {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/otlp_receiver.py"
        );
        let mut cmd = python::command();
        cmd.arg(path)
            .env("OTLP_RECEIVER_SCRIPT", script.to_string())
            .env(
                "OTLP_RECEIVER_REPORT",
                if records { "records" } else { "summary" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the OTLP receiver: {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(START, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the OTLP receiver did not start within {START:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the OTLP receiver exited before listening"));
        let hello: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(hello["type"], "listening", "{first}");
        let port = hello["port"].as_u64().unwrap() as u16;
        let store = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let reader = {
            let (store, changed) = (store.clone(), changed.clone());
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("a receiver line is not JSON ({e}): {line}"));
                    store.lock().unwrap().push(v);
                    changed.notify_waiters();
                }
            })
        };
        OtlpReceiver {
            port,
            reports_records: records,
            lines: store,
            changed,
            _stdin: stdin,
            _child: child,
            reader,
        }
    }

    /// `http://127.0.0.1:PORT`: the base endpoint (logs go to `/v1/logs`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn of_type(&self, kind: &str) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l["type"] == kind)
            .cloned()
            .collect()
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.of_type("request")
    }

    /// Every record of every request (whatever the answer was).
    pub fn records(&self) -> Vec<Value> {
        self.of_type("record")
    }

    /// The records of requests answered 200 (a partial success's included).
    pub fn stored(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["status"] == 200)
            .collect()
    }

    /// How many records requests answered 200 carried.
    pub fn stored_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["status"] == 200)
            .map(|r| r["records"].as_u64().unwrap_or(0) as usize)
            .sum()
    }

    /// Waits until at least `n` requests were reported; false after `timeout`. (The receiver
    /// reports a request before answering it, but the report may be read after the answer.)
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.requests().len() >= n)
            .await
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Waits until requests answered 200 carried at least `n` records (and their record lines
    /// arrived, when records are reported); false after `timeout`.
    pub async fn wait_for_stored(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || {
            self.stored_count() >= n && (!self.reports_records || self.stored().len() >= n)
        })
        .await
    }
}

/// The value of a reported attribute map's `key`: its tagged value (`{"string": ...}`, ...).
pub fn attr<'a>(attrs: &'a Value, key: &str) -> &'a Value {
    attrs
        .get(key)
        .unwrap_or_else(|| panic!("no attribute {key}: {attrs:#}"))
}
