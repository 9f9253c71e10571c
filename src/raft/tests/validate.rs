//! Validation of peer messages (`RawNode::validate`, `validate.rs`): each
//! kind of invalid message is refused with its reason and changes nothing;
//! the messages of a normal run are all accepted; messages that are valid
//! by the protocol but used to trip an assertion of the core are handled.

use concord_raft::confchange::ConfChange;
use concord_raft::harness::{Cluster, Options};
use concord_raft::validate::INDEX_TERM_MAX;
use concord_raft::{
    ConfState, Config, Entry, EntryKind, Error, Invalid, MemStorage, Message, MessageKind, RawNode,
    Role, Snapshot, SnapshotMeta,
};

fn bootstrapped(id: u64, voters: &[u64]) -> RawNode<MemStorage> {
    let mut disk = MemStorage::new();
    disk.apply_snapshot(Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            conf_state: ConfState::from_voters(voters.iter().copied()),
        },
        data: Vec::new(),
    })
    .expect("bootstrap");
    RawNode::new(&Config::new(id), disk).expect("valid config")
}

/// Persists and advances every Ready; returns the messages.
fn drain(node: &mut RawNode<MemStorage>) -> Vec<Message> {
    let mut out = Vec::new();
    while node.has_ready() {
        let rd = node.ready();
        if let Some(s) = &rd.snapshot {
            node.storage_mut()
                .apply_snapshot(s.clone())
                .expect("snapshot");
        }
        node.storage_mut().append(&rd.entries).expect("append");
        if let Some(hs) = rd.hard_state {
            node.storage_mut().set_hard_state(hs);
        }
        out.extend(rd.messages);
        node.advance(rd.number);
    }
    out
}

/// Node 1 leads nodes 1..=3 in term 2 and has committed its empty entry
/// (index 2).
fn three_with_leader_1() -> Vec<RawNode<MemStorage>> {
    let mut nodes: Vec<_> = (1..=3).map(|id| bootstrapped(id, &[1, 2, 3])).collect();
    nodes[0].campaign();
    let mut msgs = drain(&mut nodes[0]);
    while !msgs.is_empty() {
        for m in std::mem::take(&mut msgs) {
            let to = &mut nodes[(m.to - 1) as usize];
            to.step(m).expect("a correct message is accepted");
        }
        for n in nodes.iter_mut() {
            msgs.extend(drain(n));
        }
    }
    assert_eq!(nodes[0].role(), Role::Leader);
    assert_eq!(nodes[1].status().commit, 2);
    nodes
}

fn msg(kind: MessageKind, from: u64, to: u64, term: u64) -> Message {
    Message {
        kind,
        from,
        to,
        term,
        ..Message::default()
    }
}

/// `m` is refused with `want`, by `validate` and by `step`, and the node's
/// term, vote and commit stay as they were.
fn refused(node: &mut RawNode<MemStorage>, m: Message, want: Invalid) {
    assert_eq!(node.validate(&m), Err(want.clone()), "{m:?}");
    let before = node.status();
    let got = node.step(m);
    let want = match want {
        Invalid::UnknownResponder(_) => Error::StepPeerNotFound,
        other => Error::InvalidMessage(other),
    };
    assert_eq!(got, Err(want));
    let after = node.status();
    assert_eq!(
        (after.term, after.vote, after.commit, after.role),
        (before.term, before.vote, before.commit, before.role)
    );
    assert!(!node.has_ready(), "a refused message produced a Ready");
}

fn follower() -> RawNode<MemStorage> {
    three_with_leader_1().remove(1)
}

#[test]
fn no_sender_is_refused() {
    let mut n = follower();
    refused(
        &mut n,
        msg(MessageKind::MsgHeartbeat, 0, 2, 2),
        Invalid::NoSender,
    );
}

#[test]
fn message_from_self_is_refused() {
    let mut n = follower();
    refused(
        &mut n,
        msg(MessageKind::MsgHeartbeat, 2, 2, 2),
        Invalid::FromSelf(2),
    );
}

#[test]
fn forwarded_request_may_come_back_to_its_originator() {
    let n = three_with_leader_1().remove(0);
    let mut m = msg(MessageKind::MsgProp, 1, 1, 0);
    m.entries = vec![Entry::new(0, 0, b"x".to_vec())];
    assert_eq!(n.validate(&m), Ok(()));
    assert_eq!(n.validate(&msg(MessageKind::MsgReadIndex, 1, 1, 0)), Ok(()));
}

