//! watch: watchers, their synced and unsynced groups, and event fan-out.
//!
//! ```text
//!  applier ── notify(rev, changes) ──► synced watchers ──try_send──► stream sink (bounded)
//!                                          │ sink full                     │
//!                                          ▼                               ▼
//!  sync task ◄── wake / interval ──── unsynced watchers          gRPC send side: prev_kv,
//!     │ reads changes_between(min_rev, ..) from the store          fragments, header
//!     └── delivers ≤ 1000 revisions per response; synced again once caught up
//! ```
//!
//! etcd's watchable store, in its words: a *synced* watcher has been sent
//! every matching event up to the last notified revision and receives new
//! ones straight from the applier; an *unsynced* watcher (a past start
//! revision, or a slow consumer whose stream buffer was full: etcd's victims)
//! is caught up from the revision store by the sync task. A full buffer never
//! blocks the applier and never grows memory: the watcher is parked and
//! resumed from the store, or cancelled with `compact_revision` when the
//! history it needs was compacted meanwhile.
//!
//! Invariants (asserted): a watcher's `min_rev` (the next revision it may be
//! sent) only grows; a synced watcher's `min_rev` is above every revision it
//! skipped; each response carries whole revisions in increasing order.

pub mod checker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use crate::mvcc::{Change, Store};
use crate::proto::etcdserverpb::{watch_create_request::FilterType, WatchCreateRequest};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// Most distinct revisions in one catch-up response (etcd's watchBatchMaxRevs).
pub const CATCH_UP_REVISIONS_MAX: i64 = 1000;
/// Most unsynced watchers caught up in one sync round (etcd: 512).
pub const SYNC_WATCHERS_MAX: usize = 512;
/// Responses buffered per watch stream before its watchers are parked.
pub const STREAM_BUFFER_RESPONSES_MAX: usize = 1024;

/// etcd's cancel reasons for a watch that cannot be created.
pub const REASON_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
pub const REASON_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// What the hub puts on a stream's sink, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A watch was created; nothing of it was sent before.
    Created { watch_id: i64, revision: i64 },
    /// Events of whole revisions, increasing. `revision` is the header's.
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<Event>,
        prev_kv: bool,
        fragment: bool,
    },
    /// The watch's start revision was compacted; the watch is gone.
    Compacted {
        watch_id: i64,
        compact_revision: i64,
    },
    /// A progress notification: every event up to `revision` was sent.
    /// `watch_id` is -1 for an answer to a progress request.
    Progress { watch_id: i64, revision: i64 },
    /// A watch was cancelled at the client's request.
    Canceled { watch_id: i64, revision: i64 },
    /// A create that was refused (`watch_id` -1 and etcd's reason).
    Refused { revision: i64, reason: &'static str },
}

pub type Sink = mpsc::Sender<Outgoing>;

/// One watcher, identified in the hub by a global key.
#[derive(Debug)]
struct Watcher {
    stream: u64,
    watch_id: i64,
    key: Vec<u8>,
    /// Empty: the single key `key`.
    range_end: Vec<u8>,
    /// The next revision this watcher may be sent.
    min_rev: i64,
    synced: bool,
    /// False until its `Created` response is on the sink.
    announced: bool,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Events sent since the last periodic progress round.
    sent_since_progress: bool,
}

impl Watcher {
    fn matches(&self, key: &[u8]) -> bool {
        key_in_range(key, &self.key, &self.range_end)
    }

    fn wants(&self, c: &Change) -> bool {
        if c.tombstone {
            !self.no_delete
        } else {
            !self.no_put
        }
    }
}

/// etcd's range rules: empty end = the key; end `\0` = every key ≥ key.
pub fn key_in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// A change as a watch event (without `prev_kv`, which the stream fills).
pub fn event_of(c: &Change) -> Event {
    let mut kv = c.kv.clone();
    if c.tombstone {
        kv = KeyValue {
            key: kv.key,
            mod_revision: c.rev.main,
            ..KeyValue::default()
        };
    }
    Event {
        r#type: if c.tombstone {
            EventType::Delete as i32
        } else {
            EventType::Put as i32
        },
        kv: Some(kv),
        prev_kv: None,
    }
}

