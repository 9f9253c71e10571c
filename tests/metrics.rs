//! `/metrics` as Prometheus reads it, on the client URL and on
//! `--listen-metrics-urls`: etcd's names with values that follow the work
//! done, accepted by the real `promtool check metrics`, and scraped by a
//! real Prometheus server whose query API then answers
//! `etcd_server_has_leader` = 1. Also the standard gRPC health service.

mod common;

use std::process::{Child, Command, Stdio};

use common::{free_port, Server};

/// `curl -s URL`: the body.
fn get(url: &str) -> String {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", url])
        .output()
        .expect("curl (Debian package curl; scripts/install-deps installs it)");
    assert!(o.status.success(), "curl {url} failed: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_follow_the_work_on_both_urls() {
    let metrics_port = free_port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let s = Server::start(&["--listen-metrics-urls", &metrics_url]);
    s.ctl_ok(&["put", "k1", "v"]);
    s.ctl_ok(&["put", "k2", "v"]);
    s.ctl_ok(&["get", "k1"]);
    s.ctl_ok(&["del", "k2"]);
    for base in [s.url(), metrics_url.clone()] {
        let text = get(&format!("{base}/metrics"));
        let v = |series: &str| {
            sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        };
        assert_eq!(v("etcd_server_has_leader"), 1.0);
        assert_eq!(v("etcd_server_is_leader"), 1.0);
        assert_eq!(v("etcd_server_leader_changes_seen_total"), 1.0);
        assert_eq!(v("etcd_mvcc_put_total"), 2.0);
        assert_eq!(v("etcd_mvcc_delete_total"), 1.0);
        assert!(v("etcd_mvcc_range_total") >= 1.0);
        assert_eq!(v("etcd_debugging_mvcc_keys_total"), 1.0);
        assert_eq!(v("etcd_debugging_mvcc_current_revision"), 4.0);
        assert!(v("etcd_disk_wal_fsync_duration_seconds_count") >= 3.0);
        assert!(v("etcd_disk_backend_commit_duration_seconds_count") >= 3.0);
        assert!(v("etcd_mvcc_db_total_size_in_bytes") > 0.0);
        assert!(v("os_fd_used") > 0.0);
        assert!(v("process_resident_memory_bytes") > 0.0);
        let put = "{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
        assert_eq!(v(&format!("grpc_server_started_total{put}")), 2.0);
        assert_eq!(v(&format!("grpc_server_msg_received_total{put}")), 2.0);
        assert_eq!(v(&format!("grpc_server_msg_sent_total{put}")), 2.0);
        assert_eq!(
            v("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}"),
            2.0
        );
        // Registered at zero before any call, as go-grpc-prometheus does.
        assert_eq!(
            v("grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"}"),
            0.0
        );
        // etcd's disk buckets: 1 ms doubling to 8.192 s.
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"}"));
        // Only gRPC handling times need --metrics extensive.
        assert!(!text.contains("grpc_server_handling_seconds"));
    }
    // The metrics listener serves the health probes too, not the API.
    assert_eq!(
        get(&format!("{metrics_url}/health")),
        r#"{"health":"true","reason":""}"#
    );
    assert_eq!(get(&format!("{metrics_url}/readyz")), "ok\n");
    assert_eq!(
        get(&format!("{metrics_url}/version")),
        "404 page not found\n"
    );
}

#[test]
fn a_failed_request_is_counted_with_its_code_and_extensive_adds_handling_times() {
    let s = Server::start(&["--metrics", "extensive"]);
    // Compacting beyond the current revision: OutOfRange.
    s.ctl_err(&["compact", "100"]);
    let text = get(&format!("{}/metrics", s.url()));
    let series = "grpc_server_handled_total{grpc_code=\"OutOfRange\",grpc_method=\"Compact\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    assert!(text.contains("grpc_server_handling_seconds_bucket{grpc_method=\"Compact\""));
}

#[test]
fn an_unknown_metrics_kind_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["--metrics", "verbose"])
        .output()
        .expect("run concord");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-metrics") && err.contains("basic or extensive"),
        "{err}"
    );
}

/// `promtool check metrics` on `text`: its exit code and its findings.
fn promtool(text: &str) -> (i32, Vec<String>) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let findings = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_string)
        .collect();
    (out.status.code().unwrap_or(-1), findings)
}

