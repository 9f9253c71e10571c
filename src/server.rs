//! Assembles one member and its client gRPC listeners from a [`Config`], and
//! runs them until shutdown. Used by the `concord` binary.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use crate::api::CLUSTER_VERSION;
use crate::cluster::Membership;
use crate::config::Config;
use crate::member::{Handle, Member, MemberError};
use crate::node;
use crate::storage::fjall_backend::FjallBackend;
use crate::storage::Backend;
use crate::tls::{TlsError, TlsIdentity};
use crate::transport::Dialer;

/// How long in-flight client requests may take after a stop signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error("cannot listen on {url}: {source}")]
    Listen {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} URLs are not supported by concord yet")]
    Scheme(String),
    #[error("cannot listen on TLS for {0}: KeyFile and CertFile are not presented")]
    NoTls(String),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("gRPC server failed: {0}")]
    Serve(String),
    #[error(transparent)]
    Discovery(#[from] node::DiscoverError),
    #[error(transparent)]
    Corrupt(#[from] crate::corrupt::CorruptError),
    #[error(transparent)]
    Jwt(#[from] crate::auth::jwt::JwtError),
}

/// Runs a member with its client listeners until `shutdown` resolves (or the
/// member fails), then stops accepting, lets the member finish and persists.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let t0 = std::time::Instant::now();
    // What can be refused is refused before the data dir is written.
    for url in &cfg.listen_client_urls {
        check_listen_scheme(url, !cfg.client_tls.is_empty(), "")?;
    }
    for url in &cfg.listen_peer_urls {
        check_listen_scheme(url, !cfg.peer_tls.is_empty(), "peer ")?;
    }
    for url in &cfg.listen_metrics_urls {
        check_listen_scheme(url, !cfg.client_tls.is_empty(), "")?;
    }
    if let crate::config::Discovery::V3(d) = &cfg.discovery {
        crate::tls::discovery_client_config(d)?;
    }
    crate::tls::policy::Policy::new(
        &cfg.client_tls.cipher_suites,
        &cfg.client_tls.tls_min_version,
        &cfg.client_tls.tls_max_version,
    )?;
    let jwt = match &cfg.auth_token {
        crate::config::AuthToken::Simple => None,
        crate::config::AuthToken::Jwt {
            pub_key,
            priv_key,
            sign_method,
            ttl,
        } => Some(Arc::new(crate::auth::jwt::JwtTokens::load(
            pub_key.as_deref(),
            priv_key.as_deref(),
            sign_method,
            *ttl,
        )?)),
    };
    let backend: Arc<dyn Backend> = Arc::new(FjallBackend::open(&cfg.data_dir)?);
    tracing::info!(took_ms = t0.elapsed().as_millis() as u64, "storage opened");
    let peer_tls = peer_tls(&cfg)?;
    let client_tls = client_tls(&cfg)?;
    let mut dialer = match &peer_tls {
        Some(identity) => Dialer::with_tls(identity)?,
        None => Dialer::plain(),
    };
    let mut member_cfg = node::member_config(&cfg);
    member_cfg.jwt = jwt;
    let request_timeout = member_cfg.request_timeout;
    let t1 = std::time::Instant::now();
    let mut bootstrap = node::bootstrap_of(&cfg);
    let fresh = Membership::load(backend.as_ref())
        .map_err(|e| ServerError::Member(e.into()))?
        .is_none();
    if fresh && cfg.initial_cluster_state == "existing" {
        bootstrap.existing = Some(node::fetch_existing(&cfg, &dialer).await?);
    } else if fresh {
        match node::discover(&cfg).await {
            Ok(Some(found)) => {
                bootstrap.initial_cluster = found.initial_cluster;
                bootstrap.token = found.token;
                if let Some(urls) = found.local_peer_urls {
                    bootstrap.advertise_peer_urls = urls;
                }
                if let Some(name) = &found.peer_server_name {
                    dialer = dialer.with_server_name(name);
                }
            }
            Ok(None) => {}
            Err(e) => {
                log_discovery_failure(&cfg, &e);
                return Err(ServerError::Discovery(e));
            }
        }
    } else if cfg.discovery != crate::config::Discovery::Static {
        tracing::warn!(
            "discovery token is ignored since cluster already initialized; valid logs are found"
        );
    }
    let (member, handle) = Member::open(backend, &bootstrap, member_cfg)?;
    if let Some(identity) = &client_tls {
        handle.set_client_dialer(Dialer::with_tls(identity)?);
    }
    tracing::info!(
        took_ms = t1.elapsed().as_millis() as u64,
        live_keys = handle.store().live_keys(),
        revision = handle.store().current_revision(),
        "member restored"
    );
    let (member, peer_server) = node::connect_peers(member, &handle, dialer.clone())
        .map_err(|e| ServerError::Serve(format!("peers: {e}")))?;
    let peer_listeners = bind_peer_listeners(&cfg, peer_tls.is_some()).await?;
    let watch_sync = tokio::spawn(handle.watch_hub().clone().run_sync(
        node::WATCH_SYNC_INTERVAL,
        cfg.watch_progress_notify_interval,
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (url, listener) in peer_listeners {
        // Our own TLS acceptor, as on the client URLs: the TLS policy and
        // the client certificate checks are ours.
        let tls = match &peer_tls {
            Some(identity) => Some(identity.rustls_server_config()?),
            None => None,
        };
        let router = tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::new(peer_server.clone()));
        tracing::info!(address = %url.bind_addr(), "listening for peers on {}", url.text);
        servers.push(serve(router, listener, tls, stop_rx.clone()));
    }

    // As etcd, the check runs before raft starts: peers answer from their
    // stores, and what they send this member waits in its mailbox.
    if cfg.initial_corrupt_check {
        let checked =
            crate::corrupt::initial_check(&handle.observer(), &dialer, request_timeout).await;
        if let Err(e) = checked {
            let _ = stop_tx.send(true);
            watch_sync.abort();
            return Err(e.into());
        }
    }
    let mut member_task = tokio::spawn(member.run());

    let mut listeners = Vec::new();
    for url in &cfg.listen_client_urls {
        check_listen_scheme(url, client_tls.is_some(), "")?;
        listeners.push((url.clone(), bind(url, &cfg).await?));
    }
    for (url, listener) in listeners {
        let tls = listener_tls(&client_tls, &url)?;
        let secure = tls.is_some();
        let router = node::router(&handle, &cfg);
        servers.push(serve(router, listener, tls, stop_rx.clone()));
        if secure {
            tracing::info!(address = %url.bind_addr(), "serving client requests on {}", url.bind_addr());
        } else {
            tracing::info!(address = %url.bind_addr(), "serving insecure client requests on {}, this is strongly discouraged!", url.bind_addr());
        }
    }

    // --listen-metrics-urls: /metrics and the health endpoints (https ones
    // with the client certificate, as etcd).
    for url in &cfg.listen_metrics_urls {
        let listener = bind(url, &cfg).await?;
        let tls = listener_tls(&client_tls, url)?;
        let routes = crate::http::metrics_routes(handle.clone()).fallback(crate::http::fallback);
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(routes));
        servers.push(serve(router, listener, tls, stop_rx.clone()));
        tracing::info!(address = %url.bind_addr(), "serving metrics on {}", url.text);
    }

    // etcd's readiness lines come once this member's attributes are
    // published through raft (which needs a leader).
    let publisher = {
        let (cfg, handle) = (cfg.clone(), handle.clone());
        tokio::spawn(async move {
            let urls = cfg
                .advertise_client_urls
                .iter()
                .map(|u| u.text.clone())
                .collect();
            match handle.publish(&cfg.name, urls).await {
                Ok(()) => announce_ready(&cfg, &handle),
                Err(e) => tracing::error!(error = %e, "could not publish this member's attributes"),
            }
        })
    };

    let early = tokio::select! {
        _ = shutdown => {
            tracing::info!("received a stop signal, shutting down");
            None
        }
        r = &mut member_task => Some(r),
    };
    let _ = stop_tx.send(true);
    // In-flight requests get a grace period; connections that stay open
    // after it (clients keep them) are cut, as etcd does on shutdown.
    for mut s in servers {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut s).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "client listener stopped with an error"),
            Ok(_) => {}
            Err(_) => {
                s.abort();
                let _ = s.await;
            }
        }
    }
    watch_sync.abort();
    publisher.abort();
    drop(handle);
    let member_failed = early.is_some();
    let result = match early {
        Some(r) => r,
        None => member_task.await,
    }
    .map_err(|e| ServerError::Serve(format!("member task: {e}")))?;
    if let Err(MemberError::Removed) = result {
        // As etcd: a member removed from its cluster stops, and exits 0.
        tracing::info!("stopped: this member was removed from the cluster");
        return Ok(());
    }
    result?;
    if member_failed {
        return Err(ServerError::Member(MemberError::Stopped));
    }
    tracing::info!("stopped");
    Ok(())
}

