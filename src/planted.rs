//! Bugs planted on purpose, so that the simulation can prove its checkers
//! fail when the system is wrong (a checker that never fails proves
//! nothing). Compiled only into simulation builds (`--cfg madsim`) and off
//! unless a test turns one on for the members it then starts; each madsim
//! runtime runs on the test's thread, so the switch is per thread.

use std::cell::Cell;

/// A deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Linearizable reads are served from the local store without a
    /// ReadIndex round (a follower or a deposed leader answers stale data).
    StaleReads,
    /// Raft commits what the leader alone has appended: writes are
    /// acknowledged before a quorum has persisted them.
    CommitWithoutQuorum,
    /// The watch hub drops the events of every 7th revision for synced
    /// watchers.
    SkipWatchEvents,
    /// Raft's election timer is seeded from a heap address, which differs
    /// from one process to the next: a replay is no longer identical.
    Nondeterminism,
    /// v3 discovery skips the size check: a member bootstraps with the
    /// members registered so far, without waiting for the registry's size
    /// or stopping at it.
    SkipSizeCheck,
    /// DNS SRV discovery skips a target that does not resolve, as etcd
    /// does: a member may bootstrap a smaller cluster than its peers.
    SrvSkipsUnresolved,
}

impl Bug {
    /// The bug named `name` (its variant's name).
    pub fn from_name(name: &str) -> Option<Bug> {
        [
            Bug::StaleReads,
            Bug::CommitWithoutQuorum,
            Bug::SkipWatchEvents,
            Bug::Nondeterminism,
            Bug::SkipSizeCheck,
            Bug::SrvSkipsUnresolved,
        ]
        .into_iter()
        .find(|b| format!("{b:?}") == name)
    }
}

thread_local! {
    static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Turns `bug` on (or every bug off) for members opened afterwards on
/// this thread.
pub fn set(bug: Option<Bug>) {
    ACTIVE.with(|a| a.set(bug));
}

/// Whether `bug` is on.
pub fn active(bug: Bug) -> bool {
    ACTIVE.with(|a| a.get() == Some(bug))
}
