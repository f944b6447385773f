//! spool-bench: measures redb, fjall and SQLite as the per-destination spool of issue #24.
//!
//! ```text
//! spool-bench bench  --store S --sync always|interval|never [--events N] [--backlog B] [--dir D]
//! spool-bench crash  --store S [--sync M] [--runs R] [--max-ms MS] [--seed X] [--dir D]
//! spool-bench damage --store S [--unclean] [--seed X] [--dir D]
//! spool-bench verify --store S --dir D [--checked]       (used by crash and damage)
//! spool-bench child  --store S --sync M --dir D          (the writer crash kills)
//! spool-bench build  --store S --dir D [--unclean]       (the store damage damages)
//! ```
//!
//! `bench`: appends batches of 100 events (one transaction each) until `--backlog` events are
//! spooled, then for `--events` events: append a batch, read the oldest batch from the head,
//! remove it (one transaction), and under `interval` persist each second; then closes, reopens
//! and replays everything that is left, verifying every record's checksum and order.
//!
//! `crash`: runs `child` (an endless loop of that pattern, printing each commit as it returns),
//! SIGKILLs it after a random time, then runs `verify` on the store with a time limit and checks
//! that what was recovered is whole batches, in a gapless run, with every acknowledged append
//! present and every acknowledged removal gone, and no garbled record.
//!
//! `damage`: builds a store the same way, then for each of its files truncates it or flips a
//! byte (each on a fresh copy) and runs `verify` on the copy: what the store does with it.
//! `--unclean` damages a store left as a crash leaves it (the builder exits without closing).

mod event;
mod store;

use event::{Rng, make_event, verify_event};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use store::{Res, SyncMode};

const BATCH: u64 = 100;

