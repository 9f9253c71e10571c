//! The daemon as an operator meets it: flags, env vars, refusals of foreign
//! data dirs, clean shutdown, structured logs.

mod common;

use std::process::Command;

use common::{Server, BIN};

#[test]
fn unknown_flag_and_positional_argument_are_errors() {
    let o = Command::new(BIN).arg("--bogus-flag=1").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("flag provided but not defined: -bogus-flag")
    );
    let o = Command::new(BIN).arg("stray").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'stray' is not a valid flag"));
}

#[test]
fn refuses_an_etcd_data_dir_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("member/snap")).unwrap();
    std::fs::write(dir.path().join("member/snap/db"), b"bbolt").unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let o = Command::new(BIN)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("etcd data dir") && err.contains("refusing"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("member/snap/db")).unwrap(),
        b"bbolt"
    );
    assert!(!dir.path().join("concord.format").exists());
}

#[test]
fn env_vars_configure_unset_flags_and_conflict_with_set_ones() {
    let mut s = Server::start(&[]);
    s.kill9();
    // ETCD_MAX_TXN_OPS applies when the flag is not given.
    s.envs.push(("ETCD_MAX_TXN_OPS".into(), "1".into()));
    s.spawn();
    let out = s.ctl_stdin(&["txn"], Some("\nput a 1\nput b 2\n\n\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many operations in txn request"));
    // Both set: etcd's fatal conflict error.
    let o = Command::new(BIN)
        .env("ETCD_NAME", "x")
        .args(["--name", "y"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("conflicting environment variable \"ETCD_NAME\""));
}

#[test]
fn sigterm_shuts_down_cleanly_and_data_stays() {
    let mut s = Server::start(&["--log-format", "json"]);
    s.ctl_ok(&["put", "k", "v"]);
    let st = s.terminate();
    assert!(st.success(), "exit status {st:?}");
    s.spawn();
    assert_eq!(s.ctl_ok(&["get", "k", "--print-value-only"]).trim(), "v");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    // A bad data dir makes the process log and exit right away.
    std::fs::write(dir.path().join("stray"), b"x").unwrap();
    let o = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let json_lines: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(json_lines.len() >= 2, "{err}");
    for l in json_lines {
        assert!(
            l.ends_with('}') && l.contains("\"level\"") && l.contains("\"timestamp\""),
            "{l}"
        );
    }
}

/// etcd's YAML config file: the only source when given (flags other than
/// `--config-file` and `ETCD_*` variables are ignored, without conflict).
#[test]
fn a_yaml_config_file_configures_the_member() {
    let mut s = Server::prepare(&[]);
    let file = s.data_dir.with_file_name("etcd.conf.yml");
    let yaml = format!(
        "# etcd.conf.yml\n\
         name: from-yaml\n\
         data-dir: {dir}\n\
         listen-client-urls: {url}\n\
         advertise-client-urls: {url}\n\
         listen-peer-urls: {peer}\n\
         initial-advertise-peer-urls: {peer}\n\
         initial-cluster: from-yaml={peer}\n\
         initial-cluster-state: new\n\
         max-txn-ops: 1\n\
         enable-v2: false\n\
         a-key-etcd-does-not-know: 1\n\
         client-transport-security:\n  client-cert-auth: false\n",
        dir = s.data_dir.display(),
        url = s.url(),
        peer = s.peer_url(),
    );
    std::fs::write(&file, yaml).unwrap();
    // A flag beside --config-file is ignored, as in etcd.
    s.extra_args = vec![
        "--config-file".into(),
        file.display().to_string(),
        "--max-txn-ops".into(),
        "100".into(),
    ];
    s.envs.push(("ETCD_NAME".into(), "from-env".into()));
    s.envs.push(("ETCD_MAX_TXN_OPS".into(), "100".into()));
    s.spawn();
    s.wait_for_log("loaded server configuration");
    s.wait_for_log("unknown key in the config file");
    let list = s.ctl_ok(&["member", "list"]);
    assert!(list.contains(", started, from-yaml, "), "{list}");
    let out = s.ctl_stdin(&["txn"], Some("\nput a 1\nput b 2\n\n\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many operations in txn request"));
    // A file that cannot be read stops the start with the reason.
    let o = Command::new(BIN)
        .args(["--config-file", "/nonexistent/etcd.conf.yml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("cannot read the config file /nonexistent/etcd.conf.yml"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs the binary with `args` (and `env`) on a fresh data dir that must
/// stay absent: returns the exit code and stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = Command::new(BIN)
        .args(["--data-dir", data.to_str().unwrap()])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!data.exists(), "{args:?} wrote {}", data.display());
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_unsupported_flag_is_refused_by_name_before_anything_is_written() {
    let refused = concord::config::refused_flags();
    assert!(refused.len() > 20);
    for (flag, value) in refused {
        let (code, err) = refused_start(&[&format!("--{flag}={value}")], &[]);
        assert_eq!(code, Some(2), "--{flag}={value}: {err}");
        assert!(
            err.contains(&format!("concord does not support --{flag}")),
            "--{flag}={value}: {err}"
        );
    }
    // As an ETCD_* variable and as a config file key too.
    let (code, err) = refused_start(&[], &[("ETCD_QUOTA_BACKEND_BYTES", "16777216")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("concord does not support --quota-backend-bytes"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.yml");
    std::fs::write(&file, "auto-compaction-retention: \"1\"\n").unwrap();
    let (code, err) = refused_start(&["--config-file", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("concord does not support --auto-compaction-retention"),
        "{err}"
    );
    // Bootstrap flags that conflict: etcd's error.
    let (code, err) = refused_start(
        &[
            "--initial-cluster",
            "default=http://localhost:2380",
            "--discovery-srv",
            "example.com",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("multiple discovery or bootstrap flags are set"),
        "{err}"
    );
}

#[test]
fn the_ignored_flags_are_harmless_to_a_running_member() {
    // Every flag on the safe-to-ignore list at once: the member starts,
    // says what it ignores and why, and serves.
    let ignored = concord::config::ignored_flags();
    let args: Vec<String> = ignored
        .iter()
        .map(|(flag, is_bool, _)| {
            if *is_bool {
                format!("--{flag}=true")
            } else {
                format!("--{flag}=1")
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Server::prepare(&args);
    // An ETCD_* variable that names no flag: etcd's warning.
    s.envs.push(("ETCD_NO_SUCH_FLAG".into(), "1".into()));
    s.spawn();
    s.wait_for_log("ignoring --enable-pprof: ");
    s.wait_for_log("unrecognized environment variable ETCD_NO_SUCH_FLAG=1");
    s.ctl_ok(&["put", "k", "v"]);
    assert!(s.ctl_ok(&["get", "k"]).contains('v'));
}
