//! A hostile peer against a running node (the `peer_messages` fuzz
//! target): a 3-voter cluster of the harness elects a leader and commits
//! a few entries; then one of its nodes (leader, follower, candidate, or a
//! follower with a compacted log, chosen by the first byte) is taken out
//! and fed messages decoded from the fuzzer's bytes, interleaved with
//! ticks. Each message goes through [`RawNode::validate`]; the accepted
//! ones are stepped (a refused one must be refused by `step` too), and
//! every Ready is handled as the member handles it (persist, apply conf
//! changes, advance).
//!
//! Properties: no panic (the core's assertions included); the commit
//! index never decreases; a committed index keeps its term for as long as
//! the log holds it; every committed conf change decodes.
//!
//! Messages are drawn near the node's own state (its term, commit and last
//! index, its peers' IDs) most of the time, so that the fuzzer reaches the
//! core's deep paths instead of the first check of `validate`.

use std::collections::BTreeMap;

use crate::confchange::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
use crate::harness::{Cluster, Options};
use crate::message::{ConfState, Entry, EntryKind, Message, MessageKind, Snapshot, SnapshotMeta};
use crate::storage::MemStorage;
use crate::validate::INDEX_TERM_MAX;
use crate::RawNode;

/// Most operations (messages and ticks) per input.
const OPS_MAX: usize = 256;
/// Most entries in one generated MsgApp or MsgProp.
const ENTRIES_MAX: u8 = 4;

const KINDS: [MessageKind; 14] = [
    MessageKind::MsgProp,
    MessageKind::MsgApp,
    MessageKind::MsgAppResp,
    MessageKind::MsgVote,
    MessageKind::MsgVoteResp,
    MessageKind::MsgPreVote,
    MessageKind::MsgPreVoteResp,
    MessageKind::MsgSnap,
    MessageKind::MsgHeartbeat,
    MessageKind::MsgHeartbeatResp,
    MessageKind::MsgTimeoutNow,
    MessageKind::MsgReadIndex,
    MessageKind::MsgReadIndexResp,
    MessageKind::MsgTransferLeader,
];

/// The fuzz entry point: panics on a violated property.
pub fn peer_messages(data: &[u8]) {
    if let Err(why) = peer_messages_check(data) {
        panic!("{why}");
    }
}

/// Like [`peer_messages`], but returns the violation.
pub fn peer_messages_check(data: &[u8]) -> Result<(), String> {
    let mut input = Input { data, pos: 0 };
    let setup = input.byte();
    let mut node = running_node(setup)?;
    let mut committed = Committed::default();
    committed.check(&node)?;
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        if input.byte().is_multiple_of(8) {
            node.tick();
        } else {
            let m = input.message(&node);
            if node.validate(&m).is_ok() {
                let _ = node.step(m);
            } else if node.step(m.clone()).is_ok() {
                return Err(format!(
                    "step accepted a message validate refused: {}",
                    crate::message::describe_message(&m)
                ));
            }
        }
        drive(&mut node)?;
        committed.check(&node)?;
    }
    Ok(())
}

/// A node of a 3-voter cluster with a leader and committed entries.
fn running_node(setup: u8) -> Result<RawNode<MemStorage>, String> {
    let seed = 1 + u64::from(setup & 7);
    let mut opts = Options::from_seed(seed, 3);
    opts.loss_percent = 0;
    opts.dup_percent = 0;
    opts.max_delay_ticks = 0;
    opts.crashes = false;
    opts.partitions = false;
    opts.membership = false;
    opts.transfers = false;
    opts.compaction = false;
    opts.pre_vote = setup & 8 == 0;
    opts.check_quorum = setup & 16 == 0;
    let mut c = Cluster::new(seed, opts);
    let fail = |v: crate::harness::Violation| v.to_string();
    for id in 1..=3 {
        c.process_ready(id).map_err(fail)?;
    }
    let mut leader = None;
    for _ in 0..200 {
        leader = c.leader();
        if leader.is_some() {
            break;
        }
        c.tick_all().map_err(fail)?;
    }
    let leader = leader.ok_or("no leader elected in the setup")?;
    for _ in 0..4 {
        c.propose(leader).map_err(fail)?;
        c.tick_all().map_err(fail)?;
    }
    for _ in 0..3 {
        c.tick_all().map_err(fail)?;
    }
    let pick = (setup >> 5) % 4;
    let follower = if leader == 1 { 2 } else { 1 };
    let id = if pick == 0 { leader } else { follower };
    let mut node = c
        .nodes
        .get_mut(&id)
        .and_then(|n| n.raw.take())
        .ok_or("the picked node is not running")?;
    match pick {
        2 => {
            node.campaign();
            drive(&mut node)?;
        }
        3 => {
            let st = node.status();
            let store = node.storage_mut();
            store
                .create_snapshot(st.applied, st.conf_state, vec![])
                .map_err(|e| format!("setup snapshot: {e}"))?;
            store
                .compact(st.applied)
                .map_err(|e| format!("setup compaction: {e}"))?;
        }
        _ => {}
    }
    Ok(node)
}

