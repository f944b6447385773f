//! The spool's store: the one file that knows the embedded database (redb).
//!
//! A spool folder holds `spool.redb` (one table: record number → record), `lock` (held while
//! a process uses the folder; it names that process) and `meta` (the first and next record
//! numbers, rewritten after every commit: the count of what a broken file lost).
//!
//! **Records.** A record is a frame around the event's versioned JSON
//! ([`encode_event`](crate::event::schema::encode_event)): a 4-byte magic, the record's
//! number (u64 LE), the JSON's length (u32 LE), a CRC-32 of those two and the JSON (u32 LE),
//! then the JSON. redb checksums its pages but checks them only when it repairs a file after
//! an unclean stop; the record's own CRC catches a damaged record on every read. Frames carry
//! their own number and length so that a file redb can no longer open (truncated, say) can
//! still be read record by record ([`salvage`]).
//!
//! **Writes reach the operating system at every commit.** Each commit is a durable one in
//! redb's terms (its pages and its header written before `commit` returns); only the `fsync`
//! that redb asks for is decided here, by the sync mode ([`SyncClock`]): every time
//! (`always`), at most once per interval (`interval`), never (`never`). So a killed process
//! loses nothing that was committed, in every mode; a power loss may lose what was not synced.
//! (redb's non-durable commits would skip the fsync too, but are not written out at all until
//! the next durable one: a killed process would lose them.)
//!
//! **Damage never panics or hangs the caller.** Every call into redb runs under
//! `catch_unwind` (a truncated file makes redb's open assert, for one): a store that panicked
//! or failed is closed and reported broken; a file that cannot be opened is moved aside, its
//! records salvaged into a fresh one, and what was lost counted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};

use crate::config::SpoolSync;
use crate::event::Event;
use crate::event::schema::{decode_event_with_limits, encode_event};
use crate::limits::{LimitsConfig, MAX_DEPTH_LIMIT};

/// The one table: record number → framed record.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

/// The database file in the spool folder.
pub(crate) const DB_FILE: &str = "spool.redb";
const LOCK_FILE: &str = "lock";
const META_FILE: &str = "meta";

/// A record's frame: magic, number, length, CRC-32.
const MAGIC: [u8; 4] = *b"TTs\x01";
pub(crate) const FRAME: usize = 20;
/// A record's cost against `max_bytes` beyond its frame and JSON: its key in the table.
const KEY_BYTES: u64 = 8;
/// No record is longer (the largest event is 16 MiB): a longer length is damage.
const MAX_RECORD: usize = 32 << 20;

const META_MAGIC: [u8; 4] = *b"TTm\x01";

/// A file larger than this that holds less than 1/[`COMPACT_SHARE`] of its length in records is
/// compacted. A spool that keeps up stays well below it (≈ 0.6 MiB with 100 records of 1 KB in
/// flight); one that held a backlog does not: redb keeps the pages it freed for reuse, and
/// 12 MB of records took a 41 MB file that stayed 41 MB once they were delivered.
const COMPACT_ABOVE: u64 = 8 << 20;
/// See [`COMPACT_ABOVE`]: compacted when the records are less than 1/64 of the file (nearly
/// empty: what is left to move is little, so compaction is quick).
const COMPACT_SHARE: u64 = 64;
/// At most one compaction per this long, whatever the events' sizes (a batch of the largest
/// events in flight can keep a spool that keeps up above [`COMPACT_ABOVE`]).
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the spool's own records may decode to: the widest limits a handle may be configured
/// with (the events were limited when they were tracked; these only bound what a damaged
/// record could make the decoder allocate).
fn record_limits() -> LimitsConfig {
    LimitsConfig::default()
        .with_max_event_size(16 << 20)
        .with_max_string_length(16 << 20)
        .with_max_properties(10_000)
        .with_max_depth(MAX_DEPTH_LIMIT)
}

/// Why the store could not do something. Its message names the folder.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// Another process holds the folder's lock.
    InUse(String),
    /// The folder or a file in it cannot be made, read or written (a full disk, an
    /// unwritable path), or redb failed: the spool is not usable now.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::InUse(m) | StoreError::Failed(m) => f.write_str(m),
        }
    }
}

