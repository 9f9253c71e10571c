//! A small reference KV store with revisions: what an etcd member does,
//! reduced to the semantics the checkers need. [`execute`] computes what a
//! call does against a [`View`] of the state (its reply and the events of
//! the revision it creates, if any) without changing anything; [`Store`]
//! is the state at the latest revision and changes only by applying log
//! entries, so a store replayed from a log and one driven by a generator
//! go through the same code.
//!
//! Semantics (etcd v3):
//! - a range `[key, range_end)`: empty `range_end` is the single key,
//!   `range_end == [0]` is every key >= `key`, `range_end <= key` is empty;
//!   ranges return kvs sorted by key;
//! - a put makes a revision: version = previous + 1 (1 when absent, and
//!   then create_revision = this revision), lease as given;
//! - a delete makes one revision if it deleted something, all its keys
//!   sharing it, else none;
//! - a txn evaluates every compare against the state before it (an absent
//!   key has version, create_revision, mod_revision and lease 0, and a
//!   value compare on it is false), runs the chosen branch, and if that
//!   writes anything it is ONE revision with all events in op order;
//!   ranges in the branch see the branch's earlier writes; a branch that
//!   puts one key twice, or puts a key inside one of its delete ranges, is
//!   refused (etcd's "duplicate key given in txn request");
//! - a lease revoke (and a lease expiry) deletes every key attached to the
//!   lease in one revision, none if there is none;
//! - compact and lease grant make no revision.
//!
//! The model does not track which leases exist or the compaction point:
//! those only decide whether a request fails, which the history records.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::history::{Bytes, Call, CmpResult, Compare, Kv, Reply, Target, TxnOp, TxnReply};
use crate::log::{Entry, Event, EventKind};

/// A read-only view of the state at one revision.
pub trait View {
    /// The revision this view shows.
    fn revision(&self) -> i64;
    fn get(&self, key: &[u8]) -> Option<Kv>;
    /// The kvs in `[key, range_end)`, sorted by key.
    fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<Kv>;
    /// The keys attached to `lease`, sorted.
    fn lease_keys(&self, lease: i64) -> Vec<Bytes>;
}

/// What a call does against a state: its reply and, if it writes, the
/// events of the one revision it creates (`reply`'s revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub reply: Reply,
    pub events: Vec<Event>,
}

/// Bounds over byte-string keys, as `BTreeMap::range` takes them.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of `[key, range_end)` for `BTreeMap::range`, or `None` when
/// the range is empty.
pub fn range_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if range_end.is_empty() {
        return Some((Bound::Included(key), Bound::Included(key)));
    }
    if range_end == [0] {
        return Some((Bound::Included(key), Bound::Unbounded));
    }
    if range_end <= key {
        return None;
    }
    Some((Bound::Included(key), Bound::Excluded(range_end)))
}

/// Whether `k` lies in `[key, range_end)` (etcd semantics, see the module).
pub fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    if range_end.is_empty() {
        return k == key;
    }
    if range_end == [0] {
        return k >= key;
    }
    k >= key && k < range_end
}

/// What `call` does against `view`. `Err` when etcd would refuse the call
/// whatever the state (a txn branch with a duplicate key) or when the
/// model cannot answer it (a range at an older revision: use
/// [`crate::index::Index::at`] for that).
pub fn execute<V: View + ?Sized>(view: &V, call: &Call) -> Result<Effect, String> {
    let revision = view.revision();
    let next = revision + 1;
    let effect = match call {
        Call::Put { key, value, lease } => {
            let kv = put_kv(view.get(key), key, value, *lease, next);
            Effect {
                reply: Reply::Put { revision: next },
                events: vec![put_event(kv)],
            }
        }
        Call::Delete { key, range_end } => {
            let events: Vec<Event> = view
                .range(key, range_end)
                .into_iter()
                .map(|kv| delete_event(kv.key, next))
                .collect();
            let deleted = events.len() as i64;
            Effect {
                reply: Reply::Delete {
                    revision: if deleted > 0 { next } else { revision },
                    deleted,
                },
                events,
            }
        }
        Call::Range {
            key,
            range_end,
            revision: at,
            ..
        } => {
            if *at != 0 && *at != revision {
                return Err(format!(
                    "a range at revision {at} needs the history, the model is at {revision}"
                ));
            }
            Effect {
                reply: Reply::Range {
                    revision,
                    kvs: view.range(key, range_end),
                },
                events: Vec::new(),
            }
        }
        Call::Txn {
            compares,
            success,
            failure,
        } => execute_txn(view, compares, success, failure)?,
        Call::Compact { .. } => Effect {
            reply: Reply::Compact { revision },
            events: Vec::new(),
        },
        Call::LeaseGrant { .. } => Effect {
            reply: Reply::LeaseGrant { revision },
            events: Vec::new(),
        },
        Call::LeaseRevoke { id } => {
            let events = expire_lease(view, *id);
            Effect {
                reply: Reply::LeaseRevoke {
                    revision: if events.is_empty() { revision } else { next },
                },
                events,
            }
        }
    };
    debug_assert!(effect.events.iter().all(|e| e.kv.mod_revision == next));
    debug_assert_eq!(
        effect.reply.revision(),
        if effect.events.is_empty() {
            revision
        } else {
            next
        }
    );
    Ok(effect)
}

