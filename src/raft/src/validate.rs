//! Validation of messages from peers, before they reach the core: the core
//! trusts its peers (raft does not tolerate Byzantine faults) and asserts
//! on messages that contradict what it persisted, so a message that no
//! correct peer sends must be refused here, with its reason, instead of
//! tripping an assertion.
//!
//! ```text
//!  peer bytes ─► transport decode ─► RawNode::validate ─┬─► step
//!                                    (this module)      └─► Invalid (drop, log)
//! ```
//!
//! Two layers:
//! - [`message`]: a pure function of the message and the local ID: sender
//!   and recipient, terms where the kind needs one (and none where it must
//!   not have one), fields the kind does not use, bounds on every index and
//!   term, entries contiguous after `index` with terms between `log_term`
//!   and the message's term, conf change entries that decode, a snapshot
//!   with sane metadata and a configuration raft can hold;
//! - [`against_state`]: what the node's own state decides for a message the
//!   core would act on (not of an earlier term): responses only from peers
//!   in the configuration, no heartbeat commit index beyond the local log,
//!   no acknowledgement beyond the leader's log.
//!
//! Invariant: every message a correct peer sends passes both (the cluster
//! harness delivers every message through them and fails on a refusal);
//! everything else that could trip an assertion of the core fails one of
//! them with a typed [`Invalid`].

use crate::confchange::{self, ConfChange};
use crate::core::{Raft, Role};
use crate::message::{ConfState, EntryKind, Message, MessageKind, Snapshot};
use crate::storage::Storage;

/// The largest index or term a message may carry: far beyond anything a
/// cluster reaches, and far enough below `u64::MAX` that `index + 1` and
/// `term + 1` never overflow in the core.
pub const INDEX_TERM_MAX: u64 = 1 << 62;

/// Why a peer message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    #[error("no sender (from is 0)")]
    NoSender,
    #[error("claims to come from this node ({0})")]
    FromSelf(u64),
    #[error("addressed to {to}, not to this node ({local})")]
    WrongRecipient { to: u64, local: u64 },
    #[error("{0:?} needs a term")]
    MissingTerm(MessageKind),
    #[error("{kind:?} is a forwarded request and carries no term (has {term})")]
    UnexpectedTerm { kind: MessageKind, term: u64 },
    #[error("{kind:?} carries {field}, which it does not use")]
    UnexpectedField {
        kind: MessageKind,
        field: &'static str,
    },
    #[error("{field} {value} is beyond the largest allowed {INDEX_TERM_MAX}")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("empty proposal")]
    EmptyProposal,
    #[error("entry #{position} has index {index}, expected {expected}")]
    NonContiguousEntries {
        position: usize,
        index: u64,
        expected: u64,
    },
    #[error("entry {index} has term {entry_term}, outside [{low}, {high}]")]
    EntryTermOutOfRange {
        index: u64,
        entry_term: u64,
        low: u64,
        high: u64,
    },
    #[error("conf change entry {index} does not decode: {why}")]
    UndecodableConfChange { index: u64, why: String },
    #[error("log term {log_term} is above the message term {term}")]
    LogTermAboveTerm { log_term: u64, term: u64 },
    #[error("reject hint {hint} is above the rejected index {index}")]
    RejectHintAboveIndex { hint: u64, index: u64 },
    #[error("snapshot message without a snapshot")]
    MissingSnapshot,
    #[error("snapshot term {snapshot_term} is 0 or above the message term {term}")]
    SnapshotTerm { snapshot_term: u64, term: u64 },
    #[error("snapshot configuration is not one raft can hold: {0}")]
    SnapshotConfState(String),
    #[error("response from {0}, which is not in the configuration")]
    UnknownResponder(u64),
    #[error("commit {commit} is beyond the last index {last_index}")]
    CommitBeyondLog { commit: u64, last_index: u64 },
    #[error("acknowledges index {index}, beyond the leader's last index {last_index}")]
    AckBeyondLog { index: u64, last_index: u64 },
}

