//! Conversions between raft's own [`Message`] and the wire's [`RaftMessage`]
//! (`proto/concordpb/peer.proto`).
//!
//! Invariants: encoding is total and moves every byte buffer (no copies);
//! decoding is total too: anything a peer can put on the wire that raft's
//! types cannot hold (an unknown or unspecified message kind, an unknown
//! entry type, a snapshot without metadata) is a [`CodecError`], never a
//! panic. `decode(encode(m)) == m` for every message.

use crate::proto::concordpb::{
    EntryType, MessageType, RaftConfState, RaftEntry, RaftMessage, RaftSnapshot, RaftSnapshotMeta,
};
use crate::raft::{ConfState, Entry, EntryKind, Message, MessageKind, Snapshot, SnapshotMeta};

/// Why a wire message is not a raft message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("unknown raft message type {0}")]
    UnknownMessageType(i32),
    #[error("unknown raft entry type {value} (entry index {index})")]
    UnknownEntryType { value: i32, index: u64 },
    #[error("raft message lacks the required field {0}")]
    MissingField(&'static str),
}

/// The wire form of a message kind.
pub fn encode_kind(kind: MessageKind) -> MessageType {
    match kind {
        MessageKind::MsgProp => MessageType::MsgProp,
        MessageKind::MsgApp => MessageType::MsgApp,
        MessageKind::MsgAppResp => MessageType::MsgAppResp,
        MessageKind::MsgVote => MessageType::MsgVote,
        MessageKind::MsgVoteResp => MessageType::MsgVoteResp,
        MessageKind::MsgPreVote => MessageType::MsgPreVote,
        MessageKind::MsgPreVoteResp => MessageType::MsgPreVoteResp,
        MessageKind::MsgSnap => MessageType::MsgSnap,
        MessageKind::MsgHeartbeat => MessageType::MsgHeartbeat,
        MessageKind::MsgHeartbeatResp => MessageType::MsgHeartbeatResp,
        MessageKind::MsgTimeoutNow => MessageType::MsgTimeoutNow,
        MessageKind::MsgReadIndex => MessageType::MsgReadIndex,
        MessageKind::MsgReadIndexResp => MessageType::MsgReadIndexResp,
        MessageKind::MsgTransferLeader => MessageType::MsgTransferLeader,
    }
}

/// The raft kind of a wire message type; `MSG_UNSPECIFIED` and values this
/// build does not know are errors.
pub fn decode_kind(value: i32) -> Result<MessageKind, CodecError> {
    let wire = MessageType::try_from(value).map_err(|_| CodecError::UnknownMessageType(value))?;
    Ok(match wire {
        MessageType::MsgUnspecified => return Err(CodecError::UnknownMessageType(value)),
        MessageType::MsgProp => MessageKind::MsgProp,
        MessageType::MsgApp => MessageKind::MsgApp,
        MessageType::MsgAppResp => MessageKind::MsgAppResp,
        MessageType::MsgVote => MessageKind::MsgVote,
        MessageType::MsgVoteResp => MessageKind::MsgVoteResp,
        MessageType::MsgPreVote => MessageKind::MsgPreVote,
        MessageType::MsgPreVoteResp => MessageKind::MsgPreVoteResp,
        MessageType::MsgSnap => MessageKind::MsgSnap,
        MessageType::MsgHeartbeat => MessageKind::MsgHeartbeat,
        MessageType::MsgHeartbeatResp => MessageKind::MsgHeartbeatResp,
        MessageType::MsgTimeoutNow => MessageKind::MsgTimeoutNow,
        MessageType::MsgReadIndex => MessageKind::MsgReadIndex,
        MessageType::MsgReadIndexResp => MessageKind::MsgReadIndexResp,
        MessageType::MsgTransferLeader => MessageKind::MsgTransferLeader,
    })
}

fn encode_entry(e: Entry) -> RaftEntry {
    let kind = match e.kind {
        EntryKind::Normal => EntryType::EntryNormal,
        EntryKind::ConfChange => EntryType::EntryConfChange,
    };
    RaftEntry {
        term: e.term,
        index: e.index,
        r#type: kind as i32,
        data: e.data,
    }
}

fn decode_entry(e: RaftEntry) -> Result<Entry, CodecError> {
    let kind = match EntryType::try_from(e.r#type) {
        Ok(EntryType::EntryNormal) => EntryKind::Normal,
        Ok(EntryType::EntryConfChange) => EntryKind::ConfChange,
        Err(_) => {
            return Err(CodecError::UnknownEntryType {
                value: e.r#type,
                index: e.index,
            })
        }
    };
    Ok(Entry {
        term: e.term,
        index: e.index,
        kind,
        data: e.data,
    })
}

