//! The seeded chaos simulation (see `concord_sim::chaos`): swarm faults, a
//! recorded concurrent workload, and the checkers. `MADSIM_TEST_NUM=N`
//! runs N seeds from `MADSIM_TEST_SEED`; a failure prints its seed and the
//! command that replays it. Seeds that found bugs are pinned below.
#![cfg(madsim)]

use concord_sim::chaos::{self, Options};
use tokio::madsim::runtime::Runtime;

/// `CONCORD_SIM_PLANT=<Bug>` runs it with a planted bug (the replay
/// check's own proof uses `Nondeterminism`).
#[tokio::test]
async fn chaos() {
    if let Ok(name) = std::env::var("CONCORD_SIM_PLANT") {
        let bug = concord::planted::Bug::from_name(&name).expect("a planted bug's name");
        concord::planted::set(Some(bug));
    }
    let report = chaos::run(Options::from_seed()).await;
    eprintln!("{report}");
    assert!(report.violations.is_empty(), "{report}");
}

/// Runs one pinned seed of the chaos simulation, on a fresh thread as
/// madsim's test runner does (std's hash keys are per thread).
fn replay(seed: u64) {
    let report = std::thread::spawn(move || {
        let rt = Runtime::with_seed_and_config(seed, tokio::madsim::Config::default());
        rt.block_on(async { chaos::run(Options::from_seed()).await })
    })
    .join()
    .expect("the simulation ran");
    eprintln!("{report}");
    assert!(report.violations.is_empty(), "{report}");
}

/// A watcher from revision 41 with prev_kv got the delete at 41 without
/// prev_kv after a compaction at 41 had removed revision 40. etcd does the
/// same (a prev_kv it cannot read is omitted); the watch checker now
/// allows it at revisions up to the compaction.
#[test]
fn regression_prev_kv_omitted_after_compaction() {
    replay(1796071311279688461);
}

/// The leader was removed while its MemberRemove timed out; the final
/// checks took the member list from that removed member (still answering
/// with its old view) and waited for it forever. The list now comes from
/// the leader.
#[test]
fn regression_a_removed_member_does_not_define_the_cluster() {
    replay(7);
}

/// A learner was started right after its MemberAdd returned, asked a
/// member that had not applied the add yet, and gave up ("add it first");
/// the cluster then waited for it. Joiners now retry, as a supervisor
/// restarting the daemon would.
#[test]
fn regression_a_joiner_retries_until_its_add_is_applied() {
    replay(52);
}

/// Two member adds whose outcome was unknown (never applied) were counted
/// as members, so the nemesis removed two real ones and left one voter.
/// The nemesis now takes the membership from the leader's list before
/// each change.
#[test]
fn regression_unknown_adds_do_not_shrink_the_cluster() {
    replay(5000450);
}
