//! Watch, Lease, Lock and Election through the Rust `etcd-client` crate
//! against the real binary. Watch streams are judged by the watch checker
//! (`concord::watch::checker`) against the history of writes the test made.

mod common;

use std::time::Duration;

use common::Server;
use concord::watch::checker::{check, History, SeenEvent, SeenResponse, WatchSpec};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, LockOptions,
    PutOptions, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};

/// Puts through the client and records them in the history.
async fn put(c: &mut Client, h: &mut History, key: &str, value: &str) -> i64 {
    let r = c.put(key, value, None).await.expect("put");
    let rev = r.header().expect("header").revision();
    h.put(rev, key.as_bytes(), value.as_bytes());
    rev
}

async fn delete(c: &mut Client, h: &mut History, key: &str) -> i64 {
    let r = c.delete(key, None).await.expect("delete");
    let rev = r.header().expect("header").revision();
    if r.deleted() > 0 {
        h.delete(rev, key.as_bytes());
    }
    rev
}

fn seen(r: &WatchResponse) -> SeenResponse {
    SeenResponse {
        header_rev: r.header().map_or(0, |h| h.revision()),
        events: r
            .events()
            .iter()
            .map(|e| {
                let kv = e.kv().expect("event kv");
                SeenEvent {
                    rev: kv.mod_revision(),
                    key: kv.key().to_vec(),
                    value: (e.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                    prev_value: e.prev_kv().map(|p| p.value().to_vec()),
                }
            })
            .collect(),
        compact_revision: r.compact_revision(),
        canceled: r.canceled(),
    }
}

/// Reads responses until `done` says the collected ones are enough.
async fn collect_until(
    stream: &mut WatchStream,
    by_id: &mut std::collections::BTreeMap<i64, Vec<SeenResponse>>,
    mut done: impl FnMut(&std::collections::BTreeMap<i64, Vec<SeenResponse>>) -> bool,
) {
    while !done(by_id) {
        let r = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a watch response within 30 s")
            .expect("stream ok")
            .expect("stream open");
        if r.created() {
            continue;
        }
        by_id.entry(r.watch_id()).or_default().push(seen(&r));
    }
}

fn events_of(v: &[SeenResponse]) -> usize {
    v.iter().map(|r| r.events.len()).sum()
}

#[tokio::test]
async fn many_watchers_on_one_stream_pass_the_checker() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let mut h = History::new();
    put(&mut c, &mut h, "a", "0").await;
    put(&mut c, &mut h, "b", "0").await;
    delete(&mut c, &mut h, "a").await;
    // Watcher 0 from revision 1 on every key, created first.
    let mut stream = c
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(1)
                    .with_watch_id(10)
                    .with_prev_key(),
            ),
        )
        .await
        .expect("watch");
    // More on the same stream: a prefix from now, a single key, filtered.
    let now = c
        .get("x", None)
        .await
        .expect("get")
        .header()
        .unwrap()
        .revision();
    stream
        .watch(
            "a",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(now + 1)
                    .with_watch_id(11),
            ),
        )
        .await
        .expect("watch");
    stream
        .watch(
            "b",
            Some(
                WatchOptions::new()
                    .with_start_revision(now + 1)
                    .with_watch_id(12)
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .expect("watch");
    for i in 0..20 {
        put(&mut c, &mut h, "a", &format!("v{i}")).await;
        put(&mut c, &mut h, "ab", &format!("w{i}")).await;
        if i % 5 == 0 {
            delete(&mut c, &mut h, "b").await;
            put(&mut c, &mut h, "b", &format!("b{i}")).await;
        }
    }
    let total = h.changes().len();
    let mut by_id = std::collections::BTreeMap::new();
    collect_until(&mut stream, &mut by_id, |m| {
        m.get(&10).map_or(0, |v| events_of(v)) >= total
            && m.get(&11).map_or(0, |v| events_of(v)) >= 40
            && m.get(&12).map_or(0, |v| events_of(v)) >= 4
    })
    .await;
    let specs = [
        (
            10,
            WatchSpec {
                key: vec![0],
                range_end: vec![0],
                start_rev: 1,
                prev_kv: true,
                ..Default::default()
            },
        ),
        (
            11,
            WatchSpec {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_rev: now + 1,
                ..Default::default()
            },
        ),
        (
            12,
            WatchSpec {
                key: b"b".to_vec(),
                start_rev: now + 1,
                no_put: true,
                ..Default::default()
            },
        ),
    ];
    for (id, spec) in specs {
        let v = check(&h, &spec, &by_id[&id]);
        assert!(v.is_empty(), "watch {id}: {v:?}");
    }
}

#[tokio::test]
async fn progress_requests_cancel_and_duplicate_ids() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let mut h = History::new();
    let rev = put(&mut c, &mut h, "k", "1").await;
    let mut stream = c
        .watch("k", Some(WatchOptions::new().with_watch_id(3)))
        .await
        .expect("watch");
    let created = stream.message().await.expect("ok").expect("open");
    assert!(created.created());
    assert_eq!(created.watch_id(), 3);
    stream.request_progress().await.expect("progress");
    let p = stream.message().await.expect("ok").expect("open");
    assert_eq!(
        (
            p.watch_id(),
            p.events().len(),
            p.header().map(|h| h.revision())
        ),
        (-1, 0, Some(rev)),
        "a progress response carries the current revision"
    );
    // A duplicate watch id is refused with etcd's reason.
    stream
        .watch("other", Some(WatchOptions::new().with_watch_id(3)))
        .await
        .expect("send");
    let dup = stream.message().await.expect("ok").expect("open");
    assert!(dup.created() && dup.canceled());
    assert_eq!(dup.watch_id(), -1);
    assert_eq!(
        dup.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    stream.cancel(3).await.expect("cancel");
    let cancel = stream.message().await.expect("ok").expect("open");
    assert!(cancel.canceled());
    assert_eq!(cancel.watch_id(), 3);
    // After the cancel, writes to k reach nobody; a new watch on the stream
    // proves the stream still works and saw nothing of watch 3 meanwhile.
    put(&mut c, &mut h, "k", "2").await;
    let rev3 = put(&mut c, &mut h, "k", "3").await;
    stream
        .watch(
            "k",
            Some(
                WatchOptions::new()
                    .with_start_revision(rev3)
                    .with_watch_id(4),
            ),
        )
        .await
        .expect("watch");
    let mut by_id = std::collections::BTreeMap::new();
    collect_until(&mut stream, &mut by_id, |m| m.contains_key(&4)).await;
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), vec![4]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let mut h = History::new();
    for i in 0..5 {
        put(&mut c, &mut h, "k", &i.to_string()).await;
    }
    let compact_at = put(&mut c, &mut h, "k", "x").await;
    c.compact(compact_at, None).await.expect("compact");
    let mut stream = c
        .watch("k", Some(WatchOptions::new().with_start_revision(2)))
        .await
        .expect("watch");
    let created = stream.message().await.expect("ok").expect("open");
    assert!(created.created());
    let r = stream.message().await.expect("ok").expect("open");
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), compact_at);
    // From the compaction revision itself the watch works.
    let mut ok = c
        .watch(
            "k",
            Some(WatchOptions::new().with_start_revision(compact_at)),
        )
        .await
        .expect("watch");
    let mut by_id = std::collections::BTreeMap::new();
    collect_until(&mut ok, &mut by_id, |m| {
        m.values().any(|v| events_of(v) >= 1)
    })
    .await;
    let got: Vec<i64> = by_id
        .values()
        .flatten()
        .flat_map(|r| r.events.iter().map(|e| e.rev))
        .collect();
    assert_eq!(got, vec![compact_at]);
}

