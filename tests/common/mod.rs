//! Shared helpers for integration tests: start the real `concord` binary on
//! free 127.0.0.1 ports with a temporary data dir, wait for etcd's readiness
//! lines, drive it with the real `etcdctl`, kill it (-9) and restart it.
#![allow(dead_code)]

pub mod etcd;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_concord");

/// A free port on 127.0.0.1, never handed out twice by this process.
/// Binding port 0 and releasing it is not enough: with SO_REUSEADDR Linux
/// picks from a few thousand ports, so the six ports of a 3-member cluster
/// (picked before any member binds) collide now and then, as does the port
/// of a member that is down between a kill and a restart.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// Whether the tests run as root (network namespaces, running a program
/// as another user).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Polls `check` (up to 30 s, every 20 ms) until it returns `Ok`; the
/// last `Err` says what was seen instead. For what nothing announces to a
/// client, such as a member applying what the cluster committed a little
/// after the member that answered the write.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "never happened: {what}; last seen:\n{seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn etcdctl_path() -> &'static str {
    let ok = Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the real etcdctl is required (Debian package etcd-client; scripts/install-deps installs it)"
    );
    "etcdctl"
}

/// One running concord member.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    /// The peer listener's port (a member always listens for peers).
    pub peer_port: u16,
    /// `http`, or `https` for members with peer TLS.
    pub peer_scheme: &'static str,
    /// `http`, or `https` for members with client TLS.
    pub client_scheme: &'static str,
    /// Extra etcdctl flags (e.g. `--cacert`).
    pub ctl_args: Vec<String>,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    /// Environment variables for the process.
    pub envs: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
    log_rx: Option<mpsc::Receiver<String>>,
    /// Output lines read while waiting for readiness.
    pending: Vec<String>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut s = Server::prepare(extra);
        s.spawn();
        s
    }

    /// A member with its ports and data dir chosen, not started yet.
    pub fn prepare(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        Server {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            peer_scheme: "http",
            client_scheme: "http",
            ctl_args: Vec::new(),
            data_dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            _tmp: Some(tmp),
            log_rx: None,
            pending: Vec::new(),
        }
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.client_scheme, self.port)
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".to_string(),
            self.url(),
            "--advertise-client-urls".to_string(),
            self.url(),
            "--listen-peer-urls".to_string(),
            self.peer_url(),
        ];
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Starts the process and waits for both readiness lines.
    pub fn spawn(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Starts the process without waiting (members of a new cluster need
    /// each other before any is ready).
    pub fn launch(&mut self) {
        let mut child = Command::new(BIN)
            .args(self.args())
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start concord");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.log_rx = Some(rx);
        self.pending.clear();
    }

    /// Waits for etcd's two readiness lines of the launched process.
    pub fn wait_ready(&mut self) {
        let rx = self.log_rx.as_ref().expect("launched");
        let mut ready = 0;
        while ready < 2 {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if line.contains("enabled capabilities for version")
                        || line.contains("published")
                    {
                        ready += 1;
                    }
                    self.pending.push(line);
                }
                Err(_) => {
                    self.kill9();
                    panic!(
                        "concord did not become ready; output:\n{}",
                        self.pending.join("\n")
                    );
                }
            }
        }
    }

    /// Waits until the running process logs a line containing `what`
    /// (lines read while waiting for readiness count too).
    pub fn wait_for_log(&mut self, what: &str) -> String {
        if let Some(l) = self.pending.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        let rx = self.log_rx.as_ref().expect("launched");
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no log line containing {what:?} within 60 s"));
            let found = line.contains(what);
            self.pending.push(line.clone());
            if found {
                return line;
            }
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        c.wait().expect("wait")
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs the real etcdctl against this member.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(etcdctl_path());
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.url())
            .arg("--command-timeout=10s")
            .args(&self.ctl_args)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run etcdctl");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().expect("etcdctl output")
    }

    /// etcdctl that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf8")
    }

    /// `member list` once it satisfies `ok` (this member may apply a
    /// membership change after the member that answered it).
    pub fn member_list_when(&self, ok: impl Fn(&str) -> bool) -> String {
        eventually("the member list matches", || {
            let list = self.ctl_ok(&["member", "list"]);
            if ok(&list) {
                Ok(list)
            } else {
                Err(list)
            }
        })
    }

    /// Waits (up to 30 s) for the process to exit; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = eventually("the member exits", || {
            child
                .try_wait()
                .expect("try_wait")
                .ok_or_else(|| "still running".to_string())
        });
        self.child = None;
        status
    }

    /// etcdctl that must fail; returns its stderr's `Error: ...` line.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            !o.status.success(),
            "etcdctl {args:?} unexpectedly succeeded"
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        err.lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or(&err)
            .to_string()
    }

    /// Starts a long-running etcdctl (watch, lock, elect, keep-alive) whose
    /// stdout lines can be read as they come.
    pub fn ctl_spawn(&self, args: &[&str]) -> Spawned {
        let mut child = Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.url())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned { child, lines: rx }
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("etcd-client connects")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running etcdctl with its output lines.
pub struct Spawned {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Spawned {
    /// The next stdout line (waits up to 30 s, then fails the test).
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("etcdctl printed a line within 30 s")
    }

