//! The real etcd (Debian's etcd-server, 3.4) as a component of tests: a
//! discovery registry, v2 (`--enable-v2`) or v3.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::free_port;

/// One real etcd member on 127.0.0.1.
pub struct Etcd {
    child: Child,
    pub port: u16,
    scheme: &'static str,
    /// Extra etcdctl flags (e.g. `--cacert`).
    pub ctl_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd with `extra` flags and waits until it serves clients.
    pub fn start(extra: &[&str]) -> Etcd {
        Etcd::start_with("http", extra)
    }

    /// [`Etcd::start`] with client URLs of `scheme` (https needs the
    /// certificate flags in `extra`).
    pub fn start_with(scheme: &'static str, extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (free_port(), free_port());
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let mut child = Command::new("etcd")
            .args(["--name", "registry", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("registry={peer}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the real etcd is required (Debian package etcd-server; scripts/install-deps installs it)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains("ready to serve client requests") => break,
                Ok(_) => {}
                Err(_) => panic!("etcd did not become ready"),
            }
        }
        // Keep draining its output.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Etcd {
            child,
            port,
            scheme,
            ctl_args: Vec::new(),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// An HTTP request to this etcd: (status code, body).
    pub fn http(&self, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to etcd");
        let body = form.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).expect("send");
        s.write_all(body.as_bytes()).expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("an HTTP status");
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        (status, body.unwrap_or_default())
    }

    /// Runs the real etcdctl (v3 API) against this etcd.
    pub fn ctl(&self, args: &[&str]) -> String {
        let o = Command::new(super::etcdctl_path())
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url()])
            .args(&self.ctl_args)
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(
            o.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
