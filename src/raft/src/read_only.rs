//! Linearizable reads (ReadIndex): the leader records its commit index when
//! a read arrives, confirms it is still leader by a heartbeat round whose
//! acknowledgements carry the read's context, and then releases the read at
//! that index. Requests complete in arrival order.
//!
//! Invariants: each pending context is in the queue exactly once; a request
//! is released only after a quorum acknowledged its context (or a later
//! one, which implies leadership at a later point).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::message::Message;

/// A read the application may serve once it has applied up to `index`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadState {
    pub index: u64,
    pub context: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ReadIndexStatus {
    /// The original request (its `from` says whom to answer).
    pub req: Message,
    /// The leader's commit index when the request arrived.
    pub index: u64,
    /// Voters that acknowledged a heartbeat carrying this context.
    pub acks: BTreeSet<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ReadOnly {
    pub pending: BTreeMap<Vec<u8>, ReadIndexStatus>,
    pub queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    /// Records a request at commit `index`; a duplicate context is ignored.
    pub fn add_request(&mut self, index: u64, req: Message) {
        let ctx = req.context.clone();
        if self.pending.contains_key(&ctx) {
            return;
        }
        self.pending.insert(
            ctx.clone(),
            ReadIndexStatus {
                req,
                index,
                acks: BTreeSet::new(),
            },
        );
        self.queue.push_back(ctx);
    }

    /// Records `id`'s acknowledgement of `ctx`; returns the acks so far.
    pub fn recv_ack(&mut self, id: u64, ctx: &[u8]) -> Option<&BTreeSet<u64>> {
        let rs = self.pending.get_mut(ctx)?;
        rs.acks.insert(id);
        Some(&rs.acks)
    }

    /// Releases every request up to and including `ctx`'s, in order.
    pub fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(pos + 1);
        for c in self.queue.drain(..=pos) {
            let rs = self.pending.remove(&c);
            assert!(rs.is_some(), "read context {c:?} queued but not pending");
            out.extend(rs);
        }
        debug_assert_eq!(self.queue.len(), self.pending.len());
        out
    }

    /// The context of the newest pending request (sent with heartbeats).
    pub fn last_pending_request_ctx(&self) -> Option<Vec<u8>> {
        self.queue.back().cloned()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageKind;

    fn req(ctx: &[u8]) -> Message {
        let mut m = Message::new(MessageKind::MsgReadIndex, 1, 1);
        m.context = ctx.to_vec();
        m
    }

    #[test]
    fn advance_releases_in_order() {
        let mut ro = ReadOnly::default();
        ro.add_request(5, req(b"a"));
        ro.add_request(6, req(b"b"));
        ro.add_request(6, req(b"b")); // duplicate ignored
        ro.add_request(7, req(b"c"));
        assert_eq!(ro.recv_ack(2, b"b").map(|a| a.len()), Some(1));
        assert!(ro.recv_ack(2, b"zz").is_none());
        let done = ro.advance(b"b");
        let idx: Vec<u64> = done.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![5, 6]);
        assert_eq!(ro.last_pending_request_ctx(), Some(b"c".to_vec()));
        assert!(ro.advance(b"b").is_empty());
    }
}
