//! lease: the lessor. Leases, their TTLs and deadlines, and the keys
//! attached to them. Pure: time comes in as a monotonic `now` (a
//! [`Duration`] since the member started); the member turns deadlines into
//! revoke proposals.
//!
//! How time is kept (and why a lease cannot live forever by elections,
//! etcd's bug #9888):
//! - every member tracks a deadline per lease on its own clock, set when it
//!   applies the grant (`now + ttl`) or a checkpoint (`now + remaining`);
//!   it keeps running while there is no leader;
//! - the primary (the leader) renews on keep-alive (`now + ttl`) and
//!   queues a checkpoint of the renewal, which the member proposes in a
//!   batch, so every member learns of renewals within a tick;
//! - on promotion the new primary's expiry is its own deadline plus a grace
//!   of one election timeout (time for clients to find the new leader, as
//!   etcd extends leases on promotion). The grace is not checkpointed, so
//!   repeated elections do not add up: a lease that is not renewed expires
//!   at most one grace after its last known deadline.
//!
//! Persisted (meta partition, `lease/<id>`): granted TTL and the remaining
//! TTL of the last checkpoint, written in the same batch as the applied
//! index. A restart starts each deadline at `now + remaining` (or `ttl`).
//!
//! Invariants: a key is attached to at most one lease, and the lease's key
//! set and the key -> lease map agree (checked in debug builds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::storage::{Batch, Partition, ReadView, StorageError};

/// etcd's largest TTL, seconds.
pub const TTL_MAX_SECS: i64 = 9_000_000_000;
/// A revoke that has not applied after this long is proposed again (etcd: 3 s).
pub const REVOKE_RETRY: Duration = Duration::from_secs(3);
/// Meta key prefix of lease records.
pub const META_LEASE_PREFIX: &[u8] = b"lease/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("lease not found")]
    NotFound,
    #[error("lease already exists")]
    Exists,
    #[error("too large lease TTL")]
    TtlTooLarge,
    /// Keep-alives and TTLs are served by the primary lessor (the leader).
    #[error("not leader")]
    NotPrimary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Granted TTL in seconds (after raising to the minimum).
    pub ttl: i64,
    /// Remaining TTL of the last checkpoint, seconds; 0 = none.
    pub remaining: i64,
    pub keys: BTreeSet<Vec<u8>>,
    /// When the lease runs out on this member's clock.
    deadline: Duration,
    /// When a revoke was proposed for it (not applied yet).
    revoking_since: Option<Duration>,
}

/// The record persisted per lease.
fn encode_record(ttl: i64, remaining: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&remaining.to_be_bytes());
    v
}

