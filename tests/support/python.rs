//! The vendors' official Python SDKs, for the cross-check tests (and OpenTelemetry's official
//! `opentelemetry-proto` package, for the OTLP receiver): a venv under `target/py-venv`
//! with the pinned [`PINS`], and a way to run a Python snippet in it, bounded in time and
//! killed on drop.
//!
//! `.ci/run` makes the venv before the tests; a test that finds it missing (or made with other
//! pins) makes it itself (`python3 -m venv` and pip, from PyPI), under a file lock so parallel
//! test binaries install once. A test that cannot get it fails, saying how to get it: see
//! [`python`].
//!
//! ```ignore
//! mod support;
//! use support::python;
//! let out = python::run(
//!     "import posthog, os; print(os.environ['URL'])",
//!     &[("URL", &server.url())],
//!     Duration::from_secs(20),
//! )
//! .await;
//! out.success();                 // panics with the script's stderr unless it exited 0
//! out.stdout;                    // what it printed
//! ```

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The pinned SDKs (current releases when pinned; `pip download` them to check for newer).
pub const PINS: &[&str] = &[
    "posthog==7.91.1",
    "segment-analytics-python==2.4.0",
    "rudder-sdk-python==2.1.9",
    "standardwebhooks==1.3.0",
    // The OTLP receiver (tests/support/otlp_receiver.py) decodes with the official generated
    // classes; protobuf comes along.
    "opentelemetry-proto==1.45.2",
];

/// The venv's directory under the target directory.
const VENV: &str = "py-venv";

/// The file in the venv naming the pins it was made with, one a line.
const PINS_FILE: &str = "pins.txt";

/// The venv's `python`, with the pinned SDKs installed (installing them on first use).
///
/// # Panics
///
/// When the install fails: a cross-check that cannot run fails, with instructions, rather
/// than passing without having run.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(find_or_install) {
        Ok(python) => python.clone(),
        Err(why) => panic!(
            "{why}\n\nThe SDK cross-checks need the vendors' Python SDKs ({pins}). Either let \
             the tests install them (needs python3 with venv and pip, and access to PyPI), or \
             run .ci/run, or make the venv yourself:\n    python3 -m venv target/{VENV}\n    \
             target/{VENV}/bin/pip install {pins}\n    printf '%s\\n' {pins} > \
             target/{VENV}/{PINS_FILE}",
            pins = PINS.join(" ")
        ),
    }
}

fn pins_text() -> String {
    let mut text = PINS.join("\n");
    text.push('\n');
    text
}

fn find_or_install() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join(VENV);
    let python = venv.join("bin").join("python");
    let pins_file = venv.join(PINS_FILE);
    let ready = || {
        python.is_file()
            && std::fs::read_to_string(&pins_file).ok().as_deref() == Some(&pins_text())
    };
    if ready() {
        return Ok(python);
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join("py-venv.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    // Another test binary may be installing it: wait for it, then look again.
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if ready() {
        return Ok(python);
    }
    eprintln!(
        "installing {} into {} (once)",
        PINS.join(" "),
        venv.display()
    );
    run_to_end(
        std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    run_to_end(
        std::process::Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PINS),
    )?;
    std::fs::write(&pins_file, pins_text())
        .map_err(|e| format!("cannot write {}: {e}", pins_file.display()))?;
    Ok(python)
}

fn run_to_end(cmd: &mut std::process::Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "installing the SDKs failed: {shown} exited with {status}"
        )),
        Err(e) => Err(format!(
            "installing the SDKs failed: cannot run {shown}: {e}"
        )),
    }
}

/// What a snippet did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics, showing what the snippet printed, unless it exited 0.
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert!(
            self.status.success(),
            "the Python snippet exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The lines the snippet printed.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// The venv's `python` as a command to add arguments to: no proxy for the loopback servers, no
/// user site, unbuffered output, killed when dropped.
pub fn command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(python());
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONNOUSERSITE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    cmd
}

/// Runs `script` (Python source, given with `-c`) in the venv with `env` added to its
/// environment; waits at most `timeout` for it to exit.
///
/// # Panics
///
/// When it does not exit in time (it is killed first) or cannot be started. Run it on a
/// runtime with real time: under paused time the time-out would fire at once.
pub async fn run(script: &str, env: &[(&str, &str)], timeout: Duration) -> Output {
    let python = python();
    let mut cmd = command();
    cmd.arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    // The child is killed when this future is dropped (kill_on_drop), on time-out too.
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for the Python snippet: {e}"),
        Err(_) => panic!("the Python snippet did not finish within {timeout:?}:\n{script}"),
    }
}
