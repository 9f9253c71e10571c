//! Model test: the store against a dumb oracle,
//! `BTreeMap<key, Vec<(revision, Option<value>)>>`, over seeded random
//! operation sequences: puts, deletes, txns, compactions (with physical
//! steps in between), reads at random revisions, restarts.
//!
//! Replay one seed: `CONCORD_MVCC_SEED=S cargo test --lib mvcc::model_tests`.
//! More seeds: `CONCORD_MVCC_SEEDS=N`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::test_rng::Rng;

use super::store::{CheckpointStep, DiskCompactStatus};
use super::{MvccError, Store};
use crate::proto::etcdserverpb::{
    compare, range_request, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;
use crate::storage::mem::MemBackend;
use crate::storage::{Backend, Partition};

const KEYS: [&[u8]; 7] = [b"a", b"a\0", b"ab", b"b", b"b\0\0", b"c", b"\0"];

/// The oracle: every version of every key, with etcd's metadata rules.
#[derive(Default, Clone)]
struct Model {
    hist: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    rev: i64,
    compact: i64,
}

impl Model {
    fn get(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        let h = self.hist.get(key)?;
        let (_, v) = h.iter().rev().find(|(r, _)| *r <= at)?;
        v.clone()
    }

    fn range(&self, lo: &[u8], hi: Option<&[u8]>, at: i64) -> Vec<KeyValue> {
        self.hist
            .keys()
            .filter(|k| match hi {
                None => k.as_slice() == lo,
                Some([0]) => k.as_slice() >= lo,
                Some(h) => k.as_slice() >= lo && k.as_slice() < h,
            })
            .filter_map(|k| self.get(k, at))
            .collect()
    }

    fn put(&mut self, key: &[u8], value: &[u8], rev: i64) -> Option<KeyValue> {
        let prev = self.get(key, i64::MAX);
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: value.to_vec(),
            lease: 0,
        };
        self.hist
            .entry(key.to_vec())
            .or_default()
            .push((rev, Some(kv)));
        prev
    }

    fn delete(&mut self, key: &[u8], rev: i64) {
        self.hist.entry(key.to_vec()).or_default().push((rev, None));
    }
}

fn key(rng: &mut Rng) -> Vec<u8> {
    KEYS[rng.below(KEYS.len() as u64) as usize].to_vec()
}

/// A random (key, range_end): single key, range or from-key.
fn span(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let k = key(rng);
    match rng.below(3) {
        0 => (k, Vec::new()),
        1 => (k, vec![0]),
        _ => (k, key(rng)),
    }
}

fn model_range(m: &Model, k: &[u8], end: &[u8], at: i64) -> Vec<KeyValue> {
    m.range(k, if end.is_empty() { None } else { Some(end) }, at)
}

struct Harness {
    backend: Arc<dyn Backend>,
    store: Store,
    model: Model,
    rng: Rng,
    seed: u64,
    step: usize,
}

fn no_leases(_: i64) -> bool {
    false
}

impl Harness {
    fn new(seed: u64, backend: Arc<dyn Backend>) -> Self {
        let store = Store::open(backend.clone()).expect("open");
        Self {
            backend,
            store,
            model: Model {
                rev: 1,
                ..Model::default()
            },
            rng: Rng(seed),
            seed,
            step: 0,
        }
    }

    fn ctx(&self) -> String {
        format!(
            "seed {} step {} (replay: CONCORD_MVCC_SEED={} cargo test --lib mvcc::model_tests)",
            self.seed, self.step, self.seed
        )
    }

