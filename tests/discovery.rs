//! Bootstrapping by discovery with real components on 127.0.0.1: a
//! 3-member cluster forms through a registry and agrees (3 members on every
//! member, a write visible through every member); a fourth member on the
//! full registry exits with "cluster is full".

mod common;

use common::etcd::Etcd;
use common::Server;

/// Starts `n` members named m0.. with `flags` (the discovery flags), all
/// launched before any is awaited.
fn form(n: usize, flags: &[String]) -> Vec<Server> {
    let mut members: Vec<Server> = (0..n).map(|_| Server::prepare(&[])).collect();
    for (i, m) in members.iter_mut().enumerate() {
        let mut args = vec![
            "--name".to_string(),
            format!("m{i}"),
            "--initial-advertise-peer-urls".to_string(),
            m.peer_url(),
        ];
        args.extend(flags.iter().cloned());
        m.extra_args = args;
        m.launch();
    }
    for m in members.iter_mut() {
        m.wait_ready();
    }
    members
}

/// Every member lists the same 3 members, and a write through one is read
/// through every one.
fn agrees(members: &[Server]) {
    let lists: Vec<String> = members
        .iter()
        .map(|m| m.member_list_when(|l| l.lines().count() == 3))
        .collect();
    let sorted = |l: &str| {
        let mut lines: Vec<String> = l.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    for l in &lists {
        assert_eq!(sorted(l), sorted(&lists[0]), "members disagree: {lists:?}");
        for i in 0..3 {
            assert!(l.contains(&format!(", m{i}, ")), "{l}");
        }
    }
    members[0].ctl_ok(&["put", "formed", "by-discovery"]);
    for m in members {
        let got = m.ctl_ok(&["get", "formed"]);
        assert!(got.contains("by-discovery"), "{got}");
    }
}

/// A member beyond the registry's size exits non-zero, saying why.
fn fourth_is_refused(flags: &[String]) {
    let mut m = Server::prepare(&[]);
    let mut args = vec![
        "--name".to_string(),
        "m3".to_string(),
        "--initial-advertise-peer-urls".to_string(),
        m.peer_url(),
    ];
    args.extend(flags.iter().cloned());
    m.extra_args = args;
    m.launch();
    let line = m.wait_for_log("discovery: cluster is full");
    assert!(line.contains("failed to join discovery cluster"), "{line}");
    assert!(!m.wait_exit().success());
}

#[test]
fn url_protocol_against_a_real_etcd_v2_registry() {
    let registry = Etcd::start(&["--enable-v2"]);
    let token = format!("/v2/keys/_discovery/t{}", common::free_port());
    let (status, body) = registry.http("PUT", &format!("{token}/_config/size"), Some("value=3"));
    assert_eq!(status, 201, "{body}");
    let flags = vec![
        "--discovery".to_string(),
        format!("{}{token}", registry.url()),
    ];
    let mut members = form(3, &flags);
    agrees(&members);
    fourth_is_refused(&flags);
    // The registry holds the three registrations.
    let (_, body) = registry.http("GET", &token, None);
    assert_eq!(body.matches("=http://127.0.0.1:").count(), 3, "{body}");
    // A restart reads its data dir and never contacts the registry.
    drop(registry);
    members[1].restart();
    members[1].wait_for_log("discovery token is ignored since cluster already initialized");
    assert!(members[1]
        .ctl_ok(&["get", "formed"])
        .contains("by-discovery"));
}

#[test]
fn url_protocol_errors_are_etcds() {
    let registry = Etcd::start(&["--enable-v2"]);
    let token = format!("/v2/keys/_discovery/t{}", common::free_port());
    let url = format!("{}{token}", registry.url());
    let start = |flags: Vec<String>| {
        let mut m = Server::prepare(&[]);
        m.extra_args = flags;
        m.launch();
        m
    };
    // No size key yet.
    let mut m = start(vec!["--discovery".into(), url.clone()]);
    m.wait_for_log("failed to join discovery cluster (discovery: size key not found)");
    assert!(!m.wait_exit().success());
    registry.http("PUT", &format!("{token}/_config/size"), Some("value=x"));
    let mut m = start(vec!["--discovery".into(), url.clone()]);
    m.wait_for_log("discovery: size key is bad");
    assert!(!m.wait_exit().success());
}

fn v3_flags(endpoint: &str, token: &str) -> Vec<String> {
    vec![
        "--discovery-endpoints".to_string(),
        endpoint.to_string(),
        "--discovery-token".to_string(),
        token.to_string(),
    ]
}

#[test]
fn v3_discovery_against_a_real_etcd_registry() {
    let registry = Etcd::start(&[]);
    let token = format!("t{}", common::free_port());
    registry.ctl(&["put", &format!("/_etcd/registry/{token}/_config/size"), "3"]);
    let flags = v3_flags(&registry.url(), &token);
    let members = form(3, &flags);
    agrees(&members);
    fourth_is_refused(&flags);
    let keys = registry.ctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("/_etcd/registry/{token}/members/"),
    ]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 3, "{keys}");
}

#[test]
fn v3_discovery_against_a_concord_registry() {
    let registry = Server::start(&[]);
    let token = format!("t{}", common::free_port());
    registry.ctl_ok(&["put", &format!("/_etcd/registry/{token}/_config/size"), "3"]);
    let flags = v3_flags(&registry.url(), &token);
    let members = form(3, &flags);
    agrees(&members);
    fourth_is_refused(&flags);
}

