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

/// Runs the bootstrap simulation on seeds 1..=20 with `bug` until one
/// reports a violation of a kind in `wanted`, then requires the same seeds
/// up to that one to pass without the plant (the control).
fn bootstrap_detects(bug: Bug, wanted: &[&str]) -> u64 {
    use concord_sim::bootstrap;
    let run = |seed: u64, bug: Option<Bug>| {
        std::thread::spawn(move || {
            planted::set(bug);
            let rt = Runtime::with_seed_and_config(seed, tokio::madsim::Config::default());
            rt.block_on(async { bootstrap::run(bootstrap::Options::from_seed()).await })
        })
        .join()
        .expect("the simulation ran")
    };
    let caught = (1..=SEEDS).find(|&seed| {
        let report = run(seed, Some(bug));
        eprintln!("{bug:?}: {report}");
        report.kinds().iter().any(|k| wanted.contains(&k.as_str()))
    });
    let Some(seed) = caught else {
        panic!("{bug:?}: {SEEDS} seeds found no {wanted:?}");
    };
    for control in 1..=seed {
        let report = run(control, None);
        assert!(
            report.violations.is_empty(),
            "control seed {control} without the plant: {report}"
        );
    }
    eprintln!("{bug:?} caught at seed {seed}; seeds 1..={seed} pass without it");
    seed
}

/// A discovery that skips the size check (a member forms a cluster with
/// the members registered so far) shows as two clusters or a cluster of
/// the wrong size.
#[test]
fn a_discovery_that_skips_the_size_check_is_caught() {
    bootstrap_detects(
        Bug::SkipSizeCheck,
        &["TwoClusters", "WrongSize", "WrongMembers"],
    );
}

/// etcd's own SRV discovery skips a target that does not resolve; under a
/// failing DNS a member then bootstraps without a peer: two clusters.
/// concord fails the discovery instead (the member exits and is started
/// again); with etcd's behaviour planted the simulation finds the split.
#[test]
fn srv_discovery_that_skips_unresolved_targets_is_caught() {
    bootstrap_detects(
        Bug::SrvSkipsUnresolved,
        &["TwoClusters", "WrongSize", "WrongMembers"],
    );
}
