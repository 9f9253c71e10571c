//! The revision store: etcd's KV semantics over a [`Backend`].
//!
//! Concurrency: one writer at a time (the member's applier) builds a group of
//! requests in a [`Writer`] and commits it as one atomic batch; readers run
//! concurrently. The in-memory index may hold revisions newer than the
//! published `current_rev` while a group is being built, but readers only
//! ever read at `<= current_rev`, which advances after the batch is in the
//! backend. Readers take a backend snapshot under the index lock, so every
//! record the index points to is in their snapshot.
//!
//! Persisted:
//! ```text
//! Rev        rev key (17/18 B)       -> mvccpb.KeyValue  (etcd's record)
//! KeyHistory esc(key) 00 00 rev      -> put | tombstone
//! KeyLive    key                     -> created, modified, version, lease
//! Meta       mvcc/revision           -> current main revision
//! ```
//! Only `Rev` and `Meta` are written per group (one atomic batch).
//! `KeyHistory` and `KeyLive` are checkpointed: their changes collect in
//! memory (live keys deduplicated) and are ingested sorted, straight into
//! new tables, once enough have collected, before physical compaction
//! (which must never remove a record a restart would replay) and on a
//! clean stop; then `mvcc/live_checkpoint` records the revision both are
//! complete to. Opening replays the revision records after it into memory
//! and checkpoints them, so the on-disk history is always complete up to
//! the index floor, the only revisions it answers for. Scattered inserts
//! into the LSM's memtable were the dearest part of a put.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost::Message;

use super::disk::{self, LiveKey};
use super::index::{Span, TreeIndex};
use super::key_index::{KeyAt, KeyIndex};
use super::revision::Revision;
use super::{MvccError, Result, USER_KEY_BYTES_MAX};
use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;
use crate::storage::{Backend, Batch, Partition, ReadView};

/// Published state, guarded by one lock so that readers see the index,
/// the current revision and the compaction point together.
struct State {
    index: TreeIndex,
    /// Highest revision whose records are in the backend.
    current_rev: i64,
    /// Reads below this revision fail with `Compacted`.
    compact_rev: i64,
    /// The in-memory index answers reads at `>= floor`; below it, the
    /// on-disk key history does (the index was rebuilt at `floor` from live
    /// keys only).
    floor: i64,
}

/// Physical compaction in progress: records `<= target` not kept are deleted
/// in steps, walking the key history from `cursor`.
#[derive(Debug, Clone)]
struct DiskCompaction {
    target: i64,
    cursor: Option<Vec<u8>>,
}

pub struct Store {
    backend: Arc<dyn Backend>,
    /// Live keys with a lease, as restored; taken once by the lessor.
    restored_leases: Mutex<Vec<(Vec<u8>, i64)>>,
    state: RwLock<State>,
    disk_compaction: Mutex<Option<DiskCompaction>>,
    /// Changes since the last checkpoint.
    dirty: Mutex<Dirty>,
    /// A checkpoint is written once this many live keys are dirty (or
    /// [`CHECKPOINT_HISTORY_ENTRIES`] history entries).
    checkpoint_keys: AtomicUsize,
    /// The revision `KeyLive` and `KeyHistory` are complete to (never below
    /// the index floor once the store is open).
    checkpoint_rev: AtomicI64,
}

/// What the next checkpoint writes: the changes made after the last one.
#[derive(Default)]
struct Dirty {
    /// Final state of each changed live key (`None`: deleted); sorted
    /// when written.
    live: HashMap<Vec<u8>, Option<LiveKey>>,
    /// New `KeyHistory` entries (key, tombstone), unsorted.
    history: Vec<(Vec<u8>, bool)>,
}

/// Changed live keys that trigger a checkpoint.
pub const CHECKPOINT_KEYS: usize = 16 * 1024;
/// New history entries that trigger a checkpoint (a delete of a wide
/// range adds many in one revision).
pub const CHECKPOINT_HISTORY_ENTRIES: usize = 64 * 1024;
/// Revisions after a checkpoint that trigger the next one (even if few
/// keys changed): bounds what a restart replays.
pub const CHECKPOINT_REVISIONS: i64 = 64 * 1024;

/// What [`load`] read: the state, a physical compaction to resume, the
/// live keys that have a lease, the changes after the checkpoint, and its
/// revision (`None`: not recorded).
struct Loaded {
    state: State,
    disk_compaction: Option<DiskCompaction>,
    leased: Vec<(Vec<u8>, i64)>,
    dirty: Dirty,
    checkpoint: Option<i64>,
}

/// Result of a range read (header revision is the store's current revision).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub count: i64,
    pub more: bool,
}

/// One change made by a committed group, in revision order. For a delete,
/// `kv` holds the key and `mod_revision` only.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub rev: Revision,
    pub tombstone: bool,
    pub kv: KeyValue,
}

/// What a group commit published.
#[derive(Debug, Default)]
pub struct Committed {
    pub revision: i64,
    pub changes: Vec<Change>,
    /// A compaction applied in this group (its revision).
    pub compacted: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    pub compact_revision: i64,
    pub current_revision: i64,
}

/// Status of the physical compaction after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskCompactStatus {
    Idle,
    InProgress,
    Finished(i64),
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn check_user_key(key: &[u8]) -> Result<()> {
    if key.len() > USER_KEY_BYTES_MAX {
        return Err(MvccError::KeyTooLarge {
            len: key.len(),
            max: USER_KEY_BYTES_MAX,
        });
    }
    Ok(())
}

