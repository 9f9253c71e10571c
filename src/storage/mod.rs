//! storage: the durable, ordered byte store under every other module.
//!
//! One job: keep named partitions of `key -> value` bytes, change them only by
//! atomic batches across partitions, read them through ordered scans and stable
//! snapshots, and make them durable only when asked (`persist`). Nothing here
//! knows about revisions, raft or gRPC.
//!
//! Two backends implement [`Backend`]:
//! - [`fjall_backend::FjallBackend`] (production, `tests/`): the fjall LSM.
//! - [`mem::MemBackend`] (simulation, fast tests): ordered maps in memory that
//!   model durability: every write since the last `persist` is lost on
//!   [`mem::MemBackend::crash`].
//!
//! Invariants both backends keep (checked by the conformance suite):
//! - a batch is all-or-nothing, visible to readers at once;
//! - a snapshot never sees writes committed after it was taken;
//! - after `persist` returns, every batch written before it survives a crash;
//! - keys longer than [`KEY_BYTES_MAX`] are refused with a typed error before
//!   they reach the engine (fjall panics on keys of 64 KiB).

#[cfg(not(madsim))]
pub mod fjall_backend;
pub mod log;
pub mod mem;
pub mod raft_log;

#[cfg(test)]
mod conformance;

use std::ops::Bound;

/// Longest key a backend accepts. fjall panics at 65,536 bytes.
pub const KEY_BYTES_MAX: usize = 65_535;

/// The partitions of the store. Each is an ordered map of its own; a batch may
/// touch several atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// Small named values: applied index, current revision, compaction marks,
    /// format version, hard state.
    Meta,
    /// The durable request log, keyed by big-endian entry index.
    Log,
    /// MVCC records keyed by the 17 (or 18) byte revision key.
    Rev,
    /// Per-key revision history: escaped user key + revision -> flags.
    KeyHistory,
    /// Live keys only: user key -> current generation summary.
    KeyLive,
}

impl Partition {
    /// Every partition, in a fixed order.
    pub const ALL: [Partition; 5] = [
        Partition::Meta,
        Partition::Log,
        Partition::Rev,
        Partition::KeyHistory,
        Partition::KeyLive,
    ];

    /// Position in [`Partition::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The on-disk name of the partition.
    pub fn name(self) -> &'static str {
        match self {
            Partition::Meta => "meta",
            Partition::Log => "log",
            Partition::Rev => "rev",
            Partition::KeyHistory => "key_history",
            Partition::KeyLive => "key_live",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storage key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to use data dir {path}: {reason}")]
    ForeignDataDir { path: String, reason: String },
    #[error(
        "data dir {path} has format version {found}; this build reads version {supported} at most"
    )]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error(
        "data dir {path} has format version {found}, written by an older concord before raft; this build reads version {supported} only (no migration: start from an empty data dir)"
    )]
    OlderFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("storage is poisoned by an earlier failed write or fsync; the member must restart")]
    Poisoned,
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// One change inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Partition, Vec<u8>, Vec<u8>),
    Delete(Partition, Vec<u8>),
}

/// An atomic group of changes across partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    bytes: usize,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, p: Partition, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put(p, key, value));
    }

    pub fn delete(&mut self, p: Partition, key: Vec<u8>) {
        self.bytes += key.len();
        self.ops.push(Op::Delete(p, key));
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate payload size (keys + values).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Refuses the whole batch if any key is over the engine's limit, so that
    /// nothing of it is written.
    pub fn check_keys(&self) -> Result<()> {
        for op in &self.ops {
            let key = match op {
                Op::Put(_, k, _) | Op::Delete(_, k) => k,
            };
            check_key(key)?;
        }
        Ok(())
    }
}

pub fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > KEY_BYTES_MAX {
        return Err(StorageError::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// A key range for scans: `(start, end)` bounds over raw bytes.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Every key with the given prefix.
pub fn prefix_range(prefix: &[u8]) -> KeyRange {
    let start = Bound::Included(prefix.to_vec());
    let end = match prefix_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    (start, end)
}

/// The smallest key greater than every key with this prefix, if one exists.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub type KvPair = (Vec<u8>, Vec<u8>);
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + Send + 'a>;

/// Reads over one consistent state: the latest state for a [`Backend`], a
/// frozen one for a snapshot.
pub trait ReadView: Send + Sync {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Ordered scan; `reverse` walks from the end of the range.
    fn scan(&self, p: Partition, range: KeyRange, reverse: bool) -> ScanIter<'_>;
}

/// The durable store. All methods may be called from many tasks at once;
/// writers are expected to be serialised by the caller (the member actor and
/// the compactor never write the same keys).
pub trait Backend: ReadView {
    /// Applies the batch atomically. It is visible at once and durable after
    /// the next [`Backend::persist`].
    fn write(&self, batch: Batch) -> Result<()>;
    /// Makes every batch written so far durable (fsync). A failure poisons the
    /// backend: every later call fails with [`StorageError::Poisoned`].
    fn persist(&self) -> Result<()>;
    /// A stable read view of the current state.
    fn snapshot(&self) -> Box<dyn ReadView>;
    /// Bytes the store occupies (on disk for fjall, in memory for the model).
    fn size_bytes(&self) -> u64;
    /// Writes the sorted, unique `entries` of one partition (`None`: a
    /// delete) after making every earlier batch durable. All or none of
    /// them survive a crash; durable on return. fjall writes them straight
    /// into new tables (no journal, no memtable): much cheaper than a batch
    /// for many scattered keys.
    fn ingest(&self, p: Partition, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        self.persist()?;
        let mut b = Batch::new();
        for (k, v) in entries {
            match v {
                Some(v) => b.put(p, k, v),
                None => b.delete(p, k),
            }
        }
        self.write(b)?;
        self.persist()
    }
    /// Before a clean exit: write in-memory tables to their files so the
    /// next start has no journal to replay. Durability does not depend on
    /// it (`persist` does that); only restart time does.
    fn flush_for_restart(&self) -> Result<()> {
        Ok(())
    }
    /// How long an fsync takes (simulation only: a slow disk is one of the
    /// simulator's faults; the member waits this long, in simulated time,
    /// before a durable write).
    #[cfg(madsim)]
    fn simulated_persist_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
