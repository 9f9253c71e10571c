//! The raft algorithm: roles, the `step_*` function of each role, elections
//! (pre-vote, check-quorum, leader stickiness), replication and commit,
//! snapshots, ReadIndex, leader transfer and membership changes.
//!
//! ```text
//!                  timeout (pre-vote)         pre-vote quorum
//!   +----------+ ─────────────────► +-------------+ ───────────► +-----------+
//!   | Follower |                    | PreCandidate|              | Candidate |
//!   +----------+ ◄───────────────── +-------------+              +-----------+
//!      ▲  ▲      lost / higher term / leader heard                  │   │
//!      │  └─────────────────────────────────────────────────────────┘   │ vote quorum
//!      │        lost / higher term / leader heard                       ▼
//!      │                                                         +-----------+
//!      └──────────── higher term / check-quorum fails / removed ─│  Leader   │
//!                                                                +-----------+
//! ```
//!
//! Invariants (asserted): the term never decreases; a node votes at most
//! once per term; the commit index never decreases and never passes the
//! last index; a committed entry is never replaced; a leader commits only an
//! entry of its own term, and only when a quorum has matched it; only a
//! voter becomes leader, and a leader removed or demoted by a conf change
//! stops taking proposals, hands over (MsgTimeoutNow) and steps down.
//!
//! Two additions to etcd's algorithm, both for liveness of joint consensus
//! (configurations take effect when applied, so voters can lag behind a
//! removal that already committed): the handover above, and vote
//! rejections that carry the voter's commit index, from which a candidate
//! holding that entry learns it is committed.

use std::collections::BTreeMap;

use crate::confchange::{self, Changer, ConfChange, ConfigAndProgress};
use crate::config::{Config, ReadOnlyOption};
use crate::error::{ConfChangeError, DropReason, Error, StorageError};
use crate::log::RaftLog;
use crate::logger::{Level, Logger};
use crate::message::{
    describe_conf_state, ConfState, Entry, EntryKind, HardState, Message, MessageKind, Snapshot,
};
use crate::quorum::VoteResult;
use crate::read_only::{ReadOnly, ReadState};
use crate::rng::Rng;
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Context of a vote request sent because of a leader transfer: it bypasses
/// the voters' leader lease.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// Deliberate bugs for proving that the harness's checkers can fail.
/// Never enable outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlantedBugs {
    /// Grant a vote to any up-to-date candidate, even after voting in the term.
    pub vote_twice: bool,
    /// Commit what any single follower has matched, not what a quorum has.
    pub commit_without_quorum: bool,
}

/// Whether a snapshot sent to a peer was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    Finish,
    Failure,
}

macro_rules! rlog {
    ($r:expr, $level:expr, $($arg:tt)*) => {
        if let Some(logger) = &$r.logger {
            if logger.enabled($level) {
                logger.log($level, &format!("{} {}", $r.id, format_args!($($arg)*)));
            }
        }
    };
}

pub struct Raft<S: Storage> {
    pub id: u64,
    pub term: u64,
    pub vote: u64,
    pub read_states: Vec<ReadState>,
    pub raft_log: RaftLog<S>,
    pub max_msg_size: u64,
    pub max_uncommitted_size: u64,
    pub prs: ProgressTracker,
    pub role: Role,
    pub is_learner: bool,
    pub msgs: Vec<Message>,
    pub leader_id: u64,
    /// The peer leadership is being transferred to, 0 if none.
    pub lead_transferee: u64,
    /// A leader removed from (or demoted in) the configuration keeps leading,
    /// without taking proposals, until a voter has its whole log; then it
    /// hands over with MsgTimeoutNow and steps down.
    pub stepping_down: bool,
    /// Index of the latest conf change that may be unapplied (leader only).
    pub pending_conf_index: u64,
    /// Payload bytes of entries appended by this leader and not yet applied.
    pub uncommitted_size: u64,
    pub read_only: ReadOnly,
    pub read_only_option: ReadOnlyOption,
    pub election_elapsed: u64,
    heartbeat_elapsed: u64,
    pub check_quorum: bool,
    pub pre_vote: bool,
    heartbeat_timeout: u64,
    election_timeout: u64,
    min_election_timeout: u64,
    max_election_timeout: u64,
    pub randomized_election_timeout: u64,
    disable_proposal_forwarding: bool,
    rng: Rng,
    /// Read requests received before this leader committed an entry of its term.
    pending_read_index_messages: Vec<Message>,
    pub logger: Option<Box<dyn Logger>>,
    pub bugs: PlantedBugs,
}

impl<S: Storage> Raft<S> {
    pub fn new(c: &Config, store: S, logger: Option<Box<dyn Logger>>) -> Result<Raft<S>, Error> {
        c.validate()?;
        let rs = store.initial_state()?;
        let raft_log = RaftLog::new(store, c.max_committed_size_per_ready);
        let mut r = Raft {
            id: c.id,
            term: 0,
            vote: 0,
            read_states: Vec::new(),
            raft_log,
            max_msg_size: c.max_size_per_msg,
            max_uncommitted_size: c.max_uncommitted_entries_size,
            prs: ProgressTracker::new(c.max_inflight_msgs, c.max_inflight_bytes),
            role: Role::Follower,
            is_learner: false,
            msgs: Vec::new(),
            leader_id: 0,
            lead_transferee: 0,
            stepping_down: false,
            pending_conf_index: 0,
            uncommitted_size: 0,
            read_only: ReadOnly::default(),
            read_only_option: c.read_only_option,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            check_quorum: c.check_quorum,
            pre_vote: c.pre_vote,
            heartbeat_timeout: c.heartbeat_tick,
            election_timeout: c.election_tick,
            min_election_timeout: c.min_election_tick(),
            max_election_timeout: c.max_election_tick(),
            randomized_election_timeout: 0,
            disable_proposal_forwarding: c.disable_proposal_forwarding,
            rng: Rng::new(c.seed),
            pending_read_index_messages: Vec::new(),
            logger,
            bugs: PlantedBugs::default(),
        };
        // An empty conf state is a node not yet part of any configuration:
        // it learns one from the leader's snapshot.
        let (cfg, prs) = confchange::restore(
            &rs.conf_state,
            r.raft_log.last_index(),
            c.max_inflight_msgs,
            c.max_inflight_bytes,
        )?;
        let cs = r.switch_to_config((cfg, prs));
        assert_conf_states_equivalent(&rs.conf_state, &cs);
        if !rs.hard_state.is_empty() {
            r.load_state(rs.hard_state);
        }
        if c.applied > 0 {
            r.raft_log.applied_to(c.applied);
        }
        let term = r.term;
        r.become_follower(term, 0);
        let ids: Vec<String> = r.prs.voter_ids().iter().map(|i| i.to_string()).collect();
        rlog!(
            r,
            Level::Info,
            "newRaft [peers: [{}], term: {}, commit: {}, applied: {}, lastindex: {}, lastterm: {}]",
            ids.join(","),
            r.term,
            r.raft_log.committed,
            r.raft_log.applied,
            r.raft_log.last_index(),
            r.raft_log.last_term()
        );
        Ok(r)
    }