/// The rustls configuration of an https client or metrics URL (none for
/// http).
fn listener_tls(
    identity: &Option<TlsIdentity>,
    url: &crate::config::Url,
) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    match (identity, url.scheme.as_str()) {
        (Some(identity), "https") => Ok(Some(identity.rustls_server_config()?)),
        _ => Ok(None),
    }
}

/// Serves `router` on `listener` (over TLS with `tls`: HTTP/1.1 and h2
/// both) until `stop` turns true.
fn serve(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match tls {
        Some(config) => tokio::spawn(
            router
                .serve_with_incoming_shutdown(crate::tls::tls_incoming(listener, config), stopped),
        ),
        None => tokio::spawn(router.serve_with_incoming_shutdown(nodelay(listener), stopped)),
    }
}

/// The accepted connections of `listener`, with Nagle off.
fn nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Binds `url` with etcd's socket options: SO_REUSEADDR (Go sets it on
/// every listener; `--socket-reuse-address` asks for it too) and
/// SO_REUSEPORT with `--socket-reuse-port`.
async fn bind(url: &crate::config::Url, cfg: &Config) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Listen {
        url: url.text.clone(),
        source,
    };
    let addr = tokio::net::lookup_host(url.bind_addr())
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host has no address",
            ))
        })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if cfg.socket_reuse_port {
        socket.set_reuseport(true).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// Binds `--listen-peer-urls`; https ones need peer TLS (etcd's error
/// otherwise).
async fn bind_peer_listeners(
    cfg: &Config,
    tls: bool,
) -> Result<Vec<(crate::config::Url, TcpListener)>, ServerError> {
    let mut out = Vec::new();
    for url in &cfg.listen_peer_urls {
        check_listen_scheme(url, tls, "peer ")?;
        out.push((url.clone(), bind(url, cfg).await?));
    }
    Ok(out)
}

/// A listen URL is http, or https when there is a TLS identity for it
/// (etcd's error otherwise); `kind` names it in the unsupported-scheme error.
fn check_listen_scheme(url: &crate::config::Url, tls: bool, kind: &str) -> Result<(), ServerError> {
    match url.scheme.as_str() {
        "http" => Ok(()),
        "https" if tls => Ok(()),
        "https" => Err(ServerError::NoTls(url.bind_addr())),
        other => Err(ServerError::Scheme(format!("{kind}{other}"))),
    }
}

/// The client TLS identity from `--cert-file`, `--key-file`, ...; with
/// `--auto-tls` a self-signed certificate for the client URLs' hosts in
/// `<data-dir>/fixtures/client`, as etcd keeps it.
fn client_tls(cfg: &Config) -> Result<Option<TlsIdentity>, ServerError> {
    let urls = cfg
        .listen_client_urls
        .iter()
        .chain(&cfg.advertise_client_urls);
    tls_identity(cfg, "", &cfg.client_tls, "client", urls)
}

/// The peer TLS identity from `--peer-*` flags; with `--peer-auto-tls` a
/// self-signed certificate for the peer URLs' hosts in
/// `<data-dir>/fixtures/peer`, as etcd keeps it.
fn peer_tls(cfg: &Config) -> Result<Option<TlsIdentity>, ServerError> {
    let urls = cfg
        .listen_peer_urls
        .iter()
        .chain(&cfg.initial_advertise_peer_urls);
    tls_identity(cfg, "peer-", &cfg.peer_tls, "peer", urls)
}

/// The identity `flags` (named with `prefix`) describe; a generated one
/// lives in `<data-dir>/fixtures/<dir>` and names the hosts of `urls`.
fn tls_identity<'a>(
    cfg: &Config,
    prefix: &str,
    flags: &crate::config::TlsFlags,
    dir: &str,
    urls: impl Iterator<Item = &'a crate::config::Url>,
) -> Result<Option<TlsIdentity>, ServerError> {
    let mut hosts: Vec<String> = urls
        .map(|u| u.host.clone())
        .filter(|h| !h.is_empty())
        .collect();
    hosts.sort();
    hosts.dedup();
    let dir = cfg.data_dir.join("fixtures").join(dir);
    Ok(TlsIdentity::load(prefix, flags, &dir, &hosts)?)
}

