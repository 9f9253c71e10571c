//! Authentication and RBAC, driven by the real `etcdctl` (and curl on the
//! JSON gateway): users, roles, permissions, what a user without permission
//! is refused with, admin calls, tokens that expire, and the auth state
//! surviving a restart.

mod common;

use common::Server;

/// root (with the root role) and `u` (password `pw`) with read-write on
/// the prefix `foo`, auth enabled.
fn with_auth(extra: &[&str]) -> Server {
    let s = Server::start(extra);
    s.ctl_ok(&["user", "add", "root:rootpw"]);
    s.ctl_ok(&["role", "add", "root"]);
    s.ctl_ok(&["user", "grant-role", "root", "root"]);
    s.ctl_ok(&["user", "add", "u:pw"]);
    s.ctl_ok(&["role", "add", "r"]);
    s.ctl_ok(&[
        "role",
        "grant-permission",
        "r",
        "--prefix",
        "readwrite",
        "foo",
    ]);
    s.ctl_ok(&["user", "grant-role", "u", "r"]);
    assert_eq!(
        s.ctl_ok(&["auth", "enable"]).trim(),
        "Authentication Enabled"
    );
    s
}

fn as_user<'a>(user: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--user", user];
    v.extend_from_slice(args);
    v
}

const DENIED: &str = "Error: etcdserver: permission denied";

