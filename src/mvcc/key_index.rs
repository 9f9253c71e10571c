//! `KeyIndex`: the revision history of one user key, as generations.
//!
//! A generation is the life of a key from its creation to its deletion: the
//! revisions of every put, ending with the tombstone revision. After a
//! tombstone a new, empty generation opens. Example (`t` = tombstone):
//!
//! ```text
//! key "foo", puts at 2, 4, delete at 6, puts at 8, 10, delete at 12, put at 14
//!   generations[0]: {2.0, 4.0, 6.0(t)}        ver 3
//!   generations[1]: {8.0, 10.0, 12.0(t)}      ver 3
//!   generations[2]: {14.0}                    ver 1   (live)
//! ```
//! `version` counts the puts of the current generation: it is `ver` at the
//! latest revision and resets after a delete.
//!
//! Invariants (asserted): revisions only grow; a tombstone only ends a
//! non-empty generation; the last generation is the only one that may be
//! empty or lack a tombstone.

use std::collections::BTreeSet;

use super::revision::Revision;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Generation {
    /// Number of puts in this generation (including ones compacted away).
    pub ver: i64,
    /// Revision of the put that created the key.
    pub created: Revision,
    /// Revisions of this generation, ascending; the last of a closed
    /// generation is its tombstone.
    pub revs: Vec<Revision>,
}

impl Generation {
    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Index of the newest revision with `main <= at`.
    fn newest_at_or_below(&self, at: i64) -> Option<usize> {
        let n = self.revs.partition_point(|r| r.main <= at);
        n.checked_sub(1)
    }
}

