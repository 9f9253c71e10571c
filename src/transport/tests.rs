//! Transports and peer servers on real 127.0.0.1 ports, in one process.
//!
//! Synchronisation is always on an event (a mailbox item, a peer status);
//! `within` only turns a hang into a failure.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::proto::concordpb::peer_client::PeerClient;
use crate::proto::concordpb::RaftMessage;
use crate::raft::{ConfState, Snapshot, SnapshotMeta};

const CLUSTER: u64 = 0xc1;
const MAILBOX: usize = 1 << 16;

/// Logs to the test output, filtered by `RUST_LOG` (e.g. `concord=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Fails the test if `fut` hangs; never a synchronisation device.
async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test timed out waiting for an event")
}

/// A peer listener serving `peer_service` until `stop` fires.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(
        listener: TcpListener,
        id: u64,
        cluster: u64,
        inbound: mpsc::Sender<Inbound>,
    ) -> Server {
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(peer_service(id, cluster, inbound))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                panic!("peer server {id:x} failed: {e}");
            }
        });
        Server {
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting and waits until the server is gone (its streams end
    /// once the member's mailbox is closed).
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(&mut self.task).await.expect("server task panicked");
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A member: a transport and a server sharing one mailbox, as the actor will.
struct Node {
    id: u64,
    addr: SocketAddr,
    transport: Transport,
    mailbox: mpsc::Receiver<Inbound>,
    server: Server,
}

impl Node {
    async fn start(id: u64) -> Node {
        init_logs();
        let listener = listener().await;
        let addr = listener.local_addr().expect("local addr");
        let (tx, mailbox) = mpsc::channel(MAILBOX);
        let server = Server::start(listener, id, CLUSTER, tx.clone()).await;
        Node {
            id,
            addr,
            transport: Transport::new(id, CLUSTER, tx),
            mailbox,
            server,
        }
    }

    fn connect_to(&self, others: &[&Node]) {
        for o in others {
            self.transport
                .add_peer(o.id, vec![url(o.addr)])
                .expect("add_peer");
        }
    }
}

fn app(from: u64, to: u64, index: u64) -> Message {
    Message {
        index,
        term: 1,
        entries: vec![crate::raft::Entry::new(
            1,
            index,
            format!("e{index}").into_bytes(),
        )],
        ..Message::new(MessageKind::MsgApp, from, to)
    }
}

/// The next raft message in `mailbox`, skipping reports.
async fn next_message(mailbox: &mut mpsc::Receiver<Inbound>) -> Message {
    loop {
        match within(mailbox.recv()).await.expect("mailbox closed") {
            Inbound::Message(m) => return m,
            other => tracing::debug!(?other, "skipping report"),
        }
    }
}

/// Waits for `want` in `mailbox`, skipping everything else.
async fn wait_for_report(mailbox: &mut mpsc::Receiver<Inbound>, want: Inbound) {
    loop {
        if within(mailbox.recv()).await.expect("mailbox closed") == want {
            return;
        }
    }
}

/// Discards what is in `mailbox` now (reports of an earlier phase).
fn drain(mailbox: &mut mpsc::Receiver<Inbound>) {
    while mailbox.try_recv().is_ok() {}
}

async fn wait_status(t: &Transport, peer: u64, want: PeerStatus) {
    let mut status = t.peer_status(peer).expect("known peer");
    within(status.wait_for(|s| *s == want))
        .await
        .expect("peer tasks ended");
}

#[tokio::test]
async fn three_members_exchange_messages_in_order() {
    const COUNT: u64 = 300;
    let mut nodes = vec![
        Node::start(1).await,
        Node::start(2).await,
        Node::start(3).await,
    ];
    for i in 0..nodes.len() {
        let others: Vec<&Node> = nodes.iter().filter(|n| n.id != nodes[i].id).collect();
        nodes[i].connect_to(&others);
    }
    // Interleave destinations so per-peer order is what is tested.
    for index in 1..=COUNT {
        for n in &nodes {
            let msgs = nodes
                .iter()
                .filter(|o| o.id != n.id)
                .map(|o| app(n.id, o.id, index))
                .collect();
            n.transport.send(msgs);
        }
    }
    for n in &mut nodes {
        let mut next_index = std::collections::BTreeMap::from([(1u64, 1u64), (2, 1), (3, 1)]);
        for _ in 0..2 * COUNT {
            let m = next_message(&mut n.mailbox).await;
            assert_eq!(m.to, n.id, "message for {} delivered to {}", m.to, n.id);
            let want = next_index.get_mut(&m.from).expect("known sender");
            assert_eq!(
                m.index, *want,
                "{}->{}: got index {}, want {}",
                m.from, m.to, m.index, *want
            );
            assert_eq!(m, app(m.from, n.id, *want));
            *want += 1;
        }
    }
    for n in nodes {
        n.transport.stop();
        drop(n.mailbox);
        n.server.shutdown().await;
    }
}

#[tokio::test]
async fn down_peer_is_unreachable_and_reconnects() {
    let mut a = Node::start(1).await;
    // Reserve a port for b, then leave it closed.
    let b_addr = listener().await.local_addr().expect("local addr");
    a.transport
        .add_peer(2, vec![url(b_addr)])
        .expect("add_peer");

    // Down: messages are reported unreachable, a snapshot fails.
    a.transport.send(vec![app(1, 2, 1)]);
    wait_for_report(&mut a.mailbox, Inbound::Unreachable(2)).await;
    a.transport.send(vec![msg_snap(1, 2, 1000)]);
    wait_for_report(&mut a.mailbox, Inbound::SnapshotStatus { to: 2, ok: false }).await;

    // Up: the stream reconnects and messages flow.
    let (b_tx, mut b_mailbox) = mpsc::channel(MAILBOX);
    let b_listener = TcpListener::bind(b_addr).await.expect("rebind b's port");
    let b_server = Server::start(b_listener, 2, CLUSTER, b_tx).await;
    wait_status(&a.transport, 2, PeerStatus::Connected).await;
    a.transport.send((1..=10).map(|i| app(1, 2, i)).collect());
    for i in 1..=10 {
        assert_eq!(next_message(&mut b_mailbox).await, app(1, 2, i));
    }

    // b stops: the stream breaks, a reports it and backs off. (a is
    // connected, so every report so far is from the down phase.)
    drain(&mut a.mailbox);
    drop(b_mailbox);
    b_server.shutdown().await;
    wait_for_report(&mut a.mailbox, Inbound::Unreachable(2)).await;

    // b restarts on the same port: messages flow again.
    let (b_tx, mut b_mailbox) = mpsc::channel(MAILBOX);
    let b_listener = TcpListener::bind(b_addr).await.expect("rebind b's port");
    let b_server = Server::start(b_listener, 2, CLUSTER, b_tx).await;
    wait_status(&a.transport, 2, PeerStatus::Connected).await;
    a.transport.send(vec![app(1, 2, 11)]);
    assert_eq!(next_message(&mut b_mailbox).await, app(1, 2, 11));

    a.transport.stop();
    drop(b_mailbox);
    b_server.shutdown().await;
    drop(a.mailbox);
    a.server.shutdown().await;
}

fn msg_snap(from: u64, to: u64, data_bytes: usize) -> Message {
    Message {
        term: 2,
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                index: 1000,
                term: 2,
                conf_state: ConfState::from_voters([1, 2, 3]),
            },
            data: (0..data_bytes).map(|i| (i * 7 % 256) as u8).collect(),
        }),
        ..Message::new(MessageKind::MsgSnap, from, to)
    }
}

