//! Errors: operating conditions the caller must handle (a dropped proposal,
//! a storage that lost an entry to compaction, an invalid configuration).
//! Bugs are not errors: they panic through assertions in the core.

use thiserror::Error;

/// Why a proposal (normal entry, conf change, leader transfer) was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// No leader is known, so the proposal cannot be forwarded.
    NoLeader,
    /// The leader is transferring leadership and refuses new proposals.
    LeaderTransferring,
    /// Accepting it would exceed `max_uncommitted_entries_size`.
    UncommittedSizeExceeded,
    /// This node is no longer in the configuration.
    NotInConfiguration,
}

/// Errors returned by the read-only [`crate::Storage`] trait.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested index is older than the storage's first index.
    #[error("requested index is unavailable due to compaction")]
    Compacted,
    /// The requested index is newer than the storage's last index.
    #[error("requested entry at index is unavailable")]
    Unavailable,
    /// A snapshot is being produced; ask again later.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// A snapshot older than the storage's current one was offered.
    #[error("requested index is older than the existing snapshot")]
    SnapshotOutOfDate,
    /// Anything else the storage implementation wants to report.
    #[error("storage error: {0}")]
    Other(String),
}

/// One precise error per rule of [`crate::Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot use none as id")]
    ZeroId,
    #[error("heartbeat tick must be greater than 0")]
    ZeroHeartbeatTick,
    #[error(
        "election tick ({election_tick}) must be greater than heartbeat tick ({heartbeat_tick})"
    )]
    ElectionTickNotAboveHeartbeat {
        election_tick: u64,
        heartbeat_tick: u64,
    },
    #[error("max inflight messages must be greater than 0")]
    ZeroMaxInflight,
    #[error("min election tick ({min}) must be at least election tick ({election_tick})")]
    MinElectionTickTooSmall { min: u64, election_tick: u64 },
    #[error("max election tick ({max}) must be greater than min election tick ({min})")]
    MaxElectionTickNotAboveMin { min: u64, max: u64 },
    #[error("max inflight bytes ({inflight}) must be at least max size per msg ({per_msg})")]
    InflightBytesBelowMsgSize { inflight: u64, per_msg: u64 },
    #[error("check quorum must be enabled when read only option is lease based")]
    LeaseReadsWithoutCheckQuorum,
    #[error("max size per msg must be greater than 0")]
    ZeroMaxSizePerMsg,
}

/// A conf change whose bytes cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("conf change: unexpected end of input at byte {0}")]
    Truncated(usize),
    #[error("conf change: unknown version {0}")]
    UnknownVersion(u8),
    #[error("conf change: unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("conf change: {0} trailing bytes")]
    TrailingBytes(usize),
}

/// A conf change that is not allowed in the current configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfChangeError {
    #[error("config is already joint")]
    AlreadyJoint,
    #[error("can't leave a non-joint config")]
    NotJoint,
    #[error("can't apply a joint change with no changes")]
    EmptyJoint,
    #[error("removed all voters")]
    RemovedAllVoters,
    #[error("more than one voter changed without entering joint config")]
    MoreThanOneVoterChanged,
    #[error("can't make a simple config change while in a joint config")]
    SimpleInJoint,
    #[error("{0}")]
    Invariant(String),
}

/// Everything the public API of this crate can return.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("raft proposal dropped: {0:?}")]
    ProposalDropped(DropReason),
    #[error("raft: cannot step raft local message")]
    StepLocalMsg,
    #[error("raft: cannot step as peer not found")]
    StepPeerNotFound,
    #[error("raft: invalid message: {0}")]
    InvalidMessage(#[from] crate::validate::Invalid),
    #[error("raft: invalid config: {0}")]
    Config(#[from] ConfigError),
    #[error("raft: storage: {0}")]
    Storage(#[from] StorageError),
    #[error("raft: conf change: {0}")]
    ConfChange(#[from] ConfChangeError),
    #[error("raft: {0}")]
    Decode(#[from] DecodeError),
}
