//! api: the etcd v3 gRPC services. Each maps requests to member calls and
//! store reads, validates them as etcd's gRPC layer does, and answers with
//! etcd's headers and errors. Knows nothing of storage engines.

pub mod auth;
pub mod caller;
pub mod check;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod error;
pub mod health;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;

use crate::member::Handle;
use crate::proto::etcdserverpb::ResponseHeader;

/// The server version reported in Status and `/version`.
pub const SERVER_VERSION: &str = "3.5.17";
/// The cluster version (major.minor) the member announces.
pub const CLUSTER_VERSION: &str = "3.5";

/// Fills a response header as etcd's gRPC layer does: cluster and member
/// IDs and the raft term always; the revision only if the applier left it 0.
pub fn fill_header(member: &Handle, header: &mut Option<ResponseHeader>) {
    let h = header.get_or_insert_with(ResponseHeader::default);
    h.cluster_id = member.cluster_id();
    h.member_id = member.member_id();
    h.raft_term = member.progress().term;
    if h.revision == 0 {
        h.revision = member.store().current_revision();
    }
}

/// A header at the given revision.
pub fn header_at(member: &Handle, revision: i64) -> Option<ResponseHeader> {
    let mut h = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    fill_header(member, &mut h);
    h
}

/// gRPC server limits etcd uses: receive up to max-request-bytes + 512 KiB.
pub fn max_recv_bytes(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(512 * 1024)
}

/// A connection to the current leader's client URL, for the requests only
/// the leader can answer (etcd forwards them over its peer API).
pub async fn leader_channel(member: &Handle) -> Result<tonic::transport::Channel, tonic::Status> {
    let leader = member.progress().leader;
    let url = member
        .membership()
        .members
        .into_iter()
        .find(|m| m.id == leader && leader != 0)
        .and_then(|m| m.client_ur_ls.into_iter().next())
        .ok_or_else(|| error::NO_LEADER.status())?;
    member
        .client_dialer()
        .channel(&url)
        .await
        .map_err(|_| error::NO_LEADER.status())
}
