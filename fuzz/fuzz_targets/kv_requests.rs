//! Protobuf-encoded KV requests decoded, validated and run against a
//! revision store, with restarts, checkpoints and physical compaction in
//! between (concord::fuzz::kv_requests): errors are fine, panics (the
//! store's debug assertions among them) are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzz::kv_requests(data));
