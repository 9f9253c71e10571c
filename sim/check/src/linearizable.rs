//! The linearizability checker: does a recorded client history agree with
//! the log the system says it wrote?
//!
//! **What linearizable means here.** An etcd-compatible store totally
//! orders its writes by revision, and every reply names a revision (the
//! one a write created, the one a read saw). So instead of searching for a
//! linearization, the checker takes the order the system claims, its log
//! (one entry per revision, as a watch from the first revision delivers
//! it), and verifies that this claim agrees with every client observation:
//!
//! 1. the log is well formed: consecutive revisions from the base, each
//!    put's create_revision / version / mod_revision follow from the state
//!    before it, deletes only of existing keys, no key twice in an entry
//!    (`MalformedLog`; nothing else is checked against a malformed log);
//! 2. every entry is explained by exactly one client op or by a lease
//!    expiry: an Ok op whose reply names that revision, else an op of
//!    unknown outcome whose effect against the state before the entry is
//!    exactly the entry, else the expiry of one lease (the entry deletes
//!    exactly the keys attached to it). Put values are unique in the
//!    workload, so an entry with puts names its op. (`PhantomWrite`,
//!    `FailedWriteApplied`, `DuplicateApplication`, `EffectMismatch`);
//! 3. every acknowledged write is in the log at its reply's revision
//!    (`AckedWriteLost`);
//! 4. writes respect real time: a write that completed before another was
//!    invoked has the lower revision (`RealTimeOrder`);
//! 5. every Ok read (range, read-only txn, delete that found nothing,
//!    revoke that found nothing) returned exactly the state at its revision
//!    (`ReadMismatch`), a linearizable read is not older than anything
//!    completed before it was invoked (`StaleRead`), no read saw a write
//!    invoked after the read completed (`FutureRead`), and no reply names a
//!    revision beyond the log (`ReadBeyondLog`).
//!
//! Together these say: the log order is a linearization of the history
//! (writes at their revisions, reads at theirs, each inside its
//! invoke..complete interval), and the system's log is that order.
//!
//! **How.** The log is replayed once with a [`Store`] (the state before
//! each entry, to compute what an op would do there) and indexed once
//! ([`Index`]: every key's versions, so a read at any revision is a binary
//! search per key). Real-time checks sort ops by completion time and take
//! prefix maxima: O(n log n). An op of unknown outcome whose effect is only
//! deletes is not named by a value; when several could explain an entry,
//! the entries get them by a maximum matching among those whose placement
//! breaks no real-time order, so an honest history is never rejected for
//! an unlucky choice.
//!
//! **What it cannot detect.** Anything the history and the log agree on:
//! if the log itself lies consistently (a write applied on some members
//! only, with the log taken from one of them), use
//! [`crate::check_final_states`] and the watch checker. Operations that
//! leave no trace in replies or log: lease grants and their TTLs (when a
//! lease should have expired), compaction (a read of a compacted revision
//! that succeeded is only checked for content), the lease a put named
//! existing. Reads at revisions before the base are not checked for
//! content. Serializable reads may be arbitrarily stale (only their content
//! and that they saw no future write are checked). When an unknown op and
//! a lease expiry explain the same entry equally, the expiry is chosen and
//! the op counted as not applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Call, Kv, Op, Outcome, Reply, TxnOp, TxnReply};
use crate::index::Index;
use crate::log::{Entry, EventKind};
use crate::model::{execute, expire_lease, in_range, Effect, Store, View};
use crate::violation::{cut, show_events, show_kvs, Found, OpRef, Violation};

/// What a successful check covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ok ops whose write is in the log at their revision.
    pub writes_acked: usize,
    /// Ops of unknown outcome that could write, and took effect.
    pub unknown_writes_applied: usize,
    /// Ops of unknown outcome that could write, and did not.
    pub unknown_writes_not_applied: usize,
    pub reads_linearizable: usize,
    pub reads_serializable: usize,
    /// Ok txns checked (writing or read-only).
    pub txns: usize,
    pub log_revisions: usize,
    /// Log entries explained by a lease expiring.
    pub lease_expiries: usize,
}

/// Checks `history` against `log`, which starts from `base`, the full state
/// at `base_revision` (usually empty at 1). See the module for what is
/// checked. At most [`crate::violation::VIOLATIONS_SHOWN_MAX`] violations
/// are returned, with a final `Truncated` counting all.
pub fn check(
    history: &[Op],
    base: &[Kv],
    base_revision: i64,
    log: &[Entry],
) -> Result<Stats, Vec<Violation>> {
    let index = replay(base, base_revision, log)?;
    let mut found = Found::default();
    let roles: Vec<Role> = history.iter().map(|op| role_of(op, &mut found)).collect();
    let mut explainer = Explainer::new(history, &roles, &mut found);
    let mut store = Store::from_base(base, base_revision);
    for entry in log {
        explainer.explain(&store, entry);
        store.apply(entry);
    }
    explainer.resolve_pending(log);
    let lease_expiries = explainer.expiries;
    let placed = explainer.settle(index.last_revision());
    check_write_order(history, &roles, &placed, &mut found);
    let mut stats = check_reads(history, &roles, &placed, &index, &mut found);
    stats.log_revisions = log.len();
    stats.lease_expiries = lease_expiries;
    for (i, role) in roles.iter().enumerate() {
        match role {
            Role::Write { .. } | Role::Revoke { .. } if placed[i].is_some() => {
                stats.writes_acked += 1
            }
            Role::Unknown if placed[i].is_some() => stats.unknown_writes_applied += 1,
            Role::Unknown => stats.unknown_writes_not_applied += 1,
            _ => {}
        }
        if matches!(history[i].call, Call::Txn { .. })
            && matches!(history[i].outcome, Outcome::Ok(_))
        {
            stats.txns += 1;
        }
    }
    found.into_result(stats)
}

