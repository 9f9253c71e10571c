//! The peer transport: carries raft messages between the members of one
//! cluster over gRPC (`proto/concordpb/peer.proto`), for the member actor.
//!
//! ```text
//!  member ── Transport::send(msgs) ──► per-peer queue (bounded, try_send; full: drop + Unreachable)
//!                                        │                      │ MsgSnap
//!                                        ▼                      ▼
//!                       stream task: Peer.Stream     snapshot task: Peer.Snapshot (1 MiB chunks)
//!                       connect → forward → broken?  → SnapshotStatus { to, ok }
//!                       back off 100 ms .. 5 s, drop + Unreachable meanwhile
//!                                        │ gRPC (x-concord-cluster-id, x-concord-member-id)
//!                                        ▼
//!  other member: peer_service(..) checks the cluster ID, decodes, ──► mpsc<Inbound> ──► member
//! ```
//!
//! Invariants:
//! - [`Transport::send`] never blocks and never awaits: each peer has a
//!   bounded queue ([`PEER_QUEUE_MESSAGES_MAX`]); what does not fit is dropped
//!   and reported as [`Inbound::Unreachable`], as etcd does. Raft tolerates
//!   loss; it must not tolerate a member stuck on a slow peer.
//! - Messages to one peer leave in the order they were given to `send`, on
//!   one stream at a time; a broken stream loses what it had taken but never
//!   reorders (MsgSnap goes its own way: raft does not order it against the
//!   stream).
//! - Every `MsgSnap` handed to the transport ends with exactly one
//!   [`Inbound::SnapshotStatus`] for it (unless its peer is removed or the
//!   transport stopped first).
//! - Only `tokio::time` is used for time, every `select!` is `biased`, and no
//!   OS thread is started, so the transport runs unchanged under madsim.
//! - The server rejects RPCs from another cluster (`PERMISSION_DENIED`) and
//!   drops messages that are not addressed to the local member.
//!
//! # Wiring (the member actor)
//!
//! ```text
//! let (mailbox_tx, mailbox) = mpsc::channel(N);            // the member's inbound
//! let transport = Transport::new(local_id, cluster_id, mailbox_tx.clone());
//! transport.add_peer(id, peer_urls)?;                       // every other member
//! Server::builder().add_service(peer_service(local_id, cluster_id, mailbox_tx))
//!     .serve_with_incoming_shutdown(peer_listener, ..);     // the peer listener
//! mailbox:  Inbound::Message(m)                 => raw_node.step(m)
//!           Inbound::Unreachable(id)            => raw_node.report_unreachable(id)
//!           Inbound::SnapshotStatus { to, ok }  => raw_node.report_snapshot(to, ..)
//! Ready:    persist, then transport.send(rd.messages)
//! membership: add_peer / update_peer / remove_peer as conf changes apply
//! shutdown: transport.stop(); drop the mailbox (ends the peer server's streams)
//! ```

mod codec;
mod net;
mod peer;
mod server;
mod snapshot;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};

use crate::raft::{Message, MessageKind};

pub use codec::{decode, encode, CodecError};
pub use net::{error_chain, fetch_hash_kv, fetch_members, Dialer};
pub use net::{CLUSTER_ID_HEADER, MEMBER_ID_HEADER};
pub use server::{peer_service, LocalState, PeerGrpcServer, PeerService};
pub use snapshot::SnapshotError;

/// Messages waiting for one peer's stream; more are dropped (etcd: 4096).
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// `MsgSnap`s waiting for one peer's snapshot task (raft sends one at a time).
pub const PEER_QUEUE_SNAPSHOTS_MAX: usize = 4;
/// Data bytes per snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Largest encoded peer message accepted (etcd's rafthttp read limit).
pub const MESSAGE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// What the transport hands to the member.
// Nearly every item is a `Message`; boxing it would cost an allocation per
// message to shrink the rare reports.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message from a peer, addressed to this member: `RawNode::step` it.
    Message(Message),
    /// Messages to this peer were dropped or its connection failed:
    /// `RawNode::report_unreachable`.
    Unreachable(u64),
    /// A `MsgSnap` to `to` was delivered (`ok`) or failed:
    /// `RawNode::report_snapshot`.
    SnapshotStatus { to: u64, ok: bool },
    /// A peer refused this member because it was removed from the cluster
    /// (etcd's HTTP 410): the member must stop.
    Removed,
}

/// The status message a member sends to a peer that was removed (etcd's
/// wording); the removed peer stops when it sees it.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

/// The state of the message stream to one peer (etcd's "active since").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Connecting (queued messages wait).
    Connecting,
    /// Connected and the stream opened (queued messages flow, unless the
    /// peer then refuses the stream).
    Connected,
    /// The last attempt failed; waiting before the next one (queued
    /// messages are dropped and reported `Unreachable`).
    BackingOff,
}

