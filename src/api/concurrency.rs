//! Building blocks of the Lock and Election services, the server-side form
//! of etcd's `clientv3/concurrency` recipes: ownership is a key created
//! under a prefix with the caller's lease; the owner is the key with the
//! lowest create revision; waiting means watching for the deletion of every
//! older key. Everything goes through the same member calls as client
//! requests (proposals, linearizable reads) and through in-process watches.

use super::caller::Credentials;
use tonic::Status;

use super::{fill_header, header_at};
use crate::member::{Applied, Handle};
use crate::proto::concordpb::internal_request::Request as Internal;
use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, watch_create_request::FilterType, Compare,
    DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse, WatchCreateRequest,
};
use crate::proto::mvccpb::{event::EventType, KeyValue};
use crate::watch::{watch_internal, Outgoing};

/// The end of the range of every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): `\0` (every key) if no byte can be incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `<prefix>/<lease in lowercase hex>`, the owner key of a session.
pub fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

pub fn op_put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..PutRequest::default()
        })),
    }
}

pub fn op_get(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(req)),
    }
}

pub fn op_delete(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.to_vec(),
                ..DeleteRangeRequest::default()
            },
        )),
    }
}

/// `create_revision(key) == rev`.
pub fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

/// The oldest key under `prefix` (etcd's `WithFirstCreate`).
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: range_request::SortOrder::Ascend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        limit: 1,
        ..RangeRequest::default()
    }
}

/// A single key read.
pub fn key_get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    }
}

fn unexpected(what: &str) -> Status {
    tracing::error!("applier answered a {what} with another response");
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
}

/// A txn through the log, answered like a client's.
pub async fn txn(
    member: &Handle,
    cred: &Credentials,
    t: TxnRequest,
) -> Result<TxnResponse, Status> {
    match super::caller::propose(member, cred, Internal::Txn(t)).await? {
        Applied::Txn(mut r) => {
            fill_header(member, &mut r.header);
            Ok(r)
        }
        _ => Err(unexpected("txn")),
    }
}

/// A delete of one key through the log; returns the header revision.
pub async fn delete(member: &Handle, cred: &Credentials, key: &[u8]) -> Result<i64, Status> {
    let req = DeleteRangeRequest {
        key: key.to_vec(),
        ..DeleteRangeRequest::default()
    };
    match super::caller::propose(member, cred, Internal::DeleteRange(req)).await? {
        Applied::DeleteRange(mut r) => {
            fill_header(member, &mut r.header);
            Ok(r.header.map_or(0, |h| h.revision))
        }
        _ => Err(unexpected("delete")),
    }
}

/// A linearizable read.
pub async fn range(
    member: &Handle,
    cred: &Credentials,
    r: &RangeRequest,
) -> Result<RangeResponse, Status> {
    let auth = super::caller::ReadCheck::new(member, cred).await?;
    auth.read(&r.key, &r.range_end)?;
    member.read_index().await?;
    let (res, rev) = member.store().range(r)?;
    auth.still_valid(member)?;
    Ok(RangeResponse {
        header: header_at(member, rev),
        kvs: res.kvs,
        more: res.more,
        count: res.count,
    })
}

/// The kvs of the `i`th response of a txn, if it was a range.
pub fn range_kvs(resp: &TxnResponse, i: usize) -> Vec<KeyValue> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => r.kvs.clone(),
        _ => Vec::new(),
    }
}

pub fn revision_of(resp: &TxnResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

/// Waits until `key` is deleted after revision `rev`.
pub async fn wait_delete(member: &Handle, key: &[u8], rev: i64) -> Result<(), Status> {
    let req = WatchCreateRequest {
        key: key.to_vec(),
        start_revision: rev + 1,
        filters: vec![FilterType::Noput as i32],
        ..WatchCreateRequest::default()
    };
    let (_guard, mut rx) =
        watch_internal(member.watch_hub(), &req).map_err(|e| Status::internal(e.reason()))?;
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Events { events, .. }
                if events.iter().any(|e| e.r#type == EventType::Delete as i32) =>
            {
                return Ok(());
            }
            // The history is gone: the caller reads again.
            Outgoing::Compacted { .. } => return Ok(()),
            _ => {}
        }
    }
    Err(crate::api::error::STOPPED.status())
}

/// Waits until no key under `prefix` with a create revision up to
/// `max_create_rev` remains (etcd's `waitDeletes`).
pub async fn wait_deletes(
    member: &Handle,
    cred: &Credentials,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<(), Status> {
    loop {
        let req = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            max_create_revision: max_create_rev,
            limit: 1,
            ..RangeRequest::default()
        };
        let resp = range(member, cred, &req).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(());
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(member, &kv.key, rev).await?;
    }
}

/// Deletes `key` if the RPC that created it goes away before it is handed
/// to the client (etcd cleans up a cancelled Lock / Campaign the same way).
pub struct CleanupOnDrop {
    member: Handle,
    key: Option<Vec<u8>>,
}

impl CleanupOnDrop {
    pub fn new(member: Handle, key: Vec<u8>) -> Self {
        Self {
            member,
            key: Some(key),
        }
    }

    /// The key now belongs to the client.
    pub fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let member = self.member.clone();
            // The member's own request: the key is the one this RPC
            // created for its sender, whose token may be gone by now.
            tokio::spawn(async move {
                let req = DeleteRangeRequest {
                    key,
                    ..DeleteRangeRequest::default()
                };
                if let Err(e) = member.propose(Internal::DeleteRange(req)).await {
                    tracing::warn!(error = %e, "could not delete the key of a cancelled wait");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn session_keys_are_prefix_and_lowercase_hex_lease() {
        assert_eq!(session_key(b"lk/", 0x694d_a22d), b"lk/694da22d".to_vec());
    }
}