#[test]
fn message_for_another_node_is_refused() {
    let mut n = follower();
    refused(
        &mut n,
        msg(MessageKind::MsgHeartbeat, 1, 3, 2),
        Invalid::WrongRecipient { to: 3, local: 2 },
    );
}

#[test]
fn term_zero_is_refused_where_a_term_is_needed() {
    let mut n = follower();
    for kind in [
        MessageKind::MsgApp,
        MessageKind::MsgHeartbeat,
        MessageKind::MsgVote,
        MessageKind::MsgPreVote,
        MessageKind::MsgTimeoutNow,
        MessageKind::MsgAppResp,
    ] {
        refused(&mut n, msg(kind, 1, 2, 0), Invalid::MissingTerm(kind));
    }
}

#[test]
fn forwarded_request_with_a_term_is_refused() {
    let mut n = three_with_leader_1().remove(0);
    let mut m = msg(MessageKind::MsgProp, 2, 1, 5);
    m.entries = vec![Entry::new(0, 0, b"x".to_vec())];
    refused(
        &mut n,
        m,
        Invalid::UnexpectedTerm {
            kind: MessageKind::MsgProp,
            term: 5,
        },
    );
}

#[test]
fn fields_a_kind_does_not_use_are_refused() {
    let mut n = follower();
    let mut m = msg(MessageKind::MsgHeartbeat, 1, 2, 2);
    m.entries = vec![Entry::new(2, 3, vec![])];
    refused(
        &mut n,
        m,
        Invalid::UnexpectedField {
            kind: MessageKind::MsgHeartbeat,
            field: "entries",
        },
    );
    let mut m = msg(MessageKind::MsgApp, 1, 2, 2);
    (m.index, m.log_term) = (2, 2);
    m.snapshot = Some(Snapshot::default());
    refused(
        &mut n,
        m,
        Invalid::UnexpectedField {
            kind: MessageKind::MsgApp,
            field: "a snapshot",
        },
    );
}

#[test]
fn indexes_and_terms_beyond_the_limit_are_refused() {
    let mut n = follower();
    let value = INDEX_TERM_MAX + 1;
    refused(
        &mut n,
        msg(MessageKind::MsgHeartbeat, 1, 2, value),
        Invalid::OutOfRange {
            field: "term",
            value,
        },
    );
    let mut m = msg(MessageKind::MsgApp, 1, 2, 2);
    m.index = u64::MAX;
    refused(
        &mut n,
        m,
        Invalid::OutOfRange {
            field: "index",
            value: u64::MAX,
        },
    );
    // Entries that would run past the limit (and overflow `index + 1`).
    let mut m = msg(MessageKind::MsgApp, 1, 2, 2);
    (m.index, m.log_term) = (INDEX_TERM_MAX, 2);
    m.entries = vec![Entry::new(2, INDEX_TERM_MAX + 1, vec![])];
    refused(
        &mut n,
        m,
        Invalid::NonContiguousEntries {
            position: 0,
            index: INDEX_TERM_MAX + 1,
            expected: u64::MAX,
        },
    );
}

#[test]
fn empty_proposal_is_refused() {
    let mut n = three_with_leader_1().remove(0);
    refused(
        &mut n,
        msg(MessageKind::MsgProp, 2, 1, 0),
        Invalid::EmptyProposal,
    );
}

fn append(index: u64, log_term: u64, entries: &[(u64, u64)]) -> Message {
    let mut m = msg(MessageKind::MsgApp, 1, 2, 2);
    (m.index, m.log_term, m.commit) = (index, log_term, 2);
    m.entries = entries
        .iter()
        .map(|&(term, index)| Entry::new(term, index, vec![]))
        .collect();
    m
}

#[test]
fn non_contiguous_entries_are_refused() {
    let mut n = follower();
    refused(
        &mut n,
        append(2, 2, &[(2, 3), (2, 5)]),
        Invalid::NonContiguousEntries {
            position: 1,
            index: 5,
            expected: 4,
        },
    );
}