#[tokio::test]
async fn compaction_under_a_lagging_watcher_never_skips_events_silently() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let mut h = History::new();
    let start = put(&mut c, &mut h, "k", "first").await;
    // The watcher starts in the past, and we compact while it may still be
    // catching up: it must either deliver every event or be cancelled with
    // the compaction revision.
    let mut stream = c
        .watch("k", Some(WatchOptions::new().with_start_revision(start)))
        .await
        .expect("watch");
    for i in 0..200 {
        put(&mut c, &mut h, "k", &i.to_string()).await;
    }
    let last = put(&mut c, &mut h, "k", "last").await;
    c.compact(last - 50, None).await.expect("compact");
    let mut by_id = std::collections::BTreeMap::new();
    collect_until(&mut stream, &mut by_id, |m| {
        m.values()
            .flatten()
            .any(|r| r.compact_revision != 0 || r.events.iter().any(|e| e.rev == last))
    })
    .await;
    let spec = WatchSpec {
        key: b"k".to_vec(),
        start_rev: start,
        ..Default::default()
    };
    for responses in by_id.values() {
        let v = check(&h, &spec, responses);
        assert!(v.is_empty(), "{v:?}");
    }
}

#[tokio::test]
async fn lease_expiry_deletes_its_keys_in_one_revision_and_keepalive_extends() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    // TTL 1 is raised to the minimum (2 s with the default timings).
    let short = c.lease_grant(1, None).await.expect("grant");
    assert_eq!(short.ttl(), 2);
    let kept = c
        .lease_grant(2, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .expect("grant with id");
    assert_eq!(kept.id(), 0x1234);
    let dup = c
        .lease_grant(5, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .expect_err("duplicate id");
    assert!(
        dup.to_string().contains("etcdserver: lease already exists"),
        "{dup}"
    );
    for k in ["e1", "e2", "e3"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(short.id())))
            .await
            .expect("put with lease");
    }
    c.put("kept", "v", Some(PutOptions::new().with_lease(0x1234)))
        .await
        .expect("put with lease");
    let ttl = c
        .lease_time_to_live(short.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert_eq!(ttl.granted_ttl(), 2);
    assert!(ttl.ttl() <= 2 && ttl.ttl() >= 0);
    assert_eq!(ttl.keys().len(), 3);
    let now = c
        .get("e1", None)
        .await
        .expect("get")
        .header()
        .unwrap()
        .revision();
    let mut w = c
        .watch(
            "e",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(now + 1),
            ),
        )
        .await
        .expect("watch");
    let (mut keeper, mut acks) = c.lease_keep_alive(0x1234).await.expect("keepalive");
    // Wait for the expiry: the three deletes arrive in one response, at one
    // revision. Meanwhile the other lease is kept alive.
    let deleted = loop {
        keeper.keep_alive().await.expect("send keepalive");
        let ack = acks.message().await.expect("ok").expect("open");
        assert_eq!((ack.id(), ack.ttl()), (0x1234, 2));
        match tokio::time::timeout(Duration::from_millis(500), w.message()).await {
            Ok(r) => {
                let r = r.expect("ok").expect("open");
                if r.events().is_empty() {
                    continue;
                }
                break r;
            }
            Err(_) => continue,
        }
    };
    let revs: Vec<i64> = deleted
        .events()
        .iter()
        .map(|e| e.kv().unwrap().mod_revision())
        .collect();
    assert_eq!(revs.len(), 3, "all three keys in one response");
    assert!(revs.iter().all(|r| *r == revs[0]), "one revision: {revs:?}");
    assert!(deleted
        .events()
        .iter()
        .all(|e| e.event_type() == EventType::Delete));
    let gone = c.lease_time_to_live(short.id(), None).await.expect("ttl");
    assert_eq!(gone.ttl(), -1, "an unknown lease has TTL -1");
    assert_eq!(c.get("kept", None).await.expect("get").kvs().len(), 1);
    let ids: Vec<i64> = c
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(ids, vec![0x1234]);
    c.lease_revoke(0x1234).await.expect("revoke");
    assert!(c.get("kept", None).await.expect("get").kvs().is_empty());
    let e = c.lease_revoke(0x1234).await.expect_err("revoke twice");
    assert!(
        e.to_string()
            .contains("etcdserver: requested lease not found"),
        "{e}"
    );
    let e = c
        .put("x", "v", Some(PutOptions::new().with_lease(0x999)))
        .await
        .expect_err("unknown lease");
    assert!(
        e.to_string()
            .contains("etcdserver: requested lease not found"),
        "{e}"
    );
}