/// When to really `fsync`, shared by the backend (redb asks at every commit) and the worker
/// (the interval's deadline, after the last write).
#[derive(Debug)]
pub(crate) struct SyncClock {
    mode: SpoolSync,
    last: Mutex<Instant>,
    /// Commits written out since the last real sync.
    dirty: AtomicBool,
}

impl SyncClock {
    fn new(mode: SpoolSync) -> Self {
        SyncClock {
            mode,
            last: Mutex::new(Instant::now()),
            dirty: AtomicBool::new(false),
        }
    }

    /// Whether redb's sync now is a real one.
    fn due(&self) -> bool {
        match self.mode {
            SpoolSync::Always => true,
            SpoolSync::Never => false,
            SpoolSync::Interval(every) => lock(&self.last).elapsed() >= every,
        }
    }

    fn synced(&self) {
        *lock(&self.last) = Instant::now();
        self.dirty.store(false, Ordering::Relaxed);
    }

    /// When the worker should sync what was written since the last sync (interval only).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.mode {
            SpoolSync::Interval(every) if self.dirty.load(Ordering::Relaxed) => {
                Some(*lock(&self.last) + every)
            }
            _ => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// redb's file backend, with the `fsync` left to the [`SyncClock`].
#[derive(Debug)]
struct Backend {
    file: FileBackend,
    clock: Arc<SyncClock>,
}

impl StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if self.clock.due() {
            self.file.sync_data()?;
            self.clock.synced();
        } else {
            self.clock.dirty.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }
}

/// A record read back: its event, or why it could not be.
pub(crate) type ReadRecord = (u64, Result<Event, String>);

/// What [`Store::append`] did.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// The number of the first record written; the others follow.
    pub(crate) first: u64,
    /// How many of the events were written (a prefix): the rest did not fit.
    pub(crate) taken: usize,
    /// Unsent records removed to make room (drop-oldest), from the cursor on.
    pub(crate) evicted: u64,
    /// The first record not evicted: the new cursor.
    pub(crate) cursor: u64,
}

/// What a salvage found in a file redb could not open.
#[derive(Debug, Default)]
pub(crate) struct Salvaged {
    /// Where the broken file was moved.
    pub(crate) moved_to: PathBuf,
    /// Intact records found and copied into the fresh store.
    pub(crate) records: u64,
    /// Records the file should have held that were not found intact.
    pub(crate) lost: u64,
}

