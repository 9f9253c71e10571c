//! gateway: etcd's grpc-gateway, the JSON face of the gRPC API on the
//! client URLs (`POST /v3/...`, and `/v3beta/...` as 3.4 and 3.5 keep it).
//!
//! Each method has one implementation: the gateway decodes the JSON
//! request, calls the same service code gRPC calls, in process, and
//! encodes the answer. The JSON mapping is generated from the protos by
//! pbjson (see build.rs), as grpc-gateway's default marshaler writes it:
//! proto field names, 64-bit integers as strings, bytes as base64, enums
//! by name, default values left out; unknown request fields are ignored.
//!
//! Errors as grpc-gateway 1.16 (etcd 3.5) writes them: the HTTP status
//! from the gRPC code and `{"error":msg,"code":n,"message":msg}`; a path
//! that is not a method is `Not Found`, a method other than POST is
//! `Method Not Allowed`. Streams are in `stream`.

mod stream;

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use super::go_error;
use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::member::Handle;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3lockpb::lock_server::Lock;

/// The services the gateway calls, and the request limits.
struct Services {
    kv: KvService,
    lease: LeaseService,
    cluster: ClusterService,
    maintenance: MaintenanceService,
    watch: WatchService,
    lock: LockService,
    election: ElectionService,
    auth: AuthService,
    /// Largest request message (gRPC's limit, `--max-request-bytes` +
    /// 512 KiB).
    max_message: usize,
}

/// How much JSON a request body may hold: base64 makes bytes 4/3 larger,
/// and field names and quotes add some; beyond this the message cannot
/// fit `max_message`.
fn max_body(max_message: usize) -> usize {
    max_message.saturating_mul(2).saturating_add(64 * 1024)
}

/// The gateway's routes, under `/v3/` and `/v3beta/`. etcd's gateway
/// reaches its server over one gRPC connection per listener, so its calls
/// share that connection's `--max-concurrent-streams`: a call beyond it
/// waits until one ends (a stream holds its place until its response
/// ends).
pub fn routes(
    member: Handle,
    max_txn_ops: usize,
    max_concurrent_streams: u32,
    bcrypt_cost: u32,
) -> Router {
    let max_message = crate::api::max_recv_bytes(member.config().max_request_bytes);
    let s = Arc::new(Services {
        kv: KvService::new(member.clone(), max_txn_ops),
        lease: LeaseService::new(member.clone()),
        cluster: ClusterService::new(member.clone()),
        maintenance: MaintenanceService::new(member.clone()),
        watch: WatchService::new(member.clone()),
        lock: LockService::new(member.clone()),
        election: ElectionService::new(member.clone()),
        auth: AuthService::new(member, bcrypt_cost),
        max_message,
    });
    let mut r = Router::new();
    for prefix in ["/v3", "/v3beta"] {
        macro_rules! unary {
            ($path:literal, $field:ident, $method:ident) => {{
                let s = s.clone();
                r = r.route(
                    &format!("{prefix}{}", $path),
                    any(move |method: Method, headers: HeaderMap, body: Body| {
                        let s = s.clone();
                        async move {
                            unary(method, &headers, body, s.max_message, |req| async move {
                                s.$field.$method(req).await
                            })
                            .await
                        }
                    }),
                );
            }};
        }
        unary!("/kv/range", kv, range);
        unary!("/kv/put", kv, put);
        unary!("/kv/deleterange", kv, delete_range);
        unary!("/kv/txn", kv, txn);
        unary!("/kv/compaction", kv, compact);
        unary!("/lease/grant", lease, lease_grant);
        unary!("/lease/revoke", lease, lease_revoke);
        unary!("/kv/lease/revoke", lease, lease_revoke);
        unary!("/lease/timetolive", lease, lease_time_to_live);
        unary!("/kv/lease/timetolive", lease, lease_time_to_live);
        unary!("/lease/leases", lease, lease_leases);
        unary!("/kv/lease/leases", lease, lease_leases);
        unary!("/cluster/member/add", cluster, member_add);
        unary!("/cluster/member/remove", cluster, member_remove);
        unary!("/cluster/member/update", cluster, member_update);
        unary!("/cluster/member/list", cluster, member_list);
        unary!("/cluster/member/promote", cluster, member_promote);
        unary!("/maintenance/alarm", maintenance, alarm);
        unary!("/maintenance/status", maintenance, status);
        unary!("/maintenance/defragment", maintenance, defragment);
        unary!("/maintenance/hash", maintenance, hash);
        unary!("/maintenance/hashkv", maintenance, hash_kv);
        unary!("/maintenance/downgrade", maintenance, downgrade);
        unary!("/maintenance/transfer-leadership", maintenance, move_leader);
        unary!("/lock/lock", lock, lock);
        unary!("/lock/unlock", lock, unlock);
        unary!("/election/campaign", election, campaign);
        unary!("/election/proclaim", election, proclaim);
        unary!("/election/leader", election, leader);
        unary!("/election/resign", election, resign);
        unary!("/auth/enable", auth, auth_enable);
        unary!("/auth/disable", auth, auth_disable);
        unary!("/auth/status", auth, auth_status);
        unary!("/auth/authenticate", auth, authenticate);
        unary!("/auth/user/add", auth, user_add);
        unary!("/auth/user/get", auth, user_get);
        unary!("/auth/user/list", auth, user_list);
        unary!("/auth/user/delete", auth, user_delete);
        unary!("/auth/user/changepw", auth, user_change_password);
        unary!("/auth/user/grant", auth, user_grant_role);
        unary!("/auth/user/revoke", auth, user_revoke_role);
        unary!("/auth/role/add", auth, role_add);
        unary!("/auth/role/get", auth, role_get);
        unary!("/auth/role/list", auth, role_list);
        unary!("/auth/role/delete", auth, role_delete);
        unary!("/auth/role/grant", auth, role_grant_permission);
        unary!("/auth/role/revoke", auth, role_revoke_permission);
        r = stream::routes(r, prefix, &s);
        // grpc-gateway's answer to a path that is not a method.
        r = r.route(
            &format!("{prefix}/{{*rest}}"),
            any(|| async { go_error(StatusCode::NOT_FOUND, "Not Found") }),
        );
    }
    let streams = Arc::new(tokio::sync::Semaphore::new(
        (max_concurrent_streams as usize).min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    r.route_layer(axum::middleware::from_fn_with_state(streams, stream_slot))
}

/// Holds one of the connection's streams for a call, until its response
/// body ends.
async fn stream_slot(
    axum::extract::State(streams): axum::extract::State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(slot) = streams.acquire_owned().await else {
        return error(&Status::unavailable("the gateway is closed"));
    };
    let response = next.run(request).await;
    response.map(|body| {
        Body::from_stream(futures::StreamExt::map(
            body.into_data_stream(),
            move |chunk| {
                let _held = &slot;
                chunk
            },
        ))
    })
}

/// grpc-gateway's HTTP status for a gRPC code (`HTTPStatusFromCode`).
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code as C;
    match code {
        C::Ok => StatusCode::OK,
        C::Cancelled => StatusCode::REQUEST_TIMEOUT,
        C::InvalidArgument | C::FailedPrecondition | C::OutOfRange => StatusCode::BAD_REQUEST,
        C::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        C::NotFound => StatusCode::NOT_FOUND,
        C::AlreadyExists | C::Aborted => StatusCode::CONFLICT,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        C::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::Unknown | C::Internal | C::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A gRPC error as grpc-gateway 1.16 answers it.
fn error(status: &Status) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        code: i32,
        message: &'a str,
    }
    let body = serde_json::to_vec(&Body {
        error: status.message(),
        code: status.code() as i32,
        message: status.message(),
    })
    .unwrap_or_default();
    json(http_status(status.code()), body)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The gRPC server's header, as the gateway passes it on.
    h.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// Reads a request body of at most `limit` bytes: a longer one is over
/// gRPC's message limit; a body that breaks off is InvalidArgument, as the
/// gateway's JSON decoder reports a read error.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Status> {
    let limited = http_body_util::Limited::new(body, limit);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::resource_exhausted(
            format!("grpc: received message larger than max (over {limit} bytes of JSON)"),
        )),
        Err(e) => Err(Status::invalid_argument(e.to_string())),
    }
}