fn encode_conf_state(cs: ConfState) -> RaftConfState {
    RaftConfState {
        voters: cs.voters,
        learners: cs.learners,
        voters_outgoing: cs.voters_outgoing,
        learners_next: cs.learners_next,
        auto_leave: cs.auto_leave,
    }
}

fn decode_conf_state(cs: RaftConfState) -> ConfState {
    ConfState {
        voters: cs.voters,
        learners: cs.learners,
        voters_outgoing: cs.voters_outgoing,
        learners_next: cs.learners_next,
        auto_leave: cs.auto_leave,
    }
}

fn encode_snapshot(s: Snapshot) -> RaftSnapshot {
    RaftSnapshot {
        meta: Some(RaftSnapshotMeta {
            index: s.meta.index,
            term: s.meta.term,
            conf_state: Some(encode_conf_state(s.meta.conf_state)),
        }),
        data: s.data,
    }
}

fn decode_snapshot(s: RaftSnapshot) -> Result<Snapshot, CodecError> {
    let meta = s.meta.ok_or(CodecError::MissingField("snapshot.meta"))?;
    let conf_state = meta
        .conf_state
        .ok_or(CodecError::MissingField("snapshot.meta.conf_state"))?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            index: meta.index,
            term: meta.term,
            conf_state: decode_conf_state(conf_state),
        },
        data: s.data,
    })
}

/// The wire form of a raft message (total; moves the buffers).
pub fn encode(m: Message) -> RaftMessage {
    RaftMessage {
        r#type: encode_kind(m.kind) as i32,
        from: m.from,
        to: m.to,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.into_iter().map(encode_entry).collect(),
        commit: m.commit,
        reject: m.reject,
        reject_hint: m.reject_hint,
        snapshot: m.snapshot.map(encode_snapshot),
        context: m.context,
    }
}

