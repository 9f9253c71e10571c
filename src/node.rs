//! node: assembles one member from a [`Config`]: its configuration, its
//! client gRPC router, its peer transport and peer service. Shared by the
//! daemon (`server`, real sockets and fjall) and the simulator (madsim
//! nodes and the in-memory backend), so both run the same wiring.

use std::sync::Arc;

use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::health::HealthService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::max_recv_bytes;
use crate::api::watch::WatchService;
use crate::cluster::{Bootstrap, ClusterError, Membership};
use crate::config::{Config, Discovery};
use crate::discovery::Found;
use crate::member::Observer;
use crate::member::{Handle, Member, MemberConfig, MemberError};
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::etcdserverpb::{HashKvResponse, MemberListResponse};
use crate::proto::grpc_health::health_server::HealthServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::transport::{
    fetch_members, Dialer, LocalState, PeerGrpcServer, Transport, TransportError,
};

/// How long one peer may take to answer a joining member.
const JOIN_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often unsynced watchers are caught up while any exist (etcd: 100 ms).
pub const WATCH_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Peer messages waiting for the member (etcd's recvc is 4096).
pub const PEER_MAILBOX_MESSAGES_MAX: usize = 4096;

/// The member's limits and timings from etcd's flags.
pub fn member_config(cfg: &Config) -> MemberConfig {
    MemberConfig {
        max_request_bytes: cfg.max_request_bytes,
        lease_min_ttl_secs: crate::lease::Lessor::min_ttl_secs(
            cfg.heartbeat_interval_ms,
            cfg.election_timeout_ms,
        ),
        election_timeout: std::time::Duration::from_millis(cfg.election_timeout_ms),
        heartbeat_interval: std::time::Duration::from_millis(cfg.heartbeat_interval_ms),
        // Raft log entries kept behind the applied index for slow followers
        // (etcd keeps --experimental-snapshot-catchup-entries, 5000, after
        // each snapshot); a follower further behind is sent a snapshot. A
        // smaller --snapshot-count keeps fewer.
        log_retain_entries: cfg.snapshot_count.min(cfg.snapshot_catchup_entries).max(1),
        pre_vote: cfg.pre_vote,
        auth_token_ttl: cfg.auth_token_ttl,
        request_timeout: std::time::Duration::from_millis(5000 + 2 * cfg.election_timeout_ms),
        ..MemberConfig::default()
    }
}

/// What bootstrapping needs from the configuration.
pub fn bootstrap_of(cfg: &Config) -> Bootstrap {
    Bootstrap {
        name: cfg.name.clone(),
        initial_cluster: cfg.initial_cluster.clone(),
        token: cfg.initial_cluster_token.clone(),
        advertise_peer_urls: cfg
            .initial_advertise_peer_urls
            .iter()
            .map(|u| u.text.clone())
            .collect(),
        advertise_client_urls: cfg
            .advertise_client_urls
            .iter()
            .map(|u| u.text.clone())
            .collect(),
        existing: None,
    }
}

/// A member with an empty data dir and a discovery flag finds its cluster:
/// the initial cluster and the token of its IDs (`None`: static bootstrap).
pub async fn discover(cfg: &Config) -> Result<Option<Found>, DiscoverError> {
    let advertise: Vec<String> = cfg
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.text.clone())
        .collect();
    match &cfg.discovery {
        Discovery::Static => Ok(None),
        #[cfg(not(madsim))]
        Discovery::Url { url, proxy } => {
            let me = crate::discovery::v2::Joiner {
                member_id: crate::cluster::member_id(&advertise, url, None),
                name: cfg.name.clone(),
                advertise_peer_urls: advertise,
            };
            crate::discovery::v2::join(url, proxy.as_deref(), &me)
                .await
                .map(Some)
                .map_err(DiscoverError::Join)
        }
        #[cfg(madsim)]
        Discovery::Url { .. } => Err(DiscoverError::Join(
            crate::discovery::DiscoveryError::Registry(
                "the discovery URL protocol is not simulated".into(),
            ),
        )),
        Discovery::V3(d) => {
            #[cfg(not(madsim))]
            let dialer = match crate::tls::discovery_client_config(d)
                .map_err(|e| DiscoverError::Tls(e.to_string()))?
            {
                Some(tls) => Dialer::with_client_config(tls),
                None => Dialer::plain(),
            };
            #[cfg(madsim)]
            let dialer = Dialer::plain();
            let me = crate::discovery::v3::Joiner {
                member_id: crate::cluster::member_id(&advertise, &d.token, None),
                name: cfg.name.clone(),
                advertise_peer_urls: advertise,
            };
            crate::discovery::v3::join(d, &dialer, &me)
                .await
                .map(Some)
                .map_err(DiscoverError::Join)
        }
        Discovery::Srv {
            domain,
            service_name,
        } => {
            #[cfg(not(madsim))]
            let dns = crate::discovery::srv::SystemDns::new().map_err(DiscoverError::Srv)?;
            #[cfg(madsim)]
            let dns = crate::discovery::sim_dns::SimDns;
            discover_srv(cfg, &dns, domain, service_name).await
        }
    }
}

