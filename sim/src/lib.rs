//! concord-sim: deterministic simulations of a concord cluster. The real
//! member, raft, mvcc, watch, lease, transport and gRPC code runs on madsim
//! nodes (simulated time, network and scheduling, all drawn from the seed);
//! storage is the in-memory backend, whose crash model loses every write
//! not yet persisted when a node is killed.
//!
//! Run: `cargo sim -p concord-sim` (the `sim` alias builds with
//! `--cfg madsim` into target/sim). A failing run prints its seed; replay
//! it with `MADSIM_TEST_SEED=<seed> cargo sim -p concord-sim`. Without
//! `--cfg madsim` this crate is empty.

#[cfg(madsim)]
pub mod bootstrap;
#[cfg(madsim)]
pub mod chaos;
#[cfg(madsim)]
pub mod world;
