//! The client side of a member: [`Handle`] (proposals, reads, membership
//! changes, leases, from any task) and [`Observer`] (read-only views that
//! do not keep the member running).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::auth::AuthInfo;
use crate::metrics::METRICS;
use crate::proto::concordpb::RequestHeader;

/// The client side of a member: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Input>,
    pub(super) shared: Arc<Shared>,
}

/// Read-only access to a member's membership and progress that does not
/// keep the member running (a [`Handle`] does: the member stops when every
/// handle is gone).
#[derive(Clone)]
pub struct Observer {
    pub(super) shared: Arc<Shared>,
}

impl Observer {
    pub fn membership(&self) -> Membership {
        self.shared.membership()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// A response header as of now (cluster, member, revision, term).
    pub fn header(&self) -> crate::proto::etcdserverpb::ResponseHeader {
        let (cluster_id, member_id) = self.shared.ids();
        crate::proto::etcdserverpb::ResponseHeader {
            cluster_id,
            member_id,
            revision: self.shared.store.current_revision(),
            raft_term: self.shared.term.load(Ordering::Acquire),
        }
    }
}

impl Handle {
    /// See [`Observer`].
    pub fn observer(&self) -> Observer {
        Observer {
            shared: self.shared.clone(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Sets how this member reaches other members' client URLs (https
    /// ones need client TLS); only the first call counts.
    /// The auth state as of the last applied auth change.
    pub fn auth(&self) -> Arc<AuthState> {
        self.shared.auth()
    }

    /// The sender a token names: a live simple token's user at the
    /// current auth revision (its TTL starts again), or a valid JWT's user
    /// at the revision it was signed at.
    pub fn token_info(&self, token: &str) -> Option<AuthInfo> {
        #[cfg(not(madsim))]
        if let Some(jwt) = &self.shared.cfg.jwt {
            return jwt.info(token);
        }
        let revision = self.shared.auth().revision();
        let now = self.shared.now();
        let username = self.shared.tokens().user(token, now)?;
        Some(AuthInfo { username, revision })
    }

    /// The applied index (a token names the index it was assigned at).
    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    pub fn set_client_dialer(&self, dialer: crate::transport::Dialer) {
        let _ = self.shared.client_dialer.set(dialer);
    }

    /// How this member reaches other members' client URLs.
    pub fn client_dialer(&self) -> crate::transport::Dialer {
        self.shared.client_dialer.get().cloned().unwrap_or_default()
    }

    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.shared.watch
    }

    pub fn membership(&self) -> Membership {
        self.shared.membership()
    }

    pub fn member_id(&self) -> u64 {
        self.shared.ids().1
    }

    pub fn cluster_id(&self) -> u64 {
        self.shared.ids().0
    }

    pub fn progress(&self) -> Progress {
        Progress {
            committed_index: self.shared.committed.load(Ordering::Acquire),
            applied_index: self.shared.applied.load(Ordering::Acquire),
            term: self.shared.term.load(Ordering::Acquire),
            leader: self.shared.leader.load(Ordering::Acquire),
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
        self.propose_as(None, request).await
    }

    /// [`Handle::propose`] for a client: the applier checks the sender's
    /// permissions at the auth revision in `header` (etcd's apply-time
    /// check; `None` is the member's own request, never checked).
    pub async fn propose_as(
        &self,
        header: Option<RequestHeader>,
        request: internal_request::Request,
    ) -> Result<Applied, MemberError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(MemberError::Stopped);
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let data = InternalRequest {
            id,
            request: Some(request),
            header,
        }
        .encode_to_vec();
        if data.len() > self.shared.cfg.max_request_bytes {
            return Err(MemberError::RequestTooLarge {
                len: data.len(),
                max: self.shared.cfg.max_request_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        let started = self.shared.clock.elapsed();
        // Counted until answered or abandoned (a dropped future).
        struct Pending;
        impl Drop for Pending {
            fn drop(&mut self) {
                METRICS.proposals_pending.dec();
            }
        }
        METRICS.proposals_pending.inc();
        let _pending = Pending;
        let result = async {
            self.tx
                .send(Input::Propose(Proposal { id, data, reply }))
                .await
                .map_err(|_| MemberError::Stopped)?;
            match tokio::time::timeout(self.shared.cfg.request_timeout, rx).await {
                Ok(r) => r.map_err(|_| MemberError::Stopped)?,
                Err(_) => Err(self.timeout_error(started)),
            }
        }
        .await;
        if let Err(
            MemberError::Stopped
            | MemberError::NoLeader
            | MemberError::Timeout
            | MemberError::TimeoutLeaderFail
            | MemberError::LeaderChanged,
        ) = &result
        {
            METRICS.proposals_failed.inc();
        }
        result
    }

    /// etcd's choice of timeout error: a request that started within two
    /// election timeouts before a new leader was elected most likely died
    /// with the previous leader.
    fn timeout_error(&self, started: Duration) -> MemberError {
        let elected = self.shared.leader_elected_at.load(Ordering::Acquire);
        timeout_error(
            started,
            Duration::from_nanos(elected),
            self.shared.cfg.election_timeout,
        )
    }

    /// Waits until a linearizable read may be served from the local store:
    /// raft's ReadIndex confirms the leadership and gives the commit index,
    /// and this member has applied up to it.
    pub async fn read_index(&self) -> Result<(), MemberError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(MemberError::Stopped);
        }
        #[cfg(madsim)]
        if crate::planted::active(crate::planted::Bug::StaleReads) {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::ReadIndex(reply))
            .await
            .map_err(|_| MemberError::Stopped)?;
        let result = match tokio::time::timeout(self.shared.cfg.request_timeout, rx).await {
            Ok(r) => r.map_err(|_| MemberError::Stopped)?,
            Err(_) => Err(MemberError::Timeout),
        };
        if result.is_err() {
            METRICS.read_indexes_failed.inc();
        }
        result
    }

    /// Proposes a configuration change for `member` and waits until it is
    /// applied here; returns the membership after it.
    pub async fn change_membership(
        &self,
        changes: Vec<ConfChangeSingle>,
        member: crate::proto::etcdserverpb::Member,
    ) -> Result<Vec<crate::proto::etcdserverpb::Member>, MemberError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let context = crate::proto::concordpb::MemberChange {
            request_id: id,
            member: Some(member),
        }
        .encode_to_vec();
        let cc = ConfChange {
            context,
            ..ConfChange::new(changes)
        };
        let (reply, rx) = oneshot::channel();
        self.send(Input::ConfChange { id, cc, reply }).await?;
        match self.wait(rx).await?? {
            Applied::Members(m) => Ok(m),
            other => Err(MemberError::Storage(StorageError::Engine(format!(
                "unexpected apply result for a configuration change: {other:?}"
            )))),
        }
    }

    /// etcd's MoveLeader: on the leader, hands leadership to `target` and
    /// waits until it has it.
    pub async fn move_leader(&self, target: u64) -> Result<(), MemberError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::MoveLeader { target, reply }).await?;
        match self.wait(rx).await {
            Err(MemberError::Timeout) => Err(MemberError::TransferTimeout),
            r => r?,
        }
    }