#[tokio::test]
async fn leases_survive_a_restart_with_their_keys() {
    let mut s = Server::start(&[]);
    let mut c = s.client().await;
    let l = c.lease_grant(600, None).await.expect("grant");
    c.put("leased", "v", Some(PutOptions::new().with_lease(l.id())))
        .await
        .expect("put");
    drop(c);
    s.restart(); // kill -9 and start again
    let mut c = s.client().await;
    let ttl = c
        .lease_time_to_live(l.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert_eq!(ttl.granted_ttl(), 600);
    assert_eq!(ttl.keys(), &[b"leased".to_vec()]);
    c.lease_revoke(l.id()).await.expect("revoke");
    let r = c.get("leased", Some(GetOptions::new())).await.expect("get");
    assert!(r.kvs().is_empty(), "revoke after restart deletes the key");
}

#[tokio::test]
async fn lock_service_gives_the_lock_in_request_order() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let l1 = c.lease_grant(60, None).await.expect("grant").id();
    let l2 = c.lease_grant(60, None).await.expect("grant").id();
    let l3 = c.lease_grant(60, None).await.expect("grant").id();
    let k1 = c
        .lock("L", Some(LockOptions::new().with_lease(l1)))
        .await
        .expect("lock 1")
        .key()
        .to_vec();
    // Two more callers queue up, l2 before l3 (we wait until l2's key exists
    // before l3 asks).
    let mut c2 = s.client().await;
    let waiter2 = tokio::spawn(async move {
        c2.lock("L", Some(LockOptions::new().with_lease(l2)))
            .await
            .map(|r| r.key().to_vec())
    });
    let mut w = c
        .watch(
            "L/",
            Some(WatchOptions::new().with_prefix().with_start_revision(1)),
        )
        .await
        .expect("watch");
    let mut keys_seen = 0;
    while keys_seen < 2 {
        let r = w.message().await.expect("ok").expect("open");
        keys_seen += r
            .events()
            .iter()
            .filter(|e| e.event_type() == EventType::Put)
            .count();
    }
    let mut c3 = s.client().await;
    let waiter3 = tokio::spawn(async move {
        c3.lock("L", Some(LockOptions::new().with_lease(l3)))
            .await
            .map(|r| r.key().to_vec())
    });
    while keys_seen < 3 {
        let r = w.message().await.expect("ok").expect("open");
        keys_seen += r
            .events()
            .iter()
            .filter(|e| e.event_type() == EventType::Put)
            .count();
    }
    assert!(!waiter2.is_finished() && !waiter3.is_finished());
    c.unlock(k1).await.expect("unlock");
    let k2 = waiter2.await.expect("join").expect("lock 2");
    assert_eq!(k2, format!("L/{l2:x}").into_bytes());
    assert!(!waiter3.is_finished(), "the third caller still waits");
    // The holder's lease ending releases the lock too.
    c.lease_revoke(l2).await.expect("revoke");
    let k3 = waiter3.await.expect("join").expect("lock 3");
    assert_eq!(k3, format!("L/{l3:x}").into_bytes());
}