/// The events of `lease` expiring (or being revoked) against `view`: one
/// delete per attached key, sorted by key. Empty when nothing is attached.
pub fn expire_lease<V: View + ?Sized>(view: &V, lease: i64) -> Vec<Event> {
    if lease == 0 {
        return Vec::new();
    }
    let next = view.revision() + 1;
    view.lease_keys(lease)
        .into_iter()
        .map(|key| delete_event(key, next))
        .collect()
}

/// Whether `compare` holds against `view` (see the module for absent keys).
pub fn compare_holds<V: View + ?Sized>(view: &V, compare: &Compare) -> bool {
    let kv = view.get(&compare.key);
    let ord = match (&compare.target, &kv) {
        (Target::Value(_), None) => return false,
        (Target::Value(want), Some(kv)) => kv.value.as_slice().cmp(want.as_slice()),
        (Target::Version(n), _) => kv.as_ref().map_or(0, |kv| kv.version).cmp(n),
        (Target::CreateRevision(n), _) => kv.as_ref().map_or(0, |kv| kv.create_revision).cmp(n),
        (Target::ModRevision(n), _) => kv.as_ref().map_or(0, |kv| kv.mod_revision).cmp(n),
        (Target::Lease(n), _) => kv.as_ref().map_or(0, |kv| kv.lease).cmp(n),
    };
    match compare.result {
        CmpResult::Equal => ord.is_eq(),
        CmpResult::NotEqual => ord.is_ne(),
        CmpResult::Greater => ord.is_gt(),
        CmpResult::Less => ord.is_lt(),
    }
}

fn execute_txn<V: View + ?Sized>(
    view: &V,
    compares: &[Compare],
    success: &[TxnOp],
    failure: &[TxnOp],
) -> Result<Effect, String> {
    let succeeded = compares.iter().all(|c| compare_holds(view, c));
    let branch = if succeeded { success } else { failure };
    check_branch(branch)?;
    let next = view.revision() + 1;
    let mut overlay = Overlay {
        view,
        writes: BTreeMap::new(),
    };
    let mut events = Vec::new();
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        match op {
            TxnOp::Put { key, value, lease } => {
                let kv = put_kv(overlay.get(key), key, value, *lease, next);
                overlay.writes.insert(key.clone(), Some(kv.clone()));
                events.push(put_event(kv));
                responses.push(TxnReply::Put);
            }
            TxnOp::Delete { key, range_end } => {
                let gone = overlay.range(key, range_end);
                for kv in &gone {
                    overlay.writes.insert(kv.key.clone(), None);
                    events.push(delete_event(kv.key.clone(), next));
                }
                responses.push(TxnReply::Delete {
                    deleted: gone.len() as i64,
                });
            }
            TxnOp::Range { key, range_end } => responses.push(TxnReply::Range {
                kvs: overlay.range(key, range_end),
            }),
        }
    }
    let revision = if events.is_empty() { next - 1 } else { next };
    Ok(Effect {
        reply: Reply::Txn {
            revision,
            succeeded,
            responses,
        },
        events,
    })
}

/// etcd refuses a branch that puts a key twice or puts a key inside one of
/// its own delete ranges, whatever the order.
fn check_branch(branch: &[TxnOp]) -> Result<(), String> {
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in branch {
        if let TxnOp::Put { key, .. } = op {
            if !puts.insert(key) {
                return Err(format!(
                    "duplicate key given in txn request: put {}",
                    show(key)
                ));
            }
        }
    }
    for op in branch {
        if let TxnOp::Delete { key, range_end } = op {
            if let Some(k) = puts.iter().find(|k| in_range(key, range_end, k)) {
                return Err(format!(
                    "duplicate key given in txn request: put {} inside a delete range",
                    show(k)
                ));
            }
        }
    }
    Ok(())
}

