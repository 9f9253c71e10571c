//! member: the actor that owns the raft node, the storage and the applier.
//! Clients talk to it through a [`Handle`].
//!
//! ```text
//! Handle::propose / read_index ──► mailbox ─┐
//! transport (peer messages)    ──► inbound ─┼─► actor loop (one task):
//! heartbeat interval           ──► tick  ───┘     feed raft (propose, step, tick, read_index)
//!                                                 for each Ready, in this order:
//!   1. persist entries + hard state (one batch, fsync when raft says so)
//!   2. send messages
//!   3. apply committed entries in order (mvcc group; the applied index and the
//!      configuration go into the same atomic batch)
//!   4. answer waiting proposals (by request id) and reads whose index is applied
//!   5. advance
//! ```
//!
//! Invariants: a proposal is answered only after its entry is committed by
//! raft (durable on a quorum) and applied here; applied index and data are
//! written in one batch, so after a crash raft re-delivers exactly the
//! entries after the applied index; a storage failure stops the member (no
//! retry after a failed fsync).

pub mod apply;
mod apply_auth;
#[cfg(test)]
mod auth_tests;
mod handle;
mod inbound;
pub mod snapshot;

pub use handle::{Handle, Observer};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthState, SimpleTokens};
use crate::cluster::{Bootstrap, ClusterError, Membership};
use crate::lease::{LeaseError, Lessor};
use crate::metrics::METRICS;
use crate::mvcc::store::DiskCompactStatus;
use crate::mvcc::{MvccError, Store};
use crate::proto::concordpb::{internal_request, InternalRequest};
use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use crate::storage::log::LogEntry;
use crate::storage::raft_log::RaftLog;
use crate::storage::{Backend, Batch, Partition, StorageError};
use crate::transport::{Inbound, Transport};
use crate::watch::WatchHub;
use concord_raft::{
    ConfChange, ConfChangeSingle, ConfState, MessageKind, RawNode, Role, SnapshotStatus, SoftState,
};

pub use apply::Applied;

pub const META_APPLIED_INDEX: &[u8] = b"member/applied_index";
/// A ReadIndex unanswered for this long is asked again (etcd: 500 ms).
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);
/// Most expired leases revoked per lease tick (etcd: 500 per 500 ms).
const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// Most lease checkpoints in one proposal (etcd: 1000).
const LEASE_CHECKPOINTS_PER_PROPOSAL_MAX: usize = 1000;
/// Proposals taken from the mailbox together go to raft as one message of
/// at most this many bytes (more are split).
const PROPOSAL_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// An apply longer than this counts as slow (etcd's warning threshold).
const SLOW_APPLY: Duration = Duration::from_millis(100);

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
    #[error("raft: {0}")]
    Raft(#[from] concord_raft::Error),
    #[error("no leader")]
    NoLeader,
    #[error("request timed out")]
    Timeout,
    /// A timeout of a request that started shortly before a new leader
    /// was elected (etcd's ErrTimeoutDueToLeaderFail).
    #[error("request timed out, possibly due to previous leader failure")]
    TimeoutLeaderFail,
    #[error("not leader")]
    NotLeader,
    #[error("leader changed")]
    LeaderChanged,
    #[error("bad leader transferee")]
    BadTransferee,
    #[error("leader transfer took too long")]
    TransferTimeout,
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
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
    /// One raft tick (etcd's `--heartbeat-interval`).
    pub heartbeat_interval: Duration,
    /// How long a proposal or a read may wait (etcd: 5 s + 2 × election timeout).
    pub request_timeout: Duration,
    /// Raft's pre-vote (`--pre-vote`).
    pub pre_vote: bool,
    /// Seed of raft's election timeout randomisation.
    pub raft_seed: u64,
    /// How long a simple auth token lives since its last use
    /// (`--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// JWT tokens (`--auth-token jwt,...`) instead of simple ones.
    #[cfg(not(madsim))]
    pub jwt: Option<Arc<crate::auth::jwt::JwtTokens>>,
    /// Simulated clock drift: this member's clock runs at this rate of the
    /// simulation's time (its ticks come that much more often and lease
    /// time passes that much faster). Simulations only.
    #[cfg(madsim)]
    pub clock_rate: f64,
}

