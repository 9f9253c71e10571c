//! The hub against the watch checker: seeded random writes, compactions,
//! watchers with random ranges, start revisions and filters, sinks so small
//! that watchers are parked and resumed from the store all the time, and
//! consumers that drain at random. Every watcher's stream must pass the
//! checker.
//!
//! Replay one seed: `CONCORD_WATCH_SEED=S cargo test --lib watch::tests`;
//! more seeds: `CONCORD_WATCH_SEEDS=N`.

use std::sync::Arc;

use crate::test_rng::Rng;

use tokio::sync::mpsc;

use super::checker::{check, History, SeenEvent, SeenResponse, WatchSpec};
use super::{Outgoing, WatchHub};
use crate::mvcc::Store;
use crate::proto::etcdserverpb::{
    watch_create_request::FilterType, DeleteRangeRequest, PutRequest, WatchCreateRequest,
};
use crate::proto::mvccpb::event::EventType;
use crate::storage::mem::MemBackend;

const KEYS: [&[u8]; 5] = [b"a", b"ab", b"b", b"c", b"d"];

struct Client {
    stream: u64,
    rx: mpsc::Receiver<Outgoing>,
    /// watch id -> (spec, responses, done)
    watches: Vec<(i64, WatchSpec, Vec<SeenResponse>)>,
}