impl Invalid {
    /// A short stable name of the reason (for metrics and rate-limited logs).
    pub fn name(&self) -> &'static str {
        match self {
            Invalid::NoSender => "no_sender",
            Invalid::FromSelf(_) => "from_self",
            Invalid::WrongRecipient { .. } => "wrong_recipient",
            Invalid::MissingTerm(_) => "missing_term",
            Invalid::UnexpectedTerm { .. } => "unexpected_term",
            Invalid::UnexpectedField { .. } => "unexpected_field",
            Invalid::OutOfRange { .. } => "out_of_range",
            Invalid::EmptyProposal => "empty_proposal",
            Invalid::NonContiguousEntries { .. } => "non_contiguous_entries",
            Invalid::EntryTermOutOfRange { .. } => "entry_term_out_of_range",
            Invalid::UndecodableConfChange { .. } => "undecodable_conf_change",
            Invalid::LogTermAboveTerm { .. } => "log_term_above_term",
            Invalid::RejectHintAboveIndex { .. } => "reject_hint_above_index",
            Invalid::MissingSnapshot => "missing_snapshot",
            Invalid::SnapshotTerm { .. } => "snapshot_term",
            Invalid::SnapshotConfState(_) => "snapshot_conf_state",
            Invalid::UnknownResponder(_) => "unknown_responder",
            Invalid::CommitBeyondLog { .. } => "commit_beyond_log",
            Invalid::AckBeyondLog { .. } => "ack_beyond_log",
        }
    }
}

fn bounded(field: &'static str, value: u64) -> Result<(), Invalid> {
    if value > INDEX_TERM_MAX {
        return Err(Invalid::OutOfRange { field, value });
    }
    Ok(())
}

/// Forwarded requests: the receiver treats them as local (term 0).
fn is_forwarded_request(kind: MessageKind) -> bool {
    matches!(kind, MessageKind::MsgProp | MessageKind::MsgReadIndex)
}

/// The structural checks: a pure function of `m` and the local node's ID.
pub fn message(m: &Message, local_id: u64) -> Result<(), Invalid> {
    if m.from == 0 {
        return Err(Invalid::NoSender);
    }
    // A forwarded request keeps its originator as `from`, and may come
    // back to it (a follower forwards to a leader that has since stepped
    // down and forwards to the new leader, the originator).
    let forwarded = is_forwarded_request(m.kind) || m.kind == MessageKind::MsgTransferLeader;
    if m.from == local_id && !forwarded {
        return Err(Invalid::FromSelf(m.from));
    }
    if m.to != local_id {
        return Err(Invalid::WrongRecipient {
            to: m.to,
            local: local_id,
        });
    }
    for (field, value) in [
        ("term", m.term),
        ("log_term", m.log_term),
        ("index", m.index),
        ("commit", m.commit),
        ("reject_hint", m.reject_hint),
    ] {
        bounded(field, value)?;
    }
    if is_forwarded_request(m.kind) {
        if m.term != 0 {
            return Err(Invalid::UnexpectedTerm {
                kind: m.kind,
                term: m.term,
            });
        }
    } else if m.term == 0 {
        return Err(Invalid::MissingTerm(m.kind));
    }
    if m.log_term > m.term && !is_forwarded_request(m.kind) {
        return Err(Invalid::LogTermAboveTerm {
            log_term: m.log_term,
            term: m.term,
        });
    }
    let unexpected = |field| {
        Err(Invalid::UnexpectedField {
            kind: m.kind,
            field,
        })
    };
    if !m.entries.is_empty() && !matches!(m.kind, MessageKind::MsgApp | MessageKind::MsgProp) {
        return unexpected("entries");
    }
    if m.snapshot.is_some() && m.kind != MessageKind::MsgSnap {
        return unexpected("a snapshot");
    }
    match m.kind {
        MessageKind::MsgApp => append_entries(m),
        MessageKind::MsgProp if m.entries.is_empty() => Err(Invalid::EmptyProposal),
        MessageKind::MsgAppResp if m.reject && m.reject_hint > m.index => {
            Err(Invalid::RejectHintAboveIndex {
                hint: m.reject_hint,
                index: m.index,
            })
        }
        MessageKind::MsgSnap => match &m.snapshot {
            Some(s) if !s.is_empty() => snapshot(s, m.term),
            _ => Err(Invalid::MissingSnapshot),
        },
        _ => Ok(()),
    }
}

