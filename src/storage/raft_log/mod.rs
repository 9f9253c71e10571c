//! The raft log, hard state and configuration on a [`Backend`]: what the
//! pure raft core reads through [`concord_raft::Storage`], and what the
//! member writes after each `Ready` (always into a [`Batch`] that the member
//! commits and makes durable before it sends or applies).
//!
//! ```text
//! Log   index (8 B BE) -> LogEntry (version | term | kind | data), contiguous
//! Meta  raft/hard_state -> term | vote | commit            (3 × 8 B BE)
//!       raft/compacted  -> index | term of the last entry dropped from the log
//!       raft/conf_state -> the configuration as of the applied index
//! ```
//! Invariants (asserted): entries are contiguous from `compacted.index + 1`
//! to `last_index`; the hard state's term never decreases; a committed
//! entry is never truncated.
//!
//! The newest entries (up to [`CACHE_BYTES_MAX`]) are also kept in memory:
//! raft asks for terms and entries near the end of its log on every append
//! and acknowledgement, and answering those from the LSM cost a lookup and
//! a decode each. The cache is always a suffix of the log ending at
//! `last_index`; older entries are read from the backend.

use std::collections::VecDeque;
use std::sync::Arc;

use concord_raft::{
    ConfState, Entry, EntryKind as RaftKind, HardState, RaftState, Snapshot, SnapshotMeta,
    StorageError as RaftError,
};

use super::log::{self, EntryKind, LogEntry};
use super::{Backend, Batch, Partition, ReadView, StorageError};

pub const META_HARD_STATE: &[u8] = b"raft/hard_state";
pub const META_COMPACTED: &[u8] = b"raft/compacted";
pub const META_CONF_STATE: &[u8] = b"raft/conf_state";

/// Makes a snapshot of the state machine for a follower (see
/// [`concord_raft::Storage::snapshot`]); set by the member.
pub type Snapshotter = Arc<dyn Fn(u64, u64) -> Result<Snapshot, RaftError> + Send + Sync>;

/// Most entry bytes (as [`Entry::byte_size`] counts them) kept in memory.
pub const CACHE_BYTES_MAX: u64 = 32 * 1024 * 1024;

pub struct RaftLog {
    backend: Arc<dyn Backend>,
    hard_state: HardState,
    conf_state: ConfState,
    /// The last entry dropped from the log (index, term); (0, 0) if none.
    compacted: (u64, u64),
    last_index: u64,
    snapshotter: Option<Snapshotter>,
    /// The newest entries, `cache_first()..=last_index`.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    cache_bytes_max: u64,
}

fn engine(e: StorageError) -> RaftError {
    RaftError::Other(e.to_string())
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Engine(format!("corrupt raft state: {what}"))
}

fn u64s<const N: usize>(v: &[u8], what: &str) -> Result<[u64; N], StorageError> {
    if v.len() != 8 * N {
        return Err(corrupt(what));
    }
    let mut out = [0u64; N];
    for (i, o) in out.iter_mut().enumerate() {
        let b: [u8; 8] = v[8 * i..8 * i + 8].try_into().map_err(|_| corrupt(what))?;
        *o = u64::from_be_bytes(b);
    }
    Ok(out)
}

fn encode_u64s(xs: &[u64]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// `auto_leave | n voters | voters | n learners | learners | ...`, all u64 BE.
pub fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    let mut v = vec![u64::from(cs.auto_leave)];
    for list in [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ] {
        v.push(list.len() as u64);
        v.extend_from_slice(list);
    }
    encode_u64s(&v)
}

pub fn decode_conf_state(b: &[u8]) -> Result<ConfState, StorageError> {
    if !b.len().is_multiple_of(8) {
        return Err(corrupt("conf state length"));
    }
    let xs: Vec<u64> = b
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let mut it = xs.into_iter();
    let auto_leave = it.next().ok_or_else(|| corrupt("conf state"))? != 0;
    let mut lists: Vec<Vec<u64>> = Vec::with_capacity(4);
    for _ in 0..4 {
        let n = it.next().ok_or_else(|| corrupt("conf state"))? as usize;
        let list: Vec<u64> = it.by_ref().take(n).collect();
        if list.len() != n {
            return Err(corrupt("conf state list"));
        }
        lists.push(list);
    }
    if it.next().is_some() {
        return Err(corrupt("conf state trailing bytes"));
    }
    let learners_next = lists.pop().unwrap_or_default();
    let voters_outgoing = lists.pop().unwrap_or_default();
    let learners = lists.pop().unwrap_or_default();
    let voters = lists.pop().unwrap_or_default();
    Ok(ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
    })
}

/// A raft entry as persisted.
pub fn to_log_entry(e: &Entry) -> LogEntry {
    let kind = match e.kind {
        RaftKind::ConfChange => EntryKind::ConfChange,
        RaftKind::Normal if e.data.is_empty() => EntryKind::Empty,
        RaftKind::Normal => EntryKind::Request,
    };
    LogEntry {
        index: e.index,
        term: e.term,
        kind,
        data: e.data.clone(),
    }
}

