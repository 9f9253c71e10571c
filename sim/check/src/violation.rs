//! What the checkers report: one [`Violation`] per finding, each naming its
//! kind, the ops (id, client, times) and revisions involved, so a human can
//! find them in the simulator's trace. Also the helpers that print keys,
//! values, kvs and events briefly.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{Kv, Op, Outcome};
use crate::log::{Event, EventKind};

/// At most this many violations are returned (plus the first of each kind
/// and a final [`Violation::Truncated`] with the counts of all).
pub const VIOLATIONS_SHOWN_MAX: usize = 50;

/// Printed values (expected / got) are cut to this many characters.
const SHOWN_CHARS_MAX: usize = 240;

/// An op as a violation names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    pub id: u64,
    pub client: u64,
    pub invoke: u64,
    /// When it completed; for an unknown outcome, when the client gave up.
    pub complete: u64,
    pub unknown: bool,
}

impl OpRef {
    pub fn new(op: &Op) -> Self {
        OpRef {
            id: op.id,
            client: op.client,
            invoke: op.invoke,
            complete: op.complete,
            unknown: matches!(op.outcome, Outcome::Unknown),
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.unknown { "gave up" } else { "completed" };
        write!(
            f,
            "op {} (client {}, invoked {} ns, {end} {} ns)",
            self.id, self.client, self.invoke, self.complete
        )
    }
}

/// The kinds, for matching and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    MalformedLog,
    PhantomWrite,
    FailedWriteApplied,
    DuplicateApplication,
    EffectMismatch,
    AckedWriteLost,
    RealTimeOrder,
    ReadMismatch,
    StaleRead,
    FutureRead,
    ReadBeyondLog,
    DivergentState,
    Truncated,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The log is not a valid sequence of revisions from the base.
    MalformedLog { revision: i64, reason: String },
    /// No op and no lease expiry explains the entry at `revision`.
    PhantomWrite { revision: i64, events: String },
    /// An op the server refused explains the entry at `revision`.
    FailedWriteApplied { op: OpRef, revision: i64 },
    /// One op explains two entries.
    DuplicateApplication {
        op: OpRef,
        first_revision: i64,
        revision: i64,
    },
    /// The entry at `revision`, explained by `op`, is not what the op does
    /// against the state before it (or the op's reply disagrees with it).
    EffectMismatch {
        op: OpRef,
        revision: i64,
        expected: String,
        got: String,
    },
    /// An acknowledged write is not in the log at the revision it was
    /// acknowledged with.
    AckedWriteLost {
        op: OpRef,
        revision: i64,
        reason: String,
    },
    /// `earlier` completed before `later` was invoked, yet its revision is
    /// not below `later`'s.
    RealTimeOrder {
        earlier: OpRef,
        earlier_revision: i64,
        later: OpRef,
        later_revision: i64,
    },
    /// A read returned something else than the state at its revision.
    ReadMismatch {
        op: OpRef,
        revision: i64,
        expected: String,
        got: String,
    },
    /// A linearizable read at `revision` missed what `earlier` (completed
    /// before the read was invoked) had already seen at `earlier_revision`.
    StaleRead {
        op: OpRef,
        revision: i64,
        earlier: OpRef,
        earlier_revision: i64,
    },
    /// A read at `revision` saw a write (at `write_revision <= revision`)
    /// that was invoked only after the read completed.
    FutureRead {
        op: OpRef,
        revision: i64,
        write: OpRef,
        write_revision: i64,
    },
    /// A reply names a revision the log never reached.
    ReadBeyondLog {
        op: OpRef,
        revision: i64,
        last_revision: i64,
    },
    /// A member's final state differs from the log replayed to its revision.
    DivergentState {
        member: u64,
        revision: i64,
        detail: String,
    },
    /// The list was cut: `total` violations were found, these many per kind.
    Truncated {
        total: usize,
        by_kind: Vec<(ViolationKind, usize)>,
    },
}