/// An open spool: the folder's lock, the database, and running totals.
pub(crate) struct Store {
    folder: PathBuf,
    db: Option<Database>,
    clock: Arc<SyncClock>,
    /// Held while the store is open; the OS releases it when the process dies.
    _lock: File,
    meta: Option<File>,
    /// The number the next record gets.
    next: u64,
    /// The lowest number present (`next` when empty).
    first: u64,
    /// Bytes of records held, as `max_bytes` counts them.
    bytes: u64,
    records: u64,
    max_bytes: u64,
    /// The file's length after the last compaction (or failed attempt): not tried again
    /// until the file is twice that, nor within [`COMPACT_EVERY`].
    compacted_len: u64,
    compacted_at: Option<Instant>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("folder", &self.folder)
            .field("records", &self.records)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// A record's frame around `payload`.
pub(crate) fn frame(key: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(key, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn crc(key: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&key.to_le_bytes());
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The JSON inside a stored record numbered `key`, if its frame is whole.
fn unframe(key: u64, record: &[u8]) -> Result<&[u8], String> {
    if record.len() < FRAME || record[..4] != MAGIC {
        return Err("not a spool record (no frame)".to_owned());
    }
    let stored_key = u64::from_le_bytes(record[4..12].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(record[12..16].try_into().unwrap_or_default()) as usize;
    let sum = u32::from_le_bytes(record[16..20].try_into().unwrap_or_default());
    let payload = &record[FRAME..];
    if stored_key != key || len != payload.len() || crc(key, payload) != sum {
        return Err("the record's checksum does not match".to_owned());
    }
    Ok(payload)
}

fn decode(key: u64, record: &[u8]) -> Result<Event, String> {
    let payload = unframe(key, record)?;
    decode_event_with_limits(payload, &record_limits()).map_err(|e| e.to_string())
}

/// Runs `f` on redb, turning its panics into errors.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, redb::Error>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Err(format!("{what}: the store panicked: {why}"))
        }
    }
}

impl Store {
    /// Opens (or makes) the spool in `folder`: takes the folder's lock, opens the database,
    /// and if redb cannot open it, moves it aside, salvages its records into a fresh one
    /// (the returned [`Salvaged`]), and goes on with that.
    pub(crate) fn open(
        folder: &Path,
        max_bytes: u64,
        sync: SpoolSync,
    ) -> Result<(Store, Option<Salvaged>), StoreError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Failed(format!("spool {}: {what}: {e}", folder.display()))
        };
        fs::create_dir_all(folder).map_err(|e| failed("cannot make the folder", &e))?;
        let lock_path = folder.join(LOCK_FILE);
        let mut lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| failed("cannot open its lock file", &e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock_file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("another process ({holder})")
                };
                return Err(StoreError::InUse(format!(
                    "the spool folder {} is in use by {by}; each process needs a folder of its own",
                    folder.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(failed("cannot lock it", &e)),
        }
        let _ = lock_file.set_len(0);
        let _ = writeln!(lock_file, "pid {}", std::process::id());

        let clock = Arc::new(SyncClock::new(sync));
        let path = folder.join(DB_FILE);
        let meta = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(folder.join(META_FILE))
            .ok();
        let mut store = Store {
            folder: folder.to_owned(),
            db: None,
            clock: clock.clone(),
            _lock: lock_file,
            meta,
            next: 0,
            first: 0,
            bytes: 0,
            records: 0,
            max_bytes,
            compacted_len: 0,
            compacted_at: None,
        };
        // redb opens a file whose pages are damaged (it checks their checksums only when it
        // repairs): reading every record's length finds such damage now rather than later.
        let opened = open_db(&path, &clock).and_then(|db| {
            store.db = Some(db);
            store.count()
        });
        let mut salvaged = None;
        if let Err(why) = opened {
            store.db = None; // closes the file before it is moved
            let mut found = salvage_file(folder, &path, &why)
                .map_err(|e| failed("cannot move the damaged store aside", &e))?;
            store.db = Some(open_db(&path, &clock).map_err(|e| failed("cannot open", &e))?);
            store.count().map_err(|e| failed("cannot read", &e))?;
            let (records, lost) = store
                .refill(&found.moved_to)
                .map_err(|e| failed("cannot copy the salvaged records", &e))?;
            found.records = records;
            found.lost = lost;
            salvaged = Some(found);
        }
        store.write_meta();
        // A file an earlier process left large (it held a backlog) shrinks now.
        store
            .compact_if_sparse()
            .map_err(|e| failed("cannot compact", &e))?;
        Ok((store, salvaged))
    }

    /// Reads the totals: the first and next numbers, records and bytes.
    fn count(&mut self) -> Result<(), String> {
        let db = self.db()?;
        let (first, next, records, bytes) = guarded("count", || {
            let tx = db.begin_read()?;
            let table = match tx.open_table(RECORDS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, 0, 0, 0)),
                Err(e) => return Err(e.into()),
            };
            let first = table.first()?.map(|(k, _)| k.value());
            let last = table.last()?.map(|(k, _)| k.value());
            let mut records = 0u64;
            let mut bytes = 0u64;
            for entry in table.iter()? {
                let (_, v) = entry?;
                records += 1;
                bytes += v.value().len() as u64 + KEY_BYTES;
            }
            let next = last.map_or(0, |l| l + 1);
            Ok((first.unwrap_or(next), next, records, bytes))
        })?;
        self.first = first;
        self.next = next;
        self.records = records;
        self.bytes = bytes;
        Ok(())
    }

    fn db(&self) -> Result<&Database, String> {
        self.db
            .as_ref()
            .ok_or_else(|| "the store was closed after an earlier failure".to_owned())
    }

    /// Closes the database after a failure: later calls fail at once, until reopened.
    fn broke(&mut self, why: String) -> StoreError {
        self.db = None;
        StoreError::Failed(format!("spool {}: {why}", self.folder.display()))
    }

    /// The number the next record gets (records below it and at or above `first` are held).
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// The lowest number held (`next` when empty).
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// Records held (numbers may have gaps: a salvaged spool's lost records).
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of records held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sync mode's clock.
    pub(crate) fn clock(&self) -> Arc<SyncClock> {
        self.clock.clone()
    }

    /// Whether the store is usable (not closed after a failure).
    pub(crate) fn is_open(&self) -> bool {
        self.db.is_some()
    }

    /// Writes `events` as records, in one commit, as many as fit in `max_bytes` (a prefix).
    /// With `evict_from` (drop-oldest: the first record not being sent), unsent records from
    /// there on are removed, oldest first, to make room.
    pub(crate) fn append(
        &mut self,
        events: &[Arc<Event>],
        evict_from: Option<u64>,
    ) -> Result<Appended, StoreError> {
        let first = self.next;
        let records: Vec<Vec<u8>> = events
            .iter()
            .zip(first..)
            .map(|(e, key)| frame(key, &encode_event(e)))
            .collect();
        let want: u64 = records.iter().map(|r| r.len() as u64 + KEY_BYTES).sum();
        let room = self.max_bytes.saturating_sub(self.bytes);
        let max_bytes = self.max_bytes;
        let held = self.bytes;
        let db = self.db().map_err(StoreError::Failed)?;
        let result = guarded("append", || {
            let tx = db.begin_write()?;
            let outcome = {
                let mut table = tx.open_table(RECORDS)?;
                let mut freed = 0u64;
                let mut evicted = 0u64;
                let mut cursor = evict_from.unwrap_or(first);
                if let Some(from) = evict_from {
                    // Oldest unsent first, until the new records fit (or none is left).
                    let mut next_key = from;
                    while room + freed < want {
                        let oldest = match table.range(next_key..)?.next() {
                            Some(entry) => {
                                let (k, v) = entry?;
                                Some((k.value(), v.value().len() as u64 + KEY_BYTES))
                            }
                            None => None,
                        };
                        let Some((key, size)) = oldest else { break };
                        table.remove(key)?;
                        freed += size;
                        evicted += 1;
                        next_key = key + 1;
                    }
                    cursor = next_key;
                }
                let mut space = max_bytes.saturating_sub(held.saturating_sub(freed));
                let mut taken = 0usize;
                let mut written = 0u64;
                for (record, key) in records.iter().zip(first..) {
                    let size = record.len() as u64 + KEY_BYTES;
                    if size > space {
                        break;
                    }
                    table.insert(key, record.as_slice())?;
                    space -= size;
                    written += size;
                    taken += 1;
                }
                let lowest = table.first()?.map(|(k, _)| k.value());
                (written, freed, taken, evicted, cursor, lowest)
            };
            tx.commit()?;
            Ok(outcome)
        });
        match result {
            Ok((written, freed, taken, evicted, cursor, lowest)) => {
                self.bytes = self.bytes.saturating_sub(freed) + written;
                self.records = self.records.saturating_sub(evicted) + taken as u64;
                self.next = first + taken as u64;
                self.first = lowest.unwrap_or(self.next);
                self.write_meta();
                Ok(Appended {
                    first,
                    taken,
                    evicted,
                    cursor,
                })
            }
            Err(why) => Err(self.broke(why)),
        }
    }

    /// Up to `limit` records from number `from` on, in order, each decoded or with why not.
    pub(crate) fn read(&mut self, from: u64, limit: usize) -> Result<Vec<ReadRecord>, StoreError> {
        let db = self.db().map_err(StoreError::Failed)?;
        let result = guarded("read", || {
            let tx = db.begin_read()?;
            let table = tx.open_table(RECORDS)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for entry in table.range(from..)?.take(limit) {
                let (k, v) = entry?;
                let key = k.value();
                out.push((key, decode(key, v.value())));
            }
            Ok(out)
        });
        result.map_err(|why| self.broke(why))
    }

    /// Removes the records numbered `keys`, in one commit.
    pub(crate) fn remove(&mut self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let db = self.db().map_err(StoreError::Failed)?;
        let result = guarded("remove", || {
            let tx = db.begin_write()?;
            let (freed, removed, first) = {
                let mut table = tx.open_table(RECORDS)?;
                let mut freed = 0u64;
                let mut removed = 0u64;
                for key in keys {
                    if let Some(v) = table.remove(key)? {
                        freed += v.value().len() as u64 + KEY_BYTES;
                        removed += 1;
                    }
                }
                let first = table.first()?.map(|(k, _)| k.value());
                (freed, removed, first)
            };
            tx.commit()?;
            Ok((freed, removed, first))
        });
        match result {
            Ok((freed, removed, first)) => {
                self.bytes = self.bytes.saturating_sub(freed);
                self.records = self.records.saturating_sub(removed);
                self.first = first.unwrap_or(self.next);
                self.write_meta();
                self.compact_if_sparse()
            }
            Err(why) => Err(self.broke(why)),
        }
    }

    /// The database file's length (0 if it cannot be read).
    fn file_len(&self) -> u64 {
        fs::metadata(self.folder.join(DB_FILE)).map_or(0, |m| m.len())
    }

    /// Gives the disk back after a backlog: compacts the file when it is larger than
    /// [`COMPACT_ABOVE`] and mostly free space. Costs one `stat` when it is not.
    fn compact_if_sparse(&mut self) -> Result<(), StoreError> {
        let len = self.file_len();
        if len <= COMPACT_ABOVE
            || self.bytes.saturating_mul(COMPACT_SHARE) >= len
            || len < self.compacted_len.saturating_mul(2)
            || self
                .compacted_at
                .is_some_and(|at| at.elapsed() < COMPACT_EVERY)
        {
            return Ok(());
        }
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| db.compact()));
        self.compacted_at = Some(Instant::now());
        match result {
            Ok(result) => {
                self.compacted_len = self.file_len();
                match result {
                    Ok(_) => tracing::debug!(
                        target: "tower_telemetry",
                        spool = %self.folder.display(),
                        before = len,
                        after = self.compacted_len,
                        records = self.records,
                        took = ?started.elapsed(),
                        "telemetry spool compacted"
                    ),
                    // Nothing is lost: the file stays as large as it was.
                    Err(e) => tracing::debug!(
                        target: "tower_telemetry",
                        spool = %self.folder.display(),
                        error = %e,
                        "telemetry spool not compacted"
                    ),
                }
                Ok(())
            }
            Err(_) => Err(self.broke("compaction: the store panicked".into())),
        }
    }

    /// Syncs what was written since the last sync (the interval's deadline passed).
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if !self.clock.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        let path = self.folder.join(DB_FILE);
        // A second descriptor of the same file: `fsync` syncs the file, whoever wrote it.
        let synced = File::open(&path).and_then(|f| f.sync_data());
        match synced {
            Ok(()) => {
                self.clock.synced();
                Ok(())
            }
            Err(e) => {
                // Tried again an interval later, not at once.
                *lock(&self.clock.last) = Instant::now();
                Err(StoreError::Failed(format!(
                    "spool {}: cannot sync: {e}",
                    self.folder.display()
                )))
            }
        }
    }

    /// Copies the intact records of the moved-aside file into this (fresh) store, keeping
    /// their numbers; how many were copied and how many the `meta` file says are missing.
    fn refill(&mut self, moved: &Path) -> Result<(u64, u64), String> {
        let hint = self.read_meta();
        let found = salvage(moved).map_err(|e| e.to_string())?;
        // Records below the hint's first were removed before the damage (delivered or
        // settled): a stale copy left in a freed page must not come back.
        let lowest = hint.map_or(0, |(first, _)| first);
        let found: Vec<(u64, Vec<u8>)> = found.into_iter().filter(|(k, _)| *k >= lowest).collect();
        let db = self.db()?;
        let copied = found.len() as u64;
        guarded("refill", || {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(RECORDS)?;
                for (key, record) in &found {
                    table.insert(*key, record.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        self.count()?;
        // The hint's next record, or past what was found.
        let expected = match hint {
            Some((first, next)) => next.max(self.next).saturating_sub(first),
            None => copied,
        };
        Ok((copied, expected.saturating_sub(copied)))
    }

    /// The `meta` file: the first and next record numbers, as of the last commit. A hint for
    /// [`refill`](Self::refill): written without a sync, checked by its CRC.
    fn write_meta(&mut self) {
        let Some(meta) = &mut self.meta else { return };
        let mut buf = Vec::with_capacity(24);
        buf.extend_from_slice(&META_MAGIC);
        buf.extend_from_slice(&self.first.to_le_bytes());
        buf.extend_from_slice(&self.next.to_le_bytes());
        let sum = crc32fast::hash(&buf);
        buf.extend_from_slice(&sum.to_le_bytes());
        let _ = meta
            .seek(SeekFrom::Start(0))
            .and_then(|_| meta.write_all(&buf));
    }

    fn read_meta(&mut self) -> Option<(u64, u64)> {
        let meta = self.meta.as_mut()?;
        let mut buf = [0u8; 24];
        meta.seek(SeekFrom::Start(0)).ok()?;
        meta.read_exact(&mut buf).ok()?;
        let sum = u32::from_le_bytes(buf[20..24].try_into().ok()?);
        if buf[..4] != META_MAGIC || crc32fast::hash(&buf[..20]) != sum {
            return None;
        }
        let first = u64::from_le_bytes(buf[4..12].try_into().ok()?);
        let next = u64::from_le_bytes(buf[12..20].try_into().ok()?);
        Some((first, next))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing writes nothing new; what the interval has not synced yet is synced now, so
        // a graceful stop leaves the spool on the disk.
        if let Some(db) = self.db.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| drop(db)));
            if matches!(self.clock.mode, SpoolSync::Interval(_)) {
                let _ = self.sync();
            }
        }
    }
}

