//! metrics: etcd's Prometheus metrics, under etcd's names, types, labels
//! and buckets, in one process-wide registry (as etcd's). Counters and
//! histograms are counted where the work happens (the member's persist and
//! apply, the transport, the gRPC layer in `grpc`); gauges that describe
//! state a scrape can read directly (sizes, key counts, the leader) are
//! set by the scrape (`Scrape`), from the member serving it.
//!
//! Rendering: `render()` is the text exposition format that `/metrics`
//! serves.

#[cfg(not(madsim))]
pub mod grpc;

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Every metric concord exports (the gRPC ones are in `grpc`).
pub struct Metrics {
    registry: Registry,
    // etcd_server_*
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub slow_apply: IntCounter,
    pub heartbeat_send_failures: IntCounter,
    pub slow_read_indexes: IntCounter,
    pub read_indexes_failed: IntCounter,
    pub server_version: IntGaugeVec,
    pub cluster_version: IntGaugeVec,
    pub server_id: IntGaugeVec,
    pub is_learner: IntGauge,
    pub client_requests: IntCounterVec,
    pub health_success: IntCounter,
    pub health_failures: IntCounter,
    pub healthcheck: IntGaugeVec,
    pub healthchecks_total: IntCounterVec,
    // etcd_disk_*
    pub wal_fsync: Histogram,
    pub wal_write_bytes: IntGauge,
    pub backend_commit: Histogram,
    // etcd_mvcc_* and etcd_debugging_mvcc_*
    pub db_total_size: IntGauge,
    pub db_total_size_in_use: IntGauge,
    pub put_total: IntCounter,
    pub range_total: IntCounter,
    pub delete_total: IntCounter,
    pub txn_total: IntCounter,
    pub keys_total: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    pub watch_stream_total: IntGauge,
    pub watcher_total: IntGauge,
    pub events_total: IntCounter,
    // etcd_network_*
    pub peer_sent_bytes: IntCounterVec,
    pub peer_received_bytes: IntCounterVec,
    pub peer_sent_failures: IntCounterVec,
    pub peer_received_failures: IntCounterVec,
    pub active_peers: IntGaugeVec,
    pub disconnected_peers: IntCounterVec,
    pub client_grpc_sent_bytes: IntCounter,
    pub client_grpc_received_bytes: IntCounter,
    // leases
    pub lease_granted: IntCounter,
    pub lease_revoked: IntCounter,
    pub lease_renewed: IntCounter,
    pub lease_expired: IntCounter,
    pub lease_ttl: Histogram,
    // os
    pub os_fd_used: IntGauge,
    pub os_fd_limit: IntGauge,
}

