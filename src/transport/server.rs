//! The receiving side: the `Peer` gRPC service. Checks each RPC's cluster
//! ID, decodes messages, and hands those addressed to this member to its
//! mailbox.
//!
//! Invariants: an RPC from another cluster is refused with
//! `PERMISSION_DENIED` before anything is read; a message is delivered only
//! if it decodes, is addressed to `local_id` and comes from the member named
//! in the metadata; delivery waits for room in the mailbox (flow control
//! reaches the sender through HTTP/2), and a stream ends as soon as the
//! mailbox is closed (the member stopped).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot::{Reassembly, SnapshotError};
use super::{codec, net, peer, Inbound, MESSAGE_BYTES_MAX, REMOVED_MESSAGE};
use crate::proto::concordpb::peer_server::{Peer, PeerServer};
use crate::proto::concordpb::{MembersRequest, RaftMessage, SnapshotAck, SnapshotChunk, StreamAck};
use crate::proto::etcdserverpb::{HashKvRequest, HashKvResponse, MemberListResponse};
use crate::raft::Message;

/// The `Peer` service of member `local_id` in cluster `cluster_id`.
#[derive(Clone)]
pub struct PeerService {
    local_id: u64,
    cluster_id: u64,
    inbound: mpsc::Sender<Inbound>,
    removed: Arc<Mutex<BTreeSet<u64>>>,
    local: Arc<dyn LocalState>,
}

/// What the peer service answers from the member's own state.
pub trait LocalState: Send + Sync {
    /// The `Members` RPC: the member's current membership.
    fn members(&self) -> MemberListResponse;
    /// The `HashKv` RPC: the KV hash at `revision` (0: the current one).
    fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, Status>;
}

/// A member with no state to show (tests of the transport alone).
struct NoState;

impl LocalState for NoState {
    fn members(&self) -> MemberListResponse {
        MemberListResponse::default()
    }

    fn hash_kv(&self, _revision: i64) -> Result<HashKvResponse, Status> {
        Err(Status::unavailable("no store"))
    }
}

/// The server type of [`peer_service`] (madsim-tonic's generated server
/// carries an interceptor parameter).
#[cfg(not(madsim))]
pub type PeerGrpcServer = PeerServer<PeerService>;
/// The server type of [`peer_service`] (madsim-tonic's generated server
/// carries an interceptor parameter).
#[cfg(madsim)]
pub type PeerGrpcServer = PeerServer<PeerService, tonic::codegen::IdentityInterceptor>;

/// The peer server to add to the tonic router of the peer listener: messages
/// for `local_id` from members of `cluster_id` go to `inbound`.
pub fn peer_service(
    local_id: u64,
    cluster_id: u64,
    inbound: mpsc::Sender<Inbound>,
) -> PeerGrpcServer {
    peer_service_with_removed(
        local_id,
        cluster_id,
        inbound,
        Arc::default(),
        Arc::new(NoState),
    )
}

/// [`peer_service`] that refuses the members in `removed` with
/// [`REMOVED_MESSAGE`].
pub(crate) fn peer_service_with_removed(
    local_id: u64,
    cluster_id: u64,
    inbound: mpsc::Sender<Inbound>,
    removed: Arc<Mutex<BTreeSet<u64>>>,
    local: Arc<dyn LocalState>,
) -> PeerGrpcServer {
    assert!(local_id != 0, "member ID 0 is raft's 'none'");
    PeerServer::new(PeerService {
        local_id,
        cluster_id,
        inbound,
        removed,
        local,
    })
    .max_decoding_message_size(MESSAGE_BYTES_MAX)
    .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

impl PeerService {
    /// Refuses a member that was removed from the cluster.
    fn check_not_removed(&self, sender: u64) -> Result<(), Status> {
        let removed = self
            .removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&sender);
        if removed {
            tracing::warn!(peer = %format_args!("{sender:x}"), "refusing a removed member");
            return Err(Status::failed_precondition(REMOVED_MESSAGE));
        }
        Ok(())
    }

    /// Whether `m` (from the member `sender` named in the metadata) may be
    /// delivered; logs why not.
    fn accept(&self, sender: u64, m: &Message) -> bool {
        if m.to != self.local_id {
            tracing::warn!(
                to = %format_args!("{:x}", m.to),
                local = %format_args!("{:x}", self.local_id),
                kind = ?m.kind,
                "dropping peer message addressed to another member"
            );
            return false;
        }
        if m.from != sender {
            tracing::warn!(
                from = %format_args!("{:x}", m.from),
                sender = %format_args!("{sender:x}"),
                kind = ?m.kind,
                "dropping peer message whose sender differs from the stream's member ID"
            );
            return false;
        }
        true
    }

    /// Hands `m` to the member, waiting for room; fails once it has stopped.
    async fn deliver(&self, m: Message) -> Result<(), Status> {
        self.inbound
            .send(Inbound::Message(m))
            .await
            .map_err(|_| Status::unavailable("member stopped"))
    }
}

