//! The checker against seeded honest histories (all must pass) and the
//! same histories with one planted bug each (each must be caught).

mod generator;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use concord_check::history::{Call, Kv, Outcome, Reply};
use concord_check::log::{Entry, EventKind};
use concord_check::model::{put_event, View};
use concord_check::{check, Stats, Violation, ViolationKind};
use generator::{corrupt, generate, write_revision, Generated, Rng};

fn kinds(violations: &[Violation]) -> BTreeSet<ViolationKind> {
    violations.iter().map(Violation::kind).collect()
}

fn show(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn add(total: &mut Stats, s: &Stats) {
    total.writes_acked += s.writes_acked;
    total.unknown_writes_applied += s.unknown_writes_applied;
    total.unknown_writes_not_applied += s.unknown_writes_not_applied;
    total.reads_linearizable += s.reads_linearizable;
    total.reads_serializable += s.reads_serializable;
    total.txns += s.txns;
    total.log_revisions += s.log_revisions;
    total.lease_expiries += s.lease_expiries;
}

#[test]
fn honest_histories_pass() {
    let mut total = Stats::default();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 0..500 {
        let ops = 50 + (seed as usize * 37) % 350;
        let g = generate(seed, ops);
        for op in &g.history {
            let name = match op.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Failed(_) => "failed",
                Outcome::Unknown => "unknown",
            };
            *outcomes.entry(name).or_default() += 1;
        }
        match check(&g.history, &[], 1, &g.log) {
            Ok(stats) => add(&mut total, &stats),
            Err(v) => panic!("seed {seed} ({ops} ops):\n{}", show(&v)),
        }
    }
    println!("500 honest histories: {total:?}, outcomes {outcomes:?}");
    // The generator exercised every path the checker has.
    assert!(total.unknown_writes_applied > 100, "{total:?}");
    assert!(total.unknown_writes_not_applied > 100, "{total:?}");
    assert!(total.reads_serializable > 100, "{total:?}");
    assert!(total.lease_expiries > 10, "{total:?}");
    assert!(total.txns > 1000, "{total:?}");
}

#[test]
fn generation_and_checking_are_deterministic() {
    let a = generate(42, 300);
    let b = generate(42, 300);
    assert_eq!(a.history, b.history);
    assert_eq!(a.log, b.log);
    assert_eq!(
        check(&a.history, &[], 1, &a.log),
        check(&b.history, &[], 1, &b.log)
    );
}

#[test]
fn large_histories_check_fast() {
    // 20,000 ops; then a history whose log has about 20,000 revisions.
    for ops in [20_000, 60_000] {
        let generating = Instant::now();
        let g = generate(7, ops);
        let generated = generating.elapsed();
        let checking = Instant::now();
        let stats = match check(&g.history, &[], 1, &g.log) {
            Ok(stats) => stats,
            Err(v) => panic!("{}", show(&v)),
        };
        println!(
            "checked {} ops and {} revisions in {:?} (generated in {generated:?}): {stats:?}",
            g.history.len(),
            g.log.len(),
            checking.elapsed()
        );
    }
}

/// Runs `plant` on 20 seeds; `expected` must be reported on at least one.
fn planted(name: &str, expected: ViolationKind, plant: fn(&mut Generated, &mut Rng) -> bool) {
    let mut detected = Vec::new();
    let mut planted = 0;
    let mut other: BTreeSet<ViolationKind> = BTreeSet::new();
    for seed in 0..20u64 {
        let mut g = generate(1_000 + seed, 300);
        let mut rng = Rng::new(seed);
        if !plant(&mut g, &mut rng) {
            continue;
        }
        planted += 1;
        if let Err(v) = check(&g.history, &[], 1, &g.log) {
            let found = kinds(&v);
            if found.contains(&expected) {
                detected.push(seed);
            }
            // SHOW_PLANTED=1 prints what each planted bug produced.
            if std::env::var("SHOW_PLANTED").is_ok() {
                println!("seed {seed}:\n{}", show(&v));
            }
            other.extend(found.into_iter().filter(|k| *k != expected));
        }
    }
    println!(
        "{name}: planted in {planted}/20 seeds, {expected} found in {} (first at seed #{:?}), also seen: {other:?}",
        detected.len(),
        detected.first()
    );
    assert!(!detected.is_empty(), "{name}: {expected} never found");
}

#[test]
fn planted_lost_write() {
    // The log loses its tail from an acknowledged write on (a crash that
    // lost committed entries).
    planted("lost write", ViolationKind::AckedWriteLost, |g, rng| {
        let half = 1 + g.log.len() as i64 / 2;
        let acked: Vec<i64> = g
            .history
            .iter()
            .filter_map(write_revision)
            .filter(|&r| r > half)
            .collect();
        if acked.is_empty() {
            return false;
        }
        let revision = *rng.pick(&acked);
        g.log.truncate((revision - 2) as usize);
        true
    });
}

#[test]
fn planted_stale_read() {
    // A linearizable read answered from the state just before a write that
    // had completed before the read was sent.
    planted("stale read", ViolationKind::StaleRead, |g, rng| {
        let index = g.index();
        let mut candidates = Vec::new();
        for (i, op) in g.history.iter().enumerate() {
            let fresh_read = matches!(
                op.call,
                Call::Range {
                    revision: 0,
                    serializable: false,
                    ..
                }
            ) && matches!(op.outcome, Outcome::Ok(_));
            if !fresh_read {
                continue;
            }
            let newest = g
                .history
                .iter()
                .filter(|w| w.complete < op.invoke)
                .filter_map(write_revision)
                .max();
            if let Some(newest) = newest.filter(|&r| r >= 2) {
                candidates.push((i, newest - 1));
            }
        }
        if candidates.is_empty() {
            return false;
        }
        let (i, stale) = *rng.pick(&candidates);
        let Call::Range { key, range_end, .. } = g.history[i].call.clone() else {
            unreachable!()
        };
        let kvs = index.at(stale).expect("in the log").range(&key, &range_end);
        g.history[i].outcome = Outcome::Ok(Reply::Range {
            revision: stale,
            kvs,
        });
        true
    });
}

