//! corrupt: etcd's initial corruption check
//! (`--experimental-initial-corrupt-check`). Before a restarted member
//! serves clients, it compares its KV hash with every peer's hash at the
//! same revision (asked over the peer API, etcd's `/members/hashkv`): a
//! different hash at the same compaction point means the data differ, and
//! the member refuses to start. Peers that are behind, ahead of the local
//! compaction, or unreachable are reported and skipped, as etcd does.

use std::time::Duration;

use tonic::Status;

use crate::api::error::{COMPACTED, FUTURE_REV};
use crate::member::Observer;
use crate::mvcc::HashKv;
use crate::proto::etcdserverpb::HashKvResponse;
use crate::transport::{fetch_hash_kv, Dialer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptError {
    #[error("{0:x} failed to fetch hash ({1})")]
    LocalHash(u64, String),
    #[error("{0:x} found data inconsistency with peers")]
    Inconsistent(u64),
}

/// What one peer answered: its hash, or why there is none.
pub type PeerHash = (u64, Result<HashKvResponse, Status>);

/// Runs the check for the member `observer` shows, asking each peer (at
/// each of its peer URLs, until one answers) within `timeout`.
pub async fn initial_check(
    observer: &Observer,
    dialer: &Dialer,
    timeout: Duration,
) -> Result<(), CorruptError> {
    let membership = observer.membership();
    let local_id = membership.local_id;
    tracing::info!(
        local_member_id = %format_args!("{local_id:x}"),
        timeout_ms = timeout.as_millis() as u64,
        "starting initial corruption check"
    );
    let local = observer
        .store()
        .hash_kv(0)
        .map_err(|e| CorruptError::LocalHash(local_id, e.to_string()))?;
    let mut peers = Vec::new();
    for m in membership.members.iter().filter(|m| m.id != local_id) {
        let mut answer = Err(Status::unavailable("the member has no peer URL"));
        for url in &m.peer_ur_ls {
            let ask = fetch_hash_kv(
                dialer,
                url,
                local.current_revision,
                membership.cluster_id,
                local_id,
            );
            answer = match tokio::time::timeout(timeout, ask).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("timed out")),
            };
            if answer.is_ok() {
                break;
            }
        }
        peers.push((m.id, answer));
    }
    judge(local_id, &local, &peers)
}

/// etcd's verdict: an error if any peer has another hash at the same
/// revision and compaction point.
pub fn judge(local_id: u64, local: &HashKv, peers: &[PeerHash]) -> Result<(), CorruptError> {
    let mut mismatch = 0;
    for (peer, answer) in peers {
        let peer = format!("{peer:x}");
        match answer {
            Ok(r) if r.hash == local.hash => {}
            Ok(r) if r.compact_revision == local.compact_revision => {
                tracing::warn!(
                    %peer,
                    local_hash = local.hash,
                    remote_hash = r.hash,
                    revision = local.current_revision,
                    compact_revision = local.compact_revision,
                    "found different hash values from remote peer"
                );
                mismatch += 1;
            }
            Ok(r) => tracing::warn!(
                %peer,
                local_compact_revision = local.compact_revision,
                remote_compact_revision = r.compact_revision,
                "found different compact revision values from remote peer"
            ),
            Err(e) if e.message() == FUTURE_REV.message => {
                tracing::warn!(%peer, "cannot fetch hash from slow remote peer")
            }
            Err(e) if e.message() == COMPACTED.message => tracing::warn!(
                %peer,
                "cannot fetch hash from remote peer; local member is behind"
            ),
            Err(e) => tracing::warn!(%peer, error = %e.message(), "failed hash kv request"),
        }
    }
    if mismatch > 0 {
        return Err(CorruptError::Inconsistent(local_id));
    }
    tracing::info!(
        local_member_id = %format_args!("{local_id:x}"),
        "initial corruption checking passed; no corruption"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> HashKv {
        HashKv {
            hash: 7,
            compact_revision: 3,
            current_revision: 10,
        }
    }

    fn answer(hash: u32, compact_revision: i64) -> Result<HashKvResponse, Status> {
        Ok(HashKvResponse {
            header: None,
            hash,
            compact_revision,
        })
    }

    #[test]
    fn a_different_hash_at_the_same_compaction_is_corruption() {
        let err = judge(0xa, &local(), &[(1, answer(7, 3)), (2, answer(8, 3))]);
        assert_eq!(err, Err(CorruptError::Inconsistent(0xa)));
        assert_eq!(
            err.unwrap_err().to_string(),
            "a found data inconsistency with peers"
        );
    }

    #[test]
    fn peers_that_cannot_compare_are_skipped() {
        let peers = [
            (1, answer(7, 3)),
            // Compacted further: its hash covers other records.
            (2, answer(9, 5)),
            (3, Err(FUTURE_REV.status())),
            (4, Err(COMPACTED.status())),
            (5, Err(Status::unavailable("connection refused"))),
        ];
        assert_eq!(judge(0xa, &local(), &peers), Ok(()));
        assert_eq!(judge(0xa, &local(), &[]), Ok(()));
    }
}