#[tokio::test]
async fn multi_mib_snapshot_arrives_whole() {
    let mut a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.connect_to(&[&b]);
    let snap = msg_snap(1, 2, 5 * SNAPSHOT_CHUNK_BYTES_MAX + 12345);
    // A message before and after: the snapshot does not take the stream.
    a.transport
        .send(vec![app(1, 2, 1), snap.clone(), app(1, 2, 2)]);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_message(&mut b.mailbox).await);
    }
    let apps: Vec<&Message> = got
        .iter()
        .filter(|m| m.kind == MessageKind::MsgApp)
        .collect();
    assert_eq!(apps, vec![&app(1, 2, 1), &app(1, 2, 2)]);
    let snaps: Vec<&Message> = got
        .iter()
        .filter(|m| m.kind == MessageKind::MsgSnap)
        .collect();
    assert_eq!(snaps.len(), 1);
    assert!(
        snaps[0] == &snap,
        "snapshot arrived altered ({} data bytes)",
        snaps[0].snapshot.as_ref().map_or(0, |s| s.data.len())
    );
    wait_for_report(&mut a.mailbox, Inbound::SnapshotStatus { to: 2, ok: true }).await;

    for n in [a, b] {
        n.transport.stop();
        drop(n.mailbox);
        n.server.shutdown().await;
    }
}