    /// One group of 1..4 mutating requests, checked against the model.
    fn write_group(&mut self) {
        let n = 1 + self.rng.below(4);
        let before = self.store.current_revision();
        let lease_fn = no_leases;
        let ctx = self.ctx();
        let mut w = self.store.writer(&lease_fn);
        let mut model = self.model.clone();
        for _ in 0..n {
            match self.rng.below(10) {
                0..=4 => {
                    let k = key(&mut self.rng);
                    let v = format!("v{}", self.rng.below(1000)).into_bytes();
                    // Without prev_kv the put reads no record: creation
                    // and version come from the index alone.
                    let prev_kv = self.rng.below(2) == 0;
                    let r = w
                        .put(&PutRequest {
                            key: k.clone(),
                            value: v.clone(),
                            prev_kv,
                            ..Default::default()
                        })
                        .expect("put");
                    model.rev += 1;
                    let prev = model.put(&k, &v, model.rev);
                    let want = if prev_kv { prev } else { None };
                    assert_eq!(r.prev_kv, want, "{}: put prev_kv", self.ctx());
                    assert_eq!(
                        r.header.map(|h| h.revision),
                        Some(model.rev),
                        "{}",
                        self.ctx()
                    );
                }
                5 | 6 => {
                    let (k, end) = span(&mut self.rng);
                    let r = w
                        .delete_range(&DeleteRangeRequest {
                            key: k.clone(),
                            range_end: end.clone(),
                            prev_kv: true,
                        })
                        .expect("delete");
                    let prev = model_range(&model, &k, &end, model.rev);
                    assert_eq!(r.prev_kvs, prev, "{}: delete prev_kvs", self.ctx());
                    assert_eq!(r.deleted, prev.len() as i64, "{}", self.ctx());
                    if !prev.is_empty() {
                        model.rev += 1;
                        for kv in &prev {
                            model.delete(&kv.key, model.rev);
                        }
                    }
                }
                7 | 8 => txn(&mut self.rng, &ctx, &mut w, &mut model),
                _ => {
                    let target = self.rng.below(model.rev as u64 + 2) as i64;
                    let r = w.compact(target);
                    if target <= model.compact {
                        assert!(
                            matches!(r, Err(MvccError::Compacted)),
                            "{}: {r:?}",
                            self.ctx()
                        );
                    } else if target > model.rev {
                        assert!(
                            matches!(r, Err(MvccError::FutureRev)),
                            "{}: {r:?}",
                            self.ctx()
                        );
                    } else {
                        assert_eq!(r.expect("compact"), model.rev, "{}", self.ctx());
                        model.compact = target;
                    }
                }
            }
            assert_eq!(w.revision(), model.rev, "{ctx}: writer revision");
        }
        // Readers do not see the group before it commits.
        assert_eq!(self.store.current_revision(), before, "{}", self.ctx());
        let c = w.commit().expect("commit");
        assert_eq!(c.revision, model.rev, "{}", self.ctx());
        self.model = model;
    }

    /// A random read, checked against the model (or its expected error).
    fn read(&mut self) {
        let (k, end) = span(&mut self.rng);
        let at = self.rng.below(self.model.rev as u64 + 2) as i64;
        let limit = self.rng.below(4) as i64;
        let descend = self.rng.chance(30);
        let req = RangeRequest {
            key: k.clone(),
            range_end: end.clone(),
            revision: at,
            limit,
            sort_order: if descend {
                range_request::SortOrder::Descend as i32
            } else {
                0
            },
            ..Default::default()
        };
        let r = self.store.range(&req);
        let eff = if at == 0 { self.model.rev } else { at };
        if eff > self.model.rev {
            assert!(
                matches!(r, Err(MvccError::FutureRev)),
                "{}: {r:?}",
                self.ctx()
            );
            return;
        }
        if eff < self.model.compact {
            assert!(
                matches!(r, Err(MvccError::Compacted)),
                "{}: {r:?}",
                self.ctx()
            );
            return;
        }
        let (got, cur) = r.unwrap_or_else(|e| panic!("{}: range failed: {e}", self.ctx()));
        assert_eq!(cur, self.model.rev, "{}", self.ctx());
        let mut want = model_range(&self.model, &k, &end, eff);
        let count = want.len() as i64;
        if descend {
            want.reverse();
        }
        let more = limit > 0 && want.len() > limit as usize;
        if limit > 0 {
            want.truncate(limit as usize);
        }
        assert_eq!(
            got.kvs,
            want,
            "{}: range {k:?}..{end:?} at {eff}",
            self.ctx()
        );
        assert_eq!((got.count, got.more), (count, more), "{}", self.ctx());
    }

