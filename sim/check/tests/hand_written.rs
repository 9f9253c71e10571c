//! Small histories written by hand: one clean one with concurrency and
//! unknown outcomes, then one per violation kind that produces exactly
//! that kind.

use std::collections::BTreeSet;

use concord_check::history::{
    Call, CmpResult, Compare, Kv, Op, Outcome, Reply, Target, TxnOp, TxnReply,
};
use concord_check::index::Index;
use concord_check::log::{Entry, Event};
use concord_check::model::{execute, expire_lease, put_event, Store, View};
use concord_check::violation::VIOLATIONS_SHOWN_MAX;
use concord_check::{check, check_final_states, Stats, Violation, ViolationKind};

/// Records a history while applying it to the model in call order: the
/// order of the calls is the linearization, the times are given.
struct Recorder {
    store: Store,
    log: Vec<Entry>,
    history: Vec<Op>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            store: Store::new(),
            log: Vec::new(),
            history: Vec::new(),
        }
    }

    fn push(&mut self, client: u64, times: (u64, u64), call: Call, outcome: Outcome) -> usize {
        self.history.push(Op {
            id: self.history.len() as u64 + 1,
            client,
            invoke: times.0,
            complete: times.1,
            call,
            outcome,
        });
        self.history.len() - 1
    }

    /// Applies `call` now; returns its reply.
    fn apply(&mut self, call: &Call) -> Reply {
        let effect = execute(&self.store, call).expect("a valid call");
        self.commit(effect.events);
        effect.reply
    }

    fn commit(&mut self, events: Vec<Event>) {
        if let Some(entry) = self.store.commit(events) {
            self.log.push(entry);
        }
    }

    /// Takes effect now, the client sees the reply.
    fn ok(&mut self, client: u64, times: (u64, u64), call: Call) -> usize {
        let reply = self.apply(&call);
        self.push(client, times, call, Outcome::Ok(reply))
    }

    /// Takes effect now, the client never learns it.
    fn unknown_applied(&mut self, client: u64, times: (u64, u64), call: Call) -> usize {
        self.apply(&call);
        self.push(client, times, call, Outcome::Unknown)
    }

    fn unknown_lost(&mut self, client: u64, times: (u64, u64), call: Call) -> usize {
        self.push(client, times, call, Outcome::Unknown)
    }

    fn failed(&mut self, client: u64, times: (u64, u64), call: Call) -> usize {
        self.push(client, times, call, Outcome::Failed("refused".into()))
    }

    fn expire(&mut self, lease: i64) {
        let events = expire_lease(&self.store, lease);
        self.commit(events);
    }

    /// A range answered with header revision `header` (an earlier one for
    /// a lagging member), from the state there or at the revision it asks.
    fn read_at(&mut self, client: u64, times: (u64, u64), call: Call, header: i64) -> usize {
        let Call::Range {
            key,
            range_end,
            revision,
            ..
        } = &call
        else {
            panic!("not a range");
        };
        let at = if *revision > 0 { *revision } else { header };
        let kvs = self.index().at(at).map(|view| view.range(key, range_end));
        let kvs = kvs.unwrap_or_else(|| self.store.range(key, range_end));
        let reply = Reply::Range {
            revision: header,
            kvs,
        };
        self.push(client, times, call, Outcome::Ok(reply))
    }

    fn index(&self) -> Index {
        let mut index = Index::new(&[], 1);
        for entry in &self.log {
            index.push(entry);
        }
        index
    }

    fn check(&self) -> Result<Stats, Vec<Violation>> {
        check(&self.history, &[], 1, &self.log)
    }

    fn reply_mut(&mut self, op: usize) -> &mut Reply {
        match &mut self.history[op].outcome {
            Outcome::Ok(reply) => reply,
            other => panic!("op {op} is {other:?}"),
        }
    }
}

fn put(key: &str, value: &str) -> Call {
    Call::Put {
        key: key.into(),
        value: value.into(),
        lease: 0,
    }
}

fn get(key: &str, range_end: &[u8], serializable: bool) -> Call {
    Call::Range {
        key: key.into(),
        range_end: range_end.to_vec(),
        revision: 0,
        serializable,
    }
}

fn delete(key: &str, range_end: &str) -> Call {
    Call::Delete {
        key: key.into(),
        range_end: range_end.into(),
    }
}

