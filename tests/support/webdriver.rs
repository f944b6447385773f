//! A real headless Chromium for the browser tests, driven over WebDriver by `fantoccini`.
//!
//! [`Browser::launch`] starts `chromedriver` (`$CHROMEDRIVER`, else `/usr/bin/chromedriver`)
//! on a free loopback port as a child process in its own process group, waits for its
//! `/status` to say ready (a bounded poll), then opens a session on Chromium (`$CHROME`, else
//! `/usr/bin/chromium`) with a fresh profile in a temporary directory. Dropping the
//! [`Browser`] kills the whole group (chromedriver and the browser it started) and removes the
//! profile. A missing or broken browser is a panic that says what is missing and how to get it:
//! a browser test never passes without a browser.
//!
//! Included with `#[path = "support/webdriver.rs"] mod webdriver;` by the test files that use
//! it (not through `support/mod.rs`, so other test binaries do not build `fantoccini`).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder};
use http_body_util::{Empty, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// What to install when the browser is missing (Debian's packages; `.ci/run` installs them).
pub const INSTALL_HINT: &str = "install Debian's `chromium` and `chromium-driver` packages \
     (`apt-get install chromium chromium-driver`; `.ci/run` does this), or point $CHROME and \
     $CHROMEDRIVER at a Chromium and its matching chromedriver";

/// How long chromedriver may take to answer `/status`, and Chromium to open a session.
const STARTUP: Duration = Duration::from_secs(20);

/// chromedriver, its browser and its profile; all gone when dropped.
struct Driver {
    child: Child,
    dir: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group holds chromedriver and the Chromium it launched: kill them all, so a failed
        // test leaves no browser behind.
        // (Never a group id of 0 or 1: `kill -- -1` would signal every process.)
        let pgid = self.child.id();
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A WebDriver session on a headless Chromium.
pub struct Browser {
    pub client: Client,
    driver: Driver,
    /// chromedriver's address.
    url: String,
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

fn program(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (window 1400x1000). Panics, saying what is
    /// missing, when either cannot be started.
    pub async fn launch() -> Browser {
        let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chrome = program("CHROME", "/usr/bin/chromium");
        assert!(
            chromedriver.is_file(),
            "chromedriver not found at {} (set $CHROMEDRIVER to override): {INSTALL_HINT}",
            chromedriver.display()
        );
        assert!(
            chrome.is_file(),
            "Chromium not found at {} (set $CHROME to override): {INSTALL_HINT}",
            chrome.display()
        );

        // Chromium must run before chromedriver is given it: chromedriver's handling of a
        // browser that exits at once is not to be trusted, and this names the problem.
        let version = tokio::time::timeout(
            STARTUP,
            tokio::process::Command::new(&chrome)
                .arg("--version")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match version {
            Ok(Ok(out)) if out.status.success() => {}
            Ok(Ok(out)) => panic!(
                "{} --version failed ({}): {}\n{INSTALL_HINT}",
                chrome.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(Err(e)) => panic!("cannot run {}: {e}\n{INSTALL_HINT}", chrome.display()),
            Err(_) => panic!(
                "{} --version did not answer within {STARTUP:?}\n{INSTALL_HINT}",
                chrome.display()
            ),
        }

        let dir = std::env::temp_dir().join(format!(
            "tower-telemetry-browser-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(dir.join("profile")).expect("a temporary directory");
        let log = dir.join("chromedriver.log");
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so Drop can take the browser down with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e}: {INSTALL_HINT}",
                        chromedriver.display()
                    )
                })
        };
        let mut driver = Driver { child, dir };
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&mut driver, &url, &log).await;

        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!(
            "--user-data-dir={}",
            driver.dir.join("profile").display()
        )])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome, "args": args },
            // The page's console, for `console_errors`.
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = tokio::time::timeout(
            STARTUP,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "Chromium ({}) did not start within {STARTUP:?}; chromedriver's log:\n{}\n{INSTALL_HINT}",
                chrome.display(),
                log_tail(&log)
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start Chromium ({}): {e}; its log:\n{}\n{INSTALL_HINT}",
                chrome.display(),
                log_tail(&log)
            )
        });
        Browser {
            client,
            driver,
            url,
        }
    }

    /// The browser console's errors since the last call (uncaught exceptions, failed loads,
    /// Content-Security-Policy violations), through chromedriver's log endpoint.
    pub async fn console_errors(&self) -> Vec<String> {
        let id = self.client.session_id().await.unwrap().expect("a session");
        let http: HttpClient<HttpConnector, Full<Bytes>> =
            HttpClient::builder(TokioExecutor::new()).build_http();
        let req = http::Request::post(format!("{}/session/{id}/se/log", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"type":"browser"}"#)))
            .unwrap();
        let res = tokio::time::timeout(STARTUP, http.request(req))
            .await
            .expect("chromedriver answers")
            .expect("chromedriver's log");
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("JSON from chromedriver");
        v["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no browser log: {v}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Runs `script` (a function body; `return` its result) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Ends the session (closing the browser) and stops chromedriver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.close()).await;
        drop(self.driver);
    }
}

/// Polls chromedriver's `/status` until it says `ready` (bounded by [`STARTUP`]); fails at
/// once if the process exits.
async fn wait_ready(driver: &mut Driver, url: &str, log: &Path) {
    let http: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let status: http::Uri = format!("{url}/status").parse().unwrap();
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Ok(Some(exit)) = driver.child.try_wait() {
            panic!(
                "chromedriver exited at start ({exit}); its log:\n{}\n{INSTALL_HINT}",
                log_tail(log)
            );
        }
        let ready = async {
            let res = http.get(status.clone()).await.ok()?;
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .ok()?
                .to_bytes();
            let v: Value = serde_json::from_slice(&body).ok()?;
            v["value"]["ready"].as_bool()
        };
        if tokio::time::timeout(Duration::from_secs(2), ready).await == Ok(Some(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready within {STARTUP:?}; its log:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`; then panics with
/// `what` and the last value `describe` gives (the page's state, for the failure message).
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