/// A persisted entry as raft's entry.
pub fn to_raft_entry(e: LogEntry) -> Entry {
    Entry {
        term: e.term,
        index: e.index,
        kind: match e.kind {
            EntryKind::ConfChange => RaftKind::ConfChange,
            EntryKind::Request | EntryKind::Empty => RaftKind::Normal,
        },
        data: e.data,
    }
}

impl RaftLog {
    /// Opens the raft state on `backend` (empty for a new member).
    pub fn open(backend: Arc<dyn Backend>) -> Result<Self, StorageError> {
        let view = backend.as_ref();
        let hard_state = match view.get(Partition::Meta, META_HARD_STATE)? {
            Some(v) => {
                let [term, vote, commit] = u64s::<3>(&v, "hard state")?;
                HardState { term, vote, commit }
            }
            None => HardState::default(),
        };
        let compacted = match view.get(Partition::Meta, META_COMPACTED)? {
            Some(v) => {
                let [i, t] = u64s::<2>(&v, "compacted")?;
                (i, t)
            }
            None => (0, 0),
        };
        let conf_state = match view.get(Partition::Meta, META_CONF_STATE)? {
            Some(v) => decode_conf_state(&v)?,
            None => ConfState::default(),
        };
        let last_index = match log::bounds(view)? {
            Some((first, last)) => {
                if first != compacted.0 + 1 {
                    return Err(corrupt(&format!(
                        "log starts at {first}, after compaction at {}",
                        compacted.0
                    )));
                }
                last
            }
            None => compacted.0,
        };
        Ok(Self {
            backend,
            hard_state,
            conf_state,
            compacted,
            last_index,
            snapshotter: None,
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_bytes_max: CACHE_BYTES_MAX,
        })
    }

    pub fn set_snapshotter(&mut self, s: Snapshotter) {
        self.snapshotter = Some(s);
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn bounds(&self) -> (u64, u64) {
        (self.compacted.0 + 1, self.last_index)
    }

    /// Whether this data dir has never held raft state.
    pub fn is_empty(&self) -> bool {
        self.hard_state == HardState::default()
            && self.last_index == 0
            && self.conf_state == ConfState::default()
    }

    /// A new cluster's starting point, on every founding member: the log
    /// begins after index 1 (term 1), whose configuration is `voters`. A
    /// member that joins later has no such point, so the leader must send it
    /// a snapshot, which carries the configuration.
    pub fn bootstrap(&mut self, batch: &mut Batch, voters: ConfState) {
        assert!(self.is_empty(), "bootstrap of a raft log that has state");
        batch.put(
            Partition::Meta,
            META_COMPACTED.to_vec(),
            encode_u64s(&[1, 1]),
        );
        self.compacted = (1, 1);
        self.last_index = 1;
        self.set_conf_state(batch, voters);
        self.set_hard_state(
            batch,
            HardState {
                term: 1,
                vote: 0,
                commit: 1,
            },
        );
    }

    /// Appends entries after a possible conflict: entries at or after the
    /// first new index are replaced.
    pub fn append(&mut self, batch: &mut Batch, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.compacted.0,
            "append at {} into the compacted log (up to {})",
            first.index,
            self.compacted.0
        );
        assert!(
            first.index <= self.last_index + 1,
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index
        );
        assert!(
            first.index > self.hard_state.commit,
            "append at {} would replace committed entries (commit {})",
            first.index,
            self.hard_state.commit
        );
        let new_last = first.index + entries.len() as u64 - 1;
        for i in new_last + 1..=self.last_index {
            batch.delete(Partition::Log, LogEntry::key(i));
        }
        let log_entries: Vec<LogEntry> = entries.iter().map(to_log_entry).collect();
        log::append(batch, &log_entries);
        let keep = first.index.saturating_sub(self.cache_first()) as usize;
        for e in self.cache.drain(keep.min(self.cache.len())..) {
            self.cache_bytes -= e.byte_size();
        }
        for e in entries {
            self.cache_bytes += e.byte_size();
            self.cache.push_back(e.clone());
        }
        self.last_index = new_last;
        self.evict_to(self.cache_bytes_max);
    }

    /// Sets how many entry bytes are kept in memory.
    pub fn set_cache_bytes_max(&mut self, bytes: u64) {
        self.cache_bytes_max = bytes;
        self.evict_to(bytes);
    }

    /// The first index the cache holds (`last_index + 1` when empty).
    fn cache_first(&self) -> u64 {
        self.last_index + 1 - self.cache.len() as u64
    }

    /// Drops the oldest cached entry; false if there was none.
    fn pop_cached(&mut self) -> bool {
        match self.cache.pop_front() {
            Some(e) => {
                self.cache_bytes -= e.byte_size();
                true
            }
            None => false,
        }
    }