#[tokio::test]
async fn election_service_campaign_proclaim_observe_resign() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let l1 = c.lease_grant(60, None).await.expect("grant").id();
    let l2 = c.lease_grant(60, None).await.expect("grant").id();
    let e = c.leader("E").await.expect_err("no leader yet");
    assert!(e.to_string().contains("election: no leader"), "{e}");
    let won = c.campaign("E", "one", l1).await.expect("campaign");
    let leader = won.leader().expect("leader key").clone();
    let mut obs = c.observe("E").await.expect("observe");
    let first = obs.message().await.expect("ok").expect("open");
    assert_eq!(first.kv().unwrap().value(), b"one");
    c.proclaim(
        "uno",
        Some(etcd_client::ProclaimOptions::new().with_leader(leader.clone())),
    )
    .await
    .expect("proclaim");
    let next = obs.message().await.expect("ok").expect("open");
    assert_eq!(next.kv().unwrap().value(), b"uno");
    assert_eq!(
        c.leader("E").await.expect("leader").kv().unwrap().value(),
        b"uno"
    );
    let mut c2 = s.client().await;
    let second = tokio::spawn(async move {
        c2.campaign("E", "two", l2)
            .await
            .map(|r| r.leader().cloned())
    });
    c.resign(Some(
        etcd_client::ResignOptions::new().with_leader(leader.clone()),
    ))
    .await
    .expect("resign");
    let l2_key = second
        .await
        .expect("join")
        .expect("campaign 2")
        .expect("leader");
    assert_eq!(l2_key.key(), format!("E/{l2:x}").as_bytes());
    let now = obs.message().await.expect("ok").expect("open");
    assert_eq!(now.kv().unwrap().value(), b"two");
    // The old leader key can no longer proclaim.
    let e = c
        .proclaim(
            "stale",
            Some(etcd_client::ProclaimOptions::new().with_leader(leader)),
        )
        .await
        .expect_err("not leader");
    assert!(e.to_string().contains("election: not leader"), "{e}");
}