/// DNS SRV discovery with `dns`: the token stays `--initial-cluster-token`.
pub async fn discover_srv(
    cfg: &Config,
    dns: &dyn crate::discovery::srv::Dns,
    domain: &str,
    service_name: &str,
) -> Result<Option<Found>, DiscoverError> {
    let found = crate::discovery::srv::cluster(
        dns,
        domain,
        service_name,
        &cfg.name,
        &cfg.initial_advertise_peer_urls,
    )
    .await
    .map_err(DiscoverError::Srv)?;
    // etcd names the domain as the TLS server of https peers found in DNS
    // when no trusted CA is given.
    let peer_server_name =
        (found.has_https && cfg.peer_tls.trusted_ca_file.is_none()).then(|| domain.to_string());
    // This member's entry names it by its SRV target, which it matched
    // by address: that is its peer URL in the cluster, as in etcd.
    let local_peer_urls = crate::cluster::parse_initial_cluster(&found.initial_cluster)
        .ok()
        .and_then(|entries| entries.into_iter().find(|(n, _)| *n == cfg.name))
        .map(|(_, urls)| urls);
    Ok(Some(Found {
        initial_cluster: found.initial_cluster,
        token: cfg.initial_cluster_token.clone(),
        peer_server_name,
        local_peer_urls,
    }))
}

/// Why a discovery failed, as etcd reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// etcd's `DiscoveryError{Op: "join"}`.
    #[error("failed to join discovery cluster ({0})")]
    Join(crate::discovery::DiscoveryError),
    #[error("{0}")]
    Srv(crate::discovery::DiscoveryError),
    #[error("discovery TLS: {0}")]
    Tls(String),
}

/// `--initial-cluster-state existing` on an empty data dir: asks the peers
/// of `--initial-cluster` (other than this member) for the cluster's
/// members, as etcd asks its peers' `/members`.
pub async fn fetch_existing(cfg: &Config, dialer: &Dialer) -> Result<Membership, MemberError> {
    let own: Vec<String> = cfg
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.text.clone())
        .collect();
    let peers = crate::cluster::parse_initial_cluster(&cfg.initial_cluster)?;
    let mut errors = Vec::new();
    for (_, urls) in peers {
        for url in urls.iter().filter(|u| !own.contains(u)) {
            match tokio::time::timeout(JOIN_FETCH_TIMEOUT, fetch_members(dialer, url)).await {
                Ok(Ok(list)) => {
                    let cluster_id = list.header.map_or(0, |h| h.cluster_id);
                    return Ok(Membership::join(cluster_id, list.members, &cfg.name, &own)?);
                }
                Ok(Err(e)) => errors.push(format!("{url}: {e}")),
                Err(_) => errors.push(format!("{url}: timed out")),
            }
        }
    }
    Err(ClusterError::NoReachablePeer(errors.join("; ")).into())
}

