//! concord: a distributed, strongly consistent key-value store, wire-compatible
//! with etcd v3. See docs/ARCHITECTURE.md for the map of modules.

pub mod mvcc;
pub mod proto;
pub mod storage;
