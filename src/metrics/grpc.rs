//! The gRPC server metrics of go-grpc-prometheus, which etcd exports:
//! `grpc_server_started_total`, `grpc_server_handled_total` (with
//! `grpc_code`), `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`
//! and, with `--metrics extensive`, `grpc_server_handling_seconds`; labelled
//! `grpc_type`, `grpc_service`, `grpc_method`, and registered at zero for
//! every method served. Also etcd's `etcd_server_client_requests_total` and
//! the client gRPC byte counters.
//!
//! Counted by `Track`, a middleware on the client router: it sees each
//! request's path and headers, counts messages as the gRPC frames of the
//! request and response bodies pass (5-byte length prefixes), and takes the
//! code from the grpc-status in the response headers (an error answered at
//! once) or trailers (the end of a stream). A stream the client drops before
//! its status counts as Canceled, as grpc-go reports it.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use super::METRICS;

/// gRPC's codes by number, named as grpc-go names them.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// Every method a member serves, with its kind (go-grpc-prometheus's
/// `grpc_type`).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
];

/// One method's counters, looked up once at start.
struct Method {
    stream: bool,
    started: IntCounter,
    received: IntCounter,
    sent: IntCounter,
    handled: Vec<IntCounter>,
    seconds: Option<Histogram>,
}

/// The methods by path (`/service/method`), sorted by path.
static TABLE: OnceLock<Vec<(String, Method)>> = OnceLock::new();

/// Registers the families and every method's series at zero; with
/// `extensive`, the handling-time histogram too (etcd's `--metrics`).
/// Called once, before serving; later calls change nothing.
pub fn init(extensive: bool) {
    TABLE.get_or_init(|| build(extensive));
}

fn build(extensive: bool) -> Vec<(String, Method)> {
    let r = METRICS.registry();
    let labels = ["grpc_type", "grpc_service", "grpc_method"];
    let vec = |name: &str, help: &str, extra: &[&'static str]| {
        let all: Vec<&str> = labels.iter().chain(extra).copied().collect();
        super::reg(
            r,
            IntCounterVec::new(Opts::new(name, help), &all).expect("valid metric"),
        )
    };
    let started = vec(
        "grpc_server_started_total",
        "Total number of RPCs started on the server.",
        &[],
    );
    let handled = vec(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        &["grpc_code"],
    );
    let received = vec(
        "grpc_server_msg_received_total",
        "Total number of RPC stream messages received on the server.",
        &[],
    );
    let sent = vec(
        "grpc_server_msg_sent_total",
        "Total number of gRPC stream messages sent by the server.",
        &[],
    );
    let seconds = extensive.then(|| {
        super::reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been \
                     application-level handled by the server.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &labels,
            )
            .expect("valid metric"),
        )
    });
    let mut table = METHODS
        .iter()
        .map(|&(service, method, kind)| {
            let l = [kind, service, method];
            let m = Method {
                stream: kind != "unary",
                started: started.with_label_values(&l),
                received: received.with_label_values(&l),
                sent: sent.with_label_values(&l),
                handled: CODES
                    .iter()
                    .map(|code| handled.with_label_values(&[kind, service, method, code]))
                    .collect(),
                seconds: seconds.as_ref().map(|h| h.with_label_values(&l)),
            };
            (format!("/{service}/{method}"), m)
        })
        .collect::<Vec<_>>();
    table.sort_by(|a, b| a.0.cmp(&b.0));
    table
}

/// The middleware, as a tower layer on the client router: counts a gRPC
/// request and its messages; passes everything else through untouched.
/// Hand-written (no boxed future per request, a sorted table instead of a
/// hashed one, the client-version counter cached per thread): it runs on
/// every request.
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Tracked<S::Future> {
        let Some(method) = lookup(request.uri().path()) else {
            return Tracked {
                inner: self.inner.call(request),
                method: None,
                start: None,
            };
        };
        let version = request
            .headers()
            .get("client-api-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        client_requests(method.stream, version).inc();
        method.started.inc();
        let start = Instant::now();
        let request = request.map(|b| {
            Body::new(Counted {
                inner: b,
                frames: Frames::default(),
                method,
                side: Side::Received,
                done: true,
                start,
            })
        });
        Tracked {
            inner: self.inner.call(request),
            method: Some(method),
            start: Some(start),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a tracked call, its body counted as it is sent. A
    /// call dropped before its response (the client went, a deadline) is
    /// handled as Canceled, as grpc-go reports it.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        // Taken when the response comes: what is left at drop was cut off.
        method: Option<&'static Method>,
        start: Option<Instant>,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(method), Some(start)) = (this.method.take(), *this.start) {
                finish(method, CANCELED, start);
            }
        }
    }
}