fn seen_of(out: Outgoing) -> Option<(i64, SeenResponse)> {
    match out {
        Outgoing::Events {
            watch_id,
            revision,
            events,
            ..
        } => {
            let events = events
                .into_iter()
                .map(|e| {
                    let kv = e.kv.unwrap_or_default();
                    SeenEvent {
                        rev: kv.mod_revision,
                        key: kv.key,
                        value: (e.r#type == EventType::Put as i32).then_some(kv.value),
                        prev_value: None,
                    }
                })
                .collect();
            Some((
                watch_id,
                SeenResponse {
                    header_rev: revision,
                    events,
                    ..SeenResponse::default()
                },
            ))
        }
        Outgoing::Compacted {
            watch_id,
            compact_revision,
        } => Some((
            watch_id,
            SeenResponse {
                compact_revision,
                canceled: true,
                ..SeenResponse::default()
            },
        )),
        Outgoing::Progress { watch_id, revision } if watch_id >= 0 => Some((
            watch_id,
            SeenResponse {
                header_rev: revision,
                ..SeenResponse::default()
            },
        )),
        _ => None,
    }
}

fn drain(c: &mut Client, max: usize) {
    for _ in 0..max {
        let Ok(out) = c.rx.try_recv() else { return };
        if let Some((id, r)) = seen_of(out) {
            if let Some(w) = c.watches.iter_mut().find(|w| w.0 == id) {
                w.2.push(r);
            }
        }
    }
}

fn run_seed(seed: u64) {
    run_seed_with(seed, false)
}

fn run_seed_with(seed: u64, planted_bug: bool) {
    let mut rng = Rng(seed);
    let store = Arc::new(Store::open(Arc::new(MemBackend::new())).expect("open"));
    let hub = WatchHub::new(store.clone());
    if planted_bug {
        hub.plant_skip_bug();
    }
    let mut history = History::new();
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..3 {
        let cap = 1 + rng.below(3) as usize;
        let (tx, rx) = mpsc::channel(cap);
        let stream = hub.open_stream(tx);
        clients.push(Client {
            stream,
            rx,
            watches: Vec::new(),
        });
    }
    let no_leases = |_: i64| false;
    for _step in 0..300 {
        match rng.below(100) {
            0..=49 => {
                let mut w = store.writer(&no_leases);
                let n = 1 + rng.below(3);
                for _ in 0..n {
                    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                    if rng.chance(75) {
                        let value = format!("v{}", rng.below(1000)).into_bytes();
                        w.put(&PutRequest {
                            key: key.to_vec(),
                            value: value.clone(),
                            ..PutRequest::default()
                        })
                        .expect("put");
                        history.put(w.revision(), key, &value);
                    } else {
                        let before = w.revision();
                        let r = w
                            .delete_range(&DeleteRangeRequest {
                                key: key.to_vec(),
                                ..DeleteRangeRequest::default()
                            })
                            .expect("delete");
                        if r.deleted > 0 {
                            assert!(w.revision() > before);
                            history.delete(w.revision(), key);
                        }
                    }
                }
                let committed = w.commit().expect("commit");
                hub.notify(&committed.changes);
                hub.advance_to(committed.revision);
            }
            50..=61 => {
                let c = rng.below(clients.len() as u64) as usize;
                let current = hub.notified_revision();
                let start = match rng.below(3) {
                    0 => 0,
                    1 => 1 + rng.below(current as u64 + 3) as i64,
                    _ => current.saturating_sub(rng.below(20) as i64).max(1),
                };
                let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_vec();
                let range_end = match rng.below(3) {
                    0 => Vec::new(),
                    1 => vec![0],
                    _ => b"c".to_vec(),
                };
                let mut filters = Vec::new();
                if rng.chance(15) {
                    filters.push(FilterType::Noput as i32);
                }
                if rng.chance(15) {
                    filters.push(FilterType::Nodelete as i32);
                }
                let req = WatchCreateRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    start_revision: start,
                    filters: filters.clone(),
                    progress_notify: rng.chance(30),
                    ..WatchCreateRequest::default()
                };
                let stream = clients[c].stream;
                let Ok((id, rev)) = hub.create(stream, &req) else {
                    continue; // empty range
                };
                let spec = WatchSpec {
                    key,
                    range_end,
                    start_rev: if start == 0 { rev + 1 } else { start },
                    no_put: filters.contains(&(FilterType::Noput as i32)),
                    no_delete: filters.contains(&(FilterType::Nodelete as i32)),
                    prev_kv: false,
                };
                // The Created response takes the place the real stream sends
                // it in; drain until it fits.
                loop {
                    drain(&mut clients[c], usize::MAX);
                    if clients[c].rx.capacity() > 0 {
                        break;
                    }
                }
                clients[c].watches.push((id, spec, Vec::new()));
                hub.announce(stream, id);
            }
            62..=63 => {
                let c = rng.below(clients.len() as u64) as usize;
                if !clients[c].watches.is_empty() {
                    let i = rng.below(clients[c].watches.len() as u64) as usize;
                    let (id, spec, seen) = clients[c].watches.remove(i);
                    drain(&mut clients[c], usize::MAX);
                    hub.cancel(clients[c].stream, id);
                    let v = check(&history, &spec, &seen);
                    assert!(v.is_empty(), "seed {seed}: watch {id} {spec:?}: {v:?}");
                }
            }
            64..=66 => {
                let current = store.current_revision();
                let at = current.saturating_sub(rng.below(15) as i64).max(1);
                if at > store.compact_revision() {
                    let mut w = store.writer(&no_leases);
                    w.compact(at).expect("compact");
                    let committed = w.commit().expect("commit");
                    hub.advance_to(committed.revision);
                    while store.compact_disk_step(3).expect("step")
                        == crate::mvcc::store::DiskCompactStatus::InProgress
                    {}
                }
            }
            67..=69 => hub.progress_round(),
            70..=84 => {
                let c = rng.below(clients.len() as u64) as usize;
                let n = rng.below(4) as usize;
                drain(&mut clients[c], n);
            }
            _ => {
                hub.sync_once().expect("sync");
            }
        }
    }
    // Quiesce: drain everything and catch every watcher up.
    for _ in 0..10_000 {
        for c in clients.iter_mut() {
            drain(c, usize::MAX);
        }
        let more = hub.sync_once().expect("sync");
        if !more {
            break;
        }
    }
    for c in clients.iter_mut() {
        drain(c, usize::MAX);
    }
    let final_rev = hub.notified_revision();
    for c in clients {
        for (id, spec, mut seen) in c.watches {
            let compacted = seen.iter().any(|r| r.compact_revision != 0);
            if !compacted {
                // Every surviving watcher must have caught up.
                seen.push(SeenResponse {
                    header_rev: final_rev,
                    ..SeenResponse::default()
                });
            }
            let v = check(&history, &spec, &seen);
            assert!(
                v.is_empty(),
                "seed {seed}: watch {id} {spec:?}: {v:?}\nreplay: CONCORD_WATCH_SEED={seed} cargo test --lib watch::tests"
            );
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("CONCORD_WATCH_SEED") {
        return vec![s.parse().expect("CONCORD_WATCH_SEED is a number")];
    }
    let n = std::env::var("CONCORD_WATCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    (0..n).collect()
}

#[test]
fn hub_streams_pass_the_watch_checker() {
    for seed in seeds() {
        run_seed(seed);
    }
}

#[test]
fn the_checker_catches_a_hub_that_skips_events() {
    // The same seeded run with a planted bug (every 7th revision's live
    // notification silently dropped) must fail the checker within 20 seeds.
    let caught =
        (0..20u64).find(|seed| std::panic::catch_unwind(|| run_seed_with(*seed, true)).is_err());
    assert!(
        caught.is_some(),
        "20 seeds with a hub that skips events all passed"
    );
}

#[test]
fn a_duplicate_watch_id_and_an_empty_range_are_refused() {
    let store = Arc::new(Store::open(Arc::new(MemBackend::new())).expect("open"));
    let hub = WatchHub::new(store);
    let (tx, _rx) = mpsc::channel(4);
    let s = hub.open_stream(tx);
    let req = WatchCreateRequest {
        key: b"a".to_vec(),
        watch_id: 5,
        ..WatchCreateRequest::default()
    };
    assert_eq!(hub.create(s, &req), Ok((5, 1)));
    assert_eq!(
        hub.create(s, &req),
        Err((super::CreateError::DuplicateId, 1))
    );
    let empty = WatchCreateRequest {
        key: b"b".to_vec(),
        range_end: b"a".to_vec(),
        ..WatchCreateRequest::default()
    };
    assert_eq!(
        hub.create(s, &empty),
        Err((super::CreateError::EmptyRange, 1))
    );
    // Auto ids start at 0 and skip ids in use.
    let auto = WatchCreateRequest {
        key: b"a".to_vec(),
        ..WatchCreateRequest::default()
    };
    assert_eq!(hub.create(s, &auto), Ok((0, 1)));
    assert_eq!(hub.create(s, &auto), Ok((1, 1)));
}

#[test]
fn a_parked_watcher_resumes_without_loss_and_a_compacted_one_is_cancelled() {
    let store = Arc::new(Store::open(Arc::new(MemBackend::new())).expect("open"));
    let hub = WatchHub::new(store.clone());
    let (tx, mut rx) = mpsc::channel(1);
    let s = hub.open_stream(tx);
    let (id, _) = hub
        .create(
            s,
            &WatchCreateRequest {
                key: b"k".to_vec(),
                ..WatchCreateRequest::default()
            },
        )
        .expect("create");
    hub.announce(s, id);
    hub.sync_once().expect("sync"); // now synced
    let no_leases = |_: i64| false;
    let put = |v: &str| {
        let mut w = store.writer(&no_leases);
        w.put(&PutRequest {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
            ..PutRequest::default()
        })
        .expect("put");
        let c = w.commit().expect("commit");
        hub.notify(&c.changes);
        c.revision
    };
    let r1 = put("1");
    let r2 = put("2"); // sink full: parked
    let r3 = put("3");
    let revs = |o: Outgoing| match o {
        Outgoing::Events { events, .. } => events
            .iter()
            .map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision))
            .collect::<Vec<_>>(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(revs(rx.try_recv().expect("first")), vec![r1]);
    assert!(rx.try_recv().is_err());
    hub.sync_once().expect("sync");
    assert_eq!(revs(rx.try_recv().expect("caught up")), vec![r2, r3]);

    // Park it again, then compact past where it stopped.
    let r4 = put("4");
    put("5");
    let r6 = put("6");
    let mut w = store.writer(&no_leases);
    w.compact(r6).expect("compact");
    w.commit().expect("commit");
    assert_eq!(revs(rx.try_recv().expect("r4")), vec![r4]);
    hub.sync_once().expect("sync");
    match rx.try_recv().expect("cancel") {
        Outgoing::Compacted {
            watch_id,
            compact_revision,
        } => assert_eq!((watch_id, compact_revision), (id, r6)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(hub.watcher_count(), 0);
}
