//! concord-raft: the raft consensus algorithm as a pure state machine.
//!
//! No I/O, no clock, no async runtime, no global randomness: ticks, messages
//! and proposals go in; a numbered [`Ready`] (state to persist, messages to
//! send, entries to apply) comes out. The member actor in the `concord`
//! crate owns all I/O. It is its own crate so that it builds in seconds for
//! its tests and fuzz targets, without the server's dependencies.
//!
//! # The Ready contract
//!
//! ```text
//! loop {
//!     feed inputs: tick() / step(msg) / propose(..) / read_index(..) / ...
//!     if node.has_ready() {
//!         let rd = node.ready();                       // numbered
//!         1. persist rd.snapshot (if any), rd.entries, rd.hard_state
//!            (fsync if rd.must_sync) -- storage.apply_snapshot / append / set_hard_state
//!         2. send rd.messages            (only after step 1: votes and
//!                                         appends are acknowledged durably)
//!         3. apply rd.committed_entries in order; for an EntryKind::ConfChange
//!            entry call node.apply_conf_change(&ConfChange::decode(data)?)
//!            and record the returned ConfState with the applied index
//!         4. serve rd.read_states once applied >= read_state.index
//!         5. node.advance(rd.number)
//!     }
//! }
//! ```
//!
//! `ready()` must not be called again before `advance` of the previous one;
//! `advance` asserts the number it is given.
//!
//! # Bootstrapping and joining
//!
//! An initial member starts from a storage holding a snapshot at index 1,
//! term 1, whose `ConfState` lists the initial voters (see
//! `harness::bootstrap`). A member added later starts from an empty storage
//! (no configuration, so it never campaigns); the leader sends it a
//! snapshot, which `Storage::snapshot` must produce with a configuration
//! that includes it (otherwise return `SnapshotTemporarilyUnavailable` and
//! take a new snapshot). On restart, pass the applied index in
//! `Config::applied` and return the configuration as of that index from
//! `Storage::initial_state`.
//!
//! # Membership
//!
//! Propose with `propose_conf_change`; several changes in one proposal go
//! through joint consensus (left automatically unless the transition is
//! `Explicit`, in which case propose `ConfChange::leave_joint()`). Only one
//! change may be pending: a second one commits as an empty normal entry. A
//! leader that applies its own removal stops taking proposals, hands over to
//! a caught-up voter (MsgTimeoutNow) and steps down.

pub mod confchange;
pub mod config;
pub mod core;
pub mod error;
#[doc(hidden)]
pub mod harness;
pub mod log;
pub mod logger;
pub mod message;
#[doc(hidden)]
pub mod peer_fuzz;
pub mod quorum;
pub mod read_only;
pub mod rng;
pub mod storage;
pub mod tracker;
pub mod unstable;
pub mod validate;

use std::collections::BTreeMap;

pub use crate::confchange::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
pub use crate::config::{Config, ReadOnlyOption};
pub use crate::core::{PlantedBugs, Role, SnapshotStatus};
pub use crate::error::{
    ConfChangeError, ConfigError, DecodeError, DropReason, Error, StorageError,
};
pub use crate::logger::{Level, Logger};
pub use crate::message::{
    ConfState, Entry, EntryKind, HardState, Message, MessageKind, Snapshot, SnapshotMeta,
};
pub use crate::read_only::ReadState;
pub use crate::storage::{MemStorage, RaftState, Storage};
pub use crate::tracker::ProgressState;
pub use crate::validate::Invalid;

use crate::core::Raft;

/// Volatile state that the application may want to observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    pub leader_id: u64,
    pub role: Role,
}

/// Everything the application must do after feeding inputs (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ready {
    /// Strictly increasing; pass it back to `advance`.
    pub number: u64,
    /// Leader or role changed (not persisted).
    pub soft_state: Option<SoftState>,
    /// Persist before sending `messages`.
    pub hard_state: Option<HardState>,
    /// Append to stable storage before sending `messages`.
    pub entries: Vec<Entry>,
    /// Persist and apply (it replaces the state machine) before the rest.
    pub snapshot: Option<Snapshot>,
    /// Send after persisting.
    pub messages: Vec<Message>,
    /// Apply in order, after persisting.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads to answer once `applied >= index`.
    pub read_states: Vec<ReadState>,
    /// Whether the hard state and entries must be synced to disk before sending.
    pub must_sync: bool,
}

/// What `advance` must do for the outstanding Ready.
#[derive(Debug, Clone)]
struct PendingReady {
    number: u64,
    last_entry: Option<(u64, u64)>,
    snapshot_index: Option<u64>,
    committed: Vec<Entry>,
    hard_state: Option<HardState>,
}

/// Progress of one peer, as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStatus {
    pub matched: u64,
    pub next_idx: u64,
    pub state: ProgressState,
    pub is_learner: bool,
    pub recent_active: bool,
    pub inflight: usize,
}

