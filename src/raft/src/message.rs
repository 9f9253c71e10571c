//! Raft's own data types: log entries, hard state, configuration state,
//! snapshots and messages. Plain Rust data (the transport converts them to
//! protobuf), plus stable one-line text descriptions used by the transcript
//! tests and by logs.
//!
//! Invariants: an `Entry` with index 0 never exists in a log; a `Snapshot`
//! with `meta.index == 0` is "no snapshot".

use std::fmt::Write as _;

/// What an entry's data means to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// Application data (an empty one is appended by every new leader).
    #[default]
    Normal,
    /// An encoded [`crate::ConfChange`]; apply it with `RawNode::apply_conf_change`.
    ConfChange,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

/// Fixed per-entry overhead counted by [`Entry::byte_size`] (term, index, kind).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// A normal entry.
    pub fn new(term: u64, index: u64, data: Vec<u8>) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    /// Size used for message and Ready limits: data plus a fixed overhead.
    pub fn byte_size(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Size counted against `max_uncommitted_entries_size` (data only, as etcd).
    pub fn payload_size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// The state that must be persisted before messages depending on it are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    pub term: u64,
    /// The node voted for in `term`, 0 for none.
    pub vote: u64,
    pub commit: u64,
}

impl HardState {
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// A membership configuration, as stored in snapshots and returned by
/// `apply_conf_change`. All lists are sorted and free of duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The outgoing voters of a joint configuration (empty when not joint).
    pub voters_outgoing: Vec<u64>,
    /// Voters of the outgoing config that become learners when leaving joint.
    pub learners_next: Vec<u64>,
    /// Leave the joint configuration automatically once it is committed.
    pub auto_leave: bool,
}

impl ConfState {
    /// The same configuration with each ID list sorted and deduplicated:
    /// two configurations are equivalent when these are equal.
    pub(crate) fn normalized(&self) -> ConfState {
        let mut cs = self.clone();
        for v in [
            &mut cs.voters,
            &mut cs.learners,
            &mut cs.voters_outgoing,
            &mut cs.learners_next,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        cs
    }

    /// A simple configuration of voters only.
    pub fn from_voters(voters: impl IntoIterator<Item = u64>) -> ConfState {
        let mut v: Vec<u64> = voters.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        ConfState {
            voters: v,
            ..ConfState::default()
        }
    }
}

/// Identifies a snapshot: the last entry it covers and the config at that point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

/// A point-in-time image of the application state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}

/// Every message raft nodes exchange (local events are methods of `RawNode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    /// A proposal forwarded to the leader.
    #[default]
    MsgProp,
    MsgApp,
    MsgAppResp,
    MsgVote,
    MsgVoteResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgSnap,
    MsgHeartbeat,
    MsgHeartbeatResp,
    /// Leader to transferee: campaign now, ignoring the election timeout.
    MsgTimeoutNow,
    /// A read-index request forwarded to the leader.
    MsgReadIndex,
    MsgReadIndexResp,
    /// A leader-transfer request forwarded to the leader; `from` is the transferee.
    MsgTransferLeader,
}

impl MessageKind {
    /// Responses are only accepted from peers known to the tracker.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageKind::MsgAppResp
                | MessageKind::MsgVoteResp
                | MessageKind::MsgPreVoteResp
                | MessageKind::MsgHeartbeatResp
                | MessageKind::MsgReadIndexResp
        )
    }

    /// The response kind for a vote request kind.
    pub fn vote_response(self) -> MessageKind {
        match self {
            MessageKind::MsgVote => MessageKind::MsgVoteResp,
            MessageKind::MsgPreVote => MessageKind::MsgPreVoteResp,
            other => panic!("not a vote message: {other:?}"),
        }
    }
}

