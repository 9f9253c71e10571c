//! The real binary driven by the real `etcdctl`: every KV operation and the
//! etcd error strings users see.

mod common;

use common::Server;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn put_get_range_rev_delete() {
    let s = Server::start(&[]);
    assert_eq!(s.ctl_ok(&["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(lines(&s.ctl_ok(&["get", "foo"])), ["foo", "bar"]);
    s.ctl_ok(&["put", "foo", "baz"]);
    s.ctl_ok(&["put", "foo1", "x"]);
    s.ctl_ok(&["put", "fop", "y"]);
    // The first write of an empty store is revision 2, as in etcd.
    assert_eq!(lines(&s.ctl_ok(&["get", "foo", "--rev=2"])), ["foo", "bar"]);
    assert_eq!(
        lines(&s.ctl_ok(&["get", "foo", "--prefix"])),
        ["foo", "baz", "foo1", "x"]
    );
    assert_eq!(
        lines(&s.ctl_ok(&["get", "foo", "fop"])),
        ["foo", "baz", "foo1", "x"]
    );
    let keys = s.ctl_ok(&["get", "foo", "--from-key", "--keys-only"]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, ["foo", "foo1", "fop"]);
    assert_eq!(
        lines(&s.ctl_ok(&["get", "f", "--prefix", "--limit=1"])),
        ["foo", "baz"]
    );
    assert_eq!(
        lines(&s.ctl_ok(&["get", "f", "--prefix", "--sort-by=VALUE", "--order=DESCEND"])),
        ["fop", "y", "foo1", "x", "foo", "baz"]
    );
    let limited = s.ctl_ok(&["get", "f", "--prefix", "--limit=1", "-w", "json"]);
    assert!(limited.contains("\"more\":true,\"count\":3"), "{limited}");
    let json = s.ctl_ok(&["get", "foo", "-w", "json"]);
    assert!(json.contains("\"revision\":5"), "{json}");
    assert!(
        json.contains("\"create_revision\":2,\"mod_revision\":3,\"version\":2"),
        "{json}"
    );
    assert_eq!(s.ctl_ok(&["del", "foo", "--prefix"]).trim(), "2");
    assert_eq!(s.ctl_ok(&["get", "foo", "--prefix"]), "");
    assert_eq!(
        lines(&s.ctl_ok(&["del", "fop", "--prev-kv"])),
        ["1", "fop", "y"]
    );
    // Deleting nothing does not make a revision.
    let before = s.ctl_ok(&["get", "x", "-w", "json"]);
    assert_eq!(s.ctl_ok(&["del", "nothing"]).trim(), "0");
    assert_eq!(s.ctl_ok(&["get", "x", "-w", "json"]), before);
}

#[test]
fn txn_compact_and_errors() {
    let s = Server::start(&[]);
    s.ctl_ok(&["put", "k", "v1"]);
    let out = s.ctl_stdin(
        &["txn"],
        Some("value(\"k\") = \"v1\"\n\nput k v2\nput other o\n\nput k never\n\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines(&String::from_utf8_lossy(&out.stdout)),
        ["SUCCESS", "", "OK", "", "OK"]
    );
    let out = s.ctl_stdin(
        &["txn"],
        Some("version(\"k\") = \"1\"\n\nput k never\n\nget k\n\n"),
    );
    assert_eq!(
        lines(&String::from_utf8_lossy(&out.stdout)),
        ["FAILURE", "", "k", "v2"]
    );
    // Duplicate keys in one branch are refused before anything is written.
    let out = s.ctl_stdin(&["txn"], Some("\nput a 1\nput a 2\n\n\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: duplicate key given in txn request"));
    assert_eq!(s.ctl_ok(&["get", "a"]), "");

    // revisions: 2 k=v1, 3 txn; compact at 3 then read below it.
    assert_eq!(s.ctl_ok(&["compact", "3"]).trim(), "compacted revision 3");
    assert_eq!(
        s.ctl_err(&["get", "k", "--rev=2"]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(lines(&s.ctl_ok(&["get", "k", "--rev=3"])), ["k", "v2"]);
    assert_eq!(
        s.ctl_err(&["compact", "2"]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        s.ctl_err(&["get", "k", "--rev=100"]),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        s.ctl_err(&["compact", "100"]),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        s.ctl_err(&["compact", "3", "--physical"]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        s.ctl_err(&["put", "", "v"]),
        "Error: etcdserver: key is not provided"
    );
    assert_eq!(
        s.ctl_err(&["put", "missing", "--ignore-value"]),
        "Error: etcdserver: key not found"
    );
    assert_eq!(
        s.ctl_err(&["put", "k", "v", "--lease=1234"]),
        "Error: etcdserver: requested lease not found"
    );
}

#[test]
fn too_many_txn_ops_honours_the_flag() {
    let s = Server::start(&["--max-txn-ops", "3"]);
    let ok = s.ctl_stdin(&["txn"], Some("\nput a 1\nput b 2\nput c 3\n\n\n"));
    assert!(ok.status.success(), "{ok:?}");
    let out = s.ctl_stdin(&["txn"], Some("\nput a 1\nput b 2\nput c 3\nput d 4\n\n\n"));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: too many operations in txn request"));
    assert_eq!(s.ctl_ok(&["get", "d"]), "");
}

#[test]
fn endpoint_status_member_list_and_hashkv() {
    let s = Server::start(&[
        "--name",
        "m1",
        "--initial-advertise-peer-urls",
        "http://localhost:2380",
        "--initial-cluster",
        "m1=http://localhost:2380",
    ]);
    s.ctl_ok(&["put", "a", "1"]);
    let ml = s.ctl_ok(&["member", "list"]);
    let want_id = format!(
        "{:x}",
        concord::cluster::member_id(&["http://localhost:2380".to_string()], "etcd-cluster", None)
    );
    assert_eq!(
        ml.trim(),
        format!(
            "{want_id}, started, m1, http://localhost:2380, {}, false",
            s.url()
        )
    );
    let st = s.ctl_ok(&["endpoint", "status"]);
    assert!(st.contains(&want_id) && st.contains("true, false"), "{st}");
    let h1 = s.ctl_ok(&["endpoint", "hashkv"]);
    let h2 = s.ctl_ok(&["endpoint", "hashkv"]);
    assert_eq!(h1, h2, "hash is stable without writes");
    s.ctl_ok(&["put", "a", "2"]);
    assert_ne!(
        s.ctl_ok(&["endpoint", "hashkv"]),
        h1,
        "a write changes the hash"
    );
    assert!(s
        .ctl_ok(&["defrag"])
        .contains("Finished defragmenting etcd member"));
}
