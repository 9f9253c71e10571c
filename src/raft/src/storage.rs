//! The read-only view of persisted raft state the core needs (`Storage`),
//! and `MemStorage`, an in-memory implementation for tests and the harness.
//!
//! The application writes to its storage itself (after handling a `Ready`);
//! raft only reads. Invariants of every implementation: entries are
//! contiguous from `first_index()` to `last_index()`; `term(first_index()-1)`
//! is the term of the last compacted entry (the snapshot's); an entry, once
//! committed, is never replaced.

use crate::error::StorageError;
use crate::message::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};

/// What a node restarts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

/// Read access to persisted log, hard state and snapshot.
pub trait Storage {
    /// Hard state and configuration to restart from.
    fn initial_state(&self) -> Result<RaftState, StorageError>;
    /// Entries in `[low, high)`, at most `max_size` bytes (always at least one).
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError>;
    /// Term of entry `index`, which must be in `[first_index()-1, last_index()]`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Index of the first entry still in the log (snapshot index + 1).
    fn first_index(&self) -> Result<u64, StorageError>;
    /// Index of the last entry (the snapshot index if the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;
    /// The most recent snapshot; `request_index` is the index the leader
    /// needs at least, `to` the peer it is for. A snapshot whose
    /// configuration does not include `to` is refused by `to`: return
    /// `SnapshotTemporarilyUnavailable` (raft retries later) and take a new one.
    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot, StorageError>;
}

/// Truncates `entries` so their total `byte_size` is at most `max_size`,
/// keeping at least one entry.
pub fn limit_size(entries: &mut Vec<Entry>, max_size: Option<u64>) {
    let Some(max) = max_size else { return };
    if entries.len() <= 1 {
        return;
    }
    let mut size = 0;
    let keep = entries
        .iter()
        .take_while(|e| {
            size += e.byte_size();
            size <= max
        })
        .count();
    entries.truncate(keep.max(1));
}

