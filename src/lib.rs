//! concord: a distributed, strongly consistent key-value store, wire-compatible
//! with etcd v3. See docs/ARCHITECTURE.md for the map of modules.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod corrupt;
pub mod discovery;
pub mod fuzz;
#[cfg(not(madsim))]
pub mod http;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod mvcc;
pub mod node;
#[cfg(madsim)]
pub mod planted;
pub mod proto;
/// The raft core lives in its own crate (`src/raft`) so it builds fast alone.
pub use concord_raft as raft;
#[cfg(not(madsim))]
pub mod server;
pub mod storage;
#[cfg(test)]
mod test_rng;
#[cfg(not(madsim))]
pub mod tls;
pub mod transport;
pub mod watch;
