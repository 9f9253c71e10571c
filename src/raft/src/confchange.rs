//! Membership changes: the `ConfChange` type (etcd's ConfChangeV2) with a
//! stable byte encoding for entry data, and the pure functions that turn a
//! tracker configuration plus a change into a new configuration (simple
//! changes, entering and leaving joint consensus, restoring from a
//! `ConfState`).
//!
//! ```text
//!   C_old ──simple (≤1 voter changed)──► C_new
//!   C_old ──enter joint──► C_old,new ──leave joint (auto or explicit)──► C_new
//! ```
//!
//! Invariants (checked after every change, see `TrackerConfig::check`):
//! every voter and learner has a progress; no id is both learner and voter;
//! `learners_next ⊆ outgoing voters`; a non-joint config has no
//! `learners_next` and no `auto_leave`; the incoming config is never empty.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{ConfChangeError, DecodeError};
use crate::message::ConfState;
use crate::tracker::{Progress, TrackerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    AddNode,
    AddLearnerNode,
    RemoveNode,
}

/// One change to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    pub kind: ConfChangeKind,
    pub node_id: u64,
}

/// How to go through a joint configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ConfChangeTransition {
    /// Simple change if possible (one voter changed), else joint with auto-leave.
    #[default]
    Auto,
    /// Always joint, left automatically once committed.
    Implicit,
    /// Always joint, left only by an explicit empty conf change.
    Explicit,
}

/// A membership change. With no changes and `Auto` it means "leave joint".
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ConfChange {
    pub transition: ConfChangeTransition,
    pub changes: Vec<ConfChangeSingle>,
    pub context: Vec<u8>,
}

const ENCODING_VERSION: u8 = 1;

impl ConfChange {
    pub fn new(changes: Vec<ConfChangeSingle>) -> ConfChange {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes,
            context: Vec::new(),
        }
    }

    /// The empty change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChange {
        ConfChange::default()
    }

    pub fn is_leave_joint(&self) -> bool {
        self.transition == ConfChangeTransition::Auto && self.changes.is_empty()
    }

    /// `Some(auto_leave)` if this change goes through a joint configuration.
    pub fn enter_joint(&self) -> Option<bool> {
        if self.transition != ConfChangeTransition::Auto || self.changes.len() > 1 {
            Some(self.transition != ConfChangeTransition::Explicit)
        } else {
            None
        }
    }

    /// `version:u8 transition:u8 count:u32be (kind:u8 id:u64be)* ctx_len:u32be ctx`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + 9 * self.changes.len() + self.context.len());
        out.push(ENCODING_VERSION);
        out.push(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::Implicit => 1,
            ConfChangeTransition::Explicit => 2,
        });
        out.extend_from_slice(&(self.changes.len() as u32).to_be_bytes());
        for c in &self.changes {
            out.push(match c.kind {
                ConfChangeKind::AddNode => 0,
                ConfChangeKind::AddLearnerNode => 1,
                ConfChangeKind::RemoveNode => 2,
            });
            out.extend_from_slice(&c.node_id.to_be_bytes());
        }
        out.extend_from_slice(&(self.context.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    pub fn decode(data: &[u8]) -> Result<ConfChange, DecodeError> {
        let mut r = Reader { data, pos: 0 };
        let version = r.u8()?;
        if version != ENCODING_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let transition = match r.u8()? {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::Implicit,
            2 => ConfChangeTransition::Explicit,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "transition",
                    tag,
                })
            }
        };
        let count = r.u32()? as usize;
        let mut changes = Vec::with_capacity(count.min(data.len() / 9));
        for _ in 0..count {
            let kind = match r.u8()? {
                0 => ConfChangeKind::AddNode,
                1 => ConfChangeKind::AddLearnerNode,
                2 => ConfChangeKind::RemoveNode,
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "change",
                        tag,
                    })
                }
            };
            let node_id = r.u64()?;
            changes.push(ConfChangeSingle { kind, node_id });
        }
        let ctx_len = r.u32()? as usize;
        let context = r.bytes(ctx_len)?.to_vec();
        if r.pos != data.len() {
            return Err(DecodeError::TrailingBytes(data.len() - r.pos));
        }
        Ok(ConfChange {
            transition,
            changes,
            context,
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(self.pos))?;
        let out = self
            .data
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

impl fmt::Display for ConfChange {
    /// `v2 l3 r4`, as etcd's `ConfChangesToString`, plus the transition if not auto.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|c| {
                let p = match c.kind {
                    ConfChangeKind::AddNode => 'v',
                    ConfChangeKind::AddLearnerNode => 'l',
                    ConfChangeKind::RemoveNode => 'r',
                };
                format!("{p}{}", c.node_id)
            })
            .collect();
        write!(f, "{}", parts.join(" "))?;
        match self.transition {
            ConfChangeTransition::Auto => Ok(()),
            ConfChangeTransition::Implicit => write!(f, " (implicit)"),
            ConfChangeTransition::Explicit => write!(f, " (explicit)"),
        }
    }
}

