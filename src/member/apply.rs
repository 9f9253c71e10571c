//! The applier: turns committed log entries into store changes, in order, in
//! one mvcc group whose batch also records the applied index.

use std::sync::atomic::Ordering;

use prost::Message;

use super::{Member, MemberError, META_APPLIED_INDEX};
use crate::mvcc::{MvccError, Writer};
use crate::proto::concordpb::{internal_request::Request, InternalRequest};
use crate::proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, PutResponse, ResponseHeader, TxnResponse,
};
use crate::storage::log::{self, EntryKind, LogEntry};
use crate::storage::{Partition, StorageError};

/// The response of one applied request.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
}

/// Most log entries deleted behind the applied index in one group.
const LOG_TRUNCATE_PER_GROUP_MAX: u64 = 10_000;

/// Applies one request; `Ok(Err(_))` is a request error for the client,
/// `Err(_)` a failure that stops the member.
fn apply_request(
    w: &mut Writer<'_>,
    req: &Request,
) -> Result<Result<Applied, MvccError>, MemberError> {
    let r = match req {
        Request::Put(p) => w.put(p).map(Applied::Put),
        Request::DeleteRange(d) => w.delete_range(d).map(Applied::DeleteRange),
        Request::Txn(t) => w.txn(t).map(Applied::Txn),
        Request::Compaction(c) => w.compact(c.revision).map(|rev| {
            Applied::Compaction(CompactionResponse {
                header: Some(ResponseHeader {
                    revision: rev,
                    ..Default::default()
                }),
            })
        }),
    };
    match r {
        Err(e @ (MvccError::Storage(_) | MvccError::Corrupt(_))) => Err(e.into()),
        other => Ok(other),
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

impl Member {
    /// Applies committed entries (contiguous, after the applied index) and
    /// answers their waiters.
    pub(super) fn apply(&mut self, entries: Vec<LogEntry>) -> Result<(), MemberError> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let applied_before = self.shared.applied.load(Ordering::Acquire);
        assert_eq!(
            entries[0].index,
            applied_before + 1,
            "apply must continue right after the applied index"
        );
        let store = self.shared.store.clone();
        let no_leases = |_: i64| false;
        let mut w = store.writer(&no_leases);
        let mut results = Vec::with_capacity(entries.len());
        for e in &entries {
            if e.kind == EntryKind::Empty {
                continue;
            }
            let req = decode(e)?;
            let Some(request) = &req.request else {
                continue;
            };
            let physical = match request {
                Request::Compaction(c) if c.physical => Some(c.revision),
                _ => None,
            };
            results.push((req.id, apply_request(&mut w, request)?, physical));
        }
        w.batch_mut().put(
            Partition::Meta,
            META_APPLIED_INDEX.to_vec(),
            last.to_be_bytes().to_vec(),
        );
        self.truncate_log(w.batch_mut(), last);
        let committed = w.commit()?;
        self.shared.applied.store(last, Ordering::Release);
        // Watchers hear of a revision before any client is told it exists.
        self.shared.watch.notify(&committed.changes);
        self.shared.watch.advance_to(committed.revision);
        for (id, result, physical) in results {
            let Some(reply) = self.waiters.remove(&id) else {
                continue;
            };
            match (result, physical) {
                (Ok(applied), Some(rev)) => self.physical_waiters.push((rev, reply, applied)),
                (result, _) => {
                    let _ = reply.send(result.map_err(MemberError::from));
                }
            }
        }
        Ok(())
    }

    /// Deletes log entries more than `log_retain_entries` behind `applied`.
    fn truncate_log(&mut self, batch: &mut crate::storage::Batch, applied: u64) {
        let keep_from = applied.saturating_sub(self.shared.cfg.log_retain_entries) + 1;
        if keep_from <= self.first_index {
            return;
        }
        let to = (keep_from - 1).min(self.first_index + LOG_TRUNCATE_PER_GROUP_MAX - 1);
        log::truncate_prefix(batch, self.first_index, to);
        self.first_index = to + 1;
    }
}
