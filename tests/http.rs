//! The HTTP/1.1 face of a member, driven by the real curl on the client
//! URL that also serves gRPC: `/version`, `/health` (and its no-leader
//! answer), etcd's 405 and 404.

mod common;

use std::process::Command;

use common::{Cluster, Server};

/// `curl -si`: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-si", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (Debian package curl; scripts/install-deps installs it)");
    let out = String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {out:?}"));
    let body = out
        .split_once("\n\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn version_and_health_share_the_client_port_with_grpc() {
    let s = Server::start(&[]);
    let (status, body) = curl(&[&format!("{}/version", s.url())]);
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}"#);
    let (status, body) = curl(&[&format!("{}/health", s.url())]);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let (status, body) = curl(&[&format!("{}/health?serializable=true", s.url())]);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    // HTTP/2 too (curl's prior knowledge, as a gRPC client speaks).
    let (status, _) = curl(&["--http2-prior-knowledge", &format!("{}/version", s.url())]);
    assert_eq!(status, 200);
    // etcd's answers to other methods and paths.
    let (status, body) = curl(&["-X", "POST", &format!("{}/health", s.url())]);
    assert_eq!((status, body.as_str()), (405, "Method Not Allowed\n"));
    let (status, body) = curl(&[&format!("{}/no/such/path", s.url())]);
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
    // And gRPC on the same port.
    s.ctl_ok(&["put", "k", "v"]);
    assert!(s.ctl_ok(&["get", "k"]).contains('v'));
}

#[test]
fn health_is_false_without_a_leader() {
    let mut c = Cluster::start(3, &[]);
    c.members[1].kill9();
    c.members[2].kill9();
    let url = format!("{}/health", c.members[0].url());
    // Until it notices, a linearizable read that cannot complete within a
    // second fails the check too (RANGE ERROR).
    let body = common::eventually("the lone member has no leader", || {
        let (status, body) = curl(&[&url]);
        (status == 503 && body.contains("RAFT NO LEADER"))
            .then(|| body.clone())
            .ok_or(format!("{status} {body}"))
    });
    assert_eq!(
        body,
        "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
    );
}