impl MemberConfig {
    /// How long `d` of this member's clock takes in real (or simulated) time.
    fn on_clock(&self, d: Duration) -> Duration {
        #[cfg(madsim)]
        return d.div_f64(self.clock_rate);
        #[cfg(not(madsim))]
        d
    }
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
            heartbeat_interval: Duration::from_millis(100),
            request_timeout: Duration::from_millis(7000),
            raft_seed: 0,
            auth_token_ttl: Duration::from_secs(300),
            #[cfg(not(madsim))]
            jwt: None,
            pre_vote: true,
            #[cfg(madsim)]
            clock_rate: 1.0,
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
    /// The replicated auth state, replaced whole by the applier.
    auth: RwLock<Arc<AuthState>>,
    /// Simple tokens this member knows (assigned when applied).
    tokens: Mutex<SimpleTokens>,
    /// The member's monotonic clock origin (lease deadlines count from it).
    clock: tokio::time::Instant,
    membership: RwLock<Membership>,
    committed: AtomicU64,
    applied: AtomicU64,
    term: AtomicU64,
    leader: AtomicU64,
    /// When (on `clock`, in ns; 0: never) this member last saw a new
    /// leader elected.
    leader_elected_at: AtomicU64,
    /// How this member reaches other members' client URLs (requests only
    /// the leader answers are forwarded there); plain http until set.
    client_dialer: std::sync::OnceLock<crate::transport::Dialer>,
    stopped: AtomicBool,
    next_id: AtomicU64,
    cfg: MemberConfig,
}

impl Shared {
    fn lessor(&self) -> MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn auth(&self) -> Arc<AuthState> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_auth(&self, state: AuthState) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }

    fn tokens(&self) -> MutexGuard<'_, SimpleTokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn membership(&self) -> Membership {
        self.membership
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// (cluster ID, local member ID), without copying the member list
    /// (every response header carries them).
    fn ids(&self) -> (u64, u64) {
        let m = self.membership.read().unwrap_or_else(|e| e.into_inner());
        (m.cluster_id, m.local_id)
    }

    fn membership_mut(&self) -> std::sync::RwLockWriteGuard<'_, Membership> {
        self.membership.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Time on this member's clock since it started.
    fn now(&self) -> Duration {
        #[cfg(madsim)]
        return self.clock.elapsed().mul_f64(self.cfg.clock_rate);
        #[cfg(not(madsim))]
        self.clock.elapsed()
    }
}

type Reply = oneshot::Sender<Result<Applied, MemberError>>;
type ReadReply = oneshot::Sender<Result<(), MemberError>>;

struct Proposal {
    id: u64,
    data: Vec<u8>,
    reply: Reply,
}