/// What a key looked like at some revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    pub modified: Revision,
    pub created: Revision,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    modified: Revision,
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyIndex {
    pub fn new() -> Self {
        Self {
            modified: Revision::default(),
            generations: vec![Generation::default()],
        }
    }

    /// Rebuilds the index of a live key from its persisted summary: one
    /// generation holding only the latest revision.
    pub fn restore(created: Revision, modified: Revision, ver: i64) -> Self {
        assert!(
            created <= modified && ver >= 1,
            "restore: created {created} modified {modified} ver {ver}"
        );
        Self {
            modified,
            generations: vec![Generation {
                ver,
                created,
                revs: vec![modified],
            }],
        }
    }

    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// The revision of the latest change (put or tombstone).
    pub fn modified(&self) -> Revision {
        self.modified
    }

    /// True when the key has no revision left at all.
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// True when the key exists at the latest revision.
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.is_empty())
    }

    pub fn put(&mut self, rev: Revision) {
        assert!(
            rev > self.modified,
            "put at {rev} is not after the last change {}",
            self.modified
        );
        let g = self
            .generations
            .last_mut()
            .expect("a key index always has a generation");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
    }

    /// Ends the live generation at `rev`. Returns false (and changes nothing)
    /// when the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if !self.is_live() {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// The generation holding the key's state at `at`, or `None` when the key
    /// did not exist then (before creation, or in the gap after a tombstone).
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let Some(first) = g.revs.first() else {
                continue;
            };
            if i != last {
                let tomb = g.revs.last().expect("non-empty").main;
                if tomb <= at {
                    return None;
                }
            }
            if first.main <= at {
                return Some(g);
            }
        }
        None
    }

    /// The key's state at revision `at`, if it existed then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        let n = g.newest_at_or_below(at)?;
        let newer = (g.revs.len() - n - 1) as i64;
        Some(KeyAt {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - newer,
        })
    }

    /// Revisions with `main >= since`; of several with the same main, only
    /// the one with the largest sub.
    pub fn since(&self, since: i64) -> Vec<Revision> {
        let mut out: Vec<Revision> = Vec::new();
        for g in &self.generations {
            for r in g.revs.iter().filter(|r| r.main >= since) {
                match out.last_mut() {
                    Some(last) if last.main == r.main => *last = *r,
                    _ => out.push(*r),
                }
            }
        }
        out
    }

    /// Finds the generation a compaction at `at` starts from and the position
    /// of the newest revision `<= at` in it, adding that revision to `keep`.
    fn do_compact(&self, at: i64, keep: &mut BTreeSet<Revision>) -> (usize, Option<usize>) {
        let mut gi = 0;
        while gi < self.generations.len() - 1 {
            let g = &self.generations[gi];
            let tomb = g
                .revs
                .last()
                .expect("closed generations are non-empty")
                .main;
            if tomb > at {
                break;
            }
            gi += 1;
        }
        let ri = self.generations[gi].newest_at_or_below(at);
        if let Some(ri) = ri {
            keep.insert(self.generations[gi].revs[ri]);
        }
        (gi, ri)
    }

    /// Adds to `keep` the revision a compaction at `at` would keep, without
    /// changing the index.
    pub fn keep(&self, at: i64, keep: &mut BTreeSet<Revision>) {
        if self.is_empty() {
            return;
        }
        let (gi, ri) = self.do_compact(at, keep);
        let g = &self.generations[gi];
        if let Some(ri) = ri {
            let is_tombstone = ri == g.revs.len() - 1 && gi != self.generations.len() - 1;
            if is_tombstone {
                keep.remove(&g.revs[ri]);
            }
        }
    }

    /// Drops every revision `<= at` except the newest one, which is kept
    /// unless it is a tombstone; drops generations left empty. The kept
    /// revision is added to `keep`.
    pub fn compact(&mut self, at: i64, keep: &mut BTreeSet<Revision>) {
        assert!(!self.is_empty(), "compact of an empty key index");
        let (mut gi, ri) = self.do_compact(at, keep);
        let last = self.generations.len() - 1;
        let g = &mut self.generations[gi];
        if !g.is_empty() {
            if let Some(ri) = ri {
                g.revs.drain(..ri);
            }
            if g.revs.len() == 1 && gi != last {
                // Only the tombstone is left: the key did not exist at `at`.
                keep.remove(&g.revs[0]);
                gi += 1;
            }
        }
        self.generations.drain(..gi);
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
    }

    /// Checks the structural invariants; used by assertions and tests.
    pub fn check(&self) -> Result<(), String> {
        if self.generations.is_empty() {
            return Err("no generation".into());
        }
        let mut prev: Option<Revision> = None;
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate() {
            if i != last && g.is_empty() {
                return Err(format!("generation {i} is empty but not last"));
            }
            for r in &g.revs {
                if prev.is_some_and(|p| p >= *r) {
                    return Err(format!("revision {r} not after {prev:?}"));
                }
                prev = Some(*r);
            }
            if g.ver < g.revs.len() as i64 {
                return Err(format!(
                    "generation {i}: ver {} < {} revs",
                    g.ver,
                    g.revs.len()
                ));
            }
        }
        if let Some(p) = prev {
            if p != self.modified {
                return Err(format!("modified {} != last revision {p}", self.modified));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// ```text
    /// generations:
    ///    {empty}
    ///    {14.0, 14.1, 16.0(t)}
    ///    {8.0, 10.0, 12.0(t)}
    ///    {2.0, 4.0, 6.0(t)}
    /// ```
    fn three_generations() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.put(r(4));
        assert!(ki.tombstone(r(6)));
        ki.put(r(8));
        ki.put(r(10));
        assert!(ki.tombstone(r(12)));
        ki.put(r(14));
        ki.put(Revision::new(14, 1));
        assert!(ki.tombstone(r(16)));
        ki.check().expect("valid");
        ki
    }

    #[test]
    fn get_walks_generations() {
        let ki = three_generations();
        // (at, want Some((modified, created, version)) or None)
        #[allow(clippy::type_complexity)]
        let cases: &[(i64, Option<(Revision, Revision, i64)>)] = &[
            (0, None),
            (1, None),
            (2, Some((r(2), r(2), 1))),
            (3, Some((r(2), r(2), 1))),
            (4, Some((r(4), r(2), 2))),
            (5, Some((r(4), r(2), 2))),
            (6, None),
            (7, None),
            (8, Some((r(8), r(8), 1))),
            (11, Some((r(10), r(8), 2))),
            (12, None),
            (13, None),
            (14, Some((Revision::new(14, 1), r(14), 2))),
            (15, Some((Revision::new(14, 1), r(14), 2))),
            (16, None),
            (17, None),
        ];
        for (i, (at, want)) in cases.iter().enumerate() {
            let got = ki.get(*at).map(|k| (k.modified, k.created, k.version));
            assert_eq!(got, *want, "case #{i}: get({at})");
        }
    }

    #[test]
    fn since_keeps_largest_sub_per_main() {
        let ki = three_generations();
        let all: Vec<_> = ki.since(0);
        assert_eq!(
            all,
            [
                r(2),
                r(4),
                r(6),
                r(8),
                r(10),
                r(12),
                Revision::new(14, 1),
                r(16)
            ]
        );
        assert_eq!(ki.since(13), [Revision::new(14, 1), r(16)]);
        assert!(ki.since(17).is_empty());
    }

    #[test]
    fn tombstone_of_a_dead_key_is_refused() {
        let mut ki = KeyIndex::new();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)), "already deleted");
        assert_eq!(ki.modified(), r(3));
    }

    /// Compaction, step by step on the same index, as etcd's TestKeyIndexCompactAndKeep:
    /// each case compacts further and states the generations left and what is kept.
    #[test]
    fn compact_step_by_step() {
        let ki0 = three_generations();
        // (at, generations left as main revs, kept)
        #[allow(clippy::type_complexity)]
        let cases: &[(i64, &[&[i64]], &[i64])] = &[
            (1, &[&[2, 4, 6], &[8, 10, 12], &[14, 14, 16], &[]], &[]),
            (2, &[&[2, 4, 6], &[8, 10, 12], &[14, 14, 16], &[]], &[2]),
            (3, &[&[2, 4, 6], &[8, 10, 12], &[14, 14, 16], &[]], &[2]),
            (4, &[&[4, 6], &[8, 10, 12], &[14, 14, 16], &[]], &[4]),
            (5, &[&[4, 6], &[8, 10, 12], &[14, 14, 16], &[]], &[4]),
            (6, &[&[8, 10, 12], &[14, 14, 16], &[]], &[]),
            (7, &[&[8, 10, 12], &[14, 14, 16], &[]], &[]),
            (8, &[&[8, 10, 12], &[14, 14, 16], &[]], &[8]),
            (10, &[&[10, 12], &[14, 14, 16], &[]], &[10]),
            (12, &[&[14, 14, 16], &[]], &[]),
            (14, &[&[14, 16], &[]], &[14]),
            (15, &[&[14, 16], &[]], &[14]),
            (16, &[&[]], &[]),
        ];
        let mut ki = ki0.clone();
        for (i, (at, gens, kept)) in cases.iter().enumerate() {
            // keep() on a fresh copy predicts what compact() keeps.
            let mut predicted = BTreeSet::new();
            ki0.keep(*at, &mut predicted);
            let mut k = BTreeSet::new();
            ki.compact(*at, &mut k);
            let got: Vec<Vec<i64>> = ki
                .generations()
                .iter()
                .map(|g| g.revs.iter().map(|r| r.main).collect())
                .collect();
            let want: Vec<Vec<i64>> = gens.iter().map(|g| g.to_vec()).collect();
            assert_eq!(got, want, "case #{i}: compact({at}) generations");
            let kept_main: Vec<i64> = k.iter().map(|r| r.main).collect();
            assert_eq!(kept_main, *kept, "case #{i}: compact({at}) keep");
            let predicted_main: Vec<i64> = predicted.iter().map(|r| r.main).collect();
            assert_eq!(predicted_main, *kept, "case #{i}: keep({at})");
            // Reads at or after the compaction point still answer the same.
            for at2 in *at..18 {
                assert_eq!(
                    ki.get(at2),
                    ki0.get(at2),
                    "case #{i}: get({at2}) after compact({at})"
                );
            }
        }
        assert!(ki.is_empty());
    }

    #[test]
    fn restore_answers_like_the_full_history_at_and_after_the_latest() {
        let mut full = KeyIndex::new();
        full.put(r(3));
        full.put(r(5));
        full.put(r(9));
        let ki = KeyIndex::restore(r(3), r(9), 3);
        for at in 9..12 {
            assert_eq!(ki.get(at), full.get(at), "get({at})");
        }
        let mut full2 = full.clone();
        let mut ki2 = ki.clone();
        full2.put(r(12));
        ki2.put(r(12));
        assert!(full2.tombstone(r(13)));
        assert!(ki2.tombstone(r(13)));
        for at in 9..15 {
            assert_eq!(ki2.get(at), full2.get(at), "get({at}) after more changes");
        }
    }
}
