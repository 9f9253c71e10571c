//! member: the actor that owns the log, the applier and the store's write
//! side. Clients talk to it through a [`Handle`].
//!
//! ```text
//! Handle::propose ──► mailbox ──► actor loop:
//!                                  1. take every waiting proposal (group commit)
//!                                  2. append them to the durable log, ONE fsync
//!                                  3. apply them in order in one mvcc group; the
//!                                     applied index goes into the same atomic batch
//!                                  4. answer each waiter (after 2 and 3, never before)
//!                                  5. between groups: physical compaction steps
//! ```
//! Today the log is a single-member log; raft replaces steps 1-2 (propose,
//! replicate, commit) and the rest stays as it is.
//!
//! Invariants: an answer is sent only for an entry that is durable in the log
//! and applied; applied index and data are written in one batch, so replay
//! after a crash re-applies exactly the entries after the applied index; a
//! storage failure stops the member (no retry after a failed fsync).

pub mod apply;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{Bootstrap, ClusterError, Membership};
use crate::lease::{LeaseError, Lessor};
use crate::mvcc::store::DiskCompactStatus;
use crate::mvcc::{MvccError, Store};
use crate::proto::concordpb::{internal_request, InternalRequest};
use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use crate::storage::log::{self, EntryKind, LogEntry};
use crate::storage::{Backend, Batch, Partition, StorageError};
use crate::watch::WatchHub;

pub use apply::Applied;

const META_APPLIED_INDEX: &[u8] = b"member/applied_index";
/// Most expired leases revoked per lease tick (etcd: 500 per 500 ms).
const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// Most lease checkpoints in one proposal (etcd: 1000).
const LEASE_CHECKPOINTS_PER_PROPOSAL_MAX: usize = 1000;
/// The term of the single-member log (raft brings real terms).
const SINGLE_MEMBER_TERM: u64 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    #[error("request of {len} bytes exceeds --max-request-bytes {max}")]
    RequestTooLarge { len: usize, max: usize },
    #[error("the member is stopped")]
    Stopped,
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error(transparent)]
    Lease(crate::lease::LeaseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("data dir belongs to cluster {found:x}, not to {want:x}")]
    WrongCluster { found: u64, want: u64 },
}

/// Limits and knobs of a member.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub max_request_bytes: usize,
    /// Most proposals taken into one group (one fsync).
    pub group_entries_max: usize,
    /// Log entries kept behind the applied index.
    pub log_retain_entries: u64,
    /// History entries examined per physical compaction step.
    pub compaction_step_entries: usize,
    /// Leases granted with a shorter TTL get this one (etcd's minTTL).
    pub lease_min_ttl_secs: i64,
    /// Extra time leases get when this member becomes the primary lessor.
    pub election_timeout: Duration,
    /// How often the member looks for expired leases and renewals to
    /// checkpoint.
    pub lease_tick: Duration,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1_572_864,
            group_entries_max: 4096,
            log_retain_entries: 5000,
            compaction_step_entries: 1000,
            lease_min_ttl_secs: Lessor::min_ttl_secs(100, 1000),
            election_timeout: Duration::from_millis(1000),
            lease_tick: Duration::from_millis(100),
        }
    }
}

/// The member's progress, as Maintenance.Status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub committed_index: u64,
    pub applied_index: u64,
    pub term: u64,
    pub leader: u64,
}

struct Shared {
    store: Arc<Store>,
    watch: Arc<WatchHub>,
    lessor: Mutex<Lessor>,
    /// The member's monotonic clock origin (lease deadlines count from it).
    clock: tokio::time::Instant,
    membership: RwLock<Membership>,
    committed: AtomicU64,
    applied: AtomicU64,
    stopped: AtomicBool,
    next_id: AtomicU64,
    cfg: MemberConfig,
}

impl Shared {
    fn lessor(&self) -> MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }
}

type Reply = oneshot::Sender<Result<Applied, MemberError>>;

