//! The gateway's streams, as grpc-gateway serves them: `/v3/watch` and
//! `/v3/lease/keepalive` take a body of JSON requests one after another
//! (each sent on to the stream; a first one that is malformed fails the
//! call, a later one ends the requests); `/v3/election/observe` and
//! `/v3/maintenance/snapshot` take one. Every response is written as
//! `{"result":...}` and a newline, one HTTP chunk each, as it comes; an
//! error ends the body with `{"error":{"grpc_code",...}}`. Nothing is
//! written before the first response, so an error that comes first gets
//! its own HTTP status.
//!
//! Memory stays bounded: the request body is read up to a limit, and a
//! client that stops reading stops the response stream, whose service
//! then sees a slow consumer as a gRPC client would make it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use super::{error, go_error, http_status, json, max_body, read_body, Services};
use crate::api::caller::Credentials;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::v3electionpb::election_server::Election;

/// Adds the stream routes under `prefix`.
pub(super) fn routes(mut r: Router, prefix: &str, s: &Arc<Services>) -> Router {
    let svc = s.clone();
    r = r.route(
        &format!("{prefix}/watch"),
        any(move |method: Method, headers: HeaderMap, body: Body| {
            let s = svc.clone();
            async move {
                let cred = Credentials::of(&super::metadata(&headers, ()));
                client_stream(method, body, s.max_message, |reqs| s.watch.open(cred, reqs)).await
            }
        }),
    );
    let svc = s.clone();
    r = r.route(
        &format!("{prefix}/lease/keepalive"),
        any(move |method: Method, body: Body| {
            let s = svc.clone();
            async move {
                client_stream(method, body, s.max_message, |reqs| s.lease.keep_alive(reqs)).await
            }
        }),
    );
    let svc = s.clone();
    r = r.route(
        &format!("{prefix}/election/observe"),
        any(move |method: Method, headers: HeaderMap, body: Body| {
            let s = svc.clone();
            async move {
                server_stream(method, &headers, body, s.max_message, |req| async move {
                    s.election.observe(req).await
                })
                .await
            }
        }),
    );
    let svc = s.clone();
    r = r.route(
        &format!("{prefix}/maintenance/snapshot"),
        any(move |method: Method, headers: HeaderMap, body: Body| {
            let s = svc.clone();
            async move {
                server_stream(method, &headers, body, s.max_message, |req| async move {
                    s.maintenance.snapshot(req).await
                })
                .await
            }
        }),
    );
    r
}

/// The next request of a JSON body from `offset`, `None` at the end; a
/// malformed one is Unknown (grpc-gateway's answer to a malformed first
/// request; a later one just ends the requests, as the gateway's sender
/// goroutine ends), one over gRPC's message limit ResourceExhausted, as the
/// server would answer it.
fn next_request<T>(
    bytes: &[u8],
    offset: &mut usize,
    max_message: usize,
) -> Option<Result<T, Status>>
where
    T: DeserializeOwned + prost::Message,
{
    let mut values = serde_json::Deserializer::from_slice(bytes.get(*offset..)?).into_iter::<T>();
    let value = values.next()?;
    *offset += values.byte_offset();
    Some(match value {
        Ok(v) if v.encoded_len() <= max_message => Ok(v),
        Ok(v) => Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({} vs. {max_message})",
            v.encoded_len()
        ))),
        Err(e) => Err(Status::unknown(super::decode_error(&e))),
    })
}

