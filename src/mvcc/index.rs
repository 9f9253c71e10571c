//! The in-memory ordered index: user key -> [`KeyIndex`].
//!
//! Answers "which revision holds key K at revision R" for single keys and key
//! ranges, in key order. It holds no values; those live in the revision
//! records on disk.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;

use smallvec::SmallVec;

use super::key_index::{KeyAt, KeyIndex};
use super::revision::Revision;

/// A set of user keys, as etcd's `(key, range_end)` pair describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// Exactly one key (`range_end` empty).
    Key(Vec<u8>),
    /// `[start, end)`; empty when `end <= start`.
    Range(Vec<u8>, Vec<u8>),
    /// Every key `>= start` (`range_end == "\0"`).
    From(Vec<u8>),
}

impl Span {
    pub fn from_etcd(key: &[u8], range_end: &[u8]) -> Span {
        match range_end {
            [] => Span::Key(key.to_vec()),
            [0] => Span::From(key.to_vec()),
            end => Span::Range(key.to_vec(), end.to_vec()),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            Span::Key(key) => k == key.as_slice(),
            Span::Range(a, b) => a.as_slice() <= k && k < b.as_slice(),
            Span::From(a) => a.as_slice() <= k,
        }
    }

    /// True when no key can be inside.
    pub fn is_empty(&self) -> bool {
        matches!(self, Span::Range(a, b) if b <= a)
    }

    /// Byte bounds of the span (for an empty span, an empty range).
    pub fn bounds(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        match self {
            Span::Key(k) => (Bound::Included(k.clone()), Bound::Included(k.clone())),
            Span::Range(a, b) if b <= a => (Bound::Included(a.clone()), Bound::Excluded(a.clone())),
            Span::Range(a, b) => (Bound::Included(a.clone()), Bound::Excluded(b.clone())),
            Span::From(a) => (Bound::Included(a.clone()), Bound::Unbounded),
        }
    }
}

/// A user key as the index holds it: inline up to 24 bytes, so a lookup
/// compares keys inside the tree's nodes instead of following a pointer
/// (a cache miss) for every comparison; longer keys are on the heap.
type IndexKey = SmallVec<[u8; INLINE_KEY_BYTES]>;
const INLINE_KEY_BYTES: usize = 24;

#[derive(Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<IndexKey, KeyIndex>,
}

