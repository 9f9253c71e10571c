//! A seeded, in-process cluster of pure raft nodes and the checkers that
//! judge it (the VOPR idea without a simulator): every choice — message
//! loss, duplication, delay (hence reordering), partitions, crashes that
//! drop everything not yet persisted, proposals, membership changes, leader
//! transfers, log compaction — comes from one seed (or from fuzzer bytes).
//!
//! Each node follows the Ready contract of the crate docs: persist, then
//! send, then apply, then advance. Checkers live outside the nodes and see
//! only what a node exposes:
//! - election safety: at most one leader per term;
//! - vote safety: a granted vote is durable before it is sent, and a node
//!   grants at most one vote per term;
//! - log matching: persisted entries with the same (index, term) have the
//!   same content and the same predecessor term;
//! - commit safety: a leader's commit index is durably stored by a quorum
//!   of its configuration, and a committed index never changes its term;
//! - leader completeness: a new leader holds every entry committed so far;
//! - state-machine safety: every node applies the same sequence (a hash
//!   chain per index), without gaps;
//! - liveness: after healing, a leader is elected and a proposal commits
//!   within a bounded number of ticks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::confchange::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
use crate::config::Config;
use crate::core::{PlantedBugs, Role, SnapshotStatus};
use crate::message::{ConfState, Entry, EntryKind, Message, MessageKind, Snapshot};
use crate::rng::Rng;
use crate::storage::{MemStorage, Storage};
use crate::{RawNode, Ready};

/// What the simulation may do; drawn from the seed (swarm testing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub nodes: u64,
    /// Largest node id that may be added by membership changes.
    pub max_node_id: u64,
    pub loss_percent: u64,
    pub dup_percent: u64,
    pub max_delay_ticks: u64,
    pub crashes: bool,
    pub partitions: bool,
    pub membership: bool,
    pub transfers: bool,
    pub compaction: bool,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_msgs: usize,
    pub max_size_per_msg: u64,
    pub max_uncommitted_entries_size: u64,
    pub max_committed_size_per_ready: u64,
    pub max_inflight_bytes: u64,
    pub fault_ticks: u64,
    pub liveness_ticks: u64,
    pub bugs: PlantedBugs,
    /// Keep a trace of events for failure reports.
    pub trace: bool,
}

impl Options {
    /// Draws options from `seed`; `nodes` is 3 or 5.
    pub fn from_seed(seed: u64, nodes: u64) -> Options {
        let mut rng = Rng::new(seed ^ 0x005e_ed0f_0be5);
        Options {
            nodes,
            max_node_id: nodes + 2,
            loss_percent: [0, 1, 5, 10][rng.range(0, 4) as usize],
            dup_percent: [0, 1, 5][rng.range(0, 3) as usize],
            max_delay_ticks: [0, 1, 3, 8][rng.range(0, 4) as usize],
            crashes: rng.chance(2, 3),
            partitions: rng.chance(2, 3),
            membership: rng.chance(1, 2),
            transfers: rng.chance(1, 2),
            compaction: rng.chance(1, 2),
            pre_vote: rng.chance(4, 5),
            check_quorum: rng.chance(4, 5),
            max_inflight_msgs: [1, 4, 64][rng.range(0, 3) as usize],
            max_size_per_msg: [60, 200, 1 << 20][rng.range(0, 3) as usize],
            max_uncommitted_entries_size: [1 << 20, 256][rng.range(0, 2) as usize],
            max_committed_size_per_ready: [u64::MAX, 100][rng.range(0, 2) as usize],
            max_inflight_bytes: [0, 1 << 20][rng.range(0, 2) as usize],
            fault_ticks: 250,
            liveness_ticks: 400,
            bugs: PlantedBugs::default(),
            trace: false,
        }
    }
}

/// A checker's verdict: which property broke, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.property, self.detail)
    }
}

fn violation<T>(property: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation { property, detail })
}

/// What a run did, for sanity checks on the harness itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub ticks: u64,
    pub messages_delivered: u64,
    pub proposals_committed: u64,
    pub max_term: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub snapshots_applied: u64,
    pub conf_changes_applied: u64,
    pub reads_served: u64,
    /// Responses from peers no longer in the receiver's configuration (the
    /// only messages of correct nodes that validation refuses).
    pub messages_refused: u64,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn entry_hash(e: &Entry) -> u64 {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, &e.term.to_be_bytes());
    h = fnv(h, &e.index.to_be_bytes());
    h = fnv(h, &[e.kind as u8]);
    fnv(h, &e.data)
}

/// The replicated state machine of a simulated node: a hash chain over
/// everything applied. Survives crashes (applied index and data are
/// written atomically, as the member does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App {
    pub applied: u64,
    pub chain: u64,
    pub conf_state: ConfState,
}

