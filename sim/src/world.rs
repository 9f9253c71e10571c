//! A world of members on simulated nodes and a client node, with the
//! faults the simulations inject: kill (with crash of unpersisted storage),
//! restart, and network partitions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use concord::config::Config;
use concord::member::Member;
use concord::node;
use concord::proto::etcdserverpb::kv_client::KvClient;
use concord::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use concord::proto::etcdserverpb::StatusRequest;
use concord::storage::mem::MemBackend;
use concord::storage::Backend;
use concord::transport::Dialer;
use tokio::madsim::net::NetSim;
use tokio::madsim::runtime::{Handle, NodeHandle};
use tonic::transport::Channel;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

pub fn member_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1))
}

pub fn client_url(i: usize) -> String {
    format!("http://{}:{CLIENT_PORT}", member_ip(i))
}

pub fn peer_url(i: usize) -> String {
    format!("http://{}:{PEER_PORT}", member_ip(i))
}

/// etcd's flags for member `i` of `n` starting a new cluster.
pub fn member_args(i: usize, n: usize) -> Vec<String> {
    let initial: Vec<String> = (0..n).map(|j| format!("m{j}={}", peer_url(j))).collect();
    args_for(i, &initial.join(","), "new")
}

/// etcd's flags for member `i` with `--initial-cluster initial` and
/// `--initial-cluster-state state`.
fn args_for(i: usize, initial: &str, state: &str) -> Vec<String> {
    let mut args = base_args(i);
    args.extend(
        [
            "--initial-advertise-peer-urls",
            &peer_url(i),
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            state,
        ]
        .map(String::from),
    );
    args
}

/// The flags every member `i` has: its name, its listen and client URLs,
/// the cluster token `sim`.
pub fn base_args(i: usize) -> Vec<String> {
    [
        "--name",
        &format!("m{i}"),
        "--listen-client-urls",
        &client_url(i),
        "--advertise-client-urls",
        &client_url(i),
        "--listen-peer-urls",
        &peer_url(i),
        "--initial-cluster-token",
        "sim",
    ]
    .map(String::from)
    .to_vec()
}

/// Where a member that stops reports why (the daemon's exit message,
/// after `discover: ` or `open: `, the step that failed).
pub type ExitReport = Arc<dyn Fn(String) + Send + Sync>;

/// Runs one member until its node is killed: the daemon's wiring
/// (`concord::node`) on the in-memory backend and simulated sockets.
async fn run_member(args: Vec<String>, backend: Arc<MemBackend>, clock_rate: f64) {
    run_member_reporting(args, backend, clock_rate, Arc::new(|_| {})).await
}

/// [`run_member`], reporting to `exit` when the member stops by itself
/// (a discovery that fails, a data dir that does not open), as the daemon
/// exits with an error.
pub async fn run_member_reporting(
    args: Vec<String>,
    backend: Arc<MemBackend>,
    clock_rate: f64,
    exit: ExitReport,
) {
    let cfg = Config::from_args_env(&args, &|_| None).expect("member flags");
    tracing::debug!(name = %cfg.name, "member starts");
    let backend: Arc<dyn Backend> = backend;
    let mut bootstrap = node::bootstrap_of(&cfg);
    let fresh = concord::cluster::Membership::load(backend.as_ref())
        .expect("membership readable")
        .is_none();
    if fresh && cfg.discovery != concord::config::Discovery::Static {
        match node::discover(&cfg).await {
            Ok(Some(found)) => {
                bootstrap.initial_cluster = found.initial_cluster;
                bootstrap.token = found.token;
                if let Some(urls) = found.local_peer_urls {
                    bootstrap.advertise_peer_urls = urls;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "discovery failed; the member exits");
                exit(format!("discover: {e}"));
                return;
            }
        }
    }
    if cfg.initial_cluster_state == "existing" && fresh {
        // The daemon exits when nobody lists it (yet) or nobody answers;
        // here a supervisor starts it again a second later, until it joins.
        loop {
            match node::fetch_existing(&cfg, &Dialer::plain()).await {
                Ok(m) => {
                    bootstrap.existing = Some(m);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot join yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    let mut member_cfg = node::member_config(&cfg);
    member_cfg.clock_rate = clock_rate;
    let (member, handle) = match Member::open(backend, &bootstrap, member_cfg) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "member does not open");
            exit(format!("open: {e}"));
            return;
        }
    };
    let (member, peer_server) =
        node::connect_peers(member, &handle, Dialer::plain()).expect("peers");
    tokio::spawn(async move {
        if let Err(e) = member.run().await {
            tracing::error!(error = %e, "member stopped");
        }
    });
    tokio::spawn(handle.watch_hub().clone().run_sync(
        node::WATCH_SYNC_INTERVAL,
        cfg.watch_progress_notify_interval,
    ));
    let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(peer_server)
            .serve(any(PEER_PORT)),
    );
    tokio::spawn(node::router(&handle, &cfg).serve(any(CLIENT_PORT)));
    let urls = cfg
        .advertise_client_urls
        .iter()
        .map(|u| u.text.clone())
        .collect();
    if let Err(e) = handle.publish(&cfg.name, urls).await {
        tracing::warn!(error = %e, "publish failed");
    }
    // Keep the member (its handle) alive until the node is killed.
    std::future::pending::<()>().await;
}

