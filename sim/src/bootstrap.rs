//! The bootstrap simulation: members that find each other by discovery
//! while bootstrap faults hit them, and the property every bootstrap must
//! keep: the cluster forms with exactly the registry's size and one cluster
//! ID, or the members that cannot join exit with a clear error; never two
//! clusters, never a member in the wrong one.
//!
//! Per seed: the kind (v3 discovery with a concord member as the registry,
//! or DNS SRV records from a simulated DNS server), the cluster size (3 or
//! 5), extra members beyond the size (they must exit: "cluster is full", or
//! not in the SRV records), start times, and a swarm of faults during the
//! first seconds: the registry slow (network latency), partitioned or
//! restarting; DNS answering late or failing; members crashing (losing what
//! they had not persisted) half-way through registration and restarting.
//! A member whose discovery fails exits with its error and is started
//! again three seconds later, as a supervisor restarts a daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord::discovery::sim_dns::{self, Faults as DnsFaults, Zone};
use concord::proto::etcdserverpb::cluster_client::ClusterClient;
use concord::proto::etcdserverpb::kv_client::KvClient;
use concord::proto::etcdserverpb::{MemberListRequest, PutRequest, RangeRequest};
use concord::storage::mem::MemBackend;
use tokio::madsim::net::NetSim;
use tokio::madsim::rand::{thread_rng, Rng};
use tokio::madsim::runtime::{Handle, NodeHandle};
use tonic::transport::{Channel, Endpoint};

use crate::world::{self, client_url, member_ip, peer_url, ExitReport};

const REGISTRY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
const DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53));
const TOKEN: &str = "sim-token";
const DOMAIN: &str = "sim.test";
/// A member that exits is started again after this long.
const RESTART_DELAY: Duration = Duration::from_secs(3);
/// Members start within this many milliseconds.
const START_SPREAD_MS: u64 = 8000;
/// How long the faults go on.
const FAULT_PHASE: Duration = Duration::from_secs(20);
/// How long the cluster may take to form once the faults have stopped.
const FORM_DEADLINE: Duration = Duration::from_secs(90);

/// How the members discover each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// etcd 3.6's v3 discovery; the registry is a concord member.
    V3,
    /// DNS SRV records.
    Srv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Every message takes 50-400 ms for a while.
    RegistrySlow,
    /// The registry (or DNS server) is cut off for a while.
    RegistryPartitioned,
    /// The registry member crashes and restarts.
    RegistryRestart,
    /// DNS answers 0.5-3 s late for a while.
    DnsLate,
    /// DNS answers SERVFAIL for a while.
    DnsFailing,
    /// A member crashes (losing what it had not persisted) and restarts.
    MemberCrash,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// The registry's size (v3) or the number of members in the SRV
    /// records.
    pub size: usize,
    /// Members started beyond the size.
    pub extra: usize,
    pub faults: BTreeSet<Fault>,
}

impl Options {
    pub fn from_seed() -> Options {
        let mut rng = thread_rng();
        let kind = if rng.gen_bool(0.5) {
            Kind::V3
        } else {
            Kind::Srv
        };
        let possible: &[Fault] = match kind {
            Kind::V3 => &[
                Fault::RegistrySlow,
                Fault::RegistryPartitioned,
                Fault::RegistryRestart,
                Fault::MemberCrash,
            ],
            Kind::Srv => &[
                Fault::RegistrySlow,
                Fault::RegistryPartitioned,
                Fault::DnsLate,
                Fault::DnsFailing,
                Fault::MemberCrash,
            ],
        };
        let faults = possible
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        Options {
            kind,
            size: if rng.gen_bool(0.7) { 3 } else { 5 },
            extra: rng.gen_range(0..=2),
            faults,
        }
    }
}

/// What a run saw and what its checks said.
#[derive(Debug, Default)]
pub struct Report {
    pub options: Option<Options>,
    pub faults_applied: Vec<String>,
    /// Each member's exits: (member, error).
    pub exits: Vec<(usize, String)>,
    /// Each violation as "<kind>: <detail>".
    pub violations: Vec<String>,
}

