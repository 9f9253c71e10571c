//! Replays the committed fuzz corpora (`fuzz/corpus/raft_step/*`,
//! `fuzz/corpus/peer_messages/*`) through the same entry points as the fuzz
//! targets, so a regression fails `cargo test`.
//! Inputs that once found a bug live in `tests/regressions/` and are
//! replayed by name below.

use std::path::Path;

use concord_raft::harness::fuzz_check;
use concord_raft::peer_fuzz::peer_messages_check;

fn replay_dir(dir: &Path) -> usize {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(v) = fuzz_check(&data) {
            panic!(
                "corpus input {} fails: {v}\nreplay: cargo fuzz run -s none raft_step {}",
                path.display(),
                path.display()
            );
        }
    }
    files.len()
}

/// A hostile peer's messages against a running node (`peer_messages`):
/// no panic, committed state never changes.
#[test]
fn peer_messages_corpus_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/peer_messages");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(v) = peer_messages_check(&data) {
            panic!(
                "corpus input {} fails: {v}\nreplay: cargo fuzz run -s none peer_messages {}",
                path.display(),
                path.display()
            );
        }
    }
    assert!(
        files.len() >= 20,
        "expected a seed corpus of a few dozen inputs, found {}",
        files.len()
    );
}

#[test]
fn fuzz_corpus_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/raft_step");
    let n = replay_dir(&dir);
    assert!(
        n >= 20,
        "expected a seed corpus of a few dozen inputs, found {n}"
    );
}

fn regression(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fuzz finding #1 (a checker bug): a candidate of term 3 received a vote
/// granted before the voter moved on to term 4, and became leader of the
/// stale term 3 after an entry had been committed in term 4. Raft allows
/// that (the stale leader cannot commit anything); the leader-completeness
/// checker wrongly demanded the term-4 entry. It now only demands entries
/// committed in terms below the new leader's.
#[test]
fn fuzz_001_stale_term_leader_is_not_a_completeness_violation() {
    let data = regression("fuzz_001_stale_term_leader.bin");
    if let Err(v) = fuzz_check(&data) {
        panic!("{v}");
    }
}

/// Fuzz finding #2 (a liveness bug in the core, the same one the seed sweep
/// found as seed 1054): a leader removed by a joint-config exit stepped
/// down at once; the remaining voters, still in the joint config, needed
/// its vote, which it refused (its log was longer), and it never
/// campaigned. Fixed by the removed leader's handover (MsgTimeoutNow to a
/// caught-up voter) before stepping down.
#[test]
fn fuzz_002_removed_leader_hands_over() {
    let data = regression("fuzz_002_removed_leader_deadlock.bin");
    if let Err(v) = fuzz_check(&data) {
        panic!("{v}");
    }
}

/// Fuzz finding #3 (a liveness bug in the core, the class of sweep seed
/// 200037): the removed leader gave up its handover after an election
/// timeout; the voters left in the (explicit) joint configuration needed
/// its vote and it refused them. Fixed by vote rejections carrying the
/// voter's commit index.
#[test]
fn fuzz_003_candidates_learn_commit_from_rejections() {
    let data = regression("fuzz_003_handover_timeout_deadlock.bin");
    if let Err(v) = fuzz_check(&data) {
        panic!("{v}");
    }
}

/// Fuzz finding #4 (a liveness bug introduced by the fix for #3, found by
/// the sweep too as seeds 201284 and 1201459): a candidate learned from a
/// vote rejection that a conf change removing it had committed, applied
/// it, and then won its election anyway: a leader outside its own
/// configuration, which never handed over. A candidate that is no longer
/// a voter now declines to lead; `become_leader` asserts it.
#[test]
fn fuzz_004_non_voter_does_not_lead() {
    let data = regression("fuzz_004_nonvoter_won_election.bin");
    if let Err(v) = fuzz_check(&data) {
        panic!("{v}");
    }
}
