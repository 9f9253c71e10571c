//! etcd's initial corruption check (`--experimental-initial-corrupt-check`)
//! between real members: a member whose data differ from its peers' at the
//! same revision refuses to start; one that agrees starts.

mod common;

use common::Cluster;

const CHECK: &str = "--experimental-initial-corrupt-check";

fn rename_all(c: &Cluster, suffix: &str) {
    for m in &c.members {
        let mut to = m.data_dir.clone().into_os_string();
        to.push(suffix);
        std::fs::rename(&m.data_dir, to).expect("move the data dir aside");
    }
}

#[test]
fn a_member_whose_data_differ_from_its_peers_refuses_to_start() {
    let mut c = Cluster::start(3, &[CHECK]);
    c.members[0].ctl_ok(&["put", "a", "1"]);
    for m in &c.members {
        common::eventually("the put is applied", || {
            let out = m.ctl_ok(&["get", "a", "--consistency=s"]);
            out.contains('1').then_some(()).ok_or(out)
        });
    }
    // A restarted member that agrees with its peers passes the check.
    c.members[0].restart();
    c.members[0].wait_for_log("initial corruption checking passed; no corruption");
    for m in c.members.iter_mut() {
        m.kill9();
    }
    // The same members (same URLs and token, so the same IDs) with other
    // data at the same revision: the planted corruption.
    rename_all(&c, ".first");
    for m in c.members.iter_mut() {
        m.launch();
    }
    for m in c.members.iter_mut() {
        m.wait_ready();
    }
    c.members[0].ctl_ok(&["put", "a", "2"]);
    let second = c.members[0].data_dir.with_extension("second");
    for m in c.members.iter_mut() {
        m.kill9();
    }
    std::fs::rename(&c.members[0].data_dir, &second).expect("keep member 0's second data");
    for m in &c.members[1..] {
        std::fs::remove_dir_all(&m.data_dir).expect("drop the second data");
        let mut first = m.data_dir.clone().into_os_string();
        first.push(".first");
        std::fs::rename(first, &m.data_dir).expect("restore the first data");
    }
    std::fs::rename(&second, &c.members[0].data_dir).expect("member 0 gets the second data");
    // Its peers first (each also checks, and member 0 is down): they agree.
    for m in c.members[1..].iter_mut() {
        m.launch();
    }
    for m in c.members[1..].iter_mut() {
        m.wait_ready();
    }
    c.members[0].launch();
    let line = c.members[0].wait_for_log("found data inconsistency with peers");
    assert!(line.contains("concord stopped with an error"), "{line}");
    let status = c.members[0].wait_exit();
    assert!(!status.success());
    let out = c.members[1].ctl_ok(&["get", "a"]);
    assert!(out.contains('1'), "{out}");
}