    /// Reopens the store: after a clean stop (everything checkpointed), as
    /// after a crash that kept every written batch (the records after the
    /// last checkpoint are replayed), or after a crash inside a checkpoint
    /// (after its history, or its live keys, were ingested: replayed over
    /// newer states). Checkpoints then come after a few changed keys, or
    /// (as in production) rarely.
    fn restart(&mut self) {
        match self.rng.below(4) {
            0 => self.store.checkpoint().expect("checkpoint"),
            1 => self
                .store
                .checkpoint_interrupted(CheckpointStep::History)
                .expect("checkpoint"),
            2 => self
                .store
                .checkpoint_interrupted(CheckpointStep::Live)
                .expect("checkpoint"),
            _ => {}
        }
        self.store = Store::open(self.backend.clone()).expect("reopen");
        if self.rng.chance(50) {
            self.store
                .set_checkpoint_keys(1 + self.rng.below(8) as usize);
        }
        assert_eq!(
            self.store.current_revision(),
            self.model.rev,
            "{}",
            self.ctx()
        );
    }

    fn compact_step(&mut self) {
        let before = self.store.hash_kv(0).expect("hash");
        let _ = self.store.compact_disk_step(1 + self.rng.below(3) as usize);
        let after = self.store.hash_kv(0).expect("hash");
        assert_eq!(
            before,
            after,
            "{}: hash changed by physical compaction",
            self.ctx()
        );
    }

    /// After physical compaction at the model's compaction point `c`, the
    /// records and history entries at or below `c` are exactly what etcd
    /// keeps: each key's newest, unless it is a tombstone below `c`.
    fn check_compacted_disk(&self) {
        let c = self.model.compact;
        let mut want: Vec<(Vec<u8>, i64, bool)> = Vec::new();
        for (k, h) in &self.model.hist {
            if let Some((r, v)) = h.iter().rev().find(|(r, _)| *r <= c) {
                if v.is_some() || *r == c {
                    want.push((k.clone(), *r, v.is_none()));
                }
            }
        }
        want.sort();
        let mut records: Vec<(Vec<u8>, i64, bool)> = self
            .store
            .changes_between(1, c)
            .expect("records")
            .into_iter()
            .map(|ch| (ch.kv.key, ch.rev.main, ch.tombstone))
            .collect();
        records.sort();
        assert_eq!(
            records,
            want,
            "{}: records left at or below {c}",
            self.ctx()
        );
        let mut history = Vec::new();
        let all = || (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        for item in self.backend.scan(Partition::KeyHistory, all(), false) {
            let (k, v) = item.expect("scan");
            let e = crate::mvcc::disk::decode_history(&k, &v).expect("history entry");
            if e.rev.main <= c {
                history.push((e.key, e.rev.main, e.tombstone));
            }
        }
        history.sort();
        assert_eq!(
            history,
            want,
            "{}: history left at or below {c}",
            self.ctx()
        );
        // So the hash counts every record left but the tombstones at `c`.
        let mut crc = crc32c::crc32c(b"key");
        for item in self.backend.scan(Partition::Rev, all(), false) {
            let (k, v) = item.expect("scan");
            let (r, tombstone) = super::Revision::from_key(&k).expect("record key");
            if !(tombstone && r.main <= c) {
                crc = crc32c::crc32c_append(crc, &k);
                crc = crc32c::crc32c_append(crc, &v);
            }
        }
        let hash = self.store.hash_kv(0).expect("hash").hash;
        assert_eq!(hash, crc, "{}: hash of the compacted records", self.ctx());
    }

    fn run(&mut self, steps: usize) {
        for step in 0..steps {
            self.step = step;
            match self.rng.below(20) {
                0..=9 => self.write_group(),
                10..=15 => self.read(),
                16 | 17 => self.compact_step(),
                18 => self.restart(),
                _ => {
                    for _ in 0..3 {
                        self.read();
                    }
                }
            }
        }
        // Finish physical compaction; the hash and every read still agree.
        let before = self.store.hash_kv(0).expect("hash");
        while self.store.compact_disk_step(2).expect("step") != DiskCompactStatus::Idle {}
        assert_eq!(
            self.store.hash_kv(0).expect("hash"),
            before,
            "{}",
            self.ctx()
        );
        self.check_compacted_disk();
        for _ in 0..20 {
            self.read();
        }
    }
}

/// A compare-and-swap txn: version compare on one key, put or delete.
fn txn(rng: &mut Rng, ctx: &str, w: &mut super::Writer<'_>, model: &mut Model) {
    let k = key(rng);
    let cur = model.get(&k, model.rev);
    let want_version = if rng.chance(50) {
        cur.as_ref().map_or(0, |c| c.version)
    } else {
        rng.below(3) as i64
    };
    let other = key(rng);
    let success = vec![RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.clone(),
            value: b"txn".to_vec(),
            ..Default::default()
        })),
    }];
    let failure = vec![
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: other.clone(),
                ..Default::default()
            })),
        },
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: other.clone(),
                    ..Default::default()
                },
            )),
        },
    ];
    let r = w
        .txn(&TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                key: k.clone(),
                target_union: Some(compare::TargetUnion::Version(want_version)),
                range_end: Vec::new(),
            }],
            success,
            failure,
        })
        .expect("txn");
    let ok = cur.as_ref().map_or(0, |c| c.version) == want_version;
    assert_eq!(r.succeeded, ok, "{}: txn branch", ctx);
    if ok {
        model.rev += 1;
        model.put(&k, b"txn", model.rev);
    } else if let Some(prev) = model.get(&other, model.rev) {
        model.rev += 1;
        model.delete(&prev.key, model.rev);
    }
    assert_eq!(r.header.map(|h| h.revision), Some(model.rev), "{}", ctx);
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("CONCORD_MVCC_SEED") {
        return vec![s.parse().expect("CONCORD_MVCC_SEED is a number")];
    }
    let n = std::env::var("CONCORD_MVCC_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200u64);
    (1..=n).collect()
}

