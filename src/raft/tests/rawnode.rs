//! The public API contract of `RawNode`: typed errors for operating
//! conditions, panics (assertions) for caller bugs.

use concord_raft::{
    ConfState, Config, ConfigError, DropReason, Error, MemStorage, Message, MessageKind, RawNode,
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
        node.storage_mut().append(&rd.entries).expect("append");
        if let Some(hs) = rd.hard_state {
            node.storage_mut().set_hard_state(hs);
        }
        out.extend(rd.messages);
        node.advance(rd.number);
    }
    out
}

#[test]
fn invalid_config_is_a_typed_error() {
    let cfg = Config {
        heartbeat_tick: 0,
        ..Config::new(1)
    };
    let err = RawNode::new(&cfg, MemStorage::new()).err();
    assert_eq!(err, Some(Error::Config(ConfigError::ZeroHeartbeatTick)));
}

#[test]
fn proposal_without_leader_is_dropped() {
    let mut n = bootstrapped(1, &[1, 2, 3]);
    assert_eq!(
        n.propose(b"x".to_vec()),
        Err(Error::ProposalDropped(DropReason::NoLeader))
    );
}

#[test]
fn single_voter_elects_itself_and_commits() {
    let mut n = bootstrapped(1, &[1]);
    n.campaign();
    assert_eq!(n.role(), Role::Leader);
    n.propose(b"x".to_vec()).expect("leader accepts");
    let rd = n.ready();
    assert!(rd.must_sync);
    assert_eq!(
        rd.committed_entries.len(),
        2,
        "empty entry of the term + proposal"
    );
    let hs = rd.hard_state.expect("hard state changed");
    assert_eq!((hs.term, hs.vote, hs.commit), (2, 1, 3));
    n.storage_mut().append(&rd.entries).expect("append");
    n.advance(rd.number);
    assert!(!n.has_ready());
    assert_eq!(n.status().applied, 3);
}

#[test]
fn response_from_unknown_peer_is_refused() {
    let mut n = bootstrapped(1, &[1, 2, 3]);
    let m = Message {
        kind: MessageKind::MsgAppResp,
        from: 9,
        to: 1,
        term: 1,
        ..Message::default()
    };
    assert_eq!(n.step(m), Err(Error::StepPeerNotFound));
}

#[test]
fn vote_is_in_the_ready_that_answers_it() {
    let mut n = bootstrapped(2, &[1, 2, 3]);
    let m = Message {
        kind: MessageKind::MsgVote,
        from: 1,
        to: 2,
        term: 2,
        index: 1,
        log_term: 1,
        ..Message::default()
    };
    n.step(m).expect("step");
    let rd = n.ready();
    let hs = rd.hard_state.expect("vote changes the hard state");
    assert_eq!((hs.term, hs.vote), (2, 1));
    assert!(rd.must_sync, "a vote must be synced before it is sent");
    assert_eq!(rd.messages.len(), 1);
    assert_eq!(rd.messages[0].kind, MessageKind::MsgVoteResp);
    assert!(!rd.messages[0].reject);
}

#[test]
#[should_panic(expected = "before advance")]
fn ready_twice_without_advance_panics() {
    let mut n = bootstrapped(1, &[1]);
    n.campaign();
    let _ = n.ready();
    let _ = n.ready();
}

#[test]
#[should_panic(expected = "advance of ready 7")]
fn advance_with_wrong_number_panics() {
    let mut n = bootstrapped(1, &[1]);
    n.campaign();
    let _ = n.ready();
    n.advance(7);
}

#[test]
fn seeded_timeouts_are_deterministic() {
    // Two nodes with the same seed campaign at the same tick; different
    // seeds generally differ.
    let first_campaign = |seed: u64| {
        let mut disk = MemStorage::new();
        disk.apply_snapshot(Snapshot {
            meta: SnapshotMeta {
                index: 1,
                term: 1,
                conf_state: ConfState::from_voters([1, 2, 3]),
            },
            data: Vec::new(),
        })
        .expect("bootstrap");
        let cfg = Config {
            seed,
            ..Config::new(1)
        };
        let mut n = RawNode::new(&cfg, disk).expect("valid");
        for tick in 1..100 {
            n.tick();
            if n.role() != Role::Follower {
                let _ = drain(&mut n);
                return tick;
            }
        }
        panic!("never campaigned");
    };
    assert_eq!(first_campaign(7), first_campaign(7));
    let ticks: std::collections::BTreeSet<u64> = (0..20).map(first_campaign).collect();
    assert!(ticks.len() > 1, "timeouts are not randomised: {ticks:?}");
    assert!(ticks.iter().all(|&t| (10..20).contains(&t)), "{ticks:?}");
}