fn show(bytes: &[u8]) -> String {
    crate::violation::show_bytes(bytes)
}

/// The state seen by the ops of a txn branch: the state before the txn
/// with the branch's earlier writes on top (`None`: deleted).
struct Overlay<'a, V: View + ?Sized> {
    view: &'a V,
    writes: BTreeMap<Bytes, Option<Kv>>,
}

impl<V: View + ?Sized> Overlay<'_, V> {
    fn get(&self, key: &[u8]) -> Option<Kv> {
        match self.writes.get(key) {
            Some(written) => written.clone(),
            None => self.view.get(key),
        }
    }

    fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<Kv> {
        let mut merged: BTreeMap<Bytes, Kv> = self
            .view
            .range(key, range_end)
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        if let Some(bounds) = range_bounds(key, range_end) {
            for (k, written) in self.writes.range::<[u8], _>(bounds) {
                match written {
                    Some(kv) => merged.insert(k.clone(), kv.clone()),
                    None => merged.remove(k),
                };
            }
        }
        merged.into_values().collect()
    }
}

fn put_kv(prev: Option<Kv>, key: &[u8], value: &[u8], lease: i64, revision: i64) -> Kv {
    Kv {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
        mod_revision: revision,
        version: prev.as_ref().map_or(1, |p| p.version + 1),
        lease,
    }
}

pub fn put_event(kv: Kv) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
    }
}

/// A delete event as a watch delivers it: the key and mod_revision only.
pub fn delete_event(key: Bytes, revision: i64) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: Kv {
            key,
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: 0,
        },
    }
}

