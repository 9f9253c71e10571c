//! Leader throughput: proposals per second committed (and applied on the
//! leader) by a 3-node in-process cluster with instant, lossless delivery
//! and in-memory storage. Measures the raft core alone: no I/O, no fsync.
//!
//! `cargo bench -p concord-raft` (plain std timing, no criterion).

use std::collections::VecDeque;
use std::time::Instant;

use concord_raft::{ConfState, Config, MemStorage, Message, RawNode, Snapshot, SnapshotMeta};

const PAYLOAD_BYTES: usize = 64;

struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    inbox: VecDeque<Message>,
    applied_on_leader: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = [1, 2, 3];
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut disk = MemStorage::new();
                let snap = Snapshot {
                    meta: SnapshotMeta {
                        index: 1,
                        term: 1,
                        conf_state: ConfState::from_voters(voters),
                    },
                    data: Vec::new(),
                };
                disk.apply_snapshot(snap).expect("bootstrap");
                let cfg = Config {
                    max_inflight_msgs: 256,
                    max_size_per_msg: 1 << 20,
                    ..Config::new(id)
                };
                RawNode::new(&cfg, disk).expect("valid config")
            })
            .collect();
        Cluster {
            nodes,
            inbox: VecDeque::new(),
            applied_on_leader: 0,
        }
    }

    /// Persists, sends and applies every Ready until nothing is left to do.
    fn settle(&mut self) {
        loop {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                let node = &mut self.nodes[i];
                while node.has_ready() {
                    idle = false;
                    let rd = node.ready();
                    if let Some(s) = &rd.snapshot {
                        node.storage_mut()
                            .apply_snapshot(s.clone())
                            .expect("snapshot");
                    }
                    node.storage_mut().append(&rd.entries).expect("append");
                    if let Some(hs) = rd.hard_state {
                        node.storage_mut().set_hard_state(hs);
                    }
                    self.inbox.extend(rd.messages);
                    if i == 0 {
                        self.applied_on_leader += rd.committed_entries.len() as u64;
                    }
                    let last_applied = rd.committed_entries.last().map(|e| e.index);
                    node.advance(rd.number);
                    // Keep memory flat: snapshot and compact what is applied.
                    if let Some(applied) = last_applied {
                        if applied % 4096 == 0 {
                            let st = node.storage_mut();
                            let cs = st.conf_state().clone();
                            st.create_snapshot(applied, cs, Vec::new())
                                .expect("snapshot");
                            st.compact(applied).expect("compact");
                        }
                    }
                }
            }
            while let Some(m) = self.inbox.pop_front() {
                idle = false;
                let to = (m.to - 1) as usize;
                let _ = self.nodes[to].step(m);
            }
            if idle {
                return;
            }
        }
    }
}

fn run(batch: usize, total: usize) -> f64 {
    let mut c = Cluster::new();
    c.nodes[0].campaign();
    c.settle();
    assert_eq!(c.nodes[0].leader_id(), 1, "node 1 must lead");
    let base = c.applied_on_leader;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let start = Instant::now();
    let mut proposed = 0;
    while proposed < total {
        for _ in 0..batch {
            c.nodes[0].propose(payload.clone()).expect("leader accepts");
        }
        proposed += batch;
        c.settle();
    }
    let secs = start.elapsed().as_secs_f64();
    let committed = c.applied_on_leader - base;
    assert_eq!(committed, proposed as u64, "every proposal commits");
    committed as f64 / secs
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is ignored.
    let total = 200_000;
    for batch in [1, 16, 256] {
        let rate = run(batch, total);
        println!(
            "raft throughput: 3 nodes, {PAYLOAD_BYTES} B proposals, batch {batch:>3}: {rate:>10.0} proposals/s committed"
        );
    }
}
