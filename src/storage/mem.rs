//! The in-memory backend with a durability model, for the simulator and for
//! fast tests.
//!
//! It keeps two states: `visible` (every batch written) and `durable` (every
//! batch covered by a `persist`). [`MemBackend::crash`] throws away the
//! difference, exactly what a power cut does to writes that were never
//! fsynced. Snapshots are copy-on-write clones of `visible`, so taking one is
//! O(1) and the next write pays for the copy only while a snapshot is alive.
//!
//! Invariant: `durable` is always a prefix (in batch order) of `visible`:
//! `visible == durable + pending` applied in order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, Batch, KeyRange, Op, Partition, ReadView, Result, ScanIter, StorageError};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
type Maps = [Map; Partition::ALL.len()];

#[derive(Default)]
struct State {
    visible: Arc<Maps>,
    durable: Maps,
    pending: Vec<Batch>,
    poisoned: bool,
    fail_next_persist: bool,
    /// Simulated fsync time (a slow disk).
    persist_delay: std::time::Duration,
}

/// In-memory storage that loses unpersisted writes on [`MemBackend::crash`].
#[derive(Default)]
pub struct MemBackend {
    state: Mutex<State>,
}

fn apply(maps: &mut Maps, batch: &Batch) {
    for op in batch.ops() {
        match op {
            Op::Put(p, k, v) => {
                maps[p.index()].insert(k.clone(), v.clone());
            }
            Op::Delete(p, k) => {
                maps[p.index()].remove(k);
            }
        }
    }
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every
        // mutation is a whole batch applied under the lock), so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a power cut: every write since the last successful persist
    /// is lost, and the poisoned flag of the dead process is cleared.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.visible = Arc::new(s.durable.clone());
        s.pending.clear();
        s.poisoned = false;
        s.fail_next_persist = false;
    }

    /// Fault injection: every fsync of the member on this backend takes
    /// `delay` of simulated time from now on (ZERO: a fast disk again).
    pub fn set_persist_delay(&self, delay: std::time::Duration) {
        self.lock().persist_delay = delay;
    }

    /// Fault injection: the next `persist` fails (and poisons the backend).
    pub fn fail_next_persist(&self) {
        self.lock().fail_next_persist = true;
    }

    /// Number of batches written but not yet persisted.
    pub fn unpersisted_batches(&self) -> usize {
        self.lock().pending.len()
    }

    fn maps(&self) -> Arc<Maps> {
        Arc::clone(&self.lock().visible)
    }
}

/// An owned, frozen view of the maps.
struct MemView {
    maps: Arc<Maps>,
}

fn get_in(maps: &Maps, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>> {
    super::check_key(key)?;
    Ok(maps[p.index()].get(key).cloned())
}

/// Walks a range of an owned map one key at a time, narrowing the bound
/// after each step (O(log n) per item, no self-borrow).
struct MemScan {
    maps: Arc<Maps>,
    p: Partition,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    reverse: bool,
    done: bool,
}

fn range_is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

impl Iterator for MemScan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || range_is_empty(&self.lo, &self.hi) {
            self.done = true;
            return None;
        }
        let map = &self.maps[self.p.index()];
        let mut range = map.range::<Vec<u8>, _>((self.lo.clone(), self.hi.clone()));
        let item = if self.reverse {
            range.next_back()
        } else {
            range.next()
        };
        match item {
            None => {
                self.done = true;
                None
            }
            Some((k, v)) => {
                if self.reverse {
                    self.hi = Bound::Excluded(k.clone());
                } else {
                    self.lo = Bound::Excluded(k.clone());
                }
                Some(Ok((k.clone(), v.clone())))
            }
        }
    }
}

fn scan_in(maps: Arc<Maps>, p: Partition, range: KeyRange, reverse: bool) -> ScanIter<'static> {
    Box::new(MemScan {
        maps,
        p,
        lo: range.0,
        hi: range.1,
        reverse,
        done: false,
    })
}

impl ReadView for MemView {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get_in(&self.maps, p, key)
    }

    fn scan(&self, p: Partition, range: KeyRange, reverse: bool) -> ScanIter<'_> {
        scan_in(Arc::clone(&self.maps), p, range, reverse)
    }
}

impl ReadView for MemBackend {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get_in(&self.lock().visible, p, key)
    }

    fn scan(&self, p: Partition, range: KeyRange, reverse: bool) -> ScanIter<'_> {
        scan_in(self.maps(), p, range, reverse)
    }
}

impl Backend for MemBackend {
    #[cfg(madsim)]
    fn simulated_persist_delay(&self) -> std::time::Duration {
        self.lock().persist_delay
    }

    fn write(&self, batch: Batch) -> Result<()> {
        batch.check_keys()?;
        let mut s = self.lock();
        if s.poisoned {
            return Err(StorageError::Poisoned);
        }
        if batch.is_empty() {
            return Ok(());
        }
        apply(Arc::make_mut(&mut s.visible), &batch);
        s.pending.push(batch);
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        let mut s = self.lock();
        if s.poisoned {
            return Err(StorageError::Poisoned);
        }
        if s.fail_next_persist {
            s.poisoned = true;
            return Err(StorageError::Io {
                path: "<memory>".into(),
                source: std::io::Error::other("injected fsync failure"),
            });
        }
        let pending = std::mem::take(&mut s.pending);
        for batch in &pending {
            apply(&mut s.durable, batch);
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn ReadView> {
        Box::new(MemView { maps: self.maps() })
    }

    fn size_bytes(&self) -> u64 {
        let s = self.lock();
        s.visible
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}