/// Handles every Ready as the member does; messages go nowhere.
fn drive(node: &mut RawNode<MemStorage>) -> Result<(), String> {
    while node.has_ready() {
        let rd = node.ready();
        let store = node.storage_mut();
        if let Some(s) = &rd.snapshot {
            store
                .apply_snapshot(s.clone())
                .map_err(|e| format!("persisting snapshot {}: {e}", s.meta.index))?;
        }
        store
            .append(&rd.entries)
            .map_err(|e| format!("persisting entries: {e}"))?;
        if let Some(hs) = rd.hard_state {
            store.set_hard_state(hs);
        }
        for e in &rd.committed_entries {
            if e.kind != EntryKind::ConfChange {
                continue;
            }
            let cc = ConfChange::decode(&e.data).map_err(|err| {
                format!("committed conf change {} does not decode: {err}", e.index)
            })?;
            if let Ok(cs) = node.apply_conf_change(&cc) {
                node.storage_mut().set_conf_state(cs);
            }
        }
        node.advance(rd.number);
    }
    Ok(())
}

/// What the node has committed so far: the commit index and the term of
/// each committed index.
#[derive(Default)]
struct Committed {
    commit: u64,
    terms: BTreeMap<u64, u64>,
}

impl Committed {
    fn check(&mut self, node: &RawNode<MemStorage>) -> Result<(), String> {
        let commit = node.status().commit;
        if commit < self.commit {
            return Err(format!(
                "commit index went back from {} to {commit}",
                self.commit
            ));
        }
        for (&index, &term) in &self.terms {
            if let Some(now) = node.log_term(index) {
                if now != term {
                    return Err(format!(
                        "committed entry {index} changed its term from {term} to {now}"
                    ));
                }
            }
        }
        let (first, _) = node.log_bounds();
        let from = (self.commit + 1).max(first.saturating_sub(1));
        for index in from..=commit {
            if let Some(term) = node.log_term(index) {
                self.terms.insert(index, term);
            }
        }
        self.commit = commit;
        Ok(())
    }
}

