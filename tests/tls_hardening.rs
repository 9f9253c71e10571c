//! TLS hardening as etcd configures it, with etcd's own test certificates
//! (Debian's golang-etcd-server-dev, installed by scripts/install-deps):
//! `--client-crl-file` refuses a revoked client certificate in the
//! handshake, and a client presenting the trusted CA certificate itself is
//! accepted (as Go accepts it) and is, with auth on, the user its common
//! name names.

mod common;

use std::path::PathBuf;

use common::Server;

fn fixtures() -> PathBuf {
    PathBuf::from("/usr/share/gocode/src/go.etcd.io/etcd/integration/fixtures")
}

fn fixture(f: &str) -> String {
    fixtures().join(f).display().to_string()
}

/// A member serving https with etcd's `server.crt`, verifying client
/// certificates against `ca`.
fn tls_member(ca: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--cert-file".to_string(),
        fixture("server.crt"),
        "--key-file".to_string(),
        fixture("server.key.insecure"),
        "--trusted-ca-file".to_string(),
        fixture(ca),
        "--client-cert-auth".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut s = Server::prepare(&args.iter().map(String::as_str).collect::<Vec<_>>());
    s.client_scheme = "https";
    s.spawn();
    s
}

/// etcdctl over TLS with the given client certificate.
fn ctl_as(s: &Server, cert: &str, key: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "--cacert".to_string(),
        fixture("ca.crt"),
        "--cert".to_string(),
        fixture(cert),
        "--key".to_string(),
        fixture(key),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    s.ctl(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_revoked_client_certificate_is_refused_in_the_handshake() {
    if !fixtures().exists() {
        panic!("etcd's fixtures are missing: run scripts/install-deps");
    }
    let s = tls_member("ca.crt", &["--client-crl-file", &fixture("revoke.crl")]);
    let ok = ctl_as(&s, "server.crt", "server.key.insecure", &["put", "k", "v"]);
    assert!(ok.status.success(), "{ok:?}");
    let revoked = ctl_as(
        &s,
        "server-revoked.crt",
        "server-revoked.key.insecure",
        &["--dial-timeout=2s", "--command-timeout=4s", "get", "k"],
    );
    assert!(
        !revoked.status.success(),
        "a revoked certificate was accepted"
    );
    // Not refused by the server's answer: no TLS session was ever made.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(fixture("ca.crt"))
        .args(["--cert", &fixture("server-revoked.crt")])
        .args(["--key", &fixture("server-revoked.key.insecure")])
        .arg(format!("{}/version", s.url()))
        .output()
        .expect("curl");
    assert!(
        matches!(out.status.code(), Some(35 | 55 | 56)),
        "curl got through: {out:?}"
    );
}

#[test]
fn the_trusted_ca_certificate_as_a_client_is_its_common_name() {
    if !fixtures().exists() {
        panic!("etcd's fixtures are missing: run scripts/install-deps");
    }
    // CommonName-root.crt is its own CA and carries CN=root.
    let args = [
        "--cert-file".to_string(),
        fixture("CommonName-root.crt"),
        "--key-file".to_string(),
        fixture("CommonName-root.key"),
        "--trusted-ca-file".to_string(),
        fixture("CommonName-root.crt"),
        "--client-cert-auth".to_string(),
    ];
    let mut s = Server::prepare(&args.iter().map(String::as_str).collect::<Vec<_>>());
    s.client_scheme = "https";
    s.spawn();
    let ctl = |a: &[&str]| {
        let mut all = vec![
            "--cacert".to_string(),
            fixture("CommonName-root.crt"),
            "--cert".to_string(),
            fixture("CommonName-root.crt"),
            "--key".to_string(),
            fixture("CommonName-root.key"),
        ];
        all.extend(a.iter().map(|s| s.to_string()));
        s.ctl(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for a in [
        &["user", "add", "root:pw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "other:pw"],
        &["auth", "enable"],
    ] {
        let o = ctl(a);
        assert!(o.status.success(), "{a:?}: {o:?}");
    }
    // No token: the certificate's CN, root, may do anything.
    let o = ctl(&["put", "k", "v"]);
    assert!(o.status.success(), "{o:?}");
    let o = ctl(&["user", "list"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "other\nroot\n");
    // A token wins over the certificate.
    let o = ctl(&["--user", "other:pw", "get", "k"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("permission denied"),
        "{err}"
    );
}

/// curl's exit code for `/version` over TLS with extra curl flags.
fn curl_code(s: &Server, extra: &[&str]) -> Option<i32> {
    std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(fixture("ca.crt"))
        .args(extra)
        .arg(format!("{}/version", s.url()))
        .status()
        .expect("curl")
        .code()
}

#[test]
fn cipher_suites_and_tls_versions_are_enforced() {
    if !fixtures().exists() {
        panic!("etcd's fixtures are missing: run scripts/install-deps");
    }
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "--cert-file".to_string(),
            fixture("server.crt"),
            "--key-file".to_string(),
            fixture("server.key.insecure"),
            "--trusted-ca-file".to_string(),
            fixture("ca.crt"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Server::prepare(&args.iter().map(String::as_str).collect::<Vec<_>>());
        s.client_scheme = "https";
        s.spawn();
        s
    };
    // Only TLS 1.3: a TLS 1.2 client is refused, a 1.3 one served.
    let s = serve(&["--tls-min-version", "TLS1.3"]);
    assert_eq!(curl_code(&s, &["--tls-max", "1.2"]), Some(35));
    assert_eq!(curl_code(&s, &["--tlsv1.3"]), Some(0));
    drop(s);
    // One TLS 1.2 suite: another is refused.
    let s = serve(&[
        "--cipher-suites",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "--tls-max-version",
        "TLS1.2",
    ]);
    assert_eq!(
        curl_code(&s, &["--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"]),
        Some(0)
    );
    assert_eq!(
        curl_code(&s, &["--ciphers", "ECDHE-RSA-AES256-GCM-SHA384"]),
        Some(35)
    );
    assert_eq!(curl_code(&s, &["--tlsv1.3"]), Some(35));
}

#[test]
fn tls_policy_flags_etcd_refuses_are_refused_before_anything_is_written() {
    for bad in [
        &["--tls-min-version", "TLS1.1"][..],
        &["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
        &["--cipher-suites", "TLS_RSA_WITH_AES_128_CBC_SHA"],
        &[
            "--cipher-suites",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "--tls-min-version",
            "TLS1.3",
        ],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
            .arg("--data-dir")
            .arg(&data)
            .args(bad)
            .output()
            .expect("run concord");
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(!data.exists(), "{bad:?}: the data dir was written");
    }
}

/// curl's exit code for a request to the peer port with a client
/// certificate: 0 when the server answered at all.
fn peer_curl(s: &Server, cert: &str, key: &str) -> Option<i32> {
    std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(fixture("ca.crt"))
        .args(["--cert", &fixture(cert), "--key", &fixture(key)])
        .arg(format!("{}/members", s.peer_url()))
        .status()
        .expect("curl")
        .code()
}

#[test]
fn peer_certificates_are_held_to_the_allowed_cn_and_hostname() {
    if !fixtures().exists() {
        panic!("etcd's fixtures are missing: run scripts/install-deps");
    }
    let peer = |extra: &[&str]| {
        let mut args = vec![
            "--peer-cert-file".to_string(),
            fixture("server.crt"),
            "--peer-key-file".to_string(),
            fixture("server.key.insecure"),
            "--peer-trusted-ca-file".to_string(),
            fixture("ca.crt"),
            "--peer-client-cert-auth".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Server::prepare(&args.iter().map(String::as_str).collect::<Vec<_>>());
        s.peer_scheme = "https";
        s.spawn();
        s
    };
    let s = peer(&["--peer-cert-allowed-cn", "example.com"]);
    assert_eq!(peer_curl(&s, "server.crt", "server.key.insecure"), Some(0));
    assert!(matches!(
        peer_curl(&s, "server2.crt", "server2.key.insecure"),
        Some(35 | 55 | 56)
    ));
    drop(s);
    let s = peer(&["--peer-cert-allowed-hostname", "localhost"]);
    assert_eq!(peer_curl(&s, "server.crt", "server.key.insecure"), Some(0));
    assert!(matches!(
        peer_curl(&s, "server-ip.crt", "server-ip.key.insecure"),
        Some(35 | 55 | 56)
    ));
}
