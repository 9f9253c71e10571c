//! The production backend: one fjall database with one keyspace per
//! [`Partition`], inside a data dir this module owns.
//!
//! Data dir layout (`--data-dir`):
//! ```text
//! <data-dir>/concord.format   "concord data format <N>\n", written first
//! <data-dir>/db/              the fjall database
//! ```
//! A data dir is opened only if it is empty/absent (a new member) or carries a
//! format marker this build understands. Anything else (etcd's `member/`
//! layout, a newer format, unknown files) is refused and never touched.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::{Backend, Batch, KeyRange, Op, Partition, ReadView, Result, ScanIter, StorageError};

/// The on-disk format this build writes and the newest it reads.
/// 2: the log is raft's (hard state, configuration, compaction point).
/// 3: `key_history` is complete only up to `mvcc/live_checkpoint` (the
/// entries after it are replayed from the records on open); a build of
/// format 2 would never write them, so it must not open a format 3 dir.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build opens, upgrading its marker in place: a
/// format 2 dir is a valid format 3 dir (its history is complete).
const FORMAT_OLDEST_READ: u32 = 2;
const FORMAT_FILE: &str = "concord.format";
const FORMAT_PREFIX: &str = "concord data format ";

/// Most journal bytes kept before memtables are flushed to tables.
const JOURNAL_BYTES_MAX: u64 = 64 * 1024 * 1024;

pub struct FjallBackend {
    db: Database,
    keyspaces: Vec<Keyspace>,
    path: PathBuf,
}

fn io_err(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn engine(e: fjall::Error) -> StorageError {
    match e {
        fjall::Error::Poisoned => StorageError::Poisoned,
        other => StorageError::Engine(other.to_string()),
    }
}

/// Checks that `dir` is ours (or new) and returns whether it was new.
fn claim_data_dir(dir: &Path) -> Result<bool> {
    let foreign = |reason: &str| StorageError::ForeignDataDir {
        path: dir.display().to_string(),
        reason: reason.to_string(),
    };
    if !dir.exists() {
        return Ok(true);
    }
    if !dir.is_dir() {
        return Err(foreign("it is not a directory"));
    }
    let format_path = dir.join(FORMAT_FILE);
    if format_path.exists() {
        let text = fs::read_to_string(&format_path).map_err(|e| io_err(&format_path, e))?;
        let version = text
            .strip_prefix(FORMAT_PREFIX)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| foreign("its concord.format marker is unreadable"))?;
        if version > FORMAT_VERSION {
            return Err(StorageError::NewerFormat {
                path: dir.display().to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < FORMAT_OLDEST_READ {
            return Err(StorageError::OlderFormat {
                path: dir.display().to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < FORMAT_VERSION {
            write_format_marker(dir)?;
        }
        return Ok(false);
    }
    if dir.join("member").exists() {
        return Err(foreign(
            "it holds an etcd data dir (member/wal, member/snap: bbolt and WAL formats), which concord does not read",
        ));
    }
    let mut entries = fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    if entries.next().is_some() {
        return Err(foreign(
            "it is not empty and has no concord.format marker; it was written by another program",
        ));
    }
    Ok(true)
}

fn write_format_marker(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(format!("{FORMAT_PREFIX}{FORMAT_VERSION}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    let dst = dir.join(FORMAT_FILE);
    fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

impl FjallBackend {
    /// Opens (or creates) the store in `data_dir`, refusing directories that
    /// belong to another program or to a newer concord.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let is_new = claim_data_dir(data_dir)?;
        if is_new {
            write_format_marker(data_dir)?;
        }
        let db_path = data_dir.join("db");
        let db = Database::builder(&db_path)
            .worker_threads(2)
            // Bounds the journal a crash restart replays (fjall's minimum).
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .open()
            .map_err(engine)?;
        let mut keyspaces = Vec::with_capacity(Partition::ALL.len());
        for p in Partition::ALL {
            keyspaces.push(
                db.keyspace(p.name(), KeyspaceCreateOptions::default)
                    .map_err(engine)?,
            );
        }
        Ok(Self {
            db,
            keyspaces,
            path: data_dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ks(&self, p: Partition) -> &Keyspace {
        &self.keyspaces[p.index()]
    }
}

fn scan_iter<'a>(iter: fjall::Iter, reverse: bool) -> ScanIter<'a> {
    let map = |g: fjall::Guard| {
        g.into_inner()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .map_err(engine)
    };
    if reverse {
        Box::new(iter.rev().map(map))
    } else {
        Box::new(iter.map(map))
    }
}

impl ReadView for FjallBackend {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>> {
        super::check_key(key)?;
        Ok(self.ks(p).get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(&self, p: Partition, range: KeyRange, reverse: bool) -> ScanIter<'_> {
        scan_iter(self.ks(p).range(range), reverse)
    }
}

struct FjallSnapshot {
    snap: fjall::Snapshot,
    keyspaces: Vec<Keyspace>,
}

impl FjallSnapshot {
    fn ks(&self, p: Partition) -> &Keyspace {
        &self.keyspaces[p.index()]
    }
}

impl ReadView for FjallSnapshot {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>> {
        super::check_key(key)?;
        Ok(self
            .snap
            .get(self.ks(p), key)
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, p: Partition, range: KeyRange, reverse: bool) -> ScanIter<'_> {
        scan_iter(self.snap.range(self.ks(p), range), reverse)
    }
}

impl Backend for FjallBackend {
    fn write(&self, batch: Batch) -> Result<()> {
        batch.check_keys()?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        for op in batch.into_ops() {
            match op {
                Op::Put(p, k, v) => b.insert(self.ks(p), k, v),
                Op::Delete(p, k) => b.remove(self.ks(p), k),
            }
        }
        b.commit().map_err(engine)
    }

    fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData).map_err(engine)
    }

    fn ingest(&self, p: Partition, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        for (k, _) in &entries {
            super::check_key(k)?;
        }
        debug_assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0),
            "unsorted ingestion"
        );
        self.persist()?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut ingestion = self.ks(p).start_ingestion().map_err(engine)?;
        for (k, v) in entries {
            match v {
                Some(v) => ingestion.write(k, v).map_err(engine)?,
                None => ingestion.write_tombstone(k).map_err(engine)?,
            }
        }
        ingestion.finish().map_err(engine)
    }

    fn snapshot(&self) -> Box<dyn ReadView> {
        Box::new(FjallSnapshot {
            snap: self.db.snapshot(),
            keyspaces: self.keyspaces.clone(),
        })
    }

    fn size_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    fn flush_for_restart(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll).map_err(engine)?;
        for ks in &self.keyspaces {
            ks.rotate_memtable_and_wait().map_err(engine)?;
        }
        // The live-key summaries are what a restart reads: merge their runs
        // so it reads each live key once, not once per overwrite.
        self.keyspaces[Partition::KeyLive.index()]
            .major_compact()
            .map_err(engine)?;
        Ok(())
    }
}
