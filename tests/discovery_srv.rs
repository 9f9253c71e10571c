//! DNS SRV discovery with a real DNS server: Debian's dnsmasq serves the
//! SRV and A records of a domain on 127.0.0.1:53, and the members reach it
//! through the system resolver. As root, the test runs itself again inside
//! a private network and mount namespace (`unshare -n -m`) whose
//! /etc/resolv.conf is bind-mounted to point at that dnsmasq; traffic stays
//! on that namespace's loopback. Three members bootstrap from the
//! `_etcd-server._tcp` records and agree; `etcdctl --discovery-srv` finds
//! them through the `_etcd-client._tcp` records.

mod common;

use std::process::{Child, Command, Stdio};

use common::Server;

const DOMAIN: &str = "concord.test";
const INSIDE: &str = "CONCORD_TEST_IN_NETNS";

/// Runs `test` of this binary again inside its own network and mount
/// namespace; false when that is not possible here (not root).
fn in_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if !common::is_root() {
        assert!(
            std::env::var_os("CONCORD_REQUIRE_ROOT_TESTS").is_none(),
            "{test} needs root (unshare -n -m)"
        );
        eprintln!("skipping {test}: it needs root (unshare -n -m)");
        return false;
    }
    let me = std::env::current_exe().expect("test binary");
    let status = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(me)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status()
        .expect("unshare (util-linux)");
    assert!(status.success(), "{test} failed inside its namespace");
    false
}

/// Inside the namespace: loopback up, dnsmasq serving `records` on
/// 127.0.0.1:53, /etc/resolv.conf pointing at it.
struct Dns {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dns {
    fn start(records: &[String]) -> Dns {
        let run = |cmd: &str, args: &[&str]| {
            let ok = Command::new(cmd).args(args).status().map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "{cmd} {args:?}");
        };
        run("ip", &["link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("resolv.conf");
        run(
            "mount",
            &["--bind", resolv.to_str().expect("path"), "/etc/resolv.conf"],
        );
        let pid = dir.path().join("dnsmasq.pid");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--port=53",
                "--user=root",
                // Names of the domain that are not listed do not exist.
                "--local=/concord.test/",
            ])
            .arg(format!("--pid-file={}", pid.display()))
            .args(records)
            .stdout(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base; scripts/install-deps installs it)");
        // Ready once it answers.
        common::eventually("dnsmasq answers", || {
            let o = Command::new("getent")
                .args(["hosts", &format!("m0.{DOMAIN}")])
                .output()
                .map_err(|e| e.to_string())?;
            o.status
                .success()
                .then_some(())
                .ok_or_else(|| "no answer yet".to_string())
        });
        Dns { child, _dir: dir }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three members named m0.. advertising `http://mI.DOMAIN:PEER`, the
/// records that describe them (server and client SRV, A records), and
/// their flags.
fn members(service_suffix: &str) -> (Vec<Server>, Vec<String>) {
    let members: Vec<Server> = (0..3).map(|_| Server::prepare(&[])).collect();
    let mut records = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let host = format!("m{i}.{DOMAIN}");
        records.push(format!("--host-record={host},127.0.0.1"));
        records.push(format!(
            "--srv-host=_etcd-server{service_suffix}._tcp.{DOMAIN},{host},{}",
            m.peer_port
        ));
        records.push(format!(
            "--srv-host=_etcd-client{service_suffix}._tcp.{DOMAIN},{host},{}",
            m.port
        ));
    }
    (members, records)
}

fn launch(members: &mut [Server], extra: &[&str]) {
    for (i, m) in members.iter_mut().enumerate() {
        // The last member advertises its address, not its name: it is
        // matched to its SRV target by address, as in etcd.
        let advertised = if i == 2 {
            format!("http://127.0.0.1:{}", m.peer_port)
        } else {
            format!("http://m{i}.{DOMAIN}:{}", m.peer_port)
        };
        let mut args = vec![
            "--name".to_string(),
            format!("m{i}"),
            "--initial-advertise-peer-urls".to_string(),
            advertised,
            "--discovery-srv".to_string(),
            DOMAIN.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        m.extra_args = args;
        m.launch();
    }
    for m in members.iter_mut() {
        m.wait_ready();
    }
}

fn ctl_by_srv(args: &[&str], srv_name: Option<&str>) -> String {
    let mut cmd = Command::new(common::etcdctl_path());
    cmd.env("ETCDCTL_API", "3")
        .args(["--discovery-srv", DOMAIN]);
    if let Some(n) = srv_name {
        cmd.args(["--discovery-srv-name", n]);
    }
    let o = cmd.args(args).output().expect("etcdctl");
    assert!(
        o.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn three_members_bootstrap_from_dns_srv_records() {
    if !in_namespace("three_members_bootstrap_from_dns_srv_records") {
        return;
    }
    let (mut members, records) = members("");
    let _dns = Dns::start(&records);
    launch(&mut members, &[]);
    for m in &members {
        let list = m.member_list_when(|l| l.lines().count() == 3);
        for i in 0..3 {
            assert!(
                list.contains(&format!(", m{i}, http://m{i}.{DOMAIN}:")),
                "{list}"
            );
        }
    }
    // etcdctl finds the members through the client records.
    ctl_by_srv(&["put", "found", "through-dns"], None);
    for m in &members {
        assert!(m.ctl_ok(&["get", "found"]).contains("through-dns"));
    }
    let list = ctl_by_srv(&["member", "list"], None);
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn srv_name_selects_the_records_and_a_member_not_in_them_exits() {
    if !in_namespace("srv_name_selects_the_records_and_a_member_not_in_them_exits") {
        return;
    }
    let (mut members, records) = members("-c1");
    let _dns = Dns::start(&records);
    launch(&mut members, &["--discovery-srv-name", "c1"]);
    let list = ctl_by_srv(&["member", "list"], Some("c1"));
    assert_eq!(list.lines().count(), 3, "{list}");
    ctl_by_srv(&["put", "k", "v"], Some("c1"));
    // A member the records do not list: etcd's error, and it exits.
    let mut stray = Server::prepare(&[]);
    stray.extra_args = [
        "--name",
        "m9",
        "--initial-advertise-peer-urls",
        &format!("http://m0.{DOMAIN}:1"),
        "--discovery-srv",
        DOMAIN,
        "--discovery-srv-name",
        "c1",
    ]
    .map(String::from)
    .to_vec();
    stray.launch();
    stray.wait_for_log("cannot find local etcd member \"m9\" in SRV records");
    assert!(!stray.wait_exit().success());
}