/// Parses `v2 l3 r4` (etcd's `ConfChangesFromString`).
pub fn parse_changes(s: &str) -> Result<Vec<ConfChangeSingle>, String> {
    s.split_whitespace()
        .map(|tok| {
            let (kind, id) = tok.split_at(1);
            let kind = match kind {
                "v" => ConfChangeKind::AddNode,
                "l" => ConfChangeKind::AddLearnerNode,
                "r" => ConfChangeKind::RemoveNode,
                _ => return Err(format!("unknown change type in {tok:?}")),
            };
            let node_id = id.parse().map_err(|e| format!("{tok:?}: {e}"))?;
            Ok(ConfChangeSingle { kind, node_id })
        })
        .collect()
}

/// A configuration together with the progress of every member.
pub type ConfigAndProgress = (TrackerConfig, BTreeMap<u64, Progress>);

/// Computes new configurations from the current one. `last_index` seeds the
/// `next_idx` of new peers.
pub struct Changer<'a> {
    pub config: &'a TrackerConfig,
    pub progress: &'a BTreeMap<u64, Progress>,
    pub last_index: u64,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

impl Changer<'_> {
    /// Enters a joint config: the current voters become the outgoing half,
    /// the changes are applied to the incoming half.
    pub fn enter_joint(
        &self,
        auto_leave: bool,
        ccs: &[ConfChangeSingle],
    ) -> Result<ConfigAndProgress, ConfChangeError> {
        let (mut cfg, mut prs) = self.copy()?;
        if cfg.voters.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        if cfg.voters.incoming.is_empty() {
            return Err(ConfChangeError::EmptyJoint);
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, ccs)?;
        cfg.auto_leave = auto_leave;
        check_and_return(cfg, prs)
    }

    /// Leaves a joint config: the outgoing half is dropped, learners_next
    /// become learners, and peers in neither half lose their progress.
    pub fn leave_joint(&self) -> Result<ConfigAndProgress, ConfChangeError> {
        let (mut cfg, mut prs) = self.copy()?;
        if !cfg.voters.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        for id in std::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(pr) = prs.get_mut(&id) {
                pr.is_learner = true;
            }
        }
        let outgoing = std::mem::take(&mut cfg.voters.outgoing.voters);
        for id in outgoing {
            if !cfg.voters.incoming.contains(id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.auto_leave = false;
        check_and_return(cfg, prs)
    }

    /// Applies changes that alter at most one voter, outside a joint config.
    pub fn simple(&self, ccs: &[ConfChangeSingle]) -> Result<ConfigAndProgress, ConfChangeError> {
        let (mut cfg, mut prs) = self.copy()?;
        if cfg.voters.is_joint() {
            return Err(ConfChangeError::SimpleInJoint);
        }
        self.apply(&mut cfg, &mut prs, ccs)?;
        let changed = self
            .config
            .voters
            .incoming
            .voters
            .symmetric_difference(&cfg.voters.incoming.voters)
            .count();
        if changed > 1 {
            return Err(ConfChangeError::MoreThanOneVoterChanged);
        }
        check_and_return(cfg, prs)
    }

    fn copy(&self) -> Result<ConfigAndProgress, ConfChangeError> {
        self.config
            .check(self.progress)
            .map_err(ConfChangeError::Invariant)?;
        Ok((self.config.clone(), self.progress.clone()))
    }

    fn apply(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut BTreeMap<u64, Progress>,
        ccs: &[ConfChangeSingle],
    ) -> Result<(), ConfChangeError> {
        for cc in ccs {
            if cc.node_id == 0 {
                continue; // etcd allows these as no-ops
            }
            match cc.kind {
                ConfChangeKind::AddNode => self.make_voter(cfg, prs, cc.node_id),
                ConfChangeKind::AddLearnerNode => self.make_learner(cfg, prs, cc.node_id),
                ConfChangeKind::RemoveNode => remove(cfg, prs, cc.node_id),
            }
        }
        if cfg.voters.incoming.is_empty() {
            return Err(ConfChangeError::RemovedAllVoters);
        }
        Ok(())
    }

    fn make_voter(&self, cfg: &mut TrackerConfig, prs: &mut BTreeMap<u64, Progress>, id: u64) {
        let Some(pr) = prs.get_mut(&id) else {
            self.init_progress(cfg, prs, id, false);
            return;
        };
        pr.is_learner = false;
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.voters.insert(id);
    }

    fn make_learner(&self, cfg: &mut TrackerConfig, prs: &mut BTreeMap<u64, Progress>, id: u64) {
        let Some(pr) = prs.get(&id).cloned() else {
            self.init_progress(cfg, prs, id, true);
            return;
        };
        if pr.is_learner {
            return;
        }
        // Remove any existing voter in the incoming config, but keep the progress.
        remove(cfg, prs, id);
        let mut pr = pr;
        if cfg.voters.outgoing.contains(id) {
            // Still a voter in the outgoing half: becomes a learner on leave.
            cfg.learners_next.insert(id);
        } else {
            pr.is_learner = true;
            cfg.learners.insert(id);
        }
        prs.insert(id, pr);
    }

    fn init_progress(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut BTreeMap<u64, Progress>,
        id: u64,
        is_learner: bool,
    ) {
        if is_learner {
            cfg.learners.insert(id);
        } else {
            cfg.voters.incoming.voters.insert(id);
        }
        // Probe from the last index; a new peer counts as recently active so
        // that check-quorum does not step the leader down right away.
        let mut pr = Progress::new(
            self.last_index.max(1),
            self.max_inflight,
            self.max_inflight_bytes,
        );
        pr.is_learner = is_learner;
        pr.recent_active = true;
        prs.insert(id, pr);
    }
}