#[test]
fn v3_discovery_authenticates_with_user_and_password() {
    let registry = Etcd::start(&[]);
    registry.ctl(&["user", "add", "root:rootpw"]);
    registry.ctl(&["auth", "enable"]);
    let token = format!("t{}", common::free_port());
    registry.ctl(&[
        "--user",
        "root:rootpw",
        "put",
        &format!("/_etcd/registry/{token}/_config/size"),
        "3",
    ]);
    let mut flags = v3_flags(&registry.url(), &token);
    flags.extend(["--discovery-user", "root", "--discovery-password", "rootpw"].map(String::from));
    let members = form(3, &flags);
    agrees(&members);
    let keys = registry.ctl(&[
        "--user",
        "root:rootpw",
        "get",
        "--prefix",
        "--keys-only",
        &format!("/_etcd/registry/{token}/members/"),
    ]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 3, "{keys}");
}

/// An HTTP proxy for the test: relays each connection to `target` as it
/// comes (etcd's HTTP server takes the absolute request URIs a proxy
/// client sends) and records each connection's first request line.
fn relay_proxy(target: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let log = log.clone();
            std::thread::spawn(move || {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (mut c_in, mut u_out) = match (client.try_clone(), upstream.try_clone()) {
                    (Ok(c), Ok(u)) => (c, u),
                    _ => return,
                };
                let mut buf = [0u8; 4096];
                let Ok(n) = c_in.read(&mut buf) else { return };
                let head = String::from_utf8_lossy(&buf[..n]);
                log.lock()
                    .expect("proxy log")
                    .push(head.lines().next().unwrap_or("").to_string());
                if u_out.write_all(&buf[..n]).is_err() {
                    return;
                }
                let (mut u_in, mut c_out) = (upstream, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_in, &mut c_out);
                });
                let _ = std::io::copy(&mut c_in, &mut u_out);
            });
        }
    });
    (port, seen)
}

#[test]
fn url_protocol_through_the_discovery_proxy() {
    let registry = Etcd::start(&["--enable-v2"]);
    let token = format!("/v2/keys/_discovery/t{}", common::free_port());
    registry.http("PUT", &format!("{token}/_config/size"), Some("value=3"));
    let (proxy, seen) = relay_proxy(registry.port);
    // A registry host only the proxy reaches.
    let url = format!("http://registry.invalid:{}{token}", registry.port);
    let flags = vec![
        "--discovery".to_string(),
        url.clone(),
        "--discovery-proxy".to_string(),
        format!("127.0.0.1:{proxy}"),
    ];
    let members = form(3, &flags);
    agrees(&members);
    let seen = seen.lock().expect("proxy log");
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("{url}/_config/size"))),
        "{seen:?}"
    );
}

#[test]
fn v3_discovery_over_tls_with_a_ca() {
    let certs = tempfile::tempdir().unwrap();
    common::write_ca_signed_certs(certs.path(), 1);
    let file = |f: &str| certs.path().join(f).display().to_string();
    let mut registry = Etcd::start_with(
        "https",
        &[
            "--cert-file",
            &file("m0.pem"),
            "--key-file",
            &file("m0.key"),
        ],
    );
    registry.ctl_args = vec!["--cacert".into(), file("ca.pem")];
    let token = format!("t{}", common::free_port());
    registry.ctl(&["put", &format!("/_etcd/registry/{token}/_config/size"), "3"]);
    // The https endpoint is verified against --discovery-cacert.
    let mut flags = v3_flags(&registry.url(), &token);
    flags.extend(["--discovery-cacert".to_string(), file("ca.pem")]);
    let members = form(3, &flags);
    agrees(&members);
    // Without the CA (system roots) and with another CA, the registry's
    // certificate is refused: TLS is verified, never skipped or dropped.
    let other = tempfile::tempdir().unwrap();
    common::write_ca_signed_certs(other.path(), 0);
    let other_ca = other.path().join("ca.pem").display().to_string();
    for extra in [vec![], vec!["--discovery-cacert".to_string(), other_ca]] {
        let mut m = Server::prepare(&[]);
        let mut args = vec![
            "--name".to_string(),
            "m9".to_string(),
            "--initial-advertise-peer-urls".to_string(),
            m.peer_url(),
        ];
        args.extend(v3_flags(&registry.url(), &token));
        args.extend(extra);
        m.extra_args = args;
        m.launch();
        let l = m.wait_for_log("retry connecting to discovery service");
        assert!(l.contains("invalid peer certificate"), "{l}");
    }
}

#[test]
fn a_member_registered_before_with_a_lost_data_dir_exits_with_etcds_advice() {
    let registry = Etcd::start(&["--enable-v2"]);
    let token = format!("/v2/keys/_discovery/t{}", common::free_port());
    registry.http("PUT", &format!("{token}/_config/size"), Some("value=1"));
    let flags = vec![
        "--discovery".to_string(),
        format!("{}{token}", registry.url()),
    ];
    let mut members = form(1, &flags);
    members[0].kill9();
    std::fs::remove_dir_all(&members[0].data_dir).unwrap();
    members[0].launch();
    members[0].wait_for_log("discovery: found duplicate id");
    members[0].wait_for_log("check data dir if previous bootstrap succeeded");
    assert!(!members[0].wait_exit().success());
}
