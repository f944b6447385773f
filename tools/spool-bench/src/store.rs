//! The three candidate stores behind the operations the spool needs, each mapped onto the
//! store's own durability knobs (see `SyncMode`).

use std::error::Error;
use std::path::Path;

pub type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The spool's durability modes and what each store is told for them:
///
/// | mode | redb | fjall | SQLite (WAL) |
/// | --- | --- | --- | --- |
/// | `always` | every commit `Durability::Immediate` (fsync of the file before `commit` returns) | every write batch `.durability(Some(PersistMode::SyncData))` (fdatasync of the journal before `commit` returns) | `synchronous=FULL` (the WAL is synced at each commit) |
/// | `interval` | commits `Durability::None`; each second an empty `Immediate` commit, which makes all earlier ones durable | batches without durability (written to the OS at commit); each second `Database::persist(PersistMode::SyncData)` | `synchronous=NORMAL` (no sync at commit); each second `PRAGMA wal_checkpoint(PASSIVE)`, which syncs the WAL, copies it into the database and syncs that |
/// | `never` | commits `Durability::None`, never an `Immediate` one until the database is closed | batches without durability, never a `persist` (the journal is still handed to the OS at every commit) | `synchronous=OFF` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Always,
    Interval,
    Never,
}

impl SyncMode {
    pub fn parse(s: &str) -> Option<SyncMode> {
        match s {
            "always" => Some(SyncMode::Always),
            "interval" => Some(SyncMode::Interval),
            "never" => Some(SyncMode::Never),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Interval => "interval",
            SyncMode::Never => "never",
        }
    }
}

