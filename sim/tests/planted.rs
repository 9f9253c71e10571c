//! The checkers can fail: each test plants one bug in the members (only
//! simulation builds have them, see `concord::planted`) and requires the
//! chaos simulation to report the violation it causes within 20 seeds.
#![cfg(madsim)]

use std::collections::BTreeSet;

use concord::planted::{self, Bug};
use concord_sim::chaos::{self, Options};
use tokio::madsim::runtime::Runtime;

const SEEDS: u64 = 20;

/// Runs seeds 1..=20 with `bug` until one reports a violation of a kind in
/// `wanted`; returns that seed's kinds.
fn detected(bug: Bug, wanted: &[&str]) -> (u64, BTreeSet<String>) {
    for seed in 1..=SEEDS {
        // Each seed on a fresh thread, as madsim's test runner does: std's
        // hash keys are per thread and would make a seed's run depend on
        // the runs before it.
        let run = std::thread::spawn(move || {
            planted::set(Some(bug));
            let rt = Runtime::with_seed_and_config(seed, tokio::madsim::Config::default());
            rt.block_on(async { chaos::run(Options::from_seed()).await })
        })
        .join();
        let kinds = match run {
            Ok(report) => {
                eprintln!("{bug:?}: {report}");
                report.kinds()
            }
            // A member's own invariant assertion is a detection too.
            Err(_) => BTreeSet::from(["Panic".to_string()]),
        };
        if kinds.iter().any(|k| wanted.contains(&k.as_str())) {
            return (seed, kinds);
        }
    }
    panic!("{bug:?}: {SEEDS} seeds found no {wanted:?}");
}

#[test]
fn reads_without_read_index_are_caught_as_stale() {
    let (seed, kinds) = detected(Bug::StaleReads, &["StaleRead"]);
    eprintln!("StaleReads caught at seed {seed}: {kinds:?}");
}

/// A minority leader that commits alone acknowledges writes the majority
/// never sees and serves reads of them: depending on the schedule the
/// history shows lost acknowledged writes, stale or impossible reads, or
/// members that diverge for good.
#[test]
fn commits_without_a_quorum_are_caught() {
    let (seed, kinds) = detected(
        Bug::CommitWithoutQuorum,
        &[
            "AckedWriteLost",
            "StaleRead",
            "ReadMismatch",
            "DivergentState",
            "HashKvDiffers",
            "MalformedLog",
            "Convergence",
        ],
    );
    eprintln!("CommitWithoutQuorum caught at seed {seed}: {kinds:?}");
}

#[test]
fn a_watch_that_skips_events_is_caught() {
    let (seed, kinds) = detected(Bug::SkipWatchEvents, &["watch:Reliable", "MalformedLog"]);
    eprintln!("SkipWatchEvents caught at seed {seed}: {kinds:?}");
}
