//! The chaos simulation: a seeded world of members, concurrent clients and
//! a nemesis, with every observation checked afterwards.
//!
//! One run, all drawn from the seed:
//! 1. **World**: 3 or 5 members (the daemon's wiring on madsim nodes, the
//!    in-memory backend that loses unpersisted writes on a crash).
//! 2. **Swarm faults**: the seed turns each fault kind on or off, then a
//!    nemesis applies the enabled ones one after another for the fault
//!    phase: crash + restart, isolating a member (often the leader),
//!    majority/minority partitions, one-way link failures, pausing a
//!    member, a slow and lossy network, leader transfers.
//! 3. **Workload**: clients put, get (linearizable and serializable),
//!    range, delete, compare-and-set txns, multi-key txns, compact, grant
//!    and revoke leases and put with them; each op is recorded with its
//!    invocation and completion in simulated time and its outcome (an
//!    error that may hide an applied write is `Unknown`). A watcher client
//!    opens watches from past, current and future revisions.
//! 4. **Recorder**: a watch on the whole key space from the first revision,
//!    resumed on another member whenever its stream breaks: the system's
//!    own log of revisions, which the checkers hold against every client
//!    observation.
//! 5. **Heal and liveness**: after the fault phase every fault is undone;
//!    the cluster must then serve a write and a linearizable read within
//!    [`LIVENESS_BOUND`] of simulated time.
//! 6. **Checkers** (outside the system): linearizability and durability of
//!    the KV history against the log (`concord_check::check`), every
//!    member's final state against the log and equal HashKV, every watch
//!    stream (`concord::watch::checker`), and raft's election safety as
//!    the members report it (one leader per term).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord::proto::etcdserverpb::cluster_client::ClusterClient;
use concord::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord::proto::etcdserverpb::kv_client::KvClient;
use concord::proto::etcdserverpb::lease_client::LeaseClient;
use concord::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use concord::proto::etcdserverpb::request_op::Request as ReqOp;
use concord::proto::etcdserverpb::response_op::Response as RespOp;
use concord::proto::etcdserverpb::watch_client::WatchClient;
use concord::proto::etcdserverpb::watch_request::RequestUnion;
use concord::proto::etcdserverpb::{
    self as pb, CompactionRequest, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest,
    LeaseRevokeRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, MoveLeaderRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use concord::proto::mvccpb;
use concord::watch::checker as watch_check;
use concord_check::history::{
    Call, CmpResult, Compare, Kv, Op, Outcome, Reply, Target, TxnOp, TxnReply,
};
use concord_check::log::{Entry, Event, EventKind};
use tokio::madsim::net::NetSim;
use tokio::madsim::rand::{thread_rng, Rng};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::world::{channel, peer_url, World};

/// After healing, the cluster must serve a write and a read within this.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// A client gives up on a request after this (its outcome is then unknown).
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The workload's keys: `k0`..`k7`, all under the recorder's range [k, l).
const KEYS: usize = 8;

/// What a run does; [`Options::from_seed`] draws it.
#[derive(Debug, Clone)]
pub struct Options {
    pub members: usize,
    pub clients: usize,
    pub fault_phase: Duration,
    pub faults: BTreeSet<Fault>,
    /// How fast each member's clock runs (all 1.0 unless `ClockDrift`).
    pub clock_rates: Vec<f64>,
}

/// The fault kinds the nemesis can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Crash,
    Isolate,
    Partition,
    OneWayLink,
    Pause,
    SlowNetwork,
    TransferLeader,
    SlowDisk,
    Reconfigure,
    /// Not applied by the nemesis: each member's clock runs at its own
    /// rate for the whole run.
    ClockDrift,
}

const ALL_FAULTS: [Fault; 10] = [
    Fault::Crash,
    Fault::Isolate,
    Fault::Partition,
    Fault::OneWayLink,
    Fault::Pause,
    Fault::SlowNetwork,
    Fault::TransferLeader,
    Fault::SlowDisk,
    Fault::Reconfigure,
    Fault::ClockDrift,
];

impl Options {
    /// Swarm testing: each fault kind is on with probability 1/2 (at least
    /// one is on); 3 or 5 members; 3 to 5 clients.
    pub fn from_seed() -> Options {
        let mut rng = thread_rng();
        let mut faults: BTreeSet<Fault> = ALL_FAULTS
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        if faults.is_empty() {
            faults.insert(ALL_FAULTS[rng.gen_range(0..ALL_FAULTS.len())]);
        }
        let members = if rng.gen_bool(0.7) { 3 } else { 5 };
        let clock_rates = (0..members)
            .map(|_| {
                if faults.contains(&Fault::ClockDrift) {
                    rng.gen_range(0.8..1.25)
                } else {
                    1.0
                }
            })
            .collect();
        Options {
            members,
            clients: rng.gen_range(3..=5),
            fault_phase: Duration::from_secs(15),
            faults,
            clock_rates,
        }
    }
}

/// What a run saw and what the checkers said.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub options: Option<Options>,
    pub ops: usize,
    pub unknown: usize,
    pub faults_applied: Vec<String>,
    pub watchers: usize,
    pub log_revisions: usize,
    pub stats: Option<concord_check::Stats>,
    /// Each violation as "<checker> <kind>: <detail>".
    pub violations: Vec<String>,
    /// A digest of the whole run as observed (every op with its times and
    /// outcome, the log, the faults): two runs of one seed must agree.
    pub digest: u64,
}