/// The bounds of `span` as slices (what the tree is searched by).
fn slice_bounds(b: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        b.0.as_ref().map(Vec::as_slice),
        b.1.as_ref().map(Vec::as_slice),
    )
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with any history in memory (live or not).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Every key of `span` that existed at `at`, in key order.
    pub fn range(&self, span: &Span, at: i64) -> Vec<(Vec<u8>, KeyAt)> {
        if span.is_empty() {
            return Vec::new();
        }
        if let Span::Key(k) = span {
            return self
                .get(k, at)
                .map(|a| (k.clone(), a))
                .into_iter()
                .collect();
        }
        self.keys
            .range::<[u8], _>(slice_bounds(&span.bounds()))
            .filter_map(|(k, ki)| ki.get(at).map(|a| (k.to_vec(), a)))
            .collect()
    }

    /// Keys of `span` changed at or after `since`, with those revisions.
    pub fn range_since(&self, span: &Span, since: i64) -> Vec<(Vec<u8>, Revision)> {
        if span.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (k, ki) in self.keys.range::<[u8], _>(slice_bounds(&span.bounds())) {
            out.extend(ki.since(since).into_iter().map(|r| (k.to_vec(), r)));
        }
        out
    }

    pub fn put(&mut self, key: &[u8], rev: Revision) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::new();
                ki.put(rev);
                self.keys.insert(IndexKey::from_slice(key), ki);
            }
        }
    }

    /// Deletes the live key at `rev`; false (no change) if it is not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Builds the index of live keys from their persisted summaries, given
    /// in key order (a bulk build, faster than inserting one by one).
    pub fn from_sorted_live(keys: Vec<(Vec<u8>, KeyIndex)>) -> Self {
        debug_assert!(
            keys.windows(2).all(|w| w[0].0 < w[1].0),
            "keys must be sorted and unique"
        );
        Self {
            keys: keys
                .into_iter()
                .map(|(k, ki)| {
                    // from_vec keeps a heap buffer whose capacity is
                    // larger than inline, however short the key.
                    let k = if k.len() <= INLINE_KEY_BYTES {
                        IndexKey::from_slice(&k)
                    } else {
                        IndexKey::from_vec(k)
                    };
                    (k, ki)
                })
                .collect(),
        }
    }

    /// Compacts every key at `at`; returns the revisions kept.
    pub fn compact(&mut self, at: i64) -> BTreeSet<Revision> {
        let mut keep = BTreeSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut keep);
            !ki.is_empty()
        });
        keep
    }

    /// The revision of every key alive at `at` (keys not copied).
    pub fn live_revisions_at(&self, at: i64) -> HashSet<Revision> {
        self.keys
            .values()
            .filter_map(|ki| ki.get(at))
            .map(|a| a.modified)
            .collect()
    }

    /// The revisions a compaction at `at` would keep.
    pub fn keep(&self, at: i64) -> BTreeSet<Revision> {
        let mut keep = BTreeSet::new();
        for ki in self.keys.values() {
            ki.keep(at, &mut keep);
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn span_from_etcd() {
        assert_eq!(Span::from_etcd(b"a", b""), Span::Key(b"a".to_vec()));
        assert_eq!(Span::from_etcd(b"a", b"\0"), Span::From(b"a".to_vec()));
        assert_eq!(
            Span::from_etcd(b"a", b"c"),
            Span::Range(b"a".to_vec(), b"c".to_vec())
        );
        assert!(Span::from_etcd(b"c", b"a").is_empty());
        assert!(Span::from_etcd(b"a", b"a").is_empty());
        let s = Span::from_etcd(b"a", b"c");
        assert!(s.contains(b"a") && s.contains(b"b\xff") && !s.contains(b"c"));
    }

    #[test]
    fn range_at_revisions() {
        let mut t = TreeIndex::new();
        t.put(b"a", r(1));
        t.put(b"b", r(2));
        t.put(b"c", r(3));
        assert!(t.tombstone(b"b", r(4)));
        t.put(b"a", r(5));
        let keys = |span: &Span, at| -> Vec<(String, i64)> {
            t.range(span, at)
                .into_iter()
                .map(|(k, a)| (String::from_utf8(k).unwrap(), a.modified.main))
                .collect()
        };
        let all = Span::From(b"a".to_vec());
        // (at, want)
        let cases: &[(i64, &[(&str, i64)])] = &[
            (0, &[]),
            (1, &[("a", 1)]),
            (3, &[("a", 1), ("b", 2), ("c", 3)]),
            (4, &[("a", 1), ("c", 3)]),
            (5, &[("a", 5), ("c", 3)]),
        ];
        for (i, (at, want)) in cases.iter().enumerate() {
            let want: Vec<(String, i64)> = want.iter().map(|(k, m)| (k.to_string(), *m)).collect();
            assert_eq!(keys(&all, *at), want, "case #{i}: at {at}");
        }
        assert_eq!(
            keys(&Span::Range(b"b".to_vec(), b"c".to_vec()), 3),
            [("b".into(), 2)]
        );
        assert_eq!(keys(&Span::Key(b"c".to_vec()), 5), [("c".into(), 3)]);
        assert_eq!(
            t.range_since(&all, 4),
            [(b"a".to_vec(), r(5)), (b"b".to_vec(), r(4))]
        );
    }

    #[test]
    fn compact_drops_dead_keys() {
        let mut t = TreeIndex::new();
        t.put(b"a", r(1));
        t.put(b"b", r(2));
        assert!(t.tombstone(b"a", r(3)));
        let keep = t.compact(3);
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), [r(2)]);
        assert_eq!(t.len(), 1);
        assert!(t.key_index(b"a").is_none());
    }
}
