//! The Lock service (v3lock): a mutex per name, owned through a lease, with
//! waiters served in the order they asked (the create revision of their
//! key). etcd's `concurrency.Mutex`, run in the server.

use super::caller::Credentials;
use tonic::{Request, Response, Status};

use super::concurrency::{
    created_at, delete, first_created, key_get, op_get, op_put, range, range_kvs, revision_of,
    session_key, txn, wait_deletes, CleanupOnDrop,
};
use super::header_at;
use crate::member::Handle;
use crate::proto::etcdserverpb::TxnRequest;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// The message of clientv3's `concurrency.ErrSessionExpired`.
pub const SESSION_EXPIRED: &str = "session: expired";

pub struct LockService {
    member: Handle,
}

impl LockService {
    pub fn new(member: Handle) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let m = &self.member;
        let mut prefix = r.name.clone();
        prefix.push(b'/');
        let key = session_key(&prefix, r.lease);
        // Create my key unless this session already has it; learn the owner.
        let t = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op_put(&key, b"", r.lease), op_get(first_created(&prefix))],
            failure: vec![op_get(key_get(&key)), op_get(first_created(&prefix))],
        };
        let resp = txn(m, &cred, t).await?;
        let cleanup = CleanupOnDrop::new(m.clone(), key.clone());
        let my_rev = if resp.succeeded {
            revision_of(&resp)
        } else {
            range_kvs(&resp, 0)
                .first()
                .map_or(0, |kv| kv.create_revision)
        };
        let owner_rev = range_kvs(&resp, 1)
            .first()
            .map_or(0, |kv| kv.create_revision);
        if owner_rev != my_rev {
            wait_deletes(m, &cred, &prefix, my_rev - 1).await?;
        }
        // The lease may have expired while waiting: then the key is gone.
        let mine = range(m, &cred, &key_get(&key)).await?;
        if mine.kvs.is_empty() {
            cleanup.disarm();
            return Err(Status::unknown(SESSION_EXPIRED));
        }
        cleanup.disarm();
        Ok(Response::new(LockResponse {
            header: mine.header,
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let rev = delete(&self.member, &cred, &r.key).await?;
        Ok(Response::new(UnlockResponse {
            header: header_at(&self.member, rev),
        }))
    }
}