/// What clients put in the member's mailbox.
enum Input {
    Propose(Proposal),
    ReadIndex(ReadReply),
    /// A configuration change; its context carries `id` (the waiter).
    ConfChange {
        id: u64,
        cc: ConfChange,
        reply: Reply,
    },
    MoveLeader {
        target: u64,
        reply: ReadReply,
    },
    RaftStatus(oneshot::Sender<concord_raft::Status>),
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
    node: RawNode<RaftLog>,
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Input>,
    /// Peer messages (none on a member without peers).
    peer_rx: Option<mpsc::Receiver<Inbound>>,
    transport: Option<Transport>,
    waiters: HashMap<u64, Reply>,
    /// Proposals taken from the mailbox, not yet given to raft (see
    /// [`Member::flush_proposals`]).
    batch: Vec<Proposal>,
    batch_bytes: usize,
    /// Physical compactions waiting for the disk compaction to reach them.
    physical_waiters: Vec<(i64, Reply, Applied)>,
    /// Reads that arrived since the last ReadIndex was issued.
    queued_reads: Vec<ReadReply>,
    next_read_ctx: u64,
    /// Reads waiting for raft's read state, by context.
    /// Ordered (not hashed) so that retries and failures go out in one
    /// order every run: simulations replay exactly.
    pending_reads: BTreeMap<u64, (tokio::time::Instant, Vec<ReadReply>)>,
    /// Reads waiting for the applied index to reach their read index.
    read_waiters: BTreeMap<u64, Vec<ReadReply>>,
    /// MoveLeader requests waiting for their target to lead.
    transfers: Vec<(u64, ReadReply)>,
    /// This member applied its own removal: it stops.
    removed: bool,
    /// Rate limit of the warnings about refused peer messages.
    refused_log: inbound::RefusedLog,
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

fn ticks(d: Duration, tick: Duration) -> u64 {
    (d.as_millis() / tick.as_millis().max(1)).max(1) as u64
}

impl Member {
    /// Opens the member on `backend`: bootstraps a new data dir (membership
    /// and raft configuration from the bootstrap flags) or restores an
    /// existing one (ignoring them). Raft re-delivers the committed entries
    /// after the applied index once the member runs.
    pub fn open(
        backend: Arc<dyn Backend>,
        bootstrap: &Bootstrap,
        cfg: MemberConfig,
    ) -> Result<(Member, Handle), MemberError> {
        let mut raft_log = RaftLog::open(backend.clone())?;
        let membership = match Membership::load(backend.as_ref())? {
            Some(m) => m,
            None if bootstrap.existing.is_some() => {
                // Joining: the leader sends a snapshot with the configuration.
                let m = bootstrap.existing.clone().expect("checked");
                let mut b = Batch::new();
                m.save(&mut b);
                backend.write(b)?;
                backend.persist()?;
                tracing::info!(
                    member_id = format!("{:x}", m.local_id),
                    cluster_id = format!("{:x}", m.cluster_id),
                    "joining an existing cluster"
                );
                m
            }
            None => {
                let m = Membership::bootstrap(bootstrap)?;
                let mut b = Batch::new();
                m.save(&mut b);
                let voters = ConfState::from_voters(m.members.iter().map(|x| x.id));
                raft_log.bootstrap(&mut b, voters);
                b.put(
                    Partition::Meta,
                    META_APPLIED_INDEX.to_vec(),
                    1u64.to_be_bytes().to_vec(),
                );
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
        let hard_state = raft_log.hard_state();
        let sole_voter = raft_log.conf_state().voters == [membership.local_id];
        #[allow(unused_mut)]
        let mut raft_cfg = concord_raft::Config {
            election_tick: ticks(cfg.election_timeout, cfg.heartbeat_interval),
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_committed_size_per_ready: 64 * 1024 * 1024,
            max_inflight_msgs: 256,
            seed: cfg.raft_seed ^ membership.local_id,
            pre_vote: cfg.pre_vote,
            ..concord_raft::Config::new(membership.local_id)
        };
        {
            let backend = backend.clone();
            let store = store.clone();
            // Raft asks on this member's task, between groups. Checkpointed
            // first, a snapshot carries the whole history: its receiver
            // replays nothing.
            raft_log.set_snapshotter(Arc::new(move |_index, to| {
                store
                    .checkpoint()
                    .map_err(|e| concord_raft::StorageError::Other(e.to_string()))?;
                snapshot::create(backend.as_ref(), to)
            }));
        }
        #[cfg(madsim)]
        if crate::planted::active(crate::planted::Bug::Nondeterminism) {
            let probe = Box::new(0u8);
            raft_cfg.seed ^= &*probe as *const u8 as u64;
        }
        let mut node = RawNode::new(&raft_cfg, raft_log)?;
        #[cfg(madsim)]
        if crate::planted::active(crate::planted::Bug::CommitWithoutQuorum) {
            node.plant_bugs(concord_raft::PlantedBugs {
                commit_without_quorum: true,
                ..Default::default()
            });
        }
        if sole_voter {
            // Nobody to wait for: lead at once (etcd waits an election timeout).
            node.campaign();
        }
        let (tx, rx) = mpsc::channel(16 * 1024);
        let clock = tokio::time::Instant::now();
        let mut lessor = Lessor::new(cfg.lease_min_ttl_secs);
        lessor.restore(
            backend.as_ref(),
            store.take_restored_leases(),
            Duration::ZERO,
        )?;
        let watch = WatchHub::new(store.clone());
        #[cfg(madsim)]
        if crate::planted::active(crate::planted::Bug::SkipWatchEvents) {
            watch.plant_skip_bug();
        }
        let auth = AuthState::load(backend.as_ref())?;
        let shared = Arc::new(Shared {
            watch,
            lessor: Mutex::new(lessor),
            auth: RwLock::new(Arc::new(auth)),
            tokens: Mutex::new(SimpleTokens::new(cfg.auth_token_ttl)),
            clock,
            store,
            next_id: AtomicU64::new(first_request_id(membership.local_id)),
            membership: RwLock::new(membership),
            committed: AtomicU64::new(hard_state.commit.max(applied)),
            applied: AtomicU64::new(applied),
            term: AtomicU64::new(hard_state.term),
            leader: AtomicU64::new(0),
            leader_elected_at: AtomicU64::new(0),
            client_dialer: std::sync::OnceLock::new(),
            stopped: AtomicBool::new(false),
            cfg,
        });
        let member = Member {
            node,
            backend,
            shared: shared.clone(),
            rx,
            peer_rx: None,
            transport: None,
            waiters: HashMap::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            physical_waiters: Vec::new(),
            queued_reads: Vec::new(),
            next_read_ctx: 1,
            pending_reads: BTreeMap::new(),
            read_waiters: BTreeMap::new(),
            transfers: Vec::new(),
            removed: false,
            refused_log: inbound::RefusedLog::default(),
        };
        Ok((member, Handle { tx, shared }))
    }

    /// Connects the member to its peers: raft messages go out through
    /// `transport` and come in on `inbound`.
    pub fn with_transport(
        mut self,
        transport: Transport,
        inbound: mpsc::Receiver<Inbound>,
    ) -> Self {
        self.transport = Some(transport);
        self.peer_rx = Some(inbound);
        self
    }

    /// The actor loop; returns when every [`Handle`] is dropped or the
    /// member fails. A storage failure is returned (the process must exit).
    pub async fn run(mut self) -> Result<(), MemberError> {
        let result = self.run_inner().await;
        self.shared.stopped.store(true, Ordering::Release);
        if let Err(e) = &result {
            if !matches!(e, MemberError::Removed) {
                tracing::error!(error = %e, "member stopped on a storage failure");
            }
        }
        if let Some(t) = &self.transport {
            t.stop();
        }
        // Everything accepted was made durable before being answered; a
        // final persist covers the applied state written since (after a
        // checkpoint, so that the next start replays nothing).
        if result.is_ok() {
            if let Err(e) = self.shared.store.checkpoint() {
                tracing::warn!(error = %e, "could not checkpoint the store before exit");
            }
        }
        if self.backend.persist().is_ok() && result.is_ok() {
            if let Err(e) = self.backend.flush_for_restart() {
                tracing::warn!(error = %e, "could not flush tables before exit");
            }
        }
        result
    }

    async fn run_inner(&mut self) -> Result<(), MemberError> {
        let cfg = &self.shared.cfg;
        let mut tick = tokio::time::interval(cfg.on_clock(cfg.heartbeat_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease_tick = cfg.on_clock(cfg.lease_tick);
        let mut next_lease_tick = tokio::time::Instant::now() + lease_tick;
        loop {
            self.process_ready().await?;
            if self.removed {
                tracing::error!("the member has been permanently removed from the cluster");
                return Err(MemberError::Removed);
            }
            let compaction = self.compaction_pending();
            tokio::select! {
                biased;
                _ = tick.tick() => {
                    self.node.tick();
                    self.retry_stale_reads();
                }
                input = self.rx.recv() => match input {
                    Some(i) => {
                        self.handle_input(i);
                        self.drain_inputs();
                        self.flush_proposals();
                    }
                    None => return Ok(()),
                },
                Some(m) = recv_peer(&mut self.peer_rx) => {
                    self.handle_inbound(m);
                    while let Some(Ok(m)) = self.peer_rx.as_mut().map(|r| r.try_recv()) {
                        self.handle_inbound(m);
                    }
                }
                _ = std::future::ready(()), if compaction => self.compaction_step()?,
            }
            self.issue_read_index();
            if tokio::time::Instant::now() >= next_lease_tick {
                self.lease_tick();
                next_lease_tick = tokio::time::Instant::now() + lease_tick;
            }
        }
    }

    fn drain_inputs(&mut self) {
        for _ in 1..self.shared.cfg.group_entries_max {
            match self.rx.try_recv() {
                Ok(i) => self.handle_input(i),
                Err(_) => break,
            }
        }
    }

    fn handle_input(&mut self, input: Input) {
        if !matches!(input, Input::Propose(_)) {
            // Everything keeps mailbox order.
            self.flush_proposals();
        }
        match input {
            Input::Propose(p) => {
                self.batch_bytes += p.data.len();
                self.batch.push(p);
                if self.batch_bytes >= PROPOSAL_BATCH_BYTES_MAX {
                    self.flush_proposals();
                }
            }
            Input::ReadIndex(r) => self.queued_reads.push(r),
            Input::ConfChange { id, cc, reply } => match self.node.propose_conf_change(&cc) {
                Ok(()) => {
                    self.waiters.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(proposal_error(e)));
                }
            },
            Input::MoveLeader { target, reply } => self.move_leader(target, reply),
            Input::RaftStatus(reply) => {
                let _ = reply.send(self.node.status());
            }
        }
    }

    /// Gives the batched proposals to raft as one message: the leader
    /// appends them at once and replicates them in one round (a follower
    /// forwards one message), instead of one append and one message per
    /// follower for each.
    fn flush_proposals(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        let mut data = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for p in batch {
            data.push(p.data);
            waiting.push((p.id, p.reply));
        }
        match self.node.propose_batch(data) {
            Ok(()) => self.waiters.extend(waiting),
            Err(e) => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(proposal_error(e.clone())));
                }
            }
        }
    }

