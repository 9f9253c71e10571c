//! The Cluster service: MemberList, and membership changes through raft
//! configuration changes (MemberAdd, MemberRemove, MemberPromote) or a
//! replicated request (MemberUpdate), with etcd's checks and errors.

use super::caller::Credentials;
use tonic::{Request, Response, Status};

use super::caller::require_admin;
use super::error::{
    LEARNER_NOT_READY, MEMBER_BAD_URLS, MEMBER_EXIST, MEMBER_NOT_FOUND, MEMBER_NOT_LEARNER,
    PEER_URL_EXIST, TOO_MANY_LEARNERS,
};
use crate::member::{Applied, Handle};
use crate::proto::concordpb::internal_request::Request as Internal;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use concord_raft::{ConfChangeKind, ConfChangeSingle, Role};

/// etcd allows one learner at a time.
const LEARNERS_MAX: usize = 1;

pub struct ClusterService {
    member: Handle,
}

impl ClusterService {
    pub fn new(member: Handle) -> Self {
        Self { member }
    }

    /// etcd's cluster server header: IDs and the raft term, no revision.
    fn header(&self) -> Option<crate::proto::etcdserverpb::ResponseHeader> {
        Some(crate::proto::etcdserverpb::ResponseHeader {
            cluster_id: self.member.cluster_id(),
            member_id: self.member.member_id(),
            raft_term: self.member.progress().term,
            revision: 0,
        })
    }

    /// Sends a promote to the leader (etcd forwards it over its peer API;
    /// the leader's answer is the same).
    /// The caller's token goes along: the leader checks it again.
    async fn forward_promote(
        &self,
        id: u64,
        cred: &Credentials,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let channel = super::leader_channel(&self.member).await?;
        let mut client = crate::proto::etcdserverpb::cluster_client::ClusterClient::new(channel);
        let mut req = Request::new(MemberPromoteRequest { id });
        if let Some(t) = cred.token_value().and_then(|t| t.parse().ok()) {
            req.metadata_mut().insert("token", t);
        }
        client.member_promote(req).await
    }

    fn find(&self, id: u64) -> Result<Member, Status> {
        self.member
            .membership()
            .members
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| MEMBER_NOT_FOUND.status())
    }
}

/// Peer URLs as etcd accepts them: http(s)://host:port, at least one.
fn check_urls(urls: &[String]) -> Result<Vec<String>, Status> {
    if urls.is_empty() {
        return Err(MEMBER_BAD_URLS.status());
    }
    urls.iter()
        .map(|u| {
            crate::config::Url::parse(u)
                .map(|p| p.text)
                .map_err(|_| MEMBER_BAD_URLS.status())
        })
        .collect()
}

/// Whether any member other than `except` holds one of `urls`.
fn urls_taken(members: &[Member], urls: &[String], except: u64) -> bool {
    members
        .iter()
        .filter(|m| m.id != except)
        .any(|m| m.peer_ur_ls.iter().any(|u| urls.contains(u)))
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        let r = request.into_inner();
        let urls = check_urls(&r.peer_ur_ls)?;
        let members = self.member.membership().members;
        if urls_taken(&members, &urls, 0) {
            return Err(PEER_URL_EXIST.status());
        }
        if r.is_learner && members.iter().filter(|m| m.is_learner).count() >= LEARNERS_MAX {
            return Err(TOO_MANY_LEARNERS.status());
        }
        // etcd: SHA-1 of the URLs, no cluster token, and the current time.
        let id = crate::cluster::member_id(&urls, "", Some(unix_secs()));
        if members.iter().any(|m| m.id == id) {
            return Err(MEMBER_EXIST.status());
        }
        let new = Member {
            id,
            name: String::new(),
            peer_ur_ls: urls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        let kind = if r.is_learner {
            ConfChangeKind::AddLearnerNode
        } else {
            ConfChangeKind::AddNode
        };
        let members = self
            .member
            .change_membership(vec![ConfChangeSingle { kind, node_id: id }], new.clone())
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(new),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        let id = request.into_inner().id;
        let gone = self.find(id)?;
        let change = ConfChangeSingle {
            kind: ConfChangeKind::RemoveNode,
            node_id: id,
        };
        let members = self.member.change_membership(vec![change], gone).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        require_admin(&self.member, &Credentials::of(&request)).await?;
        let r = request.into_inner();
        self.find(r.id)?;
        let urls = check_urls(&r.peer_ur_ls)?;
        if urls_taken(&self.member.membership().members, &urls, r.id) {
            return Err(PEER_URL_EXIST.status());
        }
        let req = MemberUpdateRequest {
            id: r.id,
            peer_ur_ls: urls,
        };
        match self.member.propose(Internal::MemberUpdate(req)).await? {
            Applied::Members(members) => Ok(Response::new(MemberUpdateResponse {
                header: self.header(),
                members,
            })),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected apply result for member update: {other:?}"
            ))),
        }
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let m = self.member.membership();
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: m.members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        require_admin(&self.member, &cred).await?;
        let id = r.id;
        let learner = self.find(id)?;
        if !learner.is_learner {
            return Err(MEMBER_NOT_LEARNER.status());
        }
        // etcd: the learner's match index must be at least 90% of the
        // leader's; only the leader knows, so a follower forwards.
        let st = self.member.raft_status().await?;
        if st.role != Role::Leader {
            return self.forward_promote(id, &cred).await;
        }
        if let Some(progress) = &st.progress {
            let leader = progress.get(&st.id).map_or(0, |p| p.matched);
            if let Some(p) = progress.get(&id) {
                if (p.matched as f64) < 0.9 * leader as f64 {
                    return Err(LEARNER_NOT_READY.status());
                }
            }
        }
        let change = ConfChangeSingle {
            kind: ConfChangeKind::AddNode,
            node_id: id,
        };
        let members = self.member.change_membership(vec![change], learner).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}
