//! The real etcdctl against the real binary: watch, lease, lock and elect,
//! as an operator would type them.

mod common;

use common::Server;

fn lease_id(granted: &str) -> String {
    // "lease 694da22d7da97900 granted with TTL(60s)"
    granted
        .split_whitespace()
        .nth(1)
        .expect("lease id in etcdctl output")
        .to_string()
}

#[test]
fn watch_rev_replays_history_and_follows_new_writes() {
    let s = Server::start(&[]);
    s.ctl_ok(&["put", "foo", "1"]); // rev 2
    s.ctl_ok(&["put", "foo", "2"]); // rev 3
    s.ctl_ok(&["del", "foo"]); // rev 4
    let w = s.ctl_spawn(&["watch", "foo", "--rev", "2"]);
    // A delete prints the key and an empty value.
    assert_eq!(
        w.lines(9),
        ["PUT", "foo", "1", "PUT", "foo", "2", "DELETE", "foo", ""]
    );
    s.ctl_ok(&["put", "foo", "3"]);
    assert_eq!(w.lines(3), ["PUT", "foo", "3"]);
}

#[test]
fn watch_prefix_with_prev_kv_prints_previous_values() {
    let s = Server::start(&[]);
    s.ctl_ok(&["put", "k/a", "old"]); // rev 2
    let w = s.ctl_spawn(&["watch", "--prefix", "k/", "--prev-kv", "--rev", "3"]);
    s.ctl_ok(&["put", "k/a", "new"]);
    s.ctl_ok(&["put", "k/b", "first"]);
    s.ctl_ok(&["put", "other", "x"]);
    s.ctl_ok(&["del", "k/a"]);
    // A put that replaced a value prints the previous key and value first.
    assert_eq!(w.lines(5), ["PUT", "k/a", "old", "k/a", "new"]);
    assert_eq!(w.lines(3), ["PUT", "k/b", "first"]);
    assert_eq!(w.lines(5), ["DELETE", "k/a", "new", "k/a", ""]);
}

#[test]
fn lease_grant_timetolive_keepalive_list_revoke() {
    let s = Server::start(&[]);
    let id = lease_id(&s.ctl_ok(&["lease", "grant", "300"]));
    s.ctl_ok(&["put", "--lease", &id, "lk", "v"]);
    let ttl = s.ctl_ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(300s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.trim_end().ends_with("attached keys([lk])"), "{ttl}");
    let list = s.ctl_ok(&["lease", "list"]);
    assert_eq!(list, format!("found 1 leases\n{id}\n"));
    let ka = s.ctl_ok(&["lease", "keep-alive", "--once", &id]);
    assert_eq!(ka.trim(), format!("lease {id} keepalived with TTL(300)"));
    assert_eq!(s.ctl_ok(&["get", "lk", "--print-value-only"]), "v\n");
    assert_eq!(
        s.ctl_ok(&["lease", "revoke", &id]).trim(),
        format!("lease {id} revoked")
    );
    assert_eq!(s.ctl_ok(&["get", "lk"]), "");
    assert_eq!(
        s.ctl_ok(&["lease", "timetolive", &id]).trim(),
        format!("lease {id} already expired")
    );
    assert_eq!(
        s.ctl_err(&["lease", "revoke", &id]),
        "Error: failed to revoke lease (etcdserver: requested lease not found)"
    );
    assert_eq!(
        s.ctl_err(&["put", "--lease", "1234", "x", "y"]),
        "Error: etcdserver: requested lease not found"
    );
}

#[test]
fn an_expired_lease_deletes_its_keys() {
    let s = Server::start(&[]);
    let id = lease_id(&s.ctl_ok(&["lease", "grant", "5"]));
    s.ctl_ok(&["put", "--lease", &id, "e1", "v"]);
    s.ctl_ok(&["put", "--lease", &id, "e2", "v"]);
    // The expiry is an event: wait for the two deletes on a watch.
    let w = s.ctl_spawn(&["watch", "--prefix", "e", "--rev", "4"]);
    assert_eq!(w.lines(6), ["DELETE", "e1", "", "DELETE", "e2", ""]);
    assert_eq!(s.ctl_ok(&["get", "--prefix", "e"]), "");
}

#[test]
fn lock_is_mutually_exclusive_and_handed_over_in_order() {
    let s = Server::start(&[]);
    let mut first = s.ctl_spawn(&["lock", "mylock"]);
    let k1 = first.line();
    assert!(k1.starts_with("mylock/"), "{k1}");
    // A second caller waits; its key appears under the lock's prefix.
    let second = s.ctl_spawn(&["lock", "mylock"]);
    let w = s.ctl_spawn(&["watch", "--prefix", "mylock/", "--rev", "1"]);
    assert_eq!(w.lines(2), ["PUT", k1.as_str()]);
    let _ = w.lines(3); // the second caller's key: PUT, key, empty value
                        // Releasing the first hands the lock to the second.
    first.terminate();
    let k2 = second.line();
    assert!(k2.starts_with("mylock/") && k2 != k1, "{k2}");
    // With a command, etcdctl runs it while holding the lock.
    let out = s.ctl_spawn(&["lock", "other", "echo", "inside"]);
    assert_eq!(out.line(), "inside");
}

#[test]
fn elect_campaigns_and_observers_see_the_leader() {
    let s = Server::start(&[]);
    let mut leader = s.ctl_spawn(&["elect", "myelection", "p1"]);
    let key = leader.line();
    assert!(key.starts_with("myelection/"), "{key}");
    assert_eq!(leader.line(), "p1");
    let observer = s.ctl_spawn(&["elect", "-l", "myelection"]);
    assert_eq!(observer.lines(2), [key.as_str(), "p1"]);
    let second = s.ctl_spawn(&["elect", "myelection", "p2"]);
    leader.terminate();
    let key2 = second.line();
    assert_eq!(second.line(), "p2");
    assert_eq!(observer.lines(2), [key2.as_str(), "p2"]);
}