#[tokio::test]
async fn another_cluster_is_rejected() {
    let mut b = Node::start(2).await;
    // A raw client with the wrong cluster ID: PERMISSION_DENIED, on both RPCs.
    let mut client = PeerClient::connect(url(b.addr)).await.expect("connect");
    let msgs = tokio_stream::iter(vec![codec::encode(app(1, 2, 1))]);
    let got = client
        .stream(net::request(msgs, CLUSTER + 1, 1))
        .await
        .map_err(|s| s.code());
    assert_eq!(got.err(), Some(tonic::Code::PermissionDenied));
    let chunks = tokio_stream::iter(snapshot::chunks(msg_snap(1, 2, 10)));
    let got = client
        .snapshot(net::request(chunks, CLUSTER + 1, 1))
        .await
        .map_err(|s| s.code());
    assert_eq!(got.err(), Some(tonic::Code::PermissionDenied));

    // A transport of another cluster: the stream is refused, reported
    // unreachable, and nothing reaches b.
    let (a_tx, mut a_mailbox) = mpsc::channel(MAILBOX);
    let a = Transport::new(1, CLUSTER + 1, a_tx);
    a.add_peer(2, vec![url(b.addr)]).expect("add_peer");
    a.send(vec![app(1, 2, 1)]);
    wait_for_report(&mut a_mailbox, Inbound::Unreachable(2)).await;
    assert!(
        b.mailbox.try_recv().is_err(),
        "a message of another cluster was delivered"
    );

    a.stop();
    drop(b.mailbox);
    b.server.shutdown().await;
}

#[tokio::test]
async fn misaddressed_and_forged_messages_are_dropped() {
    let mut b = Node::start(2).await;
    let mut client = PeerClient::connect(url(b.addr)).await.expect("connect");
    let msgs = vec![
        codec::encode(app(1, 9, 1)), // not for b
        codec::encode(app(3, 2, 2)), // from 3 on 1's stream
        RaftMessage {
            r#type: 999, // not a message kind
            ..codec::encode(app(1, 2, 3))
        },
        peer::keepalive(), // skipped silently
        codec::encode(app(1, 2, 4)),
    ];
    let stream = tokio_stream::iter(msgs);
    within(client.stream(net::request(stream, CLUSTER, 1)))
        .await
        .expect("stream accepted");
    // Order is kept, so the only delivered message proves the others dropped.
    assert_eq!(next_message(&mut b.mailbox).await, app(1, 2, 4));
    assert!(b.mailbox.try_recv().is_err());
    drop(b.mailbox);
    b.server.shutdown().await;
}

#[tokio::test]
async fn full_queue_drops_and_reports() {
    init_logs();
    let closed = listener().await.local_addr().expect("local addr");
    let (tx, mut mailbox) = mpsc::channel(MAILBOX);
    let t = Transport::new(1, CLUSTER, tx);
    t.add_peer(2, vec![url(closed)]).expect("add_peer");
    // The peer task has not run yet (current-thread runtime, no await), so
    // the queue holds exactly PEER_QUEUE_MESSAGES_MAX; the rest is dropped.
    let n = PEER_QUEUE_MESSAGES_MAX as u64 + 10;
    t.send((1..=n).map(|i| app(1, 2, i)).collect());
    assert_eq!(mailbox.try_recv().ok(), Some(Inbound::Unreachable(2)));
    assert!(
        mailbox.try_recv().is_err(),
        "one report per send call and peer"
    );
    t.stop();
}