/// Replays `log` from `base`: `MalformedLog` for every entry that does not
/// follow (and for an invalid base), else the index of every revision.
pub(crate) fn replay(
    base: &[Kv],
    base_revision: i64,
    log: &[Entry],
) -> Result<Index, Vec<Violation>> {
    let mut found = Found::default();
    check_base(base, base_revision, &mut found);
    if !found.is_empty() {
        return Err(found.into_vec());
    }
    let mut store = Store::from_base(base, base_revision);
    for entry in log {
        if let Err(reason) = store.validate(entry) {
            found.push(Violation::MalformedLog {
                revision: entry.revision,
                reason,
            });
        }
        // Skip an entry that goes back; apply the others (a gap resyncs).
        if entry.revision > store.revision() {
            store.apply(entry);
        }
    }
    if !found.is_empty() {
        return Err(found.into_vec());
    }
    let mut index = Index::new(base, base_revision);
    for entry in log {
        index.push(entry);
    }
    Ok(index)
}

fn check_base(base: &[Kv], base_revision: i64, found: &mut Found) {
    let mut keys = BTreeSet::new();
    for kv in base {
        let key = crate::violation::show_bytes(&kv.key);
        let reason = if !keys.insert(&kv.key) {
            format!("base holds key {key} twice")
        } else if kv.mod_revision > base_revision || kv.create_revision > kv.mod_revision {
            format!(
                "base kv {key} has create_revision {} mod_revision {} (base revision {base_revision})",
                kv.create_revision, kv.mod_revision
            )
        } else if kv.version < 1 {
            format!("base kv {key} has version {}", kv.version)
        } else {
            continue;
        };
        found.push(Violation::MalformedLog {
            revision: base_revision,
            reason,
        });
    }
}

/// What an op's outcome lets the checker expect of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing to check: compact, lease grant, refused or unknown ops that
    /// cannot write, replies that do not fit their call (reported).
    None,
    /// An Ok op that says it wrote at `revision`.
    Write { revision: i64 },
    /// An Ok lease revoke: it wrote at `revision` if the entry there is its
    /// effect; else it found no key attached, which is checked as a read.
    Revoke { revision: i64 },
    /// An Ok op that wrote nothing: it saw the state at `revision`.
    Read { revision: i64, linearizable: bool },
    /// Unknown outcome, and the call can write.
    Unknown,
    /// Refused, and the call can write: it must not be in the log.
    Failed,
}

impl Role {
    /// The revision an Ok op's reply names, if it is checked.
    fn revision(self) -> Option<i64> {
        match self {
            Role::Write { revision } | Role::Revoke { revision } | Role::Read { revision, .. } => {
                Some(revision)
            }
            Role::None | Role::Unknown | Role::Failed => None,
        }
    }
}

fn role_of(op: &Op, found: &mut Found) -> Role {
    let reply = match &op.outcome {
        Outcome::Unknown if op.call.may_write() => return Role::Unknown,
        Outcome::Failed(_) if op.call.may_write() => return Role::Failed,
        Outcome::Unknown | Outcome::Failed(_) => return Role::None,
        Outcome::Ok(reply) => reply,
    };
    match (&op.call, reply) {
        (Call::Range { serializable, .. }, Reply::Range { revision, .. }) => Role::Read {
            revision: *revision,
            linearizable: !serializable,
        },
        (Call::Put { .. }, Reply::Put { revision })
        | (Call::Delete { .. }, Reply::Delete { revision, .. })
        | (Call::Txn { .. }, Reply::Txn { revision, .. }) => {
            if op.call.wrote(reply) {
                Role::Write {
                    revision: *revision,
                }
            } else {
                Role::Read {
                    revision: *revision,
                    linearizable: true,
                }
            }
        }
        (Call::LeaseRevoke { .. }, Reply::LeaseRevoke { revision }) => Role::Revoke {
            revision: *revision,
        },
        (Call::Compact { .. }, Reply::Compact { .. })
        | (Call::LeaseGrant { .. }, Reply::LeaseGrant { .. }) => Role::None,
        (call, reply) => {
            found.push(Violation::EffectMismatch {
                op: OpRef::new(op),
                revision: reply.revision(),
                expected: format!("a reply to {}", call_name(call)),
                got: cut(format!("{reply:?}")),
            });
            Role::None
        }
    }
}

fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Put { .. } => "a put",
        Call::Delete { .. } => "a delete",
        Call::Range { .. } => "a range",
        Call::Txn { .. } => "a txn",
        Call::Compact { .. } => "a compact",
        Call::LeaseGrant { .. } => "a lease grant",
        Call::LeaseRevoke { .. } => "a lease revoke",
    }
}

/// A delete-only entry that no acknowledged op and no lease expiry
/// explains, waiting for the matching of unknown ops.
struct Pending {
    revision: i64,
    /// Ok ops whose reply names this revision, with what they would do.
    claims: Vec<(usize, String)>,
    /// Unknown ops whose effect is this entry and whose placement here
    /// breaks no real-time order, earliest invoked first.
    feasible: Vec<usize>,
    /// The groups of deleters whose effect is this entry, with how many of
    /// their unknown ops are feasible (the rest are placed here only as a
    /// last resort: the real-time checks will then report them; a refused
    /// one means `FailedWriteApplied`).
    groups: Vec<(usize, usize)>,
}

/// Unknown or refused ops with the same call (so the same effect in every
/// state) that could write an entry of deletes only.
struct Deleters<'a> {
    call: &'a Call,
    /// Unknown ones, by invoke time.
    unknown: Vec<usize>,
    failed: Vec<usize>,
}

/// Step 2 and 3: assigns every log entry to the op (or lease expiry) that
/// explains it.
struct Explainer<'a> {
    history: &'a [Op],
    roles: &'a [Role],
    /// (put value, an op that may put it), sorted: a value names its op
    /// (values are unique in a sane workload).
    owners: Vec<(&'a [u8], usize)>,
    /// Revision -> the Ok ops whose reply says they wrote it.
    claims_at: BTreeMap<i64, Vec<usize>>,
    /// Unknown and refused ops that could write an entry of deletes only.
    deleters: Vec<Deleters<'a>>,
    /// When an op of unknown outcome must have been invoked by to be
    /// placed at a revision.
    deadlines: Deadlines,
    /// The revision each op's write is at.
    placed: Vec<Option<i64>>,
    /// Claims whose revision holds something else: (op, revision, why).
    lost: Vec<(usize, i64, String)>,
    pending: Vec<Pending>,
    expiries: usize,
    found: &'a mut Found,
}

impl<'a> Explainer<'a> {
    fn new(history: &'a [Op], roles: &'a [Role], found: &'a mut Found) -> Self {
        let mut owners: Vec<(&[u8], usize)> = Vec::new();
        let mut claims_at: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let mut deleters: BTreeMap<GroupKey, Deleters<'a>> = BTreeMap::new();
        let mut seen = Vec::new();
        for (i, (op, role)) in history.iter().zip(roles).enumerate() {
            owners.extend(op.call.put_values().into_iter().map(|value| (value, i)));
            match role {
                Role::Write { revision } | Role::Revoke { revision } => {
                    claims_at.entry(*revision).or_default().push(i)
                }
                Role::Unknown | Role::Failed if may_delete_only(&op.call) => {
                    let group = deleters.entry(group_key(&op.call, i)).or_insert(Deleters {
                        call: &op.call,
                        unknown: Vec::new(),
                        failed: Vec::new(),
                    });
                    match role {
                        Role::Unknown => group.unknown.push(i),
                        _ => group.failed.push(i),
                    }
                }
                _ => {}
            }
            if let Some(revision) = role.revision() {
                seen.push((revision, op.complete));
            }
        }
        owners.sort_unstable();
        // A revoke that found nothing names the current revision, which a
        // delete of the same keys may have just created: writes first.
        for claims in claims_at.values_mut() {
            claims.sort_by_key(|&i| (matches!(roles[i], Role::Revoke { .. }), i));
        }
        let mut deleters: Vec<Deleters> = deleters.into_values().collect();
        for group in &mut deleters {
            group.unknown.sort_by_key(|&i| (history[i].invoke, i));
        }
        Explainer {
            history,
            roles,
            owners,
            claims_at,
            deleters,
            deadlines: Deadlines::new(seen),
            placed: vec![None; history.len()],
            lost: Vec::new(),
            pending: Vec::new(),
            expiries: 0,
            found,
        }
    }

    fn op(&self, i: usize) -> OpRef {
        OpRef::new(&self.history[i])
    }

    /// Explains `entry`; `store` is the state just before it.
    fn explain(&mut self, store: &Store, entry: &Entry) {
        let claims = self
            .claims_at
            .get(&entry.revision)
            .cloned()
            .unwrap_or_default();
        if entry.has_put() {
            self.explain_puts(store, entry, &claims);
        } else {
            self.explain_deletes(store, entry, &claims);
        }
    }

