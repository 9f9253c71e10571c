//! The real binary driven by the Rust `etcd-client` crate: responses field by
//! field, and error codes and messages as clients match them.

mod common;

use common::Server;
use etcd_client::{
    CompactionOptions, Compare, CompareOp, DeleteOptions, Error, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

fn status(e: Error) -> (Code, String) {
    match e {
        Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("want a gRPC status, got {other:?}"),
    }
}

#[tokio::test]
async fn kv_responses_match_etcd() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let r = c.put("a", "1", None).await.unwrap();
    let h = r.header().unwrap();
    assert_eq!(h.revision(), 2);
    assert_ne!(h.cluster_id(), 0);
    assert_ne!(h.member_id(), 0);
    let r = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    let prev = r.prev_key().unwrap();
    assert_eq!(
        (prev.value(), prev.version(), prev.mod_revision()),
        (&b"1"[..], 1, 2)
    );
    for (k, v) in [("b", "9"), ("c", "5"), ("d", "7")] {
        c.put(k, v, None).await.unwrap();
    }
    // revisions: 2 a=1, 3 a=2, 4 b, 5 c, 6 d
    let r = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    assert_eq!(
        r.header().unwrap().revision(),
        6,
        "header carries the current revision"
    );
    let r = c
        .get("a", Some(GetOptions::new().with_range("d").with_limit(2)))
        .await
        .unwrap();
    assert_eq!((r.kvs().len(), r.more(), r.count()), (2, true, 3));
    let r = c
        .get(
            "a",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_sort(SortTarget::Value, SortOrder::Ascend),
            ),
        )
        .await
        .unwrap();
    let vals: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(vals, [&b"2"[..], b"5", b"7", b"9"]);
    let r = c
        .get(
            "a",
            Some(GetOptions::new().with_from_key().with_min_mod_revision(5)),
        )
        .await
        .unwrap();
    assert_eq!(r.kvs().len(), 2);
    assert_eq!(r.count(), 4, "count ignores the revision filters");
    let r = c
        .get("a", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!((r.count(), r.kvs().len()), (1, 0));

    let t = Txn::new()
        .when([Compare::version("a", CompareOp::Equal, 2)])
        .and_then([
            TxnOp::put("a", "3", None),
            TxnOp::get("a", None),
            TxnOp::delete("b", Some(DeleteOptions::new().with_prev_key())),
        ]);
    let r = c.txn(t).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(
        r.header().unwrap().revision(),
        7,
        "one revision for the whole txn"
    );
    match &r.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(
            g.kvs()[0].value(),
            b"3",
            "reads see earlier writes of the txn"
        ),
        other => panic!("{other:?}"),
    }
    match &r.op_responses()[2] {
        TxnOpResponse::Delete(d) => assert_eq!(d.prev_kvs()[0].value(), b"9"),
        other => panic!("{other:?}"),
    }
    let r = c
        .delete("c", Some(DeleteOptions::new().with_range("e")))
        .await
        .unwrap();
    assert_eq!((r.deleted(), r.header().unwrap().revision()), (2, 8));

    let r = c
        .compact(7, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(r.header().unwrap().revision(), 8);
    let r = c
        .get("a", Some(GetOptions::new().with_revision(7)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"3");
}

#[tokio::test]
async fn errors_carry_etcd_codes_and_messages() {
    let s = Server::start(&["--max-request-bytes", "4096"]);
    let mut c = s.client().await;
    c.put("k", "v", None).await.unwrap();
    c.put("k", "v2", None).await.unwrap();
    c.compact(3, None).await.unwrap();
    let cases: Vec<(Error, Code, &str)> = vec![
        (
            c.get("k", Some(GetOptions::new().with_revision(2)))
                .await
                .unwrap_err(),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            c.get("k", Some(GetOptions::new().with_revision(99)))
                .await
                .unwrap_err(),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            c.put("", "v", None).await.unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            c.get("", None).await.unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            c.put("k", vec![b'x'; 5000], None).await.unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (
            c.put("nokey", "", Some(PutOptions::new().with_ignore_value()))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            c.put("k", "x", Some(PutOptions::new().with_ignore_value()))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: value is provided",
        ),
        (
            c.txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            c.txn(
                Txn::new().and_then(
                    (0..129)
                        .map(|i| TxnOp::put(format!("t{i}"), "", None))
                        .collect::<Vec<_>>(),
                ),
            )
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            c.compact(3, None).await.unwrap_err(),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            c.compact(50, None).await.unwrap_err(),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
    ];
    for (i, (err, code, msg)) in cases.into_iter().enumerate() {
        assert_eq!(status(err), (code, msg.to_string()), "case #{i}");
    }
    // None of the refused requests wrote anything.
    let r = c.get("k", None).await.unwrap();
    assert_eq!(
        (r.kvs()[0].value(), r.header().unwrap().revision()),
        (&b"v2"[..], 3)
    );
    assert_eq!(c.get("d", None).await.unwrap().kvs().len(), 0);
}