/// A snapshot of a node's state for observation and debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub applied: u64,
    pub role: Role,
    pub leader_id: u64,
    pub lead_transferee: u64,
    pub conf_state: ConfState,
    /// Only on the leader.
    pub progress: Option<BTreeMap<u64, ProgressStatus>>,
}

/// The public, thread-confined interface to one raft node.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    next_ready_number: u64,
    pending: Option<PendingReady>,
}

impl<S: Storage> RawNode<S> {
    /// A node restarting from (or bootstrapping with) `storage`.
    pub fn new(config: &Config, storage: S) -> Result<RawNode<S>, Error> {
        RawNode::with_logger(config, storage, None)
    }

    pub fn with_logger(
        config: &Config,
        storage: S,
        logger: Option<Box<dyn Logger>>,
    ) -> Result<RawNode<S>, Error> {
        let raft = Raft::new(config, storage, logger)?;
        let prev_soft_state = SoftState {
            leader_id: raft.leader_id,
            role: raft.role,
        };
        let prev_hard_state = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft_state,
            prev_hard_state,
            next_ready_number: 1,
            pending: None,
        })
    }

    /// One logical clock tick (heartbeat and election timeouts count ticks).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (pre-vote first, if enabled).
    pub fn campaign(&mut self) {
        self.raft.hup(false);
    }

    /// Proposes application data. Fails if no leader is known, a leader
    /// transfer is in progress, or the uncommitted budget is exhausted.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), Error> {
        self.propose_batch(vec![data])
    }

    /// Proposes several entries of application data in one message: one
    /// append and one round of replication messages for all of them (a
    /// follower forwards them to the leader as one message). All or none
    /// are accepted.
    pub fn propose_batch(&mut self, data: Vec<Vec<u8>>) -> Result<(), Error> {
        let mut m = Message::new(MessageKind::MsgProp, self.raft.id, 0);
        m.entries = data
            .into_iter()
            .map(|data| Entry {
                data,
                ..Entry::default()
            })
            .collect();
        self.raft.step(m)
    }

    /// Proposes a membership change. Once committed, the application calls
    /// `apply_conf_change`. A change the leader refuses (another one pending,
    /// invalid in the current config) commits as an empty normal entry.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<(), Error> {
        let mut m = Message::new(MessageKind::MsgProp, self.raft.id, 0);
        m.entries = vec![Entry {
            kind: EntryKind::ConfChange,
            data: cc.encode(),
            ..Entry::default()
        }];
        self.raft.step(m)
    }

    /// Applies a committed conf change; returns the new configuration.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState, Error> {
        Ok(self.raft.apply_conf_change(cc)?)
    }

    /// Whether `m`, from a peer, may be stepped: [`validate::message`]
    /// (its fields) and what this node's state decides (responses only
    /// from peers in the configuration, no commit or acknowledgement
    /// beyond the log). A refused message must be dropped.
    pub fn validate(&self, m: &Message) -> Result<(), Invalid> {
        validate::message(m, self.raft.id)?;
        validate::against_state(&self.raft, m)
    }

    /// Feeds a message from a peer. Messages [`RawNode::validate`] refuses
    /// are not stepped (a response from an unknown peer is
    /// `StepPeerNotFound`, anything else `InvalidMessage`). Beyond that,
    /// peers are trusted (raft does not tolerate Byzantine faults).
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        match self.validate(&m) {
            Ok(()) => self.raft.step(m),
            Err(Invalid::UnknownResponder(_)) => Err(Error::StepPeerNotFound),
            Err(why) => Err(Error::InvalidMessage(why)),
        }
    }

    /// Requests a linearizable read; a `ReadState` with `context` comes out
    /// in a later Ready (a follower forwards to the leader; with no leader
    /// the request is dropped silently and the caller retries).
    pub fn read_index(&mut self, context: Vec<u8>) {
        let mut m = Message::new(MessageKind::MsgReadIndex, self.raft.id, 0);
        m.context = context;
        // Reads never fail synchronously.
        let _ = self.raft.step(m);
    }

    /// Asks the leader to hand leadership to `transferee`.
    pub fn transfer_leader(&mut self, transferee: u64) {
        let m = Message::new(MessageKind::MsgTransferLeader, transferee, 0);
        let _ = self.raft.step(m);
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raft.report_unreachable(id);
    }

    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        self.raft.report_snapshot(id, status);
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.raft.leader_id,
            role: self.raft.role,
        }
    }

    /// Whether `ready()` would return something to do.
    pub fn has_ready(&self) -> bool {
        if self.pending.is_some() {
            return false;
        }
        let r = &self.raft;
        self.soft_state() != self.prev_soft_state
            || (!r.hard_state().is_empty() && r.hard_state() != self.prev_hard_state)
            || r.raft_log.has_pending_snapshot()
            || !r.msgs.is_empty()
            || !r.raft_log.unstable_entries().is_empty()
            || r.raft_log.has_next_committed_entries()
            || !r.read_states.is_empty()
    }

    /// Takes the next batch of work. Panics if the previous Ready has not
    /// been advanced (a bug in the caller).
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.pending.is_none(),
            "ready() called before advance() of ready {}",
            self.next_ready_number - 1
        );
        let number = self.next_ready_number;
        self.next_ready_number += 1;
        let r = &mut self.raft;
        let entries = r.raft_log.unstable_entries().to_vec();
        let snapshot = r.raft_log.unstable.snapshot.clone();
        let committed_entries = r.raft_log.next_committed_entries();
        let messages = std::mem::take(&mut r.msgs);
        let read_states = std::mem::take(&mut r.read_states);
        let hs = r.hard_state();
        let soft = SoftState {
            leader_id: r.leader_id,
            role: r.role,
        };
        let hard_state = (hs != self.prev_hard_state).then_some(hs);
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hs.vote != self.prev_hard_state.vote
            || hs.term != self.prev_hard_state.term;
        let soft_state = (soft != self.prev_soft_state).then_some(soft);
        self.prev_soft_state = soft;
        if let Some(first) = committed_entries.first() {
            assert_eq!(
                first.index,
                self.raft
                    .raft_log
                    .applied
                    .max(snapshot.as_ref().map_or(0, |s| s.meta.index))
                    + 1,
                "committed entries must follow the applied index"
            );
        }
        if let Some(h) = &hard_state {
            assert!(
                h.term >= self.prev_hard_state.term,
                "hard state term decreased"
            );
            assert!(
                h.commit >= self.prev_hard_state.commit,
                "hard state commit decreased"
            );
            if h.term == self.prev_hard_state.term
                && self.prev_hard_state.vote != 0
                && !self.raft.bugs.vote_twice
            {
                assert_eq!(
                    h.vote, self.prev_hard_state.vote,
                    "vote changed within term {}",
                    h.term
                );
            }
        }
        self.pending = Some(PendingReady {
            number,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
            committed: committed_entries.clone(),
            hard_state,
        });
        Ready {
            number,
            soft_state,
            hard_state,
            entries,
            snapshot,
            messages,
            committed_entries,
            read_states,
            must_sync,
        }
    }

    /// The Ready `number` has been fully handled (persisted, sent, applied).
    pub fn advance(&mut self, number: u64) {
        let p = self
            .pending
            .take()
            .unwrap_or_else(|| panic!("advance({number}) without an outstanding ready"));
        assert_eq!(
            p.number, number,
            "advance of ready {number}, but ready {} is outstanding",
            p.number
        );
        if let Some(hs) = p.hard_state {
            self.prev_hard_state = hs;
        }
        let applied = p
            .committed
            .last()
            .map(|e| e.index)
            .or(p.snapshot_index)
            .unwrap_or(0);
        self.raft.advance_applied(&p.committed, applied);
        if let Some((index, term)) = p.last_entry {
            self.raft.raft_log.stable_to(index, term);
        }
        if let Some(index) = p.snapshot_index {
            self.raft.raft_log.stable_snap_to(index);
        }
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = (r.role == Role::Leader).then(|| {
            r.prs
                .progress
                .iter()
                .map(|(&id, p)| {
                    (
                        id,
                        ProgressStatus {
                            matched: p.matched,
                            next_idx: p.next_idx,
                            state: p.state,
                            is_learner: p.is_learner,
                            recent_active: p.recent_active,
                            inflight: p.inflights.count(),
                        },
                    )
                })
                .collect()
        });
        Status {
            id: r.id,
            term: r.term,
            vote: r.vote,
            commit: r.raft_log.committed,
            applied: r.raft_log.applied,
            role: r.role,
            leader_id: r.leader_id,
            lead_transferee: r.lead_transferee,
            conf_state: r.prs.conf_state(),
            progress,
        }
    }

    pub fn id(&self) -> u64 {
        self.raft.id
    }

    pub fn leader_id(&self) -> u64 {
        self.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raft.term
    }

    pub fn role(&self) -> Role {
        self.raft.role
    }

    pub fn storage(&self) -> &S {
        &self.raft.raft_log.store
    }

    /// The application writes persisted state through this.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.raft_log.store
    }

    /// The term of entry `index` in raft's log (persisted or not), if known.
    #[doc(hidden)]
    pub fn log_term(&self, index: u64) -> Option<u64> {
        match self.raft.raft_log.term(index) {
            Ok(0) | Err(_) => None,
            Ok(t) => Some(t),
        }
    }

    /// First and last index of raft's log (persisted or not).
    #[doc(hidden)]
    pub fn log_bounds(&self) -> (u64, u64) {
        (
            self.raft.raft_log.first_index(),
            self.raft.raft_log.last_index(),
        )
    }

    /// Every entry of raft's log (persisted or not).
    #[doc(hidden)]
    pub fn log_entries(&self) -> Vec<Entry> {
        self.raft.raft_log.all_entries()
    }

    #[doc(hidden)]
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        self.raft.bugs = bugs;
    }

    /// Direct access to the core, for transcript tests.
    #[doc(hidden)]
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }
}