/// A madsim node running member `i` with `args` on `backend`; a restart
/// runs it again on the same backend.
fn member_node(
    handle: &Handle,
    i: usize,
    args: Vec<String>,
    backend: Arc<MemBackend>,
    clock_rate: f64,
) -> NodeHandle {
    handle
        .create_node()
        .name(format!("m{i}"))
        .ip(member_ip(i))
        .init(move || run_member(args.clone(), backend.clone(), clock_rate))
        .build()
}

pub struct World {
    pub handle: Handle,
    pub members: Vec<NodeHandle>,
    /// Each member's storage; it outlives the member's node (a crash loses
    /// only what was not persisted).
    pub backends: Vec<Arc<MemBackend>>,
    pub client: NodeHandle,
}

impl World {
    /// `n` members, started at once, and a client node.
    pub fn start(n: usize) -> World {
        World::start_with_clocks(&vec![1.0; n])
    }

    /// One member per entry of `clock_rates` (how fast its clock runs
    /// against the simulation's: clock drift), and a client node.
    pub fn start_with_clocks(clock_rates: &[f64]) -> World {
        let n = clock_rates.len();
        // Logs to the test output, filtered by RUST_LOG (e.g. concord=debug).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let handle = Handle::current();
        let backends: Vec<Arc<MemBackend>> = (0..n).map(|_| Arc::new(MemBackend::new())).collect();
        let members = (0..n)
            .map(|i| {
                member_node(
                    &handle,
                    i,
                    member_args(i, n),
                    backends[i].clone(),
                    clock_rates[i],
                )
            })
            .collect();
        let client = handle
            .create_node()
            .name("client")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
            .build();
        World {
            handle,
            members,
            backends,
            client,
        }
    }

    /// Starts a new member (the next slot, a new address: madsim does not
    /// reuse them) on empty storage, joining the running cluster: `others`
    /// are the members it may ask (etcd's `--initial-cluster-state
    /// existing`). Returns its slot.
    pub fn join(&mut self, others: &[usize]) -> usize {
        let i = self.members.len();
        let initial: Vec<String> = others
            .iter()
            .chain(std::iter::once(&i))
            .map(|j| format!("m{j}={}", peer_url(*j)))
            .collect();
        let backend = Arc::new(MemBackend::new());
        let node = member_node(
            &self.handle,
            i,
            args_for(i, &initial.join(","), "existing"),
            backend.clone(),
            1.0,
        );
        self.members.push(node);
        self.backends.push(backend);
        i
    }

    /// Stops member `i` for good (after it was removed from the cluster).
    pub fn stop(&self, i: usize) {
        self.handle.kill(self.members[i].id());
    }

    /// kill -9: the node stops and its storage loses what was not persisted.
    pub fn crash(&self, i: usize) {
        self.handle.kill(self.members[i].id());
        self.backends[i].crash();
    }

    pub fn restart(&self, i: usize) {
        self.handle.restart(self.members[i].id());
    }

    /// Cuts member `i` off the network (both directions).
    pub fn isolate(&self, i: usize) {
        NetSim::current().clog_node(self.members[i].id());
    }

    pub fn heal(&self, i: usize) {
        NetSim::current().unclog_node(self.members[i].id());
    }
}

/// A client connection to member `i`, if it accepts one within a second.
pub async fn channel(i: usize) -> Option<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(client_url(i)).ok()?;
    tokio::time::timeout(Duration::from_secs(1), endpoint.connect())
        .await
        .ok()?
        .ok()
}

pub async fn kv(i: usize) -> Option<KvClient<Channel>> {
    channel(i).await.map(KvClient::new)
}

/// (leader, term, member id) as member `i` reports them.
pub async fn status(i: usize) -> Option<(u64, u64, u64)> {
    let mut c = MaintenanceClient::new(channel(i).await?);
    let s = tokio::time::timeout(Duration::from_secs(2), c.status(StatusRequest {}))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((s.leader, s.raft_term, s.header.map_or(0, |h| h.member_id)))
}