fn meta_i64(view: &dyn ReadView, key: &[u8]) -> Result<i64> {
    match view.get(Partition::Meta, key)? {
        Some(v) => disk::decode_i64(&String::from_utf8_lossy(key), &v),
        None => Ok(0),
    }
}

fn decode_kv(rev: Revision, bytes: &[u8]) -> Result<KeyValue> {
    KeyValue::decode(bytes).map_err(|e| MvccError::Corrupt(format!("record {rev}: {e}")))
}

// ------------------------------------------------------------------ reads

/// Where to find record values: the backend (or a snapshot of it), plus the
/// uncommitted changes of the group being built.
struct Records<'a> {
    view: &'a dyn ReadView,
    overlay: Option<(&'a HashMap<Revision, usize>, &'a [Change])>,
}

impl Records<'_> {
    fn kv(&self, rev: Revision) -> Result<KeyValue> {
        if let Some((idx, changes)) = self.overlay {
            if let Some(&i) = idx.get(&rev) {
                return Ok(changes[i].kv.clone());
            }
        }
        match self.view.get(Partition::Rev, &rev.to_key(false))? {
            Some(v) => decode_kv(rev, &v),
            None => Err(MvccError::Corrupt(format!(
                "the index points at revision {rev} but its record is missing"
            ))),
        }
    }

    /// Keys of `span` alive at `at` and their revisions, from the on-disk
    /// key history (for reads below the index floor).
    fn disk_revs_at(&self, span: &Span, at: i64) -> Result<Vec<(Vec<u8>, Revision)>> {
        if span.is_empty() {
            return Ok(Vec::new());
        }
        let (lo, hi) = span.bounds();
        let lo = match lo {
            Bound::Included(k) => Bound::Included(disk::history_prefix(&k)),
            _ => Bound::Unbounded,
        };
        let hi = match (span, hi) {
            (Span::Key(k), _) => Bound::Excluded(disk::history_key(k, Revision::new(at + 1, 0))),
            (_, Bound::Excluded(k)) => Bound::Excluded(disk::history_prefix(&k)),
            _ => Bound::Unbounded,
        };
        let mut out: Vec<(Vec<u8>, Revision)> = Vec::new();
        // (key, newest entry <= at, is tombstone)
        let mut cur: Option<(Vec<u8>, Revision, bool)> = None;
        let flush = |cur: Option<(Vec<u8>, Revision, bool)>, out: &mut Vec<_>| {
            if let Some((k, r, false)) = cur {
                out.push((k, r));
            }
        };
        for item in self.view.scan(Partition::KeyHistory, (lo, hi), false) {
            let (k, v) = item?;
            let e = disk::decode_history(&k, &v)?;
            let same = cur.as_ref().is_some_and(|(ck, _, _)| *ck == e.key);
            if !same {
                flush(cur.take(), &mut out);
            }
            if e.rev.main <= at {
                cur = Some((e.key, e.rev, e.tombstone));
            } else if !same {
                cur = None;
            }
        }
        flush(cur, &mut out);
        Ok(out)
    }
}

/// Decides the revision of a read: `0` means current.
fn read_revision(requested: i64, current: i64, compact: i64) -> Result<i64> {
    let at = if requested <= 0 { current } else { requested };
    if at > current {
        return Err(MvccError::FutureRev);
    }
    if at < compact {
        return Err(MvccError::Compacted);
    }
    Ok(at)
}

fn sort_key_cmp(
    target: range_request::SortTarget,
) -> impl Fn(&KeyValue, &KeyValue) -> std::cmp::Ordering {
    use range_request::SortTarget as T;
    move |a, b| match target {
        T::Key => a.key.cmp(&b.key),
        T::Version => a.version.cmp(&b.version),
        T::Create => a.create_revision.cmp(&b.create_revision),
        T::Mod => a.mod_revision.cmp(&b.mod_revision),
        T::Value => a.value.cmp(&b.value),
    }
}

/// Completes a range once the matching keys and revisions are known:
/// fetch, filter, sort, limit, exactly as etcd's applier does.
fn finish_range(
    req: &RangeRequest,
    revs: Vec<(Vec<u8>, Revision)>,
    records: &Records<'_>,
) -> Result<RangeResult> {
    use range_request::{SortOrder, SortTarget};
    let count = revs.len() as i64;
    if req.count_only {
        return Ok(RangeResult {
            kvs: Vec::new(),
            count,
            more: false,
        });
    }
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let needs_all = filtered || order != SortOrder::None || req.limit <= 0;
    let fetch = if needs_all {
        revs.len()
    } else {
        revs.len().min(req.limit as usize + 1)
    };
    let mut kvs = Vec::with_capacity(fetch);
    for (_, rev) in revs.into_iter().take(fetch) {
        kvs.push(records.kv(rev)?);
    }
    let bound = |v: i64, lo: i64, hi: i64| (lo == 0 || v >= lo) && (hi == 0 || v <= hi);
    if filtered {
        kvs.retain(|kv| {
            bound(kv.mod_revision, req.min_mod_revision, req.max_mod_revision)
                && bound(
                    kv.create_revision,
                    req.min_create_revision,
                    req.max_create_revision,
                )
        });
    }
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(sort_key_cmp(target)),
        SortOrder::Descend => {
            let cmp = sort_key_cmp(target);
            // Stable and reversed: ties keep key-ascending order, as etcd's
            // insertion sort does.
            kvs.sort_by(|a, b| cmp(b, a));
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResult { kvs, count, more })
}

