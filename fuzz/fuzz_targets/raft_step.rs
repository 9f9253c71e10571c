//! Drives the in-process raft cluster harness from fuzzer bytes (options
//! from the first bytes, then one operation per byte pair: deliver, drop,
//! duplicate, tick, propose, crash, restart, campaign, partition, heal,
//! membership change, leader transfer, compaction) and asserts the same
//! safety and liveness invariants as the seeded tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_raft::harness::fuzz_run(data));
