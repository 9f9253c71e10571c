//! `/version` and `/health`, as etcd 3.5 answers them.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{CLUSTER_VERSION, SERVER_VERSION};
use crate::member::Handle;

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

/// `/health`'s query: `serializable=true` checks this member's own store
/// instead of a linearizable read; `exclude=ALARM` leaves an alarm out
/// (concord raises no alarms yet, so none can fail the check).
#[derive(Debug, serde::Deserialize)]
pub struct HealthQuery {
    serializable: Option<String>,
}

/// `GET /health`: `{"health":"true","reason":""}` with 200, or
/// `"false"` and the reason with 503: no leader (`RAFT NO LEADER`), or a
/// linearizable read that fails or takes over a second (`RANGE ERROR:...`).
pub async fn health(
    method: Method,
    State(member): State<Handle>,
    Query(q): Query<HealthQuery>,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let serializable = q.serializable.as_deref() == Some("true");
    let reason = check(&member, serializable).await;
    let body = serde_json::json!({
        "health": if reason.is_none() { "true" } else { "false" },
        "reason": reason.clone().unwrap_or_default(),
    })
    .to_string();
    match reason {
        None => (StatusCode::OK, body).into_response(),
        // Go's http.Error: text/plain and a newline.
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("{body}\n")).into_response(),
    }
}

/// Why the member is unhealthy, if it is.
async fn check(member: &Handle, serializable: bool) -> Option<String> {
    if member.progress().leader == 0 {
        return Some("RAFT NO LEADER".into());
    }
    if serializable {
        return None;
    }
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, member.read_index()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("RANGE ERROR:{}", tonic::Status::from(e).message())),
        Err(_) => Some("RANGE ERROR:context deadline exceeded".into()),
    }
}