    fn move_leader(&mut self, target: u64, reply: ReadReply) {
        if self.node.role() != Role::Leader {
            let _ = reply.send(Err(MemberError::NotLeader));
            return;
        }
        if !self.node.storage().conf_state().voters.contains(&target) {
            let _ = reply.send(Err(MemberError::BadTransferee));
            return;
        }
        if target == self.node.id() {
            let _ = reply.send(Ok(()));
            return;
        }
        self.node.transfer_leader(target);
        self.transfers.push((target, reply));
    }

    fn handle_inbound(&mut self, m: Inbound) {
        match m {
            Inbound::Message(msg) => {
                // Checked first: an invalid message must never reach raft
                // (see `inbound`).
                if let Err(why) = self.check_peer_message(&msg) {
                    self.refuse(&msg, &why);
                    return;
                }
                if let Err(e) = self.node.step(msg) {
                    tracing::debug!(error = %e, "raft refused a peer message");
                }
            }
            Inbound::Unreachable(id) => self.node.report_unreachable(id),
            Inbound::SnapshotStatus { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
            }
            Inbound::Removed => self.removed = true,
        }
    }

    /// ReadIndex requests are not retried by raft: a request or its answer
    /// lost between members (a dropped message, a leader change) would leave
    /// its reads waiting. Those unanswered for READ_INDEX_RETRY are asked
    /// again under a new context (etcd retries the same way).
    fn retry_stale_reads(&mut self) {
        let now = tokio::time::Instant::now();
        let stale: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= READ_INDEX_RETRY)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, readers)) = self.pending_reads.remove(&ctx) {
                METRICS.slow_read_indexes.inc();
                self.queued_reads.extend(readers);
            }
        }
    }

    /// One ReadIndex for every read that arrived since the last one (etcd
    /// batches reads the same way).
    fn issue_read_index(&mut self) {
        if self.queued_reads.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.node.read_index(ctx.to_be_bytes().to_vec());
        self.pending_reads.insert(
            ctx,
            (
                tokio::time::Instant::now(),
                std::mem::take(&mut self.queued_reads),
            ),
        );
    }

    /// Handles every Ready raft has, in the safe order.
    async fn process_ready(&mut self) -> Result<(), MemberError> {
        while self.node.has_ready() {
            let rd = self.node.ready();
            if let Some(ss) = rd.soft_state {
                self.on_soft_state(ss);
            }
            if let Some(snap) = &rd.snapshot {
                self.install_snapshot(snap).await?;
            }
            // A leader's appends and heartbeats may leave before its own
            // write (raft thesis 10.2.1): followers acknowledge only what
            // they persisted, and those acknowledgements are handled after
            // this Ready, so nothing is committed (let alone answered)
            // before this member's own fsync below has finished.
            let (early, late): (Vec<_>, Vec<_>) = rd.messages.into_iter().partition(|m| {
                self.node.role() == Role::Leader
                    && matches!(m.kind, MessageKind::MsgApp | MessageKind::MsgHeartbeat)
            });
            if let Some(t) = &self.transport {
                t.send(early);
            }
            // 1. persist
            let mut b = Batch::new();
            self.node.storage_mut().append(&mut b, &rd.entries);
            if let Some(hs) = rd.hard_state {
                self.node.storage_mut().set_hard_state(&mut b, hs);
                self.shared.term.store(hs.term, Ordering::Release);
                self.shared.committed.store(hs.commit, Ordering::Release);
            }
            METRICS.wal_write_bytes.add(b.bytes() as i64);
            if rd.must_sync {
                let start = std::time::Instant::now();
                write_durable(&self.backend, b).await?;
                METRICS.wal_fsync.observe(start.elapsed().as_secs_f64());
            } else if !b.is_empty() {
                self.backend.write(b)?;
            }
            // 2. send (votes and acknowledgements only after the fsync)
            if let Some(t) = &self.transport {
                t.send(late);
            }
            // 3. apply, 4. answer
            let committed: Vec<LogEntry> = rd
                .committed_entries
                .iter()
                .map(crate::storage::raft_log::to_log_entry)
                .collect();
            let applying = std::time::Instant::now();
            self.apply(committed)?;
            if applying.elapsed() > SLOW_APPLY {
                METRICS.slow_apply.inc();
            }
            for rs in rd.read_states {
                let ctx = rs
                    .context
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                if let Some((_, readers)) = self.pending_reads.remove(&ctx) {
                    self.read_waiters
                        .entry(rs.index)
                        .or_default()
                        .extend(readers);
                }
            }
            self.answer_reads();
            // 5. advance
            self.node.advance(rd.number);
        }
        Ok(())
    }

    /// Replaces the state machine with a leader's snapshot (one atomic
    /// batch), then reloads everything held in memory from it.
    async fn install_snapshot(&mut self, snap: &concord_raft::Snapshot) -> Result<(), MemberError> {
        tracing::info!(
            index = snap.meta.index,
            term = snap.meta.term,
            bytes = snap.data.len(),
            "installing a raft snapshot"
        );
        let records = snapshot::decode(&snap.data)?;
        let mut b = Batch::new();
        snapshot::install(self.backend.as_ref(), &mut b, records)?;
        self.node.storage_mut().apply_snapshot(&mut b, &snap.meta);
        write_durable(&self.backend, b).await?;
        self.shared.store.reload()?;
        self.shared
            .applied
            .store(snap.meta.index, Ordering::Release);
        let membership = Membership::load(self.backend.as_ref())?.ok_or_else(|| {
            MemberError::Storage(StorageError::Engine("snapshot without membership".into()))
        })?;
        if let Some(t) = &self.transport {
            let known = t.peers();
            for m in &membership.members {
                if m.id != membership.local_id && !known.contains(&m.id) {
                    let _ = t.add_peer(m.id, m.peer_ur_ls.clone());
                }
            }
            for id in known {
                if !membership.members.iter().any(|m| m.id == id) {
                    let _ = t.remove_member(id);
                }
            }
        }
        *self.shared.membership_mut() = membership;
        self.shared
            .set_auth(AuthState::load(self.backend.as_ref())?);
        {
            let mut lessor = self.shared.lessor();
            let primary = lessor.is_primary();
            *lessor = Lessor::new(self.shared.cfg.lease_min_ttl_secs);
            lessor.restore(
                self.backend.as_ref(),
                self.shared.store.take_restored_leases(),
                self.shared.now(),
            )?;
            if primary {
                lessor.promote(self.shared.cfg.election_timeout);
            }
        }
        self.shared.watch.restored();
        Ok(())
    }

    /// Answers the reads whose read index this member has applied.
    fn answer_reads(&mut self) {
        let applied = self.shared.applied.load(Ordering::Acquire);
        let later = self.read_waiters.split_off(&(applied + 1));
        for (_, readers) in std::mem::replace(&mut self.read_waiters, later) {
            for r in readers {
                let _ = r.send(Ok(()));
            }
        }
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
            .into_iter()
            .partition(|(target, _)| *target == ss.leader_id);
        self.transfers = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
        let was = self.shared.leader.swap(ss.leader_id, Ordering::AcqRel);
        METRICS.has_leader.set(i64::from(ss.leader_id != 0));
        METRICS
            .is_leader
            .set(i64::from(ss.leader_id == self.node.id()));
        if was != ss.leader_id && ss.leader_id != 0 {
            METRICS.leader_changes.inc();
            let at = self.shared.clock.elapsed().as_nanos() as u64;
            self.shared
                .leader_elected_at
                .store(at.max(1), Ordering::Release);
        }
        if was != ss.leader_id {
            tracing::info!(
                leader = format!("{:x}", ss.leader_id),
                term = self.node.term(),
                "raft leader changed"
            );
        }
        let mut lessor = self.shared.lessor();
        match (ss.role == Role::Leader, lessor.is_primary()) {
            (true, false) => lessor.promote(self.shared.cfg.election_timeout),
            (false, true) => lessor.demote(),
            _ => {}
        }
        drop(lessor);
        if was != ss.leader_id && was != 0 {
            // Reads waiting for the old leader's confirmation will not get
            // it: etcd answers them "leader changed" (clients retry).
            for (_, (_, readers)) in std::mem::take(&mut self.pending_reads) {
                for r in readers {
                    let _ = r.send(Err(MemberError::LeaderChanged));
                }
            }
        }
    }

    /// The primary lessor's periodic work: revoke expired leases and
    /// replicate renewals as checkpoints, through raft like any request.
    fn lease_tick(&mut self) {
        let now = self.shared.now();
        let (expired, checkpoints) = {
            let mut l = self.shared.lessor();
            if !l.is_primary() {
                return;
            }
            (
                l.take_expired(now, LEASE_REVOKES_PER_TICK_MAX),
                l.take_checkpoints(LEASE_CHECKPOINTS_PER_PROPOSAL_MAX),
            )
        };
        for id in expired {
            tracing::info!(lease = format!("{id:016x}"), "lease expired, revoking");
            METRICS.lease_expired.inc();
            let r =
                self.propose_internal(internal_request::Request::LeaseRevoke(LeaseRevokeRequest {
                    id,
                }));
            if r.is_err() {
                self.shared.lessor().revoke_failed(id);
            }
        }
        if !checkpoints.is_empty() {
            let checkpoints = checkpoints
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            let _ = self.propose_internal(internal_request::Request::LeaseCheckpoint(
                LeaseCheckpointRequest { checkpoints },
            ));
        }
    }

    /// A request the member proposes itself; nobody waits for its answer.
    fn propose_internal(&mut self, request: internal_request::Request) -> Result<(), MemberError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let data = InternalRequest {
            id,
            request: Some(request),
            header: None,
        }
        .encode_to_vec();
        self.node.propose(data).map_err(proposal_error)
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
}

/// Writes and fsyncs a batch. The fsync may take milliseconds, so it runs
/// off the runtime's threads (under madsim the backend is in memory and
/// blocking tasks are not simulated: inline).
async fn write_durable(backend: &Arc<dyn Backend>, b: Batch) -> Result<(), StorageError> {
    #[cfg(not(madsim))]
    {
        let backend = backend.clone();
        tokio::task::spawn_blocking(move || {
            backend.write(b)?;
            backend.persist()
        })
        .await
        .map_err(|e| StorageError::Engine(format!("log append task failed: {e}")))?
    }
    #[cfg(madsim)]
    {
        let delay = backend.simulated_persist_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        backend.write(b)?;
        backend.persist()
    }
}

/// The next peer message, or never on a member without peers.
async fn recv_peer(rx: &mut Option<mpsc::Receiver<Inbound>>) -> Option<Inbound> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// A proposal raft refused, as the error its client gets.
fn proposal_error(e: concord_raft::Error) -> MemberError {
    match e {
        concord_raft::Error::ProposalDropped(_) => MemberError::NoLeader,
        other => MemberError::Raft(other),
    }
}
