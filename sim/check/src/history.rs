//! What the clients saw: one [`Op`] per request, with the simulated times
//! at which it was sent and answered, the call and its outcome. This is
//! the simulator's record; the checkers never trust it to be consistent
//! with the log, they compare the two.

/// Keys and values are raw bytes, as on etcd's wire.
pub type Bytes = Vec<u8>;

/// One client request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub id: u64,
    pub client: u64,
    /// Simulated nanoseconds when the client sent the request.
    pub invoke: u64,
    /// Simulated nanoseconds when the client got the answer. For
    /// [`Outcome::Unknown`] it is when the client gave up, which says nothing
    /// about when (or whether) the op took effect: any time after `invoke`.
    pub complete: u64,
    pub call: Call,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Put {
        key: Bytes,
        value: Bytes,
        lease: i64,
    },
    /// etcd range semantics for `[key, range_end)`: see [`crate::model::in_range`].
    Delete {
        key: Bytes,
        range_end: Bytes,
    },
    /// `revision` 0 reads the latest state.
    Range {
        key: Bytes,
        range_end: Bytes,
        revision: i64,
        serializable: bool,
    },
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: Bytes,
        value: Bytes,
        lease: i64,
    },
    Delete {
        key: Bytes,
        range_end: Bytes,
    },
    Range {
        key: Bytes,
        range_end: Bytes,
    },
}

/// A txn guard on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub target: Target,
    pub result: CmpResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Value(Bytes),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(Reply),
    /// Definitely not applied (the server refused it).
    Failed(String),
    /// Timeout, connection lost: may or may not have been applied.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `revision`: the revision the put created.
    Put {
        revision: i64,
    },
    /// `revision`: the one it created if `deleted > 0`, else the current one.
    Delete {
        revision: i64,
        deleted: i64,
    },
    /// `revision`: the header revision (the store's current one), even for
    /// a read of an older revision.
    Range {
        revision: i64,
        kvs: Vec<Kv>,
    },
    /// One response per op of the executed branch, in order.
    Txn {
        revision: i64,
        succeeded: bool,
        responses: Vec<TxnReply>,
    },
    Compact {
        revision: i64,
    },
    LeaseGrant {
        revision: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnReply {
    Put,
    Delete { deleted: i64 },
    Range { kvs: Vec<Kv> },
}

/// etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl Reply {
    /// The header revision of every reply.
    pub fn revision(&self) -> i64 {
        match self {
            Reply::Put { revision }
            | Reply::Delete { revision, .. }
            | Reply::Range { revision, .. }
            | Reply::Txn { revision, .. }
            | Reply::Compact { revision }
            | Reply::LeaseGrant { revision }
            | Reply::LeaseRevoke { revision } => *revision,
        }
    }
}

impl Call {
    /// Whether `reply`, an acknowledgement of this call, says it wrote: a
    /// put; a delete that deleted; a txn whose executed branch put or
    /// deleted something. (A lease revoke's keys are known only from the
    /// state it ran against.)
    pub fn wrote(&self, reply: &Reply) -> bool {
        match (self, reply) {
            (Call::Put { .. }, Reply::Put { .. }) => true,
            (Call::Delete { .. }, Reply::Delete { deleted, .. }) => *deleted > 0,
            (
                Call::Txn {
                    success, failure, ..
                },
                Reply::Txn {
                    succeeded,
                    responses,
                    ..
                },
            ) => {
                let branch = if *succeeded { success } else { failure };
                branch.iter().any(|op| matches!(op, TxnOp::Put { .. }))
                    || responses
                        .iter()
                        .any(|r| matches!(r, TxnReply::Delete { deleted } if *deleted > 0))
            }
            _ => false,
        }
    }

    /// Compare-and-set: put `value` at `key` if its mod revision is still
    /// `mod_revision` (0: absent), else read the key.
    pub fn compare_and_set(key: Bytes, mod_revision: i64, value: Bytes) -> Call {
        Call::Txn {
            compares: vec![Compare {
                key: key.clone(),
                target: Target::ModRevision(mod_revision),
                result: CmpResult::Equal,
            }],
            success: vec![TxnOp::Put {
                key: key.clone(),
                value,
                lease: 0,
            }],
            failure: vec![TxnOp::Range {
                key,
                range_end: Vec::new(),
            }],
        }
    }

    /// Whether the call can change the store in some state (a read-only
    /// txn or a range cannot; a delete or a revoke may find nothing).
    pub fn may_write(&self) -> bool {
        match self {
            Call::Put { .. } | Call::Delete { .. } | Call::LeaseRevoke { .. } => true,
            Call::Txn {
                success, failure, ..
            } => success.iter().chain(failure).any(TxnOp::is_write),
            Call::Range { .. } | Call::Compact { .. } | Call::LeaseGrant { .. } => false,
        }
    }

    /// The values this call may put (a txn: both branches).
    pub fn put_values(&self) -> Vec<&[u8]> {
        match self {
            Call::Put { value, .. } => vec![value.as_slice()],
            Call::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .filter_map(|op| match op {
                    TxnOp::Put { value, .. } => Some(value.as_slice()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl TxnOp {
    pub fn is_write(&self) -> bool {
        matches!(self, TxnOp::Put { .. } | TxnOp::Delete { .. })
    }
}
