//! Peer messages, checked before they reach raft: the transport checked
//! the cluster ID and that the message is addressed here and comes from
//! the member named in the stream's metadata, but anyone who can reach
//! the peer port can claim a member ID. A message that could trip an
//! assertion of raft, or stop this member while it applies or installs
//! what the message carries, is refused here, counted and logged.
//!
//! ```text
//! transport ─► Inbound::Message ─► check ─┬─► RawNode::step
//!                                         └─► Refused: peer_received_failures{From}, warn (≤ 1/s)
//! ```
//!
//! Checked: the sender is a member (a leader's appends, heartbeats and
//! snapshots are taken from a sender this member does not know yet: its
//! addition is in the log they bring); raft's own validation
//! (`RawNode::validate`); every entry of a proposal or an append decodes (a
//! request, or a conf change and its member change: the applier stops on
//! one that does not); a snapshot's data is a dump of
//! this cluster at the snapshot's index with a member list.

use std::time::Duration;

use prost::Message as _;

use concord_raft::{ConfChange, Entry, EntryKind, Invalid, Message, MessageKind};

use super::Member;
use crate::metrics::METRICS;
use crate::proto::concordpb::{InternalRequest, MemberChange};

/// At most one warning per this interval; the rest are counted in it.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a peer message was not stepped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("sender {0:x} is not a member of the cluster")]
    UnknownSender(u64),
    #[error("{0}")]
    Raft(#[from] Invalid),
    #[error("entry {index} does not decode: {why}")]
    UndecodableRequest { index: u64, why: String },
    #[error("snapshot data: {0}")]
    Snapshot(String),
}

impl Refused {
    pub fn name(&self) -> &'static str {
        match self {
            Refused::UnknownSender(_) => "unknown_sender",
            Refused::Raft(why) => why.name(),
            Refused::UndecodableRequest { .. } => "undecodable_request",
            Refused::Snapshot(_) => "snapshot_data",
        }
    }
}

/// Rate limit of the warnings about refused messages.
#[derive(Debug, Default)]
pub(super) struct RefusedLog {
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

/// Messages a leader sends to its followers.
fn from_a_leader(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::MsgApp | MessageKind::MsgHeartbeat | MessageKind::MsgSnap
    )
}

/// Whether the applier can decode `e` (it stops on an entry it cannot):
/// a request, or a conf change with a member change as its context.
fn entry(e: &Entry) -> Result<(), String> {
    match e.kind {
        EntryKind::Normal if e.data.is_empty() => Ok(()),
        EntryKind::Normal => InternalRequest::decode(e.data.as_slice())
            .map(drop)
            .map_err(|err| err.to_string()),
        EntryKind::ConfChange => {
            let cc = ConfChange::decode(&e.data).map_err(|err| err.to_string())?;
            if cc.context.is_empty() {
                return Ok(());
            }
            MemberChange::decode(cc.context.as_slice())
                .map(drop)
                .map_err(|err| format!("conf change context: {err}"))
        }
    }
}

impl Member {
    /// Whether `m` may be stepped into raft.
    pub(super) fn check_peer_message(&self, m: &Message) -> Result<(), Refused> {
        let (known, cluster_id) = {
            let ms = self
                .shared
                .membership
                .read()
                .unwrap_or_else(|e| e.into_inner());
            (ms.members.iter().any(|x| x.id == m.from), ms.cluster_id)
        };
        if !known && !from_a_leader(m.kind) {
            return Err(Refused::UnknownSender(m.from));
        }
        self.node.validate(m)?;
        for e in &m.entries {
            entry(e).map_err(|why| Refused::UndecodableRequest {
                index: e.index,
                why,
            })?;
        }
        if let Some(s) = &m.snapshot {
            super::snapshot::check(&s.data, s.meta.index, cluster_id)
                .map_err(|e| Refused::Snapshot(e.to_string()))?;
        }
        Ok(())
    }

