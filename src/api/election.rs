//! The Election service (v3election): campaign for leadership of a name
//! through a lease, proclaim a value, observe the leader, resign. etcd's
//! `concurrency.Election`, run in the server.

use std::pin::Pin;

use super::caller::Credentials;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::concurrency::{
    created_at, first_created, key_get, op_delete, op_get, op_put, range, range_kvs, revision_of,
    session_key, txn, wait_deletes, CleanupOnDrop,
};
use crate::member::Handle;
use crate::proto::etcdserverpb::{ResponseHeader, TxnRequest, WatchCreateRequest};
use crate::proto::mvccpb::event::EventType;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::watch::{watch_internal, Outgoing};

/// clientv3 concurrency's error messages, which etcd's server returns.
pub const NOT_LEADER: &str = "election: not leader";
pub const NO_LEADER: &str = "election: no leader";
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

pub struct ElectionService {
    member: Handle,
}

impl ElectionService {
    pub fn new(member: Handle) -> Self {
        Self { member }
    }
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// Puts `value` on the leader key if it is still the one created at `rev`.
async fn proclaim(
    m: &Handle,
    cred: &Credentials,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<Option<ResponseHeader>, Status> {
    let t = TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        success: vec![op_put(&leader.key, value, leader.lease)],
        failure: vec![],
    };
    let resp = txn(m, cred, t).await?;
    if !resp.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(resp.header)
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let m = &self.member;
        let prefix = prefix_of(&r.name);
        let key = session_key(&prefix, r.lease);
        let t = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op_put(&key, &r.value, r.lease)],
            failure: vec![op_get(key_get(&key))],
        };
        let resp = txn(m, &cred, t).await?;
        let cleanup = CleanupOnDrop::new(m.clone(), key.clone());
        let mut leader = LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev: revision_of(&resp),
            lease: r.lease,
        };
        if !resp.succeeded {
            let kvs = range_kvs(&resp, 0);
            let Some(kv) = kvs.first() else {
                return Err(Status::unknown(NOT_LEADER));
            };
            leader.rev = kv.create_revision;
            if kv.value != r.value {
                proclaim(m, &cred, &leader, &r.value).await?;
            }
        }
        wait_deletes(m, &cred, &prefix, leader.rev - 1).await?;
        cleanup.disarm();
        Ok(Response::new(CampaignResponse {
            header: resp.header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let header = proclaim(&self.member, &cred, &leader, &r.value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let resp = range(&self.member, &cred, &first_created(&prefix_of(&r.name))).await?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            return Err(Status::unknown(NO_LEADER));
        };
        Ok(Response::new(LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let (cred, r) = Credentials::split(request);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(observe(self.member.clone(), cred, prefix_of(&r.name), tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let t = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op_delete(&leader.key)],
            failure: vec![],
        };
        let resp = txn(&self.member, &cred, t).await?;
        Ok(Response::new(ResignResponse {
            header: resp.header,
        }))
    }
}

/// Sends the leader of `prefix` and every change of it until the client
/// goes away (etcd's `Election.observe`).
async fn observe(
    m: Handle,
    cred: Credentials,
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    let send = |r: Result<LeaderResponse, Status>| {
        let tx = tx.clone();
        async move { tx.send(r).await.is_ok() }
    };
    loop {
        let resp = match range(&m, &cred, &first_created(&prefix)).await {
            Ok(r) => r,
            Err(e) => {
                send(Err(e)).await;
                return;
            }
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        let (mut header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header, kv),
            None => {
                // No leader yet: wait for the first put under the prefix.
                let req = WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: super::concurrency::prefix_end(&prefix),
                    start_revision: rev + 1,
                    ..WatchCreateRequest::default()
                };
                let Ok((_guard, mut rx)) = watch_internal(m.watch_hub(), &req) else {
                    return;
                };
                let mut first = None;
                while first.is_none() {
                    match rx.recv().await {
                        Some(Outgoing::Events { events, .. }) => {
                            first = events
                                .into_iter()
                                .find(|e| e.r#type == EventType::Put as i32)
                                .and_then(|e| e.kv);
                        }
                        Some(Outgoing::Compacted { .. }) | None => break,
                        Some(_) => {}
                    }
                }
                let Some(kv) = first else { continue };
                (super::header_at(&m, kv.mod_revision), kv)
            }
        };
        let at = header.as_ref().map_or(0, |h| h.revision);
        if !send(Ok(LeaderResponse {
            header: header.take(),
            kv: Some(kv.clone()),
        }))
        .await
        {
            return;
        }
        // Follow the leader key until it is deleted.
        let req = WatchCreateRequest {
            key: kv.key.clone(),
            start_revision: at + 1,
            ..WatchCreateRequest::default()
        };
        let Ok((_guard, mut rx)) = watch_internal(m.watch_hub(), &req) else {
            return;
        };
        'follow: while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Events {
                    events, revision, ..
                } => {
                    for e in events {
                        if e.r#type == EventType::Delete as i32 {
                            break 'follow;
                        }
                        let r = LeaderResponse {
                            header: super::header_at(&m, revision),
                            kv: e.kv,
                        };
                        if !send(Ok(r)).await {
                            return;
                        }
                    }
                }
                Outgoing::Compacted { .. } => break,
                _ => {}
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}