#[derive(Debug)]
struct StreamState {
    sink: Sink,
    /// Client watch id -> hub key.
    ids: BTreeMap<i64, u64>,
    next_auto_id: i64,
    /// A progress request waits until every watcher here is synced.
    progress_pending: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Last revision passed to `notify` (the watchable "current" revision).
    notified_rev: i64,
    next_key: u64,
    next_stream: u64,
    watchers: BTreeMap<u64, Watcher>,
    streams: BTreeMap<u64, StreamState>,
    /// Synced single-key watchers by key.
    synced_keys: HashMap<Vec<u8>, BTreeSet<u64>>,
    /// Synced range watchers.
    synced_ranges: BTreeSet<u64>,
    unsynced: BTreeSet<u64>,
}

/// The watchers of one member; shared by the applier, the gRPC streams and
/// the sync task.
pub struct WatchHub {
    store: Arc<Store>,
    inner: Mutex<Inner>,
    wake: Notify,
    /// A planted bug for proving the watch checker can fail: live
    /// notifications of every 7th revision are silently dropped.
    #[cfg(any(test, madsim))]
    planted_skip: std::sync::atomic::AtomicBool,
}

/// A watch create request that the hub refused, with etcd's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    DuplicateId,
    EmptyRange,
}

impl CreateError {
    pub fn reason(self) -> &'static str {
        match self {
            CreateError::DuplicateId => REASON_DUPLICATE_ID,
            CreateError::EmptyRange => REASON_EMPTY_RANGE,
        }
    }
}