#[test]
fn malformed_messages_are_refused() {
    let mut n = bootstrapped(2, &[1, 2, 3]);
    let app = Message {
        kind: MessageKind::MsgApp,
        from: 1,
        to: 2,
        term: 2,
        index: 1,
        log_term: 1,
        entries: vec![concord_raft::Entry::new(2, 3, vec![])], // should be index 2
        ..Message::default()
    };
    assert!(matches!(n.step(app), Err(Error::InvalidMessage(_))));
    let snap = Message {
        kind: MessageKind::MsgSnap,
        from: 1,
        to: 2,
        term: 2,
        ..Message::default()
    };
    assert!(matches!(n.step(snap), Err(Error::InvalidMessage(_))));
    let prop = Message {
        kind: MessageKind::MsgProp,
        from: 1,
        to: 2,
        ..Message::default()
    };
    assert!(matches!(n.step(prop), Err(Error::InvalidMessage(_))));
    assert_eq!(n.term(), 1, "nothing was stepped");
}

/// A vote rejection carries the voter's commit index; a candidate holding
/// that entry (same index and term) learns it is committed.
#[test]
fn candidate_learns_commit_from_vote_rejection() {
    let mut disk = MemStorage::new();
    disk.apply_snapshot(Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            conf_state: ConfState::from_voters([1, 2, 3]),
        },
        data: Vec::new(),
    })
    .expect("bootstrap");
    disk.append(&[
        concord_raft::Entry::new(2, 2, b"a".to_vec()),
        concord_raft::Entry::new(2, 3, b"b".to_vec()),
    ])
    .expect("append");
    disk.set_hard_state(concord_raft::HardState {
        term: 2,
        vote: 0,
        commit: 1,
    });
    let mut n = RawNode::new(&Config::new(2), disk).expect("valid");
    n.campaign();
    assert_eq!(n.role(), Role::PreCandidate);
    let rejection = |index, log_term| Message {
        kind: MessageKind::MsgPreVoteResp,
        from: 3,
        to: 2,
        term: 2,
        reject: true,
        index,
        log_term,
        ..Message::default()
    };
    // A commit claim for an entry we hold with another term is ignored.
    n.step(rejection(3, 1)).expect("step");
    assert_eq!(n.status().commit, 1);
    n.step(rejection(3, 2)).expect("step");
    assert_eq!(n.status().commit, 3);
}

/// Delivers messages among `nodes` (ids 1..) until none are left.
fn settle(nodes: &mut [RawNode<MemStorage>], mut msgs: Vec<Message>) {
    while !msgs.is_empty() {
        for m in std::mem::take(&mut msgs) {
            let to = &mut nodes[(m.to - 1) as usize];
            let _ = to.step(m);
        }
        for n in nodes.iter_mut() {
            msgs.extend(drain(n));
        }
    }
}

fn three_with_leader_1() -> Vec<RawNode<MemStorage>> {
    let mut nodes: Vec<_> = (1..=3).map(|id| bootstrapped(id, &[1, 2, 3])).collect();
    nodes[0].campaign();
    let msgs = drain(&mut nodes[0]);
    settle(&mut nodes, msgs);
    assert_eq!(nodes[0].role(), Role::Leader);
    nodes
}

/// The messages of `kind` among those `node` has to send.
fn drain_kind(node: &mut RawNode<MemStorage>, kind: MessageKind) -> Vec<Message> {
    drain(node).into_iter().filter(|m| m.kind == kind).collect()
}

#[test]
fn a_batch_of_proposals_is_one_message_each_way() {
    let mut nodes = three_with_leader_1();
    let batch = || {
        (0..3)
            .map(|i| format!("x{i}").into_bytes())
            .collect::<Vec<_>>()
    };
    // On the leader: one append, one MsgApp per follower with all of them.
    nodes[0].propose_batch(batch()).expect("leader accepts");
    let apps = drain_kind(&mut nodes[0], MessageKind::MsgApp);
    assert_eq!(apps.len(), 2, "{apps:?}");
    assert!(apps.iter().all(|m| m.entries.len() == 3), "{apps:?}");
    settle(&mut nodes, apps);
    // On a follower: forwarded to the leader as one message.
    nodes[1].propose_batch(batch()).expect("follower forwards");
    let props = drain_kind(&mut nodes[1], MessageKind::MsgProp);
    assert_eq!(props.len(), 1, "{props:?}");
    assert_eq!((props[0].to, props[0].entries.len()), (1, 3));
    // One at a time, the leader sends a message per proposal per follower.
    for d in batch() {
        nodes[0].propose(d).expect("leader accepts");
    }
    assert_eq!(drain_kind(&mut nodes[0], MessageKind::MsgApp).len(), 6);
}

#[test]
fn a_batch_without_leader_is_dropped_whole() {
    let mut n = bootstrapped(1, &[1, 2, 3]);
    assert_eq!(
        n.propose_batch(vec![b"a".to_vec(), b"b".to_vec()]),
        Err(Error::ProposalDropped(DropReason::NoLeader))
    );
    assert!(n.ready().entries.is_empty());
}