    /// The next `n` lines.
    pub fn lines(&self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.line()).collect()
    }

    /// SIGTERM (etcdctl releases what it holds) and wait.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--initial-cluster` for `members`, named m0, m1, ...
pub fn initial_cluster(members: &[Server]) -> String {
    let named: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| format!("m{i}={}", m.peer_url()))
        .collect();
    named.join(",")
}

/// A cluster of real processes started with etcd's static bootstrap flags.
pub struct Cluster {
    pub members: Vec<Server>,
    pub token: String,
}

impl Cluster {
    /// `n` members named m0.., all launched before any is awaited.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, "http", |_| extra.iter().map(|s| s.to_string()).collect())
    }

    /// `n` members with peer URLs of `scheme`; member `i` also gets
    /// `extra(i)` (e.g. its own certificate files).
    pub fn start_with(
        n: usize,
        scheme: &'static str,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        Cluster::start_configured(n, |_, m| m.peer_scheme = scheme, extra)
    }

    /// `n` members, each set up by `setup(i, member)` before it starts
    /// with `extra(i)` added to its flags.
    pub fn start_configured(
        n: usize,
        setup: impl Fn(usize, &mut Server),
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let token = format!("tok-{}", free_port());
        let mut members: Vec<Server> = (0..n)
            .map(|i| {
                let mut m = Server::prepare(&[]);
                setup(i, &mut m);
                m
            })
            .collect();
        let initial = initial_cluster(&members);
        for (i, m) in members.iter_mut().enumerate() {
            let mut args = vec![
                "--name".to_string(),
                format!("m{i}"),
                "--initial-advertise-peer-urls".to_string(),
                m.peer_url(),
                "--initial-cluster".to_string(),
                initial.clone(),
                "--initial-cluster-token".to_string(),
                token.clone(),
            ];
            args.extend(extra(i));
            m.extra_args = args;
            m.launch();
        }
        for m in members.iter_mut() {
            m.wait_ready();
        }
        Cluster { members, token }
    }

    /// All client endpoints, comma separated (for etcdctl --endpoints).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub fn data_dir_exists(p: &Path) -> bool {
    p.join("concord.format").exists()
}

/// A CA (`ca.pem`) and `members` certificates it signed for 127.0.0.1
/// (`mI.pem`, `mI.key`), server and client use, in `dir`.
pub fn write_ca_signed_certs(dir: &std::path::Path, members: usize) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "concord test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    for i in 0..members {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.join(format!("m{i}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("m{i}.key")), key.serialize_pem()).expect("write");
    }
}