impl App {
    fn snapshot_data(&self) -> Vec<u8> {
        let mut d = self.applied.to_be_bytes().to_vec();
        d.extend_from_slice(&self.chain.to_be_bytes());
        d
    }

    fn restore(&mut self, s: &Snapshot) {
        let word = |i: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&s.data[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        assert_eq!(s.data.len(), 16, "harness snapshot data");
        assert_eq!(word(0), s.meta.index, "snapshot data index");
        self.applied = s.meta.index;
        self.chain = word(1);
        self.conf_state = s.meta.conf_state.clone();
    }
}

/// The disk and state machine of an initial member: a snapshot at index 1
/// holding the initial configuration, so that nodes added later learn the
/// configuration from a snapshot (their log starts empty).
pub fn bootstrap(voters: &[u64]) -> (MemStorage, App) {
    let app = App {
        applied: 1,
        chain: 0,
        conf_state: ConfState::from_voters(voters.iter().copied()),
    };
    let mut disk = MemStorage::new();
    let snap = Snapshot {
        meta: crate::message::SnapshotMeta {
            index: 1,
            term: 1,
            conf_state: app.conf_state.clone(),
        },
        data: app.snapshot_data(),
    };
    if let Err(e) = disk.apply_snapshot(snap) {
        panic!("bootstrap snapshot: {e}");
    }
    (disk, app)
}

pub struct SimNode {
    pub id: u64,
    /// None while crashed.
    pub raw: Option<RawNode<MemStorage>>,
    /// The disk while crashed (while running it lives inside `raw`).
    pub disk: MemStorage,
    pub app: App,
    /// Highest commit index whose term this node's checks recorded.
    commit_checked: u64,
}

impl SimNode {
    fn storage(&self) -> &MemStorage {
        match &self.raw {
            Some(r) => r.storage(),
            None => &self.disk,
        }
    }
}

/// Global knowledge the checkers accumulate.
#[derive(Debug, Default)]
struct Checker {
    leaders: BTreeMap<u64, u64>,
    votes: BTreeMap<(u64, u64), u64>,
    persisted: BTreeMap<(u64, u64), (u64, u64)>,
    /// Committed index -> (entry term, term of the first node that reported
    /// the commit: at least the term in which it was committed).
    committed_terms: BTreeMap<u64, (u64, u64)>,
    chains: BTreeMap<u64, u64>,
    /// Read requests by (node, context): the highest index committed
    /// anywhere when the read was issued.
    reads: BTreeMap<(u64, Vec<u8>), u64>,
    next_read: u64,
}

pub struct Cluster {
    pub opts: Options,
    pub rng: Rng,
    pub seed: u64,
    pub now: u64,
    pub nodes: BTreeMap<u64, SimNode>,
    network: BTreeMap<(u64, u64), Message>,
    seq: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(u64, u64)>,
    checker: Checker,
    next_proposal: u64,
    pub report: Report,
    pub trace: Vec<String>,
    /// Proposals that must commit in the liveness phase.
    live_marker: Option<Vec<u8>>,
    /// Crash points armed by the fuzz driver: node -> crash before persisting
    /// (true) or after persisting, before sending (false), at its next Ready.
    armed_crashes: BTreeMap<u64, bool>,
}

impl Cluster {
    pub fn new(seed: u64, opts: Options) -> Cluster {
        let voters: Vec<u64> = (1..=opts.nodes).collect();
        let mut c = Cluster {
            rng: Rng::new(seed),
            seed,
            now: 0,
            nodes: BTreeMap::new(),
            network: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            checker: Checker::default(),
            next_proposal: 0,
            report: Report::default(),
            trace: Vec::new(),
            live_marker: None,
            armed_crashes: BTreeMap::new(),
            opts,
        };
        for &id in &voters {
            let (disk, app) = bootstrap(&voters);
            c.add_node(id, disk, app);
        }
        c
    }