    /// Counts a refused message and logs it, at most once per
    /// [`REFUSED_LOG_INTERVAL`] (with how many were not logged).
    pub(super) fn refuse(&mut self, m: &Message, why: &Refused) {
        let peer = format!("{:x}", m.from);
        METRICS
            .peer_received_failures
            .with_label_values(&[&peer])
            .inc();
        let now = tokio::time::Instant::now();
        let log = &mut self.refused_log;
        if log
            .last
            .is_some_and(|at| now.duration_since(at) < REFUSED_LOG_INTERVAL)
        {
            log.suppressed += 1;
            return;
        }
        tracing::warn!(
            %peer,
            kind = ?m.kind,
            term = m.term,
            reason = why.name(),
            error = %why,
            suppressed = log.suppressed,
            "refusing an invalid raft message from a peer"
        );
        log.last = Some(now);
        log.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use concord_raft::{ConfState, Snapshot, SnapshotMeta};
    use prost::Message as _;

    use super::*;
    use crate::cluster::Bootstrap;
    use crate::member::MemberConfig;
    use crate::proto::concordpb::internal_request::Request;
    use crate::proto::etcdserverpb::PutRequest;
    use crate::storage::mem::MemBackend;

    /// Member `a` of a new 3-member cluster (a, b, c), not running.
    fn member() -> Member {
        let bootstrap = Bootstrap {
            name: "a".into(),
            initial_cluster: "a=http://a:2380,b=http://b:2380,c=http://c:2380".into(),
            token: "t".into(),
            advertise_peer_urls: vec!["http://a:2380".into()],
            advertise_client_urls: vec!["http://a:2379".into()],
            existing: None,
        };
        let backend = Arc::new(MemBackend::new());
        let (member, _handle) =
            Member::open(backend, &bootstrap, MemberConfig::default()).expect("opens");
        member
    }

    /// (local ID, another member's ID).
    fn ids(m: &Member) -> (u64, u64) {
        let ms = m.shared.membership();
        let other = ms
            .members
            .iter()
            .map(|x| x.id)
            .find(|&id| id != ms.local_id)
            .expect("three members");
        (ms.local_id, other)
    }

    fn heartbeat(from: u64, to: u64) -> Message {
        Message {
            kind: MessageKind::MsgHeartbeat,
            from,
            to,
            term: 2,
            ..Message::default()
        }
    }

    #[tokio::test]
    async fn a_correct_heartbeat_is_accepted() {
        let m = member();
        let (local, other) = ids(&m);
        m.check_peer_message(&heartbeat(other, local))
            .expect("accepted");
    }

    #[tokio::test]
    async fn an_unknown_sender_is_refused_except_for_a_leader_s_messages() {
        let m = member();
        let (local, _) = ids(&m);
        let vote = Message {
            kind: MessageKind::MsgVote,
            from: 77,
            to: local,
            term: 2,
            ..Message::default()
        };
        assert!(matches!(
            m.check_peer_message(&vote),
            Err(Refused::UnknownSender(77))
        ));
        // A leader added after this member's last applied entry.
        m.check_peer_message(&heartbeat(77, local))
            .expect("a leader's heartbeat");
    }

    #[tokio::test]
    async fn raft_validation_runs_first() {
        let m = member();
        let (local, other) = ids(&m);
        let mut hb = heartbeat(other, local);
        hb.commit = 1_000;
        let why = m
            .check_peer_message(&hb)
            .expect_err("commit beyond the log");
        assert!(
            matches!(why, Refused::Raft(Invalid::CommitBeyondLog { .. })),
            "{why}"
        );
        assert_eq!(why.name(), "commit_beyond_log");
    }

    #[tokio::test]
    async fn a_request_that_does_not_decode_is_refused() {
        let m = member();
        let (local, other) = ids(&m);
        let put = InternalRequest {
            id: 1,
            request: Some(Request::Put(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
            header: None,
        };
        let mut app = Message {
            kind: MessageKind::MsgApp,
            from: other,
            to: local,
            term: 2,
            index: 1,
            log_term: 1,
            entries: vec![
                Entry::new(2, 2, vec![]),
                Entry::new(2, 3, put.encode_to_vec()),
            ],
            ..Message::default()
        };
        m.check_peer_message(&app).expect("decodable requests");
        app.entries.push(Entry::new(2, 4, vec![0xff, 0xff, 0xff]));
        assert!(matches!(
            m.check_peer_message(&app),
            Err(Refused::UndecodableRequest { index: 4, .. })
        ));
    }

    #[tokio::test]
    async fn a_conf_change_whose_member_change_does_not_decode_is_refused() {
        let m = member();
        let (local, other) = ids(&m);
        let cc = |context: Vec<u8>| ConfChange {
            context,
            ..ConfChange::new(vec![])
        };
        let mut prop = Message {
            kind: MessageKind::MsgProp,
            from: other,
            to: local,
            entries: vec![Entry {
                kind: EntryKind::ConfChange,
                data: cc(MemberChange::default().encode_to_vec()).encode(),
                ..Entry::default()
            }],
            ..Message::default()
        };
        m.check_peer_message(&prop)
            .expect("a decodable conf change");
        prop.entries[0].data = cc(vec![0xff; 3]).encode();
        assert!(matches!(
            m.check_peer_message(&prop),
            Err(Refused::UndecodableRequest { .. })
        ));
    }

    #[tokio::test]
    async fn a_snapshot_whose_data_is_not_this_cluster_s_is_refused() {
        let m = member();
        let (local, other) = ids(&m);
        let conf_state = ConfState::from_voters(m.shared.membership().members.iter().map(|x| x.id));
        let snap = Message {
            kind: MessageKind::MsgSnap,
            from: other,
            to: local,
            term: 2,
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    index: 5,
                    term: 2,
                    conf_state,
                },
                data: vec![1],
            }),
            ..Message::default()
        };
        assert!(matches!(
            m.check_peer_message(&snap),
            Err(Refused::Snapshot(_))
        ));
    }
}