    /// An entry with puts names its op by the put values.
    fn explain_puts(&mut self, store: &Store, entry: &Entry, claims: &[usize]) {
        let revision = entry.revision;
        let value = entry
            .events
            .iter()
            .find(|e| e.kind == EventKind::Put)
            .map(|e| e.kv.value.as_slice())
            .expect("an entry with a put");
        let first = self.owners.partition_point(|&(v, _)| v < value);
        let owners: Vec<usize> = self.owners[first..]
            .iter()
            .take_while(|&&(v, _)| v == value)
            .map(|&(_, i)| i)
            .collect();
        let owner = owners
            .iter()
            .find(|o| claims.contains(o))
            .or_else(|| owners.iter().find(|&&o| self.placed[o].is_none()))
            .or(owners.first())
            .copied();
        let chosen = match owner {
            Some(x) => {
                self.explain_by_owner(x, store, entry);
                Some(x)
            }
            None => match self.first_write(claims.iter().copied()) {
                Some(c) => {
                    let effect = execute(store, &self.history[c].call);
                    self.found.push(Violation::EffectMismatch {
                        op: self.op(c),
                        revision,
                        expected: show_effect(&effect),
                        got: show_events(&entry.events),
                    });
                    self.placed[c] = Some(revision);
                    Some(c)
                }
                None => {
                    self.found.push(Violation::PhantomWrite {
                        revision,
                        events: show_events(&entry.events),
                    });
                    None
                }
            },
        };
        let holder = match chosen {
            Some(x) => format!("op {}", self.history[x].id),
            None => "a phantom write".to_string(),
        };
        for &c in claims.iter().filter(|&&c| Some(c) != chosen) {
            let why = format!("revision {revision} holds the write of {holder}");
            self.lost.push((c, revision, why));
        }
    }

    /// `x` put a value of `entry`: it must be its one application, and be
    /// exactly what `x` does against `store`.
    fn explain_by_owner(&mut self, x: usize, store: &Store, entry: &Entry) {
        let revision = entry.revision;
        if let Some(first_revision) = self.placed[x] {
            self.found.push(Violation::DuplicateApplication {
                op: self.op(x),
                first_revision,
                revision,
            });
            return;
        }
        self.placed[x] = Some(revision);
        let effect = execute(store, &self.history[x].call);
        let mismatch = |found: &mut Found, op: OpRef, expected: String| {
            found.push(Violation::EffectMismatch {
                op,
                revision,
                expected,
                got: show_events(&entry.events),
            })
        };
        match self.roles[x] {
            Role::Failed => self.found.push(Violation::FailedWriteApplied {
                op: self.op(x),
                revision,
            }),
            Role::Write { revision: acked } if acked != revision => mismatch(
                self.found,
                self.op(x),
                format!("its write at revision {acked}, as acknowledged"),
            ),
            Role::Write { .. } | Role::Unknown => {
                if !matches(&effect, entry) {
                    mismatch(self.found, self.op(x), show_effect(&effect));
                } else if let (Ok(effect), Outcome::Ok(reply)) = (&effect, &self.history[x].outcome)
                {
                    check_reply(self.found, &self.history[x], revision, effect, reply);
                }
            }
            Role::Read { revision: at, .. } => mismatch(
                self.found,
                self.op(x),
                format!("no write (its reply says it wrote nothing, at revision {at})"),
            ),
            Role::None | Role::Revoke { .. } => {
                mismatch(self.found, self.op(x), "no write".to_string())
            }
        }
    }

    /// An entry of deletes only: an acknowledged op at its revision, else
    /// a lease expiry, else (after the matching) an unknown op.
    fn explain_deletes(&mut self, store: &Store, entry: &Entry, claims: &[usize]) {
        let revision = entry.revision;
        let mut others = Vec::new();
        let mut chosen = None;
        for &c in claims {
            let effect = execute(store, &self.history[c].call);
            match (&effect, chosen) {
                (Ok(effect), None) if effect.events == entry.events => {
                    chosen = Some(c);
                    self.placed[c] = Some(revision);
                    if let Outcome::Ok(reply) = &self.history[c].outcome {
                        check_reply(self.found, &self.history[c], revision, effect, reply);
                    }
                }
                _ => others.push((c, show_effect(&effect))),
            }
        }
        let holder = match chosen {
            Some(c) => format!("the write of op {}", self.history[c].id),
            None if is_lease_expiry(store, entry) => {
                self.expiries += 1;
                "a lease expiry".to_string()
            }
            None => {
                self.pending_deletes(store, entry, others);
                return;
            }
        };
        for (c, _) in others {
            let why = format!("revision {revision} holds {holder}");
            self.lost.push((c, revision, why));
        }
    }

    fn pending_deletes(&mut self, store: &Store, entry: &Entry, claims: Vec<(usize, String)>) {
        let key = &entry.events[0].kv.key;
        let deadline = self.deadlines.invoke_max(entry.revision);
        let mut pending = Pending {
            revision: entry.revision,
            claims,
            feasible: Vec::new(),
            groups: Vec::new(),
        };
        for (g, group) in self.deleters.iter().enumerate() {
            if !could_delete(store, group.call, key) || !matches(&execute(store, group.call), entry)
            {
                continue;
            }
            let history = self.history;
            let feasible = match deadline {
                Some(t) => group.unknown.partition_point(|&u| history[u].invoke <= t),
                None => group.unknown.len(),
            };
            pending
                .feasible
                .extend_from_slice(&group.unknown[..feasible]);
            pending.groups.push((g, feasible));
        }
        // Earliest invoked first: the most permissive choice.
        pending
            .feasible
            .sort_by_key(|&u| (self.history[u].invoke, u));
        self.pending.push(pending);
    }