/// Decodes one JSON request as the gateway does: an empty body is `{}`,
/// anything after the first JSON value is ignored, a malformed one is
/// InvalidArgument.
fn decode<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Status> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Option<T>>();
    match values.next() {
        None | Some(Ok(None)) => Ok(T::default()),
        Some(Ok(Some(v))) => Ok(v),
        Some(Err(e)) => Err(Status::invalid_argument(decode_error(&e))),
    }
}

/// A JSON decoding error's text: Go's for a truncated body, serde's
/// otherwise.
fn decode_error(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected EOF".into()
    } else {
        e.to_string()
    }
}

/// The gRPC metadata a gateway request carries: `Authorization` (as
/// `authorization`) and `Grpc-Metadata-*` headers.
fn metadata<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    for (name, value) in headers {
        let key = if name == header::AUTHORIZATION {
            "authorization"
        } else if let Some(k) = name.as_str().strip_prefix("grpc-metadata-") {
            k
        } else {
            continue;
        };
        let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.to_str().map(tonic::metadata::MetadataValue::try_from),
        ) else {
            continue;
        };
        if let Ok(v) = v {
            req.metadata_mut().insert(k, v);
        }
    }
    req
}

/// Checks a decoded request against gRPC's message size limit.
fn check_size<T: prost::Message>(message: &T, max: usize) -> Result<(), Status> {
    let len = message.encoded_len();
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {max})"
        )));
    }
    Ok(())
}

/// A call's one request: the body read, decoded and size-checked, with
/// the headers' metadata.
async fn request<Req>(
    headers: &HeaderMap,
    body: Body,
    max_message: usize,
) -> Result<tonic::Request<Req>, Status>
where
    Req: DeserializeOwned + Default + prost::Message,
{
    let bytes = read_body(body, max_body(max_message)).await?;
    let message: Req = decode(&bytes)?;
    check_size(&message, max_message)?;
    Ok(metadata(headers, message))
}

/// A call with one request (unary or server-streaming): POST only, the
/// body decoded, the service called; its answer, or the response that
/// reports why there is none.
async fn call_once<Req, Out, F, Fut>(
    method: Method,
    headers: &HeaderMap,
    body: Body,
    max_message: usize,
    call: F,
) -> Result<Out, Response>
where
    Req: DeserializeOwned + Default + prost::Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Out>, Status>>,
{
    if method != Method::POST {
        return Err(go_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        ));
    }
    let req = request(headers, body, max_message)
        .await
        .map_err(|e| error(&e))?;
    call(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| error(&e))
}

/// One unary call: the answer or its error encoded.
async fn unary<Req, Resp, F, Fut>(
    method: Method,
    headers: &HeaderMap,
    body: Body,
    max_message: usize,
    call: F,
) -> Response
where
    Req: DeserializeOwned + Default + prost::Message,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    match call_once(method, headers, body, max_message, call).await {
        Ok(r) => match serde_json::to_vec(&r) {
            Ok(body) => json(StatusCode::OK, body),
            Err(e) => error(&Status::internal(e.to_string())),
        },
        Err(response) => response,
    }
}