impl<F, E> std::future::Future for Tracked<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Ready(Ok(r)) => r,
            other => return other,
        };
        let (Some(method), Some(start)) = (this.method.take(), *this.start) else {
            return Poll::Ready(Ok(response));
        };
        let at_once = status_code(response.headers());
        if let Some(code) = at_once {
            finish(method, code, start);
        }
        Poll::Ready(Ok(response.map(|b| {
            Body::new(Counted {
                inner: b,
                frames: Frames::default(),
                method,
                side: Side::Sent,
                done: at_once.is_some(),
                start,
            })
        })))
    }
}

/// A served method by path.
fn lookup(path: &str) -> Option<&'static Method> {
    let table = TABLE.get()?;
    table
        .binary_search_by(|(p, _)| p.as_str().cmp(path))
        .ok()
        .map(|i| &table[i].1)
}

thread_local! {
    /// `etcd_server_client_requests_total` by (stream, client version):
    /// clients send a handful of versions, looked up here without a lock.
    static CLIENT_REQUESTS: std::cell::RefCell<Vec<(bool, String, IntCounter)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn client_requests(stream: bool, version: &str) -> IntCounter {
    CLIENT_REQUESTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, _, c)) = cache.iter().find(|(s, v, _)| *s == stream && v == version) {
            return c.clone();
        }
        let c = METRICS
            .client_requests
            .with_label_values(&[if stream { "stream" } else { "unary" }, version]);
        // Bounded: a client sending ever new versions goes to the registry.
        if cache.len() < 16 {
            cache.push((stream, version.to_string(), c.clone()));
        }
        c
    })
}

/// The grpc-status in a header map, as an index into `CODES`.
fn status_code(headers: &axum::http::HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    let n: usize = v.to_str().ok()?.parse().ok()?;
    Some(if n < CODES.len() { n } else { UNKNOWN })
}

fn finish(method: &Method, code: usize, start: Instant) {
    method.handled[code].inc();
    if let Some(h) = &method.seconds {
        h.observe(start.elapsed().as_secs_f64());
    }
}

/// Which way a body flows.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Received,
    Sent,
}

/// Splits a byte stream into gRPC frames (1 flag byte, 4 length bytes,
/// the message).
#[derive(Default)]
struct Frames {
    header: [u8; 5],
    have: usize,
    payload_left: u64,
}

impl Frames {
    /// Consumes `data`: the number of messages that started in it and their
    /// lengths in bytes.
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = (data.len() as u64).min(self.payload_left);
                self.payload_left -= n;
                data = &data[n as usize..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.payload_left = u64::from(len);
                messages += 1;
                bytes += u64::from(len);
            }
        }
        (messages, bytes)
    }
}

/// A body whose gRPC messages are counted as they pass.
struct Counted {
    inner: Body,
    frames: Frames,
    method: &'static Method,
    side: Side,
    /// Whether the RPC's outcome is counted (always, for requests).
    done: bool,
    start: Instant,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let (messages, bytes) = this.frames.feed(data);
                    match this.side {
                        Side::Received => {
                            this.method.received.inc_by(messages);
                            METRICS.client_grpc_received_bytes.inc_by(bytes);
                        }
                        Side::Sent => {
                            this.method.sent.inc_by(messages);
                            METRICS.client_grpc_sent_bytes.inc_by(bytes);
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    if !this.done {
                        this.done = true;
                        let code = status_code(trailers).unwrap_or(UNKNOWN);
                        finish(this.method, code, this.start);
                    }
                }
            }
            Poll::Ready(None) if !this.done => {
                // A body that ends without a status: grpc-go reports the
                // RPC as unknown.
                this.done = true;
                finish(this.method, UNKNOWN, this.start);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.done {
            finish(self.method, CANCELED, self.start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    /// gRPC frames of `lens` payload bytes, back to back.
    fn frames(lens: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &len in lens {
            out.push(0);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, len as usize));
        }
        out
    }

    #[test]
    fn messages_are_counted_however_the_bytes_are_split() {
        let wire = frames(&[0, 3, 300, 1, 70_000]);
        for chunk in [1, 2, 4, 5, 6, 7, 64, 1000, wire.len()] {
            let mut f = Frames::default();
            let (mut messages, mut bytes) = (0, 0);
            for piece in wire.chunks(chunk) {
                let (m, b) = f.feed(piece);
                messages += m;
                bytes += b;
            }
            assert_eq!((messages, bytes), (5, 70_304), "chunks of {chunk}");
        }
    }
}