/// Keys of `span` alive at `at`: from memory at or above the floor, from the
/// disk history below it.
fn revs_at(
    st: &State,
    records: &Records<'_>,
    span: &Span,
    at: i64,
) -> Result<Vec<(Vec<u8>, Revision)>> {
    if at >= st.floor {
        Ok(st
            .index
            .range(span, at)
            .into_iter()
            .map(|(k, a)| (k, a.modified))
            .collect())
    } else {
        records.disk_revs_at(span, at)
    }
}

/// What a store holds in memory, read from the backend: the `KeyLive`
/// checkpoint plus the records after it (never the history or older values).
/// The changes of those records are returned as dirty: the caller
/// checkpoints them before serving.
fn load(backend: &dyn Backend) -> Result<Loaded> {
    // As in etcd, an empty store is at revision 1: the first change
    // creates revision 2.
    let current_rev = meta_i64(backend, disk::META_REVISION)?.max(1);
    let scheduled = meta_i64(backend, disk::META_COMPACT_SCHEDULED)?;
    let finished = meta_i64(backend, disk::META_COMPACT_FINISHED)?;
    let recorded = match backend.get(Partition::Meta, disk::META_CHECKPOINT)? {
        Some(v) => Some(disk::decode_i64("live checkpoint", &v)?),
        None => None,
    };
    let checkpoint = recorded.unwrap_or(current_rev);
    if checkpoint > current_rev || checkpoint < finished.min(current_rev) {
        return Err(MvccError::Corrupt(format!(
            "checkpoint {checkpoint} outside compaction {finished}..revision {current_rev}"
        )));
    }
    let mut live: BTreeMap<Vec<u8>, LiveKey> = BTreeMap::new();
    let all = (Bound::Unbounded, Bound::Unbounded);
    for item in backend.scan(Partition::KeyLive, all, false) {
        let (k, v) = item?;
        let l = LiveKey::decode(&v)?;
        // A checkpoint interrupted between its ingestion and its revision
        // leaves states newer than `checkpoint` (never newer than the
        // records, which were durable first); replaying over them below
        // still ends at the right state.
        if l.modified.main > current_rev || l.version < 1 || l.created > l.modified {
            return Err(MvccError::Corrupt(format!(
                "live key {k:02x?}: {l:?} inconsistent at revision {current_rev}"
            )));
        }
        live.insert(k, l);
    }
    let mut dirty = Dirty::default();
    // Streamed, not collected: the records may hold many large values.
    for_each_record(backend, checkpoint + 1, current_rev, |c| {
        let key = c.kv.key;
        dirty
            .history
            .push((disk::history_key(&key, c.rev), c.tombstone));
        let state = if c.tombstone {
            live.remove(&key);
            None
        } else {
            // A later version without its creation in view happens only
            // over a newer state (see above), which a later record of this
            // key replaces.
            let created = match (c.kv.version, live.get(&key)) {
                (1, _) | (_, None) => c.rev,
                (_, Some(prev)) => prev.created,
            };
            let l = LiveKey {
                created,
                modified: c.rev,
                version: c.kv.version,
                lease: c.kv.lease,
            };
            live.insert(key.clone(), l);
            Some(l)
        };
        dirty.live.insert(key, state);
        Ok(())
    })?;
    let leased = live
        .iter()
        .filter(|(_, l)| l.lease != 0)
        .map(|(k, l)| (k.clone(), l.lease))
        .collect();
    let index = TreeIndex::from_sorted_live(
        live.into_iter()
            .map(|(k, l)| (k, KeyIndex::restore(l.created, l.modified, l.version)))
            .collect(),
    );
    let disk_compaction = (scheduled > finished).then_some(DiskCompaction {
        target: scheduled,
        cursor: None,
    });
    tracing::debug!(
        current_rev,
        compact_rev = scheduled,
        live_keys = index.len(),
        replayed_keys = dirty.live.len(),
        "mvcc store restored"
    );
    Ok(Loaded {
        state: State {
            index,
            current_rev,
            compact_rev: scheduled,
            floor: current_rev,
        },
        disk_compaction,
        leased,
        dirty,
        checkpoint: recorded,
    })
}

/// Writes `dirty` (each part sorted and ingested) and then `rev` as the
/// revision `KeyHistory` and `KeyLive` are complete to, stopping after
/// `last` (as a crash would, in tests).
fn write_checkpoint(
    backend: &dyn Backend,
    dirty: Dirty,
    rev: i64,
    last: CheckpointStep,
) -> Result<()> {
    // History first: a crash after it leaves entries the next open replays
    // anyway (the same keys and values).
    let mut history: Vec<(Vec<u8>, Option<Vec<u8>>)> = dirty
        .history
        .into_iter()
        .map(|(k, tombstone)| (k, Some(disk::history_value(tombstone))))
        .collect();
    history.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    backend.ingest(Partition::KeyHistory, history)?;
    if last == CheckpointStep::History {
        return Ok(());
    }
    let mut live: Vec<(Vec<u8>, Option<Vec<u8>>)> = dirty
        .live
        .into_iter()
        .map(|(k, l)| (k, l.map(|l| l.encode())))
        .collect();
    live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    backend.ingest(Partition::KeyLive, live)?;
    if last == CheckpointStep::Live {
        return Ok(());
    }
    let mut b = Batch::new();
    b.put(
        Partition::Meta,
        disk::META_CHECKPOINT.to_vec(),
        disk::encode_i64(rev),
    );
    Ok(backend.write(b)?)
}