impl Report {
    /// The kinds of violation found ("StaleRead", "watch:Reliable", ...).
    pub fn kinds(&self) -> BTreeSet<String> {
        self.violations
            .iter()
            // "<kind>: <detail>", where a kind may itself hold a colon
            // ("watch:Reliable").
            .filter_map(|v| v.split(": ").next())
            .map(|k| k.trim().to_string())
            .collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}: {:?}; {} ops ({} unknown), {} log revisions, {} watchers, faults: {}",
            self.seed,
            self.options,
            self.ops,
            self.unknown,
            self.log_revisions,
            self.watchers,
            self.faults_applied.join(", ")
        )?;
        if let Some(s) = &self.stats {
            writeln!(f, "checked: {s:?}")?;
        }
        writeln!(f, "digest {:016x}", self.digest)?;
        for v in &self.violations {
            writeln!(f, "VIOLATION {v}")?;
        }
        if !self.violations.is_empty() {
            writeln!(
                f,
                "replay: MADSIM_TEST_SEED={} cargo sim -p concord-sim --test chaos",
                self.seed
            )?;
        }
        Ok(())
    }
}

/// What the tasks of a run share.
struct Shared {
    start: Instant,
    /// Member slots in the cluster as far as the nemesis knows (it adds
    /// and removes members).
    active: Mutex<Vec<usize>>,
    history: Mutex<Vec<Op>>,
    next_op: Mutex<u64>,
    recorder: Mutex<Recorder>,
    watches: Mutex<Vec<(watch_check::WatchSpec, Vec<watch_check::SeenResponse>)>>,
    /// term -> members that said they led it.
    leaders: Mutex<BTreeMap<u64, BTreeSet<u64>>>,
    /// The highest revision a compaction was asked for.
    compacted: Mutex<i64>,
}

#[derive(Default)]
struct Recorder {
    entries: Vec<Entry>,
    /// Out-of-order or duplicate deliveries (a watch bug).
    problems: Vec<String>,
}

impl Recorder {
    fn last(&self) -> i64 {
        self.entries.last().map_or(1, |e| e.revision)
    }
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, client: u64, invoke: u64, call: Call, outcome: Outcome) {
        let id = {
            let mut n = self.next_op.lock().expect("lock");
            *n += 1;
            *n
        };
        let complete = self.now();
        self.history.lock().expect("lock").push(Op {
            id,
            client,
            invoke,
            complete,
            call,
            outcome,
        });
    }

    fn active(&self) -> Vec<usize> {
        self.active.lock().expect("lock").clone()
    }

    /// A random member in the cluster.
    fn pick(&self, rng: &mut impl Rng) -> usize {
        let active = self.active.lock().expect("lock");
        active[rng.gen_range(0..active.len())]
    }

    fn recorded_revision(&self) -> i64 {
        self.recorder.lock().expect("lock").last()
    }
}

/// Runs one chaos simulation in the current madsim runtime.
pub async fn run(opts: Options) -> Report {
    let mut w = World::start_with_clocks(&opts.clock_rates);
    let seed = w.handle.seed();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        active: Mutex::new((0..opts.members).collect()),
        history: Mutex::default(),
        next_op: Mutex::default(),
        recorder: Mutex::default(),
        watches: Mutex::default(),
        leaders: Mutex::default(),
        compacted: Mutex::new(0),
    });
    let mut report = Report {
        seed,
        options: Some(opts.clone()),
        ..Report::default()
    };
    let client = w.client.clone();
    let fault_end = Instant::now() + opts.fault_phase;

    let recorder = client.spawn(run_recorder(shared.clone()));
    let monitor = client.spawn(run_monitor(shared.clone()));
    let mut clients = Vec::new();
    for c in 0..opts.clients as u64 {
        clients.push(client.spawn(run_client(shared.clone(), c, fault_end)));
    }
    let watcher = client.spawn(run_watcher(shared.clone(), fault_end));
    report.faults_applied = run_nemesis(&mut w, &opts, &shared, fault_end).await;
    for c in clients {
        let _ = c.await;
    }
    let _ = watcher.await;

    // Everything is healed: the cluster must come back.
    let live = client
        .spawn(liveness(shared.clone(), w.members.len()))
        .await
        .unwrap_or(false);
    if !live {
        report.violations.push(format!(
            "Liveness: no write and linearizable read succeeded within {LIVENESS_BOUND:?} after healing"
        ));
    }
    let finals = client
        .spawn(converge(shared.clone(), w.members.len()))
        .await
        .unwrap_or_default();
    monitor.abort();
    recorder.abort();

    check(&shared, finals, &mut report);
    report
}

