//! Request validation done before anything is proposed, as etcd's gRPC layer
//! does it (`v3rpc/key.go`): empty keys, conflicting options, txn size and
//! duplicate keys. Pure functions of the request.

use super::error::{
    EtcdError, DUPLICATE_KEY, EMPTY_KEY, INVALID_SORT_OPTION, KEY_NOT_FOUND, LEASE_PROVIDED,
    TOO_MANY_OPS, VALUE_PROVIDED,
};
use crate::mvcc::Span;
use crate::proto::etcdserverpb::{
    range_request, request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    if range_request::SortOrder::try_from(r.sort_order).is_err()
        || range_request::SortTarget::try_from(r.sort_target).is_err()
    {
        return Err(INVALID_SORT_OPTION);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(VALUE_PROVIDED);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(LEASE_PROVIDED);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => check_range(r),
        Some(request_op::Request::RequestPut(p)) => check_put(p),
        Some(request_op::Request::RequestDeleteRange(d)) => check_delete(d),
        Some(request_op::Request::RequestTxn(t)) => check_txn_ops(t, max_txn_ops),
        None => Err(KEY_NOT_FOUND),
    }
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    if r.compare.len() > max_txn_ops
        || r.success.len() > max_txn_ops
        || r.failure.len() > max_txn_ops
    {
        return Err(TOO_MANY_OPS);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EMPTY_KEY);
    }
    for op in &r.success {
        check_op(op, max_txn_ops.saturating_sub(r.success.len()))?;
    }
    for op in &r.failure {
        check_op(op, max_txn_ops.saturating_sub(r.failure.len()))?;
    }
    Ok(())
}

/// etcd's checkTxnRequest plus the duplicate-key check of both branches.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// Whether `key` is inside any of the delete spans.
fn deleted(dels: &[Span], key: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(key))
}

/// etcd's checkIntervals: within one branch, no key is put twice and no put
/// falls inside a delete range; nested txns count, but the then- and
/// else-branch of one nested txn may repeat a key (only one of them runs).
/// Returns the branch's puts and deletes.
fn check_intervals(reqs: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Span>), EtcdError> {
    let mut dels: Vec<Span> = reqs
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(Span::from_etcd(&d.key, &d.range_end))
            }
            _ => None,
        })
        .collect();
    let mut puts: Vec<Vec<u8>> = Vec::new();
    for op in reqs {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(DUPLICATE_KEY);
            }
            puts.push(k.clone());
        }
        for k in &puts_else {
            let safe = puts_then.contains(k);
            if (puts.contains(k) && !safe) || deleted(&dels, k) {
                return Err(DUPLICATE_KEY);
            }
            if !safe {
                puts.push(k.clone());
            }
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(DUPLICATE_KEY);
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

/// A txn whose every op (both branches) is a range is served without the
/// log; a nested txn makes it a write.
pub fn is_txn_read_only(r: &TxnRequest) -> bool {
    let is_range =
        |op: &RequestOp| matches!(op.request, Some(request_op::Request::RequestRange(_)));
    r.success.iter().all(is_range) && r.failure.iter().all(is_range)
}

/// Whether every range of a read-only txn is serializable.
pub fn is_txn_serializable(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(rr)) => rr.serializable,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::store::op_put;

    fn del(key: &[u8], end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.to_vec(),
                    range_end: end.to_vec(),
                    prev_kv: false,
                },
            )),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn txn(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    #[test]
    fn duplicate_keys() {
        // (case, want duplicate error)
        let cases: Vec<(TxnRequest, bool)> = vec![
            (txn(vec![op_put(b"a", b""), op_put(b"b", b"")]), false),
            (txn(vec![op_put(b"a", b""), op_put(b"a", b"")]), true),
            (txn(vec![del(b"a", b"c"), op_put(b"b", b"")]), true),
            (txn(vec![del(b"a", b"c"), op_put(b"c", b"")]), false),
            (txn(vec![del(b"a", b"\0"), op_put(b"z", b"")]), true),
            (txn(vec![del(b"a", b""), del(b"a", b"b")]), false),
            (
                txn(vec![
                    op_put(b"a", b""),
                    nested(vec![op_put(b"a", b"")], vec![]),
                ]),
                true,
            ),
            (
                txn(vec![nested(
                    vec![op_put(b"a", b"")],
                    vec![op_put(b"a", b"")],
                )]),
                false,
            ),
            (
                txn(vec![
                    del(b"a", b"b"),
                    nested(vec![op_put(b"a", b"")], vec![]),
                ]),
                true,
            ),
            (
                txn(vec![
                    nested(vec![del(b"a", b"")], vec![]),
                    op_put(b"a", b""),
                ]),
                true,
            ),
        ];
        for (i, (t, dup)) in cases.iter().enumerate() {
            let got = check_txn(t, 128);
            assert_eq!(got.is_err(), *dup, "case #{i}: got {got:?}");
            if *dup {
                assert_eq!(got, Err(DUPLICATE_KEY), "case #{i}");
            }
        }
        // Then and else branches of the top-level txn are checked separately.
        let t = TxnRequest {
            compare: vec![],
            success: vec![op_put(b"a", b"")],
            failure: vec![op_put(b"a", b"")],
        };
        assert_eq!(check_txn(&t, 128), Ok(()));
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let many = txn((0..129)
            .map(|i| op_put(format!("k{i}").as_bytes(), b""))
            .collect());
        assert_eq!(check_txn(&many, 128), Err(TOO_MANY_OPS));
        let ok = txn((0..128)
            .map(|i| op_put(format!("k{i}").as_bytes(), b""))
            .collect());
        assert_eq!(check_txn(&ok, 128), Ok(()));
        // A nested txn is checked against the budget its parent leaves.
        let inner = nested(
            (0..3)
                .map(|i| op_put(format!("n{i}").as_bytes(), b""))
                .collect(),
            vec![],
        );
        let t = txn(vec![inner, op_put(b"x", b"")]);
        assert_eq!(check_txn(&t, 4), Err(TOO_MANY_OPS));
        assert_eq!(check_txn(&t, 5), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![op_put(b"", b"v")]), 128),
            Err(EMPTY_KEY)
        );
        assert_eq!(
            check_txn(&txn(vec![RequestOp { request: None }]), 128),
            Err(KEY_NOT_FOUND)
        );
    }

    #[test]
    fn put_options() {
        let p = |iv: bool, il: bool, v: &[u8], lease: i64| PutRequest {
            key: b"k".to_vec(),
            value: v.to_vec(),
            lease,
            ignore_value: iv,
            ignore_lease: il,
            prev_kv: false,
        };
        assert_eq!(check_put(&p(true, false, b"x", 0)), Err(VALUE_PROVIDED));
        assert_eq!(check_put(&p(false, true, b"", 5)), Err(LEASE_PROVIDED));
        assert_eq!(check_put(&p(true, true, b"", 0)), Ok(()));
    }
}