/// Storage kept in memory. Clone it to model "what is on disk" at a point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemStorage {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// The last discarded entry: `entries[0].index == compacted_index + 1`.
    compacted_index: u64,
    compacted_term: u64,
    entries: Vec<Entry>,
    /// Test knob: `snapshot()` answers SnapshotTemporarilyUnavailable.
    pub snapshot_unavailable: bool,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A storage that starts with `conf_state` as its configuration (bootstrap).
    pub fn new_with_conf_state(conf_state: ConfState) -> MemStorage {
        let mut s = MemStorage {
            conf_state: conf_state.clone(),
            ..MemStorage::default()
        };
        s.snapshot.meta.conf_state = conf_state;
        s
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        assert!(
            hs.term >= self.hard_state.term,
            "persisted term would decrease from {} to {}",
            self.hard_state.term,
            hs.term
        );
        self.hard_state = hs;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Records the configuration the application has applied.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    fn offset(&self) -> u64 {
        self.compacted_index + 1
    }

    /// Every entry in the log (for tests and checkers).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends entries, replacing any conflicting suffix. The first new entry
    /// must not leave a gap. Entries already compacted are skipped.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first_new) = entries.first() else {
            return Ok(());
        };
        for w in entries.windows(2) {
            assert_eq!(
                w[0].index + 1,
                w[1].index,
                "non-contiguous entries to append"
            );
        }
        let first = self.offset();
        let last_new = first_new.index + entries.len() as u64 - 1;
        if last_new < first {
            return Ok(()); // all compacted
        }
        let skip = first.saturating_sub(first_new.index) as usize;
        let entries = &entries[skip..];
        let start = entries[0].index;
        let last = first + self.entries.len() as u64 - 1;
        assert!(
            start <= last + 1,
            "missing log entries: last index {last}, appending at {start}"
        );
        self.entries.truncate((start - first) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Replaces the whole log with `snapshot`.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index <= self.snapshot.meta.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.hard_state.term = self.hard_state.term.max(snapshot.meta.term);
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.conf_state = snapshot.meta.conf_state.clone();
        self.entries.clear();
        self.compacted_index = snapshot.meta.index;
        self.compacted_term = snapshot.meta.term;
        self.snapshot = snapshot;
        Ok(())
    }

    /// Makes a snapshot at `index` (which must be applied, so `<= last_index`).
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<Snapshot, StorageError> {
        if index <= self.snapshot.meta.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        let last = self.last_index()?;
        assert!(
            index <= last,
            "snapshot {index} is out of bound last index {last}"
        );
        if index < self.compacted_index {
            return Err(StorageError::Compacted);
        }
        let term = self.term(index)?;
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(self.snapshot.clone())
    }

    /// Discards entries up to and including `compact_index`, which must be
    /// covered by the current snapshot (so a lagging peer can still catch up).
    pub fn compact(&mut self, compact_index: u64) -> Result<(), StorageError> {
        let first = self.offset();
        if compact_index < first {
            return Err(StorageError::Compacted);
        }
        assert!(
            compact_index <= self.snapshot.meta.index,
            "compact {compact_index} beyond snapshot {}",
            self.snapshot.meta.index
        );
        let term = self.term(compact_index)?;
        self.entries.drain(..(compact_index + 1 - first) as usize);
        self.compacted_index = compact_index;
        self.compacted_term = term;
        Ok(())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        let first = self.offset();
        if low < first {
            return Err(StorageError::Compacted);
        }
        let last = self.last_index()?;
        if high > last + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        let first = self.offset();
        if index < first {
            return Err(StorageError::Compacted);
        }
        self.entries
            .get((index - first) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.offset())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.compacted_index + self.entries.len() as u64)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot, StorageError> {
        let cs = &self.snapshot.meta.conf_state;
        let includes_to = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == to);
        // A snapshot older than the peer's membership would be refused by
        // it: wait for the application to take a newer one.
        if self.snapshot_unavailable || self.snapshot.meta.index < request_index || !includes_to {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(terms: &[(u64, u64)]) -> Vec<Entry> {
        terms
            .iter()
            .map(|&(t, i)| Entry::new(t, i, vec![]))
            .collect()
    }

    #[test]
    fn append_truncates_conflicts() {
        let mut s = MemStorage::new();
        s.append(&ents(&[(1, 1), (1, 2), (1, 3)])).unwrap();
        s.append(&ents(&[(2, 2)])).unwrap();
        assert_eq!(s.all_entries(), &ents(&[(1, 1), (2, 2)])[..]);
        assert_eq!(s.last_index(), Ok(2));
        s.append(&ents(&[(2, 3), (2, 4)])).unwrap();
        assert_eq!(s.last_index(), Ok(4));
    }

    #[test]
    fn term_and_entries_around_compaction() {
        let mut s = MemStorage::new();
        s.append(&ents(&[(1, 1), (2, 2), (3, 3), (3, 4)])).unwrap();
        s.create_snapshot(2, ConfState::from_voters([1]), b"snap".to_vec())
            .unwrap();
        s.compact(2).unwrap();
        assert_eq!(s.first_index(), Ok(3));
        assert_eq!(s.term(2), Ok(2));
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.term(5), Err(StorageError::Unavailable));
        assert_eq!(s.entries(2, 4, None), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 6, None), Err(StorageError::Unavailable));
        assert_eq!(s.entries(3, 5, None).unwrap().len(), 2);
        assert_eq!(s.compact(2), Err(StorageError::Compacted));
        // appending already-compacted entries is a no-op
        s.append(&ents(&[(1, 1), (2, 2)])).unwrap();
        assert_eq!(s.last_index(), Ok(4));
    }

    #[test]
    fn entries_respect_max_size_but_return_one() {
        let mut s = MemStorage::new();
        s.append(&ents(&[(1, 1), (1, 2), (1, 3)])).unwrap();
        let one = ENTRY;
        assert_eq!(s.entries(1, 4, Some(0)).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, Some(2 * one)).unwrap().len(), 2);
        assert_eq!(s.entries(1, 4, None).unwrap().len(), 3);
    }
    const ENTRY: u64 = crate::message::ENTRY_OVERHEAD_BYTES;

    #[test]
    fn apply_snapshot_replaces_log() {
        let mut s = MemStorage::new();
        s.append(&ents(&[(1, 1), (1, 2)])).unwrap();
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 10,
                term: 3,
                conf_state: ConfState::from_voters([1, 2]),
            },
            data: vec![],
        };
        s.apply_snapshot(snap.clone()).unwrap();
        assert_eq!(s.first_index(), Ok(11));
        assert_eq!(s.last_index(), Ok(10));
        assert_eq!(s.term(10), Ok(3));
        assert_eq!(s.conf_state(), &ConfState::from_voters([1, 2]));
        assert_eq!(s.apply_snapshot(snap), Err(StorageError::SnapshotOutOfDate));
    }
}