#[test]
fn planted_swapped_writes() {
    // Two puts on different keys, the first completed before the second
    // was sent, applied in the opposite order (and acknowledged so).
    planted("swapped writes", ViolationKind::RealTimeOrder, |g, rng| {
        let puts: BTreeMap<i64, usize> = g
            .history
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.call, Call::Put { .. }))
            .filter_map(|(i, op)| write_revision(op).map(|r| (r, i)))
            // A put that creates its key would leave later versions of the
            // key with a stale create_revision: keep to updates.
            .filter(|&(r, _)| g.log[(r - 2) as usize].events[0].kv.create_revision != r)
            .collect();
        let key_of = |i: usize| match &g.history[i].call {
            Call::Put { key, .. } => key.clone(),
            _ => unreachable!(),
        };
        let mut pairs = Vec::new();
        for (&r1, &a) in &puts {
            for (&r2, &b) in puts.range(r1 + 1..=r1 + 5) {
                let (ka, kb) = (key_of(a), key_of(b));
                let untouched = g.log[(r1 - 1) as usize..(r2 - 2) as usize]
                    .iter()
                    .all(|e| e.events.iter().all(|ev| ev.kv.key != ka && ev.kv.key != kb));
                if g.history[a].complete < g.history[b].invoke && ka != kb && untouched {
                    pairs.push((r1, a, r2, b));
                }
            }
        }
        if pairs.is_empty() {
            return false;
        }
        let (r1, a, r2, b) = *rng.pick(&pairs);
        let first = g.log[(r1 - 2) as usize].clone();
        let second = g.log[(r2 - 2) as usize].clone();
        g.log[(r1 - 2) as usize] = move_entry(&second, r1);
        g.log[(r2 - 2) as usize] = move_entry(&first, r2);
        g.history[a].outcome = Outcome::Ok(Reply::Put { revision: r2 });
        g.history[b].outcome = Outcome::Ok(Reply::Put { revision: r1 });
        true
    });
}

/// `entry` renumbered to `revision` (a key it creates is created there).
fn move_entry(entry: &Entry, revision: i64) -> Entry {
    let mut moved = entry.clone();
    for event in &mut moved.events {
        if event.kv.create_revision == entry.revision {
            event.kv.create_revision = revision;
        }
        event.kv.mod_revision = revision;
    }
    moved.revision = revision;
    moved
}

#[test]
fn planted_phantom_entry() {
    // A put nobody asked for: of a new key, or a new version of one.
    planted("phantom entry", ViolationKind::PhantomWrite, |g, rng| {
        let revision = 2 + g.log.len() as i64;
        let index = g.index();
        let state = index.at(revision - 1).expect("the last revision").all();
        let kv = match state.is_empty() || rng.chance(50) {
            true => Kv {
                key: b"phantom".to_vec(),
                value: b"boo".to_vec(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            },
            false => {
                let old = rng.pick(&state);
                Kv {
                    value: b"boo".to_vec(),
                    mod_revision: revision,
                    version: old.version + 1,
                    lease: 0,
                    ..old.clone()
                }
            }
        };
        g.log.push(Entry {
            revision,
            events: vec![put_event(kv)],
        });
        true
    });
}

#[test]
fn planted_failed_write_applied() {
    // The server said no, but applied it.
    planted(
        "failed write applied",
        ViolationKind::FailedWriteApplied,
        |g, rng| {
            let puts: Vec<usize> = g
                .history
                .iter()
                .enumerate()
                .filter(|(_, op)| {
                    matches!(op.call, Call::Put { .. }) && write_revision(op).is_some()
                })
                .map(|(i, _)| i)
                .collect();
            if puts.is_empty() {
                return false;
            }
            let i = *rng.pick(&puts);
            g.history[i].outcome = Outcome::Failed("etcdserver: request timed out".into());
            true
        },
    );
}

#[test]
fn planted_wrong_read_value() {
    // One value of one read changed.
    planted("wrong read value", ViolationKind::ReadMismatch, |g, rng| {
        let reads: Vec<usize> = g
            .history
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(&op.outcome, Outcome::Ok(Reply::Range { kvs, .. }) if !kvs.is_empty()))
            .map(|(i, _)| i)
            .collect();
        if reads.is_empty() {
            return false;
        }
        let i = *rng.pick(&reads);
        if let Outcome::Ok(Reply::Range { kvs, .. }) = &mut g.history[i].outcome {
            let j = rng.below(kvs.len() as u64) as usize;
            kvs[j] = corrupt(&kvs[j]);
        }
        true
    });
}

#[test]
fn generated_logs_are_what_a_watch_delivers() {
    // Sanity of the generator itself: deletes carry key and mod_revision only.
    let g = generate(3, 500);
    for entry in &g.log {
        for event in &entry.events {
            assert_eq!(event.kv.mod_revision, entry.revision);
            if event.kind == EventKind::Delete {
                assert_eq!((event.kv.version, event.kv.lease), (0, 0));
            }
        }
    }
}