    /// Gives the pending entries their unknown ops (a maximum matching
    /// among feasible placements), then names what is left.
    fn resolve_pending(&mut self, log: &[Entry]) {
        let pending = std::mem::take(&mut self.pending);
        // An unknown txn may have been placed by its put values already.
        let candidates: Vec<Vec<usize>> = pending
            .iter()
            .map(|p| {
                let free = p.feasible.iter().filter(|&&u| self.placed[u].is_none());
                free.copied().collect()
            })
            .collect();
        let matched = max_matching(&candidates);
        for (p, u) in pending.iter().zip(&matched) {
            if let Some(u) = *u {
                self.placed[u] = Some(p.revision);
            }
        }
        let first_revision = log.first().map_or(0, |e| e.revision);
        for (p, u) in pending.iter().zip(matched) {
            let entry = &log[(p.revision - first_revision) as usize];
            debug_assert_eq!(entry.revision, p.revision);
            let holder = if let Some(u) = u {
                Some(u)
            } else if let Some(c) = self.first_write(p.claims.iter().map(|&(c, _)| c)) {
                let expected = p.claims.iter().find(|&&(o, _)| o == c).map(|(_, e)| e);
                self.found.push(Violation::EffectMismatch {
                    op: self.op(c),
                    revision: p.revision,
                    expected: expected.cloned().unwrap_or_default(),
                    got: show_events(&entry.events),
                });
                self.placed[c] = Some(p.revision);
                Some(c)
            } else if let Some(u) = self.last_resort(p) {
                self.placed[u] = Some(p.revision);
                Some(u)
            } else if let Some(u) = p
                .groups
                .iter()
                .find_map(|&(g, _)| self.deleters[g].failed.first().copied())
            {
                self.found.push(Violation::FailedWriteApplied {
                    op: self.op(u),
                    revision: p.revision,
                });
                Some(u)
            } else {
                self.found.push(Violation::PhantomWrite {
                    revision: p.revision,
                    events: show_events(&entry.events),
                });
                None
            };
            for &(c, _) in &p.claims {
                if Some(c) != holder {
                    let why = match holder {
                        Some(h) => format!(
                            "revision {} holds the write of op {}",
                            p.revision, self.history[h].id
                        ),
                        None => format!("revision {} holds a phantom write", p.revision),
                    };
                    self.lost.push((c, p.revision, why));
                }
            }
        }
    }

    /// The first of `claims` that is a write for sure (a revoke's revision
    /// may be that of a revoke that found nothing).
    fn first_write(&self, mut claims: impl Iterator<Item = usize>) -> Option<usize> {
        claims.find(|&c| matches!(self.roles[c], Role::Write { .. }))
    }

    /// An unknown op whose effect is `p`'s entry though it was invoked too
    /// late to be there.
    fn last_resort(&self, p: &Pending) -> Option<usize> {
        p.groups.iter().find_map(|&(g, feasible)| {
            self.deleters[g].unknown[feasible..]
                .iter()
                .copied()
                .find(|&u| self.placed[u].is_none())
        })
    }

    /// Reports the acknowledged writes that are not in the log, returns
    /// where every op's write is.
    fn settle(self, last_revision: i64) -> Vec<Option<i64>> {
        let Explainer {
            history,
            roles,
            placed,
            lost,
            found,
            ..
        } = self;
        debug_assert!(
            placed.iter().flatten().all(|&r| r <= last_revision),
            "an op placed beyond the log's last revision {last_revision}"
        );
        for (c, revision, reason) in lost {
            if placed[c].is_none() && matches!(roles[c], Role::Write { .. }) {
                found.push(Violation::AckedWriteLost {
                    op: OpRef::new(&history[c]),
                    revision,
                    reason,
                });
            }
        }
        for (i, role) in roles.iter().enumerate() {
            if let Role::Write { revision } = role {
                if *revision > last_revision && placed[i].is_none() {
                    found.push(Violation::AckedWriteLost {
                        op: OpRef::new(&history[i]),
                        revision: *revision,
                        reason: format!("the log ends at revision {last_revision}"),
                    });
                }
            }
        }
        placed
    }
}

/// Deleters with equal keys make the same calls (a txn is its own group).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey<'a> {
    Delete(&'a [u8], &'a [u8]),
    Revoke(i64),
    Txn(usize),
}

fn group_key(call: &Call, op: usize) -> GroupKey<'_> {
    match call {
        Call::Delete { key, range_end } => GroupKey::Delete(key, range_end),
        Call::LeaseRevoke { id } => GroupKey::Revoke(*id),
        _ => GroupKey::Txn(op),
    }
}

/// Whether `call` can produce an entry of deletes only.
fn may_delete_only(call: &Call) -> bool {
    match call {
        Call::Delete { .. } | Call::LeaseRevoke { .. } => true,
        Call::Txn {
            success, failure, ..
        } => [success, failure].iter().any(|branch| {
            branch.iter().any(|op| matches!(op, TxnOp::Delete { .. }))
                && !branch.iter().any(|op| matches!(op, TxnOp::Put { .. }))
        }),
        _ => false,
    }
}