struct Proposal {
    id: u64,
    data: Vec<u8>,
    reply: Reply,
}

/// The client side of a member: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Proposal>,
    shared: Arc<Shared>,
}

impl Handle {
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.shared.watch
    }

    pub fn membership(&self) -> Membership {
        self.shared
            .membership
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn member_id(&self) -> u64 {
        self.membership().local_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.membership().cluster_id
    }

    pub fn progress(&self) -> Progress {
        Progress {
            committed_index: self.shared.committed.load(Ordering::Acquire),
            applied_index: self.shared.applied.load(Ordering::Acquire),
            term: SINGLE_MEMBER_TERM,
            leader: self.member_id(),
        }
    }

    pub fn config(&self) -> &MemberConfig {
        &self.shared.cfg
    }

    /// Proposes a mutating request and waits until it is durable and
    /// applied; returns the applier's response.
    pub async fn propose(
        &self,
        request: internal_request::Request,
    ) -> Result<Applied, MemberError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(MemberError::Stopped);
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let data = InternalRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.shared.cfg.max_request_bytes {
            return Err(MemberError::RequestTooLarge {
                len: data.len(),
                max: self.shared.cfg.max_request_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { id, data, reply })
            .await
            .map_err(|_| MemberError::Stopped)?;
        rx.await.map_err(|_| MemberError::Stopped)?
    }

    /// Waits until a linearizable read may be served from the local store.
    ///
    /// On a single member every acknowledged write is applied before it is
    /// acknowledged and the published revision never goes back, so the local
    /// store is already linearizable; raft's ReadIndex goes here.
    pub async fn read_index(&self) -> Result<(), MemberError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(MemberError::Stopped);
        }
        Ok(())
    }

    /// The TTL a grant of `ttl` seconds gets (raised to the minimum).
    pub fn lease_effective_ttl(&self, ttl: i64) -> Result<i64, LeaseError> {
        self.shared.lessor().effective_ttl(ttl)
    }

    /// A new lease ID (etcd: the member's request ID generator, positive).
    pub fn next_lease_id(&self) -> i64 {
        loop {
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64);
            if id != 0 {
                return id as i64;
            }
        }
    }

    /// A keep-alive: renews the lease on the primary; returns its TTL.
    pub fn lease_renew(&self, id: i64) -> Result<i64, LeaseError> {
        let now = self.shared.now();
        self.shared.lessor().renew(id, now)
    }

    /// TimeToLive: (remaining seconds, granted TTL, keys if asked), or
    /// `None` for an unknown lease.
    pub fn lease_time_to_live(&self, id: i64, keys: bool) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let now = self.shared.now();
        let l = self.shared.lessor();
        let lease = l.get(id)?;
        let remaining = l.remaining_secs(id, now)?;
        let ks = if keys {
            lease.keys.iter().cloned().collect()
        } else {
            Vec::new()
        };
        Some((remaining, lease.ttl, ks))
    }

    /// Every lease, soonest expiry first.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.shared.lessor().ids_by_expiry()
    }
}

/// etcd's request ID layout: low 16 bits of the member ID, 40 bits of Unix
/// milliseconds at start, then a counter.
fn first_request_id(member_id: u64) -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ((member_id & 0xffff) << 48) | ((ms & 0xff_ffff_ffff) << 8)
}

/// The actor. Created by [`Member::open`], driven by [`Member::run`].
pub struct Member {
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Proposal>,
    last_index: u64,
    first_index: u64,
    waiters: HashMap<u64, Reply>,
    /// Physical compactions waiting for the disk compaction to reach them.
    physical_waiters: Vec<(i64, Reply, Applied)>,
}

fn read_applied(view: &dyn crate::storage::ReadView) -> Result<u64, MemberError> {
    match view.get(Partition::Meta, META_APPLIED_INDEX)? {
        None => Ok(0),
        Some(v) => {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                MemberError::Storage(StorageError::Engine("applied index is not 8 bytes".into()))
            })?;
            Ok(u64::from_be_bytes(b))
        }
    }
}