/// Checkpoints what [`load`] replayed (and records a missing checkpoint),
/// so that the history is on disk up to the floor before anyone reads;
/// returns the checkpoint revision.
fn checkpoint_loaded(backend: &dyn Backend, loaded: &mut Loaded) -> Result<i64> {
    let rev = loaded.state.current_rev;
    let dirty = std::mem::take(&mut loaded.dirty);
    if loaded.checkpoint != Some(rev) || !dirty.live.is_empty() || !dirty.history.is_empty() {
        write_checkpoint(backend, dirty, rev, CheckpointStep::Revision)?;
    }
    Ok(rev)
}

/// How far a checkpoint gets (tests stop it early, as a crash would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointStep {
    History,
    Live,
    Revision,
}

/// Calls `f` with each revision record with `from <= main <= to`, in
/// revision order.
fn for_each_record(
    view: &dyn ReadView,
    from: i64,
    to: i64,
    mut f: impl FnMut(Change) -> Result<()>,
) -> Result<()> {
    let lo = Revision::new(from, 0).to_key(false);
    let hi = Revision::new(to.saturating_add(1), 0).to_key(false);
    for item in view.scan(
        Partition::Rev,
        (Bound::Included(lo), Bound::Excluded(hi)),
        false,
    ) {
        let (k, v) = item?;
        let (rev, tombstone) = Revision::from_key(&k)
            .ok_or_else(|| MvccError::Corrupt(format!("record key {k:02x?}")))?;
        let mut kv = decode_kv(rev, &v)?;
        if tombstone {
            kv.mod_revision = rev.main;
        }
        f(Change { rev, tombstone, kv })?;
    }
    Ok(())
}

impl Store {
    /// Opens the store over `backend`, rebuilding the index from the live-key
    /// summaries (never from history or values).
    pub fn open(backend: Arc<dyn Backend>) -> Result<Self> {
        let mut loaded = load(backend.as_ref())?;
        let checkpoint = checkpoint_loaded(backend.as_ref(), &mut loaded)?;
        Ok(Self {
            backend,
            restored_leases: Mutex::new(loaded.leased),
            state: RwLock::new(loaded.state),
            disk_compaction: Mutex::new(loaded.disk_compaction),
            dirty: Mutex::new(Dirty::default()),
            checkpoint_keys: AtomicUsize::new(CHECKPOINT_KEYS),
            checkpoint_rev: AtomicI64::new(checkpoint),
        })
    }

    /// Reloads everything from the backend after its contents were replaced
    /// (a raft snapshot was installed): the index, revisions, compaction.
    pub fn reload(&self) -> Result<()> {
        let mut loaded = load(self.backend.as_ref())?;
        // Before publishing: readers below the new floor need its history.
        let checkpoint = checkpoint_loaded(self.backend.as_ref(), &mut loaded)?;
        *self.dirty() = Dirty::default();
        self.checkpoint_rev.store(checkpoint, Ordering::Release);
        *self.write() = loaded.state;
        *self
            .disk_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = loaded.disk_compaction;
        *self
            .restored_leases
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = loaded.leased;
        Ok(())
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, Dirty> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how many changed live keys trigger a checkpoint.
    pub fn set_checkpoint_keys(&self, keys: usize) {
        self.checkpoint_keys.store(keys.max(1), Ordering::Relaxed);
    }

    /// Writes the history entries and live keys changed since the last
    /// checkpoint (each sorted and ingested) and then the revision both are
    /// complete to. Called by the writer only (after a group, before
    /// physical compaction, on open and on a clean stop), never while a
    /// group is being committed, so everything dirty is in the records.
    pub fn checkpoint(&self) -> Result<()> {
        self.checkpoint_until(CheckpointStep::Revision)
    }

    /// A checkpoint interrupted (as by a crash) after `last`.
    #[cfg(test)]
    pub(crate) fn checkpoint_interrupted(&self, last: CheckpointStep) -> Result<()> {
        self.checkpoint_until(last)
    }

    fn checkpoint_until(&self, last: CheckpointStep) -> Result<()> {
        let rev = self.read().current_rev;
        let mut dirty = self.dirty();
        if dirty.live.is_empty()
            && dirty.history.is_empty()
            && self.checkpoint_rev.load(Ordering::Acquire) == rev
        {
            return Ok(());
        }
        write_checkpoint(
            self.backend.as_ref(),
            std::mem::take(&mut *dirty),
            rev,
            last,
        )?;
        if last == CheckpointStep::Revision {
            self.checkpoint_rev.store(rev, Ordering::Release);
        }
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The live keys that had a lease when the store was opened (once).
    pub fn take_restored_leases(&self) -> Vec<(Vec<u8>, i64)> {
        std::mem::take(
            &mut *self
                .restored_leases
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn current_revision(&self) -> i64 {
        self.read().current_rev
    }

    pub fn compact_revision(&self) -> i64 {
        self.read().compact_rev
    }

    /// Number of live keys.
    pub fn live_keys(&self) -> usize {
        let st = self.read();
        st.index
            .range(&Span::From(Vec::new()), st.current_rev)
            .len()
    }

    /// A read at a consistent revision. Returns the result and the store's
    /// current revision (the response header's revision).
    pub fn range(&self, req: &RangeRequest) -> Result<(RangeResult, i64)> {
        let span = Span::from_etcd(&req.key, &req.range_end);
        let (snap, current, at, mem_revs) = {
            let st = self.read();
            let at = read_revision(req.revision, st.current_rev, st.compact_rev)?;
            let snap = self.backend.snapshot();
            let mem = (at >= st.floor).then(|| {
                st.index
                    .range(&span, at)
                    .into_iter()
                    .map(|(k, a)| (k, a.modified))
                    .collect::<Vec<_>>()
            });
            (snap, st.current_rev, at, mem)
        };
        let records = Records {
            view: snap.as_ref(),
            overlay: None,
        };
        let revs = match mem_revs {
            Some(r) => r,
            None => {
                debug_assert!(
                    at < self.checkpoint_rev.load(Ordering::Acquire),
                    "a read at {at}, below the floor, beyond the history on disk"
                );
                records.disk_revs_at(&span, at)?
            }
        };
        Ok((finish_range(req, revs, &records)?, current))
    }

    /// A txn whose every op is a range, served at the current revision
    /// without going through the log (as etcd serves read-only txns).
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse> {
        let st = self.read();
        let snap = self.backend.snapshot();
        let at = st.current_rev;
        let view = WriterView {
            st: &st,
            records: Records {
                view: snap.as_ref(),
                overlay: None,
            },
            at,
        };
        let mut path = Vec::new();
        txn_path(&view, req, &mut path)?;
        let ops = if path[0] { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let Some(request_op::Request::RequestRange(r)) = &op.request else {
                return Err(MvccError::Corrupt("read_txn given a mutating op".into()));
            };
            let rat = read_revision(r.revision, at, st.compact_rev)?;
            let span = Span::from_etcd(&r.key, &r.range_end);
            let revs = revs_at(&st, &view.records, &span, rat)?;
            let res = finish_range(r, revs, &view.records)?;
            responses.push(ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    header: header(at),
                    kvs: res.kvs,
                    more: res.more,
                    count: res.count,
                })),
            });
        }
        Ok(TxnResponse {
            header: header(at),
            succeeded: path[0],
            responses,
        })
    }