    fn config(&self, id: u64, applied: u64) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: self.opts.max_size_per_msg,
            max_uncommitted_entries_size: self.opts.max_uncommitted_entries_size,
            max_inflight_msgs: self.opts.max_inflight_msgs,
            max_committed_size_per_ready: self.opts.max_committed_size_per_ready,
            max_inflight_bytes: self.opts.max_inflight_bytes,
            check_quorum: self.opts.check_quorum,
            pre_vote: self.opts.pre_vote,
            seed: self.seed.wrapping_mul(31).wrapping_add(id),
            ..Config::default()
        }
    }

    fn add_node(&mut self, id: u64, disk: MemStorage, app: App) {
        let mut node = SimNode {
            id,
            raw: None,
            disk,
            app,
            commit_checked: 0,
        };
        self.start(&mut node);
        self.nodes.insert(id, node);
    }

    fn start(&mut self, node: &mut SimNode) {
        // The node restarts with its seed advanced, so timeouts differ per life.
        let mut cfg = self.config(node.id, node.app.applied);
        cfg.seed = cfg.seed.wrapping_add(self.now << 8);
        let disk = std::mem::take(&mut node.disk);
        let mut raw = match RawNode::new(&cfg, disk) {
            Ok(r) => r,
            Err(e) => panic!("node {} failed to start: {e}", node.id),
        };
        raw.plant_bugs(self.opts.bugs);
        node.commit_checked = node.commit_checked.max(raw.status().commit);
        node.raw = Some(raw);
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if self.opts.trace {
            let line = format!("[t{}] {}", self.now, f());
            self.trace.push(line);
        }
    }

    // ---- network ---------------------------------------------------------------

    fn send(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) || self.rng.chance(self.opts.loss_percent, 100) {
            if m.kind == MessageKind::MsgSnap {
                self.report_snapshot(m.from, m.to, SnapshotStatus::Failure);
            }
            return;
        }
        let copies = if self.rng.chance(self.opts.dup_percent, 100) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.range(0, self.opts.max_delay_ticks + 1);
            self.seq += 1;
            self.network.insert((self.now + delay, self.seq), m.clone());
        }
    }

    /// Delivers one message now (fuzz driver): the `pick`-th in flight.
    pub fn deliver_nth(&mut self, pick: usize) -> Result<(), Violation> {
        if self.network.is_empty() {
            return Ok(());
        }
        let key = *self
            .network
            .keys()
            .nth(pick % self.network.len())
            .expect("non-empty");
        let m = self.network.remove(&key).expect("present");
        self.deliver(m)
    }

    fn deliver(&mut self, m: Message) -> Result<(), Violation> {
        let to = m.to;
        if self.cut.contains(&(m.from, m.to)) {
            if m.kind == MessageKind::MsgSnap {
                self.report_snapshot(m.from, m.to, SnapshotStatus::Failure);
            }
            return Ok(());
        }
        let Some(raw) = self.nodes.get_mut(&to).and_then(|n| n.raw.as_mut()) else {
            if m.kind == MessageKind::MsgSnap {
                self.report_snapshot(m.from, m.to, SnapshotStatus::Failure);
            }
            return Ok(());
        };
        self.report.messages_delivered += 1;
        if self.opts.trace {
            let line = format!(
                "[t{}] deliver {}",
                self.now,
                crate::message::describe_message(&m)
            );
            self.trace.push(line);
        }
        let (kind, from) = (m.kind, m.from);
        // Every message a correct node sends passes validation; only a
        // response from a peer that left the configuration is refused.
        match raw.validate(&m) {
            Ok(()) => {}
            Err(crate::Invalid::UnknownResponder(_)) => self.report.messages_refused += 1,
            Err(why) => {
                return violation(
                    "message validity",
                    format!(
                        "node {to} refused a correct message ({why}): {}",
                        crate::message::describe_message(&m)
                    ),
                );
            }
        }
        let _ = raw.step(m);
        self.process_ready(to)?;
        if kind == MessageKind::MsgSnap {
            // The transport tells the sender once the snapshot went through.
            self.report_snapshot(from, to, SnapshotStatus::Finish);
        }
        Ok(())
    }

    fn report_snapshot(&mut self, from: u64, to: u64, status: SnapshotStatus) {
        if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
            raw.report_snapshot(to, status);
        }
    }

    /// Delivers everything due by `now`, including messages sent with zero
    /// delay while delivering.
    fn deliver_due(&mut self) -> Result<(), Violation> {
        for _ in 0..100_000 {
            let Some((&key, _)) = self.network.first_key_value() else {
                return Ok(());
            };
            if key.0 > self.now {
                return Ok(());
            }
            let m = self.network.remove(&key).expect("present");
            self.deliver(m)?;
        }
        panic!("seed {}: message storm at tick {}", self.seed, self.now)
    }

    // ---- the Ready loop of one node -----------------------------------------------

    pub fn process_ready(&mut self, id: u64) -> Result<(), Violation> {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return Ok(());
            };
            let Some(raw) = node.raw.as_mut() else {
                return Ok(());
            };
            if !raw.has_ready() {
                return Ok(());
            }
            let rd = raw.ready();
            self.handle_ready(id, rd)?;
        }
    }

    fn handle_ready(&mut self, id: u64, rd: Ready) -> Result<(), Violation> {
        let armed = self.armed_crashes.remove(&id);
        // Crash point before_persist: the whole Ready is lost.
        if armed == Some(true) || (self.opts.crashes && self.rng.chance(1, 2000)) {
            self.crash(id);
            return Ok(());
        }
        self.persist(id, &rd)?;
        self.check_after_persist(id, &rd)?;
        // Crash point after_persist: nothing is sent or applied.
        if armed == Some(false) || (self.opts.crashes && self.rng.chance(1, 2000)) {
            self.crash(id);
            return Ok(());
        }
        for m in rd.messages {
            self.check_send(id, &m)?;
            self.send(m);
        }
        for e in &rd.committed_entries {
            self.apply(id, e)?;
        }
        for rs in &rd.read_states {
            self.check_read(id, rs)?;
        }
        let node = self.nodes.get_mut(&id).expect("node exists");
        let raw = node.raw.as_mut().expect("running");
        raw.advance(rd.number);
        self.check_roles()
    }

    fn persist(&mut self, id: u64, rd: &Ready) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let raw = node.raw.as_mut().expect("running");
        if let Some(s) = &rd.snapshot {
            if let Err(e) = raw.storage_mut().apply_snapshot(s.clone()) {
                panic!("node {id} cannot persist snapshot {}: {e}", s.meta.index);
            }
            node.app.restore(s);
            self.report.snapshots_applied += 1;
            let want = self.checker.chains.get(&s.meta.index).copied();
            if want.is_some_and(|w| w != node.app.chain) {
                return violation(
                    "state-machine safety",
                    format!(
                        "node {id} restored snapshot {} with a different state",
                        s.meta.index
                    ),
                );
            }
        }
        if let Err(e) = raw.storage_mut().append(&rd.entries) {
            panic!("node {id} cannot persist entries: {e}");
        }
        if let Some(hs) = rd.hard_state {
            raw.storage_mut().set_hard_state(hs);
        }
        Ok(())
    }

    fn check_after_persist(&mut self, id: u64, rd: &Ready) -> Result<(), Violation> {
        let node = &self.nodes[&id];
        let store = node.storage();
        // Log matching on what was just persisted.
        for e in &rd.entries {
            let prev = store.term(e.index - 1).unwrap_or(u64::MAX);
            let got = (entry_hash(e), prev);
            match self.checker.persisted.get(&(e.index, e.term)) {
                Some(&want)
                    if want.0 != got.0
                        || (want.1 != got.1 && want.1 != u64::MAX && prev != u64::MAX) =>
                {
                    return violation(
                        "log matching",
                        format!(
                            "node {id} persisted entry {}/{} that differs from another node's",
                            e.term, e.index
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.checker.persisted.insert((e.index, e.term), got);
                }
            }
        }
        let Some(hs) = rd.hard_state else {
            return Ok(());
        };
        // Committed indexes keep their term forever.
        let raw = node.raw.as_ref().expect("running");
        let from = node.commit_checked + 1;
        for i in from..=hs.commit {
            let Some(t) = raw.log_term(i) else { continue };
            match self.checker.committed_terms.get(&i).map(|&(t, _)| t) {
                Some(want) if want != t => {
                    return violation(
                        "committed entries never change",
                        format!("node {id} committed {t}/{i}, but {want}/{i} was committed before"),
                    );
                }
                Some(_) => {}
                None => {
                    self.checker.committed_terms.insert(i, (t, hs.term));
                }
            }
        }
        let leader_advanced = raw.role() == Role::Leader && hs.commit > node.commit_checked;
        self.nodes.get_mut(&id).expect("node").commit_checked =
            hs.commit.max(self.nodes[&id].commit_checked);
        if leader_advanced {
            self.check_commit_quorum(id, hs.commit)?;
        }
        Ok(())
    }

    /// The leader's commit index must be durable on a quorum of its config.
    fn check_commit_quorum(&self, id: u64, commit: u64) -> Result<(), Violation> {
        let raw = self.nodes[&id].raw.as_ref().expect("running");
        let Some(term) = raw.log_term(commit) else {
            return Ok(());
        };
        let cfg = &raw.raft().prs.config;
        let durable = |voter: u64| {
            self.nodes.get(&voter).is_some_and(|n| {
                let s = n.storage();
                let compacted = s.first_index().unwrap_or(1) - 1;
                commit <= compacted || s.term(commit) == Ok(term)
            })
        };
        let votes: BTreeMap<u64, bool> = cfg
            .voters
            .ids()
            .into_iter()
            .map(|v| (v, durable(v)))
            .collect();
        if cfg.voters.vote_result(&votes) != crate::quorum::VoteResult::Won {
            return violation(
                "commit only by quorum",
                format!("leader {id} committed {term}/{commit}, durable only on {votes:?}"),
            );
        }
        Ok(())
    }

    fn check_send(&mut self, id: u64, m: &Message) -> Result<(), Violation> {
        if m.kind != MessageKind::MsgVoteResp || m.reject {
            return Ok(());
        }
        let hs = self.nodes[&id].storage().hard_state();
        if hs.term != m.term || hs.vote != m.to {
            return violation(
                "votes persisted before answered",
                format!(
                    "node {id} granted a vote to {} at term {} with durable {hs:?}",
                    m.to, m.term
                ),
            );
        }
        let prev = *self.checker.votes.entry((m.term, id)).or_insert(m.to);
        if prev != m.to {
            return violation(
                "one vote per term",
                format!("node {id} voted for {prev} and {} in term {}", m.to, m.term),
            );
        }
        Ok(())
    }

    /// ReadIndex: a read must observe every write committed before it began.
    fn check_read(&mut self, id: u64, rs: &crate::ReadState) -> Result<(), Violation> {
        let Some(&min) = self.checker.reads.get(&(id, rs.context.clone())) else {
            return violation(
                "linearizable read",
                format!(
                    "node {id} got a read state for unknown context {:?}",
                    rs.context
                ),
            );
        };
        if rs.index < min {
            return violation(
                "linearizable read",
                format!(
                    "node {id} read at index {} but {min} was committed before the read began",
                    rs.index
                ),
            );
        }
        self.report.reads_served += 1;
        Ok(())
    }

    /// Issues a linearizable read at `id`.
    pub fn read(&mut self, id: u64) -> Result<(), Violation> {
        self.checker.next_read += 1;
        let ctx = format!("r{}", self.checker.next_read).into_bytes();
        let committed = self
            .checker
            .committed_terms
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        self.checker.reads.insert((id, ctx.clone()), committed);
        if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
            raw.read_index(ctx);
        }
        self.process_ready(id)
    }

    fn apply(&mut self, id: u64, e: &Entry) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node exists");
        if e.index != node.app.applied + 1 {
            return violation(
                "state-machine safety",
                format!("node {id} applied {} after {}", e.index, node.app.applied),
            );
        }
        node.app.applied = e.index;
        node.app.chain = fnv(node.app.chain, &entry_hash(e).to_be_bytes());
        let chain = node.app.chain;
        if e.kind == EntryKind::ConfChange {
            let cc = match ConfChange::decode(&e.data) {
                Ok(cc) => cc,
                Err(err) => panic!("node {id} applied an undecodable conf change: {err}"),
            };
            let raw = node.raw.as_mut().expect("running");
            if let Ok(cs) = raw.apply_conf_change(&cc) {
                node.app.conf_state = cs.clone();
                raw.storage_mut().set_conf_state(cs);
            }
            self.report.conf_changes_applied += 1;
        } else if !e.data.is_empty() {
            self.report.proposals_committed += 1;
        }
        match self.checker.chains.get(&e.index) {
            Some(&want) if want != chain => violation(
                "state-machine safety",
                format!(
                    "node {id} applied a different entry at {} ({}/{})",
                    e.index, e.term, e.index
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.checker.chains.insert(e.index, chain);
                Ok(())
            }
        }
    }

    /// Election safety, and leader completeness for each new leader.
    fn check_roles(&mut self) -> Result<(), Violation> {
        let mut new_leaders = Vec::new();
        for (&id, node) in &self.nodes {
            let Some(raw) = &node.raw else { continue };
            if raw.role() != Role::Leader {
                continue;
            }
            let core = raw.raft();
            let voter = core.prs.progress.get(&id).is_some_and(|p| !p.is_learner);
            if !voter && !core.stepping_down {
                return violation(
                    "leaders are voters",
                    format!(
                        "node {id} leads term {} outside its configuration",
                        raw.term()
                    ),
                );
            }
            let term = raw.term();
            match self.checker.leaders.get(&term) {
                Some(&other) if other != id => {
                    return violation(
                        "election safety",
                        format!("nodes {other} and {id} are both leader in term {term}"),
                    );
                }
                Some(_) => {}
                None => new_leaders.push((id, term)),
            }
        }
        for (id, term) in new_leaders {
            self.checker.leaders.insert(term, id);
            self.report.leaders_elected += 1;
            self.report.max_term = self.report.max_term.max(term);
            let raw = self.nodes[&id].raw.as_ref().expect("running");
            let (first, _) = raw.log_bounds();
            // Only entries committed in an earlier term: a leader of a stale
            // term (elected by votes delayed in the network) may legally
            // lack entries committed in a later term; it cannot commit.
            for (&i, &(t, commit_term)) in self.checker.committed_terms.range(first..) {
                if commit_term < term && raw.log_term(i) != Some(t) {
                    return violation(
                        "leader completeness",
                        format!("leader {id} of term {term} lacks committed entry {t}/{i}"),
                    );
                }
            }
            self.log(|| format!("{id} became leader at term {term}"));
        }
        Ok(())
    }

    // ---- faults and operations --------------------------------------------------------

    pub fn crash(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raw) = node.raw.take() else { return };
        // Only what was persisted survives: the storage, not raft's memory.
        node.disk = raw.storage().clone();
        self.report.crashes += 1;
        self.log(|| format!("crash {id}"));
    }

    pub fn restart(&mut self, id: u64) -> Result<(), Violation> {
        let Some(mut node) = self.nodes.remove(&id) else {
            return Ok(());
        };
        if node.raw.is_none() {
            self.start(&mut node);
            self.log(|| format!("restart {id}"));
        }
        self.nodes.insert(id, node);
        self.process_ready(id)
    }

    pub fn tick_all(&mut self) -> Result<(), Violation> {
        self.now += 1;
        self.report.ticks += 1;
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                raw.tick();
            }
            self.process_ready(id)?;
        }
        self.deliver_due()
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raw.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    /// Proposes one entry, or (every third call) a batch of three.
    pub fn propose(&mut self, id: u64) -> Result<(), Violation> {
        let n = if self.next_proposal % 3 == 2 { 3 } else { 1 };
        let mut data = Vec::with_capacity(n);
        for _ in 0..n {
            self.next_proposal += 1;
            data.push(format!("p{}", self.next_proposal).into_bytes());
        }
        if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
            let _ = match data.len() {
                1 => raw.propose(data.remove(0)),
                _ => raw.propose_batch(data),
            };
        }
        self.process_ready(id)
    }

    pub fn campaign(&mut self, id: u64) -> Result<(), Violation> {
        if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
            raw.campaign();
        }
        self.process_ready(id)
    }

    pub fn partition(&mut self, group: &BTreeSet<u64>, both_ways: bool) {
        let ids: Vec<u64> = (1..=self.opts.max_node_id).collect();
        for &a in &ids {
            for &b in &ids {
                if group.contains(&a) && !group.contains(&b) {
                    self.cut.insert((a, b));
                    if both_ways {
                        self.cut.insert((b, a));
                    }
                }
            }
        }
        self.log(|| format!("partition {group:?} both_ways={both_ways}"));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.log(|| "heal".to_string());
    }

    pub fn transfer(&mut self, to: u64) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        if let Some(raw) = self.nodes.get_mut(&leader).and_then(|n| n.raw.as_mut()) {
            raw.transfer_leader(to);
        }
        self.log(|| format!("transfer {leader} -> {to}"));
        self.process_ready(leader)
    }

    /// Snapshots the applied state of `id` and compacts its log.
    pub fn compact(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let app = node.app.clone();
        let Some(raw) = node.raw.as_mut() else { return };
        let store = raw.storage_mut();
        let first = store.first_index().unwrap_or(1);
        if app.applied < first {
            return;
        }
        let data = app.snapshot_data();
        if store
            .create_snapshot(app.applied, app.conf_state.clone(), data)
            .is_ok()
        {
            let _ = store.compact(app.applied);
        }
    }

    /// Proposes a random membership change at the leader.
    pub fn change_membership(&mut self, pick: u64) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let cs = self.nodes[&leader]
            .raw
            .as_ref()
            .expect("leader runs")
            .status()
            .conf_state;
        let cc = if !cs.voters_outgoing.is_empty() {
            ConfChange::leave_joint()
        } else {
            self.pick_change(&cs, pick)
        };
        let Some(cc) = Some(cc).filter(|c| !c.changes.is_empty() || !cs.voters_outgoing.is_empty())
        else {
            return Ok(());
        };
        for c in &cc.changes {
            if !self.nodes.contains_key(&c.node_id) {
                // A brand-new node: empty disk, no configuration yet.
                self.add_node(c.node_id, MemStorage::new(), App::default());
            }
        }
        self.log(|| format!("leader {leader} proposes conf change {cc}"));
        if let Some(raw) = self.nodes.get_mut(&leader).and_then(|n| n.raw.as_mut()) {
            let _ = raw.propose_conf_change(&cc);
        }
        self.process_ready(leader)
    }

    fn pick_change(&mut self, cs: &ConfState, pick: u64) -> ConfChange {
        let single = |kind, node_id| ConfChangeSingle { kind, node_id };
        let members: BTreeSet<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
        let outsider = (1..=self.opts.max_node_id).find(|id| !members.contains(id));
        let voter = cs.voters[(pick as usize / 7) % cs.voters.len()];
        let transition = match pick % 3 {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::Implicit,
            _ => ConfChangeTransition::Explicit,
        };
        let changes = match (pick / 3) % 6 {
            0 => outsider.map(|id| vec![single(ConfChangeKind::AddLearnerNode, id)]),
            1 => cs
                .learners
                .first()
                .map(|&id| vec![single(ConfChangeKind::AddNode, id)]),
            2 if cs.voters.len() > 3 => Some(vec![single(ConfChangeKind::RemoveNode, voter)]),
            3 if cs.voters.len() > 2 => Some(vec![single(ConfChangeKind::AddLearnerNode, voter)]),
            4 => outsider.map(|id| {
                vec![
                    single(ConfChangeKind::AddNode, id),
                    single(ConfChangeKind::RemoveNode, voter),
                ]
            }),
            _ => cs
                .learners
                .first()
                .map(|&id| vec![single(ConfChangeKind::RemoveNode, id)]),
        };
        ConfChange {
            transition,
            changes: changes.unwrap_or_default(),
            context: Vec::new(),
        }
    }

    // ---- the seeded schedule ---------------------------------------------------------------

    /// One tick of the fault phase: random events, then time advances.
    fn fault_tick(&mut self) -> Result<(), Violation> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let any = |rng: &mut Rng| ids[rng.range(0, ids.len() as u64) as usize];
        if self.rng.chance(1, 2) {
            let id = self.leader().unwrap_or_else(|| any(&mut self.rng));
            let target = if self.rng.chance(1, 4) {
                any(&mut self.rng)
            } else {
                id
            };
            self.propose(target)?;
        }
        if self.rng.chance(1, 5) {
            let id = any(&mut self.rng);
            self.read(id)?;
        }
        if self.opts.crashes && self.rng.chance(1, 60) {
            let id = any(&mut self.rng);
            self.crash(id);
        }
        if self.opts.crashes && self.rng.chance(1, 15) {
            let id = any(&mut self.rng);
            self.restart(id)?;
        }
        if self.opts.partitions && self.rng.chance(1, 50) {
            let group: BTreeSet<u64> = ids
                .iter()
                .copied()
                .filter(|_| self.rng.chance(1, 2))
                .collect();
            let both = self.rng.chance(3, 4);
            self.partition(&group, both);
        }
        if self.opts.partitions && self.rng.chance(1, 30) {
            self.heal();
        }
        if self.opts.membership && self.rng.chance(1, 25) {
            let pick = self.rng.next_u64();
            self.change_membership(pick)?;
        }
        if self.opts.transfers && self.rng.chance(1, 40) {
            let to = any(&mut self.rng);
            self.transfer(to)?;
        }
        if self.opts.compaction && self.rng.chance(1, 10) {
            let id = any(&mut self.rng);
            self.compact(id);
        }
        self.tick_all()
    }

    /// Heals every fault and waits until a leader commits a fresh proposal
    /// that every member of its configuration applies.
    pub fn check_liveness(&mut self) -> Result<(), Violation> {
        self.heal();
        self.armed_crashes.clear();
        self.opts.loss_percent = 0;
        self.opts.dup_percent = 0;
        self.opts.crashes = false;
        self.opts.max_delay_ticks = self.opts.max_delay_ticks.min(1);
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.restart(id)?;
        }
        let marker = format!("live-{}", self.seed).into_bytes();
        self.live_marker = Some(marker.clone());
        let start = self.now;
        let mut marker_index = None;
        while self.now - start < self.opts.liveness_ticks {
            self.tick_all()?;
            let Some(leader) = self.leader() else {
                continue;
            };
            if self.now.is_multiple_of(10) {
                // A peer added after the last snapshot needs a newer one.
                self.compact(leader);
            }
            if marker_index.is_none() || self.now.is_multiple_of(20) {
                let raw = self
                    .nodes
                    .get_mut(&leader)
                    .and_then(|n| n.raw.as_mut())
                    .expect("runs");
                let last = raw.log_bounds().1;
                if raw.propose(marker.clone()).is_ok() {
                    marker_index = Some(last + 1);
                }
                self.process_ready(leader)?;
            }
            if self.marker_applied_everywhere(leader, &marker) {
                return Ok(());
            }
        }
        let states: Vec<String> = self
            .nodes
            .values()
            .map(|n| match &n.raw {
                Some(r) => {
                    let s = r.status();
                    format!(
                        "{}: {:?} term {} lead {} commit {} applied {} last {} conf {} progress {:?}",
                        n.id,
                        s.role,
                        s.term,
                        s.leader_id,
                        s.commit,
                        s.applied,
                        r.log_bounds().1,
                        crate::message::describe_conf_state(&s.conf_state),
                        s.progress
                    )
                }
                None => format!("{}: down", n.id),
            })
            .collect();
        violation(
            "liveness",
            format!(
                "no proposal committed within {} ticks after healing; {}",
                self.opts.liveness_ticks,
                states.join("; ")
            ),
        )
    }

    fn marker_applied_everywhere(&self, leader: u64, marker: &[u8]) -> bool {
        let raw = self.nodes[&leader].raw.as_ref().expect("leader runs");
        let cs = raw.status().conf_state;
        // Find the marker's index in the leader's log, then require every
        // voter and learner to have applied it.
        let ents = raw.log_entries();
        let Some(idx) = ents
            .iter()
            .rev()
            .find(|e| e.data == marker)
            .map(|e| e.index)
        else {
            return false;
        };
        if raw.status().commit < idx {
            return false;
        }
        cs.voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .all(|id| self.nodes.get(id).is_some_and(|n| n.app.applied >= idx))
    }

    /// Fault phase, then liveness phase.
    pub fn run(&mut self) -> Result<Report, Violation> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process_ready(id)?;
        }
        for _ in 0..self.opts.fault_ticks {
            self.fault_tick()?;
        }
        self.check_liveness()?;
        Ok(self.report.clone())
    }
}

