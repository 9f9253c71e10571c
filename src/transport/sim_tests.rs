//! The transport under madsim: members on simulated nodes and network, a
//! killed and restarted peer, a snapshot. Run with `cargo sim -p concord
//! --lib transport` once the crate builds under `--cfg madsim`.
//!
//! Synchronisation is on events only; `within` turns a hang into a failure
//! (simulated time, so it costs nothing).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::madsim::runtime::Handle;
use tokio::sync::mpsc;

use super::*;
use crate::raft::{ConfState, Snapshot, SnapshotMeta};

const CLUSTER: u64 = 0xc1;
const MAILBOX: usize = 1 << 12;
const PEER_PORT: u16 = 2380;

/// Logs to the test output, filtered by `RUST_LOG` (e.g. `concord=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), fut)
        .await
        .expect("simulation timed out waiting for an event")
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn app(from: u64, to: u64, index: u64) -> Message {
    Message {
        index,
        term: 1,
        entries: vec![crate::raft::Entry::new(1, index, vec![index as u8; 16])],
        ..Message::new(MessageKind::MsgApp, from, to)
    }
}

async fn next_message(mailbox: &mut mpsc::Receiver<Inbound>) -> Message {
    loop {
        if let Inbound::Message(m) = within(mailbox.recv()).await.expect("mailbox closed") {
            return m;
        }
    }
}

async fn wait_for_report(mailbox: &mut mpsc::Receiver<Inbound>, want: Inbound) {
    while within(mailbox.recv()).await.expect("mailbox closed") != want {}
}

#[tokio::test]
async fn sim_messages_reconnect_and_snapshot() {
    init_logs();
    let handle = Handle::current();
    // Member 2 serves its peer port; each (re)start hands its mailbox here.
    let (mailboxes_tx, mut mailboxes) = mpsc::unbounded_channel::<mpsc::Receiver<Inbound>>();
    let b = handle
        .create_node()
        .name("member-2")
        .ip(ip(2))
        .init(move || {
            let mailboxes_tx = mailboxes_tx.clone();
            async move {
                let (tx, rx) = mpsc::channel(MAILBOX);
                let _ = mailboxes_tx.send(rx);
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PEER_PORT);
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(peer_service(2, CLUSTER, tx))
                    .serve(addr)
                    .await
                {
                    panic!("peer server failed: {e}");
                }
            }
        })
        .build();
    let mut b_mailbox = within(mailboxes.recv()).await.expect("b started");

    // Member 1 runs only the transport (its tasks live on its node).
    let a = handle.create_node().name("member-1").ip(ip(1)).build();
    let (a_tx, mut a_mailbox) = mpsc::channel(MAILBOX);
    let t = a
        .spawn(async move {
            let t = Transport::new(1, CLUSTER, a_tx);
            t.add_peer(2, vec![format!("http://{}:{PEER_PORT}", ip(2))])
                .map(|()| t)
        })
        .await
        .expect("spawn on member-1")
        .expect("add_peer");

    t.send((1..=100).map(|i| app(1, 2, i)).collect());
    for i in 1..=100 {
        assert_eq!(next_message(&mut b_mailbox).await, app(1, 2, i));
    }

    // A snapshot of several chunks arrives whole.
    let snap = Message {
        term: 1,
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                index: 100,
                term: 1,
                conf_state: ConfState::from_voters([1, 2]),
            },
            data: (0..3 * SNAPSHOT_CHUNK_BYTES_MAX + 7)
                .map(|i| (i % 253) as u8)
                .collect(),
        }),
        ..Message::new(MessageKind::MsgSnap, 1, 2)
    };
    t.send(vec![snap.clone()]);
    assert!(
        next_message(&mut b_mailbox).await == snap,
        "snapshot altered"
    );
    wait_for_report(&mut a_mailbox, Inbound::SnapshotStatus { to: 2, ok: true }).await;

    // Member 2 dies: the message in flight is lost; the stream's keep-alive
    // finds the dead peer and it is reported.
    handle.kill(b.id());
    drop(b_mailbox);
    t.send(vec![app(1, 2, 101)]);
    wait_for_report(&mut a_mailbox, Inbound::Unreachable(2)).await;

    // It restarts: the stream reconnects (back-off in simulated time).
    handle.restart(b.id());
    let mut b_mailbox = within(mailboxes.recv()).await.expect("b restarted");
    let mut status = t.peer_status(2).expect("known peer");
    within(status.wait_for(|s| *s == PeerStatus::Connected))
        .await
        .expect("peer tasks alive");
    t.send(vec![app(1, 2, 102)]);
    assert_eq!(next_message(&mut b_mailbox).await, app(1, 2, 102));
    t.stop();
}
