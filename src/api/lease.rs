//! The Lease service: Grant, Revoke, KeepAlive (a stream), TimeToLive,
//! Leases. Grants and revokes go through the log; keep-alives renew on the
//! primary lessor and are replicated as checkpoints by the member.

use std::pin::Pin;

use super::caller::Credentials;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::caller::{self, ReadCheck};
use super::{fill_header, header_at};
use crate::member::{Applied, Handle};
use crate::proto::concordpb::internal_request::Request as Internal;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub struct LeaseService {
    member: Handle,
}

impl LeaseService {
    pub fn new(member: Handle) -> Self {
        Self { member }
    }

    /// Keep-alives over any stream of requests (gRPC's, or the JSON
    /// gateway's): one response per request, ending with the requests.
    pub fn keep_alive<S>(&self, inbound: S) -> KeepAliveStream
    where
        S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
    {
        let member = self.member.clone();
        let out = inbound.then(move |req| {
            let member = member.clone();
            async move {
                let req = req?;
                // Unknown or expired: TTL 0, and the stream goes on (etcd).
                let ttl = match member.lease_renew(req.id) {
                    Ok(ttl) => ttl,
                    // Only the leader renews: a follower forwards.
                    Err(crate::lease::LeaseError::NotPrimary) => {
                        forward_keep_alive(&member, req.id).await?
                    }
                    Err(_) => 0,
                };
                Ok(LeaseKeepAliveResponse {
                    header: header_at(&member, 0),
                    id: req.id,
                    ttl,
                })
            }
        });
        Box::pin(out)
    }
}

/// A keep-alive sent on to the leader; returns the TTL it answered.
async fn forward_keep_alive(member: &Handle, id: i64) -> Result<i64, Status> {
    let channel = super::leader_channel(member).await?;
    let mut client = crate::proto::etcdserverpb::lease_client::LeaseClient::new(channel);
    let mut answers = client
        .lease_keep_alive(futures::stream::iter([LeaseKeepAliveRequest { id }]))
        .await?
        .into_inner();
    match answers.next().await {
        Some(r) => Ok(r?.ttl),
        None => Err(super::error::NO_LEADER.status()),
    }
}

fn unexpected(what: &str, got: &Applied) -> Status {
    tracing::error!(?got, "applier answered a {what} with another response");
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
}

pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let ttl = self.member.lease_effective_ttl(r.ttl)?;
        let id = if r.id == 0 {
            self.member.next_lease_id()
        } else {
            r.id
        };
        let grant = Internal::LeaseGrant(LeaseGrantRequest { id, ttl });
        match caller::propose(&self.member, &cred, grant).await? {
            Applied::LeaseGrant(mut resp) => {
                fill_header(&self.member, &mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected("lease grant", &other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        // The applier checks write permission on every attached key.
        match caller::propose(&self.member, &cred, Internal::LeaseRevoke(r)).await? {
            Applied::LeaseRevoke(mut resp) => {
                fill_header(&self.member, &mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected("lease revoke", &other)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Ok(Response::new(self.keep_alive(request.into_inner())))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let auth = ReadCheck::new(&self.member, &cred).await?;
        let found = self.member.lease_time_to_live(r.id, r.keys);
        if r.keys {
            // etcd 3.5: the keys are shown only to whom may read them all.
            let permits = auth.permits()?;
            for k in found.iter().flat_map(|(_, _, keys)| keys) {
                permits.check(crate::auth::Access::Read, k, &[])?;
            }
            auth.still_valid(&self.member)?;
        }
        let resp = match found {
            Some((ttl, granted_ttl, keys)) => LeaseTimeToLiveResponse {
                header: header_at(&self.member, 0),
                id: r.id,
                ttl,
                granted_ttl,
                keys,
            },
            // etcd answers an unknown lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse {
                header: header_at(&self.member, 0),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .member
            .lease_ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: header_at(&self.member, 0),
            leases,
        }))
    }
}