impl WatchHub {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        let notified_rev = store.current_revision();
        Arc::new(Self {
            store,
            inner: Mutex::new(Inner {
                notified_rev,
                ..Inner::default()
            }),
            wake: Notify::new(),
            #[cfg(any(test, madsim))]
            planted_skip: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Turns on the planted bug (tests and simulations only).
    #[cfg(any(test, madsim))]
    pub fn plant_skip_bug(&self) {
        self.planted_skip
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    #[cfg(any(test, madsim))]
    fn skips(&self, rev: i64) -> bool {
        self.planted_skip.load(std::sync::atomic::Ordering::Relaxed) && rev % 7 == 0
    }

    #[cfg(not(any(test, madsim)))]
    fn skips(&self, _rev: i64) -> bool {
        false
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The revision up to which watchers have been notified.
    pub fn notified_revision(&self) -> i64 {
        self.lock().notified_rev
    }

    /// Watchers registered (all streams).
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Watch streams open.
    pub fn stream_count(&self) -> usize {
        self.lock().streams.len()
    }

    /// Opens a stream; its watchers' output goes to `sink`.
    pub fn open_stream(&self, sink: Sink) -> u64 {
        let mut g = self.lock();
        g.next_stream += 1;
        let id = g.next_stream;
        g.streams.insert(
            id,
            StreamState {
                sink,
                ids: BTreeMap::new(),
                next_auto_id: 0,
                progress_pending: false,
            },
        );
        id
    }

    /// Closes a stream and drops its watchers.
    pub fn close_stream(&self, stream: u64) {
        let mut g = self.lock();
        if let Some(s) = g.streams.remove(&stream) {
            for key in s.ids.into_values() {
                remove_watcher(&mut g, key);
            }
        }
    }

    /// Registers a watcher and returns its watch id and the revision for the
    /// `Created` header. The watcher receives nothing until [`announce`] is
    /// called, after the caller has put `Created` on the sink.
    ///
    /// [`announce`]: WatchHub::announce
    pub fn create(
        &self,
        stream: u64,
        req: &WatchCreateRequest,
    ) -> Result<(i64, i64), (CreateError, i64)> {
        let mut g = self.lock();
        let current = g.notified_rev;
        let mut key = req.key.clone();
        if key.is_empty() {
            key = vec![0];
        }
        if !req.range_end.is_empty() && req.range_end != [0] && key >= req.range_end {
            return Err((CreateError::EmptyRange, current));
        }
        let Some(st) = g.streams.get_mut(&stream) else {
            return Err((CreateError::DuplicateId, current));
        };
        let watch_id = if req.watch_id != 0 {
            if st.ids.contains_key(&req.watch_id) {
                return Err((CreateError::DuplicateId, current));
            }
            req.watch_id
        } else {
            while st.ids.contains_key(&st.next_auto_id) {
                st.next_auto_id += 1;
            }
            let id = st.next_auto_id;
            st.next_auto_id += 1;
            id
        };
        g.next_key += 1;
        let hub_key = g.next_key;
        if let Some(st) = g.streams.get_mut(&stream) {
            st.ids.insert(watch_id, hub_key);
        }
        let min_rev = if req.start_revision > 0 {
            req.start_revision
        } else {
            current + 1
        };
        let filters = |f: FilterType| req.filters.contains(&(f as i32));
        g.watchers.insert(
            hub_key,
            Watcher {
                stream,
                watch_id,
                key,
                range_end: req.range_end.clone(),
                min_rev,
                synced: false,
                announced: false,
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                prev_kv: req.prev_kv,
                fragment: req.fragment,
                progress_notify: req.progress_notify,
                sent_since_progress: false,
            },
        );
        g.unsynced.insert(hub_key);
        Ok((watch_id, current))
    }

    /// Lets a created watcher receive events (its `Created` is on the sink).
    pub fn announce(&self, stream: u64, watch_id: i64) {
        {
            let mut g = self.lock();
            let Some(&key) = g.streams.get(&stream).and_then(|s| s.ids.get(&watch_id)) else {
                return;
            };
            if let Some(w) = g.watchers.get_mut(&key) {
                w.announced = true;
            }
        }
        self.wake.notify_one();
    }

    /// Cancels a watch; returns the revision for the `Canceled` header, or
    /// `None` if the stream has no such watch (etcd then sends nothing).
    pub fn cancel(&self, stream: u64, watch_id: i64) -> Option<i64> {
        let mut g = self.lock();
        let key = g.streams.get_mut(&stream)?.ids.remove(&watch_id)?;
        remove_watcher(&mut g, key);
        Some(g.notified_rev)
    }

    /// A progress request: answered now if every watcher of the stream is
    /// synced, else as soon as they are (etcd 3.5).
    pub fn request_progress(&self, stream: u64) {
        let mut g = self.lock();
        if let Some(s) = g.streams.get_mut(&stream) {
            s.progress_pending = true;
        }
        flush_progress(&mut g, stream);
    }

    /// The applier published `changes` (in revision order, possibly of
    /// several revisions): fan them out to synced watchers.
    pub fn notify(&self, changes: &[Change]) {
        let mut start = 0;
        while start < changes.len() {
            let rev = changes[start].rev.main;
            let end = changes[start..]
                .iter()
                .position(|c| c.rev.main != rev)
                .map_or(changes.len(), |n| start + n);
            self.notify_revision(rev, &changes[start..end]);
            start = end;
        }
    }

    /// The store's contents were replaced (a raft snapshot): every watcher
    /// is caught up again from the store (or cancelled as compacted), and
    /// notifications continue from the store's revision.
    pub fn restored(&self) {
        {
            let mut g = self.lock();
            g.notified_rev = self.store.current_revision();
            let synced: Vec<u64> = g
                .watchers
                .iter()
                .filter(|(_, w)| w.synced)
                .map(|(k, _)| *k)
                .collect();
            for wk in synced {
                let rev = g.watchers[&wk].min_rev;
                park(&mut g, wk, rev);
            }
        }
        self.wake.notify_one();
    }

    /// Marks `rev` as notified even though it changed nothing watchable
    /// (keeps progress answers current).
    pub fn advance_to(&self, rev: i64) {
        let mut g = self.lock();
        if rev > g.notified_rev {
            g.notified_rev = rev;
        }
    }

    fn notify_revision(&self, rev: i64, changes: &[Change]) {
        let mut g = self.lock();
        assert!(
            rev > g.notified_rev,
            "notify of revision {rev} after {}",
            g.notified_rev
        );
        g.notified_rev = rev;
        let mut per: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
        for c in changes {
            let by_key = g.synced_keys.get(c.kv.key.as_slice());
            let candidates = by_key
                .into_iter()
                .flatten()
                .chain(g.synced_ranges.iter())
                .copied();
            for wk in candidates {
                let w = &g.watchers[&wk];
                if w.min_rev <= rev && w.matches(&c.kv.key) && w.wants(c) {
                    per.entry(wk).or_default().push(event_of(c));
                }
            }
        }
        let mut parked = false;
        for (wk, events) in per {
            if self.skips(rev) {
                g.watchers.get_mut(&wk).expect("watcher present").min_rev = rev + 1;
                continue;
            }
            let w = &g.watchers[&wk];
            let out = Outgoing::Events {
                watch_id: w.watch_id,
                revision: rev,
                events,
                prev_kv: w.prev_kv,
                fragment: w.fragment,
            };
            match g.streams[&w.stream].sink.try_send(out) {
                Ok(()) => {
                    let w = g.watchers.get_mut(&wk).expect("watcher present");
                    w.min_rev = rev + 1;
                    w.sent_since_progress = true;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    park(&mut g, wk, rev);
                    parked = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => remove_watcher(&mut g, wk),
            }
        }
        flush_pending_progress(&mut g);
        drop(g);
        if parked {
            self.wake.notify_one();
        }
    }

    /// One round of catching up unsynced watchers from the store. Returns
    /// whether unsynced watchers remain (the caller comes back soon).
    pub fn sync_once(&self) -> Result<bool, crate::mvcc::MvccError> {
        // Which watchers, from which revision.
        let (batch, current) = {
            let g = self.lock();
            let batch: Vec<(u64, i64)> = g
                .unsynced
                .iter()
                .filter_map(|k| {
                    let w = &g.watchers[k];
                    w.announced.then_some((*k, w.min_rev))
                })
                .take(SYNC_WATCHERS_MAX)
                .collect();
            (batch, g.notified_rev)
        };
        if batch.is_empty() {
            return Ok(!self.lock().unsynced.is_empty());
        }
        let from = batch.iter().map(|(_, r)| *r).min().unwrap_or(current + 1);
        let to = current.min(from.saturating_add(CATCH_UP_REVISIONS_MAX - 1));
        let changes = if from <= to {
            self.store.changes_between(from, to)?
        } else {
            Vec::new()
        };
        // Read after the scan: any record the scan missed was deleted by a
        // compaction at or below this revision.
        let compacted = self.store.compact_revision();
        let mut g = self.lock();
        for (wk, _) in batch {
            let Some(w) = g.watchers.get(&wk) else {
                continue; // cancelled meanwhile
            };
            if w.synced || !w.announced {
                continue;
            }
            let sink = g.streams[&w.stream].sink.clone();
            if w.min_rev < compacted {
                let out = Outgoing::Compacted {
                    watch_id: w.watch_id,
                    compact_revision: compacted,
                };
                match sink.try_send(out) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                        let (stream, id) = (w.stream, w.watch_id);
                        if let Some(s) = g.streams.get_mut(&stream) {
                            s.ids.remove(&id);
                        }
                        remove_watcher(&mut g, wk);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                }
                continue;
            }
            let reached = to.max(w.min_rev - 1);
            let events: Vec<Event> = changes
                .iter()
                .filter(|c| c.rev.main >= w.min_rev && w.matches(&c.kv.key) && w.wants(c))
                .map(event_of)
                .collect();
            let sent = !events.is_empty();
            if sent {
                let out = Outgoing::Events {
                    watch_id: w.watch_id,
                    revision: to,
                    events,
                    prev_kv: w.prev_kv,
                    fragment: w.fragment,
                };
                match sink.try_send(out) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => continue,
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        remove_watcher(&mut g, wk);
                        continue;
                    }
                }
            }
            let notified = g.notified_rev;
            let w = g.watchers.get_mut(&wk).expect("watcher present");
            assert!(reached + 1 >= w.min_rev, "min_rev went back");
            w.min_rev = reached + 1;
            w.sent_since_progress |= sent;
            if w.min_rev > notified {
                mark_synced(&mut g, wk);
            }
        }
        flush_pending_progress(&mut g);
        Ok(!g.unsynced.is_empty())
    }

    /// Periodic progress: each synced `progress_notify` watcher that was
    /// sent nothing since the last round gets the current revision.
    pub fn progress_round(&self) {
        let mut g = self.lock();
        let rev = g.notified_rev;
        let keys: Vec<u64> = g.watchers.keys().copied().collect();
        for wk in keys {
            let w = &g.watchers[&wk];
            if !w.progress_notify || !w.synced || !w.announced {
                continue;
            }
            if w.sent_since_progress {
                g.watchers
                    .get_mut(&wk)
                    .expect("present")
                    .sent_since_progress = false;
                continue;
            }
            let out = Outgoing::Progress {
                watch_id: w.watch_id,
                revision: rev,
            };
            let _ = g.streams[&w.stream].sink.try_send(out);
        }
    }

    /// Runs catch-up rounds until `stop` resolves: immediately when woken,
    /// otherwise every `interval` while watchers are unsynced, and a
    /// progress round every `progress_interval`.
    pub async fn run_sync(
        self: Arc<Self>,
        interval: std::time::Duration,
        progress_interval: std::time::Duration,
    ) {
        let mut next_progress = tokio::time::Instant::now() + progress_interval;
        loop {
            let more = match self.sync_once() {
                Ok(more) => more,
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up read failed");
                    true
                }
            };
            if tokio::time::Instant::now() >= next_progress {
                self.progress_round();
                next_progress = tokio::time::Instant::now() + progress_interval;
            }
            let wait = if more { interval } else { progress_interval };
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }
}

/// Closes a hub stream when dropped (a client gone, an internal watch done).
pub struct StreamGuard {
    hub: Arc<WatchHub>,
    stream: u64,
}

impl StreamGuard {
    pub fn new(hub: Arc<WatchHub>, stream: u64) -> Self {
        Self { hub, stream }
    }

    pub fn stream(&self) -> u64 {
        self.stream
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.hub.close_stream(self.stream);
    }
}

/// An in-process watch (for the Lock and Election services): events of
/// `key`..`range_end` from `start_revision`, until the guard is dropped.
pub fn watch_internal(
    hub: &Arc<WatchHub>,
    req: &WatchCreateRequest,
) -> Result<(StreamGuard, mpsc::Receiver<Outgoing>), CreateError> {
    let (tx, rx) = mpsc::channel(64);
    let stream = hub.open_stream(tx);
    let guard = StreamGuard::new(hub.clone(), stream);
    let (id, _) = hub.create(stream, req).map_err(|(e, _)| e)?;
    hub.announce(stream, id);
    Ok((guard, rx))
}

fn remove_watcher(g: &mut Inner, wk: u64) {
    let Some(w) = g.watchers.remove(&wk) else {
        return;
    };
    g.unsynced.remove(&wk);
    if w.range_end.is_empty() {
        if let Some(set) = g.synced_keys.get_mut(&w.key) {
            set.remove(&wk);
            if set.is_empty() {
                g.synced_keys.remove(&w.key);
            }
        }
    } else {
        g.synced_ranges.remove(&wk);
    }
    if let Some(s) = g.streams.get_mut(&w.stream) {
        if s.ids.get(&w.watch_id) == Some(&wk) {
            s.ids.remove(&w.watch_id);
        }
    }
}

/// A synced watcher whose sink was full at `rev`: catch it up from the store.
fn park(g: &mut Inner, wk: u64, rev: i64) {
    let w = g.watchers.get_mut(&wk).expect("watcher present");
    w.synced = false;
    w.min_rev = w.min_rev.max(rev);
    let (single, key) = (w.range_end.is_empty(), w.key.clone());
    if single {
        if let Some(set) = g.synced_keys.get_mut(&key) {
            set.remove(&wk);
            if set.is_empty() {
                g.synced_keys.remove(&key);
            }
        }
    } else {
        g.synced_ranges.remove(&wk);
    }
    g.unsynced.insert(wk);
}

fn mark_synced(g: &mut Inner, wk: u64) {
    g.unsynced.remove(&wk);
    let w = g.watchers.get_mut(&wk).expect("watcher present");
    w.synced = true;
    if w.range_end.is_empty() {
        let key = w.key.clone();
        g.synced_keys.entry(key).or_default().insert(wk);
    } else {
        g.synced_ranges.insert(wk);
    }
}

/// Sends every pending progress answer that can be sent now.
fn flush_pending_progress(g: &mut Inner) {
    let pending: Vec<u64> = g
        .streams
        .iter()
        .filter(|(_, s)| s.progress_pending)
        .map(|(id, _)| *id)
        .collect();
    for s in pending {
        flush_progress(g, s);
    }
}

/// Sends a pending progress answer if every watcher of the stream is synced.
fn flush_progress(g: &mut Inner, stream: u64) {
    let Some(s) = g.streams.get(&stream) else {
        return;
    };
    if !s.progress_pending || s.ids.values().any(|k| !g.watchers[k].synced) {
        return;
    }
    let out = Outgoing::Progress {
        watch_id: -1,
        revision: g.notified_rev,
    };
    if s.sink.try_send(out).is_ok() {
        if let Some(s) = g.streams.get_mut(&stream) {
            s.progress_pending = false;
        }
    }
}

#[cfg(test)]
mod tests;