/// The next item of `stream`, or `UNAVAILABLE` once `closed` (the member's
/// mailbox closing) resolves. `closed` is created once per stream: one per
/// item would register a waiter for every message.
async fn next<T>(
    stream: &mut Streaming<T>,
    closed: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<T>, Status> {
    tokio::select! {
        biased;
        _ = closed => Err(Status::unavailable("member stopped")),
        m = stream.message() => m,
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(self.local.members()))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let sender = net::check_identity(request.metadata(), self.cluster_id)?;
        self.check_not_removed(sender)?;
        Ok(Response::new(
            self.local.hash_kv(request.into_inner().revision)?,
        ))
    }

    async fn stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<StreamAck>, Status> {
        let sender = net::check_identity(request.metadata(), self.cluster_id)?;
        self.check_not_removed(sender)?;
        let peer = format!("{sender:x}");
        tracing::debug!(%peer, "peer stream opened");
        let received_bytes = crate::metrics::METRICS
            .peer_received_bytes
            .with_label_values(&[&peer]);
        let mut stream = request.into_inner();
        let closed = self.inbound.closed();
        tokio::pin!(closed);
        while let Some(wire) = next(&mut stream, closed.as_mut()).await? {
            received_bytes.inc_by(prost::Message::encoded_len(&wire) as u64);
            // A member removed while its stream was open learns it here.
            self.check_not_removed(sender)?;
            if peer::is_keepalive(&wire) {
                continue;
            }
            match codec::decode(wire) {
                Ok(m) if self.accept(sender, &m) => self.deliver(m).await?,
                Ok(_) => {}
                Err(e) => {
                    crate::metrics::METRICS
                        .peer_received_failures
                        .with_label_values(&[&peer])
                        .inc();
                    tracing::warn!(%peer, error = %e, "dropping undecodable peer message");
                }
            }
        }
        tracing::debug!(%peer, "peer stream closed");
        Ok(Response::new(StreamAck {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let sender = net::check_identity(request.metadata(), self.cluster_id)?;
        self.check_not_removed(sender)?;
        let peer = format!("{sender:x}");
        let mut stream = request.into_inner();
        let closed = self.inbound.closed();
        tokio::pin!(closed);
        let first = next(&mut stream, closed.as_mut())
            .await?
            .ok_or(SnapshotError::Empty)
            .map_err(|e| invalid(&peer, e))?;
        let mut reassembly = Reassembly::start(first).map_err(|e| invalid(&peer, e))?;
        while let Some(chunk) = next(&mut stream, closed.as_mut()).await? {
            reassembly.push(chunk).map_err(|e| invalid(&peer, e))?;
        }
        let m = reassembly.finish().map_err(|e| invalid(&peer, e))?;
        if !self.accept(sender, &m) {
            return Err(Status::invalid_argument(
                "snapshot not addressed to this member",
            ));
        }
        let index = m.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let bytes = m.snapshot.as_ref().map_or(0, |s| s.data.len());
        self.deliver(m).await?;
        tracing::info!(%peer, index, bytes, "snapshot received");
        Ok(Response::new(SnapshotAck {}))
    }
}

fn invalid(peer: &str, e: SnapshotError) -> Status {
    tracing::warn!(%peer, error = %e, "rejecting a malformed snapshot");
    Status::invalid_argument(e.to_string())
}