/// `# TYPE` lines: metric name -> type.
fn types(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// promtool parses the output (exit 0, or 3 for lint findings only), and
/// every finding is one the real etcd's own output gets too: its names
/// are etcd's (`etcd_server_health_success` is a counter without
/// `_total`, ...). Every metric both export has etcd's type.
#[test]
fn promtool_accepts_the_output_as_it_accepts_etcds() {
    let s = Server::start(&[]);
    s.ctl_ok(&["put", "k", "v"]);
    let ours = get(&format!("{}/metrics", s.url()));
    let etcd = common::etcd::Etcd::start(&[]);
    let theirs = get(&format!("{}/metrics", etcd.url()));
    let (code, findings) = promtool(&ours);
    let (etcd_code, etcd_findings) = promtool(&theirs);
    assert!(
        code == 0 || code == 3,
        "promtool could not read the metrics (exit {code}): {findings:?}"
    );
    assert!(etcd_code == 0 || etcd_code == 3, "{etcd_findings:?}");
    let new: Vec<&String> = findings
        .iter()
        .filter(|f| !etcd_findings.contains(f))
        .collect();
    assert!(
        new.is_empty(),
        "promtool findings etcd does not have: {new:?}"
    );
    let (ours, theirs) = (types(&ours), types(&theirs));
    let mut shared = 0;
    for (name, t) in &ours {
        if let Some(etcd_type) = theirs.get(name) {
            assert_eq!(t, etcd_type, "{name}");
            shared += 1;
        }
    }
    assert!(shared >= 45, "only {shared} metrics shared with etcd");
}

/// A Prometheus server, killed when dropped (before its data dir goes).
struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_a_member() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: concord\n    static_configs:\n      - targets: ['{}']\n",
            s.endpoint()
        ),
    )
    .expect("write config");
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; scripts/install-deps installs it)");
    let _prometheus = Prometheus { child, _dir: dir };
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=etcd_server_has_leader");
    let answer = common::eventually("Prometheus has scraped etcd_server_has_leader", || {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "5", &query])
            .output()
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        body.contains("\"result\":[{")
            .then_some(body.clone())
            .ok_or(body)
    });
    let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    let result = &v["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "concord", "{answer}");
    assert_eq!(
        result["metric"]["instance"],
        s.endpoint().as_str(),
        "{answer}"
    );
    assert_eq!(result["value"][1], "1", "{answer}");
}

#[test]
fn peer_traffic_and_connections_are_counted_per_peer() {
    let mut c = common::Cluster::start(3, &[]);
    c.members[0].ctl_ok(&["put", "k", "v"]);
    // (member id, leader id) of each member, in hex.
    let ids: Vec<(String, String)> = c
        .members
        .iter()
        .map(|m| {
            let s = m.ctl_ok(&["endpoint", "status", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_str(&s).expect("JSON");
            let hex = |x: &serde_json::Value| format!("{:x}", x.as_u64().expect("an id"));
            (
                hex(&v[0]["Status"]["header"]["member_id"]),
                hex(&v[0]["Status"]["leader"]),
            )
        })
        .collect();
    // The leader talks to every follower, and hears from each.
    let leader = ids
        .iter()
        .position(|(me, leader)| me == leader)
        .expect("a leader");
    let local = ids[leader].0.clone();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let url = format!("{}/metrics", c.members[leader].url());
    let text = get(&url);
    for &f in &followers {
        let peer = &ids[f].0;
        let active = format!("etcd_network_active_peers{{Local=\"{local}\",Remote=\"{peer}\"}}");
        assert_eq!(sample(&text, &active), Some(1.0), "{text}");
        let sent = format!("etcd_network_peer_sent_bytes_total{{To=\"{peer}\"}}");
        assert!(sample(&text, &sent).unwrap_or(0.0) > 0.0, "{sent}");
        let received = format!("etcd_network_peer_received_bytes_total{{From=\"{peer}\"}}");
        assert!(sample(&text, &received).unwrap_or(0.0) > 0.0, "{received}");
    }
    assert!(sample(&text, "etcd_disk_wal_write_bytes_total").unwrap_or(0.0) > 0.0);
    assert_eq!(sample(&text, "etcd_server_is_learner"), Some(0.0));
    // A follower that dies: its stream is counted as lost, no longer active.
    let dead = followers[1];
    c.members[dead].kill9();
    let gone = &ids[dead].0;
    common::eventually("the leader sees the dead follower's stream end", || {
        let text = get(&url);
        let active = format!("etcd_network_active_peers{{Local=\"{local}\",Remote=\"{gone}\"}}");
        let lost =
            format!("etcd_network_disconnected_peers_total{{Local=\"{local}\",Remote=\"{gone}\"}}");
        (sample(&text, &active) == Some(0.0) && sample(&text, &lost).unwrap_or(0.0) >= 1.0)
            .then_some(())
            .ok_or(text)
    });
}