#[tokio::test]
async fn stop_ends_every_task() {
    let mut b = Node::start(2).await;
    let mut c = Node::start(3).await;
    let (a_tx, mut a_reports) = mpsc::channel(MAILBOX);
    let a = Transport::new(1, CLUSTER, a_tx);
    a.connect_to_nodes(&[&b, &c]);
    a.send(vec![app(1, 2, 1), app(1, 3, 1)]);
    assert_eq!(next_message(&mut b.mailbox).await, app(1, 2, 1));
    assert_eq!(next_message(&mut c.mailbox).await, app(1, 3, 1));

    a.stop();
    assert_eq!(a.peers(), Vec::<u64>::new());
    assert_eq!(
        a.add_peer(2, vec![url(b.addr)]),
        Err(TransportError::Stopped)
    );
    a.send(vec![app(1, 2, 2)]);
    drop(a);
    // Every task held a clone of the mailbox sender: all gone = all ended.
    while let Some(report) = within(a_reports.recv()).await {
        tracing::debug!(?report, "report during stop");
    }
    for n in [b, c] {
        n.transport.stop();
        drop(n.mailbox);
        n.server.shutdown().await;
    }
}

impl Transport {
    fn connect_to_nodes(&self, nodes: &[&Node]) {
        for n in nodes {
            self.add_peer(n.id, vec![url(n.addr)]).expect("add_peer");
        }
    }
}

#[tokio::test]
async fn urls_are_tried_in_turn_and_can_be_updated() {
    let mut b = Node::start(2).await;
    let closed = url(listener().await.local_addr().expect("local addr"));
    let (a_tx, mut a_mailbox) = mpsc::channel(MAILBOX);
    let a = Transport::new(1, CLUSTER, a_tx);

    // A dead URL first: the next attempt takes the live one.
    a.add_peer(2, vec![closed.clone(), url(b.addr)])
        .expect("add_peer");
    wait_status(&a, 2, PeerStatus::Connected).await;
    a.send(vec![app(1, 2, 1)]);
    assert_eq!(next_message(&mut b.mailbox).await, app(1, 2, 1));

    // Moved to a dead URL: failures are reported (a was connected, so the
    // reports so far are from the first attempt).
    drain(&mut a_mailbox);
    a.update_peer(2, vec![closed]).expect("update_peer");
    wait_for_report(&mut a_mailbox, Inbound::Unreachable(2)).await;
    assert_ne!(
        *a.peer_status(2).expect("known").borrow(),
        PeerStatus::Connected
    );
    // Moved back: the stream reconnects and messages flow.
    a.update_peer(2, vec![url(b.addr)]).expect("update_peer");
    wait_status(&a, 2, PeerStatus::Connected).await;
    a.send(vec![app(1, 2, 2)]);
    assert_eq!(next_message(&mut b.mailbox).await, app(1, 2, 2));

    a.stop();
    drop(b.mailbox);
    b.server.shutdown().await;
}

#[tokio::test]
async fn peer_management_errors() {
    init_logs();
    let (tx, _mailbox) = mpsc::channel(MAILBOX);
    let t = Transport::new(1, CLUSTER, tx);
    let u = || vec!["http://127.0.0.1:1".to_string()];
    assert_eq!(t.add_peer(1, u()), Err(TransportError::LocalPeer(1)));
    assert_eq!(t.add_peer(2, vec![]), Err(TransportError::NoUrls(2)));
    assert!(matches!(
        t.add_peer(2, vec!["https://127.0.0.1:1".into()]),
        Err(TransportError::InvalidUrl { .. })
    ));
    assert_eq!(t.add_peer(2, u()), Ok(()));
    assert_eq!(t.add_peer(2, u()), Err(TransportError::PeerExists(2)));
    assert_eq!(t.update_peer(3, u()), Err(TransportError::UnknownPeer(3)));
    assert_eq!(t.update_peer(2, u()), Ok(()));
    assert_eq!(t.peers(), vec![2]);
    assert_eq!(t.remove_peer(2), Ok(()));
    assert_eq!(t.remove_peer(2), Err(TransportError::UnknownPeer(2)));
    t.stop();
}