    /// The raft node's status (progress of peers on the leader).
    pub async fn raft_status(&self) -> Result<concord_raft::Status, MemberError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::RaftStatus(reply)).await?;
        self.wait(rx).await
    }

    async fn send(&self, input: Input) -> Result<(), MemberError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(MemberError::Stopped);
        }
        self.tx.send(input).await.map_err(|_| MemberError::Stopped)
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, MemberError> {
        match tokio::time::timeout(self.shared.cfg.request_timeout, rx).await {
            Ok(r) => r.map_err(|_| MemberError::Stopped),
            Err(_) => Err(MemberError::Timeout),
        }
    }

    /// Publishes this member's name and client URLs through raft; returns
    /// once they are applied here (etcd prints "published" then). Retries
    /// while there is no leader; gives up only when the member stops.
    pub async fn publish(&self, name: &str, client_urls: Vec<String>) -> Result<(), MemberError> {
        let attrs = crate::proto::concordpb::MemberAttributes {
            id: self.member_id(),
            name: name.to_string(),
            client_urls,
        };
        loop {
            match self
                .propose(internal_request::Request::MemberAttributes(attrs.clone()))
                .await
            {
                Ok(_) => return Ok(()),
                Err(
                    MemberError::NoLeader | MemberError::Timeout | MemberError::TimeoutLeaderFail,
                ) => {
                    tokio::time::sleep(self.shared.cfg.heartbeat_interval).await;
                }
                Err(e) => return Err(e),
            }
        }
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
        let r = self.shared.lessor().renew(id, now);
        if r.is_ok() {
            METRICS.lease_renewed.inc();
        }
        r
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

/// The error of a request that started at `started` and timed out, when
/// the last leader was elected at `elected` (ZERO: never): etcd blames the
/// previous leader if the request started at most two election timeouts
/// before the election.
fn timeout_error(started: Duration, elected: Duration, election_timeout: Duration) -> MemberError {
    let window = 2 * election_timeout;
    if !elected.is_zero() && started <= elected && started + window >= elected {
        MemberError::TimeoutLeaderFail
    } else {
        MemberError::Timeout
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn a_timeout_is_blamed_on_the_previous_leader_only_near_an_election() {
        let s = Duration::from_secs;
        let et = s(1);
        let blame = |started, elected| {
            matches!(
                timeout_error(s(started), s(elected), et),
                MemberError::TimeoutLeaderFail
            )
        };
        // No election seen: a plain timeout.
        assert!(!blame(10, 0));
        // Started 0..=2 election timeouts before the election.
        assert!(blame(10, 10));
        assert!(blame(10, 12));
        assert!(!blame(10, 13));
        // Started after the election: the new leader did not answer.
        assert!(!blame(11, 10));
    }
}