/// The client router: every implemented etcd service over gRPC and, next
/// to it on the same port, the HTTP/1.1 face. TLS, when the URL is https,
/// is the listener's (`server`).
pub fn router(member: &Handle, cfg: &Config) -> tonic::transport::server::Router {
    let recv = max_recv_bytes(cfg.max_request_bytes);
    // etcd's limits on every service: requests up to max-request-bytes +
    // 512 KiB, responses unbounded.
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(recv)
                .max_encoding_message_size(usize::MAX)
        };
    }
    let m = || member.clone();
    // As etcd: server pings only when both are set.
    let keepalive = (!cfg.grpc_keepalive_interval.is_zero()
        && !cfg.grpc_keepalive_timeout.is_zero())
    .then_some((cfg.grpc_keepalive_interval, cfg.grpc_keepalive_timeout));
    // madsim's builder adds services through `&mut`.
    #[allow(unused_mut)]
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .http2_keepalive_interval(keepalive.map(|(interval, _)| interval))
        .http2_keepalive_timeout(keepalive.map(|(_, timeout)| timeout));
    // One port for both, as etcd: gRPC and the HTTP/1.1 face.
    #[cfg(not(madsim))]
    {
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(limited!(KvServer::new(KvService::new(
                m(),
                cfg.max_txn_ops
            ))))
            .add_service(limited!(MaintenanceServer::new(MaintenanceService::new(
                m()
            ))))
            .add_service(limited!(ClusterServer::new(ClusterService::new(m()))))
            .add_service(limited!(LeaseServer::new(LeaseService::new(m()))))
            .add_service(limited!(WatchServer::new(WatchService::new(m()))))
            .add_service(limited!(LockServer::new(LockService::new(m()))))
            .add_service(limited!(ElectionServer::new(ElectionService::new(m()))))
            .add_service(limited!(AuthServer::new(AuthService::new(
                m(),
                cfg.bcrypt_cost
            ))))
            .add_service(HealthServer::new(HealthService));
        crate::metrics::grpc::init(cfg.metrics_extensive);
        let both = routes
            .routes()
            .into_axum_router()
            .merge(crate::http::routes(m(), cfg))
            .fallback(crate::http::fallback)
            .layer(crate::metrics::grpc::TrackLayer);
        builder
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(both))
    }
    #[cfg(madsim)]
    builder
        .add_service(limited!(KvServer::new(KvService::new(
            m(),
            cfg.max_txn_ops
        ))))
        .add_service(limited!(MaintenanceServer::new(MaintenanceService::new(
            m()
        ))))
        .add_service(limited!(ClusterServer::new(ClusterService::new(m()))))
        .add_service(limited!(LeaseServer::new(LeaseService::new(m()))))
        .add_service(limited!(WatchServer::new(WatchService::new(m()))))
        .add_service(limited!(LockServer::new(LockService::new(m()))))
        .add_service(limited!(ElectionServer::new(ElectionService::new(m()))))
        .add_service(limited!(AuthServer::new(AuthService::new(
            m(),
            cfg.bcrypt_cost
        ))))
        .add_service(HealthServer::new(HealthService))
}

/// Connects a member to its peers: raft messages go out through a
/// transport to every other member, and come in through the returned peer
/// service (to serve on the peer listener); both feed one mailbox. Peers
/// are reached with `dialer` (TLS for https peers).
pub fn connect_peers(
    member: Member,
    handle: &Handle,
    dialer: Dialer,
) -> Result<(Member, PeerGrpcServer), TransportError> {
    let membership = handle.membership();
    let (mailbox_tx, mailbox_rx) = tokio::sync::mpsc::channel(PEER_MAILBOX_MESSAGES_MAX);
    let transport = Transport::with_dialer(
        membership.local_id,
        membership.cluster_id,
        mailbox_tx.clone(),
        dialer,
    );
    for m in membership
        .members
        .iter()
        .filter(|m| m.id != membership.local_id)
    {
        transport.add_peer(m.id, m.peer_ur_ls.clone())?;
    }
    let peer_server = transport.service(mailbox_tx, Arc::new(PeerView(handle.observer())));
    Ok((member.with_transport(transport, mailbox_rx), peer_server))
}

/// What a member shows its peers: its membership (for joiners) and its KV
/// hash (for their corruption checks).
struct PeerView(Observer);

impl LocalState for PeerView {
    fn members(&self) -> MemberListResponse {
        MemberListResponse {
            header: Some(self.0.header()),
            members: self.0.membership().members,
        }
    }

    fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, tonic::Status> {
        let h = self.0.store().hash_kv(revision)?;
        Ok(HashKvResponse {
            header: Some(crate::proto::etcdserverpb::ResponseHeader {
                revision: h.current_revision,
                ..self.0.header()
            }),
            hash: h.hash,
            compact_revision: h.compact_revision,
        })
    }
}