/// The fuzzer's bytes; zeros once they run out.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.byte()))
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A value near `base` most of the time; sometimes 0, small, arbitrary
    /// or at the edge of the allowed range.
    fn near(&mut self, base: u64) -> u64 {
        let b = self.byte();
        let small = u64::from(b >> 3);
        match b & 7 {
            0 => 0,
            1..=4 => base.saturating_add(small % 8).saturating_sub(3),
            5 => small,
            6 => self.u64(),
            _ => (INDEX_TERM_MAX + small % 4).saturating_sub(1),
        }
    }

    /// A node ID: 0, a voter (maybe this node), a non-member, arbitrary.
    fn id(&mut self, local: u64) -> u64 {
        match self.byte() % 8 {
            0 => 0,
            1..=3 => u64::from(self.byte() % 3) + 1,
            4 => 4,
            5 => local,
            6 => self.u64(),
            _ => local % 3 + 1,
        }
    }

    fn index(&mut self, node: &RawNode<MemStorage>) -> u64 {
        let (first, last) = node.log_bounds();
        let base = match self.byte() % 3 {
            0 => last,
            1 => node.status().commit,
            _ => first.saturating_sub(1),
        };
        self.near(base)
    }

    fn bytes(&mut self, max_len: u8) -> Vec<u8> {
        let n = self.byte() % (max_len + 1);
        (0..n).map(|_| self.byte()).collect()
    }

    fn message(&mut self, node: &RawNode<MemStorage>) -> Message {
        let local = node.id();
        let kind = KINDS[usize::from(self.byte()) % KINDS.len()];
        let from = self.id(local);
        let to = if self.byte() < 240 {
            local
        } else {
            self.id(local)
        };
        let term = if self.byte() < 32 {
            0
        } else {
            self.near(node.term())
        };
        let index = self.index(node);
        // The log term: ours at `index` (a consistent append or vote) or
        // drawn near the term.
        let log_term = if self.bool() {
            node.log_term(index).unwrap_or(0)
        } else {
            self.near(term)
        };
        let mut m = Message {
            kind,
            from,
            to,
            term,
            log_term,
            index,
            commit: self.index(node),
            reject: self.bool(),
            reject_hint: self.index(node),
            context: self.bytes(4),
            ..Message::default()
        };
        if matches!(kind, MessageKind::MsgApp | MessageKind::MsgProp) || self.byte() == 0xff {
            m.entries = self.entries(&m);
        }
        if kind == MessageKind::MsgSnap || self.byte() == 0xff {
            m.snapshot = Some(self.snapshot(node, term));
        }
        m
    }

    /// Entries after `m.index`, contiguous unless a byte says otherwise.
    fn entries(&mut self, m: &Message) -> Vec<Entry> {
        let n = self.byte() % (ENTRIES_MAX + 1);
        let mut index = m.index;
        let mut term = m.log_term.max(1);
        (0..n)
            .map(|_| {
                index = match self.byte() {
                    0xf0.. => self.near(index),
                    _ => index.wrapping_add(1),
                };
                term = match self.byte() {
                    0..=0x9f => term,
                    0xa0..=0xdf => m.term,
                    _ => self.near(term),
                };
                let (kind, data) = if self.byte() < 0xc0 {
                    (EntryKind::Normal, self.bytes(3))
                } else if self.bool() {
                    (EntryKind::ConfChange, self.conf_change().encode())
                } else {
                    (EntryKind::ConfChange, self.bytes(6))
                };
                Entry {
                    term,
                    index,
                    kind,
                    data,
                }
            })
            .collect()
    }

    fn conf_change(&mut self) -> ConfChange {
        let transition = match self.byte() % 3 {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::Implicit,
            _ => ConfChangeTransition::Explicit,
        };
        let n = self.byte() % 3;
        let changes = (0..n)
            .map(|_| {
                let b = self.byte();
                let kind = match b % 3 {
                    0 => ConfChangeKind::AddNode,
                    1 => ConfChangeKind::AddLearnerNode,
                    _ => ConfChangeKind::RemoveNode,
                };
                ConfChangeSingle {
                    kind,
                    node_id: u64::from(b >> 2) % 6,
                }
            })
            .collect();
        ConfChange {
            transition,
            changes,
            context: Vec::new(),
        }
    }

    fn snapshot(&mut self, node: &RawNode<MemStorage>, term: u64) -> Snapshot {
        let index = self.index(node);
        let snapshot_term = if self.bool() {
            node.log_term(index).unwrap_or(1)
        } else {
            self.near(term)
        };
        // Voters, learners, outgoing voters and learners_next from masks
        // over IDs 0..=5; mostly the cluster as it is.
        let ids = |mask: u8| (0..6).filter(|i| mask >> i & 1 == 1).collect::<Vec<u64>>();
        let conf_state = if self.byte() < 0x80 {
            ConfState::from_voters([1, 2, 3])
        } else {
            ConfState {
                voters: ids(self.byte()),
                learners: ids(self.byte()),
                voters_outgoing: ids(self.byte()),
                learners_next: ids(self.byte()),
                auto_leave: self.bool(),
            }
        };
        Snapshot {
            meta: SnapshotMeta {
                index,
                term: snapshot_term,
                conf_state,
            },
            data: self.bytes(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Role;

    #[test]
    fn every_setup_builds_a_node_with_committed_entries() {
        for setup in [0u8, 0x20, 0x40, 0x60, 0x18, 0x07] {
            let node = running_node(setup).expect("setup");
            let st = node.status();
            assert!(st.commit >= 5, "setup {setup:#x}: commit {}", st.commit);
            let want = match setup >> 5 {
                0 => Role::Leader,
                2 => Role::PreCandidate,
                _ => Role::Follower,
            };
            let role = st.role;
            let ok = role == want || (want == Role::PreCandidate && role == Role::Candidate);
            assert!(ok, "setup {setup:#x}: {role:?}, want {want:?}");
        }
    }

    #[test]
    fn empty_and_short_inputs_pass() {
        for data in [&[][..], &[0], &[1, 2, 3], &[0xff; 64]] {
            peer_messages_check(data).expect("no violation");
        }
    }
}
