//! Every revision of a log at once: for each key the list of its versions
//! (revision, kv or tombstone), so the state of any range at any revision
//! from the base on is found by one binary search per key.
//!
//! ```text
//!   key a: (1, a@1) (4, a@4) (6, gone)
//!   key b:          (3, b@3)
//!   at revision 5: a@4, b@3        at revision 6: b@3
//! ```

use std::collections::BTreeMap;

use crate::history::{Bytes, Kv};
use crate::log::{Entry, EventKind};
use crate::model::{range_bounds, View};

/// The versions of every key from `base_revision` to `last_revision`.
#[derive(Debug, Clone, Default)]
pub struct Index {
    base_revision: i64,
    last_revision: i64,
    /// Per key, (revision, the kv from that revision on; `None`: deleted),
    /// revisions strictly increasing.
    keys: BTreeMap<Bytes, Vec<(i64, Option<Kv>)>>,
}

impl Index {
    /// The index holding `base`, the full state at `base_revision`.
    pub fn new(base: &[Kv], base_revision: i64) -> Self {
        let mut keys: BTreeMap<Bytes, Vec<(i64, Option<Kv>)>> = BTreeMap::new();
        for kv in base {
            keys.insert(kv.key.clone(), vec![(base_revision, Some(kv.clone()))]);
        }
        Index {
            base_revision,
            last_revision: base_revision,
            keys,
        }
    }

    pub fn base_revision(&self) -> i64 {
        self.base_revision
    }

    pub fn last_revision(&self) -> i64 {
        self.last_revision
    }

    /// Adds the next revision. The entry must be well formed (see
    /// [`crate::model::Store::validate`]); only its revision is asserted.
    pub fn push(&mut self, entry: &Entry) {
        assert_eq!(
            entry.revision,
            self.last_revision + 1,
            "index: revision {} after {}",
            entry.revision,
            self.last_revision
        );
        for event in &entry.events {
            let kv = match event.kind {
                EventKind::Put => Some(event.kv.clone()),
                EventKind::Delete => None,
            };
            let versions = self.keys.entry(event.kv.key.clone()).or_default();
            debug_assert!(versions.last().is_none_or(|(r, _)| *r < entry.revision));
            versions.push((entry.revision, kv));
        }
        self.last_revision = entry.revision;
    }

    /// The state at `revision`, or `None` when the index cannot tell
    /// (before the base or after the last revision).
    pub fn at(&self, revision: i64) -> Option<Snapshot<'_>> {
        if revision < self.base_revision || revision > self.last_revision {
            return None;
        }
        Some(Snapshot {
            index: self,
            revision,
        })
    }
}

/// The state of an [`Index`] at one revision.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    index: &'a Index,
    revision: i64,
}

impl Snapshot<'_> {
    fn lookup(&self, versions: &[(i64, Option<Kv>)]) -> Option<Kv> {
        let n = versions.partition_point(|(r, _)| *r <= self.revision);
        if n == 0 {
            return None;
        }
        versions[n - 1].1.clone()
    }

    /// Every kv at this revision, sorted by key.
    pub fn all(&self) -> Vec<Kv> {
        self.index
            .keys
            .values()
            .filter_map(|versions| self.lookup(versions))
            .collect()
    }
}

impl View for Snapshot<'_> {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn get(&self, key: &[u8]) -> Option<Kv> {
        self.index.keys.get(key).and_then(|v| self.lookup(v))
    }

    fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<Kv> {
        let Some(bounds) = range_bounds(key, range_end) else {
            return Vec::new();
        };
        self.index
            .keys
            .range::<[u8], _>(bounds)
            .filter_map(|(_, versions)| self.lookup(versions))
            .collect()
    }

    fn lease_keys(&self, lease: i64) -> Vec<Bytes> {
        self.all()
            .into_iter()
            .filter(|kv| lease != 0 && kv.lease == lease)
            .map(|kv| kv.key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;
    use crate::model::{execute, Store};

    // key a: put@2, put@4, deleted@6; key b: put@3 (the diagram above,
    // shifted by the empty store's first revision).
    #[test]
    fn state_at_every_revision() {
        let mut store = Store::new();
        let mut index = Index::new(&[], 1);
        let calls = [
            Call::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 0,
            },
            Call::Put {
                key: b"b".to_vec(),
                value: b"2".to_vec(),
                lease: 0,
            },
            Call::Put {
                key: b"a".to_vec(),
                value: b"3".to_vec(),
                lease: 0,
            },
            Call::Put {
                key: b"c".to_vec(),
                value: b"4".to_vec(),
                lease: 0,
            },
            Call::Delete {
                key: b"a".to_vec(),
                range_end: Vec::new(),
            },
        ];
        let mut states = vec![store.range(b"", &[0])];
        for call in &calls {
            let effect = execute(&store, call).unwrap();
            let entry = store.commit(effect.events).unwrap();
            index.push(&entry);
            states.push(store.range(b"", &[0]));
        }
        for (i, want) in states.iter().enumerate() {
            let revision = i as i64 + 1;
            let got = index.at(revision).unwrap().range(b"", &[0]);
            assert_eq!(&got, want, "revision {revision}");
        }
        assert!(index.at(0).is_none());
        assert!(index.at(7).is_none());
        let at5 = index.at(5).unwrap();
        assert_eq!(at5.get(b"a").unwrap().value, b"3");
        assert_eq!(at5.range(b"b", b"c").len(), 1);
    }
}
