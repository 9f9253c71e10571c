//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use super::caller::Credentials;
use tonic::{Request, Response, Status};

use super::caller::{self, ReadCheck};
use super::check::{
    check_delete, check_put, check_range, check_txn, is_txn_read_only, is_txn_serializable,
};
use super::{fill_header, header_at};
use crate::member::{Applied, Handle};
use crate::proto::concordpb::internal_request::Request as Internal;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

pub struct KvService {
    member: Handle,
    max_txn_ops: usize,
}

impl KvService {
    pub fn new(member: Handle, max_txn_ops: usize) -> Self {
        Self {
            member,
            max_txn_ops,
        }
    }

    /// Proposes a client's write as its sender (see `api::caller`).
    async fn propose(&self, cred: &Credentials, req: Internal) -> Result<Applied, Status> {
        caller::propose(&self.member, cred, req).await
    }
}

fn unexpected(what: &str, got: &Applied) -> Status {
    tracing::error!(?got, "applier answered a {what} with another response");
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let auth = ReadCheck::new(&self.member, &Credentials::of(&request)).await?;
        let r = request.into_inner();
        check_range(&r)?;
        auth.read(&r.key, &r.range_end)?;
        if !r.serializable {
            self.member.read_index().await?;
        }
        let (res, rev) = self.member.store().range(&r)?;
        auth.still_valid(&self.member)?;
        crate::metrics::METRICS.range_total.inc();
        Ok(Response::new(RangeResponse {
            header: header_at(&self.member, rev),
            kvs: res.kvs,
            more: res.more,
            count: res.count,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        check_put(&r)?;
        match self.propose(&cred, Internal::Put(r)).await? {
            Applied::Put(mut resp) => {
                fill_header(&self.member, &mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected("put", &other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        check_delete(&r)?;
        match self.propose(&cred, Internal::DeleteRange(r)).await? {
            Applied::DeleteRange(mut resp) => {
                fill_header(&self.member, &mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected("delete", &other)),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        check_txn(&r, self.max_txn_ops)?;
        if is_txn_read_only(&r) {
            let auth = ReadCheck::new(&self.member, &cred).await?;
            crate::auth::check::check_txn(&auth.permits()?, &r, &|_| Vec::new())?;
            if !is_txn_serializable(&r) {
                self.member.read_index().await?;
            }
            let mut resp = self.member.store().read_txn(&r)?;
            auth.still_valid(&self.member)?;
            crate::metrics::METRICS.txn_total.inc();
            crate::metrics::count_txn_ops(&resp.responses);
            fill_header(&self.member, &mut resp.header);
            return Ok(Response::new(resp));
        }
        match self.propose(&cred, Internal::Txn(r)).await? {
            Applied::Txn(mut resp) => {
                fill_header(&self.member, &mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected("txn", &other)),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        match self.propose(&cred, Internal::Compaction(r)).await? {
            Applied::Compaction(mut resp) => {
                fill_header(&self.member, &mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected("compaction", &other)),
        }
    }
}
