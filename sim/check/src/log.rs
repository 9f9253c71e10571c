//! The system's own record of what happened: one [`Entry`] per main
//! revision, exactly what an etcd watch from the first revision delivers.
//! A Put event carries the full new key-value (create_revision,
//! mod_revision = the entry's revision, version, lease); a Delete event
//! carries the key with mod_revision = the entry's revision, every other
//! field 0. The checkers treat the log as a claim to be verified, not as
//! the truth.

use crate::history::Kv;

/// Every change made at one main revision, in sub-revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub revision: i64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: Kv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

impl Entry {
    /// Whether some event of the entry is a put.
    pub fn has_put(&self) -> bool {
        self.events.iter().any(|e| e.kind == EventKind::Put)
    }
}
