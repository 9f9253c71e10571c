//! The one place where peer connections are made, and where the identity
//! headers are written and read. `https` peers are reached over TLS with
//! the member's [`Dialer`] (see `crate::tls`).
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

/// How this member reaches its peers: plain http, and https when peer TLS
/// is configured. Cheap to clone.
#[derive(Clone, Default)]
pub struct Dialer {
    #[cfg(not(madsim))]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The TLS server name to use instead of each URL's host.
    #[cfg(not(madsim))]
    server_name: Option<String>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.has_tls())
            .finish()
    }
}

impl Dialer {
    /// Plain http only.
    pub fn plain() -> Dialer {
        Dialer::default()
    }

    /// http, and https with `identity`'s client configuration.
    #[cfg(not(madsim))]
    pub fn with_tls(identity: &crate::tls::TlsIdentity) -> Result<Dialer, crate::tls::TlsError> {
        Ok(Dialer {
            tls: Some(identity.client_config()?),
            server_name: None,
        })
    }

    /// http, and https with this client configuration.
    #[cfg(not(madsim))]
    pub fn with_client_config(config: std::sync::Arc<rustls::ClientConfig>) -> Dialer {
        Dialer {
            tls: Some(config),
            server_name: None,
        }
    }

    /// This dialer, naming `name` as the TLS server of every https URL (as
    /// etcd names the `--discovery-srv` domain for peers found in DNS
    /// without a trusted CA).
    #[cfg(not(madsim))]
    pub fn with_server_name(mut self, name: &str) -> Dialer {
        self.server_name = Some(name.to_string());
        self
    }

    pub fn has_tls(&self) -> bool {
        #[cfg(not(madsim))]
        return self.tls.is_some();
        #[cfg(madsim)]
        false
    }

    /// Accepts `http://host:port[/]` URLs, and `https` ones when this
    /// dialer has TLS.
    pub(crate) fn check_url(&self, url: &str) -> Result<(), TransportError> {
        check_url(url, self.has_tls())
    }

    /// Connects to a peer URL (checked by [`Dialer::check_url`]).
    pub(crate) async fn connect(
        &self,
        url: &str,
    ) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        let channel = self.channel(url).await?;
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// A gRPC channel to `url` (http, or https with this dialer's TLS).
    pub async fn channel(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        self.channel_tuned(url, |e| e).await
    }

    /// [`Dialer::channel`] with the endpoint's settings changed by `tune`
    /// (timeouts, keep-alives).
    pub async fn channel_tuned(
        &self,
        url: &str,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, tonic::transport::Error> {
        let tls_url = url.strip_prefix("https://");
        // tonic refuses an https URI without its own TLS config, so the
        // channel sees http and the connector below does the TLS.
        let plain_url = match tls_url {
            Some(rest) => format!("http://{rest}"),
            None => url.to_string(),
        };
        let endpoint = Endpoint::from_shared(plain_url)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let endpoint = tune(endpoint);
        #[cfg(not(madsim))]
        let channel = match (&self.tls, tls_url) {
            (Some(tls), Some(_)) => {
                let tls = tls.clone();
                let server_name = self.server_name.clone();
                let connector = tower::service_fn(move |uri: Uri| {
                    let tls = tls.clone();
                    let server_name = server_name.clone();
                    async move {
                        let connect = crate::tls::connect(tls, &uri, server_name.as_deref());
                        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                            .await
                            .map_err(|_| {
                                std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "TLS connect timed out",
                                )
                            })??;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                });
                endpoint.connect_with_connector(connector).await?
            }
            _ => endpoint.connect().await?,
        };
        #[cfg(madsim)]
        let channel = {
            let _ = tls_url;
            endpoint.connect().await?
        };
        Ok(channel)
    }
}

/// Accepts `http://host:port[/]` URLs, and `https` ones if `tls`.
fn check_url(url: &str, tls: bool) -> Result<(), TransportError> {
    let invalid = |reason: &str| TransportError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if tls => {}
        Some("https") => {
            return Err(invalid(
                "https peers need peer TLS (--peer-auto-tls or --peer-cert-file/--peer-key-file)",
            ))
        }
        _ => return Err(invalid("scheme must be http or https")),
    }
    match uri.authority() {
        Some(a) if a.port_u16().is_some() => Ok(()),
        _ => Err(invalid("a host and port are required")),
    }
}

/// `e` and its sources, `: `-separated (tonic's transport errors say only
/// "transport error" at the top).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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
    dialer: &Dialer,
    url: &str,
) -> Result<crate::proto::etcdserverpb::MemberListResponse, String> {
    dialer.check_url(url).map_err(|e| e.to_string())?;
    let mut client = dialer.connect(url).await.map_err(|e| error_chain(&e))?;
    client
        .members(crate::proto::concordpb::MembersRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.to_string())
}

/// Asks the member at peer URL `url` for its KV hash at `revision`, as
/// member `member_id` of `cluster_id` (an initial corruption check).
pub async fn fetch_hash_kv(
    dialer: &Dialer,
    url: &str,
    revision: i64,
    cluster_id: u64,
    member_id: u64,
) -> Result<crate::proto::etcdserverpb::HashKvResponse, Status> {
    dialer
        .check_url(url)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut client = dialer
        .connect(url)
        .await
        .map_err(|e| Status::unavailable(error_chain(&e)))?;
    client
        .hash_kv(request(
            crate::proto::etcdserverpb::HashKvRequest { revision },
            cluster_id,
            member_id,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        // (url, accepted without TLS, accepted with TLS)
        let cases = [
            ("http://127.0.0.1:2380", true, true),
            ("http://node-1.example:2380/", true, true),
            ("https://127.0.0.1:2380", false, true),
            ("http://127.0.0.1", false, false),
            ("https://127.0.0.1", false, false),
            ("127.0.0.1:2380", false, false),
            ("unix:///tmp/x", false, false),
            ("", false, false),
        ];
        for (i, (url, plain, tls)) in cases.into_iter().enumerate() {
            for (with_tls, want) in [(false, plain), (true, tls)] {
                let got = check_url(url, with_tls);
                assert_eq!(
                    got.is_ok(),
                    want,
                    "case #{i} {url:?} tls={with_tls}: got {got:?}, want ok={want}"
                );
            }
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
