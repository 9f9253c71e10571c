//! Which permissions a KV request needs (etcd's `apply_auth.go` checks):
//! ranges and compares read, puts and deletes write, `prev_kv` read on what
//! it returns, and a put with a lease write on every key already attached
//! to that lease.

use super::state::Permits;
use super::Access;
use super::AuthError;
use crate::proto::etcdserverpb::{request_op, RequestOp, TxnRequest};

/// The keys attached to a lease (none for an unknown lease).
pub type LeaseKeys<'a> = dyn Fn(i64) -> Vec<Vec<u8>> + 'a;

/// Every key already attached to the lease must be writable (etcd's
/// `checkLeasePuts`: whoever attaches to a lease, or revokes it, deletes
/// those keys when it ends).
pub fn lease_keys_writable(
    permits: &Permits<'_>,
    lease: i64,
    lease_keys: &LeaseKeys<'_>,
) -> Result<(), AuthError> {
    if matches!(permits, Permits::All) || lease == 0 {
        return Ok(());
    }
    for k in lease_keys(lease) {
        permits.check(Access::Write, &k, &[])?;
    }
    Ok(())
}

pub fn check_put(
    permits: &Permits<'_>,
    key: &[u8],
    lease: i64,
    prev_kv: bool,
    lease_keys: &LeaseKeys<'_>,
) -> Result<(), AuthError> {
    permits.check(Access::Write, key, &[])?;
    lease_keys_writable(permits, lease, lease_keys)?;
    if prev_kv {
        permits.check(Access::Read, key, &[])?;
    }
    Ok(())
}

pub fn check_delete(
    permits: &Permits<'_>,
    key: &[u8],
    range_end: &[u8],
    prev_kv: bool,
) -> Result<(), AuthError> {
    if prev_kv {
        permits.check(Access::Read, key, range_end)?;
    }
    permits.check(Access::Write, key, range_end)
}

/// Compares and ranges need read, puts and deletes write, in both branches
/// and in nested txns (etcd 3.5's `checkTxnAuth`).
pub fn check_txn(
    permits: &Permits<'_>,
    t: &TxnRequest,
    lease_keys: &LeaseKeys<'_>,
) -> Result<(), AuthError> {
    for c in &t.compare {
        permits.check(Access::Read, &c.key, &c.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        check_op(permits, op, lease_keys)?;
    }
    Ok(())
}

fn check_op(
    permits: &Permits<'_>,
    op: &RequestOp,
    lease_keys: &LeaseKeys<'_>,
) -> Result<(), AuthError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => {
            permits.check(Access::Read, &r.key, &r.range_end)
        }
        Some(request_op::Request::RequestPut(p)) => {
            check_put(permits, &p.key, p.lease, p.prev_kv, lease_keys)
        }
        Some(request_op::Request::RequestDeleteRange(d)) => {
            check_delete(permits, &d.key, &d.range_end, d.prev_kv)
        }
        Some(request_op::Request::RequestTxn(t)) => check_txn(permits, t, lease_keys),
        None => Ok(()),
    }
}