/// Applies enabled faults one after another until `end`, undoing each.
async fn run_nemesis(
    w: &mut World,
    opts: &Options,
    shared: &Arc<Shared>,
    end: Instant,
) -> Vec<String> {
    let faults: Vec<Fault> = opts
        .faults
        .iter()
        .copied()
        .filter(|f| *f != Fault::ClockDrift)
        .collect();
    let mut applied = Vec::new();
    if faults.is_empty() {
        tokio::time::sleep_until(end).await;
        return applied;
    }
    let mut adds = 0;
    while Instant::now() < end {
        let active = shared.active();
        let n = active.len();
        let (gap, fault, target, other, hold) = {
            let mut rng = thread_rng();
            (
                Duration::from_millis(rng.gen_range(100..1500)),
                faults[rng.gen_range(0..faults.len())],
                shared.pick(&mut rng),
                shared.pick(&mut rng),
                Duration::from_millis(rng.gen_range(300..4000)),
            )
        };
        tokio::time::sleep(gap).await;
        let net = NetSim::current();
        let target = if matches!(fault, Fault::Isolate | Fault::Crash | Fault::Pause)
            && thread_rng().gen_bool(0.5)
        {
            w.client
                .spawn(find_leader(active.clone()))
                .await
                .ok()
                .flatten()
                .unwrap_or(target)
        } else {
            target
        };
        let id = |i: usize| w.members[i].id();
        match fault {
            Fault::Crash => {
                w.crash(target);
                tokio::time::sleep(hold).await;
                w.restart(target);
            }
            Fault::Isolate => {
                w.isolate(target);
                tokio::time::sleep(hold).await;
                w.heal(target);
            }
            Fault::Partition => {
                // A random minority on one side.
                let minority: BTreeSet<usize> = active
                    .iter()
                    .copied()
                    .filter(|_| thread_rng().gen_bool(0.4))
                    .take((n - 1) / 2)
                    .collect();
                let cut: Vec<(usize, usize)> = active
                    .iter()
                    .flat_map(|a| active.iter().map(move |b| (*a, *b)))
                    .filter(|(a, b)| minority.contains(a) != minority.contains(b))
                    .collect();
                for (a, b) in &cut {
                    net.clog_link(id(*a), id(*b));
                }
                tokio::time::sleep(hold).await;
                for (a, b) in &cut {
                    net.unclog_link(id(*a), id(*b));
                }
                applied.push(format!("partition{minority:?}"));
                continue;
            }
            Fault::OneWayLink => {
                if target == other {
                    continue;
                }
                net.clog_link(id(target), id(other));
                tokio::time::sleep(hold).await;
                net.unclog_link(id(target), id(other));
                applied.push(format!("link{target}->{other}"));
                continue;
            }
            Fault::Pause => {
                w.handle.pause(id(target));
                tokio::time::sleep(hold).await;
                w.handle.resume(id(target));
            }
            Fault::SlowNetwork => {
                net.update_config(|c| {
                    c.send_latency = Duration::from_millis(5)..Duration::from_millis(150);
                    c.packet_loss_rate = 0.05;
                });
                tokio::time::sleep(hold).await;
                net.update_config(|c| *c = Default::default());
            }
            Fault::TransferLeader => {
                let _ = w.client.spawn(transfer_leader(active, target)).await;
            }
            Fault::Reconfigure => {
                // The membership as the leader lists it (an add or remove
                // whose outcome was unknown may or may not have happened);
                // above the starting size remove a member, else add one (a
                // learner, promoted once it can be).
                let Some(listed) = w
                    .client
                    .spawn(member_slots(w.members.len()))
                    .await
                    .ok()
                    .flatten()
                    .filter(|l| !l.is_empty())
                else {
                    continue;
                };
                *shared.active.lock().expect("lock") = listed.clone();
                if listed.len() > opts.members {
                    let victim = listed[thread_rng().gen_range(0..listed.len())];
                    let Some(id) = w.client.spawn(member_id(victim)).await.ok().flatten() else {
                        continue;
                    };
                    let removed = w
                        .client
                        .spawn(cluster_call(listed.clone(), ClusterOp::Remove(id)))
                        .await
                        .ok()
                        .flatten();
                    if removed.is_some() {
                        shared.active.lock().expect("lock").retain(|m| *m != victim);
                        w.stop(victim);
                        applied.push(format!("remove({victim})"));
                    }
                    continue;
                }
                if adds >= MEMBER_ADDS_MAX {
                    continue;
                }
                adds += 1;
                let slot = w.members.len();
                let added = w
                    .client
                    .spawn(cluster_call(
                        listed.clone(),
                        ClusterOp::AddLearner(peer_url(slot)),
                    ))
                    .await
                    .ok()
                    .flatten();
                // Started even if the add's outcome is unknown: it joins
                // once the add is applied (never, if it was not); clients
                // use it once acknowledged or listed.
                w.join(&listed);
                if added.is_some() {
                    shared.active.lock().expect("lock").push(slot);
                }
                tokio::time::sleep(hold).await;
                if let Some(id) = added {
                    let _ = w
                        .client
                        .spawn(cluster_call(listed, ClusterOp::Promote(id)))
                        .await;
                }
                applied.push(format!("add({slot})"));
                continue;
            }
            Fault::ClockDrift => unreachable!("not a nemesis fault"),
            Fault::SlowDisk => {
                let delay = Duration::from_millis(thread_rng().gen_range(5..50));
                w.backends[target].set_persist_delay(delay);
                tokio::time::sleep(hold).await;
                w.backends[target].set_persist_delay(Duration::ZERO);
            }
        }
        applied.push(format!("{fault:?}({target})"));
    }
    applied
}

/// At most this many members are added in one run.
const MEMBER_ADDS_MAX: usize = 3;

/// A membership change through the Cluster API.
enum ClusterOp {
    AddLearner(String),
    Promote(u64),
    Remove(u64),
}