#[test]
fn entry_terms_out_of_range_are_refused() {
    let mut n = follower();
    // Above the leader's term.
    refused(
        &mut n,
        append(2, 2, &[(3, 3)]),
        Invalid::EntryTermOutOfRange {
            index: 3,
            entry_term: 3,
            low: 2,
            high: 2,
        },
    );
    // Below the previous entry's term.
    refused(
        &mut n,
        append(2, 2, &[(1, 3)]),
        Invalid::EntryTermOutOfRange {
            index: 3,
            entry_term: 1,
            low: 2,
            high: 2,
        },
    );
    // Term 0 (no entry has it).
    refused(
        &mut n,
        append(0, 0, &[(0, 1)]),
        Invalid::EntryTermOutOfRange {
            index: 1,
            entry_term: 0,
            low: 1,
            high: 2,
        },
    );
}

#[test]
fn undecodable_conf_change_entry_is_refused() {
    let mut n = follower();
    let mut m = append(2, 2, &[(2, 3)]);
    m.entries[0].kind = EntryKind::ConfChange;
    m.entries[0].data = vec![9, 9];
    let why = ConfChange::decode(&[9, 9])
        .expect_err("garbage")
        .to_string();
    refused(&mut n, m, Invalid::UndecodableConfChange { index: 3, why });
}

#[test]
fn log_term_above_the_message_term_is_refused() {
    let mut n = follower();
    let mut m = msg(MessageKind::MsgVote, 3, 2, 3);
    (m.index, m.log_term) = (9, 4);
    refused(
        &mut n,
        m,
        Invalid::LogTermAboveTerm {
            log_term: 4,
            term: 3,
        },
    );
}

#[test]
fn reject_hint_above_the_rejected_index_is_refused() {
    let mut n = three_with_leader_1().remove(0);
    let mut m = msg(MessageKind::MsgAppResp, 2, 1, 2);
    (m.reject, m.index, m.reject_hint) = (true, 1, u64::MAX / 8);
    refused(
        &mut n,
        m,
        Invalid::RejectHintAboveIndex {
            hint: u64::MAX / 8,
            index: 1,
        },
    );
}

fn snap(index: u64, term: u64, conf_state: ConfState) -> Message {
    let mut m = msg(MessageKind::MsgSnap, 1, 2, 2);
    m.snapshot = Some(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state,
        },
        data: vec![],
    });
    m
}

#[test]
fn snapshot_message_without_a_snapshot_is_refused() {
    let mut n = follower();
    refused(
        &mut n,
        msg(MessageKind::MsgSnap, 1, 2, 2),
        Invalid::MissingSnapshot,
    );
    refused(
        &mut n,
        snap(0, 0, ConfState::default()),
        Invalid::MissingSnapshot,
    );
}

#[test]
fn snapshot_of_term_zero_or_a_future_term_is_refused() {
    let mut n = follower();
    let cs = || ConfState::from_voters([1, 2, 3]);
    refused(
        &mut n,
        snap(10, 0, cs()),
        Invalid::SnapshotTerm {
            snapshot_term: 0,
            term: 2,
        },
    );
    refused(
        &mut n,
        snap(10, 3, cs()),
        Invalid::SnapshotTerm {
            snapshot_term: 3,
            term: 2,
        },
    );
}

#[test]
fn snapshot_with_a_configuration_raft_cannot_hold_is_refused() {
    let mut n = follower();
    let bad = [
        // No voters.
        ConfState {
            learners: vec![2],
            ..ConfState::default()
        },
        // A learner that is a voter too.
        ConfState {
            voters: vec![1, 2],
            learners: vec![2],
            ..ConfState::default()
        },
        // learners_next without a joint configuration.
        ConfState {
            voters: vec![1, 2],
            learners_next: vec![3],
            ..ConfState::default()
        },
        // auto_leave without a joint configuration.
        ConfState {
            voters: vec![1, 2],
            auto_leave: true,
            ..ConfState::default()
        },
        // Node ID 0.
        ConfState::from_voters([0, 1, 2]),
    ];
    for cs in bad {
        let m = snap(10, 2, cs.clone());
        match n.validate(&m) {
            Err(Invalid::SnapshotConfState(_)) => {}
            other => panic!("{cs:?}: {other:?}"),
        }
        assert!(matches!(n.step(m), Err(Error::InvalidMessage(_))));
        assert_eq!(n.status().commit, 2, "{cs:?}");
    }
}

