//! Quorum math, a leaf: majority and joint configurations, the committed
//! index of a set of acknowledged indexes, and the outcome of a vote.
//! Knows nothing of progress, messages or roles.
//!
//! Invariants: a majority config of n voters needs `n/2 + 1` of them; an
//! empty majority config commits everything (`u64::MAX`) and wins every vote,
//! so that a joint config with an empty outgoing half behaves as its incoming
//! half alone; a joint config needs both halves.

use std::collections::{BTreeMap, BTreeSet};

/// The outcome of a vote, given the votes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither a quorum of grants nor of rejections yet.
    Pending,
    /// A quorum rejected.
    Lost,
    /// A quorum granted.
    Won,
}

/// Something that knows the highest index each voter has acknowledged.
pub trait AckedIndexer {
    fn acked_index(&self, voter: u64) -> Option<u64>;
}

impl AckedIndexer for BTreeMap<u64, u64> {
    fn acked_index(&self, voter: u64) -> Option<u64> {
        self.get(&voter).copied()
    }
}

/// A set of voters deciding by simple majority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MajorityConfig {
    pub voters: BTreeSet<u64>,
}

impl MajorityConfig {
    pub fn new(voters: BTreeSet<u64>) -> MajorityConfig {
        MajorityConfig { voters }
    }

    pub fn len(&self) -> usize {
        self.voters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    /// The largest index acknowledged by a majority (`u64::MAX` when empty).
    /// Voters that acknowledged nothing count as index 0.
    pub fn committed_index(&self, acked: &impl AckedIndexer) -> u64 {
        let n = self.voters.len();
        if n == 0 {
            return u64::MAX;
        }
        let mut indexes: Vec<u64> = self
            .voters
            .iter()
            .map(|&id| acked.acked_index(id).unwrap_or(0))
            .collect();
        indexes.sort_unstable();
        // The quorum is n/2+1; sorted ascending, the quorum-th largest value
        // sits at position n - quorum.
        let quorum = n / 2 + 1;
        let committed = indexes[n - quorum];
        debug_assert!(
            indexes.iter().filter(|&&i| i >= committed).count() >= quorum,
            "committed {committed} not acked by a quorum of {indexes:?}"
        );
        committed
    }

    /// Won if a majority granted, Lost if a majority can no longer be reached.
    pub fn vote_result(&self, votes: &BTreeMap<u64, bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for id in &self.voters {
            match votes.get(id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.voters.len() / 2 + 1;
        if granted >= quorum {
            VoteResult::Won
        } else if granted + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// Two majority configs that must both agree (joint consensus). `outgoing`
/// is empty when the configuration is not joint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn new(voters: BTreeSet<u64>) -> JointConfig {
        JointConfig {
            incoming: MajorityConfig::new(voters),
            outgoing: MajorityConfig::default(),
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Every voter of either half.
    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming
            .voters
            .union(&self.outgoing.voters)
            .copied()
            .collect()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// The largest index committed in both halves.
    pub fn committed_index(&self, acked: &impl AckedIndexer) -> u64 {
        let a = self.incoming.committed_index(acked);
        let b = self.outgoing.committed_index(acked);
        a.min(b)
    }

    /// Won only if both halves won; Lost if either lost.
    pub fn vote_result(&self, votes: &BTreeMap<u64, bool>) -> VoteResult {
        let a = self.incoming.vote_result(votes);
        let b = self.outgoing.vote_result(votes);
        if a == b {
            return a;
        }
        if a == VoteResult::Lost || b == VoteResult::Lost {
            return VoteResult::Lost;
        }
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// The oracle: the largest index i such that a strict majority acked >= i.
    fn oracle_committed(voters: &[u64], acked: &BTreeMap<u64, u64>) -> u64 {
        if voters.is_empty() {
            return u64::MAX;
        }
        let mut candidates: Vec<u64> = voters
            .iter()
            .map(|v| acked.get(v).copied().unwrap_or(0))
            .collect();
        candidates.push(0);
        candidates
            .into_iter()
            .filter(|&i| {
                voters
                    .iter()
                    .filter(|v| acked.get(v).copied().unwrap_or(0) >= i)
                    .count()
                    * 2
                    > voters.len()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn committed_index_matches_oracle() {
        let mut rng = crate::rng::Rng::new(1);
        for case in 0..2000 {
            let n = rng.range(0, 8) as usize;
            let voters: Vec<u64> = (1..=n as u64).collect();
            let mut acked = BTreeMap::new();
            for &v in &voters {
                if rng.chance(4, 5) {
                    acked.insert(v, rng.range(0, 10));
                }
            }
            let got = MajorityConfig::new(set(&voters)).committed_index(&acked);
            let want = oracle_committed(&voters, &acked);
            assert_eq!(got, want, "case #{case}: voters {voters:?} acked {acked:?}");
        }
    }

    #[test]
    fn joint_committed_is_min_of_halves() {
        //  incoming (1 2 3) acked 5 5 1 -> 5; outgoing (3 4 5) acked 1 2 9 -> 2
        let acked: BTreeMap<u64, u64> = [(1, 5), (2, 5), (3, 1), (4, 2), (5, 9)].into();
        let j = JointConfig {
            incoming: MajorityConfig::new(set(&[1, 2, 3])),
            outgoing: MajorityConfig::new(set(&[3, 4, 5])),
        };
        assert_eq!(j.committed_index(&acked), 2);
        assert_eq!(JointConfig::new(set(&[1, 2, 3])).committed_index(&acked), 5);
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn vote_results() {
        let cases: &[(&[u64], &[(u64, bool)], VoteResult)] = &[
            (&[], &[], VoteResult::Won),
            (&[1], &[], VoteResult::Pending),
            (&[1], &[(1, true)], VoteResult::Won),
            (&[1], &[(1, false)], VoteResult::Lost),
            (&[1, 2, 3], &[(1, true)], VoteResult::Pending),
            (&[1, 2, 3], &[(1, true), (2, true)], VoteResult::Won),
            (&[1, 2, 3], &[(1, false), (2, false)], VoteResult::Lost),
            (&[1, 2, 3, 4], &[(1, true), (2, true)], VoteResult::Pending),
            (
                &[1, 2, 3, 4],
                &[(1, true), (2, false), (3, false)],
                VoteResult::Lost,
            ),
            // votes of non-voters are ignored
            (
                &[1, 2, 3],
                &[(7, true), (8, true), (1, true)],
                VoteResult::Pending,
            ),
        ];
        for (i, (voters, votes, want)) in cases.iter().enumerate() {
            let votes: BTreeMap<u64, bool> = votes.iter().copied().collect();
            let got = MajorityConfig::new(set(voters)).vote_result(&votes);
            assert_eq!(got, *want, "case #{i}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn joint_vote_needs_both_halves() {
        let j = JointConfig {
            incoming: MajorityConfig::new(set(&[1, 2, 3])),
            outgoing: MajorityConfig::new(set(&[3, 4, 5])),
        };
        let votes: BTreeMap<u64, bool> = [(1, true), (2, true)].into();
        assert_eq!(j.vote_result(&votes), VoteResult::Pending);
        let votes: BTreeMap<u64, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(j.vote_result(&votes), VoteResult::Lost);
        let votes: BTreeMap<u64, bool> = [(1, true), (3, true), (4, true)].into();
        assert_eq!(j.vote_result(&votes), VoteResult::Won);
    }
}