#[test]
fn users_roles_and_key_permissions() {
    let s = with_auth(&[]);
    let u = |args: &[&'static str]| as_user("u:pw", args);
    let root = |args: &[&'static str]| as_user("root:rootpw", args);
    // No credentials: refused as etcd refuses them.
    assert_eq!(
        s.ctl_err(&["put", "foo", "x"]),
        "Error: etcdserver: user name is empty"
    );
    assert_eq!(
        s.ctl_err(&["get", "foo"]),
        "Error: etcdserver: user name is empty"
    );
    assert_eq!(
        s.ctl_err(&as_user("u:wrong", &["get", "foo"])),
        "Error: etcdserver: authentication failed, invalid user ID or password"
    );
    assert_eq!(
        s.ctl_err(&as_user("nobody:pw", &["get", "foo"])),
        "Error: etcdserver: authentication failed, invalid user ID or password"
    );
    // Inside the prefix: reads and writes.
    assert_eq!(s.ctl_ok(&u(&["put", "foo1", "a"])).trim(), "OK");
    assert_eq!(s.ctl_ok(&u(&["get", "foo1"])), "foo1\na\n");
    assert_eq!(
        s.ctl_ok(&u(&["get", "foo", "--prefix", "--keys-only"]))
            .trim(),
        "foo1"
    );
    // Outside it: nothing.
    s.ctl_ok(&root(&["put", "secret", "s"]));
    assert_eq!(s.ctl_err(&u(&["put", "secret", "x"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["get", "secret"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["del", "secret"])), DENIED);
    // A range reaching beyond the prefix is refused as a whole.
    assert_eq!(s.ctl_err(&u(&["get", "foo", "--from-key"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["get", "f", "--prefix"])), DENIED);
    // Txns: every compare and every operation of both branches is checked.
    let txn_ok = "value(\"foo1\") = \"a\"\n\nput foo2 b\n\nget foo1\n\n";
    let ok = s.ctl_stdin(&u(&["txn"]), Some(txn_ok));
    assert!(ok.status.success(), "{ok:?}");
    for txn in [
        "value(\"secret\") = \"s\"\n\nput foo2 b\n\n\n",
        "value(\"foo1\") = \"a\"\n\nput foo2 b\n\nput secret y\n\n",
        "value(\"foo1\") = \"a\"\n\nget secret\n\n\n",
    ] {
        let o = s.ctl_stdin(&u(&["txn"]), Some(txn));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(DENIED),
            "{txn:?}: {err}"
        );
    }
    assert_eq!(s.ctl_ok(&root(&["get", "secret"])), "secret\ns\n");
    // Revoking the permission takes effect at once.
    s.ctl_ok(&root(&[
        "role",
        "revoke-permission",
        "r",
        "--prefix",
        "foo",
    ]));
    assert_eq!(s.ctl_err(&u(&["get", "foo1"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["put", "foo1", "b"])), DENIED);
    // Read only: reads pass, writes do not.
    s.ctl_ok(&root(&["role", "grant-permission", "r", "read", "foo1"]));
    assert_eq!(s.ctl_ok(&u(&["get", "foo1"])), "foo1\na\n");
    assert_eq!(s.ctl_err(&u(&["put", "foo1", "b"])), DENIED);
    // A user reads itself and its roles, not others'.
    assert_eq!(s.ctl_ok(&u(&["user", "get", "u"])), "User: u\nRoles: r\n");
    assert!(s
        .ctl_ok(&u(&["role", "get", "r"]))
        .contains("KV Read:\n\tfoo1"));
    assert_eq!(s.ctl_err(&u(&["user", "get", "root"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["role", "get", "root"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["user", "list"])), DENIED);
    assert_eq!(s.ctl_err(&u(&["user", "add", "v:pw"])), DENIED);
    assert_eq!(s.ctl_ok(&root(&["user", "list"])), "root\nu\n");
    assert_eq!(s.ctl_ok(&root(&["role", "list"])), "r\nroot\n");
    // Root cannot be taken apart while auth is on.
    assert_eq!(
        s.ctl_err(&root(&["user", "revoke-role", "root", "root"])),
        "Error: etcdserver: invalid auth management"
    );
    assert_eq!(
        s.ctl_err(&root(&["role", "delete", "root"])),
        "Error: etcdserver: invalid auth management"
    );
    assert_eq!(
        s.ctl_err(&root(&["user", "delete", "root"])),
        "Error: etcdserver: invalid auth management"
    );
    // A deleted role is gone from its users.
    s.ctl_ok(&root(&["role", "delete", "r"]));
    assert_eq!(s.ctl_ok(&root(&["user", "get", "u"])), "User: u\nRoles:\n");
    assert_eq!(s.ctl_err(&u(&["get", "foo1"])), DENIED);
    // Disabled: everyone may do everything again.
    assert_eq!(
        s.ctl_ok(&root(&["auth", "disable"])).trim(),
        "Authentication Disabled"
    );
    assert_eq!(s.ctl_ok(&["get", "secret"]), "secret\ns\n");
}

#[test]
fn admin_calls_need_root() {
    let s = with_auth(&[]);
    let u = |args: &[&'static str]| as_user("u:pw", args);
    let root = |args: &[&'static str]| as_user("root:rootpw", args);
    let denied = |args: &[&'static str]| {
        let o = s.ctl(&u(args));
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !o.status.success() && out.contains("etcdserver: permission denied"),
            "{args:?}: {out}"
        );
    };
    denied(&["defrag"]);
    denied(&["endpoint", "hashkv"]);
    denied(&["member", "add", "x", "--peer-urls=http://127.0.0.1:1"]);
    denied(&["compaction", "1"]);
    denied(&["auth", "disable"]);
    let id = s
        .ctl_ok(&["member", "list"])
        .split(',')
        .next()
        .expect("member id")
        .to_string();
    denied(&["move-leader", Box::leak(id.into_boxed_str())]);
    // Open to everyone, as in etcd.
    s.ctl_ok(&["member", "list"]);
    s.ctl_ok(&["endpoint", "status"]);
    s.ctl_ok(&["alarm", "list"]);
    // Root may.
    s.ctl_ok(&root(&["defrag"]));
    s.ctl_ok(&root(&["endpoint", "hashkv"]));
    s.ctl_ok(&root(&["put", "k", "v"]));
    s.ctl_ok(&root(&["compaction", "2"]));
}

#[test]
fn watches_and_leases_are_checked() {
    let s = with_auth(&[]);
    let u = |args: &[&'static str]| as_user("u:pw", args);
    let root = |args: &[&'static str]| as_user("root:rootpw", args);
    // A watch outside the user's keys is cancelled when it is created.
    let o = s.ctl(&u(&["watch", "secret"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("permission denied"),
        "{err}"
    );
    s.ctl_ok(&u(&["put", "foo1", "a"]));
    let mut w = s.ctl_spawn(&u(&["watch", "foo", "--prefix", "--rev=1"]));
    assert_eq!(w.lines(3), ["PUT", "foo1", "a"]);
    w.terminate();
    // A lease holding root's key: the user may not revoke it, nor see its
    // keys, nor attach to it.
    let granted = s.ctl_ok(&root(&["lease", "grant", "100"]));
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let id: &'static str = Box::leak(id.into_boxed_str());
    s.ctl_ok(&root(&["put", "secret", "s", "--lease", id]));
    assert_eq!(
        s.ctl_err(&u(&["lease", "revoke", id])),
        "Error: failed to revoke lease (etcdserver: permission denied)"
    );
    assert_eq!(
        s.ctl_err(&u(&["lease", "timetolive", id, "--keys"])),
        DENIED
    );
    assert_eq!(s.ctl_err(&u(&["put", "foo2", "x", "--lease", id])), DENIED);
    s.ctl_ok(&u(&["lease", "timetolive", id]));
    // The user's own lease is theirs to use.
    let mine = s.ctl_ok(&u(&["lease", "grant", "100"]));
    let mine = mine
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let mine: &'static str = Box::leak(mine.into_boxed_str());
    s.ctl_ok(&u(&["put", "foo3", "x", "--lease", mine]));
    s.ctl_ok(&u(&["lease", "revoke", mine]));
    assert_eq!(s.ctl_ok(&u(&["get", "foo3"])), "");
    s.ctl_ok(&root(&["lease", "revoke", id]));
    assert_eq!(s.ctl_ok(&root(&["get", "secret"])), "");
}

/// A token from the gateway, used in the `Authorization` header.
fn authenticate(s: &Server, user: &str, pw: &str) -> String {
    let body = format!(r#"{{"name":"{user}","password":"{pw}"}}"#);
    let out = curl(s, "/v3/auth/authenticate", &body, None);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["token"].as_str().expect("token").to_string()
}

fn curl(s: &Server, path: &str, body: &str, token: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-X", "POST", "-d", body])
        .arg(format!("{}{path}", s.url()));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: {t}")]);
    }
    let o = cmd.output().expect("curl");
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn tokens_expire_after_their_ttl_and_work_on_the_gateway() {
    let s = with_auth(&["--enable-grpc-gateway", "--auth-token-ttl", "2"]);
    let token = authenticate(&s, "u", "pw");
    // "foo" base64 is "Zm9v".
    let put = r#"{"key":"Zm9v","value":"YmFy"}"#;
    let out = curl(&s, "/v3/kv/put", put, Some(&token));
    assert!(out.contains("\"header\""), "{out}");
    let out = curl(&s, "/v3/kv/put", put, None);
    assert!(out.contains("user name is empty"), "{out}");
    let out = curl(
        &s,
        "/v3/kv/put",
        r#"{"key":"eA==","value":"eA=="}"#,
        Some(&token),
    );
    assert!(
        out.contains("permission denied") && out.contains("\"code\":7"),
        "{out}"
    );
    // Unused for longer than its TTL (2 s since the last use, which was
    // before the last answer came), the token is forgotten.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let out = curl(&s, "/v3/kv/range", r#"{"key":"Zm9v"}"#, Some(&token));
    assert!(
        out.contains("etcdserver: invalid auth token") && out.contains("\"code\":16"),
        "{out}"
    );
    // A new one works.
    let token = authenticate(&s, "u", "pw");
    let out = curl(&s, "/v3/kv/range", r#"{"key":"Zm9v"}"#, Some(&token));
    assert!(out.contains("\"kvs\""), "{out}");
    // A password change forgets the user's tokens.
    let root = authenticate(&s, "root", "rootpw");
    let out = curl(
        &s,
        "/v3/auth/user/changepw",
        r#"{"name":"u","password":"new"}"#,
        Some(&root),
    );
    assert!(out.contains("\"header\""), "{out}");
    let out = curl(&s, "/v3/kv/range", r#"{"key":"Zm9v"}"#, Some(&token));
    assert!(out.contains("invalid auth token"), "{out}");
    authenticate(&s, "u", "new");
}

#[test]
fn the_auth_state_survives_a_restart() {
    let mut s = with_auth(&[]);
    s.restart();
    assert_eq!(
        s.ctl_err(&["get", "foo"]),
        "Error: etcdserver: user name is empty"
    );
    assert_eq!(
        s.ctl_ok(&as_user("u:pw", &["put", "foo", "x"])).trim(),
        "OK"
    );
    assert_eq!(s.ctl_err(&as_user("u:pw", &["put", "bar", "x"])), DENIED);
    assert_eq!(
        s.ctl_ok(&as_user("root:rootpw", &["user", "list"])),
        "root\nu\n"
    );
}