struct Args {
    cmd: String,
    kv: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut it = std::env::args().skip(1);
        let cmd = it
            .next()
            .ok_or("no subcommand (bench, crash, damage, verify, child)")?;
        let (mut kv, mut flags) = (HashMap::new(), Vec::new());
        let rest: Vec<String> = it.collect();
        let mut i = 0;
        while i < rest.len() {
            let k = rest[i]
                .strip_prefix("--")
                .ok_or(format!("unexpected {:?}", rest[i]))?;
            if k == "checked" || k == "unclean" {
                flags.push(k.to_string());
                i += 1;
            } else {
                let v = rest.get(i + 1).ok_or(format!("--{k} needs a value"))?;
                kv.insert(k.to_string(), v.clone());
                i += 2;
            }
        }
        Ok(Args { cmd, kv, flags })
    }

    fn flag(&self, k: &str) -> bool {
        self.flags.iter().any(|f| f == k)
    }

    fn get(&self, k: &str, default: &str) -> String {
        self.kv
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    fn num(&self, k: &str, default: u64) -> Res<u64> {
        match self.kv.get(k) {
            Some(v) => Ok(v
                .replace('_', "")
                .parse()
                .map_err(|e| format!("--{k}: {e}"))?),
            None => Ok(default),
        }
    }

    fn sync(&self, default: &str) -> Res<SyncMode> {
        let s = self.get("sync", default);
        Ok(SyncMode::parse(&s).ok_or(format!("--sync {s:?}: always, interval or never"))?)
    }

    fn store(&self) -> Res<String> {
        Ok(self
            .kv
            .get("store")
            .cloned()
            .ok_or("--store redb|fjall|sqlite")?)
    }
}

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> Res<i32> {
    let a = Args::parse()?;
    let dir = PathBuf::from(a.get("dir", "/tmp/spool-bench"));
    match a.cmd.as_str() {
        "bench" => bench(
            &a.store()?,
            a.sync("always")?,
            a.num("events", 200_000)?,
            a.num("backlog", 10_000)?,
            &dir,
        )?,
        "crash" => crash(&a, &dir)?,
        "damage" => damage(&a.store()?, a.num("seed", 7)?, &dir, a.flag("unclean"))?,
        "build" => build(&a.store()?, a.num("seed", 7)?, &dir, a.flag("unclean"))?,
        "verify" => {
            return Ok(verify(
                &a.store()?,
                &dir,
                a.flags.iter().any(|f| f == "checked"),
            ));
        }
        "child" => child(
            &a.store()?,
            a.sync("always")?,
            a.num("backlog", 10_000)?,
            &dir,
        )?,
        other => return Err(format!("unknown subcommand {other:?}").into()),
    }
    Ok(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += disk_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn fill_batch(batch: &mut Vec<(u64, Vec<u8>)>, first: u64, rng: &mut Rng) {
    batch.resize_with(BATCH as usize, || (0, Vec::with_capacity(640)));
    for (i, (k, v)) in batch.iter_mut().enumerate() {
        *k = first + i as u64;
        make_event(*k, rng, v);
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The spool's pattern on a fresh store; prints one Markdown table row.
fn bench(kind: &str, sync: SyncMode, events: u64, backlog: u64, root: &Path) -> Res<()> {
    let dir = root.join(format!("bench-{kind}-{}", sync.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let load_start = loadavg();
    let mut rng = Rng::new(42);
    let mut s = store::open(kind, &dir, sync, false)?;
    let mut batch = Vec::new();
    let (mut next, mut head) = (0u64, 0u64);
    let mut last_persist = Instant::now();
    let mut persists = 0u32;

    // The backlog: an outage's worth of undelivered events.
    let mut fill_time = Duration::ZERO;
    while next < backlog {
        fill_batch(&mut batch, next, &mut rng);
        let t = Instant::now();
        s.append(&batch)?;
        if sync == SyncMode::Interval && last_persist.elapsed() >= Duration::from_secs(1) {
            s.persist()?;
            last_persist = Instant::now();
        }
        fill_time += t.elapsed();
        next += BATCH;
    }

    // Steady state: each new batch appended, the oldest read and removed once delivered.
    let (mut append_lat, mut remove_lat) = (Vec::new(), Vec::new());
    let mut busy = Duration::ZERO;
    let mut head_batch = Vec::with_capacity(BATCH as usize);
    let mut keys = Vec::with_capacity(BATCH as usize);
    let wall = Instant::now();
    for _ in 0..events / BATCH {
        fill_batch(&mut batch, next, &mut rng);
        let t0 = Instant::now();
        s.append(&batch)?;
        let t1 = Instant::now();
        head_batch.clear();
        s.read_from(head, BATCH as usize, &mut head_batch)?;
        keys.clear();
        keys.extend(head_batch.iter().map(|(k, _)| *k));
        s.remove(&keys)?;
        let t2 = Instant::now();
        if sync == SyncMode::Interval && last_persist.elapsed() >= Duration::from_secs(1) {
            s.persist()?;
            persists += 1;
            last_persist = Instant::now();
        }
        busy += t0.elapsed();
        append_lat.push(t1 - t0);
        remove_lat.push(t2 - t1);
        if keys.len() != BATCH as usize || keys[0] != head {
            return Err(format!(
                "head read at {head}: got {} records from {:?}",
                keys.len(),
                keys.first()
            )
            .into());
        }
        for (k, v) in &head_batch {
            verify_event(*k, v)?;
        }
        next += BATCH;
        head += BATCH;
    }
    let wall = wall.elapsed();
    append_lat.sort();
    remove_lat.sort();
    let disk_peak = disk_bytes(&dir);

    let t = Instant::now();
    drop(s);
    let close = t.elapsed();
    let disk_closed = disk_bytes(&dir);

    // Restart: open, then replay everything that is left in order.
    let t = Instant::now();
    let mut s = store::open(kind, &dir, sync, false)?;
    let open = t.elapsed();
    let head_found = s.bounds()?.map(|(first, _)| first);
    let to_first = t.elapsed();
    if next > head && head_found != Some(head) {
        return Err(format!("reopened store starts at {head_found:?}, expected {head}").into());
    }
    let t = Instant::now();
    let (mut count, mut expect) = (0u64, head);
    s.scan(&mut |k, _v| {
        if k != expect {
            return Err(format!("replay: key {k}, expected {expect}").into());
        }
        expect += 1;
        count += 1;
        Ok(())
    })?;
    let replay = t.elapsed();
    let mut bad = 0;
    s.scan(&mut |k, v| {
        bad += verify_event(k, v).is_err() as u64;
        Ok(())
    })?;
    drop(s);
    if count != next - head || bad != 0 {
        return Err(format!(
            "replay found {count} records ({bad} garbled), expected {}",
            next - head
        )
        .into());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{kind} {}: backlog filled at {:.0} ev/s; steady wall {:.2} s, store time {:.2} s; {persists} persists; load {load_start} -> {}",
        sync.name(),
        backlog as f64 / fill_time.as_secs_f64(),
        wall.as_secs_f64(),
        busy.as_secs_f64(),
        loadavg()
    );
    println!(
        "| {kind} | {} | {events} | {backlog} | {:.0} | {:.3} / {:.3} | {:.3} / {:.3} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.0} | {count} | {} |",
        sync.name(),
        events as f64 / busy.as_secs_f64(),
        pct(&append_lat, 0.5),
        pct(&append_lat, 0.99),
        pct(&remove_lat, 0.5),
        pct(&remove_lat, 0.99),
        mib(disk_peak),
        mib(disk_closed),
        ms(close),
        ms(open),
        ms(to_first),
        count as f64 / replay.as_secs_f64(),
        loadavg(),
    );
    Ok(())
}

/// The writer that `crash` kills: the spool's loop, forever, printing each step as it returns
/// (`B` before an append's commit, `A` after it, `b`/`R` likewise for removals, `P` after an
/// explicit persist). Continues from whatever the store holds.
fn child(kind: &str, sync: SyncMode, backlog: u64, dir: &Path) -> Res<()> {
    let mut out = std::io::stdout();
    let mut s = store::open(kind, dir, sync, false)?;
    let bounds = s.bounds()?;
    let (mut head, mut next) = match bounds {
        Some((first, last)) => (first, last + 1),
        None => (0, 0),
    };
    if let Some((first, last)) = bounds {
        writeln!(out, "O {first} {last}")?;
    } else {
        writeln!(out, "O - -")?;
    }
    let mut rng = Rng::new(next);
    let mut batch = Vec::new();
    let mut head_batch = Vec::new();
    let mut last_persist = Instant::now();
    loop {
        fill_batch(&mut batch, next, &mut rng);
        writeln!(out, "B {}", next + BATCH - 1)?;
        s.append(&batch)?;
        writeln!(out, "A {}", next + BATCH - 1)?;
        next += BATCH;
        if next - head > backlog {
            head_batch.clear();
            s.read_from(head, BATCH as usize, &mut head_batch)?;
            let keys: Vec<u64> = head_batch.iter().map(|(k, _)| *k).collect();
            writeln!(out, "b {}", head + BATCH - 1)?;
            s.remove(&keys)?;
            writeln!(out, "R {}", head + BATCH - 1)?;
            head += BATCH;
        }
        if sync == SyncMode::Interval && last_persist.elapsed() >= Duration::from_secs(1) {
            s.persist()?;
            writeln!(out, "P")?;
            last_persist = Instant::now();
        }
    }
}

/// Opens the store and reads it all; prints `OK key=value…` or `ERR stage: message` (exit 2).
fn verify(kind: &str, dir: &Path, checked: bool) -> i32 {
    let one_line = |s: String| s.replace('\n', " | ");
    let t = Instant::now();
    let mut s = match store::open(kind, dir, SyncMode::Always, checked) {
        Ok(s) => s,
        Err(e) => {
            println!("ERR open: {}", one_line(e.to_string()));
            return 2;
        }
    };
    let open_ms = ms(t.elapsed());
    let (mut count, mut first, mut last, mut gaps, mut garbled) =
        (0u64, None, None::<u64>, 0u64, 0u64);
    let mut first_bad = String::new();
    let mut first_ms = None;
    let scan = s.scan(&mut |k, v| {
        first_ms.get_or_insert_with(|| ms(t.elapsed()));
        if let Some(l) = last
            && k != l + 1
        {
            gaps += 1;
        }
        first.get_or_insert(k);
        last = Some(k);
        count += 1;
        if let Err(e) = verify_event(k, v) {
            garbled += 1;
            if first_bad.is_empty() {
                first_bad = e;
            }
        }
        Ok(())
    });
    if let Err(e) = scan {
        println!(
            "ERR scan after {count} records: {}",
            one_line(e.to_string())
        );
        return 2;
    }
    let check = if checked {
        match s.check() {
            Ok(c) => c,
            Err(e) => format!("check error: {e}"),
        }
    } else {
        "-".into()
    };
    let f = |o: Option<u64>| o.map_or("-".to_string(), |v| v.to_string());
    let first_ms = first_ms.unwrap_or_else(|| ms(t.elapsed()));
    println!(
        "OK open_ms={open_ms:.1} first_ms={first_ms:.1} count={count} first={} last={} gaps={gaps} garbled={garbled} bad={:?} check={:?}",
        f(first),
        f(last),
        first_bad,
        one_line(check)
    );
    0
}

/// What a `verify` run said.
#[derive(Debug, Default)]
struct Verdict {
    ok: bool,
    timed_out: bool,
    status: Option<ExitStatus>,
    line: String,
    stderr: String,
    fields: HashMap<String, String>,
    secs: f64,
}

impl Verdict {
    fn num(&self, k: &str) -> Option<u64> {
        self.fields.get(k).and_then(|v| v.parse().ok())
    }

    /// A panic's message, from the captured stderr.
    fn panic_line(&self) -> Option<String> {
        let i = self.stderr.find("panicked at")?;
        let rest = &self.stderr[i..];
        let mut lines = rest.lines();
        let at = lines.next().unwrap_or("");
        Some(
            format!("{} {}", at, lines.next().unwrap_or(""))
                .trim()
                .to_string(),
        )
    }

    fn describe(&self) -> String {
        if self.timed_out {
            return format!("HANG: no answer in {:.0} s, killed", self.secs);
        }
        if let Some(p) = self.panic_line() {
            return format!("PANIC: {p}");
        }
        if !self.ok {
            if self.line.starts_with("ERR") {
                return format!("ERROR: {}", self.line.trim_start_matches("ERR "));
            }
            return format!(
                "exit {:?}, stdout {:?}, stderr {:?}",
                self.status,
                self.line,
                self.stderr.trim()
            );
        }
        self.line.clone()
    }
}

fn run_verify(kind: &str, dir: &Path, checked: bool, limit: Duration) -> Res<Verdict> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["verify", "--store", kind, "--dir"]).arg(dir);
    if checked {
        cmd.arg("--checked");
    }
    let mut ch = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut so = ch.stdout.take().unwrap();
    let mut se = ch.stderr.take().unwrap();
    let ot = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let et = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let mut v = Verdict::default();
    loop {
        if let Some(st) = ch.try_wait()? {
            v.status = Some(st);
            break;
        }
        if t.elapsed() > limit {
            v.timed_out = true;
            ch.kill()?;
            v.status = Some(ch.wait()?);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    v.secs = t.elapsed().as_secs_f64();
    v.line = ot.join().unwrap().trim().to_string();
    v.stderr = et.join().unwrap();
    v.ok = !v.timed_out && v.status.is_some_and(|s| s.success()) && v.line.starts_with("OK");
    // `bad=` and `check=` come last and may hold spaces.
    let (simple, rest) = v.line.split_once(" bad=").unwrap_or((&v.line, ""));
    for tok in simple.split_whitespace() {
        if let Some((k, val)) = tok.split_once('=') {
            v.fields.insert(k.to_string(), val.to_string());
        }
    }
    if let Some((bad, check)) = rest.split_once(" check=") {
        v.fields.insert("bad".into(), bad.to_string());
        v.fields.insert("check".into(), check.to_string());
    }
    Ok(v)
}

/// What the killed writer had said before it died.
#[derive(Debug, Default, Clone)]
struct Log {
    opened: Option<String>,
    begun: Option<u64>,
    acked: Option<u64>,
    remove_begun: Option<u64>,
    removed: Option<u64>,
    persisted: Option<u64>,
}

fn crash(a: &Args, root: &Path) -> Res<()> {
    let kind = a.store()?;
    let sync = a.sync("always")?;
    let runs = a.num("runs", 20)?;
    let max_ms = a.num("max-ms", 2000)?;
    let backlog = a.num("backlog", 10_000)?;
    let mut rng = Rng::new(a.num("seed", 1)?);
    let dir = root.join(format!("crash-{kind}-{}", sync.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let load_start = loadavg();
    let (mut failures, mut lost_total, mut resurrected_total, mut max_open) = (0, 0u64, 0u64, 0f64);
    let mut max_recovered = 0u64;
    for run in 0..runs {
        let mut ch = Command::new(&exe)
            .args([
                "child",
                "--store",
                &kind,
                "--sync",
                sync.name(),
                "--backlog",
                &backlog.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let so = ch.stdout.take().unwrap();
        let mut se = ch.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut log = Log::default();
            for line in BufReader::new(so).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                let tag = it.next().unwrap_or("");
                let n = it.next().and_then(|v| v.parse::<u64>().ok());
                match tag {
                    "O" => log.opened = Some(line[2..].to_string()),
                    "B" => log.begun = n,
                    "A" => log.acked = n,
                    "b" => log.remove_begun = n,
                    "R" => log.removed = n,
                    "P" => log.persisted = log.acked,
                    _ => {}
                }
            }
            log
        });
        let et = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let delay = Duration::from_millis(rng.range(10, max_ms));
        let t = Instant::now();
        let mut died_early = None;
        while t.elapsed() < delay {
            if let Some(st) = ch.try_wait()? {
                died_early = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if died_early.is_none() {
            ch.kill()?; // SIGKILL
            ch.wait()?;
        }
        let log = reader.join().unwrap();
        let child_err = et.join().unwrap();

        let v = run_verify(&kind, &dir, false, Duration::from_secs(60))?;
        let mut problems = Vec::new();
        if let Some(st) = died_early {
            problems.push(format!(
                "writer died by itself ({st}): {}",
                child_err.trim()
            ));
        }
        let (mut lost, mut resurrected) = (0, 0);
        if !v.ok {
            problems.push(format!("reopen: {}", v.describe()));
        } else {
            let count = v.num("count").unwrap_or(0);
            let first = v.num("first");
            let last = v.num("last");
            if let Some(o) = v.fields.get("first_ms").and_then(|s| s.parse::<f64>().ok()) {
                max_open = max_open.max(o);
            }
            max_recovered = max_recovered.max(count);
            if v.num("garbled") != Some(0) {
                problems.push(format!("garbled records: {}", v.line));
            }
            if v.num("gaps") != Some(0) {
                problems.push(format!("gaps: {}", v.line));
            }
            if let (Some(f), Some(l)) = (first, last) {
                if f % BATCH != 0 || (l + 1) % BATCH != 0 {
                    problems.push(format!("partial batch: first {f} last {l}"));
                }
                if log.begun.is_some_and(|b| l > b) {
                    problems.push(format!(
                        "record {l} past the last begun append {:?}",
                        log.begun
                    ));
                }
                if log.remove_begun.is_some_and(|b| f > b + 1) {
                    problems.push(format!(
                        "first {f} past the last begun removal {:?}",
                        log.remove_begun
                    ));
                }
            }
            let last_or_none = last.map_or(-1i128, |l| l as i128);
            if let Some(acked) = log.acked
                && (acked as i128) > last_or_none
            {
                lost = (acked as i128 - last_or_none) as u64;
            }
            if let (Some(removed), Some(f)) = (log.removed, first)
                && f <= removed
            {
                resurrected = removed - f + 1;
            }
            if sync == SyncMode::Always {
                if lost > 0 {
                    problems.push(format!("{lost} acknowledged events lost"));
                }
                if resurrected > 0 {
                    problems.push(format!("{resurrected} acknowledged removals undone"));
                }
            } else if let Some(p) = log.persisted
                && (p as i128) > last_or_none
            {
                problems.push(format!(
                    "events persisted at an explicit fsync lost (up to {p})"
                ));
            }
        }
        lost_total += lost;
        resurrected_total += resurrected;
        if !problems.is_empty() {
            failures += 1;
        }
        eprintln!(
            "run {run:2}: killed after {:4} ms (opened with {}; acked up to {:?}, removed up to {:?}) -> {}{}",
            delay.as_millis(),
            log.opened.as_deref().unwrap_or("?"),
            log.acked,
            log.removed,
            v.describe(),
            if problems.is_empty() {
                String::new()
            } else {
                format!("  PROBLEMS: {}", problems.join("; "))
            }
        );
    }
    println!(
        "| {kind} | {} | {runs} | {failures} | {lost_total} | {resurrected_total} | {max_open:.1} | {max_recovered} | {load_start} |",
        sync.name()
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

fn list_files(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, u64)>) -> Res<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        if m.is_dir() {
            list_files(&e.path(), base, out)?;
        } else {
            out.push((e.path().strip_prefix(base)?.to_path_buf(), m.len()));
        }
    }
    Ok(())
}

/// The store as the spool leaves it: 35 000 events appended, the oldest 25 000 removed, with a
/// flush after the first 30 000 so that fjall holds live records both in a table file
/// (25 000..29 999) and in its journal (30 000..34 999, and the removals of 20 000..24 999).
/// `unclean`: the process exits after the last commit without closing the store (no
/// destructors run), as if killed: SQLite keeps its WAL, redb has no clean-shutdown mark.
fn build(kind: &str, seed: u64, dir: &Path, unclean: bool) -> Res<()> {
    let mut s = store::open(kind, dir, SyncMode::Always, false)?;
    let mut rng = Rng::new(seed);
    let mut batch = Vec::new();
    let mut head_batch = Vec::new();
    let (mut next, mut head) = (0u64, 0u64);
    while next < 35_000 {
        if next == 30_000 {
            s.flush()?;
        }
        fill_batch(&mut batch, next, &mut rng);
        s.append(&batch)?;
        next += BATCH;
        if next - head > 10_000 {
            head_batch.clear();
            s.read_from(head, BATCH as usize, &mut head_batch)?;
            let keys: Vec<u64> = head_batch.iter().map(|(k, _)| *k).collect();
            s.remove(&keys)?;
            head += BATCH;
        }
    }
    if unclean {
        std::process::exit(0);
    }
    Ok(())
}

/// A file's kind: its path with every run of digits replaced by `#`.
fn file_class(p: &Path) -> String {
    let mut s = String::new();
    let mut in_digits = false;
    for c in p.to_string_lossy().chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                s.push('#');
            }
            in_digits = true;
        } else {
            s.push(c);
            in_digits = false;
        }
    }
    s
}

enum Damage {
    Truncate(u64),
    Flip(u64),
}

fn damage(kind: &str, seed: u64, root: &Path, unclean: bool) -> Res<()> {
    let base = root.join(format!(
        "damage-{kind}{}",
        if unclean { "-unclean" } else { "" }
    ));
    let _ = std::fs::remove_dir_all(&base);
    let pristine = base.join("pristine");
    // Built in a child process, so that `--unclean` can leave it as a crash would.
    let st = Command::new(std::env::current_exe()?)
        .args([
            "build",
            "--store",
            kind,
            "--seed",
            &seed.to_string(),
            "--dir",
        ])
        .arg(&pristine)
        .args(if unclean { &["--unclean"][..] } else { &[][..] })
        .status()?;
    if !st.success() {
        return Err(format!("building the store failed: {st}").into());
    }
    let expect = (25_000u64, 34_999u64, 10_000u64);
    let mut files = Vec::new();
    list_files(&pristine, &pristine, &mut files)?;
    files.sort();
    let how = if unclean {
        "an unclean exit"
    } else {
        "a clean close"
    };
    eprintln!("{kind}: files after {how}:");
    for (p, n) in &files {
        eprintln!("  {:>10}  {}", n, p.display());
    }
    // (On a copy: a store may rewrite its files when it opens, fjall its journal.)
    let undamaged = base.join("undamaged");
    copy_dir(&pristine, &undamaged)?;
    let base_v = run_verify(kind, &undamaged, false, Duration::from_secs(60))?;
    eprintln!("{kind}: undamaged: {}", base_v.describe());

    // The largest file of each kind that holds data (4 KiB or more).
    let mut targets: Vec<(PathBuf, u64)> = Vec::new();
    let mut by_class: HashMap<String, (PathBuf, u64)> = HashMap::new();
    for (p, n) in &files {
        if *n < 4096 {
            continue;
        }
        let e = by_class.entry(file_class(p)).or_insert((p.clone(), *n));
        if *n > e.1 {
            *e = (p.clone(), *n);
        }
    }
    targets.extend(by_class.into_values());
    targets.sort();

    let mut rng = Rng::new(seed ^ 0xD1CE);
    let mut trial = 0;
    println!("| store | file | damage | plain open + full read | again | verifying open |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (file, size) in &targets {
        // Where the data ends: fjall preallocates its journal, whose tail is zeros.
        let bytes = std::fs::read(pristine.join(file))?;
        let len = &bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i as u64 + 1);
        let mut damages = vec![
            ("truncated to half".to_string(), Damage::Truncate(len / 2)),
            (
                "last 100 bytes of data cut".to_string(),
                Damage::Truncate(len - 100),
            ),
            ("byte flipped at 16 (header)".to_string(), Damage::Flip(16)),
            (
                format!("byte flipped at {} (middle)", len / 2),
                Damage::Flip(len / 2),
            ),
        ];
        for _ in 0..6 {
            let at = rng.range(0, *len);
            damages.push((format!("byte flipped at {at} (random)"), Damage::Flip(at)));
        }
        for (what, d) in damages {
            trial += 1;
            // Damaged once, then copied for each open: an open may change the files (SQLite
            // checkpoints and deletes its WAL, redb repairs).
            let damaged = base.join(format!("trial-{trial}-damaged"));
            copy_dir(&pristine, &damaged)?;
            let path = damaged.join(file);
            match d {
                Damage::Truncate(n) => std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(n)?,
                Damage::Flip(at) => {
                    let mut bytes = std::fs::read(&path)?;
                    bytes[at as usize] ^= 0xFF;
                    std::fs::write(&path, bytes)?;
                }
            }
            let limit = Duration::from_secs(30);
            let dir = base.join(format!("trial-{trial}"));
            copy_dir(&damaged, &dir)?;
            let first = run_verify(kind, &dir, false, limit)?;
            let again = run_verify(kind, &dir, false, limit)?;
            let checked_dir = base.join(format!("trial-{trial}-checked"));
            copy_dir(&damaged, &checked_dir)?;
            let checked = run_verify(kind, &checked_dir, true, limit)?;
            let judge = |v: &Verdict| -> String {
                if !v.ok {
                    return v.describe();
                }
                let count = v.num("count").unwrap_or(0);
                let garbled = v.num("garbled").unwrap_or(0);
                let (f, l) = (v.num("first"), v.num("last"));
                let check = v.fields.get("check").cloned().unwrap_or_default();
                let check = if check == "\"-\"" {
                    String::new()
                } else {
                    format!(" [{}]", check.trim_matches('"'))
                };
                if garbled > 0 {
                    format!(
                        "GARBLED: {garbled} records returned that fail the payload checksum, {count} read{check}"
                    )
                } else if count == expect.2 && f == Some(expect.0) && l == Some(expect.1) {
                    format!("intact ({count}){check}")
                } else {
                    // What was read is a gapless run f..=l (gaps are reported separately).
                    let (lo, hi) = (expect.0, expect.1 + 1);
                    let (rf, rl) = (f.unwrap_or(0), l.map_or(0, |l| l + 1));
                    let kept = rl.min(hi).saturating_sub(rf.max(lo));
                    let back = (rl - rf) - kept;
                    let gaps = v.num("gaps").unwrap_or(0);
                    format!(
                        "NO ERROR, wrong contents: read {count} ({f:?}..{l:?}{}): {} of the {} live records missing, {back} removed ones back{check}",
                        if gaps > 0 {
                            format!(", {gaps} gaps")
                        } else {
                            String::new()
                        },
                        expect.2 - kept,
                        expect.2
                    )
                }
            };
            println!(
                "| {kind} | {} ({size} bytes, data to {len}) | {what} | {} | {} | {} |",
                file.display(),
                judge(&first),
                judge(&again),
                judge(&checked)
            );
            for d in [&damaged, &dir, &checked_dir] {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    Ok(())
}