pub trait Store {
    /// One transaction (write batch) holding the whole batch, durable per the mode.
    fn append(&mut self, batch: &[(u64, Vec<u8>)]) -> Res<()>;
    /// Up to `n` records with keys `>= from`, in key order (the delivery's read of the head).
    fn read_from(&mut self, from: u64, n: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Res<()>;
    /// One transaction (write batch) removing these keys, durable per the mode.
    fn remove(&mut self, keys: &[u64]) -> Res<()>;
    /// The `interval` mode's explicit fsync.
    fn persist(&mut self) -> Res<()>;
    /// The first and last keys.
    fn bounds(&mut self) -> Res<Option<(u64, u64)>>;
    /// Every record in key order (the replay after a restart).
    fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()>;
    /// The store's own consistency check, where it has one.
    fn check(&mut self) -> Res<String>;
    /// Moves what sits in memory and a write-ahead log into the store's main structure (fjall:
    /// the memtable into a table file; SQLite: a WAL checkpoint; redb has nothing of the kind).
    fn flush(&mut self) -> Res<()> {
        Ok(())
    }
}

pub const STORES: &[&str] = &[
    #[cfg(feature = "redb")]
    "redb",
    #[cfg(feature = "fjall")]
    "fjall",
    #[cfg(feature = "sqlite")]
    "sqlite",
];

/// Opens (creating if needed) the store of kind `kind` in directory `dir`. `checked` asks for the
/// store's verifying open where it has one (redb's `set_check_integrity_on_open`).
pub fn open(kind: &str, dir: &Path, sync: SyncMode, checked: bool) -> Res<Box<dyn Store>> {
    std::fs::create_dir_all(dir)?;
    let _ = (sync, checked);
    match kind {
        #[cfg(feature = "redb")]
        "redb" => Ok(Box::new(redb_store::RedbStore::open(dir, sync, checked)?)),
        #[cfg(feature = "fjall")]
        "fjall" => Ok(Box::new(fjall_store::FjallStore::open(dir, sync)?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Box::new(sqlite_store::SqliteStore::open(dir, sync)?)),
        _ => Err(format!("unknown or not built store {kind:?} (built: {STORES:?})").into()),
    }
}

#[cfg(feature = "redb")]
mod redb_store {
    use super::{Res, Store, SyncMode};
    use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
    use std::path::Path;

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("spool");

    pub struct RedbStore {
        db: redb::Database,
        durability: Durability,
    }

    impl RedbStore {
        pub fn open(dir: &Path, sync: SyncMode, checked: bool) -> Res<Self> {
            let mut builder = redb::Builder::new();
            builder.set_check_integrity_on_open(checked);
            let db = builder.create(dir.join("spool.redb"))?;
            let tx = db.begin_write()?;
            tx.open_table(TABLE)?;
            tx.commit()?;
            let durability = match sync {
                SyncMode::Always => Durability::Immediate,
                SyncMode::Interval | SyncMode::Never => Durability::None,
            };
            Ok(RedbStore { db, durability })
        }
    }

    impl Store for RedbStore {
        fn append(&mut self, batch: &[(u64, Vec<u8>)]) -> Res<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(self.durability)?;
            {
                let mut t = tx.open_table(TABLE)?;
                for (k, v) in batch {
                    t.insert(*k, v.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn read_from(&mut self, from: u64, n: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Res<()> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(TABLE)?;
            for r in t.range(from..)?.take(n) {
                let (k, v) = r?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(())
        }

        fn remove(&mut self, keys: &[u64]) -> Res<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(self.durability)?;
            {
                let mut t = tx.open_table(TABLE)?;
                for k in keys {
                    t.remove(*k)?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn persist(&mut self) -> Res<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            tx.commit()?;
            Ok(())
        }

        fn bounds(&mut self) -> Res<Option<(u64, u64)>> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(TABLE)?;
            let first = t.first()?.map(|(k, _)| k.value());
            let last = t.last()?.map(|(k, _)| k.value());
            Ok(first.zip(last))
        }

        fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(TABLE)?;
            for r in t.range(..)? {
                let (k, v) = r?;
                f(k.value(), v.value())?;
            }
            Ok(())
        }

        fn check(&mut self) -> Res<String> {
            Ok(format!(
                "check_integrity() = {}",
                self.db.check_integrity()?
            ))
        }
    }
}

#[cfg(feature = "fjall")]
mod fjall_store {
    use super::{Res, Store, SyncMode};
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
    use std::path::Path;

    pub struct FjallStore {
        db: Database,
        ks: Keyspace,
        sync: SyncMode,
    }

    fn key(k: &[u8]) -> Res<u64> {
        Ok(u64::from_be_bytes(
            k.try_into()
                .map_err(|_| format!("key of {} bytes", k.len()))?,
        ))
    }

    impl FjallStore {
        pub fn open(dir: &Path, sync: SyncMode) -> Res<Self> {
            let db = Database::builder(dir).open()?;
            let ks = db.keyspace("spool", KeyspaceCreateOptions::default)?;
            Ok(FjallStore { db, ks, sync })
        }

        fn batch(&self) -> fjall::OwnedWriteBatch {
            let b = self.db.batch();
            match self.sync {
                SyncMode::Always => b.durability(Some(PersistMode::SyncData)),
                SyncMode::Interval | SyncMode::Never => b,
            }
        }
    }

    impl Store for FjallStore {
        fn append(&mut self, batch: &[(u64, Vec<u8>)]) -> Res<()> {
            let mut b = self.batch();
            for (k, v) in batch {
                b.insert(&self.ks, k.to_be_bytes().as_slice(), v.as_slice());
            }
            b.commit()?;
            Ok(())
        }

        fn read_from(&mut self, from: u64, n: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Res<()> {
            for g in self.ks.range(from.to_be_bytes()..).take(n) {
                let (k, v) = g.into_inner()?;
                out.push((key(&k)?, v.to_vec()));
            }
            Ok(())
        }

        fn remove(&mut self, keys: &[u64]) -> Res<()> {
            let mut b = self.batch();
            for k in keys {
                b.remove(&self.ks, k.to_be_bytes().as_slice());
            }
            b.commit()?;
            Ok(())
        }

        fn persist(&mut self) -> Res<()> {
            self.db.persist(PersistMode::SyncData)?;
            Ok(())
        }

        fn bounds(&mut self) -> Res<Option<(u64, u64)>> {
            let first = match self.ks.first_key_value() {
                Some(g) => Some(key(&g.into_inner()?.0)?),
                None => None,
            };
            let last = match self.ks.last_key_value() {
                Some(g) => Some(key(&g.into_inner()?.0)?),
                None => None,
            };
            Ok(first.zip(last))
        }

        fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
            for g in self.ks.iter() {
                let (k, v) = g.into_inner()?;
                f(key(&k)?, &v)?;
            }
            Ok(())
        }

        fn check(&mut self) -> Res<String> {
            Ok("none (fjall has no integrity check)".into())
        }

        fn flush(&mut self) -> Res<()> {
            self.ks.rotate_memtable_and_wait()?;
            Ok(())
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_store {
    use super::{Res, Store, SyncMode};
    use rusqlite::{Connection, params};
    use std::path::Path;

    pub struct SqliteStore {
        conn: Connection,
    }

    impl SqliteStore {
        pub fn open(dir: &Path, sync: SyncMode) -> Res<Self> {
            let conn = Connection::open(dir.join("spool.sqlite"))?;
            let synchronous = match sync {
                SyncMode::Always => "FULL",
                SyncMode::Interval => "NORMAL",
                SyncMode::Never => "OFF",
            };
            conn.execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous};
                 CREATE TABLE IF NOT EXISTS spool(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
            ))?;
            Ok(SqliteStore { conn })
        }
    }

    impl Store for SqliteStore {
        fn append(&mut self, batch: &[(u64, Vec<u8>)]) -> Res<()> {
            let tx = self.conn.transaction()?;
            {
                let mut st =
                    tx.prepare_cached("INSERT INTO spool(seq, payload) VALUES (?1, ?2)")?;
                for (k, v) in batch {
                    st.execute(params![*k as i64, v])?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn read_from(&mut self, from: u64, n: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Res<()> {
            let mut st = self.conn.prepare_cached(
                "SELECT seq, payload FROM spool WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![from as i64, n as i64])?;
            while let Some(row) = rows.next()? {
                out.push((row.get::<_, i64>(0)? as u64, row.get(1)?));
            }
            Ok(())
        }

        fn remove(&mut self, keys: &[u64]) -> Res<()> {
            let tx = self.conn.transaction()?;
            {
                let mut st = tx.prepare_cached("DELETE FROM spool WHERE seq = ?1")?;
                for k in keys {
                    st.execute(params![*k as i64])?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn persist(&mut self) -> Res<()> {
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        }

        fn bounds(&mut self) -> Res<Option<(u64, u64)>> {
            let (a, b): (Option<i64>, Option<i64>) =
                self.conn
                    .query_row("SELECT min(seq), max(seq) FROM spool", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
            Ok(a.zip(b).map(|(a, b)| (a as u64, b as u64)))
        }

        fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
            let mut st = self
                .conn
                .prepare("SELECT seq, payload FROM spool ORDER BY seq")?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                let k = row.get::<_, i64>(0)? as u64;
                let v = row.get_ref(1)?.as_blob()?;
                f(k, v)?;
            }
            Ok(())
        }

        fn check(&mut self) -> Res<String> {
            let mut st = self.conn.prepare("PRAGMA integrity_check")?;
            let rows: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            Ok(format!("integrity_check: {}", rows.join("; ")))
        }

        fn flush(&mut self) -> Res<()> {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        }
    }
}
