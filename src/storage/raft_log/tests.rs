//! RaftLog: the on-disk raft state, alone and under a real (pure) raft node
//! with crashes that lose what was not persisted.

use std::sync::Arc;

use concord_raft::{
    ConfState, Config, Entry, EntryKind as RaftKind, HardState, RawNode, SnapshotMeta, Storage,
    StorageError as RaftError,
};

use super::{decode_conf_state, encode_conf_state, RaftLog};
use crate::storage::mem::MemBackend;
use crate::storage::{Backend, Batch};

fn e(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: RaftKind::Normal,
        data: format!("{index}@{term}").into_bytes(),
    }
}

fn open(be: &Arc<MemBackend>) -> RaftLog {
    RaftLog::open(be.clone() as Arc<dyn Backend>).expect("open")
}

#[test]
fn conf_states_round_trip() {
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![9],
        voters_outgoing: vec![1, 2, 4],
        learners_next: vec![4],
        auto_leave: true,
    };
    assert_eq!(
        decode_conf_state(&encode_conf_state(&cs)).expect("decode"),
        cs
    );
    assert_eq!(
        decode_conf_state(&encode_conf_state(&ConfState::default())).expect("decode"),
        ConfState::default()
    );
    assert!(decode_conf_state(&[1, 2, 3]).is_err());
    assert!(decode_conf_state(&encode_conf_state(&cs)[..40]).is_err());
}

#[test]
fn append_replaces_a_conflicting_suffix_and_survives_reopen() {
    let be = Arc::new(MemBackend::new());
    let mut log = open(&be);
    assert!(log.is_empty());
    let mut b = Batch::new();
    log.append(&mut b, &[e(1, 1), e(2, 1), e(3, 1), e(4, 1)]);
    log.set_hard_state(
        &mut b,
        HardState {
            term: 2,
            vote: 1,
            commit: 2,
        },
    );
    be.write(b).expect("write");
    // A new leader overwrites 3.. with its own entries.
    let mut b = Batch::new();
    log.append(&mut b, &[e(3, 2)]);
    be.write(b).expect("write");
    assert_eq!(log.last_index(), Ok(3));
    assert_eq!(log.term(3), Ok(2));
    assert_eq!(log.term(4), Err(RaftError::Unavailable));
    let again = open(&be);
    assert_eq!(again.last_index(), Ok(3));
    assert_eq!(
        again.entries(1, 4, None).expect("entries"),
        vec![e(1, 1), e(2, 1), e(3, 2)]
    );
    assert_eq!(
        again.hard_state(),
        HardState {
            term: 2,
            vote: 1,
            commit: 2
        }
    );
}

#[test]
fn compaction_and_snapshots_move_the_start_of_the_log() {
    let be = Arc::new(MemBackend::new());
    let mut log = open(&be);
    let mut b = Batch::new();
    log.append(
        &mut b,
        &(1..=10).map(|i| e(i, 1 + i / 5)).collect::<Vec<_>>(),
    );
    be.write(b).expect("write");
    let mut b = Batch::new();
    log.compact(&mut b, 6).expect("compact");
    be.write(b).expect("write");
    assert_eq!(log.first_index(), Ok(7));
    assert_eq!(log.term(6), Ok(2), "the compaction point keeps its term");
    assert_eq!(log.term(5), Err(RaftError::Compacted));
    assert_eq!(log.entries(6, 8, None), Err(RaftError::Compacted));
    assert_eq!(
        log.entries(7, 11, Some(1)).expect("entries"),
        vec![e(7, 2)],
        "size limit keeps at least one entry"
    );
    let mut b = Batch::new();
    assert_eq!(log.compact(&mut b, 6), Err(RaftError::Compacted));
    assert_eq!(log.compact(&mut b, 11), Err(RaftError::Unavailable));
    // A snapshot far ahead replaces the whole log.
    let meta = SnapshotMeta {
        index: 50,
        term: 4,
        conf_state: ConfState::from_voters([1, 2, 3]),
    };
    let mut b = Batch::new();
    log.apply_snapshot(&mut b, &meta);
    be.write(b).expect("write");
    let again = open(&be);
    assert_eq!((again.first_index(), again.last_index()), (Ok(51), Ok(50)));
    assert_eq!(again.term(50), Ok(4));
    assert_eq!(again.conf_state(), &ConfState::from_voters([1, 2, 3]));
    assert_eq!(again.hard_state().commit, 50);
}