#[test]
fn response_from_a_peer_outside_the_configuration_is_refused() {
    let mut n = three_with_leader_1().remove(0);
    let mut m = msg(MessageKind::MsgAppResp, 9, 1, 2);
    m.index = 2;
    refused(&mut n, m, Invalid::UnknownResponder(9));
}

#[test]
fn heartbeat_commit_beyond_the_log_is_refused() {
    let mut n = follower();
    let mut m = msg(MessageKind::MsgHeartbeat, 1, 2, 2);
    m.commit = 100;
    refused(
        &mut n,
        m.clone(),
        Invalid::CommitBeyondLog {
            commit: 100,
            last_index: 2,
        },
    );
    // The same from a later term (it would make this node a follower of
    // the sender first).
    m.term = 5;
    refused(
        &mut n,
        m,
        Invalid::CommitBeyondLog {
            commit: 100,
            last_index: 2,
        },
    );
}

#[test]
fn acknowledgement_beyond_the_leader_log_is_refused() {
    let mut n = three_with_leader_1().remove(0);
    let mut m = msg(MessageKind::MsgAppResp, 2, 1, 2);
    m.index = 100;
    refused(
        &mut n,
        m,
        Invalid::AckBeyondLog {
            index: 100,
            last_index: 2,
        },
    );
    assert_eq!(n.status().progress.expect("leader")[&2].matched, 2);
}

#[test]
fn stale_messages_are_checked_only_for_their_sender() {
    // A heartbeat of an earlier term is ignored by the core, whatever its
    // commit: it is not refused.
    let mut n = follower();
    let mut m = msg(MessageKind::MsgHeartbeat, 1, 2, 1);
    m.commit = 100;
    assert_eq!(n.validate(&m), Ok(()));
    n.step(m).expect("ignored");
    assert_eq!(n.status().commit, 2);
}

/// Found by reading the core (the fuzzer finds it in seconds): the log
/// answers term 0 for an index beyond its end, so an append whose previous
/// entry is beyond our log with log term 0 passed the consistency check
/// and tripped "append leaves a gap" (or "commit out of range"). Valid by
/// its fields; the core now rejects it as a mismatch.
#[test]
fn append_beyond_the_log_with_log_term_zero_is_a_mismatch() {
    let mut n = follower();
    let m = append(7, 0, &[(2, 8), (2, 9)]);
    assert_eq!(n.validate(&m), Ok(()));
    n.step(m).expect("stepped");
    let out = drain(&mut n);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, MessageKind::MsgAppResp);
    assert!(out[0].reject);
    assert_eq!(n.log_bounds().1, 2, "nothing appended");
    assert_eq!(n.status().commit, 2);
    // Without entries (the commit index would have gone to 7).
    let mut m = append(7, 0, &[]);
    m.commit = 7;
    n.step(m).expect("stepped");
    let _ = drain(&mut n);
    assert_eq!(n.status().commit, 2);
}

/// A snapshot of a term we already hold, at an index beyond our log, used
/// to fast-forward the commit index past the log (`match_term` again).
#[test]
fn snapshot_beyond_the_log_is_restored_not_fast_forwarded() {
    let mut n = follower();
    let m = snap(7, 2, ConfState::from_voters([1, 2, 3]));
    assert_eq!(n.validate(&m), Ok(()));
    n.step(m).expect("stepped");
    let out = drain(&mut n);
    assert_eq!(n.status().commit, 7);
    assert_eq!(
        n.log_bounds(),
        (8, 7),
        "the log restarts after the snapshot"
    );
    assert_eq!(out[0].index, 7);
}

/// The messages of a fault-free 3-node run (elections, appends,
/// heartbeats, reads, proposals) all pass validation: the harness fails a
/// run on a refused message, and counts the refused responses from peers
/// outside the configuration, of which there are none without membership
/// changes.
#[test]
fn a_normal_three_node_run_has_no_refused_message() {
    for seed in 1..=5 {
        let mut opts = Options::from_seed(seed, 3);
        opts.loss_percent = 0;
        opts.dup_percent = 0;
        opts.crashes = false;
        opts.partitions = false;
        opts.membership = false;
        let report = Cluster::new(seed, opts)
            .run()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert!(report.messages_delivered > 100, "{report:?}");
        assert!(report.proposals_committed > 0, "{report:?}");
        assert_eq!(report.messages_refused, 0, "{report:?}");
    }
}
