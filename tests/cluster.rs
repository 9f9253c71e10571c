//! Three real members started with etcd's static bootstrap flags, driven by
//! the real etcdctl and the etcd-client crate: replication, reads and writes
//! through every member, etcd's member IDs, and a leader killed with -9.

mod common;

use std::time::Duration;

use common::Cluster;

/// (leader id, raft term, own id) as member `i` reports them.
async fn status(c: &Cluster, i: usize) -> (u64, u64, u64) {
    let mut client = c.members[i].client().await;
    let s = client.status().await.expect("status");
    let h = s.header().expect("header");
    (s.leader(), s.raft_term(), h.member_id())
}

/// Every member's (leader, term, own id) once all of them name the same
/// leader in the same term (a member learns of an election a heartbeat
/// after the winner).
async fn agreed(c: &Cluster) -> Vec<(u64, u64, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<(u64, u64, u64)> =
            futures::future::join_all((0..c.members.len()).map(|i| status(c, i))).await;
        let (leader, term, _) = views[0];
        if leader != 0 && views.iter().all(|v| (v.0, v.1) == (leader, term)) {
            return views;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the members never agreed on a leader: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (leader id, index of the leader, indexes of the followers), agreed by all.
async fn roles(c: &Cluster) -> (u64, usize, Vec<usize>) {
    let views = agreed(c).await;
    let leader = views[0].0;
    let li = views
        .iter()
        .position(|v| v.2 == leader)
        .expect("the leader is a member");
    let followers = (0..views.len()).filter(|i| *i != li).collect();
    (leader, li, followers)
}

/// Waits until member `i` has applied revision `rev` (serializable reads are
/// answered from its own store).
async fn applied(c: &Cluster, i: usize, rev: i64) {
    let mut client = c.members[i].client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .get(
                "any",
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await
            .expect("get");
        if r.header().map(|h| h.revision()) >= Some(rev) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member {i} never applied revision {rev}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_members_replicate_and_serve_from_every_member() {
    let c = Cluster::start(3, &[]);
    // etcd's IDs, and every member's published client URL.
    // (Each member is ready once it has applied its own publication; m0
    // applies the others' a little later.)
    let list = c.members[0].member_list_when(|l| l.matches(", started, ").count() == 3);
    for (i, m) in c.members.iter().enumerate() {
        let id = concord::cluster::member_id(&[m.peer_url()], &c.token, None);
        let line = format!(
            "{id:x}, started, m{i}, {}, {}, false",
            m.peer_url(),
            m.url()
        );
        assert!(list.lines().any(|l| l == line), "want {line:?} in\n{list}");
    }
    // One leader, the same for all, in the same term.
    let views = agreed(&c).await;
    assert!(views.iter().any(|v| v.2 == views[0].0), "{views:?}");
    // Writes through every member, linearizable reads through every other.
    for (i, m) in c.members.iter().enumerate() {
        m.ctl_ok(&["put", &format!("k{i}"), &format!("v{i}")]);
        for other in &c.members {
            assert_eq!(
                other.ctl_ok(&["get", &format!("k{i}"), "--print-value-only"]),
                format!("v{i}\n")
            );
        }
    }
    let out = c.members[2].ctl_stdin(
        &["txn"],
        Some("value(\"k0\") = \"v0\"\n\nput k0 changed\n\n\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("SUCCESS"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.members[1].ctl_ok(&["del", "k1"]), "1\n");
    assert_eq!(
        c.members[0].ctl_ok(&["get", "k", "--prefix", "--keys-only"]),
        "k0\n\nk2\n\n"
    );
    // Same data everywhere: equal HashKV at the same revision.
    let rev = {
        let mut client = c.members[0].client().await;
        client
            .get("k0", None)
            .await
            .expect("get")
            .header()
            .unwrap()
            .revision()
    };
    let mut hashes = Vec::new();
    for (i, m) in c.members.iter().enumerate() {
        applied(&c, i, rev).await;
        let mut client = m.client().await;
        hashes.push(client.hash_kv(rev).await.expect("hashkv").hash());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}

#[tokio::test]
async fn a_killed_leader_loses_no_acknowledged_write_and_catches_up() {
    let mut c = Cluster::start(3, &[]);
    let (leader, li, _) = roles(&c).await;
    let term = status(&c, li).await.1;
    let writer = (li + 1) % 3;
    let mut acked = Vec::new();
    for i in 0..50 {
        c.members[writer].ctl_ok(&["put", &format!("a{i:03}"), "x"]);
        acked.push(format!("a{i:03}"));
    }
    c.members[li].kill9();
    // Writes go on through the survivors once they elect a new leader
    // (retried: during the election they fail with a clear error).
    let mut i = 50;
    while acked.len() < 100 {
        let key = format!("a{i:03}");
        let o = c.members[writer].ctl(&["put", &key, "y"]);
        if o.status.success() {
            acked.push(key);
            i += 1;
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("no leader")
                    || err.contains("timed out")
                    || err.contains("leader changed")
                    || err.contains("deadline exceeded"),
                "unexpected error during the election: {err}"
            );
        }
    }
    let (new_leader, new_term, _) = status(&c, writer).await;
    assert!(new_leader != leader && new_term > term);
    // The old leader comes back and catches up.
    c.members[li].spawn();
    let keys = c.members[li].ctl_ok(&["get", "a", "--prefix", "--keys-only"]);
    let got: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        got, acked,
        "every acknowledged write, through the restarted member"
    );
    // Its own store has them too (serializable read, local): wait until it
    // has applied up to the revision of the last write.
    let last_rev = {
        let mut client = c.members[writer].client().await;
        client.get("a099", None).await.expect("get").kvs()[0].mod_revision()
    };
    applied(&c, li, last_rev).await;
    let mut client = c.members[li].client().await;
    let r = client
        .get(
            "a099",
            Some(etcd_client::GetOptions::new().with_serializable()),
        )
        .await
        .expect("get");
    assert_eq!(r.kvs().first().map(|kv| kv.mod_revision()), Some(last_rev));
}

#[tokio::test]
async fn move_leader_and_membership_changes_with_etcdctl() {
    let mut c = Cluster::start(3, &[]);
    let eps = c.endpoints();
    let views = agreed(&c).await;
    let leader = views[0].0;
    let ids: Vec<u64> = views.iter().map(|v| v.2).collect();
    let target = *ids.iter().find(|id| **id != leader).expect("a follower");
    // move-leader: etcdctl finds the leader among the endpoints.
    let out = c.members[0].ctl_ok(&["--endpoints", &eps, "move-leader", &format!("{target:x}")]);
    assert_eq!(
        out.trim(),
        format!("Leadership transferred from {leader:x} to {target:x}")
    );
    let ti = ids.iter().position(|id| *id == target).expect("target");
    assert_eq!(status(&c, ti).await.0, target);
    // A follower refuses: only the leader moves leadership.
    let follower = (ti + 1) % 3;
    let err = c.members[follower].ctl_err(&["move-leader", &format!("{leader:x}")]);
    assert!(
        err.contains("etcdserver: not leader") || err.contains("no leader"),
        "{err}"
    );

    // Add a learner (not started): listed unstarted, cannot be promoted
    // while it is behind, can be updated and removed.
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let out = c.members[0].ctl_ok(&["member", "add", "m3", "--peer-urls", &peer, "--learner"]);
    let first = out.lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("Member ") && first.contains(" added to cluster "),
        "{out}"
    );
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    assert!(
        out.contains(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer}\"")),
        "{out}"
    );
    // etcdctl prints IDs as Go's %16x: space-padded to 16 columns, so an
    // ID with a leading zero nibble reads "Member  6265b7ceaa9dd9a ...".
    let new_id = first.split_whitespace().nth(1).expect("id").to_string();
    c.members[1]
        .member_list_when(|l| l.contains(&format!("{new_id}, unstarted, , {peer}, , true")));
    let err = c.members[0].ctl_err(&["member", "add", "again", "--peer-urls", &peer]);
    assert!(err.contains("Peer URLs already exists"), "{err}");
    let err = c.members[0].ctl_err(&["member", "promote", &new_id]);
    assert!(
        err.contains("can only promote a learner member which is in sync with leader"),
        "{err}"
    );
    let err = c.members[0].ctl_err(&["member", "promote", &format!("{leader:x}")]);
    assert!(err.contains("can only promote a learner member"), "{err}");
    let peer2 = format!("http://127.0.0.1:{}", common::free_port());
    let out = c.members[2].ctl_ok(&["member", "update", &new_id, "--peer-urls", &peer2]);
    assert!(
        out.contains(&format!("Member {new_id:>16} updated in cluster")),
        "{out}"
    );
    assert!(c.members[2].ctl_ok(&["member", "list"]).contains(&peer2));
    // The others apply the update when they learn it committed (member
    // list is served from the local membership, as in etcd 3.4).
    c.members[0].member_list_when(|l| l.contains(&peer2));
    let out = c.members[1].ctl_ok(&["member", "remove", &new_id]);
    assert!(
        out.contains(&format!("Member {new_id:>16} removed from cluster")),
        "{out}"
    );
    let err = c.members[1].ctl_err(&["member", "remove", &new_id]);
    assert!(err.contains("etcdserver: member not found"), "{err}");

    // Remove a voter: it stops; the other two go on.
    let victim = (ti + 2) % 3;
    let victim_id = ids[victim];
    let out = c.members[ti].ctl_ok(&["member", "remove", &format!("{victim_id:x}")]);
    assert!(out.contains("removed from cluster"), "{out}");
    let status = c.members[victim].wait_exit();
    assert!(
        status.success(),
        "a removed member stops and exits 0, as etcd"
    );
    let survivor = (0..3).find(|i| *i != victim).expect("survivor");
    c.members[survivor].ctl_ok(&["put", "after", "removal"]);
    c.members[survivor].member_list_when(|l| l.lines().count() == 2);
}

#[tokio::test]
async fn a_member_behind_the_log_catches_up_by_snapshot() {
    // A small --snapshot-count keeps few log entries behind the applied index.
    let mut c = Cluster::start(3, &["--snapshot-count", "20"]);
    let (_, _, followers) = roles(&c).await;
    let lagger = followers[0];
    let writer = (0..3).find(|i| *i != lagger).expect("a writer");
    c.members[lagger].kill9();
    let mut client = c.members[writer].client().await;
    for i in 0..200 {
        client
            .put(format!("s{i:03}"), "v", None)
            .await
            .expect("put");
    }
    let lease = client.lease_grant(600, None).await.expect("grant").id();
    client
        .put(
            "leased",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
    let rev = client
        .get("leased", None)
        .await
        .expect("get")
        .header()
        .unwrap()
        .revision();
    c.members[lagger].spawn();
    c.members[lagger].wait_for_log("installing a raft snapshot");
    // Its own store (serializable reads) has everything, and the same hash.
    applied(&c, lagger, rev).await;
    let mut own = c.members[lagger].client().await;
    let r = own
        .get(
            "s",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_serializable()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count");
    assert_eq!(r.count(), 200);
    let h_lagger = own.hash_kv(rev).await.expect("hashkv").hash();
    let h_writer = client.hash_kv(rev).await.expect("hashkv").hash();
    assert_eq!(h_lagger, h_writer);
    // The lease came with the snapshot: its key is attached to it there.
    let ttl = c.members[lagger].ctl_ok(&["lease", "timetolive", &format!("{lease:x}"), "--keys"]);
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
}

#[tokio::test]
async fn member_add_then_start_with_existing_joins_and_a_learner_is_promoted() {
    let c = Cluster::start(3, &["--snapshot-count", "20"]);
    for i in 0..30 {
        c.members[0].ctl_ok(&["put", &format!("j{i}"), "v"]);
    }
    // The etcd flow: member add prints the environment of the new member.
    let mut joiner = common::Server::prepare(&[]);
    let out = c.members[1].ctl_ok(&["member", "add", "m3", "--peer-urls", &joiner.peer_url()]);
    let env = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    assert_eq!(env("ETCD_INITIAL_CLUSTER_STATE"), "existing");
    joiner.extra_args = vec![
        "--name".into(),
        env("ETCD_NAME"),
        "--initial-cluster".into(),
        env("ETCD_INITIAL_CLUSTER"),
        "--initial-advertise-peer-urls".into(),
        env("ETCD_INITIAL_ADVERTISE_PEER_URLS"),
        "--initial-cluster-state".into(),
        "existing".into(),
    ];
    joiner.spawn(); // ready once it has applied its own publication
    let started = format!(
        ", started, m3, {}, {}, false",
        joiner.peer_url(),
        joiner.url()
    );
    c.members[0].member_list_when(|l| l.contains(&started));
    assert_eq!(joiner.ctl_ok(&["get", "j29", "--print-value-only"]), "v\n");
    joiner.ctl_ok(&["put", "from-m3", "x"]);
    assert_eq!(
        c.members[2].ctl_ok(&["get", "from-m3", "--print-value-only"]),
        "x\n"
    );

    // A learner joins the same way and is promoted once in sync.
    let mut learner = common::Server::prepare(&[]);
    let out = c.members[0].ctl_ok(&[
        "member",
        "add",
        "m4",
        "--peer-urls",
        &learner.peer_url(),
        "--learner",
    ]);
    let id = out.split_whitespace().nth(1).expect("id").to_string();
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("initial cluster")
        .to_string();
    learner.extra_args = vec![
        "--name".into(),
        "m4".into(),
        "--initial-cluster".into(),
        initial,
        "--initial-advertise-peer-urls".into(),
        learner.peer_url(),
        "--initial-cluster-state".into(),
        "existing".into(),
    ];
    learner.spawn();
    common::eventually("the learner is promoted", || {
        let o = c.members[0].ctl(&["member", "promote", &id]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.success() {
            return Ok(());
        }
        assert!(err.contains("in sync with leader"), "{err}");
        Err(err)
    });
    let list = c.members[2].member_list_when(|l| !l.contains(", true"));
    assert!(
        list.contains(&format!("{id}, started, m4,")) && list.contains(", false\n"),
        "{list}"
    );
}

#[test]
fn joining_without_a_reachable_cluster_fails_clearly() {
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let mut m = common::Server::prepare(&[]);
    let err = join_existing(&mut m, &format!("old={dead}"), &[]);
    assert!(err.contains("cannot fetch the cluster's members"), "{err}");
}

/// Runs member `m` as "new" joining the cluster of `others` (name=url,...)
/// with --initial-cluster-state existing, expecting it to fail; its stderr.
fn join_existing(m: &mut common::Server, others: &str, extra: &[String]) -> String {
    let o = std::process::Command::new(common::BIN)
        .args([
            "--data-dir",
            m.data_dir.to_str().expect("path"),
            "--listen-client-urls",
            &m.url(),
            "--advertise-client-urls",
            &m.url(),
            "--listen-peer-urls",
            &m.peer_url(),
            "--name",
            "new",
            "--initial-advertise-peer-urls",
            &m.peer_url(),
            "--initial-cluster",
            &format!("{others},new={}", m.peer_url()),
            "--initial-cluster-state",
            "existing",
        ])
        .args(extra)
        .output()
        .expect("run");
    m.child = None;
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_member_with_the_wrong_cluster_token_is_rejected() {
    let mut members: Vec<common::Server> = (0..3).map(|_| common::Server::prepare(&[])).collect();
    let initial = common::initial_cluster(&members);
    for (i, m) in members.iter_mut().enumerate() {
        let token = if i == 2 { "wrong-token" } else { "right-token" };
        m.extra_args = vec![
            "--name".into(),
            format!("m{i}"),
            "--initial-advertise-peer-urls".into(),
            m.peer_url(),
            "--initial-cluster".into(),
            initial.clone(),
            "--initial-cluster-token".into(),
            token.into(),
        ];
        m.launch();
    }
    // The two members with the right token form the cluster (a quorum of 3).
    members[0].wait_ready();
    members[1].wait_ready();
    members[0].ctl_ok(&["put", "k", "v"]);
    assert_eq!(
        members[1].ctl_ok(&["get", "k", "--print-value-only"]),
        "v\n"
    );
    // The other one computed another cluster ID: both sides refuse it.
    members[2].wait_for_log("peer rejected the stream");
    members[0].wait_for_log("another cluster");
}

#[tokio::test]
async fn leases_work_through_followers() {
    let c = Cluster::start(3, &[]);
    let (_, _, followers) = roles(&c).await;
    let (f1, f2) = (followers[0], followers[1]);
    let granted = c.members[f1].ctl_ok(&["lease", "grant", "300"]);
    let id = granted.split_whitespace().nth(1).expect("id").to_string();
    c.members[f2].ctl_ok(&["put", "--lease", &id, "lk", "v"]);
    // A keep-alive on a follower is renewed by the leader.
    let ka = c.members[f1].ctl_ok(&["lease", "keep-alive", "--once", &id]);
    assert_eq!(ka.trim(), format!("lease {id} keepalived with TTL(300)"));
    let ttl = c.members[f2].ctl_ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([lk])"), "{ttl}");
    // A short lease expires on the leader's clock; every member sees it.
    let short = c.members[f2].ctl_ok(&["lease", "grant", "5"]);
    let sid = short.split_whitespace().nth(1).expect("id").to_string();
    c.members[f1].ctl_ok(&["put", "--lease", &sid, "gone", "v"]);
    let rev = {
        let mut client = c.members[f1].client().await;
        client.get("gone", None).await.expect("get").kvs()[0].mod_revision()
    };
    let w = c.members[f2].ctl_spawn(&["watch", "gone", "--rev", &(rev + 1).to_string()]);
    assert_eq!(w.lines(3), ["DELETE", "gone", ""]);
    for m in &c.members {
        assert_eq!(m.ctl_ok(&["get", "gone"]), "");
    }
    assert_eq!(
        c.members[f2].ctl_ok(&["lease", "revoke", &id]).trim(),
        format!("lease {id} revoked")
    );
    assert_eq!(c.members[f1].ctl_ok(&["get", "lk"]), "");
}

/// Three members on https peer URLs: with `--peer-auto-tls` each generates
/// its own certificate (etcd's e2e clusters run this way).
#[tokio::test]
async fn members_replicate_over_peer_tls_with_self_signed_certificates() {
    let c = Cluster::start_with(3, "https", |_| vec!["--peer-auto-tls".into()]);
    let list = c.members[0].ctl_ok(&["member", "list"]);
    assert_eq!(list.matches("https://127.0.0.1:").count(), 3, "{list}");
    for (i, m) in c.members.iter().enumerate() {
        m.ctl_ok(&["put", &format!("k{i}"), &format!("v{i}")]);
    }
    for m in &c.members {
        assert_eq!(
            m.ctl_ok(&["get", "k", "--prefix", "--print-value-only"]),
            "v0\nv1\nv2\n"
        );
        let dir = m.data_dir.join("fixtures").join("peer");
        assert!(dir.join("cert.pem").exists() && dir.join("key.pem").exists());
    }
}

/// Certificates from files, verified against a trusted CA both ways
/// (`--peer-client-cert-auth`): the members form a cluster, and a member
/// whose certificate the CA did not sign is refused before it can even
/// ask for the member list.
#[tokio::test]
async fn peer_client_cert_auth_admits_only_ca_signed_members() {
    let certs = tempfile::tempdir().expect("tempdir");
    common::write_ca_signed_certs(certs.path(), 4);
    let path = |f: String| certs.path().join(f).display().to_string();
    let c = Cluster::start_with(3, "https", |i| {
        vec![
            "--peer-cert-file".into(),
            path(format!("m{i}.pem")),
            "--peer-key-file".into(),
            path(format!("m{i}.key")),
            "--peer-trusted-ca-file".into(),
            path("ca.pem".into()),
            "--peer-client-cert-auth".into(),
        ]
    });
    c.members[0].ctl_ok(&["put", "k", "v"]);
    assert_eq!(
        c.members[2].ctl_ok(&["get", "k", "--print-value-only"]),
        "v\n"
    );

    // A fourth process asks the cluster for its members (joining with
    // --initial-cluster-state existing, without a member add first).
    let join = |tls: &[String]| {
        let mut m = common::Server::prepare(&[]);
        m.peer_scheme = "https";
        join_existing(&mut m, &format!("m0={}", c.members[0].peer_url()), tls)
    };
    // With a CA-signed certificate it gets the list (and is then refused
    // only because nobody added it).
    let err = join(&[
        "--peer-cert-file".into(),
        path("m3.pem".into()),
        "--peer-key-file".into(),
        path("m3.key".into()),
        "--peer-trusted-ca-file".into(),
        path("ca.pem".into()),
    ]);
    assert!(err.contains("add it first"), "{err}");
    // With a self-signed one the TLS handshake fails.
    let err = join(&["--peer-auto-tls".into()]);
    assert!(err.contains("cannot fetch the cluster's members"), "{err}");
}

/// etcd's e2e "TLS" setup: client and peer URLs on https with certificates
/// a CA signed (clients verify the servers against it): etcdctl through
/// every member, and a lease keep-alive on a follower, which is forwarded
/// to the leader's https client URL.
#[tokio::test]
async fn clients_and_peers_over_tls_with_ca_signed_certificates() {
    let certs = tempfile::tempdir().expect("tempdir");
    common::write_ca_signed_certs(certs.path(), 3);
    let path = |f: String| certs.path().join(f).display().to_string();
    let c = Cluster::start_configured(
        3,
        |_, m| {
            m.peer_scheme = "https";
            m.client_scheme = "https";
            m.ctl_args = vec!["--cacert".into(), path("ca.pem".into())];
        },
        |i| {
            let (cert, key) = (path(format!("m{i}.pem")), path(format!("m{i}.key")));
            [
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--trusted-ca-file",
                &path("ca.pem".into()),
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
                "--peer-trusted-ca-file",
                &path("ca.pem".into()),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        },
    );
    for (i, m) in c.members.iter().enumerate() {
        m.ctl_ok(&["put", &format!("k{i}"), "v"]);
    }
    for m in &c.members {
        assert_eq!(
            m.ctl_ok(&["get", "k", "--prefix", "--keys-only"]),
            "k0\n\nk1\n\nk2\n\n"
        );
    }
    // A member that is not the leader forwards keep-alives to the leader.
    let follower = c
        .members
        .iter()
        .find(|m| {
            let s = m.ctl_ok(&["endpoint", "status", "-w", "json"]);
            // is a follower when its own id differs from the leader's
            let field = |name: &str| {
                s.split(&format!("\"{name}\":"))
                    .nth(1)
                    .and_then(|r| r.split([',', '}']).next())
                    .map(str::to_string)
            };
            field("member_id") != field("leader")
        })
        .expect("a follower");
    let out = follower.ctl_ok(&["lease", "grant", "60"]);
    let id = out.split_whitespace().nth(1).expect("lease id");
    let out = follower.ctl_ok(&["lease", "keep-alive", "--once", id]);
    assert!(out.contains("keepalived with TTL"), "{out}");
    // A client that does not trust the CA is refused.
    let o = std::process::Command::new(common::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &follower.url()])
        .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "k0"])
        .output()
        .expect("etcdctl");
    assert!(
        !o.status.success(),
        "a client without the CA must not connect"
    );
}