    fn load_state(&mut self, hs: HardState) {
        let (first, last) = (self.raft_log.committed, self.raft_log.last_index());
        assert!(
            hs.commit >= first && hs.commit <= last,
            "{} state.commit {} is out of range [{first}, {last}]",
            self.id,
            hs.commit
        );
        self.raft_log.committed = hs.commit;
        self.term = hs.term;
        self.vote = hs.vote;
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.raft_log.committed,
        }
    }

    fn set_term(&mut self, term: u64) {
        assert!(
            term >= self.term,
            "{} term would decrease from {} to {term}",
            self.id,
            self.term
        );
        if term != self.term {
            self.term = term;
            self.vote = 0;
        }
    }

    fn set_vote(&mut self, candidate: u64) {
        assert!(
            self.vote == 0 || self.vote == candidate || self.bugs.vote_twice,
            "{} would vote twice in term {}: for {} and for {candidate}",
            self.id,
            self.term,
            self.vote
        );
        self.vote = candidate;
    }

    // ---- sending ------------------------------------------------------------

    fn send(&mut self, mut m: Message) {
        if m.from == 0 {
            m.from = self.id;
        }
        match m.kind {
            MessageKind::MsgVote
            | MessageKind::MsgVoteResp
            | MessageKind::MsgPreVote
            | MessageKind::MsgPreVoteResp => {
                // Vote messages carry the term of the election, set by the caller.
                assert!(m.term != 0, "term should be set when sending {:?}", m.kind);
            }
            _ => {
                assert!(
                    m.term == 0,
                    "term should not be set when sending {:?} (was {})",
                    m.kind,
                    m.term
                );
                // Forwarded proposals and read requests are treated as local
                // by the receiver and carry no term.
                if m.kind != MessageKind::MsgProp && m.kind != MessageKind::MsgReadIndex {
                    m.term = self.term;
                }
            }
        }
        self.msgs.push(m);
    }

    /// Sends an append (or a snapshot) to `to`, even if it carries no entries.
    pub fn send_append(&mut self, to: u64) {
        self.maybe_send_append(to, true);
    }

    /// Sends an append to `to` unless its progress is paused, or there is
    /// nothing to send and `send_if_empty` is false. Returns whether it sent.
    pub fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_idx;
        let term = self.raft_log.term(next - 1);
        let ents = self.raft_log.entries(next, Some(self.max_msg_size));
        match (term, ents) {
            (_, Ok(e)) if e.is_empty() && !send_if_empty => false,
            (Ok(t), Ok(e)) => self.send_entries(to, next - 1, t, e),
            // The entries (or the term before them) are compacted.
            _ => self.send_snapshot(to),
        }
    }

    fn send_entries(&mut self, to: u64, index: u64, log_term: u64, entries: Vec<Entry>) -> bool {
        let Some(pr) = self.prs.progress.get_mut(&to) else {
            return false;
        };
        if let Some(last) = entries.last() {
            match pr.state {
                ProgressState::Replicate => {
                    let bytes: u64 = entries.iter().map(Entry::byte_size).sum();
                    pr.optimistic_update(last.index);
                    pr.inflights.add(last.index, bytes);
                }
                ProgressState::Probe => pr.probe_sent = true,
                ProgressState::Snapshot => {
                    panic!(
                        "{} is sending append in unhandled state {:?}",
                        self.id, pr.state
                    )
                }
            }
        }
        let mut m = Message::new(MessageKind::MsgApp, self.id, to);
        m.index = index;
        m.log_term = log_term;
        m.entries = entries;
        m.commit = self.raft_log.committed;
        self.send(m);
        true
    }

    fn send_snapshot(&mut self, to: u64) -> bool {
        let recent_active = self.prs.progress.get(&to).is_some_and(|p| p.recent_active);
        if !recent_active {
            rlog!(
                self,
                Level::Debug,
                "ignore sending snapshot to {to} since it is not recently active"
            );
            return false;
        }
        let request_index = self.raft_log.first_index() - 1;
        let snapshot = match self.raft_log.snapshot(request_index, to) {
            Ok(s) => s,
            Err(StorageError::SnapshotTemporarilyUnavailable) => {
                rlog!(
                    self,
                    Level::Debug,
                    "failed to send snapshot to {to} because snapshot is temporarily unavailable"
                );
                return false;
            }
            Err(e) => panic!("{} cannot read a snapshot: {e}", self.id),
        };
        assert!(
            !snapshot.is_empty(),
            "{} needs a non-empty snapshot for {to}",
            self.id
        );
        let (sindex, sterm) = (snapshot.meta.index, snapshot.meta.term);
        rlog!(
            self,
            Level::Debug,
            "[firstindex: {}, commit: {}] sent snapshot[index: {sindex}, term: {sterm}] to {to}",
            self.raft_log.first_index(),
            self.raft_log.committed
        );
        if let Some(pr) = self.prs.progress.get_mut(&to) {
            pr.become_snapshot(sindex);
        }
        let mut m = Message::new(MessageKind::MsgSnap, self.id, to);
        m.snapshot = Some(snapshot);
        self.send(m);
        true
    }

    fn send_heartbeat(&mut self, to: u64, ctx: Vec<u8>) {
        // Never tell a follower a commit index beyond what it has matched:
        // it may not have those entries yet.
        let matched = self.prs.progress.get(&to).map_or(0, |p| p.matched);
        let mut m = Message::new(MessageKind::MsgHeartbeat, self.id, to);
        m.commit = matched.min(self.raft_log.committed);
        m.context = ctx;
        self.send(m);
    }

    fn peers(&self) -> Vec<u64> {
        self.prs
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    pub fn bcast_append(&mut self) {
        for id in self.peers() {
            self.send_append(id);
        }
    }

    pub fn bcast_heartbeat(&mut self) {
        let ctx = self
            .read_only
            .last_pending_request_ctx()
            .unwrap_or_default();
        self.bcast_heartbeat_with_ctx(ctx);
    }

    fn bcast_heartbeat_with_ctx(&mut self, ctx: Vec<u8>) {
        for id in self.peers() {
            self.send_heartbeat(id, ctx.clone());
        }
    }

    // ---- commit -------------------------------------------------------------

    /// Advances the commit index to what a quorum has matched, if that entry
    /// is of the current term. Returns whether it advanced.
    pub fn maybe_commit(&mut self) -> bool {
        let mci = if self.bugs.commit_without_quorum {
            self.prs
                .progress
                .values()
                .map(|p| p.matched)
                .max()
                .unwrap_or(0)
        } else {
            self.prs.committed()
        };
        if mci == u64::MAX {
            return false; // no voters at all
        }
        if !self.bugs.commit_without_quorum {
            debug_assert!(
                self.quorum_matched(mci),
                "{} commit {mci} not matched by a quorum",
                self.id
            );
        }
        self.raft_log.maybe_commit(mci, self.term)
    }

    fn quorum_matched(&self, index: u64) -> bool {
        let votes: BTreeMap<u64, bool> = self
            .prs
            .progress
            .iter()
            .map(|(&id, p)| (id, p.matched >= index))
            .collect();
        self.prs.config.voters.vote_result(&votes) == VoteResult::Won
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log.term_or_zero(self.raft_log.committed) == self.term
    }

    // ---- role transitions -----------------------------------------------------

    fn reset(&mut self, term: u64) {
        self.set_term(term);
        self.leader_id = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.abort_leader_transfer();
        self.stepping_down = false;
        self.prs.reset_votes();
        let last = self.raft_log.last_index();
        let (id, max_inflight, max_bytes) =
            (self.id, self.prs.max_inflight, self.prs.max_inflight_bytes);
        for (&pid, pr) in self.prs.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = crate::tracker::Progress::new(last + 1, max_inflight, max_bytes);
            pr.is_learner = is_learner;
            if pid == id {
                pr.matched = last;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_size = 0;
        self.read_only.clear();
    }

    fn reset_randomized_election_timeout(&mut self) {
        self.randomized_election_timeout = self
            .rng
            .range(self.min_election_timeout, self.max_election_timeout);
    }

    pub fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.leader_id = leader_id;
        self.role = Role::Follower;
        rlog!(self, Level::Info, "became follower at term {}", self.term);
    }

    fn become_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "invalid transition [leader -> candidate]"
        );
        let term = self.term + 1;
        self.reset(term);
        self.set_vote(self.id);
        self.role = Role::Candidate;
        rlog!(self, Level::Info, "became candidate at term {}", self.term);
    }

    fn become_pre_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "invalid transition [leader -> pre-candidate]"
        );
        // Becoming a pre-candidate changes neither term nor vote.
        self.prs.reset_votes();
        self.leader_id = 0;
        self.role = Role::PreCandidate;
        rlog!(
            self,
            Level::Info,
            "became pre-candidate at term {}",
            self.term
        );
    }

    fn become_leader(&mut self) {
        assert!(
            self.prs
                .progress
                .get(&self.id)
                .is_some_and(|p| !p.is_learner),
            "{} would lead without being a voter",
            self.id
        );
        assert!(
            self.role != Role::Follower,
            "invalid transition [follower -> leader]"
        );
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.role = Role::Leader;
        if let Some(pr) = self.prs.progress.get_mut(&self.id) {
            // The leader's own progress is always replicate.
            pr.become_replicate();
        }
        // Conf changes in the uncommitted tail may be pending: allow no new
        // one until everything up to here is applied.
        self.pending_conf_index = self.raft_log.last_index();
        let appended = self.append_entries(vec![Entry::default()], true);
        assert!(appended, "empty entry was dropped");
        rlog!(self, Level::Info, "became leader at term {}", self.term);
    }

    fn promotable(&self) -> bool {
        self.prs
            .progress
            .get(&self.id)
            .is_some_and(|p| !p.is_learner)
            && !self.raft_log.has_pending_snapshot()
    }

    // ---- ticks ------------------------------------------------------------------

    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn past_election_timeout(&self) -> bool {
        self.election_elapsed >= self.randomized_election_timeout
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.past_election_timeout() {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                self.check_quorum_active();
            }
            // A transfer not finished within an election timeout is aborted.
            if self.role == Role::Leader && self.lead_transferee != 0 {
                self.abort_leader_transfer();
            }
            // A removed leader that could not hand over in time gives up.
            if self.role == Role::Leader && self.stepping_down {
                rlog!(
                    self,
                    Level::Info,
                    "stepping down without a handover: no voter caught up in time"
                );
                let term = self.term;
                self.become_follower(term, 0);
            }
        }
        if self.role != Role::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    fn check_quorum_active(&mut self) {
        if !self.prs.quorum_active(self.id) {
            rlog!(
                self,
                Level::Warn,
                "stepped down to follower since quorum is not active"
            );
            let term = self.term;
            self.become_follower(term, 0);
        }
        // Mark everyone but ourselves inactive for the next round.
        let id = self.id;
        for (&pid, pr) in self.prs.progress.iter_mut() {
            if pid != id {
                pr.recent_active = false;
            }
        }
    }

    // ---- elections ----------------------------------------------------------------

    /// Starts an election (a pre-election if pre-vote is on), unless leader.
    pub fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader {
            rlog!(self, Level::Debug, "ignoring MsgHup because already leader");
            return;
        }
        if !self.promotable() {
            rlog!(self, Level::Warn, "is unpromotable and can not campaign");
            return;
        }
        if self.has_unapplied_conf_change() {
            rlog!(
                self,
                Level::Warn,
                "cannot campaign at term {} since there are still pending configuration changes to apply",
                self.term
            );
            return;
        }
        rlog!(
            self,
            Level::Info,
            "is starting a new election at term {}",
            self.term
        );
        let kind = if transfer {
            CampaignKind::Transfer
        } else if self.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let (applied, committed) = (self.raft_log.applied, self.raft_log.committed);
        if committed <= applied {
            return false;
        }
        let ents = match self.raft_log.slice(applied + 1, committed + 1, None) {
            Ok(e) => e,
            Err(e) => panic!("{} cannot read unapplied entries: {e}", self.id),
        };
        ents.iter().any(|e| e.kind == EntryKind::ConfChange)
    }

    fn campaign(&mut self, kind: CampaignKind) {
        let (term, vote_kind) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            // Pre-votes are requested for the next term without moving to it.
            (self.term + 1, MessageKind::MsgPreVote)
        } else {
            self.become_candidate();
            (self.term, MessageKind::MsgVote)
        };
        let (_, _, res) = self.poll(self.id, vote_kind.vote_response(), true);
        if res == VoteResult::Won {
            // Only possible in a single-voter configuration.
            if kind == CampaignKind::PreElection {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_index, last_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        for id in self.prs.voter_ids() {
            if id == self.id {
                continue;
            }
            rlog!(
                self,
                Level::Info,
                "[logterm: {last_term}, index: {last_index}] sent {vote_kind:?} request to {id} at term {}",
                self.term
            );
            let mut m = Message::new(vote_kind, self.id, id);
            m.term = term;
            m.index = last_index;
            m.log_term = last_term;
            if kind == CampaignKind::Transfer {
                m.context = CAMPAIGN_TRANSFER.to_vec();
            }
            self.send(m);
        }
    }

    fn poll(&mut self, id: u64, kind: MessageKind, granted: bool) -> (usize, usize, VoteResult) {
        if granted {
            rlog!(
                self,
                Level::Info,
                "received {kind:?} from {id} at term {}",
                self.term
            );
        } else {
            rlog!(
                self,
                Level::Info,
                "received {kind:?} rejection from {id} at term {}",
                self.term
            );
        }
        self.prs.record_vote(id, granted);
        self.prs.tally_votes()
    }

    // ---- step -------------------------------------------------------------------------

    /// Processes one message. Messages with term 0 are local (proposals,
    /// read requests and transfer requests from this node's application, or
    /// forwarded ones).
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.term > self.term {
            if !self.step_higher_term(&m) {
                return Ok(());
            }
        } else if m.term != 0 && m.term < self.term {
            self.step_lower_term(&m);
            return Ok(());
        }
        if matches!(
            m.kind,
            MessageKind::MsgVoteResp | MessageKind::MsgPreVoteResp
        ) && self.role != Role::Leader
        {
            self.learn_commit_from_vote_rejection(&m);
        }
        match m.kind {
            MessageKind::MsgVote | MessageKind::MsgPreVote => {
                self.handle_vote_request(&m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// A message from a later term. Returns false if it must be ignored.
    fn step_higher_term(&mut self, m: &Message) -> bool {
        if matches!(m.kind, MessageKind::MsgVote | MessageKind::MsgPreVote) {
            let force = m.context == CAMPAIGN_TRANSFER;
            let in_lease = self.check_quorum
                && self.leader_id != 0
                && self.election_elapsed < self.election_timeout;
            if !force && in_lease {
                // Leader stickiness: we heard from a leader recently.
                rlog!(
                    self,
                    Level::Info,
                    "[logterm: {}, index: {}, vote: {}] ignored {:?} from {} [logterm: {}, index: {}] at term {}: lease is not expired (remaining ticks: {})",
                    self.raft_log.last_term(),
                    self.raft_log.last_index(),
                    self.vote,
                    m.kind,
                    m.from,
                    m.log_term,
                    m.index,
                    self.term,
                    self.election_timeout - self.election_elapsed
                );
                return false;
            }
        }
        match m.kind {
            // Never change term for a pre-vote request.
            MessageKind::MsgPreVote => {}
            // A granted pre-vote carries our future term; we move there when we win.
            MessageKind::MsgPreVoteResp if !m.reject => {}
            _ => {
                rlog!(
                    self,
                    Level::Info,
                    "[term: {}] received a {:?} message with higher term from {} [term: {}]",
                    self.term,
                    m.kind,
                    m.from,
                    m.term
                );
                let leader = if matches!(
                    m.kind,
                    MessageKind::MsgApp | MessageKind::MsgHeartbeat | MessageKind::MsgSnap
                ) {
                    m.from
                } else {
                    0
                };
                self.become_follower(m.term, leader);
            }
        }
        true
    }

    fn step_lower_term(&mut self, m: &Message) {
        if (self.check_quorum || self.pre_vote)
            && matches!(m.kind, MessageKind::MsgHeartbeat | MessageKind::MsgApp)
        {
            // A leader cut off by a partition may never learn our term
            // otherwise (we ignore its heartbeats, it ignores our votes).
            self.send(Message::new(MessageKind::MsgAppResp, self.id, m.from));
        } else if m.kind == MessageKind::MsgPreVote {
            rlog!(
                self,
                Level::Info,
                "[logterm: {}, index: {}, vote: {}] rejected {:?} from {} [logterm: {}, index: {}] at term {}",
                self.raft_log.last_term(),
                self.raft_log.last_index(),
                self.vote,
                m.kind,
                m.from,
                m.log_term,
                m.index,
                self.term
            );
            let mut resp = Message::new(MessageKind::MsgPreVoteResp, self.id, m.from);
            resp.term = self.term;
            resp.reject = true;
            self.attach_commit(&mut resp);
            self.send(resp);
        } else {
            rlog!(
                self,
                Level::Debug,
                "[term: {}] ignored a {:?} message with lower term from {} [term: {}]",
                self.term,
                m.kind,
                m.from,
                m.term
            );
        }
    }

    fn handle_vote_request(&mut self, m: &Message) {
        let can_vote = self.vote == m.from
            // ...we haven't voted and don't think there's a leader in this term...
            || (self.vote == 0 && self.leader_id == 0)
            // ...or this is a pre-vote for a future term...
            || (m.kind == MessageKind::MsgPreVote && m.term > self.term)
            || (self.bugs.vote_twice && m.kind == MessageKind::MsgVote);
        let mut resp = Message::new(m.kind.vote_response(), self.id, m.from);
        if can_vote && self.raft_log.is_up_to_date(m.index, m.log_term) {
            rlog!(
                self,
                Level::Info,
                "[logterm: {}, index: {}, vote: {}] cast {:?} for {} [logterm: {}, index: {}] at term {}",
                self.raft_log.last_term(),
                self.raft_log.last_index(),
                self.vote,
                m.kind,
                m.from,
                m.log_term,
                m.index,
                self.term
            );
            // Answer with the request's term (a pre-vote's is in our future).
            resp.term = m.term;
            self.send(resp);
            if m.kind == MessageKind::MsgVote {
                // Only real votes are recorded; the Ready contract persists
                // the vote before this response is sent.
                self.election_elapsed = 0;
                self.set_vote(m.from);
            }
        } else {
            rlog!(
                self,
                Level::Info,
                "[logterm: {}, index: {}, vote: {}] rejected {:?} from {} [logterm: {}, index: {}] at term {}",
                self.raft_log.last_term(),
                self.raft_log.last_index(),
                self.vote,
                m.kind,
                m.from,
                m.log_term,
                m.index,
                self.term
            );
            if self.term == 0 {
                // A node that never saw a term (an empty, joining one) has
                // no term to reject with; a correct candidate's request is
                // always granted there.
                return;
            }
            resp.term = self.term;
            resp.reject = true;
            self.attach_commit(&mut resp);
            self.send(resp);
        }
    }

    /// A vote rejection carries the voter's commit index and its term
    /// (`index`, `log_term`). A candidate whose log has that entry learns
    /// that it is committed (log matching: the logs agree up to it). This
    /// breaks a deadlock of joint consensus: voters still in the joint
    /// configuration need the vote of a node removed by the (committed, but
    /// not yet known to them) exit, which refuses them because its log is
    /// longer, and which never campaigns.
    fn attach_commit(&self, resp: &mut Message) {
        let committed = self.raft_log.committed;
        resp.index = committed;
        resp.log_term = self.raft_log.term_or_zero(committed);
    }

    /// The other side of `attach_commit`.
    fn learn_commit_from_vote_rejection(&mut self, m: &Message) {
        if m.reject
            && m.index > self.raft_log.committed
            && m.log_term != 0
            && self.raft_log.match_term(m.index, m.log_term)
        {
            rlog!(
                self,
                Level::Info,
                "learned from {}'s vote rejection that {}/{} is committed",
                m.from,
                m.log_term,
                m.index
            );
            self.raft_log.commit_to(m.index);
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::MsgProp => return self.leader_propose(m),
            MessageKind::MsgReadIndex => {
                self.leader_read_index(m);
                return Ok(());
            }
            _ => {}
        }
        if !self.prs.progress.contains_key(&m.from) {
            rlog!(self, Level::Debug, "no progress available for {}", m.from);
            return Ok(());
        }
        match m.kind {
            MessageKind::MsgAppResp => self.handle_append_response(&m),
            MessageKind::MsgHeartbeatResp => self.handle_heartbeat_response(&m),
            MessageKind::MsgTransferLeader => self.handle_transfer_leader(m.from),
            _ => {}
        }
        Ok(())
    }

    fn leader_propose(&mut self, mut m: Message) -> Result<(), Error> {
        if m.entries.is_empty() {
            rlog!(self, Level::Warn, "dropping empty proposal from {}", m.from);
            return Err(Error::ProposalDropped(DropReason::NotInConfiguration));
        }
        if !self.prs.progress.contains_key(&self.id) || self.stepping_down {
            // Removed from the configuration while leader.
            return Err(Error::ProposalDropped(DropReason::NotInConfiguration));
        }
        if self.lead_transferee != 0 {
            rlog!(
                self,
                Level::Debug,
                "[term {}] transfer leadership to {} is in progress; dropping proposal",
                self.term,
                self.lead_transferee
            );
            return Err(Error::ProposalDropped(DropReason::LeaderTransferring));
        }
        let last = self.raft_log.last_index();
        for (i, e) in m.entries.iter_mut().enumerate() {
            if e.kind != EntryKind::ConfChange {
                continue;
            }
            let refused = match ConfChange::decode(&e.data) {
                Err(_) => Some("undecodable conf change".to_string()),
                Ok(cc) => self.conf_change_refusal(&cc),
            };
            if let Some(why) = refused {
                rlog!(
                    self,
                    Level::Info,
                    "ignoring conf change at config {}: {why}",
                    describe_conf_state(&self.prs.conf_state())
                );
                // Keep the proposal's slot so callers waiting on it see it commit.
                *e = Entry::default();
            } else {
                self.pending_conf_index = last + i as u64 + 1;
            }
        }
        if !self.append_entries(m.entries, false) {
            return Err(Error::ProposalDropped(DropReason::UncommittedSizeExceeded));
        }
        self.bcast_append();
        Ok(())
    }

    fn conf_change_refusal(&self, cc: &ConfChange) -> Option<String> {
        let already_pending = self.pending_conf_index > self.raft_log.applied;
        let already_joint = self.prs.config.voters.is_joint();
        let wants_leave_joint = cc.changes.is_empty();
        if already_pending {
            Some(format!(
                "possible unapplied conf change at index {} (applied to {})",
                self.pending_conf_index, self.raft_log.applied
            ))
        } else if already_joint && !wants_leave_joint {
            Some("must transition out of joint config first".into())
        } else if !already_joint && wants_leave_joint {
            Some("not in joint state; refusing empty conf change".into())
        } else {
            None
        }
    }

    /// Appends entries at the end of the leader's log, in the current term.
    fn append_entries(&mut self, mut es: Vec<Entry>, force: bool) -> bool {
        let li = self.raft_log.last_index();
        for (i, e) in es.iter_mut().enumerate() {
            e.term = self.term;
            e.index = li + 1 + i as u64;
        }
        let size: u64 = es.iter().map(Entry::payload_size).sum();
        if !force
            && self.uncommitted_size > 0
            && size > 0
            && self.uncommitted_size + size > self.max_uncommitted_size
        {
            rlog!(
                self,
                Level::Debug,
                "appending new entries to log would exceed uncommitted entry size limit; dropping proposal"
            );
            return false;
        }
        self.uncommitted_size += size;
        let li = self.raft_log.append(&es);
        if let Some(pr) = self.prs.progress.get_mut(&self.id) {
            pr.maybe_update(li);
        }
        self.maybe_commit();
        true
    }

    fn leader_read_index(&mut self, m: Message) {
        if self.prs.is_singleton() {
            let committed = self.raft_log.committed;
            self.respond_to_read_index(m, committed);
            return;
        }
        // A new leader does not know the commit index of its term until it
        // committed an entry of its term.
        if !self.committed_entry_in_current_term() {
            self.pending_read_index_messages.push(m);
            return;
        }
        self.send_read_index_response(m);
    }

    fn send_read_index_response(&mut self, m: Message) {
        let committed = self.raft_log.committed;
        match self.read_only_option {
            ReadOnlyOption::Safe => {
                let ctx = m.context.clone();
                self.read_only.add_request(committed, m);
                self.read_only.recv_ack(self.id, &ctx);
                self.bcast_heartbeat_with_ctx(ctx);
            }
            ReadOnlyOption::LeaseBased => self.respond_to_read_index(m, committed),
        }
    }

    fn respond_to_read_index(&mut self, req: Message, index: u64) {
        if req.from == 0 || req.from == self.id {
            self.read_states.push(ReadState {
                index,
                context: req.context,
            });
            return;
        }
        let mut resp = Message::new(MessageKind::MsgReadIndexResp, self.id, req.from);
        resp.index = index;
        resp.context = req.context;
        self.send(resp);
    }

    fn release_pending_read_index_messages(&mut self) {
        if self.pending_read_index_messages.is_empty() {
            return;
        }
        assert!(
            self.committed_entry_in_current_term(),
            "{} releasing reads before committing in term {}",
            self.id,
            self.term
        );
        for m in std::mem::take(&mut self.pending_read_index_messages) {
            self.send_read_index_response(m);
        }
    }

    fn handle_append_response(&mut self, m: &Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.prs.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject {
            rlog!(
                self,
                Level::Debug,
                "received MsgAppResp(rejected, hint: (index {}, term {})) from {from} for index {}",
                m.reject_hint,
                m.log_term,
                m.index
            );
            let mut next_probe = m.reject_hint;
            if m.log_term > 0 {
                // Fast back-off: skip every entry of ours whose term is
                // above the follower's term at the hint.
                next_probe = self
                    .raft_log
                    .find_conflict_by_term(m.reject_hint, m.log_term)
                    .0;
            }
            let pr = self.prs.progress.get_mut(&from).expect("checked above");
            if pr.maybe_decr_to(m.index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched >= pr.pending_snapshot => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.release_pending_read_index_messages();
            self.bcast_append();
        } else if old_paused {
            // The follower may be missing the latest commit index.
            self.send_append(from);
        }
        // Flow control may allow several messages now.
        while self.maybe_send_append(from, false) {}
        if from == self.lead_transferee && matched == last_index {
            rlog!(
                self,
                Level::Info,
                "sent MsgTimeoutNow to {from} after received MsgAppResp"
            );
            self.send_timeout_now(from);
        }
        if self.stepping_down {
            self.maybe_finish_step_down();
        }
    }

    /// A removed or demoted leader hands over once a voter of the new
    /// configuration has its whole log (so that voter can win an election
    /// even against this node's vote), or keeps pushing its log to the most
    /// advanced voter. Stepping down at once could leave the remaining
    /// voters unable to elect anyone: they may not know yet that the
    /// removal committed, so they still need this node's vote, which it
    /// refuses to candidates with shorter logs.
    fn maybe_finish_step_down(&mut self) {
        let last = self.raft_log.last_index();
        let best = self
            .prs
            .voter_ids()
            .into_iter()
            .filter(|&id| id != self.id)
            .filter_map(|id| self.prs.progress.get(&id).map(|p| (p.matched, id)))
            .max_by_key(|&(matched, id)| (matched, std::cmp::Reverse(id)));
        let Some((matched, to)) = best else {
            let term = self.term;
            self.become_follower(term, 0);
            return;
        };
        if matched == last {
            rlog!(
                self,
                Level::Info,
                "removed from the configuration: handing over to {to}"
            );
            self.send_timeout_now(to);
            let term = self.term;
            self.become_follower(term, 0);
        } else {
            self.send_append(to);
        }
    }

    fn handle_heartbeat_response(&mut self, m: &Message) {
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.prs.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        // Free one slot of a full window so that replication makes progress.
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last_index {
            self.send_append(m.from);
        }
        if self.stepping_down {
            self.maybe_finish_step_down();
            if self.role != Role::Leader {
                return;
            }
        }
        if self.read_only_option != ReadOnlyOption::Safe || m.context.is_empty() {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(m.from, &m.context) else {
            return;
        };
        let votes: BTreeMap<u64, bool> = acks.iter().map(|&id| (id, true)).collect();
        if self.prs.config.voters.vote_result(&votes) != VoteResult::Won {
            return;
        }
        for rs in self.read_only.advance(&m.context) {
            self.respond_to_read_index(rs.req, rs.index);
        }
    }

    fn handle_transfer_leader(&mut self, transferee: u64) {
        if self.stepping_down {
            return; // already handing over
        }
        let Some(pr) = self.prs.progress.get(&transferee) else {
            return;
        };
        if pr.is_learner {
            rlog!(
                self,
                Level::Debug,
                "is learner. Ignored transferring leadership"
            );
            return;
        }
        let matched = pr.matched;
        if self.lead_transferee != 0 {
            if self.lead_transferee == transferee {
                rlog!(
                    self,
                    Level::Info,
                    "[term {}] transfer leadership to {transferee} is in progress, ignores request to same node",
                    self.term
                );
                return;
            }
            self.abort_leader_transfer();
        }
        if transferee == self.id {
            rlog!(
                self,
                Level::Debug,
                "is already leader. Ignored transferring leadership to self"
            );
            return;
        }
        rlog!(
            self,
            Level::Info,
            "[term {}] starts to transfer leadership to {transferee}",
            self.term
        );
        // The transfer must finish within an election timeout.
        self.election_elapsed = 0;
        self.lead_transferee = transferee;
        if matched == self.raft_log.last_index() {
            self.send_timeout_now(transferee);
            rlog!(
                self,
                Level::Info,
                "sends MsgTimeoutNow to {transferee} immediately as {transferee} already has up-to-date log"
            );
        } else {
            self.send_append(transferee);
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        self.send(Message::new(MessageKind::MsgTimeoutNow, self.id, to));
    }

    pub fn abort_leader_transfer(&mut self) {
        self.lead_transferee = 0;
    }

    /// The application could (not) send a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.prs.progress.get_mut(&id) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if status == SnapshotStatus::Failure {
            // Probe from the match, not from the snapshot that never applied.
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for the follower's answer (or a heartbeat interval) before the next append.
        pr.probe_sent = true;
        rlog!(
            self,
            Level::Debug,
            "snapshot {status:?}, resumed sending replication messages to {id}"
        );
    }

    /// The application could not reach `id`: an optimistic append was likely lost.
    pub fn report_unreachable(&mut self, id: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.prs.progress.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), Error> {
        let my_vote_resp = if self.role == Role::PreCandidate {
            MessageKind::MsgPreVoteResp
        } else {
            MessageKind::MsgVoteResp
        };
        match m.kind {
            MessageKind::MsgProp => {
                rlog!(
                    self,
                    Level::Info,
                    "no leader at term {}; dropping proposal",
                    self.term
                );
                return Err(Error::ProposalDropped(DropReason::NoLeader));
            }
            MessageKind::MsgApp => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(&m);
            }
            MessageKind::MsgHeartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(&m);
            }
            MessageKind::MsgSnap => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            kind if kind == my_vote_resp => {
                let (granted, rejected, res) = self.poll(m.from, m.kind, !m.reject);
                rlog!(
                    self,
                    Level::Info,
                    "has received {granted} {:?} votes and {rejected} vote rejections",
                    m.kind
                );
                match res {
                    VoteResult::Won if !self.promotable() => {
                        // The campaign outlived our membership (we applied a
                        // conf change removing or demoting us meanwhile).
                        rlog!(
                            self,
                            Level::Info,
                            "won an election but is no longer a voter; not leading"
                        );
                        let term = self.term;
                        self.become_follower(term, 0);
                    }
                    VoteResult::Won => {
                        if self.role == Role::PreCandidate {
                            self.campaign(CampaignKind::Election);
                        } else {
                            self.become_leader();
                            self.bcast_append();
                        }
                    }
                    VoteResult::Lost => {
                        // A pre-vote response carries a future term: keep ours.
                        let term = self.term;
                        self.become_follower(term, 0);
                    }
                    VoteResult::Pending => {}
                }
            }
            MessageKind::MsgTimeoutNow => {
                rlog!(self, Level::Debug, "ignored MsgTimeoutNow from {}", m.from);
            }
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, mut m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::MsgProp => {
                if self.leader_id == 0 {
                    rlog!(
                        self,
                        Level::Info,
                        "no leader at term {}; dropping proposal",
                        self.term
                    );
                    return Err(Error::ProposalDropped(DropReason::NoLeader));
                }
                if self.disable_proposal_forwarding {
                    return Err(Error::ProposalDropped(DropReason::NoLeader));
                }
                m.to = self.leader_id;
                m.term = 0;
                self.send(m);
            }
            MessageKind::MsgApp => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(&m);
            }
            MessageKind::MsgHeartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(&m);
            }
            MessageKind::MsgSnap => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageKind::MsgTransferLeader => {
                if self.leader_id == 0 {
                    rlog!(
                        self,
                        Level::Info,
                        "no leader at term {}; dropping leader transfer msg",
                        self.term
                    );
                    return Ok(());
                }
                m.to = self.leader_id;
                m.term = 0;
                self.send(m);
            }
            MessageKind::MsgTimeoutNow => {
                rlog!(
                    self,
                    Level::Info,
                    "[term {}] received MsgTimeoutNow from {} and starts an election to get leadership.",
                    self.term,
                    m.from
                );
                // Transfers skip pre-vote: the leader asked for it.
                self.hup(true);
            }
            MessageKind::MsgReadIndex => {
                if self.leader_id == 0 {
                    rlog!(
                        self,
                        Level::Info,
                        "no leader at term {}; dropping index reading msg",
                        self.term
                    );
                    return Ok(());
                }
                m.to = self.leader_id;
                m.term = 0;
                self.send(m);
            }
            MessageKind::MsgReadIndexResp => {
                self.read_states.push(ReadState {
                    index: m.index,
                    context: m.context,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append_entries(&mut self, m: &Message) {
        let mut resp = Message::new(MessageKind::MsgAppResp, self.id, m.from);
        if m.index < self.raft_log.committed {
            resp.index = self.raft_log.committed;
            self.send(resp);
            return;
        }
        if let Some(last_new) = self
            .raft_log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            resp.index = last_new;
            self.send(resp);
            return;
        }
        rlog!(
            self,
            Level::Debug,
            "[logterm: {}, index: {}] rejected MsgApp [logterm: {}, index: {}] from {}",
            self.raft_log.term_or_zero(m.index),
            m.index,
            m.log_term,
            m.index,
            m.from
        );
        // Hint the largest index at which the logs may agree: our entries
        // above it have terms greater than the leader's entry at m.index.
        let hint = m.index.min(self.raft_log.last_index());
        let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, m.log_term);
        resp.index = m.index;
        resp.reject = true;
        resp.reject_hint = hint_index;
        resp.log_term = hint_term;
        self.send(resp);
    }

    fn handle_heartbeat(&mut self, m: &Message) {
        // The leader sends at most our matched index, which we have persisted.
        self.raft_log.commit_to(m.commit);
        let mut resp = Message::new(MessageKind::MsgHeartbeatResp, self.id, m.from);
        resp.context = m.context.clone();
        self.send(resp);
    }

    fn handle_snapshot(&mut self, m: Message) {
        let Some(snapshot) = m.snapshot else {
            return;
        };
        let (sindex, sterm) = (snapshot.meta.index, snapshot.meta.term);
        let mut resp = Message::new(MessageKind::MsgAppResp, self.id, m.from);
        if self.restore(snapshot) {
            rlog!(
                self,
                Level::Info,
                "[commit: {}] restored snapshot [index: {sindex}, term: {sterm}]",
                self.raft_log.committed
            );
            resp.index = self.raft_log.last_index();
        } else {
            rlog!(
                self,
                Level::Info,
                "[commit: {}] ignored snapshot [index: {sindex}, term: {sterm}]",
                self.raft_log.committed
            );
            resp.index = self.raft_log.committed;
        }
        self.send(resp);
    }

    /// Installs a snapshot from the leader. Returns false if it is stale
    /// or already covered by the log.
    pub fn restore(&mut self, snapshot: Snapshot) -> bool {
        if snapshot.meta.index <= self.raft_log.committed {
            return false;
        }
        if self.role != Role::Follower {
            // Defense in depth: never restore a snapshot as leader.
            rlog!(
                self,
                Level::Warn,
                "attempted to restore snapshot as leader; should never happen"
            );
            let term = self.term + 1;
            self.become_follower(term, 0);
            return false;
        }
        let cs = &snapshot.meta.conf_state;
        let found = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == self.id);
        if !found {
            rlog!(
                self,
                Level::Warn,
                "attempted to restore snapshot but it is not in the ConfState {}; should never happen",
                describe_conf_state(cs)
            );
            return false;
        }
        if self
            .raft_log
            .match_term(snapshot.meta.index, snapshot.meta.term)
        {
            rlog!(
                self,
                Level::Info,
                "fast-forwarded commit to snapshot [index: {}, term: {}]",
                snapshot.meta.index,
                snapshot.meta.term
            );
            self.raft_log.commit_to(snapshot.meta.index);
            return false;
        }
        let cs = snapshot.meta.conf_state.clone();
        // The configuration comes from a peer: one raft cannot hold is
        // refused before anything changes (`RawNode::validate` refuses it
        // first; this keeps the core safe without it).
        let restored = confchange::restore(
            &cs,
            snapshot.meta.index,
            self.prs.max_inflight,
            self.prs.max_inflight_bytes,
        );
        let (cfg, prs) = match restored {
            Ok(x) if crate::validate::conf_state(&cs).is_ok() => x,
            Ok(_) | Err(_) => {
                rlog!(
                    self,
                    Level::Warn,
                    "ignored snapshot [index: {}, term: {}] with an invalid configuration {}",
                    snapshot.meta.index,
                    snapshot.meta.term,
                    describe_conf_state(&cs)
                );
                return false;
            }
        };
        self.raft_log.restore(snapshot);
        self.prs = ProgressTracker::new(self.prs.max_inflight, self.prs.max_inflight_bytes);
        let got = self.switch_to_config((cfg, prs));
        assert_conf_states_equivalent(&cs, &got);
        if let Some(pr) = self.prs.progress.get_mut(&self.id) {
            let n = pr.next_idx - 1;
            pr.maybe_update(n);
        }
        true
    }

    // ---- membership ---------------------------------------------------------------

    /// Applies a committed conf change (called by the application, in log order).
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        let changer = Changer {
            config: &self.prs.config,
            progress: &self.prs.progress,
            last_index: self.raft_log.last_index(),
            max_inflight: self.prs.max_inflight,
            max_inflight_bytes: self.prs.max_inflight_bytes,
        };
        let (cfg, prs) = if cc.is_leave_joint() {
            changer.leave_joint()?
        } else if let Some(auto_leave) = cc.enter_joint() {
            changer.enter_joint(auto_leave, &cc.changes)?
        } else {
            changer.simple(&cc.changes)?
        };
        Ok(self.switch_to_config((cfg, prs)))
    }

    /// Installs a new configuration (from a conf change or a snapshot) and
    /// does what the leader must do about it.
    fn switch_to_config(&mut self, (cfg, prs): ConfigAndProgress) -> ConfState {
        if let Err(e) = cfg.check(&prs) {
            panic!("{} switching to an invalid config: {e}", self.id);
        }
        self.prs.config = cfg;
        self.prs.progress = prs;
        let cs = self.prs.conf_state();
        rlog!(
            self,
            Level::Info,
            "switched to configuration {}",
            describe_conf_state(&cs)
        );
        let pr = self.prs.progress.get(&self.id);
        self.is_learner = pr.is_some_and(|p| p.is_learner);
        if (pr.is_none() || self.is_learner) && self.role == Role::Leader {
            // Removed or demoted leader: hand over, then step down.
            rlog!(
                self,
                Level::Info,
                "removed or demoted while leader: stepping down"
            );
            self.stepping_down = true;
            self.abort_leader_transfer();
            self.maybe_commit();
            self.maybe_finish_step_down();
            if self.role == Role::Leader {
                self.bcast_append();
            }
            return cs;
        }
        // Re-added before the handover finished: lead normally again.
        self.stepping_down = false;
        if self.role != Role::Leader || cs.voters.is_empty() {
            return cs;
        }
        if self.maybe_commit() {
            // The new config may commit more: tell everyone.
            self.bcast_append();
        } else {
            // Probe newly added peers right away.
            for id in self.peers() {
                self.maybe_send_append(id, false);
            }
        }
        if self.lead_transferee != 0 && !self.prs.config.voters.contains(self.lead_transferee) {
            self.abort_leader_transfer();
        }
        cs
    }

    /// Bookkeeping after the application handled a Ready: applied entries
    /// release uncommitted budget, and a committed auto-leave joint config
    /// is left by proposing the empty conf change.
    pub fn advance_applied(&mut self, committed_entries: &[Entry], new_applied: u64) {
        let size: u64 = committed_entries.iter().map(Entry::payload_size).sum();
        self.uncommitted_size = self.uncommitted_size.saturating_sub(size);
        if new_applied == 0 {
            return;
        }
        let old_applied = self.raft_log.applied;
        self.raft_log.applied_to(new_applied);
        if self.prs.config.auto_leave
            && old_applied <= self.pending_conf_index
            && new_applied >= self.pending_conf_index
            && self.role == Role::Leader
        {
            let ent = Entry {
                kind: EntryKind::ConfChange,
                data: ConfChange::leave_joint().encode(),
                ..Entry::default()
            };
            let appended = self.append_entries(vec![ent], true);
            assert!(appended, "refused un-refusable auto-leaving conf change");
            self.pending_conf_index = self.raft_log.last_index();
            rlog!(
                self,
                Level::Info,
                "initiating automatic transition out of joint configuration {}",
                describe_conf_state(&self.prs.conf_state())
            );
            self.bcast_append();
        }
    }
}

fn assert_conf_states_equivalent(want: &ConfState, got: &ConfState) {
    assert_eq!(
        want.normalized(),
        got.normalized(),
        "restored conf state differs from the stored one"
    );
}