/// Prints etcd's two readiness lines once the client ports accept
/// connections and the member is published (etcd's own test harness waits
/// for them).
fn announce_ready(cfg: &Config, handle: &Handle) {
    let m = handle.membership();
    let urls: Vec<&str> = cfg
        .advertise_client_urls
        .iter()
        .map(|u| u.text.as_str())
        .collect();
    tracing::info!(
        cluster_version = CLUSTER_VERSION,
        "enabled capabilities for version {CLUSTER_VERSION}"
    );
    tracing::info!(
        local_member_id = format!("{:x}", m.local_id),
        cluster_id = format!("{:x}", m.cluster_id),
        "published {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
        cfg.name,
        urls.join(" "),
        m.cluster_id
    );
    tracing::info!("ready to serve client requests");
}

/// etcd's advice after a discovery that failed.
fn log_discovery_failure(cfg: &Config, e: &node::DiscoverError) {
    use crate::discovery::DiscoveryError as D;
    let node::DiscoverError::Join(why) = e else {
        return;
    };
    match why {
        D::DuplicateId => {
            tracing::warn!(name = %cfg.name, error = %e, "member has been registered with discovery service");
            tracing::warn!(data_dir = %cfg.data_dir.display(), "but could not find valid cluster configuration");
            tracing::warn!("check data dir if previous bootstrap succeeded");
            tracing::warn!("or use a new discovery token if previous bootstrap failed");
        }
        D::DuplicateName => {
            tracing::warn!(error = %e, "member with duplicated name has already been registered");
            tracing::warn!("cURL the discovery token URL for details");
            tracing::warn!(
                "do not reuse discovery token; generate a new one to bootstrap a cluster"
            );
        }
        _ => {
            tracing::warn!(error = %e, "failed to bootstrap; discovery token was already used");
            tracing::warn!(
                "do not reuse discovery token; generate a new one to bootstrap a cluster"
            );
        }
    }
}
