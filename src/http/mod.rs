//! http: the HTTP/1.1 face of a member, served on every client URL next to
//! gRPC (a request that is HTTP/2 with `application/grpc` goes to gRPC,
//! everything else here), as etcd serves it: `/version` and `/health`
//! (`probes`). Not under madsim (madsim's tonic serves gRPC only).

mod probes;

use axum::routing::any;

use crate::member::Handle;

/// The HTTP routes of a member.
pub fn routes(member: Handle) -> axum::Router {
    axum::Router::new()
        .route("/version", any(probes::version))
        .route("/health", any(probes::health))
        .with_state(member)
}

/// Anything else: gRPC's "unimplemented" for gRPC requests, etcd's 404 for
/// the others.
pub async fn fallback(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    (axum::http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}
