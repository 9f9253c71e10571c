//! The leader's view of its followers, a leaf below the core: per-peer
//! `Progress` (probe / replicate / snapshot), the `Inflights` window of
//! unacknowledged appends, the membership (`TrackerConfig`) and the votes of
//! an election. Knows quorum math, not messages or roles.
//!
//! ```text
//!            +--------------------------------------------------------+
//!            |                  send snapshot                         |
//!            |                                                        v
//!  +---------+----------+                                  +----------+-------+
//!  |       probe        |<---------------------------------|     snapshot     |
//!  +---------+----------+   snapshot done / failed         +------------------+
//!            |  ^
//!  append ok |  | append rejected / unreachable
//!            v  |
//!  +---------+----------+
//!  |     replicate      |
//!  +--------------------+
//! ```
//!
//! Invariants: `matched < next_idx`; `matched` never decreases; a peer in
//! probe has at most one append in flight; a peer in replicate has at most
//! `max_inflight_msgs` appends in flight; a peer in snapshot gets no appends.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::message::ConfState;
use crate::quorum::{AckedIndexer, JointConfig, VoteResult};

/// A bounded window of appends sent but not yet acknowledged, each recorded
/// by the index of its last entry and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflights {
    window: VecDeque<(u64, u64)>,
    count_max: usize,
    bytes_max: u64,
    bytes: u64,
}

impl Inflights {
    /// `bytes_max == 0` means no byte limit.
    pub fn new(count_max: usize, bytes_max: u64) -> Inflights {
        assert!(count_max > 0, "inflight window of size 0");
        Inflights {
            window: VecDeque::with_capacity(count_max.min(256)),
            count_max,
            bytes_max,
            bytes: 0,
        }
    }

    /// Records an append whose last entry is `index`. Indexes must increase.
    pub fn add(&mut self, index: u64, bytes: u64) {
        assert!(!self.full(), "cannot add into a full inflights window");
        if let Some(&(last, _)) = self.window.back() {
            assert!(index > last, "inflight index {index} not above last {last}");
        }
        self.window.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Frees every append whose last index is `<= to`.
    pub fn free_le(&mut self, to: u64) {
        while let Some(&(index, bytes)) = self.window.front() {
            if index > to {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest append (a heartbeat response proves the peer is alive).
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn full(&self) -> bool {
        self.window.len() >= self.count_max || (self.bytes_max > 0 && self.bytes >= self.bytes_max)
    }

    pub fn count(&self) -> usize {
        self.window.len()
    }

    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }
}

/// How the leader replicates to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressState {
    /// Send one append per heartbeat interval until the match is found.
    #[default]
    Probe,
    /// Stream appends optimistically, bounded by the inflights window.
    Replicate,
    /// Waiting for a snapshot to be applied; send nothing.
    Snapshot,
}

/// The leader's knowledge of one peer's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known to be replicated on the peer.
    pub matched: u64,
    /// Index of the next entry to send.
    pub next_idx: u64,
    pub state: ProgressState,
    /// Index of the snapshot being sent (state Snapshot only).
    pub pending_snapshot: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In probe: an append was sent and not yet answered.
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next_idx: u64, count_max: usize, bytes_max: u64) -> Progress {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(count_max, bytes_max),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // The snapshot may have been applied: resume after it.
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// The peer acknowledged `n`; returns whether `matched` grew.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next_idx = self.next_idx.max(n + 1);
        debug_assert!(self.matched < self.next_idx, "{self:?}");
        updated
    }

    /// Records that entries up to `last` were sent (replicate state).
    pub fn optimistic_update(&mut self, last: u64) {
        self.next_idx = last + 1;
    }

    /// The peer rejected an append at `rejected`, hinting that its log
    /// matches up to `match_hint`. Returns false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false; // stale
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        if self.next_idx.saturating_sub(1) != rejected {
            return false; // stale: not the probe we are waiting for
        }
        self.next_idx = rejected
            .min(match_hint.saturating_add(1))
            .max(self.matched + 1)
            .max(1);
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold appends to this peer.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

/// The membership, as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackerConfig {
    pub voters: JointConfig,
    pub learners: BTreeSet<u64>,
    /// Outgoing voters that become learners when the joint config is left.
    pub learners_next: BTreeSet<u64>,
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.voters.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    /// Asserts the structural invariants etcd's `checkInvariants` checks.
    pub fn check(&self, progress: &BTreeMap<u64, Progress>) -> Result<(), String> {
        for id in self
            .voters
            .ids()
            .iter()
            .chain(&self.learners)
            .chain(&self.learners_next)
        {
            if !progress.contains_key(id) {
                return Err(format!("no progress for {id}"));
            }
        }
        for id in &self.learners_next {
            if !self.voters.outgoing.contains(*id) {
                return Err(format!("{id} is in learners_next, but not outgoing"));
            }
            if progress[id].is_learner {
                return Err(format!(
                    "{id} is in learners_next, but is already a learner"
                ));
            }
        }
        for id in &self.learners {
            if self.voters.contains(*id) {
                return Err(format!("{id} is a learner and a voter"));
            }
            if !progress[id].is_learner {
                return Err(format!("{id} is in learners, but not marked as learner"));
            }
        }
        if !self.voters.is_joint() {
            if !self.learners_next.is_empty() {
                return Err("learners_next must be empty when not joint".into());
            }
            if self.auto_leave {
                return Err("auto_leave must be false when not joint".into());
            }
        }
        for id in progress.keys() {
            let known = self.voters.contains(*id) || self.learners.contains(id);
            if !known {
                return Err(format!("progress for {id} that is not in the config"));
            }
        }
        Ok(())
    }
}