/// MsgApp: entries follow `index` without gaps, with terms that never go
/// down, from `log_term` up to the leader's term; conf changes decode.
fn append_entries(m: &Message) -> Result<(), Invalid> {
    let mut prev_term = m.log_term;
    for (position, e) in m.entries.iter().enumerate() {
        let expected = m
            .index
            .checked_add(1 + position as u64)
            .filter(|&i| i <= INDEX_TERM_MAX);
        if expected != Some(e.index) {
            return Err(Invalid::NonContiguousEntries {
                position,
                index: e.index,
                expected: expected.unwrap_or(u64::MAX),
            });
        }
        if e.term < prev_term.max(1) || e.term > m.term {
            return Err(Invalid::EntryTermOutOfRange {
                index: e.index,
                entry_term: e.term,
                low: prev_term.max(1),
                high: m.term,
            });
        }
        if e.kind == EntryKind::ConfChange {
            if let Err(why) = ConfChange::decode(&e.data) {
                return Err(Invalid::UndecodableConfChange {
                    index: e.index,
                    why: why.to_string(),
                });
            }
        }
        prev_term = e.term;
    }
    Ok(())
}

/// MsgSnap: a snapshot of a term the leader has seen, at a bounded index,
/// with a configuration that `confchange::restore` rebuilds exactly.
fn snapshot(s: &Snapshot, term: u64) -> Result<(), Invalid> {
    bounded("snapshot index", s.meta.index)?;
    if s.meta.term == 0 || s.meta.term > term {
        return Err(Invalid::SnapshotTerm {
            snapshot_term: s.meta.term,
            term,
        });
    }
    conf_state(&s.meta.conf_state).map_err(Invalid::SnapshotConfState)
}

/// Whether raft can restore `cs` (the core asserts that it can).
pub fn conf_state(cs: &ConfState) -> Result<(), String> {
    let ids = || {
        cs.voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners_next)
    };
    if ids().any(|&id| id == 0) {
        return Err("node ID 0".into());
    }
    let (cfg, _) = confchange::restore(cs, 1, 1, 0).map_err(|e| e.to_string())?;
    let got = cfg.to_conf_state();
    if cs.normalized() != got {
        return Err(format!(
            "restores as {}",
            crate::message::describe_conf_state(&got)
        ));
    }
    Ok(())
}

/// The checks that need the node's state, for a message that passed
/// [`message`]. Messages of an earlier term are ignored by the core (a
/// pre-vote is answered with a rejection), so only the sender is checked
/// for them.
pub(crate) fn against_state<S: Storage>(r: &Raft<S>, m: &Message) -> Result<(), Invalid> {
    if m.kind.is_response() && !r.prs.progress.contains_key(&m.from) {
        return Err(Invalid::UnknownResponder(m.from));
    }
    if m.term != 0 && m.term < r.term {
        return Ok(());
    }
    let last_index = r.raft_log.last_index();
    match m.kind {
        MessageKind::MsgHeartbeat if m.commit > last_index => Err(Invalid::CommitBeyondLog {
            commit: m.commit,
            last_index,
        }),
        MessageKind::MsgAppResp
            if r.role == Role::Leader && m.term == r.term && !m.reject && m.index > last_index =>
        {
            Err(Invalid::AckBeyondLog {
                index: m.index,
                last_index,
            })
        }
        _ => Ok(()),
    }
}