impl Report {
    pub fn kinds(&self) -> BTreeSet<String> {
        self.violations
            .iter()
            .filter_map(|v| v.split(": ").next())
            .map(str::to_string)
            .collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bootstrap {:?}; faults: {}",
            self.options,
            self.faults_applied.join(", ")
        )?;
        for (i, e) in &self.exits {
            writeln!(f, "  m{i} exited: {e}")?;
        }
        for v in &self.violations {
            writeln!(f, "  VIOLATION {v}")?;
        }
        Ok(())
    }
}

/// A member node and its storage.
struct Slot {
    node: NodeHandle,
    backend: Arc<MemBackend>,
}

fn member_args(kind: Kind, i: usize) -> Vec<String> {
    let mut args = world::base_args(i);
    match kind {
        Kind::V3 => args.extend(
            [
                "--initial-advertise-peer-urls",
                &peer_url(i),
                "--discovery-endpoints",
                &format!("http://{REGISTRY_IP}:{}", world::CLIENT_PORT),
                "--discovery-token",
                TOKEN,
            ]
            .map(String::from),
        ),
        Kind::Srv => args.extend(
            [
                "--initial-advertise-peer-urls",
                &format!("http://m{i}.{DOMAIN}:{}", world::PEER_PORT),
                "--discovery-srv",
                DOMAIN,
            ]
            .map(String::from),
        ),
    }
    args
}

/// The member ID member `i` gets.
fn member_id(kind: Kind, i: usize) -> u64 {
    match kind {
        Kind::V3 => concord::cluster::member_id(&[peer_url(i)], TOKEN, None),
        Kind::Srv => concord::cluster::member_id(
            &[format!("http://m{i}.{DOMAIN}:{}", world::PEER_PORT)],
            "sim",
            None,
        ),
    }
}

async fn channel(url: String) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(url).ok()?;
    tokio::time::timeout(Duration::from_secs(1), endpoint.connect())
        .await
        .ok()?
        .ok()
}