struct MatchIndexes<'a>(&'a BTreeMap<u64, Progress>);

impl AckedIndexer for MatchIndexes<'_> {
    fn acked_index(&self, voter: u64) -> Option<u64> {
        self.0.get(&voter).map(|p| p.matched)
    }
}

/// Membership plus per-peer progress plus the votes of the current election.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    pub config: TrackerConfig,
    pub progress: BTreeMap<u64, Progress>,
    pub votes: BTreeMap<u64, bool>,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub fn new(max_inflight: usize, max_inflight_bytes: u64) -> ProgressTracker {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
            max_inflight_bytes,
        }
    }

    pub fn conf_state(&self) -> ConfState {
        self.config.to_conf_state()
    }

    /// Exactly one voter and not joint: commits and elections need no messages.
    pub fn is_singleton(&self) -> bool {
        self.config.voters.incoming.len() == 1 && !self.config.voters.is_joint()
    }

    /// The largest index a quorum of voters has matched.
    pub fn committed(&self) -> u64 {
        self.config
            .voters
            .committed_index(&MatchIndexes(&self.progress))
    }

    /// Whether a quorum of voters was recently active (check-quorum).
    /// The leader itself (`self_id`) always counts as active.
    pub fn quorum_active(&self, self_id: u64) -> bool {
        let mut votes = BTreeMap::new();
        for (id, pr) in &self.progress {
            if !pr.is_learner {
                votes.insert(*id, pr.recent_active || *id == self_id);
            }
        }
        self.config.voters.vote_result(&votes) == VoteResult::Won
    }

    pub fn voter_ids(&self) -> BTreeSet<u64> {
        self.config.voters.ids()
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s vote; a second vote from the same peer is ignored.
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// (granted, rejected, result) over the current voters.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (id, pr) in &self.progress {
            if pr.is_learner {
                continue;
            }
            match self.votes.get(id) {
                Some(true) => granted += 1,
                Some(false) => rejected += 1,
                None => {}
            }
        }
        (
            granted,
            rejected,
            self.config.voters.vote_result(&self.votes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_window() {
        let mut inf = Inflights::new(3, 0);
        inf.add(1, 10);
        inf.add(2, 10);
        assert!(!inf.full());
        inf.add(5, 10);
        assert!(inf.full());
        inf.free_le(1);
        assert_eq!(inf.count(), 2);
        assert!(!inf.full());
        inf.free_le(4);
        assert_eq!(inf.count(), 1);
        inf.free_first_one();
        assert_eq!(inf.count(), 0);
        inf.free_first_one();
        assert_eq!(inf.count(), 0);
    }

    #[test]
    fn inflights_byte_limit() {
        let mut inf = Inflights::new(10, 100);
        inf.add(1, 60);
        assert!(!inf.full());
        inf.add(2, 40);
        assert!(inf.full());
        inf.free_le(1);
        assert!(!inf.full());
    }

    #[test]
    #[should_panic(expected = "full")]
    fn inflights_overflow_panics() {
        let mut inf = Inflights::new(1, 0);
        inf.add(1, 0);
        inf.add(2, 0);
    }

    #[test]
    fn progress_decr_in_probe_and_replicate() {
        // probe: next=10, peer rejects index 9 and says its log ends at 4
        let mut p = Progress::new(10, 4, 0);
        p.probe_sent = true;
        assert!(p.maybe_decr_to(9, 4));
        assert_eq!(p.next_idx, 5);
        assert!(!p.probe_sent);
        // a stale rejection (not for next-1) is ignored
        assert!(!p.maybe_decr_to(9, 2));
        // replicate: rejection above matched resets next to matched+1
        let mut p = Progress::new(10, 4, 0);
        p.maybe_update(5);
        p.become_replicate();
        p.optimistic_update(9);
        assert!(p.maybe_decr_to(8, 6));
        assert_eq!(p.next_idx, 6);
        assert!(!p.maybe_decr_to(5, 0), "rejection at matched is stale");
    }

    #[test]
    fn progress_pause_rules() {
        let mut p = Progress::new(1, 2, 0);
        assert!(!p.is_paused());
        p.probe_sent = true;
        assert!(p.is_paused());
        p.become_replicate();
        assert!(!p.is_paused());
        p.inflights.add(1, 0);
        p.inflights.add(2, 0);
        assert!(p.is_paused());
        p.become_snapshot(10);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_idx, 11, "probe resumes after the pending snapshot");
    }

    #[test]
    fn quorum_active_counts_self() {
        let mut t = ProgressTracker::new(4, 0);
        t.config.voters = JointConfig::new([1, 2, 3].into());
        for id in [1, 2, 3] {
            t.progress.insert(id, Progress::new(1, 4, 0));
        }
        assert!(!t.quorum_active(1));
        if let Some(p) = t.progress.get_mut(&2) {
            p.recent_active = true;
        }
        assert!(t.quorum_active(1));
    }
}
