//! Configuration of one raft node, validated before use.
//!
//! Invariants after `validate()`: `heartbeat_tick > 0`;
//! `election_tick > heartbeat_tick`; the randomised election timeout range
//! `[min_election_tick, max_election_tick)` is non-empty and starts at or
//! above `election_tick`; every limit is non-zero.

use crate::error::ConfigError;

/// How `read_index` requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// Confirm leadership with a heartbeat round (always safe).
    #[default]
    Safe,
    /// Trust the leader lease (needs `check_quorum`; unsafe under clock drift).
    LeaseBased,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: u64,
    /// Ticks without hearing from a leader before campaigning; the actual
    /// timeout is drawn from `[min_election_tick, max_election_tick)`.
    pub election_tick: u64,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: u64,
    /// The last applied index, for a restart (0: start from the storage's snapshot).
    pub applied: u64,
    /// Bytes of entries per append message (at least one entry is always sent).
    pub max_size_per_msg: u64,
    /// Bytes of committed entries per Ready.
    pub max_committed_size_per_ready: u64,
    /// Bytes of uncommitted entry payloads the leader accepts before dropping proposals.
    pub max_uncommitted_entries_size: u64,
    /// Appends in flight per follower in replicate state.
    pub max_inflight_msgs: usize,
    /// Bytes in flight per follower (0: no byte limit).
    pub max_inflight_bytes: u64,
    /// The leader steps down if it has not heard from a quorum in an election timeout.
    pub check_quorum: bool,
    /// Run a pre-vote round before incrementing the term.
    pub pre_vote: bool,
    pub read_only_option: ReadOnlyOption,
    /// 0 means `election_tick`.
    pub min_election_tick: u64,
    /// 0 means `2 * election_tick`.
    pub max_election_tick: u64,
    /// Seed of this node's PRNG (randomised election timeouts).
    pub seed: u64,
    /// Whether followers may forward proposals to the leader.
    pub disable_proposal_forwarding: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            max_size_per_msg: 1024 * 1024,
            max_committed_size_per_ready: u64::MAX,
            max_uncommitted_entries_size: u64::MAX,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            min_election_tick: 0,
            max_election_tick: 0,
            seed: 0,
            disable_proposal_forwarding: false,
        }
    }
}

impl Config {
    /// A default config for node `id`, seeded with `id`.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            seed: id,
            ..Config::default()
        }
    }

    pub fn min_election_tick(&self) -> u64 {
        if self.min_election_tick == 0 {
            self.election_tick
        } else {
            self.min_election_tick
        }
    }

    pub fn max_election_tick(&self) -> u64 {
        if self.max_election_tick == 0 {
            2 * self.election_tick
        } else {
            self.max_election_tick
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::ZeroHeartbeatTick);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionTickNotAboveHeartbeat {
                election_tick: self.election_tick,
                heartbeat_tick: self.heartbeat_tick,
            });
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroMaxInflight);
        }
        let (min, max) = (self.min_election_tick(), self.max_election_tick());
        if min < self.election_tick {
            return Err(ConfigError::MinElectionTickTooSmall {
                min,
                election_tick: self.election_tick,
            });
        }
        if max <= min {
            return Err(ConfigError::MaxElectionTickNotAboveMin { min, max });
        }
        if self.max_size_per_msg == 0 {
            return Err(ConfigError::ZeroMaxSizePerMsg);
        }
        if self.max_inflight_bytes != 0 && self.max_inflight_bytes < self.max_size_per_msg {
            return Err(ConfigError::InflightBytesBelowMsgSize {
                inflight: self.max_inflight_bytes,
                per_msg: self.max_size_per_msg,
            });
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return Err(ConfigError::LeaseReadsWithoutCheckQuorum);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_each_rule() {
        let ok = Config::new(1);
        assert_eq!(ok.validate(), Ok(()));
        let cases: Vec<(Config, ConfigError)> = vec![
            (
                Config {
                    id: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroId,
            ),
            (
                Config {
                    heartbeat_tick: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroHeartbeatTick,
            ),
            (
                Config {
                    election_tick: 1,
                    ..ok.clone()
                },
                ConfigError::ElectionTickNotAboveHeartbeat {
                    election_tick: 1,
                    heartbeat_tick: 1,
                },
            ),
            (
                Config {
                    max_inflight_msgs: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroMaxInflight,
            ),
            (
                Config {
                    min_election_tick: 5,
                    ..ok.clone()
                },
                ConfigError::MinElectionTickTooSmall {
                    min: 5,
                    election_tick: 10,
                },
            ),
            (
                Config {
                    max_election_tick: 10,
                    ..ok.clone()
                },
                ConfigError::MaxElectionTickNotAboveMin { min: 10, max: 10 },
            ),
            (
                Config {
                    max_inflight_bytes: 10,
                    max_size_per_msg: 11,
                    ..ok.clone()
                },
                ConfigError::InflightBytesBelowMsgSize {
                    inflight: 10,
                    per_msg: 11,
                },
            ),
            (
                Config {
                    max_size_per_msg: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroMaxSizePerMsg,
            ),
            (
                Config {
                    read_only_option: ReadOnlyOption::LeaseBased,
                    check_quorum: false,
                    ..ok.clone()
                },
                ConfigError::LeaseReadsWithoutCheckQuorum,
            ),
        ];
        for (i, (cfg, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                cfg.validate(),
                Err(want.clone()),
                "case #{i}: want {want:?}"
            );
        }
    }
}
