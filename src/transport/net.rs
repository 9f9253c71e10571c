//! The one place where peer connections and the peer server are built, and
//! where the identity headers are written and read. Peer TLS goes here.
//!
//! Invariants: every client RPC carries [`CLUSTER_ID_HEADER`] and
//! [`MEMBER_ID_HEADER`] (lowercase hex); client and server accept messages
//! up to [`MESSAGE_BYTES_MAX`].

use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use super::{TransportError, MESSAGE_BYTES_MAX};
use crate::proto::concordpb::peer_client::PeerClient;

/// gRPC metadata naming the sender's cluster (hex).
pub const CLUSTER_ID_HEADER: &str = "x-concord-cluster-id";
/// gRPC metadata naming the sending member (hex).
pub const MEMBER_ID_HEADER: &str = "x-concord-member-id";

/// How long a connection attempt may take (etcd's peer dial timeout is 1 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on idle connections notice a silently dead peer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A ping unanswered this long closes the connection (etcd's read timeout).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts `http://host:port[/]` URLs only (TLS is a later step).
pub(crate) fn check_url(url: &str) -> Result<(), TransportError> {
    let invalid = |reason: &str| TransportError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("peer TLS is not supported yet")),
        _ => return Err(invalid("scheme must be http")),
    }
    match uri.authority() {
        Some(a) if a.port_u16().is_some() => Ok(()),
        _ => Err(invalid("a host and port are required")),
    }
}

/// Connects to a peer URL (checked by [`check_url`]).
pub(crate) async fn connect(url: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(url.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await?;
    Ok(PeerClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

/// `e` and its sources, `: `-separated (tonic's transport errors say only
/// "transport error" at the top).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `body` as a request carrying the sender's identity.
pub(crate) fn request<T>(body: T, cluster_id: u64, member_id: u64) -> Request<T> {
    let mut request = Request::new(body);
    let md = request.metadata_mut();
    md.insert(CLUSTER_ID_HEADER, hex_value(cluster_id));
    md.insert(MEMBER_ID_HEADER, hex_value(member_id));
    request
}

fn hex_value(id: u64) -> MetadataValue<tonic::metadata::Ascii> {
    // Lowercase hex digits are always a valid ASCII header value.
    MetadataValue::try_from(format!("{id:x}")).expect("hex digits are visible ASCII")
}

/// Reads a hex ID header; `INVALID_ARGUMENT` if absent or malformed.
fn hex_header(md: &MetadataMap, name: &str) -> Result<u64, Status> {
    let value = md
        .get(name)
        .ok_or_else(|| Status::invalid_argument(format!("missing {name}")))?;
    value
        .to_str()
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| Status::invalid_argument(format!("malformed {name}")))
}

/// The sending member's ID, after checking that it belongs to `cluster_id`
/// (`PERMISSION_DENIED` otherwise, as etcd rejects another cluster's peers).
pub(crate) fn check_identity(md: &MetadataMap, cluster_id: u64) -> Result<u64, Status> {
    let remote_cluster = hex_header(md, CLUSTER_ID_HEADER)?;
    let member = hex_header(md, MEMBER_ID_HEADER)?;
    if remote_cluster != cluster_id {
        tracing::warn!(
            remote_member = %format_args!("{member:x}"),
            remote_cluster = %format_args!("{remote_cluster:x}"),
            local_cluster = %format_args!("{cluster_id:x}"),
            "rejected a peer of another cluster"
        );
        return Err(Status::permission_denied(format!(
            "cluster ID mismatch: got {remote_cluster:x}, want {cluster_id:x}"
        )));
    }
    Ok(member)
}

/// Asks the member at peer URL `url` for its cluster's members (joining a
/// cluster with --initial-cluster-state existing).
pub async fn fetch_members(
    url: &str,
) -> Result<crate::proto::etcdserverpb::MemberListResponse, String> {
    check_url(url).map_err(|e| e.to_string())?;
    let mut client = connect(url).await.map_err(|e| error_chain(&e))?;
    client
        .members(crate::proto::concordpb::MembersRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases = [
            ("http://127.0.0.1:2380", true),
            ("http://node-1.example:2380/", true),
            ("https://127.0.0.1:2380", false),
            ("http://127.0.0.1", false),
            ("127.0.0.1:2380", false),
            ("unix:///tmp/x", false),
            ("", false),
        ];
        for (i, (url, ok)) in cases.into_iter().enumerate() {
            let got = check_url(url);
            assert_eq!(
                got.is_ok(),
                ok,
                "case #{i} {url:?}: got {got:?}, want ok={ok}"
            );
        }
    }

    #[test]
    fn identity_headers() {
        let req = request((), 0xabc, 0x12);
        let got = check_identity(req.metadata(), 0xabc).map_err(|s| s.code());
        assert_eq!(got, Ok(0x12));
        let got = check_identity(req.metadata(), 0xabd).map_err(|s| s.code());
        assert_eq!(got, Err(tonic::Code::PermissionDenied));
        let got = check_identity(&MetadataMap::new(), 0xabc).map_err(|s| s.code());
        assert_eq!(got, Err(tonic::Code::InvalidArgument));
        let mut md = MetadataMap::new();
        md.insert(CLUSTER_ID_HEADER, MetadataValue::from_static("xyz"));
        md.insert(MEMBER_ID_HEADER, MetadataValue::from_static("1"));
        let got = check_identity(&md, 0xabc).map_err(|s| s.code());
        assert_eq!(got, Err(tonic::Code::InvalidArgument));
    }
}