/// A client-streaming call (watch, keep-alive). The body is read whole (up
/// to its limit) and decoded one request at a time, as the stream takes
/// them: a malformed first request is an error (Unknown, 500, as
/// grpc-gateway answers), a request over the message limit fails the call
/// (first) or ends the response with the error (later).
async fn client_stream<Req, Resp, S>(
    method: Method,
    body: Body,
    max_message: usize,
    open: impl FnOnce(std::pin::Pin<Box<dyn Stream<Item = Result<Req, Status>> + Send>>) -> S,
) -> Response
where
    Req: DeserializeOwned + prost::Message + 'static,
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
{
    if method != Method::POST {
        return go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let bytes = match read_body(body, max_body(max_message)).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let mut offset = 0;
    let first = match next_request::<Req>(&bytes, &mut offset, max_message) {
        Some(Err(e)) => return error(&e),
        first => first,
    };
    // A later oversized request: the requests end and so does the
    // response, with the error.
    let (abort_tx, abort_rx) = tokio::sync::oneshot::channel::<Status>();
    let mut abort_tx = Some(abort_tx);
    let rest = futures::stream::unfold((bytes, offset), move |(bytes, mut offset)| {
        let next = next_request::<Req>(&bytes, &mut offset, max_message);
        let item = match next {
            Some(Err(e)) if e.code() == tonic::Code::ResourceExhausted => {
                if let Some(tx) = abort_tx.take() {
                    let _ = tx.send(e);
                }
                None
            }
            Some(Ok(r)) => Some(Ok(r)),
            // The end, or a malformed request (which ends the requests
            // quietly): no abort is coming, and the response may end.
            Some(Err(_)) | None => {
                abort_tx = None;
                None
            }
        };
        futures::future::ready(item.map(|r| (r, (bytes, offset))))
    });
    let requests = futures::stream::iter(first).chain(rest);
    let responses = open(Box::pin(requests));
    // Yields the abort's error, or nothing once the requests ended well.
    let aborted =
        futures::stream::once(abort_rx).filter_map(|r| futures::future::ready(r.ok().map(Err)));
    respond(futures::stream::select(responses, Box::pin(aborted))).await
}

/// A server-streaming call (observe, snapshot): one request, a stream of
/// responses.
async fn server_stream<Req, Resp, S, F, Fut>(
    method: Method,
    headers: &HeaderMap,
    body: Body,
    max_message: usize,
    call: F,
) -> Response
where
    Req: DeserializeOwned + Default + prost::Message,
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<S>, Status>>,
{
    match super::call_once(method, headers, body, max_message, call).await {
        Ok(stream) => respond(stream).await,
        Err(response) => response,
    }
}

/// `{"result":...}` and a newline.
fn result_line<T: Serialize>(message: &T) -> Bytes {
    #[derive(Serialize)]
    struct Wrapped<'a, T> {
        result: &'a T,
    }
    let mut out = serde_json::to_vec(&Wrapped { result: message }).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// grpc-gateway's stream error: no newline after it.
fn error_object(status: &Status) -> Bytes {
    #[derive(Serialize)]
    struct Inner<'a> {
        grpc_code: i32,
        http_code: u16,
        message: &'a str,
        http_status: &'a str,
    }
    #[derive(Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    let http = http_status(status.code());
    Bytes::from(
        serde_json::to_vec(&Outer {
            error: Inner {
                grpc_code: status.code() as i32,
                http_code: http.as_u16(),
                message: status.message(),
                http_status: http.canonical_reason().unwrap_or(""),
            },
        })
        .unwrap_or_default(),
    )
}

/// The response of a stream: nothing until its first message (an error
/// first sets the HTTP status), then each message as it comes.
async fn respond<T, S>(mut stream: S) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let first = match stream.next().await {
        Some(Err(e)) => {
            return json(http_status(e.code()), error_object(&e).to_vec());
        }
        first => first,
    };
    let chunks = futures::stream::iter(first)
        .chain(stream)
        .scan(false, |ended, item| {
            if *ended {
                return futures::future::ready(None);
            }
            let chunk = match item {
                Ok(m) => result_line(&m),
                Err(e) => {
                    *ended = true;
                    error_object(&e)
                }
            };
            futures::future::ready(Some(Ok::<_, Infallible>(chunk)))
        });
    let mut r = json(StatusCode::OK, Vec::new());
    *r.body_mut() = Body::from_stream(chunks);
    r
}