/// Opens the database, or says why not (a panic in redb included).
fn open_db(path: &Path, clock: &Arc<SyncClock>) -> Result<Database, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| e.to_string())?;
    let clock = clock.clone();
    let db = guarded("open", move || {
        let backend = Backend {
            file: FileBackend::new(file)?,
            clock,
        };
        Ok(redb::Builder::new().create_with_backend(backend)?)
    })?;
    // Make sure the table exists, so that reads never find it missing.
    guarded("open", || {
        let tx = db.begin_write()?;
        tx.open_table(RECORDS)?;
        tx.commit()?;
        Ok(())
    })?;
    Ok(db)
}

/// Moves the file redb cannot open aside (`spool.redb.damaged-<unix seconds>`) and logs why.
fn salvage_file(folder: &Path, path: &Path, why: &str) -> io::Result<Salvaged> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut moved_to = folder.join(format!("{DB_FILE}.damaged-{secs}"));
    let mut n = 1;
    while moved_to.exists() {
        moved_to = folder.join(format!("{DB_FILE}.damaged-{secs}-{n}"));
        n += 1;
    }
    fs::rename(path, &moved_to)?;
    tracing::warn!(
        target: "tower_telemetry",
        spool = %folder.display(),
        moved_to = %moved_to.display(),
        error = %crate::diag::Escaped(why),
        "the telemetry spool could not be opened; moved it aside and salvaging its records into a fresh one"
    );
    Ok(Salvaged {
        moved_to,
        ..Salvaged::default()
    })
}