/// Sends `op` to the members in turn (retrying a promotion refused while
/// the learner catches up) for up to 10 s; the member ID it concerns when
/// acknowledged.
async fn cluster_call(members: Vec<usize>, op: ClusterOp) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    while Instant::now() < deadline {
        let i = members[attempt % members.len()];
        attempt += 1;
        let Some(ch) = channel(i).await else { continue };
        let mut c = ClusterClient::new(ch);
        let r = match &op {
            ClusterOp::AddLearner(url) => tokio::time::timeout(
                OP_TIMEOUT,
                c.member_add(MemberAddRequest {
                    peer_ur_ls: vec![url.clone()],
                    is_learner: true,
                }),
            )
            .await
            .map(|r| r.map(|r| r.into_inner().member.map_or(0, |m| m.id))),
            ClusterOp::Promote(id) => tokio::time::timeout(
                OP_TIMEOUT,
                c.member_promote(MemberPromoteRequest { id: *id }),
            )
            .await
            .map(|r| r.map(|_| *id)),
            ClusterOp::Remove(id) => {
                tokio::time::timeout(OP_TIMEOUT, c.member_remove(MemberRemoveRequest { id: *id }))
                    .await
                    .map(|r| r.map(|_| *id))
            }
        };
        match r {
            Ok(Ok(id)) => return Some(id),
            // An add or remove that timed out may have happened: retrying
            // could do it twice, so only a promotion is retried blindly.
            Ok(Err(_)) | Err(_) if !matches!(op, ClusterOp::Promote(_)) => return None,
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    None
}

/// Member `i`'s ID, as it reports it.
async fn member_id(i: usize) -> Option<u64> {
    crate::world::status(i).await.map(|(_, _, id)| id)
}

/// The member that says it leads, if one does.
async fn find_leader(members: Vec<usize>) -> Option<usize> {
    for i in members {
        if let Some((lead, _, id)) = crate::world::status(i).await {
            if lead != 0 && lead == id {
                return Some(i);
            }
        }
    }
    None
}

async fn transfer_leader(members: Vec<usize>, to: usize) {
    let Some(leader) = find_leader(members).await else {
        return;
    };
    let Some((_, _, target_id)) = crate::world::status(to).await else {
        return;
    };
    if let Some(ch) = channel(leader).await {
        let _ = tokio::time::timeout(
            OP_TIMEOUT,
            MaintenanceClient::new(ch).move_leader(MoveLeaderRequest { target_id }),
        )
        .await;
    }
}

/// Polls every member for who it says leads which term.
async fn run_monitor(shared: Arc<Shared>) {
    loop {
        for i in shared.active() {
            if let Some((lead, term, id)) = crate::world::status(i).await {
                if lead != 0 && lead == id {
                    shared
                        .leaders
                        .lock()
                        .expect("lock")
                        .entry(term)
                        .or_default()
                        .insert(id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The recorder: one watch over [k, l) from revision 2, resumed after the
/// last revision it has on whichever member answers.
async fn run_recorder(shared: Arc<Shared>) {
    let mut member = 0;
    loop {
        let active = shared.active();
        member = active[(active.iter().position(|m| *m == member).unwrap_or(0) + 1) % active.len()];
        let Some(ch) = channel(member).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let start = shared.recorded_revision() + 1;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"k".to_vec(),
                    range_end: b"l".to_vec(),
                    start_revision: start,
                    ..Default::default()
                })),
            })
            .await;
        let stream = WatchClient::new(ch)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let Ok(stream) = stream else {
            continue;
        };
        let mut stream = stream.into_inner();
        // A stalled stream (its member cut off) is abandoned after a while.
        while let Ok(Ok(Some(resp))) =
            tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        {
            if resp.canceled || resp.compact_revision != 0 {
                let mut r = shared.recorder.lock().expect("lock");
                r.problems.push(format!(
                    "recorder watch canceled at {start}: compact_revision {} reason {:?}",
                    resp.compact_revision, resp.cancel_reason
                ));
                break;
            }
            let mut r = shared.recorder.lock().expect("lock");
            for ev in resp.events {
                let Some(kv) = ev.kv else { continue };
                let rev = kv.mod_revision;
                let last = r.last();
                let event = Event {
                    kind: if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    },
                    kv: to_kv(kv),
                };
                if rev == last {
                    if let Some(e) = r.entries.last_mut() {
                        e.events.push(event);
                    }
                } else if rev > last {
                    r.entries.push(Entry {
                        revision: rev,
                        events: vec![event],
                    });
                } else {
                    r.problems
                        .push(format!("recorder got revision {rev} after {last}"));
                }
            }
        }
        drop(tx);
    }
}

fn to_kv(kv: mvccpb::KeyValue) -> Kv {
    Kv {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// What one client does: random requests to random members until `end`.
async fn run_client(shared: Arc<Shared>, client: u64, end: Instant) {
    let mut channels: BTreeMap<usize, Channel> = BTreeMap::new();
    let mut seen_mod: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    let mut lease: Option<i64> = None;
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let (member, call, think) = {
            let mut rng = thread_rng();
            let member = shared.pick(&mut rng);
            let call = gen_call(&mut rng, client, n, &seen_mod, lease, &shared);
            (member, call, Duration::from_millis(rng.gen_range(0..30)))
        };
        let ch = match channels.get(&member) {
            Some(ch) => Some(ch.clone()),
            None => channel(member).await,
        };
        let Some(ch) = ch else {
            tokio::time::sleep(think).await;
            continue;
        };
        channels.insert(member, ch.clone());
        let invoke = shared.now();
        let result = tokio::time::timeout(OP_TIMEOUT, execute(ch, &call)).await;
        let (call, outcome) = match result {
            Ok(Ok((call, reply))) => {
                learn(&reply, &call, &mut seen_mod, &mut lease);
                (call, Outcome::Ok(reply))
            }
            Ok(Err(status)) => {
                if status.message().contains("transport") {
                    channels.remove(&member);
                }
                (call, outcome_of(&status))
            }
            Err(_) => {
                channels.remove(&member);
                (call, Outcome::Unknown)
            }
        };
        if matches!(call, Call::LeaseRevoke { .. }) && !matches!(outcome, Outcome::Unknown) {
            lease = None;
        }
        shared.record(client, invoke, call, outcome);
        tokio::time::sleep(think).await;
    }
}

/// An error that proves the request was not applied is a failure; any
/// other may hide an applied write.
fn outcome_of(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::OutOfRange | Code::FailedPrecondition => {
            Outcome::Failed(status.message().to_string())
        }
        _ => Outcome::Unknown,
    }
}

/// Remembers what a reply taught the client (mod revisions for CAS, its
/// lease).
fn learn(reply: &Reply, call: &Call, seen: &mut BTreeMap<Vec<u8>, i64>, lease: &mut Option<i64>) {
    match (reply, call) {
        (Reply::Range { kvs, .. }, _) => {
            for kv in kvs {
                seen.insert(kv.key.clone(), kv.mod_revision);
            }
        }
        (Reply::Put { revision }, Call::Put { key, .. }) => {
            seen.insert(key.clone(), *revision);
        }
        (Reply::LeaseGrant { .. }, Call::LeaseGrant { id, .. }) => *lease = Some(*id),
        _ => {}
    }
}

fn gen_call(
    rng: &mut impl Rng,
    client: u64,
    n: u64,
    seen: &BTreeMap<Vec<u8>, i64>,
    lease: Option<i64>,
    shared: &Shared,
) -> Call {
    let value = format!("c{client}.{n}").into_bytes();
    let k = key(rng.gen_range(0..KEYS));
    match rng.gen_range(0..100) {
        0..=29 => Call::Put {
            key: k,
            value,
            lease: match lease {
                Some(l) if rng.gen_bool(0.3) => l,
                _ => 0,
            },
        },
        30..=44 => Call::Range {
            key: k,
            range_end: Vec::new(),
            revision: 0,
            serializable: false,
        },
        45..=51 => Call::Range {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            revision: 0,
            serializable: rng.gen_bool(0.5),
        },
        52..=56 => Call::Range {
            key: k,
            range_end: Vec::new(),
            revision: 0,
            serializable: true,
        },
        57..=59 => {
            // A read in the past (it may be compacted).
            let last = shared.recorded_revision();
            Call::Range {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                revision: rng.gen_range(1..=last.max(1)),
                serializable: rng.gen_bool(0.5),
            }
        }
        60..=69 => {
            if rng.gen_bool(0.8) {
                Call::Delete {
                    key: k,
                    range_end: Vec::new(),
                }
            } else {
                let a = rng.gen_range(0..KEYS - 2);
                Call::Delete {
                    key: key(a),
                    range_end: key(a + 2),
                }
            }
        }
        70..=84 => {
            // Compare-and-set on the mod revision this client last saw.
            let guess = seen.get(&k).copied().unwrap_or(0);
            Call::compare_and_set(k, guess, value)
        }
        85..=89 => {
            // Several keys in one revision.
            let other = key(rng.gen_range(0..KEYS));
            let third = key(rng.gen_range(0..KEYS));
            let mut success = vec![TxnOp::Put {
                key: k.clone(),
                value: [value.clone(), b"a".to_vec()].concat(),
                lease: 0,
            }];
            if other != k {
                success.push(TxnOp::Put {
                    key: other.clone(),
                    value: [value.clone(), b"b".to_vec()].concat(),
                    lease: 0,
                });
            }
            if third != k && third != other {
                success.push(TxnOp::Delete {
                    key: third,
                    range_end: Vec::new(),
                });
            }
            success.push(TxnOp::Range {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
            });
            Call::Txn {
                compares: vec![Compare {
                    key: k,
                    target: Target::Version(rng.gen_range(0..3)),
                    result: if rng.gen_bool(0.5) {
                        CmpResult::Greater
                    } else {
                        CmpResult::Less
                    },
                }],
                success,
                failure: vec![],
            }
        }
        90..=92 => {
            // Compaction never passes what the recorder has (its log must
            // stay complete).
            let at = shared.recorded_revision() - rng.gen_range(5..40);
            let mut c = shared.compacted.lock().expect("lock");
            if at > *c && at > 1 {
                *c = at;
                Call::Compact { revision: at }
            } else {
                Call::Range {
                    key: k,
                    range_end: Vec::new(),
                    revision: 0,
                    serializable: false,
                }
            }
        }
        93..=96 => match lease {
            None => Call::LeaseGrant {
                id: 0,
                ttl: rng.gen_range(2..8),
            },
            Some(id) => Call::Put {
                key: k,
                value,
                lease: id,
            },
        },
        _ => match lease {
            Some(id) => Call::LeaseRevoke { id },
            None => Call::LeaseGrant {
                id: 0,
                ttl: rng.gen_range(2..8),
            },
        },
    }
}

fn compare_pb(c: &Compare) -> pb::Compare {
    let (target, union) = match &c.target {
        Target::Value(v) => (CompareTarget::Value, TargetUnion::Value(v.clone())),
        Target::Version(v) => (CompareTarget::Version, TargetUnion::Version(*v)),
        Target::CreateRevision(v) => (CompareTarget::Create, TargetUnion::CreateRevision(*v)),
        Target::ModRevision(v) => (CompareTarget::Mod, TargetUnion::ModRevision(*v)),
        Target::Lease(v) => (CompareTarget::Lease, TargetUnion::Lease(*v)),
    };
    let result = match c.result {
        CmpResult::Equal => CompareResult::Equal,
        CmpResult::NotEqual => CompareResult::NotEqual,
        CmpResult::Greater => CompareResult::Greater,
        CmpResult::Less => CompareResult::Less,
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: c.key.clone(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

fn op_pb(op: &TxnOp) -> RequestOp {
    let request = match op {
        TxnOp::Put { key, value, lease } => ReqOp::RequestPut(PutRequest {
            key: key.clone(),
            value: value.clone(),
            lease: *lease,
            ..Default::default()
        }),
        TxnOp::Delete { key, range_end } => ReqOp::RequestDeleteRange(DeleteRangeRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            ..Default::default()
        }),
        TxnOp::Range { key, range_end } => ReqOp::RequestRange(RangeRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            ..Default::default()
        }),
    };
    RequestOp {
        request: Some(request),
    }
}

fn rev_of(h: Option<pb::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision)
}

/// Sends `call`; the call as it turned out (a grant learns its lease ID)
/// and the reply.
async fn execute(ch: Channel, call: &Call) -> Result<(Call, Reply), tonic::Status> {
    let mut kv = KvClient::new(ch.clone());
    let reply = match call {
        Call::Put { key, value, lease } => {
            let r = kv
                .put(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    lease: *lease,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Reply::Put {
                revision: rev_of(r.header),
            }
        }
        Call::Delete { key, range_end } => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Reply::Delete {
                revision: rev_of(r.header),
                deleted: r.deleted,
            }
        }
        Call::Range {
            key,
            range_end,
            revision,
            serializable,
        } => {
            let r = kv
                .range(RangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    revision: *revision,
                    serializable: *serializable,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Reply::Range {
                revision: rev_of(r.header),
                kvs: r.kvs.into_iter().map(to_kv).collect(),
            }
        }
        Call::Txn {
            compares,
            success,
            failure,
        } => {
            let r = kv
                .txn(TxnRequest {
                    compare: compares.iter().map(compare_pb).collect(),
                    success: success.iter().map(op_pb).collect(),
                    failure: failure.iter().map(op_pb).collect(),
                })
                .await?
                .into_inner();
            let responses = r
                .responses
                .into_iter()
                .map(|op| match op.response {
                    Some(RespOp::ResponseRange(rr)) => TxnReply::Range {
                        kvs: rr.kvs.into_iter().map(to_kv).collect(),
                    },
                    Some(RespOp::ResponseDeleteRange(d)) => TxnReply::Delete { deleted: d.deleted },
                    _ => TxnReply::Put,
                })
                .collect();
            Reply::Txn {
                revision: rev_of(r.header),
                succeeded: r.succeeded,
                responses,
            }
        }
        Call::Compact { revision } => {
            let r = kv
                .compact(CompactionRequest {
                    revision: *revision,
                    physical: false,
                })
                .await?
                .into_inner();
            Reply::Compact {
                revision: rev_of(r.header),
            }
        }
        Call::LeaseGrant { ttl, .. } => {
            let r = LeaseClient::new(ch)
                .lease_grant(LeaseGrantRequest { ttl: *ttl, id: 0 })
                .await?
                .into_inner();
            return Ok((
                Call::LeaseGrant {
                    id: r.id,
                    ttl: *ttl,
                },
                Reply::LeaseGrant {
                    revision: rev_of(r.header),
                },
            ));
        }
        Call::LeaseRevoke { id } => {
            let r = LeaseClient::new(ch)
                .lease_revoke(LeaseRevokeRequest { id: *id })
                .await?
                .into_inner();
            Reply::LeaseRevoke {
                revision: rev_of(r.header),
            }
        }
    };
    Ok((call.clone(), reply))
}

/// Opens watches from past, current and future revisions on random
/// members, reads each for a while, and records what arrived.
async fn run_watcher(shared: Arc<Shared>, end: Instant) {
    while Instant::now() < end {
        let (member, spec, hold) = {
            let mut rng = thread_rng();
            let last = shared.recorded_revision();
            let start = (last + rng.gen_range(-30..5)).max(1);
            let (key, range_end) = if rng.gen_bool(0.7) {
                (b"k".to_vec(), b"l".to_vec())
            } else {
                (key(rng.gen_range(0..KEYS)), Vec::new())
            };
            (
                shared.pick(&mut rng),
                watch_check::WatchSpec {
                    key,
                    range_end,
                    start_rev: start,
                    no_put: rng.gen_bool(0.1),
                    no_delete: rng.gen_bool(0.1),
                    prev_kv: rng.gen_bool(0.5),
                },
                Duration::from_millis(rng.gen_range(500..3000)),
            )
        };
        let Some(ch) = channel(member).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let seen = watch_for(ch, &spec, hold).await;
        shared.watches.lock().expect("lock").push((spec, seen));
    }
}

async fn watch_for(
    ch: Channel,
    spec: &watch_check::WatchSpec,
    hold: Duration,
) -> Vec<watch_check::SeenResponse> {
    use pb::watch_create_request::FilterType;
    let mut filters = Vec::new();
    if spec.no_put {
        filters.push(FilterType::Noput as i32);
    }
    if spec.no_delete {
        filters.push(FilterType::Nodelete as i32);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = tx
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: spec.key.clone(),
                range_end: spec.range_end.clone(),
                start_revision: spec.start_rev,
                filters,
                prev_kv: spec.prev_kv,
                ..Default::default()
            })),
        })
        .await;
    let mut seen = Vec::new();
    let Ok(Ok(stream)) = tokio::time::timeout(
        OP_TIMEOUT,
        WatchClient::new(ch).watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    else {
        return seen;
    };
    let mut stream = stream.into_inner();
    let end = Instant::now() + hold;
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(
        end.saturating_duration_since(Instant::now()),
        stream.message(),
    )
    .await
    {
        if resp.created && resp.events.is_empty() && !resp.canceled {
            continue;
        }
        seen.push(watch_check::SeenResponse {
            header_rev: rev_of(resp.header),
            events: resp
                .events
                .into_iter()
                .filter_map(|ev| {
                    let kv = ev.kv?;
                    let delete = ev.r#type == mvccpb::event::EventType::Delete as i32;
                    Some(watch_check::SeenEvent {
                        rev: kv.mod_revision,
                        key: kv.key,
                        value: (!delete).then_some(kv.value),
                        prev_value: ev.prev_kv.map(|p| p.value),
                    })
                })
                .collect(),
            compact_revision: resp.compact_revision,
            canceled: resp.canceled,
        });
    }
    drop(tx);
    seen
}