    /// Starts a group of mutating requests. `lease_exists` answers whether a
    /// lease id is granted (puts naming another lease fail).
    pub fn writer<'s>(&'s self, lease_exists: &'s dyn Fn(i64) -> bool) -> Writer<'s> {
        let rev = self.read().current_rev;
        Writer {
            store: self,
            lease_exists,
            batch: Batch::new(),
            live: Vec::new(),
            history: Vec::new(),
            changes: Vec::new(),
            overlay: HashMap::new(),
            rev,
            compacted: None,
        }
    }

    /// Records (revision order) with `from <= main <= to`, for watchers
    /// catching up and for tests.
    pub fn changes_between(&self, from: i64, to: i64) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for_each_record(self.backend.snapshot().as_ref(), from, to, |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// etcd's HashKV: CRC-32C over the records up to `rev` (0 = current),
    /// counting compacted history only as what a compaction keeps (as etcd
    /// does, from its index), so the hash is the same before and after
    /// physical compaction.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv> {
        let (snap, at, current, compact, kept) = {
            let st = self.read();
            let at = if rev <= 0 { st.current_rev } else { rev };
            if at > st.current_rev {
                return Err(MvccError::FutureRev);
            }
            if at < st.compact_rev {
                return Err(MvccError::Compacted);
            }
            let compact = st.compact_rev;
            // What a compaction keeps is what a read at `compact` sees: from
            // the index at or above its floor, else (below) from the
            // snapshot's history, outside the lock. Nothing when nothing
            // was compacted.
            let kept = if compact <= 0 {
                Some(HashSet::new())
            } else if compact >= st.floor {
                Some(st.index.live_revisions_at(compact))
            } else {
                None
            };
            (self.backend.snapshot(), at, st.current_rev, compact, kept)
        };
        let kept = match kept {
            Some(k) => k,
            None => Records {
                view: snap.as_ref(),
                overlay: None,
            }
            .disk_revs_at(&Span::From(Vec::new()), compact)?
            .into_iter()
            .map(|(_, r)| r)
            .collect(),
        };
        let hi = Revision::new(at.saturating_add(1), 0).to_key(false);
        let mut crc = crc32c::crc32c(b"key");
        for item in snap.scan(
            Partition::Rev,
            (Bound::Unbounded, Bound::Excluded(hi)),
            false,
        ) {
            let (k, v) = item?;
            let (r, tombstone) = Revision::from_key(&k)
                .ok_or_else(|| MvccError::Corrupt(format!("record key {k:02x?}")))?;
            if r.main <= compact && (tombstone || !kept.contains(&r)) {
                continue;
            }
            crc = crc32c::crc32c_append(crc, &k);
            crc = crc32c::crc32c_append(crc, &v);
        }
        Ok(HashKv {
            hash: crc,
            compact_revision: compact,
            current_revision: current,
        })
    }

