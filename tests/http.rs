//! The HTTP/1.1 face of a member, driven by the real curl on the client
//! URL that also serves gRPC: `/version`, `/health` (and its no-leader
//! answer), `/livez` and `/readyz`, etcd's 405 and 404; and the gRPC
//! health service.

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
    // etcd 3.5: a serializable check skips the leader and reads locally.
    let (status, body) = curl(&[&format!("{url}?serializable=true")]);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    // /livez reads locally: alive. /readyz needs a linearizable read: not
    // ready, and says which check failed (every check's line, a blank
    // line at the end, as Go's http.Error writes it).
    let base = c.members[0].url();
    assert_eq!(curl(&[&format!("{base}/livez")]), (200, "ok\n".into()));
    let (status, body) = curl(&[&format!("{base}/readyz")]);
    assert_eq!(status, 503, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[..2],
        ["[+]data_corruption ok", "[+]serializable_read ok"]
    );
    assert!(
        lines[2].starts_with("[-]linearizable_read failed: "),
        "{body}"
    );
    assert!(body.ends_with("\n\n"), "{body:?}");
    let (status, _) = curl(&[&format!("{base}/readyz?exclude=linearizable_read")]);
    assert_eq!(status, 200);
    let (status, _) = curl(&[&format!("{base}/readyz/linearizable_read")]);
    assert_eq!(status, 503);
}

#[test]
fn livez_and_readyz_answer_as_etcd_3_5() {
    let s = Server::start(&[]);
    let u = |path: &str| format!("{}{path}", s.url());
    assert_eq!(curl(&[&u("/livez")]), (200, "ok\n".into()));
    assert_eq!(curl(&[&u("/readyz")]), (200, "ok\n".into()));
    // verbose: one line per check, whatever its value.
    assert_eq!(
        curl(&[&u("/readyz?verbose=false")]),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n".into()
        )
    );
    assert_eq!(
        curl(&[&u("/livez?verbose")]),
        (200, "[+]serializable_read ok\nok\n".into())
    );
    // exclude leaves a check out; an unknown name is only logged.
    assert_eq!(
        curl(&[&u(
            "/readyz?verbose&exclude=linearizable_read&exclude=no_such_check"
        )]),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\nok\n".into()
        )
    );
    // One check by its path; unknown checks and a trailing slash are 404.
    assert_eq!(
        curl(&[&u("/readyz/linearizable_read")]),
        (200, "ok\n".into())
    );
    assert_eq!(
        curl(&[&u("/livez/serializable_read")]),
        (200, "ok\n".into())
    );
    assert_eq!(curl(&[&u("/readyz/non_exist")]).0, 404);
    assert_eq!(curl(&[&u("/livez/linearizable_read")]).0, 404);
    assert_eq!(curl(&[&u("/livez/")]).0, 404);
    // GET only.
    assert_eq!(
        curl(&["-X", "POST", &u("/readyz")]),
        (405, "Method Not Allowed\n".into())
    );
}

#[tokio::test]
async fn the_grpc_health_service_answers_as_etcd_registers_it() {
    use concord::proto::grpc_health::health_check_response::ServingStatus;
    use concord::proto::grpc_health::health_client::HealthClient;
    use concord::proto::grpc_health::HealthCheckRequest;
    let s = Server::start(&[]);
    let mut client = HealthClient::connect(s.url()).await.expect("connect");
    let whole = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(whole.status, ServingStatus::Serving as i32);
    let unknown = client
        .check(HealthCheckRequest {
            service: "etcdserverpb.KV".into(),
        })
        .await
        .expect_err("only the server as a whole is registered");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
}

/// `curl -s` over TLS with `args`: (HTTP version, status, body), or curl's
/// exit code when no response came.
fn curl_tls(args: &[&str]) -> Result<(String, u16, String), i32> {
    let o = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    if !o.status.success() {
        return Err(o.status.code().unwrap_or(-1));
    }
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, last) = out.rsplit_once('\n').ok_or(-1)?;
    let (version, status) = last.split_once(' ').ok_or(-1)?;
    Ok((
        version.to_string(),
        status.parse().map_err(|_| -1)?,
        body.to_string(),
    ))
}

/// Whether curl failed in the TLS handshake (35: SSL connect error) or on
/// the connection the server closed right after it (55/56: send/receive
/// failure; TLS 1.3 reports a refused client certificate after the
/// client's side of the handshake is done), not with an HTTP answer.
fn refused_in_tls(r: &Result<(String, u16, String), i32>) -> bool {
    matches!(r, Err(35 | 55 | 56))
}

#[test]
fn http_1_1_and_h2_share_an_https_port_with_client_certificates() {
    let certs = tempfile::tempdir().expect("tempdir");
    common::write_ca_signed_certs(certs.path(), 2);
    let path = |f: &str| certs.path().join(f).display().to_string();
    let metrics_port = common::free_port();
    let metrics_url = format!("https://127.0.0.1:{metrics_port}");
    let mut s = Server::prepare(&[
        "--cert-file",
        &path("m0.pem"),
        "--key-file",
        &path("m0.key"),
        "--trusted-ca-file",
        &path("ca.pem"),
        "--client-cert-auth",
        "--listen-metrics-urls",
        &metrics_url,
    ]);
    s.client_scheme = "https";
    s.ctl_args = ["--cacert", "ca.pem", "--cert", "m1.pem", "--key", "m1.key"]
        .iter()
        .map(|f| {
            if f.starts_with("--") {
                f.to_string()
            } else {
                path(f)
            }
        })
        .collect();
    s.spawn();
    // gRPC over the acceptor, with the client's certificate.
    s.ctl_ok(&["put", "k", "v"]);
    let (ca, cert, key) = (path("ca.pem"), path("m1.pem"), path("m1.key"));
    let with_cert = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let get = |url: String| {
            let mut args: Vec<&str> = with_cert.to_vec();
            args.extend([flag, &url]);
            curl_tls(&args).unwrap_or_else(|code| panic!("no answer to {flag} {url}: curl {code}"))
        };
        let (v, status, body) = get(format!("{}/version", s.url()));
        assert_eq!((v.as_str(), status), (version, 200), "{body}");
        let (v, status, body) = get(format!("{metrics_url}/metrics"));
        assert_eq!((v.as_str(), status), (version, 200));
        assert!(body.contains("etcd_server_has_leader 1"));
        // The gateway over TLS.
        let mut args: Vec<&str> = with_cert.to_vec();
        let url = format!("{}/v3/kv/range", s.url());
        args.extend([flag, &url, "-d", r#"{"key":"aw=="}"#]);
        let (v, status, body) = curl_tls(&args).expect("an answer");
        assert_eq!((v.as_str(), status), (version, 200));
        assert!(body.contains(r#""value":"dg==""#), "{body}");
        // Without a client certificate: refused in the handshake, as
        // etcd with --client-cert-auth.
        let url = format!("{}/version", s.url());
        let r = curl_tls(&["--cacert", &ca, flag, &url]);
        assert!(refused_in_tls(&r), "{r:?}");
        let url = format!("{metrics_url}/metrics");
        let r = curl_tls(&["--cacert", &ca, flag, &url]);
        assert!(refused_in_tls(&r), "{r:?}");
    }
}