impl Violation {
    pub fn kind(&self) -> ViolationKind {
        match self {
            Violation::MalformedLog { .. } => ViolationKind::MalformedLog,
            Violation::PhantomWrite { .. } => ViolationKind::PhantomWrite,
            Violation::FailedWriteApplied { .. } => ViolationKind::FailedWriteApplied,
            Violation::DuplicateApplication { .. } => ViolationKind::DuplicateApplication,
            Violation::EffectMismatch { .. } => ViolationKind::EffectMismatch,
            Violation::AckedWriteLost { .. } => ViolationKind::AckedWriteLost,
            Violation::RealTimeOrder { .. } => ViolationKind::RealTimeOrder,
            Violation::ReadMismatch { .. } => ViolationKind::ReadMismatch,
            Violation::StaleRead { .. } => ViolationKind::StaleRead,
            Violation::FutureRead { .. } => ViolationKind::FutureRead,
            Violation::ReadBeyondLog { .. } => ViolationKind::ReadBeyondLog,
            Violation::DivergentState { .. } => ViolationKind::DivergentState,
            Violation::Truncated { .. } => ViolationKind::Truncated,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Violation::MalformedLog { revision, reason } => {
                write!(f, "log entry at revision {revision}: {reason}")
            }
            Violation::PhantomWrite { revision, events } => write!(
                f,
                "revision {revision} [{events}] is explained by no op and no lease expiry"
            ),
            Violation::FailedWriteApplied { op, revision } => {
                write!(f, "{op} failed, yet it is applied at revision {revision}")
            }
            Violation::DuplicateApplication {
                op,
                first_revision,
                revision,
            } => write!(
                f,
                "{op} is applied twice: at revision {first_revision} and again at {revision}"
            ),
            Violation::EffectMismatch {
                op,
                revision,
                expected,
                got,
            } => write!(
                f,
                "{op} at revision {revision}: expected {expected}, got {got}"
            ),
            Violation::AckedWriteLost {
                op,
                revision,
                reason,
            } => write!(f, "{op} was acknowledged at revision {revision}: {reason}"),
            Violation::RealTimeOrder {
                earlier,
                earlier_revision,
                later,
                later_revision,
            } => write!(
                f,
                "{earlier} completed before {later} was invoked, yet it is at revision {earlier_revision} and the later one at {later_revision}"
            ),
            Violation::ReadMismatch {
                op,
                revision,
                expected,
                got,
            } => write!(
                f,
                "{op} read at revision {revision}: expected {expected}, got {got}"
            ),
            Violation::StaleRead {
                op,
                revision,
                earlier,
                earlier_revision,
            } => write!(
                f,
                "linearizable {op} read revision {revision}, but {earlier} completed before it was invoked and had seen revision {earlier_revision}"
            ),
            Violation::FutureRead {
                op,
                revision,
                write,
                write_revision,
            } => write!(
                f,
                "{op} read revision {revision}, which includes {write} at revision {write_revision}, invoked after the read completed"
            ),
            Violation::ReadBeyondLog {
                op,
                revision,
                last_revision,
            } => write!(
                f,
                "{op} names revision {revision}, the log ends at {last_revision}"
            ),
            Violation::DivergentState {
                member,
                revision,
                detail,
            } => write!(f, "member {member:x} at revision {revision}: {detail}"),
            Violation::Truncated { total, by_kind } => {
                write!(f, "{total} violations in all:")?;
                for (kind, n) in by_kind {
                    write!(f, " {kind} {n}")?;
                }
                Ok(())
            }
        }
    }
}

/// Collects violations: keeps the first [`VIOLATIONS_SHOWN_MAX`] (and the
/// first of every kind), counts all.
#[derive(Debug, Default)]
pub(crate) struct Found {
    shown: Vec<Violation>,
    counts: BTreeMap<ViolationKind, usize>,
}

impl Found {
    pub(crate) fn push(&mut self, violation: Violation) {
        let count = self.counts.entry(violation.kind()).or_insert(0);
        *count += 1;
        if self.shown.len() < VIOLATIONS_SHOWN_MAX || *count == 1 {
            self.shown.push(violation);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub(crate) fn into_vec(mut self) -> Vec<Violation> {
        let total: usize = self.counts.values().sum();
        if total > self.shown.len() {
            self.shown.push(Violation::Truncated {
                total,
                by_kind: self.counts.into_iter().collect(),
            });
        }
        self.shown
    }

    pub(crate) fn into_result<T>(self, ok: T) -> Result<T, Vec<Violation>> {
        if self.is_empty() {
            Ok(ok)
        } else {
            Err(self.into_vec())
        }
    }
}

/// Bytes as text: printable ASCII as is, the rest as `\xNN`.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A kv briefly: `key=value(c2 m5 v3 l7)`.
pub fn show_kv(kv: &Kv) -> String {
    format!(
        "{}={}(c{} m{} v{} l{})",
        show_bytes(&kv.key),
        show_bytes(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

pub fn show_kvs(kvs: &[Kv]) -> String {
    cut(format!(
        "[{}]",
        kvs.iter().map(show_kv).collect::<Vec<_>>().join(", ")
    ))
}

pub fn show_events(events: &[Event]) -> String {
    let shown: Vec<String> = events
        .iter()
        .map(|e| match e.kind {
            EventKind::Put => format!("put {}", show_kv(&e.kv)),
            EventKind::Delete => format!("delete {}", show_bytes(&e.kv.key)),
        })
        .collect();
    cut(shown.join(", "))
}

/// `text` cut to a readable length.
pub fn cut(text: String) -> String {
    if text.chars().count() <= SHOWN_CHARS_MAX {
        return text;
    }
    let mut out: String = text.chars().take(SHOWN_CHARS_MAX).collect();
    out.push_str("...");
    out
}
