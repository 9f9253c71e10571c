//! A host that reaches a member's peer port and knows the cluster's IDs
//! (they are in every client response header) sends forged raft messages:
//! a heartbeat committing far beyond the member's log (an assertion in the
//! raft core without validation) and a proposal whose entry does not
//! decode (every member would stop applying it). The member refuses both,
//! counts them, and the cluster keeps serving.

mod common;

use common::{eventually, Cluster};
use concord::proto::concordpb::peer_client::PeerClient;
use concord::proto::concordpb::{MessageType, RaftEntry, RaftMessage};

#[tokio::test]
async fn forged_peer_messages_are_refused_and_the_cluster_keeps_serving() {
    let c = Cluster::start(3, &[]);
    let target = &c.members[0];
    let mut client = target.client().await;
    let list = client.member_list().await.expect("member list");
    let header = list.header().expect("header");
    let (cluster_id, local, term) = (header.cluster_id(), header.member_id(), header.raft_term());
    let other = list
        .members()
        .iter()
        .map(|m| m.id())
        .find(|&id| id != local)
        .expect("another member");
    let forged = vec![
        RaftMessage {
            r#type: MessageType::MsgHeartbeat as i32,
            from: other,
            to: local,
            term,
            commit: 1 << 40,
            ..Default::default()
        },
        RaftMessage {
            r#type: MessageType::MsgProp as i32,
            from: other,
            to: local,
            entries: vec![RaftEntry {
                data: b"\xff\xff not a request".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        },
    ];
    let mut peer = PeerClient::connect(target.peer_url())
        .await
        .expect("peer port");
    let mut req = tonic::Request::new(tokio_stream::iter(forged));
    let md = req.metadata_mut();
    md.insert(
        "x-concord-cluster-id",
        format!("{cluster_id:x}").parse().expect("ascii"),
    );
    md.insert(
        "x-concord-member-id",
        format!("{other:x}").parse().expect("ascii"),
    );
    peer.stream(req).await.expect("the stream is taken");
    // Both refused and counted as received failures from the forged sender.
    let metric = format!("etcd_network_peer_received_failures_total{{From=\"{other:x}\"}}");
    let metrics_url = format!("{}/metrics", target.url());
    eventually("both forged messages are counted", || {
        let body = std::process::Command::new("curl")
            .args(["-s", &metrics_url])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| e.to_string())?;
        match body
            .lines()
            .find(|l| l.starts_with(&metric))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
        {
            Some(n) if n >= 2.0 => Ok(()),
            _ => Err(body
                .lines()
                .filter(|l| l.contains("peer_received_failures"))
                .collect::<Vec<_>>()
                .join("\n")),
        }
    });
    // The cluster still serves, through the member that was attacked.
    assert_eq!(target.ctl_ok(&["put", "k", "v"]).trim(), "OK");
    for m in &c.members {
        assert_eq!(m.ctl_ok(&["get", "k", "--print-value-only"]).trim(), "v");
    }
}
