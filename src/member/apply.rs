//! The applier: turns committed log entries into store and lease changes,
//! in order. KV requests are applied in one mvcc group whose batch also
//! records the applied index; a lease request closes the group and is
//! applied in a group of its own (a revoke reads the lease's keys, which
//! must include every key attached before it).
//!
//! After each group's batch is written: the lessor learns which keys moved
//! between leases, watchers are notified, then waiters are answered.

use std::sync::atomic::Ordering;

use prost::Message;

use super::apply_auth::{self, AuthEffect};
use super::{Member, MemberError, META_APPLIED_INDEX};
use crate::lease::LeaseError;
use crate::metrics::METRICS;
use crate::mvcc::{MvccError, Writer};
use crate::proto::concordpb::{internal_request::Request, InternalRequest};
use crate::proto::etcdserverpb::{
    request_op, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use crate::storage::log::{EntryKind, LogEntry};
use crate::storage::{Partition, StorageError};
use concord_raft::ConfChangeKind;

/// The response of one applied request.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint(LeaseCheckpointResponse),
    MemberAttributes,
    /// An auth change; an Authenticate's token.
    Auth {
        token: String,
    },
    /// The membership after a change.
    Members(Vec<crate::proto::etcdserverpb::Member>),
}

/// Most log entries deleted behind the applied index in one group.
const LOG_TRUNCATE_PER_GROUP_MAX: u64 = 10_000;

type Outcome = Result<Applied, MemberError>;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Splits an mvcc error into a client error (`Ok(Err)`) or a failure that
/// stops the member (`Err`).
fn client_error(e: MvccError) -> Result<Outcome, MemberError> {
    match e {
        e @ (MvccError::Storage(_) | MvccError::Corrupt(_)) => Err(e.into()),
        e => Ok(Err(e.into())),
    }
}

fn apply_kv(w: &mut Writer<'_>, req: &Request) -> Result<Outcome, MemberError> {
    match req {
        Request::Put(_) => METRICS.put_total.inc(),
        Request::DeleteRange(_) => METRICS.delete_total.inc(),
        Request::Txn(_) => METRICS.txn_total.inc(),
        _ => {}
    }
    let r = match req {
        Request::Put(p) => w.put(p).map(Applied::Put),
        Request::DeleteRange(d) => w.delete_range(d).map(Applied::DeleteRange),
        Request::Txn(t) => w.txn(t).map(|resp| {
            crate::metrics::count_txn_ops(&resp.responses);
            Applied::Txn(resp)
        }),
        Request::Compaction(c) => w.compact(c.revision).map(|rev| {
            Applied::Compaction(CompactionResponse {
                header: header(rev),
            })
        }),
        _ => unreachable!("lease and membership requests are applied by the member"),
    };
    match r {
        Ok(a) => Ok(Ok(a)),
        Err(e) => client_error(e),
    }
}

fn decode(e: &LogEntry) -> Result<InternalRequest, MemberError> {
    InternalRequest::decode(e.data.as_slice()).map_err(|err| {
        MemberError::Storage(StorageError::Engine(format!(
            "log entry {} does not decode: {err}",
            e.index
        )))
    })
}

/// One committed entry, decoded.
enum Item {
    Request(InternalRequest),
    ConfChange(concord_raft::ConfChange),
    Noop,
}

fn decode_conf_change(e: &LogEntry) -> Result<concord_raft::ConfChange, MemberError> {
    concord_raft::ConfChange::decode(&e.data).map_err(|err| {
        MemberError::Storage(StorageError::Engine(format!(
            "configuration change at {} does not decode: {err}",
            e.index
        )))
    })
}

fn is_lease_request(r: &Request) -> bool {
    matches!(
        r,
        Request::LeaseGrant(_) | Request::LeaseRevoke(_) | Request::LeaseCheckpoint(_)
    )
}

/// Requests applied in a group of their own: a lease request (a revoke
/// must see every key attached before it) and an auth change (requests
/// after it are checked against the new state).
fn is_alone(r: &Request) -> bool {
    is_lease_request(r) || matches!(r, Request::Auth(_))
}

