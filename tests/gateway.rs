//! The JSON gateway (`POST /v3/...`), driven by real clients: OpenStack's
//! etcd3gw (Debian python3-etcd3gw) doing everything it can do, and the
//! same requests sent to the real etcd (Debian's etcd-server, 3.4) and to
//! concord, whose answers must be the same JSON apart from IDs, names and
//! raft figures. Also the gateway's errors and limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::etcd::Etcd;
use common::Server;

/// `curl -s -X POST URL` with BODY: (status, body).
fn post(url: &str, body: &str) -> (u16, String) {
    let mut child = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url])
        .args(["--data-binary", "@-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl (Debian package curl; scripts/install-deps installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(body.as_bytes())
        .expect("send the body to curl");
    drop(stdin);
    let o = child.wait_with_output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').expect("a status line");
    (status.parse().expect("an HTTP status"), body.to_string())
}

#[test]
fn etcd3gw_does_everything_it_can_through_the_gateway() {
    let s = Server::start(&[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/gateway/etcd3gw_client.py"
    );
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(s.port.to_string())
        .output()
        .expect("Debian's python3 with python3-etcd3gw (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "etcd3gw failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

/// Replaces the value of every `"key":` in `keys` with `"_"` (strings,
/// numbers and arrays of strings), keeping everything else as written.
fn mask(text: &str, keys: &[&str]) -> String {
    let mut out = text.to_string();
    for key in keys {
        let pat = format!("\"{key}\":");
        let mut from = 0;
        while let Some(at) = out[from..].find(&pat) {
            let start = from + at + pat.len();
            let rest = &out[start..];
            let len = match rest.as_bytes().first() {
                Some(b'"') => rest[1..].find('"').map_or(rest.len(), |i| i + 2),
                Some(b'[') => rest.find(']').map_or(rest.len(), |i| i + 1),
                _ => rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                    .unwrap_or(rest.len()),
            };
            out.replace_range(start..start + len, "\"_\"");
            from = start + 3;
        }
    }
    out
}

/// What differs between two members by design: identities and raft.
const IDENTITY: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "name",
    "peerURLs",
    "clientURLs",
];

/// An error body, in any field order (etcd 3.4's grpc-gateway writes
/// error, message, code; 3.5's error, code, message, as concord).
fn error_fields(body: &str) -> Option<(String, i64, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some((
        v["error"].as_str()?.to_string(),
        v["code"].as_i64()?,
        v["message"].as_str()?.to_string(),
    ))
}

#[test]
fn the_gateway_answers_as_the_real_etcd_does() {
    let etcd = Etcd::start(&[]);
    let s = Server::start(&[]);
    // (path, body, extra keys to mask). Both stores start empty, so the
    // revisions are compared as they are; lease IDs are chosen.
    let requests: &[(&str, &str, &[&str])] = &[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &[]),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9vMg==","value":"YmFy","prev_kv":true}"#,
            &[],
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
            &[],
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, &[]),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#,
            &[],
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","keys_only":true,"limit":1}"#,
            &[],
        ),
        ("/v3/kv/range", r#"{"key":"bm9wZQ=="}"#, &[]),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#, &[]),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#, &[]),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"DESCEND","sort_target":"MOD","range_end":"AA=="}"#,
            &[],
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v","bogus":1} trailing"#, &[]),
        ("/v3/kv/range", r#"{"key":"#, &[]),
        ("/v3/kv/range", "", &[]),
        ("/v3beta/kv/range", r#"{"key":"Zm9v"}"#, &[]),
        ("/v3/kv/put", r#"{"key":"","value":"YmFy"}"#, &[]),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmF6"}],"success":[{"request_put":{"key":"YQ==","value":"MQ=="}},{"request_range":{"key":"Zm9v"}},{"request_delete_range":{"key":"Zm9vMg=="}}]}"#,
            &[],
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","target":"CREATE","create_revision":"0"}],"failure":[{"request_range":{"key":"YQ=="}}]}"#,
            &[],
        ),
        ("/v3/lease/grant", r#"{"ID":"1000","TTL":"60"}"#, &[]),
        (
            "/v3/kv/put",
            r#"{"key":"bA==","value":"dg==","lease":"1000"}"#,
            &[],
        ),
        (
            "/v3/lease/timetolive",
            r#"{"ID":"1000","keys":true}"#,
            &["TTL"],
        ),
        ("/v3/lease/leases", "{}", &[]),
        ("/v3/lease/keepalive", r#"{"ID":"1000"}"#, &["TTL"]),
        ("/v3/kv/lease/revoke", r#"{"ID":"1000"}"#, &[]),
        ("/v3/kv/lease/revoke", r#"{"ID":"1000"}"#, &[]),
        ("/v3/lease/timetolive", r#"{"ID":"1000"}"#, &[]),
        ("/v3/lease/keepalive", r#"{"ID":"1000"}"#, &[]),
        (
            "/v3/kv/deleterange",
            r#"{"key":"YQ==","prev_kv":true}"#,
            &[],
        ),
        ("/v3/kv/deleterange", r#"{"key":"YQ=="}"#, &[]),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#, &[]),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#, &[]),
        ("/v3/cluster/member/list", "{}", &[]),
        (
            "/v3/maintenance/status",
            "{}",
            &[
                "version",
                "dbSize",
                "dbSizeInUse",
                "leader",
                "raftIndex",
                "raftTerm",
                "raftAppliedIndex",
            ],
        ),
        ("/v3/kv/nosuch", "{}", &[]),
        ("/v3alpha/kv/range", "{}", &[]),
        // The watch's history, cut short by the compaction.
        (
            "/v3/watch",
            r#"{"create_request":{"key":"AA==","range_end":"AA==","start_revision":"1"}}"#,
            &[],
        ),
    ];
    for (path, body, extra) in requests {
        let keys: Vec<&str> = IDENTITY.iter().chain(extra.iter()).copied().collect();
        let (etcd_status, etcd_body) = read(&format!("{}{path}", etcd.url()), body);
        let (status, ours) = read(&format!("{}{path}", s.url()), body);
        let what = format!("{path} {body}");
        assert_eq!(
            status, etcd_status,
            "{what}: status; etcd {etcd_body}, concord {ours}"
        );
        match (error_fields(&etcd_body), error_fields(&ours)) {
            (Some(theirs), Some(mine)) => assert_eq!(mine, theirs, "{what}: error"),
            _ => assert_eq!(mask(&ours, &keys), mask(&etcd_body, &keys), "{what}"),
        }
    }
}

/// POSTs `body`; a watch is read until its second response (the history
/// and its end), every other call to its end.
fn read(url: &str, body: &str) -> (u16, String) {
    if !url.ends_with("/watch") {
        return post(url, body);
    }
    let mut child = Command::new("curl")
        .args(["-sN", "--max-time", "30", url, "-d", body])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = Vec::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    while lines.len() < 2 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
            break;
        }
        lines.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    (200, lines.concat())
}

#[test]
fn the_gateway_refuses_bad_requests_as_grpc_gateway_does() {
    let s = Server::start(&["--max-request-bytes", "4096"]);
    let u = |p: &str| format!("{}{p}", s.url());
    assert_eq!(post(&u("/v3/kv/nosuch"), "{}"), (404, "Not Found\n".into()));
    assert_eq!(
        post(&u("/v3alpha/kv/range"), "{}"),
        (404, "404 page not found\n".into())
    );
    let get = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", &u("/v3/kv/range")])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&get.stdout),
        "Method Not Allowed\n\n405"
    );
    // Wrong types and malformed JSON: InvalidArgument, 400.
    let (status, body) = post(&u("/v3/kv/range"), r#"{"key":5}"#);
    assert_eq!(
        (status, error_fields(&body).map(|e| e.1)),
        (400, Some(3)),
        "{body}"
    );
    let (status, body) = post(&u("/v3/kv/range"), r#"{"limit":"many"}"#);
    assert_eq!(
        (status, error_fields(&body).map(|e| e.1)),
        (400, Some(3)),
        "{body}"
    );
    // A malformed first watch request: Unknown, 500, as the gateway.
    let (status, body) = post(&u("/v3/watch"), r#"{"create_request":"#);
    assert_eq!(
        (status, error_fields(&body)),
        (
            500,
            Some(("unexpected EOF".into(), 2, "unexpected EOF".into()))
        )
    );
    // Over --max-request-bytes: etcd's "request is too large"; over
    // gRPC's message limit too: ResourceExhausted, 429. Neither is stored.
    let big = format!(r#"{{"key":"Zm9v","value":"{}"}}"#, "QUFB".repeat(4000));
    let (status, body) = post(&u("/v3/kv/put"), &big);
    assert_eq!(
        (status, error_fields(&body)),
        (
            400,
            Some((
                "etcdserver: request is too large".into(),
                3,
                "etcdserver: request is too large".into()
            ))
        )
    );
    let huge = format!(r#"{{"key":"Zm9v","value":"{}"}}"#, "QUFB".repeat(1 << 20));
    let (status, body) = post(&u("/v3/kv/put"), &huge);
    assert_eq!(
        (status, error_fields(&body).map(|e| e.1)),
        (429, Some(8)),
        "{body}"
    );
    // A watch request over the gRPC message limit: ResourceExhausted too.
    let huge_watch = format!(
        r#"{{"create_request":{{"key":"{}"}}}}"#,
        "QUFB".repeat(200 * 1024)
    );
    let (status, body) = post(&u("/v3/watch"), &huge_watch);
    assert_eq!(
        (status, error_fields(&body).map(|e| e.1)),
        (429, Some(8)),
        "{body}"
    );
    // The gRPC side is undisturbed.
    s.ctl_ok(&["put", "k", "v"]);
    assert!(s.ctl_ok(&["get", "k"]).contains('v'));
    assert!(!s.ctl_ok(&["get", "foo"]).contains("foo"));
}

#[test]
fn the_gateway_can_be_turned_off() {
    let s = Server::start(&["--enable-grpc-gateway=false"]);
    assert_eq!(
        post(&format!("{}/v3/kv/range", s.url()), "{}"),
        (404, "404 page not found\n".into())
    );
    // The rest of the HTTP face stays.
    assert_eq!(post(&format!("{}/readyz", s.url()), "").0, 405);
}

#[test]
fn a_watch_client_that_stops_reading_does_not_disturb_the_member() {
    let s = Server::start(&[]);
    // A gateway watch whose client never reads its response.
    let mut stuck = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let body = r#"{"create_request":{"key":"AA==","range_end":"AA=="}}"#;
    write!(
        stuck,
        "POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    // Its watcher exists before the writes begin.
    common::eventually("the stuck client's watcher is registered", || {
        let (_, text) = post_get(&format!("{}/metrics", s.url()));
        text.lines()
            .any(|l| l == "etcd_debugging_mvcc_watcher_total 1")
            .then_some(())
            .ok_or(text)
    });
    // 40 MB of events for it, far beyond any socket buffer.
    let value = "v".repeat(64 * 1024);
    for i in 0..600 {
        let (status, _) = post(
            &format!("{}/v3/kv/put", s.url()),
            &format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64(format!("k{i}").as_bytes()),
                b64(value.as_bytes())
            ),
        );
        assert_eq!(status, 200);
    }
    // Writes and reads go on, on both faces.
    s.ctl_ok(&["put", "after", "ok"]);
    assert!(s.ctl_ok(&["get", "after"]).contains("ok"));
    let (status, body) = post(
        &format!("{}/v3/kv/range", s.url()),
        r#"{"key":"azU5OQ==","keys_only":true}"#,
    );
    assert_eq!(status, 200);
    assert!(body.contains(r#""key":"azU5OQ==""#), "{body}");
    // The stuck client still gets what it is owed once it reads: the
    // watch was created (or cancelled as too slow), never a broken reply.
    stuck
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut head = [0u8; 15];
    stuck.read_exact(&mut head).expect("the response starts");
    assert_eq!(&head, b"HTTP/1.1 200 OK");
}

/// `curl -s URL` (GET): (status, body).
fn post_get(url: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.parse().unwrap_or(0), body.to_string())
}

/// Standard base64 with padding.
fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
