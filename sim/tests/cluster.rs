//! The first simulation: three real members on madsim nodes elect a
//! leader, commit writes through the gRPC API, survive the crash of the
//! leader (losing its unpersisted writes) and the isolation of the next
//! one, and end with every acknowledged write on every member and equal
//! HashKV. Deterministic: `MADSIM_TEST_CHECK_DETERMINISM=1` replays it.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::time::Duration;

use concord::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use concord::proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};
use concord_sim::world::{channel, kv, status, World};

const MEMBERS: usize = 3;

async fn pause() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The member that every member reporting a leader agrees leads.
async fn leader() -> usize {
    loop {
        let mut ids = Vec::new();
        let mut leaders = BTreeSet::new();
        for i in 0..MEMBERS {
            if let Some((lead, _, id)) = status(i).await {
                ids.push((i, id));
                if lead != 0 {
                    leaders.insert(lead);
                }
            }
        }
        if leaders.len() == 1 {
            let lead = *leaders.iter().next().expect("one");
            if let Some((i, _)) = ids.iter().find(|(_, id)| *id == lead) {
                return *i;
            }
        }
        pause().await;
    }
}

/// Puts `key` through the members from `first` on until one acknowledges.
async fn put(first: usize, key: String) {
    let mut i = first;
    loop {
        if let Some(mut c) = kv(i % MEMBERS).await {
            let req = PutRequest {
                key: key.clone().into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), c.put(req)).await {
                return;
            }
        }
        i += 1;
        pause().await;
    }
}

/// The keys under `k` as a linearizable read on member `i` sees them.
async fn keys_on(i: usize) -> Option<(BTreeSet<String>, i64)> {
    let mut c = kv(i).await?;
    let req = RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        keys_only: true,
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(3), c.range(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let keys = r
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    Some((keys, r.header.map_or(0, |h| h.revision)))
}

#[tokio::test]
async fn three_members_survive_a_leader_crash_and_a_partition() {
    let w = World::start(MEMBERS);
    let client = w.client.clone();
    let mut acked = BTreeSet::new();

    let first = client.spawn(leader()).await.expect("client");
    for n in 0..20 {
        let key = format!("k{n:03}");
        client.spawn(put(n, key.clone())).await.expect("client");
        acked.insert(key);
    }

    // The leader is killed: what it had not persisted is gone.
    w.crash(first);
    for n in 20..40 {
        let key = format!("k{n:03}");
        client
            .spawn(put(first + 1 + n, key.clone()))
            .await
            .expect("client");
        acked.insert(key);
    }
    w.restart(first);

    // The next leader is cut off the network; the others go on.
    let second = client.spawn(leader()).await.expect("client");
    w.isolate(second);
    for n in 40..60 {
        let key = format!("k{n:03}");
        client
            .spawn(put(second + 1 + n, key.clone()))
            .await
            .expect("client");
        acked.insert(key);
    }
    w.heal(second);

    // Every member converges on every acknowledged write.
    let mut revisions = Vec::new();
    for i in 0..MEMBERS {
        let want = acked.clone();
        let rev = client
            .spawn(async move {
                loop {
                    if let Some((keys, rev)) = keys_on(i).await {
                        if keys == want {
                            return rev;
                        }
                        assert!(
                            keys.is_subset(&want),
                            "member {i} has unknown keys: {keys:?}"
                        );
                    }
                    pause().await;
                }
            })
            .await
            .expect("client");
        revisions.push(rev);
    }
    // Equal state: the same HashKV at the same revision everywhere.
    let at = *revisions.iter().min().expect("revisions");
    let hashes = client
        .spawn(async move {
            let mut out = Vec::new();
            for i in 0..MEMBERS {
                let ch = channel(i).await.expect("connect");
                let r = MaintenanceClient::new(ch)
                    .hash_kv(HashKvRequest { revision: at })
                    .await
                    .expect("hashkv")
                    .into_inner();
                out.push(r.hash);
            }
            out
        })
        .await
        .expect("client");
    tracing::info!(first, second, ?revisions, ?hashes, "converged");
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "HashKV differ: {hashes:?}"
    );
}