/// Operating errors of the transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("peer {0:x} is already known")]
    PeerExists(u64),
    #[error("peer {0:x} is not known")]
    UnknownPeer(u64),
    #[error("peer {0:x} is the local member")]
    LocalPeer(u64),
    #[error("peer {0:x} has no URL")]
    NoUrls(u64),
    #[error("invalid peer URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the transport is stopped")]
    Stopped,
}

/// The client side: queues and tasks for every known peer. Cheap to clone
/// (an `Arc`); all clones share the peers.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    local_id: u64,
    cluster_id: u64,
    inbound: mpsc::Sender<Inbound>,
    dialer: Dialer,
    state: Mutex<State>,
    /// Members removed from the cluster: their RPCs are refused.
    removed: Arc<Mutex<std::collections::BTreeSet<u64>>>,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<u64, PeerHandle>,
    stopped: bool,
}

/// The member side of one peer's tasks. Dropping it stops them.
struct PeerHandle {
    messages: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<Message>,
    urls: watch::Sender<Vec<String>>,
    status: watch::Receiver<PeerStatus>,
    /// Set to stop the tasks (also stopped when this sender is dropped).
    stop: watch::Sender<bool>,
    dropped_messages: AtomicU64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_id", &format_args!("{:x}", self.inner.local_id))
            .field("cluster_id", &format_args!("{:x}", self.inner.cluster_id))
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport for member `local_id` of cluster `cluster_id` with no
    /// peers yet; reports go to `inbound` (the member's mailbox).
    pub fn new(local_id: u64, cluster_id: u64, inbound: mpsc::Sender<Inbound>) -> Transport {
        Transport::with_dialer(local_id, cluster_id, inbound, Dialer::plain())
    }

    /// Like [`Transport::new`], reaching peers with `dialer` (https peers
    /// need one with TLS).
    pub fn with_dialer(
        local_id: u64,
        cluster_id: u64,
        inbound: mpsc::Sender<Inbound>,
        dialer: Dialer,
    ) -> Transport {
        assert!(local_id != 0, "member ID 0 is raft's 'none'");
        Transport {
            inner: Arc::new(Inner {
                local_id,
                cluster_id,
                inbound,
                dialer,
                state: Mutex::new(State::default()),
                removed: Arc::default(),
            }),
        }
    }

    /// The peer server for this member's peer listener: like
    /// [`peer_service`], and it refuses members this transport removed.
    /// `local` answers the `Members` RPC (for members joining) and the
    /// `HashKv` RPC (for corruption checks).
    pub fn service(
        &self,
        inbound: mpsc::Sender<Inbound>,
        local: Arc<dyn LocalState>,
    ) -> PeerGrpcServer {
        server::peer_service_with_removed(
            self.inner.local_id,
            self.inner.cluster_id,
            inbound,
            self.inner.removed.clone(),
            local,
        )
    }

    /// Peer `id` was removed from the cluster: stop its tasks and refuse
    /// it from now on (it learns of its removal that way).
    pub fn remove_member(&self, id: u64) -> Result<(), TransportError> {
        self.inner
            .removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        self.remove_peer(id)
    }