/// A message between raft nodes. Fields by kind (others are zero/empty):
///
/// | kind | term | index / log_term | entries | commit | reject / reject_hint | snapshot | context |
/// |---|---|---|---|---|---|---|---|
/// | MsgApp | sender's | the entry before `entries` | yes | leader's | | | |
/// | MsgAppResp | sender's | last index matched (or rejected index, hint term) | | | hint: follower's last index whose term ≤ the probe's | | |
/// | MsgVote, MsgPreVote | the election's | candidate's last index / term | | | | | `CampaignTransfer` for transfers |
/// | MsgVoteResp, MsgPreVoteResp | the election's (or voter's, if rejected) | if rejected: voter's commit index / its term | | | rejected | | |
/// | MsgSnap | sender's | | | | | yes | |
/// | MsgHeartbeat | sender's | | | min(leader's, peer's match) | | | read context |
/// | MsgHeartbeatResp | sender's | | | | | | read context |
/// | MsgProp | 0 | | the proposal | | | | |
/// | MsgReadIndex | 0 | | | | | | read context |
/// | MsgReadIndexResp | sender's | read index | | | | | read context |
/// | MsgTimeoutNow, MsgTransferLeader | sender's | | | | | | |
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Message {
    pub kind: MessageKind,
    pub from: u64,
    pub to: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub snapshot: Option<Snapshot>,
    pub context: Vec<u8>,
}

impl Message {
    pub fn new(kind: MessageKind, from: u64, to: u64) -> Message {
        Message {
            kind,
            from,
            to,
            ..Message::default()
        }
    }
}

fn describe_data(out: &mut String, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(s) => {
            let _ = write!(out, "{s:?}");
        }
        Err(_) => {
            let _ = write!(out, "{data:?}");
        }
    }
}

/// `term/index Kind "data"`, the format of etcd's `DescribeEntry`.
pub fn describe_entry(e: &Entry) -> String {
    let mut out = format!("{}/{} ", e.term, e.index);
    match e.kind {
        EntryKind::Normal => {
            out.push_str("EntryNormal ");
            describe_data(&mut out, &e.data);
        }
        EntryKind::ConfChange => {
            out.push_str("EntryConfChangeV2 ");
            match crate::ConfChange::decode(&e.data) {
                Ok(cc) => out.push_str(&cc.to_string()),
                Err(_) => describe_data(&mut out, &e.data),
            }
        }
    }
    out
}

/// `voters=(1 2 3)&&(1 2) learners=(4) learners_next=(5) autoleave`.
pub fn describe_conf_state(cs: &ConfState) -> String {
    let ids = |v: &[u64]| {
        v.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!("voters=({})", ids(&cs.voters));
    if !cs.voters_outgoing.is_empty() {
        let _ = write!(out, "&&({})", ids(&cs.voters_outgoing));
    }
    if !cs.learners.is_empty() {
        let _ = write!(out, " learners=({})", ids(&cs.learners));
    }
    if !cs.learners_next.is_empty() {
        let _ = write!(out, " learners_next=({})", ids(&cs.learners_next));
    }
    if cs.auto_leave {
        out.push_str(" autoleave");
    }
    out
}

/// `Index:5 Term:2 ConfState:voters=(1 2 3)`.
pub fn describe_snapshot(s: &Snapshot) -> String {
    format!(
        "Index:{} Term:{} ConfState:{}",
        s.meta.index,
        s.meta.term,
        describe_conf_state(&s.meta.conf_state)
    )
}

/// `1->2 MsgApp Term:1 Log:1/3 Commit:3 Entries:[...]`, as etcd's `DescribeMessage`.
pub fn describe_message(m: &Message) -> String {
    let mut out = format!(
        "{}->{} {:?} Term:{} Log:{}/{}",
        m.from, m.to, m.kind, m.term, m.log_term, m.index
    );
    if m.reject {
        let _ = write!(out, " Rejected (Hint: {})", m.reject_hint);
    }
    if m.commit != 0 {
        let _ = write!(out, " Commit:{}", m.commit);
    }
    if !m.context.is_empty() {
        out.push_str(" Context:");
        describe_data(&mut out, &m.context);
    }
    if !m.entries.is_empty() {
        out.push_str(" Entries:[");
        let ents: Vec<String> = m.entries.iter().map(describe_entry).collect();
        out.push_str(&ents.join(", "));
        out.push(']');
    }
    if let Some(s) = &m.snapshot {
        if !s.is_empty() {
            let _ = write!(out, " Snapshot: {}", describe_snapshot(s));
        }
    }
    out
}