/// After healing: a write and a linearizable read must succeed within
/// [`LIVENESS_BOUND`]. Both are recorded in the history.
async fn liveness(shared: Arc<Shared>, slots: usize) -> bool {
    let deadline = Instant::now() + LIVENESS_BOUND;
    let client = 1000;
    let mut attempt = 0u64;
    let mut wrote = false;
    while Instant::now() < deadline {
        attempt += 1;
        // Every member ever started, in turn (a removed one fails).
        let member = attempt as usize % slots;
        let Some(ch) = channel(member).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let call = if wrote {
            Call::Range {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                revision: 0,
                serializable: false,
            }
        } else {
            Call::Put {
                key: key(0),
                value: format!("live.{attempt}").into_bytes(),
                lease: 0,
            }
        };
        let invoke = shared.now();
        let r = tokio::time::timeout(OP_TIMEOUT, execute(ch, &call)).await;
        let outcome = match r {
            Ok(Ok((_, reply))) => Outcome::Ok(reply),
            Ok(Err(s)) => outcome_of(&s),
            Err(_) => Outcome::Unknown,
        };
        let ok = matches!(outcome, Outcome::Ok(_));
        shared.record(client, invoke, call, outcome);
        if ok && wrote {
            return true;
        }
        wrote |= ok;
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    false
}

/// Waits until every member serves the same revision and the recorder
/// has it; then each member's full state (serializable, local) at its
/// revision and its HashKV.
#[derive(Debug, Default)]
struct Finals {
    /// (member index, revision, state)
    states: Vec<(u64, i64, Vec<Kv>)>,
    hashes: Vec<(usize, i64, u32)>,
    converged: bool,
    recorded: bool,
}

async fn converge(shared: Arc<Shared>, slots: usize) -> Finals {
    let deadline = Instant::now() + LIVENESS_BOUND;
    let mut finals = Finals::default();
    while Instant::now() < deadline {
        // The cluster's members as one of them lists them.
        let Some(members) = member_slots(slots).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut states = Vec::new();
        for &i in &members {
            let Some(ch) = channel(i).await else { break };
            let r = tokio::time::timeout(
                OP_TIMEOUT,
                KvClient::new(ch).range(RangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"l".to_vec(),
                    serializable: true,
                    ..Default::default()
                }),
            )
            .await;
            if let Ok(Ok(r)) = r {
                let r = r.into_inner();
                states.push((
                    i as u64,
                    rev_of(r.header),
                    r.kvs.into_iter().map(to_kv).collect::<Vec<_>>(),
                ));
            }
        }
        let all_equal = states.len() == members.len() && states.iter().all(|s| s.1 == states[0].1);
        if std::env::var_os("CONCORD_SIM_DEBUG").is_some() {
            let revs: Vec<(u64, i64)> = states.iter().map(|s| (s.0, s.1)).collect();
            eprintln!("converge: members {members:?} at {revs:?}");
        }
        if all_equal {
            finals.converged = true;
            let rev = states[0].1;
            finals.states = states;
            // The recorder must reach the same revision.
            while Instant::now() < deadline {
                if shared.recorded_revision() >= rev {
                    finals.recorded = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for &i in &members {
                if let Some(ch) = channel(i).await {
                    if let Ok(Ok(h)) = tokio::time::timeout(
                        OP_TIMEOUT,
                        MaintenanceClient::new(ch).hash_kv(HashKvRequest { revision: rev }),
                    )
                    .await
                    {
                        finals.hashes.push((i, rev, h.into_inner().hash));
                    }
                }
            }
            return finals;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    finals
}

/// The slots of the members the leader lists (a removed member, still
/// answering, would list the members it knew).
async fn member_slots(slots: usize) -> Option<Vec<usize>> {
    let leader = find_leader((0..slots).collect()).await?;
    let ch = channel(leader).await?;
    let list = tokio::time::timeout(
        OP_TIMEOUT,
        ClusterClient::new(ch).member_list(MemberListRequest::default()),
    )
    .await
    .ok()?
    .ok()?;
    let urls: BTreeSet<String> = list
        .into_inner()
        .members
        .into_iter()
        .flat_map(|m| m.peer_ur_ls)
        .collect();
    Some(
        (0..slots)
            .filter(|s| urls.contains(&peer_url(*s)))
            .collect(),
    )
}

fn check(shared: &Shared, finals: Finals, report: &mut Report) {
    let history = shared.history.lock().expect("lock").clone();
    let recorder = std::mem::take(&mut *shared.recorder.lock().expect("lock"));
    report.ops = history.len();
    report.unknown = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Unknown))
        .count();
    report.log_revisions = recorder.entries.len();
    report.digest = digest(&format!(
        "{history:?}{:?}{:?}",
        recorder.entries, report.faults_applied
    ));
    let v = &mut report.violations;
    for p in &recorder.problems {
        v.push(format!("watch:Recorder: {p}"));
    }
    if !finals.converged {
        v.push(format!(
            "Convergence: members did not reach one revision within {LIVENESS_BOUND:?}"
        ));
    } else if !finals.recorded {
        v.push("watch:Recorder: the recorder never reached the final revision".into());
    }
    // Raft election safety, as the members report it.
    for (term, leaders) in shared.leaders.lock().expect("lock").iter() {
        if leaders.len() > 1 {
            v.push(format!("TwoLeaders: term {term} was led by {leaders:x?}"));
        }
    }
    // Equal HashKV at the same revision.
    if let Some((_, _, h0)) = finals.hashes.first() {
        if finals.hashes.iter().any(|(_, _, h)| h != h0) {
            v.push(format!("HashKvDiffers: {:?}", finals.hashes));
        }
    }
    // Linearizability and durability of the KV history.
    match concord_check::check(&history, &[], 1, &recorder.entries) {
        Ok(stats) => report.stats = Some(stats),
        Err(found) => {
            for f in found {
                v.push(format!("{:?}: {f}", f.kind()));
            }
        }
    }
    if let Err(found) = concord_check::check_final_states(&[], 1, &recorder.entries, &finals.states)
    {
        for f in found {
            v.push(format!("{:?}: {f}", f.kind()));
        }
    }
    // Every watch stream against the log (only if the log is ordered:
    // otherwise the recorder problem is the finding).
    let ordered = recorder
        .entries
        .windows(2)
        .all(|w| w[0].revision < w[1].revision);
    if ordered {
        let mut h = watch_check::History::new();
        for e in &recorder.entries {
            for ev in &e.events {
                match ev.kind {
                    EventKind::Put => h.put(e.revision, &ev.kv.key, &ev.kv.value),
                    EventKind::Delete => h.delete(e.revision, &ev.kv.key),
                }
            }
        }
        let watches = shared.watches.lock().expect("lock");
        report.watchers = watches.len();
        // Any compaction asked for may have been applied while a watcher ran.
        let compacted = *shared.compacted.lock().expect("lock");
        for (spec, seen) in watches.iter() {
            // A watcher's stream can only be checked up to what the log has.
            for violation in watch_check::check_compacted(&h, spec, seen, compacted) {
                if std::env::var_os("CONCORD_SIM_DEBUG").is_some() {
                    eprintln!("watch {spec:?} saw {seen:#?}");
                    for op in history
                        .iter()
                        .filter(|o| matches!(o.call, Call::Compact { .. }))
                    {
                        eprintln!("compaction {op:?}");
                    }
                    for e in recorder
                        .entries
                        .iter()
                        .filter(|e| (e.revision - spec.start_rev).abs() < 20)
                    {
                        eprintln!("log {e:?}");
                    }
                }
                v.push(format!(
                    "watch:{}: {violation:?} (watch {spec:?})",
                    watch_kind(&violation)
                ));
            }
        }
    }
}

/// FNV-1a: a stable hash (std's is seeded per process).
fn digest(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn watch_kind(v: &watch_check::Violation) -> &'static str {
    use watch_check::Violation::*;
    match v {
        Ordered { .. } => "Ordered",
        Unique { .. } => "Unique",
        Atomic { .. } => "Atomic",
        Reliable { .. } => "Reliable",
        Unexpected { .. } => "Unexpected",
        Resumable { .. } => "Resumable",
        Filtered { .. } => "Filtered",
        WrongValue { .. } => "WrongValue",
        PrevKv { .. } => "PrevKv",
        BadCompactCancel { .. } => "BadCompactCancel",
    }
}