/// Every intact record found in `path`, read as raw bytes, by number (a frame whose CRC
/// matches; of several copies of one number, the first found). Reads the file in pieces, so
/// a large file costs no more memory than its largest record.
pub(crate) fn salvage(path: &Path) -> io::Result<std::collections::BTreeMap<u64, Vec<u8>>> {
    const CHUNK: usize = 1 << 20;
    let mut file = File::open(path)?;
    let mut found = std::collections::BTreeMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    let mut eof = false;
    let mut pos = 0usize;
    let fill = |file: &mut File, buf: &mut Vec<u8>, eof: &mut bool| -> io::Result<()> {
        let old = buf.len();
        buf.resize(old + CHUNK, 0);
        let n = file.read(&mut buf[old..])?;
        buf.truncate(old + n);
        *eof = n == 0;
        Ok(())
    };
    loop {
        let Some(at) = buf[pos..].windows(4).position(|w| w == MAGIC) else {
            if eof {
                break;
            }
            // Keep a possible partial magic at the end.
            let keep = buf.len().saturating_sub(3).max(pos);
            buf.drain(..keep);
            pos = 0;
            fill(&mut file, &mut buf, &mut eof)?;
            continue;
        };
        let m = pos + at;
        if buf.len() - m < FRAME {
            if eof {
                break;
            }
            buf.drain(..m);
            pos = 0;
            fill(&mut file, &mut buf, &mut eof)?;
            continue;
        }
        let key = u64::from_le_bytes(buf[m + 4..m + 12].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(buf[m + 12..m + 16].try_into().unwrap_or_default()) as usize;
        if len > MAX_RECORD {
            pos = m + 1;
            continue;
        }
        if buf.len() - m < FRAME + len {
            if eof {
                pos = m + 1;
                continue;
            }
            buf.drain(..m);
            pos = 0;
            while !eof && buf.len() < FRAME + len {
                fill(&mut file, &mut buf, &mut eof)?;
            }
            continue;
        }
        let record = &buf[m..m + FRAME + len];
        if unframe(key, record).is_ok() {
            found.entry(key).or_insert_with(|| record.to_vec());
            pos = m + FRAME + len;
        } else {
            pos = m + 1;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props;

    fn folder(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tower-telemetry-store-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn events(n: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|i| Arc::new(Event::new("user.x", props! { "i" => format!("{i:06}") })))
            .collect()
    }

    #[test]
    fn records_survive_a_reopen_and_removals_free_their_bytes() {
        let dir = folder("reopen");
        let (mut s, salvaged) = Store::open(&dir, 1 << 20, SpoolSync::Always).unwrap();
        assert!(salvaged.is_none());
        let batch = events(10);
        let a = s.append(&batch, None).unwrap();
        assert_eq!((a.first, a.taken), (0, 10));
        s.remove(&[0, 1, 2]).unwrap();
        assert_eq!(s.first(), 3);
        let bytes = s.bytes();
        drop(s);
        let (mut s, _) = Store::open(&dir, 1 << 20, SpoolSync::Always).unwrap();
        assert_eq!((s.first(), s.next(), s.bytes()), (3, 10, bytes));
        let back = s.read(0, 100).unwrap();
        assert_eq!(back.len(), 7);
        let e = back[0].1.as_ref().unwrap();
        assert_eq!(e.id(), batch[3].id());
        assert_eq!(e.timestamp_millis(), batch[3].timestamp_millis());
        let _ = fs::remove_dir_all(&dir);
    }

    /// `n` records of about 1 KB.
    fn big_events(n: usize) -> Vec<Arc<Event>> {
        let pad = "x".repeat(1000);
        (0..n)
            .map(|i| Arc::new(Event::new("user.x", props! { "i" => i, "pad" => pad })))
            .collect()
    }

    #[test]
    fn a_drained_backlog_gives_its_disk_back_and_a_spool_that_keeps_up_is_left_alone() {
        let dir = folder("compact");
        let (mut s, _) = Store::open(&dir, 1 << 30, SpoolSync::Never).unwrap();
        // Keeping up: 100 records written and removed, 50 times; never compacted.
        for _ in 0..50 {
            let a = s.append(&big_events(100), None).unwrap();
            let keys: Vec<u64> = (a.first..a.first + a.taken as u64).collect();
            s.remove(&keys).unwrap();
        }
        assert!(s.file_len() < COMPACT_ABOVE, "{}", s.file_len());
        assert_eq!(s.compacted_len, 0);
        // A backlog of 12 000 records (≈ 12 MB): the file grows well past them...
        let mut keys = Vec::new();
        for _ in 0..120 {
            let a = s.append(&big_events(100), None).unwrap();
            keys.extend(a.first..a.first + a.taken as u64);
        }
        let full = s.file_len();
        assert!(full > 2 * s.bytes() && full > COMPACT_ABOVE, "{full}");
        // ...and shrinks as it drains: compacted once nearly empty.
        for chunk in keys.chunks(500) {
            s.remove(chunk).unwrap();
        }
        assert_eq!((s.records(), s.bytes()), (0, 0));
        let after = s.file_len();
        assert!(s.compacted_at.is_some());
        assert!(
            after < COMPACT_ABOVE && after < full / 5,
            "{full} -> {after}"
        );
        // Still a working store, and the next backlog's records come back intact.
        let batch = big_events(10);
        let a = s.append(&batch, None).unwrap();
        let back = s.read(a.first, 100).unwrap();
        assert_eq!(back.len(), 10);
        assert_eq!(back[9].1.as_ref().unwrap().id(), batch[9].id());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_large_sparse_file_left_by_an_earlier_process_shrinks_when_opened() {
        let dir = folder("compact-open");
        let (mut s, _) = Store::open(&dir, 1 << 30, SpoolSync::Never).unwrap();
        let mut keys = Vec::new();
        for _ in 0..120 {
            let a = s.append(&big_events(100), None).unwrap();
            keys.extend(a.first..a.first + a.taken as u64);
        }
        // What compaction would do as it drains is kept from happening: the file stays large.
        s.compacted_len = u64::MAX / 2;
        let (left, delivered) = keys.split_at(5);
        s.remove(delivered).unwrap();
        let large = s.file_len();
        assert!(large > COMPACT_ABOVE, "{large}");
        drop(s);
        let (mut s, _) = Store::open(&dir, 1 << 30, SpoolSync::Never).unwrap();
        assert!(s.file_len() < 2 << 20, "{large} -> {}", s.file_len());
        assert_eq!(s.records(), 5);
        let back: Vec<u64> = s.read(0, 100).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(back, left);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = folder("lock");
        let (_s, _) = Store::open(&dir, 1 << 20, SpoolSync::Never).unwrap();
        let err = Store::open(&dir, 1 << 20, SpoolSync::Never).unwrap_err();
        assert!(matches!(err, StoreError::InUse(_)), "{err}");
        assert!(
            err.to_string().contains("in use by another process (pid "),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_bound_takes_a_prefix_or_evicts_the_oldest_unsent() {
        let dir = folder("bound");
        let one = frame(0, &encode_event(&events(1)[0])).len() as u64 + KEY_BYTES;
        let max = (64 << 10).max(one * 10);
        let per = max / one;
        let (mut s, _) = Store::open(&dir, max, SpoolSync::Never).unwrap();
        let a = s.append(&events(per as usize + 5), None).unwrap();
        assert!(a.taken as u64 <= per && a.taken as u64 >= per - 2, "{a:?}");
        let more = s.append(&events(3), None).unwrap();
        assert_eq!(more.taken, 0, "full: nothing taken without eviction");
        let e = s.append(&events(3), Some(2)).unwrap();
        assert_eq!((e.taken, e.evicted, e.cursor), (3, 3, 5));
        let kept: Vec<u64> = s.read(0, 5).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(kept, [0, 1, 5, 6, 7], "records before the cursor stay");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_record_is_reported_and_a_truncated_file_salvaged() {
        let dir = folder("damage");
        let (mut s, _) = Store::open(&dir, 1 << 30, SpoolSync::Always).unwrap();
        s.append(&events(300), None).unwrap();
        drop(s);
        let path = dir.join(DB_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes
            .windows(4)
            .rposition(|w| w == MAGIC)
            .expect("a record in the file");
        bytes[at + FRAME + 5] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (mut s, salvaged) = Store::open(&dir, 1 << 30, SpoolSync::Always).unwrap();
        assert!(
            salvaged.is_none(),
            "redb opens it; the record's CRC finds the damage"
        );
        let back = s.read(0, 1000).unwrap();
        assert_eq!(back.len(), 300);
        assert_eq!(back.iter().filter(|r| r.1.is_err()).count(), 1);
        drop(s);

        // Cut the file in the middle of a record: redb cannot open it any more.
        let bytes = fs::read(&path).unwrap();
        let first = bytes.windows(4).position(|w| w == MAGIC).unwrap();
        fs::write(&path, &bytes[..first + FRAME + 3]).unwrap();
        let (s, salvaged) = Store::open(&dir, 1 << 30, SpoolSync::Always).unwrap();
        let salvaged = salvaged.expect("salvaged");
        assert!(salvaged.moved_to.exists());
        assert_eq!(salvaged.records + salvaged.lost, 300, "{salvaged:?}");
        assert_eq!(s.records, salvaged.records);
        let _ = fs::remove_dir_all(&dir);
    }
}
