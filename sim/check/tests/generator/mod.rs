//! A seeded generator of honest histories: a few clients run random ops
//! against the model store, each op taking effect at a linearization point
//! inside its [invoke, complete] interval (an unknown op that took effect:
//! any time after invoke), in one discrete-event loop ordered by simulated
//! time. What it produces is, by construction, linearizable: the checker
//! must accept all of it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use concord_check::history::{
    Bytes, Call, CmpResult, Compare, Kv, Op, Outcome, Reply, Target, TxnOp,
};
use concord_check::index::Index;
use concord_check::log::Entry;
use concord_check::model::{execute, expire_lease, Store, View};

/// splitmix64: deterministic, no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_0fc0_c0a5_a5a5)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`; `n` > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next() % n
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "between({lo}, {hi})");
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// An honest run: the history and the log it wrote (from an empty store
/// at revision 1).
pub struct Generated {
    pub history: Vec<Op>,
    pub log: Vec<Entry>,
}

impl Generated {
    /// The index of the log, for mutations that need past states.
    pub fn index(&self) -> Index {
        let mut index = Index::new(&[], 1);
        for entry in &self.log {
            index.push(entry);
        }
        index
    }
}

const KEYS: [&[u8]; 5] = [b"k0", b"k1", b"k2", b"k3", b"k4"];
const CLIENTS_MAX: u64 = 5;

/// What becomes of an op, drawn at invoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Takes effect inside its interval; the client sees the result.
    Normal,
    /// The server refuses it without applying it.
    Refused,
    /// The client gives up, but it takes effect (maybe after that).
    UnknownApplied,
    /// The client gives up and it never takes effect.
    UnknownLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Invoke { client: usize },
    Apply { op: usize },
    Complete { op: usize },
    Expire { lease: i64 },
}

#[derive(Default)]
struct Client {
    /// The highest revision any reply showed this client.
    revision_seen: i64,
    /// Last mod_revision seen per key.
    mod_revisions: BTreeMap<Bytes, i64>,
}

struct World {
    rng: Rng,
    seed: u64,
    store: Store,
    index: Index,
    log: Vec<Entry>,
    /// Granted leases (id -> ttl); expired or revoked ones are removed.
    leases: BTreeMap<i64, i64>,
    /// Every lease id ever asked for (so some puts name dead leases).
    lease_ids: Vec<i64>,
    compact_revision: i64,
    values: u64,
    ops: Vec<Op>,
    fates: Vec<Fate>,
    clients: Vec<Client>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    ops_max: usize,
}

/// Generates an honest history of about `ops` operations.
pub fn generate(seed: u64, ops: usize) -> Generated {
    let mut rng = Rng::new(seed);
    let clients = 2 + rng.below(CLIENTS_MAX - 1) as usize;
    let mut world = World {
        rng,
        seed,
        store: Store::new(),
        index: Index::new(&[], 1),
        log: Vec::new(),
        leases: BTreeMap::new(),
        lease_ids: Vec::new(),
        compact_revision: 0,
        values: 0,
        ops: Vec::new(),
        fates: Vec::new(),
        clients: (0..clients).map(|_| Client::default()).collect(),
        queue: BinaryHeap::new(),
        sequence: 0,
        ops_max: ops,
    };
    for client in 0..clients {
        let at = world.rng.below(1_000);
        world.schedule(at, Event::Invoke { client });
    }
    while let Some(Reverse((now, _, event))) = world.queue.pop() {
        match event {
            Event::Invoke { client } => world.invoke(now, client),
            Event::Apply { op } => world.apply(now, op),
            Event::Complete { op } => world.complete(now, op),
            Event::Expire { lease } => world.expire(lease),
        }
    }
    for (op, fate) in world.ops.iter().zip(&world.fates) {
        assert!(
            *fate != Fate::Normal || matches!(op.outcome, Outcome::Ok(_) | Outcome::Failed(_)),
            "op {} never applied",
            op.id
        );
    }
    Generated {
        history: world.ops,
        log: world.log,
    }
}

