//! State-machine snapshots for raft: what a leader sends to a follower that
//! is behind the start of its log (or joining), and how the follower puts
//! it in place of its own state.
//!
//! The data is a dump of one point-in-time read view of the backend: every
//! record of the revision, key-history and live-key partitions and every
//! meta record except this member's own (raft's hard state, log bounds and
//! configuration, and its member ID). Its metadata (index, term,
//! configuration) is read from the same view, so data and metadata agree:
//! the dump's applied index *is* the snapshot index.
//!
//! ```text
//! data: version (1 B) | { partition (1 B) | key len (4 B BE) | key | value len (4 B BE) | value }*
//! ```
//!
//! Installing is one atomic batch (deletes of what the snapshot does not
//! hold, puts of what it holds, the raft log reset), so a crash leaves either
//! the old state or the new one. Today the whole dump is in memory on both
//! sides; streaming it from the view is a later step.

use std::collections::HashSet;
use std::ops::Bound;

use concord_raft::{Snapshot, SnapshotMeta, StorageError as RaftError};
use prost::Message as _;

use super::META_APPLIED_INDEX;
use crate::cluster::{META_CLUSTER_ID, META_LOCAL_ID, META_MEMBERS};
use crate::storage::log::LogEntry;
use crate::storage::raft_log::{decode_conf_state, META_COMPACTED, META_CONF_STATE};
use crate::storage::{Backend, Batch, Partition, ReadView, StorageError};

const DUMP_VERSION: u8 = 1;
/// Where the state machine lives (the log partition is raft's, per member).
const DUMPED: [Partition; 4] = [
    Partition::Meta,
    Partition::Rev,
    Partition::KeyHistory,
    Partition::KeyLive,
];

/// Meta records that belong to this member, not to the state machine.
fn member_local(p: Partition, key: &[u8]) -> bool {
    p == Partition::Meta && (key.starts_with(b"raft/") || key == META_LOCAL_ID)
}

fn partition_code(p: Partition) -> u8 {
    p.index() as u8
}

fn partition_of(code: u8) -> Option<Partition> {
    Partition::ALL.get(code as usize).copied()
}

fn corrupt(why: &str) -> StorageError {
    StorageError::Engine(format!("raft snapshot: {why}"))
}

fn u64_at(view: &dyn ReadView, key: &[u8]) -> Result<u64, StorageError> {
    match view.get(Partition::Meta, key)? {
        None => Ok(0),
        Some(v) => v
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("meta value is not 8 bytes")),
    }
}

/// The term of entry `index`: the log's, or the compaction point's.
fn term_at(view: &dyn ReadView, index: u64) -> Result<u64, StorageError> {
    if let Some(v) = view.get(Partition::Meta, META_COMPACTED)? {
        if v.len() == 16 && v[..8] == index.to_be_bytes() {
            return Ok(u64::from_be_bytes(
                v[8..].try_into().map_err(|_| corrupt("compaction point"))?,
            ));
        }
    }
    let key = LogEntry::key(index);
    let v = view
        .get(Partition::Log, &key)?
        .ok_or_else(|| corrupt(&format!("no log entry at the applied index {index}")))?;
    Ok(LogEntry::decode(&key, &v)?.term)
}

/// A snapshot of the state machine as it is now, for member `to`; refused
/// (raft asks again later) if `to` is not in its configuration yet.
pub fn create(backend: &dyn Backend, to: u64) -> Result<Snapshot, RaftError> {
    let view = backend.snapshot();
    let dump = || -> Result<Snapshot, StorageError> {
        let index = u64_at(view.as_ref(), META_APPLIED_INDEX)?;
        let conf_state = match view.get(Partition::Meta, META_CONF_STATE)? {
            Some(v) => decode_conf_state(&v)?,
            None => return Err(corrupt("no configuration")),
        };
        let term = term_at(view.as_ref(), index)?;
        let mut data = vec![DUMP_VERSION];
        for p in DUMPED {
            for item in view.scan(p, (Bound::Unbounded, Bound::Unbounded), false) {
                let (k, v) = item?;
                if member_local(p, &k) {
                    continue;
                }
                data.push(partition_code(p));
                data.extend_from_slice(&(k.len() as u32).to_be_bytes());
                data.extend_from_slice(&k);
                data.extend_from_slice(&(v.len() as u32).to_be_bytes());
                data.extend_from_slice(&v);
            }
        }
        Ok(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        })
    };
    let snap = dump().map_err(|e| RaftError::Other(e.to_string()))?;
    let cs = &snap.meta.conf_state;
    if !cs.voters.contains(&to) && !cs.learners.contains(&to) && !cs.voters_outgoing.contains(&to) {
        return Err(RaftError::SnapshotTemporarilyUnavailable);
    }
    tracing::info!(
        to = format!("{to:x}"),
        index = snap.meta.index,
        bytes = snap.data.len(),
        "created a raft snapshot"
    );
    Ok(snap)
}