/// The state at the latest revision. It changes only through
/// [`Store::apply`] (a log entry) or [`Store::commit`] (events that become
/// the next entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    revision: i64,
    kvs: BTreeMap<Bytes, Kv>,
    /// lease -> keys attached to it (lease 0 is not tracked).
    leases: BTreeMap<i64, BTreeSet<Bytes>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at revision 1, as etcd starts.
    pub fn new() -> Self {
        Store {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// The store holding exactly `base` at `revision`.
    pub fn from_base(base: &[Kv], revision: i64) -> Self {
        let mut store = Store {
            revision,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
        };
        for kv in base {
            assert!(
                kv.mod_revision <= revision,
                "base kv {} has mod_revision {} after the base revision {revision}",
                show(&kv.key),
                kv.mod_revision
            );
            store.set(kv.clone());
        }
        store
    }

    /// The kv of `key`, borrowed ([`View::get`] clones).
    pub fn kv(&self, key: &[u8]) -> Option<&Kv> {
        self.kvs.get(key)
    }

    pub fn kvs(&self) -> impl Iterator<Item = &Kv> {
        self.kvs.values()
    }

    /// Why `entry` cannot be the next revision of this store, if it cannot:
    /// not the next revision, no events, a key twice, a put whose
    /// create_revision / version / mod_revision do not follow from the
    /// state, a delete of an absent key.
    pub fn validate(&self, entry: &Entry) -> Result<(), String> {
        let revision = entry.revision;
        if revision != self.revision + 1 {
            return Err(format!(
                "revision {revision} follows revision {}",
                self.revision
            ));
        }
        if entry.events.is_empty() {
            return Err(format!("revision {revision} has no events"));
        }
        let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
        for event in &entry.events {
            let kv = &event.kv;
            if !seen.insert(&kv.key) {
                return Err(format!("key {} twice in one revision", show(&kv.key)));
            }
            if kv.mod_revision != revision {
                return Err(format!(
                    "{:?} of {} has mod_revision {}",
                    event.kind,
                    show(&kv.key),
                    kv.mod_revision
                ));
            }
            let prev = self.kvs.get(&kv.key);
            match event.kind {
                EventKind::Put => {
                    let create = prev.map_or(revision, |p| p.create_revision);
                    let version = prev.map_or(1, |p| p.version + 1);
                    if kv.create_revision != create || kv.version != version {
                        return Err(format!(
                            "put of {} has create_revision {} version {}, the state says {create} and {version}",
                            show(&kv.key),
                            kv.create_revision,
                            kv.version
                        ));
                    }
                }
                EventKind::Delete => {
                    if prev.is_none() {
                        return Err(format!("delete of absent key {}", show(&kv.key)));
                    }
                    if *kv != delete_event(kv.key.clone(), revision).kv {
                        return Err(format!(
                            "delete of {} carries more than the key and mod_revision",
                            show(&kv.key)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies `entry` as the next revision. It should have passed
    /// [`Store::validate`]; an invalid one is applied as far as it makes
    /// sense (a put sets the kv it carries, a delete of an absent key does
    /// nothing) so a checker can go on and report more.
    pub fn apply(&mut self, entry: &Entry) {
        debug_assert!(entry.revision > self.revision);
        for event in &entry.events {
            match event.kind {
                EventKind::Put => self.set(event.kv.clone()),
                EventKind::Delete => self.remove(&event.kv.key),
            }
        }
        self.revision = entry.revision;
    }

    /// Makes `events` the next revision (if there are any) and returns the
    /// entry. For generators: `events` come from [`execute`] against this
    /// store, so they must validate.
    pub fn commit(&mut self, events: Vec<Event>) -> Option<Entry> {
        if events.is_empty() {
            return None;
        }
        let entry = Entry {
            revision: self.revision + 1,
            events,
        };
        if let Err(why) = self.validate(&entry) {
            panic!("commit of an invalid entry: {why}");
        }
        self.apply(&entry);
        Some(entry)
    }

    fn set(&mut self, kv: Kv) {
        self.remove(&kv.key);
        if kv.lease != 0 {
            self.leases
                .entry(kv.lease)
                .or_default()
                .insert(kv.key.clone());
        }
        self.kvs.insert(kv.key.clone(), kv);
    }

    fn remove(&mut self, key: &[u8]) {
        let Some(old) = self.kvs.remove(key) else {
            return;
        };
        if old.lease != 0 {
            let keys = self.leases.get_mut(&old.lease).expect("lease index");
            keys.remove(key);
            if keys.is_empty() {
                self.leases.remove(&old.lease);
            }
        }
    }
}

impl View for Store {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn get(&self, key: &[u8]) -> Option<Kv> {
        self.kvs.get(key).cloned()
    }

    fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<Kv> {
        match range_bounds(key, range_end) {
            Some(bounds) => self
                .kvs
                .range::<[u8], _>(bounds)
                .map(|(_, kv)| kv.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    fn lease_keys(&self, lease: i64) -> Vec<Bytes> {
        self.leases
            .get(&lease)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Call {
        Call::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    fn run(store: &mut Store, call: &Call) -> Reply {
        let effect = execute(store, call).expect("valid call");
        store.commit(effect.events);
        effect.reply
    }

    // Ranges over keys a, b, c:
    //
    //   [b, "")     -> b          single key
    //   [b, \0)     -> b, c       from key
    //   [a, c)      -> a, b
    //   [c, a)      -> nothing    end <= key
    #[test]
    fn range_semantics() {
        let mut store = Store::new();
        for k in ["c", "a", "b"] {
            run(&mut store, &put(k, k));
        }
        let cases: [(&str, &[u8], &[&str]); 5] = [
            ("b", b"", &["b"]),
            ("b", &[0], &["b", "c"]),
            ("a", b"c", &["a", "b"]),
            ("c", b"a", &[]),
            ("c", b"c", &[]),
        ];
        for (i, (key, end, want)) in cases.iter().enumerate() {
            let got: Vec<Bytes> = store
                .range(key.as_bytes(), end)
                .into_iter()
                .map(|kv| kv.key)
                .collect();
            let want: Vec<Bytes> = want.iter().map(|k| k.as_bytes().to_vec()).collect();
            assert_eq!(got, want, "case #{i}");
        }
    }

    #[test]
    fn put_versions_and_delete_revisions() {
        let mut store = Store::new();
        assert_eq!(run(&mut store, &put("a", "1")), Reply::Put { revision: 2 });
        assert_eq!(run(&mut store, &put("a", "2")), Reply::Put { revision: 3 });
        let a = store.get(b"a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
        let del = Call::Delete {
            key: b"a".to_vec(),
            range_end: vec![0],
        };
        assert_eq!(
            run(&mut store, &del),
            Reply::Delete {
                revision: 4,
                deleted: 1
            }
        );
        assert_eq!(
            run(&mut store, &del),
            Reply::Delete {
                revision: 4,
                deleted: 0
            }
        );
        assert_eq!(run(&mut store, &put("a", "3")), Reply::Put { revision: 5 });
        let a = store.get(b"a").unwrap();
        assert_eq!((a.create_revision, a.version), (5, 1));
    }

    #[test]
    fn txn_is_one_revision_and_reads_its_own_writes() {
        let mut store = Store::new();
        run(&mut store, &put("a", "1"));
        let txn = Call::Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                target: Target::ModRevision(2),
                result: CmpResult::Equal,
            }],
            success: vec![
                TxnOp::Put {
                    key: b"b".to_vec(),
                    value: b"2".to_vec(),
                    lease: 0,
                },
                TxnOp::Delete {
                    key: b"a".to_vec(),
                    range_end: Vec::new(),
                },
                TxnOp::Range {
                    key: b"a".to_vec(),
                    range_end: b"z".to_vec(),
                },
            ],
            failure: Vec::new(),
        };
        let reply = run(&mut store, &txn);
        let Reply::Txn {
            revision,
            succeeded,
            responses,
        } = reply
        else {
            panic!("not a txn reply");
        };
        assert_eq!((revision, succeeded), (3, true));
        assert_eq!(responses[1], TxnReply::Delete { deleted: 1 });
        let TxnReply::Range { kvs } = &responses[2] else {
            panic!("not a range");
        };
        assert_eq!(kvs.len(), 1);
        assert_eq!((kvs[0].key.as_slice(), kvs[0].mod_revision), (&b"b"[..], 3));
        // The same txn again: the compare fails, the empty failure branch
        // writes nothing.
        let again = run(&mut store, &txn);
        assert_eq!(
            again,
            Reply::Txn {
                revision: 3,
                succeeded: false,
                responses: vec![]
            }
        );
    }

    #[test]
    fn compare_on_absent_key() {
        let store = Store::new();
        let cmp = |target, result| Compare {
            key: b"x".to_vec(),
            target,
            result,
        };
        assert!(compare_holds(
            &store,
            &cmp(Target::Version(0), CmpResult::Equal)
        ));
        assert!(compare_holds(
            &store,
            &cmp(Target::ModRevision(0), CmpResult::Equal)
        ));
        assert!(!compare_holds(
            &store,
            &cmp(Target::Lease(0), CmpResult::Greater)
        ));
        for result in [
            CmpResult::Equal,
            CmpResult::NotEqual,
            CmpResult::Greater,
            CmpResult::Less,
        ] {
            assert!(!compare_holds(
                &store,
                &cmp(Target::Value(Vec::new()), result)
            ));
        }
    }

    #[test]
    fn duplicate_keys_in_a_branch_are_refused() {
        let store = Store::new();
        let txn = Call::Txn {
            compares: Vec::new(),
            success: vec![
                TxnOp::Delete {
                    key: b"a".to_vec(),
                    range_end: b"c".to_vec(),
                },
                TxnOp::Put {
                    key: b"b".to_vec(),
                    value: b"1".to_vec(),
                    lease: 0,
                },
            ],
            failure: Vec::new(),
        };
        assert!(execute(&store, &txn).is_err());
    }

    #[test]
    fn lease_revoke_deletes_attached_keys_in_one_revision() {
        let mut store = Store::new();
        for (k, lease) in [("a", 7), ("b", 0), ("c", 7)] {
            run(
                &mut store,
                &Call::Put {
                    key: k.into(),
                    value: k.into(),
                    lease,
                },
            );
        }
        // Moving c off the lease detaches it.
        run(&mut store, &put("c", "c2"));
        let reply = run(&mut store, &Call::LeaseRevoke { id: 7 });
        assert_eq!(reply, Reply::LeaseRevoke { revision: 6 });
        let keys: Vec<Bytes> = store.kvs().map(|kv| kv.key.clone()).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(
            run(&mut store, &Call::LeaseRevoke { id: 7 }),
            Reply::LeaseRevoke { revision: 6 }
        );
    }

    #[test]
    fn validate_rejects_inconsistent_entries() {
        let mut store = Store::new();
        run(&mut store, &put("a", "1"));
        let good = execute(&store, &put("a", "2")).unwrap().events;
        let mut bad_version = good.clone();
        bad_version[0].kv.version = 1;
        let cases = [
            (3, good.clone(), true),
            (4, good.clone(), false),
            (3, bad_version, false),
            (3, vec![delete_event(b"zz".to_vec(), 3)], false),
            (3, vec![good[0].clone(), good[0].clone()], false),
            (3, Vec::new(), false),
        ];
        for (i, (revision, events, ok)) in cases.into_iter().enumerate() {
            let got = store.validate(&Entry { revision, events });
            assert_eq!(got.is_ok(), ok, "case #{i}: got {got:?}");
        }
    }
}