/// The in-memory tail answers exactly as the backend does: a log with a
/// tiny cache (most reads straddle it) and a reopened log (no cache) agree
/// with the one that holds everything, through conflicting appends,
/// compactions and snapshots.
#[test]
fn the_cached_tail_reads_like_the_backend() {
    let mut rng = crate::test_rng::Rng(7);
    let be = Arc::new(MemBackend::new());
    let mut log = open(&be);
    let mut small = open(&be);
    small.set_cache_bytes_max(100);
    let mut term = 1;
    for step in 0..2000 {
        let mut b = Batch::new();
        let (first, last) = log.bounds();
        match rng.below(10) {
            0 if last > first + 3 => {
                let to = first + rng.below(last - first);
                log.compact(&mut b, to).expect("compact");
                small.compact(&mut Batch::new(), to).expect("compact");
            }
            1 if rng.below(20) == 0 => {
                term += 1;
                let meta = SnapshotMeta {
                    index: last + 1 + rng.below(5),
                    term,
                    conf_state: ConfState::from_voters([1]),
                };
                log.apply_snapshot(&mut b, &meta);
                small.apply_snapshot(&mut Batch::new(), &meta);
            }
            _ => {
                // Append at the end or over a suffix (never below commit 0).
                let at = (last + 1).saturating_sub(rng.below(4)).max(first);
                if rng.below(5) == 0 {
                    term += 1;
                }
                let es: Vec<Entry> = (at..at + 1 + rng.below(6)).map(|i| e(i, term)).collect();
                log.append(&mut b, &es);
                small.append(&mut Batch::new(), &es);
            }
        }
        be.write(b).expect("write");
        let reopened = open(&be);
        let (first, last) = log.bounds();
        for l in [&small, &reopened] {
            assert_eq!(l.bounds(), (first, last), "step {step}");
        }
        for i in first - 1..=last + 1 {
            let want = log.term(i);
            assert_eq!(small.term(i), want, "step {step}: term({i})");
            assert_eq!(reopened.term(i), want, "step {step}: term({i})");
        }
        let lo = first + rng.below(last + 2 - first);
        let hi = lo + rng.below(last + 2 - lo);
        let max = [None, Some(1), Some(40), Some(100)][rng.below(4) as usize];
        let want = log.entries(lo, hi, max);
        assert_eq!(small.entries(lo, hi, max), want, "step {step}: {lo}..{hi}");
        assert_eq!(
            reopened.entries(lo, hi, max),
            want,
            "step {step}: {lo}..{hi}"
        );
    }
}

/// Drives a one-node raft over RaftLog: every Ready is written and
/// persisted before it is advanced, except when a crash comes first.
#[test]
fn a_raft_node_restarts_from_what_was_persisted() {
    let be = Arc::new(MemBackend::new());
    let mut log = open(&be);
    let mut b = Batch::new();
    log.set_conf_state(&mut b, ConfState::from_voters([1]));
    be.write(b).expect("write");
    be.persist().expect("persist");
    let cfg = Config::new(1);
    let mut node = RawNode::new(&cfg, log).expect("node");
    node.campaign();
    let mut committed = Vec::new();
    let step = |node: &mut RawNode<RaftLog>, committed: &mut Vec<Entry>, persist: bool| {
        while node.has_ready() {
            let rd = node.ready();
            let mut b = Batch::new();
            node.storage_mut().append(&mut b, &rd.entries);
            if let Some(hs) = rd.hard_state {
                node.storage_mut().set_hard_state(&mut b, hs);
            }
            be.write(b).expect("write");
            if !persist {
                return;
            }
            be.persist().expect("persist");
            committed.extend(
                rd.committed_entries
                    .iter()
                    .filter(|e| !e.data.is_empty())
                    .cloned(),
            );
            node.advance(rd.number);
        }
    };
    step(&mut node, &mut committed, true);
    for i in 0..5 {
        node.propose(format!("p{i}").into_bytes()).expect("propose");
        step(&mut node, &mut committed, true);
    }
    assert_eq!(committed.len(), 5);
    // Written but not persisted: lost in the crash.
    node.propose(b"lost".to_vec()).expect("propose");
    step(&mut node, &mut committed, false);
    be.crash();
    let log = open(&be);
    let hs = log.hard_state();
    assert_eq!(
        log.last_index(),
        Ok(committed.last().map_or(0, |e| e.index))
    );
    assert!(hs.commit >= committed.last().map_or(0, |e| e.index));
    let data: Vec<Vec<u8>> = log
        .entries(1, log.last_index().unwrap_or(0) + 1, None)
        .expect("entries")
        .into_iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| e.data)
        .collect();
    assert_eq!(
        data,
        committed.iter().map(|e| e.data.clone()).collect::<Vec<_>>()
    );
    // The restarted node elects itself again and keeps going.
    let cfg = Config {
        applied: hs.commit,
        ..Config::new(1)
    };
    let mut node = RawNode::new(&cfg, log).expect("restart");
    node.campaign();
    let mut b = Batch::new();
    while node.has_ready() {
        let rd = node.ready();
        node.storage_mut().append(&mut b, &rd.entries);
        if let Some(hs) = rd.hard_state {
            node.storage_mut().set_hard_state(&mut b, hs);
        }
        node.advance(rd.number);
    }
    assert!(node.term() > hs.term);
}
