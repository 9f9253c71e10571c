//! The raft log: persisted entries (read through `Storage`) followed by
//! unstable ones (not yet persisted), plus the commit and applied indexes.
//!
//! ```text
//!  first_index            unstable.offset            last_index
//!      |  storage (persisted) |  unstable (in memory)     |
//!      [======================|==========================]
//!             applied <= committed <= last_index
//! ```
//!
//! Invariants: `applied <= committed <= last_index`; `committed` never
//! decreases; an entry at or below `committed` is never replaced.

use crate::error::StorageError;
use crate::message::{Entry, Snapshot};
use crate::storage::{limit_size, Storage};
use crate::unstable::Unstable;

pub struct RaftLog<S: Storage> {
    pub store: S,
    pub unstable: Unstable,
    /// Highest index known to be committed by a quorum.
    pub committed: u64,
    /// Highest index the application has applied.
    pub applied: u64,
    /// Bytes of committed entries per Ready (`max_committed_size_per_ready`).
    pub max_next_ents_size: u64,
}

fn storage_failed(e: StorageError) -> ! {
    panic!("raft storage failed (the member must stop): {e}")
}

impl<S: Storage> RaftLog<S> {
    pub fn new(store: S, max_next_ents_size: u64) -> RaftLog<S> {
        let first = store.first_index().unwrap_or_else(|e| storage_failed(e));
        let last = store.last_index().unwrap_or_else(|e| storage_failed(e));
        RaftLog {
            store,
            unstable: Unstable::new(last + 1),
            committed: first - 1,
            applied: first - 1,
            max_next_ents_size,
        }
    }

    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self
                .store
                .first_index()
                .unwrap_or_else(|e| storage_failed(e)),
        }
    }

    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self
                .store
                .last_index()
                .unwrap_or_else(|e| storage_failed(e)),
        }
    }

    /// Term of entry `i`: Ok(0) if `i` is beyond the log or before the
    /// compaction point; Err(Compacted/Unavailable) if storage lost it.
    pub fn term(&self, i: u64) -> Result<u64, StorageError> {
        let dummy = self.first_index() - 1;
        if i < dummy || i > self.last_index() {
            return Ok(0);
        }
        if let Some(t) = self.unstable.maybe_term(i) {
            return Ok(t);
        }
        match self.store.term(i) {
            Ok(t) => Ok(t),
            Err(e @ (StorageError::Compacted | StorageError::Unavailable)) => Err(e),
            Err(e) => storage_failed(e),
        }
    }

    /// The term of `i`, 0 if it is not available.
    pub fn term_or_zero(&self, i: u64) -> u64 {
        self.term(i).unwrap_or(0)
    }

    pub fn last_term(&self) -> u64 {
        match self.term(self.last_index()) {
            Ok(t) => t,
            Err(e) => panic!("unexpected error getting the last term: {e}"),
        }
    }

    /// Whether entry `i` is in the log (or is its compaction point) with
    /// `term`. An index outside the log never matches, even with term 0
    /// (`term` answers 0 there): a peer's append or snapshot beyond our
    /// log must not pass the consistency check.
    pub fn match_term(&self, i: u64, term: u64) -> bool {
        let in_log = i <= self.last_index() && i + 1 >= self.first_index();
        in_log && self.term(i).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `term`) is at least as up to
    /// date as ours (the voting rule).
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        term > self.last_term() || (term == self.last_term() && last_index >= self.last_index())
    }

    /// The index of the first entry of `ents` that is new or conflicts, 0 if none.
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        ents.iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map_or(0, |e| e.index)
    }

    /// Fast back-off: the largest index `<= index` whose term is `<= term`
    /// (entries above it cannot match a log whose entry `index` has `term`).
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// The follower's side of the consistency check: if our entry `index` has
    /// `log_term`, append `ents` (truncating conflicts) and commit up to
    /// `committed`. Returns the index of the last new entry on success.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with committed entry (committed {})",
                self.committed
            );
            let start = (conflict - (index + 1)) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    /// Appends entries that may replace an uncommitted suffix.
    pub fn append(&mut self, ents: &[Entry]) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        let after = first.index - 1;
        assert!(
            after >= self.committed,
            "after({after}) is out of range [committed({})]",
            self.committed
        );
        assert!(
            after <= self.last_index(),
            "append at {} leaves a gap after last index {}",
            first.index,
            self.last_index()
        );
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    /// Committed entries not yet applied (may include unstable ones: the
    /// application persists a Ready's entries before applying its committed
    /// entries), at most `max_next_ents_size` bytes.
    pub fn next_committed_entries(&self) -> Vec<Entry> {
        let off = (self.applied + 1).max(self.first_index());
        if self.committed + 1 > off {
            match self.slice(off, self.committed + 1, Some(self.max_next_ents_size)) {
                Ok(ents) => ents,
                Err(e) => panic!("unexpected error when getting unapplied entries: {e}"),
            }
        } else {
            Vec::new()
        }
    }

    pub fn has_next_committed_entries(&self) -> bool {
        let off = (self.applied + 1).max(self.first_index());
        self.committed + 1 > off
    }

    pub fn has_pending_snapshot(&self) -> bool {
        self.unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| !s.is_empty())
    }

    /// The snapshot to send to a peer that needs at least `request_index`.
    pub fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot, StorageError> {
        if let Some(s) = &self.unstable.snapshot {
            return Ok(s.clone());
        }
        self.store.snapshot(request_index, to)
    }

    pub fn commit_to(&mut self, to_commit: u64) {
        if self.committed < to_commit {
            assert!(
                self.last_index() >= to_commit,
                "to_commit({to_commit}) is out of range [last_index({})]; was the raft log corrupted, truncated, or lost?",
                self.last_index()
            );
            self.committed = to_commit;
        }
    }

    pub fn applied_to(&mut self, i: u64) {
        if i == 0 {
            return;
        }
        assert!(
            self.committed >= i && i >= self.applied,
            "applied({i}) is out of range [prev_applied({}), committed({})]",
            self.applied,
            self.committed
        );
        self.applied = i;
    }

    pub fn stable_to(&mut self, i: u64, t: u64) {
        self.unstable.stable_to(i, t);
    }

    pub fn stable_snap_to(&mut self, i: u64) {
        self.unstable.stable_snap_to(i);
    }

    /// Commits up to `max_index` if that entry is of `term` (the current
    /// term: raft never commits an earlier term's entry by counting replicas).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term_or_zero(max_index) == term {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        assert!(
            snapshot.meta.index >= self.committed,
            "snapshot {} would move commit {} back",
            snapshot.meta.index,
            self.committed
        );
        self.committed = snapshot.meta.index;
        self.unstable.restore(snapshot);
    }

    /// Entries from `i` to the end, at most `max_size` bytes.
    pub fn entries(&self, i: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        if i > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(i, self.last_index() + 1, max_size)
    }

    /// Every entry (tests and checkers only).
    pub fn all_entries(&self) -> Vec<Entry> {
        match self.entries(self.first_index(), None) {
            Ok(e) => e,
            Err(e) => panic!("cannot read the whole log: {e}"),
        }
    }

    /// Entries in `[lo, hi)`, at most `max_size` bytes (at least one).
    pub fn slice(
        &self,
        lo: u64,
        hi: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        assert!(lo <= hi, "invalid slice {lo} > {hi}");
        let first = self.first_index();
        if lo < first {
            return Err(StorageError::Compacted);
        }
        let last = self.last_index();
        assert!(
            hi <= last + 1,
            "slice[{lo},{hi}) out of bound [{first},{last}]"
        );
        if lo == hi {
            return Ok(Vec::new());
        }
        let mut ents = Vec::new();
        if lo < self.unstable.offset {
            let stored_hi = hi.min(self.unstable.offset);
            match self.store.entries(lo, stored_hi, max_size) {
                Ok(e) => ents = e,
                Err(StorageError::Compacted) => return Err(StorageError::Compacted),
                Err(StorageError::Unavailable) => {
                    panic!("entries[{lo}:{stored_hi}) is unavailable from storage")
                }
                Err(e) => storage_failed(e),
            }
            if (ents.len() as u64) < stored_hi - lo {
                return Ok(ents); // hit the size limit
            }
        }
        if hi > self.unstable.offset {
            let from = lo.max(self.unstable.offset);
            ents.extend_from_slice(self.unstable.slice(from, hi));
        }
        limit_size(&mut ents, max_size);
        Ok(ents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn ents(from: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry::new(t, from + i as u64, vec![]))
            .collect()
    }

    fn log_with(stored: &[u64], unstable: &[u64]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new();
        s.append(&ents(1, stored)).unwrap();
        let mut l = RaftLog::new(s, u64::MAX);
        l.append(&ents(stored.len() as u64 + 1, unstable));
        l
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn maybe_append_cases() {
        // log: 1/1 2/2 3/3 (indexes 1..3, terms 1 2 3), committed 1
        //  (index, log_term, committed, new entries from index+1) -> (result, last, commit)
        let cases: &[(u64, u64, u64, &[u64], Option<u64>, u64, u64)] = &[
            (3, 2, 3, &[4], None, 3, 1),       // term mismatch at 3
            (3, 3, 3, &[], Some(3), 3, 3),     // match, nothing new
            (3, 3, 4, &[4], Some(4), 4, 4),    // append one
            (2, 2, 3, &[4], Some(3), 3, 3),    // conflict at 3 -> truncate
            (1, 1, 2, &[2, 3], Some(3), 3, 2), // all already present
            (0, 0, 9, &[1, 2, 3, 4], Some(4), 4, 4),
        ];
        for (i, &(idx, lt, commit, new, want, last, want_commit)) in cases.iter().enumerate() {
            let mut l = log_with(&[1, 2, 3], &[]);
            l.commit_to(1);
            let got = l.maybe_append(idx, lt, commit, &ents(idx + 1, new));
            assert_eq!(got, want, "case #{i}");
            assert_eq!(l.last_index(), last, "case #{i}");
            assert_eq!(l.committed, want_commit, "case #{i}");
        }
    }

    #[test]
    #[should_panic(expected = "conflicts with committed")]
    fn conflict_with_committed_panics() {
        let mut l = log_with(&[1, 2, 3], &[]);
        l.commit_to(3);
        l.maybe_append(1, 1, 3, &ents(2, &[4, 4]));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn commit_beyond_last_panics() {
        let mut l = log_with(&[1], &[]);
        l.commit_to(5);
    }

    #[test]
    fn find_conflict_by_term_backs_off_whole_terms() {
        // terms by index:    1 2 3 4 5 6 7
        let l = log_with(&[1, 1, 2, 2, 4, 4, 4], &[]);
        assert_eq!(l.find_conflict_by_term(7, 3), (4, 2));
        assert_eq!(l.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(l.find_conflict_by_term(9, 1), (2, 1));
        assert_eq!(l.find_conflict_by_term(3, 0), (0, 0));
    }

    #[test]
    fn slice_spans_storage_and_unstable() {
        let l = log_with(&[1, 1], &[2, 2]);
        assert_eq!(l.slice(1, 5, None).unwrap(), ents(1, &[1, 1, 2, 2]));
        assert_eq!(l.slice(2, 4, None).unwrap(), ents(2, &[1, 2]));
        let one = crate::message::ENTRY_OVERHEAD_BYTES;
        assert_eq!(l.slice(1, 5, Some(3 * one)).unwrap().len(), 3);
        assert_eq!(l.unstable_entries().len(), 2);
    }

    #[test]
    fn next_committed_entries_caps_bytes() {
        let mut l = log_with(&[1, 1, 1], &[]);
        l.max_next_ents_size = 2 * crate::message::ENTRY_OVERHEAD_BYTES;
        l.commit_to(3);
        assert_eq!(l.next_committed_entries().len(), 2);
        l.applied_to(2);
        assert_eq!(l.next_committed_entries().len(), 1);
        l.applied_to(3);
        assert!(!l.has_next_committed_entries());
    }
}