/// A cheap filter before computing an effect: can `call`, against `store`,
/// delete `key`?
fn could_delete(store: &Store, call: &Call, key: &[u8]) -> bool {
    match call {
        Call::Delete { key: k, range_end } => in_range(k, range_end, key),
        Call::LeaseRevoke { id } => store.kv(key).is_some_and(|kv| kv.lease == *id),
        Call::Txn {
            success, failure, ..
        } => success.iter().chain(failure).any(
            |op| matches!(op, TxnOp::Delete { key: k, range_end } if in_range(k, range_end, key)),
        ),
        _ => false,
    }
}

/// Whether `entry` (deletes only) is exactly one lease expiring.
fn is_lease_expiry(store: &Store, entry: &Entry) -> bool {
    let Some(kv) = store.kv(&entry.events[0].kv.key) else {
        return false;
    };
    kv.lease != 0 && expire_lease(store, kv.lease) == entry.events
}

fn matches(effect: &Result<Effect, String>, entry: &Entry) -> bool {
    effect.as_ref().is_ok_and(|e| e.events == entry.events)
}

fn show_effect(effect: &Result<Effect, String>) -> String {
    match effect {
        Ok(effect) if effect.events.is_empty() => {
            format!("no write: {}", show_reply(&effect.reply))
        }
        Ok(effect) => show_events(&effect.events),
        Err(why) => format!("a refusal ({why})"),
    }
}

/// The reply of an Ok op whose write is the entry at `revision` (so its
/// events are right) must be the model's: a txn's branch, its responses
/// (ranges inside see the txn's earlier writes), a delete's count.
fn check_reply(found: &mut Found, op: &Op, revision: i64, effect: &Effect, got: &Reply) {
    if effect.reply == *got {
        return;
    }
    let op_ref = OpRef::new(op);
    if let (
        Reply::Txn {
            succeeded: want_ok,
            responses: want,
            ..
        },
        Reply::Txn {
            succeeded: got_ok,
            responses: got,
            ..
        },
    ) = (&effect.reply, got)
    {
        if want_ok == got_ok && want.len() == got.len() {
            for (w, g) in want.iter().zip(got) {
                if let (TxnReply::Range { kvs: w }, TxnReply::Range { kvs: g }) = (w, g) {
                    if w != g {
                        found.push(Violation::ReadMismatch {
                            op: op_ref.clone(),
                            revision,
                            expected: show_kvs(w),
                            got: show_kvs(g),
                        });
                        return;
                    }
                }
            }
        }
    }
    found.push(Violation::EffectMismatch {
        op: op_ref,
        revision,
        expected: show_reply(&effect.reply),
        got: show_reply(got),
    });
}

fn show_reply(reply: &Reply) -> String {
    let text = match reply {
        Reply::Delete { revision, deleted } => {
            format!("deleted {deleted} (revision {revision})")
        }
        Reply::Range { revision, kvs } => format!("{} (revision {revision})", show_kvs(kvs)),
        Reply::Txn {
            revision,
            succeeded,
            responses,
        } => {
            let parts: Vec<String> = responses
                .iter()
                .map(|r| match r {
                    TxnReply::Put => "put".to_string(),
                    TxnReply::Delete { deleted } => format!("deleted {deleted}"),
                    TxnReply::Range { kvs } => show_kvs(kvs),
                })
                .collect();
            format!(
                "txn succeeded={succeeded} [{}] (revision {revision})",
                parts.join("; ")
            )
        }
        other => format!("{other:?}"),
    };
    cut(text)
}

/// Gives each entry at most one of its candidate ops, no op twice, as many
/// entries as possible (Kuhn's augmenting paths, iterative; candidates are
/// tried in order, so an entry gets its first free one when it can).
fn max_matching(candidates: &[Vec<usize>]) -> Vec<Option<usize>> {
    let mut assigned: Vec<Option<usize>> = vec![None; candidates.len()];
    let mut holder: BTreeMap<usize, usize> = BTreeMap::new();
    for start in 0..candidates.len() {
        if candidates[start].is_empty() {
            continue;
        }
        let mut visited = BTreeSet::new();
        // stack[i]: (entry, next candidate to try); path[i]: the op taken
        // from stack[i + 1]'s entry to give to stack[i]'s.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        let mut path: Vec<usize> = Vec::new();
        let mut free = None;
        while let Some(top) = stack.last_mut() {
            let (entry, next) = *top;
            let Some(&op) = candidates[entry].get(next) else {
                stack.pop();
                path.pop();
                continue;
            };
            top.1 += 1;
            if !visited.insert(op) {
                continue;
            }
            match holder.get(&op) {
                None => {
                    free = Some(op);
                    break;
                }
                Some(&other) => {
                    path.push(op);
                    stack.push((other, 0));
                }
            }
        }
        let Some(free) = free else {
            continue;
        };
        path.push(free);
        debug_assert_eq!(path.len(), stack.len());
        for (&(entry, _), &op) in stack.iter().zip(&path) {
            assigned[entry] = Some(op);
            holder.insert(op, entry);
        }
    }
    assigned
}