/// The records of a snapshot's data.
pub type Records = Vec<(Partition, Vec<u8>, Vec<u8>)>;

pub fn decode(data: &[u8]) -> Result<Records, StorageError> {
    let mut out = Vec::new();
    walk(data, |p, k, v| {
        out.push((p, k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` on every record of a snapshot's data, in order, without
/// copying; fails on the first malformed record.
fn walk(
    data: &[u8],
    mut f: impl FnMut(Partition, &[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let (&version, mut rest) = data.split_first().ok_or_else(|| corrupt("empty"))?;
    if version != DUMP_VERSION {
        return Err(corrupt(&format!("unknown version {version}")));
    }
    let mut take = |n: usize| -> Result<&[u8], StorageError> {
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    while let Ok(code) = take(1) {
        let code = code[0];
        let p = partition_of(code)
            .filter(|p| DUMPED.contains(p))
            .ok_or_else(|| corrupt(&format!("unknown partition {code}")))?;
        let klen = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt("key length"))?);
        let k = take(klen as usize)?;
        let vlen = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt("value length"))?);
        let v = take(vlen as usize)?;
        if member_local(p, k) {
            return Err(corrupt("a member's own record in a snapshot"));
        }
        f(p, k, v)?;
    }
    Ok(())
}

/// Whether a peer's snapshot data can be installed here (checked before
/// raft sees the snapshot: installing a bad one stops the member): it
/// decodes, belongs to `cluster_id`, holds a member list that decodes, and
/// its applied index is the snapshot's `index`.
pub fn check(data: &[u8], index: u64, cluster_id: u64) -> Result<(), StorageError> {
    let (mut cluster, mut members, mut applied) = (None, false, None);
    walk(data, |p, k, v| {
        if p != Partition::Meta {
            return Ok(());
        }
        if k == META_CLUSTER_ID {
            cluster = Some(v.to_vec());
        } else if k == META_MEMBERS {
            crate::proto::etcdserverpb::MemberListResponse::decode(v)
                .map_err(|e| corrupt(&format!("member list: {e}")))?;
            members = true;
        } else if k == META_APPLIED_INDEX {
            applied = Some(v.to_vec());
        }
        Ok(())
    })?;
    if cluster.as_deref() != Some(&cluster_id.to_be_bytes()[..]) {
        return Err(corrupt("not a snapshot of this cluster"));
    }
    if !members {
        return Err(corrupt("no member list"));
    }
    if applied.as_deref() != Some(&index.to_be_bytes()[..]) {
        return Err(corrupt(&format!(
            "its applied index is not the snapshot index {index}"
        )));
    }
    Ok(())
}

/// Adds to `batch` what turns this member's state machine into the
/// snapshot's: deletes of every record the snapshot lacks, puts of the rest.
pub fn install(
    backend: &dyn Backend,
    batch: &mut Batch,
    records: Records,
) -> Result<(), StorageError> {
    let keep: HashSet<(Partition, &[u8])> =
        records.iter().map(|(p, k, _)| (*p, k.as_slice())).collect();
    for p in DUMPED {
        for item in backend.scan(p, (Bound::Unbounded, Bound::Unbounded), false) {
            let (k, _) = item?;
            if !member_local(p, &k) && !keep.contains(&(p, k.as_slice())) {
                batch.delete(p, k);
            }
        }
    }
    drop(keep);
    for (p, k, v) in records {
        batch.put(p, k, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::mem::MemBackend;
    use concord_raft::{ConfState, HardState};

    fn state(be: &MemBackend, applied: u64, extra: &[(&[u8], &[u8])]) {
        let mut b = Batch::new();
        b.put(
            Partition::Meta,
            META_APPLIED_INDEX.to_vec(),
            applied.to_be_bytes().to_vec(),
        );
        b.put(Partition::Meta, META_LOCAL_ID.to_vec(), vec![7; 8]);
        for (k, v) in extra {
            b.put(Partition::KeyLive, k.to_vec(), v.to_vec());
        }
        be.write(b).expect("write");
    }

    #[test]
    fn a_snapshot_replaces_the_state_machine_and_keeps_the_member_s_own_records() {
        let leader = Arc::new(MemBackend::new());
        let mut log = crate::storage::raft_log::RaftLog::open(leader.clone()).expect("open");
        let mut b = Batch::new();
        log.bootstrap(&mut b, ConfState::from_voters([1, 2]));
        leader.write(b).expect("write");
        state(&leader, 1, &[(b"a", b"1"), (b"b", b"2")]);
        assert_eq!(
            create(leader.as_ref(), 9),
            Err(RaftError::SnapshotTemporarilyUnavailable)
        );
        let snap = create(leader.as_ref(), 2).expect("snapshot");
        assert_eq!((snap.meta.index, snap.meta.term), (1, 1));
        assert_eq!(snap.meta.conf_state, ConfState::from_voters([1, 2]));

        let follower = Arc::new(MemBackend::new());
        let mut flog = crate::storage::raft_log::RaftLog::open(follower.clone()).expect("open");
        let mut b = Batch::new();
        flog.set_hard_state(
            &mut b,
            HardState {
                term: 5,
                vote: 2,
                commit: 0,
            },
        );
        b.put(Partition::Meta, META_LOCAL_ID.to_vec(), vec![2; 8]);
        b.put(Partition::KeyLive, b"stale".to_vec(), b"x".to_vec());
        follower.write(b).expect("write");
        let mut b = Batch::new();
        install(
            follower.as_ref(),
            &mut b,
            decode(&snap.data).expect("decode"),
        )
        .expect("install");
        flog.apply_snapshot(&mut b, &snap.meta);
        follower.write(b).expect("write");
        let f: &dyn ReadView = follower.as_ref();
        assert_eq!(
            f.get(Partition::KeyLive, b"a").expect("get"),
            Some(b"1".to_vec())
        );
        assert_eq!(f.get(Partition::KeyLive, b"stale").expect("get"), None);
        assert_eq!(
            f.get(Partition::Meta, META_LOCAL_ID).expect("get"),
            Some(vec![2; 8])
        );
        assert_eq!(u64_at(f, META_APPLIED_INDEX).expect("applied"), 1);
        let reopened = crate::storage::raft_log::RaftLog::open(follower.clone()).expect("open");
        assert_eq!(reopened.hard_state().term, 5, "the vote's term is kept");
        assert_eq!(reopened.conf_state(), &ConfState::from_voters([1, 2]));
    }

    #[test]
    fn check_accepts_this_cluster_s_snapshot_at_its_index_only() {
        let leader = Arc::new(MemBackend::new());
        let mut log = crate::storage::raft_log::RaftLog::open(leader.clone()).expect("open");
        let mut b = Batch::new();
        log.bootstrap(&mut b, ConfState::from_voters([1, 2]));
        let ms = crate::cluster::Membership::bootstrap(&crate::cluster::Bootstrap {
            name: "a".into(),
            initial_cluster: "a=http://a:2380,b=http://b:2380".into(),
            token: "t".into(),
            advertise_peer_urls: vec!["http://a:2380".into()],
            advertise_client_urls: vec!["http://a:2379".into()],
            existing: None,
        })
        .expect("membership");
        ms.save(&mut b);
        leader.write(b).expect("write");
        state(&leader, 1, &[(b"a", b"1")]);
        let snap = create(leader.as_ref(), 1).expect("snapshot");
        check(&snap.data, 1, ms.cluster_id).expect("a correct snapshot");
        assert!(
            check(&snap.data, 1, ms.cluster_id ^ 1).is_err(),
            "another cluster"
        );
        assert!(
            check(&snap.data, 2, ms.cluster_id).is_err(),
            "another index"
        );
        assert!(check(&snap.data[..snap.data.len() - 1], 1, ms.cluster_id).is_err());
        // Without the member list.
        let other = Arc::new(MemBackend::new());
        let mut log = crate::storage::raft_log::RaftLog::open(other.clone()).expect("open");
        let mut b = Batch::new();
        log.bootstrap(&mut b, ConfState::from_voters([1, 2]));
        other.write(b).expect("write");
        state(&other, 1, &[]);
        let bare = create(other.as_ref(), 1).expect("snapshot");
        assert!(check(&bare.data, 1, ms.cluster_id).is_err());
    }

    #[test]
    fn corrupt_snapshot_data_is_an_error() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[DUMP_VERSION, 1, 0, 0]).is_err());
        assert!(decode(&[DUMP_VERSION, 1, 0, 0, 0, 9, 1]).is_err());
        assert_eq!(decode(&[DUMP_VERSION]).expect("empty dump"), Vec::new());
    }
}
