//! The durable log partition: entries keyed by big-endian index.
//!
//! Today the single-member log appends every mutating request here and
//! fsyncs before anything is applied or acknowledged; raft will keep its log
//! in the same partition with the same entry layout:
//!
//! ```text
//! key:   index (8 B, BE)
//! value: version=1 (1 B) | term (8 B, BE) | kind (1 B) | data ...
//! ```
//! Invariant: indexes are contiguous from `first_index` to `last_index`.

use std::ops::Bound;

use super::{Backend, Batch, Partition, ReadView, Result, StorageError};

const ENTRY_VERSION: u8 = 1;
const ENTRY_HEADER_LEN: usize = 10;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An encoded `concordpb.InternalRequest`.
    Request = 0,
    /// A no-op (a new leader's first entry).
    Empty = 1,
    /// A raft configuration change (`concord_raft::ConfChange` encoded).
    ConfChange = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

fn corrupt(index: u64, why: &str) -> StorageError {
    StorageError::Engine(format!("corrupt log entry {index}: {why}"))
}

impl LogEntry {
    pub fn key(index: u64) -> Vec<u8> {
        index.to_be_bytes().to_vec()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ENTRY_HEADER_LEN + self.data.len());
        v.push(ENTRY_VERSION);
        v.extend_from_slice(&self.term.to_be_bytes());
        v.push(self.kind as u8);
        v.extend_from_slice(&self.data);
        v
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        let index = u64::from_be_bytes(
            key.try_into()
                .map_err(|_| corrupt(0, "log key is not 8 bytes"))?,
        );
        if value.len() < ENTRY_HEADER_LEN || value[0] != ENTRY_VERSION {
            return Err(corrupt(index, "bad header"));
        }
        let term = u64::from_be_bytes(value[1..9].try_into().map_err(|_| corrupt(index, "term"))?);
        let kind = match value[9] {
            0 => EntryKind::Request,
            1 => EntryKind::Empty,
            2 => EntryKind::ConfChange,
            _ => return Err(corrupt(index, "unknown kind")),
        };
        Ok(Self {
            index,
            term,
            kind,
            data: value[ENTRY_HEADER_LEN..].to_vec(),
        })
    }
}

/// Adds `entries` to `batch`.
pub fn append(batch: &mut Batch, entries: &[LogEntry]) {
    for e in entries {
        batch.put(Partition::Log, LogEntry::key(e.index), e.encode());
    }
}

/// Adds deletes of every entry in `[from, to]` to `batch`.
pub fn truncate_prefix(batch: &mut Batch, from: u64, to: u64) {
    for i in from..=to {
        batch.delete(Partition::Log, LogEntry::key(i));
    }
}

/// The first and last index in the log, if it has any entry.
pub fn bounds(view: &dyn ReadView) -> Result<Option<(u64, u64)>> {
    let all = (Bound::Unbounded, Bound::Unbounded);
    let first = view
        .scan(Partition::Log, all.clone(), false)
        .next()
        .transpose()?;
    let last = view.scan(Partition::Log, all, true).next().transpose()?;
    match (first, last) {
        (Some((f, fv)), Some((l, lv))) => {
            let f = LogEntry::decode(&f, &fv)?.index;
            let l = LogEntry::decode(&l, &lv)?.index;
            Ok(Some((f, l)))
        }
        _ => Ok(None),
    }
}

/// Entries with index in `[lo, hi]`, checked to be contiguous.
pub fn entries(view: &dyn ReadView, lo: u64, hi: u64) -> Result<Vec<LogEntry>> {
    let range = (
        Bound::Included(LogEntry::key(lo)),
        Bound::Included(LogEntry::key(hi)),
    );
    let mut out: Vec<LogEntry> = Vec::new();
    for item in view.scan(Partition::Log, range, false) {
        let (k, v) = item?;
        let e = LogEntry::decode(&k, &v)?;
        let want = lo + out.len() as u64;
        if e.index != want {
            return Err(corrupt(
                e.index,
                &format!("gap in the log: expected index {want}"),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// Appends and makes durable in one step (one fsync for the whole slice).
pub fn append_durable(backend: &dyn Backend, entries_: &[LogEntry]) -> Result<()> {
    let mut batch = Batch::new();
    append(&mut batch, entries_);
    backend.write(batch)?;
    backend.persist()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem::MemBackend;

    fn e(index: u64) -> LogEntry {
        LogEntry {
            index,
            term: 1,
            kind: EntryKind::Request,
            data: vec![index as u8; 3],
        }
    }

    #[test]
    fn append_read_truncate() {
        let be = MemBackend::new();
        assert_eq!(bounds(&be).unwrap(), None);
        append_durable(&be, &[e(1), e(2), e(3), e(4)]).unwrap();
        assert_eq!(bounds(&be).unwrap(), Some((1, 4)));
        assert_eq!(entries(&be, 2, 3).unwrap(), [e(2), e(3)]);
        let mut b = Batch::new();
        truncate_prefix(&mut b, 1, 2);
        be.write(b).unwrap();
        assert_eq!(bounds(&be).unwrap(), Some((3, 4)));
        assert!(entries(&be, 1, 4).unwrap_err().to_string().contains("gap"));
    }

    #[test]
    fn corrupt_entries_are_errors() {
        assert!(LogEntry::decode(&[0; 8], &[]).is_err());
        assert!(LogEntry::decode(&[0; 8], &[2; 10]).is_err());
        assert!(LogEntry::decode(&[0; 3], &e(1).encode()).is_err());
        let mut bad_kind = e(1).encode();
        bad_kind[9] = 7;
        assert!(LogEntry::decode(&LogEntry::key(1), &bad_kind).is_err());
    }
}