/// Runs one seed's bootstrap; see the module doc.
pub async fn run(options: Options) -> Report {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let handle = Handle::current();
    let mut report = Report {
        options: Some(options.clone()),
        ..Report::default()
    };
    let mut rng = thread_rng();
    let client = handle
        .create_node()
        .name("client")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
        .build();
    let kind = options.kind;
    let n = options.size + options.extra;

    // The registry: a concord member with the size key, or a DNS server.
    let dns_faults = Arc::new(DnsFaults::default());
    let registry_backend = Arc::new(MemBackend::new());
    let registry = match kind {
        Kind::V3 => {
            let url = format!("http://{REGISTRY_IP}:{}", world::CLIENT_PORT);
            let peer = format!("http://{REGISTRY_IP}:{}", world::PEER_PORT);
            let args: Vec<String> = [
                "--name",
                "registry",
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("registry={peer}"),
            ]
            .map(String::from)
            .to_vec();
            let backend = registry_backend.clone();
            let node = handle
                .create_node()
                .name("registry")
                .ip(REGISTRY_IP)
                .init(move || {
                    world::run_member_reporting(
                        args.clone(),
                        backend.clone(),
                        1.0,
                        Arc::new(|_| {}),
                    )
                })
                .build();
            let size = options.size.to_string();
            client
                .spawn(async move {
                    loop {
                        if let Some(ch) = channel(url.clone()).await {
                            let mut kv = KvClient::new(ch);
                            let put = kv.put(PutRequest {
                                key: format!("/_etcd/registry/{TOKEN}/_config/size").into_bytes(),
                                value: size.clone().into_bytes(),
                                ..Default::default()
                            });
                            if let Ok(Ok(_)) =
                                tokio::time::timeout(Duration::from_secs(2), put).await
                            {
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
                .await
                .expect("the size key is written");
            node
        }
        Kind::Srv => {
            let mut zone = Zone::default();
            let records = (0..options.size)
                .map(|i| (format!("m{i}.{DOMAIN}."), world::PEER_PORT))
                .collect();
            zone.srv
                .insert(format!("_etcd-server._tcp.{DOMAIN}"), records);
            for i in 0..n {
                zone.a.insert(format!("m{i}.{DOMAIN}"), vec![member_ip(i)]);
                // What connections to peer URLs resolve through (the
                // system's resolver for sockets, in the simulator).
                NetSim::current().add_dns_record(&format!("m{i}.{DOMAIN}"), member_ip(i));
            }
            let faults = dns_faults.clone();
            handle
                .create_node()
                .name("dns")
                .ip(DNS_IP)
                .init(move || sim_dns::serve(zone.clone(), faults.clone()))
                .build()
        }
    };
    debug_assert_eq!(
        SocketAddr::new(DNS_IP, 53),
        sim_dns::SIM_DNS_ADDR,
        "the members' resolver asks this node"
    );

    // The members, each started after a random delay, restarted after an
    // exit (by the supervisor loop below).
    let exits: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let mut slots = Vec::new();
    for i in 0..n {
        let backend = Arc::new(MemBackend::new());
        let args = member_args(kind, i);
        let report_exit: ExitReport = {
            let exits = exits.clone();
            Arc::new(move |e: String| exits.lock().expect("exits").push((i, e)))
        };
        let b = backend.clone();
        let node = handle
            .create_node()
            .name(format!("m{i}"))
            .ip(member_ip(i))
            .init(move || {
                world::run_member_reporting(args.clone(), b.clone(), 1.0, report_exit.clone())
            })
            .build();
        handle.kill(node.id());
        slots.push(Slot { node, backend });
    }
    // Members start while the faults go on; the faults run on their own
    // task; every (re)start goes through the plan, which this loop
    // carries out (a node is never restarted while it runs).
    let t0 = tokio::time::Instant::now();
    let mut starts: Vec<(tokio::time::Instant, usize)> = (0..n)
        .map(|i| {
            (
                t0 + Duration::from_millis(rng.gen_range(0..START_SPREAD_MS)),
                i,
            )
        })
        .collect();
    starts.sort();
    starts.reverse();
    let plan: Arc<Mutex<Plan>> = Arc::new(Mutex::new(Plan {
        started: vec![false; n],
        restart_at: BTreeMap::new(),
    }));
    let phase_end = t0 + FAULT_PHASE;
    let applied: Arc<Mutex<Vec<String>>> = Arc::default();
    let nemesis = tokio::spawn(nemesis(
        options.faults.iter().copied().collect(),
        phase_end,
        Nemesis {
            handle: handle.clone(),
            registry: registry.id(),
            registry_backend: registry_backend.clone(),
            dns: dns_faults.clone(),
            members: slots
                .iter()
                .map(|s| (s.node.id(), s.backend.clone()))
                .collect(),
            plan: plan.clone(),
            applied: applied.clone(),
        },
    ));
    let mut seen_exits = 0;
    let form_end = phase_end + FORM_DEADLINE;
    let mut formed = false;
    while tokio::time::Instant::now() < form_end && !formed {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        {
            let mut plan = plan.lock().expect("plan");
            while starts.last().is_some_and(|(t, _)| *t <= now) {
                let (_, i) = starts.pop().expect("a start");
                if !plan.started[i] {
                    plan.started[i] = true;
                    due.push(i);
                }
            }
            let exits = exits.lock().expect("exits");
            for (i, _) in &exits[seen_exits..] {
                plan.restart_at.insert(*i, now + RESTART_DELAY);
            }
            seen_exits = exits.len();
            let ready: Vec<usize> = plan
                .restart_at
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(i, _)| *i)
                .collect();
            for i in ready {
                plan.restart_at.remove(&i);
                due.push(i);
            }
        }
        for i in due {
            handle.restart(slots[i].node.id());
        }
        if now >= phase_end {
            let size = options.size;
            formed = client
                .spawn(async move { cluster_formed(kind, size).await })
                .await
                .unwrap_or(false);
        }
    }
    let _ = nemesis.await;
    report.faults_applied = applied.lock().expect("faults").clone();
    report.exits = exits.lock().expect("exits").clone();
    let size = options.size;
    let exits = report.exits.clone();
    report.violations = client
        .spawn(async move { check(&exits, kind, size, n, formed).await })
        .await
        .expect("the checks ran");
    report
}

/// Which members have been started, and when to start which again.
struct Plan {
    started: Vec<bool>,
    restart_at: BTreeMap<usize, tokio::time::Instant>,
}

/// What the faults act on.
struct Nemesis {
    handle: Handle,
    registry: tokio::madsim::task::NodeId,
    registry_backend: Arc<MemBackend>,
    dns: Arc<DnsFaults>,
    members: Vec<(tokio::madsim::task::NodeId, Arc<MemBackend>)>,
    plan: Arc<Mutex<Plan>>,
    applied: Arc<Mutex<Vec<String>>>,
}

/// Applies faults drawn from `faults`, one after the other, until
/// `until`.
async fn nemesis(faults: Vec<Fault>, until: tokio::time::Instant, n: Nemesis) {
    if faults.is_empty() {
        return;
    }
    let net = NetSim::current();
    while tokio::time::Instant::now() < until {
        let (fault, lasts, pause, victim) = {
            let mut rng = thread_rng();
            (
                faults[rng.gen_range(0..faults.len())],
                Duration::from_millis(rng.gen_range(500..5000)),
                Duration::from_millis(rng.gen_range(200..2000)),
                rng.gen_range(0..n.members.len()),
            )
        };
        let mut record = format!("{fault:?} {}ms", lasts.as_millis());
        match fault {
            Fault::RegistrySlow => {
                net.update_config(|c| {
                    c.send_latency = Duration::from_millis(50)..Duration::from_millis(400)
                });
                tokio::time::sleep(lasts).await;
                net.update_config(|c| {
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(10)
                });
            }
            Fault::RegistryPartitioned => {
                net.clog_node(n.registry);
                tokio::time::sleep(lasts).await;
                net.unclog_node(n.registry);
            }
            Fault::RegistryRestart => {
                n.handle.kill(n.registry);
                n.registry_backend.crash();
                tokio::time::sleep(lasts).await;
                n.handle.restart(n.registry);
            }
            Fault::DnsLate => {
                let delay = thread_rng().gen_range(500..3000);
                n.dns.delay_ms.store(delay, Ordering::Relaxed);
                tokio::time::sleep(lasts).await;
                n.dns.delay_ms.store(0, Ordering::Relaxed);
            }
            Fault::DnsFailing => {
                n.dns.servfail.store(true, Ordering::Relaxed);
                tokio::time::sleep(lasts).await;
                n.dns.servfail.store(false, Ordering::Relaxed);
            }
            Fault::MemberCrash => {
                // A member that has started, crashed at any point of its
                // bootstrap and started again a little later.
                let mut plan = n.plan.lock().expect("plan");
                if plan.started[victim] {
                    let (id, backend) = &n.members[victim];
                    n.handle.kill(*id);
                    backend.crash();
                    let back = tokio::time::Instant::now() + lasts.min(Duration::from_secs(2));
                    plan.restart_at.insert(victim, back);
                    record = format!("MemberCrash m{victim}");
                }
            }
        }
        n.applied.lock().expect("faults").push(record);
        tokio::time::sleep(pause).await;
    }
}

/// What member `i` says of its cluster: (cluster ID, member IDs), if it
/// answers.
async fn view(i: usize) -> Option<(u64, BTreeSet<u64>, u64)> {
    let Some(ch) = channel(client_url(i)).await else {
        tracing::debug!(member = i, "no connection");
        return None;
    };
    let mut c = ClusterClient::new(ch);
    let list = tokio::time::timeout(
        Duration::from_secs(2),
        c.member_list(MemberListRequest {
            linearizable: false,
        }),
    )
    .await;
    let list = match list {
        Ok(Ok(l)) => l.into_inner(),
        other => {
            tracing::debug!(member = i, ?other, "no member list");
            return None;
        }
    };
    let header = list.header?;
    Some((
        header.cluster_id,
        list.members.iter().map(|m| m.id).collect(),
        header.member_id,
    ))
}

/// Whether the cluster has formed: the members expected to be in it
/// answer, and a write through one of them commits.
async fn cluster_formed(kind: Kind, size: usize) -> bool {
    let expected = expected_members(kind, size).await;
    if expected.len() < size {
        tracing::debug!(?expected, "not formed: the registry holds fewer members");
        return false;
    }
    for &i in &expected {
        if view(i).await.is_none() {
            tracing::debug!(member = i, "not formed: a member does not answer");
            return false;
        }
    }
    let Some(ch) = channel(client_url(expected[0])).await else {
        return false;
    };
    let mut kv = KvClient::new(ch);
    let put = kv.put(PutRequest {
        key: b"formed".to_vec(),
        value: b"yes".to_vec(),
        ..Default::default()
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(3), put).await,
        Ok(Ok(_))
    )
}

/// The members that should form the cluster: for v3 the first `size`
/// registered (as the registry lists them by creation revision), for SRV
/// those in the records.
async fn expected_members(kind: Kind, size: usize) -> Vec<usize> {
    match kind {
        Kind::Srv => (0..size).collect(),
        Kind::V3 => {
            let url = format!("http://{REGISTRY_IP}:{}", world::CLIENT_PORT);
            let Some(ch) = channel(url).await else {
                return Vec::new();
            };
            let prefix = format!("/_etcd/registry/{TOKEN}/members/").into_bytes();
            let mut end = prefix.clone();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            let mut kv = KvClient::new(ch);
            let range = kv.range(RangeRequest {
                key: prefix,
                range_end: end,
                ..Default::default()
            });
            let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(2), range).await else {
                return Vec::new();
            };
            let mut kvs = resp.into_inner().kvs;
            kvs.sort_by_key(|kv| kv.create_revision);
            kvs.iter()
                .take(size)
                .filter_map(|kv| {
                    let value = String::from_utf8_lossy(&kv.value).into_owned();
                    let name = value.split('=').next()?;
                    name.strip_prefix('m')?.parse().ok()
                })
                .collect()
        }
    }
}

/// A member that cannot join must exit from its discovery, with etcd's
/// error (a registry that says the cluster is full, DNS records that do
/// not name it, DNS that fails); one that discovers and then cannot open
/// its member has been given a cluster that does not hold it.
const CLEAR_EXIT: &str = "discover: ";

/// The property (see the module doc): its violations. Runs on the client
/// node.
async fn check(
    exits: &[(usize, String)],
    kind: Kind,
    size: usize,
    n: usize,
    formed: bool,
) -> Vec<String> {
    let mut violations = Vec::new();
    let expected: BTreeSet<usize> = expected_members(kind, size).await.into_iter().collect();
    let expected_ids: BTreeSet<u64> = expected.iter().map(|i| member_id(kind, *i)).collect();
    let mut clusters: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let Some((cluster_id, ids, me)) = view(i).await else {
            continue;
        };
        clusters.entry(cluster_id).or_default().push(i);
        if !expected.contains(&i) {
            violations.push(format!(
                "WrongCluster: m{i} (not among the registry's first {size}) serves cluster {cluster_id:x} with {} members",
                ids.len()
            ));
        }
        if ids.len() != size {
            violations.push(format!(
                "WrongSize: m{i} is in a cluster of {} members, the registry's size is {size}",
                ids.len()
            ));
        }
        if !ids.contains(&me) {
            violations.push(format!(
                "NotInOwnCluster: m{i} ({me:x}) is not in its member list"
            ));
        }
        if expected.len() == size && ids != expected_ids {
            violations.push(format!(
                "WrongMembers: m{i} lists {ids:x?}, the registry holds {expected_ids:x?}"
            ));
        }
    }
    if clusters.len() > 1 {
        violations.push(format!(
            "TwoClusters: cluster IDs {:?}",
            clusters
                .iter()
                .map(|(id, who)| format!("{id:x}: {who:?}"))
                .collect::<Vec<_>>()
        ));
    }
    for (i, e) in exits {
        if !e.starts_with(CLEAR_EXIT) {
            violations.push(format!("UnclearExit: m{i} exited with {e:?}"));
        }
    }
    if !formed {
        violations.push(format!(
            "NotFormed: the cluster did not form within {} s of the faults' end",
            FORM_DEADLINE.as_secs()
        ));
    }
    violations
}