fn remove(cfg: &mut TrackerConfig, prs: &mut BTreeMap<u64, Progress>, id: u64) {
    if !prs.contains_key(&id) {
        return;
    }
    cfg.voters.incoming.voters.remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // A voter of the outgoing half keeps its progress until the joint config is left.
    if !cfg.voters.outgoing.contains(id) {
        prs.remove(&id);
    }
}

fn check_and_return(
    cfg: TrackerConfig,
    prs: BTreeMap<u64, Progress>,
) -> Result<ConfigAndProgress, ConfChangeError> {
    cfg.check(&prs).map_err(ConfChangeError::Invariant)?;
    Ok((cfg, prs))
}

/// Rebuilds the configuration described by `cs` from an empty one, by
/// replaying the changes that lead to it (etcd's `confchange.Restore`).
pub fn restore(
    cs: &ConfState,
    last_index: u64,
    max_inflight: usize,
    max_inflight_bytes: u64,
) -> Result<ConfigAndProgress, ConfChangeError> {
    let single = |kind, node_id| ConfChangeSingle { kind, node_id };
    let outgoing: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(ConfChangeKind::AddNode, id))
        .collect();
    let mut incoming: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(ConfChangeKind::RemoveNode, id))
        .collect();
    incoming.extend(
        cs.voters
            .iter()
            .map(|&id| single(ConfChangeKind::AddNode, id)),
    );
    incoming.extend(
        cs.learners
            .iter()
            .map(|&id| single(ConfChangeKind::AddLearnerNode, id)),
    );
    incoming.extend(
        cs.learners_next
            .iter()
            .map(|&id| single(ConfChangeKind::AddLearnerNode, id)),
    );
    let mut state: ConfigAndProgress = (TrackerConfig::default(), BTreeMap::new());
    let step = |state: &ConfigAndProgress,
                f: &dyn Fn(&Changer) -> Result<ConfigAndProgress, ConfChangeError>| {
        let changer = Changer {
            config: &state.0,
            progress: &state.1,
            last_index,
            max_inflight,
            max_inflight_bytes,
        };
        f(&changer)
    };
    if outgoing.is_empty() {
        for cc in &incoming {
            state = step(&state, &|c| c.simple(std::slice::from_ref(cc)))?;
        }
    } else {
        for cc in &outgoing {
            state = step(&state, &|c| c.simple(std::slice::from_ref(cc)))?;
        }
        state = step(&state, &|c| c.enter_joint(cs.auto_leave, &incoming))?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let cc = ConfChange {
            transition: ConfChangeTransition::Explicit,
            changes: parse_changes("v1 l2 r3").unwrap(),
            context: b"ctx".to_vec(),
        };
        let bytes = cc.encode();
        assert_eq!(ConfChange::decode(&bytes), Ok(cc.clone()));
        assert_eq!(cc.to_string(), "v1 l2 r3 (explicit)");
        for cut in 0..bytes.len() {
            assert!(
                ConfChange::decode(&bytes[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            ConfChange::decode(&extra),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn enter_and_leave_joint() {
        let cs = ConfState::from_voters([1, 2, 3]);
        let (cfg, prs) = restore(&cs, 10, 4, 0).unwrap();
        let ch = Changer {
            config: &cfg,
            progress: &prs,
            last_index: 10,
            max_inflight: 4,
            max_inflight_bytes: 0,
        };
        // replace 3 by 4 and demote 2 to learner, through joint consensus
        let (j, jprs) = ch
            .enter_joint(true, &parse_changes("r3 v4 l2").unwrap())
            .unwrap();
        let jcs = j.to_conf_state();
        assert_eq!(jcs.voters, vec![1, 4]);
        assert_eq!(jcs.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(jcs.learners_next, vec![2]);
        assert!(jcs.auto_leave);
        // restoring the joint state gives the same config
        let (r, _) = restore(&jcs, 10, 4, 0).unwrap();
        assert_eq!(r, j);
        let ch = Changer {
            config: &j,
            progress: &jprs,
            last_index: 10,
            max_inflight: 4,
            max_inflight_bytes: 0,
        };
        assert_eq!(
            ch.enter_joint(false, &[]),
            Err(ConfChangeError::AlreadyJoint)
        );
        assert_eq!(ch.simple(&[]), Err(ConfChangeError::SimpleInJoint));
        let (l, lprs) = ch.leave_joint().unwrap();
        let lcs = l.to_conf_state();
        assert_eq!(lcs.voters, vec![1, 4]);
        assert_eq!(lcs.learners, vec![2]);
        assert!(lcs.voters_outgoing.is_empty());
        assert!(!lprs.contains_key(&3));
        assert!(lprs[&2].is_learner);
    }

    #[test]
    fn simple_rejects_two_voter_changes_and_empty() {
        let (cfg, prs) = restore(&ConfState::from_voters([1]), 1, 4, 0).unwrap();
        let ch = Changer {
            config: &cfg,
            progress: &prs,
            last_index: 1,
            max_inflight: 4,
            max_inflight_bytes: 0,
        };
        assert_eq!(
            ch.simple(&parse_changes("v2 v3").unwrap()),
            Err(ConfChangeError::MoreThanOneVoterChanged)
        );
        assert_eq!(
            ch.simple(&parse_changes("r1").unwrap()),
            Err(ConfChangeError::RemovedAllVoters)
        );
        assert_eq!(ch.leave_joint(), Err(ConfChangeError::NotJoint));
        let (c2, _) = ch.simple(&parse_changes("l2 l3").unwrap()).unwrap();
        assert_eq!(c2.to_conf_state().learners, vec![2, 3]);
    }
}