/// Registers `m` and returns it. Registration fails only on a duplicate
/// name, a programming error caught by the tests.
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid metric"))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(r, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// etcd's disk latency buckets: 1 ms doubling 14 times (to 8 s).
fn disk_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    reg(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid metric"),
    )
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        #[cfg(all(target_os = "linux", not(madsim)))]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric names are unique");
        Metrics {
            has_leader: gauge(
                &r,
                "etcd_server_has_leader",
                "Whether a leader exists: 1 if one does, 0 if not.",
            ),
            is_leader: gauge(
                &r,
                "etcd_server_is_leader",
                "Whether this member is the leader: 1 if it is, 0 if not.",
            ),
            leader_changes: counter(
                &r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes this member has seen.",
            ),
            proposals_committed: gauge(
                &r,
                "etcd_server_proposals_committed_total",
                "The raft log index committed (every committed entry, as etcd counts).",
            ),
            proposals_applied: gauge(
                &r,
                "etcd_server_proposals_applied_total",
                "The raft log index applied to the store.",
            ),
            proposals_pending: gauge(
                &r,
                "etcd_server_proposals_pending",
                "The number of proposals of this member waiting to be applied.",
            ),
            proposals_failed: counter(
                &r,
                "etcd_server_proposals_failed_total",
                "The number of proposals that failed (no leader, timed out, dropped).",
            ),
            slow_apply: counter(
                &r,
                "etcd_server_slow_apply_total",
                "The number of applies that took over 100 ms.",
            ),
            heartbeat_send_failures: counter(
                &r,
                "etcd_server_heartbeat_send_failures_total",
                "The number of leader heartbeats that could not be sent.",
            ),
            slow_read_indexes: counter(
                &r,
                "etcd_server_slow_read_indexes_total",
                "The number of read index requests answered after a retry.",
            ),
            read_indexes_failed: counter(
                &r,
                "etcd_server_read_indexes_failed_total",
                "The number of read index requests that failed.",
            ),
            server_version: gauge_vec(
                &r,
                "etcd_server_version",
                "The etcd version this member reports, in the label server_version.",
                &["server_version"],
            ),
            cluster_version: gauge_vec(
                &r,
                "etcd_cluster_version",
                "The cluster version, in the label cluster_version.",
                &["cluster_version"],
            ),
            server_id: gauge_vec(
                &r,
                "etcd_server_id",
                "The member ID (hexadecimal) in the label server_id.",
                &["server_id"],
            ),
            is_learner: gauge(
                &r,
                "etcd_server_is_learner",
                "Whether this member is a learner: 1 if it is, 0 if not.",
            ),
            client_requests: counter_vec(
                &r,
                "etcd_server_client_requests_total",
                "The number of client requests per client version and type (unary or stream).",
                &["type", "client_api_version"],
            ),
            health_success: counter(
                &r,
                "etcd_server_health_success",
                "The number of successful health checks.",
            ),
            health_failures: counter(
                &r,
                "etcd_server_health_failures",
                "The number of failed health checks.",
            ),
            healthcheck: gauge_vec(
                &r,
                "etcd_server_healthcheck",
                "The result of each /livez and /readyz check: 1 passed, 0 failed.",
                &["type", "name"],
            ),
            healthchecks_total: counter_vec(
                &r,
                "etcd_server_healthchecks_total",
                "The number of /livez and /readyz checks by result.",
                &["type", "name", "status"],
            ),
            wal_fsync: histogram(
                &r,
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency of writing and syncing a batch of raft log entries \
                 (concord's log lives in the store's LSM; this is its journal's fsync).",
                disk_buckets(),
            ),
            wal_write_bytes: gauge(
                &r,
                "etcd_disk_wal_write_bytes_total",
                "The bytes of raft log entries written.",
            ),
            backend_commit: histogram(
                &r,
                "etcd_disk_backend_commit_duration_seconds",
                "The latency of committing one applied group of entries to the store \
                 (an LSM write, made durable by the next raft log sync).",
                disk_buckets(),
            ),
            db_total_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_bytes",
                "The size of the store's files on disk in bytes (an LSM: tables and \
                 journal, not a preallocated file).",
            ),
            db_total_size_in_use: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "The size of the store's files on disk in bytes (the LSM has no free \
                 pages to subtract; the same figure as the total).",
            ),
            put_total: counter(&r, "etcd_mvcc_put_total", "The number of puts applied."),
            range_total: counter(&r, "etcd_mvcc_range_total", "The number of ranges served."),
            delete_total: counter(
                &r,
                "etcd_mvcc_delete_total",
                "The number of delete ranges applied.",
            ),
            txn_total: counter(
                &r,
                "etcd_mvcc_txn_total",
                "The number of transactions applied.",
            ),
            keys_total: gauge(
                &r,
                "etcd_debugging_mvcc_keys_total",
                "The number of live keys.",
            ),
            current_revision: gauge(
                &r,
                "etcd_debugging_mvcc_current_revision",
                "The current revision of the store.",
            ),
            compact_revision: gauge(
                &r,
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction.",
            ),
            watch_stream_total: gauge(
                &r,
                "etcd_debugging_mvcc_watch_stream_total",
                "The number of open watch streams.",
            ),
            watcher_total: gauge(
                &r,
                "etcd_debugging_mvcc_watcher_total",
                "The number of watchers.",
            ),
            events_total: counter(
                &r,
                "etcd_debugging_mvcc_events_total",
                "The number of events sent to watchers.",
            ),
            peer_sent_bytes: counter_vec(
                &r,
                "etcd_network_peer_sent_bytes_total",
                "The bytes of raft messages sent to each peer.",
                &["To"],
            ),
            peer_received_bytes: counter_vec(
                &r,
                "etcd_network_peer_received_bytes_total",
                "The bytes of raft messages received from each peer.",
                &["From"],
            ),
            peer_sent_failures: counter_vec(
                &r,
                "etcd_network_peer_sent_failures_total",
                "The number of raft messages that could not be sent to each peer.",
                &["To"],
            ),
            peer_received_failures: counter_vec(
                &r,
                "etcd_network_peer_received_failures_total",
                "The number of raft messages from each peer that could not be received.",
                &["From"],
            ),
            active_peers: gauge_vec(
                &r,
                "etcd_network_active_peers",
                "Whether the stream to each peer is connected.",
                &["Local", "Remote"],
            ),
            disconnected_peers: counter_vec(
                &r,
                "etcd_network_disconnected_peers_total",
                "The number of times the stream to each peer was lost.",
                &["Local", "Remote"],
            ),
            client_grpc_sent_bytes: counter(
                &r,
                "etcd_network_client_grpc_sent_bytes_total",
                "The bytes of gRPC messages sent to clients.",
            ),
            client_grpc_received_bytes: counter(
                &r,
                "etcd_network_client_grpc_received_bytes_total",
                "The bytes of gRPC messages received from clients.",
            ),
            lease_granted: counter(
                &r,
                "etcd_debugging_lease_granted_total",
                "The number of leases granted.",
            ),
            lease_revoked: counter(
                &r,
                "etcd_debugging_lease_revoked_total",
                "The number of leases revoked.",
            ),
            lease_renewed: counter(
                &r,
                "etcd_debugging_lease_renewed_total",
                "The number of leases renewed by this member (as leader).",
            ),
            lease_expired: counter(
                &r,
                "etcd_debugging_server_lease_expired_total",
                "The number of leases that expired.",
            ),
            lease_ttl: histogram(
                &r,
                "etcd_debugging_lease_ttl_total",
                "The TTLs of granted leases, in seconds.",
                exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            os_fd_used: gauge(&r, "os_fd_used", "The number of open file descriptors."),
            os_fd_limit: gauge(
                &r,
                "os_fd_limit",
                "The limit on open file descriptors (RLIMIT_NOFILE).",
            ),
            registry: r,
        }
    }

    /// The registry (the gRPC layer registers its families here too).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The text exposition format of every metric.
pub fn render() -> String {
    let families = METRICS.registry.gather();
    let mut out = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!(error = %e, "metrics could not be rendered");
    }
    out
}

/// Counts the operations a transaction ran (its responses, nested
/// transactions included) as puts, ranges and deletes, as etcd's mvcc
/// counts them.
pub fn count_txn_ops(responses: &[crate::proto::etcdserverpb::ResponseOp]) {
    use crate::proto::etcdserverpb::response_op::Response as R;
    for r in responses {
        match &r.response {
            Some(R::ResponsePut(_)) => METRICS.put_total.inc(),
            Some(R::ResponseRange(_)) => METRICS.range_total.inc(),
            Some(R::ResponseDeleteRange(_)) => METRICS.delete_total.inc(),
            Some(R::ResponseTxn(t)) => count_txn_ops(&t.responses),
            None => {}
        }
    }
}

/// Times `f` into `h`.
pub fn time<T>(h: &Histogram, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let r = f();
    h.observe(start.elapsed().as_secs_f64());
    r
}

/// The number of open file descriptors and the limit, from /proc (Linux).
pub fn file_descriptors() -> Option<(i64, i64)> {
    let used = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let limit = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some((used, limit))
}