    /// Whether a physical compaction still has records to delete.
    pub fn disk_compaction_pending(&self) -> bool {
        self.disk_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Runs one step of physical compaction: at most about `limit` history
    /// entries are examined. Returns `Finished(target)` once everything not
    /// kept below the target is deleted (the caller persists before telling
    /// waiters).
    pub fn compact_disk_step(&self, limit: usize) -> Result<DiskCompactStatus> {
        let target = self
            .disk_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|j| j.target);
        if target.is_some_and(|t| t > self.checkpoint_rev.load(Ordering::Acquire)) {
            // The walk below needs the history up to the target on disk,
            // and the records a restart would replay must stay.
            self.checkpoint()?;
        }
        let mut guard = self
            .disk_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(job) = guard.as_mut() else {
            return Ok(DiskCompactStatus::Idle);
        };
        let lo = match &job.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let mut batch = Batch::new();
        let mut group: Vec<disk::HistoryEntry> = Vec::new();
        let mut exhausted = true;
        let mut last_key: Option<Vec<u8>> = None;
        for (seen, item) in self
            .backend
            .scan(Partition::KeyHistory, (lo, Bound::Unbounded), false)
            .enumerate()
        {
            let (k, v) = item?;
            let e = disk::decode_history(&k, &v)?;
            if group.first().is_some_and(|g| g.key != e.key) {
                compact_key_history(&group, job.target, &mut batch);
                group.clear();
                if seen >= limit {
                    exhausted = false;
                    break;
                }
            }
            last_key = Some(k);
            group.push(e);
        }
        if exhausted {
            compact_key_history(&group, job.target, &mut batch);
            batch.put(
                Partition::Meta,
                disk::META_COMPACT_FINISHED.to_vec(),
                disk::encode_i64(job.target),
            );
        }
        self.backend.write(batch)?;
        if exhausted {
            let target = job.target;
            *guard = None;
            return Ok(DiskCompactStatus::Finished(target));
        }
        // The scan stopped at a key boundary: resume after the last entry of
        // the last complete key group.
        debug_assert!(group.is_empty(), "stopped inside a key group");
        job.cursor = last_key;
        Ok(DiskCompactStatus::InProgress)
    }
}

/// Adds deletes for one key's history entries that a compaction at `target`
/// drops: all entries `<= target` except the newest, and that one too if it
/// is a tombstone *below* `target`.
///
/// A tombstone exactly at `target` stays on disk (etcd drops it) until the
/// next compaction: reads are the same either way, but a watcher may start
/// at the compaction revision, and it must be sent that delete.
fn compact_key_history(group: &[disk::HistoryEntry], target: i64, batch: &mut Batch) {
    let below: Vec<&disk::HistoryEntry> = group.iter().filter(|e| e.rev.main <= target).collect();
    let Some((newest, older)) = below.split_last() else {
        return;
    };
    let drop_newest = newest.tombstone && newest.rev.main < target;
    for e in older.iter().copied().chain(drop_newest.then_some(*newest)) {
        batch.delete(Partition::KeyHistory, disk::history_key(&e.key, e.rev));
        batch.delete(Partition::Rev, e.rev.to_key(e.tombstone));
    }
}

// ------------------------------------------------------------------ writes

/// One request's revision bookkeeping: changes take `(begin + 1, sub)`.
struct Tx {
    begin: i64,
    sub: i64,
}

impl Tx {
    fn changed(&self) -> bool {
        self.sub > 0
    }

    /// The revision reads inside this request see.
    fn rev(&self) -> i64 {
        self.begin + i64::from(self.changed())
    }

    fn next(&mut self) -> Revision {
        let r = Revision::new(self.begin + 1, self.sub);
        self.sub += 1;
        r
    }
}

/// A group of mutating requests applied in order and committed as one batch.
pub struct Writer<'s> {
    store: &'s Store,
    lease_exists: &'s dyn Fn(i64) -> bool,
    batch: Batch,
    /// KeyLive states in change order (a later one of a key replaces an
    /// earlier one when they join the dirty set).
    live: Vec<(Vec<u8>, Option<LiveKey>)>,
    /// New KeyHistory entries (key, tombstone), for the next checkpoint.
    history: Vec<(Vec<u8>, bool)>,
    changes: Vec<Change>,
    overlay: HashMap<Revision, usize>,
    /// Latest revision assigned (published or in this group).
    rev: i64,
    compacted: Option<i64>,
}