#[tokio::test]
async fn a_slow_watcher_blocks_nobody_and_is_resumed_without_loss() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let mut h = History::new();
    let start = put(&mut c, &mut h, "k", "start").await + 1;
    let opts = || Some(WatchOptions::new().with_start_revision(start));
    // The slow stream is not read while 2000 writes of 4 KiB happen: its
    // HTTP/2 window and the server's buffer fill up, and the server parks it.
    let mut slow = s.client().await.watch("k", opts()).await.expect("watch");
    let mut fast = c.watch("k", opts()).await.expect("watch");
    let value = "x".repeat(4096);
    let mut by_id = std::collections::BTreeMap::new();
    for i in 0..2000 {
        put(&mut c, &mut h, "k", &format!("{i}{value}")).await;
    }
    let writes = h.changes().len() - 1;
    collect_until(&mut fast, &mut by_id, |m| {
        m.values().map(|v| events_of(v)).sum::<usize>() >= writes
    })
    .await;
    let spec = WatchSpec {
        key: b"k".to_vec(),
        start_rev: start,
        ..Default::default()
    };
    for responses in by_id.values() {
        assert_eq!(check(&h, &spec, responses), vec![], "the fast watcher");
    }
    // Now the slow one reads: everything arrives, in order, no gap.
    let mut slow_seen = std::collections::BTreeMap::new();
    collect_until(&mut slow, &mut slow_seen, |m| {
        m.values().map(|v| events_of(v)).sum::<usize>() >= writes
    })
    .await;
    for responses in slow_seen.values() {
        assert_eq!(check(&h, &spec, responses), vec![], "the slow watcher");
    }
}

#[tokio::test]
async fn progress_notify_watchers_get_periodic_progress() {
    let s = Server::start(&["--experimental-watch-progress-notify-interval", "100ms"]);
    let mut c = s.client().await;
    let mut h = History::new();
    let rev = put(&mut c, &mut h, "p", "1").await;
    let mut w = c
        .watch(
            "p",
            Some(WatchOptions::new().with_progress_notify().with_watch_id(7)),
        )
        .await
        .expect("watch");
    assert!(w.message().await.expect("ok").expect("open").created());
    let r = tokio::time::timeout(Duration::from_secs(30), w.message())
        .await
        .expect("a progress notification")
        .expect("ok")
        .expect("open");
    assert_eq!(
        (
            r.watch_id(),
            r.events().len(),
            r.canceled(),
            r.header().map(|h| h.revision())
        ),
        (7, 0, false, Some(rev))
    );
}
