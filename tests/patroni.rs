//! Patroni (Debian `patroni`, its `etcd3` store, which speaks only the JSON
//! gateway) running a PostgreSQL primary and a streaming replica with a
//! concord member as its store; the primary's node is killed and Patroni
//! promotes the replica, which then takes writes and has the primary's
//! data. The most common high-availability setup built on etcd.
//!
//! PostgreSQL refuses to run as root: as root, Patroni runs as the
//! `postgres` user (created by the postgresql package).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{free_port, Server};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const SCOPE: &str = "concord-ha";

/// `program args`, as the postgres user when running as root.
fn as_postgres(program: &str) -> Command {
    if common::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// One Patroni node: its process, ports and directory.
struct Node {
    name: String,
    child: Option<Child>,
    rest_port: u16,
    pg_port: u16,
    dir: PathBuf,
}

impl Node {
    fn start(name: &str, dir: &Path, store_port: u16) -> Node {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let (rest_port, pg_port) = (free_port(), free_port());
        let config = format!(
            "scope: {SCOPE}
name: {name}
log:
  level: INFO
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
etcd3:
  hosts: 127.0.0.1:{store_port}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
  initdb:
    - encoding: UTF8
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {dir}/data
  bin_dir: {BIN_DIR}
  pgpass: {dir}/pgpass
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: pg-pass
  parameters:
    unix_socket_directories: '{dir}'
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 md5
",
            dir = dir.display()
        );
        let config_path = dir.join("patroni.yml");
        std::fs::write(&config_path, config).expect("write the Patroni config");
        chown_postgres(&dir);
        let log = std::fs::File::create(dir.join("patroni.log")).expect("log file");
        let child = as_postgres("patroni")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("patroni (Debian packages patroni and postgresql; scripts/install-deps installs them)");
        Node {
            name: name.to_string(),
            child: Some(child),
            rest_port,
            pg_port,
            dir,
        }
    }

    /// The REST API's status for `path` (`/primary`, `/replica`).
    fn rest(&self, path: &str) -> u16 {
        let o = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(format!("http://127.0.0.1:{}{path}", self.rest_port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).parse().unwrap_or(0)
    }

    /// `psql -c sql` on this node: its output, or the error.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let o = Command::new(format!("{BIN_DIR}/psql"))
            .args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-tAc", sql])
            .env("PGPASSWORD", "pg-pass")
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    /// Kills the node: Patroni and its PostgreSQL, at once (SIGKILL).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // As root, the child is runuser: kill what it runs too.
            let _ = Command::new("pkill")
                .args([
                    "-9",
                    "-f",
                    &format!("patroni {}", self.dir.join("patroni.yml").display()),
                ])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) {
            if let Some(pid) = pid.lines().next() {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("patroni.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn chown_postgres(path: &Path) {
    if common::is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "chown {} to postgres", path.display());
    }
}

/// Polls `check` for up to `limit` (Patroni's failover waits out a 20 s
/// leader lease).
fn within<T>(
    limit: Duration,
    what: &str,
    nodes: &[&Node],
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
                .collect();
            panic!("never happened: {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn patroni_fails_over_to_the_streaming_replica_with_concord_as_its_store() {
    let store = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    chown_postgres(dir.path());
    let mut primary = Node::start("pg0", dir.path(), store.port);
    within(
        Duration::from_secs(120),
        "pg0 is the primary",
        &[&primary],
        || (primary.rest("/primary") == 200).then_some(()),
    );
    primary
        .psql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .expect("a write on the primary");
    let replica = Node::start("pg1", dir.path(), store.port);
    within(
        Duration::from_secs(120),
        "pg1 streams from pg0",
        &[&primary, &replica],
        || {
            let streaming = primary
                .psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                .ok()?;
            (replica.rest("/replica") == 200 && streaming == "1").then_some(())
        },
    );
    within(
        Duration::from_secs(60),
        "pg1 has the primary's row",
        &[&primary, &replica],
        || (replica.psql("SELECT x FROM t").ok()? == "42").then_some(()),
    );
    // The leader key lives in concord.
    let leader = store.ctl_ok(&[
        "get",
        &format!("/service/{SCOPE}/leader"),
        "--print-value-only",
    ]);
    assert_eq!(leader.trim(), "pg0");

    primary.kill();
    within(
        Duration::from_secs(120),
        "pg1 is promoted",
        &[&primary, &replica],
        || (replica.rest("/primary") == 200).then_some(()),
    );
    // Patroni answers /primary once it holds the leader key; PostgreSQL
    // leaves recovery a moment later.
    within(
        Duration::from_secs(60),
        "the promoted replica takes writes",
        &[&primary, &replica],
        || replica.psql("INSERT INTO t VALUES (43)").ok(),
    );
    assert_eq!(
        replica.psql("SELECT string_agg(x::text, ',' ORDER BY x) FROM t"),
        Ok("42,43".to_string())
    );
    let leader = store.ctl_ok(&[
        "get",
        &format!("/service/{SCOPE}/leader"),
        "--print-value-only",
    ]);
    assert_eq!(leader.trim(), "pg1");
}