/// The raft message a wire message stands for, or why there is none.
pub fn decode(w: RaftMessage) -> Result<Message, CodecError> {
    let kind = decode_kind(w.r#type)?;
    let entries = w
        .entries
        .into_iter()
        .map(decode_entry)
        .collect::<Result<Vec<_>, _>>()?;
    let snapshot = w.snapshot.map(decode_snapshot).transpose()?;
    Ok(Message {
        kind,
        from: w.from,
        to: w.to,
        term: w.term,
        log_term: w.log_term,
        index: w.index,
        entries,
        commit: w.commit,
        reject: w.reject,
        reject_hint: w.reject_hint,
        snapshot,
        context: w.context,
    })
}

impl From<Message> for RaftMessage {
    fn from(m: Message) -> RaftMessage {
        encode(m)
    }
}

impl TryFrom<RaftMessage> for Message {
    type Error = CodecError;

    fn try_from(w: RaftMessage) -> Result<Message, CodecError> {
        decode(w)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::raft::rng::Rng;
    use prost::Message as _;

    pub(crate) const ALL_KINDS: [MessageKind; 14] = [
        MessageKind::MsgProp,
        MessageKind::MsgApp,
        MessageKind::MsgAppResp,
        MessageKind::MsgVote,
        MessageKind::MsgVoteResp,
        MessageKind::MsgPreVote,
        MessageKind::MsgPreVoteResp,
        MessageKind::MsgSnap,
        MessageKind::MsgHeartbeat,
        MessageKind::MsgHeartbeatResp,
        MessageKind::MsgTimeoutNow,
        MessageKind::MsgReadIndex,
        MessageKind::MsgReadIndexResp,
        MessageKind::MsgTransferLeader,
    ];

    /// A u64 that is often 0 or an edge value, so defaults and extremes occur.
    fn any_u64(rng: &mut Rng) -> u64 {
        match rng.range(0, 4) {
            0 => 0,
            1 => u64::MAX - rng.range(0, 2),
            2 => rng.range(1, 10),
            _ => rng.next_u64(),
        }
    }

    fn any_bytes(rng: &mut Rng, max_len: u64) -> Vec<u8> {
        let len = rng.range(0, max_len + 1);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    fn any_ids(rng: &mut Rng) -> Vec<u64> {
        let n = rng.range(0, 5);
        (0..n).map(|_| any_u64(rng)).collect()
    }

    /// A random message: every field drawn, including ones raft would never
    /// combine (the codec must not care).
    pub(crate) fn any_message(rng: &mut Rng) -> Message {
        let kind = ALL_KINDS[rng.range(0, ALL_KINDS.len() as u64) as usize];
        let entries = (0..rng.range(0, 4))
            .map(|_| Entry {
                term: any_u64(rng),
                index: any_u64(rng),
                kind: if rng.chance(1, 3) {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                },
                data: any_bytes(rng, 40),
            })
            .collect();
        let snapshot = rng.chance(1, 3).then(|| Snapshot {
            meta: SnapshotMeta {
                index: any_u64(rng),
                term: any_u64(rng),
                conf_state: ConfState {
                    voters: any_ids(rng),
                    learners: any_ids(rng),
                    voters_outgoing: any_ids(rng),
                    learners_next: any_ids(rng),
                    auto_leave: rng.chance(1, 2),
                },
            },
            data: any_bytes(rng, 100),
        });
        Message {
            kind,
            from: any_u64(rng),
            to: any_u64(rng),
            term: any_u64(rng),
            log_term: any_u64(rng),
            index: any_u64(rng),
            entries,
            commit: any_u64(rng),
            reject: rng.chance(1, 2),
            reject_hint: any_u64(rng),
            snapshot,
            context: any_bytes(rng, 16),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, kind) in ALL_KINDS.into_iter().enumerate() {
            let got = decode_kind(encode_kind(kind) as i32);
            assert_eq!(got, Ok(kind), "case #{i}: got {got:?}, want {kind:?}");
        }
    }

    /// Property: decode(bytes(encode(m))) == m, through the protobuf bytes.
    #[test]
    fn generated_messages_round_trip() {
        const SEED: u64 = 0xC0DEC;
        let mut rng = Rng::new(SEED);
        for i in 0..2000 {
            let want = any_message(&mut rng);
            let bytes = encode(want.clone()).encode_to_vec();
            let wire = RaftMessage::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("case #{i} (seed {SEED}): prost decode: {e}"));
            let got = decode(wire);
            assert_eq!(got.as_ref(), Ok(&want), "case #{i} (seed {SEED})");
        }
    }

    #[test]
    fn empty_snapshot_stays_some() {
        let m = Message {
            kind: MessageKind::MsgSnap,
            snapshot: Some(Snapshot::default()),
            ..Message::default()
        };
        assert_eq!(decode(encode(m.clone())), Ok(m));
    }

    #[test]
    fn invalid_wire_messages_are_typed_errors() {
        let valid = encode(Message::new(MessageKind::MsgApp, 1, 2));
        let cases: Vec<(RaftMessage, CodecError)> = vec![
            (
                RaftMessage {
                    r#type: 0,
                    ..valid.clone()
                },
                CodecError::UnknownMessageType(0),
            ),
            (
                RaftMessage {
                    r#type: 99,
                    ..valid.clone()
                },
                CodecError::UnknownMessageType(99),
            ),
            (
                RaftMessage {
                    r#type: -1,
                    ..valid.clone()
                },
                CodecError::UnknownMessageType(-1),
            ),
            (
                RaftMessage {
                    entries: vec![RaftEntry {
                        r#type: 7,
                        index: 5,
                        ..RaftEntry::default()
                    }],
                    ..valid.clone()
                },
                CodecError::UnknownEntryType { value: 7, index: 5 },
            ),
            (
                RaftMessage {
                    snapshot: Some(RaftSnapshot::default()),
                    ..valid.clone()
                },
                CodecError::MissingField("snapshot.meta"),
            ),
            (
                RaftMessage {
                    snapshot: Some(RaftSnapshot {
                        meta: Some(RaftSnapshotMeta::default()),
                        data: vec![],
                    }),
                    ..valid.clone()
                },
                CodecError::MissingField("snapshot.meta.conf_state"),
            ),
        ];
        for (i, (wire, want)) in cases.into_iter().enumerate() {
            let got = decode(wire);
            assert_eq!(
                got,
                Err(want.clone()),
                "case #{i}: got {got:?}, want {want:?}"
            );
        }
    }

    /// Property: arbitrary bytes that prost accepts never make decode panic.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng::new(7);
        for _ in 0..5000 {
            let bytes = any_bytes(&mut rng, 64);
            if let Ok(wire) = RaftMessage::decode(bytes.as_slice()) {
                let _ = decode(wire);
            }
        }
    }
}
