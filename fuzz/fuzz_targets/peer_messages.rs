//! A hostile peer against a running raft node: a 3-voter cluster commits a
//! few entries, then one node (leader, follower, candidate or a follower
//! with a compacted log) is fed arbitrary peer messages decoded from the
//! fuzzer's bytes, each validated (`RawNode::validate`) before it is
//! stepped. No panic; the commit index never goes back and committed
//! entries never change (`concord_raft::peer_fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_raft::peer_fuzz::peer_messages(data));