impl World {
    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, event)));
    }

    fn invoke(&mut self, now: u64, client: usize) {
        if self.ops.len() >= self.ops_max {
            return;
        }
        let call = self.random_call(client);
        let fate = match self.rng.below(100) {
            0..=81 => Fate::Normal,
            82..=85 => Fate::Refused,
            86..=92 => Fate::UnknownApplied,
            _ => Fate::UnknownLost,
        };
        let duration = if self.rng.chance(10) {
            2 + self.rng.below(20_000)
        } else {
            2 + self.rng.below(3_000)
        };
        let complete = now + duration;
        let op = self.ops.len();
        self.ops.push(Op {
            id: op as u64 + 1,
            client: client as u64 + 1,
            invoke: now,
            complete,
            call,
            outcome: Outcome::Unknown,
        });
        self.fates.push(fate);
        match fate {
            Fate::Normal => {
                let at = now + 1 + self.rng.below(duration - 1);
                self.schedule(at, Event::Apply { op });
            }
            Fate::UnknownApplied => {
                let at = now + 1 + self.rng.below(3 * duration);
                self.schedule(at, Event::Apply { op });
            }
            Fate::Refused => self.ops[op].outcome = Outcome::Failed("injected".into()),
            Fate::UnknownLost => {}
        }
        self.schedule(complete, Event::Complete { op });
    }

    fn complete(&mut self, now: u64, op: usize) {
        let client = (self.ops[op].client - 1) as usize;
        if let Outcome::Ok(reply) = self.ops[op].outcome.clone() {
            self.learn(client, &self.ops[op].call.clone(), &reply);
        }
        let think = self.rng.below(500);
        self.schedule(now + think, Event::Invoke { client });
    }

    fn learn(&mut self, client: usize, call: &Call, reply: &Reply) {
        let c = &mut self.clients[client];
        c.revision_seen = c.revision_seen.max(reply.revision());
        match (call, reply) {
            (Call::Put { key, .. }, Reply::Put { revision }) => {
                c.mod_revisions.insert(key.clone(), *revision);
            }
            (Call::Range { .. }, Reply::Range { kvs, .. }) => {
                for kv in kvs {
                    c.mod_revisions.insert(kv.key.clone(), kv.mod_revision);
                }
            }
            _ => {}
        }
    }

    /// The op takes effect now: its outcome is what the store says (for an
    /// unknown fate the client never learns it).
    fn apply(&mut self, now: u64, op: usize) {
        let call = self.ops[op].call.clone();
        let outcome = match self.refusal(&call) {
            Some(why) => Outcome::Failed(why),
            None => self.run(now, &call),
        };
        if self.fates[op] == Fate::Normal {
            self.ops[op].outcome = outcome;
        }
    }

    /// Why the server refuses `call` now, for what the model does not
    /// track (leases, compaction).
    fn refusal(&self, call: &Call) -> Option<String> {
        let current = self.store.revision();
        match call {
            Call::Put { lease, .. } if *lease != 0 && !self.leases.contains_key(lease) => {
                Some("lease not found".into())
            }
            Call::LeaseGrant { id, .. } if self.leases.contains_key(id) => {
                Some("lease already exists".into())
            }
            Call::LeaseRevoke { id } if !self.leases.contains_key(id) => {
                Some("lease not found".into())
            }
            Call::Compact { revision } if *revision <= self.compact_revision => {
                Some("compacted".into())
            }
            Call::Compact { revision } | Call::Range { revision, .. } if *revision > current => {
                Some("future revision".into())
            }
            Call::Range { revision, .. } if *revision > 0 && *revision < self.compact_revision => {
                Some("compacted".into())
            }
            _ => None,
        }
    }

    fn run(&mut self, now: u64, call: &Call) -> Outcome {
        match call {
            Call::Range {
                key,
                range_end,
                revision,
                serializable,
            } => {
                let current = self.store.revision();
                // A serializable read may come from a lagging member.
                let header = if *serializable && self.rng.chance(50) {
                    let lowest = (*revision).max(current - 4).max(1);
                    self.rng.between(lowest, current)
                } else {
                    current
                };
                let at = if *revision > 0 { *revision } else { header };
                let kvs = self
                    .index
                    .at(at)
                    .expect("a known revision")
                    .range(key, range_end);
                Outcome::Ok(Reply::Range {
                    revision: header,
                    kvs,
                })
            }
            Call::LeaseGrant { id, ttl } => {
                self.leases.insert(*id, *ttl);
                let at = now + (*ttl as u64) * 1_000;
                self.schedule(at, Event::Expire { lease: *id });
                self.ok(call)
            }
            Call::LeaseRevoke { id } => {
                self.leases.remove(id);
                self.ok(call)
            }
            Call::Compact { revision } => {
                self.compact_revision = *revision;
                self.ok(call)
            }
            _ => self.ok(call),
        }
    }

    /// Runs `call` on the store and commits its write.
    fn ok(&mut self, call: &Call) -> Outcome {
        match execute(&self.store, call) {
            Ok(effect) => {
                self.commit(effect.events);
                Outcome::Ok(effect.reply)
            }
            Err(why) => Outcome::Failed(why),
        }
    }

    fn commit(&mut self, events: Vec<concord_check::log::Event>) {
        if let Some(entry) = self.store.commit(events) {
            self.index.push(&entry);
            self.log.push(entry);
        }
    }

    fn expire(&mut self, lease: i64) {
        if self.leases.remove(&lease).is_some() {
            let events = expire_lease(&self.store, lease);
            self.commit(events);
        }
    }

    fn value(&mut self) -> Bytes {
        self.values += 1;
        format!("v{}-{}", self.seed, self.values).into_bytes()
    }

    fn key(&mut self) -> Bytes {
        self.rng.pick(&KEYS).to_vec()
    }

    /// A range: one key, the prefix, a span, or from a key.
    fn span(&mut self) -> (Bytes, Bytes) {
        match self.rng.below(10) {
            0..=3 => (self.key(), Vec::new()),
            4..=6 => (b"k".to_vec(), b"l".to_vec()),
            7..=8 => {
                let a = self.rng.below(KEYS.len() as u64) as usize;
                let b = self.rng.below(KEYS.len() as u64) as usize;
                (KEYS[a.min(b)].to_vec(), KEYS[a.max(b)].to_vec())
            }
            _ => (self.key(), vec![0]),
        }
    }

    fn lease_for_put(&mut self) -> i64 {
        if !self.lease_ids.is_empty() && self.rng.chance(25) {
            *self.rng.pick(&self.lease_ids)
        } else {
            0
        }
    }

    fn random_call(&mut self, client: usize) -> Call {
        match self.rng.below(100) {
            0..=27 => {
                let (key, value, lease) = (self.key(), self.value(), self.lease_for_put());
                Call::Put { key, value, lease }
            }
            28..=35 => {
                let (key, range_end) = if self.rng.chance(70) {
                    (self.key(), Vec::new())
                } else {
                    self.span()
                };
                Call::Delete { key, range_end }
            }
            36..=59 => {
                let (key, range_end) = self.span();
                let seen = self.clients[client].revision_seen;
                let revision = if seen > 1 && self.rng.chance(10) {
                    self.rng.between(1, seen)
                } else {
                    0
                };
                let serializable = self.rng.chance(25);
                Call::Range {
                    key,
                    range_end,
                    revision,
                    serializable,
                }
            }
            60..=71 => self.cas(client),
            72..=76 => self.multi_txn(),
            77..=81 => self.read_txn(),
            82..=83 => {
                let key = self.key();
                Call::Txn {
                    compares: vec![self.compare()],
                    success: vec![TxnOp::Delete {
                        key,
                        range_end: Vec::new(),
                    }],
                    failure: Vec::new(),
                }
            }
            84..=88 => {
                let id = if !self.lease_ids.is_empty() && self.rng.chance(10) {
                    *self.rng.pick(&self.lease_ids)
                } else {
                    let id = 100 + self.lease_ids.len() as i64;
                    self.lease_ids.push(id);
                    id
                };
                Call::LeaseGrant {
                    id,
                    ttl: self.rng.between(2, 15),
                }
            }
            89..=94 if !self.lease_ids.is_empty() => Call::LeaseRevoke {
                id: *self.rng.pick(&self.lease_ids),
            },
            95..=97 => {
                let seen = self.clients[client].revision_seen.max(1);
                Call::Compact {
                    revision: self.rng.between(1, seen),
                }
            }
            _ => {
                let (key, value) = (self.key(), self.value());
                Call::Put {
                    key,
                    value,
                    lease: 0,
                }
            }
        }
    }

    /// Compare-and-swap on the mod_revision this client last saw.
    fn cas(&mut self, client: usize) -> Call {
        let key = self.key();
        let seen = self.clients[client]
            .mod_revisions
            .get(&key)
            .copied()
            .unwrap_or(0);
        let value = self.value();
        Call::compare_and_set(key, seen, value)
    }

    /// Writes in both branches, a range after them; sometimes a branch
    /// etcd refuses (a put inside its own delete range).
    fn multi_txn(&mut self) -> Call {
        let a = self.rng.below(KEYS.len() as u64) as usize;
        let b = (a + 1 + self.rng.below(KEYS.len() as u64 - 1) as usize) % KEYS.len();
        let (delete_key, delete_end) = if self.rng.chance(15) {
            (b"k".to_vec(), b"l".to_vec())
        } else {
            (KEYS[b].to_vec(), Vec::new())
        };
        let compares = (0..self.rng.below(3)).map(|_| self.compare()).collect();
        let (v1, v2) = (self.value(), self.value());
        let (prefix, prefix_end) = self.span();
        Call::Txn {
            compares,
            success: vec![
                TxnOp::Put {
                    key: KEYS[a].to_vec(),
                    value: v1,
                    lease: 0,
                },
                TxnOp::Delete {
                    key: delete_key,
                    range_end: delete_end,
                },
                TxnOp::Range {
                    key: prefix,
                    range_end: prefix_end,
                },
            ],
            failure: vec![
                TxnOp::Put {
                    key: KEYS[b].to_vec(),
                    value: v2,
                    lease: 0,
                },
                TxnOp::Range {
                    key: KEYS[b].to_vec(),
                    range_end: Vec::new(),
                },
            ],
        }
    }

    fn read_txn(&mut self) -> Call {
        let compares = (0..1 + self.rng.below(2)).map(|_| self.compare()).collect();
        let (k1, e1) = self.span();
        let (k2, e2) = self.span();
        Call::Txn {
            compares,
            success: vec![
                TxnOp::Range {
                    key: k1,
                    range_end: e1,
                },
                TxnOp::Range {
                    key: k2.clone(),
                    range_end: e2,
                },
            ],
            failure: vec![TxnOp::Range {
                key: k2,
                range_end: Vec::new(),
            }],
        }
    }

    fn compare(&mut self) -> Compare {
        let key = self.key();
        let target = match self.rng.below(5) {
            0 => Target::Value(if self.values > 0 && self.rng.chance(50) {
                format!("v{}-{}", self.seed, self.rng.between(1, self.values as i64)).into_bytes()
            } else {
                b"nope".to_vec()
            }),
            1 => Target::Version(self.rng.between(0, 3)),
            2 => Target::CreateRevision(self.rng.between(0, self.store.revision())),
            3 => Target::ModRevision(self.rng.between(0, self.store.revision())),
            _ => Target::Lease(if self.lease_ids.is_empty() {
                0
            } else {
                *self.rng.pick(&self.lease_ids)
            }),
        };
        let result = *self.rng.pick(&[
            CmpResult::Equal,
            CmpResult::NotEqual,
            CmpResult::Greater,
            CmpResult::Less,
        ]);
        Compare {
            key,
            target,
            result,
        }
    }
}

/// The revision an Ok op's reply says it wrote, if it wrote.
pub fn write_revision(op: &Op) -> Option<i64> {
    match &op.outcome {
        Outcome::Ok(reply) if op.call.wrote(reply) => Some(reply.revision()),
        _ => None,
    }
}

/// A kv with its value changed (for mutations).
pub fn corrupt(kv: &Kv) -> Kv {
    let mut kv = kv.clone();
    kv.value.extend_from_slice(b"!");
    kv
}
