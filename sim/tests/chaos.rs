//! The seeded chaos simulation (see `concord_sim::chaos`): swarm faults, a
//! recorded concurrent workload, and the checkers. `MADSIM_TEST_NUM=N`
//! runs N seeds from `MADSIM_TEST_SEED`; a failure prints its seed and the
//! command that replays it. Seeds that found bugs are pinned below.
#![cfg(madsim)]

use concord_sim::chaos::{self, Options};
use tokio::madsim::runtime::Runtime;

#[tokio::test]
async fn chaos() {
    let report = chaos::run(Options::from_seed()).await;
    eprintln!("{report}");
    assert!(report.violations.is_empty(), "{report}");
}

/// Runs one pinned seed of the chaos simulation.
fn replay(seed: u64) {
    let rt = Runtime::with_seed_and_config(seed, tokio::madsim::Config::default());
    let report = rt.block_on(async { chaos::run(Options::from_seed()).await });
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