/// One request's result, waiting for its group to be written.
struct Done {
    id: u64,
    outcome: Outcome,
    /// A `physical=true` compaction answers once the disk compaction is done.
    physical: Option<i64>,
}

impl Member {
    /// Applies committed entries (contiguous, after the applied index) and
    /// answers their waiters.
    pub(super) fn apply(&mut self, entries: Vec<LogEntry>) -> Result<(), MemberError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let applied_before = self.shared.applied.load(Ordering::Acquire);
        assert_eq!(
            first.index,
            applied_before + 1,
            "apply must continue right after the applied index"
        );
        let mut group: Vec<(u64, Item)> = Vec::new();
        for e in &entries {
            let item = match e.kind {
                EntryKind::Empty => Item::Noop,
                EntryKind::ConfChange => Item::ConfChange(decode_conf_change(e)?),
                EntryKind::Request => Item::Request(decode(e)?),
            };
            let alone = match &item {
                Item::ConfChange(_) => true,
                Item::Request(r) => r.request.as_ref().is_some_and(is_alone),
                Item::Noop => false,
            };
            // A permission check that reads lease attachments needs the
            // earlier groups' attachments known to the lessor.
            let fresh = match &item {
                Item::Request(r) => {
                    r.header.is_some()
                        && r.request.as_ref().is_some_and(apply_auth::reads_lease_keys)
                        && self.shared.auth().enabled()
                }
                _ => false,
            };
            if fresh {
                self.apply_group(std::mem::take(&mut group))?;
            }
            if alone {
                self.apply_group(std::mem::take(&mut group))?;
                self.apply_group(vec![(e.index, item)])?;
            } else {
                group.push((e.index, item));
            }
        }
        self.apply_group(group)
    }

    /// Applies entries in one mvcc group (a lease request or a
    /// configuration change is alone in its group).
    fn apply_group(&mut self, group: Vec<(u64, Item)>) -> Result<(), MemberError> {
        let Some(last) = group.last().map(|(i, _)| *i) else {
            return Ok(());
        };
        let store = self.shared.store.clone();
        let shared = self.shared.clone();
        let lease_exists = |id: i64| shared.lessor().contains(id);
        let mut w = store.writer(&lease_exists);
        let mut done = Vec::with_capacity(group.len());
        let auth = self.shared.auth();
        // An auth change (alone in its group) takes effect once written.
        let mut auth_effect: Option<AuthEffect> = None;
        for (index, item) in &group {
            let (id, request, header) = match item {
                Item::Request(InternalRequest {
                    id,
                    request: Some(request),
                    header,
                }) => (id, request, header.as_ref()),
                Item::ConfChange(cc) => {
                    if let Some(d) = self.apply_conf_change(w.batch_mut(), cc)? {
                        done.push(d);
                    }
                    continue;
                }
                _ => continue,
            };
            let physical = match request {
                Request::Compaction(c) if c.physical => Some(c.revision),
                _ => None,
            };
            let checked = if auth.enabled() && header.is_some() {
                let lessor = self.shared.lessor();
                apply_auth::check(&auth, header, request, &lessor)
            } else {
                Ok(())
            };
            let outcome = if let Err(e) = checked {
                Err(MemberError::Auth(e))
            } else if let Request::Auth(a) = request {
                let (outcome, effect) = self.apply_auth(w.batch_mut(), &auth, *index, a);
                auth_effect = effect;
                outcome
            } else if let Request::MemberAttributes(a) = request {
                self.apply_member_attributes(w.batch_mut(), a);
                Ok(Applied::MemberAttributes)
            } else if let Request::MemberUpdate(u) = request {
                Ok(self.apply_member_update(w.batch_mut(), u))
            } else if is_lease_request(request) {
                self.apply_lease(&mut w, request)?
            } else {
                apply_kv(&mut w, request)?
            };
            done.push(Done {
                id: *id,
                outcome,
                physical,
            });
        }
        w.batch_mut().put(
            Partition::Meta,
            META_APPLIED_INDEX.to_vec(),
            last.to_be_bytes().to_vec(),
        );
        self.truncate_log(w.batch_mut(), last);
        let committed = crate::metrics::time(&METRICS.backend_commit, || w.commit())?;
        self.shared.applied.store(last, Ordering::Release);
        if let Some(effect) = auth_effect {
            self.auth_took_effect(effect);
        }
        {
            let mut lessor = self.shared.lessor();
            for c in &committed.changes {
                let lease = (!c.tombstone).then_some(c.kv.lease);
                lessor.key_changed(&c.kv.key, lease);
            }
        }
        // Watchers hear of a revision before any client is told it exists.
        self.shared.watch.notify(&committed.changes);
        self.shared.watch.advance_to(committed.revision);
        for d in done {
            let Some(reply) = self.waiters.remove(&d.id) else {
                continue;
            };
            match (d.outcome, d.physical) {
                (Ok(applied), Some(rev)) => self.physical_waiters.push((rev, reply, applied)),
                (outcome, _) => {
                    let _ = reply.send(outcome);
                }
            }
        }
        Ok(())
    }

    /// A lease request, applied alone in its group. Lease state changes go
    /// into the group's batch; the lessor's in-memory state changes now,
    /// which is safe because the batch is written before anyone is answered
    /// and a failed write stops the member.
    fn apply_lease(&mut self, w: &mut Writer<'_>, req: &Request) -> Result<Outcome, MemberError> {
        let now = self.shared.now();
        match req {
            Request::LeaseGrant(g) => {
                let mut lessor = self.shared.lessor();
                let r = lessor.grant(g.id, g.ttl, now, w.batch_mut());
                Ok(r.map(|()| {
                    METRICS.lease_granted.inc();
                    METRICS.lease_ttl.observe(g.ttl as f64);
                    Applied::LeaseGrant(LeaseGrantResponse {
                        header: header(w.revision()),
                        id: g.id,
                        ttl: g.ttl,
                        error: String::new(),
                    })
                })
                .map_err(MemberError::from))
            }
            Request::LeaseRevoke(r) => {
                let keys = match self.shared.lessor().keys_of(r.id) {
                    Ok(k) => k,
                    Err(e) => return Ok(Err(e.into())),
                };
                if !keys.is_empty() {
                    let success = keys
                        .into_iter()
                        .map(|key| RequestOp {
                            request: Some(request_op::Request::RequestDeleteRange(
                                DeleteRangeRequest {
                                    key,
                                    ..Default::default()
                                },
                            )),
                        })
                        .collect();
                    let txn = TxnRequest {
                        success,
                        ..Default::default()
                    };
                    if let Err(e) = w.txn(&txn) {
                        return client_error(e);
                    }
                }
                self.shared
                    .lessor()
                    .revoke(r.id, w.batch_mut())
                    .map_err(|e| {
                        MemberError::Storage(StorageError::Engine(format!("revoke: {e}")))
                    })?;
                METRICS.lease_revoked.inc();
                Ok(Ok(Applied::LeaseRevoke(LeaseRevokeResponse {
                    header: header(w.revision()),
                })))
            }
            Request::LeaseCheckpoint(c) => {
                let mut lessor = self.shared.lessor();
                for cp in &c.checkpoints {
                    lessor.checkpoint(cp.id, cp.remaining_ttl, now, w.batch_mut());
                }
                Ok(Ok(Applied::LeaseCheckpoint(LeaseCheckpointResponse {
                    header: header(w.revision()),
                })))
            }
            _ => unreachable!("not a lease request"),
        }
    }

    /// A configuration change: raft's configuration, then the membership
    /// (from the change's context) and the peers, in the group's batch.
    fn apply_conf_change(
        &mut self,
        batch: &mut crate::storage::Batch,
        cc: &concord_raft::ConfChange,
    ) -> Result<Option<Done>, MemberError> {
        let cs = match self.node.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                // Refused by raft (e.g. removing an unknown node): no change.
                tracing::warn!(error = %e, "configuration change refused");
                return Ok(None);
            }
        };
        tracing::info!(?cs, "applied a configuration change");
        self.node.storage_mut().set_conf_state(batch, cs);
        let ctx = if cc.context.is_empty() {
            None
        } else {
            Some(
                crate::proto::concordpb::MemberChange::decode(cc.context.as_slice()).map_err(
                    |e| {
                        MemberError::Storage(StorageError::Engine(format!(
                            "conf change context: {e}"
                        )))
                    },
                )?,
            )
        };
        let mut m = self.shared.membership_mut();
        let local = m.local_id;
        for ch in &cc.changes {
            let id = ch.node_id;
            match ch.kind {
                ConfChangeKind::AddNode | ConfChangeKind::AddLearnerNode => {
                    let learner = ch.kind == ConfChangeKind::AddLearnerNode;
                    if let Some(x) = m.members.iter_mut().find(|x| x.id == id) {
                        x.is_learner = learner;
                    } else if let Some(mut new) = ctx.as_ref().and_then(|c| c.member.clone()) {
                        new.is_learner = learner;
                        if let Some(t) = &self.transport {
                            if id != local {
                                if let Err(e) = t.add_peer(id, new.peer_ur_ls.clone()) {
                                    tracing::warn!(error = %e, "could not add a peer");
                                }
                            }
                        }
                        m.members.push(new);
                        m.members.sort_by_key(|x| x.id);
                    }
                }
                ConfChangeKind::RemoveNode => {
                    m.members.retain(|x| x.id != id);
                    if id == local {
                        self.removed = true;
                    } else if let Some(t) = &self.transport {
                        let _ = t.remove_member(id);
                    }
                }
            }
        }
        m.save(batch);
        let members = m.members.clone();
        Ok(ctx.map(|c| Done {
            id: c.request_id,
            outcome: Ok(Applied::Members(members)),
            physical: None,
        }))
    }

    /// New peer URLs for a member.
    fn apply_member_update(
        &mut self,
        batch: &mut crate::storage::Batch,
        u: &crate::proto::etcdserverpb::MemberUpdateRequest,
    ) -> Applied {
        let mut m = self.shared.membership_mut();
        let local = m.local_id;
        if let Some(x) = m.members.iter_mut().find(|x| x.id == u.id) {
            x.peer_ur_ls = u.peer_ur_ls.clone();
            if let Some(t) = &self.transport {
                if u.id != local {
                    let _ = t.update_peer(u.id, u.peer_ur_ls.clone());
                }
            }
            m.save(batch);
        }
        Applied::Members(m.members.clone())
    }

    /// A member published its name and client URLs: every member records
    /// them (etcd's ClusterMemberAttrSetRequest).
    fn apply_member_attributes(
        &mut self,
        batch: &mut crate::storage::Batch,
        a: &crate::proto::concordpb::MemberAttributes,
    ) {
        let mut m = self.shared.membership_mut();
        if let Some(x) = m.members.iter_mut().find(|x| x.id == a.id) {
            x.name = a.name.clone();
            x.client_ur_ls = a.client_urls.clone();
            m.save(batch);
        } else {
            tracing::warn!(
                id = format!("{:x}", a.id),
                "attributes of an unknown member"
            );
        }
    }

    /// Drops raft log entries more than `log_retain_entries` behind
    /// `applied` (at most LOG_TRUNCATE_PER_GROUP_MAX per group).
    fn truncate_log(&mut self, batch: &mut crate::storage::Batch, applied: u64) {
        let (first, _) = self.node.storage().bounds();
        let keep_from = applied.saturating_sub(self.shared.cfg.log_retain_entries) + 1;
        if keep_from <= first {
            return;
        }
        let to = (keep_from - 1).min(first + LOG_TRUNCATE_PER_GROUP_MAX - 1);
        if let Err(e) = self.node.storage_mut().compact(batch, to) {
            tracing::warn!(error = %e, to, "could not compact the raft log");
        }
    }
}

impl From<LeaseError> for MemberError {
    fn from(e: LeaseError) -> Self {
        MemberError::Lease(e)
    }
}