    /// Drops the oldest cached entries until at most `bytes` remain.
    fn evict_to(&mut self, bytes: u64) {
        while self.cache_bytes > bytes && self.pop_cached() {}
        debug_assert!(self
            .cache
            .iter()
            .zip(self.cache_first()..)
            .all(|(e, i)| e.index == i));
    }

    pub fn set_hard_state(&mut self, batch: &mut Batch, hs: HardState) {
        assert!(
            hs.term >= self.hard_state.term,
            "hard state term would go back from {} to {}",
            self.hard_state.term,
            hs.term
        );
        batch.put(
            Partition::Meta,
            META_HARD_STATE.to_vec(),
            encode_u64s(&[hs.term, hs.vote, hs.commit]),
        );
        self.hard_state = hs;
    }

    /// Records the configuration as of the entry being applied (in the
    /// applier's batch, with the applied index).
    pub fn set_conf_state(&mut self, batch: &mut Batch, cs: ConfState) {
        batch.put(
            Partition::Meta,
            META_CONF_STATE.to_vec(),
            encode_conf_state(&cs),
        );
        self.conf_state = cs;
    }

    /// Drops entries up to `index` (applied and kept by a snapshot of the
    /// state machine).
    pub fn compact(&mut self, batch: &mut Batch, index: u64) -> Result<(), RaftError> {
        if index <= self.compacted.0 {
            return Err(RaftError::Compacted);
        }
        if index > self.last_index {
            return Err(RaftError::Unavailable);
        }
        let term = concord_raft::Storage::term(self, index)?;
        log::truncate_prefix(batch, self.compacted.0 + 1, index);
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.pop_cached();
        }
        batch.put(
            Partition::Meta,
            META_COMPACTED.to_vec(),
            encode_u64s(&[index, term]),
        );
        self.compacted = (index, term);
        Ok(())
    }

    /// A snapshot was installed: the log restarts after it.
    pub fn apply_snapshot(&mut self, batch: &mut Batch, meta: &SnapshotMeta) {
        for i in self.compacted.0 + 1..=self.last_index {
            batch.delete(Partition::Log, LogEntry::key(i));
        }
        batch.put(
            Partition::Meta,
            META_COMPACTED.to_vec(),
            encode_u64s(&[meta.index, meta.term]),
        );
        self.compacted = (meta.index, meta.term);
        self.last_index = meta.index;
        self.evict_to(0);
        self.set_conf_state(batch, meta.conf_state.clone());
        let mut hs = self.hard_state;
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.set_hard_state(batch, hs);
    }

    fn read_entries(&self, view: &dyn ReadView, lo: u64, hi: u64) -> Result<Vec<Entry>, RaftError> {
        let es = log::entries(view, lo, hi).map_err(engine)?;
        if es.len() as u64 != hi + 1 - lo {
            return Err(RaftError::Other(format!(
                "log entries {lo}..={hi} missing on disk"
            )));
        }
        Ok(es.into_iter().map(to_raft_entry).collect())
    }
}

impl concord_raft::Storage for RaftLog {
    fn initial_state(&self) -> Result<RaftState, RaftError> {
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>, RaftError> {
        if low <= self.compacted.0 {
            return Err(RaftError::Compacted);
        }
        if high > self.last_index + 1 {
            return Err(RaftError::Unavailable);
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let cached = self.cache_first();
        let mut out = if low < cached {
            self.read_entries(self.backend.as_ref(), low, (high - 1).min(cached - 1))?
        } else {
            Vec::new()
        };
        if high > cached {
            let from = (low.max(cached) - cached) as usize;
            let to = (high - cached) as usize;
            let budget = max_size.unwrap_or(u64::MAX);
            let mut size: u64 = out.iter().map(Entry::byte_size).sum();
            for e in self.cache.range(from..to) {
                if !out.is_empty() && size >= budget {
                    break;
                }
                size += e.byte_size();
                out.push(e.clone());
            }
        }
        concord_raft::storage::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, RaftError> {
        if index == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if index < self.compacted.0 {
            return Err(RaftError::Compacted);
        }
        if index > self.last_index {
            return Err(RaftError::Unavailable);
        }
        let cached = self.cache_first();
        if index >= cached {
            return Ok(self.cache[(index - cached) as usize].term);
        }
        let e = self.read_entries(self.backend.as_ref(), index, index)?;
        Ok(e[0].term)
    }

    fn first_index(&self) -> Result<u64, RaftError> {
        Ok(self.compacted.0 + 1)
    }

    fn last_index(&self) -> Result<u64, RaftError> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot, RaftError> {
        match &self.snapshotter {
            Some(s) => s(request_index, to),
            None => Err(RaftError::SnapshotTemporarilyUnavailable),
        }
    }
}

#[cfg(test)]
mod tests;