    pub fn local_id(&self) -> u64 {
        self.inner.local_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the map itself
        // is never left half-updated, so keep going with it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `msgs` for their peers (`to`) and returns at once. Messages to
    /// an unknown peer are dropped; to a peer whose queue is full, dropped
    /// and reported `Unreachable` (a `MsgSnap`: `SnapshotStatus { ok: false }`).
    pub fn send(&self, msgs: Vec<Message>) {
        let state = self.state();
        if state.stopped {
            tracing::debug!(count = msgs.len(), "transport stopped; dropping messages");
            return;
        }
        // Peers that lost messages in this call: one report each.
        let mut unreachable: Vec<u64> = Vec::new();
        for m in msgs {
            let to = m.to;
            let Some(peer) = state.peers.get(&to) else {
                tracing::debug!(to = %format_args!("{to:x}"), kind = ?m.kind, "dropping message to unknown peer");
                continue;
            };
            if m.kind == MessageKind::MsgSnap {
                if peer.snapshots.try_send(m).is_err() {
                    tracing::warn!(to = %format_args!("{to:x}"), "snapshot queue full; dropping MsgSnap");
                    self.report(Inbound::SnapshotStatus { to, ok: false });
                    unreachable.push(to);
                }
            } else if let Err(e) = peer.messages.try_send(m) {
                let m = e.into_inner();
                let metrics = &crate::metrics::METRICS;
                metrics
                    .peer_sent_failures
                    .with_label_values(&[&format!("{to:x}")])
                    .inc();
                if m.kind == MessageKind::MsgHeartbeat {
                    metrics.heartbeat_send_failures.inc();
                }
                let dropped = peer.dropped_messages.fetch_add(1, Ordering::Relaxed);
                if dropped % 1024 == 0 {
                    tracing::warn!(
                        to = %format_args!("{to:x}"),
                        dropped_total = dropped + 1,
                        "peer queue full; dropping message"
                    );
                }
                unreachable.push(to);
            }
        }
        unreachable.sort_unstable();
        unreachable.dedup();
        for to in unreachable {
            self.report(Inbound::Unreachable(to));
        }
    }

    /// Hands `report` to the member without waiting; if its mailbox is full
    /// the report is dropped (raft recovers from a lost report through
    /// heartbeats and its own probing).
    fn report(&self, report: Inbound) {
        if let Err(e) = self.inner.inbound.try_send(report) {
            tracing::debug!(report = ?e.into_inner(), "member mailbox full; dropping report");
        }
    }

    /// Starts the tasks for peer `id`, reachable at `urls` (`http://host:port`).
    /// Must be called within the tokio runtime.
    pub fn add_peer(&self, id: u64, urls: Vec<String>) -> Result<(), TransportError> {
        self.check_urls(id, &urls)?;
        let mut state = self.state();
        if state.stopped {
            return Err(TransportError::Stopped);
        }
        if state.peers.contains_key(&id) {
            return Err(TransportError::PeerExists(id));
        }
        let handle = self.spawn_peer(id, urls);
        state.peers.insert(id, handle);
        tracing::info!(peer = %format_args!("{id:x}"), "added peer");
        Ok(())
    }

    /// Replaces the URLs of peer `id`; its stream reconnects to them at once.
    pub fn update_peer(&self, id: u64, urls: Vec<String>) -> Result<(), TransportError> {
        self.check_urls(id, &urls)?;
        let state = self.state();
        let peer = state
            .peers
            .get(&id)
            .ok_or(TransportError::UnknownPeer(id))?;
        peer.urls.send_replace(urls);
        tracing::info!(peer = %format_args!("{id:x}"), "updated peer URLs");
        Ok(())
    }

    /// Stops the tasks of peer `id` and forgets it; its queued messages are
    /// dropped.
    pub fn remove_peer(&self, id: u64) -> Result<(), TransportError> {
        let handle = self
            .state()
            .peers
            .remove(&id)
            .ok_or(TransportError::UnknownPeer(id))?;
        handle.stop.send_replace(true);
        tracing::info!(peer = %format_args!("{id:x}"), "removed peer");
        Ok(())
    }

    /// The IDs of the known peers, ascending.
    pub fn peers(&self) -> Vec<u64> {
        self.state().peers.keys().copied().collect()
    }

    /// Watches the stream state of peer `id` (for "is it active" checks and
    /// for tests that must wait for a connection without sleeping).
    pub fn peer_status(&self, id: u64) -> Option<watch::Receiver<PeerStatus>> {
        self.state().peers.get(&id).map(|p| p.status.clone())
    }

    /// Stops every peer task: each ends at its next await point, closing its
    /// stream. Later sends are dropped and `add_peer` fails. Idempotent.
    pub fn stop(&self) {
        let mut state = self.state();
        state.stopped = true;
        for (_, handle) in std::mem::take(&mut state.peers) {
            handle.stop.send_replace(true);
        }
        tracing::info!("transport stopped");
    }

    fn check_urls(&self, id: u64, urls: &[String]) -> Result<(), TransportError> {
        if id == self.inner.local_id {
            return Err(TransportError::LocalPeer(id));
        }
        if id == 0 {
            return Err(TransportError::UnknownPeer(id));
        }
        if urls.is_empty() {
            return Err(TransportError::NoUrls(id));
        }
        urls.iter().try_for_each(|u| self.inner.dialer.check_url(u))
    }

    fn spawn_peer(&self, id: u64, urls: Vec<String>) -> PeerHandle {
        let (messages, messages_rx) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
        let (snapshots, snapshots_rx) = mpsc::channel(PEER_QUEUE_SNAPSHOTS_MAX);
        let (urls_tx, urls_rx) = watch::channel(urls);
        let (status_tx, status_rx) = watch::channel(PeerStatus::Connecting);
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = peer::PeerCtx {
            id,
            local_id: self.inner.local_id,
            cluster_id: self.inner.cluster_id,
            inbound: self.inner.inbound.clone(),
            dialer: self.inner.dialer.clone(),
            urls: urls_rx,
            stop: stop_rx,
        };
        tokio::spawn(peer::run_stream(ctx.clone(), messages_rx, status_tx));
        tokio::spawn(snapshot::run_sender(ctx, snapshots_rx));
        PeerHandle {
            messages,
            snapshots,
            urls: urls_tx,
            status: status_rx,
            stop: stop_tx,
            dropped_messages: AtomicU64::new(0),
        }
    }
}

#[cfg(all(test, madsim))]
mod sim_tests;
#[cfg(all(test, not(madsim)))]
mod tests;