impl Member {
    /// Opens the member on `backend`: bootstraps a new data dir or restores
    /// an existing one (ignoring the bootstrap flags), then replays the log
    /// entries after the applied index.
    pub fn open(
        backend: Arc<dyn Backend>,
        bootstrap: &Bootstrap,
        cfg: MemberConfig,
    ) -> Result<(Member, Handle), MemberError> {
        let membership = match Membership::load(backend.as_ref())? {
            Some(m) => m,
            None => {
                let m = Membership::bootstrap(bootstrap)?;
                let mut b = Batch::new();
                m.save(&mut b);
                backend.write(b)?;
                backend.persist()?;
                tracing::info!(
                    member_id = format!("{:x}", m.local_id),
                    cluster_id = format!("{:x}", m.cluster_id),
                    "bootstrapped a new cluster"
                );
                m
            }
        };
        let store = Arc::new(Store::open(backend.clone())?);
        let applied = read_applied(backend.as_ref())?;
        let (first_index, last_index) = match log::bounds(backend.as_ref())? {
            Some((f, l)) => (f, l.max(applied)),
            None => (applied + 1, applied),
        };
        let (tx, rx) = mpsc::channel(16 * 1024);
        let clock = tokio::time::Instant::now();
        let mut lessor = Lessor::new(cfg.lease_min_ttl_secs);
        lessor.restore(
            backend.as_ref(),
            store.take_restored_leases(),
            Duration::ZERO,
        )?;
        // A single member is always the leader: the primary lessor.
        lessor.promote(cfg.election_timeout);
        let shared = Arc::new(Shared {
            watch: WatchHub::new(store.clone()),
            lessor: Mutex::new(lessor),
            clock,
            store,
            next_id: AtomicU64::new(first_request_id(membership.local_id)),
            membership: RwLock::new(membership),
            committed: AtomicU64::new(last_index),
            applied: AtomicU64::new(applied),
            stopped: AtomicBool::new(false),
            cfg,
        });
        let mut member = Member {
            backend,
            shared: shared.clone(),
            rx,
            last_index,
            first_index,
            waiters: HashMap::new(),
            physical_waiters: Vec::new(),
        };
        member.replay(applied)?;
        Ok((member, Handle { tx, shared }))
    }

    /// Re-applies durable entries after the applied index (crash recovery).
    fn replay(&mut self, applied: u64) -> Result<(), MemberError> {
        if self.last_index <= applied {
            return Ok(());
        }
        let entries = log::entries(self.backend.as_ref(), applied + 1, self.last_index)?;
        tracing::info!(
            from = applied + 1,
            to = self.last_index,
            "replaying log entries"
        );
        self.apply(entries)?;
        Ok(())
    }

    /// The actor loop; returns when every [`Handle`] is dropped or the
    /// member fails. A storage failure is returned (the process must exit).
    pub async fn run(mut self) -> Result<(), MemberError> {
        let result = self.run_inner().await;
        self.shared.stopped.store(true, Ordering::Release);
        if let Err(e) = &result {
            tracing::error!(error = %e, "member stopped on a storage failure");
        }
        // Everything accepted was made durable before being answered; a
        // final persist covers the applied state written since.
        if self.backend.persist().is_ok() && result.is_ok() {
            if let Err(e) = self.backend.flush_for_restart() {
                tracing::warn!(error = %e, "could not flush tables before exit");
            }
        }
        result
    }