/// Runs one seeded simulation of `nodes` nodes.
pub fn run_seed(seed: u64, nodes: u64) -> Result<Report, Violation> {
    let opts = Options::from_seed(seed, nodes);
    Cluster::new(seed, opts).run()
}

/// Runs one seeded simulation with planted bugs.
pub fn run_seed_with_bugs(seed: u64, nodes: u64, bugs: PlantedBugs) -> Result<Report, Violation> {
    let mut opts = Options::from_seed(seed, nodes);
    opts.bugs = bugs;
    Cluster::new(seed, opts).run()
}

/// The fuzz entry point: the first bytes choose the options, every later
/// byte pair is one operation. Panics on any violated invariant.
pub fn fuzz_run(data: &[u8]) {
    if let Err(v) = fuzz_check(data) {
        panic!("{v}");
    }
}

/// Like [`fuzz_run`], but returns the violation.
pub fn fuzz_check(data: &[u8]) -> Result<(), Violation> {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0) as u64;
    let seed = byte(0) | byte(1) << 8;
    let nodes = if byte(2) & 1 == 0 { 3 } else { 5 };
    let mut opts = Options::from_seed(seed, nodes);
    opts.loss_percent = 0;
    opts.dup_percent = 0;
    opts.max_delay_ticks = 0;
    opts.crashes = false; // crash points only through explicit operations
    opts.pre_vote = byte(2) & 2 == 0;
    opts.check_quorum = byte(2) & 4 == 0;
    opts.liveness_ticks = 600;
    let mut c = Cluster::new(seed, opts);
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in ids {
        c.process_ready(id)?;
    }
    // Hold messages in flight until the input delivers them.
    let ops = data.get(3..).unwrap_or(&[]);
    for pair in ops.chunks(2).take(2000) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0) as u64);
        let node = 1 + arg % c.opts.max_node_id;
        match op % 16 {
            0..=3 => c.deliver_nth(arg as usize)?,
            4 => {
                // Drop a message.
                if !c.network.is_empty() {
                    let key = *c
                        .network
                        .keys()
                        .nth(arg as usize % c.network.len())
                        .expect("non-empty");
                    if let Some(m) = c.network.remove(&key) {
                        if m.kind == MessageKind::MsgSnap {
                            c.report_snapshot(m.from, m.to, SnapshotStatus::Failure);
                        }
                    }
                }
            }
            5 => {
                // Duplicate a message.
                if let Some((_, m)) = c.network.iter().nth(arg as usize % c.network.len().max(1)) {
                    let m = m.clone();
                    c.seq += 1;
                    c.network.insert((c.now, c.seq), m);
                }
            }
            6 => {
                // Advance time; messages stay queued until delivered.
                c.now += 1;
                let ids: Vec<u64> = c.nodes.keys().copied().collect();
                for id in ids {
                    if let Some(raw) = c.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                        raw.tick();
                    }
                    c.process_ready(id)?;
                }
            }
            7 => c.propose(node)?,
            8 if arg & 0x80 != 0 => {
                // Arm a crash point for the node's next Ready.
                c.armed_crashes.insert(node, arg & 0x40 != 0);
            }
            8 => c.crash(node),
            9 => c.restart(node)?,
            10 => c.campaign(node)?,
            11 => {
                let group: BTreeSet<u64> = (1..=c.opts.max_node_id)
                    .filter(|i| arg >> i & 1 == 1)
                    .collect();
                c.partition(&group, arg & 1 == 0);
            }
            12 => c.heal(),
            13 => c.change_membership(arg)?,
            14 => c.transfer(node)?,
            15 if arg & 1 == 0 => c.compact(node),
            _ => c.read(node)?,
        }
    }
    c.opts.max_delay_ticks = 0;
    c.check_liveness()
}
