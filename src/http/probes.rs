//! `/version`, `/health`, `/livez` and `/readyz`, as etcd 3.5 answers them
//! (3.5.12+ for the last two).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{CLUSTER_VERSION, SERVER_VERSION};
use crate::member::Handle;
use crate::metrics::METRICS;
use crate::proto::etcdserverpb::RangeRequest;

/// How long `/health`'s linearizable read may take (etcd 3.4's QGET
/// timeout).
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// etcd's answer to a method other than GET.
fn method_not_allowed() -> Response {
    let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    r
}

/// `GET /version`: `{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}`.
pub async fn version(method: Method) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    // etcd's field order.
    #[derive(serde::Serialize)]
    struct Versions {
        etcdserver: &'static str,
        etcdcluster: String,
    }
    let body = serde_json::to_string(&Versions {
        etcdserver: SERVER_VERSION,
        etcdcluster: format!("{CLUSTER_VERSION}.0"),
    })
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `/health`'s query: `serializable=true` skips the leader check and reads
/// this member's own store instead of a linearizable read; `exclude=` names
/// alarms to leave out (concord raises no alarms yet, so none can fail the
/// check).
#[derive(Debug, serde::Deserialize)]
pub struct HealthQuery {
    serializable: Option<String>,
}

/// `GET /health`: `{"health":"true","reason":""}` with 200, or
/// `"false"` and the reason with 503: no leader (`RAFT NO LEADER`, not
/// checked with `serializable=true`), or a read that fails or takes over a
/// second (`RANGE ERROR:...`).
pub async fn health(
    method: Method,
    State(member): State<Handle>,
    Query(q): Query<HealthQuery>,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let serializable = q.serializable.as_deref() == Some("true");
    let reason = check_health(&member, serializable).await;
    let body = serde_json::json!({
        "health": if reason.is_none() { "true" } else { "false" },
        "reason": reason.clone().unwrap_or_default(),
    })
    .to_string();
    match reason {
        None => {
            METRICS.health_success.inc();
            (StatusCode::OK, body).into_response()
        }
        Some(_) => {
            METRICS.health_failures.inc();
            super::go_error(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}

/// Why the member is unhealthy, if it is (etcd 3.5's order: alarms, the
/// leader unless serializable, then a read).
async fn check_health(member: &Handle, serializable: bool) -> Option<String> {
    if !serializable && member.progress().leader == 0 {
        return Some("RAFT NO LEADER".into());
    }
    read_check(member, serializable)
        .await
        .err()
        .map(|e| format!("RANGE ERROR:{e}"))
}

/// etcd's health read (a keys-only range of one key): from this member's
/// own store, or linearizable (a read index), within a second.
async fn read_check(member: &Handle, serializable: bool) -> Result<(), String> {
    if serializable {
        let req = RangeRequest {
            key: vec![0],
            keys_only: true,
            limit: 1,
            serializable: true,
            ..Default::default()
        };
        return member
            .store()
            .range(&req)
            .map(|_| ())
            .map_err(|e| tonic::Status::from(e).message().to_string());
    }
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, member.read_index()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(tonic::Status::from(e).message().to_string()),
        Err(_) => Err("context deadline exceeded".into()),
    }
}

/// A check of `/livez` or `/readyz`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    SerializableRead,
    LinearizableRead,
    DataCorruption,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::DataCorruption => "data_corruption",
        }
    }

    async fn run(self, member: &Handle) -> Result<(), String> {
        match self {
            Check::SerializableRead => read_check(member, true).await,
            Check::LinearizableRead => read_check(member, false).await,
            // A CORRUPT alarm: concord raises none at run time yet (the
            // initial corruption check stops the member instead).
            Check::DataCorruption => Ok(()),
        }
    }
}

/// etcd 3.5's checks: `/livez` only reads locally (a member that answers
/// is alive); `/readyz` also needs no CORRUPT alarm and a linearizable
/// read.
const LIVEZ: &[Check] = &[Check::SerializableRead];
const READYZ: &[Check] = &[
    Check::DataCorruption,
    Check::SerializableRead,
    Check::LinearizableRead,
];

/// `GET /livez` (`livez` true) or `/readyz`, with `?exclude=<check>`
/// (repeatable; unknown names are ignored, as etcd does for compatibility)
/// and `?verbose` (any value).
pub async fn probe(method: Method, livez: bool, member: &Handle, query: Option<&str>) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let mut excluded = Vec::new();
    let mut verbose = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "verbose" => verbose = true,
            "exclude" if !v.is_empty() => excluded.push(v.to_string()),
            _ => {}
        }
    }
    let all = if livez { LIVEZ } else { READYZ };
    let unknown: Vec<&String> = excluded
        .iter()
        .filter(|e| !all.iter().any(|c| c.name() == e.as_str()))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(missing_health_checks = ?unknown, "some health checks cannot be excluded");
    }
    let checks: Vec<Check> = all
        .iter()
        .copied()
        .filter(|c| !excluded.iter().any(|e| e == c.name()))
        .collect();
    run_checks(livez, member, &checks, verbose).await
}

/// `GET /livez/<check>` or `/readyz/<check>`: that check alone.
pub async fn probe_one(method: Method, livez: bool, member: &Handle, name: &str) -> Response {
    let all = if livez { LIVEZ } else { READYZ };
    let Some(check) = all.iter().copied().find(|c| c.name() == name) else {
        return super::not_found();
    };
    if method != Method::GET {
        return method_not_allowed();
    }
    run_checks(livez, member, &[check], false).await
}

async fn run_checks(livez: bool, member: &Handle, checks: &[Check], verbose: bool) -> Response {
    let kind = if livez { "livez" } else { "readyz" };
    let mut lines = String::new();
    let mut failed = false;
    for &c in checks {
        let result = c.run(member).await;
        METRICS
            .healthcheck
            .with_label_values(&[kind, c.name()])
            .set(i64::from(result.is_ok()));
        METRICS
            .healthchecks_total
            .with_label_values(&[
                kind,
                c.name(),
                if result.is_ok() { "success" } else { "error" },
            ])
            .inc();
        match result {
            Ok(()) => lines.push_str(&format!("[+]{} ok\n", c.name())),
            Err(e) => {
                failed = true;
                lines.push_str(&format!("[-]{} failed: {e}\n", c.name()));
            }
        }
    }
    if failed {
        return super::go_error(StatusCode::SERVICE_UNAVAILABLE, &lines);
    }
    // Written as etcd writes it: the lines (verbose), then "ok", through
    // the same plain-text writer as a failure.
    let body = if verbose {
        format!("{lines}ok")
    } else {
        "ok".into()
    };
    super::go_error(StatusCode::OK, &body)
}