/// Which branch each txn in a request tree takes, in depth-first order (as
/// etcd's txnPath).
fn txn_path(view: &WriterView<'_, '_>, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
    let mut ok = true;
    for c in &req.compare {
        if !view.compare(c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    let ops = if ok { &req.success } else { &req.failure };
    for op in ops {
        if let Some(request_op::Request::RequestTxn(t)) = &op.request {
            txn_path(view, t, path)?;
        }
    }
    Ok(())
}

/// Reads inside a writer: the index (with this group's changes) and the
/// records (with this group's uncommitted values).
struct WriterView<'a, 'b> {
    st: &'a State,
    records: Records<'b>,
    at: i64,
}

impl WriterView<'_, '_> {
    fn compare(&self, c: &Compare) -> Result<bool> {
        let span = Span::from_etcd(&c.key, &c.range_end);
        let revs = revs_at(self.st, &self.records, &span, self.at)?;
        if revs.is_empty() {
            if c.target == compare::CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        for (_, rev) in revs {
            if !compare_kv(c, &self.records.kv(rev)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let target = T::try_from(c.target);
    let ord = match target {
        Ok(T::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(U::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(T::Version) | Ok(T::Create) | Ok(T::Mod) | Ok(T::Lease) => {
            let (have, want) = match (target, &c.target_union) {
                (Ok(T::Version), Some(U::Version(w))) => (kv.version, *w),
                (Ok(T::Version), _) => (kv.version, 0),
                (Ok(T::Create), Some(U::CreateRevision(w))) => (kv.create_revision, *w),
                (Ok(T::Create), _) => (kv.create_revision, 0),
                (Ok(T::Mod), Some(U::ModRevision(w))) => (kv.mod_revision, *w),
                (Ok(T::Mod), _) => (kv.mod_revision, 0),
                (_, Some(U::Lease(w))) => (kv.lease, *w),
                _ => (kv.lease, 0),
            };
            have.cmp(&want)
        }
        Err(_) => std::cmp::Ordering::Equal,
    };
    match R::try_from(c.result) {
        Ok(R::Equal) => ord.is_eq(),
        Ok(R::NotEqual) => ord.is_ne(),
        Ok(R::Greater) => ord.is_gt(),
        Ok(R::Less) => ord.is_lt(),
        Err(_) => true,
    }
}

impl<'s> Writer<'s> {
    fn view<'a>(&'a self, st: &'a State, at: i64) -> WriterView<'a, 'a> {
        WriterView {
            st,
            records: Records {
                view: self.store.backend.as_ref(),
                overlay: Some((&self.overlay, &self.changes)),
            },
            at,
        }
    }

    fn begin(&self) -> Tx {
        Tx {
            begin: self.rev,
            sub: 0,
        }
    }

    fn end(&mut self, tx: &Tx) {
        if tx.changed() {
            self.rev = tx.begin + 1;
        }
    }

    /// Adds one change to the batch, the index and the overlay.
    fn record(&mut self, st: &mut State, change: Change, live: Option<LiveKey>) {
        let key = change.kv.key.clone();
        let stored = if change.tombstone {
            KeyValue {
                key: key.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        } else {
            change.kv.encode_to_vec()
        };
        self.batch
            .put(Partition::Rev, change.rev.to_key(change.tombstone), stored);
        self.history
            .push((disk::history_key(&key, change.rev), change.tombstone));
        if change.tombstone {
            let was_live = st.index.tombstone(&key, change.rev);
            assert!(was_live, "tombstone of a key that is not live");
        } else {
            st.index.put(&key, change.rev);
        }
        self.live.push((key, live));
        self.overlay.insert(change.rev, self.changes.len());
        self.changes.push(change);
    }

    /// Validates a put against the state at `at`; returns where the key is
    /// then (from the in-memory index: no record is read).
    fn check_put(&self, st: &State, req: &PutRequest, at: i64) -> Result<Option<KeyAt>> {
        check_user_key(&req.key)?;
        let prev = st.index.get(&req.key, at);
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if req.lease != 0 && !(self.lease_exists)(req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(prev)
    }

    fn put_in(&mut self, st: &mut State, tx: &mut Tx, req: &PutRequest) -> Result<PutResponse> {
        let at = self.check_put(st, req, tx.rev())?;
        // The previous record is read only when its value or lease is
        // wanted; creation and version come from the index.
        let prev = match at {
            Some(a) if req.prev_kv || req.ignore_value || req.ignore_lease => {
                Some(self.view(st, tx.rev()).records.kv(a.modified)?)
            }
            _ => None,
        };
        let rev = tx.next();
        let (create_revision, version) = match &at {
            Some(a) => (a.created.main, a.version + 1),
            None => (rev.main, 1),
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        let created = match at {
            Some(a) => a.created,
            None => rev,
        };
        let live = LiveKey {
            created,
            modified: rev,
            version,
            lease,
        };
        self.record(
            st,
            Change {
                rev,
                tombstone: false,
                kv,
            },
            Some(live),
        );
        Ok(PutResponse {
            header: header(tx.rev()),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_in(
        &mut self,
        st: &mut State,
        tx: &mut Tx,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse> {
        let span = Span::from_etcd(&req.key, &req.range_end);
        let at = tx.rev();
        let keys = st.index.range(&span, at);
        let mut prev_kvs = Vec::new();
        if req.prev_kv {
            let view = self.view(st, at);
            for (_, a) in &keys {
                prev_kvs.push(view.records.kv(a.modified)?);
            }
        }
        let deleted = keys.len() as i64;
        for (key, _) in keys {
            let rev = tx.next();
            let kv = KeyValue {
                key,
                mod_revision: rev.main,
                ..Default::default()
            };
            self.record(
                st,
                Change {
                    rev,
                    tombstone: true,
                    kv,
                },
                None,
            );
        }
        Ok(DeleteRangeResponse {
            header: header(tx.rev()),
            deleted,
            prev_kvs,
        })
    }

    fn range_in(&self, st: &State, tx: &Tx, req: &RangeRequest) -> Result<RangeResponse> {
        let at = read_revision(req.revision, tx.rev(), st.compact_rev)?;
        let view = self.view(st, at);
        let span = Span::from_etcd(&req.key, &req.range_end);
        let revs = revs_at(st, &view.records, &span, at)?;
        let r = finish_range(req, revs, &view.records)?;
        Ok(RangeResponse {
            header: header(tx.rev()),
            kvs: r.kvs,
            more: r.more,
            count: r.count,
        })
    }

    /// Validates the ops of the branches a txn will take, against the state
    /// before the txn, so that a failing op fails the txn before any change.
    fn check_txn(&self, st: &State, req: &TxnRequest, path: &[bool], at: i64) -> Result<usize> {
        let ops = if path[0] { &req.success } else { &req.failure };
        let mut used = 1;
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestTxn(t)) => {
                    used += self.check_txn(st, t, &path[used..], at)?;
                }
                Some(request_op::Request::RequestPut(p)) => {
                    self.check_put(st, p, at)?;
                }
                Some(request_op::Request::RequestRange(r)) => {
                    if r.revision > at {
                        return Err(MvccError::FutureRev);
                    }
                    if r.revision > 0 && r.revision < st.compact_rev {
                        return Err(MvccError::Compacted);
                    }
                }
                Some(request_op::Request::RequestDeleteRange(_)) => {}
                None => return Err(MvccError::KeyNotFound),
            }
        }
        Ok(used)
    }

    fn exec_txn(
        &mut self,
        st: &mut State,
        tx: &mut Tx,
        req: &TxnRequest,
        path: &[bool],
    ) -> Result<(TxnResponse, usize)> {
        let succeeded = path[0];
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut used = 1;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.range_in(st, tx, r)?)
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.put_in(st, tx, p)?)
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_in(st, tx, d)?)
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    let (mut r, n) = self.exec_txn(st, tx, t, &path[used..])?;
                    used += n;
                    // etcd leaves nested txn headers empty.
                    r.header = Some(ResponseHeader::default());
                    response_op::Response::ResponseTxn(r)
                }
                None => return Err(MvccError::KeyNotFound),
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok((
            TxnResponse {
                header: None,
                succeeded,
                responses,
            },
            used,
        ))
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let store = self.store;
        let mut st = store.write();
        let mut tx = self.begin();
        let r = self.put_in(&mut st, &mut tx, req)?;
        self.end(&tx);
        Ok(r)
    }

    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let store = self.store;
        let mut st = store.write();
        let mut tx = self.begin();
        let r = self.delete_in(&mut st, &mut tx, req)?;
        self.end(&tx);
        Ok(r)
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let store = self.store;
        let mut st = store.write();
        let mut tx = self.begin();
        let mut path = Vec::new();
        txn_path(&self.view(&st, tx.rev()), req, &mut path)?;
        self.check_txn(&st, req, &path, tx.rev())?;
        let (mut resp, used) = self.exec_txn(&mut st, &mut tx, req, &path)?;
        debug_assert_eq!(used, path.len(), "txn path fully consumed");
        resp.header = header(tx.rev());
        self.end(&tx);
        Ok(resp)
    }

    /// Applies a compaction at `rev`: the index drops history below it at
    /// once (reads below fail from now on); records are deleted later by
    /// [`Store::compact_disk_step`]. Returns the current revision.
    pub fn compact(&mut self, rev: i64) -> Result<i64> {
        let store = self.store;
        let mut st = store.write();
        if rev <= st.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > self.rev {
            return Err(MvccError::FutureRev);
        }
        st.index.compact(rev);
        st.compact_rev = rev;
        self.batch.put(
            Partition::Meta,
            disk::META_COMPACT_SCHEDULED.to_vec(),
            disk::encode_i64(rev),
        );
        self.compacted = Some(rev);
        Ok(self.rev)
    }

    /// The batch that will be committed; the caller may add its own records
    /// (e.g. the applied index) so they commit atomically with the data.
    pub fn batch_mut(&mut self) -> &mut Batch {
        &mut self.batch
    }

    /// Latest revision assigned so far in this group.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// Writes the group as one atomic batch and publishes its revision.
    pub fn commit(mut self) -> Result<Committed> {
        self.batch.put(
            Partition::Meta,
            disk::META_REVISION.to_vec(),
            disk::encode_i64(self.rev),
        );
        let batch = std::mem::take(&mut self.batch);
        self.store.backend.write(batch)?;
        {
            let mut st = self.store.write();
            assert!(
                self.rev >= st.current_rev,
                "revision went back from {} to {}",
                st.current_rev,
                self.rev
            );
            st.current_rev = self.rev;
        }
        let checkpoint = {
            let mut dirty = self.store.dirty();
            dirty.live.extend(self.live.drain(..));
            dirty.history.append(&mut self.history);
            dirty.live.len() >= self.store.checkpoint_keys.load(Ordering::Relaxed)
                || dirty.history.len() >= CHECKPOINT_HISTORY_ENTRIES
                || self
                    .rev
                    .saturating_sub(self.store.checkpoint_rev.load(Ordering::Acquire))
                    >= CHECKPOINT_REVISIONS
        };
        if checkpoint {
            self.store.checkpoint()?;
        }
        if let Some(target) = self.compacted {
            let mut dc = self
                .store
                .disk_compaction
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *dc = Some(DiskCompaction {
                target,
                cursor: None,
            });
        }
        Ok(Committed {
            revision: self.rev,
            changes: std::mem::take(&mut self.changes),
            compacted: self.compacted,
        })
    }
}

/// A [`RequestOp`] helper for tests and callers building txns.
pub fn op_put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}