#[test]
fn store_matches_model_on_mem_backend() {
    for seed in seeds() {
        Harness::new(seed, Arc::new(MemBackend::new())).run(150);
    }
}

#[cfg(not(madsim))]
#[test]
fn store_matches_model_on_fjall() {
    for seed in seeds().into_iter().take(5) {
        let dir = tempfile::tempdir().expect("tempdir");
        let be = crate::storage::fjall_backend::FjallBackend::open(dir.path()).expect("open");
        Harness::new(seed, Arc::new(be)).run(150);
    }
}

#[test]
fn restart_reads_below_the_floor_from_disk_history() {
    let be: Arc<dyn Backend> = Arc::new(MemBackend::new());
    write_k_history(&Store::open(be.clone()).unwrap());
    check_k_history(&Store::open(be).unwrap());
}

/// Revisions 2 put "1", 3 put "2", 4 delete, 5 put "3" of key `k`, in
/// three groups; nothing checkpointed.
fn write_k_history(store: &Store) {
    let nl = no_leases;
    for (i, v) in ["1", "2", "3"].iter().enumerate() {
        let mut w = store.writer(&nl);
        w.put(&PutRequest {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .unwrap();
        if i == 1 {
            w.delete_range(&DeleteRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        w.commit().unwrap();
    }
}

/// Reads `k` at every revision [`write_k_history`] wrote.
fn check_k_history(store: &Store) {
    let at = |rev| k_at(store, rev);
    assert!(at(1).is_empty());
    assert_eq!(at(2), [("1".to_string(), 1)]);
    assert_eq!(at(3), [("2".to_string(), 2)]);
    assert!(at(4).is_empty());
    assert_eq!(at(5), [("3".to_string(), 1)]);
    assert_eq!(at(0), [("3".to_string(), 1)]);
}

#[test]
fn reload_checkpoints_the_replayed_history_before_serving() {
    let be: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let store = Store::open(be.clone()).unwrap();
    write_k_history(&store);
    // A reload (as after a snapshot install) moves the floor to 5: the
    // history below it must be on disk before it serves.
    store.reload().unwrap();
    check_k_history(&store);
    // And the checkpoint is recorded: a crash now replays nothing.
    drop(store);
    check_k_history(&Store::open(be).unwrap());
}

/// Values and versions of key `k` at `rev`.
fn k_at(store: &Store, rev: i64) -> Vec<(String, i64)> {
    store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            revision: rev,
            ..Default::default()
        })
        .unwrap()
        .0
        .kvs
        .into_iter()
        .map(|kv| (String::from_utf8(kv.value).unwrap(), kv.version))
        .collect()
}