/// Exactly the kinds reported (the `Truncated` summary aside).
fn kinds(result: &Result<Stats, Vec<Violation>>) -> BTreeSet<ViolationKind> {
    match result {
        Ok(_) => BTreeSet::new(),
        Err(v) => v
            .iter()
            .map(Violation::kind)
            .filter(|k| *k != ViolationKind::Truncated)
            .collect(),
    }
}

fn assert_only(result: Result<Stats, Vec<Violation>>, kind: ViolationKind) {
    let got = kinds(&result);
    assert_eq!(
        got,
        BTreeSet::from([kind]),
        "want only {kind}, got:\n{}",
        result
            .err()
            .unwrap_or_default()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn assert_clean(result: Result<Stats, Vec<Violation>>) -> Stats {
    match result {
        Ok(stats) => stats,
        Err(v) => panic!(
            "want a pass, got:\n{}",
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Three clients, overlapping ops, one unknown write that took effect
/// (after its client gave up) and one that did not, a lease that expires,
/// a stale serializable read, a historical read, read-only ops.
///
/// ```text
///   time  0    100   200   300   400   500
///   c1    [put a=1]  [txn a: mod==2 ? a=2]  [grant][put d lease] [del zz] [ro txn]
///   c2      [ put b=1 ]  [unknown put c=1]  [unknown del b]   [failed put e] [get a@2]
///   c3         [range k..]  [unknown put c=2, lost]   [serializable get a @3] [get all]
/// ```
fn clean() -> Recorder {
    let mut r = Recorder::new();
    r.ok(1, (0, 100), put("a", "1")); // rev 2
    r.ok(2, (10, 200), put("b", "1")); // rev 3
    r.ok(3, (60, 150), get("a", b"c", false));
    let cas = Call::Txn {
        compares: vec![Compare {
            key: b"a".to_vec(),
            target: Target::ModRevision(2),
            result: CmpResult::Equal,
        }],
        success: vec![TxnOp::Put {
            key: b"a".to_vec(),
            value: b"2".to_vec(),
            lease: 0,
        }],
        failure: vec![TxnOp::Range {
            key: b"a".to_vec(),
            range_end: Vec::new(),
        }],
    };
    r.ok(1, (110, 300), cas); // rev 4
    r.unknown_applied(2, (210, 260), put("c", "1")); // rev 5
    r.unknown_lost(3, (160, 170), put("c", "2"));
    r.ok(1, (310, 320), Call::LeaseGrant { id: 7, ttl: 5 });
    r.ok(
        1,
        (330, 340),
        Call::Put {
            key: b"d".to_vec(),
            value: b"1".to_vec(),
            lease: 7,
        },
    ); // rev 6
    r.unknown_applied(2, (270, 280), delete("b", "")); // rev 7, after its client gave up
    r.expire(7); // rev 8: d
    r.read_at(3, (410, 420), get("a", b"", true), 3);
    r.ok(3, (430, 440), get("a", &[0], false));
    r.failed(2, (450, 460), put("e", "1"));
    r.ok(1, (470, 480), delete("zz", ""));
    let read_txn = Call::Txn {
        compares: vec![Compare {
            key: b"zz".to_vec(),
            target: Target::Version(0),
            result: CmpResult::Equal,
        }],
        success: vec![TxnOp::Range {
            key: b"a".to_vec(),
            range_end: vec![0],
        }],
        failure: Vec::new(),
    };
    r.ok(1, (490, 500), read_txn);
    let old = Call::Range {
        key: b"a".to_vec(),
        range_end: Vec::new(),
        revision: 2,
        serializable: false,
    };
    r.read_at(2, (510, 520), old, 8);
    r
}

#[test]
fn clean_history_passes() {
    let r = clean();
    assert_eq!(r.log.len(), 7);
    let stats = assert_clean(r.check());
    assert_eq!(
        stats,
        Stats {
            writes_acked: 4,
            unknown_writes_applied: 2,
            unknown_writes_not_applied: 1,
            reads_linearizable: 5,
            reads_serializable: 1,
            txns: 2,
            log_revisions: 7,
            lease_expiries: 1,
        }
    );
}

#[test]
fn malformed_log() {
    let mut r = clean();
    r.log[1].events[0].kv.version = 5;
    assert_only(r.check(), ViolationKind::MalformedLog);

    // A revision missing from the middle.
    let mut r = clean();
    r.log.remove(2);
    assert_only(r.check(), ViolationKind::MalformedLog);

    // A log that does not start after the base.
    let r = clean();
    assert_only(
        check(&r.history, &[], 3, &r.log),
        ViolationKind::MalformedLog,
    );
}

#[test]
fn phantom_write() {
    let mut r = clean();
    let revision = r.store.revision() + 1;
    let a = r.store.get(b"a").unwrap();
    r.log.push(Entry {
        revision,
        events: vec![put_event(Kv {
            value: b"ghost".to_vec(),
            mod_revision: revision,
            version: a.version + 1,
            ..a
        })],
    });
    assert_only(r.check(), ViolationKind::PhantomWrite);

    // A delete nobody asked for (a has no lease: no expiry explains it).
    let mut r = clean();
    let events = execute(&r.store, &delete("a", "")).unwrap().events;
    r.commit(events);
    assert_only(r.check(), ViolationKind::PhantomWrite);
}

#[test]
fn failed_write_applied() {
    let mut r = Recorder::new();
    let op = r.ok(1, (0, 10), put("a", "1"));
    r.history[op].outcome = Outcome::Failed("etcdserver: too many requests".into());
    assert_only(r.check(), ViolationKind::FailedWriteApplied);

    // A refused delete, applied: only its effect names it.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    let op = r.unknown_applied(1, (20, 30), delete("a", ""));
    r.history[op].outcome = Outcome::Failed("refused".into());
    assert_only(r.check(), ViolationKind::FailedWriteApplied);
}

#[test]
fn duplicate_application() {
    let mut r = Recorder::new();
    let op = r.ok(1, (0, 10), put("a", "1"));
    // The same put applied again (a retried proposal applied twice).
    r.apply(&r.history[op].call.clone());
    assert_only(r.check(), ViolationKind::DuplicateApplication);
}

#[test]
fn effect_mismatch() {
    // The log's put carries another lease than the op asked for.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    r.log[0].events[0].kv.lease = 5;
    assert_only(r.check(), ViolationKind::EffectMismatch);

    // A delete that reports fewer keys than it deleted.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    r.ok(1, (20, 30), put("b", "1"));
    let op = r.ok(1, (40, 50), delete("a", "c"));
    *r.reply_mut(op) = Reply::Delete {
        revision: 4,
        deleted: 1,
    };
    assert_only(r.check(), ViolationKind::EffectMismatch);

    // A txn whose compare held, yet it says it took the failure branch
    // (and applied it).
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    let txn = |value: &str| TxnOp::Put {
        key: b"b".to_vec(),
        value: value.into(),
        lease: 0,
    };
    let call = Call::Txn {
        compares: vec![Compare {
            key: b"a".to_vec(),
            target: Target::Value(b"1".to_vec()),
            result: CmpResult::Equal,
        }],
        success: vec![txn("yes")],
        failure: vec![txn("no")],
    };
    let wrong = Call::Txn {
        compares: Vec::new(),
        success: vec![txn("no")],
        failure: Vec::new(),
    };
    r.apply(&wrong);
    r.push(
        1,
        (20, 30),
        call,
        Outcome::Ok(Reply::Txn {
            revision: 3,
            succeeded: false,
            responses: vec![TxnReply::Put],
        }),
    );
    assert_only(r.check(), ViolationKind::EffectMismatch);
}

#[test]
fn acked_write_lost() {
    // The log ends before an acknowledged write.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    r.ok(1, (20, 30), put("b", "1"));
    r.log.pop();
    assert_only(r.check(), ViolationKind::AckedWriteLost);

    // The revision it was acknowledged with holds another (unknown) write.
    let mut r = Recorder::new();
    r.unknown_applied(1, (0, 10), put("a", "9"));
    r.push(
        2,
        (5, 15),
        put("a", "1"),
        Outcome::Ok(Reply::Put { revision: 2 }),
    );
    assert_only(r.check(), ViolationKind::AckedWriteLost);

    // A revoke acknowledged while its key stays attached.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), Call::LeaseGrant { id: 3, ttl: 10 });
    r.ok(
        1,
        (20, 30),
        Call::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            lease: 3,
        },
    );
    r.push(
        1,
        (40, 50),
        Call::LeaseRevoke { id: 3 },
        Outcome::Ok(Reply::LeaseRevoke { revision: 2 }),
    );
    assert_only(r.check(), ViolationKind::AckedWriteLost);
}

#[test]
fn real_time_order() {
    // a=1 completed before b=1 was sent, yet b=1 has the lower revision.
    let mut r = Recorder::new();
    r.ok(2, (20, 30), put("b", "1")); // rev 2
    r.ok(1, (0, 10), put("a", "1")); // rev 3
    assert_only(r.check(), ViolationKind::RealTimeOrder);

    // The same with an unknown write placed before an acknowledged one
    // that completed before it was even sent.
    let mut r = Recorder::new();
    r.unknown_applied(2, (20, 30), put("b", "1"));
    r.ok(1, (0, 10), put("a", "1"));
    assert_only(r.check(), ViolationKind::RealTimeOrder);
}

#[test]
fn read_mismatch() {
    let mut r = clean();
    let op = r.ok(3, (600, 610), get("a", b"c", false));
    if let Reply::Range { kvs, .. } = r.reply_mut(op) {
        kvs[0].value = b"1".to_vec();
    }
    assert_only(r.check(), ViolationKind::ReadMismatch);

    // A delete that says it found nothing where a key was.
    let mut r = clean();
    let op = r.ok(3, (600, 610), delete("zz", ""));
    r.history[op].call = delete("a", "");
    assert_only(r.check(), ViolationKind::ReadMismatch);

    // A range inside a writing txn that misses the txn's own put.
    let mut r = Recorder::new();
    let call = Call::Txn {
        compares: Vec::new(),
        success: vec![
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 0,
            },
            TxnOp::Range {
                key: b"a".to_vec(),
                range_end: Vec::new(),
            },
        ],
        failure: Vec::new(),
    };
    let op = r.ok(1, (0, 10), call);
    if let Reply::Txn { responses, .. } = r.reply_mut(op) {
        responses[1] = TxnReply::Range { kvs: Vec::new() };
    }
    assert_only(r.check(), ViolationKind::ReadMismatch);
}

#[test]
fn stale_read() {
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1")); // rev 2
    r.read_at(2, (20, 30), get("a", b"", false), 1);
    assert_only(r.check(), ViolationKind::StaleRead);

    // The same read, serializable: allowed.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    r.read_at(2, (20, 30), get("a", b"", true), 1);
    assert_clean(r.check());

    // Older than what another read had seen before it was sent.
    let mut r = Recorder::new();
    r.unknown_applied(1, (0, 10), put("a", "1")); // rev 2
    r.ok(2, (20, 30), get("a", b"", false));
    r.read_at(3, (40, 50), get("a", b"", false), 1);
    assert_only(r.check(), ViolationKind::StaleRead);
}

#[test]
fn future_read() {
    // The read completed before the write it saw was sent.
    let mut r = Recorder::new();
    r.ok(1, (20, 30), put("a", "1")); // rev 2
    r.read_at(2, (0, 10), get("a", b"", true), 2);
    assert_only(r.check(), ViolationKind::FutureRead);
}

#[test]
fn read_beyond_log() {
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    let op = r.ok(2, (20, 30), get("a", b"", false));
    if let Reply::Range { revision, .. } = r.reply_mut(op) {
        *revision = 5;
    }
    assert_only(r.check(), ViolationKind::ReadBeyondLog);
}

#[test]
fn divergent_state() {
    let r = clean();
    let full = r.store.range(b"", &[0]);
    let at_3 = r.index().at(3).unwrap().range(b"", &[0]);
    let mut missing = full.clone();
    missing.pop();
    let mut changed = full.clone();
    changed[0].version += 1;
    let ok = [(1, r.store.revision(), full.clone()), (2, 3, at_3)];
    assert_eq!(check_final_states(&[], 1, &r.log, &ok), Ok(()));
    for (i, state) in [
        (2, r.store.revision(), missing),
        (3, r.store.revision(), changed),
        (4, 99, full),
    ]
    .into_iter()
    .enumerate()
    {
        let result = check_final_states(&[], 1, &r.log, &[state]);
        let got: Vec<ViolationKind> = result.unwrap_err().iter().map(Violation::kind).collect();
        assert_eq!(got, vec![ViolationKind::DivergentState], "case #{i}");
    }
}

#[test]
fn unknown_deletes_are_matched_not_guessed() {
    // Two unknown deletes could explain the first delete-only entry; only
    // one of them can explain the second. Taking the earliest invoked for
    // the first (a greedy choice) would leave the second unexplained.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    let wide = r.unknown_lost(2, (20, 30), delete("a", "c"));
    let narrow = r.unknown_lost(3, (21, 31), delete("a", ""));
    r.apply(&delete("a", "")); // rev 3: either one
    r.ok(1, (40, 50), put("a", "2"));
    r.ok(1, (60, 70), put("b", "2"));
    r.apply(&delete("a", "c")); // rev 6: only the wide one
    let stats = assert_clean(r.check());
    assert_eq!(stats.unknown_writes_applied, 2, "{wide} {narrow}");
}

#[test]
fn a_revoke_that_found_nothing_shares_the_revision_of_a_delete() {
    // a is the only key on lease 7; a delete removes it (rev 3), then the
    // revoke finds nothing and answers with the current revision, 3. Both
    // effects against the state before revision 3 are "delete a": the
    // delete wrote it, the revoke is a read.
    let mut r = Recorder::new();
    r.ok(1, (0, 10), Call::LeaseGrant { id: 7, ttl: 10 });
    let attach = Call::Put {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        lease: 7,
    };
    r.ok(1, (20, 30), attach);
    let delete = r.ok(1, (40, 50), delete("a", ""));
    let revoke = r.ok(2, (45, 60), Call::LeaseRevoke { id: 7 });
    assert_eq!(
        r.history[revoke].outcome,
        Outcome::Ok(Reply::LeaseRevoke { revision: 3 })
    );
    // Whatever their order in the history.
    r.history.swap(delete, revoke);
    let stats = assert_clean(r.check());
    assert_eq!((stats.writes_acked, stats.reads_linearizable), (2, 1));
}

#[test]
fn a_log_from_a_base() {
    // The log starts at revision 10 from a known state.
    let base = vec![Kv {
        key: b"a".to_vec(),
        value: b"0".to_vec(),
        create_revision: 4,
        mod_revision: 9,
        version: 3,
        lease: 0,
    }];
    let mut store = Store::from_base(&base, 10);
    let call = put("a", "1");
    let effect = execute(&store, &call).unwrap();
    let entry = store.commit(effect.events).unwrap();
    assert_eq!((entry.revision, entry.events[0].kv.version), (11, 4));
    let history = vec![
        Op {
            id: 1,
            client: 1,
            invoke: 0,
            complete: 10,
            call,
            outcome: Outcome::Ok(effect.reply),
        },
        Op {
            id: 2,
            client: 2,
            invoke: 20,
            complete: 30,
            call: Call::Range {
                key: b"a".to_vec(),
                range_end: Vec::new(),
                revision: 10,
                serializable: false,
            },
            outcome: Outcome::Ok(Reply::Range {
                revision: 11,
                kvs: base.clone(),
            }),
        },
    ];
    let log = vec![entry];
    assert_clean(check(&history, &base, 10, &log));
    assert_only(check(&history, &[], 10, &log), ViolationKind::MalformedLog);
}

#[test]
fn violations_are_capped_and_counted() {
    let mut r = Recorder::new();
    r.ok(1, (0, 10), put("a", "1"));
    for i in 0..120 {
        let op = r.ok(2, (20 + i, 21 + i), get("a", b"", false));
        if let Reply::Range { kvs, .. } = r.reply_mut(op) {
            kvs.clear();
        }
    }
    let violations = r.check().unwrap_err();
    assert_eq!(violations.len(), VIOLATIONS_SHOWN_MAX + 1);
    let last = violations.last().unwrap();
    assert_eq!(
        *last,
        Violation::Truncated {
            total: 120,
            by_kind: vec![(ViolationKind::ReadMismatch, 120)],
        }
    );
    let first = violations[0].to_string();
    assert!(
        first.starts_with("ReadMismatch: op 2 (client 2, invoked 20 ns, completed 21 ns)"),
        "{first}"
    );
    assert!(
        first.contains("expected [a=1(c2 m2 v1 l0)], got []"),
        "{first}"
    );
}