/// Per revision r, the latest an op of unknown outcome can have been
/// invoked to be placed at r: the earliest completion of an Ok op whose
/// reply named r or later (invoked after that, it would follow that op in
/// real time, so its revision would exceed r).
struct Deadlines {
    revisions: Vec<i64>,
    /// earliest[i]: the earliest completion among items i.. (by revision).
    earliest: Vec<u64>,
}

impl Deadlines {
    fn new(mut items: Vec<(i64, u64)>) -> Self {
        items.sort();
        let revisions = items.iter().map(|&(r, _)| r).collect();
        let mut earliest: Vec<u64> = items.iter().map(|&(_, c)| c).collect();
        for i in (0..earliest.len().saturating_sub(1)).rev() {
            earliest[i] = earliest[i].min(earliest[i + 1]);
        }
        Deadlines {
            revisions,
            earliest,
        }
    }

    /// `None`: no deadline (nothing named `revision` or later).
    fn invoke_max(&self, revision: i64) -> Option<u64> {
        let n = self.revisions.partition_point(|&r| r < revision);
        self.earliest.get(n).copied()
    }
}

/// Items (key, value, op) sorted by key with the running maximum of value:
/// "the largest value among items with a key below x" in O(log n).
struct PrefixMax<K, V> {
    keys: Vec<K>,
    best: Vec<(V, usize)>,
}

impl<K: Ord + Copy, V: Ord + Copy> PrefixMax<K, V> {
    fn new(mut items: Vec<(K, V, usize)>) -> Self {
        items.sort();
        let mut keys = Vec::with_capacity(items.len());
        let mut best: Vec<(V, usize)> = Vec::with_capacity(items.len());
        for (key, value, op) in items {
            let running = match best.last() {
                Some(&(v, o)) if v >= value => (v, o),
                _ => (value, op),
            };
            keys.push(key);
            best.push(running);
        }
        PrefixMax { keys, best }
    }

    /// The largest value among items with key < `bound`.
    fn max_below(&self, bound: K) -> Option<(V, usize)> {
        let n = self.keys.partition_point(|k| *k < bound);
        n.checked_sub(1).map(|i| self.best[i])
    }

    /// The largest value among items with key <= `bound`.
    fn max_upto(&self, bound: K) -> Option<(V, usize)> {
        let n = self.keys.partition_point(|k| *k <= bound);
        n.checked_sub(1).map(|i| self.best[i])
    }
}

/// The writes placed in the log (acknowledged or unknown), as (op, revision),
/// by revision.
fn placed_writes(roles: &[Role], placed: &[Option<i64>]) -> Vec<(usize, i64)> {
    let mut writes: Vec<(usize, i64)> = roles
        .iter()
        .zip(placed)
        .enumerate()
        .filter_map(|(i, (role, at))| match (role, at) {
            (Role::Write { .. } | Role::Revoke { .. } | Role::Unknown, Some(at)) => Some((i, *at)),
            _ => None,
        })
        .collect();
    writes.sort_by_key(|&(i, at)| (at, i));
    writes
}

/// Step 4: an acknowledged write that completed before another write was
/// invoked has the lower revision.
fn check_write_order(history: &[Op], roles: &[Role], placed: &[Option<i64>], found: &mut Found) {
    let writes = placed_writes(roles, placed);
    let acked = PrefixMax::new(
        writes
            .iter()
            .filter(|&&(i, _)| !matches!(roles[i], Role::Unknown))
            .map(|&(i, at)| (history[i].complete, at, i))
            .collect(),
    );
    for &(b, at) in &writes {
        if let Some((before, a)) = acked.max_below(history[b].invoke) {
            if before >= at {
                found.push(Violation::RealTimeOrder {
                    earlier: OpRef::new(&history[a]),
                    earlier_revision: before,
                    later: OpRef::new(&history[b]),
                    later_revision: at,
                });
            }
        }
    }
}

/// Step 5: every Ok op that wrote nothing is a read at its revision.
fn check_reads(
    history: &[Op],
    roles: &[Role],
    placed: &[Option<i64>],
    index: &Index,
    found: &mut Found,
) -> Stats {
    let mut stats = Stats::default();
    let writes = placed_writes(roles, placed);
    let reads: Vec<(usize, i64, bool)> = roles
        .iter()
        .enumerate()
        .filter_map(|(i, role)| match *role {
            Role::Read {
                revision,
                linearizable,
            } => Some((i, revision, linearizable)),
            Role::Revoke { revision } if placed[i].is_none() => Some((i, revision, true)),
            _ => None,
        })
        .collect();
    // Everything an Ok op had seen, by completion time.
    let mut seen: Vec<(u64, i64, usize)> = reads
        .iter()
        .map(|&(i, at, _)| (history[i].complete, at, i))
        .collect();
    seen.extend(
        writes
            .iter()
            .filter(|&&(i, _)| !matches!(roles[i], Role::Unknown))
            .map(|&(i, at)| (history[i].complete, at, i)),
    );
    let seen = PrefixMax::new(seen);
    let invoked = PrefixMax::new(
        writes
            .iter()
            .map(|&(i, at)| (at, history[i].invoke, i))
            .collect(),
    );
    let last_revision = index.last_revision();
    for &(i, revision, linearizable) in &reads {
        let op = &history[i];
        if linearizable {
            stats.reads_linearizable += 1;
        } else {
            stats.reads_serializable += 1;
        }
        if linearizable {
            if let Some((before, a)) = seen.max_below(op.invoke) {
                if before > revision {
                    found.push(Violation::StaleRead {
                        op: OpRef::new(op),
                        revision,
                        earlier: OpRef::new(&history[a]),
                        earlier_revision: before,
                    });
                }
            }
        }
        if let Some((invoke, w)) = invoked.max_upto(revision) {
            if invoke > op.complete {
                found.push(Violation::FutureRead {
                    op: OpRef::new(op),
                    revision,
                    write: OpRef::new(&history[w]),
                    write_revision: placed[w].expect("a placed write"),
                });
            }
        }
        if revision > last_revision {
            found.push(Violation::ReadBeyondLog {
                op: OpRef::new(op),
                revision,
                last_revision,
            });
            continue;
        }
        check_read_content(op, revision, index, found);
    }
    stats
}