fn record_key(id: i64) -> Vec<u8> {
    let mut k = META_LEASE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[derive(Debug, Default)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    key_lease: HashMap<Vec<u8>, i64>,
    /// The leader's view: renewals and promotion grace on top of deadlines.
    primary: bool,
    /// Primary only: expiry per lease (deadline, renewed or extended).
    expiry: BTreeMap<i64, Duration>,
    /// Renewals to replicate as checkpoints: id -> remaining seconds.
    pending_checkpoints: BTreeMap<i64, i64>,
    min_ttl_secs: i64,
}

impl Lessor {
    /// A lessor whose grants are raised to at least `min_ttl_secs`.
    pub fn new(min_ttl_secs: i64) -> Self {
        Self {
            min_ttl_secs,
            ..Self::default()
        }
    }

    /// etcd's minimum TTL: `ceil(((3 * election_ticks) / 2) * heartbeat)`
    /// seconds, with integer division by 2.
    pub fn min_ttl_secs(heartbeat_ms: u64, election_ms: u64) -> i64 {
        let heartbeat_ms = heartbeat_ms.max(1);
        let ticks = election_ms / heartbeat_ms;
        let ms = (3 * ticks) / 2 * heartbeat_ms;
        ms.div_ceil(1000).max(1) as i64
    }

    /// The TTL a grant of `ttl` gets.
    pub fn effective_ttl(&self, ttl: i64) -> Result<i64, LeaseError> {
        if ttl > TTL_MAX_SECS {
            return Err(LeaseError::TtlTooLarge);
        }
        Ok(ttl.max(self.min_ttl_secs))
    }

    /// Restores the persisted leases and the keys attached to them.
    pub fn restore(
        &mut self,
        view: &dyn ReadView,
        attached: impl IntoIterator<Item = (Vec<u8>, i64)>,
        now: Duration,
    ) -> Result<(), StorageError> {
        let hi = {
            let mut h = META_LEASE_PREFIX.to_vec();
            *h.last_mut().expect("prefix is not empty") += 1;
            h
        };
        let range = (
            std::ops::Bound::Included(META_LEASE_PREFIX.to_vec()),
            std::ops::Bound::Excluded(hi),
        );
        for item in view.scan(Partition::Meta, range, false) {
            let (k, v) = item?;
            let corrupt = || StorageError::Engine(format!("lease record {k:02x?} is corrupt"));
            let id = k[META_LEASE_PREFIX.len()..]
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| corrupt())?;
            if v.len() != 16 {
                return Err(corrupt());
            }
            let ttl = i64::from_be_bytes(v[..8].try_into().map_err(|_| corrupt())?);
            let remaining = i64::from_be_bytes(v[8..].try_into().map_err(|_| corrupt())?);
            let left = if remaining > 0 { remaining } else { ttl };
            self.leases.insert(
                id,
                Lease {
                    id,
                    ttl,
                    remaining,
                    keys: BTreeSet::new(),
                    deadline: now + secs(left),
                    revoking_since: None,
                },
            );
        }
        for (key, id) in attached {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.clone());
                self.key_lease.insert(key, id);
            } else {
                tracing::warn!(lease = id, "a key names a lease that does not exist");
            }
        }
        self.check();
        Ok(())
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    // ------------------------------------------------------------ applied

    /// Applies a grant (every member). `ttl` is already effective.
    pub fn grant(
        &mut self,
        id: i64,
        ttl: i64,
        now: Duration,
        batch: &mut Batch,
    ) -> Result<(), LeaseError> {
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let deadline = now + secs(ttl);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                remaining: 0,
                keys: BTreeSet::new(),
                deadline,
                revoking_since: None,
            },
        );
        if self.primary {
            self.expiry.insert(id, deadline);
        }
        batch.put(Partition::Meta, record_key(id), encode_record(ttl, 0));
        Ok(())
    }

    /// The keys a revoke of `id` deletes, sorted.
    pub fn keys_of(&self, id: i64) -> Result<Vec<Vec<u8>>, LeaseError> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .ok_or(LeaseError::NotFound)
    }

    /// Applies a revoke (every member): forgets the lease; the caller has
    /// deleted its keys in the same batch.
    pub fn revoke(&mut self, id: i64, batch: &mut Batch) -> Result<(), LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        for k in &lease.keys {
            self.key_lease.remove(k);
        }
        self.expiry.remove(&id);
        self.pending_checkpoints.remove(&id);
        batch.delete(Partition::Meta, record_key(id));
        self.check();
        Ok(())
    }

    /// Applies a checkpoint (every member): the lease has `remaining`
    /// seconds from now. Unknown leases are skipped (revoked meanwhile).
    pub fn checkpoint(&mut self, id: i64, remaining: i64, now: Duration, batch: &mut Batch) {
        let Some(l) = self.leases.get_mut(&id) else {
            return;
        };
        l.remaining = remaining;
        l.deadline = now + secs(remaining);
        batch.put(
            Partition::Meta,
            record_key(id),
            encode_record(l.ttl, remaining),
        );
    }

    /// A key was written with `lease` (0: none) or deleted (`None`).
    pub fn key_changed(&mut self, key: &[u8], lease: Option<i64>) {
        let old = self.key_lease.get(key).copied();
        let new = lease.filter(|l| *l != 0 && self.leases.contains_key(l));
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.key_lease.remove(key);
            if let Some(l) = self.leases.get_mut(&o) {
                l.keys.remove(key);
            }
        }
        if let Some(n) = new {
            self.key_lease.insert(key.to_vec(), n);
            if let Some(l) = self.leases.get_mut(&n) {
                l.keys.insert(key.to_vec());
            }
        }
    }

    // ------------------------------------------------------------ primary

    /// Becomes the primary: expiries start from this member's deadlines
    /// plus `grace`.
    pub fn promote(&mut self, grace: Duration) {
        self.primary = true;
        self.expiry = self
            .leases
            .values()
            .map(|l| (l.id, l.deadline + grace))
            .collect();
    }

    pub fn demote(&mut self) {
        self.primary = false;
        self.expiry.clear();
        self.pending_checkpoints.clear();
        for l in self.leases.values_mut() {
            l.revoking_since = None;
        }
    }

    /// Primary: a keep-alive. Returns the granted TTL.
    pub fn renew(&mut self, id: i64, now: Duration) -> Result<i64, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let l = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        if l.revoking_since.is_some() {
            return Err(LeaseError::NotFound);
        }
        let ttl = l.ttl;
        self.expiry.insert(id, now + secs(ttl));
        self.pending_checkpoints.insert(id, ttl);
        Ok(ttl)
    }

    /// Primary: the checkpoints to propose (renewals since the last call).
    pub fn take_checkpoints(&mut self, max: usize) -> Vec<(i64, i64)> {
        let ids: Vec<i64> = self.pending_checkpoints.keys().take(max).copied().collect();
        ids.into_iter()
            .filter_map(|id| self.pending_checkpoints.remove(&id).map(|r| (id, r)))
            .collect()
    }

    /// Primary: leases whose expiry has passed and whose revoke is not in
    /// flight (or was proposed `REVOKE_RETRY` ago and did not apply); they
    /// are marked as being revoked.
    pub fn take_expired(&mut self, now: Duration, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for (id, exp) in &self.expiry {
            if out.len() >= max {
                break;
            }
            let free = |l: &Lease| l.revoking_since.is_none_or(|t| t + REVOKE_RETRY <= now);
            if *exp <= now && self.leases.get(id).is_some_and(free) {
                out.push(*id);
            }
        }
        for id in &out {
            if let Some(l) = self.leases.get_mut(id) {
                l.revoking_since = Some(now);
            }
        }
        out
    }

    /// Primary: a revoke proposal failed; the lease may be taken again.
    pub fn revoke_failed(&mut self, id: i64) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.revoking_since = None;
        }
    }

    /// When the lease runs out: the primary's expiry, else this member's
    /// deadline.
    pub fn expiry_of(&self, id: i64) -> Option<Duration> {
        let l = self.leases.get(&id)?;
        Some(self.expiry.get(&id).copied().unwrap_or(l.deadline))
    }

    /// Seconds left, truncated toward zero (etcd's TimeToLive `TTL`).
    pub fn remaining_secs(&self, id: i64, now: Duration) -> Option<i64> {
        self.expiry_of(id)
            .map(|e| e.saturating_sub(now).as_secs() as i64)
    }

    /// Every lease id, soonest expiry first (etcd's LeaseLeases order).
    pub fn ids_by_expiry(&self) -> Vec<i64> {
        let mut v: Vec<(Duration, i64)> = self
            .leases
            .keys()
            .filter_map(|id| self.expiry_of(*id).map(|e| (e, *id)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            for (k, id) in &self.key_lease {
                let l = self.leases.get(id);
                assert!(
                    l.is_some_and(|l| l.keys.contains(k)),
                    "key {k:02x?} maps to lease {id:x} that does not hold it"
                );
            }
            let attached: usize = self.leases.values().map(|l| l.keys.len()).sum();
            assert_eq!(attached, self.key_lease.len(), "lease key sets disagree");
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

#[cfg(test)]
mod tests;
