//! The Maintenance service: Status, Hash, HashKV, Alarm, Defragment,
//! MoveLeader. Snapshot and Downgrade are not implemented yet.

use std::pin::Pin;

use super::caller::Credentials;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::caller::require_admin;
use super::{header_at, SERVER_VERSION};
use crate::member::Handle;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

pub struct MaintenanceService {
    member: Handle,
}

impl MaintenanceService {
    pub fn new(member: Handle) -> Self {
        Self { member }
    }

    fn current(&self) -> i64 {
        self.member.store().current_revision()
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // Listing is open; raising or disarming an alarm needs root.
        if request.get_ref().action
            != crate::proto::etcdserverpb::alarm_request::AlarmAction::Get as i32
        {
            require_admin(&self.member, &Credentials::of(&request)).await?;
        }
        Ok(Response::new(AlarmResponse {
            header: header_at(&self.member, self.current()),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let p = self.member.progress();
        let size = self.member.store().backend().size_bytes() as i64;
        Ok(Response::new(StatusResponse {
            header: header_at(&self.member, self.current()),
            version: SERVER_VERSION.to_string(),
            db_size: size,
            leader: p.leader,
            raft_index: p.committed_index,
            raft_term: p.term,
            raft_applied_index: p.applied_index,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        // The LSM reclaims space by its own compactions; nothing to do.
        Ok(Response::new(DefragmentResponse {
            header: header_at(&self.member, self.current()),
        }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        let h = self.member.store().hash_kv(0)?;
        Ok(Response::new(HashResponse {
            header: header_at(&self.member, h.current_revision),
            hash: h.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        let h = self.member.store().hash_kv(request.into_inner().revision)?;
        Ok(Response::new(HashKvResponse {
            header: header_at(&self.member, h.current_revision),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        Err(Status::unimplemented(
            "etcdserver: snapshot is not implemented by concord yet",
        ))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        let target = request.into_inner().target_id;
        self.member.move_leader(target).await?;
        Ok(Response::new(MoveLeaderResponse {
            header: header_at(&self.member, self.current()),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: downgrade is not implemented by concord yet",
        ))
    }
}