/// What a read returned must be the state at its revision (a range at an
/// older revision: the state there).
fn check_read_content(op: &Op, revision: i64, index: &Index, found: &mut Found) {
    let Outcome::Ok(reply) = &op.outcome else {
        return;
    };
    let at = match op.call {
        Call::Range { revision: at, .. } if at > 0 => at,
        _ => revision,
    };
    if at > index.last_revision() {
        found.push(Violation::ReadBeyondLog {
            op: OpRef::new(op),
            revision: at,
            last_revision: index.last_revision(),
        });
        return;
    }
    // Before the base the state is unknown: nothing to compare.
    let Some(view) = index.at(at) else {
        return;
    };
    let mismatch = |expected: String, got: String| Violation::ReadMismatch {
        op: OpRef::new(op),
        revision: at,
        expected,
        got,
    };
    match (&op.call, reply) {
        (Call::Range { key, range_end, .. }, Reply::Range { kvs, .. }) => {
            let want = view.range(key, range_end);
            if want != *kvs {
                found.push(mismatch(show_kvs(&want), show_kvs(kvs)));
            }
        }
        (Call::Delete { key, range_end }, Reply::Delete { .. }) => {
            let want = view.range(key, range_end);
            if !want.is_empty() {
                found.push(mismatch(
                    format!("deleting {}", show_kvs(&want)),
                    "deleted 0".to_string(),
                ));
            }
        }
        (Call::Txn { .. }, Reply::Txn { .. }) => match execute(&view, &op.call) {
            Ok(effect) if effect.reply == *reply => {}
            effect => {
                let expected = match effect {
                    Ok(effect) => show_reply(&effect.reply),
                    Err(why) => format!("a refusal ({why})"),
                };
                found.push(mismatch(expected, show_reply(reply)));
            }
        },
        (Call::LeaseRevoke { id }, Reply::LeaseRevoke { .. }) => {
            let attached = view.lease_keys(*id);
            if !attached.is_empty() {
                let keys: Vec<String> = attached
                    .iter()
                    .map(|k| crate::violation::show_bytes(k))
                    .collect();
                found.push(Violation::AckedWriteLost {
                    op: OpRef::new(op),
                    revision: at,
                    reason: cut(format!(
                        "no revision holds the revoke and keys [{}] are still attached to lease {id} there",
                        keys.join(", ")
                    )),
                });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_moves_an_earlier_choice_aside() {
        // Entry 0 may take op 1 or 2, entry 1 only op 1: the greedy choice
        // (entry 0 <- op 1) must be undone.
        let got = max_matching(&[vec![1, 2], vec![1], vec![]]);
        assert_eq!(got, vec![Some(2), Some(1), None]);
        let got = max_matching(&[vec![5], vec![5], vec![5, 6]]);
        assert_eq!(got, vec![Some(5), None, Some(6)]);
    }

    #[test]
    fn deadlines_are_the_earliest_completion_at_or_after_a_revision() {
        // Ok ops: one named revision 3 and completed at 50, one revision 5
        // at 20, one revision 5 at 90.
        let d = Deadlines::new(vec![(5, 90), (3, 50), (5, 20)]);
        let cases = [
            (1, Some(20)),
            (3, Some(20)),
            (4, Some(20)),
            (5, Some(20)),
            (6, None),
        ];
        for (i, (revision, want)) in cases.into_iter().enumerate() {
            assert_eq!(d.invoke_max(revision), want, "case #{i}");
        }
        let d = Deadlines::new(vec![(2, 10), (4, 30)]);
        assert_eq!(d.invoke_max(3), Some(30));
    }

    #[test]
    fn prefix_max_is_strict_below_and_inclusive_upto() {
        let pm = PrefixMax::new(vec![(10u64, 3i64, 0), (20, 1, 1), (30, 7, 2)]);
        let cases = [
            (10, None, Some((3, 0))),
            (11, Some((3, 0)), Some((3, 0))),
            (30, Some((3, 0)), Some((7, 2))),
        ];
        for (i, (bound, below, upto)) in cases.into_iter().enumerate() {
            assert_eq!(pm.max_below(bound), below, "case #{i} below");
            assert_eq!(pm.max_upto(bound), upto, "case #{i} upto");
        }
    }
}
