//! Entries and a snapshot that raft has accepted but the application has not
//! yet persisted. A leaf used only by `log.rs`.
//!
//! Invariants: `entries[i].index == offset + i`; if a snapshot is present,
//! `offset == snapshot.meta.index + 1`; entries are handed to the
//! application in a `Ready` and dropped once it reports them stable.

use crate::message::{Entry, Snapshot};

#[derive(Debug, Clone, Default)]
pub struct Unstable {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// Index of `entries[0]` (or where the next entry would go).
    pub offset: u64,
}

impl Unstable {
    pub fn new(offset: u64) -> Unstable {
        Unstable {
            snapshot: None,
            entries: Vec::new(),
            offset,
        }
    }

    /// The first index, known only if a snapshot is pending.
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.meta.index + 1)
    }

    /// The last index, if there are unstable entries or a snapshot.
    pub fn maybe_last_index(&self) -> Option<u64> {
        if let Some(last) = self.entries.last() {
            return Some(last.index);
        }
        self.snapshot.as_ref().map(|s| s.meta.index)
    }

    /// The term of entry `i`, if known here.
    pub fn maybe_term(&self, i: u64) -> Option<u64> {
        if i < self.offset {
            return self
                .snapshot
                .as_ref()
                .filter(|s| s.meta.index == i)
                .map(|s| s.meta.term);
        }
        let last = self.maybe_last_index()?;
        if i > last {
            return None;
        }
        Some(self.entries[(i - self.offset) as usize].term)
    }

    /// Entries up to `(i, t)` were persisted: drop them. Ignored if the entry
    /// at `i` was since replaced (its term differs) or is the snapshot.
    pub fn stable_to(&mut self, i: u64, t: u64) {
        let Some(gt) = self.maybe_term(i) else {
            return;
        };
        if gt == t && i >= self.offset {
            self.entries.drain(..(i + 1 - self.offset) as usize);
            self.offset = i + 1;
        }
    }

    pub fn stable_snap_to(&mut self, i: u64) {
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index == i) {
            self.snapshot = None;
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.meta.index + 1;
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    /// Appends `ents`, replacing any suffix they conflict with.
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let after = first.index;
        let end = self.offset + self.entries.len() as u64;
        if after == end {
            self.entries.extend_from_slice(ents);
        } else if after <= self.offset {
            // Replace everything (the log before `offset` was truncated by the caller).
            self.offset = after;
            self.entries = ents.to_vec();
        } else {
            // Keep [offset, after), then append.
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend_from_slice(ents);
        }
        debug_assert!(self
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == self.offset + i as u64));
    }

    /// Entries in `[lo, hi)`, which must lie within the unstable range.
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        let upper = self.offset + self.entries.len() as u64;
        assert!(
            lo >= self.offset && lo <= hi && hi <= upper,
            "unstable.slice[{lo},{hi}) out of bound [{},{upper}]",
            self.offset
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(from: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry::new(t, from + i as u64, vec![]))
            .collect()
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn truncate_and_append_cases() {
        // (offset, existing terms, new first index, new terms) -> (offset, terms)
        let cases: &[(u64, &[u64], u64, &[u64], u64, &[u64])] = &[
            (5, &[1], 6, &[1, 1], 5, &[1, 1, 1]), // append at end
            (5, &[1], 5, &[2, 2], 5, &[2, 2]),    // replace all
            (5, &[1], 4, &[2, 2, 2], 4, &[2, 2, 2]),
            (5, &[1, 1, 1], 6, &[2], 5, &[1, 2]), // truncate the tail
            (5, &[1, 1, 1], 7, &[2, 2], 5, &[1, 1, 2, 2]),
        ];
        for (i, (off, terms, at, new, want_off, want)) in cases.iter().enumerate() {
            let mut u = Unstable::new(*off);
            u.entries = ents(*off, terms);
            u.truncate_and_append(&ents(*at, new));
            assert_eq!(u.offset, *want_off, "case #{i}");
            assert_eq!(u.entries, ents(*want_off, want), "case #{i}");
        }
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut u = Unstable::new(5);
        u.entries = ents(5, &[1, 1]);
        u.stable_to(5, 2); // term mismatch: replaced since
        assert_eq!(u.offset, 5);
        u.stable_to(5, 1);
        assert_eq!(u.offset, 6);
        assert_eq!(u.entries.len(), 1);
        u.stable_to(9, 1); // unknown index
        assert_eq!(u.offset, 6);
    }
}
