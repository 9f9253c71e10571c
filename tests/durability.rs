//! Every acknowledged write survives `kill -9`, and revisions continue after
//! the restart: concurrent writers, a SIGKILL at a moment set by the number
//! of acknowledgements so far, restart on the same data dir, then every
//! acknowledged write is read back at its revision.

mod common;

use std::sync::{Arc, Mutex};

use common::Server;
use etcd_client::Client;
use tokio::sync::watch;

const WRITERS: usize = 16;

/// Runs writers until the server dies; returns every acknowledged
/// (key, value, revision), after `kill_after` acks have triggered the kill.
async fn load_until_killed(
    s: &mut Server,
    round: usize,
    kill_after: usize,
) -> Vec<(String, String, i64)> {
    let acked: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c: Client = s.client().await;
        let acked = acked.clone();
        let count_tx = count_tx.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let key = format!("r{round}/w{w}/{n}");
                let value = format!("v{n}");
                match c.put(key.clone(), value.clone(), None).await {
                    Ok(r) => {
                        let rev = r.header().expect("header").revision();
                        let mut a = acked.lock().expect("lock");
                        a.push((key, value, rev));
                        count_tx.send_replace(a.len());
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    count_rx
        .wait_for(|n| *n >= kill_after)
        .await
        .expect("writers alive");
    s.kill9();
    for t in tasks {
        t.await.expect("writer task");
    }
    let a = acked.lock().expect("lock").clone();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    let mut s = Server::start(&[]);
    let mut all: Vec<(String, String, i64)> = Vec::new();
    for (round, kill_after) in [(0, 300), (1, 1), (2, 2000)] {
        let acked = load_until_killed(&mut s, round, kill_after).await;
        assert!(acked.len() >= kill_after);
        all.extend(acked);
        s.spawn();
        let mut c = s.client().await;
        for (key, value, rev) in &all {
            let r = c.get(key.as_str(), None).await.expect("get after restart");
            let kv = r
                .kvs()
                .first()
                .unwrap_or_else(|| panic!("acknowledged write {key} at {rev} lost"));
            assert_eq!(
                (kv.value_str().unwrap(), kv.mod_revision()),
                (value.as_str(), *rev),
                "{key}"
            );
        }
        let max_acked = all.iter().map(|(_, _, r)| *r).max().unwrap_or(0);
        let next = c
            .put("after-restart", "x", None)
            .await
            .expect("put after restart");
        assert!(
            next.header().unwrap().revision() > max_acked,
            "revision went back: {} after {max_acked}",
            next.header().unwrap().revision()
        );
    }
}
