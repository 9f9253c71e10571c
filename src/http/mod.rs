//! http: the HTTP/1.1 face of a member, served on every client URL next to
//! gRPC (a request that is HTTP/2 with `application/grpc` goes to gRPC,
//! everything else here), as etcd serves it: `/version` and `/health`
//! (`probes`). Not under madsim (madsim's tonic serves gRPC only).

mod gateway;
mod metrics;
mod probes;

use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::member::Handle;

/// The HTTP routes of a member's client URLs: the probes, `/metrics`, and
/// (`--enable-grpc-gateway`) the JSON gateway.
pub fn routes(member: Handle, cfg: &crate::config::Config) -> axum::Router {
    let r = axum::Router::new()
        .route("/version", any(probes::version))
        .merge(metrics_routes(member.clone()));
    if cfg.enable_grpc_gateway {
        r.merge(gateway::routes(
            member,
            cfg.max_txn_ops,
            cfg.max_concurrent_streams,
            cfg.bcrypt_cost,
        ))
    } else {
        r
    }
}

/// The routes of a `--listen-metrics-urls` listener, also on the client
/// URLs: `/metrics` and the health probes, as etcd serves them there.
pub fn metrics_routes(member: Handle) -> axum::Router {
    axum::Router::new()
        .route("/health", any(probes::health))
        .route("/livez", any(livez))
        .route("/readyz", any(readyz))
        .route("/livez/{check}", any(livez_one))
        .route("/readyz/{check}", any(readyz_one))
        .route("/metrics", any(metrics::metrics))
        .with_state(member)
}

async fn livez(method: Method, State(m): State<Handle>, RawQuery(q): RawQuery) -> Response {
    probes::probe(method, true, &m, q.as_deref()).await
}

async fn readyz(method: Method, State(m): State<Handle>, RawQuery(q): RawQuery) -> Response {
    probes::probe(method, false, &m, q.as_deref()).await
}

async fn livez_one(method: Method, State(m): State<Handle>, Path(c): Path<String>) -> Response {
    probes::probe_one(method, true, &m, &c).await
}

async fn readyz_one(method: Method, State(m): State<Handle>, Path(c): Path<String>) -> Response {
    probes::probe_one(method, false, &m, &c).await
}

/// Go's `http.Error`: the text and a newline, as plain text the browser
/// must not sniff (etcd's probes and grpc-gateway's routing errors).
pub(crate) fn go_error(status: axum::http::StatusCode, text: &str) -> Response {
    use axum::http::header;
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

/// Go's ServeMux answer to an unknown path.
pub(crate) fn not_found() -> Response {
    (axum::http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Anything else: gRPC's "unimplemented" for gRPC requests, etcd's 404 for
/// the others.
pub async fn fallback(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    not_found()
}