    async fn run_inner(&mut self) -> Result<(), MemberError> {
        let mut next_tick = tokio::time::Instant::now() + self.shared.cfg.lease_tick;
        loop {
            if tokio::time::Instant::now() >= next_tick {
                self.lease_tick().await?;
                next_tick = tokio::time::Instant::now() + self.shared.cfg.lease_tick;
            }
            let first = if self.compaction_pending() {
                match self.rx.try_recv() {
                    Ok(p) => p,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.compaction_step()?;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                }
            } else {
                match tokio::time::timeout_at(next_tick, self.rx.recv()).await {
                    Ok(Some(p)) => p,
                    Ok(None) => return Ok(()),
                    Err(_) => continue, // tick time
                }
            };
            let mut group = vec![first];
            while group.len() < self.shared.cfg.group_entries_max {
                match self.rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            self.handle_group(group).await?;
            if self.compaction_pending() {
                self.compaction_step()?;
            }
        }
    }

    /// The primary lessor's periodic work: revoke expired leases and
    /// replicate renewals as checkpoints, through the log like any request.
    async fn lease_tick(&mut self) -> Result<(), MemberError> {
        let now = self.shared.now();
        let (expired, checkpoints) = {
            let mut l = self.shared.lessor();
            if !l.is_primary() {
                return Ok(());
            }
            (
                l.take_expired(now, LEASE_REVOKES_PER_TICK_MAX),
                l.take_checkpoints(LEASE_CHECKPOINTS_PER_PROPOSAL_MAX),
            )
        };
        let mut group: Vec<Proposal> = expired
            .into_iter()
            .map(|id| {
                tracing::info!(lease = format!("{id:016x}"), "lease expired, revoking");
                self.internal_proposal(internal_request::Request::LeaseRevoke(LeaseRevokeRequest {
                    id,
                }))
            })
            .collect();
        if !checkpoints.is_empty() {
            let checkpoints = checkpoints
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            group.push(
                self.internal_proposal(internal_request::Request::LeaseCheckpoint(
                    LeaseCheckpointRequest { checkpoints },
                )),
            );
        }
        if group.is_empty() {
            return Ok(());
        }
        self.handle_group(group).await
    }

    /// A request the member proposes itself; nobody waits for its answer.
    fn internal_proposal(&self, request: internal_request::Request) -> Proposal {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let data = InternalRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        let (reply, _) = oneshot::channel();
        Proposal { id, data, reply }
    }

    fn compaction_pending(&self) -> bool {
        !self.physical_waiters.is_empty() || self.shared.store.disk_compaction_pending()
    }

    /// One physical compaction step; when the compaction is done and
    /// durable, answers the `physical=true` compactions waiting for it.
    fn compaction_step(&mut self) -> Result<(), MemberError> {
        let status = self
            .shared
            .store
            .compact_disk_step(self.shared.cfg.compaction_step_entries)?;
        let done_up_to = match status {
            DiskCompactStatus::InProgress => return Ok(()),
            DiskCompactStatus::Finished(target) => target,
            DiskCompactStatus::Idle => i64::MAX,
        };
        self.backend.persist()?;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.physical_waiters)
            .into_iter()
            .partition(|(rev, _, _)| *rev <= done_up_to);
        self.physical_waiters = waiting;
        for (_, reply, applied) in ready {
            let _ = reply.send(Ok(applied));
        }
        Ok(())
    }

    /// Appends a group durably (one fsync), then applies and answers it.
    async fn handle_group(&mut self, group: Vec<Proposal>) -> Result<(), MemberError> {
        let mut entries = Vec::with_capacity(group.len());
        for p in group {
            self.last_index += 1;
            entries.push(LogEntry {
                index: self.last_index,
                term: SINGLE_MEMBER_TERM,
                kind: EntryKind::Request,
                data: p.data,
            });
            self.waiters.insert(p.id, p.reply);
        }
        let backend = self.backend.clone();
        let durable = entries.clone();
        tokio::task::spawn_blocking(move || log::append_durable(backend.as_ref(), &durable))
            .await
            .map_err(|e| StorageError::Engine(format!("log append task failed: {e}")))??;
        self.shared
            .committed
            .store(self.last_index, Ordering::Release);
        self.apply(entries)
    }
}
